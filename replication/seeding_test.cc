// The seeding policy: the manifest format, resuming a transfer, the state a seeded node starts
// with, and how progress reads.
#include "replication/seeding.h"

#include <gtest/gtest.h>

namespace walship::replication {
namespace {

SnapshotManifest Sample() {
  SnapshotManifest m;
  m.cluster = "c1";
  m.database_id = "abc123";
  m.source = "n1";
  m.seq = 4242;
  m.epoch = 7;
  m.history = {{1, 1, "n1"}, {5, 100, ""}, {7, 4000, "n2"}};
  m.taken_unix_ms = 1700000000000;
  m.files = {{"000012.sst", 1000, 77}, {"CURRENT", 16, 5}, {"MANIFEST-000010", 0, 0}};
  return m;
}

TEST(SeedingTest, ManifestRoundTrips) {
  SnapshotManifest m = Sample();
  absl::StatusOr<SnapshotManifest> back = ParseManifest(FormatManifest(m), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->cluster, m.cluster);
  EXPECT_EQ(back->database_id, m.database_id);
  EXPECT_EQ(back->source, m.source);
  EXPECT_EQ(back->seq, m.seq);
  EXPECT_EQ(back->epoch, m.epoch);
  EXPECT_EQ(back->history, m.history);
  EXPECT_EQ(back->taken_unix_ms, m.taken_unix_ms);
  EXPECT_EQ(back->files, m.files);
  EXPECT_EQ(back->TotalBytes(), 1016u);
}

TEST(SeedingTest, BadManifestsAreRefusedNamingTheLine) {
  std::string good = FormatManifest(Sample());
  struct Case {
    std::string text;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"", "empty"},
      {"walship-node-state 2\n", "not a walship checkpoint manifest"},
      {"walship-checkpoint 9\n", "format version 9"},
      {good + "file ../../etc/passwd 1 1\n", "unsafe file name"},
      {good + "file 000012.sst 1000 77\n", "listed twice"},
      {good + "bogus line\n", "unknown line"},
      {good + "history 3 5000 n1\n", "history"},
      {"walship-checkpoint 1\ncluster c\ndatabase_id d\nseq 1\n", "lists no files"},
      {"walship-checkpoint 1\ncluster c\nseq 1\nfile a 1 1\n", "incomplete"},
      {"walship-checkpoint 1\ncluster c\ndatabase_id d\nseq x\n", "seq is not a number"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SnapshotManifest> m = ParseManifest(c.text, "M");
    ASSERT_FALSE(m.ok()) << c.text;
    EXPECT_NE(m.status().message().find(c.expect), std::string::npos)
        << m.status() << " for " << c.text;
    EXPECT_EQ(m.status().message().substr(0, 1), "M");
  }
}

TEST(SeedingTest, VerifiedListIgnoresALineCutShort) {
  absl::StatusOr<std::vector<SnapshotFile>> v =
      ParseVerified("a.sst 10 3\nb.sst 20 4\nc.sst 30", "v");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 2u);
  EXPECT_EQ((*v)[1], (SnapshotFile{"b.sst", 20, 4}));
  EXPECT_FALSE(ParseVerified("a.sst ten 3\n", "v").ok());
}

TEST(SeedingTest, ResumeKeepsOnlyIdenticalFiles) {
  SnapshotManifest m = Sample();
  std::vector<SnapshotFile> verified = {
      {"000012.sst", 1000, 77},   // identical: kept
      {"CURRENT", 16, 6},         // another checksum: fetched again
      {"000009.sst", 50, 1},      // no longer listed: deleted
  };
  FetchPlan plan = PlanFetch(m, verified);
  ASSERT_EQ(plan.keep.size(), 1u);
  EXPECT_EQ(plan.keep[0].name, "000012.sst");
  EXPECT_EQ(plan.kept_bytes, 1000u);
  ASSERT_EQ(plan.fetch.size(), 2u);
  EXPECT_EQ(plan.fetch[0].name, "CURRENT");
  EXPECT_EQ(plan.fetch[1].name, "MANIFEST-000010");
  EXPECT_EQ(plan.fetch_bytes, 16u);
  EXPECT_EQ(plan.remove, (std::vector<std::string>{"CURRENT", "000009.sst"}));
}

TEST(SeedingTest, APartlyFetchedFileResumesOnlyWhenListedAlike) {
  SnapshotManifest before = Sample();
  SnapshotFile same = before.files[0];
  EXPECT_TRUE(ResumesPartial(&before, same));
  SnapshotFile rewritten = same;
  rewritten.crc += 1;  // a file of that name with other bytes
  EXPECT_FALSE(ResumesPartial(&before, rewritten));
  EXPECT_FALSE(ResumesPartial(&before, SnapshotFile{"000099.sst", 10, 1}));
  EXPECT_FALSE(ResumesPartial(nullptr, same));
}

TEST(SeedingTest, SeedMustComeFromTheSameClusterAndDatabase) {
  SnapshotManifest m = Sample();
  NodeState fresh;
  EXPECT_TRUE(CheckSeedFor(m, "c1", fresh).ok());
  absl::Status other = CheckSeedFor(m, "c2", fresh);
  EXPECT_NE(other.message().find("cluster 'c1'"), std::string::npos) << other;
  NodeState stale;
  stale.database_id = "abc123";
  EXPECT_TRUE(CheckSeedFor(m, "c1", stale).ok());
  stale.database_id = "zzz";
  absl::Status wrong = CheckSeedFor(m, "c1", stale);
  EXPECT_NE(wrong.message().find("database abc123"), std::string::npos) << wrong;
}

TEST(SeedingTest, SeededStateFollowsAndNeverForgetsAnEpoch) {
  SnapshotManifest m = Sample();
  NodeState old;
  old.database_id = "abc123";
  old.epoch = 9;  // it had seen a later epoch than the checkpoint's
  old.needs_snapshot = "position 5 is gone";
  old.role = "follower";
  old.leader = "n0";
  old.handover_to = "n3";
  NodeState next = StateAfterSeed(old, m, "n1");
  EXPECT_EQ(next.database_id, "abc123");
  EXPECT_EQ(next.history, m.history);
  EXPECT_EQ(next.epoch, 9u);
  EXPECT_TRUE(next.needs_snapshot.empty());
  EXPECT_EQ(next.role, "follower");
  EXPECT_EQ(next.leader, "n1");
  EXPECT_TRUE(next.handover_to.empty());
  EXPECT_TRUE(ValidateState(next).ok());
  old.epoch = 2;
  EXPECT_EQ(StateAfterSeed(old, m, "n1").epoch, 7u);
  // A vote granted while seeded is kept: the node never votes twice in that epoch.
  old.vote_epoch = 12;
  old.voted_for = "n2";
  next = StateAfterSeed(old, m, "n1");
  EXPECT_EQ(next.vote_epoch, 12u);
  EXPECT_EQ(next.voted_for, "n2");
  EXPECT_EQ(next.HighestEpoch(), 12u);
  EXPECT_TRUE(ValidateState(next).ok());
}

TEST(SeedingTest, ReadyWithinTheLag) {
  EXPECT_TRUE(IsReady(100, 100, 0));
  EXPECT_TRUE(IsReady(100, 90, 0));  // the leader's figure is older
  EXPECT_TRUE(IsReady(100, 150, 50));
  EXPECT_FALSE(IsReady(100, 151, 50));
}

TEST(SeedingTest, PoliciesParseAndProgressReads) {
  EXPECT_EQ(*ParseReseedPolicy("automatic"), ReseedPolicy::kAutomatic);
  EXPECT_EQ(*ParseReseedPolicy("operator"), ReseedPolicy::kOperator);
  EXPECT_FALSE(ParseReseedPolicy("auto").ok());
  SeedProgress p;
  p.phase = SeedProgress::Phase::kCopying;
  p.source = "n1";
  p.done_bytes = 180ull << 20;
  p.total_bytes = 420ull << 20;
  p.bytes_per_sec = 95ull << 20;
  EXPECT_EQ(DescribeProgress(p),
            "snapshot: copying 42% (180 MiB of 420 MiB, 95 MiB/s) from n1");
  EXPECT_EQ(HumanBytes(420), "420 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
}

}  // namespace
}  // namespace walship::replication
