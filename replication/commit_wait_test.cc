// Unit tests of CommitWait: which acknowledgements release which waiting writes, timeouts
// under each policy, the degraded state and its end, and what the waits ask of the shipping.
#include "replication/commit_wait.h"

#include <gtest/gtest.h>

#include <vector>

#include "replication/test_fixtures.h"

namespace walship::replication {
namespace {

using namespace ::walship::replication::testing;  // NOLINT: the fixtures of these tests

constexpr int64_t kT0 = 1'000'000;

Durability SemiSync(uint32_t k, AckLevel level) {
  return Durability{ReplicationMode::kSemiSync, k, level};
}
Durability Sync(AckLevel level) { return Durability{ReplicationMode::kSync, 1, level}; }

// A leader with followers f1 and f2 (both voting members) subscribed.
struct Fixture {
  explicit Fixture(CommitWaitOptions o = {})
      : l(dir, &clock), wait(o), f1(dir, "f1", &clock), f2(dir, "f2", &clock) {}
  uint64_t Subscribe(FollowerNode& f) {
    Handshake h = Connect(*l.leader, *f.follower);
    EXPECT_TRUE(h.status.ok()) << h.status;
    return h.session;
  }
  void AckFrom(uint64_t session, SequenceNumber received, SequenceNumber durable,
               SequenceNumber applied) {
    Ack ack;
    ack.epoch = l.leader->epoch();
    ack.received = received;
    ack.durable = durable;
    ack.applied = applied;
    l.leader->OnAck(session, ack);
  }
  std::vector<Released> Progress(int64_t now = kT0) {
    std::vector<Released> out;
    wait.OnProgress(*l.leader, now, &out);
    return out;
  }
  std::vector<Released> Tick(int64_t now) {
    std::vector<Released> out;
    wait.Tick(*l.leader, now, &out);
    return out;
  }
  SequenceNumber Write() { return l.Write().last_seq(); }

  TempDir dir;
  FakeClock clock;
  LeaderNode l;
  CommitWait wait;
  FollowerNode f1, f2;
};

TEST(CommitWaitTest, AsyncAndCoveredWritesDoNotWait) {
  Fixture fx;
  uint64_t s1 = fx.Subscribe(fx.f1);
  SequenceNumber seq = fx.Write();
  EXPECT_EQ(fx.wait.Add(1, seq, Durability{}, false, *fx.l.leader, kT0),
            WaitOutcome::kReplicated);
  fx.AckFrom(s1, seq, seq, seq);
  EXPECT_EQ(fx.wait.Add(2, seq, SemiSync(1, AckLevel::kFlushed), false, *fx.l.leader, kT0),
            WaitOutcome::kReplicated);
  EXPECT_EQ(fx.wait.waiting(), 0u);
}

TEST(CommitWaitTest, SemiSyncWaitsForKFollowersAtItsLevel) {
  Fixture fx;
  uint64_t s1 = fx.Subscribe(fx.f1);
  uint64_t s2 = fx.Subscribe(fx.f2);
  SequenceNumber seq = fx.Write();
  EXPECT_FALSE(fx.wait.Add(7, seq, SemiSync(2, AckLevel::kFlushed), false, *fx.l.leader, kT0));
  fx.AckFrom(s1, seq, seq, seq);
  EXPECT_TRUE(fx.Progress().empty()) << "one of two";
  fx.AckFrom(s2, seq, 0, seq);
  EXPECT_TRUE(fx.Progress().empty()) << "received and applied, but not flushed";
  fx.AckFrom(s2, seq, seq, seq);
  std::vector<Released> r = fx.Progress();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].id, 7u);
  EXPECT_EQ(r[0].outcome, WaitOutcome::kReplicated);
}

TEST(CommitWaitTest, OneAckReleasesEveryWriteItCovers) {
  Fixture fx;
  uint64_t s1 = fx.Subscribe(fx.f1);
  SequenceNumber last = 0;
  for (uint64_t id = 1; id <= 3; ++id) {
    last = fx.Write();
    EXPECT_FALSE(fx.wait.Add(id, last, SemiSync(1, AckLevel::kReceived), false, *fx.l.leader,
                             kT0));
  }
  EXPECT_EQ(fx.wait.demand().upto, last);
  EXPECT_FALSE(fx.wait.demand().flush) << "received asks for no flush";
  fx.AckFrom(s1, last - 1, 0, last - 1);
  EXPECT_EQ(fx.Progress().size(), 2u);
  fx.AckFrom(s1, last, 0, last);
  EXPECT_EQ(fx.Progress().size(), 1u);
  EXPECT_EQ(fx.wait.demand().upto, 0u);
}

// Every voting member counts, also one that never subscribed.
TEST(CommitWaitTest, SyncWaitsForEveryVotingFollower) {
  Fixture fx;
  uint64_t s1 = fx.Subscribe(fx.f1);
  SequenceNumber seq = fx.Write();
  EXPECT_FALSE(fx.wait.Add(1, seq, Sync(AckLevel::kReceived), false, *fx.l.leader, kT0));
  fx.AckFrom(s1, seq, seq, seq);
  EXPECT_TRUE(fx.Progress().empty()) << "f2 has not acked";
  uint64_t s2 = fx.Subscribe(fx.f2);
  fx.AckFrom(s2, seq, 0, seq);
  EXPECT_EQ(fx.Progress().size(), 1u);
}

// As PostgreSQL's remote_apply: applied counts only once flushed too.
TEST(CommitWaitTest, AppliedCountsWhatIsAppliedAndFlushed) {
  Fixture fx;
  uint64_t s1 = fx.Subscribe(fx.f1);
  SequenceNumber seq = fx.Write();
  EXPECT_FALSE(fx.wait.Add(1, seq, SemiSync(1, AckLevel::kApplied), false, *fx.l.leader, kT0));
  EXPECT_TRUE(fx.wait.demand().flush);
  fx.AckFrom(s1, seq, 0, seq);
  EXPECT_TRUE(fx.Progress().empty());
  fx.AckFrom(s1, seq, seq, seq);
  EXPECT_EQ(fx.Progress().size(), 1u);
}

TEST(CommitWaitTest, TooManyAcksForTheClusterAreRefused) {
  EXPECT_TRUE(CommitWait::Check(SemiSync(2, AckLevel::kFlushed), 2).ok());
  absl::Status s = CommitWait::Check(SemiSync(3, AckLevel::kFlushed), 2);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("3 follower acks"), std::string::npos) << s;
  EXPECT_TRUE(CommitWait::Check(Sync(AckLevel::kFlushed), 0).ok());
}

TEST(CommitWaitTest, UnderTheFailPolicyAWriteTimesOutAtItsDeadline) {
  CommitWaitOptions o;
  o.timeout_ms = 50;
  Fixture fx(o);
  fx.Subscribe(fx.f1);
  SequenceNumber seq = fx.Write();
  EXPECT_FALSE(fx.wait.Add(1, seq, SemiSync(1, AckLevel::kFlushed), false, *fx.l.leader, kT0));
  EXPECT_EQ(fx.wait.NextWakeUp(), kT0 + 50'000);
  EXPECT_TRUE(fx.Tick(kT0 + 49'999).empty());
  std::vector<Released> r = fx.Tick(kT0 + 50'000);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].outcome, WaitOutcome::kTimedOut);
  EXPECT_FALSE(fx.wait.degraded());
  EXPECT_EQ(fx.wait.NextWakeUp(), kNever);
}

// Under the degrade policy a timeout acknowledges the waiting writes and later ones at once,
// except writes that named their mode (pinned): those still time out. Once the followers hold
// every write older than half the timeout, the configured mode is back.
TEST(CommitWaitTest, DegradesOnTimeoutAndRecoversWhenTheFollowersAreBack) {
  CommitWaitOptions o;
  o.timeout_ms = 100;
  o.on_timeout = SyncTimeoutPolicy::kDegrade;
  o.cluster = SemiSync(1, AckLevel::kFlushed);
  Fixture fx(o);
  uint64_t s1 = fx.Subscribe(fx.f1);
  SequenceNumber a = fx.Write();
  EXPECT_FALSE(fx.wait.Add(1, a, o.cluster, false, *fx.l.leader, kT0));
  EXPECT_FALSE(fx.wait.Add(2, a, o.cluster, true, *fx.l.leader, kT0 + 10'000));
  std::vector<Released> r = fx.Tick(kT0 + 100'000);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].id, 1u);
  EXPECT_EQ(r[0].outcome, WaitOutcome::kDegraded);
  EXPECT_TRUE(fx.wait.degraded());
  SequenceNumber b = fx.Write();
  fx.wait.OnWritten(b, kT0 + 100'000);
  EXPECT_EQ(fx.wait.Add(3, b, o.cluster, false, *fx.l.leader, kT0 + 100'000),
            WaitOutcome::kDegraded);
  r = fx.Tick(kT0 + 110'000);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].id, 2u);
  EXPECT_EQ(r[0].outcome, WaitOutcome::kTimedOut) << "a pinned write does not degrade";
  // The follower comes back with the first write only: the second, older than half the
  // timeout by now, is still missing there.
  fx.AckFrom(s1, a, a, a);
  EXPECT_TRUE(fx.Progress(kT0 + 200'000).empty());
  EXPECT_TRUE(fx.wait.degraded());
  fx.AckFrom(s1, b, b, b);
  fx.Progress(kT0 + 200'000);
  EXPECT_FALSE(fx.wait.degraded());
  SequenceNumber c = fx.Write();
  EXPECT_FALSE(fx.wait.Add(4, c, o.cluster, false, *fx.l.leader, kT0 + 200'000))
      << "back to semi-sync: the write waits";
}

TEST(CommitWaitTest, EndAllReleasesEveryWaitAsTimedOut) {
  Fixture fx;
  fx.Subscribe(fx.f1);
  SequenceNumber seq = fx.Write();
  fx.wait.Add(1, seq, SemiSync(1, AckLevel::kReceived), false, *fx.l.leader, kT0);
  fx.wait.Add(2, seq, Sync(AckLevel::kApplied), true, *fx.l.leader, kT0);
  std::vector<Released> out;
  fx.wait.EndAll(&out);
  ASSERT_EQ(out.size(), 2u);
  for (const Released& r : out) EXPECT_EQ(r.outcome, WaitOutcome::kTimedOut);
  EXPECT_EQ(fx.wait.waiting(), 0u);
}

}  // namespace
}  // namespace walship::replication
