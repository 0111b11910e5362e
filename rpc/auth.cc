#include "rpc/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace walship::rpc::auth {
namespace {

Mac Hmac(std::string_view secret, std::string_view label, const Nonce& first,
         const Nonce& second) {
  std::string message(label);
  message.push_back('\0');
  message.append(reinterpret_cast<const char*>(first.data()), first.size());
  message.append(reinterpret_cast<const char*>(second.data()), second.size());
  Mac mac{};
  unsigned int len = 0;
  WALSHIP_CHECK(HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                     reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                     mac.data(), &len) != nullptr &&
                len == mac.size());
  return mac;
}

bool Same(const Mac& a, absl::Span<const uint8_t> b) {
  return b.size() == a.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view Bytes(const std::array<uint8_t, 32>& a) {
  return {reinterpret_cast<const char*>(a.data()), a.size()};
}

}  // namespace

Nonce NewNonce() {
  Nonce n{};
  // Fails only when the operating system cannot provide randomness at all.
  WALSHIP_CHECK(RAND_bytes(n.data(), static_cast<int>(n.size())) == 1);
  return n;
}

std::string Hello(const Nonce& nonce_c) {
  std::string hello(kMagic);
  hello.push_back(static_cast<char>(kVersion));
  hello.append(Bytes(nonce_c));
  return hello;
}

absl::Status ParseHello(absl::Span<const uint8_t> bytes, Nonce* nonce_c) {
  if (bytes.size() != kHelloBytes ||
      std::memcmp(bytes.data(), kMagic.data(), kMagic.size()) != 0) {
    return absl::InvalidArgumentError("not a walship authentication hello");
  }
  if (bytes[kMagic.size()] != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("authentication version ", bytes[kMagic.size()], "; this node speaks ",
                     kVersion));
  }
  std::memcpy(nonce_c->data(), bytes.data() + kMagic.size() + 1, kNonceBytes);
  return absl::OkStatus();
}

std::string Challenge(std::string_view secret, const Nonce& nonce_c, const Nonce& nonce_n) {
  Mac mac = Hmac(secret, "walship node", nonce_c, nonce_n);
  std::string challenge(1, static_cast<char>(kGo));
  challenge.append(Bytes(nonce_n));
  challenge.append(Bytes(mac));
  return challenge;
}

absl::StatusOr<std::string> Answer(std::string_view secret, const Nonce& nonce_c,
                                   absl::Span<const uint8_t> challenge) {
  if (challenge.size() != kChallengeBytes || challenge[0] != kGo) {
    return absl::UnauthenticatedError("the node answered the authentication hello wrongly");
  }
  Nonce nonce_n;
  std::memcpy(nonce_n.data(), challenge.data() + 1, kNonceBytes);
  if (!Same(Hmac(secret, "walship node", nonce_c, nonce_n),
            challenge.subspan(1 + kNonceBytes, kMacBytes))) {
    return absl::UnauthenticatedError(
        "the node does not know the cluster secret (its proof is wrong): it is not a node of "
        "this cluster, or its secret differs");
  }
  return std::string(Bytes(Hmac(secret, "walship connector", nonce_n, nonce_c)));
}

bool CheckProof(std::string_view secret, const Nonce& nonce_c, const Nonce& nonce_n,
                absl::Span<const uint8_t> proof) {
  return Same(Hmac(secret, "walship connector", nonce_n, nonce_c), proof);
}

absl::Status Offer(std::string_view secret,
                   const std::function<absl::Status(std::string_view)>& send,
                   const std::function<absl::StatusOr<std::string>(size_t)>& recv) {
  Nonce nonce_c = NewNonce();
  if (absl::Status s = send(Hello(nonce_c)); !s.ok()) return s;
  absl::StatusOr<std::string> first = recv(1);
  if (!first.ok()) return first.status();
  if (static_cast<uint8_t>((*first)[0]) == kNoSecretHere) {
    return absl::UnauthenticatedError(
        "the node has no cluster secret configured, and this client offered one");
  }
  if (static_cast<uint8_t>((*first)[0]) == kTlsRequired) {
    return absl::UnauthenticatedError(
        "this node requires TLS: give the client the cluster's CA certificate (walship "
        "--cluster with the cluster's config file, or --tls-ca)");
  }
  absl::StatusOr<std::string> rest = recv(kChallengeBytes - 1);
  if (!rest.ok()) return rest.status();
  std::string challenge = *first + *rest;
  absl::StatusOr<std::string> proof =
      Answer(secret, nonce_c,
             {reinterpret_cast<const uint8_t*>(challenge.data()), challenge.size()});
  if (!proof.ok()) return proof.status();
  if (absl::Status s = send(*proof); !s.ok()) return s;
  absl::StatusOr<std::string> verdict = recv(1);
  if (!verdict.ok()) return verdict.status();
  if (static_cast<uint8_t>((*verdict)[0]) != kGo) {
    return absl::UnauthenticatedError(
        "the node refused this client's proof: the client's cluster secret differs from the "
        "node's");
  }
  return absl::OkStatus();
}

}  // namespace walship::rpc::auth
