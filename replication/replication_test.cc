// Unit tests of the follower's continuity and epoch checks and the leader's WAL fallback and
// lag accounting, driving the state machines directly with real engines; no sockets.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "replication/handover.h"
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

// ---------------------------------------------------------------------------------------------
// Follower

// A leader at `epoch` with batches of 2 puts at seq 1-2, 3-4, 5-6, 7-8, 9-10 and a streaming
// follower that has applied nothing yet.
struct FollowerFixture {
  explicit FollowerFixture(Epoch epoch = 1)
      : l(dir, &clock, DefaultLeaderOptions(), LeaderState(epoch)), f(dir, "f1", &clock) {
    for (int i = 0; i < 5; ++i) batches.push_back(l.Write(2));
    Handshake h = Connect(*l.leader, *f.follower);
    EXPECT_TRUE(h.status.ok()) << h.status;
    session = h.session;
  }

  TempDir dir;
  FakeClock clock;
  LeaderNode l;
  FollowerNode f;
  std::vector<Batch> batches;
  uint64_t session = 0;
};

// A follower keeps the leader's batch boundaries: batches shipped together come back from its
// WAL as the leader wrote them, so once it leads it serves a follower whose position lies
// between them from its own WAL, and that follower ends with identical contents.
TEST(FollowerTest, KeepsTheLeadersRecordBoundariesSoItCanServeOthersOnceItLeads) {
  FollowerFixture fx;  // batches at 1-2, 3-4, 5-6, 7-8, 9-10; f1 applied nothing
  auto ack = fx.f.follower->OnShip(ShipOf(1, fx.batches), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
  ASSERT_EQ(fx.f.engine->LatestSequence(), 10u);
  auto cursor = fx.f.engine->NewWalCursor(1);
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  for (const Batch& want : fx.batches) {
    auto got = (*cursor)->Next();
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->first_seq, want.first_seq);
    EXPECT_EQ((*got)->count, want.count);
    EXPECT_EQ((*got)->data, want.data);
  }
  // f2 applied the first two batches (up to seq 4).
  FollowerNode f2(fx.dir, "f2", &fx.clock);
  Handshake h2 = Connect(*fx.l.leader, *f2.follower);
  ASSERT_TRUE(h2.status.ok()) << h2.status;
  ack = f2.follower->OnShip(ShipOf(1, {fx.batches[0], fx.batches[1]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  f2.follower->OnDisconnect();
  // f1 leads, from its own WAL only (an empty memory tail).
  auto f1_state = LoadNodeState(fx.f.state_path);
  ASSERT_TRUE(f1_state.ok()) << f1_state.status();
  BeginEpoch(*f1_state, fx.f.engine->LatestSequence() + 1, "f1");
  LeaderOptions options = DefaultLeaderOptions();
  options.node_id = "f1";
  options.members = {"f2"};
  Leader promoted(options, fx.f.engine.get(), *f1_state, &fx.clock);
  Handshake h = Connect(promoted, *f2.follower);
  ASSERT_EQ(h.reply.outcome, HelloOutcome::kAccepted) << h.reply.message;
  ASSERT_TRUE(h.status.ok()) << h.status;
  for (int i = 0; i < 10 && promoted.HasWork(h.session); ++i) {
    auto ship = promoted.NextShip(h.session, false);
    ASSERT_TRUE(ship.has_value());
    ASSERT_TRUE(ship->needs_snapshot.empty()) << ship->needs_snapshot;
    ack = f2.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack->message;
    promoted.OnAck(h.session, *ack);
  }
  EXPECT_EQ(f2.engine->LatestSequence(), 10u);
  EXPECT_TRUE(SameContents(*fx.l.engine, *f2.engine));
}

// A follower keeps the batches it applied last; elected, it takes them as its memory tail, so
// a follower it inherits catches up without a single WAL read (on a new leader such a read
// scans a WAL file from its start) and ends with identical contents. Batches that are not
// contiguous, or do not end at the leader's log's end, are not taken.
TEST(FollowerTest, AnElectedFollowerServesTheBatchesItAppliedLastFromMemory) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), LeaderState(1));
  std::vector<Batch> batches;
  for (int i = 0; i < 5; ++i) batches.push_back(l.Write(2));  // seq 1-2, ..., 9-10
  FollowerNode f1(dir, "f1", &clock, std::nullopt, kCluster, false, /*keep_recent_bytes=*/1 << 20);
  FollowerNode f2(dir, "f2", &clock);
  for (FollowerNode* f : {&f1, &f2}) ASSERT_TRUE(Connect(*l.leader, *f->follower).status.ok());
  auto ack = f1.follower->OnShip(ShipOf(1, {batches[0], batches[1]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
  ack = f1.follower->OnShip(ShipOf(1, {batches[2], batches[3], batches[4]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
  ack = f2.follower->OnShip(ShipOf(1, {batches[0], batches[1]}), {});  // f2 ends at seq 4
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
  f2.follower->OnDisconnect();

  std::deque<ShippedBatch> recent = f1.follower->TakeRecent();
  ASSERT_EQ(recent.size(), 5u);
  EXPECT_EQ(recent.front().batch.first_seq, 1u);
  EXPECT_EQ(recent.back().batch.last_seq(), 10u);
  EXPECT_TRUE(f1.follower->TakeRecent().empty());  // handed over, not kept twice

  auto f1_state = LoadNodeState(f1.state_path);
  ASSERT_TRUE(f1_state.ok()) << f1_state.status();
  BeginEpoch(*f1_state, f1.engine->LatestSequence() + 1, "f1");
  LeaderOptions options = DefaultLeaderOptions();
  options.node_id = "f1";
  options.members = {"f2"};
  options.read_wal_inline = false;  // a WAL read would show as TakeWalRead
  Leader promoted(options, f1.engine.get(), *f1_state, &clock);
  std::deque<ShippedBatch> gap = recent;
  gap.erase(gap.begin() + 2);
  EXPECT_EQ(promoted.SeedTail(gap), 0u);
  std::deque<ShippedBatch> short_of_the_end = recent;
  short_of_the_end.pop_back();
  EXPECT_EQ(promoted.SeedTail(short_of_the_end), 0u);
  ASSERT_EQ(promoted.SeedTail(recent), 5u);

  Handshake h = Connect(promoted, *f2.follower);
  ASSERT_EQ(h.reply.outcome, HelloOutcome::kAccepted) << h.reply.message;
  ASSERT_TRUE(h.status.ok()) << h.status;
  for (int i = 0; i < 10 && promoted.HasWork(h.session); ++i) {
    EXPECT_FALSE(promoted.TakeWalRead(h.session).has_value());
    auto ship = promoted.NextShip(h.session, false);
    ASSERT_TRUE(ship.has_value());
    ack = f2.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack->message;
    promoted.OnAck(h.session, *ack);
  }
  EXPECT_EQ(f2.engine->LatestSequence(), 10u);
  EXPECT_TRUE(SameContents(*l.engine, *f2.engine));
}

// What a follower keeps is bounded by keep_recent_bytes (the oldest go first), and stays
// contiguous up to the last batch applied.
TEST(FollowerTest, KeepsOnlyTheNewestBatchesWithinItsBound) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock, DefaultLeaderOptions(), LeaderState(1));
  std::vector<Batch> batches;
  for (int i = 0; i < 5; ++i) batches.push_back(l.Write(2));
  uint64_t two = batches[3].data.size() + batches[4].data.size();
  FollowerNode f(dir, "f1", &clock, std::nullopt, kCluster, false, two);
  ASSERT_TRUE(Connect(*l.leader, *f.follower).status.ok());
  for (const Batch& b : batches) {
    auto ack = f.follower->OnShip(ShipOf(1, {b}), {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
  }
  std::deque<ShippedBatch> recent = f.follower->TakeRecent();
  ASSERT_EQ(recent.size(), 2u);
  EXPECT_EQ(recent[0].batch.first_seq, 7u);
  EXPECT_EQ(recent[1].batch.last_seq(), 10u);
  FollowerNode none(dir, "f2", &clock);  // keep_recent_bytes = 0: nothing kept
  ASSERT_TRUE(Connect(*l.leader, *none.follower).status.ok());
  ASSERT_TRUE(none.follower->OnShip(ShipOf(1, batches), {}).ok());
  EXPECT_TRUE(none.follower->TakeRecent().empty());
}

TEST(FollowerTest, RefusesAShipFromAnOlderEpoch) {
  FollowerFixture fx(2);
  ASSERT_EQ(fx.f.follower->epoch(), 2u);
  auto ack = fx.f.follower->OnShip(ShipOf(1, {fx.batches[0], fx.batches[1]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kStale) << ack->message;
  EXPECT_EQ(ack->epoch, 2u);
  EXPECT_EQ(ack->applied, 0u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 0u);
  // The same batches under the right epoch are applied.
  ack = fx.f.follower->OnShip(ShipOf(2, {fx.batches[0], fx.batches[1]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kOk) << ack->message;
  EXPECT_EQ(fx.f.engine->LatestSequence(), 4u);
}

TEST(FollowerTest, AnswersAShipPastItsPositionWithAGap) {
  FollowerFixture fx;
  auto ack = fx.f.follower->OnShip(ShipOf(1, {fx.batches[0]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  ASSERT_EQ(fx.f.engine->LatestSequence(), 2u);
  // Batch 5-6 without 3-4.
  ack = fx.f.follower->OnShip(ShipOf(1, {fx.batches[2], fx.batches[3]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kGap) << ack->message;
  EXPECT_EQ(ack->applied, 2u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 2u);
  EXPECT_EQ(fx.f.follower->Status().applied, 2u);
  // The leader had shipped everything (that message was lost); the gap ack makes it resend
  // from applied + 1, never skip forward.
  auto lost = fx.l.leader->NextShip(fx.session, false);
  ASSERT_TRUE(lost.has_value());
  ASSERT_FALSE(fx.l.leader->HasWork(fx.session));
  fx.l.leader->OnAck(fx.session, *ack);
  ASSERT_TRUE(fx.l.leader->HasWork(fx.session));
  auto ship = fx.l.leader->NextShip(fx.session, false);
  ASSERT_TRUE(ship.has_value());
  EXPECT_EQ(ship->batches.front().batch.first_seq, 3u);
  ack = fx.f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack->message;
  EXPECT_TRUE(SameContents(*fx.l.engine, *fx.f.engine));
}

TEST(FollowerTest, SkipsDuplicatedBatches) {
  FollowerFixture fx;
  auto& b = fx.batches;
  auto ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[2]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  ASSERT_EQ(fx.f.engine->LatestSequence(), 6u);
  uint64_t bytes = fx.f.follower->Status().bytes_applied;
  // Entirely duplicated: nothing applied, still ok.
  ack = fx.f.follower->OnShip(ShipOf(1, {b[1], b[2]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kOk) << ack->message;
  EXPECT_EQ(ack->applied, 6u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 6u);
  EXPECT_EQ(fx.f.follower->Status().bytes_applied, bytes);
  // Overlapping: the held prefix is skipped, the rest applied once.
  ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[2], b[3], b[4]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kOk) << ack->message;
  EXPECT_EQ(ack->applied, 10u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 10u);
  EXPECT_TRUE(SameContents(*fx.l.engine, *fx.f.engine));
}

TEST(FollowerTest, NonContiguousShipFailsAndAppliesNothing) {
  FollowerFixture fx;
  auto& b = fx.batches;
  auto ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[3]}), {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kFailed) << ack->message;
  EXPECT_NE(ack->message.find("contiguous"), std::string::npos) << ack->message;
  EXPECT_EQ(ack->applied, 0u);
  EXPECT_EQ(fx.f.engine->LatestSequence(), 0u);
  EXPECT_TRUE(ScanAll(*fx.f.engine).empty());
  // Still streaming: a good message is applied.
  ack = fx.f.follower->OnShip(ShipOf(1, {b[0], b[1], b[2], b[3], b[4]}), {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack->message;
  EXPECT_TRUE(SameContents(*fx.l.engine, *fx.f.engine));
}

// ---------------------------------------------------------------------------------------------
// Leader

TEST(LeaderTest, FollowerWhosePositionWasPurgedIsToldToReseed) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_tail_bytes = 1;  // the memory tail keeps only the latest batch
  EngineOptions engine_options;
  engine_options.wal_retention_bytes = 0;  // age limit only: RocksDB then checks every second
  engine_options.wal_retention_seconds = 1;
  LeaderNode l(dir, &clock, options, LeaderState(), engine_options);
  FollowerNode f(dir, "f1", &clock);

  // The follower gets seq 1 and goes away.
  l.Write();
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  auto ship = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  l.leader->OnAck(h.session, *ack);
  ASSERT_EQ(f.engine->LatestSequence(), 1u);
  l.leader->OnDisconnect(h.session);
  f.follower->OnDisconnect();

  // Write until the WAL that holds seq 2 is purged.
  l.Write();
  bool purged = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!purged && std::chrono::steady_clock::now() < deadline) {
    l.Write();
    ASSERT_TRUE(l.engine->Flush().ok());
    auto cursor = l.engine->NewWalCursor(2);
    ASSERT_TRUE(cursor.ok());
    auto next = (*cursor)->Next();
    if (next.ok()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    } else {
      ASSERT_TRUE(absl::IsOutOfRange(next.status())) << next.status();
      purged = true;
    }
  }
  ASSERT_TRUE(purged) << "the WAL holding seq 2 was never purged within the deadline";

  // The handshake accepts (seq 1 is a known position), but the leader cannot serve seq 2.
  h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  ASSERT_EQ(f.follower->Status().phase, FollowerPhase::kStreaming);
  EXPECT_TRUE(l.leader->HasWork(h.session));
  ship = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(ship.has_value());
  EXPECT_FALSE(ship->needs_snapshot.empty());
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].state, FollowerState::kNeedsSnapshot);
  EXPECT_FALSE(infos[0].message.empty());
  EXPECT_FALSE(l.leader->HasWork(h.session));
  EXPECT_FALSE(l.leader->NextShip(h.session, true).has_value());

  ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kFailed);
  EXPECT_EQ(f.follower->Status().phase, FollowerPhase::kNeedsSnapshot);
  EXPECT_EQ(f.follower->Status().message, ship->needs_snapshot);
  EXPECT_EQ(f.engine->LatestSequence(), 1u);
  // Anything later is refused too.
  ack = f.follower->OnShip(ShipOf(1, {l.Write()}), {});
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->outcome, AckOutcome::kFailed);
  EXPECT_EQ(f.engine->LatestSequence(), 1u);
}

// With read_wal_inline = false the leader never reads its WAL in NextShip: a follower older
// than the memory tail is served from WalReads run elsewhere (one at a time), and catches up
// with identical contents. A read for a session that has ended is dropped.
TEST(LeaderTest, WalReadsOffTheLeadersThreadCatchAFollowerUp) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_tail_bytes = 1;  // the memory tail keeps only the newest batch
  options.read_wal_inline = false;
  options.max_wal_read_bytes = 256;  // a few batches per read
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  for (int i = 0; i < 50; ++i) l.Write(3);
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  ASSERT_TRUE(l.leader->HasWork(h.session));
  EXPECT_FALSE(l.leader->NextShip(h.session, false).has_value());  // no read yet

  // A read for a session that ends meanwhile is dropped.
  auto stale = l.leader->TakeWalRead(h.session);
  ASSERT_TRUE(stale.has_value());
  l.leader->OnDisconnect(h.session);
  h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  stale->Run();
  EXPECT_FALSE(l.leader->OnWalRead(std::move(*stale)).has_value());
  EXPECT_FALSE(l.leader->NextShip(h.session, false).has_value());

  int reads = 0;
  for (int round = 0; round < 1000 && l.leader->HasWork(h.session); ++round) {
    if (auto read = l.leader->TakeWalRead(h.session); read.has_value()) {
      EXPECT_FALSE(l.leader->TakeWalRead(h.session).has_value());  // one at a time
      read->Run();
      ASSERT_TRUE(read->status.ok()) << read->status;
      ++reads;
      ASSERT_FALSE(l.leader->OnWalRead(std::move(*read)).has_value());
    }
    auto ship = l.leader->NextShip(h.session, false);
    if (!ship.has_value()) continue;
    auto ack = f.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk) << ack.status();
    l.leader->OnAck(h.session, *ack);
  }
  EXPECT_GT(reads, 5);
  EXPECT_FALSE(l.leader->HasWork(h.session));
  EXPECT_EQ(f.engine->LatestSequence(), l.engine->LatestSequence());
  EXPECT_TRUE(SameContents(*l.engine, *f.engine));
}

TEST(LeaderTest, PendingBytesCountsWhatIsNotYetSentAndFlagsWalCatchUp) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_ship_bytes = 1;  // one batch per message
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  std::vector<Batch> written;
  for (int i = 0; i < 3; ++i) written.push_back(l.Write(2));
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  uint64_t all = 0;
  for (const Batch& b : written) all += b.data.size();
  EXPECT_EQ(l.leader->PendingBytes(h.session), all);
  ASSERT_TRUE(l.leader->NextShip(h.session, false).has_value());
  EXPECT_EQ(l.leader->PendingBytes(h.session), all - written[0].data.size());
  ASSERT_TRUE(l.leader->NextShip(h.session, false).has_value());
  ASSERT_TRUE(l.leader->NextShip(h.session, false).has_value());
  EXPECT_EQ(l.leader->PendingBytes(h.session), 0u);
  EXPECT_EQ(l.leader->PendingBytes(0), 0u);

  // A follower whose position is older than the memory tail is catching up from the WAL.
  LeaderOptions small = DefaultLeaderOptions();
  small.max_tail_bytes = 1;  // keeps only the newest batch
  TempDir dir2;
  LeaderNode l2(dir2, &clock, small);
  FollowerNode f2(dir2, "f2", &clock);
  l2.Write(1);
  l2.Write(1);
  Handshake h2 = Connect(*l2.leader, *f2.follower);
  ASSERT_TRUE(h2.status.ok()) << h2.status;
  EXPECT_EQ(l2.leader->PendingBytes(h2.session), UINT64_MAX);
}

TEST(LeaderTest, LagIsLatestMinusApplied) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_ship_bytes = 1;  // one batch per message
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  int64_t t0 = clock.NowMicros();
  for (int i = 0; i < 4; ++i) {
    clock.Set(t0 + i * 1000'000);  // one batch per second
    l.Write(3);
  }
  ASSERT_EQ(l.leader->latest(), 12u);
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  clock.Set(t0 + 10'000'000);
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].lag_seq, 12u);
  EXPECT_EQ(infos[0].lag_ms, 10'000);  // the oldest unapplied write is 10 s old

  for (SequenceNumber applied = 3; applied <= 12; applied += 3) {
    auto ship = l.leader->NextShip(h.session, false);
    ASSERT_TRUE(ship.has_value());
    ASSERT_EQ(ship->batches.size(), 1u);
    auto ack = f.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
    EXPECT_EQ(ack->applied, applied);
    l.leader->OnAck(h.session, *ack);
    infos = l.leader->Followers();
    ASSERT_EQ(infos.size(), 1u);
    EXPECT_EQ(infos[0].applied, applied);
    EXPECT_EQ(infos[0].sent, applied);
    EXPECT_EQ(infos[0].lag_seq, l.leader->latest() - applied);
    if (applied < 12) {
      // Batch starting at applied + 1 was written at t0 + (applied / 3) s.
      EXPECT_EQ(infos[0].lag_ms, 10'000 - static_cast<int64_t>(applied / 3) * 1000);
    } else {
      EXPECT_EQ(infos[0].lag_ms, 0);
    }
    EXPECT_EQ(f.follower->Status().lag_seq, 12u - applied);
  }
  EXPECT_FALSE(l.leader->NextShip(h.session, false).has_value());
  // New writes the follower has not acked count as lag again.
  l.Write(2);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].lag_seq, 2u);
  EXPECT_EQ(infos[0].state, FollowerState::kConnected);
  // Acks of an ended session are ignored.
  l.leader->OnDisconnect(h.session);
  Ack bogus;
  bogus.epoch = 1;
  bogus.applied = 14;
  bogus.received = 14;
  l.leader->OnAck(h.session, bogus);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].state, FollowerState::kDisconnected);
  EXPECT_EQ(infos[0].lag_seq, 2u);
}

// An engine whose ApplyReplicated waits until released: a stand-in for a large apply.
class SlowApplyEngine final : public Engine {
 public:
  explicit SlowApplyEngine(Engine* inner) : inner_(inner) {}
  void Release() { release_.Notify(); }
  absl::Notification entered;

  absl::Status ApplyReplicated(Batch batch, const engine::WriteOptions& options) override {
    entered.Notify();
    release_.WaitForNotificationWithTimeout(absl::Seconds(10));
    return inner_->ApplyReplicated(std::move(batch), options);
  }
  absl::StatusOr<Batch> Write(absl::Span<const WriteOp> ops,
                              const engine::WriteOptions& options) override {
    return inner_->Write(ops, options);
  }
  absl::StatusOr<std::string> Get(std::string_view key, const engine::ReadOptions& r) override {
    return inner_->Get(key, r);
  }
  absl::StatusOr<std::vector<engine::KeyValue>> Scan(const engine::ScanOptions& o,
                                                     const engine::ReadOptions& r) override {
    return inner_->Scan(o, r);
  }
  std::shared_ptr<const engine::Snapshot> GetSnapshot() override {
    return inner_->GetSnapshot();
  }
  SequenceNumber LatestSequence() override { return inner_->LatestSequence(); }
  absl::StatusOr<std::optional<engine::RequestOutcome>> FindRequest(
      const std::string& id, int64_t now_us, const engine::ReadOptions& read) override {
    return inner_->FindRequest(id, now_us, read);
  }
  absl::StatusOr<std::unique_ptr<engine::WalCursor>> NewWalCursor(SequenceNumber s) override {
    return inner_->NewWalCursor(s);
  }
  absl::StatusOr<SequenceNumber> CreateCheckpoint(const std::string& dir) override {
    return inner_->CreateCheckpoint(dir);
  }
  absl::Status IngestExternalFiles(const std::vector<std::string>& files) override {
    return inner_->IngestExternalFiles(files);
  }
  absl::Status Flush() override { return inner_->Flush(); }
  uint64_t ApproximateSizeBytes() override { return inner_->ApproximateSizeBytes(); }
  absl::Status SyncWal() override { return inner_->SyncWal(); }
  absl::Status StorageError() override { return inner_->StorageError(); }
  absl::Status Resume() override { return inner_->Resume(); }
  absl::Status WalFailed() override { return inner_->WalFailed(); }
  absl::StatusOr<engine::WalTrim> TrimWalArchive(engine::SequenceNumber keep_from) override {
    return inner_->TrimWalArchive(keep_from);
  }

 private:
  Engine* inner_;
  absl::Notification release_;
};

// Status (which the follower's event loop serves) does not wait for an apply running on a
// worker thread; the apply's result shows once it is done.
TEST(FollowerTest, StatusDoesNotWaitForAnApplyInProgress) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  auto inner = OpenOrDie(dir.Sub("f1"));
  SlowApplyEngine slow(inner.get());
  FollowerOptions options;
  options.cluster = kCluster;
  options.node_id = "f1";
  options.state_path = dir.Sub("f1.state");
  Follower follower(options, &slow, NodeState{}, &clock);
  l.Write(5);
  Handshake h = Connect(*l.leader, follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  auto ship = l.leader->NextShip(h.session, false);
  ASSERT_TRUE(ship.has_value());
  std::thread applier([&] {
    auto ack = follower.OnShip(*ship, {});
    EXPECT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  });
  ASSERT_TRUE(slow.entered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The apply is blocked inside the engine; status answers at once, from before it.
  auto start = std::chrono::steady_clock::now();
  FollowerStatus during = follower.Status();
  EXPECT_EQ(follower.epoch(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(during.applied, 0u);
  EXPECT_EQ(during.lag_seq, 5u);
  slow.Release();
  applier.join();
  EXPECT_EQ(follower.Status().applied, 5u);
  EXPECT_EQ(follower.Status().lag_seq, 0u);
}

// Batches older than the memory tail are read from the WAL, and their write time travels
// inside them: the leader's and the follower's lag_ms are right while it catches up.
TEST(LeaderTest, LagOfBatchesServedFromTheWalUsesTheirWriteTime) {
  TempDir dir;
  FakeClock clock;
  LeaderOptions options = DefaultLeaderOptions();
  options.max_ship_bytes = 1;  // one batch per message
  options.max_tail_bytes = 1;  // the memory tail keeps only the newest batch
  LeaderNode l(dir, &clock, options);
  FollowerNode f(dir, "f1", &clock);
  int64_t t0 = clock.NowMicros();
  for (int i = 0; i < 5; ++i) {
    clock.Set(t0 + i * 1000'000);  // one batch per second
    l.Write(2);
  }
  Handshake h = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(h.status.ok()) << h.status;
  clock.Set(t0 + 20'000'000);
  for (int i = 0; i < 4; ++i) {  // the four batches older than the tail
    auto ship = l.leader->NextShip(h.session, false);
    ASSERT_TRUE(ship.has_value());
    ASSERT_EQ(ship->batches.size(), 1u);
    EXPECT_EQ(ship->batches[0].leader_time_us, t0 + i * 1000'000) << i;
    // In flight, not acked: the leader reports the age of the batch the follower lacks.
    EXPECT_EQ(l.leader->Followers()[0].lag_ms, 20'000 - i * 1000) << i;
    auto ack = f.follower->OnShip(*ship, {});
    ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
    l.leader->OnAck(h.session, *ack);
    // The follower's own lag: the age of its last applied batch while it is behind.
    EXPECT_EQ(f.follower->Status().lag_ms, 20'000 - i * 1000) << i;
    // Applied up to batch i, nothing in flight: for i < 3 the next batch is only in the WAL
    // and the leader gives the age of the oldest batch in memory (batch 4), a lower bound;
    // for i = 3 the next batch is that one, and the figure is exact.
    EXPECT_EQ(l.leader->Followers()[0].lag_ms, 20'000 - 4 * 1000) << i;
  }
}

// A reconnect ends the earlier session: whatever still arrives for it (acks, the old
// connection's close) must not touch the follower's record. Session 0, which OnHello returns
// for a refused follower, is never a session either.
TEST(LeaderTest, EndedAndRefusedSessionsAreIgnored) {
  TempDir dir;
  FakeClock clock;
  LeaderNode l(dir, &clock);
  FollowerNode f(dir, "f1", &clock);
  FollowerNode stranger(dir, "f2", &clock, std::nullopt, "elsewhere");
  l.Write(2);
  Handshake first = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(first.status.ok()) << first.status;
  auto ship = l.leader->NextShip(first.session, false);
  ASSERT_TRUE(ship.has_value());
  auto ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  l.leader->OnAck(first.session, *ack);
  l.leader->OnDisconnect(first.session);
  f.follower->OnDisconnect();
  l.Write(3);

  // A refused follower gets session 0; what rpc/ forwards for it is ignored.
  Handshake refused = Connect(*l.leader, *stranger.follower);
  ASSERT_EQ(refused.reply.outcome, HelloOutcome::kRefused);
  ASSERT_EQ(refused.session, 0u);
  Ack lie;
  lie.epoch = 1;
  lie.received = lie.durable = lie.applied = l.leader->latest();
  l.leader->OnAck(refused.session, lie);
  l.leader->OnDisconnect(refused.session);
  EXPECT_FALSE(l.leader->HasWork(refused.session));
  EXPECT_FALSE(l.leader->NextShip(refused.session, true).has_value());
  auto infos = l.leader->Followers();
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_EQ(infos[0].id, "f1");
  EXPECT_EQ(infos[0].state, FollowerState::kDisconnected);
  EXPECT_EQ(infos[0].applied, 2u) << "an ack for session 0 changed another follower's record";
  EXPECT_EQ(infos[0].lag_seq, 3u);
  EXPECT_EQ(infos[1].state, FollowerState::kRefused);
  EXPECT_EQ(infos[1].applied, 0u);

  // Reconnect: the old session's ack and close no longer count.
  Handshake second = Connect(*l.leader, *f.follower);
  ASSERT_TRUE(second.status.ok()) << second.status;
  ASSERT_NE(second.session, first.session);
  l.leader->OnAck(first.session, lie);
  l.leader->OnDisconnect(first.session);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].state, FollowerState::kConnected);
  EXPECT_EQ(infos[0].applied, 2u);
  ASSERT_TRUE(l.leader->HasWork(second.session));
  ship = l.leader->NextShip(second.session, false);
  ASSERT_TRUE(ship.has_value());
  EXPECT_EQ(ship->batches.front().batch.first_seq, 3u);
  ack = f.follower->OnShip(*ship, {});
  ASSERT_TRUE(ack.ok() && ack->outcome == AckOutcome::kOk);
  l.leader->OnAck(second.session, *ack);
  infos = l.leader->Followers();
  EXPECT_EQ(infos[0].applied, 5u);
  EXPECT_EQ(infos[0].lag_seq, 0u);
  EXPECT_TRUE(SameContents(*l.engine, *f.engine));
}

}  // namespace
}  // namespace walship::replication
