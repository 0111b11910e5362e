// The simulated cluster's writes that wait for followers (replication/sim_cluster.h says what
// the simulation is): the run's replication, each write's own, what CommitWait releases, and
// the checks that what it acknowledged is still held as promised.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "replication/sim_cluster_internal.h"

namespace walship::replication::sim::detail {
namespace {

const AckLevel kLevels[] = {AckLevel::kReceived, AckLevel::kFlushed, AckLevel::kApplied};

SequenceNumber At(const FollowerInfo& f, AckLevel level) {
  switch (level) {
    case AckLevel::kReceived: return f.applied;  // as the Leader counts it
    case AckLevel::kFlushed: return f.durable;
    case AckLevel::kApplied: return std::min(f.durable, f.applied);
  }
  return 0;
}

}  // namespace

Durability Cluster::RandomDurability() {
  Durability d;
  int64_t mode = Uniform(0, 3);  // semi-sync twice as often
  d.mode = mode == 0 ? ReplicationMode::kAsync
           : mode == 3 ? ReplicationMode::kSync
                       : ReplicationMode::kSemiSync;
  d.acks = static_cast<uint32_t>(Uniform(1, kNodes - 1));
  d.level = kLevels[Uniform(0, 2)];
  return d;
}

void Cluster::ChooseReplication() {
  commit_.cluster = RandomDurability();
  commit_.timeout_ms = static_cast<uint32_t>(Uniform(20, 200));
  commit_.on_timeout = Chance(0.5) ? SyncTimeoutPolicy::kFail : SyncTimeoutPolicy::kDegrade;
}

void Cluster::AwaitFollowers(int i, SequenceNumber seq) {
  Node& n = nodes_[i];
  n.commit_wait->OnWritten(seq, clock_.now_us);
  bool pinned = Chance(0.2);  // a write that names its own
  Durability need = pinned ? RandomDurability() : commit_.cluster;
  uint64_t id = next_wait_++;
  std::optional<WaitOutcome> now = n.commit_wait->Add(id, seq, need, pinned, *n.leader,
                                                      clock_.now_us);
  n.waiting[id] = {seq, need, {machine_crash_count_, machine_crash_count_ + kNodes}};
  if (now.has_value()) OnReleased(i, {Released{id, *now}});
}

void Cluster::OnReleased(int i, const std::vector<Released>& released) {
  Node& n = nodes_[i];
  for (const Released& r : released) {
    auto it = n.waiting.find(r.id);
    if (!Check(it != n.waiting.end(), absl::StrCat("released an unknown wait ", r.id))) return;
    const SequenceNumber seq = it->second.seq;
    const Durability need = it->second.need;
    const std::vector<uint64_t> crashes = std::move(it->second.machine_crashes);
    n.waiting.erase(it);
    if (r.outcome == WaitOutcome::kDegraded) ++stats_.degraded;
    if (r.outcome == WaitOutcome::kTimedOut) ++stats_.not_replicated;
    if (r.outcome != WaitOutcome::kReplicated || need.mode == ReplicationMode::kAsync) continue;
    ++stats_.replicated;
    AckedWrite w;
    w.seq = seq;
    w.need = need;
    if (const EpochEntry* e = n.leader->state().EntryOf(seq); e != nullptr) w.epoch = *e;
    for (const FollowerInfo& f : n.leader->Followers()) {
      int h = NodeIndex(f.id);
      if (At(f, need.level) >= seq) w.holders.emplace_back(h, crashes[h]);
    }
    size_t wanted = need.mode == ReplicationMode::kSync ? kNodes - 1 : need.acks;
    Check(w.holders.size() >= wanted,
          absl::StrCat("seq ", seq, " acknowledged as ", Describe(need), " with ",
                       w.holders.size(), " followers holding it"));
    acked_.push_back(std::move(w));
  }
}

// At the end every node is up. A follower that acknowledged a write as flushed (or applied)
// holds it whatever crashed since; one that acknowledged it as received, unless its machine
// crashed since (the OS buffers the write was in are gone then). And the leader holds every
// write acknowledged as flushed, in the history it was written in: a leader that lost it never
// leads with less (replication/recovery.h).
void Cluster::CheckAckedWrites() {
  const Node& leader = nodes_[LeaderIndex()];
  for (const AckedWrite& w : acked_) {
    if (w.need.level != AckLevel::kReceived) {
      const EpochEntry* e = leader.leader->state().EntryOf(w.seq);
      bool held = leader.leader->latest() >= w.seq && e != nullptr && *e == w.epoch;
      if (!Check(held, absl::StrCat("the leader lost seq ", w.seq, ", acknowledged as ",
                                    Describe(w.need), " in epoch ", w.epoch.epoch, " of '",
                                    w.epoch.leader, "'; it holds up to ",
                                    leader.leader->latest()))) {
        return;
      }
    }
    for (auto [h, crashes] : w.holders) {
      if (w.need.level == AckLevel::kReceived && machine_crash_count_[h] != crashes) continue;
      SequenceNumber held = nodes_[h].engine->LatestSequence();
      if (!Check(held >= w.seq, absl::StrCat(NodeId(h), " acknowledged seq ", w.seq, " as ",
                                             AckLevelName(w.need.level), " (",
                                             Describe(w.need), ") but holds only up to ",
                                             held))) {
        return;
      }
    }
  }
}

}  // namespace walship::replication::sim::detail
