// A node's HTTP port (http_listen): Prometheus' /metrics and the health endpoints /health,
// /leader and /replica (rpc/metrics.h), served by Cap'n Proto's kj-http on the node's own
// event loop, so that every answer is read from the node in one turn, beside its work.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async-io.h>

#include <cstdint>

#include "rpc/metrics.h"

namespace walship::rpc {

class Node;

// HTTP connections served at once; one more is closed at once (a scraper and a few load
// balancers need a handful).
inline constexpr uint32_t kMaxHttpConnections = 32;

class HttpEndpoint {
 public:
  static kj::Own<HttpEndpoint> Create(Node& node, kj::ConnectionReceiver& receiver,
                                      kj::AsyncIoContext& io);
  virtual ~HttpEndpoint() noexcept(false) = default;  // it holds a kj::TaskSet

  // Accepts until the node stops; a failed accept is retried after a pause, as the node's
  // listener does.
  virtual kj::Promise<void> AcceptLoop() = 0;
};

// What /metrics and the health endpoints report, read from `node` now.
NodeMetrics GatherMetrics(Node& node);
HealthFacts GatherHealth(Node& node);

}  // namespace walship::rpc
