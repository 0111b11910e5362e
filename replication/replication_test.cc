// Unit tests of replication/: NodeState persistence, the handshake, the follower's continuity
// and epoch checks, and the leader's WAL fallback and lag accounting. Every test drives the
// state machines directly with real engines in a temporary directory; no sockets.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/engine.h"
#include "engine/test_util.h"
#include "replication/clock.h"
#include "replication/follower.h"
#include "replication/handover.h"
#include "replication/leader.h"
#include "replication/messages.h"
#include "replication/node_state.h"
#include "replication/test_util.h"

namespace walship::replication {
namespace {

namespace fs = std::filesystem;
using engine::Batch;
using engine::Engine;
using engine::EngineOptions;
using engine::OpType;
using engine::WriteOp;
using engine::testing::OpenOrDie;
using engine::testing::SameContents;
using engine::testing::ScanAll;
using testing::FakeClock;

// Directories named after this test binary.
class TempDir : public engine::testing::TempDir {
 public:
  TempDir() : engine::testing::TempDir("walship-replication-test") {}
};

constexpr char kCluster[] = "main";
constexpr char kDatabase[] = "db1";

NodeState LeaderState(Epoch epoch = 1) {
  NodeState state;
  state.database_id = kDatabase;
  state.epoch = epoch;
  for (Epoch e = 1; e <= epoch; ++e) state.history.push_back({e, 1, "leader"});
  return state;
}

LeaderOptions DefaultLeaderOptions() {
  LeaderOptions options;
  options.cluster = kCluster;
  options.node_id = "leader";
  options.members_only = true;
  options.members = {"f1", "f2"};
  return options;
}

// One leader node: an engine and the Leader state machine fed with every write, in order.
struct LeaderNode {
  LeaderNode(const TempDir& dir, Clock* node_clock, LeaderOptions options = DefaultLeaderOptions(),
             NodeState state = LeaderState(), EngineOptions engine_options = {}) {
    engine = OpenOrDie(dir.Sub("leader"), engine_options);
    leader =
        std::make_unique<Leader>(std::move(options), engine.get(), std::move(state), node_clock);
    clock = node_clock;
  }

  // Writes one batch of `n` puts and hands it to the Leader.
  Batch Write(int n = 1) {
    std::vector<WriteOp> ops;
    for (int i = 0; i < n; ++i) {
      std::string value = "v" + std::to_string(counter);
      value.push_back('\0');
      value.push_back(static_cast<char>(0xff));
      ops.push_back({OpType::kPut, "key" + std::to_string(counter++ % 37), value});
    }
    engine::WriteOptions wo;
    wo.write_time_us = clock->NowMicros();  // as rpc/ writes: the time inside the batch
    auto batch = engine->Write(ops, wo);
    EXPECT_TRUE(batch.ok()) << batch.status();
    leader->OnLocalWrite(*batch, engine::BatchWriteTime(*batch));
    return *batch;
  }

  std::unique_ptr<Engine> engine;
  std::unique_ptr<Leader> leader;
  Clock* clock = nullptr;
  int counter = 0;
};

// One follower node: an engine, its state file and the Follower state machine.
struct FollowerNode {
  FollowerNode(const TempDir& dir, const std::string& name, Clock* clock,
               std::optional<NodeState> initial = std::nullopt,
               const std::string& cluster = kCluster) {
    engine = OpenOrDie(dir.Sub(name));
    state_path = dir.Sub(name + ".state");
    if (initial.has_value()) {
      EXPECT_TRUE(SaveNodeState(state_path, *initial).ok());
    }
    auto state = LoadNodeState(state_path);
    EXPECT_TRUE(state.ok()) << state.status();
    FollowerOptions options;
    options.cluster = cluster;
    options.node_id = name;
    options.state_path = state_path;
    follower = std::make_unique<Follower>(options, engine.get(), *state, clock);
  }

  std::unique_ptr<Engine> engine;
  std::string state_path;
  std::unique_ptr<Follower> follower;
};

// Runs the handshake; returns the leader's reply and the follower's verdict.
struct Handshake {
  HelloReply reply;
  absl::Status status;
  uint64_t session = 0;
};
Handshake Connect(Leader& leader, Follower& follower) {
  Handshake h;
  h.reply = leader.OnHello(follower.MakeHello(), &h.session);
  h.status = follower.OnHelloReply(h.reply);
  return h;
}

Ship ShipOf(Epoch epoch, std::vector<Batch> batches) {
  Ship ship;
  ship.epoch = epoch;
  for (Batch& b : batches) ship.batches.push_back(ShippedBatch{std::move(b), 0});
  if (!ship.batches.empty()) ship.leader_latest = ship.batches.back().batch.last_seq();
  return ship;
}

// ---------------------------------------------------------------------------------------------
// NodeState

TEST(NodeStateTest, SaveThenLoadRoundTrips) {
  TempDir dir;
  NodeState state;
  state.database_id = NewDatabaseId();
  state.epoch = 7;
  state.history = {{1, 1, "n1"}, {4, 120, "n2"}, {7, 120, "n1"}};
  ASSERT_TRUE(SaveNodeState(dir.Sub("state"), state).ok());
  auto loaded = LoadNodeState(dir.Sub("state"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->database_id, state.database_id);
  EXPECT_EQ(loaded->epoch, 7u);
  EXPECT_EQ(loaded->history, state.history);
  EXPECT_EQ(loaded->EpochOf(0), 0u);
  EXPECT_EQ(loaded->EpochOf(119), 1u);
  EXPECT_EQ(loaded->EpochOf(120), 7u);
  // Saving again replaces the file.
  state.epoch = 8;
  state.history.push_back({8, 200, "n3"});
  ASSERT_TRUE(SaveNodeState(dir.Sub("state"), state).ok());
  loaded = LoadNodeState(dir.Sub("state"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->epoch, 8u);
  EXPECT_EQ(loaded->history, state.history);
  EXPECT_FALSE(fs::exists(dir.Sub("state.tmp")));
}

TEST(NodeStateTest, MalformedFileIsDataLossNamingFileAndLine) {
  TempDir dir;
  std::string path = dir.Sub("state");
  // Writes `contents` as the state file and expects DataLoss naming `where`.
  auto expect_data_loss = [&](const std::string& contents, const std::string& where) {
    {
      std::ofstream out(path);
      out << contents;
    }
    auto loaded = LoadNodeState(path);
    ASSERT_TRUE(absl::IsDataLoss(loaded.status())) << contents << ": " << loaded.status();
    EXPECT_NE(loaded.status().message().find(where), std::string::npos) << loaded.status();
  };
  expect_data_loss("walship-node-state 1\ndatabase_id abc\nepoch seven\n", path + ":3:");
  expect_data_loss("not a state file\n", path + ":1:");
  expect_data_loss("walship-node-state 1\nepoch 2\nhistory 2 1\nhistory 1 5\n", path);
}

// Files written before epoch entries named their leader still load (leaders unknown), and
// are rewritten in the current format.
TEST(NodeStateTest, VersionOneFilesLoadWithUnknownLeaders) {
  TempDir dir;
  std::string path = dir.Sub("state");
  {
    std::ofstream out(path);
    out << "walship-node-state 1\ndatabase_id abc\nepoch 3\nhistory 1 1\nhistory 3 40\n";
  }
  auto loaded = LoadNodeState(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->history, (std::vector<EpochEntry>{{1, 1, ""}, {3, 40, ""}}));
  ASSERT_TRUE(SaveNodeState(path, *loaded).ok());
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first, "walship-node-state " + std::to_string(kNodeStateVersion));
  auto again = LoadNodeState(path);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->history, loaded->history);
}

TEST(NodeStateTest, ANewerFormatIsRefusedNamingBothVersions) {
  TempDir dir;
  std::string path = dir.Sub("state");
  {
    std::ofstream out(path);
    out << "walship-node-state 9\nepoch 3\nsomething new\n";
  }
  auto loaded = LoadNodeState(path);
  ASSERT_TRUE(absl::IsFailedPrecondition(loaded.status())) << loaded.status();
  std::string message(loaded.status().message());
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("version 9"), std::string::npos) << message;
  EXPECT_NE(message.find("versions 1 to " + std::to_string(kNodeStateVersion)),
            std::string::npos)
      << message;
}

// A state that does not hold together is never written: the file keeps the last good one.
TEST(NodeStateTest, SaveRefusesAStateOutOfOrderAndKeepsTheFile) {
  TempDir dir;
  std::string path = dir.Sub("state");
  NodeState good = LeaderState(2);
  ASSERT_TRUE(SaveNodeState(path, good).ok());
  NodeState bad = good;
  bad.epoch = 3;
  bad.history = {{1, 1, "a"}, {2, 50, "b"}, {3, 10, "c"}};  // epoch 3 starts before epoch 2
  absl::Status s = SaveNodeState(path, bad);
  EXPECT_TRUE(absl::IsInternal(s)) << s;
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  NodeState behind = good;
  behind.epoch = 1;  // below the history's last epoch
  EXPECT_TRUE(absl::IsInternal(SaveNodeState(path, behind)));
  NodeState spaced = good;
  spaced.history.back().leader = "two words";
  EXPECT_TRUE(absl::IsInternal(SaveNodeState(path, spaced)));
  auto loaded = LoadNodeState(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->history, good.history);
  EXPECT_EQ(loaded->epoch, good.epoch);
}

// The epoch rule: a new epoch is above every epoch the node has seen, and its history stays
// in order whatever the node held, including a history adopted from a leader whose last
// epoch starts past what this node applied (which once produced a file the node then refused
// to start from).
TEST(EpochTest, BeginEpochIsAboveEverythingSeenAndKeepsTheHistoryInOrder) {
  NodeState state;
  BeginEpoch(state, 1, "n1");
  EXPECT_EQ(state.epoch, 1u);
  EXPECT_EQ(state.history, (std::vector<EpochEntry>{{1, 1, "n1"}}));
  // Restarted with nothing written: the empty epoch is replaced.
  BeginEpoch(state, 1, "n1");
  EXPECT_EQ(state.epoch, 2u);
  EXPECT_EQ(state.history, (std::vector<EpochEntry>{{2, 1, "n1"}}));
  // A follower adopted (5, n2) starting at 100 but applied only up to 60.
  state.epoch = 5;
  state.history = {{2, 1, "n1"}, {5, 100, "n2"}};
  BeginEpoch(state, 61, "n3");
  EXPECT_EQ(state.epoch, 6u);
  EXPECT_EQ(state.history, (std::vector<EpochEntry>{{2, 1, "n1"}, {6, 61, "n3"}}));
  EXPECT_TRUE(ValidateState(state).ok());
  // The epoch is above the history's too, should the current epoch lag behind it.
  state.epoch = 1;
  state.history = {{9, 1, "n2"}};
  BeginEpoch(state, 10, "n1");
  EXPECT_EQ(state.epoch, 10u);
  EXPECT_TRUE(ValidateState(state).ok());
}

TEST(NodeStateTest, MissingFileIsAnEmptyState) {
  TempDir dir;
  auto loaded = LoadNodeState(dir.Sub("nothing-here"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->database_id.empty());
  EXPECT_EQ(loaded->epoch, 0u);
  EXPECT_TRUE(loaded->history.empty());
}

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
    EXPECT_NE(h.reply.message.find("not a follower in the configuration"), std::string::npos)
        << h.reply.message;
    EXPECT_NE(h.reply.message.find("f1, f2"), std::string::npos) << h.reply.message;
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

TEST(HandshakeTest, FollowerBeyondTheLeadersLogNeedsASnapshot) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  l.Write(2);  // leader ends at seq 2
  FollowerNode f(dir, "f1", &clock, LeaderState());
  // The follower holds seq 1..5 (written while it was a leader that lost its place).
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

// ---------------------------------------------------------------------------------------------
// Follower

// A leader at `epoch` with batches of 2 puts at seq 1-2, 3-4, 5-6, 7-8, 9-10 and a streaming
// follower that has applied nothing yet.
struct FollowerFixture {
  explicit FollowerFixture(Epoch epoch = 1)
      : l(dir, &clock, DefaultLeaderOptions(), LeaderState(epoch)), f(dir, "f1", &clock) {
    for (int i = 0; i < 5; ++i) batches.push_back(l.Write(2));
    Handshake h = Connect(*l.leader, *f.follower);
    EXPECT_TRUE(h.status.ok()) << h.status;
    session = h.session;
  }

  TempDir dir;
  FakeClock clock;
  LeaderNode l;
  FollowerNode f;
  std::vector<Batch> batches;
  uint64_t session = 0;
};

// A follower keeps the leader's WAL record boundaries: batches shipped together are still
// separate records in its WAL, so once it leads it serves a follower whose position lies
// between them from its own WAL, and that follower ends with identical contents.
TEST(FollowerTest, KeepsTheLeadersRecordBoundariesSoItCanServeOthersOnceItLeads) {
  FollowerFixture fx;  // batches at 1-2, 3-4, 5-6, 7-8, 9-10; f1 applied nothing
  auto ack = fx.f.follower->OnShip(ShipOf(1, fx.batches), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
  ASSERT_EQ(fx.f.engine->LatestSequence(), 10u);
  auto cursor = fx.f.engine->NewWalCursor(1);
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  for (const Batch& want : fx.batches) {
    auto got = (*cursor)->Next();
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->first_seq, want.first_seq);
    EXPECT_EQ((*got)->count, want.count);
    EXPECT_EQ((*got)->data, want.data);
  }
  // f2 applied the first two batches (up to seq 4).
  FollowerNode f2(fx.dir, "f2", &fx.clock);
  Handshake h2 = Connect(*fx.l.leader, *f2.follower);
  ASSERT_TRUE(h2.status.ok()) << h2.status;
  ack = f2.follower->OnShip(ShipOf(1, {fx.batches[0], fx.batches[1]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  f2.follower->OnDisconnect();
  // f1 leads, from its own WAL only (an empty memory tail).
  auto f1_state = LoadNodeState(fx.f.state_path);
  ASSERT_TRUE(f1_state.ok()) << f1_state.status();
  BeginEpoch(*f1_state, fx.f.engine->LatestSequence() + 1, "f1");
  LeaderOptions options = DefaultLeaderOptions();
  options.node_id = "f1";
  options.members = {"f2"};
  Leader promoted(options, fx.f.engine.get(), *f1_state, &fx.clock);
  Handshake h = Connect(promoted, *f2.follower);
  ASSERT_EQ(h.reply.outcome, HelloOutcome::kAccepted) << h.reply.message;
  ASSERT_TRUE(h.status.ok()) << h.status;
  for (int i = 0; i < 10 && promoted.HasWork(h.session); ++i) {
    auto ship = promoted.NextShip(h.session, false);
    ASSERT_TRUE(ship.has_value());
    ASSERT_TRUE(ship->needs_snapshot.empty()) << ship->needs_snapshot;
    ack = f2.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack->message;
    promoted.OnAck(h.session, *ack);
  }
  EXPECT_EQ(f2.engine->LatestSequence(), 10u);
  EXPECT_TRUE(SameContents(*fx.l.engine, *f2.engine));
}

TEST(FollowerTest, RefusesAShipFromAnOlderEpoch) {
  FollowerFixture fx(2);
  ASSERT_EQ(fx.f.follower->epoch(), 2u);
  auto ack = fx.f.follower->OnShip(ShipOf(1, {fx.batches[0], fx.batches[1]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kStale) << ack->message;
  EXPECT_EQ(ack->epoch, 2u);
  EXPECT_EQ(ack->applied, 0u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 0u);
  // The same batches under the right epoch are applied.
  ack = fx.f.follower->OnShip(ShipOf(2, {fx.batches[0], fx.batches[1]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kOk) << ack->message;
  EXPECT_EQ(fx.f.engine->LatestSequence(), 4u);
}

TEST(FollowerTest, AnswersAShipPastItsPositionWithAGap) {
  FollowerFixture fx;
  auto ack = fx.f.follower->OnShip(ShipOf(1, {fx.batches[0]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  ASSERT_EQ(fx.f.engine->LatestSequence(), 2u);
  // Batch 5-6 without 3-4.
  ack = fx.f.follower->OnShip(ShipOf(1, {fx.batches[2], fx.batches[3]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kGap) << ack->message;
  EXPECT_EQ(ack->applied, 2u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 2u);
  EXPECT_EQ(fx.f.follower->Status().applied, 2u);
  // The leader had shipped everything (that message was lost); the gap ack makes it resend
  // from applied + 1, never skip forward.
  auto lost = fx.l.leader->NextShip(fx.session, false);
  ASSERT_TRUE(lost.has_value());
  ASSERT_FALSE(fx.l.leader->HasWork(fx.session));
  fx.l.leader->OnAck(fx.session, *ack);
  ASSERT_TRUE(fx.l.leader->HasWork(fx.session));
  auto ship = fx.l.leader->NextShip(fx.session, false);
  ASSERT_TRUE(ship.has_value());
  EXPECT_EQ(ship->batches.front().batch.first_seq, 3u);
  ack = fx.f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack->message;
  EXPECT_TRUE(SameContents(*fx.l.engine, *fx.f.engine));
}

TEST(FollowerTest, SkipsDuplicatedBatches) {
  FollowerFixture fx;
  auto& b = fx.batches;
  auto ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[2]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  ASSERT_EQ(fx.f.engine->LatestSequence(), 6u);
  uint64_t bytes = fx.f.follower->Status().bytes_applied;
  // Entirely duplicated: nothing applied, still ok.
  ack = fx.f.follower->OnShip(ShipOf(1, {b[1], b[2]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kOk) << ack->message;
  EXPECT_EQ(ack->applied, 6u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 6u);
  EXPECT_EQ(fx.f.follower->Status().bytes_applied, bytes);
  // Overlapping: the held prefix is skipped, the rest applied once.
  ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[2], b[3], b[4]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kOk) << ack->message;
  EXPECT_EQ(ack->applied, 10u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 10u);
  EXPECT_TRUE(SameContents(*fx.l.engine, *fx.f.engine));
}

TEST(FollowerTest, NonContiguousShipFailsAndAppliesNothing) {
  FollowerFixture fx;
  auto& b = fx.batches;
  auto ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[3]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kFailed) << ack->message;
  EXPECT_NE(ack->message.find("contiguous"), std::string::npos) << ack->message;
  EXPECT_EQ(ack->applied, 0u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 0u);
  EXPECT_TRUE(ScanAll(*fx.f.engine).empty());
  // Still streaming: a good message is applied.
  ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[2], b[3], b[4]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack->message;
  EXPECT_TRUE(SameContents(*fx.l.engine, *fx.f.engine));
}

// ---------------------------------------------------------------------------------------------
// Leader

TEST(LeaderTest, FollowerWhosePositionWasPurgedIsToldToReseed) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_tail_bytes = 1;  // the memory tail keeps only the latest batch
  EngineOptions engine_options;
  engine_options.wal_retention_bytes = 0;  // age limit only: RocksDB then checks every second
  engine_options.wal_retention_seconds = 1;
  LeaderNode l(dir, &clock, options, LeaderState(), engine_options);
  FollowerNode f(dir, "f1", &clock);

  // The follower gets seq 1 and goes away.
  l.Write();
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  auto ship = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  l.leader->OnAck(h.session, *ack);
  ASSERT_EQ(f.engine->LatestSequence(), 1u);
  l.leader->OnDisconnect(h.session);
  f.follower->OnDisconnect();

  // Write until the WAL that holds seq 2 is purged.
  l.Write();
  bool purged = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!purged && std::chrono::steady_clock::now() < deadline) {
    l.Write();
    ASSERT_TRUE(l.engine->Flush().ok());
    auto cursor = l.engine->NewWalCursor(2);
    ASSERT_TRUE(cursor.ok());
    auto next = (*cursor)->Next();
    if (next.ok()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    } else {
      ASSERT_TRUE(absl::IsOutOfRange(next.status())) << next.status();
      purged = true;
    }
  }
  ASSERT_TRUE(purged) << "the WAL holding seq 2 was never purged within the deadline";

  // The handshake accepts (seq 1 is a known position), but the leader cannot serve seq 2.
  h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  ASSERT_EQ(f.follower->Status().phase, FollowerPhase::kStreaming);
  EXPECT_TRUE(l.leader->HasWork(h.session));
  ship = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(ship.has_value());
  EXPECT_FALSE(ship->needs_snapshot.empty());
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].state, FollowerState::kNeedsSnapshot);
  EXPECT_FALSE(infos[0].message.empty());
  EXPECT_FALSE(l.leader->HasWork(h.session));
  EXPECT_FALSE(l.leader->NextShip(h.session, true).has_value());

  ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kFailed);
  EXPECT_EQ(f.follower->Status().phase, FollowerPhase::kNeedsSnapshot);
  EXPECT_EQ(f.follower->Status().message, ship->needs_snapshot);
  EXPECT_EQ(f.engine->LatestSequence(), 1u);
  // Anything later is refused too.
  ack = f.follower->OnShip(ShipOf(1, {l.Write()}), {});
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->outcome, AckOutcome::kFailed);
  EXPECT_EQ(f.engine->LatestSequence(), 1u);
}

// With read_wal_inline = false the leader never reads its WAL in NextShip: a follower older
// than the memory tail is served from WalReads run elsewhere (one at a time), and catches up
// with identical contents. A read for a session that has ended is dropped.
TEST(LeaderTest, WalReadsOffTheLeadersThreadCatchAFollowerUp) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_tail_bytes = 1;  // the memory tail keeps only the newest batch
  options.read_wal_inline = false;
  options.max_wal_read_bytes = 256;  // a few batches per read
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  for (int i = 0; i < 50; ++i) l.Write(3);
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  ASSERT_TRUE(l.leader->HasWork(h.session));
  EXPECT_FALSE(l.leader->NextShip(h.session, false).has_value());  // no read yet

  // A read for a session that ends meanwhile is dropped.
  auto stale = l.leader->TakeWalRead(h.session);
  ASSERT_TRUE(stale.has_value());
  l.leader->OnDisconnect(h.session);
  h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  stale->Run();
  EXPECT_FALSE(l.leader->OnWalRead(std::move(*stale)).has_value());
  EXPECT_FALSE(l.leader->NextShip(h.session, false).has_value());

  int reads = 0;
  for (int round = 0; round < 1000 && l.leader->HasWork(h.session); ++round) {
    if (auto read = l.leader->TakeWalRead(h.session); read.has_value()) {
      EXPECT_FALSE(l.leader->TakeWalRead(h.session).has_value());  // one at a time
      read->Run();
      ASSERT_TRUE(read->status.ok()) << read->status;
      ++reads;
      ASSERT_FALSE(l.leader->OnWalRead(std::move(*read)).has_value());
    }
    auto ship = l.leader->NextShip(h.session, false);
    if (!ship.has_value()) continue;
    auto ack = f.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
    l.leader->OnAck(h.session, *ack);
  }
  EXPECT_GT(reads, 5);
  EXPECT_FALSE(l.leader->HasWork(h.session));
  EXPECT_EQ(f.engine->LatestSequence(), l.engine->LatestSequence());
  EXPECT_TRUE(SameContents(*l.engine, *f.engine));
}

TEST(LeaderTest, PendingBytesCountsWhatIsNotYetSentAndFlagsWalCatchUp) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_ship_bytes = 1;  // one batch per message
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  std::vector<Batch> written;
  for (int i = 0; i < 3; ++i) written.push_back(l.Write(2));
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  uint64_t all = 0;
  for (const Batch& b : written) all += b.data.size();
  EXPECT_EQ(l.leader->PendingBytes(h.session), all);
  ASSERT_TRUE(l.leader->NextShip(h.session, false).has_value());
  EXPECT_EQ(l.leader->PendingBytes(h.session), all - written[0].data.size());
  ASSERT_TRUE(l.leader->NextShip(h.session, false).has_value());
  ASSERT_TRUE(l.leader->NextShip(h.session, false).has_value());
  EXPECT_EQ(l.leader->PendingBytes(h.session), 0u);
  EXPECT_EQ(l.leader->PendingBytes(0), 0u);

  // A follower whose position is older than the memory tail is catching up from the WAL.
  LeaderOptions small = DefaultLeaderOptions();
  small.max_tail_bytes = 1;  // keeps only the newest batch
  TempDir dir2;
  LeaderNode l2(dir2, &clock, small);
  FollowerNode f2(dir2, "f2", &clock);
  l2.Write(1);
  l2.Write(1);
  Handshake h2 = Connect(*l2.leader, *f2.follower);
  ASSERT_TRUE(h2.status.ok()) << h2.status;
  EXPECT_EQ(l2.leader->PendingBytes(h2.session), UINT64_MAX);
}

TEST(LeaderTest, LagIsLatestMinusApplied) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_ship_bytes = 1;  // one batch per message
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  int64_t t0 = clock.NowMicros();
  for (int i = 0; i < 4; ++i) {
    clock.Set(t0 + i * 1000'000);  // one batch per second
    l.Write(3);
  }
  ASSERT_EQ(l.leader->latest(), 12u);
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  clock.Set(t0 + 10'000'000);
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].lag_seq, 12u);
  EXPECT_EQ(infos[0].lag_ms, 10'000);  // the oldest unapplied write is 10 s old

  for (SequenceNumber applied = 3; applied <= 12; applied += 3) {
    auto ship = l.leader->NextShip(h.session, false);
    ASSERT_TRUE(ship.has_value());
    ASSERT_EQ(ship->batches.size(), 1u);
    auto ack = f.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
    EXPECT_EQ(ack->applied, applied);
    l.leader->OnAck(h.session, *ack);
    infos = l.leader->Followers();
    ASSERT_EQ(infos.size(), 1u);
    EXPECT_EQ(infos[0].applied, applied);
    EXPECT_EQ(infos[0].sent, applied);
    EXPECT_EQ(infos[0].lag_seq, l.leader->latest() - applied);
    if (applied < 12) {
      // Batch starting at applied + 1 was written at t0 + (applied / 3) s.
      EXPECT_EQ(infos[0].lag_ms, 10'000 - static_cast<int64_t>(applied / 3) * 1000);
    } else {
      EXPECT_EQ(infos[0].lag_ms, 0);
    }
    EXPECT_EQ(f.follower->Status().lag_seq, 12u - applied);
  }
  EXPECT_FALSE(l.leader->NextShip(h.session, false).has_value());
  // New writes the follower has not acked count as lag again.
  l.Write(2);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].lag_seq, 2u);
  EXPECT_EQ(infos[0].state, FollowerState::kConnected);
  // Acks of an ended session are ignored.
  l.leader->OnDisconnect(h.session);
  Ack bogus;
  bogus.epoch = 1;
  bogus.applied = 14;
  bogus.received = 14;
  l.leader->OnAck(h.session, bogus);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].state, FollowerState::kDisconnected);
  EXPECT_EQ(infos[0].lag_seq, 2u);
}

// An engine whose ApplyReplicated waits until released: a stand-in for a large apply.
class SlowApplyEngine final : public Engine {
 public:
  explicit SlowApplyEngine(Engine* inner) : inner_(inner) {}
  void Release() { release_.Notify(); }
  absl::Notification entered;

  absl::Status ApplyReplicated(Batch batch, const engine::WriteOptions& options) override {
    entered.Notify();
    release_.WaitForNotificationWithTimeout(absl::Seconds(10));
    return inner_->ApplyReplicated(std::move(batch), options);
  }
  absl::StatusOr<Batch> Write(absl::Span<const WriteOp> ops,
                              const engine::WriteOptions& options) override {
    return inner_->Write(ops, options);
  }
  absl::StatusOr<std::string> Get(std::string_view key, const engine::ReadOptions& r) override {
    return inner_->Get(key, r);
  }
  absl::StatusOr<std::vector<engine::KeyValue>> Scan(const engine::ScanOptions& o,
                                                     const engine::ReadOptions& r) override {
    return inner_->Scan(o, r);
  }
  std::shared_ptr<const engine::Snapshot> GetSnapshot() override {
    return inner_->GetSnapshot();
  }
  SequenceNumber LatestSequence() override { return inner_->LatestSequence(); }
  absl::StatusOr<std::unique_ptr<engine::WalCursor>> NewWalCursor(SequenceNumber s) override {
    return inner_->NewWalCursor(s);
  }
  absl::StatusOr<SequenceNumber> CreateCheckpoint(const std::string& dir) override {
    return inner_->CreateCheckpoint(dir);
  }
  absl::Status IngestExternalFiles(const std::vector<std::string>& files) override {
    return inner_->IngestExternalFiles(files);
  }
  absl::Status Flush() override { return inner_->Flush(); }
  uint64_t ApproximateSizeBytes() override { return inner_->ApproximateSizeBytes(); }
  absl::Status SyncWal() override { return inner_->SyncWal(); }
  absl::Status StorageError() override { return inner_->StorageError(); }
  absl::Status Resume() override { return inner_->Resume(); }
  absl::StatusOr<engine::WalTrim> TrimWalArchive() override { return inner_->TrimWalArchive(); }

 private:
  Engine* inner_;
  absl::Notification release_;
};

// Status (which the follower's event loop serves) does not wait for an apply running on a
// worker thread; the apply's result shows once it is done.
TEST(FollowerTest, StatusDoesNotWaitForAnApplyInProgress) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  auto inner = OpenOrDie(dir.Sub("f1"));
  SlowApplyEngine slow(inner.get());
  FollowerOptions options;
  options.cluster = kCluster;
  options.node_id = "f1";
  options.state_path = dir.Sub("f1.state");
  Follower follower(options, &slow, NodeState{}, &clock);
  l.Write(5);
  Handshake h = Connect(*l.leader, follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  auto ship = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(ship.has_value());
  std::thread applier([&] {
    auto ack = follower.OnShip(*ship, {});
    EXPECT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  });
  ASSERT_TRUE(slow.entered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The apply is blocked inside the engine; status answers at once, from before it.
  auto start = std::chrono::steady_clock::now();
  FollowerStatus during = follower.Status();
  EXPECT_EQ(follower.epoch(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(during.applied, 0u);
  EXPECT_EQ(during.lag_seq, 5u);
  slow.Release();
  applier.join();
  EXPECT_EQ(follower.Status().applied, 5u);
  EXPECT_EQ(follower.Status().lag_seq, 0u);
}

// Batches older than the memory tail are read from the WAL, and their write time travels
// inside them: the leader's and the follower's lag_ms are right while it catches up.
TEST(LeaderTest, LagOfBatchesServedFromTheWalUsesTheirWriteTime) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_ship_bytes = 1;  // one batch per message
  options.max_tail_bytes = 1;  // the memory tail keeps only the newest batch
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  int64_t t0 = clock.NowMicros();
  for (int i = 0; i < 5; ++i) {
    clock.Set(t0 + i * 1000'000);  // one batch per second
    l.Write(2);
  }
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  clock.Set(t0 + 20'000'000);
  for (int i = 0; i < 4; ++i) {  // the four batches older than the tail
    auto ship = l.leader->NextShip(h.session, false);
    ASSERT_TRUE(ship.has_value());
    ASSERT_EQ(ship->batches.size(), 1u);
    EXPECT_EQ(ship->batches[0].leader_time_us, t0 + i * 1000'000) << i;
    // In flight, not acked: the leader reports the age of the batch the follower lacks.
    EXPECT_EQ(l.leader->Followers()[0].lag_ms, 20'000 - i * 1000) << i;
    auto ack = f.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
    l.leader->OnAck(h.session, *ack);
    // The follower's own lag: the age of its last applied batch while it is behind.
    EXPECT_EQ(f.follower->Status().lag_ms, 20'000 - i * 1000) << i;
    // Applied up to batch i, nothing in flight: for i < 3 the next batch is only in the WAL
    // and the leader gives the age of the oldest batch in memory (batch 4), a lower bound;
    // for i = 3 the next batch is that one, and the figure is exact.
    EXPECT_EQ(l.leader->Followers()[0].lag_ms, 20'000 - 4 * 1000) << i;
  }
}

// A reconnect ends the earlier session: whatever still arrives for it (acks, the old
// connection's close) must not touch the follower's record. Session 0, which OnHello returns
// for a refused follower, is never a session either.
TEST(LeaderTest, EndedAndRefusedSessionsAreIgnored) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  FollowerNode f(dir, "f1", &clock);
  FollowerNode stranger(dir, "f2", &clock, std::nullopt, "elsewhere");
  l.Write(2);
  Handshake first = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(first.status.ok()) << first.status;
  auto ship = l.leader->NextShip(first.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  l.leader->OnAck(first.session, *ack);
  l.leader->OnDisconnect(first.session);
  f.follower->OnDisconnect();
  l.Write(3);

  // A refused follower gets session 0; what rpc/ forwards for it is ignored.
  Handshake refused = Connect(*l.leader, *stranger.follower);
  ASSERT_EQ(refused.reply.outcome, HelloOutcome::kRefused);
  ASSERT_EQ(refused.session, 0u);
  Ack lie;
  lie.epoch = 1;
  lie.received = lie.durable = lie.applied = l.leader->latest();
  l.leader->OnAck(refused.session, lie);
  l.leader->OnDisconnect(refused.session);
  EXPECT_FALSE(l.leader->HasWork(refused.session));
  EXPECT_FALSE(l.leader->NextShip(refused.session, true).has_value());
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_EQ(infos[0].id, "f1");
  EXPECT_EQ(infos[0].state, FollowerState::kDisconnected);
  EXPECT_EQ(infos[0].applied, 2u) << "an ack for session 0 changed another follower's record";
  EXPECT_EQ(infos[0].lag_seq, 3u);
  EXPECT_EQ(infos[1].state, FollowerState::kRefused);
  EXPECT_EQ(infos[1].applied, 0u);

  // Reconnect: the old session's ack and close no longer count.
  Handshake second = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(second.status.ok()) << second.status;
  ASSERT_NE(second.session, first.session);
  l.leader->OnAck(first.session, lie);
  l.leader->OnDisconnect(first.session);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].state, FollowerState::kConnected);
  EXPECT_EQ(infos[0].applied, 2u);
  ASSERT_TRUE(l.leader->HasWork(second.session));
  ship = l.leader->NextShip(second.session, false);
  ASSERT_TRUE(ship.has_value());
  EXPECT_EQ(ship->batches.front().batch.first_seq, 3u);
  ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  l.leader->OnAck(second.session, *ack);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].applied, 5u);
  EXPECT_EQ(infos[0].lag_seq, 0u);
  EXPECT_TRUE(SameContents(*l.engine, *f.engine));
}

// ---------------------------------------------------------------------------------------------
// Handover

NodeState FollowingState(Epoch epoch, const std::string& leader) {
  NodeState state;
  state.database_id = kDatabase;
  state.epoch = epoch;
  state.history = {{1, 1, "n0"}};
  if (epoch > 1) state.history.push_back({epoch, 50, leader});
  state.role = "follower";
  state.leader = leader;
  return state;
}

TEST(HandoverTest, AFollowerTakesOverOnlyWhenItHoldsEverythingItsLeaderWrote) {
  TakeOver t;
  t.from = "n0";
  t.epoch = 2;
  t.latest = 90;
  bool take_over = false;
  NodeState state = FollowingState(2, "n0");
  TakeOverReply r = AnswerTakeOver(state, 90, "n1", t, &take_over);
  EXPECT_TRUE(r.accepted && take_over) << r.message;
  // Behind by one batch, another epoch, another leader: refused, naming why.
  r = AnswerTakeOver(state, 89, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  EXPECT_NE(r.message.find("89"), std::string::npos) << r.message;
  EXPECT_EQ(r.epoch, 2u);
  r = AnswerTakeOver(FollowingState(3, "n0"), 90, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  EXPECT_EQ(r.epoch, 3u) << "a refusal names the highest epoch seen";
  r = AnswerTakeOver(FollowingState(2, "n2"), 90, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  t.version = 1;
  r = AnswerTakeOver(state, 90, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  EXPECT_NE(r.message.find("version 1"), std::string::npos) << r.message;
}

// The answer was lost and the leader asks again: the node that took over says yes again
// (and does nothing), so the leader steps down rather than lead beside it.
TEST(HandoverTest, AskingAgainAfterATakeOverIsAnsweredYesWithoutASecondEpoch) {
  TakeOver t;
  t.from = "n0";
  t.epoch = 2;
  t.latest = 90;
  NodeState led = StateForLeading(FollowingState(2, "n0"), 90, "n1");
  EXPECT_EQ(led.epoch, 3u);
  EXPECT_EQ(led.role, "leader");
  EXPECT_EQ(led.history.back(), (EpochEntry{3, 91, "n1"}));
  bool take_over = true;
  TakeOverReply r = AnswerTakeOver(led, 95, "n1", t, &take_over);
  EXPECT_TRUE(r.accepted);
  EXPECT_FALSE(take_over);
  EXPECT_EQ(r.epoch, 3u);
  Handover h("n1", 0, 1'000'000);
  EXPECT_TRUE(h.StepsDown(r));
}

TEST(HandoverTest, TheLeaderLeadsOnOnlyAfterAClearRefusal) {
  Handover h = Handover::Resumed("n1", TakeOver{kPeerProtocolVersion, "n0", 2, 90});
  TakeOverReply refused;
  refused.epoch = 2;
  EXPECT_FALSE(h.StepsDown(refused)) << "nothing changed there: lead on";
  refused.epoch = 4;
  EXPECT_TRUE(h.StepsDown(refused)) << "a newer epoch exists: someone else may lead";
  // A node that saved "handing over" resumes the handover after a restart; once the answer
  // is in, it follows, recording the epoch the target began.
  NodeState handing = StateForHandingOver(LeaderState(2), "n1");
  EXPECT_TRUE(ResumesHandover(handing));
  TakeOverReply took;
  took.accepted = true;
  took.epoch = 5;
  NodeState after = StateAfterHandover(handing, "n1", h.request(), took);
  EXPECT_FALSE(ResumesHandover(after));
  EXPECT_EQ(after.role, "follower");
  EXPECT_EQ(after.leader, "n1");
  EXPECT_EQ(after.epoch, 5u);
  EXPECT_EQ(after.history.back(), (EpochEntry{5, 91, "n1"}));
  EXPECT_TRUE(ValidateState(after).ok());
  NodeState led_on = StateForLeading(handing, 90, "n0");
  EXPECT_FALSE(ResumesHandover(led_on));
  EXPECT_EQ(led_on.epoch, 3u);
}

TEST(HandoverTest, WritesAreRefusedNamingTheNewLeaderUntilItCaughtUp) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  FollowerNode f(dir, "f1", &clock);
  Handshake hs = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(hs.status.ok());
  l.Write(3);
  Handover h("f1", clock.NowMicros(), 1'000'000);
  EXPECT_NE(h.WriteRefusal().message().find("'f1'"), std::string::npos);
  EXPECT_FALSE(h.Poll(*l.leader, true, clock.NowMicros()).has_value()) << "not caught up";
  auto ship = l.leader->NextShip(hs.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok());
  l.leader->OnAck(hs.session, *ack);
  EXPECT_FALSE(h.Poll(*l.leader, false, clock.NowMicros()).has_value()) << "a write runs";
  auto ask = h.Poll(*l.leader, true, clock.NowMicros());
  ASSERT_TRUE(ask.has_value());
  EXPECT_EQ(ask->latest, 3u);
  EXPECT_EQ(ask->from, "leader");
  EXPECT_EQ(h.phase(), Handover::Phase::kAsked);
  EXPECT_TRUE(h.TimedOut(clock.NowMicros() + 1'000'000));
}

}  // namespace
}  // namespace walship::replication
