#include "bench/workloads.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "bench/stats.h"
#include "rpc/client.h"

namespace walship::bench {
namespace {

namespace fs = std::filesystem;

// W2's markers on walship: written to the leader, whose status is sampled after each; read
// from a follower.
class Writer : public MarkerWriter {
 public:
  Writer(std::unique_ptr<rpc::Client> c, std::map<std::string, std::vector<double>>* status)
      : c_(std::move(c)), status_(status) {}
  absl::Status Write(uint64_t seq) override {
    return c_->Write({{engine::OpType::kPut, "__probe", absl::StrCat(seq)}}).status();
  }
  void AfterAck() override {
    if (auto st = c_->Status(); st.ok()) {
      for (const auto& f : st->followers) (*status_)[f.id].push_back(f.lag_ms);
    }
  }

 private:
  std::unique_ptr<rpc::Client> c_;
  std::map<std::string, std::vector<double>>* status_;
};
class Reader : public MarkerReader {
 public:
  explicit Reader(std::unique_ptr<rpc::Client> c) : c_(std::move(c)) {}
  absl::StatusOr<uint64_t> Read() override {
    auto v = c_->Get("__probe");
    if (absl::IsNotFound(v.status())) return 0;
    if (!v.ok()) return v.status();
    uint64_t seq = 0;
    if (!absl::SimpleAtoi(*v, &seq)) return absl::DataLossError("__probe is not a number");
    return seq;
  }

 private:
  std::unique_ptr<rpc::Client> c_;
};

std::function<absl::StatusOr<std::unique_ptr<MarkerWriter>>()> ConnectWriter(
    const std::string& leader, std::map<std::string, std::vector<double>>* status) {
  return [status, leader]() -> absl::StatusOr<std::unique_ptr<MarkerWriter>> {
    auto c = rpc::Client::Connect(leader, absl::Seconds(5));
    if (!c.ok()) return c.status();
    return std::make_unique<Writer>(std::move(*c), status);
  };
}
std::vector<LagProbe::Follower> Readers(
    const std::vector<std::pair<std::string, std::string>>& followers) {
  std::vector<LagProbe::Follower> out;
  for (const auto& [id, addr] : followers) {
    out.push_back({id, [addr]() -> absl::StatusOr<std::unique_ptr<MarkerReader>> {
                     auto c = rpc::Client::Connect(addr, absl::Seconds(5));
                     if (!c.ok()) return c.status();
                     return std::make_unique<Reader>(std::move(*c));
                   }});
  }
  return out;
}

// Keys start..start+n-1 as writes of `batch` puts each (the last may hold fewer). Three
// shapes of "64 writes in flight or per batch":
// - "pipeline 64": 64 independent one-put writes in one message (writeMany),
// then wait for
//   the 64 replies; exactly what a Redis pipeline of 64 does (bench/peers/);
// - "depth 64": 64 one-put writes in flight as separate calls, each reply
// starting the next;
// - "batch 64": writes of 64 puts (atomic), one at a time, as PostgreSQL's 64
// rows per
//   transaction.
std::vector<std::vector<engine::WriteOp>> W1Writes(uint64_t start, uint64_t n, size_t value_size,
                                                   size_t batch = 1) {
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

// Sends `writes` one at a time, each with a request id of its own (`prefix`, then a counter
// that `next` keeps), and returns each one's latency.
absl::StatusOr<std::vector<int64_t>> WithIds(
    rpc::Client& client, const std::vector<std::vector<engine::WriteOp>>& writes,
    const std::string& prefix, uint64_t* next) {
  std::vector<int64_t> latency_ns;
  latency_ns.reserve(writes.size());
  for (const auto& w : writes) {
    std::string id = absl::StrFormat("%s%016x", prefix, (*next)++);
    auto start = Clock::now();
    auto r = client.WriteWithId(w, id);
    if (!r.ok()) return r.status();
    if (r->duplicate) return absl::InternalError(absl::StrCat("id ", id, " was used before"));
    latency_ns.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }
  return latency_ns;
}

}  // namespace

// The live progress line: writes done, and the lag the probe saw last (when there is one). On
// a terminal it is redrawn in place; to a file or a pipe it goes as a line every 5 s (and the
// run's last line), not as thousands of carriage returns.
void Progress(const std::string& what, uint64_t done, uint64_t total, double lag_ms) {
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

W2Probe::W2Probe(const std::string& leader,
                 const std::vector<std::pair<std::string, std::string>>& followers)
    : probe_(ConnectWriter(leader, &status_lags_), Readers(followers)) {}

void W2Probe::AddCounters(Row& row) {
  probe_.Stop();
  probe_.AddCounters(row);
  for (const auto& [id, samples] : status_lags_) {
    row.counters["status_lag_p99_ms/" + id] = Percentile(samples, 99);
  }
}

std::string W1Variant::Name() const {
  std::string name = pipeline > 0 ? absl::StrCat("pipeline:", pipeline)
                     : batch > 1  ? absl::StrCat("batch:", batch)
                                  : absl::StrCat("depth:", depth);
  if (clients > 1) absl::StrAppend(&name, ",clients:", clients);
  if (rate > 0) absl::StrAppend(&name, ",rate:", static_cast<uint64_t>(rate));
  if (request_ids) absl::StrAppend(&name, ",request-ids");
  return name;
}

// W2 with no client load: the probe alone for a few seconds. Its lag is the floor every other
// row's lag stands on (a shipped write applied, and a read's round trip), and read_p50_us the
// round trip alone.
Row RunIdleLag(const std::string& label, const std::string& leader,
               const std::vector<std::pair<std::string, std::string>>& followers) {
  W2Probe probe(leader, followers);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  Row row;
  row.name = label;
  probe.AddCounters(row);
  return row;
}

Row RunW1(const std::string& label, const std::string& leader, const Sizes& o, W1Variant v,
          W2Probe* probe, std::vector<double>* latencies_us) {
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
    size_t chunk = one_per_trip ? 2000
                   : v.pipeline ? (20000 / v.pipeline + 1) * v.pipeline
                                : 20000 / v.batch + 1;
    // Paced: one request at a time (a write, a batch or a pipeline), each sent when this
    // client's share of the rate has room for it.
    if (v.rate > 0) chunk = v.pipeline > 0 ? v.pipeline : 1;
    // A request late (a stall) is not made up for by a burst: the schedule restarts from now.
    double per_client_rate = v.rate / static_cast<double>(clients);
    Clock::time_point due = Clock::now();
    // Ids unique across runs and clients: this process and the time it began, the client.
    std::string id_prefix = absl::StrFormat(
        "%08x%04x",
        static_cast<uint32_t>(::getpid()) ^ static_cast<uint32_t>(t0.time_since_epoch().count()),
        c);
    uint64_t next_id = 0;
    std::vector<std::vector<engine::WriteOp>> part;
    for (size_t i = c; i < writes.size();) {
      if (v.rate > 0) {
        due = std::max(due, Clock::now());
        std::this_thread::sleep_until(due);
      }
      part.clear();
      for (; i < writes.size() && part.size() < chunk; i += clients) part.push_back(writes[i]);
      auto r = v.pipeline > 0  ? Pipelined(**client, part, v.pipeline)
               : v.request_ids ? WithIds(**client, part, id_prefix, &next_id)
                               : (*client)->WriteMany(part, v.depth);
      if (!r.ok()) {
        std::fprintf(stderr, "\nwrite failed: %s\n", r.status().ToString().c_str());
        std::exit(3);
      }
      lat[c].insert(lat[c].end(), r->begin(), r->end());
      uint64_t n = 0;
      for (const auto& w : part) n += w.size();  // every write of `part` succeeded
      ops += n;
      due += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(static_cast<double>(n) / std::max(1.0, per_client_rate)));
      if (c == 0)
        Progress(label, ops, o.keys, probe != nullptr ? probe->probe().last_lag_ms() : -1);
      if (one_per_trip && std::chrono::duration<double>(Clock::now() - t0).count() > o.cap_s) {
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
  if (probe != nullptr) probe->AddCounters(row);
  return row;
}

Row RunBareEngine(const Sizes& o) {
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
Row RunW4(LocalCluster& cluster, const Sizes& o) {
  const std::string& leader = cluster.addr("n1");
  const std::string victim = cluster.ids().back();
  cluster.Stop(victim);
  {
    auto client = rpc::Client::Connect(leader, absl::Seconds(10));
    if (!client.ok()) std::exit(3);
    for (uint64_t i = 0; i < o.catchup_keys; i += 100000) {
      auto writes =
          W1Writes(o.keys + i, std::min<uint64_t>(100000, o.catchup_keys - i), o.value_size);
      if (!(*client)->WriteMany(writes, 64).ok()) std::exit(3);
    }
  }
  std::string last_key = Key(o.keys + o.catchup_keys - 1);
  std::string want = Value(o.keys + o.catchup_keys - 1, o.value_size);
  // Two minutes, and a second more per 20 MB to apply.
  auto limit = std::chrono::seconds(120) +
               std::chrono::seconds(o.catchup_keys * (Key(0).size() + o.value_size) / 20000000);
  auto t0 = Clock::now();
  cluster.Start(victim);
  double secs = -1;
  double reachable_s = -1;  // process started, database opened (its own WAL replayed)
  while (Clock::now() - t0 < limit) {
    auto c = rpc::Client::Connect(cluster.addr(victim), absl::Seconds(1));
    if (c.ok()) {
      if (reachable_s < 0) {
        reachable_s = std::chrono::duration<double>(Clock::now() - t0).count();
      }
      while (Clock::now() - t0 < limit) {
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
  if (secs < 0) {
    std::fprintf(
        stderr, "W4: the restarted follower did not serve the last key within %lld s\n",
        static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(limit).count()));
  }
  Row row;
  row.name = absl::StrCat("W4/catch-up/", o.catchup_keys, "-writes");
  row.seconds = secs;
  row.ops = o.catchup_keys;
  row.counters["catchup_s"] = secs;
  row.counters["reachable_s"] = reachable_s;
  return row;
}

}  // namespace walship::bench
