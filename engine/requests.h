// Request ids remembered with the writes they name (engine/ only; the types are in types.h).
// A write that carries a client's request id gets one more record at the end of its batch: a
// put into the column family "walship_requests" (id 1 on every node, checked at open) whose
// key is the id and whose value is the write's outcome. It travels in the WAL with the write,
// so every follower holds it too, and a checkpoint copies it: whichever node leads next finds
// it. Entries older than the retention are ignored and dropped at compaction.
#pragma once

#include <rocksdb/compaction_filter.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "engine/types.h"

namespace walship::engine {

inline constexpr char kRequestsColumnFamily[] = "walship_requests";
inline constexpr uint32_t kRequestsColumnFamilyId = 1;
// Version byte, then fixed64 first seq, last seq, write time (µs since the epoch), epoch.
inline constexpr size_t kRequestValueBytes = 1 + 4 * 8;
inline constexpr char kRequestValueVersion = 1;

std::string EncodeRequestValue(const RequestOutcome& outcome);
// The outcome a value records, or nullopt when it is not one.
std::optional<RequestOutcome> DecodeRequestValue(std::string_view value);
// Why a record of the requests column family is not one walship writes, or OK.
absl::Status CheckRequestRecord(std::string_view id, std::string_view value);
// Whether an entry written at `write_time_us` is past `retention_seconds` at `now_us`.
bool RequestExpired(int64_t write_time_us, uint64_t retention_seconds, int64_t now_us);

// Drops entries past the retention (by the wall clock) when RocksDB compacts them.
std::unique_ptr<rocksdb::CompactionFilter> NewRequestExpiryFilter(uint64_t retention_seconds);

}  // namespace walship::engine
