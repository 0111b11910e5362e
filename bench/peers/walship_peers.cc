// walship-peers: the workloads of docs/benchmarks.md run against the systems walship is
// compared with, Redis and PostgreSQL, each as one primary and two replicas that it starts on
// this machine's loopback (installing them from Debian when missing). Rows are named as
// walship-bench's, with the system in place of walship's cluster ("W1/depth:1/redis" beside
// "W1/depth:1/walship-3node"), and the JSON is the same schema; `walship-bench --peers` runs
// this first and prints the two side by side.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_cluster.h"
#include "bench/lag_probe.h"
#include "bench/peers/peer_clients.h"
#include "bench/peers/peer_servers.h"
#include "bench/plots.h"
#include "bench/report.h"
#include "bench/stats.h"

namespace walship::bench::peers {
namespace {

struct Options {
  std::vector<std::string> systems = {"redis", "pg"};
  std::string workload = "all";
  uint64_t keys = 200000;
  uint64_t catchup_keys = 200000;
  uint64_t w5_keys = 1000000;
  size_t value_size = 100;
  double cap_s = 12;
  int reps = 1;
  std::string json;
  std::string plot_dir;  // lag series for walship-bench's plots (bench/plots.h)
};

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "peers: %s\n", s.ToString().c_str());
  std::exit(3);
}

std::unique_ptr<KvClient> Must(const std::string& system, int port, ClientOptions o = {}) {
  auto c = Connect(system, port, o);
  if (!c.ok()) Die(c.status());
  return std::move(*c);
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Waits (at most `seconds`, else exits) until replica `node` serves `key` = `want`.
void WaitServes(PeerSystem& sys, int node, const std::string& key, const std::string& want,
                double seconds) {
  auto t0 = Clock::now();
  std::unique_ptr<KvClient> c;
  while (Since(t0) < seconds) {
    if (c == nullptr) {
      auto made = Connect(sys.name(), sys.port(node));
      if (made.ok()) c = std::move(*made);
    }
    if (c != nullptr) {
      auto v = c->Get(key);
      if (v.ok() && *v == want) return;
      if (!v.ok()) c.reset();  // not serving yet (a standby starting, a replica loading)
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(c == nullptr ? 5 : 1));
  }
  Die(absl::DeadlineExceededError(
      absl::StrCat(sys.name(), " node ", node, " did not serve ", key, " within ", seconds, " s")));
}

// Every replica holds everything written before: a marker written last is on all of them.
void WaitCaughtUp(PeerSystem& sys) {
  static uint64_t nonce = 0;
  std::string value = absl::StrCat("sync-", ++nonce);
  if (absl::Status s = Must(sys.name(), sys.port(0))->Put("__sync", value); !s.ok()) Die(s);
  for (int n = 1; n <= sys.replicas(); ++n) WaitServes(sys, n, "__sync", value, 120);
}

// W2 on a peer (bench/lag_probe.h, the same probe as walship-bench's): markers written to the
// primary, each replica read on its own thread.
class PeerMarkers : public MarkerWriter, public MarkerReader {
 public:
  explicit PeerMarkers(std::unique_ptr<KvClient> c) : c_(std::move(c)) {}
  absl::Status Write(uint64_t seq) override { return c_->Put("__probe", absl::StrCat(seq)); }
  absl::StatusOr<uint64_t> Read() override {
    auto v = c_->Get("__probe");
    if (!v.ok()) return v.status();
    uint64_t seq = 0;
    if (v->has_value() && !absl::SimpleAtoi(**v, &seq)) {
      return absl::DataLossError("__probe is not a number");
    }
    return seq;
  }

 private:
  std::unique_ptr<KvClient> c_;
};

std::unique_ptr<LagProbe> StartProbe(PeerSystem& sys) {
  std::string name = sys.name();
  auto writer = [name, port = sys.port(0)]() -> absl::StatusOr<std::unique_ptr<MarkerWriter>> {
    auto c = Connect(name, port);
    if (!c.ok()) return c.status();
    return std::make_unique<PeerMarkers>(std::move(*c));
  };
  std::vector<LagProbe::Follower> replicas;
  for (int n = 1; n <= sys.replicas(); ++n) {
    replicas.push_back(
        {absl::StrCat("r", n),
         [name, port = sys.port(n)]() -> absl::StatusOr<std::unique_ptr<MarkerReader>> {
           auto c = Connect(name, port);
           if (!c.ok()) return c.status();
           return std::make_unique<PeerMarkers>(std::move(*c));
         }});
  }
  return std::make_unique<LagProbe>(writer, std::move(replicas));
}

// W2 with no client load: the probe alone for a few seconds, the floor of every lag figure.
Row RunIdleLag(PeerSystem& sys) {
  sys.Clear();
  WaitCaughtUp(sys);
  std::string label = absl::StrCat("W2/idle/", sys.name());
  std::fprintf(stderr, "  %s\n", label.c_str());
  std::unique_ptr<LagProbe> probe = StartProbe(sys);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  probe->Stop();
  Row row;
  row.name = label;
  probe->AddCounters(row);
  return row;
}

// One W1 or W3 shape on one system.
struct Shape {
  std::string name;  // "depth:1", "pipeline:64", "batch:64", ...
  size_t per = 1;    // writes per request (pipeline or transaction)
  ClientOptions client;
  bool lag = true;  // run the W2 probe beside it
};

Row RunShape(PeerSystem& sys, const std::string& workload, const Shape& shape, const Options& o) {
  sys.Clear();
  WaitCaughtUp(sys);
  std::string label = absl::StrCat(workload, "/", shape.name, "/", sys.name());
  std::fprintf(stderr, "  %s\n", label.c_str());
  auto client = Must(sys.name(), sys.port(0), shape.client);
  std::unique_ptr<LagProbe> probe = shape.lag ? StartProbe(sys) : nullptr;
  std::vector<double> us;
  auto t0 = Clock::now();
  uint64_t done = 0;
  for (uint64_t i = 0; i < o.keys; i += shape.per) {
    auto start = Clock::now();
    uint64_t n = std::min<uint64_t>(shape.per, o.keys - i);
    absl::Status s = shape.per == 1 ? client->Put(Key(i), Value(i, o.value_size))
                                    : client->PutMany(i, n, o.value_size, shape.per);
    if (!s.ok()) Die(s);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    done += n;
    // One write per round trip stops at the cap, as walship-bench's does.
    if (shape.per == 1 && Since(t0) > o.cap_s) break;
  }
  double secs = Since(t0);
  Row row;
  row.name = label;
  row.ops = done;
  row.seconds = secs;
  row.ops_per_s = done / secs;
  row.counters["p50_us"] = Percentile(us, 50);
  row.counters["p99_us"] = Percentile(us, 99);
  if (probe != nullptr) {
    probe->Stop();
    probe->AddCounters(row);
    if (!o.plot_dir.empty()) WriteLagSeries(o.plot_dir, shape.name, sys.name(), *probe);
  }
  return row;
}

// Keys start..start+n-1, 64 per request, untimed.
void Load(PeerSystem& sys, uint64_t start, uint64_t n, size_t value_size) {
  auto c = Must(sys.name(), sys.port(0));
  if (absl::Status s = c->PutMany(start, n, value_size, 64); !s.ok()) Die(s);
}

// W4: stop replica 2, write catchup_keys more keys (64 per request), restart it; the time
// from its start until it serves the last key.
Row RunW4(PeerSystem& sys, const Options& o) {
  std::fprintf(stderr, "  W4 on %s\n", sys.name().c_str());
  sys.Clear();
  Load(sys, 0, o.catchup_keys, o.value_size);
  WaitCaughtUp(sys);
  sys.StopReplica(2);
  Load(sys, o.catchup_keys, o.catchup_keys, o.value_size);
  uint64_t last = 2 * o.catchup_keys - 1;
  auto t0 = Clock::now();
  sys.StartReplica(2);
  WaitServes(sys, 2, Key(last), Value(last, o.value_size), 600);
  Row row;
  row.name = absl::StrCat("W4/catch-up/", o.catchup_keys, "-writes/", sys.name());
  row.seconds = Since(t0);
  row.ops = o.catchup_keys;
  row.counters["catchup_s"] = row.seconds;
  return row;
}

// W5: a new empty replica of a primary holding w5_keys keys; the time from its start (for
// PostgreSQL, the start of pg_basebackup) until it serves the last key.
Row RunW5(PeerSystem& sys, const Options& o) {
  std::fprintf(stderr, "  W5 on %s\n", sys.name().c_str());
  sys.Clear();
  Load(sys, 0, o.w5_keys, o.value_size);
  WaitCaughtUp(sys);
  uint64_t last = o.w5_keys - 1;
  auto t0 = Clock::now();
  double copy_s = 0;
  int node = sys.AddReplica(&copy_s);
  WaitServes(sys, node, Key(last), Value(last, o.value_size), 600);
  Row row;
  row.name = absl::StrCat("W5/new-follower/", o.w5_keys, "-keys/", sys.name());
  row.seconds = Since(t0);
  row.ops = o.w5_keys;
  row.counters["until_served_s"] = row.seconds;
  if (copy_s > 0) row.counters["snapshot_s"] = copy_s;
  sys.RemoveReplica(node);
  return row;
}

std::vector<Row> RunSystem(const std::string& name, const Options& o) {
  std::unique_ptr<PeerSystem> sys = name == "redis" ? MakeRedis() : MakePostgres();
  std::fprintf(stderr, "%s: a primary and two replicas\n", name.c_str());
  sys->Start(2);
  bool all = o.workload == "all";
  std::vector<Row> rows;
  if (all || o.workload == "W1") {
    std::vector<Shape> shapes;
    if (name == "redis") {
      shapes = {{"depth:1", 1, {}}, {"pipeline:64", 64, {}}};
    } else {
      // A commit fsyncs its WAL (synchronous_commit = local), as walship's writes do not: the
      // second row, with commits not waiting for their fsync, is the nearer to walship's.
      ClientOptions off;
      off.pg_synchronous_commit = "off";
      shapes = {{"depth:1", 1, {}}, {"depth:1,commit-off", 1, off}, {"batch:64", 64, {}}};
    }
    rows.push_back(RunIdleLag(*sys));
    for (const Shape& s : shapes) rows.push_back(RunShape(*sys, "W1", s, o));
  }
  if (all || o.workload == "W3") {
    std::vector<Shape> shapes;
    if (name == "redis") {
      ClientOptions wait;
      wait.redis_wait_replicas = 1;
      shapes = {{"semi-sync:1,received", 1, wait, false}};
    } else {
      ClientOptions on, apply;
      on.pg_synchronous_commit = "on";
      apply.pg_synchronous_commit = "remote_apply";
      shapes = {{"semi-sync:1,flushed,leader-fsync", 1, on, false},
                {"semi-sync:1,applied,leader-fsync", 1, apply, false}};
    }
    for (const Shape& s : shapes) rows.push_back(RunShape(*sys, "W3", s, o));
  }
  if (all || o.workload == "W4") rows.push_back(RunW4(*sys, o));
  if (all || o.workload == "W5") rows.push_back(RunW5(*sys, o));
  return rows;
}

}  // namespace
}  // namespace walship::bench::peers

int main(int argc, char** argv) {
  using namespace walship::bench;
  using namespace walship::bench::peers;
  Options o;
  std::string systems = "redis,pg";
  CLI::App app{
      "walship-peers: the benchmark's workloads on Redis and "
      "PostgreSQL (a primary "
      "and two replicas each, on loopback; installed from Debian when "
      "missing)"};
  app.add_option("--systems", systems, "comma-separated: redis, pg")->capture_default_str();
  app.add_option("--workload", o.workload, "W1 (with the W2 lag probe), W3, W4, W5, or all")
      ->capture_default_str();
  app.add_option("--keys", o.keys, "writes per W1 and W3 run")->capture_default_str();
  app.add_option("--catchup-keys", o.catchup_keys, "W4: writes made while a replica is down")
      ->capture_default_str();
  app.add_option("--w5-keys", o.w5_keys, "W5: keys on the primary when the replica joins")
      ->capture_default_str();
  app.add_option("--value-size", o.value_size, "value bytes")->capture_default_str();
  app.add_option("--cap-s", o.cap_s, "one-per-round-trip runs stop after this many seconds")
      ->capture_default_str();
  app.add_option("--reps", o.reps, "repeat everything N times; the table shows medians")
      ->capture_default_str();
  app.add_option("--json", o.json, "write results in Google Benchmark's JSON schema here");
  app.add_option("--plots", o.plot_dir,
                 "write the lag series here (DIR/data), for walship-bench's plots");
  CLI11_PARSE(app, argc, argv);
  o.systems = absl::StrSplit(systems, ',', absl::SkipEmpty());
  for (const std::string& s : o.systems) {
    if (s != "redis" && s != "pg") {
      std::fprintf(stderr, "--systems: no peer system '%s' (redis, pg)\n", s.c_str());
      return 2;
    }
  }
  if (o.workload != "all" && o.workload != "W1" && o.workload != "W3" && o.workload != "W4" &&
      o.workload != "W5") {
    std::fprintf(stderr, "--workload: '%s' is not W1, W3, W4, W5 or all\n", o.workload.c_str());
    return 2;
  }
  if (!o.plot_dir.empty()) {
    for (const std::string& s : o.systems) ClearLagSeries(o.plot_dir, s);
  }
  InstallPeers();
  std::vector<std::vector<Row>> runs;
  for (int rep = 0; rep < std::max(1, o.reps); ++rep) {
    if (o.reps > 1) std::fprintf(stderr, "repetition %d of %d\n", rep + 1, o.reps);
    std::vector<Row> rows;
    for (const std::string& s : o.systems) {
      for (Row& r : RunSystem(s, o)) rows.push_back(std::move(r));
    }
    runs.push_back(std::move(rows));
  }
  std::vector<Aggregate> aggs = AggregateRuns(runs);
  PrintTable(aggs);
  if (!o.json.empty()) {
    std::ofstream(o.json) << ToJson(runs, aggs).dump(2) << "\n";
    std::printf("JSON: %s\n", o.json.c_str());
  }
  return 0;
}
