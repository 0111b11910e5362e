#include "rpc/convert.h"

#include <kj/debug.h>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace walship::rpc {

using replication::AckOutcome;
using replication::HelloOutcome;

replication::Hello FromCapnp(schema::Hello::Reader r) {
  replication::Hello m;
  m.version = r.getVersion();
  m.cluster = r.getCluster();
  m.database_id = r.getDatabaseId();
  m.follower_id = r.getFollowerId();
  m.epoch = r.getEpoch();
  m.last_applied = r.getLastApplied();
  m.last_applied_epoch = r.getLastAppliedEpoch();
  m.last_applied_leader = r.getLastAppliedLeader();
  return m;
}

void ToCapnp(const replication::Hello& m, schema::Hello::Builder b) {
  b.setVersion(m.version);
  b.setCluster(m.cluster);
  b.setDatabaseId(m.database_id);
  b.setFollowerId(m.follower_id);
  b.setEpoch(m.epoch);
  b.setLastApplied(m.last_applied);
  b.setLastAppliedEpoch(m.last_applied_epoch);
  b.setLastAppliedLeader(m.last_applied_leader);
}

replication::HelloReply FromCapnp(schema::HelloReply::Reader r) {
  replication::HelloReply m;
  m.version = r.getVersion();
  switch (r.getOutcome()) {
    case schema::HelloOutcome::ACCEPTED:
      m.outcome = HelloOutcome::kAccepted;
      break;
    case schema::HelloOutcome::NEEDS_SNAPSHOT:
      m.outcome = HelloOutcome::kNeedsSnapshot;
      break;
    default:
      m.outcome = HelloOutcome::kRefused;
      break;  // unknown values refuse
  }
  m.message = r.getMessage();
  m.epoch = r.getEpoch();
  m.database_id = r.getDatabaseId();
  auto history = r.getHistory();
  // A peer connection's read limit is fixed (160 MiB), so a tiny message could declare a list
  // of millions of empty entries: bounded before anything is copied.
  KJ_REQUIRE(history.size() <= kMaxHistoryEntries, "an epoch history longer than the limit",
             history.size(), kMaxHistoryEntries);
  for (auto e : history) m.history.push_back({e.getEpoch(), e.getStartSeq(), e.getLeader()});
  m.leader_latest = r.getLeaderLatest();
  m.leader_hint = r.getLeaderHint();
  return m;
}

void ToCapnp(const replication::HelloReply& m, schema::HelloReply::Builder b) {
  b.setVersion(m.version);
  switch (m.outcome) {
    case HelloOutcome::kAccepted:
      b.setOutcome(schema::HelloOutcome::ACCEPTED);
      break;
    case HelloOutcome::kNeedsSnapshot:
      b.setOutcome(schema::HelloOutcome::NEEDS_SNAPSHOT);
      break;
    case HelloOutcome::kRefused:
      b.setOutcome(schema::HelloOutcome::REFUSED);
      break;
  }
  b.setMessage(m.message);
  b.setEpoch(m.epoch);
  b.setDatabaseId(m.database_id);
  auto h = b.initHistory(m.history.size());
  for (size_t i = 0; i < m.history.size(); ++i) {
    h[i].setEpoch(m.history[i].epoch);
    h[i].setStartSeq(m.history[i].start_seq);
    h[i].setLeader(m.history[i].leader);
  }
  b.setLeaderLatest(m.leader_latest);
  b.setLeaderHint(m.leader_hint);
}

replication::TakeOver FromCapnp(schema::TakeOver::Reader r) {
  replication::TakeOver m;
  m.version = r.getVersion();
  m.from = r.getFrom();
  m.epoch = r.getEpoch();
  m.latest = r.getLatest();
  return m;
}

void ToCapnp(const replication::TakeOver& m, schema::TakeOver::Builder b) {
  b.setVersion(m.version);
  b.setFrom(m.from);
  b.setEpoch(m.epoch);
  b.setLatest(m.latest);
}

replication::VoteRequest FromCapnp(schema::VoteRequest::Reader r) {
  replication::VoteRequest m;
  m.version = r.getVersion();
  m.cluster = r.getCluster();
  m.candidate = r.getCandidate();
  m.epoch = r.getEpoch();
  m.pre_vote = r.getPreVote();
  m.last_seq = r.getLastSeq();
  m.last_epoch = r.getLastEpoch();
  m.last_leader = r.getLastLeader();
  return m;
}

void ToCapnp(const replication::VoteRequest& m, schema::VoteRequest::Builder b) {
  b.setVersion(m.version);
  b.setCluster(m.cluster);
  b.setCandidate(m.candidate);
  b.setEpoch(m.epoch);
  b.setPreVote(m.pre_vote);
  b.setLastSeq(m.last_seq);
  b.setLastEpoch(m.last_epoch);
  b.setLastLeader(m.last_leader);
}

replication::VoteReply FromCapnp(schema::VoteReply::Reader r) {
  replication::VoteReply m;
  m.granted = r.getGranted();
  m.voter = r.getVoter();
  m.epoch = r.getEpoch();
  m.message = r.getMessage();
  return m;
}

void ToCapnp(const replication::VoteReply& m, schema::VoteReply::Builder b) {
  b.setGranted(m.granted);
  b.setVoter(m.voter);
  b.setEpoch(m.epoch);
  b.setMessage(m.message);
}

replication::Heartbeat FromCapnp(schema::Heartbeat::Reader r) {
  replication::Heartbeat m;
  m.version = r.getVersion();
  m.cluster = r.getCluster();
  m.leader = r.getLeader();
  m.epoch = r.getEpoch();
  return m;
}

void ToCapnp(const replication::Heartbeat& m, schema::Heartbeat::Builder b) {
  b.setVersion(m.version);
  b.setCluster(m.cluster);
  b.setLeader(m.leader);
  b.setEpoch(m.epoch);
}

replication::HeartbeatReply FromCapnp(schema::HeartbeatReply::Reader r) {
  replication::HeartbeatReply m;
  m.node = r.getNode();
  m.epoch = r.getEpoch();
  m.heard = r.getHeard();
  m.message = r.getMessage();
  return m;
}

void ToCapnp(const replication::HeartbeatReply& m, schema::HeartbeatReply::Builder b) {
  b.setNode(m.node);
  b.setEpoch(m.epoch);
  b.setHeard(m.heard);
  b.setMessage(m.message);
}

replication::TakeOverReply FromCapnp(schema::TakeOverReply::Reader r) {
  replication::TakeOverReply m;
  m.accepted = r.getAccepted();
  m.message = r.getMessage();
  m.epoch = r.getEpoch();
  m.start_seq = r.getStartSeq();
  return m;
}

void ToCapnp(const replication::TakeOverReply& m, schema::TakeOverReply::Builder b) {
  b.setAccepted(m.accepted);
  b.setMessage(m.message);
  b.setEpoch(m.epoch);
  b.setStartSeq(m.start_seq);
}

void ToCapnp(const std::vector<replication::Member>& m, capnp::List<schema::Member>::Builder b) {
  for (size_t i = 0; i < m.size(); ++i) {
    b[i].setId(m[i].id);
    b[i].setAddress(m[i].address);
    b[i].setVoter(m[i].voter);
  }
}

std::vector<replication::Member> FromCapnp(capnp::List<schema::Member>::Reader r) {
  KJ_REQUIRE(r.size() <= kMaxMembers, "a membership of more nodes than a cluster holds", r.size());
  std::vector<replication::Member> out;
  out.reserve(r.size());
  for (auto n : r) out.push_back(replication::Member{n.getId(), n.getAddress(), n.getVoter()});
  return out;
}

replication::Ship FromCapnp(schema::Ship::Reader r) {
  replication::Ship m;
  m.epoch = r.getEpoch();
  m.leader_latest = r.getLeaderLatest();
  m.leader_time_us = r.getLeaderTimeUs();
  m.needs_snapshot = r.getNeedsSnapshot();
  m.max_ack_delay_us = r.getMaxAckDelayUs();
  m.flush = r.getFlush();
  m.echo_us = r.getEchoUs();
  if (r.hasMembership()) {
    replication::Membership mm;
    mm.version = r.getMembership().getVersion();
    mm.members = FromCapnp(r.getMembership().getMembers());
    m.membership = std::move(mm);
  }
  auto batches = r.getBatches();
  // As for the history: a list of millions of empty batches is refused at its first element,
  // before anything is copied (every real batch holds at least its 12-byte header).
  for (auto b : batches) {
    KJ_REQUIRE(b.getData().size() >= kBatchHeaderBytes, "a shipped batch shorter than its header",
               b.getData().size());
    replication::ShippedBatch sb;
    sb.batch.first_seq = b.getFirstSeq();
    sb.batch.count = b.getCount();
    sb.batch.data = ToString(b.getData());
    sb.leader_time_us = b.getLeaderTimeUs();
    m.batches.push_back(std::move(sb));
  }
  return m;
}

void ToCapnp(const replication::Ship& m, schema::Ship::Builder b) {
  b.setEpoch(m.epoch);
  b.setLeaderLatest(m.leader_latest);
  b.setLeaderTimeUs(m.leader_time_us);
  b.setNeedsSnapshot(m.needs_snapshot);
  b.setMaxAckDelayUs(m.max_ack_delay_us);
  b.setFlush(m.flush);
  b.setEchoUs(m.echo_us);
  if (m.membership.has_value()) {
    auto ms = b.initMembership();
    ms.setVersion(m.membership->version);
    ToCapnp(m.membership->members, ms.initMembers(m.membership->members.size()));
  }
  auto list = b.initBatches(m.batches.size());
  for (size_t i = 0; i < m.batches.size(); ++i) {
    const auto& sb = m.batches[i];
    list[i].setFirstSeq(sb.batch.first_seq);
    list[i].setCount(sb.batch.count);
    list[i].setData(ToData(sb.batch.data));
    list[i].setLeaderTimeUs(sb.leader_time_us);
  }
}

size_t ShipBytes(const replication::Ship& m) {
  size_t n = 0;
  for (const auto& sb : m.batches) n += sb.batch.data.size();
  return n;
}

replication::Ack FromCapnp(schema::Ack::Reader r) {
  replication::Ack m;
  m.epoch = r.getEpoch();
  switch (r.getOutcome()) {
    case schema::AckOutcome::OK:
      m.outcome = AckOutcome::kOk;
      break;
    case schema::AckOutcome::GAP:
      m.outcome = AckOutcome::kGap;
      break;
    case schema::AckOutcome::STALE:
      m.outcome = AckOutcome::kStale;
      break;
    default:
      m.outcome = AckOutcome::kFailed;
      break;
  }
  m.received = r.getReceived();
  m.durable = r.getDurable();
  m.applied = r.getApplied();
  m.message = r.getMessage();
  m.membership_version = r.getMembershipVersion();
  m.sent_us = r.getSentUs();
  return m;
}

void ToCapnp(const replication::Ack& m, schema::Ack::Builder b) {
  b.setEpoch(m.epoch);
  switch (m.outcome) {
    case AckOutcome::kOk:
      b.setOutcome(schema::AckOutcome::OK);
      break;
    case AckOutcome::kGap:
      b.setOutcome(schema::AckOutcome::GAP);
      break;
    case AckOutcome::kStale:
      b.setOutcome(schema::AckOutcome::STALE);
      break;
    case AckOutcome::kFailed:
      b.setOutcome(schema::AckOutcome::FAILED);
      break;
  }
  b.setReceived(m.received);
  b.setDurable(m.durable);
  b.setApplied(m.applied);
  b.setMessage(m.message);
  b.setMembershipVersion(m.membership_version);
  b.setSentUs(m.sent_us);
}

std::vector<engine::WriteOp> FromCapnp(capnp::List<schema::Op>::Reader ops) {
  std::vector<engine::WriteOp> out;
  out.reserve(ops.size());
  for (auto op : ops) {
    engine::WriteOp w;
    switch (op.getType()) {
      case schema::OpType::PUT:
        w.type = engine::OpType::kPut;
        break;
      case schema::OpType::DELETE:
        w.type = engine::OpType::kDelete;
        break;
      case schema::OpType::DELETE_RANGE:
        w.type = engine::OpType::kDeleteRange;
        break;
    }
    w.key = ToString(op.getKey());
    w.value = ToString(op.getValue());
    out.push_back(std::move(w));
  }
  return out;
}

void ToCapnp(const std::vector<engine::WriteOp>& ops, capnp::List<schema::Op>::Builder b) {
  for (size_t i = 0; i < ops.size(); ++i) {
    switch (ops[i].type) {
      case engine::OpType::kPut:
        b[i].setType(schema::OpType::PUT);
        break;
      case engine::OpType::kDelete:
        b[i].setType(schema::OpType::DELETE);
        break;
      case engine::OpType::kDeleteRange:
        b[i].setType(schema::OpType::DELETE_RANGE);
        break;
    }
    b[i].setKey(ToData(ops[i].key));
    b[i].setValue(ToData(ops[i].value));
  }
}

replication::PeerPosition FromCapnp(schema::Position::Reader r) {
  replication::PeerPosition m;
  m.node = r.getNode();
  m.database_id = r.getDatabaseId();
  m.highest_epoch = r.getHighestEpoch();
  m.last_applied = r.getLastApplied();
  m.last_applied_epoch = r.getLastAppliedEpoch();
  m.last_applied_leader = r.getLastAppliedLeader();
  m.needs_snapshot = r.getNeedsSnapshot();
  m.wal_oldest = r.getWalOldest();
  m.leads = r.getLeads();
  return m;
}

void ToCapnp(const replication::PeerPosition& m, schema::Position::Builder b) {
  b.setNode(m.node);
  b.setDatabaseId(m.database_id);
  b.setHighestEpoch(m.highest_epoch);
  b.setLastApplied(m.last_applied);
  b.setLastAppliedEpoch(m.last_applied_epoch);
  b.setLastAppliedLeader(m.last_applied_leader);
  b.setNeedsSnapshot(m.needs_snapshot);
  b.setWalOldest(m.wal_oldest);
  b.setLeads(m.leads);
}

absl::Status NotLeaderError(const std::string& leader_address) {
  absl::Status s = absl::FailedPreconditionError(
      leader_address.empty()
          ? "this node is not the leader and does not know the leader"
          : absl::StrCat("this node is not the leader; the leader is at ", leader_address));
  s.SetPayload(kNotLeaderUrl, absl::Cord("1"));
  if (!leader_address.empty()) s.SetPayload(kLeaderHintUrl, absl::Cord(leader_address));
  return s;
}

bool IsNotLeader(const absl::Status& s) { return s.GetPayload(kNotLeaderUrl).has_value(); }

std::string LeaderHint(const absl::Status& s) {
  auto p = s.GetPayload(kLeaderHintUrl);
  return p.has_value() ? std::string(*p) : "";
}

absl::Status NotReplicatedError(const std::string& message) {
  absl::Status s = absl::DeadlineExceededError(message);
  s.SetPayload(kNotReplicatedUrl, absl::Cord("1"));
  return s;
}

bool IsNotReplicated(const absl::Status& s) { return s.GetPayload(kNotReplicatedUrl).has_value(); }

absl::Status InDoubtError(const std::string& message) {
  absl::Status s = absl::UnavailableError(message);
  s.SetPayload(kInDoubtUrl, absl::Cord("1"));
  return s;
}

bool IsInDoubt(const absl::Status& s) { return s.GetPayload(kInDoubtUrl).has_value(); }

absl::Status NotSent(absl::Status s) {
  s.SetPayload(kNotSentUrl, absl::Cord("1"));
  return s;
}

bool IsNotSent(const absl::Status& s) { return s.GetPayload(kNotSentUrl).has_value(); }

absl::Status NotWritten(absl::Status s) {
  s.SetPayload(kNotWrittenUrl, absl::Cord("1"));
  return s;
}

bool IsNotWritten(const absl::Status& s) { return s.GetPayload(kNotWrittenUrl).has_value(); }

absl::Status ConditionFailedError(const std::string& message) {
  absl::Status s = absl::FailedPreconditionError(message);
  s.SetPayload(kConditionFailedUrl, absl::Cord("1"));
  return s;
}

bool IsConditionFailed(const absl::Status& s) {
  return s.GetPayload(kConditionFailedUrl).has_value();
}

absl::Status WriteLostError(const std::string& message) {
  absl::Status s = absl::FailedPreconditionError(message);
  s.SetPayload(kWriteLostUrl, absl::Cord("1"));
  return s;
}

bool IsWriteLost(const absl::Status& s) { return s.GetPayload(kWriteLostUrl).has_value(); }

namespace {
absl::Status FromCapnpCode(schema::Error::Reader r);
}  // namespace

void ToCapnp(const absl::Status& s, schema::Error::Builder b) {
  using C = absl::StatusCode;
  schema::ErrorCode code = schema::ErrorCode::INTERNAL;
  b.setLeaderHint(LeaderHint(s));  // with notLeader, and while a handover runs
  if (IsNotLeader(s)) {
    code = schema::ErrorCode::NOT_LEADER;
  } else if (IsNotReplicated(s)) {
    code = schema::ErrorCode::NOT_REPLICATED;
  } else if (IsConditionFailed(s)) {
    code = schema::ErrorCode::CONDITION_FAILED;
  } else if (IsWriteLost(s)) {
    code = schema::ErrorCode::WRITE_LOST;
  } else {
    switch (s.code()) {
      case C::kOk:
        code = schema::ErrorCode::OK;
        break;
      case C::kNotFound:
        code = schema::ErrorCode::NOT_FOUND;
        break;
      case C::kInvalidArgument:
      case C::kOutOfRange:
        code = schema::ErrorCode::INVALID_ARGUMENT;
        break;
      case C::kUnavailable:
      case C::kResourceExhausted:
      case C::kDeadlineExceeded:
      case C::kAborted:
        code = schema::ErrorCode::UNAVAILABLE;
        break;
      case C::kFailedPrecondition:
        code = schema::ErrorCode::FAILED_PRECONDITION;
        break;
      case C::kDataLoss:
        code = schema::ErrorCode::DATA_LOSS;
        break;
      case C::kUnimplemented:
        code = schema::ErrorCode::UNIMPLEMENTED;
        break;
      case C::kUnauthenticated:
      case C::kPermissionDenied:
        code = schema::ErrorCode::UNAUTHENTICATED;
        break;
      default:
        code = schema::ErrorCode::INTERNAL;
        break;
    }
  }
  b.setCode(code);
  b.setMessage(std::string(s.message()));
  b.setNotWritten(IsNotWritten(s));
}

absl::Status FromCapnp(schema::Error::Reader r) {
  absl::Status s = FromCapnpCode(r);
  if (!s.ok() && r.getLeaderHint().size() > 0) {
    s.SetPayload(kLeaderHintUrl, absl::Cord(std::string(r.getLeaderHint())));
  }
  if (!s.ok() && r.getNotWritten()) s = NotWritten(std::move(s));
  return s;
}

namespace {
absl::Status FromCapnpCode(schema::Error::Reader r) {
  std::string msg = r.getMessage();
  switch (r.getCode()) {
    case schema::ErrorCode::OK:
      return absl::OkStatus();
    case schema::ErrorCode::NOT_FOUND:
      return absl::NotFoundError(msg);
    case schema::ErrorCode::INVALID_ARGUMENT:
      return absl::InvalidArgumentError(msg);
    case schema::ErrorCode::NOT_LEADER: {
      absl::Status s = absl::FailedPreconditionError(msg);
      s.SetPayload(kNotLeaderUrl, absl::Cord("1"));
      return s;
    }
    case schema::ErrorCode::UNAVAILABLE:
      return absl::UnavailableError(msg);
    case schema::ErrorCode::FAILED_PRECONDITION:
      return absl::FailedPreconditionError(msg);
    case schema::ErrorCode::DATA_LOSS:
      return absl::DataLossError(msg);
    case schema::ErrorCode::UNIMPLEMENTED:
      return absl::UnimplementedError(msg);
    case schema::ErrorCode::NOT_REPLICATED:
      return NotReplicatedError(msg);
    case schema::ErrorCode::CONDITION_FAILED:
      return ConditionFailedError(msg);
    case schema::ErrorCode::WRITE_LOST:
      return WriteLostError(msg);
    case schema::ErrorCode::UNAUTHENTICATED:
      return absl::UnauthenticatedError(msg);
    default:
      return absl::InternalError(msg);
  }
}
}  // namespace

}  // namespace walship::rpc
