// The write path of the client API (rpc/client_service.h): checks, group commit, conditional
// writes, and the wait until a write is as durable as it asked (the leader's own fsync and its
// followers).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "replication/clock.h"
#include "rpc/client_service.h"
#include "rpc/convert.h"
#include "rpc/coordinator.h"
#include "rpc/node.h"
#include "rpc/wal_sync.h"

namespace walship::rpc {
namespace {

using engine::SequenceNumber;

// A group of more bytes is written on the node's thread, never on the loop: a large write()
// may wait for the kernel to write back dirty pages (seconds on a slow disk), and the loop
// must go on answering heartbeats and reading requests meanwhile.
constexpr size_t kMaxInlineWriteBytes = 1 << 20;

// Why `condition` does not hold once `written` (the ops of the group before it) are applied
// over the database, or OK when it holds.
absl::Status CheckCondition(engine::Engine& engine, const std::vector<engine::WriteOp>& written,
                            const engine::Condition& condition) {
  std::optional<std::string> now;
  bool known = false;
  for (auto op = written.rbegin(); op != written.rend() && !known; ++op) {
    switch (op->type) {
      case engine::OpType::kPut:
        if (op->key == condition.key) {
          now = op->value;
          known = true;
        }
        break;
      case engine::OpType::kDelete:
        known = op->key == condition.key;
        break;
      case engine::OpType::kDeleteRange:
        known = op->key <= condition.key && condition.key < op->value;
        break;
    }
  }
  if (!known) {
    absl::StatusOr<std::string> value = engine.Get(condition.key, engine::ReadOptions{});
    if (value.ok()) {
      now = std::move(*value);
    } else if (!absl::IsNotFound(value.status())) {
      return NotWritten(absl::UnavailableError(
          absl::StrCat("reading the condition's key failed: ", value.status().message())));
    }
  }
  if (now == condition.value) return absl::OkStatus();
  if (!condition.value.has_value()) {
    return ConditionFailedError(
        "condition failed: the key exists (the write asked for it "
        "to be absent); nothing was written");
  }
  return ConditionFailedError(
      now.has_value() ? absl::StrCat("condition failed: the key holds another value (", now->size(),
                                     " bytes); nothing was written")
                      : std::string("condition failed: the key is absent; nothing was written"));
}

}  // namespace

// Checks one client write and queues it for the next group commit; the promise resolves once
// it is written (or at once with the error that refused it).
kj::Promise<WriteOutcome> ClientService::Enqueue(std::vector<engine::WriteOp> ops,
                                                 absl::StatusOr<WriteSpec> spec) {
  kj::Promise<WriteOutcome> outcome = EnqueueChecked(std::move(ops), std::move(spec));
  if (node_.coordinator() == nullptr) return outcome;
  return outcome.then([this](WriteOutcome o) { return FenceByKey(std::move(o)); });
}

// With the vote, a voter that elected a new leader acknowledges nothing more of the old
// epoch, so a write the old leader took under its lease but answers later (a stalled fsync, a
// slow follower) was either acknowledged by voters that still followed it or not at all. With
// etcd nothing fences the followers: the write is answered as in doubt once this node's hold
// on the key ended, since the next leader may not hold it.
WriteOutcome ClientService::FenceByKey(WriteOutcome written) const {
  const Coordinator& c = *node_.coordinator();
  if (!written.status.ok() || c.HoldsKey()) return written;
  written.status = NotReplicatedError(absl::StrCat(
      "written here at seq ", written.last_seq, " in epoch ", written.epoch, ", but this "
      "node's hold on the leader key in etcd ended before the write was answered (",
      c.Describe(), "): the next leader may not hold it; read it back from the leader to learn "
      "its outcome"));
  written.degraded = false;
  return written;
}

kj::Promise<WriteOutcome> ClientService::EnqueueChecked(std::vector<engine::WriteOp> ops,
                                                        absl::StatusOr<WriteSpec> spec) {
  auto fail = [](absl::Status s) -> kj::Promise<WriteOutcome> {
    return WriteOutcome{std::move(s)};
  };
  if (absl::Status refused = node_.role().WriteRefusal(); !refused.ok()) return fail(refused);
  if (!spec.ok()) return fail(spec.status());
  if (absl::Status s = node_.role().CheckDurability(spec->need); !s.ok()) return fail(s);
  if (ops.empty()) return fail(absl::InvalidArgumentError("a write needs at least one op"));
  for (const engine::WriteOp& op : ops) {
    if (op.type == engine::OpType::kDeleteRange && op.key > op.value) {
      return fail(absl::InvalidArgumentError("delete range: begin key sorts after end key"));
    }
  }
  const std::string& id = spec->request_id;
  if (id.empty()) return Queue(std::move(ops), std::move(*spec));
  if (writing_ids_.count(id) > 0) {
    return fail(NotWritten(absl::UnavailableError(
        "a write with this request id is being written now; ask again for its outcome")));
  }
  const int64_t now = replication::RealClock()->NowMicros();
  engine::ReadOptions cached;
  cached.cache_only = true;
  absl::StatusOr<std::optional<engine::RequestOutcome>> first =
      engine_.FindRequest(id, now, cached);
  if (!absl::IsResourceExhausted(first.status())) {
    return Admit(std::move(ops), std::move(*spec), std::move(first));
  }
  // The answer needs the disk: looked up on the node's thread, as a read would be (the loop
  // never waits for the disk). The id is held meanwhile: a retry arriving now asks again.
  writing_ids_.insert(id);
  auto paf = kj::newPromiseAndFulfiller<WriteOutcome>();
  tasks_.add(
      node_.node_pool()
          .Run([e = &engine_, id, now]() { return e->FindRequest(id, now); })
          .then([](absl::StatusOr<std::optional<engine::RequestOutcome>> r) { return r; },
                [](kj::Exception&& e) -> absl::StatusOr<std::optional<engine::RequestOutcome>> {
                  return absl::UnavailableError(
                      absl::StrCat("node work queue: ", e.getDescription().cStr()));
                })
          .then([this, ops = std::move(ops), spec = std::move(*spec), done = kj::mv(paf.fulfiller)](
                    absl::StatusOr<std::optional<engine::RequestOutcome>> r) mutable {
            writing_ids_.erase(spec.request_id);
            return Admit(std::move(ops), std::move(spec), std::move(r))
                .then(
                    [done = kj::mv(done)](WriteOutcome o) mutable { done->fulfill(std::move(o)); });
          }));
  return kj::mv(paf.promise);
}

// A write with a request id once it is looked up: answered with the first outcome of the id,
// or queued.
kj::Promise<WriteOutcome> ClientService::Admit(
    std::vector<engine::WriteOp> ops, WriteSpec spec,
    absl::StatusOr<std::optional<engine::RequestOutcome>> first) {
  if (!first.ok()) {
    return WriteOutcome{NotWritten(absl::UnavailableError(absl::StrCat(
        "cannot look up the request id: ", first.status().message(), "; nothing was written")))};
  }
  if (first->has_value()) return AnswerAgain(**first, std::move(spec));
  return Queue(std::move(ops), std::move(spec));
}

// Queues a checked write for the next group commit, unless the queue is full.
kj::Promise<WriteOutcome> ClientService::Queue(std::vector<engine::WriteOp> ops, WriteSpec spec) {
  const NodeServerOptions& options = node_.options();
  if (pending_.size() >= options.max_pending_writes) {
    return WriteOutcome{NotWritten(absl::UnavailableError(absl::StrCat(
        "write queue full (", options.max_pending_writes, " writes waiting); retry")))};
  }
  uint64_t bytes = 0;
  for (const engine::WriteOp& op : ops) bytes += op.key.size() + op.value.size();
  // Bounded in bytes too; a write alone is always taken (it is at most a request).
  if (!pending_.empty() && pending_bytes_ + bytes > options.max_pending_write_bytes) {
    return WriteOutcome{NotWritten(absl::UnavailableError(absl::StrCat(
        "write queue full (", pending_bytes_, " bytes waiting, max_pending_write_bytes ",
        options.max_pending_write_bytes, "); retry")))};
  }
  if (!spec.request_id.empty()) writing_ids_.insert(spec.request_id);
  pending_bytes_ += bytes;
  auto paf = kj::newPromiseAndFulfiller<WriteOutcome>();
  pending_.push_back(PendingWrite{std::move(ops), bytes, std::move(spec), kj::mv(paf.fulfiller)});
  ScheduleFlush();
  return kj::mv(paf.promise);
}

// Group commit: writes that arrive together (in the same event-loop turn) become one RocksDB
// write and one WAL record. evalLast runs when the loop has nothing else ready.
void ClientService::ScheduleFlush() {
  if (flush_scheduled_ || writer_busy_ || pending_.empty() || writes_held_) return;
  flush_scheduled_ = true;
  tasks_.add(kj::evalLast([this]() {
    flush_scheduled_ = false;
    FlushWrites();
  }));
}

void ClientService::HoldWrites(bool hold) {
  writes_held_ = hold;
  if (!hold) ScheduleFlush();
}

bool ClientService::FlushPending() {
  if (pending_.empty() || writer_busy_ || writes_held_) return false;
  FlushWrites();
  return true;
}

void ClientService::FailPending(const absl::Status& why) {
  for (PendingWrite& w : pending_) {
    writing_ids_.erase(w.spec.request_id);
    w.fulfiller->fulfill(WriteOutcome{why});
  }
  pending_.clear();
  pending_bytes_ = 0;
}

void ClientService::FlushWrites() {
  if (writer_busy_ || pending_.empty() || writes_held_) return;
  // The role may have stopped taking writes since these were queued (a handover).
  if (absl::Status refused = node_.role().WriteRefusal(); !refused.ok()) {
    FailPending(refused);
    return;
  }
  const NodeServerOptions& options = node_.options();
  std::vector<GroupMember> group;
  std::vector<engine::WriteOp> ops;
  size_t bytes = 0;
  bool conditional = false;
  // A group stays within max_write_group_ops and max_write_group_bytes, counting the write
  // it would add; only a single write may be larger (up to a request, 64 MiB), so one WAL
  // record is never larger than the largest request and the peers can always read it.
  while (!pending_.empty()) {
    PendingWrite& w = pending_.front();
    if (!group.empty() && (ops.size() + w.ops.size() > options.max_write_group_ops ||
                           bytes + w.bytes > options.max_write_group_bytes)) {
      break;
    }
    conditional |= w.spec.condition.has_value();
    group.push_back(GroupMember{w.ops.size(), std::move(w.spec), kj::mv(w.fulfiller)});
    bytes += w.bytes;
    pending_bytes_ -= w.bytes;
    for (engine::WriteOp& op : w.ops) ops.push_back(std::move(op));
    pending_.pop_front();
  }
  // The write time travels inside the batch (a LogData record), so followers and the
  // leader's status know it for batches read back from the WAL too.
  int64_t write_time_us = replication::RealClock()->NowMicros();
  std::vector<engine::RequestRecord> requests = RequestsOf(group);
  if (conditional) {
    FlushConditional(std::move(group), std::move(ops), write_time_us);
    return;
  }
  if (bytes <= kMaxInlineWriteBytes) {
    // On the loop thread unless RocksDB would stall (then it answers at once). With
    // fsync_writes the fsync comes after (LocalSync), while the batch is already shipped.
    engine::WriteOptions wo;
    wo.no_slowdown = true;
    wo.write_time_us = write_time_us;
    wo.requests = requests;
    absl::StatusOr<engine::Batch> r = engine_.Write(ops, wo);
    if (!absl::IsResourceExhausted(r.status())) {
      Complete(group, std::move(r), write_time_us);
      return;
    }
  }
  writer_busy_ = true;
  engine::WriteOptions wo;
  wo.write_time_us = write_time_us;
  wo.requests = std::move(requests);
  tasks_.add(node_.node_pool()
                 .Run([e = &engine_, ops = std::move(ops), wo]() { return e->Write(ops, wo); })
                 .then([](absl::StatusOr<engine::Batch> r) { return r; },
                       [](kj::Exception&& e) -> absl::StatusOr<engine::Batch> {
                         // Never expected (the node's queue is sized for its own work); if it
                         // comes, the group fails and the writer is free again: nothing wedges.
                         return absl::InternalError(
                             absl::StrCat("node work queue: ", e.getDescription().cStr()));
                       })
                 .then([this, group = std::move(group),
                        write_time_us](absl::StatusOr<engine::Batch> r) mutable {
                   writer_busy_ = false;
                   Complete(group, std::move(r), write_time_us);
                 }));
}

// A group with conditional writes goes to the writer thread whole: each condition is checked
// there against the database and the group's earlier writes, and the writes whose conditions
// hold are written as one batch. No other write runs meanwhile (the writer is busy), so each
// check and its write are one atomic step.
void ClientService::FlushConditional(std::vector<GroupMember> group,
                                     std::vector<engine::WriteOp> ops, int64_t write_time_us) {
  std::vector<size_t> counts;
  std::vector<std::optional<engine::Condition>> ifs;
  std::vector<std::string> ids;
  for (const GroupMember& m : group) {
    counts.push_back(m.ops);
    ifs.push_back(m.spec.condition);
    ids.push_back(m.spec.request_id);
  }
  engine::WriteOptions wo;
  wo.write_time_us = write_time_us;
  writer_busy_ = true;
  tasks_.add(
      node_.node_pool()
          .Run([e = &engine_, ops = std::move(ops), counts = std::move(counts),
                ifs = std::move(ifs), ids = std::move(ids), epoch = node_.role().WriteEpoch(),
                wo]() { return WriteConditional(*e, ops, counts, ifs, ids, epoch, wo); })
          .then([](ConditionalGroup g) { return g; },
                [n = group.size()](kj::Exception&& e) {
                  ConditionalGroup g;
                  g.refused.assign(n, absl::InternalError(absl::StrCat("node work queue: ",
                                                                       e.getDescription().cStr())));
                  return g;
                })
          .then([this, group = std::move(group), write_time_us](ConditionalGroup g) mutable {
            writer_busy_ = false;
            std::vector<GroupMember> written;
            for (size_t i = 0; i < group.size(); ++i) {
              if (g.refused[i].ok()) {
                written.push_back(std::move(group[i]));
              } else {
                writing_ids_.erase(group[i].spec.request_id);
                group[i].fulfiller->fulfill(WriteOutcome{g.refused[i]});
              }
            }
            if (!g.batch.has_value()) {
              ScheduleFlush();
              return;
            }
            Complete(written, std::move(*g.batch), write_time_us);
          }));
}

ClientService::ConditionalGroup ClientService::WriteConditional(
    engine::Engine& engine, const std::vector<engine::WriteOp>& ops,
    const std::vector<size_t>& counts, const std::vector<std::optional<engine::Condition>>& ifs,
    const std::vector<std::string>& ids, uint64_t epoch, engine::WriteOptions wo) {
  ConditionalGroup g;
  std::vector<engine::WriteOp> kept;
  size_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    auto first = ops.begin() + static_cast<std::ptrdiff_t>(at);
    at += counts[i];
    absl::Status s = ifs[i].has_value() ? CheckCondition(engine, kept, *ifs[i]) : absl::OkStatus();
    g.refused.push_back(s);
    if (!s.ok()) continue;  // nothing written: a retry with its id is checked again
    if (!ids[i].empty()) wo.requests.push_back({ids[i], kept.size(), counts[i], epoch});
    kept.insert(kept.end(), first, first + static_cast<std::ptrdiff_t>(counts[i]));
  }
  if (!kept.empty()) g.batch = engine.Write(kept, wo);
  return g;
}

// `write_time_us` is the time FlushWrites put into the batch.
void ClientService::Complete(std::vector<GroupMember>& group, absl::StatusOr<engine::Batch> r,
                             int64_t write_time_us) {
  ForgetWriting(group);  // written, with their ids (FindRequest finds them), or not at all
  if (!r.ok()) {
    // While RocksDB refuses writes after a storage error, that error says why (and the
    // node's storage check has logged it once).
    if (absl::Status e = engine_.StorageError(); !e.ok()) {
      r = e;
      spdlog::debug("write of {} requests refused: {}", group.size(), e.ToString());
    } else {
      spdlog::error("write of {} requests failed: {}", group.size(), r.status().ToString());
    }
    for (GroupMember& m : group) m.fulfiller->fulfill(WriteOutcome{r.status()});
  } else {
    SequenceNumber seq = r->first_seq;
    SequenceNumber last = r->last_seq();
    node_.role().OnWritten(std::move(*r), write_time_us);  // shipped from here on
    const bool local_sync = node_.options().fsync_writes;
    const uint64_t epoch = node_.role().WriteEpoch();
    for (GroupMember& m : group) {
      WriteOutcome written{absl::OkStatus(), seq, seq + m.ops - 1, false, epoch};
      seq += m.ops;
      if (m.spec.need.mode == replication::ReplicationMode::kAsync && !local_sync) {
        m.fulfiller->fulfill(std::move(written));
      } else {
        AwaitDurable(m, std::move(written), local_sync ? last : 0);
      }
    }
    writes_accepted_ += group.size();
    ++write_groups_;
    reads_.Poke();
  }
  ScheduleFlush();
}

std::vector<engine::RequestRecord> ClientService::RequestsOf(
    const std::vector<GroupMember>& group) const {
  std::vector<engine::RequestRecord> requests;
  const uint64_t epoch = node_.role().WriteEpoch();
  uint64_t at = 0;
  for (const GroupMember& m : group) {
    if (!m.spec.request_id.empty()) requests.push_back({m.spec.request_id, at, m.ops, epoch});
    at += m.ops;
  }
  return requests;
}

void ClientService::ForgetWriting(const std::vector<GroupMember>& group) {
  for (const GroupMember& m : group) {
    if (!m.spec.request_id.empty()) writing_ids_.erase(m.spec.request_id);
  }
}

// The first outcome of a request id, answered as a write would be once it is as durable as
// this request asks (a retry after a lost answer waits for what the first attempt waited
// for; on a leader elected since, for its own followers).
kj::Promise<WriteOutcome> ClientService::AnswerAgain(const engine::RequestOutcome& first,
                                                     WriteSpec spec) {
  WriteOutcome again{absl::OkStatus(), first.first_seq, first.last_seq, false, first.epoch, true};
  const bool local_sync = node_.options().fsync_writes;
  if (spec.need.mode == replication::ReplicationMode::kAsync && !local_sync) return again;
  auto paf = kj::newPromiseAndFulfiller<WriteOutcome>();
  GroupMember m{first.last_seq - first.first_seq + 1, std::move(spec), kj::mv(paf.fulfiller)};
  AwaitDurable(m, again, local_sync ? first.last_seq : 0);
  return kj::mv(paf.promise);
}

// A write is answered once it is as durable as asked: on the leader's disk when
// fsync_writes is on (`synced_through` > 0: the group's last sequence number), and on its
// followers as its mode asks. Both run at once: the batch was shipped before the leader's own
// fsync began, as PostgreSQL's walsender does. Why not, when not (its first and last sequence
// numbers go with the error too).
void ClientService::AwaitDurable(GroupMember& m, WriteOutcome written,
                                 SequenceNumber synced_through) {
  kj::Promise<absl::Status> local =
      synced_through == 0 ? kj::Promise<absl::Status>(absl::OkStatus()) : LocalSync(synced_through);
  kj::Promise<ReplicationOutcome> followers =
      m.spec.need.mode == replication::ReplicationMode::kAsync
          ? kj::Promise<ReplicationOutcome>(ReplicationOutcome{})
          : node_.role().AwaitReplicated(written.last_seq, m.spec.need, m.spec.pinned);
  tasks_.add(followers
                 .then([local = kj::mv(local)](ReplicationOutcome r) mutable {
                   return local.then([r = std::move(r)](absl::Status s) mutable {
                     if (!s.ok()) r.status = s;
                     return r;
                   });
                 })
                 .then([written, done = kj::mv(m.fulfiller)](ReplicationOutcome r) mutable {
                   written.status = std::move(r.status);
                   written.degraded = r.degraded;
                   done->fulfill(std::move(written));
                 }));
}

// Group fsync on the leader: one fsync of the WAL at a time, covering everything written
// before it began; writes arriving while it runs share the next.
kj::Promise<absl::Status> ClientService::LocalSync(SequenceNumber seq) {
  if (seq <= synced_) return absl::OkStatus();
  auto paf = kj::newPromiseAndFulfiller<absl::Status>();
  sync_waiters_.emplace_back(seq, kj::mv(paf.fulfiller));
  if (!sync_running_) StartLocalSync();
  return kj::mv(paf.promise);
}

void ClientService::StartLocalSync() {
  sync_running_ = true;
  SequenceNumber target = engine_.LatestSequence();
  tasks_.add(SyncWalTimed(node_, "the leader's writes").then([this, target](absl::Status s) {
    sync_running_ = false;
    if (s.ok()) synced_ = std::max(synced_, target);
    std::deque<std::pair<SequenceNumber, kj::Own<kj::PromiseFulfiller<absl::Status>>>> still;
    for (auto& [seq, done] : sync_waiters_) {
      if (!s.ok()) {
        done->fulfill(NotReplicatedError(
            absl::StrCat("written at seq ", seq, " but the leader's fsync failed (", s.message(),
                         "): whether it survives a power loss is in doubt")));
      } else if (seq <= synced_) {
        done->fulfill(absl::OkStatus());
      } else {
        still.emplace_back(seq, kj::mv(done));
      }
    }
    sync_waiters_ = std::move(still);
    if (!sync_waiters_.empty()) StartLocalSync();
  }));
}

// The replication a write asks for, resolved against the cluster's configured one.
absl::StatusOr<WriteSpec> ClientService::SpecOf(schema::WriteRequest::Reader request) const {
  using replication::AckLevel;
  using replication::ReplicationMode;
  const replication::Durability& cluster = node_.options().commit.cluster;
  WriteSpec spec;
  spec.need = cluster;
  const uint32_t acks = request.getAcks();
  spec.pinned = request.getMode() != schema::WriteMode::CLUSTER_DEFAULT || acks != 0 ||
                request.getLevel() != schema::AckLevel::CLUSTER_DEFAULT;
  switch (request.getMode()) {
    case schema::WriteMode::CLUSTER_DEFAULT:
      if (acks > 0) spec.need.mode = ReplicationMode::kSemiSync;
      break;
    case schema::WriteMode::ASYNC:
      spec.need.mode = ReplicationMode::kAsync;
      break;
    case schema::WriteMode::SEMI_SYNC:
      spec.need.mode = ReplicationMode::kSemiSync;
      break;
    case schema::WriteMode::SYNC:
      spec.need.mode = ReplicationMode::kSync;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown write mode ",
                                                     static_cast<int>(request.getMode()),
                                                     "; the client is newer "
                                                     "than this node"));
  }
  if (acks > 0 && spec.need.mode != ReplicationMode::kSemiSync) {
    return absl::InvalidArgumentError(
        absl::StrCat("acks (", acks, ") applies to semi-sync writes; this write asks for ",
                     replication::ModeName(spec.need.mode)));
  }
  if (acks > 0) {
    spec.need.acks = acks;
  } else if (cluster.mode != ReplicationMode::kSemiSync) {
    spec.need.acks = 1;  // semi-sync asked of an async or sync cluster: one follower
  }
  switch (request.getLevel()) {
    case schema::AckLevel::CLUSTER_DEFAULT:
      break;
    case schema::AckLevel::RECEIVED:
      spec.need.level = AckLevel::kReceived;
      break;
    case schema::AckLevel::FLUSHED:
      spec.need.level = AckLevel::kFlushed;
      break;
    case schema::AckLevel::APPLIED:
      spec.need.level = AckLevel::kApplied;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown ack level ",
                                                     static_cast<int>(request.getLevel()),
                                                     "; the client is newer "
                                                     "than this node"));
  }
  if (request.hasRequestId()) {
    spec.request_id = ToString(request.getRequestId());
    if (spec.request_id.size() > engine::kMaxRequestIdBytes) {
      return absl::InvalidArgumentError(absl::StrCat("a request id of ", spec.request_id.size(),
                                                     " bytes; at most ", engine::kMaxRequestIdBytes,
                                                     " are taken"));
    }
  }
  if (request.getHasCondition()) {
    auto c = request.getCondition();
    engine::Condition condition;
    condition.key = ToString(c.getKey());
    if (c.isValue()) condition.value = ToString(c.getValue());
    spec.condition = std::move(condition);
  }
  return spec;
}

}  // namespace walship::rpc
