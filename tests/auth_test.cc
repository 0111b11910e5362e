// The cluster secret's handshake (rpc/auth.h, rpc/auth_stream.h): both sides over an in-memory
// stream on a real KJ event loop, and the pure steps against tampering and replay.
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <string>

#include "rpc/auth.h"
#include "rpc/auth_stream.h"

namespace walship::rpc {
namespace {

constexpr char kSecret[] = "correct horse battery staple";

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(AuthTest, BothSidesProveTheSameSecret) {
  auth::Nonce c = auth::NewNonce(), n = auth::NewNonce();
  auth::Nonce parsed;
  ASSERT_TRUE(auth::ParseHello(Bytes(auth::Hello(c)), &parsed).ok());
  EXPECT_EQ(parsed, c);
  std::string challenge = auth::Challenge(kSecret, c, n);
  ASSERT_EQ(challenge.size(), auth::kChallengeBytes);
  absl::StatusOr<std::string> proof = auth::Answer(kSecret, c, Bytes(challenge));
  ASSERT_TRUE(proof.ok()) << proof.status();
  EXPECT_TRUE(auth::CheckProof(kSecret, c, n, Bytes(*proof)));
}

TEST(AuthTest, AWrongSecretFailsOnEitherSide) {
  auth::Nonce c = auth::NewNonce(), n = auth::NewNonce();
  // A node without the secret cannot make a challenge the connector takes.
  absl::StatusOr<std::string> proof =
      auth::Answer(kSecret, c, Bytes(auth::Challenge("another secret of enough bytes", c, n)));
  EXPECT_TRUE(absl::IsUnauthenticated(proof.status())) << proof.status();
  // A connector without it cannot answer the node's challenge.
  proof = auth::Answer("another secret of enough bytes", c,
                       Bytes(auth::Challenge("another secret of enough bytes", c, n)));
  ASSERT_TRUE(proof.ok());
  EXPECT_FALSE(auth::CheckProof(kSecret, c, n, Bytes(*proof)));
}

TEST(AuthTest, AProofIsGoodForOneHandshakeOnly) {
  auth::Nonce c = auth::NewNonce(), n = auth::NewNonce();
  std::string proof = *auth::Answer(kSecret, c, Bytes(auth::Challenge(kSecret, c, n)));
  // Replayed against a fresh challenge of the node (a new nonce), it fails.
  EXPECT_FALSE(auth::CheckProof(kSecret, c, auth::NewNonce(), Bytes(proof)));
  // The node's proof is not the connector's (a reflected challenge is no answer).
  std::string challenge = auth::Challenge(kSecret, c, n);
  EXPECT_FALSE(auth::CheckProof(kSecret, c, n, Bytes(challenge.substr(1 + auth::kNonceBytes))));
  // Any flipped bit is refused.
  for (size_t i = 0; i < proof.size(); i += 7) {
    std::string bad = proof;
    bad[i] ^= 1;
    EXPECT_FALSE(auth::CheckProof(kSecret, c, n, Bytes(bad))) << i;
  }
  EXPECT_FALSE(auth::CheckProof(kSecret, c, n, Bytes(proof.substr(1))));
  std::string tampered = challenge;
  tampered[1] ^= 1;  // the node's nonce, changed on the way
  EXPECT_FALSE(auth::Answer(kSecret, c, Bytes(tampered)).ok());
}

TEST(AuthTest, AHelloOfAnotherVersionIsRefused) {
  std::string hello = auth::Hello(auth::NewNonce());
  hello[auth::kMagic.size()] = 9;
  auth::Nonce parsed;
  absl::Status s = auth::ParseHello(Bytes(hello), &parsed);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("version 9"), std::string::npos) << s;
  EXPECT_FALSE(auth::ParseHello(Bytes(hello.substr(1)), &parsed).ok());
}

TEST(AuthTest, AConnectorToldThatTheNodeRequiresTlsSaysSo) {
  std::string sent;
  absl::Status s = auth::Offer(
      kSecret, [&](std::string_view bytes) { sent.append(bytes); return absl::OkStatus(); },
      [&](size_t n) -> absl::StatusOr<std::string> {
        EXPECT_EQ(n, 1u);  // the verdict alone: nothing else is read
        return std::string(1, static_cast<char>(auth::kTlsRequired));
      });
  EXPECT_TRUE(absl::IsUnauthenticated(s)) << s;
  EXPECT_NE(s.message().find("requires TLS"), std::string::npos) << s;
  EXPECT_EQ(sent.size(), auth::kHelloBytes);  // the hello, and no proof after it
}

// Both async sides over an in-memory pipe, as a node and a peer run them.
struct Handshake {
  absl::Status node;                   // what AcceptHandshake resolved to
  std::string connector = "not run";   // "" when OfferHandshake succeeded, else its failure
};

Handshake RunHandshake(const std::string& node_secret, const std::string& connector_secret) {
  auto io = kj::setupAsyncIo();
  auto pipe = kj::newTwoWayPipe();
  kj::Timer& timer = io.provider->getTimer();
  Handshake h;
  // A side that fails closes its end, as a node drops a refused connection and a peer the
  // connection it could not prove itself on.
  auto node_side = AcceptHandshake(*pipe.ends[0], node_secret, timer, 2 * kj::SECONDS)
                       .then([&](absl::Status s) {
                         h.node = s;
                         if (!s.ok()) pipe.ends[0]->shutdownWrite();
                       })
                       .eagerlyEvaluate(nullptr);
  auto connector_side =
      OfferHandshake(*pipe.ends[1], connector_secret, timer, 2 * kj::SECONDS)
          .then([&]() { h.connector = ""; },
                [&](kj::Exception&& e) {
                  h.connector = e.getDescription().cStr();
                  pipe.ends[1]->shutdownWrite();
                })
          .eagerlyEvaluate(nullptr);
  node_side.wait(io.waitScope);
  connector_side.wait(io.waitScope);
  return h;
}

TEST(AuthStreamTest, SidesThatShareTheSecretBothSucceed) {
  Handshake h = RunHandshake(kSecret, kSecret);
  EXPECT_TRUE(h.node.ok()) << h.node;
  EXPECT_EQ(h.connector, "");
}

TEST(AuthStreamTest, ADifferentSecretIsRefusedAndBothSidesSaySo) {
  Handshake h = RunHandshake(kSecret, "a different secret, long enough");
  EXPECT_TRUE(absl::IsUnauthenticated(h.node)) << h.node;
  EXPECT_NE(h.connector.find("does not know the cluster secret"), std::string::npos)
      << h.connector;
}

TEST(AuthStreamTest, ANodeWithoutASecretSaysSo) {
  Handshake h = RunHandshake("", kSecret);
  EXPECT_TRUE(absl::IsUnauthenticated(h.node)) << h.node;
  EXPECT_NE(h.connector.find("has no cluster secret"), std::string::npos) << h.connector;
}

TEST(AuthStreamTest, ASilentConnectorIsRefusedWithinTheTimeOut) {
  auto io = kj::setupAsyncIo();
  auto pipe = kj::newTwoWayPipe();
  std::string hello = auth::Hello(auth::NewNonce());
  // The hello, then nothing: the node gives up after its time-out, not never.
  auto written = pipe.ends[1]->write(hello.data(), hello.size()).eagerlyEvaluate(nullptr);
  auto start = io.provider->getTimer().now();
  absl::Status s = AcceptHandshake(*pipe.ends[0], kSecret, io.provider->getTimer(),
                                   50 * kj::MILLISECONDS)
                       .wait(io.waitScope);
  EXPECT_GE(io.provider->getTimer().now() - start, 50 * kj::MILLISECONDS);
  EXPECT_TRUE(absl::IsUnauthenticated(s)) << s;
  EXPECT_NE(s.message().find("did not finish"), std::string::npos) << s;
}

}  // namespace
}  // namespace walship::rpc
