// The W2 probe measures what it claims: followers that show each marker a known time after it
// was written give that lag (not less, and not much more), a follower far behind still gives
// a sample per marker, and one that never shows them counts them as unseen.
#include "bench/lag_probe.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

namespace walship::bench {
namespace {

// A leader whose writes followers show `delay` after they were made.
struct FakeCluster {
  std::mutex mu;
  std::vector<std::pair<uint64_t, Clock::time_point>> written;

  uint64_t VisibleAfter(Clock::duration delay) {
    std::lock_guard<std::mutex> l(mu);
    uint64_t seq = 0;
    for (const auto& [s, at] : written) {
      if (at + delay <= Clock::now()) seq = s;
    }
    return seq;
  }
};

// Its writes become visible from the moment the probe has taken down their acknowledgement
// (AfterAck), so that a lag below the follower's delay is the probe's error, not the fake's.
class FakeWriter : public MarkerWriter {
 public:
  explicit FakeWriter(FakeCluster* c) : c_(c) {}
  absl::Status Write(uint64_t seq) override {
    last_ = seq;
    return absl::OkStatus();
  }
  void AfterAck() override {
    std::lock_guard<std::mutex> l(c_->mu);
    c_->written.push_back({last_, Clock::now()});
  }

 private:
  FakeCluster* c_;
  uint64_t last_ = 0;
};

class FakeReader : public MarkerReader {
 public:
  FakeReader(FakeCluster* c, Clock::duration delay) : c_(c), delay_(delay) {}
  absl::StatusOr<uint64_t> Read() override { return c_->VisibleAfter(delay_); }

 private:
  FakeCluster* c_;
  Clock::duration delay_;
};

LagProbe::Follower Behind(const std::string& id, FakeCluster* c, Clock::duration delay) {
  return {id, [c, delay]() -> absl::StatusOr<std::unique_ptr<MarkerReader>> {
            return std::make_unique<FakeReader>(c, delay);
          }};
}

TEST(LagProbeTest, GivesEachFollowersOwnLagAndASamplePerMarker) {
  using std::chrono::milliseconds;
  FakeCluster cluster;
  LagProbe probe(
      [&]() -> absl::StatusOr<std::unique_ptr<MarkerWriter>> {
        return std::make_unique<FakeWriter>(&cluster);
      },
      {Behind("near", &cluster, milliseconds(2)), Behind("far", &cluster, milliseconds(35)),
       Behind("never", &cluster, std::chrono::hours(1))});
  std::this_thread::sleep_for(milliseconds(600));
  probe.Stop();
  probe.Stop();  // again: nothing changes
  size_t markers = cluster.written.size();
  ASSERT_GE(markers, 20u);

  const auto& r = probe.results();
  // Every acknowledged marker is settled by the end: the far follower is measured as often as
  // the near one, and the one that never shows them counts each as unseen (after a second).
  EXPECT_EQ(r.at("near").lag_ms.size(), markers);
  EXPECT_EQ(r.at("far").lag_ms.size(), markers);
  EXPECT_EQ(r.at("never").unseen, static_cast<int>(markers));
  EXPECT_TRUE(r.at("never").lag_ms.empty());
  // Never less than the true lag.
  for (double lag : r.at("near").lag_ms) EXPECT_GE(lag, 2.0);
  for (double lag : r.at("far").lag_ms) EXPECT_GE(lag, 35.0);
  Row row;
  probe.AddCounters(row);
  // Polled finely: the median is within half a millisecond of the true lag on an idle
  // machine, and within 5 ms on a loaded one.
  EXPECT_LT(row.counters.at("lag_p50_ms/near"), 2.0 + 5);
  EXPECT_LT(row.counters.at("lag_p50_ms/far"), 35.0 + 5);
  EXPECT_EQ(row.counters.at("lag_unseen/near"), 0);
  EXPECT_EQ(row.counters.at("lag_unseen/far"), 0);
  EXPECT_EQ(row.counters.at("lag_unseen/never"), markers);
  EXPECT_EQ(row.counters.at("lag_markers"), markers);
  EXPECT_EQ(row.counters.at("lag_probe_errors"), 0);
  EXPECT_GE(row.counters.at("lag_p99_ms/worst"), 35.0);
  EXPECT_GT(row.counters.at("read_p50_us/near"), 0);
}

// A follower that still serves a later marker than this probe's first (an earlier probe's
// last) does not settle this probe's markers early.
TEST(LagProbeTest, AnEarlierProbesMarkerDoesNotCountAsThisOnes) {
  using std::chrono::milliseconds;
  FakeCluster cluster;
  {
    std::lock_guard<std::mutex> l(cluster.mu);
    cluster.written.push_back({1000, Clock::now() - std::chrono::hours(1)});  // any number
  }
  LagProbe probe(
      [&]() -> absl::StatusOr<std::unique_ptr<MarkerWriter>> {
        return std::make_unique<FakeWriter>(&cluster);
      },
      {Behind("n2", &cluster, milliseconds(20))});
  std::this_thread::sleep_for(milliseconds(200));
  probe.Stop();
  const auto& r = probe.results();
  ASSERT_FALSE(r.at("n2").lag_ms.empty());
  for (double lag : r.at("n2").lag_ms) EXPECT_GE(lag, 20.0);
}

}  // namespace
}  // namespace walship::bench
