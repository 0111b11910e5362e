#include "bench/w3_sync.h"

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/stats.h"
#include "rpc/client.h"

namespace walship::bench {
namespace {

using replication::AckLevel;
using replication::ReplicationMode;

struct Case {
  std::string name;
  rpc::WriteOptions write;
  size_t clients = 1;
};

rpc::WriteOptions Wants(ReplicationMode mode, AckLevel level) {
  rpc::WriteOptions w;
  w.mode = mode;
  w.acks = mode == ReplicationMode::kSemiSync ? 1 : 0;
  w.level = level;
  w.wait = absl::Seconds(15);
  return w;
}

// Each client writes keys c, c + clients, ... one at a time on its own connection, until the
// keys or the time cap run out; every write's latency is kept.
Row RunCase(const std::string& leader, const Case& k, const W3Options& o) {
  std::string label = absl::StrCat("W3/", k.name, "/walship-3node");
  std::vector<std::vector<int64_t>> lat(k.clients);
  std::atomic<uint64_t> ops{0};
  auto t0 = Clock::now();
  auto drive = [&](size_t c) {
    auto client = rpc::Client::Connect(leader, absl::Seconds(10));
    if (!client.ok()) {
      std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
      std::exit(3);
    }
    (*client)->SetWriteOptions(k.write);
    std::vector<std::vector<engine::WriteOp>> part;
    for (uint64_t i = c; i < o.keys;) {
      part.clear();
      for (; i < o.keys && part.size() < 200; i += k.clients) {
        part.push_back({{engine::OpType::kPut, Key(i), Value(i, o.value_size)}});
      }
      auto r = (*client)->WriteMany(part, 1);
      if (!r.ok()) {
        std::fprintf(stderr, "\n%s: write failed: %s\n", label.c_str(),
                     r.status().ToString().c_str());
        std::exit(3);
      }
      lat[c].insert(lat[c].end(), r->begin(), r->end());
      ops += part.size();
      if (std::chrono::duration<double>(Clock::now() - t0).count() > o.cap_s) break;
    }
  };
  std::vector<std::thread> threads;
  for (size_t c = 1; c < k.clients; ++c) threads.emplace_back(drive, c);
  drive(0);
  for (std::thread& t : threads) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  Row row;
  row.name = label;
  row.ops = ops;
  row.seconds = secs;
  row.ops_per_s = ops / secs;
  std::vector<double> us;
  for (const auto& per_client : lat) {
    for (int64_t ns : per_client) us.push_back(ns / 1000.0);
  }
  row.counters["p50_us"] = Percentile(us, 50);
  row.counters["p99_us"] = Percentile(us, 99);
  std::fprintf(stderr, "%s: %.0f ops/s, p50 %.0f us\n", label.c_str(), row.ops_per_s,
               row.counters["p50_us"]);
  return row;
}

// Runs `cases` on a three-node cluster with `replication` lines; each case's ratio is against
// the first case with the same client count (async).
void RunOn(const std::string& walshipd, const std::vector<std::string>& replication,
           const std::vector<Case>& cases, const W3Options& o, std::vector<Row>* rows) {
  LocalCluster cluster(walshipd, 3, replication);
  cluster.StartAll();
  std::map<size_t, double> async_rate;
  for (const Case& k : cases) {
    WaitCaughtUp(cluster.addr("n1"), 2);
    Row row = RunCase(cluster.addr("n1"), k, o);
    if (!async_rate.count(k.clients)) async_rate[k.clients] = row.ops_per_s;
    row.counters["ratio_to_async"] = Ratio(row.ops_per_s, async_rate[k.clients]);
    rows->push_back(std::move(row));
  }
}

}  // namespace

std::vector<Row> RunW3(const std::string& walshipd, const W3Options& o) {
  const auto semi = ReplicationMode::kSemiSync;
  const size_t many = o.many_clients;
  std::string m = absl::StrCat(",clients:", many);
  std::vector<Row> rows;
  // The leader's own fsync off: the modes and levels, and group commit with many clients.
  RunOn(walshipd, o.replication,
        {{"async", Wants(ReplicationMode::kAsync, AckLevel::kFlushed), 1},
         {"semi-sync:1,received", Wants(semi, AckLevel::kReceived), 1},
         {"semi-sync:1,flushed", Wants(semi, AckLevel::kFlushed), 1},
         {"semi-sync:1,applied", Wants(semi, AckLevel::kApplied), 1},
         {"sync,flushed", Wants(ReplicationMode::kSync, AckLevel::kFlushed), 1},
         {"async" + m, Wants(ReplicationMode::kAsync, AckLevel::kFlushed), many},
         {"semi-sync:1,flushed" + m, Wants(semi, AckLevel::kFlushed), many}},
        o, &rows);
  // The leader's own fsync on, as PostgreSQL's synchronous_commit = on and remote_apply.
  std::vector<std::string> fsync = o.replication;
  fsync.push_back("fsync_writes = true");
  RunOn(walshipd, fsync,
        {{"async,leader-fsync", Wants(ReplicationMode::kAsync, AckLevel::kFlushed), 1},
         {"semi-sync:1,flushed,leader-fsync", Wants(semi, AckLevel::kFlushed), 1},
         {"semi-sync:1,applied,leader-fsync", Wants(semi, AckLevel::kApplied), 1}},
        o, &rows);
  return rows;
}

}  // namespace walship::bench
