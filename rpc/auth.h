// The cluster secret's handshake: the bytes both sides exchange and check before a connection
// carries anything else, when the cluster has a secret (docs/operations.md). A challenge and
// response each way with HMAC-SHA256 over fresh nonces, so that the secret never crosses the
// wire, an old handshake cannot be replayed, and a client never sends a request to a node
// that does not know the secret:
//
//   connector -> node   "WALSHIPA" version(1) nonce_c(32)                       kHelloBytes
//   node -> connector   verdict(1): 0, then nonce_n(32) HMAC(secret, "walship node" 0
//                       nonce_c nonce_n)(32); or 1 (this node has no secret) alone; or 3
//                       (this node requires TLS, and the hello came in plain text) alone
//   connector -> node   HMAC(secret, "walship connector" 0 nonce_n nonce_c)(32)
//   node -> connector   verdict(1): 0 accepted, 2 refused (then it closes)
//
// After an accepted handshake the connection goes on as without a secret (the client
// preamble, or Cap'n Proto RPC between nodes). Pure functions: the sockets are the callers'.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace walship::rpc::auth {

inline constexpr std::string_view kMagic = "WALSHIPA";  // 8 bytes, as the client preamble
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;
inline constexpr size_t kHelloBytes = 8 + 1 + kNonceBytes;
inline constexpr size_t kChallengeBytes = 1 + kNonceBytes + kMacBytes;
inline constexpr size_t kProofBytes = kMacBytes;
// A secret shorter than this is refused in the config: it could be guessed offline from one
// recorded handshake.
inline constexpr size_t kMinSecretBytes = 16;

enum Verdict : uint8_t { kGo = 0, kNoSecretHere = 1, kRefused = 2, kTlsRequired = 3 };

using Nonce = std::array<uint8_t, kNonceBytes>;
using Mac = std::array<uint8_t, kMacBytes>;

// Fresh random bytes from the operating system's generator (OpenSSL's RAND_bytes).
Nonce NewNonce();

// The connector's first message.
std::string Hello(const Nonce& nonce_c);
// Reads a hello: its nonce, or kInvalidArgument naming what is wrong (another version).
absl::Status ParseHello(absl::Span<const uint8_t> bytes, Nonce* nonce_c);

// The node's challenge to `nonce_c` (kChallengeBytes), with its own nonce.
std::string Challenge(std::string_view secret, const Nonce& nonce_c, const Nonce& nonce_n);
// The connector checks the node's proof in a challenge and answers with its own (kProofBytes);
// kUnauthenticated when the node does not know the secret.
absl::StatusOr<std::string> Answer(std::string_view secret, const Nonce& nonce_c,
                                   absl::Span<const uint8_t> challenge);
// The node checks the connector's proof (in constant time).
bool CheckProof(std::string_view secret, const Nonce& nonce_c, const Nonce& nonce_n,
                absl::Span<const uint8_t> proof);

// The connector's whole side over a blocking socket: `send` writes all of its bytes, `recv`
// reads exactly n bytes (both fail with the transport's error). OK once the node proved the
// secret and accepted this side's proof; kUnauthenticated saying which side lacks it, or the
// transport's error.
absl::Status Offer(std::string_view secret,
                   const std::function<absl::Status(std::string_view)>& send,
                   const std::function<absl::StatusOr<std::string>(size_t)>& recv);

}  // namespace walship::rpc::auth
