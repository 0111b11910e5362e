// The leader's wait for its followers: each write that asked for semi-sync or sync waits here
// until enough voting followers have acknowledged it at its level, and is released then,
// with every write before it that the same acknowledgements cover (one ack releases a whole
// group). A write not covered within the timeout fails as not replicated, or, under the
// degrade policy, the leader runs async until its followers are back.
//
// Event in, released writes out, as the Shipper: the role adds waits and reports progress
// (acks) with monotonic times; Tick runs the timeouts by NextWakeUp. Reads that must see only
// replicated data (committed reads) wait here too.
//
// Thread safety: none; one thread at a time (with its Leader).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "replication/durability.h"
#include "replication/leader.h"
#include "replication/shipper.h"

namespace walship::replication {

struct CommitWaitOptions {
  Durability cluster;  // what a write that names no mode of its own asks for
  uint32_t timeout_ms = 10000;
  SyncTimeoutPolicy on_timeout = SyncTimeoutPolicy::kFail;
};

enum class WaitOutcome {
  kReplicated,  // the followers it asked for have it
  kDegraded,    // acknowledged without them: the leader runs async (degrade policy)
  kTimedOut,    // not covered within the timeout: written here, replication in doubt
};

struct Released {
  uint64_t id = 0;
  WaitOutcome outcome = WaitOutcome::kReplicated;
};

class CommitWait {
 public:
  explicit CommitWait(CommitWaitOptions options);

  // Whether `need` can be met by a leader with `voters` voting followers (semi-sync asks for
  // at most that many); an error naming both when not.
  static absl::Status Check(const Durability& need, size_t voters);

  // Write (or read) `id` waits until `seq` is covered as `need` asks. `pinned` waits are never
  // degraded (writes that named their mode, committed reads): they time out. Returns the
  // outcome at once when there is nothing to wait for (async, covered already, degraded).
  std::optional<WaitOutcome> Add(uint64_t id, SequenceNumber seq, const Durability& need,
                                 bool pinned, const Leader& leader, int64_t now_us);

  // A local write; while degraded, its time tells when the followers are back.
  void OnWritten(SequenceNumber last_seq, int64_t now_us);

  // Followers acknowledged more: the waits now covered are released.
  void OnProgress(const Leader& leader, int64_t now_us, std::vector<Released>* out);

  // Runs the timeouts due by `now_us`.
  void Tick(const Leader& leader, int64_t now_us, std::vector<Released>* out);

  // Releases every wait as timed out (the node stops leading).
  void EndAll(std::vector<Released>* out);

  int64_t NextWakeUp() const;
  Demand demand() const;
  size_t waiting() const;

  bool degraded() const { return degraded_; }
  int64_t degraded_since_us() const { return degraded_since_us_; }
  const CommitWaitOptions& options() const { return options_; }

 private:
  struct Wait {
    uint64_t id = 0;
    SequenceNumber seq = 0;
    int64_t deadline_us = 0;
  };
  // Waits asking for the same thing, in seq order (and so in deadline order).
  struct Queue {
    Durability need;
    bool pinned = false;
    std::deque<Wait> waits;
  };
  using Key = std::pair<Durability, bool>;

  static SequenceNumber Covered(const Leader& leader, const Durability& need);
  void Degrade(int64_t now_us, std::vector<Released>* out);
  void MaybeRecover(const Leader& leader, int64_t now_us);

  const CommitWaitOptions options_;
  std::map<Key, Queue> queues_;
  bool degraded_ = false;
  int64_t degraded_since_us_ = 0;
  // While degraded: (last seq, time of the first write) of the writes since, in buckets of
  // a fraction of the timeout (so their number stays small however long it lasts).
  std::deque<std::pair<SequenceNumber, int64_t>> unreplicated_;
};

}  // namespace walship::replication
