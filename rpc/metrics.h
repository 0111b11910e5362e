// What a node tells the tools operators already run: its figures in Prometheus' text
// exposition format (/metrics) and the answers of its health endpoints for load balancers
// (/health, /leader, /replica, as Patroni's), both built here from plain facts so that they
// are tested without a server. rpc/http_endpoint.h serves them; docs/operations.md lists every
// metric and answer.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/histogram.h"
#include "engine/engine.h"
#include "replication/leader.h"
#include "rpc/client.h"

namespace walship::rpc {

// Client requests a node answered since it started, by result, counted by ClientService.
struct RequestCounters {
  // Indexed by the reply's error code (rpc/client.capnp ErrorCode: ok, notFound, ...); the
  // last slot counts codes newer than this build knows.
  static constexpr size_t kCodes = 14;
  std::array<uint64_t, kCodes> writes{};
  std::array<uint64_t, kCodes> reads{};  // gets and scans
  // From when the node takes the request up (a pipelined write: its pipeline) to its answer:
  // writes acknowledged (ok), reads served (ok or notFound), a read's wait for its token or
  // lag bound included.
  LatencyHistogram write_latency;
  LatencyHistogram read_latency;
  void CountWrite(uint16_t code, int64_t us);
  void CountRefusedWrites(uint16_t code, uint64_t n);  // a pipeline refused whole
  void CountRead(uint16_t code, int64_t us);
};

// Everything /metrics reports, gathered on the event loop in one turn.
struct NodeMetrics {
  NodeStatusInfo status;
  RequestCounters requests;
  engine::EngineFigures engine;
  std::vector<replication::FollowerInfo> followers;  // the leader's record of each follower
  // This node's staleness as a bounded-staleness read sees it (replication/reads.h
  // ReadPosition::lag_us): 0 on the leader that takes writes, -1 when unknown.
  int64_t staleness_us = -1;
  uint64_t http_connections_refused = 0;  // HTTP connections closed over the cap
  // With [coordinator]: 1 while etcd answers (the last read of the leader key and the last
  // lease call succeeded), else 0; -1 without a coordinator.
  int coordinator_reachable = -1;
};

// The Prometheus text exposition format (version 0.0.4) of `m`.
std::string PrometheusText(const NodeMetrics& m);

// What the health endpoints decide on, read from the node in one turn.
struct HealthFacts {
  std::string node;
  std::string role;           // the role's name: leader, follower, seeding, recovering
  uint64_t epoch = 0;
  uint64_t latest_seq = 0;
  std::string write_refusal;  // why writes are refused here ("" when taken)
  std::string read_refusal;   // why reads are refused here ("" when served)
  std::string storage_error;  // "" when RocksDB takes writes
  int64_t staleness_us = -1;  // as NodeMetrics::staleness_us
  std::string leader_address;  // the leader this node follows, when known
  // With [coordinator]: what status says of it (endpoint, key holder, lease), and whether
  // etcd answers. A follower cut off from etcd still serves reads: /health stays 200 and
  // says so; a leader cut off stops taking writes within its lease (/leader: 503).
  std::string coordinator;
  bool coordinator_reachable = false;
};

struct HttpAnswer {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// The answer to GET `path`?`query` for the health endpoints; 404 for any other path.
// /health: 200 when the node serves reads and its storage takes writes.
// /leader: 200 only on the leader that takes writes now (its epoch is current: lease held,
//   not handing over; its storage takes writes).
// /replica[?lag=SECONDS]: 200 only on a follower that serves reads, whose storage takes
//   writes (it applies its leader's), and, with lag, that knew itself caught up with its
//   leader at most that long ago.
// Else 503, and 400 for a malformed query. The body is one JSON object saying where the
// node stands and, when not 200, why.
HttpAnswer AnswerHealth(const HealthFacts& facts, std::string_view path, std::string_view query);

}  // namespace walship::rpc
