// Receiving a checkpoint from a node (PeerService.snapshot) into a checkpoint directory: the
// follower being seeded (into DATA_DIR/seed) and `walship checkpoint --out DIR` both use it.
//
// Files already received and verified by an earlier transfer into the same directory are kept
// when the new checkpoint lists them identically (replication::PlanFetch); the rest are read
// with a bounded number of reads in flight, written in order, and checked against the
// manifest's size and CRC-32 before they count as verified. Once every file is verified and the
// database opens at the manifest's sequence number, the manifest is written: the directory is
// complete.
//
// Thread safety: runs on the event-loop thread (the disk writes block it; a node being seeded
// serves nothing else meanwhile).
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "replication/node_state.h"
#include "replication/seeding.h"
#include "rpc/peer.capnp.h"

namespace walship::rpc {

struct FetchOptions {
  std::string dir;        // the checkpoint directory to fill (created when missing)
  std::string cluster;    // the asker's cluster: the source must belong to it
  std::string requester;  // the asking node's id; empty for a tool
  std::string source;     // names the source in errors and progress
  // The node being seeded, when it is one: a checkpoint of another database is refused
  // (replication::CheckSeedFor) before anything is written.
  std::optional<replication::NodeState> state;
  uint32_t max_inflight = 8;          // reads in flight
  uint32_t chunk_bytes = 1 << 20;     // bytes per read
  // Called as the transfer moves (at most a few times a second, and at each phase).
  std::function<void(const replication::SeedProgress&)> progress;
};

// Resolves with the manifest of the complete directory, or the error that stopped the
// transfer (the directory then keeps what was verified, for the next attempt).
kj::Promise<absl::StatusOr<replication::SnapshotManifest>> FetchCheckpoint(
    kj::Timer& timer, schema::PeerService::Client peer, FetchOptions options);

}  // namespace walship::rpc
