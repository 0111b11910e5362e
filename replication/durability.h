// What a successful write promises: how many followers must hold it, and how firmly, before
// the leader acknowledges it. docs/replication.md tells which failures each choice survives.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace walship::replication {

enum class ReplicationMode {
  kAsync,     // acknowledged after the leader's own write
  kSemiSync,  // after `acks` followers (any of them) have it at `level`
  kSync,      // after every voting follower has it at `level`
};

// How far a follower has taken a write when it acknowledges it, as PostgreSQL's
// synchronous_commit names the levels.
enum class AckLevel {
  kReceived,  // written to its database, in its OS buffers: survives its process crashing
  kFlushed,   // and its WAL fsynced: survives its machine losing power
  kApplied,   // flushed and visible to reads there (remote_apply)
};

struct Durability {
  ReplicationMode mode = ReplicationMode::kAsync;
  uint32_t acks = 1;  // semi-sync: how many followers (k)
  AckLevel level = AckLevel::kFlushed;

  bool operator==(const Durability&) const = default;
  auto operator<=>(const Durability&) const = default;
};

// What to do with a write whose followers do not acknowledge it in time.
enum class SyncTimeoutPolicy {
  kFail,     // it fails: written on the leader, not replicated as asked (outcome in doubt)
  kDegrade,  // it succeeds, and the leader runs async until enough followers are back
};

const char* ModeName(ReplicationMode mode);    // async | semi-sync | sync
const char* AckLevelName(AckLevel level);      // received | flushed | applied
const char* PolicyName(SyncTimeoutPolicy policy);  // fail | degrade
absl::StatusOr<ReplicationMode> ParseMode(std::string_view text);
absl::StatusOr<AckLevel> ParseAckLevel(std::string_view text);
absl::StatusOr<SyncTimeoutPolicy> ParsePolicy(std::string_view text);

// "async", "semi-sync (1 follower, flushed)", "sync (every voting follower, applied)".
std::string Describe(const Durability& d);

}  // namespace walship::replication
