// Conversions between the Cap'n Proto messages (rpc/*.capnp) and our plain types. Readers
// from peers are untrusted: the From* functions copy what they find; the state machines in
// replication/ and engine/ check it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/types.h"
#include "replication/messages.h"
#include "replication/recovery.h"
#include "rpc/client.capnp.h"
#include "rpc/client.h"
#include "rpc/peer.capnp.h"

namespace walship::rpc {

// Conversions of peer messages throw (KJ_REQUIRE, bad peer input) on a history longer than
// kMaxHistoryEntries and on a shipped batch shorter than its header.
inline constexpr size_t kMaxHistoryEntries = 65536;
inline constexpr size_t kBatchHeaderBytes = 12;
// A membership from a peer holding more nodes is refused before it is copied.
inline constexpr size_t kMaxMembers = 1024;

replication::Hello FromCapnp(schema::Hello::Reader r);
void ToCapnp(const std::vector<replication::Member>& m, capnp::List<schema::Member>::Builder b);
// A status as a node sends it (rpc/status_format.cc).
NodeStatusInfo StatusFromCapnp(schema::NodeStatus::Reader st);
std::vector<replication::Member> FromCapnp(capnp::List<schema::Member>::Reader r);
void ToCapnp(const replication::Hello& m, schema::Hello::Builder b);
replication::HelloReply FromCapnp(schema::HelloReply::Reader r);
void ToCapnp(const replication::HelloReply& m, schema::HelloReply::Builder b);
replication::TakeOver FromCapnp(schema::TakeOver::Reader r);
void ToCapnp(const replication::TakeOver& m, schema::TakeOver::Builder b);
replication::VoteRequest FromCapnp(schema::VoteRequest::Reader r);
void ToCapnp(const replication::VoteRequest& m, schema::VoteRequest::Builder b);
replication::VoteReply FromCapnp(schema::VoteReply::Reader r);
replication::Heartbeat FromCapnp(schema::Heartbeat::Reader r);
void ToCapnp(const replication::Heartbeat& m, schema::Heartbeat::Builder b);
replication::HeartbeatReply FromCapnp(schema::HeartbeatReply::Reader r);
void ToCapnp(const replication::HeartbeatReply& m, schema::HeartbeatReply::Builder b);
void ToCapnp(const replication::VoteReply& m, schema::VoteReply::Builder b);
replication::TakeOverReply FromCapnp(schema::TakeOverReply::Reader r);
void ToCapnp(const replication::TakeOverReply& m, schema::TakeOverReply::Builder b);
replication::Ship FromCapnp(schema::Ship::Reader r);
void ToCapnp(const replication::Ship& m, schema::Ship::Builder b);
replication::Ack FromCapnp(schema::Ack::Reader r);
void ToCapnp(const replication::Ack& m, schema::Ack::Builder b);

// Bytes of a Ship's batches (for sizing the message).
size_t ShipBytes(const replication::Ship& m);

std::vector<engine::WriteOp> FromCapnp(capnp::List<schema::Op>::Reader ops);
void ToCapnp(const std::vector<engine::WriteOp>& ops, capnp::List<schema::Op>::Builder b);

// absl::Status <-> wire Error. `leader_hint` travels as the status payload kLeaderHintUrl.
void ToCapnp(const absl::Status& s, schema::Error::Builder b);
absl::Status FromCapnp(schema::Error::Reader r);

inline constexpr char kLeaderHintUrl[] = "walship/leader-hint";
inline constexpr char kNotLeaderUrl[] = "walship/not-leader";

// A "not the leader" error naming the leader's address when known.
replication::PeerPosition FromCapnp(schema::Position::Reader r);
void ToCapnp(const replication::PeerPosition& m, schema::Position::Builder b);

absl::Status NotLeaderError(const std::string& leader_address);
// True for an error made by NotLeaderError (also after a round trip over the wire).
bool IsNotLeader(const absl::Status& s);
// The leader's address carried by a not-leader error, or "".
std::string LeaderHint(const absl::Status& s);

// A write committed on the leader that its followers did not acknowledge as it asked
// (notReplicated on the wire; kDeadlineExceeded here): its outcome after a failover is in
// doubt.
inline constexpr char kNotReplicatedUrl[] = "walship/not-replicated";
absl::Status NotReplicatedError(const std::string& message);
bool IsNotReplicated(const absl::Status& s);
// A conditional write whose condition did not hold (conditionFailed; kFailedPrecondition).
inline constexpr char kConditionFailedUrl[] = "walship/condition-failed";
absl::Status ConditionFailedError(const std::string& message);
bool IsConditionFailed(const absl::Status& s);
// A read whose token names a write a later epoch replaced (writeLost; kFailedPrecondition):
// the history the node follows replaced it (docs/reads.md).
inline constexpr char kWriteLostUrl[] = "walship/write-lost";
absl::Status WriteLostError(const std::string& message);
bool IsWriteLost(const absl::Status& s);
// A write sent whose answer never came (the connection broke, or no answer in time): it may
// or may not have been applied. kUnavailable, marked; only the client makes it.
inline constexpr char kInDoubtUrl[] = "walship/in-doubt";
absl::Status InDoubtError(const std::string& message);
bool IsInDoubt(const absl::Status& s);
// A request that never reached the node (it could not be reached, or the request was not
// sent whole: a node takes only whole messages), so nothing was applied. kUnavailable,
// marked; only the client makes it.
inline constexpr char kNotSentUrl[] = "walship/not-sent";
absl::Status NotSent(absl::Status s);
bool IsNotSent(const absl::Status& s);
// A write the node refused before writing anything of it (notWritten on the wire): a leader
// without its lease, stepping down or handing over, a full write queue. Sending it again
// cannot apply it twice. Other `unavailable` answers to a write may be storage failures.
inline constexpr char kNotWrittenUrl[] = "walship/not-written";
absl::Status NotWritten(absl::Status s);
bool IsNotWritten(const absl::Status& s);

inline std::string ToString(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}
inline capnp::Data::Reader ToData(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

}  // namespace walship::rpc
