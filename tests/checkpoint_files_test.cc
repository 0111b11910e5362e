// Installing a staged checkpoint in place of a node's database, from each state a crash can
// leave it in, and checking a checkpoint directory.
#include "rpc/checkpoint_files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine/test_util.h"

namespace walship::rpc {
namespace {

namespace fs = std::filesystem;
using engine::OpType;
using engine::WriteOp;
using engine::testing::OpenOrDie;
using engine::testing::TempDir;

// A data dir holding a database with `old_keys` keys, a node state that needs a snapshot, and
// in seed/ a complete checkpoint of another database with `new_keys` keys.
struct Fixture {
  explicit Fixture(int old_keys = 3, int new_keys = 7) {
    data = dir.Sub("data");
    fs::create_directories(data);
    Fill(data + "/db", "old", old_keys);
    replication::NodeState st;
    st.database_id = "db1";
    st.epoch = 4;
    st.history = {{1, 1, "n1"}};
    st.role = "follower";
    st.leader = "n1";
    st.needs_snapshot = "position 4 is gone";
    EXPECT_TRUE(replication::SaveNodeState(state(), st).ok());
    // The checkpoint: a leader's database copied by RocksDB into seed/db.
    Fill(dir.Sub("leader"), "new", new_keys);
    auto leader = OpenOrDie(dir.Sub("leader"));
    fs::create_directories(data + "/seed");
    auto seq = leader->CreateCheckpoint(data + "/seed/db");
    EXPECT_TRUE(seq.ok()) << seq.status();
    replication::SnapshotManifest m;
    m.cluster = "c";
    m.database_id = "db1";
    m.source = "n1";
    m.seq = *seq;
    m.epoch = 3;
    m.history = {{1, 1, "n1"}, {3, 2, "n2"}};
    for (const auto& e : fs::directory_iterator(data + "/seed/db")) {
      auto f = ChecksumFile(e.path().string());
      EXPECT_TRUE(f.ok());
      m.files.push_back(*f);
    }
    manifest = m;
    std::ofstream(data + "/seed/" + kManifestFile) << replication::FormatManifest(m);
  }
  static void Fill(const std::string& path, const std::string& prefix, int n) {
    auto e = OpenOrDie(path);
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(
          e->Write(std::vector<WriteOp>{{OpType::kPut, prefix + std::to_string(i), "v"}}, {}).ok());
    }
  }
  std::string state() const { return data + "/node-state"; }
  engine::SequenceNumber Latest() const { return OpenOrDie(data + "/db")->LatestSequence(); }

  TempDir dir;
  std::string data;
  replication::SnapshotManifest manifest;
};

void ExpectInstalled(const Fixture& f) {
  EXPECT_EQ(f.Latest(), 7u);
  EXPECT_FALSE(fs::exists(f.data + "/seed"));
  EXPECT_FALSE(fs::exists(f.data + "/db.old"));
  auto st = replication::LoadNodeState(f.state());
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(st->needs_snapshot.empty());
  EXPECT_EQ(st->history, f.manifest.history);
  EXPECT_EQ(st->epoch, 4u);  // never below what it had seen
  EXPECT_EQ(st->leader, "n1");
}

TEST(InstallStagedSeedTest, InstallsACompleteSeed) {
  Fixture f;
  auto m = InstallStagedSeed(f.data, f.state(), "n1");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->has_value());
  EXPECT_EQ((*m)->seq, 7u);
  ExpectInstalled(f);
  // Again: nothing to install.
  auto again = InstallStagedSeed(f.data, f.state(), "n1");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
}

TEST(InstallStagedSeedTest, FinishesAfterACrashOnceTheOldDatabaseWasMovedAside) {
  Fixture f;
  fs::rename(f.data + "/db", f.data + "/db.old");
  auto m = InstallStagedSeed(f.data, f.state(), "n1");
  ASSERT_TRUE(m.ok()) << m.status();
  ExpectInstalled(f);
}

TEST(InstallStagedSeedTest, FinishesAfterACrashBeforeTheStateWasSaved) {
  Fixture f;
  fs::rename(f.data + "/db", f.data + "/db.old");
  fs::rename(f.data + "/seed/db", f.data + "/db");
  auto m = InstallStagedSeed(f.data, f.state(), "n1");
  ASSERT_TRUE(m.ok()) << m.status();
  ExpectInstalled(f);
}

TEST(InstallStagedSeedTest, ASeedMissingAFileIsNotInstalledAndTheOldDataStays) {
  Fixture f;
  fs::remove(f.data + "/seed/db/" + f.manifest.files.front().name);
  auto m = InstallStagedSeed(f.data, f.state(), "n1");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->has_value());
  EXPECT_EQ(f.Latest(), 3u);
  EXPECT_FALSE(fs::exists(f.data + "/seed/" + kManifestFile)) << "fetched again, not trusted";
  auto st = replication::LoadNodeState(f.state());
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->needs_snapshot.empty());
}

TEST(InstallStagedSeedTest, AnOldDatabaseMovedAsideWhoseSeedIsLostComesBack) {
  Fixture f;
  fs::rename(f.data + "/db", f.data + "/db.old");
  fs::remove_all(f.data + "/seed");
  auto m = InstallStagedSeed(f.data, f.state(), "n1");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->has_value());
  EXPECT_EQ(f.Latest(), 3u);
  EXPECT_FALSE(fs::exists(f.data + "/db.old"));
}

TEST(VerifyCheckpointDirTest, RefusesAFlippedByteAndAStrayFile) {
  Fixture f;
  std::string cp = f.data + "/seed";
  ASSERT_TRUE(VerifyCheckpointDir(cp).ok());
  std::string first = cp + "/db/" + f.manifest.files.front().name;
  {
    std::fstream io(first, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(0);
    char c = 0;
    io.read(&c, 1);
    io.seekp(0);
    c ^= 1;
    io.write(&c, 1);
  }
  auto flipped = VerifyCheckpointDir(cp);
  ASSERT_FALSE(flipped.ok());
  EXPECT_NE(flipped.status().message().find("is damaged"), std::string::npos) << flipped.status();
  Fixture g;
  std::ofstream(g.data + "/seed/db/extra") << "x";
  auto stray = VerifyCheckpointDir(g.data + "/seed");
  ASSERT_FALSE(stray.ok());
  EXPECT_NE(stray.status().message().find("does not list"), std::string::npos) << stray.status();
}

}  // namespace
}  // namespace walship::rpc
