#include "rpc/leader_role.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "replication/clock.h"
#include "rpc/client_service.h"
#include "rpc/convert.h"
#include "rpc/coordinator.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {

using engine::SequenceNumber;
using replication::Ack;
using replication::Ship;

// A WAL read takes a window's worth of messages ahead, but no more than this per follower.
constexpr uint64_t kMaxWalReadBytes = 64ull << 20;
// A learner whose promotion could not be saved is promoted again after this long.
constexpr int64_t kPromoteAgainMs = 1000;

replication::LeaderOptions LeaderOptionsFor(const NodeServerOptions& o) {
  replication::LeaderOptions lo = o.leader;
  lo.cluster = o.cluster;
  lo.node_id = o.node_id;
  lo.read_wal_inline = false;  // RunWalRead reads it off the loop
  lo.ready_lag = o.ready_lag;
  lo.max_wal_read_bytes = std::min<uint64_t>(
      lo.max_ship_bytes * std::max<uint32_t>(1, o.max_inflight_ships), kMaxWalReadBytes);
  return lo;
}

replication::ShipperOptions ShipperOptionsFor(const NodeServerOptions& o) {
  replication::ShipperOptions so;
  so.max_inflight_ships = o.max_inflight_ships;
  so.ack_delay_us = o.ack_delay_us;
  so.max_ship_hold_us = o.max_ship_hold_us;
  so.min_ship_interval_us = o.min_ship_interval_us;
  so.heartbeat_interval_ms = o.heartbeat_interval_ms;
  return so;
}

}  // namespace

LeaderRole::LeaderRole(Node& node, replication::NodeState state, bool resume_handover,
                       std::deque<replication::ShippedBatch> recent,
                       replication::ElectedBy elected_by)
    : node_(node),
      leader_(LeaderOptionsFor(node.options()), &node.engine(), std::move(state),
              replication::RealClock()),
      shipper_(leader_, ShipperOptionsFor(node.options())),
      commit_wait_(node.options().commit),
      elected_by_(std::move(elected_by)),
      tasks_(*this) {
  coordinator_ = node.coordinator();
  if (node.options().failover && coordinator_ == nullptr) lease_.emplace(node.options().lease_ms);
  if (!recent.empty()) {
    size_t n = recent.size();
    uint64_t from = recent.front().batch.first_seq;
    size_t taken = leader_.SeedTail(std::move(recent));
    spdlog::info(
        "{} of the {} batches from seq {} this node applied last serve its followers "
        "from memory",
        taken, n, from);
  }
  heartbeats_ = std::make_unique<HeartbeatSender>(
      node, leader_.epoch(),
      [this](const std::string& member, int64_t sent_us, const replication::HeartbeatReply& r) {
        OnHeartbeatReply(member, sent_us, r);
      });
  if (resume_handover) {
    replication::TakeOver again;
    again.from = node.options().node_id;
    again.epoch = leader_.epoch();
    again.latest = leader_.latest();
    handover_.emplace(replication::Handover::Resumed(leader_.state().handover_to, again));
  }
}

LeaderRole::~LeaderRole() noexcept(false) {
  // Writes still waiting for their followers are in doubt: written here, not known to be
  // replicated as they asked. (No continuation of these promises touches this role.)
  std::vector<replication::Released> ended;
  commit_wait_.EndAll(&ended);
  for (const replication::Released& r : ended) {
    auto it = waits_.find(r.id);
    if (it == waits_.end()) continue;
    Waiter& w = it->second;
    std::string what = replication::Describe(w.need);
    w.done->fulfill(ReplicationOutcome{
        w.read ? absl::UnavailableError(absl::StrCat(
                     "this node stopped leading before its followers acknowledged seq ", w.seq,
                     " as ", what, "; read again from the leader"))
               : NotReplicatedError(absl::StrCat(
                     "written here at seq ", w.seq, ", but this node stopped leading before its "
                     "followers acknowledged it as ", what, ": whether it survives is in "
                     "doubt; read it back from the leader"))});
  }
  if (handover_done_.get() != nullptr) {
    handover_done_->fulfill(HandoverOutcome{absl::AbortedError("the node stopped"), "", 0});
  }
  if (coordinator_ != nullptr) coordinator_->ClearListener(listener_);
}

void LeaderRole::taskFailed(kj::Exception&& e) {
  spdlog::warn("leader task failed: {}", e.getDescription().cStr());
}

void LeaderRole::Start() {
  SchedulePump();  // heartbeats start from the first pump
  started_us_ = node_.PreciseNowUs();
  heartbeats_->Start();
  if (lease_.has_value()) {
    OnLeaseAck(node_.options().node_id, started_us_);  // a cluster of one voter holds it
    // The votes that elected it: it holds its lease from the start when they came lately.
    for (const std::string& voter : elected_by_.voters) {
      if (voter != node_.options().node_id) OnLeaseAck(voter, elected_by_.asked_us);
    }
    tasks_.add(LeaseLoop());
  }
  if (coordinator_ != nullptr) {
    listener_ = coordinator_->SetListener([this]() { CheckCoordinator(); });
    CheckCoordinator();
  }
  if (handover_.has_value()) {
    spdlog::warn("this node stopped while handing leadership to '{}'; asking it again whether "
                 "it took over (no writes meanwhile)", handover_->target());
    AskTakeOver();
  }
}

absl::Status LeaderRole::WriteRefusal() const {
  if (coordinator_ != nullptr && (stepping_down_ || !coordinator_->Holds(leader_.epoch()))) {
    return NotWritten(absl::UnavailableError(absl::StrCat(
        "node '", node_.options().node_id, "' leads epoch ", leader_.epoch(),
        stepping_down_ ? " but steps down"
                       : " but does not hold the leader key in etcd under a live lease",
        " (", coordinator_->Describe(), "): writes are refused until it does, or another node "
        "leads; ask any node for the leader")));
  }
  if (lease_.has_value() && (stepping_down_ || node_.PreciseNowUs() >= lease_until_us_)) {
    return NotWritten(absl::UnavailableError(absl::StrCat(
        "node '", node_.options().node_id, "' leads epoch ", leader_.epoch(),
        stepping_down_ ? " but steps down"
                       : " but has not heard from a majority of the voters within its lease",
        " (lease_ms = ", node_.options().lease_ms, "): writes are refused until it does, or "
        "another node leads; ask any node for the leader")));
  }
  if (!handover_.has_value()) return absl::OkStatus();
  absl::Status s = handover_->WriteRefusal();
  if (!s.ok()) s = NotWritten(std::move(s));
  std::string address = node_.AddressOf(handover_->target());
  if (!address.empty()) s.SetPayload(kLeaderHintUrl, absl::Cord(address));
  return s;
}

void LeaderRole::OnWritten(engine::Batch batch, int64_t write_time_us) {
  commit_wait_.OnWritten(batch.last_seq(), node_.MonoNowUs());
  leader_.OnLocalWrite(std::move(batch), write_time_us);
  SchedulePump();
}

// ---- Waiting for followers ----
//
// Which acknowledgements release which writes, timeouts and the degraded state are
// CommitWait's decisions (replication/commit_wait.h); here its waits become promises.

absl::Status LeaderRole::CheckDurability(const replication::Durability& need) const {
  return replication::CommitWait::Check(need, leader_.voters());
}

kj::Promise<ReplicationOutcome> LeaderRole::AwaitReplicated(SequenceNumber seq,
                                                            const replication::Durability& need,
                                                            bool pinned) {
  return Wait(seq, need, pinned, false);
}

kj::Promise<absl::Status> LeaderRole::AwaitCommitted(SequenceNumber seq) {
  // Once the target was asked to take over it may lead already: what this node holds is no
  // longer all that was acknowledged, and a committed read here could miss a write the new
  // leader acknowledged before the read began. (Reads that began earlier wait on: nothing
  // was acknowledged elsewhere before them.)
  if (handover_.has_value() && handover_->phase() == replication::Handover::Phase::kAsked) {
    absl::Status s = absl::UnavailableError(
        absl::StrCat("committed reads are refused here: leadership is being handed over to '",
                     handover_->target(), "'; read there"));
    std::string address = node_.AddressOf(handover_->target());
    if (!address.empty()) s.SetPayload(kLeaderHintUrl, absl::Cord(address));
    return s;
  }
  return Wait(seq, commit_wait_.options().cluster, true, true)
      .then([](ReplicationOutcome o) { return o.status; });
}

kj::Promise<ReplicationOutcome> LeaderRole::Wait(SequenceNumber seq,
                                                 const replication::Durability& need,
                                                 bool pinned, bool read) {
  uint64_t id = next_wait_++;
  std::optional<replication::WaitOutcome> now =
      commit_wait_.Add(id, seq, need, pinned, leader_, node_.MonoNowUs());
  if (now.has_value()) {
    bool degraded = *now == replication::WaitOutcome::kDegraded;
    if (degraded) ++writes_degraded_;
    return ReplicationOutcome{absl::OkStatus(), degraded};
  }
  auto paf = kj::newPromiseAndFulfiller<ReplicationOutcome>();
  waits_.emplace(id, Waiter{seq, need, read, kj::mv(paf.fulfiller)});
  SchedulePump();  // the batches it waits for go at once, and its timeout is armed
  return kj::mv(paf.promise);
}

void LeaderRole::Release(std::vector<replication::Released> released, bool was_degraded) {
  const uint32_t timeout_ms = commit_wait_.options().timeout_ms;
  for (const replication::Released& r : released) {
    auto it = waits_.find(r.id);
    if (it == waits_.end()) continue;
    Waiter& w = it->second;
    ReplicationOutcome outcome;
    switch (r.outcome) {
      case replication::WaitOutcome::kReplicated: break;
      case replication::WaitOutcome::kDegraded:
        outcome.degraded = true;
        ++writes_degraded_;
        break;
      case replication::WaitOutcome::kTimedOut:
        if (w.read) {
          outcome.status = absl::UnavailableError(absl::StrCat(
              "the followers did not acknowledge seq ", w.seq, " as ",
              replication::Describe(w.need), " within ", timeout_ms,
              " ms; a committed read answers only once they have"));
        } else {
          ++writes_not_replicated_;
          outcome.status = NotReplicatedError(absl::StrCat(
              "written here at seq ", w.seq, ", but not acknowledged as ",
              replication::Describe(w.need), " within ", timeout_ms,
              " ms: it may be lost if this leader fails; read it back to learn its outcome"));
        }
        break;
    }
    w.done->fulfill(kj::mv(outcome));
    waits_.erase(it);
  }
  if (commit_wait_.degraded() && !was_degraded) {
    spdlog::warn("replication DEGRADED to async: no {} acknowledgement within {} ms; writes are "
                 "acknowledged after this node's own write until the followers are back",
                 replication::Describe(commit_wait_.options().cluster), timeout_ms);
  } else if (!commit_wait_.degraded() && was_degraded) {
    spdlog::warn("replication back to {}: the followers caught up",
                 replication::Describe(commit_wait_.options().cluster));
  }
}

void LeaderRole::FillStatus(schema::NodeStatus::Builder st) {
  st.setEpoch(leader_.epoch());
  if (lease_.has_value()) st.setFailover(DescribeLease());
  if (coordinator_ != nullptr) {
    st.setFailover(absl::StrCat(coordinator_->Describe(), held_key_ ? "; writes taken"
                                                                     : "; writes refused"));
  }
  st.setDatabaseId(leader_.state().database_id);
  st.setDegradedForMs(commit_wait_.degraded()
                          ? (node_.MonoNowUs() - commit_wait_.degraded_since_us()) / 1000
                          : -1);
  st.setWritesWaiting(static_cast<uint32_t>(waits_.size()));
  st.setWritesNotReplicated(writes_not_replicated_);
  st.setWritesDegraded(writes_degraded_);
  if (handover_.has_value()) st.setHandoverTo(handover_->target());
  st.setMembershipWaitingFor(leader_.MembershipWaitingFor());
  auto infos = leader_.Followers();
  auto list = st.initFollowers(infos.size());
  int64_t now = replication::RealClock()->NowMicros();
  for (size_t i = 0; i < infos.size(); ++i) {
    const auto& f = infos[i];
    list[i].setId(f.id);
    list[i].setState(replication::FollowerStateName(f.state));
    list[i].setSentSeq(f.sent);
    list[i].setReceivedSeq(f.received);
    list[i].setDurableSeq(f.durable);
    list[i].setAppliedSeq(f.applied);
    list[i].setLagSeq(f.lag_seq);
    list[i].setLagMs(f.lag_ms);
    list[i].setBytesShipped(f.bytes_shipped);
    list[i].setLastAckAgoMs(f.last_ack_us == 0 ? -1 : (now - f.last_ack_us) / 1000);
    list[i].setMessage(f.message);
    list[i].setVoter(f.voter);
    HeartbeatSender::PeerView beats = heartbeats_->View(f.id);
    list[i].setHeartbeatAgoMs(beats.heard_ago_ms);
    list[i].setHeartbeatPhi(beats.phi);
    // Cut off, stopped or overloaded: neither its heartbeats nor its stream answer. (A stream
    // alone can stay "connected" for long after its follower went: TCP knows nothing yet.)
    const int64_t timeout_ms = node_.options().heartbeat_timeout_ms;
    bool beats_silent = beats.heard_ago_ms < 0 || beats.heard_ago_ms > timeout_ms;
    bool acks_silent = f.last_ack_us == 0 || (now - f.last_ack_us) / 1000 > timeout_ms;
    list[i].setSilent(f.state == replication::FollowerState::kConnected && beats_silent &&
                      acks_silent);
    if (f.state == replication::FollowerState::kConnected ||
        f.state == replication::FollowerState::kDisconnected) {
      list[i].setWalPinnedBytes(engine::WalBytesFrom(node_.wal_files(), f.applied + 1));
    }
  }
}

// ---- Membership (replication/membership.h) ----

absl::StatusOr<replication::Membership> LeaderRole::ChangeMembership(
    const replication::MembershipChange& change) {
  const std::string& self = node_.options().node_id;
  if (!leader_.options().members_only) {
    return absl::FailedPreconditionError(
        "this leader takes any follower (no membership is kept): nothing to change");
  }
  if (handover_.has_value()) {
    return absl::UnavailableError(absl::StrCat("leadership is being handed to '",
                                               handover_->target(), "': change the membership "
                                               "at the new leader"));
  }
  if (std::string waiting = leader_.MembershipWaitingFor(); !waiting.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "the last membership change (version ", leader_.membership().version, ") is not yet "
        "held by a majority of the voters (waiting for ", waiting, "); one change at a time: "
        "try again once they hold it"));
  }
  absl::StatusOr<replication::Membership> next =
      replication::ApplyChange(leader_.membership(), change, self);
  if (!next.ok()) return next.status();
  if (next->members.size() > leader_.options().max_followers + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the cluster has ", next->members.size() - 1, " followers already (max_followers ",
        leader_.options().max_followers, ")"));
  }
  if (change.op == replication::MembershipOp::kRemove) {
    // What every write promises by default must stay possible with the voters left.
    size_t voters = next->VotersExcept(self).size();
    if (absl::Status s = replication::CommitWait::Check(node_.options().commit.cluster, voters);
        !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "removing '", change.id, "' would leave ", voters, " voting followers: ", s.message(),
          "; change the cluster's replication first"));
    }
  }
  return SaveMembership(*std::move(next), change);
}

absl::StatusOr<replication::Membership> LeaderRole::SaveMembership(
    replication::Membership next, const replication::MembershipChange& change) {
  replication::NodeState state = leader_.state();
  state.membership = next;
  if (absl::Status s = replication::SaveNodeState(node_.state_path(), state); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot save the membership: ", s.message()));
  }
  spdlog::warn("membership version {}: {}", next.version, replication::Describe(change));
  leader_.SetMembership(next);
  node_.AdoptMembership(next);
  SchedulePump();  // the followers are sent it; a removed member's stream ends
  return next;
}

// A learner within ready_lag of this log, once the last change is settled, becomes a voter:
// from then on the synchronous modes wait for it and it counts in majorities.
void LeaderRole::PromoteReadyLearner() {
  if (node_.MonoNowUs() < promote_again_us_) return;
  std::optional<replication::MembershipChange> due = leader_.DuePromotion();
  if (!due.has_value()) return;
  absl::StatusOr<replication::Membership> next =
      replication::ApplyChange(leader_.membership(), *due, node_.options().node_id);
  if (next.ok()) next = SaveMembership(*std::move(next), *due);
  if (!next.ok()) {
    spdlog::error("cannot {}: {}; trying again in {} ms", replication::Describe(*due),
                  next.status().ToString(), kPromoteAgainMs);
    promote_again_us_ = node_.MonoNowUs() + kPromoteAgainMs * 1000;
  }
}

// ---- Followers subscribing ----

kj::Promise<void> LeaderRole::Subscribe(SubscribeContext ctx,
                                        std::shared_ptr<PeerSessions> sessions) {
  auto params = ctx.getParams();
  replication::Hello hello = FromCapnp(params.getHello());
  replication::Outbox out;
  uint64_t sid = 0;
  replication::HelloReply reply = shipper_.OnHello(hello, &sid, node_.MonoNowUs(), &out);
  ToCapnp(reply, ctx.getResults().initReply());
  if (sid == 0) {
    spdlog::warn("follower '{}' {}: {}", hello.follower_id,
                 replication::HelloOutcomeName(reply.outcome), reply.message);
    if (FailsOver() && hello.epoch > leader_.epoch() &&
        hello.cluster == node_.options().cluster &&
        node_.membership().Find(hello.follower_id) != nullptr) {
      StepDown(absl::StrCat("follower '", hello.follower_id, "' has seen epoch ", hello.epoch));
    }
    return kj::READY_NOW;
  }
  spdlog::info("follower '{}' subscribed from seq {} (leader at {})", hello.follower_id,
               hello.last_applied + 1, leader_.latest());
  // Counted before the follower's earlier streams end: one of them may live on this very
  // connection, which must stay open.
  ++sessions->live;
  auto live = std::shared_ptr<void>(nullptr, [sessions](void*) {
    if (--sessions->live == 0 && sessions->close.get() != nullptr) sessions->close->fulfill();
  });
  streams_.emplace(sid, Stream{hello.follower_id, params.getSink(), {}, std::move(live)});
  Carry(std::move(out));
  SchedulePump();
  return kj::READY_NOW;
}

// ---- Shipping ----
//
// What goes to each follower and when is the Shipper's decision (replication/shipper.h);
// here its outbox is carried out: messages sent, WAL reads run on the WAL thread, ended
// streams closed, and one timer armed for its next wake-up.

// Pumps at the end of this event-loop turn, after the turn's group commit and, as a rule,
// after the replies to its writers have gone out: a writer waiting for its reply does not
// also wait for the messages to the followers, which are sent while it works on its next
// request, and an ack or a wake-up in the same turn as a write lets that write travel in
// the message they free. (KJ runs the evalLast callbacks of one turn newest first, so the
// group commit and the replies' socket flushes, scheduled after this, run before it.)
void LeaderRole::SchedulePump() {
  if (pump_scheduled_) return;
  pump_scheduled_ = true;
  tasks_.add(kj::evalLast([this]() {
    pump_scheduled_ = false;
    // A group commit of this turn has not run yet: run it first; its completion schedules
    // the pump again, behind the replies.
    if (node_.clients().FlushPending() && pump_scheduled_) return;
    // Answered pushes are released now: each sends its Finish, which then shares a socket
    // write with the next message instead of taking one of its own.
    for (auto& [sid, stream] : streams_) stream.answered.clear();
    int64_t now = node_.MonoNowUs();
    if (!waits_.empty()) {
      bool was_degraded = commit_wait_.degraded();
      std::vector<replication::Released> released;
      commit_wait_.Tick(leader_, now, &released);
      Release(std::move(released), was_degraded);
    }
    replication::Outbox out;
    // Echoes say "nothing newer exists anywhere": not while another node may lead (a handover
    // asked, or a lease lapsed, after which a majority may elect another).
    leader_.set_echo(!handover_.has_value() && WriteRefusal().ok());
    shipper_.Pump(now, &out, commit_wait_.demand());
    Carry(std::move(out));
    if (handover_.has_value()) {
      PollHandover();
    } else {
      PromoteReadyLearner();
    }
    ArmWakeUp();
  }));
}

// One timer for the next wake-up (the Shipper's, or a handover's deadline); an earlier one
// already armed stays.
void LeaderRole::ArmWakeUp() {
  int64_t at = std::min(shipper_.NextWakeUp(), commit_wait_.NextWakeUp());
  if (handover_.has_value() &&
      (handover_->phase() == replication::Handover::Phase::kCatchingUp ||
       handover_done_.get() != nullptr) &&
      handover_->deadline_us() > node_.MonoNowUs()) {
    at = std::min(at, handover_->deadline_us());
  }
  if (at == replication::kNever) return;
  int64_t now = node_.MonoNowUs();
  if (wake_armed_ && wake_at_us_ <= at && wake_at_us_ > now) return;
  wake_armed_ = true;
  wake_at_us_ = at;
  wake_timer_ = node_.io()
                    .provider->getTimer()
                    .afterDelay(std::max<int64_t>(0, at - now) * kj::MICROSECONDS)
                    .then([this]() {
                      wake_armed_ = false;
                      SchedulePump();
                    })
                    .eagerlyEvaluate(nullptr);
}

void LeaderRole::Carry(replication::Outbox out) {
  for (uint64_t sid : out.ended) streams_.erase(sid);
  for (auto& send : out.sends) Send(send.session, std::move(send.ship));
  for (auto& read : out.wal_reads) RunWalRead(std::move(read));
}

// Runs a WAL read the Shipper asked for on the WAL thread, so that the loop never waits for
// the disk; its end goes back to the Shipper and pumps again.
void LeaderRole::RunWalRead(replication::WalRead read) {
  uint64_t sid = read.session;
  SequenceNumber from_seq = read.from_seq;
  tasks_.add(
      node_.wal_pool()
          .Run([read = std::move(read)]() mutable {
            read.Run();
            return std::move(read);
          })
          .then([](replication::WalRead done) { return done; },
                [sid, from_seq](kj::Exception&& e) {  // the queue was full: as a failure
                  replication::WalRead failed;
                  failed.session = sid;
                  failed.from_seq = from_seq;
                  failed.status = absl::UnavailableError(e.getDescription().cStr());
                  return failed;
                })
          .then([this](replication::WalRead done) {
            if (!done.status.ok() && !absl::IsOutOfRange(done.status)) {
              spdlog::warn("reading the WAL from seq {} failed: {}", done.from_seq,
                           done.status.ToString());
            }
            replication::Outbox out;
            shipper_.OnWalRead(std::move(done), node_.MonoNowUs(), &out);
            Carry(std::move(out));
            SchedulePump();
          }));
}

void LeaderRole::Send(uint64_t sid, Ship ship) {
  auto it = streams_.find(sid);
  if (it == streams_.end()) return;
  Stream& s = it->second;
  size_t words = ShipBytes(ship) / 8 + ship.batches.size() * 8 + 64;
  auto req = s.sink.pushRequest(capnp::MessageSize{words, 0});
  ToCapnp(ship, req.initShip());
  if (!ship.needs_snapshot.empty()) {
    spdlog::error("follower '{}' NEEDS SNAPSHOT: {}", s.follower_id, ship.needs_snapshot);
  }
  int64_t sent_us = node_.MonoNowUs();
  tasks_.add(req.send().then(
      [this, sid, sent_us](capnp::Response<schema::BatchSink::PushResults> resp) {
        if (streams_.find(sid) == streams_.end()) return;
        Ack ack = FromCapnp(resp.getAck());
        if (FailsOver()) {
          if (ack.epoch == leader_.epoch()) {
            if (lease_.has_value()) OnLeaseAck(streams_.at(sid).follower_id, sent_us);
          } else if (ack.epoch > leader_.epoch()) {
            StepDown(absl::StrCat("follower '", streams_.at(sid).follower_id,
                                  "' has seen epoch ", ack.epoch));
            return;
          }
        }
        if (ack.outcome != replication::AckOutcome::kOk) {
          spdlog::warn("follower '{}' answered {}: {}", streams_.at(sid).follower_id,
                       replication::AckOutcomeName(ack.outcome), ack.message);
        }
        replication::Outbox out;
        shipper_.OnAck(sid, ack, &out);
        Carry(std::move(out));
        if (!waits_.empty() || commit_wait_.degraded()) {
          bool was_degraded = commit_wait_.degraded();
          std::vector<replication::Released> released;
          commit_wait_.OnProgress(leader_, node_.MonoNowUs(), &released);
          Release(std::move(released), was_degraded);
        }
        auto live = streams_.find(sid);
        if (live != streams_.end()) live->second.answered.push_back(kj::mv(resp));
        SchedulePump();
      },
      [this, sid](kj::Exception&& e) {
        auto lost = streams_.find(sid);
        if (lost == streams_.end()) return;
        spdlog::warn("lost follower '{}': {}", lost->second.follower_id, e.getDescription().cStr());
        shipper_.OnLost(sid);
        streams_.erase(lost);
      }));
}

}  // namespace walship::rpc
