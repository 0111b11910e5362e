#include "rpc/seeding_role.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "replication/election.h"
#include "rpc/campaign.h"
#include "rpc/convert.h"
#include "rpc/node.h"
#include "rpc/snapshot_fetch.h"

namespace walship::rpc {
namespace {

constexpr uint32_t kFirstPauseMs = 500;
constexpr uint32_t kMaxPauseMs = 30000;

}  // namespace

SeedingRole::SeedingRole(Node& node, replication::NodeState state,
                         std::optional<engine::SequenceNumber> shared_upto)
    : node_(node), state_(std::move(state)), tasks_(*this) {
  progress_.source = LeaderId();
  vote_latest_ = std::min(node_.engine().LatestSequence(),
                          shared_upto.value_or(node_.engine().LatestSequence()));
  // As a follower that starts: it may have answered a leader just before (its lease counts on
  // that), so it refuses votes for an election time-out from now.
  heard_us_ = node_.PreciseNowUs();
}

void SeedingRole::taskFailed(kj::Exception&& e) {
  spdlog::warn("seeding task failed: {}", e.getDescription().cStr());
}

std::string SeedingRole::LeaderId() const {
  return state_.leader.empty() ? node_.options().leader_id : state_.leader;
}

void SeedingRole::Start() {
  spdlog::warn("node '{}' is seeded from a checkpoint of '{}'{}; its data stays as it is until "
               "the new copy is verified",
               node_.options().node_id, LeaderId(),
               state_.needs_snapshot.empty() ? "" : absl::StrCat(" (", state_.needs_snapshot, ")"));
  Attempt();
}

void SeedingRole::Attempt() {
  ++attempts_;
  ++attempt_id_;
  waiting_ = false;
  std::string leader = LeaderId();
  std::string address = node_.AddressOf(leader);
  progress_.phase = replication::SeedProgress::Phase::kConnecting;
  progress_.source = leader;
  if (address.empty()) {
    Retry(absl::FailedPreconditionError(
        absl::StrCat("no address is known for the leader '", leader, "' (not in the config)")));
    return;
  }
  FetchOptions fo;
  fo.dir = node_.options().data_dir + "/seed";
  fo.cluster = node_.options().cluster;
  fo.requester = node_.options().node_id;
  fo.source = absl::StrCat("'", leader, "' (", address, ")");
  fo.state = state_;
  fo.progress = [this, logged = false](const replication::SeedProgress& p) mutable {
    if (p.phase == replication::SeedProgress::Phase::kCopying && !logged) {
      logged = true;
      spdlog::info("copying a checkpoint of {} from '{}'{}", replication::HumanBytes(p.total_bytes),
                   LeaderId(),
                   p.done_bytes == 0
                       ? std::string()
                       : absl::StrCat("; resuming: ", replication::HumanBytes(p.done_bytes),
                                      " of it verified by an earlier attempt"));
    }
    // The last attempt's failure stays in status until one succeeds: a retry's progress
    // would otherwise hide why the one before it failed.
    std::string last_failure = std::move(progress_.error);
    progress_ = p;
    progress_.source = LeaderId();
    if (progress_.error.empty()) progress_.error = std::move(last_failure);
  };
  tasks_.add(ConnectToPeer(node_.io(), address, node_.security())
                 .then([this, fo = std::move(fo)](kj::Own<PeerClient> conn) mutable {
                   conn_ = kj::mv(conn);
                   return FetchCheckpoint(node_.io().provider->getTimer(),
                                          conn_->node.castAs<schema::PeerService>(),
                                          std::move(fo));
                 })
                 .then(
                     [this](absl::StatusOr<replication::SnapshotManifest> m) {
                       RetireConnection();
                       if (!m.ok()) {
                         Retry(m.status());
                         return;
                       }
                       progress_.phase = replication::SeedProgress::Phase::kInstalling;
                       spdlog::info("checkpoint of '{}' at seq {} received and verified ({}); "
                                    "installing it and starting again",
                                    m->source, m->seq, replication::HumanBytes(m->TotalBytes()));
                       node_.RequestRestart();
                     },
                     [this](kj::Exception&& e) {
                       RetireConnection();
                       Retry(absl::UnavailableError(e.getDescription().cStr()));
                     }));
}

// Closes the connection in a later turn: calls on it may still be unwinding.
void SeedingRole::RetireConnection() {
  tasks_.add(kj::evalLater([c = kj::mv(conn_)]() mutable {
    if (c.get() != nullptr) c->Close();
  }));
}

void SeedingRole::Retry(const absl::Status& why) {
  pause_ms_ = pause_ms_ == 0 ? kFirstPauseMs : std::min(pause_ms_ * 2, kMaxPauseMs);
  progress_.error = std::string(why.message());
  spdlog::warn("seeding from '{}' failed (attempt {}): {}; trying again in {} ms, keeping the "
               "files already verified",
               LeaderId(), attempts_, why.ToString(), pause_ms_);
  waiting_ = true;
  tasks_.add(node_.io()
                 .provider->getTimer()
                 .afterDelay(pause_ms_ * kj::MILLISECONDS)
                 .then([this, id = attempt_id_]() {
                   if (waiting_ && id == attempt_id_) Attempt();
                 }));
}

kj::Promise<replication::VoteReply> SeedingRole::RequestVote(replication::VoteRequest request) {
  if (!node_.options().failover) return Role::RequestVote(std::move(request));
  replication::VoterView view;
  view.latest = vote_latest_;
  view.leader_heard_us = heard_us_;
  view.heard_from = heard_from_;
  replication::VoteAnswer a = replication::AnswerVote(
      state_, view, request, ElectionOptionsFor(node_.options()), node_.PreciseNowUs());
  if (!a.save.has_value()) {
    if (!a.reply.granted) LogRefusedVote(request, a.reply);
    return a.reply;
  }
  // Taken at once: another candidate of this epoch asking meanwhile is refused, and, as a
  // leader heard, any other for an election time-out (replication::ElectedBy).
  state_ = *a.save;
  heard_us_ = std::max(heard_us_, node_.PreciseNowUs());
  heard_from_ = request.candidate;
  return node_.node_pool()
      .Run([path = node_.state_path(), next = *a.save]() {
        return replication::SaveNodeState(path, next);
      })
      .then([reply = a.reply, request](absl::Status saved) -> replication::VoteReply {
        // Not saved: no answer (the candidate asks again), never a refusal.
        KJ_REQUIRE(saved.ok(), "cannot save the vote", saved.ToString());
        spdlog::info("election: voted for '{}' in epoch {} (while being seeded)",
                     request.candidate, request.epoch);
        return reply;
      });
}

replication::HeartbeatReply SeedingRole::Heartbeat(const replication::Heartbeat& beat) {
  const NodeServerOptions& o = node_.options();
  replication::HeartbeatReply reply =
      replication::AnswerHeartbeat(o.node_id, o.cluster, state_.HighestEpoch(), beat);
  if (!reply.heard) return reply;
  heard_us_ = std::max(heard_us_, node_.PreciseNowUs());
  heard_from_ = beat.leader;
  if (o.failover && beat.leader != LeaderId() && beat.leader != o.node_id) {
    // Another node leads now (the one this node seeded from failed, or stepped down): it is
    // the source from now on, and a paused attempt begins at once.
    spdlog::info("seeding from '{}' from now on: it leads epoch {}", beat.leader, beat.epoch);
    state_.leader = beat.leader;
    progress_.source = beat.leader;
    pause_ms_ = 0;
    if (waiting_) Attempt();
  }
  return reply;
}

absl::Status SeedingRole::WriteRefusal() const {
  return NotLeaderError(node_.AddressOf(LeaderId()));
}

void SeedingRole::OnWritten(engine::Batch batch, int64_t) {
  spdlog::error("a node being seeded wrote a client batch at seq {}", batch.first_seq);
}

kj::Promise<ReplicationOutcome> SeedingRole::AwaitReplicated(engine::SequenceNumber seq,
                                                             const replication::Durability&,
                                                             bool) {
  return ReplicationOutcome{NotReplicatedError(
      absl::StrCat("seq ", seq, " was written while this node was being seeded"))};
}

kj::Promise<absl::Status> SeedingRole::AwaitCommitted(engine::SequenceNumber) {
  return WriteRefusal();
}

std::string SeedingRole::ReadRefusal() const {
  return absl::StrCat("this node is being seeded from a checkpoint of '", LeaderId(),
                      "' and refuses reads until it has caught up: ",
                      replication::DescribeProgress(progress_));
}

void SeedingRole::FillStatus(schema::NodeStatus::Builder st) {
  st.setEpoch(state_.epoch);
  st.setDatabaseId(state_.database_id);
  st.setLeaderId(LeaderId());
  st.setLeaderAddress(node_.AddressOf(LeaderId()));
  st.setReplicationState("seeding");
  std::string phase = replication::DescribeProgress(progress_);
  st.setPhase(phase);
  st.setReady(false);
  st.setSeedDoneBytes(progress_.done_bytes);
  st.setSeedTotalBytes(progress_.total_bytes);
  st.setMessage(progress_.error.empty() ? phase
                                        : absl::StrCat(phase, "; last failure: ", progress_.error));
}

kj::Promise<void> SeedingRole::Subscribe(SubscribeContext ctx, std::shared_ptr<PeerSessions>) {
  replication::HelloReply reply;
  reply.outcome = replication::HelloOutcome::kRefused;
  reply.message = absl::StrCat("node '", node_.options().node_id,
                               "' is being seeded from a checkpoint and does not lead");
  reply.epoch = state_.epoch;
  reply.leader_hint = LeaderId();
  ToCapnp(reply, ctx.getResults().initReply());
  return kj::READY_NOW;
}

kj::Promise<void> SeedingRole::TakeOver(TakeOverContext ctx) {
  replication::TakeOverReply reply;
  reply.message = "this node is being seeded from a checkpoint: its data is not current";
  reply.epoch = state_.HighestEpoch();
  ToCapnp(reply, ctx.getResults().initReply());
  return kj::READY_NOW;
}

kj::Promise<HandoverOutcome> SeedingRole::HandOver(std::string, uint32_t) {
  return HandoverOutcome{WriteRefusal(), LeaderId(), state_.epoch};
}

replication::PeerPosition SeedingRole::Position() const {
  replication::PeerPosition p = replication::PositionOf(
      state_, node_.engine().LatestSequence(), node_.options().node_id);
  p.needs_snapshot = true;
  return p;
}

}  // namespace walship::rpc
