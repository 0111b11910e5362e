// Micro-benchmarks of the pieces on the write and replication paths: engine writes, WAL
// cursor reads, the batch helpers, the follower's apply and the Ship message's Cap'n Proto
// round trip. Every benchmark reports items (ops or batches) and bytes (the batches'
// RocksDB WriteBatch bytes, i.e. what the WAL holds and what a Ship carries).
//
// Databases live in temporary directories under std::filesystem::temp_directory_path(),
// removed when the benchmark (or, for shared fixtures, the program) ends. Writes use the WAL
// without fsync, so the figures measure CPU and page-cache cost, not the disk.
//
// Run with --benchmark_min_time=0.01 for a quick smoke run (the ctest micro_bench_smoke).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "capnp/message.h"
#include "capnp/serialize.h"
#include "engine/engine.h"
#include "engine/types.h"
#include "replication/clock.h"
#include "replication/follower.h"
#include "replication/messages.h"
#include "replication/node_state.h"
#include "rpc/convert.h"

namespace walship {
namespace {

namespace fs = std::filesystem;

constexpr size_t kKeyBytes = 16;
constexpr size_t kValueBytes = 100;
// Batches in one Ship, and in the ConcatBatches / DecodeBatch inputs.
constexpr size_t kBatchesPerShip = 64;
// Single-put batches in the database that BM_WalCursorRead reads from start to end.
constexpr size_t kWalCursorBatches = 20000;
// Ships pre-generated on the leader for BM_FollowerApply (x kBatchesPerShip batches). When a
// run has applied all of them, the follower's engine is re-created with the timer paused.
constexpr size_t kLeaderShips = 1024;
// Distinct batches BM_EngineWrite cycles through (later ones overwrite earlier keys).
constexpr size_t kWriteBatchRing = 1024;

constexpr replication::Epoch kEpoch = 1;
constexpr char kDatabaseId[] = "db";

// A fresh directory under the system temp dir, removed (with its contents) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            absl::StrCat("walship-micro-bench-", tag, "-", rd(), "-", rd());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string Sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// A 16-byte key that sorts in `i` order.
std::string MakeKey(uint64_t i) {
  char buf[kKeyBytes + 1];
  std::snprintf(buf, sizeof(buf), "k%015llu", static_cast<unsigned long long>(i));
  return std::string(buf, kKeyBytes);
}

engine::WriteOp MakePut(uint64_t i) {
  return engine::WriteOp{engine::OpType::kPut, MakeKey(i), std::string(kValueBytes, 'v')};
}

absl::StatusOr<std::unique_ptr<engine::Engine>> OpenEngine(const std::string& path) {
  engine::EngineOptions options;
  options.path = path;
  return engine::Engine::Open(options);
}

// Writes `count` single-put batches (keys first_key, first_key + 1, ...) and returns them as
// the engine assigned them.
absl::StatusOr<std::vector<engine::Batch>> WriteSinglePuts(engine::Engine* e, uint64_t first_key,
                                                           size_t count) {
  std::vector<engine::Batch> batches;
  batches.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    engine::WriteOp op = MakePut(first_key + i);
    absl::StatusOr<engine::Batch> b = e->Write({&op, 1}, engine::WriteOptions{});
    if (!b.ok()) return b.status();
    batches.push_back(*std::move(b));
  }
  return batches;
}

uint64_t BatchBytes(const std::vector<engine::Batch>& batches) {
  uint64_t bytes = 0;
  for (const engine::Batch& b : batches) bytes += b.data.size();
  return bytes;
}

// Shared fixtures are built on first use (so --benchmark_filter pays only for what it runs)
// and torn down by main() after the benchmarks, before static destruction.

// A database holding kWalCursorBatches single-put batches, for BM_WalCursorRead.
struct WalFixture {
  TempDir dir{"wal"};
  std::unique_ptr<engine::Engine> engine;
  uint64_t batch_bytes = 0;
  absl::Status status;
};
std::unique_ptr<WalFixture> g_wal_fixture;

WalFixture& GetWalFixture() {
  if (g_wal_fixture != nullptr) return *g_wal_fixture;
  g_wal_fixture = std::make_unique<WalFixture>();
  WalFixture& f = *g_wal_fixture;
  absl::StatusOr<std::unique_ptr<engine::Engine>> e = OpenEngine(f.dir.Sub("db"));
  if (!e.ok()) {
    f.status = e.status();
    return f;
  }
  f.engine = *std::move(e);
  absl::StatusOr<std::vector<engine::Batch>> batches =
      WriteSinglePuts(f.engine.get(), 0, kWalCursorBatches);
  if (!batches.ok()) {
    f.status = batches.status();
    return f;
  }
  f.batch_bytes = BatchBytes(*batches);
  return f;
}

// kLeaderShips Ships of kBatchesPerShip contiguous single-put batches each, written by a
// leader engine (epoch 1) starting at seq 1, so they apply in order to a fresh follower.
struct LeaderFixture {
  std::vector<replication::Ship> ships;
  absl::Status status;
};
std::unique_ptr<LeaderFixture> g_leader_fixture;

LeaderFixture& GetLeaderFixture() {
  if (g_leader_fixture != nullptr) return *g_leader_fixture;
  g_leader_fixture = std::make_unique<LeaderFixture>();
  LeaderFixture& f = *g_leader_fixture;
  TempDir dir("leader");  // the batches are kept in memory; the leader's database is not
  absl::StatusOr<std::unique_ptr<engine::Engine>> leader = OpenEngine(dir.Sub("db"));
  if (!leader.ok()) {
    f.status = leader.status();
    return f;
  }
  replication::Clock* clock = replication::RealClock();
  f.ships.reserve(kLeaderShips);
  for (size_t s = 0; s < kLeaderShips; ++s) {
    absl::StatusOr<std::vector<engine::Batch>> batches =
        WriteSinglePuts(leader->get(), s * kBatchesPerShip, kBatchesPerShip);
    if (!batches.ok()) {
      f.status = batches.status();
      return f;
    }
    replication::Ship ship;
    ship.epoch = kEpoch;
    ship.leader_time_us = clock->NowMicros();
    ship.leader_latest = batches->back().last_seq();
    for (engine::Batch& b : *batches) {
      ship.batches.push_back(replication::ShippedBatch{std::move(b), ship.leader_time_us});
    }
    f.ships.push_back(std::move(ship));
  }
  return f;
}

// The batches of the first leader Ship (seq 1..64, one put each).
std::vector<engine::Batch> FirstShipBatches(const LeaderFixture& f) {
  std::vector<engine::Batch> batches;
  for (const replication::ShippedBatch& sb : f.ships.front().batches) {
    batches.push_back(sb.batch);
  }
  return batches;
}

// engine::Engine::Write of one batch of state.range(0) puts (16-byte key, 100-byte value),
// WAL on, no fsync. items = ops, bytes = WAL batch bytes.
void BM_EngineWrite(benchmark::State& state) {
  const size_t ops_per_batch = static_cast<size_t>(state.range(0));
  TempDir dir("write");
  absl::StatusOr<std::unique_ptr<engine::Engine>> e = OpenEngine(dir.Sub("db"));
  if (!e.ok()) {
    state.SkipWithError(std::string(e.status().message()).c_str());
    return;
  }
  // Built before timing so the loop measures Write alone.
  std::vector<std::vector<engine::WriteOp>> ring(kWriteBatchRing);
  for (size_t b = 0; b < kWriteBatchRing; ++b) {
    for (size_t i = 0; i < ops_per_batch; ++i) ring[b].push_back(MakePut(b * ops_per_batch + i));
  }
  const engine::WriteOptions options;  // WAL on, sync off
  size_t next = 0;
  uint64_t bytes = 0;
  for (auto _ : state) {
    absl::StatusOr<engine::Batch> batch = (*e)->Write(ring[next], options);
    if (!batch.ok()) {
      state.SkipWithError(std::string(batch.status().message()).c_str());
      break;
    }
    bytes += batch->data.size();
    if (++next == kWriteBatchRing) next = 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ops_per_batch));
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_EngineWrite)->Arg(1)->Arg(64);

// Opens engine->NewWalCursor(1) and reads all kWalCursorBatches batches to the end of the
// log. items = batches, bytes = batch bytes.
void BM_WalCursorRead(benchmark::State& state) {
  WalFixture& f = GetWalFixture();
  if (!f.status.ok()) {
    state.SkipWithError(std::string(f.status.message()).c_str());
    return;
  }
  for (auto _ : state) {
    absl::StatusOr<std::unique_ptr<engine::WalCursor>> cursor = f.engine->NewWalCursor(1);
    if (!cursor.ok()) {
      state.SkipWithError(std::string(cursor.status().message()).c_str());
      break;
    }
    size_t batches = 0;
    absl::Status error;
    while (true) {
      absl::StatusOr<std::optional<engine::Batch>> b = (*cursor)->Next();
      if (!b.ok()) {
        error = b.status();
        break;
      }
      if (!b->has_value()) break;
      benchmark::DoNotOptimize(**b);
      ++batches;
    }
    if (!error.ok()) {
      state.SkipWithError(std::string(error.message()).c_str());
      break;
    }
    if (batches != kWalCursorBatches) {
      state.SkipWithError("WAL cursor returned fewer batches than were written");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kWalCursorBatches));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.batch_bytes));
}
BENCHMARK(BM_WalCursorRead)->Unit(benchmark::kMillisecond);

// engine::ConcatBatches joining 64 contiguous single-put batches into one (what the follower
// does before applying a Ship). items = batches, bytes = input batch bytes.
void BM_ConcatBatches(benchmark::State& state) {
  LeaderFixture& f = GetLeaderFixture();
  if (!f.status.ok()) {
    state.SkipWithError(std::string(f.status.message()).c_str());
    return;
  }
  const std::vector<engine::Batch> batches = FirstShipBatches(f);
  for (auto _ : state) {
    absl::StatusOr<engine::Batch> joined = engine::ConcatBatches(batches);
    if (!joined.ok()) {
      state.SkipWithError(std::string(joined.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(*joined);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batches.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * BatchBytes(batches)));
}
BENCHMARK(BM_ConcatBatches);

// engine::DecodeBatch on each of 64 single-put batches (validation and decoding into
// WriteOps). items = ops decoded, bytes = batch bytes.
void BM_DecodeBatch(benchmark::State& state) {
  LeaderFixture& f = GetLeaderFixture();
  if (!f.status.ok()) {
    state.SkipWithError(std::string(f.status.message()).c_str());
    return;
  }
  const std::vector<engine::Batch> batches = FirstShipBatches(f);
  uint64_t ops = 0;
  for (auto _ : state) {
    bool failed = false;
    for (const engine::Batch& b : batches) {
      absl::StatusOr<std::vector<engine::WriteOp>> decoded = engine::DecodeBatch(b);
      if (!decoded.ok()) {
        state.SkipWithError(std::string(decoded.status().message()).c_str());
        failed = true;
        break;
      }
      ops += decoded->size();
      benchmark::DoNotOptimize(*decoded);
    }
    if (failed) break;
  }
  state.SetItemsProcessed(static_cast<int64_t>(ops));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * BatchBytes(batches)));
}
BENCHMARK(BM_DecodeBatch);

// A follower on a fresh engine, handshaken (epoch 1, database "db", history {{1,1}}) and
// streaming from seq 1.
struct FollowerNode {
  std::unique_ptr<TempDir> dir;
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<replication::Follower> follower;
};

absl::StatusOr<FollowerNode> MakeFollower() {
  FollowerNode node;
  node.dir = std::make_unique<TempDir>("follower");
  absl::StatusOr<std::unique_ptr<engine::Engine>> e = OpenEngine(node.dir->Sub("db"));
  if (!e.ok()) return e.status();
  node.engine = *std::move(e);
  const std::vector<replication::EpochEntry> history = {{kEpoch, 1, "leader"}};
  replication::NodeState state;
  state.database_id = kDatabaseId;
  state.epoch = kEpoch;
  state.history = history;
  replication::FollowerOptions options;
  options.cluster = "bench";
  options.node_id = "follower";
  options.state_path = node.dir->Sub("node_state");
  node.follower = std::make_unique<replication::Follower>(
      std::move(options), node.engine.get(), std::move(state), replication::RealClock());
  replication::HelloReply reply;
  reply.outcome = replication::HelloOutcome::kAccepted;
  reply.epoch = kEpoch;
  reply.database_id = kDatabaseId;
  reply.history = history;
  if (absl::Status s = node.follower->OnHelloReply(reply); !s.ok()) return s;
  return node;
}

// replication::Follower::OnShip applying one Ship of 64 contiguous single-put batches (the
// continuity checks, ConcatBatches and Engine::ApplyReplicated, WAL on, no fsync). Ships are
// applied in leader order; after the last pre-generated one the follower is re-created on a
// fresh engine with the timer paused. items = batches (= ops), bytes = batch bytes.
void BM_FollowerApply(benchmark::State& state) {
  LeaderFixture& f = GetLeaderFixture();
  if (!f.status.ok()) {
    state.SkipWithError(std::string(f.status.message()).c_str());
    return;
  }
  absl::StatusOr<FollowerNode> node = MakeFollower();
  if (!node.ok()) {
    state.SkipWithError(std::string(node.status().message()).c_str());
    return;
  }
  const engine::WriteOptions write;  // WAL on, sync off, may block
  size_t next = 0;
  uint64_t batches = 0;
  uint64_t bytes = 0;
  for (auto _ : state) {
    if (next == f.ships.size()) {
      state.PauseTiming();
      node = absl::StatusOr<FollowerNode>();  // close and remove the old database first
      node = MakeFollower();
      next = 0;
      state.ResumeTiming();
      if (!node.ok()) {
        state.SkipWithError(std::string(node.status().message()).c_str());
        break;
      }
    }
    const replication::Ship& ship = f.ships[next++];
    absl::StatusOr<replication::Ack> ack = node->follower->OnShip(ship, write);
    if (!ack.ok() || ack->outcome != replication::AckOutcome::kOk) {
      state.SkipWithError(ack.ok() ? ack->message.c_str()
                                   : std::string(ack.status().message()).c_str());
      break;
    }
    batches += ship.batches.size();
    bytes += rpc::ShipBytes(ship);
  }
  state.SetItemsProcessed(static_cast<int64_t>(batches));
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_FollowerApply);

// The in-process serialisation cost of the ship path: rpc::ToCapnp into a
// MallocMessageBuilder, messageToFlatArray, then FlatArrayMessageReader + rpc::FromCapnp, for
// a Ship of 64 batches. items = batches, bytes = batch bytes; msg_bytes = flat message size.
void BM_ShipEncodeDecode(benchmark::State& state) {
  LeaderFixture& f = GetLeaderFixture();
  if (!f.status.ok()) {
    state.SkipWithError(std::string(f.status.message()).c_str());
    return;
  }
  const replication::Ship& ship = f.ships.front();
  size_t msg_bytes = 0;
  for (auto _ : state) {
    capnp::MallocMessageBuilder builder;
    rpc::ToCapnp(ship, builder.initRoot<rpc::schema::Ship>());
    kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
    msg_bytes = words.asBytes().size();
    capnp::FlatArrayMessageReader reader(words);
    replication::Ship decoded = rpc::FromCapnp(reader.getRoot<rpc::schema::Ship>());
    benchmark::DoNotOptimize(decoded);
  }
  if (msg_bytes != 0) {
    // Sanity: the round trip preserved the batches.
    capnp::MallocMessageBuilder builder;
    rpc::ToCapnp(ship, builder.initRoot<rpc::schema::Ship>());
    kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
    capnp::FlatArrayMessageReader reader(words);
    replication::Ship decoded = rpc::FromCapnp(reader.getRoot<rpc::schema::Ship>());
    if (decoded.batches.size() != ship.batches.size() ||
        decoded.batches.back().batch.data != ship.batches.back().batch.data) {
      state.SkipWithError("Ship did not survive the Cap'n Proto round trip");
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ship.batches.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rpc::ShipBytes(ship)));
  state.counters["msg_bytes"] = static_cast<double>(msg_bytes);
}
BENCHMARK(BM_ShipEncodeDecode);

}  // namespace
}  // namespace walship

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Close the shared databases and remove their directories while RocksDB is still intact.
  walship::g_wal_fixture.reset();
  walship::g_leader_fixture.reset();
  return 0;
}
