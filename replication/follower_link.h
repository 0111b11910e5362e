// The follower's side of a stream, as policy: when to connect and reconnect (with backoff),
// when the leader counts as silent, which pushed messages to apply and where (on the caller's
// thread when small, else elsewhere), when to answer each with its ack or hold the ack so one
// answers several, when to fsync the WAL, and when to stop because the leader can no longer
// serve this follower.
//
// Event in, actions out, as the Shipper on the leader: the transport reports what happened
// (connected and answered, a push, an apply done, a lost connection) with monotonic times
// handed in, and carries out the LinkOutbox it gets back; Tick runs the timers by
// NextWakeUp. The link calls the Follower (which applies and persists) itself for small
// applies; large ones come out as actions so the transport can run them on a worker.
//
// Thread safety: none; one thread at a time. (Applies handed out run elsewhere and touch
// only the Follower, which is thread-safe.)
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/follower.h"
#include "replication/messages.h"
#include "replication/shipper.h"

namespace walship::replication {

struct FollowerLinkOptions {
  std::string node_id;  // this node
  // With nothing from the leader for this long (no message, no bytes of one arriving, no
  // message waiting for our apply) the connection is dropped and made again.
  uint32_t heartbeat_timeout_ms = 2000;
  // A connection and handshake that take longer than this fail.
  uint32_t connect_timeout_ms = 2000;
  // Pause before reconnecting: doubles from min to max with each failure in a row.
  uint32_t reconnect_min_ms = 50;
  uint32_t reconnect_max_ms = 2000;
  // The WAL is fsynced this often when something was applied since (durable acks), and at
  // once for a message that asks for a flush (Ship::flush).
  uint32_t fsync_interval_ms = 1000;
  // Pushes queued for apply; a leader keeps its window in flight, so more means it ignores
  // flow control and the push is refused.
  size_t max_queued_pushes = 64;
  // Acks held at once (see OnApplied).
  size_t max_held_acks = 16;
  // Applies of up to this many batch bytes run on the caller's thread; larger ones, any that
  // would stall, and every one that waits for an fsync (FollowerOptions::fsync_apply) are
  // handed out: the caller's thread answers heartbeats, which must not wait for a disk.
  size_t inline_apply_bytes = 256 << 10;
  // When the node it follows cannot be reached (or it knows of none), try the cluster's
  // other members in turn: one that leads accepts, one that follows names its leader. On
  // with automatic failover, where any voter may lead next.
  bool search_leader = false;
};

enum class LogLevel { kInfo, kWarn, kError };

struct LinkOutbox {
  // Open a connection to the leader and subscribe with `hello`; report the result with
  // `generation`.
  struct Connect {
    uint64_t generation = 0;
    std::string leader_id;  // whom to connect to
    Hello hello;
  };
  std::optional<Connect> connect;
  // Close the current connection. The transport forgets every push it has not answered; the
  // leader resends them after the next handshake.
  bool drop = false;
  // Apply `ship` elsewhere (Follower::OnShip without no_slowdown) and report OnApplied.
  struct Apply {
    uint64_t push = 0;
    Ship ship;
  };
  std::optional<Apply> apply;
  struct Answer {
    uint64_t push = 0;
    Ack ack;
  };
  std::vector<Answer> answers;  // in any order (each answers its own push)
  struct Reject {
    uint64_t push = 0;
    std::string why;
  };
  std::vector<Reject> rejects;
  // Fsync the WAL, then report OnSynced(seq).
  std::optional<SequenceNumber> fsync;
  std::vector<std::pair<LogLevel, std::string>> logs;
};

class FollowerLink {
 public:
  // `follower` must outlive the link. `leader_id` names the leader in logs.
  FollowerLink(Follower& follower, FollowerLinkOptions options, std::string leader_id);

  // Starts: connects, unless this follower needs a snapshot (then it only says so).
  void Start(int64_t now_us, LinkOutbox* out);

  // The connection of `generation` is up and the leader answered the hello.
  void OnHelloReply(uint64_t generation, const HelloReply& reply, int64_t now_us,
                    LinkOutbox* out);
  // The connection of `generation` failed (before or after the handshake).
  void OnConnectionLost(uint64_t generation, const std::string& why, int64_t now_us,
                        LinkOutbox* out);

  // A message pushed by the leader on `generation`. Returns false (refuse it: the push
  // fails) for a dropped connection or a full queue, with why; else it is queued and
  // answered later by an Answer or Reject of `push`.
  bool OnPush(uint64_t generation, uint64_t push, Ship ship, int64_t now_us, LinkOutbox* out,
              std::string* why);

  // An Apply handed out is done.
  void OnApplied(uint64_t push, absl::StatusOr<Ack> result, int64_t now_us, LinkOutbox* out);

  // A fsync handed out is done.
  void OnSynced(SequenceNumber seq, const absl::Status& status, LinkOutbox* out);

  // Runs what is due by now_us. `bytes_received` is the transport's count of bytes read from
  // the leader so far: bytes of a large message still arriving show the leader is alive.
  void Tick(int64_t now_us, uint64_t bytes_received, LinkOutbox* out);

  // When Tick must run next; kNever when nothing waits.
  int64_t NextWakeUp() const;

  // Follows `leader_id` from now on (this node voted for it, so it may lead next, or heard it
  // lead a later epoch than the stream's: `why` says which, for the log): a stream from
  // another leader is dropped, and the link connects there at once.
  void Follow(const std::string& leader_id, const std::string& why, int64_t now_us,
              LinkOutbox* out);
  // The last sign of life from the leader streamed from (monotonic µs; 0: none yet).
  int64_t last_contact_us() const { return last_contact_us_; }
  // The latest moment (monotonic µs, the clock of the `now_us` handed in; 0: none) as of which
  // this follower is known to hold everything its leader had: it has applied up to where a
  // leader's message said the leader's log ended, and that message was sent after the leader
  // had this node's ack stamped with that moment (Ship::echo_us). Neither a wall clock nor
  // the time a message spent in flight or queued can make it look later than it is.
  // now - caught_up_us() bounds this node's staleness (replication/reads.h).
  int64_t caught_up_us() const { return caught_up_us_; }

  uint64_t generation() const { return generation_; }
  // The node this follower follows (or tries to): the config's or saved leader at first, then
  // whichever node a refusing peer names as leader.
  const std::string& leader_id() const { return leader_id_; }
  bool streaming() const { return handshake_done_; }

 private:
  struct Queued {
    uint64_t push = 0;
    Ship ship;
  };
  struct Held {
    uint64_t push = 0;
    Ack ack;
  };

  void Connect(int64_t now_us, LinkOutbox* out);
  void Drop(LinkOutbox* out);
  void ScheduleReconnect(int64_t now_us, LinkOutbox* out);
  // search_leader: the member after leader_id_ (in id order, this node left out).
  void TryNextMember(LinkOutbox* out);
  void Drain(int64_t now_us, LinkOutbox* out);
  void Answer(uint64_t push, Ack ack, uint32_t max_delay_us, bool flush, int64_t now_us,
              LinkOutbox* out);
  void RequestFsync(LinkOutbox* out);
  void ReleaseHeld(LinkOutbox* out);
  void ApplyFailed(uint64_t push, const absl::Status& why, int64_t now_us, LinkOutbox* out);
  void CheckNeedsSnapshot(LinkOutbox* out);
  void NoteFresh(const Ack& ack, SequenceNumber leader_latest, int64_t echo_us, int64_t now_us);
  static void Log(LinkOutbox* out, LogLevel level, std::string text);

  Follower& follower_;
  const FollowerLinkOptions options_;
  std::string leader_id_;

  uint64_t generation_ = 0;
  bool connecting_ = false;         // a Connect is out, no answer yet
  int64_t connect_deadline_us_ = kNever;
  bool handshake_done_ = false;     // the current connection's hello was accepted
  int64_t reconnect_at_us_ = kNever;
  bool connect_after_apply_ = false;  // connect once the apply handed out ends
  uint32_t backoff_ms_;
  uint32_t apply_failures_ = 0;     // in a row
  bool stopped_ = false;            // needs a snapshot: never connects again

  int64_t last_contact_us_ = 0;     // the last sign of life from the leader
  uint64_t watched_bytes_ = 0;      // bytes_received at the last Tick
  int64_t next_watch_us_ = kNever;  // the watchdog's next look

  std::deque<Queued> queue_;
  bool apply_out_ = false;          // an Apply is handed out
  uint64_t apply_out_push_ = 0;
  uint64_t apply_out_generation_ = 0;
  uint32_t apply_out_max_delay_us_ = 0;
  bool apply_out_flush_ = false;
  SequenceNumber apply_out_leader_latest_ = 0;
  int64_t apply_out_echo_us_ = 0;
  std::vector<Held> held_;
  int64_t held_until_us_ = kNever;

  int64_t next_fsync_us_ = kNever;
  bool fsync_out_ = false;
  bool fsync_again_ = false;      // fsync again once the one out is done
  std::vector<Held> awaiting_sync_;  // acks of messages that asked for a flush
  SequenceNumber synced_ = 0;
  bool needs_snapshot_logged_ = false;

  int64_t caught_up_us_ = 0;  // caught_up_us()
  // Applied messages whose leader_latest this node has not reached yet, with their echo_us.
  static constexpr size_t kMaxPendingFresh = 64;
  std::deque<std::pair<SequenceNumber, int64_t>> pending_fresh_;
};

}  // namespace walship::replication
