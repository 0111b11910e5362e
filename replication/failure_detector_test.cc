// Unit tests of the phi-accrual failure detector (replication/failure_detector.h) and of how an
// election waits on it (replication/election.h).
#include "replication/failure_detector.h"

#include <gtest/gtest.h>

#include "replication/election.h"

namespace walship::replication {
namespace {

constexpr int64_t kMs = 1000;

// Heartbeats every `every_ms`, except every `late_each`-th which comes `late_ms` after the one
// before; `count` of them, the first at `start_us`. Returns the last one's time.
int64_t Beat(PhiAccrualDetector& d, int64_t start_us, int count, int64_t every_ms,
             int late_each = 0, int64_t late_ms = 0) {
  int64_t t = start_us;
  for (int i = 0; i < count; ++i) {
    t += (late_each > 0 && i % late_each == late_each - 1 ? late_ms : every_ms) * kMs;
    d.OnHeartbeat(t);
  }
  return t;
}

TEST(PhiAccrualTest, SuspectsNoOneBeforeItHasSeenEnough) {
  PhiAccrualDetector d(10 * kMs);
  EXPECT_EQ(d.Phi(5000 * kMs), 0);
  int64_t t = Beat(d, 0, PhiAccrualDetector::kMinSamples, 100);  // one interval fewer
  EXPECT_EQ(d.samples(), PhiAccrualDetector::kMinSamples - 1);
  EXPECT_EQ(d.Phi(t + 60'000 * kMs), 0);
  EXPECT_EQ(d.SuspectAfterUs(8), 0);
  d.OnHeartbeat(t + 100 * kMs);
  EXPECT_GT(d.Phi(t + 60'000 * kMs), 8);
  EXPECT_GT(d.SuspectAfterUs(8), 0);
}

TEST(PhiAccrualTest, PhiGrowsWithSilenceAndCrossesTheThresholdWhereItSays) {
  PhiAccrualDetector d(10 * kMs);
  int64_t last = Beat(d, 0, 100, 100);
  EXPECT_NEAR(d.mean_us(), 100 * kMs, 1);
  EXPECT_EQ(d.std_us(), 10 * kMs);  // regular: the floor
  // At the usual interval the silence is unremarkable; phi only grows after.
  EXPECT_LT(d.Phi(last + 100 * kMs), 0.5);
  double before = 0;
  for (int64_t ms = 50; ms <= 400; ms += 10) {
    double phi = d.Phi(last + ms * kMs);
    EXPECT_GE(phi, before) << ms;
    before = phi;
  }
  int64_t after = d.SuspectAfterUs(8);
  // Mean 100 ms, deviation 10 ms: 8 is about 5.2 deviations past the mean.
  EXPECT_GT(after, 140 * kMs);
  EXPECT_LT(after, 170 * kMs);
  EXPECT_GE(d.Phi(last + after), 8);
  EXPECT_LT(d.Phi(last + after - 100), 8);
  // A higher threshold waits longer.
  EXPECT_GT(d.SuspectAfterUs(12), after);
}

TEST(PhiAccrualTest, WaitsLongerForAPeerWhoseHeartbeatsAreLateNowAndThen) {
  PhiAccrualDetector regular(10 * kMs), irregular(10 * kMs);
  Beat(regular, 0, 100, 100);
  Beat(irregular, 0, 100, 100, /*late_each=*/10, /*late_ms=*/400);
  EXPECT_GT(irregular.SuspectAfterUs(8), 3 * regular.SuspectAfterUs(8));
  EXPECT_GT(irregular.SuspectAfterUs(8), 400 * kMs);  // the lateness seen is not suspected
}

TEST(PhiAccrualTest, ForgetsWhatFellOutOfItsWindow) {
  PhiAccrualDetector d(10 * kMs, /*window=*/50);
  int64_t t = Beat(d, 0, 50, 100, 5, 600);
  int64_t wary = d.SuspectAfterUs(8);
  Beat(d, t, 50, 100);  // fifty regular ones push the late ones out
  EXPECT_EQ(d.samples(), 50u);
  EXPECT_LT(d.SuspectAfterUs(8), wary / 3);
  EXPECT_NEAR(d.mean_us(), 100 * kMs, 1);
}

TEST(PhiAccrualTest, ATimeGoingBackwardsIsNoSample) {
  PhiAccrualDetector d(10 * kMs);
  int64_t t = Beat(d, 0, 10, 100);
  d.OnHeartbeat(t - 50 * kMs);
  EXPECT_EQ(d.samples(), 9u);  // ten heartbeats, nine intervals
  EXPECT_EQ(d.last_heartbeat_us(), t);
}

ElectionOptions Opts(double phi) {
  ElectionOptions o;
  o.self = "n2";
  o.cluster = "c";
  o.election_timeout_ms = 150;
  o.jitter_ms = 0;
  o.phi_threshold = phi;
  o.phi_min_std_ms = 10;
  return o;
}

// The election time-out is the least wait; phi only makes a node wait longer, as long as its
// leader's heartbeats have lately been late.
TEST(PhiAccrualTest, AnElectionStandsNoSoonerThanItsTimeOutAndLaterWhenPhiSaysSo) {
  for (double phi : {0.0, 8.0}) {
    SCOPED_TRACE(phi);
    Election steady(Opts(phi), 1, 0), jittery(Opts(phi), 1, 0);
    int64_t s = 0, j = 0;
    for (int i = 1; i <= 100; ++i) {  // every 20 ms; for the jittery one every tenth 320 ms
      s += 20 * kMs;
      j += (i % 10 == 0 ? 320 : 20) * kMs;
      steady.OnLeaderHeartbeat("n1", 3, s);
      jittery.OnLeaderHeartbeat("n1", 3, j);
    }
    EXPECT_EQ(steady.NextWakeUp(), s + 150 * kMs);  // phi 8 comes at about 80 ms: the floor
    if (phi == 0) {
      EXPECT_EQ(jittery.NextWakeUp(), j + 150 * kMs);
    } else {
      EXPECT_GT(jittery.NextWakeUp(), j + 320 * kMs);  // waits past the lateness it saw
      EXPECT_GT(jittery.LeaderPhi(j + 150 * kMs), 0);
      EXPECT_LT(jittery.LeaderPhi(j + 150 * kMs), 8);
    }
    // Contact by data (no heartbeat) moves the wait on from there, phi's no sooner.
    jittery.OnLeaderContact(j + 10 * kMs);
    EXPECT_GE(jittery.NextWakeUp(), j + 160 * kMs);
    // Another leader's heartbeats start afresh: phi knows nothing of it yet.
    jittery.OnLeaderHeartbeat("n3", 4, j + 20 * kMs);
    EXPECT_EQ(jittery.NextWakeUp(), j + 170 * kMs);
  }
}

// Phi never holds a node past phi_max_wait_ms after its leader's last sign of life, and a
// gap longer than that is no sample: one long outage does not make the next failover slow.
TEST(PhiAccrualTest, PhiWaitsAtMostItsBoundAndKeepsNoOutageAsASample) {
  ElectionOptions o = Opts(8);
  o.phi_max_wait_ms = 400;
  Election e(o, 1, 0);
  int64_t t = 0;
  for (int i = 1; i <= 100; ++i) {  // every tenth 390 ms late: phi alone would wait long
    t += (i % 10 == 0 ? 390 : 20) * kMs;
    e.OnLeaderHeartbeat("n1", 3, t);
  }
  EXPECT_EQ(e.NextWakeUp(), t + 400 * kMs);
  PhiAccrualDetector d(10 * kMs, PhiAccrualDetector::kDefaultWindow, 400 * kMs);
  int64_t u = Beat(d, 0, 20, 100);
  d.OnHeartbeat(u + 10'000 * kMs);  // a ten-second outage
  EXPECT_EQ(d.samples(), 19u);
  EXPECT_NEAR(d.mean_us(), 100 * kMs, 1);
  d.Reset();
  EXPECT_EQ(d.samples(), 0u);
  EXPECT_EQ(d.last_heartbeat_us(), 0);
}

}  // namespace
}  // namespace walship::replication
