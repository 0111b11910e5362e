#include "replication/follower.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace walship::replication {

const char* FollowerPhaseName(FollowerPhase phase) {
  switch (phase) {
    case FollowerPhase::kConnecting: return "connecting";
    case FollowerPhase::kStreaming: return "streaming";
    case FollowerPhase::kNeedsSnapshot: return "needs_snapshot";
  }
  return "?";
}

Follower::Follower(FollowerOptions options, engine::Engine* engine, NodeState state,
                   Clock* clock)
    : options_(std::move(options)), engine_(engine), clock_(clock), state_(std::move(state)) {
  status_.epoch = state_.epoch;
  status_.applied = engine_->LatestSequence();
  received_ = status_.applied;
  if (!state_.needs_snapshot.empty()) {  // told so before a restart: it stays so
    status_.phase = FollowerPhase::kNeedsSnapshot;
    status_.message = state_.needs_snapshot;
  }
}

std::optional<NodeState> Follower::MarkNeedsSnapshot(const std::string& why) {
  status_.phase = FollowerPhase::kNeedsSnapshot;
  status_.message = why.empty() ? "the leader cannot serve this follower's position" : why;
  if (!state_.needs_snapshot.empty()) return std::nullopt;  // persisted already
  NodeState next = state_;
  next.needs_snapshot = status_.message;
  return next;
}

void Follower::PersistNeedsSnapshot(NodeState next) {
  // Persisted, so that a restart (or a later leader accepting the hello) cannot make the
  // stale data readable again. apply_mu_ is held, so nothing else changes state_ meanwhile.
  absl::Status saved = SaveNodeState(options_.state_path, next);
  absl::MutexLock lock(&mu_);
  KeepNeedsSnapshot(saved, std::move(next));
}

void Follower::KeepNeedsSnapshot(const absl::Status& saved, NodeState next) {
  if (saved.ok()) {
    state_ = std::move(next);
  } else {  // still refused until a restart; status says the verdict was not kept
    status_.message = absl::StrCat(status_.message, " (not saved: ", saved.message(), ")");
  }
}

Hello Follower::MakeHello() const {
  // No apply in progress: last_applied is then the engine's latest at a batch boundary.
  absl::MutexLock apply_lock(&apply_mu_);
  absl::MutexLock lock(&mu_);
  Hello hello;
  hello.cluster = options_.cluster;
  hello.database_id = state_.database_id;
  hello.follower_id = options_.node_id;
  hello.epoch = state_.HighestEpoch();  // a leader below it is stale
  hello.last_applied = engine_->LatestSequence();
  if (const EpochEntry* e = state_.EntryOf(hello.last_applied); e != nullptr) {
    hello.last_applied_epoch = e->epoch;
    hello.last_applied_leader = e->leader;
  }
  return hello;
}

absl::Status Follower::OnHelloReply(const HelloReply& reply) {
  absl::MutexLock apply_lock(&apply_mu_);
  absl::MutexLock lock(&mu_);
  // A node that refuses does not lead: the position it names is not the leader's (the last
  // one known stays, for status and max_failover_lag).
  if (reply.outcome != HelloOutcome::kRefused) status_.leader_latest = reply.leader_latest;
  status_.last_contact_us = clock_->NowMicros();
  if (reply.version != kPeerProtocolVersion) {
    status_.phase = FollowerPhase::kConnecting;
    status_.message = absl::StrCat("the leader speaks peer protocol version ", reply.version,
                                   "; this follower speaks version ", kPeerProtocolVersion,
                                   ": run one walship version in a cluster");
    return absl::PermissionDeniedError(status_.message);
  }
  if (status_.phase == FollowerPhase::kNeedsSnapshot) {
    // Whatever the leader says now, what this node holds was found unservable: it needs
    // re-seeding first.
    return absl::FailedPreconditionError(status_.message);
  }
  switch (reply.outcome) {
    case HelloOutcome::kNeedsSnapshot:
      verdict_leader_log_ = LeaderLog{reply.epoch, reply.history, reply.leader_latest};
      if (std::optional<NodeState> next = MarkNeedsSnapshot(reply.message); next.has_value()) {
        // Saved under mu_, on the loop thread, as adopting an epoch below: once per leader
        // change.
        // Saved before it is moved: in one call, the move could come first.
        absl::Status saved = SaveNodeState(options_.state_path, *next);
        KeepNeedsSnapshot(saved, std::move(*next));
      }
      return absl::FailedPreconditionError(status_.message);
    case HelloOutcome::kRefused:
      status_.phase = FollowerPhase::kConnecting;
      status_.message = reply.message;
      return absl::PermissionDeniedError(reply.message);
    case HelloOutcome::kAccepted: break;
  }
  // Pair checks: the leader accepted us, so what it sent must agree with what we hold.
  std::string why;
  if (reply.epoch < state_.HighestEpoch()) {
    why = absl::StrCat("leader is at epoch ", reply.epoch, ", older than epoch ",
                       state_.HighestEpoch(), ", which this follower has seen: it is stale");
  } else if (!state_.database_id.empty() && reply.database_id != state_.database_id) {
    why = absl::StrCat("leader holds database ", reply.database_id, ", we hold ",
                       state_.database_id);
  } else if (absl::Status s = ValidateHistory(reply.history); !s.ok()) {
    why = absl::StrCat("leader sent a bad epoch history: ", s.message());
  } else if (reply.history.empty() || reply.history.back().epoch != reply.epoch) {
    why = absl::StrCat("leader's epoch history does not end with its epoch ", reply.epoch);
  } else {
    // Two nodes must never lead the same epoch: should it happen (two nodes both started as
    // leader from the same state), say so rather than mix their histories.
    for (const EpochEntry& ours : state_.history) {
      for (const EpochEntry& theirs : reply.history) {
        if (ours.epoch == theirs.epoch && !ours.SameEpoch(theirs)) {
          why = absl::StrCat("epoch ", ours.epoch, " was begun by '", theirs.leader,
                             "' according to this leader and by '", ours.leader,
                             "' according to this follower: two nodes led the same epoch");
        }
      }
    }
  }
  if (!why.empty()) {
    status_.message = why;
    return absl::PermissionDeniedError(why);
  }
  NodeState next = state_;
  next.epoch = reply.epoch;
  next.database_id = reply.database_id;
  next.history = reply.history;
  next.role = "follower";
  if (!reply.history.back().leader.empty()) next.leader = reply.history.back().leader;
  if (next.epoch != state_.epoch || next.database_id != state_.database_id ||
      next.history != state_.history || next.role != state_.role ||
      next.leader != state_.leader) {
    if (absl::Status s = SaveNodeState(options_.state_path, next); !s.ok()) return s;
    state_ = std::move(next);
  }
  status_.epoch = state_.epoch;
  status_.phase = FollowerPhase::kStreaming;
  status_.message.clear();
  return absl::OkStatus();
}

Ack Follower::MakeAck(AckOutcome outcome, std::string message) {
  Ack ack;
  ack.epoch = state_.HighestEpoch();  // above the leader's: it is stale
  ack.outcome = outcome;
  ack.received = received_;
  ack.durable = status_.durable;
  ack.applied = status_.applied;
  ack.message = std::move(message);
  ack.membership_version = state_.membership.version;
  return ack;
}

absl::StatusOr<Ack> Follower::OnShip(const Ship& ship, const engine::WriteOptions& write) {
  absl::MutexLock apply_lock(&apply_mu_);
  std::vector<const ShippedBatch*> run;
  std::optional<Ack> refused;
  std::optional<NodeState> to_persist;
  std::optional<Membership> membership;
  {
    absl::MutexLock lock(&mu_);
    refused = Admit(ship, &run);
    to_persist = std::exchange(to_persist_, std::nullopt);
    membership = std::exchange(membership_to_save_, std::nullopt);
  }
  if (to_persist.has_value()) PersistNeedsSnapshot(std::move(*to_persist));
  if (membership.has_value()) SaveMembership(std::move(*membership));
  if (refused.has_value()) {
    absl::MutexLock lock(&mu_);
    refused->membership_version = state_.membership.version;
    return *refused;
  }
  // Outside mu_ (status stays answerable): only OnShip writes, and apply_mu_ is held.
  // Consecutive batches applied as one consume the same sequence numbers, and cost one write
  // (one WAL record, one system call) instead of one each. The leader's batch boundaries
  // stay in that record: each batch begins with its write-time record, where this node's
  // WAL cursor splits the record again once it leads (engine::WalCursor), so it serves any
  // follower's position, always the end of a leader batch, from its own WAL. Joining is the
  // one copy of the bytes on this path; the engine takes the joined batch by move.
  std::vector<const engine::Batch*> batches;
  batches.reserve(run.size());
  for (const ShippedBatch* b : run) batches.push_back(&b->batch);
  absl::StatusOr<engine::Batch> joined = engine::ConcatBatches(absl::MakeConstSpan(batches));
  engine::WriteOptions options = write;
  const bool sync = options.sync || options_.fsync_apply;
  options.sync = sync;
  absl::Status s = joined.status();
  size_t done = 0;
  uint64_t bytes = 0;
  if (joined.ok()) {
    bytes = joined->data.size();
    s = engine_->ApplyReplicated(std::move(*joined), options);
    if (s.ok()) done = run.size();
  }
  if (done > 0) KeepRecent(run);
  absl::MutexLock lock(&mu_);
  if (done > 0) {
    status_.applied = run[done - 1]->batch.last_seq();
    status_.bytes_applied += bytes;
    last_applied_time_us_ = run[done - 1]->leader_time_us;
  }
  if (s.ok() && sync) status_.durable = status_.applied;
  if (!joined.ok()) return MakeAck(AckOutcome::kFailed, std::string(s.message()));
  if (absl::IsResourceExhausted(s) && write.no_slowdown) return s;
  if (!s.ok()) {
    status_.message = absl::StrCat("apply failed: ", s.message());
    return absl::Status(s.code(), status_.message);
  }
  if (absl::StartsWith(status_.message, "apply failed: ")) status_.message.clear();
  return MakeAck(AckOutcome::kOk, "");
}

void Follower::KeepRecent(const std::vector<const ShippedBatch*>& applied) {
  if (options_.keep_recent_bytes == 0) return;
  for (const ShippedBatch* b : applied) {
    recent_bytes_ += b->batch.data.size();
    recent_.push_back(*b);
  }
  while (recent_bytes_ > options_.keep_recent_bytes && !recent_.empty()) {
    recent_bytes_ -= recent_.front().batch.data.size();
    recent_.pop_front();
  }
}

std::deque<ShippedBatch> Follower::TakeRecent() {
  absl::MutexLock apply_lock(&apply_mu_);
  recent_bytes_ = 0;
  return std::exchange(recent_, {});
}

std::optional<Ack> Follower::Admit(const Ship& ship, std::vector<const ShippedBatch*>* run) {
  if (status_.phase == FollowerPhase::kNeedsSnapshot) {
    return MakeAck(AckOutcome::kFailed, "follower needs a snapshot: " + status_.message);
  }
  if (ship.epoch < state_.HighestEpoch()) {  // a vote in a later epoch counts too
    return MakeAck(AckOutcome::kStale, absl::StrCat("message from epoch ", ship.epoch,
                                                    " refused: follower has seen epoch ",
                                                    state_.HighestEpoch()));
  }
  if (ship.epoch > state_.epoch || status_.phase != FollowerPhase::kStreaming) {
    return MakeAck(AckOutcome::kFailed,
                   absl::StrCat("message from epoch ", ship.epoch, " without a handshake "
                                "(follower at epoch ", state_.epoch, "); reconnect"));
  }
  status_.last_contact_us = clock_->NowMicros();
  status_.leader_latest = std::max(status_.leader_latest, ship.leader_latest);
  // The leader's membership is the cluster's: saved by OnShip, outside mu_, before the ack.
  if (ship.membership.has_value() && *ship.membership != state_.membership) {
    membership_to_save_ = ship.membership;
  }
  if (!ship.needs_snapshot.empty()) {
    to_persist_ = MarkNeedsSnapshot(ship.needs_snapshot);  // saved by OnShip, outside mu_
    return MakeAck(AckOutcome::kFailed, "follower needs a snapshot: " + ship.needs_snapshot);
  }
  SequenceNumber applied = engine_->LatestSequence();
  WALSHIP_CHECK(applied == status_.applied);  // nothing else writes a follower's database
  // Skip batches we already hold (duplicates, resends after a gap).
  size_t first = 0;
  while (first < ship.batches.size() && ship.batches[first].batch.next_seq() <= applied + 1) {
    ++first;
  }
  if (first == ship.batches.size()) return MakeAck(AckOutcome::kOk, "");
  const engine::Batch& head = ship.batches[first].batch;
  if (head.first_seq != applied + 1) {
    return MakeAck(AckOutcome::kGap,
                   absl::StrCat("batch starts at seq ", head.first_seq, " but the follower "
                                "has applied up to ", applied));
  }
  run->reserve(ship.batches.size() - first);
  for (size_t i = first; i < ship.batches.size(); ++i) {
    const engine::Batch& b = ship.batches[i].batch;
    if (!run->empty() && b.first_seq != run->back()->batch.next_seq()) {
      return MakeAck(AckOutcome::kFailed,
                     absl::StrCat("batches in one message are not contiguous: seq ",
                                  b.first_seq, " follows ", run->back()->batch.last_seq()));
    }
    run->push_back(&ship.batches[i]);
  }
  received_ = std::max(received_, run->back()->batch.last_seq());
  return std::nullopt;
}

void Follower::SaveMembership(Membership m) {
  NodeState next = state();
  next.membership = m;
  absl::Status s = ValidateMembership(m);
  if (s.ok()) s = SaveNodeState(options_.state_path, next);
  absl::MutexLock lock(&mu_);
  if (s.ok()) {
    state_.membership = std::move(m);
    membership_saves_.fetch_add(1, std::memory_order_release);
  } else {
    status_.message = absl::StrCat("cannot keep the membership (version ", m.version,
                                   ") the leader sent: ", s.message());
  }
}

absl::Status Follower::TakeVote(Epoch epoch, const std::string& candidate) {
  absl::MutexLock lock(&mu_);
  if (state_.vote_epoch == epoch && state_.voted_for == candidate) return absl::OkStatus();
  if (state_.HighestEpoch() >= epoch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "epoch ", epoch, " is not above epoch ", state_.HighestEpoch(), ", which this node "
        "has seen"));
  }
  state_.vote_epoch = epoch;
  state_.voted_for = candidate;
  return absl::OkStatus();
}

absl::Status Follower::SaveVote(Epoch epoch, const std::string& candidate) {
  absl::MutexLock apply(&apply_mu_);  // no other save of the state meanwhile
  NodeState next = state();
  if (next.vote_epoch != epoch || next.voted_for != candidate) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the vote in epoch ", epoch, " for '", candidate, "' is no longer this node's"));
  }
  return SaveNodeState(options_.state_path, next);
}

absl::StatusOr<NodeState> Follower::SaveElected(Epoch epoch) {
  absl::MutexLock apply(&apply_mu_);  // no apply and no other save meanwhile
  NodeState next = state();
  if (next.vote_epoch != epoch || next.voted_for != options_.node_id || next.epoch >= epoch ||
      (!next.history.empty() && next.history.back().epoch >= epoch)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this node no longer holds its own vote in epoch ", epoch, " alone (it has seen epoch ",
        next.HighestEpoch(), ")"));
  }
  BeginElectedEpoch(next, engine_->LatestSequence() + 1, options_.node_id, epoch);
  next.role = "leader";
  next.leader.clear();
  next.handover_to.clear();
  if (absl::Status s = SaveNodeState(options_.state_path, next); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  state_ = next;
  return next;
}

std::optional<Follower::LeaderLog> Follower::VerdictLeaderLog() const {
  absl::MutexLock lock(&mu_);
  return verdict_leader_log_;
}

Epoch Follower::HighestEpoch() const {
  absl::MutexLock lock(&mu_);
  return state_.HighestEpoch();
}

Membership Follower::membership() const {
  absl::MutexLock lock(&mu_);
  return state_.membership;
}

void Follower::MarkDurable(SequenceNumber seq) {
  absl::MutexLock lock(&mu_);
  status_.durable = std::max(status_.durable, std::min(seq, status_.applied));
}

void Follower::OnDisconnect() {
  absl::MutexLock lock(&mu_);
  if (status_.phase == FollowerPhase::kStreaming) status_.phase = FollowerPhase::kConnecting;
}

FollowerStatus Follower::Status() const {
  absl::MutexLock lock(&mu_);
  FollowerStatus s = status_;
  s.database_id = state_.database_id;
  s.lag_seq = s.leader_latest > s.applied ? s.leader_latest - s.applied : 0;
  s.lag_ms = 0;
  if (s.last_contact_us == 0) {
    s.lag_ms = -1;  // no word from a leader since start: how far behind is unknown
  } else if (s.lag_seq > 0) {
    s.lag_ms = last_applied_time_us_ > 0
                   ? std::max<int64_t>(0, (clock_->NowMicros() - last_applied_time_us_) / 1000)
                   : -1;  // behind, but nothing applied since start tells by how long
  }
  return s;
}

std::string Follower::ReadRefusal() const {
  absl::MutexLock lock(&mu_);
  if (status_.phase != FollowerPhase::kNeedsSnapshot) return "";
  return absl::StrCat("this follower needs a snapshot and refuses reads: its data stops at seq ",
                      status_.applied, " and the leader (at seq ", status_.leader_latest,
                      ") can no longer serve it (", status_.message,
                      "); re-seed it from a checkpoint, or read from another node");
}

ReadPosition Follower::ReadPositionAt(SequenceNumber applied, SequenceNumber token_seq) const {
  std::string refusal = ReadRefusal();
  absl::MutexLock lock(&mu_);
  ReadPosition p = PositionIn(state_, applied, token_seq);
  p.refusal = std::move(refusal);
  return p;
}

NodeState Follower::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

Epoch Follower::epoch() const {
  absl::MutexLock lock(&mu_);
  return state_.epoch;
}

}  // namespace walship::replication
