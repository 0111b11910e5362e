// Unit tests of the handshake between a follower and its leader: refusals, versions,
// epochs and divergence.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "replication/handover.h"
#include "replication/test_fixtures.h"

namespace walship::replication {
namespace {

namespace fs = std::filesystem;
using namespace ::walship::replication::testing;  // NOLINT: the fixtures of these tests
using engine::Batch;
using engine::EngineOptions;
using engine::OpType;
using engine::WriteOp;
using engine::testing::SameContents;
using engine::testing::ScanAll;

// ---------------------------------------------------------------------------------------------
// Handshake

TEST(HandshakeTest, WrongClusterIsRefusedNamingBothClusters) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  FollowerNode f(dir, "f1", &clock, std::nullopt, "elsewhere");
  Handshake h = Connect(*l.leader, *f.follower);
  EXPECT_EQ(h.reply.outcome, HelloOutcome::kRefused);
  EXPECT_EQ(h.session, 0u);
  EXPECT_NE(h.reply.message.find("'elsewhere'"), std::string::npos) << h.reply.message;
  EXPECT_NE(h.reply.message.find("'main'"), std::string::npos) << h.reply.message;
  EXPECT_TRUE(absl::IsPermissionDenied(h.status)) << h.status;
  EXPECT_EQ(f.follower->Status().phase, FollowerPhase::kConnecting);
  EXPECT_FALSE(fs::exists(f.state_path)) << "a refused follower must not adopt anything";
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].state, FollowerState::kRefused);
}

TEST(HandshakeTest, FollowersBeyondMaxFollowersAreRefusedWithoutARecord) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_followers = 1;
  LeaderNode l(dir, &clock, options);
  FollowerNode f1(dir, "f1", &clock);
  FollowerNode f2(dir, "f2", &clock);
  EXPECT_EQ(Connect(*l.leader, *f1.follower).reply.outcome, HelloOutcome::kAccepted);
  Handshake h = Connect(*l.leader, *f2.follower);
  EXPECT_EQ(h.reply.outcome, HelloOutcome::kRefused);
  EXPECT_NE(h.reply.message.find("max_followers"), std::string::npos) << h.reply.message;
  EXPECT_EQ(l.leader->Followers().size(), 1u);
  // A follower the leader already knows may always come back.
  EXPECT_EQ(Connect(*l.leader, *f1.follower).reply.outcome, HelloOutcome::kAccepted);
}

// Only configured followers may subscribe; hellos naming other ids leave no record, so any
// number of them never lock out a real follower.
TEST(HandshakeTest, IdsOutsideTheConfigurationAreRefusedWithoutARecord) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_followers = 2;
  LeaderNode l(dir, &clock, options);
  for (int i = 0; i < 10; ++i) {  // more than max_followers
    FollowerNode stranger(dir, "stranger" + std::to_string(i), &clock);
    Handshake h = Connect(*l.leader, *stranger.follower);
    ASSERT_EQ(h.reply.outcome, HelloOutcome::kRefused);
    EXPECT_EQ(h.session, 0u);
    EXPECT_NE(h.reply.message.find("is not a member of cluster"), std::string::npos)
        << h.reply.message;
    EXPECT_NE(h.reply.message.find("f1 voter, f2 voter"), std::string::npos) << h.reply.message;
  }
  EXPECT_TRUE(l.leader->Followers().empty());
  FollowerNode f1(dir, "f1", &clock);
  EXPECT_EQ(Connect(*l.leader, *f1.follower).reply.outcome, HelloOutcome::kAccepted);
}

// A refused hello that names a streaming follower's id (another cluster, another database)
// leaves that follower's session and record alone.
TEST(HandshakeTest, ARefusedHelloNeverEndsALiveSession) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  FollowerNode f(dir, "f1", &clock);
  Handshake live = Connect(*l.leader, *f.follower);
  ASSERT_EQ(live.reply.outcome, HelloOutcome::kAccepted);
  TempDir elsewhere;
  FollowerNode imposter(elsewhere, "f1", &clock, std::nullopt, "elsewhere");
  Handshake h = Connect(*l.leader, *imposter.follower);
  ASSERT_EQ(h.reply.outcome, HelloOutcome::kRefused);
  l.Write(2);
  EXPECT_TRUE(l.leader->HasWork(live.session));
  auto ship = l.leader->NextShip(live.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  l.leader->OnAck(live.session, *ack);
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].state, FollowerState::kConnected);
  EXPECT_EQ(infos[0].applied, l.leader->latest());
}

TEST(HandshakeTest, DifferentDatabaseIsRefused) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  NodeState other = LeaderState();
  other.database_id = "db2";
  FollowerNode f(dir, "f1", &clock, other);
  Handshake h = Connect(*l.leader, *f.follower);
  EXPECT_EQ(h.reply.outcome, HelloOutcome::kRefused);
  EXPECT_NE(h.reply.message.find("db2"), std::string::npos) << h.reply.message;
  EXPECT_NE(h.reply.message.find("db1"), std::string::npos) << h.reply.message;
  EXPECT_TRUE(absl::IsPermissionDenied(h.status)) << h.status;
  auto saved = LoadNodeState(f.state_path);
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->database_id, "db2") << "a refused follower must keep its identity";
}

TEST(HandshakeTest, FollowerWithANewerEpochRefusesTheStaleLeader) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);  // epoch 1
  l.Write();
  FollowerNode f(dir, "f1", &clock, LeaderState(3));
  Handshake h = Connect(*l.leader, *f.follower);
  EXPECT_EQ(h.reply.outcome, HelloOutcome::kRefused);
  EXPECT_NE(h.reply.message.find("stale"), std::string::npos) << h.reply.message;
  EXPECT_TRUE(absl::IsPermissionDenied(h.status)) << h.status;
  EXPECT_EQ(f.follower->epoch(), 3u);
  EXPECT_FALSE(l.leader->NextShip(h.session, true).has_value());
}

// A mixed-version cluster fails loudly: each side names both versions.
TEST(HandshakeTest, AnotherProtocolVersionIsRefusedNamingBothVersions) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  FollowerNode f(dir, "f1", &clock);
  Hello old = f.follower->MakeHello();
  old.version = 0;
  uint64_t session = 0;
  HelloReply reply = l.leader->OnHello(old, &session);
  EXPECT_EQ(reply.outcome, HelloOutcome::kRefused);
  EXPECT_EQ(session, 0u);
  EXPECT_NE(reply.message.find("version 0"), std::string::npos) << reply.message;
  EXPECT_NE(reply.message.find("version " + std::to_string(kPeerProtocolVersion)),
            std::string::npos)
      << reply.message;
  // And a follower refuses a leader of another version, even one that accepts it.
  reply = l.leader->OnHello(f.follower->MakeHello(), &session);
  ASSERT_EQ(reply.outcome, HelloOutcome::kAccepted);
  reply.version = kPeerProtocolVersion + 1;
  absl::Status s = f.follower->OnHelloReply(reply);
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_NE(s.message().find("version " + std::to_string(kPeerProtocolVersion + 1)),
            std::string::npos)
      << s;
  EXPECT_EQ(f.follower->Status().phase, FollowerPhase::kConnecting);
  EXPECT_FALSE(fs::exists(f.state_path)) << "a refused follower must not adopt anything";
}

// Epochs are named by number and leader: a follower whose last batch was written in epoch 2
// begun by another node has diverged, even though the leader has an epoch 2 covering that
// position.
TEST(HandshakeTest, TheSameEpochNumberFromAnotherLeaderIsADivergence) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), LeaderState(2));  // (2, "leader") from 1
  l.Write(5);
  NodeState other = LeaderState(1);
  other.epoch = 2;
  other.history.push_back({2, 1, "rogue"});
  other.history.erase(other.history.begin());
  FollowerNode f(dir, "f1", &clock, other);
  ASSERT_TRUE(f.engine->Write(std::vector<WriteOp>{{OpType::kPut, "a", "1"}}, {}).ok());
  Handshake h = Connect(*l.leader, *f.follower);
  EXPECT_EQ(h.reply.outcome, HelloOutcome::kNeedsSnapshot) << h.reply.message;
  EXPECT_NE(h.reply.message.find("'rogue'"), std::string::npos) << h.reply.message;
  EXPECT_NE(h.reply.message.find("'leader'"), std::string::npos) << h.reply.message;
}

// A follower that holds nothing of the other leader's epoch still refuses to follow a leader
// that claims an epoch it knows as begun by someone else: two leaders of one epoch are said
// out loud, never mixed.
TEST(HandshakeTest, TwoLeadersOfOneEpochAreRefusedByTheFollower) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), LeaderState(2));
  NodeState known = LeaderState(1);
  known.epoch = 2;
  known.history.push_back({2, 1, "rogue"});
  FollowerNode f(dir, "f1", &clock, known);
  Handshake h = Connect(*l.leader, *f.follower);
  EXPECT_TRUE(absl::IsPermissionDenied(h.status)) << h.status;
  EXPECT_NE(h.status.message().find("two nodes led the same epoch"), std::string::npos)
      << h.status;
  auto saved = LoadNodeState(f.state_path);
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->history, known.history) << "a refused follower must not adopt anything";
}

// Past the leader's log in an earlier epoch: the leader's history does not have those writes
// (the leader that wrote them lost them, and a later epoch began before them). Writes past
// the log in the leader's own current epoch are another matter (recovery_test.cc).
TEST(HandshakeTest, FollowerBeyondTheLeadersLogNeedsASnapshot) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), LeaderState(2));
  l.Write(2);  // leader ends at seq 2, in epoch 2
  FollowerNode f(dir, "f1", &clock, LeaderState(1));
  // The follower holds seq 1..5, of epoch 1.
  ASSERT_TRUE(f.engine->Write(std::vector<WriteOp>{{OpType::kPut, "a", "1"},
                                                   {OpType::kPut, "b", "2"},
                                                   {OpType::kPut, "c", "3"},
                                                   {OpType::kPut, "d", "4"},
                                                   {OpType::kPut, "e", "5"}},
                              {})
                  .ok());
  Handshake h = Connect(*l.leader, *f.follower);
  EXPECT_EQ(h.reply.outcome, HelloOutcome::kNeedsSnapshot) << h.reply.message;
  EXPECT_EQ(h.session, 0u);
  EXPECT_TRUE(absl::IsFailedPrecondition(h.status)) << h.status;
  EXPECT_EQ(f.follower->Status().phase, FollowerPhase::kNeedsSnapshot);
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].state, FollowerState::kNeedsSnapshot);
  EXPECT_EQ(f.engine->LatestSequence(), 5u);
}

TEST(HandshakeTest, FreshFollowerIsAcceptedAndAdoptsTheLeadersIdentity) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), LeaderState(2));
  l.Write(3);
  FollowerNode f(dir, "f1", &clock);
  Hello hello = f.follower->MakeHello();
  EXPECT_TRUE(hello.database_id.empty());
  EXPECT_EQ(hello.last_applied, 0u);
  EXPECT_EQ(hello.epoch, 0u);
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_EQ(h.reply.outcome, HelloOutcome::kAccepted) << h.reply.message;
  ASSERT_TRUE(h.status.ok()) << h.status;
  EXPECT_NE(h.session, 0u);
  EXPECT_EQ(h.reply.leader_latest, 3u);
  EXPECT_EQ(f.follower->Status().phase, FollowerPhase::kStreaming);
  EXPECT_EQ(f.follower->epoch(), 2u);
  auto saved = LoadNodeState(f.state_path);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->database_id, kDatabase);
  EXPECT_EQ(saved->epoch, 2u);
  EXPECT_EQ(saved->history, LeaderState(2).history);
  // And it is then served from seq 1.
  auto ship = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(ship.has_value());
  ASSERT_FALSE(ship->batches.empty());
  EXPECT_EQ(ship->batches.front().batch.first_seq, 1u);
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kOk) << ack->message;
  EXPECT_EQ(f.engine->LatestSequence(), 3u);
  EXPECT_TRUE(SameContents(*l.engine, *f.engine));
}

// With seed_new_followers (the node's setting), a follower holding nothing is told to seed
// itself from a checkpoint once the leader holds writes; one that holds data streams on, and
// an empty leader streams to it from seq 1.
TEST(HandshakeTest, ANewFollowerOfALeaderWithWritesIsSeededFromACheckpoint) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.seed_new_followers = true;
  LeaderNode l(dir, &clock, options, LeaderState(2));
  FollowerNode early(dir, "f1", &clock);
  ASSERT_EQ(Connect(*l.leader, *early.follower).reply.outcome, HelloOutcome::kAccepted);
  l.Write(3);
  FollowerNode fresh(dir, "f2", &clock);
  Handshake h = Connect(*l.leader, *fresh.follower);
  EXPECT_EQ(h.reply.outcome, HelloOutcome::kNeedsSnapshot);
  EXPECT_NE(h.reply.message.find("seeded from a checkpoint"), std::string::npos)
      << h.reply.message;
  EXPECT_EQ(fresh.follower->Status().phase, FollowerPhase::kNeedsSnapshot);
  // The one that streamed before comes back and streams on.
  auto ship = l.leader->NextShip(Connect(*l.leader, *early.follower).session, false);
  ASSERT_TRUE(ship.has_value());
  EXPECT_EQ(ship->batches.front().batch.first_seq, 1u);
}

// The WAL a leader keeps for its followers starts at the lowest applied + 1 among those
// connected or away; followers told to re-seed, or refused, pin nothing.
TEST(HandshakeTest, TheWalNeededFromIsTheSlowestKnownFollowersNextSeq) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), LeaderState(2));
  EXPECT_EQ(l.leader->WalNeededFrom(), UINT64_MAX);
  FollowerNode f1(dir, "f1", &clock);
  FollowerNode f2(dir, "f2", &clock);
  Handshake h1 = Connect(*l.leader, *f1.follower);
  Handshake h2 = Connect(*l.leader, *f2.follower);
  ASSERT_EQ(h1.reply.outcome, HelloOutcome::kAccepted);
  ASSERT_EQ(h2.reply.outcome, HelloOutcome::kAccepted);
  EXPECT_EQ(l.leader->WalNeededFrom(), 1u);
  l.Write(4);
  auto ship = l.leader->NextShip(h1.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f1.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok());
  l.leader->OnAck(h1.session, *ack);
  EXPECT_EQ(l.leader->WalNeededFrom(), 1u) << "f2 still needs seq 1";
  l.leader->OnDisconnect(h2.session);
  EXPECT_EQ(l.leader->WalNeededFrom(), 1u) << "a follower away still pins its position";
  Handshake back = Connect(*l.leader, *f2.follower);
  ASSERT_EQ(back.reply.outcome, HelloOutcome::kAccepted);
  ship = l.leader->NextShip(back.session, false);
  ASSERT_TRUE(ship.has_value());
  ack = f2.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok());
  l.leader->OnAck(back.session, *ack);
  // Both at the leader's latest: the WAL after it.
  EXPECT_EQ(l.leader->WalNeededFrom(), l.leader->latest() + 1);
}

}  // namespace
}  // namespace walship::replication
