// Fixtures for the unit tests of replication/ (tests only): real engines in a temporary
// directory, a leader and followers driven directly, no sockets.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <optional>
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

namespace walship::replication::testing {

using engine::Batch;
using engine::Engine;
using engine::EngineOptions;
using engine::OpType;
using engine::WriteOp;
using engine::testing::OpenOrDie;
using engine::testing::SameContents;
using engine::testing::ScanAll;

// Directories named after this test binary.
class TempDir : public engine::testing::TempDir {
 public:
  TempDir() : engine::testing::TempDir("walship-replication-test") {}
};

inline constexpr char kCluster[] = "main";
inline constexpr char kDatabase[] = "db1";

inline NodeState LeaderState(Epoch epoch = 1) {
  NodeState state;
  state.database_id = kDatabase;
  state.epoch = epoch;
  for (Epoch e = 1; e <= epoch; ++e) state.history.push_back({e, 1, "leader"});
  return state;
}

inline LeaderOptions DefaultLeaderOptions() {
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
               const std::string& cluster = kCluster, bool fsync_apply = false,
               uint64_t keep_recent_bytes = 0) {
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
    options.fsync_apply = fsync_apply;
    options.keep_recent_bytes = keep_recent_bytes;
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
inline Handshake Connect(Leader& leader, Follower& follower) {
  Handshake h;
  h.reply = leader.OnHello(follower.MakeHello(), &h.session);
  h.status = follower.OnHelloReply(h.reply);
  return h;
}

inline Ship ShipOf(Epoch epoch, std::vector<Batch> batches) {
  Ship ship;
  ship.epoch = epoch;
  for (Batch& b : batches) ship.batches.push_back(ShippedBatch{std::move(b), 0});
  if (!ship.batches.empty()) ship.leader_latest = ship.batches.back().batch.last_seq();
  return ship;
}

}  // namespace walship::replication::testing
