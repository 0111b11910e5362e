#include "rpc/recovering_role.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "replication/handover.h"
#include "rpc/convert.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {

// A peer that does not answer is asked again this often.
constexpr int64_t kAskAgainMs = 500;

// The voting members: a learner was never waited for, so no acknowledged write depends on it.
std::vector<std::string> PeersOf(const Node& node) {
  return node.membership().VotersExcept(node.options().node_id);
}

}  // namespace

RecoveringRole::RecoveringRole(Node& node, replication::NodeState state)
    : node_(node),
      recovery_(std::move(state), node.engine().LatestSequence(), node.options().node_id,
                PeersOf(node), node.options().commit.cluster, node.MonoNowUs(),
                int64_t{node.options().leader_recovery_wait_ms} * 1000),
      tasks_(*this) {}

void RecoveringRole::taskFailed(kj::Exception&& e) {
  spdlog::warn("recovery task failed: {}", e.getDescription().cStr());
}

void RecoveringRole::Start() {
  spdlog::warn("node '{}' led epoch {} before it stopped, with its log ending at seq {}; asking "
               "{} how far they are before it leads again (no writes meanwhile)",
               node_.options().node_id, recovery_.state().epoch, recovery_.latest(), Waiting());
  for (const std::string& peer : recovery_.Unanswered()) Ask(peer);
  // Past the wait, the answers at hand may be enough.
  int64_t wait_us = recovery_.deadline_us() - node_.MonoNowUs();
  tasks_.add(node_.io()
                 .provider->getTimer()
                 .afterDelay(std::max<int64_t>(0, wait_us) * kj::MICROSECONDS)
                 .then([this]() { Decide(); }));
  Decide();  // no peers: lead at once
}

std::string RecoveringRole::Waiting() const {
  std::vector<std::string> ids = recovery_.Unanswered();
  return ids.empty() ? std::string("no peer") : absl::StrJoin(ids, ", ");
}

// Asks `peer` for its position, again every kAskAgainMs until it answers.
void RecoveringRole::Ask(const std::string& peer) {
  auto call = ConnectToPeer(node_.io(), node_.AddressOf(peer), node_.security())
                  .then([this, peer](kj::Own<PeerClient> conn) {
                    auto req = conn->node.positionRequest();
                    auto sent = req.send();
                    conns_[peer] = kj::mv(conn);
                    return sent.then([](capnp::Response<schema::PeerService::PositionResults> r) {
                      return FromCapnp(r.getPosition());
                    });
                  });
  tasks_.add(node_.io()
                 .provider->getTimer()
                 .timeoutAfter(kAskAgainMs * kj::MILLISECONDS, kj::mv(call))
                 .then(
                     [this, peer](replication::PeerPosition p) {
                       if (auto it = conns_.find(peer); it != conns_.end()) {
                         it->second->Close();
                         conns_.erase(it);
                       }
                       p.node = peer;  // the answer counts for the peer asked
                       spdlog::info("'{}' is at seq {} (epoch {})", peer, p.last_applied,
                                    p.last_applied_epoch);
                       recovery_.OnAnswer(p);
                       Decide();
                     },
                     [this, peer](kj::Exception&& e) {
                       conns_.erase(peer);
                       if (decided_) return;
                       spdlog::debug("no position from '{}' yet: {}", peer,
                                     e.getDescription().cStr());
                       tasks_.add(node_.io()
                                      .provider->getTimer()
                                      .afterDelay(kAskAgainMs * kj::MILLISECONDS)
                                      .then([this, peer]() { Ask(peer); }));
                     }));
}

void RecoveringRole::Decide() {
  if (decided_) return;
  replication::RecoveryVerdict v = recovery_.Decide(node_.MonoNowUs());
  const std::string& self = node_.options().node_id;
  replication::NodeState next;
  switch (v.kind) {
    case replication::RecoveryVerdict::Kind::kWait: return;
    case replication::RecoveryVerdict::Kind::kLead:
      next = replication::StateForLeading(recovery_.state(), recovery_.latest(), self);
      spdlog::info("node '{}' leads again, epoch {}: {}", self, next.epoch, v.why);
      break;
    case replication::RecoveryVerdict::Kind::kHandOver:
      next = replication::StateForHandingOver(recovery_.state(), v.target);
      spdlog::warn("node '{}' hands leadership to '{}': {}", self, v.target, v.why);
      break;
    case replication::RecoveryVerdict::Kind::kFollow:
      next = replication::StateForFollowing(recovery_.state(), v.target);
      spdlog::warn("node '{}' follows: {}", self, v.why);
      break;
  }
  if (absl::Status s = replication::SaveNodeState(node_.state_path(), next); !s.ok()) {
    spdlog::error("cannot save the node state after recovery: {}; asking again", s.ToString());
    tasks_.add(node_.io()
                   .provider->getTimer()
                   .afterDelay(kAskAgainMs * kj::MILLISECONDS)
                   .then([this]() { Decide(); }));
    return;
  }
  decided_ = true;
  node_.SwitchRole(std::move(next));
}

absl::Status RecoveringRole::WriteRefusal() const {
  return absl::UnavailableError(absl::StrCat(
      "node '", node_.options().node_id, "' is recovering: before it leads again it asks its "
      "peers whether they hold writes it lost (waiting for ", Waiting(), "); retry"));
}

void RecoveringRole::OnWritten(engine::Batch batch, int64_t) {
  spdlog::error("a recovering node wrote a client batch at seq {}", batch.first_seq);
}

kj::Promise<ReplicationOutcome> RecoveringRole::AwaitReplicated(engine::SequenceNumber seq,
                                                                const replication::Durability&,
                                                                bool) {
  return ReplicationOutcome{NotReplicatedError(
      absl::StrCat("seq ", seq, " was written while this node was recovering"))};
}

kj::Promise<absl::Status> RecoveringRole::AwaitCommitted(engine::SequenceNumber) {
  return WriteRefusal();
}

void RecoveringRole::FillStatus(schema::NodeStatus::Builder st) {
  st.setEpoch(recovery_.state().epoch);
  st.setDatabaseId(recovery_.state().database_id);
  st.setMessage(absl::StrCat("recovering: asking ", Waiting(),
                             " whether they hold writes past seq ", recovery_.latest(),
                             " before leading again"));
}

kj::Promise<void> RecoveringRole::Subscribe(SubscribeContext ctx, std::shared_ptr<PeerSessions>) {
  replication::HelloReply reply;
  reply.outcome = replication::HelloOutcome::kRefused;
  reply.message = absl::StrCat("node '", node_.options().node_id,
                               "' is recovering and does not lead yet; ask again");
  reply.epoch = recovery_.state().epoch;
  ToCapnp(reply, ctx.getResults().initReply());
  return kj::READY_NOW;
}

kj::Promise<void> RecoveringRole::TakeOver(TakeOverContext ctx) {
  replication::TakeOverReply reply;
  reply.message = "this node is recovering: it leads or follows once its peers have answered";
  reply.epoch = recovery_.state().HighestEpoch();
  ToCapnp(reply, ctx.getResults().initReply());
  return kj::READY_NOW;
}

kj::Promise<HandoverOutcome> RecoveringRole::HandOver(std::string, uint32_t) {
  return HandoverOutcome{WriteRefusal(), "", recovery_.state().epoch};
}

replication::PeerPosition RecoveringRole::Position() const {
  return replication::PositionOf(recovery_.state(), recovery_.latest(), node_.options().node_id);
}

}  // namespace walship::rpc
