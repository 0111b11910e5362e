#include "bench/report.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>

#include "bench/stats.h"

namespace walship::bench {

std::vector<Aggregate> AggregateRuns(const std::vector<std::vector<Row>>& runs) {
  std::vector<Aggregate> out;
  for (const auto& rows : runs) {
    for (const Row& r : rows) {
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const Aggregate& a) { return a.name == r.name; });
      if (it == out.end()) it = out.insert(out.end(), Aggregate{r.name, {}, {}});
      it->ops_per_s.push_back(r.ops_per_s);
      for (const auto& [k, v] : r.counters) it->counters[k].push_back(v);
    }
  }
  return out;
}

double Median(const std::vector<double>& v) { return Percentile(v, 50); }

// Google Benchmark's schema: one "iteration" row per repetition, then a "median" aggregate,
// so that compare.py can compare two runs of walship-bench.
nlohmann::json ToJson(const std::vector<std::vector<Row>>& runs,
                      const std::vector<Aggregate>& aggregates) {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  nlohmann::json j;
  j["context"] = {{"executable", "walship-bench"},
                  {"host_name", host},
                  {"num_cpus", std::thread::hardware_concurrency()},
                  {"library_build_type", "release"}};
  auto row_json = [](const std::string& name, const std::string& run_type, double ops,
                     double seconds, double ops_per_s, const std::map<std::string, double>& c) {
    double ns_per_op = ops > 0 ? seconds * 1e9 / ops : 0;
    nlohmann::json b = {{"name", name},         {"run_name", name},
                        {"run_type", run_type}, {"threads", 1},
                        {"iterations", std::max<double>(1, ops)},
                        {"real_time", ns_per_op}, {"cpu_time", ns_per_op},
                        {"time_unit", "ns"}};
    if (ops_per_s > 0) b["items_per_second"] = ops_per_s;
    for (const auto& [k, v] : c) b[k] = v;
    return b;
  };
  nlohmann::json benchmarks = nlohmann::json::array();
  for (size_t rep = 0; rep < runs.size(); ++rep) {
    for (const Row& r : runs[rep]) {
      nlohmann::json b = row_json(r.name, "iteration", r.ops, r.seconds, r.ops_per_s, r.counters);
      b["repetitions"] = runs.size();
      b["repetition_index"] = rep;
      benchmarks.push_back(b);
    }
  }
  if (runs.size() > 1) {
    for (const Aggregate& a : aggregates) {
      std::map<std::string, double> c;
      for (const auto& [k, v] : a.counters) c[k] = Median(v);
      double ops_per_s = Median(a.ops_per_s);
      nlohmann::json b = row_json(a.name + "_median", "aggregate", 1,
                                  ops_per_s > 0 ? 1 / ops_per_s : 0, ops_per_s, c);
      b["run_name"] = a.name;
      b["aggregate_name"] = "median";
      b["repetitions"] = runs.size();
      benchmarks.push_back(b);
    }
  }
  j["benchmarks"] = benchmarks;
  return j;
}

namespace {

// One line of the comparison with the peers: a walship figure and the peer rows it is set
// beside (shared/peers/peers.py's table: system, workload, variant, metric).
struct PeerMatch {
  std::string walship_row;     // aggregate name
  std::string walship_metric;  // "ops_per_s" or a counter
  std::string workload;        // peer workload
  std::string variant_has;     // substring of the peer variant
  std::string metric;          // peer metric
  bool higher_is_better;
};

const std::vector<PeerMatch>& PeerMatches() {
  static const std::vector<PeerMatch> kMatches = {
      {"W1/depth:1/walship-3node", "ops_per_s", "W1", "1 row", "throughput", true},
      {"W1/depth:1/walship-3node", "ops_per_s", "W1", "no pipelining", "throughput", true},
      {"W1/pipeline:64/walship-3node", "ops_per_s", "W1", "pipeline depth 64", "throughput",
       true},
      {"W1/depth:64/walship-3node", "ops_per_s", "W1", "pipeline depth 64", "throughput", true},
      {"W1/batch:64/walship-3node", "ops_per_s", "W1", "64 rows/txn", "throughput", true},
      {"W1/depth:1/walship-3node", "lag_p99_ms/worst", "W2", "during W1 single", "lag p99",
       false},
      {"W1/pipeline:64/walship-3node", "lag_p99_ms/worst", "W2", "during W1 pipe64",
       "lag p99", false},
      {"W1/depth:64/walship-3node", "lag_p99_ms/worst", "W2", "during W1 pipe64", "lag p99",
       false},
      {"W1/batch:64/walship-3node", "lag_p99_ms/worst", "W2", "during W1 batch64", "lag p99",
       false},
      {"W4/catch-up/200000-writes", "catchup_s", "W4", "", "catch-up", false},
      {"W5/new-follower/1000000-keys", "until_served_s", "W5", "1000000 keys",
       "until last key served", false},
      {"W5/new-follower/1000000-keys", "snapshot_s", "W5", "1000000 keys",
       "of which pg_basebackup", false},
      {"W3/semi-sync:1,received/walship-3node", "ops_per_s", "W3", "SET + WAIT 1 0",
       "throughput", true},
      {"W3/semi-sync:1,received/walship-3node", "p50_us", "W3", "SET + WAIT 1 0",
       "latency p50", false},
      {"W3/semi-sync:1,flushed,leader-fsync/walship-3node", "ops_per_s", "W3",
       "synchronous_commit=on", "throughput", true},
      {"W3/semi-sync:1,flushed,leader-fsync/walship-3node", "p50_us", "W3",
       "synchronous_commit=on", "latency p50", false},
      {"W3/semi-sync:1,applied,leader-fsync/walship-3node", "ops_per_s", "W3",
       "synchronous_commit=remote_apply", "throughput", true},
      {"W3/semi-sync:1,applied,leader-fsync/walship-3node", "p50_us", "W3",
       "synchronous_commit=remote_apply", "latency p50", false},
  };
  return kMatches;
}

}  // namespace

// Prints walship's medians beside the peers' medians of the same workload, with ratios.
void PrintPeerComparison(const nlohmann::json& peers, const std::vector<Aggregate>& aggs) {
  std::printf("\nSide by side with the peers (medians; ratio = walship / peer):\n");
  std::printf("%-28s %-18s %12s   %-6s %-42s %12s %8s\n", "walship row", "metric", "walship",
              "peer", "peer variant", "peer", "ratio");
  for (const PeerMatch& m : PeerMatches()) {
    auto a = std::find_if(aggs.begin(), aggs.end(),
                          [&](const Aggregate& x) { return x.name == m.walship_row; });
    if (a == aggs.end()) continue;
    double ours = 0;
    if (m.walship_metric == "ops_per_s") {
      ours = Median(a->ops_per_s);
    } else if (auto c = a->counters.find(m.walship_metric); c != a->counters.end()) {
      ours = Median(c->second);
    } else {
      continue;
    }
    // The worst replica's figure, as walship's "worst" follower.
    std::map<std::pair<std::string, std::string>, double> peer_value;
    for (const auto& row : peers.value("table", nlohmann::json::array())) {
      std::string variant = row.value("variant", "");
      if (row.value("workload", "") != m.workload || row.value("metric", "") != m.metric ||
          variant.find(m.variant_has) == std::string::npos || !row["median"].is_number()) {
        continue;
      }
      std::string system = row.value("system", "");
      // Per-replica rows ("replica 1, ...") fold into one per system: the worst.
      std::string key = variant.rfind("replica ", 0) == 0 ? variant.substr(variant.find(',') + 2)
                                                         : variant;
      double v = row["median"].get<double>();
      auto [it, fresh] = peer_value.try_emplace({system, key}, v);
      if (!fresh) it->second = m.higher_is_better ? std::min(it->second, v) : std::max(it->second, v);
    }
    for (const auto& [sv, v] : peer_value) {
      std::printf("%-28s %-18s %12.3f   %-6s %-42s %12.3f %8.2f%s\n", m.walship_row.c_str(),
                  m.walship_metric.c_str(), ours, sv.first.c_str(), sv.second.substr(0, 42).c_str(),
                  v, Ratio(ours, v), m.higher_is_better ? "" : " (lower is better)");
    }
  }
}

}  // namespace walship::bench
