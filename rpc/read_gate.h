// Reads that must wait here: for a read token's position to be applied, or for this node to
// know itself within a lag bound of its leader (replication/reads.h decides; this carries the
// waits out on the event loop). A read that cannot be served in its time is answered
// unavailable with how far behind this node is and its leader's address, so that the client
// can go elsewhere.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <cstdint>
#include <list>
#include <optional>

#include "absl/status/status.h"
#include "replication/reads.h"

namespace walship::rpc {

class Node;

class ReadGate {
 public:
  static constexpr uint32_t kDefaultWaitMs = 1000;
  static constexpr uint32_t kMaxWaitMs = 60000;

  explicit ReadGate(Node& node) : node_(node) {}
  ~ReadGate();

  // The answer to a read that needs `needs`, now: OK when they hold here, writeLost
  // (rpc/convert.h) for a token of a write a later epoch replaced, unavailable (with the
  // leader's address as its hint) for a read this node cannot serve; std::nullopt when the
  // read should Wait.
  std::optional<absl::Status> Decide(const replication::ReadNeeds& needs) const;
  // Waits up to `wait_ms` (0: kDefaultWaitMs) for `needs` to hold, and answers as Decide,
  // with unavailable when the time ran out.
  kj::Promise<absl::Status> Wait(const replication::ReadNeeds& needs, uint32_t wait_ms);

  // Something that may let a waiting read through happened (an apply, a message from the
  // leader, a write, a role change): every waiting read is checked again.
  void Poke();

  size_t waiting() const { return waiters_.size(); }

 private:
  struct Waiter {
    uint64_t id = 0;
    replication::ReadNeeds needs;
    kj::Own<kj::PromiseFulfiller<absl::Status>> done;
  };
  replication::ReadCheck Check(const replication::ReadNeeds& needs) const;
  // The answer to a read that is not served (or OK for kServe).
  absl::Status Answer(const replication::ReadCheck& check) const;

  Node& node_;
  std::list<Waiter> waiters_;
  uint64_t next_id_ = 1;
};

}  // namespace walship::rpc
