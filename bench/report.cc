#include "bench/report.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
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

std::map<std::string, std::map<std::string, double>> PeerMedians(const nlohmann::json& peers) {
  std::map<std::string, std::map<std::string, double>> out;
  const nlohmann::json& rows = peers.contains("benchmarks") ? peers["benchmarks"] : peers;
  bool aggregated = false;
  for (const auto& b : rows) aggregated |= b.value("aggregate_name", "") == "median";
  for (const auto& b : rows) {
    if (aggregated != (b.value("aggregate_name", "") == "median")) continue;
    auto& m = out[b.value("run_name", "")];
    for (const auto& [k, v] : b.items()) {
      if (!v.is_number() || k == "iterations" || k == "real_time" || k == "cpu_time" ||
          k == "threads" || k == "repetitions" || k == "repetition_index") {
        continue;
      }
      m[k == "items_per_second" ? "ops_per_s" : k] = v.get<double>();
    }
  }
  return out;
}

namespace {

struct Metric {
  const char* name;
  bool higher_is_better;
};
constexpr Metric kCompared[] = {
    {"ops_per_s", true},        {"p50_us", false},         {"p99_us", false},
    {"lag_p99_ms/worst", false}, {"catchup_s", false},     {"until_served_s", false},
    {"snapshot_s", false},
};

}  // namespace

// A walship row "W1/depth:1/walship-3node" is set beside the peers' rows of the same workload
// and shape: "W1/depth:1/redis", and variants of that shape ("W1/depth:1,commit-off/pg").
void PrintPeerComparison(const nlohmann::json& peers, const std::vector<Aggregate>& aggs) {
  std::map<std::string, std::map<std::string, double>> theirs = PeerMedians(peers);
  std::printf("\nSide by side with the peers (medians; ratio = walship / peer):\n");
  std::printf("%-40s %-17s %12s   %-36s %12s %8s\n", "walship row", "metric", "walship",
              "peer row", "peer", "ratio");
  for (const Aggregate& a : aggs) {
    std::string base = a.name;
    if (size_t cut = base.rfind("/walship-"); cut != std::string::npos) base.resize(cut);
    // A paced row ("batch:64,rate:44000") is set beside the peers' rows of its shape, for its
    // lag only: its rate and latency are the pacing's.
    bool paced = false;
    if (size_t rate = base.find(",rate:"); rate != std::string::npos) {
      size_t end = base.find(',', rate + 1);
      base.erase(rate, end == std::string::npos ? std::string::npos : end - rate);
      paced = true;
    }
    for (const auto& [peer_row, values] : theirs) {
      size_t cut = peer_row.rfind('/');
      if (cut == std::string::npos) continue;
      std::string shape = peer_row.substr(0, cut);
      if (shape != base && shape.rfind(base + ",", 0) != 0) continue;
      for (const Metric& m : kCompared) {
        if (paced && std::string(m.name).rfind("lag_", 0) != 0) continue;
        auto ours = a.counters.find(m.name);
        double v = std::string(m.name) == "ops_per_s" ? Median(a.ops_per_s)
                   : ours != a.counters.end()          ? Median(ours->second)
                                                       : 0;
        auto p = values.find(m.name);
        if (v <= 0 || p == values.end() || p->second <= 0) continue;
        std::printf("%-40s %-17s %12.3f   %-36s %12.3f %8.2f%s\n", a.name.c_str(), m.name, v,
                    peer_row.c_str(), p->second, Ratio(v, p->second),
                    m.higher_is_better ? "" : " (lower is better)");
      }
    }
  }
}

void PrintTable(const std::vector<Aggregate>& aggs) {
  std::printf("\n%-44s %12s %-21s %10s %10s  %s\n", "benchmark (median of runs)", "ops/s",
              "[min-max]", "p50 us", "p99 us", "other");
  for (const Aggregate& a : aggs) {
    auto med = [&](const std::string& k) {
      auto c = a.counters.find(k);
      return c == a.counters.end() ? 0.0 : Median(c->second);
    };
    std::string other;
    for (const auto& [k, v] : a.counters) {
      if (k != "p50_us" && k != "p99_us") other += absl::StrFormat("%s=%.3g ", k, Median(v));
    }
    auto [lo, hi] = std::minmax_element(a.ops_per_s.begin(), a.ops_per_s.end());
    std::printf("%-44s %12.0f %-21s %10.1f %10.1f  %s\n", a.name.c_str(), Median(a.ops_per_s),
                absl::StrFormat("[%.0f-%.0f]", *lo, *hi).c_str(), med("p50_us"), med("p99_us"),
                other.c_str());
  }
}

}  // namespace walship::bench
