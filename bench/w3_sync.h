// W3: writes that wait for their followers (docs/replication.md), one write per round trip,
// from one client and from 16, for each replication mode and ack level, beside async writes
// in the same run and on the same cluster.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_cluster.h"

namespace walship::bench {

struct W3Options {
  uint64_t keys = 200000;    // at most this many writes per run
  size_t value_size = 100;
  double cap_s = 12;         // each run stops after this long
  size_t many_clients = 16;  // the concurrent-clients rows
  std::vector<std::string> replication;  // "key = value" lines for both clusters
};

// Rows "W3/<case>/walship-3node": ops/s, p50_us, p99_us, and ratio_to_async (against the
// async row of the same client count and leader fsync setting).
std::vector<Row> RunW3(const std::string& walshipd, const W3Options& o);

}  // namespace walship::bench
