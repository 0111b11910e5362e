#include "replication/recovery.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace walship::replication {

PeerPosition PositionOf(const NodeState& state, SequenceNumber latest, const std::string& self) {
  PeerPosition p;
  p.node = self;
  p.database_id = state.database_id;
  p.highest_epoch = state.HighestEpoch();
  p.last_applied = latest;
  if (const EpochEntry* e = state.EntryOf(latest); e != nullptr) {
    p.last_applied_epoch = e->epoch;
    p.last_applied_leader = e->leader;
  }
  p.needs_snapshot = !state.needs_snapshot.empty();
  return p;
}

Recovery::Recovery(NodeState state, SequenceNumber latest, std::string self,
                   std::vector<std::string> peers, const Durability& cluster, int64_t now_us,
                   int64_t wait_us)
    : state_(std::move(state)),
      latest_(latest),
      self_(std::move(self)),
      peers_(std::move(peers)),
      needed_(Needed(cluster, peers_.size())),
      deadline_us_(now_us + wait_us) {}

size_t Recovery::Needed(const Durability& cluster, size_t peers) {
  switch (cluster.mode) {
    case ReplicationMode::kAsync: return 0;
    case ReplicationMode::kSync: return std::min<size_t>(1, peers);
    case ReplicationMode::kSemiSync:
      return cluster.acks > peers ? peers : peers - cluster.acks + 1;
  }
  return peers;
}

void Recovery::OnAnswer(const PeerPosition& answer) {
  if (std::find(peers_.begin(), peers_.end(), answer.node) == peers_.end()) return;
  answers_[answer.node] = answer;
}

bool Recovery::HoldsMore(const PeerPosition& a) const {
  if (a.needs_snapshot || a.database_id != state_.database_id || a.last_applied <= latest_) {
    return false;
  }
  EpochEntry theirs{a.last_applied_epoch, 0, a.last_applied_leader};
  for (const EpochEntry& e : state_.history) {
    if (e.epoch == a.last_applied_epoch) return e.SameEpoch(theirs);
  }
  return false;
}

RecoveryVerdict Recovery::Decide(int64_t now_us) const {
  RecoveryVerdict v;
  for (const auto& [id, a] : answers_) {
    if (a.database_id == state_.database_id && a.highest_epoch > state_.HighestEpoch()) {
      v.kind = RecoveryVerdict::Kind::kFollow;
      v.target = id;
      v.why = absl::StrCat("'", id, "' has seen epoch ", a.highest_epoch, ", newer than this "
                           "node's ", state_.HighestEpoch(), ": another node leads");
      return v;
    }
  }
  const bool all = answers_.size() == peers_.size();
  if (!all && (now_us < deadline_us_ || answers_.size() < needed_)) return v;  // kWait
  const PeerPosition* best = nullptr;
  for (const auto& [id, a] : answers_) {
    if (HoldsMore(a) && (best == nullptr || a.last_applied > best->last_applied)) best = &a;
  }
  std::string heard = answers_.empty() ? "no peer answered" : "";
  if (!answers_.empty()) {
    std::vector<std::string> ids;
    for (const auto& [id, a] : answers_) ids.push_back(id);
    heard = absl::StrCat("heard from ", absl::StrJoin(ids, ", "));
  }
  if (best != nullptr) {
    v.kind = RecoveryVerdict::Kind::kHandOver;
    v.target = best->node;
    v.why = absl::StrCat("'", best->node, "' holds this node's writes up to seq ",
                         best->last_applied, " (epoch ", best->last_applied_epoch,
                         "), past this node's log, which ends at ", latest_,
                         ": this node lost them (", heard, ")");
    return v;
  }
  v.kind = RecoveryVerdict::Kind::kLead;
  v.why = absl::StrCat("no peer holds a write past seq ", latest_, " (", heard,
                       all ? "" : absl::StrCat("; the others did not answer within the wait"),
                       ")");
  return v;
}

std::vector<std::string> Recovery::Unanswered() const {
  std::vector<std::string> out;
  for (const std::string& p : peers_) {
    if (!answers_.count(p)) out.push_back(p);
  }
  return out;
}

}  // namespace walship::replication
