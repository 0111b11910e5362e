// How cost grows with the work (walship-bench --growth): from a base point (200,000 keys of
// 100 B, two followers, one client), one factor varied at a time -- keys (2M, 10M), value
// size (1 KiB, 16 KiB), followers (1, 4), clients (4, 16) -- each point on a fresh cluster:
// W1 with 64 writes in flight and the W2 probe beside it, one write per round trip at the
// base and at the client points, and W4 with as many writes made while a follower is down as
// the point has keys.
#pragma once

#include <string>
#include <vector>

#include "bench/bench_cluster.h"
#include "bench/report.h"

namespace walship::bench {

struct GrowthOptions {
  std::string walshipd;
  std::vector<std::string> replication;  // "key = value" lines for every cluster
  double cap_s = 12;                     // one-per-round-trip runs stop after this
  double scale = 1;  // key counts times this (the smoke test runs a tiny growth)
};

// One repetition of every point. Rows are named "growth/FACTOR:VALUE/W1/SHAPE" and
// "growth/FACTOR:VALUE/W4"; the base point's factor is "base".
std::vector<Row> RunGrowth(const GrowthOptions& o);

// growth-keys.svg, growth-values.svg, growth-followers.svg, growth-clients.svg (writes/s and
// MB/s of W1 with 64 in flight, its lag p99, and W4's catch-up time, against the factor);
// returns the files drawn. `scale` as the run's.
std::vector<std::string> WriteGrowthPlots(const std::string& dir,
                                          const std::vector<Aggregate>& aggs, double scale);

}  // namespace walship::bench
