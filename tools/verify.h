// `walship verify`: the replicas compared online, at one sequence number (docs/cli.md). The
// leader holds its writes for a moment (queued, not refused) while each follower reaches
// exactly its latest sequence number and keeps a snapshot there; then every node checksums
// its snapshot over the same key ranges while writes go on, and the first range that
// differs is named (rpc/verify_service.h does the nodes' part).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "rpc/client.h"

namespace walship::tools {

struct VerifyOptions {
  uint32_t hold_ms = 2000;     // the longest the leader holds its writes
  uint32_t range_keys = 10000;  // keys per range
  absl::Duration timeout = absl::Seconds(3);  // connecting, and each step but the checksums
  absl::Duration checksum_timeout = absl::Minutes(10);  // a node's checksums (a whole scan)
  rpc::ConnectOptions connect;
};

struct VerifyReport {
  std::string leader;                            // its id
  engine::SequenceNumber seq = 0;
  uint64_t epoch = 0;
  std::vector<std::string> compared;             // ids, the leader first
  std::map<std::string, std::string> not_compared;  // id -> why
  uint64_t keys = 0;                             // the leader's
  size_t ranges = 0;                             // the leader's (and one open range after)
  // The first range that differs, when one does: the key it comes after ("" from the first
  // key; for the open range, the leader's last key), its last key (inclusive; "" for the
  // open range), and each compared node's keys and sum there.
  bool differs = false;
  std::string after, through;
  bool open_range = false;
  std::map<std::string, rpc::RangeSum> sums;
};

// Runs verify against the leader at `leader_endpoint` (with which `leader` the client is
// connected) and the followers its membership names. An error when the leader cannot start
// it (not the leader, another verify under way) or cannot checksum; followers that cannot be
// compared are in the report.
absl::StatusOr<VerifyReport> Verify(rpc::Client& leader, const VerifyOptions& options);

// The report as text (the first differing range named) or one JSON object.
std::string FormatVerify(const VerifyReport& report, bool json);

}  // namespace walship::tools
