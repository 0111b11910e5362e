#include "rpc/client_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "replication/clock.h"
#include "rpc/convert.h"
#include "rpc/node.h"
#include "rpc/verify_service.h"

namespace walship::rpc {
namespace {

using engine::SequenceNumber;

// Scans up to this size run on the loop thread; larger ones go to a worker.
constexpr uint32_t kInlineScanLimit = 1000;
constexpr uint32_t kMaxScanLimit = 100000;
constexpr size_t kMaxPipelineWrites = 10000;
constexpr uint32_t kDefaultHandoverTimeoutMs = 10000;

uint32_t ScanLimit(schema::ScanRequest::Reader request) {
  return std::min(request.getLimit() == 0 ? 1000u : request.getLimit(), kMaxScanLimit);
}

void ToReply(const WriteOutcome& o, schema::WriteReply::Builder b) {
  ToCapnp(o.status, b.initError());
  b.setFirstSeq(o.first_seq);
  b.setLastSeq(o.last_seq);
  b.setDegraded(o.degraded);
  b.setEpoch(o.epoch);
  b.setDuplicate(o.duplicate);
}

}  // namespace

ClientService::ClientService(Node& node)
    : node_(node),
      engine_(node.engine()),
      reads_(node),
      verify_(std::make_unique<VerifyService>(node, *this)),
      tasks_(*this) {}

ClientService::~ClientService() = default;

void ClientService::taskFailed(kj::Exception&& e) {
  spdlog::warn("write task failed: {}", e.getDescription().cStr());
}

bool ClientService::ServesOnWorker(schema::Request::Reader request) {
  return request.isScan() && ScanLimit(request.getScan()) > kInlineScanLimit;
}

bool ClientService::ReserveScanReply() {
  if (scan_reply_bytes_reserved_ + schema::MAX_SCAN_REPLY_BYTES > kMaxScanReplyBytesReserved) {
    return false;
  }
  scan_reply_bytes_reserved_ += schema::MAX_SCAN_REPLY_BYTES;
  return true;
}

kj::Promise<void> ClientService::Serve(schema::Request::Reader request,
                                       schema::Reply::Builder reply) {
  int64_t start_us = node_.PreciseNowUs();
  switch (request.which()) {
    case schema::Request::WRITE: {
      auto w = request.getWrite();
      return Enqueue(FromCapnp(w.getOps()), SpecOf(w))
          .then([this, reply, start_us](WriteOutcome o) mutable {
            auto r = reply.initWrite();
            ToReply(o, r);
            counters_.CountWrite(static_cast<uint16_t>(r.getError().getCode()),
                                 node_.PreciseNowUs() - start_us);
          });
    }
    case schema::Request::WRITE_MANY: return WriteMany(request.getWriteMany(), reply, start_us);
    case schema::Request::GET: {
      auto r = reply.initGet();
      return Get(request.getGet(), r).then([this, r, start_us]() mutable {
        counters_.CountRead(static_cast<uint16_t>(r.getError().getCode()),
                            node_.PreciseNowUs() - start_us);
      });
    }
    case schema::Request::SCAN:
      return Scan(request.getScan(), reply).then([this, reply, start_us]() mutable {
        if (reply.isScan()) {
          counters_.CountRead(static_cast<uint16_t>(reply.getScan().getError().getCode()),
                              node_.PreciseNowUs() - start_us);
        }
      });
    case schema::Request::STATUS: Status(reply.initStatus()); return kj::READY_NOW;
    case schema::Request::HANDOVER: return Handover(request.getHandover(), reply.initHandover());
    case schema::Request::RESEED: ToCapnp(node_.Reseed(), reply.initReseed()); return kj::READY_NOW;
    case schema::Request::CHANGE_MEMBERSHIP:
      ChangeMembership(request.getChangeMembership(), reply.initChangeMembership());
      return kj::READY_NOW;
    case schema::Request::WAL_READ: return WalRead(request.getWalRead(), reply.initWalRead());
    case schema::Request::VERIFY: return verify_->Serve(request.getVerify(), reply.initVerify());
    case schema::Request::PROMOTE:
      return node_.role()
          .Promote(request.getPromote().getAcceptLoss())
          .then([r = reply.initPromote()](PromoteOutcome o) mutable {
            ToCapnp(o.status, r.initError());
            r.setLeader(o.leader);
            r.setEpoch(o.epoch);
            r.setPossibleLoss(o.possible_loss);
          });
  }
  ToCapnp(absl::UnimplementedError(absl::StrCat(
              "unknown request kind ", static_cast<int>(request.which()),
              "; the client is newer than this node")),
          reply.initRefused());
  return kj::READY_NOW;
}

// A pipeline of independent writes: each enters the write queue as if sent on its own.
kj::Promise<void> ClientService::WriteMany(schema::WriteManyRequest::Reader request,
                                           schema::Reply::Builder reply, int64_t start_us) {
  auto writes = request.getWrites();
  // Refused whole, with one error: the reply is never sized by an untrusted count.
  auto refuse = [&](const absl::Status& why) {
    auto error = reply.initWriteMany().initError();
    ToCapnp(why, error);
    counters_.CountRefusedWrites(static_cast<uint16_t>(error.getCode()), writes.size());
  };
  if (absl::Status refused = node_.role().WriteRefusal(); !refused.ok()) {
    refuse(refused);
    return kj::READY_NOW;
  }
  if (writes.size() > kMaxPipelineWrites) {
    refuse(absl::InvalidArgumentError(absl::StrCat("a pipeline holds at most ",
                                                   kMaxPipelineWrites, " writes; this one has ",
                                                   writes.size())));
    return kj::READY_NOW;
  }
  // Every write is decoded before any is queued: a field of the wrong type in one of them
  // refuses the pipeline whole (the exception reaches the connection), never after some of
  // it was applied.
  std::vector<std::pair<std::vector<engine::WriteOp>, absl::StatusOr<WriteSpec>>> decoded;
  decoded.reserve(writes.size());
  for (auto w : writes) decoded.emplace_back(FromCapnp(w.getOps()), SpecOf(w));
  auto outcomes = kj::heapArrayBuilder<kj::Promise<WriteOutcome>>(decoded.size());
  for (auto& [ops, spec] : decoded) outcomes.add(Enqueue(std::move(ops), std::move(spec)));
  return kj::joinPromises(outcomes.finish())
      .then([this, reply, start_us](kj::Array<WriteOutcome> done) mutable {
        auto results = reply.initWriteMany();
        ToCapnp(absl::OkStatus(), results.initError());
        auto replies = results.initReplies(done.size());
        int64_t took_us = node_.PreciseNowUs() - start_us;
        for (size_t i = 0; i < done.size(); ++i) {
          ToReply(done[i], replies[i]);
          counters_.CountWrite(static_cast<uint16_t>(replies[i].getError().getCode()), took_us);
        }
      });
}

namespace {

// A committed read: answered once the followers hold everything up to `seq` (the snapshot's),
// by `read` on a worker, or with the error that refused it.
template <typename Read, typename Answer>
kj::Promise<void> WhenCommitted(Role& role, SequenceNumber seq, Read read, Answer answer) {
  return role.AwaitCommitted(seq).then(
      [read, answer](absl::Status s) mutable -> kj::Promise<void> {
        if (!s.ok()) {
          answer(std::move(s));
          return kj::READY_NOW;
        }
        return read().then(kj::mv(answer));
      });
}

template <typename R>
replication::ReadNeeds NeedsOf(R request) {
  replication::ReadNeeds needs;
  needs.after = {request.getAfterEpoch(), request.getMinSeq()};
  needs.max_lag_ms = request.getMaxLagMs() < 0 ? -1 : request.getMaxLagMs();
  return needs;
}

}  // namespace

// A read is admitted (ReadGate: its token applied, its lag bound met, waiting for them if need
// be), then reads at one snapshot, whose position the reply carries: what it saw and the
// token of it come from the same state. Reads served on the loop thread come from memory
// only: a read that needs the disk goes to a worker with the snapshot taken here and now, so
// that it sees exactly what it would have seen here, whatever is written meanwhile, and the
// loop never waits for the disk.
std::optional<absl::Status> ClientService::AdmitRead(const replication::ReadNeeds& needs) {
  if (std::string why = node_.role().ReadRefusal(); !why.empty()) {
    return absl::FailedPreconditionError(why);
  }
  if (needs.after.empty() && needs.max_lag_ms < 0) return absl::OkStatus();
  return reads_.Decide(needs);
}

ClientService::ReadAt ClientService::TakeSnapshot() {
  ReadAt at;
  at.snapshot = engine_.GetSnapshot();
  at.seq = at.snapshot->seq();
  at.epoch = node_.role().ReadPositionFor(0, at.seq).applied_epoch;
  return at;
}

kj::Promise<void> ClientService::Get(schema::GetRequest::Reader request,
                                     schema::GetReply::Builder reply) {
  std::string key = ToString(request.getKey());
  bool committed = request.getCommitted();
  replication::ReadNeeds needs = NeedsOf(request);
  // Served in this turn when it may be (the snapshot is of the turn the read came in), else
  // once it may be or its wait ran out.
  auto serve = [this, reply, key = std::move(key), committed](absl::Status admitted) mutable
      -> kj::Promise<void> {
        ReadAt at = TakeSnapshot();
        reply.setSeq(at.seq);
        reply.setEpoch(at.epoch);
        auto answer = [reply](absl::StatusOr<std::string> value) mutable {
          ToCapnp(value.status(), reply.initError());
          if (value.ok()) reply.setValue(ToData(*value));
        };
        if (!admitted.ok()) {
          answer(std::move(admitted));
          return kj::READY_NOW;
        }
        auto on_worker = [this, key, snap = at.snapshot]() {
          return node_.client_pool().Run([e = &engine_, key, snap]() {
            engine::ReadOptions read;
            read.snapshot = snap.get();
            return e->Get(key, read);
          });
        };
        if (committed) return WhenCommitted(node_.role(), at.seq, on_worker, answer);
        engine::ReadOptions cached;
        cached.cache_only = true;
        cached.snapshot = at.snapshot.get();
        absl::StatusOr<std::string> value = engine_.Get(key, cached);
        if (!absl::IsResourceExhausted(value.status())) {
          answer(std::move(value));
          return kj::READY_NOW;
        }
        return on_worker().then(kj::mv(answer));
      };
  if (std::optional<absl::Status> now = AdmitRead(needs); now.has_value()) {
    return serve(std::move(*now));
  }
  return reads_.Wait(needs, request.getWaitMs()).then(kj::mv(serve));
}

kj::Promise<void> ClientService::Scan(schema::ScanRequest::Reader request,
                                      schema::Reply::Builder reply) {
  engine::ScanOptions scan;
  scan.start = ToString(request.getStart());
  scan.prefix = ToString(request.getPrefix());
  scan.limit = ScanLimit(request);
  scan.max_bytes = schema::MAX_SCAN_REPLY_BYTES;
  bool committed = request.getCommitted();
  replication::ReadNeeds needs = NeedsOf(request);
  auto serve = [this, reply, scan = std::move(scan), committed](absl::Status admitted) mutable
      -> kj::Promise<void> {
        ReadAt at = TakeSnapshot();
        auto answer = [reply, seq = at.seq, epoch = at.epoch, limit = scan.limit](
                          absl::StatusOr<std::vector<engine::KeyValue>> kvs) mutable {
          auto results = reply.initScan();
          results.setSeq(seq);
          results.setEpoch(epoch);
          ToCapnp(kvs.status(), results.initError());
          if (!kvs.ok()) return;
          auto items = results.initItems(kvs->size());
          uint64_t bytes = 0;
          for (size_t i = 0; i < kvs->size(); ++i) {
            items[i].setKey(ToData((*kvs)[i].key));
            items[i].setValue(ToData((*kvs)[i].value));
            bytes += (*kvs)[i].key.size() + (*kvs)[i].value.size();
          }
          if (kvs->size() < limit && bytes >= schema::MAX_SCAN_REPLY_BYTES) {
            results.setTruncated(true);
            results.setNextStart(ToData(kvs->back().key + std::string(1, '\0')));
          }
        };
        if (!admitted.ok()) {
          answer(std::move(admitted));
          return kj::READY_NOW;
        }
        auto on_worker = [this, scan, snap = at.snapshot]() {
          return node_.client_pool().Run([e = &engine_, scan, snap]() {
            engine::ReadOptions read;
            read.snapshot = snap.get();
            return e->Scan(scan, read);
          });
        };
        if (committed) return WhenCommitted(node_.role(), at.seq, on_worker, answer);
        // As for Get: small scans from memory here, the rest on a worker.
        if (scan.limit <= kInlineScanLimit) {
          engine::ReadOptions cached;
          cached.cache_only = true;
          cached.snapshot = at.snapshot.get();
          auto kvs = engine_.Scan(scan, cached);
          if (!absl::IsResourceExhausted(kvs.status())) {
            answer(std::move(kvs));
            return kj::READY_NOW;
          }
        }
        return on_worker().then(kj::mv(answer));
      };
  if (std::optional<absl::Status> now = AdmitRead(needs); now.has_value()) {
    return serve(std::move(*now));
  }
  return reads_.Wait(needs, request.getWaitMs()).then(kj::mv(serve));
}

kj::Promise<void> ClientService::WalRead(schema::WalReadRequest::Reader request,
                                         schema::WalReadReply::Builder reply) {
  engine::SequenceNumber from = request.getFromSeq();
  uint32_t max = request.getMaxBatches() == 0 ? 100 : request.getMaxBatches();
  reply.setLatestSeq(engine_.LatestSequence());
  if (from == 0 || max > 1000) {
    ToCapnp(absl::InvalidArgumentError(from == 0 ? "sequence numbers start at 1"
                                                 : "at most 1000 batches per read"),
            reply.initError());
    return kj::READY_NOW;
  }
  // A debugging read: on a client worker, beside scans, never delaying the followers' reads.
  auto read = node_.client_pool().Run([e = &engine_, from, max]()
                                          -> absl::StatusOr<std::vector<engine::Batch>> {
    auto cursor = e->NewWalCursor(from);
    if (!cursor.ok()) return cursor.status();
    std::vector<engine::Batch> out;
    uint64_t bytes = 0;
    while (out.size() < max && bytes < schema::MAX_SCAN_REPLY_BYTES) {
      auto next = (*cursor)->Next();
      if (!next.ok()) {
        if (out.empty()) return next.status();
        break;  // the batches before it are answered; the next read names the problem
      }
      if (!next->has_value()) break;
      bytes += (*next)->data.size();
      out.push_back(std::move(**next));
    }
    return out;
  });
  return read.then([this, reply](absl::StatusOr<std::vector<engine::Batch>> batches) mutable {
    ToCapnp(batches.status(), reply.initError());
    if (!batches.ok()) return;
    auto list = reply.initBatches(batches->size());
    engine::SequenceNumber latest = engine_.LatestSequence();
    for (size_t i = 0; i < batches->size(); ++i) {
      const engine::Batch& b = (*batches)[i];
      list[i].setFirstSeq(b.first_seq);
      list[i].setCount(b.count);
      // The epoch this node's history puts the batch in (its role's view of the history).
      list[i].setEpoch(node_.role().ReadPositionFor(b.first_seq, latest).token_seq_epoch);
      list[i].setData(ToData(b.data));
    }
  });
}

void ClientService::Status(schema::NodeStatus::Builder st) {
  const NodeServerOptions& options = node_.options();
  const ConnectionStats& stats = node_.connection_stats();
  st.setNode(options.node_id);
  st.setCluster(options.cluster);
  st.setRole(node_.role().name());
  st.setLatestSeq(engine_.LatestSequence());
  st.setDataBytes(engine_.ApproximateSizeBytes());
  st.setListen(options.listen);
  st.setWritesAccepted(writes_accepted_);
  st.setWriteGroups(write_groups_);
  st.setClientConnections(stats.clients);
  st.setPeerConnections(stats.peers);
  st.setConnectionsRefused(stats.refused);
  st.setAcceptFailures(stats.accept_failures);
  st.setAuthFailures(stats.auth_failures);
  if (absl::Status e = engine_.StorageError(); !e.ok()) st.setStorageError(e.message().data());
  const replication::CommitWaitOptions& commit = options.commit;
  st.setReplicationMode(replication::ModeName(commit.cluster.mode));
  st.setReplicationAcks(commit.cluster.mode == replication::ReplicationMode::kSemiSync
                            ? commit.cluster.acks
                            : 0);
  st.setAckLevel(replication::AckLevelName(commit.cluster.level));
  st.setSyncTimeoutMs(commit.timeout_ms);
  st.setOnSyncTimeout(replication::PolicyName(commit.on_timeout));
  st.setDegradedForMs(-1);
  uint64_t wal_bytes = 0;
  for (const engine::WalFileSpan& f : node_.wal_files()) wal_bytes += f.bytes;
  st.setWalBytes(wal_bytes);
  st.setSnapshotsServing(static_cast<uint32_t>(node_.snapshots().serving()));
  const replication::Membership& membership = node_.membership();
  st.setMembershipVersion(membership.version);
  ToCapnp(membership.members, st.initMembers(membership.members.size()));
  node_.role().FillStatus(st);
}

void ClientService::ChangeMembership(schema::MembershipRequest::Reader request,
                                     schema::MembershipReply::Builder reply) {
  replication::MembershipChange change;
  switch (request.getOp()) {
    case schema::MembershipOp::ADD_LEARNER: change.op = replication::MembershipOp::kAddLearner; break;
    case schema::MembershipOp::REMOVE: change.op = replication::MembershipOp::kRemove; break;
    default:
      ToCapnp(absl::InvalidArgumentError(absl::StrCat(
                  "unknown membership change ", static_cast<int>(request.getOp()),
                  "; the client is newer than this node")),
              reply.initError());
      return;
  }
  change.id = request.getId();
  change.address = request.getAddress();
  absl::StatusOr<replication::Membership> done = node_.role().ChangeMembership(change);
  ToCapnp(done.status(), reply.initError());
  if (!done.ok()) return;
  reply.setVersion(done->version);
  ToCapnp(done->members, reply.initMembers(done->members.size()));
}

kj::Promise<void> ClientService::Handover(schema::HandoverRequest::Reader request,
                                          schema::HandoverReply::Builder reply) {
  uint32_t timeout_ms = request.getTimeoutMs() == 0 ? kDefaultHandoverTimeoutMs
                                                    : request.getTimeoutMs();
  return node_.role()
      .HandOver(std::string(request.getTarget().cStr()), timeout_ms)
      .then([reply](HandoverOutcome outcome) mutable {
        ToCapnp(outcome.status, reply.initError());
        reply.setLeader(outcome.leader);
        reply.setEpoch(outcome.epoch);
      });
}

}  // namespace walship::rpc
