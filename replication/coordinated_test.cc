// Choosing the candidate and the leader's hold on its lease when etcd chooses the leader.
#include "replication/coordinated.h"

#include <gtest/gtest.h>

namespace walship::replication {
namespace {

Membership Voters(const std::vector<std::string>& ids) {
  Membership m;
  m.version = 1;
  for (const std::string& id : ids) m.members.push_back({id, "", true});
  return m;
}

CandidateOptions Options(const std::string& self) {
  CandidateOptions o;
  o.self = self;
  o.gather_ms = 300;
  o.wait_ms = 2000;
  return o;
}

LogPosition At(SequenceNumber seq, Epoch epoch, const std::string& leader = "n1") {
  return LogPosition{seq, epoch, leader};
}

constexpr int64_t kMs = 1000;

TEST(TurnToTakeTest, TheFittestTakesOnceEveryOtherVoterPublished) {
  Membership m = Voters({"n1", "n2", "n3"});
  // n1 led and died; n2 holds more of its epoch than n3.
  std::vector<Candidacy> all = {{"n2", At(120, 5)}, {"n3", At(100, 5)}};
  CandidateTurn n2 = TurnToTake(Options("n2"), At(120, 5), all, m, "n1", 0, 1 * kMs);
  EXPECT_TRUE(n2.take) << n2.why;
  CandidateTurn n3 = TurnToTake(Options("n3"), At(100, 5), all, m, "n1", 0, 1 * kMs);
  EXPECT_FALSE(n3.take);
  EXPECT_NE(n3.why.find("waiting for 'n2'"), std::string::npos) << n3.why;
}

TEST(TurnToTakeTest, ALaggingNodeThatSawTheVacancyFirstWaitsForTheOthers) {
  Membership m = Voters({"n1", "n2", "n3"});
  // Only n3's own candidacy is in: n2, which may hold more, has not said where it stands.
  std::vector<Candidacy> all = {{"n3", At(100, 5)}};
  CandidateTurn early = TurnToTake(Options("n3"), At(100, 5), all, m, "n1", 0, 100 * kMs);
  EXPECT_FALSE(early.take);
  EXPECT_NE(early.why.find("gathering"), std::string::npos) << early.why;
  // n2 never publishes (dead, or cut off from etcd, holding writes acknowledged by a
  // majority of n1 and n2): n3 alone is no majority, and waits, as the vote would.
  CandidateTurn alone = TurnToTake(Options("n3"), At(100, 5), all, m, "n1", 0, 60'000 * kMs);
  EXPECT_FALSE(alone.take);
  EXPECT_NE(alone.why.find("too few voters"), std::string::npos) << alone.why;
  // Of five voters, three that published make a majority once the gathering time is over.
  Membership five = Voters({"n1", "n2", "n3", "n4", "n5"});
  std::vector<Candidacy> three = {{"n3", At(100, 5)}, {"n4", At(90, 5)}, {"n5", At(100, 5)}};
  EXPECT_FALSE(TurnToTake(Options("n3"), At(100, 5), three, five, "n1", 0, 299 * kMs).take);
  EXPECT_TRUE(TurnToTake(Options("n3"), At(100, 5), three, five, "n1", 0, 300 * kMs).take);
}

TEST(TurnToTakeTest, ALaterEpochBeatsALongerLog) {
  Membership m = Voters({"n1", "n2", "n3"});
  std::vector<Candidacy> all = {{"n2", At(500, 4)}, {"n3", At(90, 6, "n3")}};
  EXPECT_FALSE(TurnToTake(Options("n2"), At(500, 4), all, m, "n1", 0, 1 * kMs).take);
  EXPECT_TRUE(TurnToTake(Options("n3"), At(90, 6, "n3"), all, m, "n1", 0, 1 * kMs).take);
}

TEST(TurnToTakeTest, EqualLogsGoToTheLowerId) {
  Membership m = Voters({"n1", "n2", "n3"});
  std::vector<Candidacy> all = {{"n2", At(100, 5)}, {"n3", At(100, 5)}};
  EXPECT_TRUE(TurnToTake(Options("n2"), At(100, 5), all, m, "n1", 0, 1 * kMs).take);
  EXPECT_FALSE(TurnToTake(Options("n3"), At(100, 5), all, m, "n1", 0, 1 * kMs).take);
}

TEST(TurnToTakeTest, AFitterNodeThatDoesNotTakeTheKeyIsWaitedForOnlySoLong) {
  // Of five voters, n2 holds the most and does not act; n3, n4 and n5 are a majority without
  // it, and n3 the fittest of them: one of them holds every acknowledged write.
  Membership m = Voters({"n1", "n2", "n3", "n4", "n5"});
  std::vector<Candidacy> all = {
      {"n2", At(120, 5)}, {"n3", At(100, 5)}, {"n4", At(95, 5)}, {"n5", At(90, 5)}};
  EXPECT_FALSE(TurnToTake(Options("n3"), At(100, 5), all, m, "n1", 0, 1999 * kMs).take);
  CandidateTurn late = TurnToTake(Options("n3"), At(100, 5), all, m, "n1", 0, 2000 * kMs);
  EXPECT_TRUE(late.take) << late.why;
  EXPECT_NE(late.why.find("has not taken the key"), std::string::npos) << late.why;
  // n4 is not the fittest of any majority: it never takes the key.
  EXPECT_FALSE(TurnToTake(Options("n4"), At(95, 5), all, m, "n1", 0, 60'000 * kMs).take);
  // Of three voters, the fitter n2 is needed for a majority: n3 waits for it however long
  // (its candidacy leaves etcd with its lease should it die).
  Membership three = Voters({"n1", "n2", "n3"});
  std::vector<Candidacy> two = {{"n2", At(120, 5)}, {"n3", At(100, 5)}};
  CandidateTurn wait = TurnToTake(Options("n3"), At(100, 5), two, three, "n1", 0, 60'000 * kMs);
  EXPECT_FALSE(wait.take);
  EXPECT_NE(wait.why.find("waiting for 'n2'"), std::string::npos) << wait.why;
}

TEST(TurnToTakeTest, LearnersAndStrangersDoNotCount) {
  Membership m = Voters({"n1", "n2", "n3"});
  m.members.push_back({"n4", "", false});
  // A learner and a node outside the membership hold more, but may not lead.
  std::vector<Candidacy> all = {
      {"n4", At(999, 5)}, {"x9", At(999, 9)}, {"n2", At(100, 5)}, {"n3", At(100, 5)}};
  // n2 ties with n3 and has the lower id.
  EXPECT_FALSE(TurnToTake(Options("n3"), At(100, 5), all, m, "n1", 0, 1 * kMs).take);
  EXPECT_TRUE(TurnToTake(Options("n2"), At(100, 5), all, m, "n1", 0, 1 * kMs).take);
}

TEST(TurnToTakeTest, WithNoMembershipKnownEveryoneCountsAndTheGatheringIsWaited) {
  Membership none;
  std::vector<Candidacy> all = {{"n2", At(100, 5)}};
  EXPECT_FALSE(TurnToTake(Options("n2"), At(100, 5), all, none, "n1", 0, 1 * kMs).take);
  EXPECT_TRUE(TurnToTake(Options("n2"), At(100, 5), all, none, "n1", 0, 300 * kMs).take);
  std::vector<Candidacy> fitter = {{"n3", At(200, 5)}};
  EXPECT_FALSE(TurnToTake(Options("n2"), At(100, 5), fitter, none, "n1", 0, 300 * kMs).take);
}

TEST(CoordinatorLeaseTest, HeldUntilNineTenthsOfTheTimeToLiveAfterTheRenewalWasSent) {
  CoordinatorLease lease;
  EXPECT_FALSE(lease.Holds(0));
  lease.OnRenewed(1'000'000, 2);
  EXPECT_TRUE(lease.Holds(2'799'999));
  EXPECT_FALSE(lease.Holds(2'800'000));  // etcd keeps it at least until 3'000'000
  // An answer to an older renewal that arrives late never shortens the hold.
  lease.OnRenewed(500'000, 2);
  EXPECT_EQ(lease.until_us(), 2'800'000);
  lease.OnRenewed(2'000'000, 0);  // etcd no longer holds it
  EXPECT_FALSE(lease.Holds(2'000'001));
  lease.OnRenewed(3'000'000, 1);
  EXPECT_TRUE(lease.Holds(3'899'999));
  lease.OnLost();
  EXPECT_FALSE(lease.Holds(3'000'001));
}

}  // namespace
}  // namespace walship::replication
