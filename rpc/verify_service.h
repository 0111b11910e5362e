// The node's side of `walship verify` (rpc/client.capnp, VerifyRequest): the replicas
// compared at one sequence number. The leader holds its writes for a moment (queued, never
// refused) and keeps a snapshot at its latest sequence number; each follower keeps one once
// it has applied exactly that far (it cannot go further while the writes are held); the
// leader then lets writes go on, and every node checksums its snapshot over the same key
// ranges on a client worker, while writes and replication run.
//
// Thread safety: lives on the event-loop thread, inside ClientService.
#pragma once

#include <kj/async.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "rpc/client.capnp.h"
#include "rpc/client.h"

namespace walship::rpc {

class Node;
class ClientService;

// The checksums of the snapshot `read` reads, range by range: with `bounds`, one range per
// bound (its last key) and one open range after them; without, ranges of `range_keys` keys
// each, named by their last keys. Each range hashes every key and value in order with their
// lengths. Runs on a worker (it scans the whole snapshot). kInvalidArgument past
// kMaxRanges ranges or kMaxRangeKeyBytes of their last keys (the answer must fit a reply).
inline constexpr size_t kMaxRanges = 100000;
inline constexpr size_t kMaxRangeKeyBytes = 16 << 20;
absl::StatusOr<std::vector<RangeSum>> ChecksumRanges(engine::Engine& engine,
                                                     const engine::ReadOptions& read,
                                                     const std::vector<std::string>& bounds,
                                                     uint32_t range_keys);

class VerifyService final : private kj::TaskSet::ErrorHandler {
 public:
  VerifyService(Node& node, ClientService& clients);
  ~VerifyService();

  kj::Promise<void> Serve(schema::VerifyRequest::Reader request,
                          schema::VerifyReply::Builder reply);

  // The longest a hold may last, whatever the request asks.
  static constexpr uint32_t kMaxHoldMs = 10000;
  // A snapshot unused for this long is dropped (its verify went away).
  static constexpr int64_t kIdleUs = 60'000'000;
  static constexpr size_t kMaxSessions = 8;

 private:
  struct Session {
    std::shared_ptr<const engine::Snapshot> snapshot;
    engine::SequenceNumber seq = 0;
    int64_t last_used_us = 0;
  };

  void taskFailed(kj::Exception&& e) override;
  kj::Promise<void> Hold(uint32_t hold_ms, schema::VerifyReply::Builder reply);
  kj::Promise<void> SnapshotAt(schema::VerifyAt::Reader at, schema::VerifyReply::Builder reply);
  kj::Promise<void> Checksum(schema::VerifyChecksum::Reader request,
                             schema::VerifyReply::Builder reply);
  // Waits (a millisecond at a time, up to `left_ms`) until no write group is being written.
  kj::Promise<bool> WriterIdle(uint32_t left_ms);
  void Resume(uint64_t id);
  void DropIdle();
  absl::Status Keep(uint64_t id, Session session);

  Node& node_;
  ClientService& clients_;
  std::map<uint64_t, Session> sessions_;
  uint64_t holding_ = 0;  // the id whose hold is on; 0: none
  kj::TaskSet tasks_;     // hold time-outs
};

}  // namespace walship::rpc
