// Unit tests of elections and leases (replication/election.h): how a voter answers, how a
// candidate counts, and when a leader's lease holds.
#include "replication/election.h"

#include <gtest/gtest.h>

#include <string>

namespace walship::replication {
namespace {

constexpr int64_t kMs = 1000;

Membership Voters(std::vector<std::string> ids) {
  std::vector<Member> members;
  for (const std::string& id : ids) members.push_back({id, "", true});
  return MembershipOf(members, 1);
}

ElectionOptions Opts(const std::string& self) {
  ElectionOptions o;
  o.self = self;
  o.cluster = "c";
  o.election_timeout_ms = 2000;
  o.jitter_ms = 1000;
  o.round_timeout_ms = 1000;
  return o;
}

// A node that followed n1 in epoch 3 (begun at seq 101) and holds up to seq `latest`.
NodeState Follower(const std::vector<std::string>& members = {"n1", "n2", "n3"}) {
  NodeState s;
  s.database_id = "db";
  s.epoch = 3;
  s.history = {{1, 1, "n1"}, {3, 101, "n1"}};
  s.role = "follower";
  s.leader = "n1";
  s.membership = Voters(members);
  return s;
}

VoteRequest Ask(const std::string& candidate, Epoch epoch, SequenceNumber last_seq,
                Epoch last_epoch, bool pre_vote = false) {
  VoteRequest r;
  r.cluster = "c";
  r.candidate = candidate;
  r.epoch = epoch;
  r.pre_vote = pre_vote;
  r.last_seq = last_seq;
  r.last_epoch = last_epoch;
  r.last_leader = "n1";
  return r;
}

TEST(ElectionTest, LogsCompareByEpochThenSequence) {
  EXPECT_TRUE(AtLeastAsUpToDate({150, 3, "n1"}, {150, 3, "n1"}));
  EXPECT_TRUE(AtLeastAsUpToDate({151, 3, "n1"}, {150, 3, "n1"}));
  EXPECT_FALSE(AtLeastAsUpToDate({149, 3, "n1"}, {150, 3, "n1"}));
  // A later epoch wins however short: the longer log holds writes no majority kept.
  EXPECT_TRUE(AtLeastAsUpToDate({120, 4, "n2"}, {150, 3, "n1"}));
  EXPECT_FALSE(AtLeastAsUpToDate({900, 2, "n1"}, {150, 3, "n1"}));
  // One number begun by two nodes: neither is taken for the other.
  EXPECT_FALSE(AtLeastAsUpToDate({900, 3, "n2"}, {150, 3, "n1"}));
  NodeState s = Follower();
  LogPosition p = LogPositionOf(s, 100);
  EXPECT_EQ(p.epoch, 1u);
  EXPECT_EQ(LogPositionOf(s, 101).epoch, 3u);
}

TEST(ElectionTest, AVoteIsSavedAndGrantedOncePerEpoch) {
  NodeState s = Follower();
  VoterView v{.latest = 150};
  VoteAnswer a = AnswerVote(s, v, Ask("n2", 4, 150, 3), Opts("n3"), 10'000 * kMs);
  ASSERT_TRUE(a.reply.granted) << a.reply.message;
  ASSERT_TRUE(a.save.has_value());
  EXPECT_EQ(a.save->vote_epoch, 4u);
  EXPECT_EQ(a.save->voted_for, "n2");
  EXPECT_EQ(a.reply.epoch, 4u);
  s = *a.save;
  EXPECT_EQ(s.HighestEpoch(), 4u);
  // Another candidate in the same epoch is refused, naming the vote.
  VoteAnswer b = AnswerVote(s, v, Ask("n1", 4, 150, 3), Opts("n3"), 10'001 * kMs);
  EXPECT_FALSE(b.reply.granted);
  EXPECT_FALSE(b.save.has_value());
  EXPECT_NE(b.reply.message.find("voted for 'n2' in epoch 4"), std::string::npos)
      << b.reply.message;
  // The same candidate asking again (its answer was lost) gets the same vote.
  VoteAnswer c = AnswerVote(s, v, Ask("n2", 4, 150, 3), Opts("n3"), 10'002 * kMs);
  EXPECT_TRUE(c.reply.granted);
  // An epoch at or below one seen is refused, with the epoch the voter has seen.
  VoteAnswer d = AnswerVote(s, v, Ask("n1", 3, 150, 3), Opts("n3"), 10'003 * kMs);
  EXPECT_FALSE(d.reply.granted);
  EXPECT_EQ(d.reply.epoch, 4u);
}

TEST(ElectionTest, APreVoteChangesNothing) {
  NodeState s = Follower();
  VoteAnswer a =
      AnswerVote(s, {.latest = 150}, Ask("n2", 4, 150, 3, true), Opts("n3"), 10'000 * kMs);
  EXPECT_TRUE(a.reply.granted);
  EXPECT_FALSE(a.save.has_value());
  EXPECT_EQ(a.reply.epoch, 3u);
}

TEST(ElectionTest, AVoterThatHearsItsLeaderRefuses) {
  NodeState s = Follower();
  VoterView v{.latest = 150, .leads = false, .leader_heard_us = 9'000 * kMs};
  VoteAnswer a = AnswerVote(s, v, Ask("n2", 4, 150, 3), Opts("n3"), 10'000 * kMs);
  EXPECT_FALSE(a.reply.granted);
  EXPECT_NE(a.reply.message.find("heard from its leader 'n1' 1000 ms ago"), std::string::npos)
      << a.reply.message;
  // Past the election time-out it votes.
  EXPECT_TRUE(AnswerVote(s, v, Ask("n2", 4, 150, 3), Opts("n3"), 11'000 * kMs).reply.granted);
  // A leader never votes.
  v.leads = true;
  v.leader_heard_us = kNever;
  EXPECT_FALSE(AnswerVote(s, v, Ask("n2", 4, 150, 3), Opts("n3"), 11'000 * kMs).reply.granted);
}

TEST(ElectionTest, ACandidateBehindTheVoterIsRefused) {
  NodeState s = Follower();
  VoteAnswer a = AnswerVote(s, {.latest = 150}, Ask("n2", 4, 149, 3), Opts("n3"), 0);
  EXPECT_FALSE(a.reply.granted);
  EXPECT_NE(a.reply.message.find("ends at seq 149 of epoch 3 (n1), behind this node's, which "
                                 "ends at seq 150 of epoch 3 (n1)"),
            std::string::npos)
      << a.reply.message;
  // Longer but of an older epoch: behind too.
  EXPECT_FALSE(AnswerVote(s, {.latest = 150}, Ask("n2", 4, 500, 1), Opts("n3"), 0).reply.granted);
  EXPECT_FALSE(
      AnswerVote(s, {.latest = 150}, Ask("n2", 4, 149, 3, true), Opts("n3"), 0).reply.granted);
}

TEST(ElectionTest, LearnersNeitherStandNorVote) {
  NodeState s = Follower();
  s.membership = Voters({"n1", "n2", "n3"});
  s.membership.members.push_back({"n4", "", false});
  VoteAnswer a = AnswerVote(s, {.latest = 150}, Ask("n4", 4, 150, 3), Opts("n3"), 0);
  EXPECT_FALSE(a.reply.granted);
  EXPECT_NE(a.reply.message.find("'n4' is not a voting member"), std::string::npos);
  VoteAnswer b = AnswerVote(s, {.latest = 150}, Ask("n2", 4, 150, 3), Opts("n4"), 0);
  EXPECT_FALSE(b.reply.granted);
  Election e(Opts("n4"), 1, 0);
  ElectionOutbox out;
  e.Tick(s, 150, 100'000 * kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
  EXPECT_TRUE(out.send.empty());
}

TEST(ElectionTest, OtherClustersAndVersionsAreRefusedNamingThem) {
  NodeState s = Follower();
  VoteRequest r = Ask("n2", 4, 150, 3);
  r.cluster = "other";
  EXPECT_NE(AnswerVote(s, {.latest = 150}, r, Opts("n3"), 0).reply.message.find("'other'"),
            std::string::npos);
  r = Ask("n2", 4, 150, 3);
  r.version = 99;
  EXPECT_NE(AnswerVote(s, {.latest = 150}, r, Opts("n3"), 0).reply.message.find("version 99"),
            std::string::npos);
}

// Answers `out`'s requests with the voters' AnswerVote, saving what they save.
void Deliver(Election& e, ElectionOutbox& out, std::map<std::string, NodeState>& voters,
             NodeState& self, SequenceNumber latest, int64_t now) {
  if (out.save) self = *out.save;
  auto sent = out.send;
  out = ElectionOutbox{};
  for (const auto& [to, req] : sent) {
    VoteAnswer a = AnswerVote(voters[to], {.latest = 150}, req, Opts(to), now);
    if (a.save) voters[to] = *a.save;
    e.OnReply(req, a.reply, self, latest, now, &out);
  }
}

TEST(ElectionTest, StandsAfterTheTimeOutAndWinsWithAMajority) {
  NodeState self = Follower();
  std::map<std::string, NodeState> voters{{"n1", Follower()}, {"n3", Follower()}};
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  EXPECT_GE(e.NextWakeUp(), 2000 * kMs);
  EXPECT_LT(e.NextWakeUp(), 3000 * kMs);
  e.Tick(self, 150, 1999 * kMs, &out);
  EXPECT_TRUE(out.send.empty());
  int64_t now = e.NextWakeUp();
  e.Tick(self, 150, now, &out);
  ASSERT_EQ(e.phase(), Election::Phase::kPreVote);
  ASSERT_EQ(out.send.size(), 2u);
  EXPECT_TRUE(out.send[0].second.pre_vote);
  EXPECT_EQ(out.send[0].second.epoch, 4u);
  EXPECT_FALSE(out.save.has_value());
  Deliver(e, out, voters, self, 150, now);
  // The pre-votes made a majority: it saved its own vote and asks for real ones.
  ASSERT_EQ(e.phase(), Election::Phase::kVote);
  ASSERT_TRUE(out.save.has_value());
  EXPECT_EQ(out.save->vote_epoch, 4u);
  EXPECT_EQ(out.save->voted_for, "n2");
  EXPECT_FALSE(out.send[0].second.pre_vote);
  Deliver(e, out, voters, self, 150, now);
  EXPECT_EQ(e.phase(), Election::Phase::kWon);
  ASSERT_TRUE(out.lead.has_value());
  EXPECT_EQ(*out.lead, 4u);
  // It leads epoch 4 from its log's end.
  BeginElectedEpoch(self, 151, "n2", *out.lead);
  EXPECT_EQ(self.history.back(), (EpochEntry{4, 151, "n2"}));
}

// Two candidates that stand together: the one that grants the other's pre-vote yields when
// the other's log is more up to date, or as up to date with a lower id; it then stands again
// only a round's time-out later. The other goes on, and wins with the yielder's vote.
TEST(ElectionTest, OfTwoCandidatesStandingTogetherTheLessFitYieldsAtThePreVote) {
  NodeState self = Follower();
  auto standing = [&](const std::string& id) {
    auto e = std::make_unique<Election>(Opts(id), 7, 0);
    ElectionOutbox out;
    int64_t now = e->NextWakeUp();
    e->Tick(self, 150, now, &out);
    EXPECT_EQ(e->phase(), Election::Phase::kPreVote);
    EXPECT_EQ(e->epoch(), 4u);
    return std::make_pair(std::move(e), now);
  };
  ElectionOutbox out;
  {  // as up to date: n2 yields to n1, and not to n3
    auto [n2, now] = standing("n2");
    EXPECT_FALSE(n2->OnPreVoteGranted(Ask("n3", 4, 150, 3, true), self, 150, now, &out));
    EXPECT_EQ(n2->phase(), Election::Phase::kPreVote);
    EXPECT_FALSE(n2->OnPreVoteGranted(Ask("n1", 5, 150, 3, true), self, 150, now, &out));
    EXPECT_FALSE(n2->OnPreVoteGranted(Ask("n1", 4, 150, 3, false), self, 150, now, &out));
    EXPECT_TRUE(n2->OnPreVoteGranted(Ask("n1", 4, 150, 3, true), self, 150, now, &out));
    EXPECT_EQ(n2->phase(), Election::Phase::kFollowing);
    EXPECT_GE(n2->NextWakeUp(), now + 1000 * kMs);  // the round's time-out, at least
    EXPECT_LT(n2->NextWakeUp(), now + 2000 * kMs);
    ASSERT_FALSE(out.logs.empty());
    EXPECT_NE(out.logs.back().find("yields epoch 4 to 'n1'"), std::string::npos);
  }
  {  // more up to date: n1 yields to n3, whose id is higher
    auto [n1, now] = standing("n1");
    EXPECT_TRUE(n1->OnPreVoteGranted(Ask("n3", 4, 160, 3, true), self, 150, now, &out));
    EXPECT_EQ(n1->phase(), Election::Phase::kFollowing);
  }
  {  // a node not standing has nothing to yield
    Election following(Opts("n2"), 7, 0);
    EXPECT_FALSE(following.OnPreVoteGranted(Ask("n1", 4, 150, 3, true), self, 150, 0, &out));
  }
}

// A node that refuses a pre-vote to a candidate whose log is behind its own, or because it
// heard its leader lately, drops the random part of its wait: the jitter only keeps
// candidates of equal logs apart. It still stands only once it suspects its leader.
TEST(ElectionTest, ANodeThatRefusesAPreVoteStandsWithoutTheJitter) {
  NodeState self = Follower();
  ElectionOutbox out;
  // Election time-out 2 s from the contact at 0, then up to 1 s of jitter: drawn above 2 s.
  auto fresh = [] {
    for (uint64_t seed = 1;; ++seed) {
      auto e = std::make_unique<Election>(Opts("n2"), seed, 0);
      if (e->NextWakeUp() > 2100 * kMs) return e;
    }
  };
  {  // asked before its own time-out: it stands at the time-out, not later
    auto e = fresh();
    EXPECT_TRUE(e->OnPreVoteRefused(Ask("n3", 4, 149, 3, true), Refusal::kBehind, self, 150,
                                    1500 * kMs, &out));
    EXPECT_EQ(e->NextWakeUp(), 2000 * kMs);
    e->Tick(self, 150, 1999 * kMs, &out);
    EXPECT_EQ(e->phase(), Election::Phase::kFollowing);
    e->Tick(self, 150, 2000 * kMs, &out);
    EXPECT_EQ(e->phase(), Election::Phase::kPreVote);
  }
  {  // asked after its time-out, within the jitter: at once
    auto e = fresh();
    EXPECT_TRUE(e->OnPreVoteRefused(Ask("n3", 4, 149, 3, true), Refusal::kBehind, self, 150,
                                    2050 * kMs, &out));
    EXPECT_EQ(e->NextWakeUp(), 2050 * kMs);
  }
  {  // refused for a leader heard lately, whatever the candidate's log: at the time-out
    auto e = fresh();
    EXPECT_TRUE(e->OnPreVoteRefused(Ask("n3", 4, 150, 3, true), Refusal::kLeaderHeard, self, 150,
                                    1500 * kMs, &out));
    EXPECT_EQ(e->NextWakeUp(), 2000 * kMs);
  }
  {  // past the time-out, a candidate as up to date, or further, or a real vote, changes nothing
    auto e = fresh();
    int64_t at = e->NextWakeUp();
    EXPECT_FALSE(e->OnPreVoteRefused(Ask("n3", 4, 150, 3, true), Refusal::kLeaderHeard, self, 150,
                                     2050 * kMs, &out));
    EXPECT_FALSE(e->OnPreVoteRefused(Ask("n3", 4, 120, 4, true), Refusal::kLeaderHeard, self, 150,
                                     2050 * kMs, &out));
    EXPECT_FALSE(e->OnPreVoteRefused(Ask("n3", 4, 149, 3, false), Refusal::kBehind, self, 150,
                                     2050 * kMs, &out));
    EXPECT_EQ(e->NextWakeUp(), at);
  }
  {  // a refusal that says nothing of the leader (another cluster, a non-voter, an old
     // epoch) changes nothing
    auto e = fresh();
    int64_t at = e->NextWakeUp();
    EXPECT_FALSE(e->OnPreVoteRefused(Ask("n3", 4, 149, 3, true), Refusal::kInvalid, self, 150,
                                     1500 * kMs, &out));
    EXPECT_EQ(e->NextWakeUp(), at);
  }
  {  // a leader heard later moves the time-out on
    auto e = fresh();
    e->OnLeaderContact(1000 * kMs);
    e->OnPreVoteRefused(Ask("n3", 4, 149, 3, true), Refusal::kBehind, self, 150, 1500 * kMs, &out);
    EXPECT_EQ(e->NextWakeUp(), 3000 * kMs);
  }
  {  // a node that may not stand, or that stands already, changes nothing
    auto e = fresh();
    e->set_may_stand(false);
    EXPECT_FALSE(e->OnPreVoteRefused(Ask("n3", 4, 149, 3, true), Refusal::kBehind, self, 150,
                                     2050 * kMs, &out));
    e->set_may_stand(true);
    e->Tick(self, 150, e->NextWakeUp(), &out);
    ASSERT_EQ(e->phase(), Election::Phase::kPreVote);
    out = ElectionOutbox();
    EXPECT_FALSE(e->OnPreVoteRefused(Ask("n3", 4, 149, 3, true), Refusal::kBehind, self, 150,
                                     4000 * kMs, &out));
    EXPECT_TRUE(out.send.empty());
  }
  {  // standing, refused by a voter that now stands behind it: asked again at once
    auto e = fresh();
    out = ElectionOutbox();
    int64_t now = e->NextWakeUp();
    e->Tick(self, 150, now, &out);
    ASSERT_EQ(e->phase(), Election::Phase::kPreVote);
    VoteRequest mine = out.send[0].second;
    VoteReply no{.granted = false, .voter = "n3", .epoch = 3, .message = "heard lately"};
    out = ElectionOutbox();
    e->OnReply(mine, no, self, 150, now + 1, &out);
    ASSERT_EQ(e->phase(), Election::Phase::kPreVote);  // n1 has not answered yet
    EXPECT_TRUE(e->OnPreVoteRefused(Ask("n3", 4, 149, 3, true), Refusal::kBehind, self, 150,
                                    now + 2, &out));
    ASSERT_EQ(out.send.size(), 1u);
    EXPECT_EQ(out.send[0].first, "n3");
    EXPECT_TRUE(out.send[0].second.pre_vote);
    EXPECT_EQ(out.send[0].second.epoch, 4u);
    VoteReply yes{.granted = true, .voter = "n3", .epoch = 3, .message = ""};
    out = ElectionOutbox();
    e->OnReply(mine, yes, self, 150, now + 3, &out);
    EXPECT_EQ(e->phase(), Election::Phase::kVote);  // with n3, a majority of pre-votes
  }
}

TEST(ElectionTest, TheLeaderHeardEndsAnElection) {
  NodeState self = Follower();
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  e.Tick(self, 150, e.NextWakeUp(), &out);
  ASSERT_EQ(e.phase(), Election::Phase::kPreVote);
  e.OnLeaderContact(3500 * kMs);
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
  EXPECT_GE(e.NextWakeUp(), 5500 * kMs);
  // A late grant of the abandoned round counts for nothing.
  VoteReply yes{.granted = true, .voter = "n3", .epoch = 3, .message = ""};
  out = ElectionOutbox{};
  e.OnReply(out.send.empty() ? Ask("n2", 4, 150, 3, true) : out.send[0].second, yes, self, 150,
            3600 * kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
  EXPECT_TRUE(out.send.empty());
}

TEST(ElectionTest, ARoundWithoutAMajorityIsGivenUpAndTriedAboveWhatTheRefusalsNamed) {
  NodeState self = Follower({"n1", "n2", "n3", "n4", "n5"});
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  int64_t now = e.NextWakeUp();
  e.Tick(self, 150, now, &out);
  ASSERT_EQ(out.send.size(), 4u);
  VoteRequest req = out.send[0].second;
  // One grant (two of five with its own) is no majority; a refusal names epoch 9.
  e.OnReply(req, {.granted = true, .voter = "n1", .epoch = 3, .message = ""}, self, 150, now, &out);
  e.OnReply(req, {.granted = false, .voter = "n3", .epoch = 9, .message = "no"}, self, 150, now,
            &out);
  EXPECT_EQ(e.phase(), Election::Phase::kPreVote);
  e.Tick(self, 150, now + 999 * kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kPreVote);
  e.Tick(self, 150, now + 1000 * kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
  out = ElectionOutbox{};
  now = e.NextWakeUp();
  EXPECT_LT(now, 3000 * kMs + 2000 * kMs + 1000 * kMs);
  e.Tick(self, 150, now, &out);
  ASSERT_FALSE(out.send.empty());
  EXPECT_EQ(out.send[0].second.epoch, 10u);
}

// Two candidates that stood together each voted for itself and refuse the other: with three
// voters neither can win, and each gives up at the refusal instead of at the round's end.
TEST(ElectionTest, ARoundRefusedByTooManyIsGivenUpAtOnce) {
  NodeState self = Follower();
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  int64_t now = e.NextWakeUp();
  e.Tick(self, 150, now, &out);
  ASSERT_EQ(out.send.size(), 2u);
  VoteRequest req = out.send[0].second;
  e.OnReply(req, {.granted = false, .voter = "n3", .epoch = 4, .message = "voted for n3"},
            self, 150, now + kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kPreVote) << "one refusal of three leaves a majority";
  e.OnReply(req, {.granted = false, .voter = "n1", .epoch = 4, .message = "leads"}, self, 150,
            now + 2 * kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
  EXPECT_LE(e.NextWakeUp(), now + 2 * kMs + 1000 * kMs) << "stands again after the jitter";
}

TEST(ElectionTest, AVoteGivenToAnotherMeanwhileEndsTheRound) {
  NodeState self = Follower();
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  int64_t now = e.NextWakeUp();
  e.Tick(self, 150, now, &out);
  VoteRequest req = out.send[0].second;
  // Before the pre-votes come back, n2 grants n3 its vote in epoch 4.
  self.vote_epoch = 4;
  self.voted_for = "n3";
  out = ElectionOutbox{};
  e.OnReply(req, {.granted = true, .voter = "n1", .epoch = 3, .message = ""}, self, 150, now, &out);
  EXPECT_FALSE(out.save.has_value());
  EXPECT_TRUE(out.send.empty());
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
}

TEST(ElectionTest, TheOnlyVoterWinsAlone) {
  NodeState self = Follower({"n2"});
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  e.Tick(self, 150, e.NextWakeUp(), &out);
  EXPECT_EQ(e.phase(), Election::Phase::kWon);
  ASSERT_TRUE(out.save.has_value());
  EXPECT_EQ(out.lead, std::optional<Epoch>(4));
  // Had its vote not been saved, the win is void and it stands again later.
  e.Abandon(200'000 * kMs);
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
  EXPECT_GT(e.NextWakeUp(), 200'000 * kMs - 1);
}

TEST(ElectionTest, ALeaseHoldsWhileAMajorityAcknowledgesWithinIt) {
  Membership m = Voters({"n1", "n2", "n3", "n4", "n5"});
  LeaderLease lease(1500);
  EXPECT_FALSE(lease.Holds(m, "n1", 0));
  lease.OnAck("n2", 100 * kMs);
  EXPECT_FALSE(lease.Holds(m, "n1", 200 * kMs));  // two of five
  lease.OnAck("n3", 300 * kMs);
  EXPECT_TRUE(lease.Holds(m, "n1", 400 * kMs));
  // It lasts from the older of the two sends that make the majority.
  EXPECT_EQ(lease.ExpiresAt(m, "n1"), 1600 * kMs);
  EXPECT_FALSE(lease.Holds(m, "n1", 1600 * kMs));
  lease.OnAck("n2", 50 * kMs);  // an older send acknowledged late changes nothing
  EXPECT_EQ(lease.ExpiresAt(m, "n1"), 1600 * kMs);
  lease.OnAck("n4", 1000 * kMs);
  EXPECT_EQ(lease.ExpiresAt(m, "n1"), 1800 * kMs);
  // Learners do not count.
  Membership with_learner = Voters({"n1", "n2", "n3"});
  with_learner.members.push_back({"n9", "", false});
  LeaderLease l2(1500);
  l2.OnAck("n9", 100 * kMs);
  EXPECT_FALSE(l2.Holds(with_learner, "n1", 200 * kMs));
  l2.OnAck("n3", 100 * kMs);
  EXPECT_TRUE(l2.Holds(with_learner, "n1", 200 * kMs));
  // The only voter holds it alone.
  EXPECT_TRUE(LeaderLease(1500).Holds(Voters({"n1"}), "n1", 99'999 * kMs));
}

// The votes that elect a leader count towards its lease from when its round asked: a voter
// that granted refuses every other candidate for an election time-out after (its caller counts
// the vote as its leader heard), so the new leader takes writes as it begins.
TEST(ElectionTest, TheVotesThatElectALeaderCountTowardsItsLease) {
  NodeState self = Follower();
  std::map<std::string, NodeState> voters{{"n1", Follower()}, {"n3", Follower()}};
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  const int64_t asked = e.NextWakeUp();
  e.Tick(self, 150, asked, &out);
  Deliver(e, out, voters, self, 150, asked);  // the pre-votes; the real round asks now
  ASSERT_EQ(e.phase(), Election::Phase::kVote);
  Deliver(e, out, voters, self, 150, asked + 30 * kMs);  // granted 30 ms later
  ASSERT_TRUE(out.lead.has_value());
  EXPECT_EQ(out.elected_by.asked_us, asked);
  // n1's vote made the majority; n3's came after the win and counts for nothing.
  EXPECT_EQ(out.elected_by.voters, (std::vector<std::string>{"n1", "n2"}));
  LeaderLease lease(1500);
  EXPECT_FALSE(lease.Holds(self.membership, "n2", asked + 40 * kMs));
  for (const std::string& v : out.elected_by.voters) lease.OnAck(v, out.elected_by.asked_us);
  EXPECT_TRUE(lease.Holds(self.membership, "n2", asked + 40 * kMs));
  EXPECT_EQ(lease.ExpiresAt(self.membership, "n2"), asked + 1500 * kMs);
  // n1, its vote counted as its leader heard, refuses another candidate until an election
  // time-out after it, past the lease.
  VoterView n1{
      .latest = 150, .leads = false, .leader_heard_us = asked + 30 * kMs, .heard_from = "n2"};
  VoteAnswer other = AnswerVote(voters["n1"], n1, Ask("n3", 5, 150, 3, true), Opts("n1"),
                                asked + 2000 * kMs);
  EXPECT_FALSE(other.reply.granted);
  EXPECT_EQ(other.refusal, Refusal::kLeaderHeard);
  EXPECT_TRUE(AnswerVote(voters["n1"], n1, Ask("n3", 5, 150, 3, true), Opts("n1"),
                         asked + 2030 * kMs)
                  .reply.granted);
  // Not the one it voted for: had the answer been lost, n2 would stand again, and win.
  EXPECT_TRUE(AnswerVote(voters["n1"], n1, Ask("n2", 5, 150, 3, true), Opts("n1"),
                         asked + 100 * kMs)
                  .reply.granted);
}

TEST(ElectionTest, ALeaderStepsDownOnlyAGraceAfterALeaseItHeld) {
  Membership m = Voters({"n1", "n2", "n3"});
  const int64_t grace = 800 * kMs;
  LeaderLease lease(500);
  // Never held (its followers not started yet): it waits, however long.
  EXPECT_FALSE(lease.StepDownDue(m, "n1", 0, grace));
  EXPECT_FALSE(lease.StepDownDue(m, "n1", 60'000 * kMs, grace));
  lease.OnAck("n2", 60'100 * kMs);  // held until 60,600 ms
  EXPECT_FALSE(lease.StepDownDue(m, "n1", 60'200 * kMs, grace));
  EXPECT_FALSE(lease.StepDownDue(m, "n1", 61'399 * kMs, grace));  // lapsed, within the grace
  EXPECT_TRUE(lease.StepDownDue(m, "n1", 61'400 * kMs, grace));
  // A voter joining without answering does not reset what was held.
  Membership grown = Voters({"n1", "n2", "n3", "n4", "n5"});
  EXPECT_EQ(lease.ExpiresAt(grown, "n1"), LeaderLease::kNotHeld);
  EXPECT_TRUE(lease.StepDownDue(grown, "n1", 61'400 * kMs, grace));
  // Answered by one voter of four (no majority): that voter may refuse others its vote for
  // the leader's sake, so the grace runs from the look that saw the answer.
  Membership four = Voters({"n1", "n2", "n3", "n4"});
  LeaderLease partial(500);
  EXPECT_FALSE(partial.StepDownDue(four, "n1", 10'000 * kMs, grace));
  partial.OnAck("n2", 10'050 * kMs);
  EXPECT_FALSE(partial.StepDownDue(four, "n1", 10'100 * kMs, grace));
  EXPECT_FALSE(partial.StepDownDue(four, "n1", 10'899 * kMs, grace));
  EXPECT_TRUE(partial.StepDownDue(four, "n1", 10'900 * kMs, grace));
  // A learner's answer does not count: it votes for no one.
  Membership learner = Voters({"n1", "n2", "n3"});
  learner.members.push_back({"n9", "", false});
  LeaderLease heard_by_learner(500);
  heard_by_learner.OnAck("n9", 100 * kMs);
  EXPECT_FALSE(heard_by_learner.StepDownDue(learner, "n1", 200 * kMs, grace));
  EXPECT_FALSE(heard_by_learner.StepDownDue(learner, "n1", 9'000 * kMs, grace));
  // The only voter holds it through now; should voters join, its grace counts from there.
  LeaderLease alone(500);
  EXPECT_FALSE(alone.StepDownDue(Voters({"n1"}), "n1", 5'000 * kMs, grace));
  EXPECT_FALSE(alone.StepDownDue(m, "n1", 5'500 * kMs, grace));
  EXPECT_TRUE(alone.StepDownDue(m, "n1", 5'800 * kMs, grace));
}

TEST(ElectionTest, TheVoteIsKeptInTheNodeState) {
  NodeState s = Follower();
  s.vote_epoch = 4;
  s.voted_for = "n2";
  std::string path = ::testing::TempDir() + "/election-node-state";
  ASSERT_TRUE(SaveNodeState(path, s).ok());
  auto back = LoadNodeState(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->vote_epoch, 4u);
  EXPECT_EQ(back->voted_for, "n2");
  EXPECT_EQ(back->HighestEpoch(), 4u);
  // A node that never voted writes no vote line and reads back none.
  NodeState never = Follower();
  ASSERT_TRUE(SaveNodeState(path, never).ok());
  EXPECT_EQ(LoadNodeState(path)->vote_epoch, 0u);
}

// The lag rule (Patroni's maximum_lag_on_failover): a node further behind the last position
// it knew of its leader than max_failover_lag does not stand, unless an operator forces it;
// one never seeded, or told to re-seed, never does.
TEST(ElectionTest, ANodeTooFarBehindItsLeaderDoesNotStandUnlessForced) {
  NodeState s = Follower();
  EXPECT_EQ(WhyNotStand(s, false, 150, 160, /*max_lag=*/10, false), "");
  std::string why = WhyNotStand(s, false, 150, 161, 10, false);
  EXPECT_NE(why.find("11 behind"), std::string::npos) << why;
  EXPECT_NE(why.find("max_failover_lag (10)"), std::string::npos) << why;
  EXPECT_EQ(WhyNotStand(s, false, 150, 161, 10, /*forced=*/true), "");
  EXPECT_EQ(WhyNotStand(s, false, 150, 100000, /*max_lag=*/0, false), "");  // no limit
  EXPECT_EQ(WhyNotStand(s, false, 150, 0, 10, false), "");  // no position known
  EXPECT_NE(WhyNotStand(s, true, 150, 150, 10, true), "");  // stale data: never
  NodeState blank = s;
  blank.database_id.clear();
  EXPECT_NE(WhyNotStand(blank, false, 0, 0, 0, true), "");
  EXPECT_EQ(PossibleLoss(150, 161), 11u);
  EXPECT_EQ(PossibleLoss(170, 161), 0u);
}

// An operator's promotion stands when told, whatever the jitter.
TEST(ElectionTest, StandAtStandsWhenTold) {
  NodeState self = Follower();
  Election e(Opts("n2"), 7, 0);
  ElectionOutbox out;
  e.Tick(self, 150, 10 * kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kFollowing);
  e.StandAt(10 * kMs);
  EXPECT_EQ(e.NextWakeUp(), 10 * kMs);
  e.Tick(self, 150, 10 * kMs, &out);
  EXPECT_EQ(e.phase(), Election::Phase::kPreVote);
  EXPECT_EQ(out.send.size(), 2u);
}

}  // namespace
}  // namespace walship::replication
