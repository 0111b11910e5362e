// The leader's part in automatic failover (replication/election.h): its answer to a
// candidate, the lease kept from its followers' acknowledgements, and the step-down.
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "replication/handover.h"
#include "rpc/campaign.h"
#include "rpc/coordinator.h"
#include "rpc/leader_role.h"
#include "rpc/node.h"

namespace walship::rpc {

// ---- Automatic failover: the lease ----

kj::Promise<replication::VoteReply> LeaderRole::RequestVote(replication::VoteRequest request) {
  replication::VoterView view;
  view.latest = leader_.latest();
  view.leads = true;  // stepping down too: a vote granted here would never be saved
  replication::ElectionOptions eo = ElectionOptionsFor(node_.options());
  // A leader refuses every vote: it leads (and steps down on its own once its lease ends).
  return replication::AnswerVote(leader_.state(), view, request, eo, node_.PreciseNowUs()).reply;
}

replication::HeartbeatReply LeaderRole::Heartbeat(const replication::Heartbeat& beat) {
  const NodeServerOptions& o = node_.options();
  replication::HeartbeatReply reply =
      replication::AnswerHeartbeat(o.node_id, o.cluster, leader_.state().HighestEpoch(), beat);
  reply.heard = false;  // a leader follows no one
  if (reply.message.empty()) {
    reply.message = absl::StrCat("node '", o.node_id, "' leads epoch ", leader_.epoch());
  }
  // A leader of a later epoch: this one was replaced. (During a handover that is the
  // target, whose take-over answer, asked again until it comes, ends the handover.)
  if (FailsOver() && !handover_.has_value() && beat.cluster == o.cluster &&
      beat.epoch > leader_.epoch() && node_.membership().Find(beat.leader) != nullptr) {
    StepDown(absl::StrCat("node '", beat.leader, "' leads epoch ", beat.epoch));
  }
  return reply;
}

// A member's answer to a heartbeat: the lease counts it as an acknowledgement of a message
// sent at `sent_us`; a member that has seen a later epoch ends this leadership.
void LeaderRole::OnHeartbeatReply(const std::string& member, int64_t sent_us,
                                  const replication::HeartbeatReply& reply) {
  if (!FailsOver() || stepping_down_) return;
  if (reply.epoch > leader_.epoch()) {
    if (handover_.has_value()) return;  // the target took over: its answer ends the handover
    StepDown(absl::StrCat("node '", member, "' has seen epoch ", reply.epoch));
  } else if (reply.heard && lease_.has_value()) {
    OnLeaseAck(member, sent_us);
  }
}

// Asked again after a lost answer, or of a node that leads already: it leads.
kj::Promise<PromoteOutcome> LeaderRole::Promote(bool) {
  if (stepping_down_) {
    return PromoteOutcome::Refused(absl::UnavailableError("this node is stepping down as leader"));
  }
  return PromoteOutcome{absl::OkStatus(), node_.options().node_id, leader_.epoch(), 0};
}

void LeaderRole::OnLeaseAck(const std::string& voter, int64_t sent_us) {
  lease_->OnAck(voter, sent_us);
  lease_until_us_ = lease_->ExpiresAt(node_.membership(), node_.options().node_id);
  if (!lease_first_held_) {
    // Until now it refused writes: how long that lasted after it began leading is part of
    // every failover's pause.
    int64_t now = node_.PreciseNowUs();
    if (now < lease_until_us_) {
      lease_first_held_ = true;
      spdlog::info("lease held {} ms after this node began leading; writes are taken",
                   (now - started_us_) / 1000);
    }
  }
}

// Writes are refused from the lease's end on (WriteRefusal), whenever this runs; the leader
// steps down only once the lease has stayed lapsed for an election time-out (by then the
// others may have elected a leader; a brief lapse, a follower's event loop held up, costs a
// pause in writes, not an election). A leader that never held the lease waits for its
// majority, refusing writes (LeaderLease::StepDownDue says why that is safe). Checked every
// heartbeat interval.
kj::Promise<void> LeaderRole::LeaseLoop() {
  return node_.io()
      .provider->getTimer()
      .afterDelay(node_.options().heartbeat_interval_ms * kj::MILLISECONDS)
      .then([this]() -> kj::Promise<void> {
        int64_t now = node_.PreciseNowUs();
        lease_until_us_ = lease_->ExpiresAt(node_.membership(), node_.options().node_id);
        const int64_t election_us = int64_t{node_.options().election_timeout_ms} * 1000;
        bool lapsed = now >= lease_until_us_;
        if (lapsed && !lease_lapsed_) {
          ++lease_lapses_;
          spdlog::warn("lease lapsed: no majority of the voters acknowledged a message sent "
                       "within the last {} ms (lease_ms); writes are refused until one does",
                       node_.options().lease_ms);
        } else if (!lapsed && lease_lapsed_ && lease_lapses_ > 0) {
          spdlog::info("lease held again; writes are taken");
        }
        lease_lapsed_ = lapsed;
        if (lease_->StepDownDue(node_.membership(), node_.options().node_id, now,
                                election_us)) {
          StepDown(absl::StrCat("no majority of the voters acknowledged a message sent "
                                "within the last ", node_.options().lease_ms,
                                " ms (lease_ms) for an election time-out (",
                                node_.options().election_timeout_ms, " ms)"));
          return kj::READY_NOW;
        }
        return LeaseLoop();
      });
}

std::string LeaderRole::DescribeLease() const {
  if (stepping_down_) return "stepping down: writes refused";
  int64_t now = node_.PreciseNowUs();
  if (lease_until_us_ == replication::kNever) return "lease held (the only voter)";
  if (now >= lease_until_us_) return "no lease: writes refused until a majority acknowledges";
  return absl::StrCat("lease held for ", (lease_until_us_ - now) / 1000, " ms more");
}

void LeaderRole::StepDown(const std::string& why) {
  if (stepping_down_) return;
  stepping_down_ = true;
  spdlog::warn("STEPPING DOWN as leader of epoch {}: {}; writes are refused from now on",
               leader_.epoch(), why);
  if (coordinator_ != nullptr) coordinator_->ReleaseInBackground(leader_.epoch());
  replication::NodeState next = replication::StateForFollowing(leader_.state(), "");
  if (absl::Status s = replication::SaveNodeState(node_.state_path(), next); !s.ok()) {
    // Follows all the same; restarted, it would first ask its peers (RecoveringRole).
    spdlog::error("cannot save the step-down: {}", s.ToString());
  }
  node_.SwitchRole(std::move(next));
}

}  // namespace walship::rpc
