// The follower's side of replication: the handshake, the continuity and epoch checks, and
// applying shipped batches to the local engine unchanged.
//
// Thread safety: all methods may be called from any thread. One apply runs at a time (the
// engine's single-writer rule); Status(), epoch() and MarkDurable() never wait for an apply
// in progress, so the event loop can answer status while a large batch applies on a worker.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "replication/clock.h"
#include "replication/messages.h"
#include "replication/node_state.h"
#include "replication/reads.h"

namespace walship::replication {

struct FollowerOptions {
  std::string cluster;
  std::string node_id;
  // Where NodeState is persisted (epoch adopted from the leader, database id, history).
  std::string state_path;
  // fsync every applied batch before acking it (durable == applied).
  bool fsync_apply = false;
  // The batches applied last, up to this many bytes, are kept in memory (TakeRecent): once
  // this node is elected they become its leader's memory tail, so that the followers it
  // inherits, which lag it by what the old leader had not yet sent them, catch up without a
  // WAL read (one that must scan a WAL file from its start to reach their position: about
  // 0.3 s for a file of large values, measured on a new leader). 0: none kept.
  uint64_t keep_recent_bytes = 0;
};

enum class FollowerPhase {
  kConnecting,     // no accepted handshake on the current connection
  kStreaming,      // receiving batches
  kNeedsSnapshot,  // the leader cannot serve our position; nothing more will be applied
};
const char* FollowerPhaseName(FollowerPhase phase);

struct FollowerStatus {
  FollowerPhase phase = FollowerPhase::kConnecting;
  Epoch epoch = 0;
  std::string database_id;
  SequenceNumber applied = 0;
  SequenceNumber durable = 0;
  SequenceNumber leader_latest = 0;  // as of the last message from the leader
  uint64_t lag_seq = 0;
  int64_t lag_ms = 0;  // age of the last applied batch when behind, else 0; -1 when
                       // unknown: behind with nothing applied since start, or no word
                       // from a leader since start (leader_latest is then 0)
  int64_t last_contact_us = 0;
  uint64_t bytes_applied = 0;
  std::string message;  // why it needs a snapshot, or the last refusal
};

class Follower {
 public:
  // `engine` must outlive the Follower; `state` is what LoadNodeState returned.
  Follower(FollowerOptions options, engine::Engine* engine, NodeState state, Clock* clock);

  Hello MakeHello() const;

  // Takes the leader's answer. OK: streaming may start (epoch, database id and history are
  // adopted and persisted). kFailedPrecondition: needs snapshot (phase becomes
  // kNeedsSnapshot, persisted: it stays so, whatever later leaders answer, until the node is
  // re-seeded). kPermissionDenied: refused (wrong cluster or database, stale leader).
  absl::Status OnHelloReply(const HelloReply& reply);

  // Applies a message from the leader and returns the ack to send back. Its new batches
  // become one write; their boundaries stay in this node's WAL (each begins with its write
  // time, where engine::WalCursor splits them again). Duplicated batches are skipped, a
  // message that starts past applied + 1 is answered with kGap and nothing is applied.
  // kResourceExhausted (and nothing applied) when `write.no_slowdown` is set and the engine
  // would stall: call again without it, off the event loop. Any other error: the engine
  // could not apply the batches (a storage error, say), nothing was applied, and the caller
  // should stop taking messages for a while (the leader resends them after a reconnect).
  absl::StatusOr<Ack> OnShip(const Ship& ship, const engine::WriteOptions& write);

  // Records that the WAL was fsynced after `seq` was applied.
  void MarkDurable(SequenceNumber seq);

  // Hands over the batches applied last (keep_recent_bytes), contiguous and ending at the
  // last one applied, and keeps none of them: for Leader::SeedTail once this node leads.
  std::deque<ShippedBatch> TakeRecent();

  // The connection to the leader is gone.
  void OnDisconnect();

  FollowerStatus Status() const;
  // Whether every apply waits for a WAL fsync (fsync_apply): such an apply blocks for the
  // disk, so it never runs on a thread that must stay responsive.
  bool syncs_every_apply() const { return options_.fsync_apply; }

  // Why this follower's data must not be read, or "" when it may: the leader can no longer
  // serve its position (WAL purged, or its history diverged), so what it holds is stale with
  // no way to catch up until it is re-seeded.
  std::string ReadRefusal() const;
  // The epochs of this node's history at `applied` and `token_seq`, and ReadRefusal (the lag
  // is the link's to tell: FollowerLink::caught_up_us).
  ReadPosition ReadPositionAt(SequenceNumber applied, SequenceNumber token_seq) const;
  Epoch epoch() const;
  // The highest epoch this node has seen (NodeState::HighestEpoch): a message of a leader
  // below it is refused as stale.
  Epoch HighestEpoch() const;
  NodeState state() const;
  // Takes the vote this node grants `candidate` (itself, when it stands) in `epoch`, in
  // memory, at once: from then on messages of a leader of an earlier epoch are refused and
  // acks name `epoch` (so a leader counts none of them), also while an apply admitted before
  // ends. Refused when the node has seen `epoch` or a later one, unless it is the same vote.
  // SaveVote then saves it, before the vote is answered (replication/election.h).
  absl::Status TakeVote(Epoch epoch, const std::string& candidate);
  absl::Status SaveVote(Epoch epoch, const std::string& candidate);
  // This node won `epoch` with its own vote: begins it at its log's end + 1 as leader and
  // saves that (no apply runs meanwhile). Refused when its vote in `epoch` is no longer its
  // own, or it has seen `epoch` begun meanwhile.
  absl::StatusOr<NodeState> SaveElected(Epoch epoch);
  // The log of the leader whose handshake said this node needs a snapshot (its epoch, history
  // and log's end), when one did since the node started: where the two histories part is what
  // a rollback file keeps (replication/rollback.h).
  struct LeaderLog {
    Epoch epoch = 0;
    std::vector<EpochEntry> history;
    SequenceNumber latest = 0;
  };
  std::optional<LeaderLog> VerdictLeaderLog() const;
  // The cluster's membership as the leader last sent it (saved in the node state), and how
  // many times a new one was saved (cheap to poll: it tells when to read the membership).
  Membership membership() const;
  uint64_t membership_saves() const { return membership_saves_.load(std::memory_order_acquire); }

 private:
  Ack MakeAck(AckOutcome outcome, std::string message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Enters kNeedsSnapshot for good. Returns the node state to persist (PersistNeedsSnapshot),
  // or std::nullopt when it is persisted already.
  std::optional<NodeState> MarkNeedsSnapshot(const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Saves `next` (from MarkNeedsSnapshot) without holding mu_, so status and reads go on.
  void PersistNeedsSnapshot(NodeState next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Saves the membership a leader sent, then adopts it; else notes in the status message why
  // it was not kept (the ack then carries the old version, and the leader sends it again on
  // the next session).
  void SaveMembership(Membership m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Adopts `next` once saved; else notes in the status message that the verdict was not kept.
  void KeepNeedsSnapshot(const absl::Status& saved, NodeState next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the batches just applied to recent_, and drops the oldest past keep_recent_bytes.
  void KeepRecent(const std::vector<const ShippedBatch*>& applied)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // The checks of OnShip: the ack that refuses `ship`, or std::nullopt with the batches to
  // apply (those past applied, contiguous) in `run`.
  std::optional<Ack> Admit(const Ship& ship, std::vector<const ShippedBatch*>* run)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FollowerOptions options_;
  engine::Engine* const engine_;
  Clock* const clock_;
  // Held for a whole OnShip (and the handshake, which must not adopt a new epoch while a
  // batch of the old connection is being applied). Taken before mu_.
  mutable absl::Mutex apply_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // Guards the fields below; held briefly, never across an engine write.
  mutable absl::Mutex mu_;
  NodeState state_ ABSL_GUARDED_BY(mu_);
  FollowerStatus status_ ABSL_GUARDED_BY(mu_);
  SequenceNumber received_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_applied_time_us_ ABSL_GUARDED_BY(mu_) = 0;
  // Set by Admit when a message made this follower need a snapshot; OnShip saves it.
  std::optional<NodeState> to_persist_ ABSL_GUARDED_BY(mu_);
  // Set by Admit when a message carried a membership this node does not hold; OnShip saves it.
  std::optional<Membership> membership_to_save_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> membership_saves_{0};
  std::optional<LeaderLog> verdict_leader_log_ ABSL_GUARDED_BY(mu_);
  // The batches applied last (keep_recent_bytes): contiguous, ending at status_.applied.
  std::deque<ShippedBatch> recent_ ABSL_GUARDED_BY(apply_mu_);
  uint64_t recent_bytes_ ABSL_GUARDED_BY(apply_mu_) = 0;
};

}  // namespace walship::replication
