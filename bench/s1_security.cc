#include "bench/s1_security.h"

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"
#include "bench/stats.h"
#include "rpc/client.h"

namespace walship::bench {
namespace {

constexpr int kRounds = 6;  // the clusters in turn, each case's time split over them

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

[[noreturn]] void Failed(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "\nS1: %s failed: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(3);
}

std::unique_ptr<rpc::Client> Connect(const std::string& endpoint,
                                     const rpc::ConnectOptions& options) {
  auto c = rpc::Client::Connect(endpoint, absl::Seconds(10), options);
  if (!c.ok()) Failed("connecting to " + endpoint, c.status());
  return std::move(*c);
}

struct Tally {
  uint64_t ops = 0;
  double secs = 0;
  std::vector<double> us;
};

// For `secs`: connect, one get, close.
void Connections(const std::string& endpoint, const rpc::ConnectOptions& options, double secs,
                 Tally& t) {
  auto t0 = Clock::now();
  while (Us(Clock::now() - t0) < secs * 1e6) {
    auto start = Clock::now();
    auto c = Connect(endpoint, options);
    auto v = c->Get(Key(1));
    if (!v.ok() && !absl::IsNotFound(v.status())) Failed("get", v.status());
    t.us.push_back(Us(Clock::now() - start));
    ++t.ops;
  }
  t.secs += Us(Clock::now() - t0) / 1e6;
}

// For `secs`: one write per round trip on `c`.
void Writes(rpc::Client& c, size_t value_size, double secs, uint64_t& next, Tally& t) {
  auto t0 = Clock::now();
  while (Us(Clock::now() - t0) < secs * 1e6) {
    auto start = Clock::now();
    auto w = c.Write({{engine::OpType::kPut, Key(next % 100000), Value(next, value_size)}});
    if (!w.ok()) Failed("write", w.status());
    t.us.push_back(Us(Clock::now() - start));
    ++t.ops;
    ++next;
  }
  t.secs += Us(Clock::now() - t0) / 1e6;
}

Row MakeRow(const std::string& name, Tally t) {
  Row row;
  row.name = absl::StrCat("S1/", name, "/walship-3node");
  row.ops = t.ops;
  row.seconds = t.secs;
  row.ops_per_s = t.ops / t.secs;
  row.counters["p50_us"] = Percentile(t.us, 50);
  row.counters["p99_us"] = Percentile(t.us, 99);
  return row;
}

}  // namespace

std::vector<Row> RunS1(const std::string& walshipd, const S1Options& o) {
  std::fprintf(stderr, "S1: three 3-node clusters: plain, with a cluster secret, with TLS\n");
  LocalCluster plain(walshipd, 3, o.replication);
  LocalCluster locked(walshipd, 3, o.replication,
                      ClusterSecurity{"s1-benchmark-secret-0123456789abcdef", false});
  LocalCluster tls(walshipd, 3, o.replication, ClusterSecurity{"", true});
  constexpr int kCases = 3;
  LocalCluster* clusters[kCases] = {&plain, &locked, &tls};
  const char* names[kCases] = {"plain", "secret", "tls"};
  for (LocalCluster* c : clusters) c->StartAll();
  Tally connects[kCases], writes[kCases];
  uint64_t next[kCases] = {0, 0, 0};
  double slice = o.cap_s / kRounds;
  for (int round = 0; round < kRounds; ++round) {
    for (int k = 0; k < kCases; ++k) {
      // Each round starts with another cluster, so that none always runs first.
      int i = (round + k) % kCases;
      LocalCluster& c = *clusters[i];
      const std::string& leader = c.addr(c.ids().front());
      Connections(leader, c.connect_options(), slice, connects[i]);
      auto client = Connect(leader, c.connect_options());
      Writes(*client, o.value_size, slice, next[i], writes[i]);
    }
  }
  std::vector<Row> rows;
  for (const char* kind : {"connect", "w1"}) {
    Tally* t = std::string(kind) == "connect" ? connects : writes;
    std::vector<Row> made;
    for (int i = 0; i < kCases; ++i) made.push_back(MakeRow(absl::StrCat(kind, "/", names[i]), t[i]));
    for (int i = 1; i < kCases; ++i) {
      made[i].counters["ratio_to_plain"] = made[i].ops_per_s / made[0].ops_per_s;
    }
    for (Row& r : made) {
      std::fprintf(stderr, "%s: %.0f ops/s, p50 %.1f us, p99 %.1f us\n", r.name.c_str(),
                   r.ops_per_s, r.counters["p50_us"], r.counters["p99_us"]);
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

}  // namespace walship::bench
