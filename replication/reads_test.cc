// Unit tests of the read checks (replication/reads.h): tokens against a node's history, and
// bounds on lag.
#include "replication/reads.h"

#include <gtest/gtest.h>

namespace walship::replication {
namespace {

// A node whose history is epoch 1 from seq 1, epoch 3 from seq 101 (epoch 2 lost its tail:
// its writes past 100 were replaced), having applied up to `applied`.
ReadPosition At(SequenceNumber applied, SequenceNumber token_seq) {
  NodeState state;
  state.epoch = 3;
  state.history = {{1, 1, "n1"}, {3, 101, "n2"}};
  ReadPosition p = PositionIn(state, applied, token_seq);
  p.lag_us = 5'000;
  return p;
}

ReadVerdict Verdict(ReadToken after, SequenceNumber applied, int64_t max_lag_ms = -1) {
  ReadNeeds needs;
  needs.after = after;
  needs.max_lag_ms = max_lag_ms;
  return CheckRead(needs, At(applied, after.seq)).verdict;
}

TEST(ReadCheckTest, ATokenIsServedOnceItsPositionIsAppliedInTheSameHistory) {
  EXPECT_EQ(Verdict({}, 0), ReadVerdict::kServe);
  EXPECT_EQ(Verdict({1, 50}, 120), ReadVerdict::kServe);
  EXPECT_EQ(Verdict({3, 120}, 120), ReadVerdict::kServe);
  EXPECT_EQ(Verdict({3, 121}, 120), ReadVerdict::kWait);
  EXPECT_EQ(Verdict({1, 90}, 80), ReadVerdict::kWait);
  // Epoch 4, which this node has not heard of yet, may begin at 121: wait for it.
  EXPECT_EQ(Verdict({4, 130}, 120), ReadVerdict::kWait);
}

TEST(ReadCheckTest, ATokenOfAWriteALaterEpochReplacedIsLostNeverServed) {
  // Epoch 2 wrote seq 101-110 on a leader that lost them; epoch 3 wrote 101- again.
  ReadNeeds needs;
  needs.after = {2, 105};
  ReadCheck c = CheckRead(needs, At(120, 105));
  EXPECT_EQ(c.verdict, ReadVerdict::kLost);
  EXPECT_NE(c.why.find("lost in a failover"), std::string::npos) << c.why;
  // Not applied yet either: seq 105 can only come under epoch 3 here.
  EXPECT_EQ(Verdict({2, 105}, 100), ReadVerdict::kLost);
  // A token of epoch 1 past where epoch 3 began.
  EXPECT_EQ(Verdict({1, 101}, 120), ReadVerdict::kLost);
  // The same position as a bare sequence number is served: it cannot tell the histories
  // apart, which is why replies carry tokens.
  EXPECT_EQ(Verdict({0, 105}, 120), ReadVerdict::kServe);
}

// Epoch 3 began at 100 on a node that lacked epoch 2's writes past 99, wrote (3, 100) and
// died; epoch 4 was won by a node that kept epoch 2's tail (100-199): the write of epoch 3 is
// not in that history, although seq 100 is there under an earlier epoch.
TEST(ReadCheckTest, AWriteOfAnEpochALaterHistorySkippedIsLostToo) {
  NodeState state;
  state.epoch = 4;
  state.history = {{1, 1, "n1"}, {2, 50, "n2"}, {4, 200, "n2"}};
  ReadNeeds needs;
  needs.after = {3, 100};
  ReadPosition p = PositionIn(state, 210, 100);
  EXPECT_EQ(CheckRead(needs, p).verdict, ReadVerdict::kLost) << CheckRead(needs, p).why;
  needs.after = {2, 150};  // epoch 2's tail, kept
  EXPECT_EQ(CheckRead(needs, PositionIn(state, 210, 150)).verdict, ReadVerdict::kServe);
}

TEST(ReadCheckTest, ANodeHoldingATailALaterEpochReplacedSendsTheReadElsewhere) {
  // This node holds 101-120 of epoch 3; a leader of epoch 5 wrote 110- again.
  ReadNeeds needs;
  needs.after = {5, 115};
  EXPECT_EQ(CheckRead(needs, At(120, 115)).verdict, ReadVerdict::kUnavailable);
}

TEST(ReadCheckTest, ALagBoundNeedsANodeThatKnowsItselfCaughtUpThatRecently) {
  ReadNeeds needs;
  needs.max_lag_ms = 10;
  ReadPosition p = At(120, 0);
  p.lag_us = 9'999;
  EXPECT_EQ(CheckRead(needs, p).verdict, ReadVerdict::kServe);
  p.lag_us = 10'001;
  ReadCheck c = CheckRead(needs, p);
  EXPECT_EQ(c.verdict, ReadVerdict::kWait);
  EXPECT_NE(c.why.find("10 ms ago"), std::string::npos) << c.why;
  p.lag_us = -1;  // never caught up, or a leader that takes no writes
  EXPECT_EQ(CheckRead(needs, p).verdict, ReadVerdict::kWait);
  p.lag_us = 0;  // the leader
  needs.max_lag_ms = 0;
  EXPECT_EQ(CheckRead(needs, p).verdict, ReadVerdict::kServe);
  p.lag_us = 5'000'000;  // a bound from a peer too large for microseconds: no overflow
  needs.max_lag_ms = INT64_MAX;
  EXPECT_EQ(CheckRead(needs, p).verdict, ReadVerdict::kServe);
}

TEST(ReadCheckTest, ANodeThatRefusesReadsRefusesThemAll) {
  ReadPosition p = At(120, 0);
  p.refusal = "needs a snapshot";
  EXPECT_EQ(CheckRead({}, p).verdict, ReadVerdict::kUnavailable);
}

TEST(ReadTokenTest, ASessionMovesToTheLaterPositionAndToTheHistoryThatReplacedItsOwn) {
  EXPECT_EQ(Later({1, 5}, {1, 9}), (ReadToken{1, 9}));
  EXPECT_EQ(Later({1, 9}, {}), (ReadToken{1, 9}));
  EXPECT_EQ(Later({2, 120}, {3, 101}), (ReadToken{3, 101}));
  ReadToken t;
  EXPECT_TRUE(ParseToken(TokenText({7, 123456}), &t));
  EXPECT_EQ(t, (ReadToken{7, 123456}));
  EXPECT_FALSE(ParseToken("7-12", &t));
  EXPECT_FALSE(ParseToken("7:", &t));
}

}  // namespace
}  // namespace walship::replication
