// walship-bench: the cluster benchmark. Runs the workloads of docs/benchmarks.md against
// walship (a cluster it starts on 127.0.0.1, or --cluster FILE) beside baselines measured in
// the same run (bare RocksDB through engine/, a one-node walship), prints a table and writes
// JSON in Google Benchmark's schema (compare.py accepts it), plus gnuplot plots.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/bench_cluster.h"
#include "bench/growth.h"
#include "bench/plots.h"
#include "bench/report.h"
#include "bench/stats.h"
#include "bench/r1_reads.h"
#include "bench/s1_security.h"
#include "bench/w3_sync.h"
#include "bench/w5_seed.h"
#include "bench/workloads.h"
#include "tools/config.h"

namespace walship::bench {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string workload = "all";  // W1, W2 (runs with W1), W4, all
  uint64_t keys = 200000;
  uint64_t catchup_keys = 200000;
  uint64_t w5_keys = 1000000;
  size_t value_size = 100;
  std::vector<size_t> depths = {1, 64};
  std::vector<size_t> batches = {64};    // W1 "per batch" variant: N puts in one write, 1 in flight
  std::vector<size_t> pipelines = {64};  // W1 "pipeline" variant: N one-put writes per message
  double cap_s = 12;   // one-per-round-trip runs stop after this (as the peers' harness)
  size_t clients = 1;  // concurrent client connections, each with `depth` writes in flight
  double rate = 0;     // > 0: W1's one-in-flight shapes paced to this many puts per second
  std::vector<std::string> replication;  // "key=value" for the [replication] table
  std::string cluster;
  std::string json = "";
  std::string plot_dir = "";
  bool baselines = true;
  int reps = 1;
  bool growth = false;  // how cost grows with the work instead (bench/growth.h)
  double growth_scale = 1;
  bool peers = false;        // run walship-peers first and compare
  std::string peers_json;    // compare with an existing walship-peers result instead
  bool request_ids = false;  // W1 one write per round trip again, each with a request id
};

Sizes SizesOf(const Options& o) {
  return {o.keys, o.catchup_keys, o.value_size, o.cap_s, o.clients};
}

std::vector<W1Variant> Variants(const Options& o) {
  std::vector<W1Variant> v;
  for (size_t d : o.depths) {
    v.push_back({d, 1, o.clients, 0, d == 1 ? o.rate : 0});
    if (d == 1 && o.request_ids) v.push_back({1, 1, o.clients, 0, o.rate, true});
  }
  for (size_t p : o.pipelines) v.push_back({1, 1, o.clients, p, o.rate});
  for (size_t b : o.batches) v.push_back({1, b, o.clients, 0, o.rate});
  return v;
}

struct RunResult {
  std::vector<Row> rows;
  std::map<std::string, std::vector<double>> latencies;  // per W1 variant, for the plot
  std::string error;
};

// One repetition of every selected workload, each baseline first.
RunResult RunOnce(const Options& o, const std::string& walshipd, bool last) {
  RunResult out;
  bool w1 = o.workload == "all" || o.workload == "W1" || o.workload == "W2";
  bool w4 = (o.workload == "all" || o.workload == "W4") && o.cluster.empty();
  bool w3 = (o.workload == "all" || o.workload == "W3") && o.cluster.empty();
  bool w5 = (o.workload == "all" || o.workload == "W5") && o.cluster.empty();
  bool r1 = (o.workload == "all" || o.workload == "R1") && o.cluster.empty();
  bool s1 = (o.workload == "all" || o.workload == "S1") && o.cluster.empty();
  if (w1 && o.baselines && o.cluster.empty()) {
    out.rows.push_back(RunBareEngine(SizesOf(o)));
    LocalCluster single(walshipd, 1, o.replication);
    single.StartAll();
    for (const W1Variant& v : Variants(o)) {
      std::string label = absl::StrCat("W1/", v.Name(), "/walship-1node");
      out.rows.push_back(RunW1(label, single.addr("n1"), SizesOf(o), v, nullptr, nullptr));
    }
  }
  std::unique_ptr<LocalCluster> cluster;
  std::string leader;
  std::vector<std::pair<std::string, std::string>> followers;
  if (o.cluster.empty() && (w1 || w4)) {
    cluster = std::make_unique<LocalCluster>(walshipd, 3, o.replication);
    cluster->StartAll();
    leader = cluster->addr("n1");
    for (size_t i = 1; i < cluster->ids().size(); ++i) {
      followers.push_back({cluster->ids()[i], cluster->addr(cluster->ids()[i])});
    }
  } else if (!o.cluster.empty()) {
    auto cfg = walship::tools::LoadConfig(o.cluster);
    if (!cfg.ok()) {
      out.error = std::string(cfg.status().message());
      return out;
    }
    leader = cfg->Leader()->listen;
    for (const auto& n : cfg->nodes) {
      if (n.role != "leader") followers.push_back({n.id, n.advertise});
    }
  }
  if (w1) {
    std::string where = o.cluster.empty() ? "walship-3node" : "walship-cluster";
    WaitCaughtUp(leader, followers.size());
    out.rows.push_back(RunIdleLag(absl::StrCat("W2/idle/", where), leader, followers));
    for (const W1Variant& v : Variants(o)) {
      // Fresh keyspace per run is not needed: puts of the same keys cost the same.
      WaitCaughtUp(leader, followers.size());
      W2Probe probe(leader, followers);
      std::string label = absl::StrCat("W1/", v.Name(), "/", where);
      std::vector<double> lat;
      out.rows.push_back(RunW1(label, leader, SizesOf(o), v, &probe, &lat));
      out.latencies[absl::StrCat(v.Name(), ", ", where)] = std::move(lat);
      if (last) WriteLagSeries(o.plot_dir, v.Name(), "walship", probe.probe());
    }
  }
  if (w4) out.rows.push_back(RunW4(*cluster, SizesOf(o)));
  if (w3) {
    cluster.reset();  // one cluster at a time on the machine
    W3Options w3o;
    w3o.keys = o.keys;
    w3o.value_size = o.value_size;
    w3o.cap_s = o.cap_s;
    w3o.replication = o.replication;
    for (Row& r : RunW3(walshipd, w3o)) out.rows.push_back(std::move(r));
  }
  if (w5) {
    cluster.reset();
    W5Options w5o;
    w5o.keys = o.w5_keys;
    w5o.value_size = o.value_size;
    w5o.replication = o.replication;
    for (Row& r : RunW5(walshipd, w5o)) out.rows.push_back(std::move(r));
  }
  if (r1) {
    cluster.reset();
    R1Options r1o;
    r1o.value_size = o.value_size;
    r1o.cap_s = o.cap_s / 2;
    r1o.replication = o.replication;
    for (Row& r : RunR1(walshipd, r1o)) out.rows.push_back(std::move(r));
  }
  if (s1) {
    cluster.reset();
    S1Options s1o;
    s1o.value_size = o.value_size;
    s1o.cap_s = o.cap_s / 2;
    s1o.replication = o.replication;
    for (Row& r : RunS1(walshipd, s1o)) out.rows.push_back(std::move(r));
  }
  // Ratios against the bare-RocksDB baseline of this repetition.
  double bare = 0;
  for (const Row& r : out.rows) {
    if (r.name == "W1/bare-rocksdb-engine/one-write-per-op") bare = r.ops_per_s;
  }
  for (Row& r : out.rows) {
    if (r.ops_per_s > 0 && bare > 0) r.counters["ratio_to_bare_rocksdb"] = Ratio(r.ops_per_s, bare);
  }
  return out;
}

// --growth: every point of bench/growth.h, --reps times, then the table, JSON and plots.
int RunGrowthCommand(const Options& o, const std::string& walshipd) {
  GrowthOptions g;
  g.walshipd = walshipd;
  g.replication = o.replication;
  g.cap_s = o.cap_s;
  g.scale = o.growth_scale;
  std::vector<std::vector<Row>> runs;
  for (int rep = 0; rep < std::max(1, o.reps); ++rep) {
    if (o.reps > 1) std::fprintf(stderr, "repetition %d of %d\n", rep + 1, o.reps);
    runs.push_back(RunGrowth(g));
  }
  std::vector<Aggregate> aggs = AggregateRuns(runs);
  PrintTable(aggs);
  if (!o.json.empty()) {
    std::ofstream(o.json) << ToJson(runs, aggs).dump(2) << "\n";
    std::printf("JSON: %s\n", o.json.c_str());
  }
  std::vector<std::string> drawn = WriteGrowthPlots(o.plot_dir, aggs, o.growth_scale);
  std::printf("plots in %s: %s\n", o.plot_dir.c_str(), absl::StrJoin(drawn, " ").c_str());
  return drawn.empty() ? 3 : 0;
}

}  // namespace
}  // namespace walship::bench

int main(int argc, char** argv) {
  using namespace walship::bench;
  Options o;
  CLI::App app{
      "walship-bench: throughput and replication lag of walship, with "
      "the workloads of "
      "docs/benchmarks.md, beside bare RocksDB and a one-node walship "
      "measured in the same run"};
  app.add_option("--workload", o.workload,
                 "W1 (with the W2 lag probe), W3 (writes waiting for "
                 "followers), W4, W5 (a new "
                 "follower from a checkpoint), R1 (reads of one's own writes at a follower), "
                 "S1 (what the cluster secret and TLS cost), or all")
      ->capture_default_str();
  app.add_option("--keys", o.keys, "writes per W1 run (keys 0..N-1)")->capture_default_str();
  app.add_option("--catchup-keys", o.catchup_keys, "W4: writes made while a follower is down")
      ->capture_default_str();
  app.add_option("--w5-keys", o.w5_keys, "W5: keys on the leader when the follower joins")
      ->capture_default_str();
  app.add_option("--value-size", o.value_size, "value bytes")->capture_default_str();
  app.add_option("--batch", o.batches,
                 "W1 variant with N puts per write, one write in flight; repeatable "
                 "(0 for none)")
      ->capture_default_str();
  app.add_option("--depth", o.depths, "writes in flight per client; repeatable")
      ->capture_default_str();
  app.add_option("--pipeline", o.pipelines,
                 "W1 variant with N independent writes per message "
                 "(writeMany), one message "
                 "in flight, as Redis's pipeline; repeatable (0 for none)")
      ->capture_default_str();
  app.add_option("--clients", o.clients,
                 "concurrent client connections (threads), each with --depth in flight")
      ->capture_default_str();
  app.add_option("--rate", o.rate,
                 "pace W1's shapes with one request in flight (depth 1, batch, pipeline) to "
                 "this many puts per second in all, to compare lag at another system's rate "
                 "(depth above 1 runs unpaced); 0: as fast as they go")
      ->capture_default_str();
  app.add_option("--replication", o.replication,
                 "KEY=VALUE for the [replication] table of the clusters the benchmark "
                 "starts "
                 "(docs/config.md); repeatable, e.g. --replication max_inflight_ships=1");
  app.add_option("--cap-s", o.cap_s, "one-per-round-trip runs stop after this many seconds")
      ->capture_default_str();
  app.add_option("--cluster", o.cluster,
                 "run against this running cluster (its leader) instead of starting one; "
                 "W4 and the baselines need a cluster started by the benchmark");
  app.add_option("--json", o.json, "write results in Google Benchmark's JSON schema here");
  app.add_option("--plots", o.plot_dir, "write lag and latency plots (SVG, gnuplot) here");
  app.add_flag("!--no-baselines", o.baselines, "skip bare RocksDB and one-node walship");
  app.add_flag("--request-ids", o.request_ids,
               "W1 one write per round trip again with a request id on each write");
  app.add_option("--reps", o.reps, "repeat everything N times; the table shows medians")
      ->capture_default_str();
  app.add_flag("--peers", o.peers,
               "first run the same workloads on Redis and PostgreSQL "
               "(walship-peers: a primary "
               "and two replicas each, installed from Debian when missing, "
               "which needs root) "
               "and print walship beside them");
  app.add_option("--peers-json", o.peers_json,
                 "compare with this earlier walship-peers JSON instead of running it");
  app.add_flag("--growth", o.growth,
               "instead of the workloads: how cost grows with keys (200k, 2M, 10M), value size "
               "(100 B, 1 KiB, 16 KiB), followers (1, 2, 4) and clients (1, 4, 16), one at a "
               "time, each point on a fresh cluster (about 10 minutes per repetition)");
  app.add_option("--growth-scale", o.growth_scale,
                 "with --growth: key counts times this, at least 1,000 (a quick try of the "
                 "command; rows and plots name the counts used)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  for (std::string& kv : o.replication) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "--replication %s: expected KEY=VALUE\n", kv.c_str());
      return 2;
    }
    kv = kv.substr(0, eq) + " = " + kv.substr(eq + 1);
  }
  std::erase(o.batches, 0);
  std::erase(o.depths, 0);
  std::erase(o.pipelines, 0);
  if (o.plot_dir.empty() && !o.json.empty()) o.plot_dir = fs::path(o.json).parent_path() / "plots";
  if (o.plot_dir.empty()) o.plot_dir = "bench-plots";

  fs::path build_dir = fs::path(argv[0]).parent_path() / "..";
  std::string walshipd = (build_dir / "tools" / "walshipd").string();

  if (o.growth) return RunGrowthCommand(o, walshipd);
  // walship's series of an earlier run in the same place would be drawn with this run's (the
  // peers' are walship-peers' to replace; the growth curves draw none).
  ClearLagSeries(o.plot_dir, "walship");

  nlohmann::json peers;
  if (o.peers || !o.peers_json.empty()) {
    if (o.peers_json.empty()) {
      // The same workloads on Redis and PostgreSQL, minutes before walship's, with the same
      // sizes and repetitions (bench/peers/).
      std::string tool = (build_dir / "bench" / "peers" / "walship-peers").string();
      o.peers_json = (fs::temp_directory_path() / "walship-bench-peers.json").string();
      std::string workload = o.workload == "W2" ? "W1" : o.workload;
      std::string cmd = absl::StrFormat(
          "'%s' --workload %s --keys %d --catchup-keys %d --w5-keys %d "
          "--value-size %d "
          "--cap-s %g --reps %d --json '%s' --plots '%s' >&2",
          tool, workload, o.keys, o.catchup_keys, o.w5_keys, o.value_size, o.cap_s,
          std::max(1, o.reps), o.peers_json, o.plot_dir);
      std::fprintf(stderr, "running the peers first: %s\n", cmd.c_str());
      if (std::system(cmd.c_str()) != 0) {
        std::fprintf(stderr, "the peers' run failed: %s\n", cmd.c_str());
        return 3;
      }
    }
    std::ifstream in(o.peers_json);
    peers = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (peers.is_discarded()) {
      std::fprintf(stderr, "%s is not valid JSON\n", o.peers_json.c_str());
      return 2;
    }
  }

  std::vector<std::vector<Row>> runs;
  RunResult last;
  for (int rep = 0; rep < std::max(1, o.reps); ++rep) {
    if (o.reps > 1) std::fprintf(stderr, "repetition %d of %d\n", rep + 1, o.reps);
    last = RunOnce(o, walshipd, rep + 1 == std::max(1, o.reps));
    if (!last.error.empty()) {
      std::fprintf(stderr, "%s\n", last.error.c_str());
      return 2;
    }
    runs.push_back(last.rows);
  }
  std::vector<Aggregate> aggs = AggregateRuns(runs);

  PrintTable(aggs);
  if (!peers.is_null()) PrintPeerComparison(peers, aggs);
  if (!o.json.empty()) {
    nlohmann::json j = ToJson(runs, aggs);
    if (!peers.is_null()) j["peers"] = peers.value("benchmarks", nlohmann::json::array());
    std::ofstream(o.json) << j.dump(2) << "\n";
    std::printf("JSON: %s\n", o.json.c_str());
  }
  std::vector<std::string> drawn = WritePlots(o.plot_dir, aggs, peers, last.latencies);
  std::printf("plots in %s: %s\n", o.plot_dir.c_str(), absl::StrJoin(drawn, " ").c_str());
  return 0;
}
