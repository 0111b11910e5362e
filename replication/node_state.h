// Node-local state that must never be written into the replicated database (doing so would
// consume sequence numbers and break sequence alignment): the database identity, the current
// epoch and the epoch history. Kept in one small text file replaced atomically (write to a
// temporary file, fsync, rename, fsync the directory).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/messages.h"

namespace walship::replication {

struct NodeState {
  std::string database_id;  // empty until the node is created as leader or seeded
  Epoch epoch = 0;
  std::vector<EpochEntry> history;
  // Non-empty once a leader said it can no longer serve this follower (why): its data is
  // stale, and it stays so, across restarts, until the node is re-seeded.
  std::string needs_snapshot;

  // Epoch under which `seq` was written according to this history (0 when unknown).
  Epoch EpochOf(SequenceNumber seq) const;
};

// Reads the state file; a missing file gives an empty NodeState. kDataLoss, naming the file
// and line, when the file is malformed.
absl::StatusOr<NodeState> LoadNodeState(const std::string& path);

// Replaces the state file atomically and durably.
absl::Status SaveNodeState(const std::string& path, const NodeState& state);

// A new random database identity (128 bits as hex).
std::string NewDatabaseId();

// Checks that a history is strictly increasing in epoch and non-decreasing in start_seq.
absl::Status ValidateHistory(const std::vector<EpochEntry>& history);

}  // namespace walship::replication
