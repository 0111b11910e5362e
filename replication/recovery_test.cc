// Unit tests of Recovery (a restarted leader asks its peers before it leads again) and of the
// leader's refusal of a follower that holds writes the leader lost.
#include "replication/recovery.h"

#include <gtest/gtest.h>

#include "replication/test_fixtures.h"

namespace walship::replication {
namespace {

using namespace ::walship::replication::testing;  // NOLINT: the fixtures of these tests
using Kind = RecoveryVerdict::Kind;

constexpr int64_t kT0 = 1'000'000;
constexpr int64_t kWaitUs = 5'000'000;

// n1 led epochs 1 and 3 (n2 led 2); its log ends at 100.
NodeState Led() {
  NodeState s;
  s.database_id = "db1";
  s.role = "leader";
  s.epoch = 3;
  s.history = {{1, 1, "n1"}, {2, 40, "n2"}, {3, 80, "n1"}};
  return s;
}

PeerPosition At(const std::string& node, SequenceNumber seq, Epoch epoch, const std::string& by) {
  PeerPosition p;
  p.node = node;
  p.database_id = "db1";
  p.highest_epoch = 3;
  p.last_applied = seq;
  p.last_applied_epoch = epoch;
  p.last_applied_leader = by;
  return p;
}

Recovery Make(Durability cluster = {}) {
  return Recovery(Led(), 100, "n1", {"n2", "n3"}, cluster, kT0, kWaitUs);
}

TEST(RecoveryTest, LeadsOnceEveryPeerAnsweredWithNothingMore) {
  Recovery r = Make();
  r.OnAnswer(At("n2", 100, 3, "n1"));
  EXPECT_EQ(r.Decide(kT0).kind, Kind::kWait) << "n3 has not answered";
  r.OnAnswer(At("n3", 90, 3, "n1"));
  RecoveryVerdict v = r.Decide(kT0);
  EXPECT_EQ(v.kind, Kind::kLead) << v.why;
}

TEST(RecoveryTest, HandsOverToThePeerHoldingTheMostOfWhatItLost) {
  Recovery r = Make();
  r.OnAnswer(At("n2", 120, 3, "n1"));
  r.OnAnswer(At("n3", 130, 3, "n1"));
  RecoveryVerdict v = r.Decide(kT0);
  EXPECT_EQ(v.kind, Kind::kHandOver);
  EXPECT_EQ(v.target, "n3");
  EXPECT_NE(v.why.find("up to seq 130"), std::string::npos) << v.why;
}

// Data past its log, but not of its history (another database, an epoch it does not know, or
// a peer told to re-seed), is no write it lost.
TEST(RecoveryTest, OnlyWritesOfItsOwnHistoryCount) {
  Recovery r = Make();
  PeerPosition other_db = At("n2", 150, 3, "n1");
  other_db.database_id = "db2";
  r.OnAnswer(other_db);
  PeerPosition stale = At("n3", 150, 3, "n2");  // epoch 3 begun by n2: not n1's epoch 3
  r.OnAnswer(stale);
  EXPECT_EQ(r.Decide(kT0).kind, Kind::kLead);
}

TEST(RecoveryTest, APeerThatSawANewerEpochIsFollowed) {
  Recovery r = Make();
  PeerPosition newer = At("n2", 100, 3, "n1");
  newer.highest_epoch = 4;
  r.OnAnswer(newer);
  RecoveryVerdict v = r.Decide(kT0);
  EXPECT_EQ(v.kind, Kind::kFollow);
  EXPECT_EQ(v.target, "n2");
}

// Past the wait, semi-sync with k = 1 of 2 followers needs both answers (the one silent could
// hold a write acknowledged by it alone); with k = 2, one answer will do; async needs none.
TEST(RecoveryTest, PastTheWaitTheModeSaysHowManyAnswersAreEnough) {
  EXPECT_EQ(Recovery::Needed({ReplicationMode::kSemiSync, 1, AckLevel::kFlushed}, 2), 2u);
  EXPECT_EQ(Recovery::Needed({ReplicationMode::kSemiSync, 2, AckLevel::kFlushed}, 2), 1u);
  EXPECT_EQ(Recovery::Needed({ReplicationMode::kSync, 1, AckLevel::kFlushed}, 2), 1u);
  EXPECT_EQ(Recovery::Needed({}, 2), 0u);

  Recovery k1 = Make({ReplicationMode::kSemiSync, 1, AckLevel::kFlushed});
  k1.OnAnswer(At("n2", 100, 3, "n1"));
  EXPECT_EQ(k1.Decide(kT0 + kWaitUs + 1).kind, Kind::kWait);
  EXPECT_EQ(k1.Unanswered(), std::vector<std::string>{"n3"});

  Recovery k2 = Make({ReplicationMode::kSemiSync, 2, AckLevel::kFlushed});
  k2.OnAnswer(At("n2", 100, 3, "n1"));
  EXPECT_EQ(k2.Decide(kT0 + kWaitUs - 1).kind, Kind::kWait) << "within the wait: all";
  EXPECT_EQ(k2.Decide(kT0 + kWaitUs).kind, Kind::kLead);

  Recovery async = Make();
  EXPECT_EQ(async.Decide(kT0 + kWaitUs).kind, Kind::kLead);
}

TEST(RecoveryTest, PositionNamesTheEpochOfTheLastWrite) {
  PeerPosition p = PositionOf(Led(), 60, "n1");
  EXPECT_EQ(p.last_applied_epoch, 2u);
  EXPECT_EQ(p.last_applied_leader, "n2");
  EXPECT_EQ(p.highest_epoch, 3u);
}

// A follower holding writes of the leader's own epoch past the leader's log is refused (the
// leader lost them), never told it needs a snapshot.
TEST(RecoveryTest, ALeaderRefusesAFollowerHoldingWritesItLost) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  l.Write();
  Hello hello;
  hello.cluster = kCluster;
  hello.database_id = kDatabase;
  hello.follower_id = "f1";
  hello.epoch = 1;
  hello.last_applied = l.leader->latest() + 5;
  hello.last_applied_epoch = 1;
  hello.last_applied_leader = "leader";
  uint64_t session = 0;
  HelloReply reply = l.leader->OnHello(hello, &session);
  EXPECT_EQ(reply.outcome, HelloOutcome::kRefused);
  EXPECT_NE(reply.message.find("lost writes"), std::string::npos) << reply.message;
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].state, FollowerState::kRefused);
}

// The same for writes of an earlier epoch of its history, when the epochs after it begin past
// the leader's log (they were lost with it); once an epoch begins within the log, writes past
// it in an earlier one are no longer of this history.
TEST(RecoveryTest, ALeaderRefusesWritesOfAnEarlierEpochItLostButNotOfAClosedOne) {
  TempDir dir;
  FakeClock clock;
  NodeState state;
  state.database_id = kDatabase;
  state.epoch = 3;
  state.history = {{1, 1, "leader"}, {2, 10, "n2"}, {3, 20, "leader"}};
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), state);
  l.Write(8);  // its log ends at 8: it lost 9.. (epoch 2 from 10, epoch 3 from 20)
  Hello hello;
  hello.cluster = kCluster;
  hello.database_id = kDatabase;
  hello.follower_id = "f1";
  hello.epoch = 3;
  hello.last_applied = 15;
  hello.last_applied_epoch = 2;
  hello.last_applied_leader = "n2";
  uint64_t session = 0;
  EXPECT_EQ(l.leader->OnHello(hello, &session).outcome, HelloOutcome::kRefused);

  TempDir dir2;
  state.history = {{1, 1, "leader"}, {2, 9, "leader"}};  // epoch 2 began after the loss, at 9
  state.epoch = 2;
  LeaderNode led_on(dir2, &clock, DefaultLeaderOptions(), state);
  led_on.Write(8);
  hello.epoch = 1;
  hello.last_applied = 12;
  hello.last_applied_epoch = 1;
  hello.last_applied_leader = "leader";
  EXPECT_EQ(led_on.leader->OnHello(hello, &session).outcome, HelloOutcome::kNeedsSnapshot);
}

}  // namespace
}  // namespace walship::replication
