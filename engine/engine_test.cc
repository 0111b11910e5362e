#include "engine/engine.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include "engine/fault_env.h"
#include "engine/info_log.h"
#include "engine/test_util.h"

namespace walship::engine {
namespace {

namespace fs = std::filesystem;
using testing::OpenOrDie;
using testing::SameContents;
using testing::ScanAll;
using testing::TempDir;

// Random batches of 1-6 ops mixing puts, deletes and range deletes.
std::vector<WriteOp> RandomOps(std::mt19937_64& rng) {
  std::vector<WriteOp> ops;
  int n = 1 + static_cast<int>(rng() % 6);
  for (int i = 0; i < n; ++i) {
    std::string key = "k" + std::to_string(rng() % 500);
    switch (rng() % 10) {
      case 0:
        ops.push_back({OpType::kDelete, key, ""});
        break;
      case 1:
        ops.push_back({OpType::kDeleteRange, key, key + "5"});
        break;
      default: {
        std::string value(1 + rng() % 200, '\0');
        for (char& c : value) c = static_cast<char>(rng());
        ops.push_back({OpType::kPut, key, value});
      }
    }
  }
  return ops;
}

TEST(EngineTest, WriteReadScan) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(e->LatestSequence(), 0u);
  std::vector<WriteOp> ops = {{OpType::kPut, "a", "1"},
                              {OpType::kPut, "ab", std::string("x\0y", 3)},
                              {OpType::kPut, "b", "2"}};
  auto batch = e->Write(ops, {});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->first_seq, 1u);
  EXPECT_EQ(batch->count, 3u);
  EXPECT_EQ(e->LatestSequence(), 3u);
  EXPECT_EQ(*e->Get("ab"), std::string("x\0y", 3));
  EXPECT_TRUE(absl::IsNotFound(e->Get("zz").status()));

  ScanOptions scan;
  scan.prefix = "a";
  auto kvs = e->Scan(scan);
  ASSERT_TRUE(kvs.ok());
  ASSERT_EQ(kvs->size(), 2u);
  EXPECT_EQ((*kvs)[0].key, "a");
  EXPECT_EQ((*kvs)[1].key, "ab");
  scan = {};
  scan.start = "ab";
  scan.limit = 1;
  kvs = e->Scan(scan);
  ASSERT_EQ(kvs->size(), 1u);
  EXPECT_EQ((*kvs)[0].key, "ab");

  auto del = e->Write(std::vector<WriteOp>{{OpType::kDeleteRange, "a", "b"}}, {});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->first_seq, 4u);
  EXPECT_EQ(ScanAll(*e).size(), 1u);

  auto decoded = DecodeBatch(*batch);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), 3u);
  EXPECT_EQ((*decoded)[1].value, std::string("x\0y", 3));
}

TEST(EngineTest, RefusesWritesThatWouldLeaveHolesInTheLog) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  WriteOptions no_wal;
  no_wal.disable_wal = true;
  auto r = e->Write(std::vector<WriteOp>{{OpType::kPut, "a", "1"}}, no_wal);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_TRUE(absl::IsFailedPrecondition(e->IngestExternalFiles({"/tmp/x.sst"})));
  EXPECT_TRUE(absl::IsInvalidArgument(e->Write({}, {}).status()));
  EXPECT_EQ(e->LatestSequence(), 0u);
}

TEST(EngineTest, SecondOpenOfTheSameDatabaseIsRefused) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  EngineOptions options;
  options.path = dir.Sub("db");
  auto again = Engine::Open(options);
  EXPECT_TRUE(absl::IsFailedPrecondition(again.status())) << again.status();
}

// Every batch written is delivered whole and in order from every batch boundary, across
// WAL switches, and replaying the cursor's output reproduces the database exactly.
TEST(EngineTest, WalCursorIsContiguousFromEveryBoundaryAcrossWalSwitches) {
  TempDir dir;
  auto leader = OpenOrDie(dir.Sub("leader"));
  std::mt19937_64 rng(42);
  std::vector<Batch> written;
  for (int i = 0; i < 400; ++i) {
    auto b = leader->Write(RandomOps(rng), {});
    ASSERT_TRUE(b.ok()) << b.status();
    if (!written.empty()) {
      ASSERT_EQ(b->first_seq, written.back().next_seq());
    }
    written.push_back(*b);
    if (i % 60 == 59) {
      ASSERT_TRUE(leader->Flush().ok());  // switch WAL files
    }
  }
  for (size_t start = 0; start < written.size(); start += 7) {
    auto cursor = leader->NewWalCursor(written[start].first_seq);
    ASSERT_TRUE(cursor.ok());
    size_t i = start;
    while (true) {
      auto next = (*cursor)->Next();
      ASSERT_TRUE(next.ok()) << next.status() << " from batch " << start;
      if (!next->has_value()) break;
      ASSERT_LT(i, written.size());
      EXPECT_EQ((*next)->first_seq, written[i].first_seq);
      EXPECT_EQ((*next)->count, written[i].count);
      EXPECT_EQ((*next)->data, written[i].data);
      ++i;
    }
    EXPECT_EQ(i, written.size()) << "cursor from batch " << start << " stopped early";
  }
  // Replay from the start into a follower: same contents, same sequence.
  auto follower = OpenOrDie(dir.Sub("follower"));
  auto cursor = leader->NewWalCursor(1);
  ASSERT_TRUE(cursor.ok());
  while (true) {
    auto next = (*cursor)->Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) break;
    ASSERT_TRUE(follower->ApplyReplicated(**next, {}).ok());
  }
  EXPECT_EQ(follower->LatestSequence(), leader->LatestSequence());
  EXPECT_TRUE(SameContents(*leader, *follower));
}

TEST(EngineTest, WalCursorPicksUpNewWritesAfterReachingTheEnd) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(e->Write(std::vector<WriteOp>{{OpType::kPut, "a", "1"}}, {}).ok());
  auto cursor = e->NewWalCursor(1);
  ASSERT_TRUE(cursor.ok());
  auto first = (*cursor)->Next();
  ASSERT_TRUE(first.ok() && first->has_value());
  auto end = (*cursor)->Next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
  // Same WAL file.
  ASSERT_TRUE(e->Write(std::vector<WriteOp>{{OpType::kPut, "b", "2"}}, {}).ok());
  auto second = (*cursor)->Next();
  ASSERT_TRUE(second.ok() && second->has_value()) << second.status();
  EXPECT_EQ((*second)->first_seq, 2u);
  // After a WAL switch.
  ASSERT_TRUE(e->Flush().ok());
  ASSERT_TRUE(e->Write(std::vector<WriteOp>{{OpType::kPut, "c", "3"}}, {}).ok());
  auto third = (*cursor)->Next();
  ASSERT_TRUE(third.ok() && third->has_value()) << third.status();
  EXPECT_EQ((*third)->first_seq, 3u);
  auto none = (*cursor)->Next();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(EngineTest, WalCursorRefusesPositionsInsideABatchOrBeyondTheEnd) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  std::vector<WriteOp> two = {{OpType::kPut, "a", "1"}, {OpType::kPut, "b", "2"}};
  ASSERT_TRUE(e->Write(two, {}).ok());
  ASSERT_TRUE(e->Write(two, {}).ok());
  auto inside = (*e->NewWalCursor(2))->Next();
  EXPECT_TRUE(absl::IsInvalidArgument(inside.status())) << inside.status();
  auto beyond = (*e->NewWalCursor(9))->Next();
  EXPECT_TRUE(absl::IsInvalidArgument(beyond.status())) << beyond.status();
  auto at_end = (*e->NewWalCursor(5))->Next();
  ASSERT_TRUE(at_end.ok());
  EXPECT_FALSE(at_end->has_value());
}

TEST(EngineTest, PurgedWalIsReportedAsAGapNotSkipped) {
  TempDir dir;
  EngineOptions options;
  options.wal_retention_bytes = 0;  // age limit only: RocksDB then checks every second
  options.wal_retention_seconds = 1;
  auto e = OpenOrDie(dir.Sub("db"), options);
  bool gap = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int i = 0;
  while (!gap && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(
        e->Write(std::vector<WriteOp>{{OpType::kPut, "k" + std::to_string(i++), "v"}}, {}).ok());
    ASSERT_TRUE(e->Flush().ok());
    auto cursor = e->NewWalCursor(1);
    ASSERT_TRUE(cursor.ok());
    auto next = (*cursor)->Next();
    if (next.ok()) {
      ASSERT_TRUE(next->has_value());
      ASSERT_EQ((*next)->first_seq, 1u) << "cursor skipped ahead instead of reporting a gap";
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    } else {
      EXPECT_TRUE(absl::IsOutOfRange(next.status())) << next.status();
      gap = true;
    }
  }
  EXPECT_TRUE(gap) << "the WAL holding seq 1 was never purged within the deadline";
}

// The size bound on the archived WAL holds at once (not after RocksDB's 10 minutes): the
// oldest files go first, a cursor into them reports the gap, and later positions still read.
TEST(EngineTest, TrimWalArchiveKeepsTheArchiveWithinItsSizeBound) {
  TempDir dir;
  EngineOptions options;
  options.wal_retention_bytes = 256 << 10;
  auto e = OpenOrDie(dir.Sub("db"), options);
  std::string value(1000, 'v');
  std::vector<SequenceNumber> file_starts;
  for (int file = 0; file < 8; ++file) {  // 8 WAL files of about 100 KB each
    file_starts.push_back(e->LatestSequence() + 1);
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(
          e->Write(std::vector<WriteOp>{{OpType::kPut, "k" + std::to_string(i), value}}, {}).ok());
    }
    ASSERT_TRUE(e->Flush().ok());  // switches the WAL; the old file goes to the archive
  }
  auto trim = e->TrimWalArchive();
  ASSERT_TRUE(trim.ok()) << trim.status();
  EXPECT_GT(trim->deleted_files, 0u);
  EXPECT_LE(trim->archived_bytes, options.wal_retention_bytes);
  EXPECT_GT(trim->archived_bytes, 0u);
  auto gone = (*e->NewWalCursor(1))->Next();
  EXPECT_TRUE(absl::IsOutOfRange(gone.status())) << gone.status();
  auto kept = (*e->NewWalCursor(file_starts.back()))->Next();
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_TRUE(kept->has_value());
  EXPECT_EQ((*kept)->first_seq, file_starts.back());
  // Within the bound: nothing more to delete.
  auto again = e->TrimWalArchive();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->deleted_files, 0u);
  EXPECT_EQ(again->archived_bytes, trim->archived_bytes);
  // New files in the archive are seen (the listing is skipped only while it is unchanged).
  for (int file = 0; file < 4; ++file) {
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(
          e->Write(std::vector<WriteOp>{{OpType::kPut, "k" + std::to_string(i), value}}, {}).ok());
    }
    ASSERT_TRUE(e->Flush().ok());
  }
  auto later = e->TrimWalArchive();
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_GT(later->deleted_files, 0u);
  EXPECT_LE(later->archived_bytes, options.wal_retention_bytes);
}

// What readers still need (keep_from) stays past wal_retention_bytes, up to
// wal_pinned_max_bytes; the files left are listed with their first sequence numbers.
TEST(EngineTest, TrimWalArchiveKeepsWhatReadersNeedUpToTheCap) {
  TempDir dir;
  EngineOptions options;
  options.wal_retention_bytes = 256 << 10;
  options.wal_pinned_max_bytes = 600 << 10;
  auto e = OpenOrDie(dir.Sub("db"), options);
  std::string value(1000, 'v');
  std::vector<SequenceNumber> file_starts;
  auto fill = [&](int files) {
    for (int file = 0; file < files; ++file) {  // WAL files of about 100 KB each
      file_starts.push_back(e->LatestSequence() + 1);
      for (int i = 0; i < 100; ++i) {
        ASSERT_TRUE(
            e->Write(std::vector<WriteOp>{{OpType::kPut, "k" + std::to_string(i), value}}, {})
                .ok());
      }
      ASSERT_TRUE(e->Flush().ok());
    }
  };
  fill(5);
  // A reader at the second file's second batch: the second file on are kept, the first goes.
  SequenceNumber reader = file_starts[1] + 1;
  auto trim = e->TrimWalArchive(reader);
  ASSERT_TRUE(trim.ok()) << trim.status();
  EXPECT_EQ(trim->deleted_files, 1u);
  EXPECT_GT(trim->archived_bytes, options.wal_retention_bytes);
  EXPECT_EQ(trim->pinned_bytes, trim->archived_bytes - options.wal_retention_bytes);
  auto at = (*e->NewWalCursor(reader))->Next();
  ASSERT_TRUE(at.ok()) << at.status();
  ASSERT_FALSE(trim->files.empty());
  EXPECT_EQ(trim->files.front().start_seq, file_starts[1]);
  uint64_t total = 0;
  for (const WalFileSpan& f : trim->files) total += f.bytes;
  EXPECT_GE(total, trim->archived_bytes);
  EXPECT_EQ(WalBytesFrom(trim->files, reader), total);
  EXPECT_LT(WalBytesFrom(trim->files, file_starts[3]), total);
  // Past the cap the oldest needed file goes too: the reader meets a gap.
  fill(6);
  auto capped = e->TrimWalArchive(reader);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_LE(capped->archived_bytes, options.wal_retention_bytes + options.wal_pinned_max_bytes);
  auto gone = (*e->NewWalCursor(reader))->Next();
  EXPECT_TRUE(absl::IsOutOfRange(gone.status())) << gone.status();
  // The reader gone, the archive falls back to wal_retention_bytes.
  auto released = e->TrimWalArchive(UINT64_MAX);
  ASSERT_TRUE(released.ok());
  EXPECT_LE(released->archived_bytes, options.wal_retention_bytes);
  EXPECT_EQ(released->pinned_bytes, 0u);
}

// With wal_pinned_max_seconds, a file kept only for a reader goes once its last write is
// that old, whatever the byte cap allows; a younger one stays.
TEST(EngineTest, TrimWalArchiveKeepsWhatReadersNeedForAtMostTheAgeCap) {
  TempDir dir;
  EngineOptions options;
  options.wal_retention_bytes = 256 << 10;
  options.wal_pinned_max_bytes = uint64_t{1} << 30;
  options.wal_pinned_max_seconds = 3600;
  auto e = OpenOrDie(dir.Sub("db"), options);
  std::string value(1000, 'v');
  for (int file = 0; file < 6; ++file) {  // WAL files of about 100 KB each
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(
          e->Write(std::vector<WriteOp>{{OpType::kPut, "k" + std::to_string(i), value}}, {}).ok());
    }
    ASSERT_TRUE(e->Flush().ok());
  }
  // A reader at seq 1: every file is needed, and young: all kept.
  auto young = e->TrimWalArchive(1);
  ASSERT_TRUE(young.ok()) << young.status();
  EXPECT_EQ(young->deleted_files, 0u);
  EXPECT_GT(young->archived_bytes, options.wal_retention_bytes);
  // The same files two hours old: those beyond the retention go, the reader meets a gap.
  auto old_time = std::filesystem::file_time_type::clock::now() - std::chrono::hours(2);
  for (const auto& f : std::filesystem::directory_iterator(dir.Sub("db") + "/archive")) {
    std::filesystem::last_write_time(f.path(), old_time);
  }
  // (A reader at seq 2 needs the same files; another keep_from makes the trim list them again,
  // as the clock passing the first file's age limit would.)
  auto aged = e->TrimWalArchive(2);
  ASSERT_TRUE(aged.ok()) << aged.status();
  EXPECT_GT(aged->deleted_files, 0u);
  EXPECT_LE(aged->archived_bytes, options.wal_retention_bytes);
  auto gone = (*e->NewWalCursor(2))->Next();
  EXPECT_TRUE(absl::IsOutOfRange(gone.status())) << gone.status();
}

TEST(EngineTest, ApplyReplicatedChecksContinuityAndFraming) {
  TempDir dir;
  auto leader = OpenOrDie(dir.Sub("leader"));
  auto follower = OpenOrDie(dir.Sub("follower"));
  auto b1 = *leader->Write(std::vector<WriteOp>{{OpType::kPut, "a", "1"}}, {});
  auto b2 = *leader->Write(std::vector<WriteOp>{{OpType::kPut, "b", "2"}}, {});
  // Out of order: refused, nothing applied.
  EXPECT_TRUE(absl::IsFailedPrecondition(follower->ApplyReplicated(b2, {})));
  EXPECT_EQ(follower->LatestSequence(), 0u);
  // Count that disagrees with the header.
  Batch lying = b1;
  lying.count = 2;
  EXPECT_TRUE(absl::IsDataLoss(follower->ApplyReplicated(lying, {})));
  // Truncated records.
  Batch cut = b1;
  cut.data.resize(cut.data.size() - 1);
  EXPECT_TRUE(absl::IsDataLoss(follower->ApplyReplicated(cut, {})));
  Batch tiny = b1;
  tiny.data = "abc";
  EXPECT_TRUE(absl::IsDataLoss(follower->ApplyReplicated(tiny, {})));
  EXPECT_EQ(follower->LatestSequence(), 0u);
  ASSERT_TRUE(follower->ApplyReplicated(b1, {}).ok());
  ASSERT_TRUE(follower->ApplyReplicated(b2, {}).ok());
  EXPECT_TRUE(SameContents(*leader, *follower));
}

// The write time rides in the batch: through the WAL, through a follower's apply and its own
// WAL, and through concatenation (the first batch's), without consuming a sequence number.
TEST(EngineTest, WriteTimeTravelsInsideTheBatch) {
  TempDir dir;
  auto leader = OpenOrDie(dir.Sub("leader"));
  auto follower = OpenOrDie(dir.Sub("follower"));
  WriteOptions timed;
  timed.write_time_us = 1'700'000'000'123'456;
  auto b1 = *leader->Write(std::vector<WriteOp>{{OpType::kPut, "a", "1"}}, timed);
  auto b2 = *leader->Write(std::vector<WriteOp>{{OpType::kPut, "b", "2"}}, {});
  timed.write_time_us += 5;
  auto b3 = *leader->Write(
      std::vector<WriteOp>{{OpType::kPut, "c", "3"}, {OpType::kDelete, "a", ""}}, timed);
  EXPECT_EQ(leader->LatestSequence(), 4u);  // the time record consumed no sequence number
  EXPECT_EQ(BatchWriteTime(b1), 1'700'000'000'123'456);
  EXPECT_EQ(BatchWriteTime(b2), 0);
  EXPECT_EQ(BatchWriteTime(b3), 1'700'000'000'123'461);
  EXPECT_EQ(DecodeBatch(b3)->size(), 2u);  // not an op
  EXPECT_TRUE(absl::IsNotFound(leader->Get("wsT1").status()));

  auto cursor = *leader->NewWalCursor(1);
  std::vector<Batch> from_wal;
  for (int i = 0; i < 3; ++i) from_wal.push_back(**cursor->Next());
  EXPECT_EQ(BatchWriteTime(from_wal[0]), BatchWriteTime(b1));
  EXPECT_EQ(BatchWriteTime(from_wal[1]), 0);
  EXPECT_EQ(BatchWriteTime(from_wal[2]), BatchWriteTime(b3));

  auto joined = ConcatBatches(from_wal);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(BatchWriteTime(*joined), BatchWriteTime(b1));
  ASSERT_TRUE(follower->ApplyReplicated(*joined, {}).ok());
  EXPECT_EQ(follower->LatestSequence(), 4u);
  EXPECT_TRUE(SameContents(*leader, *follower));
  auto fcursor = *follower->NewWalCursor(1);
  EXPECT_EQ(BatchWriteTime(**fcursor->Next()), BatchWriteTime(b1));

  // A record that only looks like ours (another tag) is not taken for a time.
  Batch forged = b1;
  forged.data[12 + 2] = 'x';
  EXPECT_EQ(BatchWriteTime(forged), 0);
}

TEST(EngineTest, ConcatenatedBatchesEndAtTheSameSequenceWithTheSameContents) {
  TempDir dir;
  auto leader = OpenOrDie(dir.Sub("leader"));
  auto follower = OpenOrDie(dir.Sub("follower"));
  std::mt19937_64 rng(7);
  std::vector<Batch> batches;
  for (int i = 0; i < 300; ++i) batches.push_back(*leader->Write(RandomOps(rng), {}));
  for (size_t i = 0; i < batches.size(); i += 50) {
    size_t n = std::min<size_t>(50, batches.size() - i);
    auto joined = ConcatBatches(absl::MakeConstSpan(batches).subspan(i, n));
    ASSERT_TRUE(joined.ok()) << joined.status();
    ASSERT_TRUE(follower->ApplyReplicated(*joined, {}).ok());
  }
  EXPECT_EQ(follower->LatestSequence(), leader->LatestSequence());
  EXPECT_TRUE(SameContents(*leader, *follower));
  std::vector<Batch> gapped = {batches[0], batches[2]};
  EXPECT_TRUE(absl::IsInvalidArgument(ConcatBatches(gapped).status()));
}

// A follower applies a message's batches joined as one WAL record; its WAL cursor gives them
// back as the leader wrote them, from every boundary, byte for byte, across several joined
// records (with their write times: every batch a walship leader writes has one).
TEST(EngineTest, WalCursorSplitsJoinedRecordsAtTheLeadersBatches) {
  TempDir dir;
  auto leader = OpenOrDie(dir.Sub("leader"));
  auto follower = OpenOrDie(dir.Sub("follower"));
  std::mt19937_64 rng(11);
  std::vector<Batch> batches;
  for (int i = 0; i < 40; ++i) {
    WriteOptions wo;
    wo.write_time_us = 1'700'000'000'000'000 + i;
    batches.push_back(*leader->Write(RandomOps(rng), wo));
  }
  for (size_t i = 0; i < batches.size(); i += 7) {
    size_t n = std::min<size_t>(7, batches.size() - i);
    auto joined = ConcatBatches(absl::MakeConstSpan(batches).subspan(i, n));
    ASSERT_TRUE(joined.ok()) << joined.status();
    ASSERT_TRUE(follower->ApplyReplicated(*joined, {}).ok());
  }
  for (size_t from = 0; from < batches.size(); ++from) {
    auto cursor = follower->NewWalCursor(batches[from].first_seq);
    ASSERT_TRUE(cursor.ok()) << cursor.status();
    for (size_t i = from; i < batches.size(); ++i) {
      auto got = (*cursor)->Next();
      ASSERT_TRUE(got.ok() && got->has_value()) << "from batch " << from << ", batch " << i;
      EXPECT_EQ((*got)->first_seq, batches[i].first_seq);
      EXPECT_EQ((*got)->count, batches[i].count);
      EXPECT_EQ((*got)->data, batches[i].data) << "batch " << i;
      EXPECT_EQ(BatchWriteTime(**got), BatchWriteTime(batches[i]));
    }
    auto end = (*cursor)->Next();
    ASSERT_TRUE(end.ok());
    EXPECT_FALSE(end->has_value());
  }
  // A position inside one of the leader's batches is still refused.
  ASSERT_GT(batches[3].count, 1u);
  auto inside = (*follower->NewWalCursor(batches[3].first_seq + 1))->Next();
  EXPECT_TRUE(absl::IsInvalidArgument(inside.status())) << inside.status();
}

TEST(EngineTest, CheckpointSequenceIsTheOpenedCopysOwn) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937_64 rng(3);
    while (!stop.load()) {
      ASSERT_TRUE(e->Write(RandomOps(rng), {}).ok());
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto seq = e->CreateCheckpoint(dir.Sub("cp"));
  stop = true;
  writer.join();
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_GT(*seq, 0u);
  auto copy = OpenOrDie(dir.Sub("cp"));
  EXPECT_EQ(copy->LatestSequence(), *seq);
  // The copy can catch up from the WAL exactly where it ends.
  auto cursor = e->NewWalCursor(*seq + 1);
  ASSERT_TRUE(cursor.ok());
  while (true) {
    auto next = (*cursor)->Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) break;
    ASSERT_TRUE(copy->ApplyReplicated(**next, {}).ok());
  }
  EXPECT_EQ(copy->LatestSequence(), e->LatestSequence());
  EXPECT_TRUE(SameContents(*e, *copy));
}

// A shipped batch (a peer's bytes) holding records walship never writes is refused as
// malformed, never a crash. The batch fuzz target found two aborts in Debian's RocksDB,
// built with assertions: a two-phase-commit marker whose handler refused it, and a commit
// record with an empty timestamp, which RocksDB asserts on while parsing.
TEST(EngineTest, ABatchWithRecordsWalshipNeverWritesIsRefusedNotACrash) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  for (char marker : {'\x09', '\x0a', '\x0b', '\x0c'}) {  // begin, end, commit, rollback
    std::string data(12, '\0');
    data[0] = 1;  // sequence 1
    data[8] = 1;  // one record
    data += marker;
    if (marker != '\x09') data += std::string("\x01x", 2);  // the xid
    data += std::string("\x01\x01k\x01v", 5);
    Batch batch{1, 1, data};
    absl::Status s = e->ApplyReplicated(batch, {});
    EXPECT_TRUE(absl::IsDataLoss(s)) << static_cast<int>(marker) << ": " << s;
    EXPECT_FALSE(DecodeBatch(batch).ok());
  }
  // A commit with an empty timestamp (RocksDB asserts on it while parsing), a record of a
  // column family walship does not write, and a range delete whose end sorts before its begin (RocksDB
  // refuses it only after writing the batch to its WAL, consuming its sequence numbers):
  // refused before RocksDB sees the batch.
  const std::string records[] = {std::string("\x15\x00\x00", 3),
                                 std::string("\x05\x03\x01k\x01v", 6),
                                 std::string("\x0f\x01"
                                             "c"
                                             "\x01"
                                             "a",
                                             5)};
  for (const std::string& record : records) {
    std::string data(12, '\0');
    data[0] = 1;
    data[8] = 1;
    Batch batch{1, 1, data + record};
    absl::Status s = e->ApplyReplicated(batch, {});
    EXPECT_TRUE(absl::IsDataLoss(s)) << s;
    EXPECT_EQ(e->LatestSequence(), 0u) << s;
  }
  EXPECT_EQ(e->LatestSequence(), 0u);
}

// Asks RocksDB to resume until writes work again (it may be recovering by itself from a full
// disk, and says so until it is done), for at most 60 s: the last answer.
absl::Status ResumeWithin60s(Engine& e) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  absl::Status resumed;
  while ((!(resumed = e.Resume()).ok() || !e.StorageError().ok()) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return resumed;
}

// A failed flush stops RocksDB's writes: the engine says why, and once the cause is gone
// Resume() makes writes work again with nothing lost.
TEST(EngineTest, AStorageErrorIsReportedAndResumedOnceItsCauseIsGone) {
  TempDir dir;
  testing::FailingEnv failing;
  EngineOptions options;
  options.env = failing.env.get();
  auto e = OpenOrDie(dir.Sub("db"), options);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->StorageError().ok());
  ASSERT_TRUE(e->Write({{OpType::kPut, "a", "1"}}, {}).ok());
  failing.fs->set_failing(true);
  EXPECT_FALSE(e->Flush().ok());
  absl::Status error = e->StorageError();
  EXPECT_TRUE(absl::IsUnavailable(error)) << error;
  EXPECT_NE(error.message().find("flushing a memtable"), std::string_view::npos) << error;
  EXPECT_NE(error.message().find("injected"), std::string_view::npos) << error;
  EXPECT_FALSE(e->Write({{OpType::kPut, "b", "2"}}, {}).ok());
  failing.fs->set_failing(false);
  absl::Status resumed = ResumeWithin60s(*e);
  EXPECT_TRUE(resumed.ok()) << resumed;
  EXPECT_TRUE(e->StorageError().ok()) << e->StorageError();
  ASSERT_TRUE(e->Write({{OpType::kPut, "b", "2"}}, {}).ok());
  EXPECT_EQ(*e->Get("a"), "1");
  EXPECT_EQ(*e->Get("b"), "2");
}

// A WAL that cannot grow (a full disk) fails the write; syncing the WAL afterwards reports
// the error (RocksDB 7.8 asserts when a WAL writer that failed is synced again, so the engine
// must not ask it to), and once the disk has room Resume() makes writes work again.
TEST(EngineTest, AFailedWalWriteIsReportedAndTheWalIsNotSyncedAfterIt) {
  TempDir dir;
  testing::FailingEnv failing;
  EngineOptions options;
  options.env = failing.env.get();
  {
    auto e = OpenOrDie(dir.Sub("db"), options);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(e->Write({{OpType::kPut, "a", "1"}}, {}).ok());
    ASSERT_TRUE(e->SyncWal().ok());
    EXPECT_TRUE(e->WalFailed().ok());
    failing.fs->set_failing_wal(true);
    EXPECT_FALSE(e->Write({{OpType::kPut, "b", "2"}}, {}).ok());
    EXPECT_FALSE(e->StorageError().ok());
    absl::Status failed = e->WalFailed();
    EXPECT_FALSE(failed.ok());
    EXPECT_NE(failed.message().find("no space for the WAL"), std::string_view::npos) << failed;
    EXPECT_FALSE(e->SyncWal().ok());
    failing.fs->set_failing_wal(false);
    // Even once RocksDB has recovered, this database takes no more writes, syncs or applies:
    // RocksDB may still hold the WAL writer that failed.
    absl::Status resumed = ResumeWithin60s(*e);
    EXPECT_TRUE(resumed.ok()) << resumed;
    absl::StatusOr<Batch> refused = e->Write({{OpType::kPut, "c", "3"}}, {});
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("the node must restart"), std::string_view::npos);
    EXPECT_FALSE(e->SyncWal().ok());
    EXPECT_FALSE(e->WalFailed().ok());  // never cleared
    // (Closed here only because RocksDB switched to a new WAL while it recovered, as it does
    // with a memtable to flush; the node never closes it, it exits.)
  }
  // Started again: everything acknowledged is there, the failed write is not, writes work.
  auto e = OpenOrDie(dir.Sub("db"), options);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->WalFailed().ok());
  EXPECT_EQ(*e->Get("a"), "1");
  EXPECT_TRUE(absl::IsNotFound(e->Get("b").status()));
  ASSERT_TRUE(e->Write({{OpType::kPut, "c", "3"}}, {}).ok());
  EXPECT_TRUE(e->SyncWal().ok());
  EXPECT_EQ(*e->Get("c"), "3");
}

// RocksDB's LOG on a full disk: lines are dropped and counted, never a crash; and the file
// rolls to LOG.old past its size.
TEST(EngineTest, TheInfoLogDropsWhatAFullDiskCannotHold) {
  InfoLog full("/dev/full");
  for (int i = 0; i < 100; ++i) rocksdb::Log(&full, "line %d of a full disk", i);
  EXPECT_EQ(full.dropped(), 100u);
  TempDir dir;
  std::string path = dir.Sub("db") + "/LOG";
  InfoLog log(path, 4096);
  for (int i = 0; i < 200; ++i) rocksdb::Log(&log, "line %d %s", i, std::string(40, 'x').c_str());
  EXPECT_EQ(log.dropped(), 0u);
  EXPECT_LE(log.GetLogFileSize(), 4096u);
  std::ifstream old(path + ".old");
  std::string first;
  ASSERT_TRUE(std::getline(old, first));
  EXPECT_NE(first.find("line "), std::string::npos) << first;
  // A database writes its LOG through it.
  auto e = OpenOrDie(dir.Sub("db2"));
  ASSERT_NE(e, nullptr);
  std::ifstream rocks(dir.Sub("db2") + "/LOG");
  std::string text((std::istreambuf_iterator<char>(rocks)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("RocksDB version"), std::string::npos);
}

// A write's request id is remembered with it: found on the node that wrote it, on a node the
// batch was replicated to, after a restart, and not once past the retention; the record
// comes after the write's ops, which keep their sequence numbers, and is no op.
TEST(EngineTest, ARequestIdIsRememberedWithItsWriteWhereverTheBatchGoes) {
  TempDir dir;
  auto leader = OpenOrDie(dir.Sub("leader"));
  auto follower = OpenOrDie(dir.Sub("follower"));
  const int64_t now = 1'700'000'000'000'000;
  WriteOptions wo;
  wo.write_time_us = now;
  wo.requests = {{"first", 0, 2, 3}, {"second", 2, 1, 3}};
  std::vector<WriteOp> ops = {
      {OpType::kPut, "a", "1"}, {OpType::kPut, "b", "2"}, {OpType::kDelete, "c", ""}};
  auto batch = leader->Write(ops, wo);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->count, 5u) << "three ops and two request records";
  auto decoded = DecodeBatch(*batch);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->size(), 3u) << "request records are not ops";
  ASSERT_TRUE(follower->ApplyReplicated(*batch, {}).ok());
  for (Engine* e : {leader.get(), follower.get()}) {
    auto first = e->FindRequest("first", now);
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(first->has_value());
    EXPECT_EQ((*first)->first_seq, 1u);
    EXPECT_EQ((*first)->last_seq, 2u);
    EXPECT_EQ((*first)->epoch, 3u);
    EXPECT_EQ((*first)->write_time_us, now);
    auto second = e->FindRequest("second", now);
    ASSERT_TRUE(second.ok() && second->has_value());
    EXPECT_EQ((*second)->first_seq, 3u);
    EXPECT_EQ((*second)->last_seq, 3u);
    auto none = e->FindRequest("third", now);
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(none->has_value());
    auto expired = e->FindRequest("first", now + 601'000'000);
    ASSERT_TRUE(expired.ok());
    EXPECT_FALSE(expired->has_value()) << "past the default retention of 600 s";
    EXPECT_EQ(*e->Get("b"), "2");
  }
  EXPECT_TRUE(SameContents(*leader, *follower));
  follower.reset();
  follower = OpenOrDie(dir.Sub("follower"));
  ASSERT_TRUE(follower->Flush().ok());
  auto again = follower->FindRequest("second", now);
  ASSERT_TRUE(again.ok() && again->has_value()) << "kept across a restart and a flush";
  EXPECT_EQ((*again)->first_seq, 3u);
  auto seq = Engine::CheckpointSequence(dir.Sub("follower-copy"));
  EXPECT_FALSE(seq.ok());
  ASSERT_TRUE(follower->CreateCheckpoint(dir.Sub("follower-copy")).ok());
  seq = Engine::CheckpointSequence(dir.Sub("follower-copy"));
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 5u);
  auto copy = OpenOrDie(dir.Sub("follower-copy"));
  auto copied = copy->FindRequest("first", now);
  ASSERT_TRUE(copied.ok() && copied->has_value()) << "a checkpoint carries the request ids";
}

TEST(EngineTest, ABadRequestIdIsRefusedBeforeAnythingIsWritten) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  std::vector<WriteOp> ops = {{OpType::kPut, "a", "1"}};
  WriteOptions untimed;
  untimed.requests = {{"id", 0, 1, 1}};
  EXPECT_TRUE(absl::IsInvalidArgument(e->Write(ops, untimed).status())) << "no write time";
  for (const RequestRecord& bad : {RequestRecord{"", 0, 1, 1},
                                   RequestRecord{std::string(kMaxRequestIdBytes + 1, 'x'), 0, 1, 1},
                                   RequestRecord{"id", 0, 2, 1}, RequestRecord{"id", 0, 0, 1}}) {
    WriteOptions wo;
    wo.write_time_us = 1;
    wo.requests = {bad};
    auto w = e->Write(ops, wo);
    EXPECT_TRUE(absl::IsInvalidArgument(w.status())) << w.status();
  }
  EXPECT_EQ(e->LatestSequence(), 0u);
}

// A peer's batch may hold request records only as walship writes them: a put into another
// column family, or a request record whose value is no outcome, is refused unapplied.
TEST(EngineTest, AReplicatedBatchWithAForeignColumnFamilyOrABadRequestRecordIsRefused) {
  TempDir dir;
  auto e = OpenOrDie(dir.Sub("db"));
  auto batch_of = [](char cf, const std::string& key, const std::string& value) {
    Batch b;
    b.first_seq = 1;
    b.count = 1;
    b.data.assign(12, '\0');
    b.data[0] = 1;  // fixed64 sequence 1
    b.data[8] = 1;  // fixed32 count 1
    b.data += '\x05';
    b.data += cf;
    b.data += static_cast<char>(key.size());
    b.data += key;
    b.data += static_cast<char>(value.size());
    b.data += value;
    return b;
  };
  auto foreign = e->ApplyReplicated(batch_of(2, "k", "v"), {});
  EXPECT_TRUE(absl::IsDataLoss(foreign)) << foreign;
  EXPECT_NE(foreign.message().find("column family 2"), std::string::npos) << foreign;
  auto malformed = e->ApplyReplicated(batch_of(1, "id", "not an outcome"), {});
  EXPECT_TRUE(absl::IsDataLoss(malformed)) << malformed;
  EXPECT_NE(malformed.message().find("request record"), std::string::npos) << malformed;
  EXPECT_EQ(e->LatestSequence(), 0u);
}

// A database made before request ids (the default column family only) gets their family when
// walship opens it, without a sequence number spent or a write: its followers, opened the
// same way, go on applying the same batches at the same numbers.
TEST(EngineTest, ADatabaseFromBeforeRequestIdsGetsTheirFamilyWithoutASequenceNumber) {
  TempDir dir;
  {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir.Sub("db"), &raw).ok());
    std::unique_ptr<rocksdb::DB> old(raw);
    for (const char* k : {"a", "b", "c"}) {
      ASSERT_TRUE(old->Put(rocksdb::WriteOptions(), k, "v").ok());
    }
    ASSERT_EQ(old->GetLatestSequenceNumber(), 3u);
  }
  auto e = OpenOrDie(dir.Sub("db"));
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->LatestSequence(), 3u) << "opening it consumed no sequence number";
  EXPECT_EQ(*e->Get("b"), "v");
  WriteOptions wo;
  wo.write_time_us = 1'700'000'000'000'000;
  wo.requests = {{"after-upgrade", 0, 1, 1}};
  auto w = e->Write({{OpType::kPut, "d", "v"}}, wo);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->first_seq, 4u);
  auto found = e->FindRequest("after-upgrade", wo.write_time_us);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->first_seq, 4u);
}

}  // namespace
}  // namespace walship::engine
