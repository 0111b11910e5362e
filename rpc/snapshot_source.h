// Serving checkpoints (PeerService.snapshot): a RocksDB checkpoint of the node's database in
// DATA_DIR/checkpoints/N (hard links: no copy on this disk), its manifest with each file's size
// and CRC-32, and a reader of its files that answers at most the node's snapshot rate. The
// checkpoint lives while its reader does; its sequence number pins the WAL (PinnedFrom) a
// while longer, so that the asker can catch up from there.
//
// Thread safety: lives on the event-loop thread; the disk work runs on the node's client pool.
#pragma once

#include <kj/async.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "engine/types.h"
#include "rpc/peer.capnp.h"
#include "rpc/role.h"

namespace walship::rpc {

class Node;

using SnapshotContext =
    capnp::CallContext<schema::PeerService::SnapshotParams, schema::PeerService::SnapshotResults>;

class SnapshotSource {
 public:
  // How long a checkpoint's sequence number pins the WAL after its reader is dropped.
  static constexpr int64_t kPinAfterUs = 120'000'000;
  // Checkpoints served at once (each holds hard links to the SSTables it lists, and costs a
  // CRC pass over them); one more is refused, and the asker tries again later.
  static constexpr size_t kMaxServing = 4;

  explicit SnapshotSource(Node& node);
  ~SnapshotSource();

  // Deletes checkpoints a previous process left behind.
  void RemoveStale();
  // Serves PeerService.snapshot. `hold` keeps the connection it came on open while the
  // checkpoint is taken and read.
  kj::Promise<void> Serve(SnapshotContext ctx, std::shared_ptr<class PeerSessionHold> hold);
  // The lowest sequence number a checkpoint served here still needs from the WAL (the one
  // after its own), or UINT64_MAX when none does.
  engine::SequenceNumber PinnedFrom();
  // Checkpoints being read now, for status.
  size_t serving() const { return serving_; }

  // A read of `bytes` may start this many microseconds from now (the snapshot rate); the
  // time is reserved for it.
  int64_t ReserveRate(uint64_t bytes);
  void Released(uint64_t id, engine::SequenceNumber seq);

 private:
  Node& node_;
  uint64_t next_id_ = 1;
  size_t serving_ = 0;
  std::map<uint64_t, engine::SequenceNumber> live_;      // id -> its sequence number
  std::multimap<int64_t, engine::SequenceNumber> after_;  // pin ends (mono µs) -> seq
  int64_t rate_free_us_ = 0;  // the snapshot rate's next free time (mono µs)
};

}  // namespace walship::rpc
