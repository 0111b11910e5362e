// The one mapping from rocksdb::Status to absl::Status (private to engine/).
#pragma once

#include <rocksdb/status.h>

#include "absl/status/status.h"

namespace walship::engine {

// Keeps RocksDB's message; picks the code by what the caller should do.
inline absl::Status FromRocks(const rocksdb::Status& s) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = s.ToString();
  switch (s.code()) {
    case rocksdb::Status::kNotFound: return absl::NotFoundError(msg);
    case rocksdb::Status::kCorruption: return absl::DataLossError(msg);
    case rocksdb::Status::kNotSupported: return absl::UnimplementedError(msg);
    case rocksdb::Status::kInvalidArgument: return absl::InvalidArgumentError(msg);
    case rocksdb::Status::kIncomplete:
      return absl::ResourceExhaustedError("write would stall: " + msg);
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTryAgain: return absl::UnavailableError(msg);
    case rocksdb::Status::kTimedOut: return absl::DeadlineExceededError(msg);
    case rocksdb::Status::kAborted: return absl::AbortedError(msg);
    case rocksdb::Status::kIOError:
      if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
      return absl::UnavailableError(msg);
    default: return absl::InternalError(msg);
  }
}

}  // namespace walship::engine
