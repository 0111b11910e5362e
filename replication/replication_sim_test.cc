// A deterministic, single-threaded, seeded simulation of one leader and two followers.
//
// The Leader and Follower state machines exchange their messages through an in-memory network
// that delays (and so reorders), duplicates and drops them. A drop is modelled the way TCP
// surfaces it: the connection breaks, both sides are told, every message still in flight on
// that connection is lost, and the follower reconnects later with a new handshake. Meanwhile
// the leader writes random batches (puts, deletes, range deletes, binary values) and now and
// then flushes, switching WAL files, so followers are served both from the memory tail and
// from the WAL. After the writes stop and the faults are turned off the network runs until it
// is quiet; then every follower must hold exactly the leader's sequence and contents.
//
// Everything that decides the course of a run comes from the seed; a failing seed is a
// regression test: pass it to Seeds() in the test it failed in.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/test_util.h"
#include "replication/clock.h"
#include "replication/follower.h"
#include "replication/leader.h"
#include "replication/messages.h"
#include "replication/node_state.h"
#include "replication/test_util.h"

namespace walship::replication {
namespace {

namespace fs = std::filesystem;
using engine::Engine;
using engine::OpType;
using engine::WriteOp;
using engine::testing::ScanAll;
using testing::FakeClock;

class TempDir : public engine::testing::TempDir {
 public:
  TempDir() : engine::testing::TempDir("walship-replication-sim") {}
};

// Bounds of one run. Times are simulated microseconds.
constexpr int kWritesPerRun = 2000;
constexpr int kFollowers = 2;
constexpr size_t kMaxUnackedShipsPerSession = 4;
constexpr uint64_t kMaxTailBytes = 4 << 10;
constexpr uint64_t kMaxShipBytes = 2 << 10;
constexpr int64_t kHeartbeatIntervalUs = 20'000;
constexpr int64_t kMaxWriteIntervalUs = 400;
constexpr int64_t kQuietDelayUs = 500;             // fixed delay once faults are off (FIFO)
constexpr int64_t kMaxReconnectDelayUs = 30'000;
constexpr uint64_t kMaxEventsPerRun = 2'000'000;

// Fault rates while the leader writes, per message sent.
struct Faults {
  double drop_chance = 0.01;       // the message is lost and its connection breaks
  double duplicate_chance = 0.05;  // a second copy is delivered too
  double long_delay_chance = 0.10; // delayed 2-20 ms instead of 0.1-2 ms
};
constexpr int kFlushOneInWrites = 150;

struct Stats {
  uint64_t writes = 0;
  uint64_t flushes = 0;
  uint64_t ships = 0;
  uint64_t acks = 0;
  uint64_t drops = 0;           // connections broken by a lost message
  uint64_t duplicates = 0;      // extra copies put on the network
  uint64_t reorders = 0;        // messages delivered after one sent later on their connection
  uint64_t discarded = 0;       // in-flight messages lost with their connection
  uint64_t gaps = 0;            // kGap acks
  uint64_t held_ships = 0;      // ships whose batches the follower already held entirely
  uint64_t tail_batches = 0;    // batches shipped from the leader's memory tail
  uint64_t wal_batches = 0;     // batches shipped from the WAL
  uint64_t reconnects = 0;

  void Add(const Stats& o) {
    writes += o.writes;
    flushes += o.flushes;
    ships += o.ships;
    acks += o.acks;
    drops += o.drops;
    duplicates += o.duplicates;
    reorders += o.reorders;
    discarded += o.discarded;
    gaps += o.gaps;
    held_ships += o.held_ships;
    tail_batches += o.tail_batches;
    wal_batches += o.wal_batches;
    reconnects += o.reconnects;
  }
};

std::ostream& operator<<(std::ostream& out, const Stats& s) {
  return out << "writes=" << s.writes << " flushes=" << s.flushes << " ships=" << s.ships
             << " acks=" << s.acks << " drops=" << s.drops << " dups=" << s.duplicates
             << " reorders=" << s.reorders << " discarded=" << s.discarded
             << " gaps=" << s.gaps << " held_ships=" << s.held_ships
             << " tail_batches=" << s.tail_batches << " wal_batches=" << s.wal_batches
             << " reconnects=" << s.reconnects;
}

class Simulation {
 public:
  Simulation(const TempDir& dir, uint64_t seed, Faults faults) : rng_(seed), faults_(faults) {
    leader_engine_ = Open(dir.Sub("leader"));
    NodeState state;
    state.database_id = "sim-db";
    state.epoch = 1;
    state.history = {{1, 1, "leader"}};
    LeaderOptions options;
    options.cluster = "sim";
    options.node_id = "leader";
    options.max_tail_bytes = kMaxTailBytes;
    options.max_ship_bytes = kMaxShipBytes;
    leader_ = std::make_unique<Leader>(options, leader_engine_.get(), state, &clock_);
    for (int i = 0; i < kFollowers; ++i) {
      Node& n = nodes_[i];
      std::string name = "follower" + std::to_string(i);
      n.engine = Open(dir.Sub(name));
      FollowerOptions fo;
      fo.cluster = "sim";
      fo.node_id = name;
      fo.state_path = dir.Sub(name + ".state");
      auto loaded = LoadNodeState(fo.state_path);
      EXPECT_TRUE(loaded.ok()) << loaded.status();
      n.follower = std::make_unique<Follower>(fo, n.engine.get(), *loaded, &clock_);
      Schedule(Kind::kReconnect, i, Uniform(0, 2000));
      Schedule(Kind::kHeartbeat, i, Uniform(0, kHeartbeatIntervalUs));
    }
    Schedule(Kind::kWrite, 0, 0);
  }

  // Runs the writes and then the network until quiet; false when it never became quiet.
  bool Run() {
    for (uint64_t step = 0; step < kMaxEventsPerRun; ++step) {
      if (::testing::Test::HasFailure()) return false;
      if (writes_done_ == kWritesPerRun && Quiet()) return true;
      if (events_.empty()) return false;
      auto node = events_.extract(events_.begin());
      clock_.Set(std::max(clock_.NowMicros(), node.key().first));
      Handle(std::move(node.mapped()));
    }
    return false;
  }

  Engine& leader_engine() { return *leader_engine_; }
  Leader& leader() { return *leader_; }
  Engine& follower_engine(int i) { return *nodes_[i].engine; }
  Follower& follower(int i) { return *nodes_[i].follower; }
  const Stats& stats() const { return stats_; }

 private:
  enum class Kind { kShip, kAck, kReconnect, kHeartbeat, kWrite };
  struct Event {
    Kind kind = Kind::kWrite;
    int node = 0;
    uint64_t conn = 0;     // connection a message travels on
    uint64_t msg_id = 0;   // Ship id; an Ack carries the id of the Ship it answers
    uint64_t send_idx = 0; // position in its connection's direction, for counting reorders
    Ship ship;
    Ack ack;
  };
  enum Direction { kToFollower = 0, kToLeader = 1 };
  struct Node {
    std::unique_ptr<Engine> engine;
    std::unique_ptr<Follower> follower;
    bool connected = false;
    uint64_t conn = 0;
    uint64_t session = 0;
    std::set<uint64_t> unacked;  // ids of Ships sent on this connection without an ack yet
    uint64_t sent[2] = {0, 0};
    uint64_t delivered_max[2] = {0, 0};  // 1 + highest send_idx delivered
  };

  static std::unique_ptr<Engine> Open(const std::string& path) {
    engine::EngineOptions options;
    options.path = path;
    auto engine = Engine::Open(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(*engine) : nullptr;
  }

  int64_t Uniform(int64_t lo, int64_t hi) {  // [lo, hi]
    return lo + static_cast<int64_t>(rng_() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  void Schedule(Kind kind, int node, int64_t delay_us) {
    Schedule(kind, node, delay_us, Event());
  }
  void Schedule(Kind kind, int node, int64_t delay_us, Event event) {
    event.kind = kind;
    event.node = node;
    events_.emplace(std::make_pair(clock_.NowMicros() + delay_us, next_order_++),
                    std::move(event));
  }

  int64_t NetworkDelay() {
    if (quiet_) return kQuietDelayUs;
    if (Chance(faults_.long_delay_chance)) return Uniform(2'000, 20'000);
    return Uniform(100, 2'000);
  }

  // Puts a message on node `n`'s current connection; may lose it (breaking the connection) or
  // duplicate it.
  void Send(int n, Direction dir, Event event) {
    Node& node = nodes_[n];
    if (!quiet_ && Chance(faults_.drop_chance)) {
      Break(n);
      return;
    }
    event.conn = node.conn;
    event.send_idx = node.sent[dir]++;
    Kind kind = dir == kToFollower ? Kind::kShip : Kind::kAck;
    if (!quiet_ && Chance(faults_.duplicate_chance)) {
      ++stats_.duplicates;
      Schedule(kind, n, NetworkDelay(), event);
    }
    Schedule(kind, n, NetworkDelay(), std::move(event));
  }

  // The connection of node `n` breaks: both sides learn of it and what was in flight is lost.
  void Break(int n) {
    Node& node = nodes_[n];
    ++stats_.drops;
    leader_->OnDisconnect(node.session);
    node.follower->OnDisconnect();
    EXPECT_EQ(node.follower->Status().phase, FollowerPhase::kConnecting);
    node.connected = false;
    node.session = 0;
    node.conn = ++next_conn_;  // nothing is delivered on the old connection any more
    node.unacked.clear();
    Schedule(Kind::kReconnect, n, Uniform(1'000, kMaxReconnectDelayUs));
  }

  void Reconnect(int n) {
    Node& node = nodes_[n];
    ++stats_.reconnects;
    Hello hello = node.follower->MakeHello();
    EXPECT_EQ(hello.last_applied, node.engine->LatestSequence());
    uint64_t session = 0;
    HelloReply reply = leader_->OnHello(hello, &session);
    ASSERT_EQ(reply.outcome, HelloOutcome::kAccepted) << reply.message;
    absl::Status s = node.follower->OnHelloReply(reply);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_NE(session, 0u);
    node.connected = true;
    node.session = session;
    node.conn = ++next_conn_;
    node.unacked.clear();
    node.sent[0] = node.sent[1] = 0;
    node.delivered_max[0] = node.delivered_max[1] = 0;
    Pump(n);
  }

  void SendShip(int n, Ship ship) {
    ASSERT_TRUE(ship.needs_snapshot.empty())
        << "the WAL is retained, yet the leader could not serve follower " << n << ": "
        << ship.needs_snapshot;
    for (const ShippedBatch& b : ship.batches) {
      if (b.leader_time_us == 0) {
        ++stats_.wal_batches;
      } else {
        ++stats_.tail_batches;
      }
    }
    ++stats_.ships;
    Event e;
    e.msg_id = next_msg_id_++;
    e.ship = std::move(ship);
    nodes_[n].unacked.insert(e.msg_id);
    Send(n, kToFollower, std::move(e));
  }

  // Ships whatever the leader has for node `n`, within the window of unacked messages.
  void Pump(int n) {
    Node& node = nodes_[n];
    while (node.connected && node.unacked.size() < kMaxUnackedShipsPerSession &&
           leader_->HasWork(node.session)) {
      std::optional<Ship> ship = leader_->NextShip(node.session, false);
      if (!ship.has_value()) break;
      SendShip(n, std::move(*ship));
      if (::testing::Test::HasFailure()) return;
    }
  }

  void CountReorder(Node& node, Direction dir, uint64_t send_idx) {
    if (send_idx + 1 < node.delivered_max[dir]) ++stats_.reorders;
    node.delivered_max[dir] = std::max(node.delivered_max[dir], send_idx + 1);
  }

  void DeliverShip(int n, const Event& e) {
    Node& node = nodes_[n];
    if (!node.connected || e.conn != node.conn) {
      ++stats_.discarded;
      return;
    }
    CountReorder(node, kToFollower, e.send_idx);
    engine::SequenceNumber before = node.engine->LatestSequence();
    if (!e.ship.batches.empty() && e.ship.batches.back().batch.last_seq() <= before) {
      ++stats_.held_ships;
    }
    absl::StatusOr<Ack> ack = node.follower->OnShip(e.ship, {});
    ASSERT_TRUE(ack.ok()) << ack.status();
    ASSERT_TRUE(ack->outcome == AckOutcome::kOk || ack->outcome == AckOutcome::kGap)
        << AckOutcomeName(ack->outcome) << ": " << ack->message;
    // Pair checks: the ack tells the truth, and a follower never goes backwards.
    ASSERT_EQ(ack->applied, node.engine->LatestSequence());
    ASSERT_GE(ack->applied, before);
    ASSERT_LE(ack->applied, leader_->latest());
    if (ack->outcome == AckOutcome::kGap) {
      ++stats_.gaps;
      ASSERT_EQ(ack->applied, before) << "a gap must apply nothing";
    }
    Event reply;
    reply.msg_id = e.msg_id;
    reply.ack = std::move(*ack);
    Send(n, kToLeader, std::move(reply));
  }

  void DeliverAck(int n, const Event& e) {
    Node& node = nodes_[n];
    if (!node.connected || e.conn != node.conn) {
      ++stats_.discarded;
      return;
    }
    CountReorder(node, kToLeader, e.send_idx);
    ++stats_.acks;
    node.unacked.erase(e.msg_id);
    leader_->OnAck(node.session, e.ack);
    Pump(n);
  }

  void Heartbeat(int n) {
    Node& node = nodes_[n];
    if (node.connected && node.unacked.size() < kMaxUnackedShipsPerSession) {
      std::optional<Ship> ship = leader_->NextShip(node.session, true);
      EXPECT_TRUE(ship.has_value()) << "a connected session always gets a heartbeat";
      if (ship.has_value()) SendShip(n, std::move(*ship));
    }
    Schedule(Kind::kHeartbeat, n, kHeartbeatIntervalUs);
  }

  std::vector<WriteOp> RandomOps() {
    std::vector<WriteOp> ops;
    int count = static_cast<int>(Uniform(1, 6));
    auto key = [&] {
      std::string k = "k" + std::to_string(Uniform(0, 299));
      if (Chance(0.1)) k.push_back('\0');  // binary keys too
      return k;
    };
    for (int i = 0; i < count; ++i) {
      int64_t r = Uniform(0, 9);
      if (r == 0) {
        ops.push_back({OpType::kDelete, key(), ""});
      } else if (r == 1) {
        std::string a = key(), b = key();
        if (b < a) std::swap(a, b);
        if (a == b) b.push_back('\xff');
        ops.push_back({OpType::kDeleteRange, a, b});
      } else {
        std::string value(static_cast<size_t>(Uniform(0, 120)), '\0');
        for (char& c : value) c = static_cast<char>(rng_());
        ops.push_back({OpType::kPut, key(), value});
      }
    }
    return ops;
  }

  void Write() {
    auto batch = leader_engine_->Write(RandomOps(), {});
    ASSERT_TRUE(batch.ok()) << batch.status();
    leader_->OnLocalWrite(*batch, clock_.NowMicros());
    ++writes_done_;
    ++stats_.writes;
    if (Uniform(1, kFlushOneInWrites) == 1) {
      ASSERT_TRUE(leader_engine_->Flush().ok());
      ++stats_.flushes;
    }
    for (int i = 0; i < kFollowers; ++i) Pump(i);
    if (writes_done_ < kWritesPerRun) {
      Schedule(Kind::kWrite, 0, Uniform(0, kMaxWriteIntervalUs));
    } else {
      quiet_ = true;  // from now on: no drops, no duplicates, FIFO delivery
    }
  }

  void Handle(Event e) {
    switch (e.kind) {
      case Kind::kShip: DeliverShip(e.node, e); break;
      case Kind::kAck: DeliverAck(e.node, e); break;
      case Kind::kReconnect: Reconnect(e.node); break;
      case Kind::kHeartbeat: Heartbeat(e.node); break;
      case Kind::kWrite: Write(); break;
    }
  }

  // Every follower is connected, has acked everything and holds the leader's latest sequence.
  bool Quiet() {
    for (Node& node : nodes_) {
      if (!node.connected || !node.unacked.empty() || leader_->HasWork(node.session) ||
          node.engine->LatestSequence() != leader_->latest()) {
        return false;
      }
    }
    return true;
  }

  std::mt19937_64 rng_;
  FakeClock clock_;
  std::unique_ptr<Engine> leader_engine_;
  std::unique_ptr<Leader> leader_;
  Node nodes_[kFollowers];
  std::map<std::pair<int64_t, uint64_t>, Event> events_;  // by (time, order of scheduling)
  uint64_t next_order_ = 0;
  uint64_t next_conn_ = 0;
  uint64_t next_msg_id_ = 1;
  int writes_done_ = 0;
  const Faults faults_;
  bool quiet_ = false;  // faults off
  Stats stats_;
};

// Seeds 1..n, where n is kDefaultSeeds or the WALSHIP_SIM_SEEDS environment variable (to
// search for failing seeds in longer runs). A seed that once failed is added to `regressions`.
std::vector<uint64_t> Seeds(int default_count, std::vector<uint64_t> regressions = {}) {
  int count = default_count;
  if (const char* env = std::getenv("WALSHIP_SIM_SEEDS"); env != nullptr) {
    count = std::atoi(env);
  }
  std::vector<uint64_t> seeds = std::move(regressions);
  for (int i = 1; i <= count; ++i) seeds.push_back(static_cast<uint64_t>(i));
  return seeds;
}

// Runs one simulation per seed and checks that both followers end identical to the leader.
Stats RunSeeds(const std::vector<uint64_t>& seeds, const Faults& faults) {
  Stats total;
  for (uint64_t seed : seeds) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    auto start = std::chrono::steady_clock::now();
    TempDir dir;
    Simulation sim(dir, seed, faults);
    bool quiet = sim.Run();
    EXPECT_TRUE(quiet) << "the network never became quiet; " << sim.stats();
    if (!quiet || ::testing::Test::HasFailure()) return total;
    Engine& leader = sim.leader_engine();
    EXPECT_EQ(leader.LatestSequence(), sim.leader().latest());
    std::vector<engine::KeyValue> expected = ScanAll(leader);
    EXPECT_FALSE(expected.empty());
    std::vector<FollowerInfo> infos = sim.leader().Followers();
    EXPECT_EQ(infos.size(), static_cast<size_t>(kFollowers));
    for (int i = 0; i < kFollowers && i < static_cast<int>(infos.size()); ++i) {
      SCOPED_TRACE(::testing::Message() << "follower " << i);
      Engine& follower = sim.follower_engine(i);
      EXPECT_EQ(follower.LatestSequence(), leader.LatestSequence());
      std::vector<engine::KeyValue> got = ScanAll(follower);
      EXPECT_EQ(got.size(), expected.size());
      for (size_t k = 0; k < got.size() && k < expected.size(); ++k) {
        if (got[k].key != expected[k].key || got[k].value != expected[k].value) {
          ADD_FAILURE() << "contents differ at entry " << k << ": key '" << got[k].key
                        << "' (leader has '" << expected[k].key << "')";
          break;
        }
      }
      FollowerStatus status = sim.follower(i).Status();
      EXPECT_EQ(status.phase, FollowerPhase::kStreaming);
      EXPECT_EQ(status.applied, leader.LatestSequence());
      EXPECT_EQ(infos[i].state, FollowerState::kConnected);
      EXPECT_EQ(infos[i].applied, leader.LatestSequence());
      EXPECT_EQ(infos[i].lag_seq, 0u);
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    std::cout << "seed " << seed << ": latest=" << leader.LatestSequence() << " "
              << sim.stats() << " (" << ms << " ms)\n";
    total.Add(sim.stats());
    if (::testing::Test::HasFailure()) return total;
  }
  std::cout << "total: " << total << "\n";
  return total;
}

TEST(ReplicationSimTest, FollowersConvergeToTheLeaderUnderNetworkFaults) {
  Stats total = RunSeeds(Seeds(20), Faults{});
  // The runs must actually have been faulty, and both shipping paths used.
  EXPECT_GT(total.drops, 0u);
  EXPECT_GT(total.duplicates, 0u);
  EXPECT_GT(total.reorders, 0u);
  EXPECT_GT(total.gaps, 0u);
  EXPECT_GT(total.held_ships, 0u);
  EXPECT_GT(total.wal_batches, 0u);
  EXPECT_GT(total.tail_batches, 0u);
}

// Far more faults: followers spend much of the run reconnecting and catching up from the WAL.
TEST(ReplicationSimTest, FollowersConvergeUnderHeavyFaults) {
  Faults heavy;
  heavy.drop_chance = 0.05;
  heavy.duplicate_chance = 0.25;
  heavy.long_delay_chance = 0.4;
  Stats total = RunSeeds(Seeds(10), heavy);
  EXPECT_GT(total.drops, 0u);
  EXPECT_GT(total.duplicates, 0u);
  EXPECT_GT(total.gaps, 0u);
  EXPECT_GT(total.held_ships, 0u);
}

}  // namespace
}  // namespace walship::replication
