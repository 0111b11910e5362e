// A WAL fsync on the node's own worker (Node::node_pool), as the leader's group commit and a
// follower's durable acks ask for it, timed: one that takes 100 ms or more from the request
// (the worker's queue included) is logged, at most once a second, so that a write that waited
// for a slow disk can be told from one that waited for the network.
#pragma once

#include <kj/async.h>

#include "absl/status/status.h"

namespace walship::rpc {

class Node;

// Resolves with the fsync's outcome (Unavailable when the worker's queue is full). `what`
// names what waits for it, for the log.
kj::Promise<absl::Status> SyncWalTimed(Node& node, const char* what);

}  // namespace walship::rpc
