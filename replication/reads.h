// When a node may answer a read that asks for more than "whatever this node holds now":
// read-your-writes and monotonic reads (a read token names a position that the node must
// hold, in the same history), and bounded staleness (the node must be within some time of its
// leader). docs/reads.md states what each read option guarantees.
//
// A position is an epoch and a sequence number, never a bare sequence number: after a leader
// loses a tail that was never replicated, the next epoch writes the same sequence numbers
// again with other data, so only the epoch under which a sequence number was written tells
// the two apart (as Kafka's leader epochs do for offsets).
#pragma once

#include <cstdint>
#include <string>

#include "replication/messages.h"
#include "replication/node_state.h"

namespace walship::replication {

// A position in a history: the write at `seq`, written under `epoch`. Every write reply
// carries the token of its last sequence number, every read reply the token of what it read.
// {0, 0}: none. Epoch 0 with a seq is a bare sequence number (clients before tokens): it is
// checked against the sequence number alone.
struct ReadToken {
  Epoch epoch = 0;
  SequenceNumber seq = 0;
  bool empty() const { return seq == 0; }
  bool operator==(const ReadToken&) const = default;
};

// The later of two positions, for a session that remembers the last thing it wrote or read.
// Positions of one history are ordered by sequence number; of two histories, the one of the
// higher epoch is the one that replaced the other, and a session moves on to it.
ReadToken Later(const ReadToken& a, const ReadToken& b);

// "epoch:seq", and back (kInvalidArgument naming the text when malformed).
std::string TokenText(const ReadToken& t);
bool ParseToken(const std::string& text, ReadToken* t);

// What a read asks for beyond the node's current data.
struct ReadNeeds {
  ReadToken after;          // answer only once this position is held, in the same history
  int64_t max_lag_ms = -1;  // answer only within this many ms of the leader; -1: any lag
};

// Where a node stands for a read, as its role tells it.
struct ReadPosition {
  SequenceNumber applied = 0;  // the last sequence number the read would see
  // The epoch under which this node's history puts `applied`, and the needed token's seq
  // (whether applied yet or not); 0 when the history does not reach back to it.
  Epoch applied_epoch = 0;
  Epoch token_seq_epoch = 0;
  Epoch history_epoch = 0;  // the latest epoch of the node's history (0: none)
  // How long ago this node last knew itself caught up with its leader, on its own monotonic
  // clock: 0 on the leader that takes writes, -1 when it never knew (or leads no more).
  int64_t lag_us = -1;
  std::string refusal;     // why this node serves no reads at all ("" when it does)
};

// The epochs of a ReadPosition, from a node's history (the rest is the caller's).
ReadPosition PositionIn(const NodeState& state, SequenceNumber applied, SequenceNumber token_seq);

enum class ReadVerdict {
  kServe,        // the read may be answered now
  kWait,         // not yet: the node may get there (answer kUnavailable at the deadline)
  kUnavailable,  // not here: another node may serve it (this one is stale, or diverged)
  kLost,         // never anywhere: the token names a write that a later epoch replaced
};

struct ReadCheck {
  ReadVerdict verdict = ReadVerdict::kServe;
  std::string why;  // for every verdict but kServe: what the node holds and the read needs
};

// Decides a read. A token (E, S) is held when the node has applied S and its history puts S
// under E. When its history puts S under another epoch and reaches past E (a later epoch
// began), the history this node follows does not hold that write: a later leader wrote other
// data at S, or kept another tail there: kLost (also when S is not applied yet: it will not
// come under E). When its history ends before E, the node has not learnt of epoch E: it holds
// a tail the token's history replaced (kUnavailable once S is applied), or it may learn it
// (kWait).
// A bound on lag holds when the node is the leader, or last knew itself caught up at most
// that long ago; else kWait (a heartbeat may come), never kServe.
ReadCheck CheckRead(const ReadNeeds& needs, const ReadPosition& at);

const char* ReadVerdictName(ReadVerdict v);

}  // namespace walship::replication
