// The node's listen address: accepts connections, tells clients (rpc/client.capnp, after
// their preamble) from nodes (Cap'n Proto RPC to rpc/peer.capnp) by their first bytes, and
// serves each: clients through the client service, with their replies in request order;
// nodes through the node's current role.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async-io.h>

#include <cstdint>

namespace walship::rpc {

class Node;

// Unidentified connections allowed beside a full house of clients, so that a peer can still
// connect (and be told apart) when every client place is taken.
inline constexpr uint32_t kSpareUnrouted = 16;
// Clients past max_client_connections being told so at once (each for up to 2 s).
inline constexpr uint32_t kMaxRefusing = 16;

class Listener {
 public:
  static kj::Own<Listener> Create(Node& node, kj::ConnectionReceiver& receiver,
                                  kj::AsyncIoContext& io);
  virtual ~Listener() noexcept(false) = default;  // it holds a kj::TaskSet

  // Accepts until the node stops. A failed accept() (EMFILE and ENFILE when descriptors run
  // out, ENOBUFS, ENOMEM) ends nothing: the listener waits, longer after each failure in a
  // row, and accepts again; connections wait in the backlog meanwhile.
  virtual kj::Promise<void> AcceptLoop() = 0;
};

}  // namespace walship::rpc
