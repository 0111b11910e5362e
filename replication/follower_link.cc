#include "replication/follower_link.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace walship::replication {
namespace {

size_t BatchBytes(const Ship& ship) {
  size_t bytes = 0;
  for (const ShippedBatch& b : ship.batches) bytes += b.batch.data.size();
  return bytes;
}

}  // namespace

FollowerLink::FollowerLink(Follower& follower, FollowerLinkOptions options, std::string leader_id)
    : follower_(follower),
      options_(options),
      leader_id_(std::move(leader_id)),
      backoff_ms_(options.reconnect_min_ms) {}

void FollowerLink::Log(LinkOutbox* out, LogLevel level, std::string text) {
  out->logs.emplace_back(level, std::move(text));
}

void FollowerLink::Start(int64_t now_us, LinkOutbox* out) {
  next_fsync_us_ = now_us + int64_t{options_.fsync_interval_ms} * 1000;
  if (follower_.Status().phase == FollowerPhase::kNeedsSnapshot) {
    // Told so before it stopped: asking a leader again would change nothing.
    stopped_ = true;
    CheckNeedsSnapshot(out);
    return;
  }
  Connect(now_us, out);
}

void FollowerLink::Connect(int64_t now_us, LinkOutbox* out) {
  reconnect_at_us_ = kNever;
  if (stopped_) return;
  if (apply_out_) {
    // The hello names our position, which is only settled once the apply handed out ends.
    connect_after_apply_ = true;
    return;
  }
  ++generation_;
  pending_fresh_.clear();  // of a stream that is gone
  connecting_ = true;
  connect_deadline_us_ = now_us + int64_t{options_.connect_timeout_ms} * 1000;
  out->connect = LinkOutbox::Connect{generation_, leader_id_, follower_.MakeHello()};
}

void FollowerLink::Drop(LinkOutbox* out) {
  ++generation_;  // whatever comes on the old connection is ignored
  pending_fresh_.clear();
  connecting_ = false;
  connect_deadline_us_ = kNever;
  handshake_done_ = false;
  queue_.clear();  // the transport forgets them; the leader resends after the handshake
  held_.clear();
  held_until_us_ = kNever;
  awaiting_sync_.clear();
  follower_.OnDisconnect();
  out->drop = true;
}

void FollowerLink::ScheduleReconnect(int64_t now_us, LinkOutbox* out) {
  if (stopped_) return;
  uint32_t delay = backoff_ms_;
  backoff_ms_ = std::min(backoff_ms_ * 2, options_.reconnect_max_ms);
  reconnect_at_us_ = now_us + int64_t{delay} * 1000;
  Log(out, LogLevel::kInfo,
      absl::StrCat("reconnecting to leader '", leader_id_, "' in ", delay, " ms"));
}

void FollowerLink::OnHelloReply(uint64_t generation, const HelloReply& reply, int64_t now_us,
                                LinkOutbox* out) {
  if (generation != generation_ || !connecting_) return;
  connecting_ = false;
  connect_deadline_us_ = kNever;
  absl::Status s = follower_.OnHelloReply(reply);
  if (s.ok()) {
    Log(out, LogLevel::kInfo,
        absl::StrCat("streaming from leader '", leader_id_, "' (epoch ", reply.epoch,
                     "); leader at ", reply.leader_latest));
    // The pause grows on: only an apply that works shows the follower can take messages.
    if (apply_failures_ == 0) backoff_ms_ = options_.reconnect_min_ms;
    last_contact_us_ = now_us;
    next_watch_us_ =
        now_us + std::max<int64_t>(1, int64_t{options_.heartbeat_timeout_ms} * 1000 / 4);
    handshake_done_ = true;
    Drain(now_us, out);  // pushes that overtook the reply
    return;
  }
  Drop(out);
  if (absl::IsFailedPrecondition(s)) {
    stopped_ = true;
    CheckNeedsSnapshot(out);
    return;
  }
  if (options_.search_leader && reply.leader_hint == leader_id_) {
    // It names itself: it stands for leader and may lead at once. Asked again soon.
    backoff_ms_ = options_.reconnect_min_ms;
    ScheduleReconnect(now_us, out);
    return;
  }
  if (!reply.leader_hint.empty() && reply.leader_hint != leader_id_ &&
      reply.leader_hint != options_.node_id) {
    // It does not lead, and names who does (a handover moved leadership): follow that one.
    Log(out, LogLevel::kInfo,
        absl::StrCat("'", leader_id_, "' does not lead; following '", reply.leader_hint,
                     "', which it names as leader"));
    leader_id_ = reply.leader_hint;
    backoff_ms_ = options_.reconnect_min_ms;
    ScheduleReconnect(now_us, out);
    return;
  }
  Log(out, LogLevel::kError,
      absl::StrCat("leader '", leader_id_, "' refused this follower: ", s.message()));
  TryNextMember(out);
  ScheduleReconnect(now_us, out);
}

void FollowerLink::OnConnectionLost(uint64_t generation, const std::string& why, int64_t now_us,
                                    LinkOutbox* out) {
  if (generation != generation_) return;
  bool streamed = handshake_done_;
  Log(out, LogLevel::kWarn,
      absl::StrCat(streamed ? "lost the connection to leader '" : "cannot reach leader '",
                   leader_id_, "': ", why));
  Drop(out);
  if (!streamed) TryNextMember(out);
  ScheduleReconnect(now_us, out);
}

void FollowerLink::TryNextMember(LinkOutbox* out) {
  if (!options_.search_leader) return;
  std::vector<std::string> ids;
  for (const Member& m : follower_.membership().members) {
    if (m.id != options_.node_id) ids.push_back(m.id);
  }
  if (ids.empty()) return;
  auto next = std::upper_bound(ids.begin(), ids.end(), leader_id_);
  std::string id = next == ids.end() ? ids.front() : *next;
  if (id == leader_id_) return;
  Log(out, LogLevel::kInfo, absl::StrCat("looking for the leader at '", id, "'"));
  leader_id_ = std::move(id);
}

void FollowerLink::Follow(const std::string& leader_id, const std::string& why, int64_t now_us,
                          LinkOutbox* out) {
  if (leader_id == options_.node_id || stopped_) return;
  if (leader_id == leader_id_ && (handshake_done_ || connecting_)) return;
  // A stream from another leader is from one this node no longer heard: dropped.
  Log(out, LogLevel::kInfo, absl::StrCat("following '", leader_id, "', ", why));
  leader_id_ = leader_id;
  Drop(out);
  backoff_ms_ = options_.reconnect_min_ms;
  Connect(now_us, out);
}

bool FollowerLink::OnPush(uint64_t generation, uint64_t push, Ship ship, int64_t now_us,
                          LinkOutbox* out, std::string* why) {
  if (generation != generation_) {
    *why = "push on a connection this follower has dropped";
    return false;
  }
  if (queue_.size() >= options_.max_queued_pushes) {
    *why = "follower apply queue full; the leader exceeds its window";
    return false;
  }
  last_contact_us_ = now_us;
  queue_.push_back(Queued{push, std::move(ship)});
  Drain(now_us, out);
  return true;
}

// Applies queued pushes in order. The leader's first push can overtake the hello reply, so
// pushes wait for the handshake.
void FollowerLink::Drain(int64_t now_us, LinkOutbox* out) {
  while (handshake_done_ && !apply_out_ && !queue_.empty()) {
    Queued& front = queue_.front();
    if (!follower_.syncs_every_apply() && BatchBytes(front.ship) <= options_.inline_apply_bytes) {
      engine::WriteOptions wo;
      wo.no_slowdown = true;
      absl::StatusOr<Ack> r = follower_.OnShip(front.ship, wo);
      if (r.ok()) {
        apply_failures_ = 0;
        Queued done = std::move(front);
        queue_.pop_front();
        NoteFresh(*r, done.ship.leader_latest, done.ship.echo_us, now_us);
        Answer(done.push, std::move(*r), done.ship.max_ack_delay_us, done.ship.flush, now_us, out);
        CheckNeedsSnapshot(out);
        continue;
      }
      if (!absl::IsResourceExhausted(r.status())) {
        uint64_t push = front.push;
        queue_.pop_front();
        ApplyFailed(push, r.status(), now_us, out);
        return;
      }
      // It would stall: handed out, later messages stay queued behind it.
    }
    apply_out_ = true;
    apply_out_push_ = front.push;
    apply_out_generation_ = generation_;
    apply_out_max_delay_us_ = front.ship.max_ack_delay_us;
    apply_out_flush_ = front.ship.flush;
    apply_out_leader_latest_ = front.ship.leader_latest;
    apply_out_echo_us_ = front.ship.echo_us;
    out->apply = LinkOutbox::Apply{front.push, std::move(front.ship)};
    queue_.pop_front();
    return;
  }
}

void FollowerLink::OnApplied(uint64_t push, absl::StatusOr<Ack> result, int64_t now_us,
                             LinkOutbox* out) {
  if (!apply_out_ || push != apply_out_push_) return;
  apply_out_ = false;
  if (connect_after_apply_) {
    connect_after_apply_ = false;
    Connect(now_us, out);  // a new generation: this apply's ack goes nowhere
  }
  if (apply_out_generation_ != generation_) {
    // Its connection is gone: the ack goes nowhere and must not be held among the new
    // connection's.
  } else if (result.ok()) {
    apply_failures_ = 0;
    NoteFresh(*result, apply_out_leader_latest_, apply_out_echo_us_, now_us);
    Answer(push, std::move(*result), apply_out_max_delay_us_, apply_out_flush_, now_us, out);
  } else {
    ApplyFailed(push, result.status(), now_us, out);
    return;
  }
  CheckNeedsSnapshot(out);
  Drain(now_us, out);
}

// A message of the stream, saying the leader's log ended at `leader_latest` at some moment
// after `echo_us` (this node's clock), has been applied: once this node has applied that far,
// it was caught up with its leader as of echo_us. A message that does not bring it that far
// (the leader had more than one message holds) counts once later ones have.
void FollowerLink::NoteFresh(const Ack& ack, SequenceNumber leader_latest, int64_t echo_us,
                             int64_t now_us) {
  if (ack.outcome != AckOutcome::kOk) return;
  if (echo_us > 0 && echo_us <= now_us) {
    if (leader_latest <= ack.applied) {
      caught_up_us_ = std::max(caught_up_us_, echo_us);
    } else if (pending_fresh_.size() < kMaxPendingFresh) {
      pending_fresh_.emplace_back(leader_latest, echo_us);
    } else {
      // Merged into the last one: reaching the later end is then needed for the older time.
      pending_fresh_.back().first = std::max(pending_fresh_.back().first, leader_latest);
    }
  }
  while (!pending_fresh_.empty() && pending_fresh_.front().first <= ack.applied) {
    caught_up_us_ = std::max(caught_up_us_, pending_fresh_.front().second);
    pending_fresh_.pop_front();
  }
}

// Sends an ack, or holds it up to `max_delay_us` so that one later ack answers several
// messages. Held acks all go out with the first ack that cannot wait (the leader asked for it
// promptly, or it is not OK), when max_held_acks are held, or when the delay expires. The
// delay comes from the leader's message: it is capped at a quarter of our heartbeat timeout,
// so that a leader asking for more cannot keep messages in flight, and so its heartbeats
// away, until we time out. A message that asks for a flush is answered once the WAL is
// fsynced past it: the fsync starts at once, and acks arriving while one runs wait for the
// next, which covers them all (one fsync for a group, as PostgreSQL's walreceiver does).
void FollowerLink::Answer(uint64_t push, Ack ack, uint32_t max_delay_us, bool flush, int64_t now_us,
                          LinkOutbox* out) {
  ack.sent_us = now_us;  // at or before it leaves: the leader echoes it (Ship::echo_us)
  if (flush && ack.outcome == AckOutcome::kOk && ack.durable < ack.applied) {
    awaiting_sync_.push_back(Held{push, std::move(ack)});
    RequestFsync(out);
    return;
  }
  uint64_t delay_us =
      std::min<uint64_t>(max_delay_us, uint64_t{options_.heartbeat_timeout_ms} * 1000 / 4);
  if (ack.outcome == AckOutcome::kOk && delay_us > 0 && held_.size() + 1 < options_.max_held_acks) {
    if (held_.empty()) held_until_us_ = now_us + static_cast<int64_t>(delay_us);
    held_.push_back(Held{push, std::move(ack)});
    return;
  }
  ReleaseHeld(out);
  out->answers.push_back(LinkOutbox::Answer{push, std::move(ack)});
}

void FollowerLink::ReleaseHeld(LinkOutbox* out) {
  for (Held& h : held_) out->answers.push_back(LinkOutbox::Answer{h.push, std::move(h.ack)});
  held_.clear();
  held_until_us_ = kNever;
}

// This follower could not apply a message (a storage error: RocksDB refuses writes). It
// stops taking messages and reconnects after a pause that doubles with each failure in a
// row, so that the leader does not resend and see it fail in a tight loop.
void FollowerLink::ApplyFailed(uint64_t push, const absl::Status& why, int64_t now_us,
                               LinkOutbox* out) {
  ReleaseHeld(out);  // earlier messages' acks go first
  out->rejects.push_back(LinkOutbox::Reject{push, why.ToString()});
  ++apply_failures_;
  backoff_ms_ = static_cast<uint32_t>(std::min<uint64_t>(
      uint64_t{options_.reconnect_min_ms} << std::min<uint32_t>(apply_failures_, 20),
      options_.reconnect_max_ms));
  Log(out, LogLevel::kError,
      absl::StrCat("cannot apply what leader '", leader_id_, "' sent (", apply_failures_,
                   " failures in a row): ", why.ToString()));
  Drop(out);
  ScheduleReconnect(now_us, out);
}

void FollowerLink::RequestFsync(LinkOutbox* out) {
  if (fsync_out_) {
    fsync_again_ = true;  // once this one is done: it may have begun before the last apply
    return;
  }
  fsync_out_ = true;
  fsync_again_ = false;
  out->fsync = follower_.Status().applied;
}

void FollowerLink::OnSynced(SequenceNumber seq, const absl::Status& status, LinkOutbox* out) {
  fsync_out_ = false;
  if (!status.ok()) {
    Log(out, LogLevel::kError, absl::StrCat("WAL fsync failed: ", status.ToString()));
    // The acks waiting for it go as they are (not durable): the leader asks again.
    for (Held& h : awaiting_sync_)
      out->answers.push_back(LinkOutbox::Answer{h.push, std::move(h.ack)});
    awaiting_sync_.clear();
    fsync_again_ = false;
    return;
  }
  synced_ = std::max(synced_, seq);
  follower_.MarkDurable(seq);
  std::vector<Held> still;
  for (Held& h : awaiting_sync_) {
    if (h.ack.applied <= synced_) {
      h.ack.durable = std::max(h.ack.durable, synced_);
      out->answers.push_back(LinkOutbox::Answer{h.push, std::move(h.ack)});
    } else {
      still.push_back(std::move(h));
    }
  }
  awaiting_sync_ = std::move(still);
  if (fsync_again_ || !awaiting_sync_.empty()) {
    fsync_again_ = false;
    if (follower_.Status().applied > synced_) RequestFsync(out);
  }
}

// The leader said it can no longer serve us: stop replicating, loudly (once).
void FollowerLink::CheckNeedsSnapshot(LinkOutbox* out) {
  FollowerStatus st = follower_.Status();
  if (st.phase != FollowerPhase::kNeedsSnapshot || needs_snapshot_logged_) return;
  needs_snapshot_logged_ = true;
  stopped_ = true;
  reconnect_at_us_ = kNever;
  Log(out, LogLevel::kError,
      absl::StrCat("NEEDS SNAPSHOT: leader '", leader_id_, "' cannot serve this follower: ",
                   st.message, ". Replication stopped at seq ", st.applied,
                   "; re-seed this node from a checkpoint (it does so by itself unless reseed = "
                   "\"operator\")."));
}

void FollowerLink::Tick(int64_t now_us, uint64_t bytes_received, LinkOutbox* out) {
  // Silence is only silence while the leader could send: bytes of a large message still
  // arriving, or messages waiting for our apply (the leader's window is full until we ack
  // them), are no sign of a dead leader. (An fsync that hangs past the time-out is no sign of
  // life either: the connection is made again, and the leader asks for the flush again.)
  // Only while streaming from it: the answer of a node that does not lead, or an apply that
  // outlives a lost connection, says nothing of the leader, and a voter that took them for
  // its leader's life would refuse votes with its leader dead.
  bool moved = bytes_received != watched_bytes_;
  watched_bytes_ = bytes_received;
  if (handshake_done_ && (moved || apply_out_ || !queue_.empty())) {
    last_contact_us_ = std::max(last_contact_us_, now_us);
  }
  // It looks four times per time-out, so that bytes still arriving are seen.
  next_watch_us_ = now_us + std::max<int64_t>(1, int64_t{options_.heartbeat_timeout_ms} * 1000 / 4);
  if (handshake_done_ &&
      now_us - last_contact_us_ > int64_t{options_.heartbeat_timeout_ms} * 1000) {
    Log(out, LogLevel::kWarn,
        absl::StrCat("no message from leader '", leader_id_, "' for ",
                     options_.heartbeat_timeout_ms, " ms; reconnecting"));
    Drop(out);
    TryNextMember(out);  // with search_leader: another member names the leader
    ScheduleReconnect(now_us, out);
  }
  if (connecting_ && now_us >= connect_deadline_us_) {
    Log(out, LogLevel::kWarn,
        absl::StrCat("cannot reach leader '", leader_id_, "': no answer within ",
                     options_.connect_timeout_ms, " ms"));
    Drop(out);
    TryNextMember(out);
    ScheduleReconnect(now_us, out);
  }
  if (now_us >= held_until_us_) ReleaseHeld(out);
  if (now_us >= reconnect_at_us_) Connect(now_us, out);
  if (now_us >= next_fsync_us_) {
    next_fsync_us_ = now_us + int64_t{options_.fsync_interval_ms} * 1000;
    if (!fsync_out_ && follower_.Status().applied > synced_) RequestFsync(out);
  }
}

int64_t FollowerLink::NextWakeUp() const {
  int64_t at = std::min({reconnect_at_us_, held_until_us_, next_fsync_us_});
  if (connecting_) at = std::min(at, connect_deadline_us_);
  if (handshake_done_) at = std::min(at, next_watch_us_);
  return at;
}

}  // namespace walship::replication
