// The leader's handover of leadership to a follower (replication/handover.h), and its answer
// to a take-over call: the part of LeaderRole that hands leadership on.
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "rpc/client_service.h"
#include "rpc/convert.h"
#include "rpc/coordinator.h"
#include "rpc/leader_role.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {
constexpr int64_t kAskAgainMs = replication::Handover::kAskAgainUs / 1000;
}  // namespace

// ---- Handover ----

kj::Promise<HandoverOutcome> LeaderRole::HandOver(std::string target, uint32_t timeout_ms) {
  const std::string& self = node_.options().node_id;
  auto refuse = [&](absl::Status s) -> kj::Promise<HandoverOutcome> {
    return HandoverOutcome{std::move(s), self, leader_.epoch()};
  };
  if (target == self) {
    return refuse(absl::InvalidArgumentError(absl::StrCat("node '", self, "' leads already")));
  }
  if (node_.AddressOf(target).empty()) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("'", target, "' is not a node of cluster '", node_.options().cluster, "'")));
  }
  if (leader_.options().members_only) {
    const replication::Member* m = leader_.membership().Find(target);
    if (m == nullptr) {
      return refuse(absl::InvalidArgumentError(absl::StrCat(
          "'", target, "' is not a member of cluster '", node_.options().cluster, "'")));
    }
    if (!m->voter) {
      return refuse(absl::FailedPreconditionError(absl::StrCat(
          "'", target, "' is a learner: it may lead once it votes (when it is ready)")));
    }
  }
  if (handover_.has_value()) {
    return refuse(absl::UnavailableError(
        absl::StrCat("a handover to '", handover_->target(), "' is under way")));
  }
  spdlog::warn("handing leadership to '{}': writes are refused from now on", target);
  handover_.emplace(target, node_.MonoNowUs(), int64_t{timeout_ms} * 1000);
  node_.clients().FailPending(WriteRefusal());
  auto paf = kj::newPromiseAndFulfiller<HandoverOutcome>();
  handover_done_ = kj::mv(paf.fulfiller);
  SchedulePump();
  return kj::mv(paf.promise);
}

void LeaderRole::FinishHandover(HandoverOutcome outcome) {
  if (handover_done_.get() != nullptr) {
    handover_done_->fulfill(kj::mv(outcome));
    handover_done_ = nullptr;
  }
}

void LeaderRole::PollHandover() {
  replication::Handover& h = *handover_;
  int64_t now = node_.MonoNowUs();
  if (h.phase() != replication::Handover::Phase::kCatchingUp) {
    // Asked: the operator hears how it stands by the deadline; the asking goes on.
    if (h.TimedOut(now) && handover_done_.get() != nullptr) {
      FinishHandover(HandoverOutcome{
          absl::UnavailableError(absl::StrCat(
              "asked '", h.target(), "' to take over; no answer yet. This node takes no "
              "writes until it answers (it asks again every ", kAskAgainMs, " ms)")),
          h.target(), leader_.epoch()});
    }
    return;
  }
  if (h.TimedOut(now)) {
    spdlog::warn("'{}' did not catch up in time; this node leads on and takes writes again",
                 h.target());
    FinishHandover(HandoverOutcome{
        absl::UnavailableError(absl::StrCat("'", h.target(), "' did not catch up in time (",
                                            leader_.latest(), " written here); ",
                                            node_.options().node_id, " leads on")),
        node_.options().node_id, leader_.epoch()});
    handover_.reset();
    return;
  }
  std::optional<replication::TakeOver> ask = h.Poll(leader_, node_.clients().writes_idle(), now);
  if (!ask.has_value()) return;
  spdlog::info("'{}' has applied everything up to seq {}; asking it to take over", h.target(),
               ask->latest);
  // The WAL is fsynced first, so that after a restart this node still holds what it asks the
  // target to start after; then the commit point: from here it takes no write by itself,
  // across restarts too, until the target answers.
  tasks_.add(node_.node_pool()
                 .Run([e = &node_.engine()]() { return e->SyncWal(); })
                 .catch_([](kj::Exception&& e) {
                   return absl::UnavailableError(e.getDescription().cStr());
                 })
                 .then([this](absl::Status synced) {
                   const std::string target = handover_->target();
                   absl::Status s = synced;
                   if (s.ok()) {
                     s = replication::SaveNodeState(
                         node_.state_path(),
                         replication::StateForHandingOver(leader_.state(), target));
                   }
                   if (!s.ok()) {
                     spdlog::error("handover to '{}' given up: {}", target, s.ToString());
                     FinishHandover(HandoverOutcome{s, node_.options().node_id, leader_.epoch()});
                     handover_.reset();
                     SchedulePump();
                     return;
                   }
                   AskTakeOver();
                 }));
}

// Calls takeOver on the target, again every kAskAgainMs until an answer comes: a request
// that may have been taken is never abandoned.
void LeaderRole::AskTakeOver() {
  if (asking_) return;
  asking_ = true;
  if (coordinator_ != nullptr && !released_for_handover_) {
    // Through etcd the target takes the leader key as it takes over
    // (rpc/leader_coordinated.cc): this node gives it up first.
    released_for_handover_ = true;
    tasks_.add(coordinator_->Release(leader_.epoch()).then([this](absl::StatusOr<bool> s) {
      if (!s.ok()) {
        spdlog::warn("etcd: cannot give up the leader key: {}",
                     std::string(s.status().message()));
      }
      asking_ = false;
      AskTakeOver();
    }));
    return;
  }
  std::string target = handover_->target();
  replication::TakeOver request = handover_->request();
  auto call = ConnectToPeer(node_.io(), node_.AddressOf(target), node_.security())
                  .then([this, request](kj::Own<PeerClient> conn) {
                    take_over_conn_ = kj::mv(conn);
                    auto req = take_over_conn_->node.takeOverRequest();
                    ToCapnp(request, req.initRequest());
                    return req.send().then(
                        [](capnp::Response<schema::PeerService::TakeOverResults> resp) {
                          return FromCapnp(resp.getReply());
                        });
                  });
  tasks_.add(node_.io()
                 .provider->getTimer()
                 .timeoutAfter(kAskAgainMs * kj::MILLISECONDS, kj::mv(call))
                 .then(
                     [this](replication::TakeOverReply reply) {
                       asking_ = false;
                       OnTakeOverReply(reply);
                     },
                     [this, target](kj::Exception&& e) {
                       asking_ = false;
                       spdlog::warn("no answer from '{}' to the take-over ({}); asking again",
                                    target, e.getDescription().cStr());
                       tasks_.add(node_.io()
                                      .provider->getTimer()
                                      .afterDelay(kAskAgainMs * kj::MILLISECONDS)
                                      .then([this]() { AskTakeOver(); }));
                     }));
}

void LeaderRole::OnTakeOverReply(const replication::TakeOverReply& reply) {
  if (take_over_conn_.get() != nullptr) take_over_conn_->Close();
  const std::string target = handover_->target();
  if (handover_->StepsDown(reply)) {
    replication::NodeState following =
        replication::StateAfterHandover(leader_.state(), target, handover_->request(), reply);
    if (absl::Status s = replication::SaveNodeState(node_.state_path(), following); !s.ok()) {
      // Still "handing over" on disk, which a restart resolves by asking again.
      spdlog::error("cannot save the node state to follow '{}': {}", target, s.ToString());
    }
    if (reply.accepted) {
      spdlog::info("'{}' took over (epoch {}); this node follows it", target, reply.epoch);
      FinishHandover(HandoverOutcome{absl::OkStatus(), target, reply.epoch});
    } else {
      spdlog::warn("'{}' refused to take over but has seen epoch {}, newer than ours: this "
                   "node follows it and whichever node it names", target, reply.epoch);
      FinishHandover(HandoverOutcome{
          absl::FailedPreconditionError(absl::StrCat("'", target, "' refused: ", reply.message,
                                                     "; it knows a newer epoch (", reply.epoch,
                                                     "), so this node follows")),
          target, reply.epoch});
    }
    node_.SwitchRole(std::move(following));
    return;
  }
  // A clear refusal, and no newer epoch there: nothing changed on the target; lead on, in a
  // new epoch (as after any restart).
  replication::NodeState next = replication::StateForLeading(leader_.state(), leader_.latest(),
                                                             node_.options().node_id);
  absl::Status saved = replication::SaveNodeState(node_.state_path(), next);
  spdlog::warn("'{}' refused to take over: {}; this node leads on", target, reply.message);
  FinishHandover(HandoverOutcome{
      absl::FailedPreconditionError(absl::StrCat("'", target, "' refused to take over: ",
                                                 reply.message, "; ", node_.options().node_id,
                                                 " leads on")),
      node_.options().node_id, next.epoch});
  if (!saved.ok()) {
    // Still "handing over" on disk: take no writes, and ask again (the target refuses
    // again, and the save is tried again).
    spdlog::error("cannot save the node state to lead on: {}; asking '{}' again",
                  saved.ToString(), target);
    tasks_.add(node_.io()
                   .provider->getTimer()
                   .afterDelay(kAskAgainMs * kj::MILLISECONDS)
                   .then([this]() { AskTakeOver(); }));
    return;
  }
  node_.SwitchRole(std::move(next));
}

kj::Promise<void> LeaderRole::TakeOver(TakeOverContext ctx) {
  replication::TakeOver request = FromCapnp(ctx.getParams().getRequest());
  bool take_over = false;
  replication::TakeOverReply reply = replication::AnswerTakeOver(
      leader_.state(), leader_.latest(), node_.options().node_id, request, &take_over);
  ToCapnp(reply, ctx.getResults().initReply());
  return kj::READY_NOW;
}

}  // namespace walship::rpc
