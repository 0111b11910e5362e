#include "replication/leader_search.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace walship::replication {
namespace {

constexpr int64_t kMs = 1000;
using Kind = SearchStep::Kind;

LeaderSearchOptions Wait(int64_t ms) {
  LeaderSearchOptions o;
  o.leader_wait_us = ms * kMs;
  o.retry_for_us = 30'000 * kMs;
  return o;
}

void ExpectAsk(const SearchStep& s, const std::string& endpoint) {
  EXPECT_EQ(s.kind, Kind::kAsk);
  EXPECT_EQ(s.endpoint, endpoint);
}

TEST(LeaderSearchTest, AFollowersRefusalLeadsToTheLeaderItNames) {
  LeaderSearch s({"a", "b", "c"}, Wait(5000));
  ExpectAsk(s.Begin(0, false), "a");
  ExpectAsk(s.OnAnswer(Answer::kNotLeader, "b", 1 * kMs), "b");
  SearchStep done = s.OnAnswer(Answer::kTaken, "", 2 * kMs);
  EXPECT_EQ(done.kind, Kind::kDone);
  EXPECT_EQ(s.leader(), "b");
  ExpectAsk(s.Begin(10 * kMs, false), "b");  // the next write goes to the leader at once
}

// The leader died: the others name it until they elect one. Each pass asks every member, the
// dead one last once it could not be reached, and pauses a tenth of the time waited so far.
TEST(LeaderSearchTest, AFailoverIsWaitedOutAndTheDeadLeaderAskedLast) {
  LeaderSearch s({"a", "b", "c"}, Wait(5000));
  ExpectAsk(s.Begin(0, false), "a");
  ExpectAsk(s.OnAnswer(Answer::kUnreachable, "", 0), "b");
  ExpectAsk(s.OnAnswer(Answer::kNotLeader, "a", 1 * kMs), "c");  // a was asked in this pass
  SearchStep pause = s.OnAnswer(Answer::kNotLeader, "a", 2 * kMs);
  EXPECT_EQ(pause.kind, Kind::kPause);
  EXPECT_EQ(pause.pause_us, 10 * kMs);  // the least pause
  ExpectAsk(s.Resume(12 * kMs), "b");   // a, named but unreachable last pass, goes last
  ExpectAsk(s.OnAnswer(Answer::kNotLeader, "a", 13 * kMs), "c");
  ExpectAsk(s.OnAnswer(Answer::kNotLeader, "", 14 * kMs), "a");
  pause = s.OnAnswer(Answer::kUnreachable, "", 300 * kMs);
  EXPECT_EQ(pause.pause_us, 30 * kMs);  // a tenth of the 300 ms waited
  // c won: b names it, and c, without its lease yet, refuses once (a refusal rpc::ClusterClient
  // passes on as such only for a write with a request id).
  ExpectAsk(s.Resume(330 * kMs), "b");
  ExpectAsk(s.OnAnswer(Answer::kNotLeader, "c", 331 * kMs), "c");
  ExpectAsk(s.OnAnswer(Answer::kRefused, "", 332 * kMs), "a");
  EXPECT_EQ(s.OnAnswer(Answer::kUnreachable, "", 333 * kMs).kind, Kind::kPause);
  ExpectAsk(s.Resume(370 * kMs), "c");  // the leader named last, reached last pass
  EXPECT_EQ(s.OnAnswer(Answer::kTaken, "", 371 * kMs).kind, Kind::kDone);
  EXPECT_EQ(s.leader(), "c");
}

TEST(LeaderSearchTest, TheWaitEndsWhenTheNextPauseWouldPassIt) {
  LeaderSearch s({"a"}, Wait(1000));
  ExpectAsk(s.Begin(0, false), "a");
  int passes = 1;
  int64_t now = 0;
  SearchStep step = s.OnAnswer(Answer::kRefused, "", now);
  while (step.kind == Kind::kPause) {
    EXPECT_LE(now + step.pause_us, 1000 * kMs);
    now += step.pause_us;
    ExpectAsk(s.Resume(now), "a");
    ++passes;
    step = s.OnAnswer(Answer::kRefused, "", now);
  }
  EXPECT_EQ(step.kind, Kind::kGiveUp);
  EXPECT_GT(now, 800 * kMs);
  EXPECT_GT(passes, 20);  // 10 ms pauses at first, then a tenth of the time waited
  EXPECT_LT(passes, 60);
  // No wait: one pass.
  LeaderSearch once({"a", "b"}, Wait(0));
  ExpectAsk(once.Begin(0, false), "a");
  ExpectAsk(once.OnAnswer(Answer::kUnreachable, "", 0), "b");
  EXPECT_EQ(once.OnAnswer(Answer::kRefused, "", 0).kind, Kind::kGiveUp);
}

TEST(LeaderSearchTest, AnAnswerInDoubtIsSentAgainOnlyWithARequestId) {
  LeaderSearch plain({"a", "b"}, Wait(5000));
  ExpectAsk(plain.Begin(0, false), "a");
  EXPECT_EQ(plain.OnAnswer(Answer::kInDoubt, "", 1 * kMs).kind, Kind::kGiveUp);
  LeaderSearch with_id({"a", "b"}, Wait(0));
  ExpectAsk(with_id.Begin(0, /*has_request_id=*/true), "a");
  ExpectAsk(with_id.OnAnswer(Answer::kInDoubt, "", 1 * kMs), "b");
  // With an id the budget is retry_for (30 s here), though leader_wait is 0.
  EXPECT_EQ(with_id.OnAnswer(Answer::kUnreachable, "", 20'000 * kMs).kind, Kind::kPause);
  ExpectAsk(with_id.Resume(22'000 * kMs), "a");
  EXPECT_EQ(with_id.OnAnswer(Answer::kInDoubt, "", 29'990 * kMs).kind, Kind::kAsk);
  EXPECT_EQ(with_id.OnAnswer(Answer::kRefused, "", 29'995 * kMs).kind, Kind::kGiveUp);
}

TEST(LeaderSearchTest, HintsAreFollowedOnlyWhenAskedAndAFewPerPass) {
  LeaderSearchOptions no_hints = Wait(0);
  no_hints.follow_hints = false;
  LeaderSearch alone({"a"}, no_hints);
  ExpectAsk(alone.Begin(0, false), "a");
  EXPECT_EQ(alone.OnAnswer(Answer::kNotLeader, "b", 0).kind, Kind::kGiveUp);
  // With a request id, a leader that does not take writes yet is asked again; a node that
  // does not lead ends it at once.
  ExpectAsk(alone.Begin(0, /*has_request_id=*/true), "a");
  EXPECT_EQ(alone.OnAnswer(Answer::kRefused, "", 0).kind, Kind::kPause);
  ExpectAsk(alone.Resume(10 * kMs), "a");
  EXPECT_EQ(alone.OnAnswer(Answer::kNotLeader, "", 11 * kMs).kind, Kind::kGiveUp);
  // Nodes naming ever new leaders (each restarted, naming the one it followed before): three
  // are followed in a pass, then the members.
  LeaderSearch chain({"a", "b"}, Wait(0));
  ExpectAsk(chain.Begin(0, false), "a");
  ExpectAsk(chain.OnAnswer(Answer::kNotLeader, "x1", 0), "x1");
  ExpectAsk(chain.OnAnswer(Answer::kNotLeader, "x2", 0), "x2");
  ExpectAsk(chain.OnAnswer(Answer::kNotLeader, "x3", 0), "x3");
  ExpectAsk(chain.OnAnswer(Answer::kNotLeader, "x4", 0), "b");
}

}  // namespace
}  // namespace walship::replication
