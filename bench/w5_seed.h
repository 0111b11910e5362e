// W5: a new follower of a leader holding `keys` keys, seeded from a checkpoint
// (docs/checkpoints.md): the time from its start with an empty data dir until it serves the
// last key, the checkpoint's copy rate beside a plain `cp` of the same files in the same run
// (and a `cp` followed by `sync`), and, with the snapshot rate bounded, the leader's write rate during the copy beside
// its rate without one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_cluster.h"

namespace walship::bench {

struct W5Options {
  uint64_t keys = 1000000;
  size_t value_size = 100;
  // The bounded-rate case: the snapshot rate, and how long writes are timed beside it.
  uint64_t bounded_bytes_per_sec = 32ull << 20;
  double write_window_s = 3;
  std::vector<std::string> replication;  // "key = value" lines
};

// Rows "W5/new-follower/<keys>-keys" (seconds until the last key is served; counters
// snapshot_s, snapshot_mib_per_s, snapshot_mib, cp_mib_per_s, cp_sync_mib_per_s,
// ratio_snapshot_to_cp, ratio_snapshot_to_cp_sync) and
// "W5/writes-during-bounded-snapshot/<keys>-keys" (ops_per_s during the copy, counters
// ops_per_s_without, ratio_to_without).
std::vector<Row> RunW5(const std::string& walshipd, const W5Options& o);

}  // namespace walship::bench
