// W2's lag probe, shared by walship-bench and walship-peers: a marker written to the leader
// every 10 ms on its own connection, and each follower watched by a thread of its own, which
// polls it from the moment a marker is acknowledged until it returns that marker or a later
// one. A marker's lag is the time that answer arrived minus the time its acknowledgement
// arrived; one answer settles every marker it covers, so a follower that falls behind gives
// as many samples as one that keeps up. Polls come back to back while the oldest waiting
// marker is younger than a millisecond, then every tenth of its age (at most 100 µs apart),
// so that the figure resolves tens of microseconds without a slow follower being flooded.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/bench_cluster.h"

namespace walship::bench {

// Writes marker `seq` to the leader and returns once it is acknowledged. Made and used on the
// probe's writer thread.
class MarkerWriter {
 public:
  virtual ~MarkerWriter() = default;
  virtual absl::Status Write(uint64_t seq) = 0;
  // Runs after each acknowledgement has been taken down (walship samples the leader's own
  // status here).
  virtual void AfterAck() {}
};

// The highest marker a follower serves, 0 for none. Made and used on that follower's thread.
class MarkerReader {
 public:
  virtual ~MarkerReader() = default;
  virtual absl::StatusOr<uint64_t> Read() = 0;
};

class LagProbe {
 public:
  struct Follower {
    std::string id;  // "n2", "r1", ...
    std::function<absl::StatusOr<std::unique_ptr<MarkerReader>>()> connect;
  };
  LagProbe(std::function<absl::StatusOr<std::unique_ptr<MarkerWriter>>()> connect_writer,
           std::vector<Follower> followers);
  ~LagProbe();
  // Stops writing markers, waits (at most a second past the last) until every follower has
  // shown or missed each, and stops every thread; the results below are complete once it
  // returns. Called again, it does nothing.
  void Stop();

  struct Samples {
    std::vector<double> lag_ms;
    std::vector<std::pair<double, double>> series;  // (s since the start, lag ms), in order
    std::vector<double> read_us;                    // every poll's round trip
    int unseen = 0;  // markers not served within a second of their acknowledgement
  };
  // Per follower id; read only after Stop().
  const std::map<std::string, Samples>& results() const { return results_; }
  // The last lag any follower showed, for a progress line (-1 before the first).
  double last_lag_ms() const { return last_lag_ms_.load(); }
  // lag_p50_ms/ID, lag_p99_ms/ID, lag_max_ms/ID, lag_unseen/ID, read_p50_us/ID per follower,
  // lag_p99_ms/worst, lag_markers (acknowledged) and lag_probe_errors (failed connections and
  // marker writes, each logged); call after Stop().
  void AddCounters(Row& row) const;

 private:
  struct Acked {
    uint64_t seq;
    Clock::time_point at;
  };
  void RunWriter(std::function<absl::StatusOr<std::unique_ptr<MarkerWriter>>()> connect);
  void RunFollower(size_t index, Follower f);

  Clock::time_point t0_ = Clock::now();
  std::mutex mu_;
  std::condition_variable acked_cv_;
  std::deque<Acked> acked_;               // every acknowledged marker, in order
  bool stopped_ = false;                  // Stop() ran
  std::atomic<bool> stop_writer_{false};  // the writer writes no more markers
  bool draining_ = false;                 // (mu_) followers settle what is acked, then end
  std::atomic<double> last_lag_ms_{-1};
  std::atomic<int> errors_{0};
  size_t markers_ = 0;            // acknowledged, known after Stop()
  std::vector<Samples> samples_;  // per follower, written by that follower's thread
  std::vector<std::string> ids_;
  std::map<std::string, Samples> results_;
  std::vector<std::thread> threads_;
};

}  // namespace walship::bench
