// Fuzz target: the follower's batch validator. The bytes are a shipped batch (the first four
// its op count, the rest its WriteBatch bytes), offered to a real database at its next
// position: ApplyReplicated must refuse anything malformed (kDataLoss) and apply only whole,
// well-formed batches; DecodeBatch and ConcatBatches must never read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "engine/engine.h"

namespace {

walship::engine::Engine& Database() {
  static std::string dir = [] {
    std::random_device rd;
    auto path = std::filesystem::temp_directory_path() /
                ("walship-fuzz-batch-" + std::to_string(rd()));
    return path.string();
  }();
  static std::unique_ptr<walship::engine::Engine> engine = [] {
    std::atexit([] { std::filesystem::remove_all(dir); });
    walship::engine::EngineOptions options;
    options.path = dir;
    auto opened = walship::engine::Engine::Open(options);
    if (!opened.ok()) std::abort();
    return std::move(*opened);
  }();
  return *engine;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t count;
  std::memcpy(&count, data, sizeof count);
  walship::engine::Engine& db = Database();
  walship::engine::Batch batch;
  batch.first_seq = db.LatestSequence() + 1;
  batch.count = count;
  batch.data.assign(reinterpret_cast<const char*>(data + 4), size - 4);
  // The header's sequence number made right, so that inputs reach the records' checks.
  if (batch.data.size() >= 8) std::memcpy(batch.data.data(), &batch.first_seq, 8);
  (void)walship::engine::DecodeBatch(batch);
  (void)walship::engine::BatchWriteTime(batch);
  walship::engine::Batch next = batch;
  next.first_seq = batch.first_seq + batch.count;
  const walship::engine::Batch* both[2] = {&batch, &next};
  (void)walship::engine::ConcatBatches(absl::MakeConstSpan(both, 2));
  uint64_t before = db.LatestSequence();
  absl::Status applied = db.ApplyReplicated(batch, {});
  // Applied whole or not at all.
  if (applied.ok() != (db.LatestSequence() == before + count && count > 0)) {
    std::fprintf(stderr, "applied: %s; latest %llu, before %llu, count %u\n",
                 applied.ToString().c_str(), (unsigned long long)db.LatestSequence(),
                 (unsigned long long)before, count);
    std::abort();
  }
  if (!applied.ok() && db.LatestSequence() != before) std::abort();
  return 0;
}
