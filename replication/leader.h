// The leader's side of replication: which follower has what, what to ship next, and lag.
//
// A pure state machine: it reads the engine (latest sequence, WAL cursors) but never writes
// it, and never touches a socket. rpc/ calls it from the event-loop thread; the simulation
// test calls it from its single thread. Thread safety: none; one thread at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/histogram.h"
#include "engine/engine.h"
#include "replication/clock.h"
#include "replication/durability.h"
#include "replication/messages.h"
#include "replication/node_state.h"

namespace walship::replication {

struct LeaderOptions {
  std::string cluster;
  std::string node_id;
  // Recent batches kept in memory so caught-up followers are served without reading the WAL.
  uint64_t max_tail_bytes = 64ull << 20;
  // Upper bound of the batch bytes in one Ship message (a message is at most 64 MiB).
  uint64_t max_ship_bytes = 1ull << 20;
  // With members_only, only the members of the cluster's membership may follow this leader
  // (NodeState::membership; a node keeps the config file's nodes there, then what changed at
  // run time): a hello from any other id is refused and leaves no record. A state without a
  // membership (version 0) takes `members` (the other nodes, all voting) as its first one.
  // Without members_only any id may follow (tests and embedding), every follower counts as a
  // voter, and refused hellos leave no record.
  bool members_only = false;
  std::vector<std::string> members;
  // A learner within this many sequence numbers of the leader's log is ready to vote
  // (DuePromotion).
  uint64_t ready_lag = 1000;
  // true: NextShip reads the WAL itself when a follower is older than the memory tail (the
  // simulation). false: it never touches the WAL; the transport reads it on another thread
  // through TakeWalRead / WalRead::Run / OnWalRead, so that the event loop never waits for
  // the disk.
  bool read_wal_inline = true;
  // With read_wal_inline = false: batch bytes one WAL read takes ahead for a follower.
  uint64_t max_wal_read_bytes = 4ull << 20;
  // A follower with no data (no database id, nothing applied) that subscribes to a leader
  // holding writes is told to seed itself from a checkpoint (kNeedsSnapshot), as PostgreSQL
  // and Redis seed new replicas, rather than replaying the whole log. false: it streams from
  // seq 1 while the WAL holds it.
  bool seed_new_followers = false;
  // Followers the leader keeps a record of (connected or not); hellos from further ids are
  // refused, so a misconfigured peer cannot grow the leader's state without bound.
  size_t max_followers = 64;
};

enum class FollowerState { kConnected, kDisconnected, kNeedsSnapshot, kRefused };
const char* FollowerStateName(FollowerState state);

// What the leader knows of one follower (walship status).
struct FollowerInfo {
  std::string id;
  FollowerState state = FollowerState::kDisconnected;
  SequenceNumber sent = 0;      // end of the last batch shipped
  SequenceNumber received = 0;  // acknowledged positions
  SequenceNumber durable = 0;
  SequenceNumber applied = 0;
  uint64_t lag_seq = 0;         // leader latest - applied
  int64_t lag_ms = 0;           // age of the oldest write the follower has not applied; when
                                // that write is neither in flight nor in the memory tail, the
                                // age of the oldest batch in memory (a lower bound)
  uint64_t bytes_shipped = 0;   // batch bytes sent since the leader started
  uint64_t batches_shipped = 0;  // and batches
  uint64_t acks = 0;             // acks of this epoch received
  // From the leader's write of each message's first batch to the ack that says the follower
  // applied the whole message. Not counted: writes made before the follower's session began
  // (a catch-up after an absence would measure the absence), and messages in flight when a
  // gap or a disconnect cleared them.
  LatencyHistogram replication_latency;
  int64_t last_ack_us = 0;      // wall clock of the last ack (0: none yet)
  std::string message;          // why it needs a snapshot or was refused
  bool voter = true;            // false: a learner (members_only)
  uint64_t membership_acked = 0;  // the membership version its last ack reported
};

// A read of the leader's WAL for one follower, done off the leader's thread (see
// LeaderOptions::read_wal_inline): TakeWalRead hands it out, Run reads, OnWalRead takes the
// result back.
struct WalRead {
  uint64_t session = 0;
  SequenceNumber from_seq = 0;
  uint64_t max_bytes = 0;
  engine::Engine* engine = nullptr;
  std::unique_ptr<engine::WalCursor> cursor;  // at from_seq, or null: Run opens one
  // Results of Run.
  std::vector<ShippedBatch> batches;  // contiguous from from_seq
  absl::Status status;                // kOutOfRange / kInvalidArgument: the position is gone

  // Reads whole batches from from_seq until max_bytes or the end of the log. Touches only
  // this object and the engine (which is thread-safe), so it may run on any thread.
  void Run();
};

class Leader {
 public:
  // `engine` must outlive the Leader. `state` is the leader's persisted state for its current
  // epoch (database id, epoch, history including the current epoch's entry).
  Leader(LeaderOptions options, engine::Engine* engine, NodeState state, Clock* clock);

  // Handshake. On kAccepted the follower gets a new session id (returned through
  // `session`); earlier sessions of the same follower are ended. A refused hello never ends
  // a session: it is recorded (for status) only in the record of a configured member that
  // has no live session, and leaves no state behind otherwise.
  HelloReply OnHello(const Hello& hello, uint64_t* session);

  // Records a batch this node has just written (in sequence order, one writer).
  void OnLocalWrite(engine::Batch batch, int64_t leader_time_us);
  // Before any write: takes the batches this node applied as a follower just before it was
  // elected (Follower::TakeRecent) as its memory tail, so that the followers it inherits
  // catch up from memory. Taken only when they are contiguous and end at this log's end;
  // returns how many were taken.
  size_t SeedTail(std::deque<ShippedBatch> recent);

  // The next message for a session: batches from the session's position, from the memory
  // tail when they are recent and from the WAL otherwise, up to max_ship_bytes. Returns
  // std::nullopt when there is nothing to send, unless `heartbeat` asks for an empty message.
  // When the position cannot be served (WAL purged or the follower's history diverged) the
  // message carries needs_snapshot and the follower's state becomes kNeedsSnapshot.
  std::optional<Ship> NextShip(uint64_t session, bool heartbeat);

  // With read_wal_inline = false: when the session's next batch is older than the memory
  // tail and no read of it is under way or read ahead, the WAL read it needs (one at a time
  // per session); else std::nullopt.
  std::optional<WalRead> TakeWalRead(uint64_t session);

  // The result of a WalRead: its batches are kept for NextShip. A read for an ended session,
  // or for a position the session has left, is dropped. When the position is gone from the
  // WAL, the follower needs a snapshot: the message to tell it is returned (send it, as a
  // NextShip message).
  std::optional<Ship> OnWalRead(WalRead read);

  // An ack for a message of `session`. Acks of ended sessions are ignored.
  void OnAck(uint64_t session, const Ack& ack);

  // The connection of `session` is gone (no effect on an ended session).
  void OnDisconnect(uint64_t session);

  // True when the session exists and has batches to send.
  bool HasWork(uint64_t session) const;

  // Batch bytes the session has yet to be sent, when its position is in the memory tail;
  // UINT64_MAX when it is older than the tail (it is served from the WAL: catching up).
  // The transport uses it to keep one message in flight to a caught-up follower (so that
  // writes arriving meanwhile travel together) and a full window to one catching up.
  uint64_t PendingBytes(uint64_t session) const;

  std::vector<FollowerInfo> Followers();

  // The first sequence number a follower the leader knows still needs from the WAL: the
  // lowest applied + 1 over followers that are connected or away (not those told to re-seed
  // or refused); UINT64_MAX when there is none. The WAL archive keeps it (up to its cap).
  SequenceNumber WalNeededFrom() const;

  // The voting followers' acknowledged positions at `level`, highest first: the configured
  // members (members_only), else every follower that ever subscribed. One not heard from in
  // this leader's epoch counts 0. `applied` counts only what is also flushed there.
  std::vector<SequenceNumber> VoterPositions(AckLevel level) const;
  size_t voters() const;
  // The acknowledged position of one session's follower at `level` (0 for an ended session).
  SequenceNumber PositionOf(uint64_t session, AckLevel level) const;
  // The first sequence number the session's next message starts at (UINT64_MAX for an ended
  // session).
  SequenceNumber NextToShip(uint64_t session) const;
  // ---- Membership (replication/membership.h) ----
  const Membership& membership() const { return state_.membership; }
  // Whether the last change is held by a majority of the voters (this leader counts), so that
  // another may begin. Always true without members_only or a membership.
  bool MembershipSettled() const;
  // The voters that have not acknowledged the current membership yet ("" when settled).
  std::string MembershipWaitingFor() const;
  // Takes a membership the caller has saved in the node state (ApplyChange of the current
  // one). Followers are sent it with their next message; the records of nodes that are no
  // longer members are dropped, and their sessions end (Shipper::Pump closes them).
  void SetMembership(Membership next);
  // A learner that is ready to vote: connected, holding the current membership and within
  // ready_lag of this leader's log, while the membership is settled; std::nullopt when none.
  std::optional<MembershipChange> DuePromotion() const;
  // Whether follower `f` (from Followers()) has acknowledged the current membership (always
  // true without members_only or a membership).
  bool HoldsMembership(const FollowerInfo& f) const;
  // Whether `session` is one this leader serves (a removed member's is not).
  bool Serves(uint64_t session) const { return FindSession(session) != nullptr; }

  SequenceNumber latest() const { return latest_; }
  Epoch epoch() const { return state_.epoch; }
  // Whether messages echo the follower's last ack time (Ship::echo_us), by which a follower
  // knows itself caught up with the cluster's latest as of then. Off while another node may
  // lead: once this one has asked another to take over, or its lease lapsed (a majority may
  // elect another meanwhile), that one may write while this one still sends heartbeats.
  void set_echo(bool on) { echo_ = on; }
  const NodeState& state() const { return state_; }
  const LeaderOptions& options() const { return options_; }

 private:
  struct Record {
    FollowerInfo info;
    uint64_t session = 0;
    int64_t session_start_us = 0;  // when the session began (clock_)
    SequenceNumber next_seq = 1;  // next batch to ship
    std::unique_ptr<engine::WalCursor> cursor;
    // read_wal_inline = false: batches read from the WAL ahead of next_seq, and whether a
    // read is under way.
    std::deque<ShippedBatch> read_ahead;
    bool wal_read_pending = false;
    // For each message in flight: its first batch's position and write time, ascending; so
    // that lag_ms is known for batches read from the WAL too (bounded: kMaxShippedTimes).
    std::deque<std::pair<SequenceNumber, int64_t>> shipped_times;
    // The membership version sent on this follower's stream (sent once per stream and change).
    std::optional<uint64_t> membership_sent;
    // The highest Ack::sent_us of this stream, echoed in every message (Ship::echo_us).
    int64_t echo_us = 0;
  };

  Record* FindSession(uint64_t session);
  Ship NewShip() const;
  bool OlderThanTail(SequenceNumber seq) const;
  void TrimTail();  // drops the oldest batches past max_tail_bytes (one always stays)
  const Record* FindSession(uint64_t session) const;
  std::string CheckHistory(const Hello& hello) const;
  bool IsMember(const std::string& id) const;
  bool LostWritesOf(const Hello& hello) const;
  void MarkNeedsSnapshot(Record& rec, const std::string& why);
  int64_t WriteTimeOf(const Record& rec, SequenceNumber seq) const;
  bool MembershipDue(const Record& rec, bool heartbeat) const;
  bool IsVoter(const std::string& id) const;
  // After the membership changed: the voters other than this node, and whether any member
  // is a learner (kept so that the checks made on every write and pump allocate nothing).
  void NoteMembership();

  LeaderOptions options_;
  engine::Engine* engine_;
  NodeState state_;
  Clock* clock_;
  SequenceNumber latest_;
  uint64_t next_session_ = 1;
  bool echo_ = true;
  std::map<std::string, Record> followers_;  // by follower id
  std::vector<std::string> voter_ids_;        // NoteMembership
  bool has_learners_ = false;
  std::deque<ShippedBatch> tail_;            // recent batches, contiguous, ascending
  std::deque<uint64_t> tail_end_bytes_;      // for each tail_ entry: written_bytes_ at its end
  uint64_t tail_bytes_ = 0;
  uint64_t written_bytes_ = 0;               // batch bytes written since the leader started
};

}  // namespace walship::replication
