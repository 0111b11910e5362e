// R1: reads at a follower that must see the reader's own writes (docs/reads.md), beside the
// same reads at the leader, in one run on one cluster.
//
//   ryw/<where>        one client: a write at the leader (one per round trip, as W1), then a
//                      read of it at <where> carrying the write's token; pairs per second and
//                      the read's latency (at a follower: the wait for the write to arrive)
//   caught-up/<where>  reads only, each carrying the token of a write every node has applied:
//                      the read path's own cost (the token checked, nothing to wait for)
//   wait-under-load    a load writes as W1 one per round trip while a probe writes a key and
//                      reads it back at a follower with its token: how long such reads wait
//                      under W2's load (the read's latency at the follower, and at the leader)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_cluster.h"

namespace walship::bench {

struct R1Options {
  size_t value_size = 100;
  double cap_s = 5;  // each case runs this long
  std::vector<std::string> replication;
};

// Rows "R1/<case>/walship-3node": ops_per_s (pairs or reads), read p50_us and p99_us; the
// follower rows carry ratio_to_leader (their read p50 over the leader row's, >1: slower).
std::vector<Row> RunR1(const std::string& walshipd, const R1Options& o);

}  // namespace walship::bench
