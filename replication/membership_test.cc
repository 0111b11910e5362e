// Unit tests of membership changes (replication/membership.h) and of how the node state keeps
// them.
#include "replication/membership.h"

#include <gtest/gtest.h>

#include <fstream>

#include "replication/node_state.h"
#include "replication/test_fixtures.h"

namespace walship::replication {
namespace {

using namespace ::walship::replication::testing;  // NOLINT: the fixtures of these tests

Membership Three() {
  return MembershipOf({{"n2", "127.0.0.1:7102"}, {"n1", "127.0.0.1:7101"},
                       {"n3", "127.0.0.1:7103"}},
                      1);
}

TEST(MembershipTest, ConfigNodesAllVoteInIdOrder) {
  Membership m = Three();
  ASSERT_TRUE(ValidateMembership(m).ok());
  EXPECT_EQ(m.members[0].id, "n1");
  EXPECT_EQ(m.VotersExcept("n1"), (std::vector<std::string>{"n2", "n3"}));
  EXPECT_EQ(m.Majority(), 2u);
}

TEST(MembershipTest, AddedNodeIsALearnerUntilPromoted) {
  auto added = ApplyChange(Three(), {MembershipOp::kAddLearner, "n4", "127.0.0.1:7104"}, "n1");
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->version, 2u);
  ASSERT_NE(added->Find("n4"), nullptr);
  EXPECT_FALSE(added->Find("n4")->voter);
  // A learner neither votes nor counts in majorities.
  EXPECT_EQ(added->VotersExcept("n1"), (std::vector<std::string>{"n2", "n3"}));
  EXPECT_EQ(added->Majority(), 2u);
  auto promoted = ApplyChange(*added, {MembershipOp::kPromote, "n4", ""}, "n1");
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  EXPECT_EQ(promoted->version, 3u);
  EXPECT_TRUE(promoted->Find("n4")->voter);
  EXPECT_EQ(promoted->Majority(), 3u);
  EXPECT_TRUE(ValidateMembership(*promoted).ok());
}

TEST(MembershipTest, ChangesThatDoNotApplyAreRefusedNamingTheNode) {
  auto refused = [](const absl::StatusOr<Membership>& m, const std::string& says) {
    ASSERT_TRUE(absl::IsInvalidArgument(m.status())) << m.status();
    EXPECT_NE(m.status().message().find(says), std::string::npos) << m.status();
  };
  Membership m = Three();
  refused(ApplyChange(m, {MembershipOp::kAddLearner, "n2", "127.0.0.1:7999"}, "n1"),
          "'n2' is a member already");
  refused(ApplyChange(m, {MembershipOp::kAddLearner, "n4", "127.0.0.1:7102"}, "n1"),
          "member 'n2' listens on 127.0.0.1:7102");
  refused(ApplyChange(m, {MembershipOp::kAddLearner, "n4", "nowhere"}, "n1"), "host:port");
  refused(ApplyChange(m, {MembershipOp::kAddLearner, "n4", "a:99999"}, "n1"), "host:port");
  refused(ApplyChange(m, {MembershipOp::kAddLearner, "n4", ":7104"}, "n1"), "host:port");
  refused(ApplyChange(m, {MembershipOp::kAddLearner, "n 4", "127.0.0.1:7104"}, "n1"),
          "node id 'n 4'");
  refused(ApplyChange(m, {MembershipOp::kRemove, "n9", ""}, "n1"), "'n9' is not a member");
  refused(ApplyChange(m, {MembershipOp::kRemove, "n1", ""}, "n1"), "'n1' leads");
  refused(ApplyChange(m, {MembershipOp::kPromote, "n2", ""}, "n1"), "'n2' votes already");
}

TEST(MembershipTest, RemovingOneNodeKeepsTheOthers) {
  auto removed = ApplyChange(Three(), {MembershipOp::kRemove, "n3", ""}, "n1");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->Find("n3"), nullptr);
  EXPECT_EQ(removed->VotersExcept("n1"), (std::vector<std::string>{"n2"}));
  EXPECT_EQ(removed->Majority(), 2u);
}

TEST(MembershipTest, NodeStateKeepsTheMembership) {
  TempDir dir;
  NodeState state;
  state.epoch = 2;
  state.history = {{2, 1, "n1"}};
  state.membership =
      *ApplyChange(Three(), {MembershipOp::kAddLearner, "n4", "127.0.0.1:7104"}, "n1");
  ASSERT_TRUE(SaveNodeState(dir.Sub("state"), state).ok());
  auto loaded = LoadNodeState(dir.Sub("state"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->membership, state.membership);
  // A damaged member line is refused naming the file and line, not read as no membership.
  {
    std::ofstream out(dir.Sub("bad"));
    out << "walship-node-state 3\nepoch 2\nmembership 2\nmember n1 127.0.0.1:7101 boss\n";
  }
  auto bad = LoadNodeState(dir.Sub("bad"));
  ASSERT_TRUE(absl::IsDataLoss(bad.status())) << bad.status();
  EXPECT_NE(bad.status().message().find("bad:4:"), std::string::npos) << bad.status();
  // A state whose members repeat is never saved.
  state.membership.members.push_back(state.membership.members.front());
  EXPECT_FALSE(SaveNodeState(dir.Sub("state"), state).ok());
}

// ---- The leader's side ----

// A leader whose state holds the membership leader, f1, f2 (version 1), as a node's does.
// One batch per message, and a learner is ready within 2 sequence numbers.
LeaderNode MemberLeader(const TempDir& dir, Clock* clock) {
  NodeState state = LeaderState();
  state.membership = MembershipOf({{"leader", "127.0.0.1:1"}, {"f1", "127.0.0.1:2"},
                                   {"f2", "127.0.0.1:3"}},
                                  1);
  LeaderOptions options = DefaultLeaderOptions();
  options.max_ship_bytes = 1;
  options.ready_lag = 2;
  return LeaderNode(dir, clock, options, state);
}

// Sends the session's next message (or a heartbeat) to `f` and hands its ack back.
void Exchange(Leader& leader, uint64_t session, Follower& f) {
  std::optional<Ship> ship = leader.NextShip(session, true);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.OnShip(*ship, {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  leader.OnAck(session, *ack);
}

TEST(LeaderMembershipTest, FollowersSaveTheMembershipBeforeTheyAckIt) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l = MemberLeader(dir, &clock);
  FollowerNode f1(dir, "f1", &clock);
  Handshake h = Connect(*l.leader, *f1.follower);
  ASSERT_EQ(h.reply.outcome, HelloOutcome::kAccepted);
  // The first message of a session carries it, with no write to wait for.
  EXPECT_TRUE(l.leader->HasWork(h.session));
  std::optional<Ship> first = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(first->membership.has_value());
  EXPECT_EQ(first->membership->version, 1u);
  auto ack = f1.follower->OnShip(*first, {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->membership_version, 1u);
  auto saved = LoadNodeState(f1.state_path);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->membership, l.leader->membership());
  l.leader->OnAck(h.session, *ack);
  // Sent once per stream: the next messages do not carry it.
  l.Write();
  std::optional<Ship> next = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(next.has_value());
  EXPECT_FALSE(next->membership.has_value());
}

TEST(LeaderMembershipTest, AnAddedLearnerFollowsIsNotWaitedForAndVotesOnceReady) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l = MemberLeader(dir, &clock);
  FollowerNode f1(dir, "f1", &clock);
  FollowerNode f3(dir, "f3", &clock);
  uint64_t s1 = Connect(*l.leader, *f1.follower).session;
  Exchange(*l.leader, s1, *f1.follower);
  // Before it is a member, f3 is refused.
  EXPECT_EQ(Connect(*l.leader, *f3.follower).reply.outcome, HelloOutcome::kRefused);
  ASSERT_TRUE(l.leader->MembershipSettled());  // leader and f1: 2 of 3 voters
  auto added = ApplyChange(l.leader->membership(),
                           {MembershipOp::kAddLearner, "f3", "127.0.0.1:4"}, "leader");
  ASSERT_TRUE(added.ok());
  l.leader->SetMembership(*added);
  // Not held by a majority yet (only the leader has version 2).
  EXPECT_FALSE(l.leader->MembershipSettled());
  EXPECT_EQ(l.leader->MembershipWaitingFor(), "f1, f2");
  EXPECT_FALSE(l.leader->DuePromotion().has_value());
  Exchange(*l.leader, s1, *f1.follower);
  EXPECT_TRUE(l.leader->MembershipSettled());
  // The learner is not waited for: the voters are f1 and f2 still.
  EXPECT_EQ(l.leader->voters(), 2u);
  for (int i = 0; i < 5; ++i) l.Write();
  uint64_t s3 = Connect(*l.leader, *f3.follower).session;
  ASSERT_NE(s3, 0u);
  EXPECT_EQ(l.leader->VoterPositions(AckLevel::kReceived).size(), 2u);
  // Not ready before it has acked the membership and caught up within ready_lag (2 here).
  EXPECT_FALSE(l.leader->DuePromotion().has_value());
  Exchange(*l.leader, s3, *f3.follower);  // the membership and one batch of five
  EXPECT_EQ(f3.follower->membership().version, 2u);
  EXPECT_FALSE(l.leader->DuePromotion().has_value());
  Exchange(*l.leader, s3, *f3.follower);
  Exchange(*l.leader, s3, *f3.follower);  // 3 of 5 applied: within 2
  std::optional<MembershipChange> due = l.leader->DuePromotion();
  ASSERT_TRUE(due.has_value());
  EXPECT_EQ(due->op, MembershipOp::kPromote);
  EXPECT_EQ(due->id, "f3");
  l.leader->SetMembership(*ApplyChange(l.leader->membership(), *due, "leader"));
  EXPECT_EQ(l.leader->voters(), 3u);
  Exchange(*l.leader, s3, *f3.follower);
  EXPECT_EQ(f3.follower->membership().version, 3u);
}

// Only an ack reporting exactly the current version counts toward settling a change, and a
// follower that reports another one is sent the membership again with its next heartbeat.
TEST(LeaderMembershipTest, OnlyTheCurrentVersionCountsAndIsResentUntilHeld) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l = MemberLeader(dir, &clock);
  FollowerNode f1(dir, "f1", &clock);
  uint64_t s1 = Connect(*l.leader, *f1.follower).session;
  Exchange(*l.leader, s1, *f1.follower);
  l.leader->SetMembership(*ApplyChange(l.leader->membership(),
                                       {MembershipOp::kAddLearner, "f3", "127.0.0.1:4"},
                                       "leader"));
  std::optional<Ship> carrying = l.leader->NextShip(s1, false);
  ASSERT_TRUE(carrying.has_value() && carrying->membership.has_value());
  Ack bogus;
  bogus.epoch = l.leader->epoch();
  bogus.membership_version = UINT64_MAX;  // a peer claiming more than it was sent
  l.leader->OnAck(s1, bogus);
  EXPECT_FALSE(l.leader->MembershipSettled());
  // Nothing more to send but a heartbeat: it carries the membership again.
  std::optional<Ship> beat = l.leader->NextShip(s1, true);
  ASSERT_TRUE(beat.has_value());
  ASSERT_TRUE(beat->membership.has_value());
  auto ack = f1.follower->OnShip(*beat, {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  l.leader->OnAck(s1, *ack);
  EXPECT_TRUE(l.leader->MembershipSettled());
  std::optional<Ship> next = l.leader->NextShip(s1, true);
  ASSERT_TRUE(next.has_value());
  EXPECT_FALSE(next->membership.has_value());
}

TEST(LeaderMembershipTest, ARemovedMemberLosesItsSessionAndIsRefused) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l = MemberLeader(dir, &clock);
  FollowerNode f2(dir, "f2", &clock);
  uint64_t s2 = Connect(*l.leader, *f2.follower).session;
  Exchange(*l.leader, s2, *f2.follower);
  ASSERT_TRUE(l.leader->Serves(s2));
  l.leader->SetMembership(
      *ApplyChange(l.leader->membership(), {MembershipOp::kRemove, "f2", ""}, "leader"));
  EXPECT_FALSE(l.leader->Serves(s2));
  EXPECT_EQ(l.leader->voters(), 1u);
  for (const FollowerInfo& f : l.leader->Followers()) EXPECT_NE(f.id, "f2");
  Handshake again = Connect(*l.leader, *f2.follower);
  EXPECT_EQ(again.reply.outcome, HelloOutcome::kRefused);
  EXPECT_NE(again.reply.message.find("not a member"), std::string::npos) << again.reply.message;
}

}  // namespace
}  // namespace walship::replication
