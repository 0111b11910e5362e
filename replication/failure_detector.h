// Phi-accrual failure detection (Hayashibara, Défago, Yared and Katayama, 2004; the detector of
// Cassandra and Akka). Instead of a fixed time-out it keeps the recent intervals between a
// peer's heartbeats and says how unlikely the silence so far is, given them:
//
//   phi(t) = -log10(P(an interval is longer than t)),
//
// t being the time since the last heartbeat, under a normal distribution of the intervals
// seen (mean, standard deviation; the deviation is never taken below a floor, so that a
// perfectly regular peer is not suspected a hair past its usual interval). phi = 1 means a
// 10% chance that the peer is merely slow, phi = 8 one in 10^8. A node suspects the peer once
// phi passes a threshold: on a network whose heartbeats arrive like clockwork that is soon
// after the usual interval; where they are late now and then (a loaded machine, a busy
// event loop) it waits as long as lateness has been seen to last.
//
// Thread safety: none; one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

namespace walship::replication {

class PhiAccrualDetector {
 public:
  // Intervals kept: the last `window`. Below `min_samples` of them the detector knows too
  // little and suspects no one (SuspectAfterUs answers 0).
  static constexpr size_t kDefaultWindow = 200;
  static constexpr size_t kMinSamples = 5;

  // Intervals longer than `max_interval_us` (0: none) are not kept: a gap that long is a
  // failure or a partition, not the heartbeats' spread, and would make every later silence
  // look ordinary (Cassandra drops them too).
  explicit PhiAccrualDetector(int64_t min_std_us, size_t window = kDefaultWindow,
                              int64_t max_interval_us = 0);

  // A heartbeat arrived at `now_us` (a monotonic clock).
  void OnHeartbeat(int64_t now_us);
  // A heartbeat of `source` in its `generation` (a leader and its epoch) arrived: one of another
  // source or generation than the last starts afresh (Reset), as another leader's heartbeats
  // say nothing of this one's.
  void OnHeartbeatFrom(const std::string& source, uint64_t generation, int64_t now_us);
  // Forgets every interval and the last heartbeat (another peer, or the same in a new epoch).
  void Reset();
  // How unlikely the silence since the last heartbeat is at `now_us`; 0 before enough
  // intervals were seen, and at most kMaxPhi (far past any useful threshold: certainty).
  double Phi(int64_t now_us) const;
  static constexpr double kMaxPhi = 1000;
  // The silence after the last heartbeat at which phi reaches `threshold`; 0 before enough
  // intervals were seen.
  int64_t SuspectAfterUs(double threshold) const;

  int64_t last_heartbeat_us() const { return last_us_; }  // 0: none yet
  size_t samples() const { return intervals_.size(); }
  double mean_us() const;
  double std_us() const;  // at least the floor

 private:
  double PhiAfter(double silence_us) const;

  const int64_t min_std_us_;
  const size_t window_;
  const int64_t max_interval_us_;
  std::deque<int64_t> intervals_;
  double sum_ = 0, sum_sq_ = 0;
  int64_t last_us_ = 0;
  std::string source_;  // OnHeartbeatFrom's last source and generation
  uint64_t generation_ = 0;
};

}  // namespace walship::replication
