// What walship-bench reports: one row's figures across repetitions, the JSON in Google
// Benchmark's schema, and walship's figures set beside the peers' (Redis, PostgreSQL).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_cluster.h"

namespace walship::bench {

// One row's figures across repetitions.
struct Aggregate {
  std::string name;
  std::vector<double> ops_per_s;
  std::map<std::string, std::vector<double>> counters;
};

std::vector<Aggregate> AggregateRuns(const std::vector<std::vector<Row>>& runs);
double Median(const std::vector<double>& v);

// Google Benchmark's schema: one "iteration" row per repetition, then a "median" aggregate,
// so that compare.py can compare two runs of walship-bench.
nlohmann::json ToJson(const std::vector<std::vector<Row>>& runs,
                      const std::vector<Aggregate>& aggs);

// The medians of walship-peers' JSON by row name ("W1/depth:1/redis"): items_per_second as
// "ops_per_s", and each counter.
std::map<std::string, std::map<std::string, double>> PeerMedians(const nlohmann::json& peers);

// Prints the medians of every row: ops/s with its range, latency and the other counters.
void PrintTable(const std::vector<Aggregate>& aggs);

// Prints walship's medians beside the peers' medians of the same workload and shape (the JSON
// of walship-peers, bench/peers/), with ratios.
void PrintPeerComparison(const nlohmann::json& peers, const std::vector<Aggregate>& aggs);

}  // namespace walship::bench
