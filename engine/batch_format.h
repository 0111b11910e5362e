// The bytes of a RocksDB WriteBatch as walship writes them (engine/ only): a 12-byte header
// (fixed64 sequence, fixed32 count), then records as RocksDB's db/write_batch.cc defines
// them. Every batch Write() makes with a write time begins with a LogData record of type
// 0x03 whose blob is the tag "wsT1" and a fixed64 of microseconds since the epoch; it
// consumes no sequence number, and it marks where each of a leader's batches begins inside
// a follower's joined record. ConcatBatches, BatchWriteTime and DecodeBatch (engine.h) are
// defined beside these.
#pragma once

#include <rocksdb/write_batch.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/types.h"

namespace walship::engine {

inline constexpr size_t kBatchHeaderBytes = 12;  // fixed64 sequence + fixed32 count
inline constexpr char kLogDataType = 0x03;
inline constexpr char kWriteTimeTag[] = "wsT1";
inline constexpr size_t kWriteTimeBlobBytes = 4 + 8;

inline uint64_t DecodeFixed64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);  // little-endian hosts only (x86_64, aarch64)
  return v;
}
inline uint32_t DecodeFixed32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void EncodeFixed64(char* p, uint64_t v) { std::memcpy(p, &v, sizeof v); }
inline void EncodeFixed32(char* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }

// The LogData blob that records a write time.
std::string WriteTimeBlob(int64_t write_time_us);

// Checks a batch's header against its first_seq/count (kDataLoss when it disagrees).
absl::Status CheckHeader(const Batch& batch);

// Checks the records of `wb` (whose header was checked): only what walship writes, in the
// default column family and request records (engine/requests.h), `count` of them; collects
// the ops into `ops` when not null (request records are not ops).
absl::Status CheckRecords(const rocksdb::WriteBatch& wb, SequenceNumber first_seq,
                          uint64_t count, std::vector<WriteOp>* ops);

// Splits one WAL record back into the batches it joined, at each write-time record after
// its first record; a record with at most one (a leader's own write) comes back whole,
// without a copy, and so do malformed bytes.
std::vector<Batch> SplitAtWriteTimes(Batch batch);

}  // namespace walship::engine
