// Rollback files: what a node held past the point where its history parted from its new
// leader's, kept before the node is re-seeded (as MongoDB's rollback files). A leader that
// wrote batches no survivor received, and came back after another node was elected, holds
// writes that are no longer of the cluster's history: RocksDB cannot truncate its log, so the
// node is re-seeded from the new leader, and those writes would be gone without a trace. The
// file keeps them (key, value or tombstone, sequence number and epoch) for an operator to
// look at and, where they matter, write again.
//
// Format (text, one line each, keys and values C-escaped as absl::CEscape writes them):
//   walship-rollback 1
//   cluster NAME
//   database ID
//   node ID
//   range FIRST LAST          the sequence numbers written here that the leader does not hold
//   leader ID EPOCH LATEST    the leader that said so, its epoch and its log's end
//   written UNIX_SECONDS
//   [missing FIRST LAST]      a stretch the WAL no longer held: those writes are lost
//   op SEQ EPOCH put KEY VALUE
//   op SEQ EPOCH delete KEY
//   op SEQ EPOCH delete-range BEGIN END
//   end OPS
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "replication/messages.h"
#include "replication/node_state.h"

namespace walship::replication {

// The first sequence number of a log ending at `our_latest`, written under `ours`, that a
// leader holding `theirs` (its history) up to `their_latest` does not hold in the same epoch:
// our_latest + 1 when its log is a prefix of the leader's.
SequenceNumber DivergenceStart(const std::vector<EpochEntry>& ours, SequenceNumber our_latest,
                               const std::vector<EpochEntry>& theirs, SequenceNumber their_latest);

struct RollbackHeader {
  std::string cluster;
  std::string database_id;
  std::string node;
  SequenceNumber first = 0, last = 0;
  std::string leader;
  Epoch leader_epoch = 0;
  SequenceNumber leader_latest = 0;
  int64_t written_unix_s = 0;
};

struct RollbackOp {
  SequenceNumber seq = 0;
  Epoch epoch = 0;
  engine::WriteOp op;
};

struct Rollback {
  RollbackHeader header;
  std::vector<std::pair<SequenceNumber, SequenceNumber>> missing;
  std::vector<RollbackOp> ops;
};

// Reads batches [header.first, header.last] from `engine`'s WAL and writes them to `path`
// (atomically: a temporary file, fsynced, renamed). A stretch the WAL no longer holds is
// written as `missing`. Returns what was written.
absl::StatusOr<Rollback> WriteRollbackFile(engine::Engine& engine, const NodeState& ours,
                                           const RollbackHeader& header, const std::string& path);

// Parses a rollback file; kDataLoss naming the line when it is malformed or cut short.
absl::StatusOr<Rollback> ReadRollbackFile(const std::string& path);

}  // namespace walship::replication
