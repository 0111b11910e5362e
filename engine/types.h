// Value types shared by every part of walship. No RocksDB types appear here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace walship::engine {

// RocksDB's sequence number: each op of a write consumes one. 0 means "nothing yet".
using SequenceNumber = uint64_t;

// One write batch as it sits in the WAL. `data` is RocksDB's WriteBatch representation: a
// 12-byte header (fixed64 sequence, fixed32 count) and then the records, documented in
// RocksDB's db/write_batch.cc and in docs/protocol.md.
struct Batch {
  SequenceNumber first_seq = 0;
  uint64_t count = 0;
  std::string data;

  SequenceNumber next_seq() const { return first_seq + count; }
  SequenceNumber last_seq() const { return first_seq + count - 1; }
};

enum class OpType { kPut, kDelete, kDeleteRange };

struct WriteOp {
  OpType type = OpType::kPut;
  std::string key;    // for kDeleteRange: begin key (inclusive)
  std::string value;  // for kDeleteRange: end key (exclusive); empty for kDelete
};

// A condition on one key for a conditional write: the key holds exactly `value`, or, with no
// value, is absent.
struct Condition {
  std::string key;
  std::optional<std::string> value;
};

// A client's request id for a write: remembered with it (Engine::FindRequest) so that a retry
// is answered with the first outcome instead of being applied twice (docs/protocol.md).
inline constexpr size_t kMaxRequestIdBytes = 64;

// One write of a batch that carries a request id: its ops are ops[first_op, first_op + ops).
struct RequestRecord {
  std::string id;
  uint64_t first_op = 0;
  uint64_t ops = 0;
  uint64_t epoch = 0;  // the leader's epoch it is written in
};

// What a request id's write became.
struct RequestOutcome {
  SequenceNumber first_seq = 0;
  SequenceNumber last_seq = 0;
  int64_t write_time_us = 0;
  uint64_t epoch = 0;
};

}  // namespace walship::engine
