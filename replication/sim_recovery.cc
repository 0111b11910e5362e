// The simulated cluster's restarted leaders (replication/sim_cluster.h says what the
// simulation is): before a node that led leads again it asks its peers how far they are, as
// rpc::RecoveringRole does, over connections of its own, and leads, hands leadership to the
// peer holding writes it lost, or follows a peer that has seen a newer epoch.
#include <cstdio>
#include <cstdlib>

#include "replication/sim_cluster_internal.h"

namespace walship::replication::sim::detail {

bool Cluster::StartRecovery(int i, const NodeState& state) {
  if (state.history.empty()) return false;  // a new database: nothing to ask
  Node& n = nodes_[i];
  std::vector<std::string> peers;
  for (int j = 0; j < kNodes; ++j) {
    if (j != i) peers.push_back(NodeId(j));
  }
  n.recovery.emplace(state, n.engine->LatestSequence(), NodeId(i), peers, commit_.cluster,
                     clock_.now_us, kRecoveryWaitUs);
  ++stats_.recoveries;
  AskPositions(i);
  return true;
}

void Cluster::AskPositions(int i) {
  Node& n = nodes_[i];
  if (!n.up || !n.recovery.has_value()) return;
  DecideRecovery(i);
  if (!n.recovery.has_value()) return;
  for (const std::string& peer : n.recovery->Unanswered()) {
    Send(OpenCall(i, NodeIndex(peer)), true, Message(MsgType::kPosition));
  }
  Event again(Kind::kRecoveryAsk);
  again.node = i;
  again.incarnation = n.incarnation;
  Schedule(std::move(again), kRecoveryAskUs);
}

PeerPosition Cluster::PositionOfNode(int i) const {
  const Node& n = nodes_[i];
  NodeState state = n.follower   ? n.follower->state()
                    : n.leader   ? n.leader->state()
                    : n.recovery ? n.recovery->state()
                                 : NodeState{};
  SequenceNumber latest = n.recovery ? n.recovery->latest() : n.engine->LatestSequence();
  return PositionOf(state, latest, NodeId(i));
}

void Cluster::OnPosition(uint64_t conn_id) {
  Conn& c = conns_[conn_id];
  if (!nodes_[c.from].up) return;
  Message m(MsgType::kPositionReply);
  m.position = PositionOfNode(c.from);
  Send(conn_id, false, std::move(m));
}

void Cluster::OnPositionReply(uint64_t conn_id, const PeerPosition& p) {
  Conn& c = conns_[conn_id];
  c.open = false;
  Node& n = nodes_[c.to];
  if (!n.recovery.has_value()) return;
  n.recovery->OnAnswer(p);
  DecideRecovery(c.to);
}

void Cluster::DecideRecovery(int i) {
  Node& n = nodes_[i];
  RecoveryVerdict v = n.recovery->Decide(clock_.now_us);
  NodeState next;
  switch (v.kind) {
    case RecoveryVerdict::Kind::kWait: return;
    case RecoveryVerdict::Kind::kLead:
      next = StateForLeading(n.recovery->state(), n.recovery->latest(), NodeId(i));
      break;
    case RecoveryVerdict::Kind::kHandOver:
      next = StateForHandingOver(n.recovery->state(), v.target);
      ++stats_.recovery_handovers;
      break;
    case RecoveryVerdict::Kind::kFollow:
      next = StateForFollowing(n.recovery->state(), v.target);
      break;
  }
  if (std::getenv("WALSHIP_SIM_TRACE") != nullptr) {
    std::fprintf(stderr, "t=%lld %s recovered: %s\n", static_cast<long long>(clock_.now_us),
                 NodeId(i).c_str(), v.why.c_str());
  }
  if (!Check(SaveNodeState(StatePath(i), next).ok(), "recovery state saved")) return;
  n.recovery.reset();
  BecomeFromState(i, next);
}

}  // namespace walship::replication::sim::detail
