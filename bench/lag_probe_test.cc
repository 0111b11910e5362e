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

class FakeWriter : public MarkerWriter {
 public:
  explicit FakeWriter(FakeCluster* c) : c_(c) {}
  absl::Status Write(uint64_t seq) override {
    std::lock_guard<std::mutex> l(c_->mu);
    c_->written.push_back({seq, Clock::now()});
    return absl::OkStatus();
  }

 private:
  FakeCluster* c_;
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
  std::this_thread::sleep_for(milliseconds(1600));
  probe.Stop();
  size_t markers = cluster.written.size();
  ASSERT_GE(markers, 50u);

  const auto& r = probe.results();
  // Every marker acknowledged more than its delay (plus scheduling slack) before the end has
  // its sample: the far follower is not measured less often than the near one.
  EXPECT_GE(r.at("near").lag_ms.size(), markers - 5);
  EXPECT_GE(r.at("far").lag_ms.size(), markers - 10);
  // Never less than the true lag (less the moment between the write and its acknowledgement
  // being taken down).
  for (double lag : r.at("near").lag_ms) EXPECT_GE(lag, 1.95);
  for (double lag : r.at("far").lag_ms) EXPECT_GE(lag, 34.95);
  Row row;
  probe.AddCounters(row);
  // Polled finely: the median is within half a millisecond of the true lag on an idle
  // machine, and within 5 ms on a loaded one.
  EXPECT_LT(row.counters.at("lag_p50_ms/near"), 2.0 + 5);
  EXPECT_LT(row.counters.at("lag_p50_ms/far"), 35.0 + 5);
  EXPECT_EQ(row.counters.at("lag_unseen/near"), 0);
  EXPECT_EQ(row.counters.at("lag_unseen/far"), 0);
  // The markers of the first ~0.6 s were never shown, each counted once.
  EXPECT_GE(row.counters.at("lag_unseen/never"), 20);
  EXPECT_LE(row.counters.at("lag_unseen/never"), markers);
  EXPECT_TRUE(r.at("never").lag_ms.empty());
  EXPECT_GE(row.counters.at("lag_p99_ms/worst"), 35.0);
  EXPECT_GT(row.counters.at("read_p50_us/near"), 0);
}

}  // namespace
}  // namespace walship::bench
