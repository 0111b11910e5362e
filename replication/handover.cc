#include "replication/handover.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace walship::replication {

NodeState StateForLeading(NodeState state, SequenceNumber latest, const std::string& self) {
  BeginEpoch(state, latest + 1, self);
  state.role = "leader";
  state.leader.clear();
  state.handover_to.clear();
  return state;
}

NodeState StateForFollowing(NodeState state, const std::string& leader) {
  state.role = "follower";
  state.leader = leader;
  state.handover_to.clear();
  return state;
}

NodeState StateForHandingOver(NodeState state, const std::string& target) {
  state.handover_to = target;
  return state;
}

NodeState StateAfterHandover(NodeState state, const std::string& target,
                             const TakeOver& request, const TakeOverReply& reply) {
  state = StateForFollowing(std::move(state), target);
  if (reply.accepted && reply.epoch > state.HighestEpoch()) {
    BeginEpoch(state, reply.start_seq != 0 ? reply.start_seq : request.latest + 1, target);
    state.epoch = reply.epoch;
    state.history.back().epoch = reply.epoch;
  }
  return state;
}

TakeOverReply AnswerTakeOver(const NodeState& state, SequenceNumber applied,
                             const std::string& self, const TakeOver& request, bool* take_over) {
  *take_over = false;
  TakeOverReply reply;
  reply.epoch = state.HighestEpoch();
  auto refuse = [&](std::string why) {
    reply.message = std::move(why);
    return reply;
  };
  if (request.version != kPeerProtocolVersion) {
    return refuse(absl::StrCat("the leader speaks peer protocol version ", request.version,
                               "; this node speaks version ", kPeerProtocolVersion));
  }
  if (state.role == "leader") {
    // Taken over from this request before (the answer was lost)?
    for (const EpochEntry& e : state.history) {
      if (e.leader == self && e.start_seq > request.latest && e.epoch > request.epoch) {
        reply.accepted = true;
        reply.epoch = e.epoch;
        reply.start_seq = e.start_seq;
        return reply;
      }
    }
    return refuse("this node leads already");
  }
  if (!state.needs_snapshot.empty()) {
    return refuse(absl::StrCat("this node needs a snapshot (", state.needs_snapshot, ")"));
  }
  if (state.epoch != request.epoch) {
    return refuse(absl::StrCat("this node is at epoch ", state.epoch, ", the leader at epoch ",
                               request.epoch));
  }
  // Voted in a later election (whose winner's lease counts this node's vote): the leader
  // asking is stale, whatever this node follows yet.
  if (state.vote_epoch > request.epoch) {
    return refuse(absl::StrCat("this node voted in epoch ", state.vote_epoch,
                               ", after the leader's epoch ", request.epoch));
  }
  if (state.history.empty() || state.history.back().leader != request.from) {
    return refuse(absl::StrCat("this node does not follow '", request.from, "' in epoch ",
                               request.epoch));
  }
  // More than the leader holds is the tail the leader lost (its machine lost power with its
  // own fsync off, see replication/recovery.h): this node takes over from where it is.
  if (applied < request.latest) {
    return refuse(absl::StrCat("this node has applied up to seq ", applied,
                               ", the leader wrote up to ", request.latest));
  }
  *take_over = true;
  reply.accepted = true;
  reply.start_seq = applied + 1;
  return reply;
}

bool ResumesHandover(const NodeState& state) { return !state.handover_to.empty(); }

Handover::Handover(std::string target, int64_t now_us, int64_t timeout_us)
    : target_(std::move(target)), deadline_us_(now_us + timeout_us) {}

Handover Handover::Resumed(std::string target, TakeOver request) {
  Handover h(std::move(target), 0, 0);
  h.phase_ = Phase::kAsked;
  h.request_ = std::move(request);
  return h;
}

absl::Status Handover::WriteRefusal() const {
  return absl::UnavailableError(absl::StrCat("leadership is being handed over to '", target_,
                                             "'; write there"));
}

std::optional<TakeOver> Handover::Poll(Leader& leader, bool writes_idle, int64_t now_us) {
  if (phase_ != Phase::kCatchingUp || !writes_idle || TimedOut(now_us)) return std::nullopt;
  bool caught_up = false;
  for (const FollowerInfo& f : leader.Followers()) {
    // It also holds the current membership: it leads with the members this leader has.
    if (f.id == target_ && f.state == FollowerState::kConnected && f.applied == leader.latest() &&
        leader.HoldsMembership(f)) {
      caught_up = true;
    }
  }
  if (!caught_up) return std::nullopt;
  phase_ = Phase::kAsked;
  request_.from = leader.options().node_id;
  request_.epoch = leader.epoch();
  request_.latest = leader.latest();
  return request_;
}

bool Handover::StepsDown(const TakeOverReply& reply) const {
  return reply.accepted || reply.epoch > request_.epoch;
}

}  // namespace walship::replication
