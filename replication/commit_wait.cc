#include "replication/commit_wait.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "replication/shipper.h"

namespace walship::replication {

namespace {
constexpr SequenceNumber kAll = std::numeric_limits<SequenceNumber>::max();
}  // namespace

CommitWait::CommitWait(CommitWaitOptions options) : options_(options) {}

absl::Status CommitWait::Check(const Durability& need, size_t voters) {
  if (need.mode == ReplicationMode::kSemiSync && (need.acks == 0 || need.acks > voters)) {
    return absl::InvalidArgumentError(
        absl::StrCat("semi-sync asks for ", need.acks, " follower acks, but the cluster has ",
                     voters, voters == 1 ? " voting follower" : " voting followers"));
  }
  return absl::OkStatus();
}

// The highest sequence number that `need` holds for: the k-th highest acknowledged position
// at its level (semi-sync), the lowest (sync).
SequenceNumber CommitWait::Covered(const Leader& leader, const Durability& need) {
  if (need.mode == ReplicationMode::kAsync) return kAll;
  std::vector<SequenceNumber> at = leader.VoterPositions(need.level);
  if (need.mode == ReplicationMode::kSync) return at.empty() ? kAll : at.back();
  if (need.acks == 0 || at.size() < need.acks) return 0;
  return at[need.acks - 1];
}

std::optional<WaitOutcome> CommitWait::Add(uint64_t id, SequenceNumber seq,
                                           const Durability& need, bool pinned,
                                           const Leader& leader, int64_t now_us) {
  if (need.mode == ReplicationMode::kAsync) return WaitOutcome::kReplicated;
  if (degraded_ && !pinned) return WaitOutcome::kDegraded;
  if (Covered(leader, need) >= seq) return WaitOutcome::kReplicated;
  Queue& q = queues_[Key{need, pinned}];
  q.need = need;
  q.pinned = pinned;
  // In seq order: a committed read may wait for a seq above writes of a group whose waits
  // come after it (written on a worker meanwhile). Their deadlines then differ by that much.
  Wait w{id, seq, now_us + int64_t{options_.timeout_ms} * 1000};
  auto at = std::upper_bound(q.waits.begin(), q.waits.end(), seq,
                             [](SequenceNumber s, const Wait& x) { return s < x.seq; });
  q.waits.insert(at, w);
  return std::nullopt;
}

void CommitWait::OnWritten(SequenceNumber last_seq, int64_t now_us) {
  if (!degraded_) return;
  const int64_t bucket_us = std::max<int64_t>(1000, int64_t{options_.timeout_ms} * 1000 / 8);
  if (unreplicated_.empty() || now_us - unreplicated_.back().second >= bucket_us) {
    unreplicated_.emplace_back(last_seq, now_us);
  } else {
    unreplicated_.back().first = last_seq;
  }
}

void CommitWait::OnProgress(const Leader& leader, int64_t now_us, std::vector<Released>* out) {
  for (auto it = queues_.begin(); it != queues_.end();) {
    Queue& q = it->second;
    SequenceNumber covered = Covered(leader, q.need);
    while (!q.waits.empty() && q.waits.front().seq <= covered) {
      out->push_back(Released{q.waits.front().id, WaitOutcome::kReplicated});
      q.waits.pop_front();
    }
    it = q.waits.empty() ? queues_.erase(it) : std::next(it);
  }
  MaybeRecover(leader, now_us);
}

void CommitWait::Tick(const Leader& leader, int64_t now_us, std::vector<Released>* out) {
  (void)leader;
  for (auto it = queues_.begin(); it != queues_.end();) {
    Queue& q = it->second;
    if (!q.waits.empty() && q.waits.front().deadline_us <= now_us && !q.pinned &&
        options_.on_timeout == SyncTimeoutPolicy::kDegrade) {
      Degrade(now_us, out);  // releases every queue that is not pinned, this one too
      it = queues_.begin();
      continue;
    }
    while (!q.waits.empty() && q.waits.front().deadline_us <= now_us) {
      out->push_back(Released{q.waits.front().id, WaitOutcome::kTimedOut});
      q.waits.pop_front();
    }
    it = q.waits.empty() ? queues_.erase(it) : std::next(it);
  }
}

// The followers did not keep up: every wait that may degrade is acknowledged now, and later
// ones at once, until the followers have caught up again (MaybeRecover). The oldest of the
// writes released here must be covered before that: it is noted with the time it was written.
void CommitWait::Degrade(int64_t now_us, std::vector<Released>* out) {
  SequenceNumber highest = 0;
  int64_t oldest_us = now_us;
  for (auto it = queues_.begin(); it != queues_.end();) {
    Queue& q = it->second;
    if (q.pinned) {
      ++it;
      continue;
    }
    for (const Wait& w : q.waits) {
      out->push_back(Released{w.id, WaitOutcome::kDegraded});
      highest = std::max(highest, w.seq);
      oldest_us = std::min(oldest_us, w.deadline_us - int64_t{options_.timeout_ms} * 1000);
    }
    it = queues_.erase(it);
  }
  degraded_ = true;
  degraded_since_us_ = now_us;
  unreplicated_.clear();
  unreplicated_.emplace_back(highest, oldest_us);
}

// Back to the configured mode once the followers the cluster's mode needs hold every write
// older than half the timeout: writes waiting from then on can be expected to be covered in
// time, so the leader does not flap between the two.
void CommitWait::MaybeRecover(const Leader& leader, int64_t now_us) {
  if (!degraded_) return;
  SequenceNumber covered = Covered(leader, options_.cluster);
  while (!unreplicated_.empty() && unreplicated_.front().first <= covered) {
    unreplicated_.pop_front();
  }
  if (!unreplicated_.empty() &&
      unreplicated_.front().second <= now_us - int64_t{options_.timeout_ms} * 1000 / 2) {
    return;
  }
  degraded_ = false;
  unreplicated_.clear();
}

void CommitWait::EndAll(std::vector<Released>* out) {
  for (auto& [key, q] : queues_) {
    for (const Wait& w : q.waits) out->push_back(Released{w.id, WaitOutcome::kTimedOut});
  }
  queues_.clear();
}

int64_t CommitWait::NextWakeUp() const {
  int64_t at = kNever;
  for (const auto& [key, q] : queues_) {
    if (!q.waits.empty()) at = std::min(at, q.waits.front().deadline_us);
  }
  return at;  // a wait behind the front may time out later than its own deadline, by the
              // few microseconds a group's write took
}

Demand CommitWait::demand() const {
  Demand d;
  for (const auto& [key, q] : queues_) {
    if (q.waits.empty()) continue;
    d.upto = std::max(d.upto, q.waits.back().seq);
    if (q.need.level != AckLevel::kReceived) d.flush = true;
  }
  return d;
}

size_t CommitWait::waiting() const {
  size_t n = 0;
  for (const auto& [key, q] : queues_) n += q.waits.size();
  return n;
}

}  // namespace walship::replication
