// The seeded simulation of a three-node cluster (replication/sim_cluster.h) over many seeds.
//
// Which seeds run: WALSHIP_SIM_SEEDS seeds in all (default 1,000; ctest asks for 200 under
// the sanitizers), half to the first test and a quarter to each other; of those, this process
// runs its shard (WALSHIP_SIM_SHARD=i/n runs seeds i+1, i+1+n, ...; ctest runs four shards
// side by side). WALSHIP_SIM_SEED=N runs seed N alone: a failing seed prints the command
// that replays it. A seed that once failed goes into the regression list of its test.
// scripts/sim-soak.sh runs many more.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "engine/test_util.h"
#include "replication/sim_cluster.h"

namespace walship::replication::sim {
namespace {

constexpr int kWritesPerRun = 600;

// `share` of the seeds (WALSHIP_SIM_SEEDS, default 1,000), plus the regressions.
std::vector<uint64_t> Seeds(double share, const std::vector<uint64_t>& regressions) {
  if (const char* one = std::getenv("WALSHIP_SIM_SEED"); one != nullptr) {
    return {std::strtoull(one, nullptr, 10)};
  }
  int total = 1000;
  if (const char* env = std::getenv("WALSHIP_SIM_SEEDS"); env != nullptr) total = std::atoi(env);
  int count = static_cast<int>(total * share);
  int shard = 0, shards = 1;
  if (const char* env = std::getenv("WALSHIP_SIM_SHARD"); env != nullptr) {
    if (std::sscanf(env, "%d/%d", &shard, &shards) != 2 || shards < 1 || shard < 0 ||
        shard >= shards) {
      ADD_FAILURE() << "WALSHIP_SIM_SHARD must be i/n with 0 <= i < n, not '" << env << "'";
      return {};
    }
  }
  std::vector<uint64_t> seeds;
  if (shard == 0) seeds = regressions;
  for (int i = shard + 1; i <= count; i += shards) seeds.push_back(static_cast<uint64_t>(i));
  return seeds;
}

// Runs every seed; stops at the first failure, printing how to replay it.
Stats RunSeeds(const char* test, const std::vector<uint64_t>& seeds, const Faults& faults,
               bool small_wal) {
  Stats total;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t seed : seeds) {
    engine::testing::TempDir dir("walship-sim");
    RunResult r = RunSeed(dir.Sub("cluster"), seed, faults, small_wal, kWritesPerRun);
    total.Add(r.stats);
    if (!r.ok) {
      ADD_FAILURE() << "seed " << seed << ": " << r.failure << "\n  " << r.stats
                    << "\n  replay: WALSHIP_SIM_SEED=" << seed
                    << " replication/replication_sim_test --gtest_filter=ReplicationSimTest."
                    << test;
      return total;
    }
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start)
                .count();
  std::cout << test << ": " << seeds.size() << " seeds in " << ms << " ms; " << total << "\n";
  return total;
}

TEST(ReplicationSimTest, ReplicasConvergeUnderNetworkFaultsCrashesAndHandovers) {
  // Seed 1298: a follower crash hit a node that was asking its peers before leading again.
  Stats total = RunSeeds("ReplicasConvergeUnderNetworkFaultsCrashesAndHandovers",
                         Seeds(0.5, {1298}), Faults{}, /*small_wal=*/false);
  if (::testing::Test::HasFailure() || std::getenv("WALSHIP_SIM_SEED") != nullptr) return;
  // The runs must actually have been faulty, and every path used.
  EXPECT_GT(total.drops, 0u);
  EXPECT_GT(total.duplicates, 0u);
  EXPECT_GT(total.reorders, 0u);
  EXPECT_GT(total.wal_batches, 0u);
  EXPECT_GT(total.tail_batches, 0u);
  EXPECT_GT(total.process_crashes + total.machine_crashes, 0u);
  EXPECT_GT(total.leader_restarts, 0u);
  EXPECT_GT(total.handovers, 0u);
  EXPECT_GT(total.seeded_tails, 0u);
  EXPECT_GT(total.worker_applies, 0u);
  EXPECT_GT(total.replicated, 0u);
  EXPECT_GT(total.degraded, 0u);
  EXPECT_GT(total.not_replicated, 0u);
  EXPECT_GT(total.reads_served, 0u);
  EXPECT_GT(total.caught_up_checks, 0u);
}

// A WAL archive of 24 KiB: followers away for long are told they need a snapshot, and must
// say so, refuse reads, and never skip; the others converge.
TEST(ReplicationSimTest, FollowersPastThePurgedWalNeedASnapshotAndNeverSkip) {
  Faults faults;
  faults.crash_chance = 0.004;
  // Seed 1354: a follower acknowledged a write at received, then lost it in a machine crash
  // before the leader released the write; the check counted that crash as after the ack.
  Stats total = RunSeeds("FollowersPastThePurgedWalNeedASnapshotAndNeverSkip",
                         Seeds(0.25, {1354}), faults, /*small_wal=*/true);
  if (::testing::Test::HasFailure() || std::getenv("WALSHIP_SIM_SEED") != nullptr) return;
  EXPECT_GT(total.needs_snapshot, 0u);
}

// The leader's machine fails now and then, losing writes it had not fsynced that followers
// hold. It must not lead with less: it asks its peers first and hands leadership to the one
// holding the most (replication/recovery.h), so that every write acknowledged as flushed stays
// in the cluster's history. A follower the leader can no longer serve from its WAL (the
// machine lost WAL files it had not fsynced) must be told it needs a snapshot; any other must
// hold exactly the leader's contents (a merge of two histories would differ).
TEST(ReplicationSimTest, FollowersAheadOfALeaderThatLostWritesAreNeverMerged) {
  Faults faults;
  faults.leader_restart_chance = 0;
  faults.leader_machine_crash_chance = 0.002;
  // Seed 6: a follower told it needs a snapshot saved a moved-from state (no history).
  Stats total = RunSeeds("FollowersAheadOfALeaderThatLostWritesAreNeverMerged", Seeds(0.25, {6}),
                         faults, /*small_wal=*/false);
  if (::testing::Test::HasFailure() || std::getenv("WALSHIP_SIM_SEED") != nullptr) return;
  EXPECT_GT(total.machine_crashes, 0u);
  EXPECT_GT(total.recovery_handovers, 0u);
  // Writes lost with a leader's machine, whose sequence numbers the next epoch wrote again:
  // their tokens were refused as lost (and never served: checked in every read), where a bare
  // sequence number would have served other data.
  EXPECT_GT(total.reads_lost, 0u);
  EXPECT_GT(total.bare_seq_stale, 0u);
}

}  // namespace
}  // namespace walship::replication::sim
