// The client API of a node (rpc/client.capnp): writes with group commit, reads from memory on
// the loop or at a snapshot on a worker, scans within the node's scan budget, status, and the
// operator's handover request. Writes and reads are admitted by the node's current role.
// The requests and reads are in client_service.cc; the write path (checks, group commit,
// conditions, waiting until a write is as durable as it asked) in client_writes.cc.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "replication/durability.h"
#include "rpc/client.capnp.h"
#include "rpc/metrics.h"
#include "rpc/read_gate.h"

namespace walship::rpc {

class Node;
class VerifyService;

struct WriteOutcome {
  absl::Status status;
  engine::SequenceNumber first_seq = 0;  // also with a not-replicated error
  engine::SequenceNumber last_seq = 0;
  bool degraded = false;
  uint64_t epoch = 0;      // the leader's epoch it was written in
  bool duplicate = false;  // its request id named a write made before: that write's outcome
};

// What one client write asks for beyond its ops.
struct WriteSpec {
  replication::Durability need;  // resolved against the cluster's
  bool pinned = false;           // it named its own mode: never degraded
  std::optional<engine::Condition> condition;
  std::string request_id;  // empty: none
};

class ClientService final : public kj::TaskSet::ErrorHandler {
 public:
  explicit ClientService(Node& node);
  ~ClientService();

  // Answers one client request into `reply`, which the caller keeps until the promise
  // resolves. `request` is read before Serve returns and may be dropped then.
  kj::Promise<void> Serve(schema::Request::Reader request, schema::Reply::Builder reply);

  // The requests Serve always hands to a worker thread (large scans). They read at a
  // snapshot of the turn in which they came; the connection still serves the writes sent
  // after them only once they have read, which keeps the reply order simple.
  static bool ServesOnWorker(schema::Request::Reader request);

  // The node's budget for scan replies being built: each scan reserves maxScanReplyBytes
  // from when it is read until its reply is built (then its connection's 64 MiB bound holds
  // the reply until it is written); past the budget scans are refused `unavailable`. So scans
  // in progress hold at most this much memory (plus, for each, the one key and value that
  // crosses its bound), and a client that never reads holds none of it.
  static constexpr uint64_t kMaxScanReplyBytesReserved = 8 * schema::MAX_SCAN_REPLY_BYTES;
  bool ReserveScanReply();
  void ReleaseScanReply() { scan_reply_bytes_reserved_ -= schema::MAX_SCAN_REPLY_BYTES; }

  // Group commit, as the leader's role needs it: whether no write is queued or being written;
  // runs the queued group commit now (true when one ran); refuses every queued write.
  bool writes_idle() const { return pending_.empty() && !writer_busy_; }
  bool writer_busy() const { return writer_busy_; }
  // While held, queued writes wait (they are not refused) and no new group starts; a group
  // being written finishes (walship verify; a handover waits for the hold to end).
  void HoldWrites(bool hold);
  bool FlushPending();
  void FailPending(const absl::Status& why);

  void taskFailed(kj::Exception&& e) override;

  // Reads waiting for a position or a lag bound; poked when either may have moved.
  ReadGate& reads() { return reads_; }

  // The snapshot a read reads at, and its position (the reply's token).
  struct ReadAt {
    std::shared_ptr<const engine::Snapshot> snapshot;
    engine::SequenceNumber seq = 0;
    uint64_t epoch = 0;
  };
  ReadAt TakeSnapshot();

  // The node's status (walship status; /metrics).
  void Status(schema::NodeStatus::Builder st);
  // Requests answered since the node started, by result (/metrics).
  const RequestCounters& counters() const { return counters_; }

 private:
  struct PendingWrite {
    std::vector<engine::WriteOp> ops;
    uint64_t bytes = 0;  // of its keys and values
    WriteSpec spec;
    kj::Own<kj::PromiseFulfiller<WriteOutcome>> fulfiller;
  };
  struct GroupMember {
    size_t ops = 0;
    WriteSpec spec;
    kj::Own<kj::PromiseFulfiller<WriteOutcome>> fulfiller;
  };
  // A group with conditional writes, checked and written on the writer thread: `refused[i]`
  // is why member i was not written (its condition did not hold), OK when its ops are in
  // `batch`. `batch` is unset when no member was written.
  struct ConditionalGroup {
    std::optional<absl::StatusOr<engine::Batch>> batch;
    std::vector<absl::Status> refused;
  };

  kj::Promise<void> WriteMany(schema::WriteManyRequest::Reader request,
                              schema::Reply::Builder reply, int64_t start_us);
  kj::Promise<void> Get(schema::GetRequest::Reader request, schema::GetReply::Builder reply);
  kj::Promise<void> Scan(schema::ScanRequest::Reader request, schema::Reply::Builder reply);
  // The batches of this node's WAL from request.fromSeq on, read on a client worker.
  kj::Promise<void> WalRead(schema::WalReadRequest::Reader request,
                            schema::WalReadReply::Builder reply);
  kj::Promise<void> Handover(schema::HandoverRequest::Reader request,
                             schema::HandoverReply::Builder reply);
  void ChangeMembership(schema::MembershipRequest::Reader request,
                        schema::MembershipReply::Builder reply);
  // A read's admission now: the role's refusal, then its token and lag bound (ReadGate);
  // std::nullopt when it must wait for them.
  std::optional<absl::Status> AdmitRead(const replication::ReadNeeds& needs);
  absl::StatusOr<WriteSpec> SpecOf(schema::WriteRequest::Reader request) const;
  kj::Promise<WriteOutcome> Enqueue(std::vector<engine::WriteOp> ops,
                                    absl::StatusOr<WriteSpec> spec);
  kj::Promise<WriteOutcome> EnqueueChecked(std::vector<engine::WriteOp> ops,
                                           absl::StatusOr<WriteSpec> spec);
  // With etcd choosing the leader: a write answered only while this node still holds the key.
  WriteOutcome FenceByKey(WriteOutcome written) const;
  kj::Promise<WriteOutcome> Admit(std::vector<engine::WriteOp> ops, WriteSpec spec,
                                  absl::StatusOr<std::optional<engine::RequestOutcome>> first);
  kj::Promise<WriteOutcome> Queue(std::vector<engine::WriteOp> ops, WriteSpec spec);
  // A write whose request id names a write made before: answered with that write's outcome
  // once it is as durable as this one asks.
  kj::Promise<WriteOutcome> AnswerAgain(const engine::RequestOutcome& first, WriteSpec spec);
  // The request records of a group's members that carry an id (their ops in order).
  std::vector<engine::RequestRecord> RequestsOf(const std::vector<GroupMember>& group) const;
  void ForgetWriting(const std::vector<GroupMember>& group);
  static ConditionalGroup WriteConditional(engine::Engine& engine,
                                           const std::vector<engine::WriteOp>& ops,
                                           const std::vector<size_t>& counts,
                                           const std::vector<std::optional<engine::Condition>>& ifs,
                                           const std::vector<std::string>& ids, uint64_t epoch,
                                           engine::WriteOptions wo);
  void AwaitDurable(GroupMember& m, WriteOutcome written, engine::SequenceNumber synced_through);
  kj::Promise<absl::Status> LocalSync(engine::SequenceNumber seq);
  void StartLocalSync();
  void FlushConditional(std::vector<GroupMember> group, std::vector<engine::WriteOp> ops,
                        int64_t write_time_us);
  void ScheduleFlush();
  void FlushWrites();
  void Complete(std::vector<GroupMember>& group, absl::StatusOr<engine::Batch> r,
                int64_t write_time_us);

  Node& node_;
  engine::Engine& engine_;
  std::deque<PendingWrite> pending_;
  uint64_t pending_bytes_ = 0;  // of the keys and values in pending_
  bool flush_scheduled_ = false;
  bool writer_busy_ = false;  // a write group is on a worker; later groups wait
  bool writes_held_ = false;  // HoldWrites
  uint64_t writes_accepted_ = 0;
  RequestCounters counters_;
  uint64_t write_groups_ = 0;
  uint64_t scan_reply_bytes_reserved_ = 0;  // ReserveScanReply
  // Request ids of the writes queued or being written: a retry that comes meanwhile is told
  // to ask again (once written, FindRequest answers it).
  std::set<std::string> writing_ids_;
  // fsync_writes: the leader's WAL is fsynced through synced_; writes wait for it in order.
  engine::SequenceNumber synced_ = 0;
  bool sync_running_ = false;
  std::deque<std::pair<engine::SequenceNumber, kj::Own<kj::PromiseFulfiller<absl::Status>>>>
      sync_waiters_;
  ReadGate reads_;
  std::unique_ptr<VerifyService> verify_;  // `walship verify`
  kj::TaskSet tasks_;
};

}  // namespace walship::rpc
