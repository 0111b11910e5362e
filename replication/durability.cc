#include "replication/durability.h"

#include "absl/strings/str_cat.h"

namespace walship::replication {

const char* ModeName(ReplicationMode mode) {
  switch (mode) {
    case ReplicationMode::kAsync: return "async";
    case ReplicationMode::kSemiSync: return "semi-sync";
    case ReplicationMode::kSync: return "sync";
  }
  return "?";
}

const char* AckLevelName(AckLevel level) {
  switch (level) {
    case AckLevel::kReceived: return "received";
    case AckLevel::kFlushed: return "flushed";
    case AckLevel::kApplied: return "applied";
  }
  return "?";
}

const char* PolicyName(SyncTimeoutPolicy policy) {
  return policy == SyncTimeoutPolicy::kFail ? "fail" : "degrade";
}

absl::StatusOr<ReplicationMode> ParseMode(std::string_view text) {
  for (auto m : {ReplicationMode::kAsync, ReplicationMode::kSemiSync, ReplicationMode::kSync}) {
    if (text == ModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("replication mode '", std::string(text), "' is not one of async, semi-sync, sync"));
}

absl::StatusOr<AckLevel> ParseAckLevel(std::string_view text) {
  for (auto l : {AckLevel::kReceived, AckLevel::kFlushed, AckLevel::kApplied}) {
    if (text == AckLevelName(l)) return l;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("ack level '", std::string(text), "' is not one of received, flushed, applied"));
}

absl::StatusOr<SyncTimeoutPolicy> ParsePolicy(std::string_view text) {
  for (auto p : {SyncTimeoutPolicy::kFail, SyncTimeoutPolicy::kDegrade}) {
    if (text == PolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("sync timeout policy '", std::string(text), "' is not one of fail, degrade"));
}

std::string Describe(const Durability& d) {
  switch (d.mode) {
    case ReplicationMode::kAsync: return "async";
    case ReplicationMode::kSemiSync:
      return absl::StrCat("semi-sync (", d.acks, d.acks == 1 ? " follower, " : " followers, ",
                          AckLevelName(d.level), ")");
    case ReplicationMode::kSync:
      return absl::StrCat("sync (every voting follower, ", AckLevelName(d.level), ")");
  }
  return "?";
}

}  // namespace walship::replication
