// A leader that restarts may hold less than its followers: with its own fsync off, a machine
// that loses power loses the tail of its WAL, which the leader had already shipped (and maybe
// acknowledged to clients as replicated). Before it leads again it asks its peers how far they
// are (PeerService.position), and leads only once no answer holds a write of its history past
// its own log; else it hands leadership to the peer that holds the most (a handover, which
// that peer accepts from where it is), and follows it. A peer that has seen a newer epoch
// means another node leads: it follows that peer.
//
// It waits for every peer up to a time bound; past it, for as many as the cluster's mode
// needs to be sure no write acknowledged as replicated is held only by the silent ones
// (semi-sync k: all but k - 1 of the followers; sync: one; async: none).
//
// Thread safety: none; one thread at a time.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "replication/durability.h"
#include "replication/messages.h"
#include "replication/node_state.h"

namespace walship::replication {

// How far a node is, as it answers a recovering leader.
struct PeerPosition {
  std::string node;
  std::string database_id;
  Epoch highest_epoch = 0;
  SequenceNumber last_applied = 0;      // its log's end
  Epoch last_applied_epoch = 0;         // the epoch entry that seq was written under
  std::string last_applied_leader;
  bool needs_snapshot = false;
  // The first sequence number its WAL holds (0: not known), and whether it leads: what a
  // node restored from a checkpoint asks its leader before it installs it.
  SequenceNumber wal_oldest = 0;
  bool leads = false;
};

// The position of node `self` holding `state` and a log ending at `latest`.
PeerPosition PositionOf(const NodeState& state, SequenceNumber latest, const std::string& self);

struct RecoveryVerdict {
  enum class Kind { kWait, kLead, kHandOver, kFollow };
  Kind kind = Kind::kWait;
  std::string target;  // kHandOver, kFollow: the peer
  std::string why;     // for the log
};

class Recovery {
 public:
  // `state` is this node's saved state (it led `state.epoch`), `latest` its log's end.
  Recovery(NodeState state, SequenceNumber latest, std::string self,
           std::vector<std::string> peers, const Durability& cluster, int64_t now_us,
           int64_t wait_us);

  void OnAnswer(const PeerPosition& answer);
  RecoveryVerdict Decide(int64_t now_us) const;

  // How many peers must have answered, past the wait, for `cluster` to lose no write it
  // acknowledged as replicated.
  static size_t Needed(const Durability& cluster, size_t peers);

  std::vector<std::string> Unanswered() const;
  int64_t deadline_us() const { return deadline_us_; }
  const NodeState& state() const { return state_; }
  SequenceNumber latest() const { return latest_; }

 private:
  // Whether `a` holds writes of this node's history past its log.
  bool HoldsMore(const PeerPosition& a) const;

  const NodeState state_;
  const SequenceNumber latest_;
  const std::string self_;
  const std::vector<std::string> peers_;
  const size_t needed_;
  const int64_t deadline_us_;
  std::map<std::string, PeerPosition> answers_;
};

}  // namespace walship::replication
