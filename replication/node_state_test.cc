// Unit tests of the node state file and the epoch rule (replication/node_state.h).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "replication/handover.h"
#include "replication/slot_file.h"
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

// NodeState

TEST(NodeStateTest, SaveThenLoadRoundTrips) {
  TempDir dir;
  NodeState state;
  state.database_id = NewDatabaseId();
  state.epoch = 7;
  state.history = {{1, 1, "n1"}, {4, 120, "n2"}, {7, 120, "n1"}};
  ASSERT_TRUE(SaveNodeState(dir.Sub("state"), state).ok());
  auto loaded = LoadNodeState(dir.Sub("state"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->database_id, state.database_id);
  EXPECT_EQ(loaded->epoch, 7u);
  EXPECT_EQ(loaded->history, state.history);
  EXPECT_EQ(loaded->EpochOf(0), 0u);
  EXPECT_EQ(loaded->EpochOf(119), 1u);
  EXPECT_EQ(loaded->EpochOf(120), 7u);
  // Saving again replaces the file.
  state.epoch = 8;
  state.history.push_back({8, 200, "n3"});
  ASSERT_TRUE(SaveNodeState(dir.Sub("state"), state).ok());
  loaded = LoadNodeState(dir.Sub("state"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->epoch, 8u);
  EXPECT_EQ(loaded->history, state.history);
  EXPECT_FALSE(fs::exists(dir.Sub("state.tmp")));
}

TEST(NodeStateTest, MalformedFileIsDataLossNamingFileAndLine) {
  TempDir dir;
  std::string path = dir.Sub("state");
  // Writes `contents` as the state file and expects DataLoss naming `where`.
  auto expect_data_loss = [&](const std::string& contents, const std::string& where) {
    {
      std::ofstream out(path);
      out << contents;
    }
    auto loaded = LoadNodeState(path);
    ASSERT_TRUE(absl::IsDataLoss(loaded.status())) << contents << ": " << loaded.status();
    EXPECT_NE(loaded.status().message().find(where), std::string::npos) << loaded.status();
  };
  expect_data_loss("walship-node-state 1\ndatabase_id abc\nepoch seven\n", path + ":3:");
  expect_data_loss("not a state file\n", path + ":1:");
  expect_data_loss("walship-node-state 1\nepoch 2\nhistory 2 1\nhistory 1 5\n", path);
}

// Files written before epoch entries named their leader still load (leaders unknown), and
// are rewritten in the current format.
TEST(NodeStateTest, VersionOneFilesLoadWithUnknownLeaders) {
  TempDir dir;
  std::string path = dir.Sub("state");
  {
    std::ofstream out(path);
    out << "walship-node-state 1\ndatabase_id abc\nepoch 3\nhistory 1 1\nhistory 3 40\n";
  }
  auto loaded = LoadNodeState(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->history, (std::vector<EpochEntry>{{1, 1, ""}, {3, 40, ""}}));
  ASSERT_TRUE(SaveNodeState(path, *loaded).ok());
  std::ifstream in(path, std::ios::binary);
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(LooksLikeSlotFile(contents));
  auto slots = ReadSlots(path, contents);
  ASSERT_TRUE(slots.ok()) << slots.status();
  EXPECT_TRUE(slots->body.starts_with("walship-node-state " +
                                      std::to_string(kNodeStateVersion) + "\n"))
      << slots->body;
  auto again = LoadNodeState(path);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->history, loaded->history);
}

TEST(NodeStateTest, ANewerFormatIsRefusedNamingBothVersions) {
  TempDir dir;
  std::string path = dir.Sub("state");
  {
    std::ofstream out(path);
    out << "walship-node-state 9\nepoch 3\nsomething new\n";
  }
  auto loaded = LoadNodeState(path);
  ASSERT_TRUE(absl::IsFailedPrecondition(loaded.status())) << loaded.status();
  std::string message(loaded.status().message());
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("version 9"), std::string::npos) << message;
  EXPECT_NE(message.find("versions 1 to " + std::to_string(kNodeStateVersion)),
            std::string::npos)
      << message;
}

// The file holds two copies written in turn: a save overwrites the older in place, and a
// copy torn by a crash during its save leaves the one before it, the last whole save.
TEST(NodeStateTest, ASaveCutShortLeavesTheSaveBeforeIt) {
  TempDir dir;
  std::string path = dir.Sub("state");
  auto bytes = [&] {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto put = [&](const std::string& contents) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << contents;
  };
  NodeState state = LeaderState(2);
  for (Epoch e = 3; e <= 5; ++e) {
    state.epoch = e;
    ASSERT_TRUE(SaveNodeState(path, state).ok());
  }
  std::string file = bytes();
  ASSERT_EQ(file.size(), 2 * kSlotAlign);  // saves in place: the size never changed
  auto slots = ReadSlots(path, file);
  ASSERT_TRUE(slots.ok()) << slots.status();
  EXPECT_EQ(slots->generation, 3u);  // the first save created the file as generation 1
  EXPECT_EQ(slots->slot, 0);         // 1 in slot 0, 2 in slot 1, 3 in slot 0
  EXPECT_EQ(slots->other, "");
  // Epoch 5's save torn (a byte of its body changed): epoch 4's is read.
  std::string torn = file;
  torn[file.find('\n') + 5] ^= 0x20;  // in the body
  put(torn);
  auto loaded = LoadNodeState(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->epoch, 4u);
  auto read = ReadSlots(path, torn);
  ASSERT_TRUE(read.ok());
  EXPECT_NE(read->other.find("checksum"), std::string::npos) << read->other;
  // Torn at the first copy's very start: still read as two copies, from the second.
  std::string headless = file;
  headless.replace(0, 14, std::string(14, '\0'));
  put(headless);
  loaded = LoadNodeState(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->epoch, 4u);
  // A copy of a newer slot format: refused, naming both versions, not skipped for the other.
  std::string newer = file;
  newer.replace(0, 15, "walship-slots 9");
  put(newer);
  auto refused = LoadNodeState(path);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("slot format version 9"), std::string::npos)
      << refused.status();
  put(torn);
  // The next save goes over the torn copy, and is read.
  state.epoch = 6;
  ASSERT_TRUE(SaveNodeState(path, state).ok());
  EXPECT_EQ(LoadNodeState(path)->epoch, 6u);
  EXPECT_EQ(bytes().size(), 2 * kSlotAlign);
  // Both copies damaged, or a size that is not two slots: data loss, naming the file.
  std::string both = bytes();
  both[both.find('\n') + 5] ^= 0x20;
  both[both.find('\n', kSlotAlign) + 5] ^= 0x20;
  put(both);
  auto lost = LoadNodeState(path);
  ASSERT_TRUE(absl::IsDataLoss(lost.status())) << lost.status();
  EXPECT_NE(lost.status().message().find("neither copy in " + path), std::string::npos)
      << lost.status();
  put(both.substr(0, 5000));
  lost = LoadNodeState(path);
  ASSERT_TRUE(absl::IsDataLoss(lost.status())) << lost.status();
  EXPECT_NE(lost.status().message().find("5000 bytes"), std::string::npos) << lost.status();
  // A save over a damaged file writes it anew.
  ASSERT_TRUE(SaveNodeState(path, state).ok());
  EXPECT_EQ(LoadNodeState(path)->epoch, 6u);
}

// A state that outgrows its copies (a long epoch history) re-creates the file with bigger
// ones; every save reads back.
TEST(NodeStateTest, AStateThatOutgrowsItsCopiesGetsBiggerOnes) {
  TempDir dir;
  std::string path = dir.Sub("state");
  NodeState state = LeaderState(1);
  for (Epoch e = 2; e <= 400; ++e) {
    BeginEpoch(state, state.history.back().start_seq + 10, "n1");
    ASSERT_TRUE(SaveNodeState(path, state).ok());
    auto loaded = LoadNodeState(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_EQ(loaded->history, state.history);
  }
  EXPECT_GT(fs::file_size(path), 2 * kSlotAlign);
  EXPECT_EQ(fs::file_size(path) % (2 * kSlotAlign), 0u);
}

// A state that does not hold together is never written: the file keeps the last good one.
TEST(NodeStateTest, SaveRefusesAStateOutOfOrderAndKeepsTheFile) {
  TempDir dir;
  std::string path = dir.Sub("state");
  NodeState good = LeaderState(2);
  ASSERT_TRUE(SaveNodeState(path, good).ok());
  NodeState bad = good;
  bad.epoch = 3;
  bad.history = {{1, 1, "a"}, {2, 50, "b"}, {3, 10, "c"}};  // epoch 3 starts before epoch 2
  absl::Status s = SaveNodeState(path, bad);
  EXPECT_TRUE(absl::IsInternal(s)) << s;
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  NodeState behind = good;
  behind.epoch = 1;  // below the history's last epoch
  EXPECT_TRUE(absl::IsInternal(SaveNodeState(path, behind)));
  NodeState spaced = good;
  spaced.history.back().leader = "two words";
  EXPECT_TRUE(absl::IsInternal(SaveNodeState(path, spaced)));
  auto loaded = LoadNodeState(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->history, good.history);
  EXPECT_EQ(loaded->epoch, good.epoch);
}

// The epoch rule: a new epoch is above every epoch the node has seen, and its history stays
// in order whatever the node held, including a history adopted from a leader whose last
// epoch starts past what this node applied (which once produced a file the node then refused
// to start from).
TEST(EpochTest, BeginEpochIsAboveEverythingSeenAndKeepsTheHistoryInOrder) {
  NodeState state;
  BeginEpoch(state, 1, "n1");
  EXPECT_EQ(state.epoch, 1u);
  EXPECT_EQ(state.history, (std::vector<EpochEntry>{{1, 1, "n1"}}));
  // Restarted with nothing written: the empty epoch is replaced.
  BeginEpoch(state, 1, "n1");
  EXPECT_EQ(state.epoch, 2u);
  EXPECT_EQ(state.history, (std::vector<EpochEntry>{{2, 1, "n1"}}));
  // A follower adopted (5, n2) starting at 100 but applied only up to 60.
  state.epoch = 5;
  state.history = {{2, 1, "n1"}, {5, 100, "n2"}};
  BeginEpoch(state, 61, "n3");
  EXPECT_EQ(state.epoch, 6u);
  EXPECT_EQ(state.history, (std::vector<EpochEntry>{{2, 1, "n1"}, {6, 61, "n3"}}));
  EXPECT_TRUE(ValidateState(state).ok());
  // The epoch is above the history's too, should the current epoch lag behind it.
  state.epoch = 1;
  state.history = {{9, 1, "n2"}};
  BeginEpoch(state, 10, "n1");
  EXPECT_EQ(state.epoch, 10u);
  EXPECT_TRUE(ValidateState(state).ok());
}

TEST(NodeStateTest, MissingFileIsAnEmptyState) {
  TempDir dir;
  auto loaded = LoadNodeState(dir.Sub("nothing-here"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->database_id.empty());
  EXPECT_EQ(loaded->epoch, 0u);
  EXPECT_TRUE(loaded->history.empty());
}

}  // namespace
}  // namespace walship::replication
