#include "bench/r1_reads.h"

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/stats.h"
#include "rpc/client.h"

namespace walship::bench {
namespace {

std::unique_ptr<rpc::Client> Connect(const std::string& endpoint) {
  auto c = rpc::Client::Connect(endpoint, absl::Seconds(10));
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
    std::exit(3);
  }
  return std::move(*c);
}

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

[[noreturn]] void Failed(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "\nR1: %s failed: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(3);
}

Row MakeRow(const std::string& name, uint64_t ops, double secs, std::vector<double> read_us) {
  Row row;
  row.name = absl::StrCat("R1/", name, "/walship-3node");
  row.ops = ops;
  row.seconds = secs;
  row.ops_per_s = ops / secs;
  row.counters["p50_us"] = Percentile(read_us, 50);
  row.counters["p99_us"] = Percentile(read_us, 99);
  std::fprintf(stderr, "%s: %.0f ops/s, read p50 %.1f us, p99 %.1f us\n", row.name.c_str(),
               row.ops_per_s, row.counters["p50_us"], row.counters["p99_us"]);
  return row;
}

// A write at the leader, then a read of it at `reader` with the write's token, until cap_s.
Row WriteThenRead(const std::string& name, rpc::Client& writer, rpc::Client& reader,
                  const R1Options& o) {
  std::vector<double> read_us;
  uint64_t pairs = 0;
  auto t0 = Clock::now();
  for (uint64_t i = 0; Us(Clock::now() - t0) < o.cap_s * 1e6; ++i) {
    auto w = writer.Write({{engine::OpType::kPut, Key(i % 100000), Value(i, o.value_size)}});
    if (!w.ok()) Failed("write", w.status());
    rpc::ReadOptions ro;
    ro.after = {w->epoch, w->last_seq};
    reader.SetReadOptions(ro);
    auto start = Clock::now();
    auto v = reader.Get(Key(i % 100000));
    read_us.push_back(Us(Clock::now() - start));
    if (!v.ok()) Failed("read at " + reader.endpoint(), v.status());
    ++pairs;
  }
  return MakeRow(name, pairs, Us(Clock::now() - t0) / 1e6, std::move(read_us));
}

// Reads only, each with `token` (applied everywhere already).
Row CaughtUpReads(const std::string& name, rpc::Client& reader, replication::ReadToken token,
                  const R1Options& o) {
  rpc::ReadOptions ro;
  ro.after = token;
  reader.SetReadOptions(ro);
  std::vector<double> read_us;
  uint64_t reads = 0;
  auto t0 = Clock::now();
  for (uint64_t i = 0; Us(Clock::now() - t0) < o.cap_s * 1e6; ++i) {
    auto start = Clock::now();
    auto v = reader.Get(Key(i % 1000));
    read_us.push_back(Us(Clock::now() - start));
    if (!v.ok()) Failed("read at " + reader.endpoint(), v.status());
    ++reads;
  }
  return MakeRow(name, reads, Us(Clock::now() - t0) / 1e6, std::move(read_us));
}

}  // namespace

std::vector<Row> RunR1(const std::string& walshipd, const R1Options& o) {
  LocalCluster cluster(walshipd, 3, o.replication);
  cluster.StartAll();
  const std::string leader = cluster.addr("n1"), follower = cluster.addr("n2");
  auto writer = Connect(leader);
  auto at_leader = Connect(leader);
  auto at_follower = Connect(follower);
  std::vector<Row> rows;
  // The keys every case reads, written once.
  replication::ReadToken last;
  for (uint64_t i = 0; i < 1000; ++i) {
    auto w = writer->Write({{engine::OpType::kPut, Key(i), Value(i, o.value_size)}});
    if (!w.ok()) Failed("write", w.status());
    last = {w->epoch, w->last_seq};
  }
  WaitCaughtUp(leader, 2);
  Row leader_ryw = WriteThenRead("ryw/leader", *writer, *at_leader, o);
  WaitCaughtUp(leader, 2);
  Row follower_ryw = WriteThenRead("ryw/follower", *writer, *at_follower, o);
  follower_ryw.counters["ratio_to_leader"] =
      Ratio(follower_ryw.counters["p50_us"], leader_ryw.counters["p50_us"]);
  follower_ryw.counters["pairs_ratio_to_leader"] =
      Ratio(follower_ryw.ops_per_s, leader_ryw.ops_per_s);
  WaitCaughtUp(leader, 2);
  Row leader_read = CaughtUpReads("caught-up/leader", *at_leader, last, o);
  Row follower_read = CaughtUpReads("caught-up/follower", *at_follower, last, o);
  follower_read.counters["ratio_to_leader"] =
      Ratio(follower_read.counters["p50_us"], leader_read.counters["p50_us"]);
  rows.push_back(std::move(leader_ryw));
  rows.push_back(std::move(follower_ryw));
  rows.push_back(std::move(leader_read));
  rows.push_back(std::move(follower_read));

  // Under W2's load: a writer as W1 one per round trip on its own connection, while the probe
  // writes and reads back, at the follower and then at the leader.
  WaitCaughtUp(leader, 2);
  std::atomic<bool> stop{false};
  std::thread load([&] {
    auto c = Connect(leader);
    for (uint64_t i = 1000; !stop; ++i) {
      auto w = c->Write({{engine::OpType::kPut, Key(1000 + i % 100000), Value(i, o.value_size)}});
      if (!w.ok()) Failed("load write", w.status());
    }
  });
  Row wait_follower = WriteThenRead("wait-under-load/follower", *writer, *at_follower, o);
  Row wait_leader = WriteThenRead("wait-under-load/leader", *writer, *at_leader, o);
  stop = true;
  load.join();
  wait_follower.counters["ratio_to_leader"] =
      Ratio(wait_follower.counters["p50_us"], wait_leader.counters["p50_us"]);
  rows.push_back(std::move(wait_leader));
  rows.push_back(std::move(wait_follower));
  return rows;
}

}  // namespace walship::bench
