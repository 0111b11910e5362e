// walship-bench: the cluster benchmark. Runs the workloads of docs/benchmarks.md against
// walship (a cluster it starts on 127.0.0.1, or --cluster FILE) beside baselines measured in
// the same run (bare RocksDB through engine/, a one-node walship), prints a table and writes
// JSON in Google Benchmark's schema (compare.py accepts it), plus gnuplot plots.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_cluster.h"
#include "bench/report.h"
#include "bench/stats.h"
#include "bench/w3_sync.h"
#include "bench/w5_seed.h"
#include "engine/engine.h"
#include "rpc/client.h"
#include "tools/config.h"
#include "tools/free_port.h"

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
  std::vector<size_t> batches = {64};  // W1 "per batch" variant: N puts in one write, 1 in flight
  std::vector<size_t> pipelines = {64};  // W1 "pipeline" variant: N one-put writes per message
  double cap_s = 12;  // one-per-round-trip runs stop after this (as the peers' harness)
  size_t clients = 1;  // concurrent client connections, each with `depth` writes in flight
  std::vector<std::string> replication;  // "key=value" for the [replication] table
  std::string cluster;
  std::string json = "";
  std::string plot_dir = "";
  bool baselines = true;
  int reps = 1;
  bool peers = false;          // run walship-peers first and compare
  std::string peers_json;      // compare with an existing walship-peers result instead
};

// The live progress line: writes done, and the lag the probe saw last (when there is one).
// On a terminal it is redrawn in place; to a file or a pipe it goes as a line every 5 s (and
// the run's last line), not as thousands of carriage returns.
void Progress(const std::string& what, uint64_t done, uint64_t total, double lag_ms = -1) {
  static const bool tty = ::isatty(STDERR_FILENO) != 0;
  static Clock::time_point last_line;
  std::string line = absl::StrFormat("  %-40s %8d / %d", what, done, total);
  if (lag_ms >= 0) absl::StrAppendFormat(&line, "   follower lag %7.2f ms", lag_ms);
  if (tty) {
    std::fprintf(stderr, "\r%s", line.c_str());
  } else if (done >= total || Clock::now() - last_line >= std::chrono::seconds(5)) {
    last_line = Clock::now();
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

// W2: a marker write every 10 ms on its own connection, then each follower polled (backing off
// 50 µs .. 1 ms) until it returns that marker or a later one. Lag = seen - acked.
class LagProbe {
 public:
  LagProbe(std::string leader, std::vector<std::pair<std::string, std::string>> followers)
      : leader_(std::move(leader)), followers_(std::move(followers)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~LagProbe() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Per follower id: lag samples in ms, and (time since start s, lag ms) for the plot.
  std::map<std::string, std::vector<double>> lags;
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  std::map<std::string, int> unseen;
  // The lag walship itself reports (leader status, lag_ms per follower), sampled per marker.
  std::map<std::string, std::vector<double>> status_lags;
  // The last measured lag of any follower, for the progress line (-1 before the first).
  std::atomic<double> last_lag_ms{-1};

 private:
  void Run() {
    auto leader = rpc::Client::Connect(leader_, absl::Seconds(5));
    if (!leader.ok()) return;
    std::vector<std::unique_ptr<rpc::Client>> fs;
    for (auto& [id, addr] : followers_) {
      auto c = rpc::Client::Connect(addr, absl::Seconds(5));
      if (!c.ok()) return;
      fs.push_back(std::move(*c));
    }
    auto t0 = Clock::now();
    for (uint64_t seq = 1; !stop_; ++seq) {
      auto next = Clock::now() + std::chrono::milliseconds(10);
      auto w = (*leader)->Write({{engine::OpType::kPut, "__probe", absl::StrCat(seq)}});
      if (!w.ok()) break;
      auto acked = Clock::now();
      for (size_t f = 0; f < fs.size(); ++f) {
        int backoff_us = 50;
        bool seen = false;
        while (Clock::now() - acked < std::chrono::seconds(1)) {
          auto v = fs[f]->Get("__probe");
          uint64_t got = 0;
          if (v.ok() && absl::SimpleAtoi(*v, &got) && got >= seq) {
            seen = true;
            break;
          }
          std::this_thread::sleep_for(std::chrono::microseconds(backoff_us));
          backoff_us = std::min(backoff_us * 2, 1000);
        }
        const std::string& id = followers_[f].first;
        if (!seen) {
          ++unseen[id];
          continue;
        }
        double lag_ms = std::chrono::duration<double, std::milli>(Clock::now() - acked).count();
        lags[id].push_back(lag_ms);
        last_lag_ms = lag_ms;
        series[id].push_back(
            {std::chrono::duration<double>(acked - t0).count(), lag_ms});
      }
      if (auto st = (*leader)->Status(); st.ok()) {
        for (const auto& f : st->followers) status_lags[f.id].push_back(f.lag_ms);
      }
      std::this_thread::sleep_until(next);
    }
  }

  std::string leader_;
  std::vector<std::pair<std::string, std::string>> followers_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Keys start..start+n-1 as writes of `batch` puts each (the last may hold fewer). Three
// shapes of "64 writes in flight or per batch":
// - "pipeline 64": 64 independent one-put writes in one message (writeMany), then wait for
//   the 64 replies; exactly what a Redis pipeline of 64 does (bench/peers/);
// - "depth 64": 64 one-put writes in flight as separate calls, each reply starting the next;
// - "batch 64": writes of 64 puts (atomic), one at a time, as PostgreSQL's 64 rows per
//   transaction.
std::vector<std::vector<engine::WriteOp>> W1Writes(uint64_t start, uint64_t n,
                                                   size_t value_size, size_t batch = 1) {
  std::vector<std::vector<engine::WriteOp>> out;
  out.reserve(n / batch + 1);
  for (uint64_t i = start; i < start + n; ++i) {
    if ((i - start) % batch == 0) out.emplace_back();
    out.back().push_back({engine::OpType::kPut, Key(i), Value(i, value_size)});
  }
  return out;
}

// Sends `writes` as pipelines of `size` writes, one pipeline at a time, and returns one
// latency per pipeline (send to last reply), as kvbench.c does for Redis's pipelines.
absl::StatusOr<std::vector<int64_t>> Pipelined(
    rpc::Client& client, const std::vector<std::vector<engine::WriteOp>>& writes, size_t size) {
  std::vector<int64_t> latency_ns;
  for (size_t i = 0; i < writes.size(); i += size) {
    auto start = Clock::now();
    auto r = client.WritePipeline(absl::MakeConstSpan(writes).subspan(i, size));
    if (!r.ok()) return r.status();
    for (const auto& w : *r) {
      if (!w.ok()) return w.status();
    }
    latency_ns.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }
  return latency_ns;
}

struct W1Variant {
  size_t depth = 1;     // writes in flight
  size_t batch = 1;     // puts per write
  size_t clients = 1;
  size_t pipeline = 0;  // > 0: writes per writeMany message, one message in flight
  std::string Name() const {
    std::string name = pipeline > 0 ? absl::StrCat("pipeline:", pipeline)
                       : batch > 1  ? absl::StrCat("batch:", batch)
                                    : absl::StrCat("depth:", depth);
    if (clients > 1) absl::StrAppend(&name, ",clients:", clients);
    return name;
  }
};

std::vector<W1Variant> Variants(const Options& o) {
  std::vector<W1Variant> v;
  for (size_t d : o.depths) v.push_back({d, 1, o.clients});
  for (size_t p : o.pipelines) v.push_back({1, 1, o.clients, p});
  for (size_t b : o.batches) v.push_back({1, b, o.clients});
  return v;
}

Row RunW1(const std::string& label, const std::string& leader, const Options& o, W1Variant v,
          LagProbe* probe, std::vector<double>* latencies_us) {
  auto writes = W1Writes(0, o.keys, o.value_size, v.batch);
  size_t clients = std::max<size_t>(1, o.clients);
  std::vector<std::vector<int64_t>> lat(clients);
  std::atomic<uint64_t> ops{0};
  auto t0 = Clock::now();
  // Client c sends writes c, c + clients, ... on its own connection and thread (each thread
  // has its own KJ loop). Chunks keep the progress line alive and let one-per-trip runs stop
  // at the cap.
  auto drive = [&](size_t c) {
    auto client = rpc::Client::Connect(leader, absl::Seconds(10));
    if (!client.ok()) {
      std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
      std::exit(3);
    }
    bool one_per_trip = v.depth == 1 && v.batch == 1 && v.pipeline == 0;
    size_t chunk = one_per_trip   ? 2000
                   : v.pipeline   ? (20000 / v.pipeline + 1) * v.pipeline
                                  : 20000 / v.batch + 1;
    std::vector<std::vector<engine::WriteOp>> part;
    for (size_t i = c; i < writes.size();) {
      part.clear();
      for (; i < writes.size() && part.size() < chunk; i += clients) part.push_back(writes[i]);
      auto r = v.pipeline > 0 ? Pipelined(**client, part, v.pipeline)
                              : (*client)->WriteMany(part, v.depth);
      if (!r.ok()) {
        std::fprintf(stderr, "\nwrite failed: %s\n", r.status().ToString().c_str());
        std::exit(3);
      }
      lat[c].insert(lat[c].end(), r->begin(), r->end());
      uint64_t n = 0;
      for (const auto& w : part) n += w.size();  // every write of `part` succeeded
      ops += n;
      if (c == 0) Progress(label, ops, o.keys, probe != nullptr ? probe->last_lag_ms.load() : -1);
      if (one_per_trip &&
          std::chrono::duration<double>(Clock::now() - t0).count() > o.cap_s) {
        break;
      }
    }
  };
  std::vector<std::thread> threads;
  for (size_t c = 1; c < clients; ++c) threads.emplace_back(drive, c);
  drive(0);
  for (std::thread& t : threads) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (::isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");  // ends the redrawn line
  Row row;
  row.name = label;
  row.ops = ops;
  row.seconds = secs;
  row.ops_per_s = ops / secs;
  std::vector<double> us;  // per write request
  for (const auto& per_client : lat) {
    for (int64_t ns : per_client) us.push_back(ns / 1000.0);
  }
  row.counters["p50_us"] = Percentile(us, 50);
  row.counters["p99_us"] = Percentile(us, 99);
  if (latencies_us != nullptr) *latencies_us = us;
  if (probe != nullptr) {
    probe->Stop();
    double worst_p99 = 0;
    for (auto& [id, samples] : probe->lags) {
      row.counters["lag_p50_ms/" + id] = Percentile(samples, 50);
      row.counters["lag_p99_ms/" + id] = Percentile(samples, 99);
      row.counters["lag_max_ms/" + id] = Percentile(samples, 100);
      row.counters["lag_unseen/" + id] = probe->unseen[id];
      worst_p99 = std::max(worst_p99, Percentile(samples, 99));
    }
    if (!probe->lags.empty()) row.counters["lag_p99_ms/worst"] = worst_p99;
    for (auto& [id, samples] : probe->status_lags) {
      row.counters["status_lag_p99_ms/" + id] = Percentile(samples, 99);
    }
  }
  return row;
}

Row RunBareEngine(const Options& o) {
  fs::path dir = fs::temp_directory_path() / absl::StrCat("walship-bench-bare-", ::getpid());
  fs::remove_all(dir);
  engine::EngineOptions eo;
  eo.path = dir.string();
  auto e = engine::Engine::Open(eo);
  if (!e.ok()) std::exit(3);
  auto t0 = Clock::now();
  for (uint64_t i = 0; i < o.keys; ++i) {
    std::vector<engine::WriteOp> op = {{engine::OpType::kPut, Key(i), Value(i, o.value_size)}};
    if (!(*e)->Write(op, {}).ok()) std::exit(3);
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  e->reset();
  fs::remove_all(dir);
  Row row;
  row.name = "W1/bare-rocksdb-engine/one-write-per-op";
  row.ops = o.keys;
  row.seconds = secs;
  row.ops_per_s = o.keys / secs;
  return row;
}

// W4: stop a follower, write catchup_keys more keys (64 in flight), restart it, time until it
// serves the last key.
Row RunW4(LocalCluster& cluster, const Options& o) {
  const std::string& leader = cluster.addr("n1");
  const std::string victim = cluster.ids().back();
  cluster.Stop(victim);
  {
    auto client = rpc::Client::Connect(leader, absl::Seconds(10));
    auto writes = W1Writes(o.keys, o.catchup_keys, o.value_size);
    if (!client.ok() || !(*client)->WriteMany(writes, 64).ok()) std::exit(3);
  }
  std::string last_key = Key(o.keys + o.catchup_keys - 1);
  std::string want = Value(o.keys + o.catchup_keys - 1, o.value_size);
  auto t0 = Clock::now();
  cluster.Start(victim);
  double secs = -1;
  double reachable_s = -1;  // process started, database opened (its own WAL replayed)
  while (Clock::now() - t0 < std::chrono::seconds(120)) {
    auto c = rpc::Client::Connect(cluster.addr(victim), absl::Seconds(1));
    if (c.ok()) {
      if (reachable_s < 0) {
        reachable_s = std::chrono::duration<double>(Clock::now() - t0).count();
      }
      while (Clock::now() - t0 < std::chrono::seconds(120)) {
        auto v = (*c)->Get(last_key);
        if (v.ok() && *v == want) {
          secs = std::chrono::duration<double>(Clock::now() - t0).count();
          break;
        }
        if (!v.ok() && !absl::IsNotFound(v.status())) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (secs >= 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Row row;
  row.name = absl::StrCat("W4/catch-up/", o.catchup_keys, "-writes");
  row.seconds = secs;
  row.ops = o.catchup_keys;
  row.counters["catchup_s"] = secs;
  row.counters["reachable_s"] = reachable_s;
  return row;
}

void WritePlots(const std::string& dir, const LagProbe* probe,
                const std::map<std::string, std::vector<double>>& latencies) {
  fs::create_directories(dir);
  std::ostringstream gp;
  gp << "set terminal svg size 900,450 dynamic background rgb 'white'\n";
  if (probe != nullptr && !probe->series.empty()) {
    gp << "set output '" << dir << "/lag.svg'\nset title 'W2: follower lag during W1 (one write "
          "per round trip)'\nset xlabel 'seconds into the run'\nset ylabel 'lag (ms)'\nplot ";
    bool first = true;
    for (const auto& [id, pts] : probe->series) {
      std::ofstream d(dir + "/lag-" + id + ".dat");
      for (auto& [t, l] : pts) d << t << " " << l << "\n";
      gp << (first ? "" : ", ") << "'" << dir << "/lag-" << id << ".dat' using 1:2 with "
         << "linespoints title 'follower " << id << "'";
      first = false;
    }
    gp << "\n";
  }
  if (!latencies.empty()) {
    gp << "set output '" << dir << "/latency.svg'\nset title 'W1 write latency (CDF)'\n"
          "set logscale x\nset xlabel 'latency (us)'\nset ylabel 'fraction of writes'\n"
          "set key bottom right\nplot ";
    bool first = true;
    int n = 0;
    for (const auto& [name, v] : latencies) {
      std::vector<double> s = v;
      std::sort(s.begin(), s.end());
      std::string file = absl::StrCat(dir, "/latency-", n++, ".dat");
      std::ofstream d(file);
      size_t step = std::max<size_t>(1, s.size() / 500);
      for (size_t i = 0; i < s.size(); i += step) d << s[i] << " " << double(i) / s.size() << "\n";
      if (!s.empty()) d << s.back() << " 1\n";
      gp << (first ? "" : ", ") << "'" << file << "' using 1:2 with lines title '" << name
         << "'";
      first = false;
    }
    gp << "\n";
  }
  std::ofstream(dir + "/plots.gp") << gp.str();
  std::string cmd = "gnuplot '" + dir + "/plots.gp'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "gnuplot failed: %s\n", cmd.c_str());
}

struct RunResult {
  std::vector<Row> rows;
  std::map<std::string, std::vector<double>> latencies;  // per W1 variant, for the plot
  std::unique_ptr<LagProbe> probe;                       // the one-per-trip run's, for the plot
  std::string error;
};

// One repetition of every selected workload, each baseline first.
RunResult RunOnce(const Options& o, const std::string& walshipd) {
  RunResult out;
  bool w1 = o.workload == "all" || o.workload == "W1" || o.workload == "W2";
  bool w4 = (o.workload == "all" || o.workload == "W4") && o.cluster.empty();
  bool w3 = (o.workload == "all" || o.workload == "W3") && o.cluster.empty();
  bool w5 = (o.workload == "all" || o.workload == "W5") && o.cluster.empty();
  if (w1 && o.baselines && o.cluster.empty()) {
    out.rows.push_back(RunBareEngine(o));
    LocalCluster single(walshipd, 1, o.replication);
    single.StartAll();
    for (const W1Variant& v : Variants(o)) {
      std::string label = absl::StrCat("W1/", v.Name(), "/walship-1node");
      out.rows.push_back(RunW1(label, single.addr("n1"), o, v, nullptr, nullptr));
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
      if (n.role != "leader") followers.push_back({n.id, n.listen});
    }
  }
  if (w1) {
    std::string where = o.cluster.empty() ? "walship-3node" : "walship-cluster";
    for (const W1Variant& v : Variants(o)) {
      // Fresh keyspace per run is not needed: puts of the same keys cost the same.
      WaitCaughtUp(leader, followers.size());
      auto probe = std::make_unique<LagProbe>(leader, followers);
      std::string label = absl::StrCat("W1/", v.Name(), "/", where);
      std::vector<double> lat;
      out.rows.push_back(RunW1(label, leader, o, v, probe.get(), &lat));
      out.latencies[absl::StrCat(v.Name(), ", ", where)] = std::move(lat);
      bool one_per_trip = v.depth == 1 && v.batch == 1 && v.pipeline == 0;
      if (one_per_trip || out.probe == nullptr) out.probe = std::move(probe);
    }
  }
  if (w4) out.rows.push_back(RunW4(*cluster, o));
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

}  // namespace
}  // namespace walship::bench

int main(int argc, char** argv) {
  using namespace walship::bench;
  Options o;
  CLI::App app{
      "walship-bench: throughput and replication lag of walship, with the workloads of "
      "docs/benchmarks.md, beside bare RocksDB and a one-node walship measured in the same run"};
  app.add_option("--workload", o.workload,
                 "W1 (with the W2 lag probe), W3 (writes waiting for followers), W4, W5 (a new "
                 "follower from a checkpoint), or all")
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
                 "W1 variant with N independent writes per message (writeMany), one message "
                 "in flight, as Redis's pipeline; repeatable (0 for none)")
      ->capture_default_str();
  app.add_option("--clients", o.clients,
                 "concurrent client connections (threads), each with --depth in flight")
      ->capture_default_str();
  app.add_option("--replication", o.replication,
                 "KEY=VALUE for the [replication] table of the clusters the benchmark starts "
                 "(docs/config.md); repeatable, e.g. --replication max_inflight_ships=1");
  app.add_option("--cap-s", o.cap_s, "one-per-round-trip runs stop after this many seconds")
      ->capture_default_str();
  app.add_option("--cluster", o.cluster,
                 "run against this running cluster (its leader) instead of starting one; "
                 "W4 and the baselines need a cluster started by the benchmark");
  app.add_option("--json", o.json, "write results in Google Benchmark's JSON schema here");
  app.add_option("--plots", o.plot_dir, "write lag and latency plots (SVG, gnuplot) here");
  app.add_flag("!--no-baselines", o.baselines, "skip bare RocksDB and one-node walship");
  app.add_option("--reps", o.reps, "repeat everything N times; the table shows medians")
      ->capture_default_str();
  app.add_flag("--peers", o.peers,
               "first run the same workloads on Redis and PostgreSQL (walship-peers: a primary "
               "and two replicas each, installed from Debian when missing, which needs root) "
               "and print walship beside them");
  app.add_option("--peers-json", o.peers_json,
                 "compare with this earlier walship-peers JSON instead of running it");
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

  nlohmann::json peers;
  if (o.peers || !o.peers_json.empty()) {
    if (o.peers_json.empty()) {
      // The same workloads on Redis and PostgreSQL, minutes before walship's, with the same
      // sizes and repetitions (bench/peers/).
      std::string tool = (build_dir / "bench" / "peers" / "walship-peers").string();
      o.peers_json = (fs::temp_directory_path() / "walship-bench-peers.json").string();
      std::string workload = o.workload == "W2" ? "W1" : o.workload;
      std::string cmd = absl::StrFormat(
          "'%s' --workload %s --keys %d --catchup-keys %d --w5-keys %d --value-size %d "
          "--cap-s %g --reps %d --json '%s' >&2",
          tool, workload, o.keys, o.catchup_keys, o.w5_keys, o.value_size, o.cap_s,
          std::max(1, o.reps), o.peers_json);
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
    last = RunOnce(o, walshipd);
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
  WritePlots(o.plot_dir, last.probe.get(), last.latencies);
  std::printf("plots: %s/lag.svg %s/latency.svg\n", o.plot_dir.c_str(), o.plot_dir.c_str());
  return 0;
}
