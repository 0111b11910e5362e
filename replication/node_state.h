// Node-local state that must never be written into the replicated database (doing so would
// consume sequence numbers and break sequence alignment): the database identity, the current
// epoch and the epoch history. Kept as a small text, in a file of two copies that saves
// overwrite in turn and fdatasync (replication/slot_file.h): quick on a busy disk, where it
// is on the path of every election.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/membership.h"
#include "replication/messages.h"

namespace walship::replication {

struct NodeState {
  std::string database_id;  // empty until the node is created as leader or seeded
  Epoch epoch = 0;
  std::vector<EpochEntry> history;
  // Non-empty once a leader said it can no longer serve this follower (why): its data is
  // stale, and it stays so, across restarts, until the node is re-seeded.
  std::string needs_snapshot;
  // The role this node last took ("leader" or "follower"; empty: none yet, the config's role
  // seeds it), and for a follower the node it follows. Saved before a role takes effect, so
  // after a restart the saved role wins over the config file's.
  std::string role;
  std::string leader;
  // Set while this node hands leadership to that node (from the moment it asks it to take
  // over until it hears the answer): it must not lead by itself, and on a restart it asks
  // again (replication/handover.h).
  std::string handover_to;
  // The cluster's members as this node last knew them (replication/membership.h): the config
  // file's nodes at first, then what the leader changed at run time.
  Membership membership;
  // The last vote this node granted (replication/election.h): in `vote_epoch`, to
  // `voted_for` (itself when it stood). Saved before the vote is answered, so a node never
  // votes twice in one epoch, across restarts too. 0 and "": it never voted.
  Epoch vote_epoch = 0;
  std::string voted_for;

  // Epoch under which `seq` was written according to this history (0 when unknown).
  Epoch EpochOf(SequenceNumber seq) const;
  // The history entry under which `seq` was written, or null when unknown.
  const EpochEntry* EntryOf(SequenceNumber seq) const;
  // The highest epoch this node has seen: its current epoch, a later history entry's, or the
  // epoch of the last vote it granted (an epoch someone may lead).
  Epoch HighestEpoch() const;
};

// The format version of the node-state file this build writes; it reads 1 (history entries
// without their leader), 2 (no membership), 3 (no vote) and 4.
constexpr int kNodeStateVersion = 4;

// Begins a new epoch led by `leader_id` at `next_seq` (the node's latest sequence + 1): its
// number is above every epoch the node has seen, so a node never begins an epoch it has
// already known. History entries that start past next_seq name writes this node does not
// hold (it adopted a leader's history and stopped before applying them) and are dropped; an
// entry that starts at next_seq (an epoch in which this node wrote nothing) is replaced, so
// that restarts do not grow the history.
void BeginEpoch(NodeState& state, SequenceNumber next_seq, const std::string& leader_id);
// The same for the epoch a node won by election (replication/election.h): `epoch`, which is
// above every epoch in its history, and the one it voted for itself in.
void BeginElectedEpoch(NodeState& state, SequenceNumber next_seq, const std::string& leader_id,
                       Epoch epoch);

// Reads the state file; a missing file gives an empty NodeState. kDataLoss, naming the file
// and line, when the file is malformed or its history is out of order; kFailedPrecondition,
// naming both versions, when it was written in a format version this build cannot read.
absl::StatusOr<NodeState> LoadNodeState(const std::string& path);

// Saves the state file durably (a torn save leaves the one before), after checking `state`
// (ValidateState):
// a state that does not hold together is refused (kInternal, naming the file) and the file
// is left as it was.
absl::Status SaveNodeState(const std::string& path, const NodeState& state);

// A new random database identity (128 bits as hex).
std::string NewDatabaseId();

// Checks that a history is strictly increasing in epoch and non-decreasing in start_seq.
absl::Status ValidateHistory(const std::vector<EpochEntry>& history);

// ValidateHistory, and that the current epoch is not below the history's last entry.
absl::Status ValidateState(const NodeState& state);

}  // namespace walship::replication
