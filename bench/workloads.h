// The write workloads of walship-bench (docs/benchmarks.md): W1 (throughput, in its shapes),
// W2 (the follower lag W1 causes, and with no load), W4 (a follower's catch-up after a
// restart), and W1 on bare RocksDB for the baseline.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_cluster.h"
#include "bench/lag_probe.h"
#include "engine/engine.h"

namespace walship::bench {

struct Sizes {
  uint64_t keys = 200000;          // W1: keys 0..keys-1
  uint64_t catchup_keys = 200000;  // W4: keys written while a follower is down
  size_t value_size = 100;
  double cap_s = 12;   // one-per-round-trip runs stop after this
  size_t clients = 1;  // connections, each on its own thread
};

// The live progress line (redrawn on a terminal, a line every 5 s otherwise).
void Progress(const std::string& what, uint64_t done, uint64_t total, double lag_ms = -1);

// W1's shapes: `depth` one-put writes in flight, writes of `batch` puts one at a time, or
// `pipeline` one-put writes per message, one message in flight; per client; at most `rate`
// puts per second.
struct W1Variant {
  size_t depth = 1;
  size_t batch = 1;
  size_t clients = 1;
  size_t pipeline = 0;
  // > 0: puts per second in all, paced (one request in flight per client: depth 1); W2 then
  // compares lag at the rate another system reached.
  double rate = 0;
  // Each write carries a request id of 28 bytes (rpc::Client::WriteWithId), one write per
  // round trip: what remembering ids costs.
  bool request_ids = false;
  // "depth:64", "batch:64", "pipeline:64", then ",clients:4", ",rate:44000", ",request-ids"
  std::string Name() const;
};

// W2 on walship: the probe of bench/lag_probe.h on the leader and `followers` (id, address),
// and the leader's own view of their lag (its status) after each marker.
class W2Probe {
 public:
  W2Probe(const std::string& leader,
          const std::vector<std::pair<std::string, std::string>>& followers);
  LagProbe& probe() { return probe_; }
  // Stops the probe and adds its figures, and the leader's status_lag_p99_ms/ID, to `row`.
  void AddCounters(Row& row);

 private:
  std::map<std::string, std::vector<double>> status_lags_;  // before probe_: it writes here
  LagProbe probe_;
};

// W1 of `v` on the leader at `leader`, with `probe` (may be null) running beside it; the
// per-request latencies go to `latencies_us` (may be null).
Row RunW1(const std::string& label, const std::string& leader, const Sizes& o, W1Variant v,
          W2Probe* probe, std::vector<double>* latencies_us);

// W2 with no client load: the probe alone for a few seconds.
Row RunIdleLag(const std::string& label, const std::string& leader,
               const std::vector<std::pair<std::string, std::string>>& followers);

// W1's one write per round trip on RocksDB through engine/, no network, no replication.
Row RunBareEngine(const Sizes& o);

// W4: stop the cluster's last follower, write catchup_keys more keys (64 in flight), restart
// it, and time until it serves the last one.
Row RunW4(LocalCluster& cluster, const Sizes& o);

}  // namespace walship::bench
