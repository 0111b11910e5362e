// Unit tests of the handover of leadership (replication/handover.h).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "replication/handover.h"
#include "replication/test_fixtures.h"

namespace walship::replication {
namespace {

namespace fs = std::filesystem;
using namespace ::walship::replication::testing;  // NOLINT: the fixtures of these tests
using engine::Batch;
using engine::EngineOptions;
using engine::OpType;
using engine::WriteOp;
using engine::testing::SameContents;
using engine::testing::ScanAll;

// ---------------------------------------------------------------------------------------------
// Handover

NodeState FollowingState(Epoch epoch, const std::string& leader) {
  NodeState state;
  state.database_id = kDatabase;
  state.epoch = epoch;
  state.history = {{1, 1, "n0"}};
  if (epoch > 1) state.history.push_back({epoch, 50, leader});
  state.role = "follower";
  state.leader = leader;
  return state;
}

TEST(HandoverTest, AFollowerTakesOverOnlyWhenItHoldsEverythingItsLeaderWrote) {
  TakeOver t;
  t.from = "n0";
  t.epoch = 2;
  t.latest = 90;
  bool take_over = false;
  NodeState state = FollowingState(2, "n0");
  TakeOverReply r = AnswerTakeOver(state, 90, "n1", t, &take_over);
  EXPECT_TRUE(r.accepted && take_over) << r.message;
  // Behind by one batch, another epoch, another leader: refused, naming why.
  r = AnswerTakeOver(state, 89, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  EXPECT_NE(r.message.find("89"), std::string::npos) << r.message;
  EXPECT_EQ(r.epoch, 2u);
  r = AnswerTakeOver(FollowingState(3, "n0"), 90, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  EXPECT_EQ(r.epoch, 3u) << "a refusal names the highest epoch seen";
  r = AnswerTakeOver(FollowingState(2, "n2"), 90, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  // It voted in a later election, and follows n0 still until it hears the winner.
  NodeState voted = FollowingState(2, "n0");
  voted.vote_epoch = 3;
  voted.voted_for = "n2";
  r = AnswerTakeOver(voted, 90, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  EXPECT_NE(r.message.find("voted in epoch 3"), std::string::npos) << r.message;
  EXPECT_EQ(r.epoch, 3u);
  t.version = 1;
  r = AnswerTakeOver(state, 90, "n1", t, &take_over);
  EXPECT_FALSE(r.accepted || take_over);
  EXPECT_NE(r.message.find("version 1"), std::string::npos) << r.message;
}

// The answer was lost and the leader asks again: the node that took over says yes again
// (and does nothing), so the leader steps down rather than lead beside it.
TEST(HandoverTest, AskingAgainAfterATakeOverIsAnsweredYesWithoutASecondEpoch) {
  TakeOver t;
  t.from = "n0";
  t.epoch = 2;
  t.latest = 90;
  NodeState led = StateForLeading(FollowingState(2, "n0"), 90, "n1");
  EXPECT_EQ(led.epoch, 3u);
  EXPECT_EQ(led.role, "leader");
  EXPECT_EQ(led.history.back(), (EpochEntry{3, 91, "n1"}));
  bool take_over = true;
  TakeOverReply r = AnswerTakeOver(led, 95, "n1", t, &take_over);
  EXPECT_TRUE(r.accepted);
  EXPECT_FALSE(take_over);
  EXPECT_EQ(r.epoch, 3u);
  Handover h("n1", 0, 1'000'000);
  EXPECT_TRUE(h.StepsDown(r));
}

TEST(HandoverTest, TheLeaderLeadsOnOnlyAfterAClearRefusal) {
  Handover h = Handover::Resumed("n1", TakeOver{kPeerProtocolVersion, "n0", 2, 90});
  TakeOverReply refused;
  refused.epoch = 2;
  EXPECT_FALSE(h.StepsDown(refused)) << "nothing changed there: lead on";
  refused.epoch = 4;
  EXPECT_TRUE(h.StepsDown(refused)) << "a newer epoch exists: someone else may lead";
  // A node that saved "handing over" resumes the handover after a restart; once the answer
  // is in, it follows, recording the epoch the target began.
  NodeState handing = StateForHandingOver(LeaderState(2), "n1");
  EXPECT_TRUE(ResumesHandover(handing));
  TakeOverReply took;
  took.accepted = true;
  took.epoch = 5;
  NodeState after = StateAfterHandover(handing, "n1", h.request(), took);
  EXPECT_FALSE(ResumesHandover(after));
  EXPECT_EQ(after.role, "follower");
  EXPECT_EQ(after.leader, "n1");
  EXPECT_EQ(after.epoch, 5u);
  EXPECT_EQ(after.history.back(), (EpochEntry{5, 91, "n1"}));
  EXPECT_TRUE(ValidateState(after).ok());
  NodeState led_on = StateForLeading(handing, 90, "n0");
  EXPECT_FALSE(ResumesHandover(led_on));
  EXPECT_EQ(led_on.epoch, 3u);
}

TEST(HandoverTest, WritesAreRefusedNamingTheNewLeaderUntilItCaughtUp) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  FollowerNode f(dir, "f1", &clock);
  Handshake hs = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(hs.status.ok());
  l.Write(3);
  Handover h("f1", clock.NowMicros(), 1'000'000);
  EXPECT_NE(h.WriteRefusal().message().find("'f1'"), std::string::npos);
  EXPECT_FALSE(h.Poll(*l.leader, true, clock.NowMicros()).has_value()) << "not caught up";
  auto ship = l.leader->NextShip(hs.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok());
  l.leader->OnAck(hs.session, *ack);
  EXPECT_FALSE(h.Poll(*l.leader, false, clock.NowMicros()).has_value()) << "a write runs";
  auto ask = h.Poll(*l.leader, true, clock.NowMicros());
  ASSERT_TRUE(ask.has_value());
  EXPECT_EQ(ask->latest, 3u);
  EXPECT_EQ(ask->from, "leader");
  EXPECT_EQ(h.phase(), Handover::Phase::kAsked);
  EXPECT_TRUE(h.TimedOut(clock.NowMicros() + 1'000'000));
}

}  // namespace
}  // namespace walship::replication
