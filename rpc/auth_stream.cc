#include "rpc/auth_stream.h"

#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "rpc/auth.h"

namespace walship::rpc {
namespace {

// Reads exactly n bytes; fewer (the end of the stream) resolve to an empty array.
kj::Promise<kj::Array<kj::byte>> ReadExactly(kj::AsyncIoStream& stream, size_t n) {
  auto buf = kj::heapArray<kj::byte>(n);
  auto* data = buf.begin();
  return stream.tryRead(data, n, n).then([buf = kj::mv(buf), n](size_t got) mutable {
    return got == n ? kj::mv(buf) : kj::Array<kj::byte>();
  });
}

kj::Promise<void> Send(kj::AsyncIoStream& stream, std::string bytes) {
  auto owned = kj::heapString(bytes.data(), bytes.size());
  auto written = stream.write(owned.begin(), owned.size());
  return written.attach(kj::mv(owned));
}

absl::Span<const uint8_t> Span(const kj::Array<kj::byte>& a) { return {a.begin(), a.size()}; }

// Ends the connector's handshake with `why` as the exception's description.
[[noreturn]] void Fail(const std::string& why) {
  kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                        kj::heapString(why.data(), why.size())));
}

kj::Promise<absl::Status> AcceptSteps(kj::AsyncIoStream& stream, std::string secret) {
  return ReadExactly(stream, auth::kHelloBytes)
      .then([&stream, secret = kj::mv(secret)](
                kj::Array<kj::byte> hello) mutable -> kj::Promise<absl::Status> {
        if (hello.size() == 0) {
          return absl::UnauthenticatedError("the connector closed before its hello was whole");
        }
        auth::Nonce nonce_c;
        if (absl::Status s = auth::ParseHello(Span(hello), &nonce_c); !s.ok()) {
          return absl::UnauthenticatedError(s.message());
        }
        if (secret.empty()) {
          return Send(stream, std::string(1, static_cast<char>(auth::kNoSecretHere)))
              .then([]() {
                return absl::UnauthenticatedError(
                    "a connector offered the cluster secret; this node has none configured");
              });
        }
        auth::Nonce nonce_n = auth::NewNonce();
        auto sent = Send(stream, auth::Challenge(secret, nonce_c, nonce_n));
        return sent.then([&stream]() { return ReadExactly(stream, auth::kProofBytes); })
            .then([&stream, secret = kj::mv(secret), nonce_c,
                   nonce_n](kj::Array<kj::byte> proof) -> kj::Promise<absl::Status> {
              if (proof.size() == 0) {
                return absl::UnauthenticatedError(
                    "the connector closed without a proof: it does not know the cluster "
                    "secret, or not this one");
              }
              bool good = auth::CheckProof(secret, nonce_c, nonce_n, Span(proof));
              auto verdict = good ? auth::kGo : auth::kRefused;
              return Send(stream, std::string(1, static_cast<char>(verdict))).then([good]() {
                return good ? absl::OkStatus()
                            : absl::UnauthenticatedError(
                                  "the connector's proof is wrong: it does not know the "
                                  "cluster secret");
              });
            });
      });
}

kj::Promise<void> OfferSteps(kj::AsyncIoStream& stream, std::string secret) {
  auth::Nonce nonce_c = auth::NewNonce();
  auto sent = Send(stream, auth::Hello(nonce_c));
  return sent.then([&stream]() { return ReadExactly(stream, 1); })
      .then([&stream](kj::Array<kj::byte> verdict) {
        if (verdict.size() == 0) {
          Fail("the node closed the connection instead of answering the cluster secret's "
               "hello");
        }
        if (verdict[0] == auth::kNoSecretHere) {
          Fail("the node has no cluster secret configured, and this side offered one");
        }
        if (verdict[0] == auth::kTlsRequired) {
          Fail("the node requires TLS, and this side has no [tls] settings");
        }
        return ReadExactly(stream, auth::kChallengeBytes - 1)
            .then([first = verdict[0]](kj::Array<kj::byte> rest) {
              if (rest.size() == 0) Fail("the node's challenge did not come whole");
              auto whole = kj::heapArray<kj::byte>(auth::kChallengeBytes);
              whole[0] = first;
              std::memcpy(whole.begin() + 1, rest.begin(), rest.size());
              return whole;
            });
      })
      .then([&stream, secret = kj::mv(secret), nonce_c](kj::Array<kj::byte> challenge) {
        absl::StatusOr<std::string> proof = auth::Answer(secret, nonce_c, Span(challenge));
        if (!proof.ok()) Fail(std::string(proof.status().message()));
        return Send(stream, *proof).then([&stream]() { return ReadExactly(stream, 1); });
      })
      .then([](kj::Array<kj::byte> verdict) {
        if (verdict.size() == 0 || verdict[0] != auth::kGo) {
          Fail("the node refused this side's proof of the cluster secret");
        }
      });
}

}  // namespace

kj::Promise<absl::Status> AcceptHandshake(kj::AsyncIoStream& stream, std::string secret,
                                          kj::Timer& timer, kj::Duration timeout) {
  return AcceptSteps(stream, std::move(secret))
      .exclusiveJoin(timer.afterDelay(timeout).then([timeout]() {
        return absl::UnauthenticatedError(
            absl::StrCat("the connector did not finish the secret's handshake within ",
                         timeout / kj::MILLISECONDS, " ms"));
      }));
}

kj::Promise<void> OfferHandshake(kj::AsyncIoStream& stream, std::string secret,
                                 kj::Timer& timer, kj::Duration timeout) {
  return OfferSteps(stream, std::move(secret))
      .exclusiveJoin(timer.afterDelay(timeout).then([timeout]() {
        Fail(absl::StrCat("the node did not finish the secret's handshake within ",
                          timeout / kj::MILLISECONDS, " ms"));
      }));
}

}  // namespace walship::rpc
