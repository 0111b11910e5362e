// Reads in the simulated cluster (replication/sim_cluster.h): tokens of writes checked against
// every node's history, including writes a leader's machine lost before any follower had
// them, whose sequence numbers the next epoch writes again; and each follower's bound on its
// staleness checked against what its leader held.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "replication/sim_cluster_internal.h"

namespace walship::replication::sim::detail {

void Cluster::NoteWritten(int i, SequenceNumber last_seq, uint64_t index) {
  written_.push_back({ReadToken{nodes_[i].leader->epoch(), last_seq}, index});
  leader_log_.emplace_back(clock_.now_us, last_seq);
}

void Cluster::ReadAtRandom() {
  if (written_.empty()) return;
  int i = static_cast<int>(Uniform(0, kNodes - 1));
  Node& n = nodes_[i];
  if (!n.up || !n.engine) return;
  // Mostly recent writes: those a lagging follower lacks, or a lost tail's.
  size_t from = written_.size() > 300 ? written_.size() - 300 : 0;
  const Written& w = written_[static_cast<size_t>(Uniform(
      static_cast<int64_t>(from), static_cast<int64_t>(written_.size()) - 1))];
  SequenceNumber applied = n.engine->LatestSequence();
  ReadPosition at;
  if (n.leader) {
    at = PositionIn(n.leader->state(), applied, w.token.seq);
    at.lag_us = 0;
  } else if (n.follower) {
    at = n.follower->ReadPositionAt(applied, w.token.seq);
  } else if (n.recovery) {
    at = PositionIn(n.recovery->state(), applied, w.token.seq);
  } else {
    return;
  }
  const bool held = n.engine->Get(MarkerKey(w.index)).ok();
  ReadNeeds needs;
  needs.after = w.token;
  ReadCheck c = CheckRead(needs, at);
  const std::string what = absl::StrCat("a read at ", NodeId(i), " (applied ", applied,
                                        ") of write ", w.index, "'s token ",
                                        TokenText(w.token));
  if (c.verdict == ReadVerdict::kServe) {
    ++stats_.reads_served;
    Check(held, absl::StrCat(what, " was served, but that node does not hold the write"));
  } else if (c.verdict == ReadVerdict::kLost) {
    ++stats_.reads_lost;
    Check(!held, absl::StrCat(what, " was called lost, but that node holds the write: ", c.why));
  }
  // The same read by a bare sequence number, as before tokens: served without the write.
  needs.after.epoch = 0;
  if (CheckRead(needs, at).verdict == ReadVerdict::kServe && !held) ++stats_.bare_seq_stale;
}

std::string Cluster::Near(std::vector<std::pair<int64_t, SequenceNumber>>::iterator it) {
  std::string s;
  auto b = it - std::min<ptrdiff_t>(5, it - leader_log_.begin());
  for (auto e = b; e != leader_log_.end() && e < it + 5; ++e) {
    absl::StrAppend(&s, " (", clock_.now_us - e->first, " ago: ", e->second, ")");
  }
  return s;
}

void Cluster::CheckCaughtUp() {
  for (int i = 0; i < kNodes && failure_.empty(); ++i) {
    Node& n = nodes_[i];
    if (!n.up || !n.engine || n.link == nullptr || n.link->caught_up_us() == 0) continue;
    const int64_t at = n.link->caught_up_us();
    // What the leading node held at that moment: the last entry at or before it.
    auto it = std::upper_bound(leader_log_.begin(), leader_log_.end(), at,
                               [](int64_t t, const auto& e) { return t < e.first; });
    if (it == leader_log_.begin()) continue;
    SequenceNumber had = std::prev(it)->second;
    ++stats_.caught_up_checks;
    Check(n.engine->LatestSequence() >= had,
          absl::StrCat(NodeId(i), " believes itself caught up as of ", clock_.now_us - at,
                       " us ago, but holds seq ", n.engine->LatestSequence(),
                       " and the leader held ", had, " then; it follows ", n.link->leader_id(),
                       ", ", LeaderIndex(), " leads; log near: ", Near(it)));
  }
}

}  // namespace walship::replication::sim::detail
