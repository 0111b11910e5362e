#include "replication/rollback.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "replication/test_fixtures.h"

namespace walship::replication {
namespace {

using namespace ::walship::replication::testing;  // NOLINT: the fixtures of these tests

// A node that led epoch 3 from seq 101 and wrote up to 150; the new leader, n2, followed it
// up to 140 and began epoch 4 at 141.
TEST(RollbackTest, TheDivergenceStartsWhereTheHistoriesPart) {
  std::vector<EpochEntry> ours = {{1, 1, "n1"}, {3, 101, "n1"}};
  std::vector<EpochEntry> theirs = {{1, 1, "n1"}, {3, 101, "n1"}, {4, 141, "n2"}};
  EXPECT_EQ(DivergenceStart(ours, 150, theirs, 170), 141u);
  // Its log a prefix of the leader's: nothing to roll back.
  EXPECT_EQ(DivergenceStart(ours, 130, theirs, 170), 131u);
  EXPECT_EQ(DivergenceStart(ours, 140, theirs, 170), 141u);
  // Epoch 3 begun by another node on the leader's side: all of ours from 101 is not its.
  std::vector<EpochEntry> other = {{1, 1, "n1"}, {3, 101, "n3"}};
  EXPECT_EQ(DivergenceStart(ours, 150, other, 170), 101u);
  // The leader's log ends inside our last epoch.
  EXPECT_EQ(DivergenceStart(ours, 150, {{1, 1, "n1"}, {3, 101, "n1"}}, 120), 121u);
}

TEST(RollbackTest, AFileHoldsEveryOpPastTheDivergenceAndReadsBack) {
  TempDir dir;
  auto engine = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(engine->Write({{engine::OpType::kPut, "kept", "1"}}, {}).ok());
  ASSERT_TRUE(engine
                  ->Write({{engine::OpType::kPut, "a key", std::string("v\n\0x", 4)},
                           {engine::OpType::kDelete, "gone", ""}},
                          {})
                  .ok());
  ASSERT_TRUE(engine->Write({{engine::OpType::kDeleteRange, "b", "c"}}, {}).ok());
  NodeState ours;
  ours.epoch = 3;
  ours.history = {{3, 1, "n1"}};
  RollbackHeader h;
  h.cluster = "c";
  h.database_id = "db1";
  h.node = "n1";
  h.first = 2;
  h.last = engine->LatestSequence();
  h.leader = "n2";
  h.leader_epoch = 4;
  h.leader_latest = 1;
  h.written_unix_s = 1764800000;
  std::string path = dir.Sub("rollback-1.txt");
  auto written = WriteRollbackFile(*engine, ours, h, path);
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_EQ(written->ops.size(), 3u);
  EXPECT_TRUE(written->missing.empty());

  auto read = ReadRollbackFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->ops.size(), 3u);
  EXPECT_EQ(read->ops[0].seq, 2u);
  EXPECT_EQ(read->ops[0].epoch, 3u);
  EXPECT_EQ(read->ops[0].op.key, "a key");
  EXPECT_EQ(read->ops[0].op.value, std::string("v\n\0x", 4));
  EXPECT_EQ(read->ops[1].op.type, engine::OpType::kDelete);
  EXPECT_EQ(read->ops[1].op.key, "gone");
  EXPECT_EQ(read->ops[2].op.type, engine::OpType::kDeleteRange);
  EXPECT_EQ(read->ops[2].op.value, "c");
  EXPECT_EQ(read->header.leader, "n2");
  EXPECT_EQ(read->header.last, 4u);

  // Cut short, or damaged: refused naming the line.
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(path) << text.substr(0, text.rfind("end "));
  EXPECT_NE(ReadRollbackFile(path).status().message().find("cut short"), std::string::npos);
  std::ofstream(path) << "walship-rollback 1\nop 1 1 frobnicate k v\nend 1\n";
  EXPECT_NE(ReadRollbackFile(path).status().message().find(":2: unknown op"), std::string::npos)
      << ReadRollbackFile(path).status();
}

}  // namespace
}  // namespace walship::replication
