// The messages of the node-to-node protocol, as plain values.
//
// replication/ knows nothing of sockets or Cap'n Proto: the leader and follower state
// machines consume and produce these structs, rpc/ carries them over Cap'n Proto
// (rpc/peer.capnp mirrors them field by field), and the simulation test carries them through
// an in-memory network that drops, delays, duplicates and reorders them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/types.h"
#include "replication/membership.h"

namespace walship::replication {

using engine::SequenceNumber;
using Epoch = uint64_t;

// The version of the node-to-node protocol this build speaks. Carried in Hello and
// HelloReply (the handshake starts every stream); a node meeting another version refuses
// the handshake with a message naming both. Version 2: epoch entries name the node that
// began them, and followers keep the leader's batch boundaries. Version 3: a message may ask
// the follower to fsync before it acks (Ship::flush). Version 4: a node serves checkpoints
// (PeerService.snapshot) and a new follower of a leader with data is seeded from one.
// Version 5: the leader ships the cluster's membership and followers acknowledge it. (Nodes
// before versions were carried send none: they read as 0.) Version 6: nodes vote
// (PeerService.requestVote) and a leader steps down without a majority. Version 7: heartbeats
// (PeerService.heartbeat). Version 8: batches may hold request-id records (column family 1),
// which a node of an earlier version refuses to apply.
constexpr uint32_t kPeerProtocolVersion = 8;

// The first sequence number written under `epoch`, and the node that began it. A node's epoch
// history is the list of these in increasing order; it tells where two nodes' histories part
// after a failover. The epoch number and its leader together name an epoch: a node begins a
// new epoch only above every epoch it has seen, and should two nodes ever begin the same
// number, their entries still differ by leader, so neither history is taken for the other.
struct EpochEntry {
  Epoch epoch = 0;
  SequenceNumber start_seq = 0;
  std::string leader;  // the node id that began the epoch; empty: unknown (older state files)
  bool operator==(const EpochEntry&) const = default;
  // The same epoch: the same number begun by the same node (an unknown leader matches any).
  bool SameEpoch(const EpochEntry& o) const {
    return epoch == o.epoch && (leader.empty() || o.leader.empty() || leader == o.leader);
  }
};

// Follower -> leader, once per connection.
struct Hello {
  uint32_t version = kPeerProtocolVersion;
  std::string cluster;
  std::string database_id;  // empty for a follower that has never been seeded
  std::string follower_id;
  Epoch epoch = 0;                      // the follower's current epoch
  SequenceNumber last_applied = 0;      // end of the last batch it applied
  Epoch last_applied_epoch = 0;         // epoch under which that batch was written (0: none)
  std::string last_applied_leader;      // the node that began that epoch ("": unknown)
};

enum class HelloOutcome {
  kAccepted,       // shipping starts at last_applied + 1
  kNeedsSnapshot,  // the leader cannot serve that position: re-seed from a checkpoint
  kRefused,        // wrong cluster, wrong database or a stale epoch; see message
};

// Leader -> follower, in answer to Hello.
struct HelloReply {
  uint32_t version = kPeerProtocolVersion;
  HelloOutcome outcome = HelloOutcome::kRefused;
  std::string message;
  Epoch epoch = 0;
  std::string database_id;
  std::vector<EpochEntry> history;
  SequenceNumber leader_latest = 0;
  // A node that does not lead (kRefused) names the node it believes leads, so that a
  // follower whose leader stepped down finds the new one; empty when it knows none.
  std::string leader_hint;
};

struct ShippedBatch {
  engine::Batch batch;
  int64_t leader_time_us = 0;  // leader's wall clock when it wrote the batch
};

// Leader -> follower: zero or more contiguous batches (zero is a heartbeat).
struct Ship {
  Epoch epoch = 0;
  std::vector<ShippedBatch> batches;
  SequenceNumber leader_latest = 0;
  int64_t leader_time_us = 0;  // when the message was sent
  // Non-empty: the leader cannot serve this follower any more (the WAL holding its position
  // is gone); the follower stops and reports needs-snapshot with this reason.
  std::string needs_snapshot;
  // The follower may hold its ack up to this long, so that one ack answers several messages
  // (fewer messages and wake-ups); 0: ack at once. A leader that waits on an ack asks for 0.
  uint32_t max_ack_delay_us = 0;
  // The follower fsyncs its WAL before it acks this message (a write waits for `flushed`), so
  // the ack carries durable >= the message's last batch.
  bool flush = false;
  // The cluster's membership, sent once per stream and after each change, and again with
  // heartbeats while the follower's acks report another version; the follower saves it
  // before it acks (replication/membership.h).
  std::optional<Membership> membership;
  // The `sent_us` of the last ack the leader had from this follower when it sent this message
  // (the follower's own monotonic clock; 0: none yet). So the leader's log ended at
  // leader_latest at some moment after echo_us on the follower's clock: once the follower
  // has applied that far it knows how stale it can be at most, whatever the wall clocks say
  // and however long the message was in flight (replication/reads.h).
  int64_t echo_us = 0;
};

enum class AckOutcome {
  kOk,
  kGap,      // the batches did not start at or before applied + 1; resend from applied + 1
  kStale,    // the message carried an older epoch than the follower's; ignored
  kFailed,   // the follower could not apply (I/O error, malformed batch); see message
};

// Follower -> leader, in answer to every Ship.
struct Ack {
  Epoch epoch = 0;
  AckOutcome outcome = AckOutcome::kOk;
  SequenceNumber received = 0;  // highest sequence received
  SequenceNumber durable = 0;   // highest sequence fsynced on the follower
  SequenceNumber applied = 0;   // highest sequence applied (readable) on the follower
  std::string message;
  uint64_t membership_version = 0;  // the membership version the follower has saved
  // The follower's monotonic clock when it made this ack (at or before it was sent); the
  // leader echoes it in its next messages (Ship::echo_us). 0: not stamped.
  int64_t sent_us = 0;
};

// Leader -> the follower it hands leadership to, once that follower has applied everything
// the leader wrote and the leader accepts no more writes.
struct TakeOver {
  uint32_t version = kPeerProtocolVersion;
  std::string from;             // the leader handing over
  Epoch epoch = 0;              // its epoch
  SequenceNumber latest = 0;    // its last sequence number: the new epoch starts after it
};

struct TakeOverReply {
  bool accepted = false;
  std::string message;          // why not, when refused
  Epoch epoch = 0;              // the epoch the new leader began
  SequenceNumber start_seq = 0;  // accepted: that epoch's first sequence number (the
                                 // target's log end + 1; 0 from nodes before it was sent)
};

// Candidate -> every other voter: would you make me leader of `epoch`? (replication/election.h)
struct VoteRequest {
  uint32_t version = kPeerProtocolVersion;
  std::string cluster;
  std::string candidate;
  Epoch epoch = 0;  // the epoch the candidate would begin: above every epoch it has seen
  // A pre-vote asks whether the voter would grant the vote, and changes nothing there: a
  // candidate that could not win never raises the epoch the others must refuse below.
  bool pre_vote = false;
  // How far the candidate's log is: its end and the epoch entry it was written under.
  SequenceNumber last_seq = 0;
  Epoch last_epoch = 0;
  std::string last_leader;
};

struct VoteReply {
  bool granted = false;
  std::string voter;
  Epoch epoch = 0;        // the highest epoch the voter has seen (after this request)
  std::string message;    // why not, when refused
};

// Leader -> each member, every heartbeat interval, on a connection of its own that no data
// shares: "I lead `epoch`". Answered at once, never behind a write's apply or fsync, so the
// leader's lease and both sides' failure detectors see the peer itself, not its disk.
struct Heartbeat {
  uint32_t version = kPeerProtocolVersion;
  std::string cluster;
  std::string leader;
  Epoch epoch = 0;
};

struct HeartbeatReply {
  std::string node;
  Epoch epoch = 0;       // the highest epoch the node has seen
  bool heard = false;    // it took the heartbeat as its leader's (its epoch is the highest)
  std::string message;   // why not, when not heard
};

const char* HelloOutcomeName(HelloOutcome outcome);
const char* AckOutcomeName(AckOutcome outcome);

}  // namespace walship::replication
