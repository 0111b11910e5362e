#include "rpc/node_server.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "replication/follower.h"
#include "replication/node_state.h"
#include "replication/follower_link.h"
#include "replication/shipper.h"
#include "rpc/client.capnp.h"
#include "rpc/buffered_stream.h"
#include "rpc/convert.h"
#include "rpc/fd_stream.h"
#include "rpc/wire_limits.h"
#include "rpc/worker_pool.h"

namespace walship::rpc {
namespace {

using engine::SequenceNumber;
using replication::Ack;
using replication::Ship;

// Scans up to this size run on the loop thread; larger ones go to a worker.
constexpr uint32_t kInlineScanLimit = 1000;
constexpr uint32_t kMaxScanLimit = 100000;
constexpr uint32_t kRetireConnectionMs = 5000;
constexpr size_t kMaxPipelineWrites = 10000;
constexpr uint32_t kWalTrimIntervalMs = 1000;
constexpr uint32_t kStorageCheckIntervalMs = 1000;
constexpr uint32_t kMaxResumeIntervalMs = 30000;
// The node's own work queued at once: one write group, one apply, one WAL trim and one fsync
// at most; the bound leaves room to spare.
constexpr size_t kMaxNodeTasks = 16;
// WAL reads queued at once: one per follower at most (max_followers is at most 64).
constexpr size_t kMaxWalReads = 128;
// A WAL read takes a window's worth of messages ahead, but no more than this per follower.
constexpr uint64_t kMaxWalReadBytes = 64ull << 20;
// Words of a client reply's first segment: enough for a write's (an Error and two numbers);
// larger replies grow more segments.
constexpr capnp::MessageSize kSmallReply{32, 0};

int64_t NowUs() { return replication::RealClock()->NowMicros(); }

// The bootstrap capability of the other side of a two-party RPC connection.
capnp::Capability::Client Bootstrap(capnp::RpcSystem<capnp::rpc::twoparty::VatId>& rpc) {
  capnp::MallocMessageBuilder message(8);
  auto vat = message.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  return rpc.bootstrap(vat);
}

using SubscribeContext =
    capnp::CallContext<schema::PeerService::SubscribeParams, schema::PeerService::SubscribeResults>;

struct WriteOutcome {
  absl::Status status;
  SequenceNumber first_seq = 0;
  SequenceNumber last_seq = 0;
};

void ToReply(const WriteOutcome& o, schema::WriteReply::Builder b) {
  ToCapnp(o.status, b.initError());
  b.setFirstSeq(o.first_seq);
  b.setLastSeq(o.last_seq);
}

// Everything a running node owns that lives on the event loop.
class Core final : public kj::TaskSet::ErrorHandler {
 public:
  Core(const NodeServerOptions& options, engine::Engine& engine, replication::Leader* leader,
       replication::Follower* follower, kj::AsyncIoContext& io)
      : options_(options),
        engine_(engine),
        leader_(leader),
        follower_(follower),
        io_(io),
        tasks_(*this),
        client_pool_(options.worker_threads, options.max_queued_tasks),
        node_pool_(1, kMaxNodeTasks),
        wal_pool_(1, kMaxWalReads) {
    if (leader_ != nullptr) {
      replication::ShipperOptions so;
      so.max_inflight_ships = options.max_inflight_ships;
      so.ack_delay_us = options.ack_delay_us;
      so.max_ship_hold_us = options.max_ship_hold_us;
      so.min_ship_interval_us = options.min_ship_interval_us;
      so.heartbeat_interval_ms = options.heartbeat_interval_ms;
      shipper_ = std::make_unique<replication::Shipper>(*leader_, so);
    } else {
      replication::FollowerLinkOptions lo;
      lo.heartbeat_timeout_ms = options.heartbeat_timeout_ms;
      lo.reconnect_min_ms = options.reconnect_min_ms;
      lo.reconnect_max_ms = options.reconnect_max_ms;
      lo.fsync_interval_ms = options.follower_fsync_interval_ms;
      link_ = std::make_unique<replication::FollowerLink>(*follower_, lo, options.leader_id);
    }
  }

  void taskFailed(kj::Exception&& e) override {
    spdlog::warn("background task failed: {}", e.getDescription().cStr());
  }

  void Start() {
    tasks_.add(WalTrimLoop());
    tasks_.add(StorageLoop());
    if (leader_ != nullptr) {
      SchedulePump();  // heartbeats start from the first pump
    } else {
      replication::LinkOutbox out;
      link_->Start(MonoNowUs(), &out);
      CarryLink(std::move(out));
    }
  }

  bool writer_busy() const { return writer_busy_; }
  const NodeServerOptions& options() const { return options_; }

  // The node's budget for scan replies being built: each scan reserves maxScanReplyBytes
  // from when it is read until its reply is built (then its connection's 64 MiB bound holds
  // the reply until it is written); past the budget scans are refused `unavailable`. So scans
  // in progress hold at most this much memory (plus, for each, the one key and value that
  // crosses its bound), and a client that never reads holds none of it.
  static constexpr uint64_t kMaxScanReplyBytesReserved = 8 * schema::MAX_SCAN_REPLY_BYTES;
  bool ReserveScanReply() {
    if (scan_reply_bytes_reserved_ + schema::MAX_SCAN_REPLY_BYTES > kMaxScanReplyBytesReserved) {
      return false;
    }
    scan_reply_bytes_reserved_ += schema::MAX_SCAN_REPLY_BYTES;
    return true;
  }
  void ReleaseScanReply() { scan_reply_bytes_reserved_ -= schema::MAX_SCAN_REPLY_BYTES; }

  // What the listener counts, for status.
  struct ConnectionStats {
    uint32_t clients = 0;  // client connections being served
    uint32_t peers = 0;    // node connections being served
    uint64_t refused = 0;  // since start, over a cap
    uint64_t accept_failures = 0;
  };
  ConnectionStats& connection_stats() { return connection_stats_; }

  // ---- Client API ----

  // Answers one client request into `reply`, which the caller keeps until the promise
  // resolves. `request` is read before Serve returns and may be dropped then.
  kj::Promise<void> Serve(schema::Request::Reader request, schema::Reply::Builder reply) {
    switch (request.which()) {
      case schema::Request::WRITE: {
        auto w = request.getWrite();
        return Enqueue(FromCapnp(w.getOps()), w.getMode()).then([reply](WriteOutcome o) mutable {
          ToReply(o, reply.initWrite());
        });
      }
      case schema::Request::WRITE_MANY: return WriteMany(request.getWriteMany(), reply);
      case schema::Request::GET: return Get(request.getGet(), reply.initGet());
      case schema::Request::SCAN: return Scan(request.getScan(), reply);
      case schema::Request::STATUS: Status(reply.initStatus()); return kj::READY_NOW;
    }
    ToCapnp(absl::UnimplementedError(absl::StrCat(
                "unknown request kind ", static_cast<int>(request.which()),
                "; the client is newer than this node")),
            reply.initRefused());
    return kj::READY_NOW;
  }

  // A pipeline of independent writes: each enters the write queue as if sent on its own.
  kj::Promise<void> WriteMany(schema::WriteManyRequest::Reader request,
                              schema::Reply::Builder reply) {
    auto writes = request.getWrites();
    // Refused whole, with one error: the reply is never sized by an untrusted count.
    if (leader_ == nullptr) {
      ToCapnp(NotLeaderError(options_.leader_address), reply.initWriteMany().initError());
      return kj::READY_NOW;
    }
    if (writes.size() > kMaxPipelineWrites) {
      ToCapnp(absl::InvalidArgumentError(absl::StrCat("a pipeline holds at most ",
                                                      kMaxPipelineWrites, " writes; this one has ",
                                                      writes.size())),
              reply.initWriteMany().initError());
      return kj::READY_NOW;
    }
    // Every write is decoded before any is queued: a field of the wrong type in one of them
    // refuses the pipeline whole (the exception reaches the connection), never after some
    // of it was applied.
    std::vector<std::pair<std::vector<engine::WriteOp>, schema::WriteMode>> decoded;
    decoded.reserve(writes.size());
    for (auto w : writes) decoded.emplace_back(FromCapnp(w.getOps()), w.getMode());
    auto outcomes = kj::heapArrayBuilder<kj::Promise<WriteOutcome>>(decoded.size());
    for (auto& [ops, mode] : decoded) outcomes.add(Enqueue(std::move(ops), mode));
    return kj::joinPromises(outcomes.finish())
        .then([reply](kj::Array<WriteOutcome> done) mutable {
          auto results = reply.initWriteMany();
          ToCapnp(absl::OkStatus(), results.initError());
          auto replies = results.initReplies(done.size());
          for (size_t i = 0; i < done.size(); ++i) ToReply(done[i], replies[i]);
        });
  }

  // Reads served on the loop thread come from memory only: a read that needs the disk goes
  // to a worker with a snapshot taken here and now, so that it sees exactly what it would
  // have seen here, whatever is written meanwhile, and the loop never waits for the disk.
  kj::Promise<void> Get(schema::GetRequest::Reader request, schema::GetReply::Builder reply) {
    SequenceNumber latest = engine_.LatestSequence();
    reply.setSeq(latest);
    if (absl::Status s = CheckReadable(request.getMinSeq(), latest); !s.ok()) {
      ToCapnp(s, reply.initError());
      return kj::READY_NOW;
    }
    auto answer = [reply](absl::StatusOr<std::string> value) mutable {
      ToCapnp(value.status(), reply.initError());
      if (value.ok()) reply.setValue(ToData(*value));
    };
    std::string key = ToString(request.getKey());
    engine::ReadOptions cached;
    cached.cache_only = true;
    absl::StatusOr<std::string> value = engine_.Get(key, cached);
    if (!absl::IsResourceExhausted(value.status())) {
      answer(std::move(value));
      return kj::READY_NOW;
    }
    return client_pool_
        .Run([e = &engine_, key = std::move(key), at = engine_.GetSnapshot()]() {
          engine::ReadOptions read;
          read.snapshot = at.get();
          return e->Get(key, read);
        })
        .then(kj::mv(answer));
  }

  // The requests Serve always hands to a worker thread (large scans). They read at a
  // snapshot of the turn in which they came; the connection still serves the writes sent
  // after them only once they have read, which keeps the reply order simple.
  static bool ServesOnWorker(schema::Request::Reader request) {
    return request.isScan() && ScanLimit(request.getScan()) > kInlineScanLimit;
  }

  static uint32_t ScanLimit(schema::ScanRequest::Reader request) {
    return std::min(request.getLimit() == 0 ? 1000u : request.getLimit(), kMaxScanLimit);
  }

  kj::Promise<void> Scan(schema::ScanRequest::Reader request, schema::Reply::Builder reply) {
    SequenceNumber latest = engine_.LatestSequence();
    if (absl::Status s = CheckReadable(request.getMinSeq(), latest); !s.ok()) {
      auto results = reply.initScan();
      results.setSeq(latest);
      ToCapnp(s, results.initError());
      return kj::READY_NOW;
    }
    engine::ScanOptions scan;
    scan.start = ToString(request.getStart());
    scan.prefix = ToString(request.getPrefix());
    scan.limit = ScanLimit(request);
    scan.max_bytes = schema::MAX_SCAN_REPLY_BYTES;
    auto answer = [reply, latest, limit = scan.limit](
                      absl::StatusOr<std::vector<engine::KeyValue>> kvs) mutable {
      auto results = reply.initScan();
      results.setSeq(latest);
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
    // As for Get: small scans from memory here, the rest on a worker at a snapshot of now.
    if (scan.limit <= kInlineScanLimit) {
      engine::ReadOptions cached;
      cached.cache_only = true;
      auto kvs = engine_.Scan(scan, cached);
      if (!absl::IsResourceExhausted(kvs.status())) {
        answer(std::move(kvs));
        return kj::READY_NOW;
      }
    }
    return client_pool_
        .Run([e = &engine_, scan, at = engine_.GetSnapshot()]() {
          engine::ReadOptions read;
          read.snapshot = at.get();
          return e->Scan(scan, read);
        })
        .then(kj::mv(answer));
  }

  void Status(schema::NodeStatus::Builder st) {
    st.setNode(options_.node_id);
    st.setCluster(options_.cluster);
    st.setRole(leader_ != nullptr ? "leader" : "follower");
    st.setLatestSeq(engine_.LatestSequence());
    st.setDataBytes(engine_.ApproximateSizeBytes());
    st.setListen(options_.listen);
    st.setWritesAccepted(writes_accepted_);
    st.setWriteGroups(write_groups_);
    st.setClientConnections(connection_stats_.clients);
    st.setPeerConnections(connection_stats_.peers);
    st.setConnectionsRefused(connection_stats_.refused);
    st.setAcceptFailures(connection_stats_.accept_failures);
    if (absl::Status e = engine_.StorageError(); !e.ok()) st.setStorageError(e.message().data());
    if (leader_ != nullptr) {
      st.setEpoch(leader_->epoch());
      st.setDatabaseId(leader_->state().database_id);
      auto infos = leader_->Followers();
      auto list = st.initFollowers(infos.size());
      int64_t now = NowUs();
      for (size_t i = 0; i < infos.size(); ++i) {
        const auto& f = infos[i];
        list[i].setId(f.id);
        list[i].setState(replication::FollowerStateName(f.state));
        list[i].setSentSeq(f.sent);
        list[i].setReceivedSeq(f.received);
        list[i].setDurableSeq(f.durable);
        list[i].setAppliedSeq(f.applied);
        list[i].setLagSeq(f.lag_seq);
        list[i].setLagMs(f.lag_ms);
        list[i].setBytesShipped(f.bytes_shipped);
        list[i].setLastAckAgoMs(f.last_ack_us == 0 ? -1 : (now - f.last_ack_us) / 1000);
        list[i].setMessage(f.message);
      }
    } else {
      replication::FollowerStatus fs = follower_->Status();
      st.setEpoch(fs.epoch);
      st.setDatabaseId(fs.database_id);
      st.setLeaderId(options_.leader_id);
      st.setLeaderAddress(options_.leader_address);
      st.setReplicationState(replication::FollowerPhaseName(fs.phase));
      st.setAppliedSeq(fs.applied);
      st.setLeaderLatestSeq(fs.leader_latest);
      st.setLagSeq(fs.lag_seq);
      st.setLagMs(fs.lag_ms);
      st.setMessage(fs.message);
    }
  }

  // ---- Leader: followers subscribing ----

  // `connection_sessions` counts the live sessions of the connection it came on: one more
  // while the session this starts, if accepted, lives.
  kj::Promise<void> Subscribe(SubscribeContext ctx, std::shared_ptr<uint32_t> connection_sessions) {
    auto params = ctx.getParams();
    replication::Hello hello = FromCapnp(params.getHello());
    replication::HelloReply reply;
    replication::Outbox out;
    uint64_t sid = 0;
    if (leader_ == nullptr) {
      reply.outcome = replication::HelloOutcome::kRefused;
      reply.message = absl::StrCat("node ", options_.node_id, " is not the leader");
      reply.epoch = follower_->epoch();
    } else {
      reply = shipper_->OnHello(hello, &sid, MonoNowUs(), &out);
    }
    ToCapnp(reply, ctx.getResults().initReply());
    if (sid == 0) {
      spdlog::warn("follower '{}' {}: {}", hello.follower_id,
                   replication::HelloOutcomeName(reply.outcome), reply.message);
      return kj::READY_NOW;
    }
    spdlog::info("follower '{}' subscribed from seq {} (leader at {})", hello.follower_id,
                 hello.last_applied + 1, leader_->latest());
    Carry(std::move(out));  // the follower's earlier streams end
    auto stream = streams_.emplace(sid, Stream{hello.follower_id, params.getSink(), {}, nullptr});
    ++*connection_sessions;
    stream.first->second.live_on_connection = std::shared_ptr<void>(
        nullptr, [n = std::move(connection_sessions)](void*) { --*n; });
    SchedulePump();
    return kj::READY_NOW;
  }

  // ---- Follower: batches pushed by the leader ----

  kj::Promise<Ack> OnPush(uint64_t generation, Ship ship) {
    if (follower_ == nullptr || generation != link_->generation()) {
      return KJ_EXCEPTION(DISCONNECTED, "push on a connection this follower has dropped");
    }
    uint64_t push = ++last_push_;
    auto paf = kj::newPromiseAndFulfiller<Ack>();
    pushes_.emplace(push, kj::mv(paf.fulfiller));
    replication::LinkOutbox out;
    std::string why;
    if (!link_->OnPush(generation, push, std::move(ship), MonoNowUs(), &out, &why)) {
      pushes_.erase(push);
      return KJ_EXCEPTION(OVERLOADED, why);
    }
    CarryLink(std::move(out));
    return kj::mv(paf.promise);
  }

 private:
  struct PendingWrite {
    std::vector<engine::WriteOp> ops;
    uint64_t bytes = 0;  // of its keys and values
    kj::Own<kj::PromiseFulfiller<WriteOutcome>> fulfiller;
  };
  struct GroupMember {
    size_t ops = 0;
    kj::Own<kj::PromiseFulfiller<WriteOutcome>> fulfiller;
  };
  // The transport of one follower's stream (the Shipper keeps its policy state).
  struct Stream {
    std::string follower_id;
    schema::BatchSink::Client sink;
    // Answered pushes, kept until the next pump: releasing one sends its Finish, which then
    // shares a socket write with the next message, when that pump sends one, instead of
    // taking one of its own.
    std::vector<capnp::Response<schema::BatchSink::PushResults>> answered;
    // While this follower's stream lives, it counts in its connection's (Subscribe).
    std::shared_ptr<void> live_on_connection;
  };
  // The follower's RPC connection to its leader, with the peer read limit.
  struct LeaderConnection {
    LeaderConnection(kj::Own<kj::AsyncIoStream> s, kj::AsyncIoContext& io)
        : socket(FdStream::Wrap(kj::mv(s), io)),
          fd_stream(dynamic_cast<FdStream*>(socket.get())),
          stream(kj::heap<BufferedStream>(kj::mv(socket))),
          network(*stream, capnp::rpc::twoparty::Side::CLIENT, PeerReaderOptions()),
          rpc(capnp::makeRpcClient(network)),
          node(Bootstrap(rpc).castAs<schema::Node>()) {}
    // Bytes received so far (0 when the stream has no socket).
    uint64_t bytes_read() const { return fd_stream == nullptr ? 0 : fd_stream->bytes_read(); }

    kj::Own<kj::AsyncIoStream> socket;  // moved into `stream`
    FdStream* fd_stream;                // owned by `stream`, or null
    kj::Own<BufferedStream> stream;
    capnp::TwoPartyVatNetwork network;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
    schema::Node::Client node;
  };

  // Whether a read may be served here: not on a follower that needs a snapshot (its data is
  // stale with no way to catch up), and only once `min_seq` is applied.
  absl::Status CheckReadable(SequenceNumber min_seq, SequenceNumber latest) const {
    if (follower_ != nullptr) {
      if (std::string why = follower_->ReadRefusal(); !why.empty()) {
        return absl::FailedPreconditionError(why);
      }
    }
    if (min_seq <= latest) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("this node has applied up to seq ", latest,
                                               "; the read asked for at least seq ", min_seq));
  }

  // Checks one client write and queues it for the next group commit; the promise resolves
  // once it is written (or at once with the error that refused it).
  kj::Promise<WriteOutcome> Enqueue(std::vector<engine::WriteOp> ops, schema::WriteMode mode) {
    auto fail = [](absl::Status s) -> kj::Promise<WriteOutcome> {
      return WriteOutcome{std::move(s)};
    };
    if (leader_ == nullptr) return fail(NotLeaderError(options_.leader_address));
    switch (mode) {
      case schema::WriteMode::CLUSTER_DEFAULT:
      case schema::WriteMode::ASYNC: break;
      default:
        return fail(absl::UnimplementedError(
            "semi-synchronous and synchronous writes are not implemented yet; use async"));
    }
    if (ops.empty()) return fail(absl::InvalidArgumentError("a write needs at least one op"));
    for (const engine::WriteOp& op : ops) {
      if (op.type == engine::OpType::kDeleteRange && op.key > op.value) {
        return fail(absl::InvalidArgumentError("delete range: begin key sorts after end key"));
      }
    }
    if (pending_.size() >= options_.max_pending_writes) {
      return fail(absl::UnavailableError(absl::StrCat(
          "write queue full (", options_.max_pending_writes, " writes waiting); retry")));
    }
    uint64_t bytes = 0;
    for (const engine::WriteOp& op : ops) bytes += op.key.size() + op.value.size();
    // Bounded in bytes too; a write alone is always taken (it is at most a request).
    if (!pending_.empty() && pending_bytes_ + bytes > options_.max_pending_write_bytes) {
      return fail(absl::UnavailableError(absl::StrCat(
          "write queue full (", pending_bytes_, " bytes waiting, max_pending_write_bytes ",
          options_.max_pending_write_bytes, "); retry")));
    }
    pending_bytes_ += bytes;
    auto paf = kj::newPromiseAndFulfiller<WriteOutcome>();
    pending_.push_back(PendingWrite{std::move(ops), bytes, kj::mv(paf.fulfiller)});
    ScheduleFlush();
    return kj::mv(paf.promise);
  }

  // Group commit: writes that arrive together (in the same event-loop turn) become one
  // RocksDB write and one WAL record. evalLast runs when the loop has nothing else ready.
  void ScheduleFlush() {
    if (flush_scheduled_ || writer_busy_ || pending_.empty()) return;
    flush_scheduled_ = true;
    tasks_.add(kj::evalLast([this]() {
      flush_scheduled_ = false;
      FlushWrites();
    }));
  }

  void FlushWrites() {
    if (writer_busy_ || pending_.empty()) return;
    std::vector<GroupMember> group;
    std::vector<engine::WriteOp> ops;
    size_t bytes = 0;
    // A group stays within max_write_group_ops and max_write_group_bytes, counting the write
    // it would add; only a single write may be larger (up to a request, 64 MiB), so one WAL
    // record is never larger than the largest request and the peers can always read it.
    while (!pending_.empty()) {
      PendingWrite& w = pending_.front();
      if (!group.empty() && (ops.size() + w.ops.size() > options_.max_write_group_ops ||
                             bytes + w.bytes > options_.max_write_group_bytes)) {
        break;
      }
      group.push_back(GroupMember{w.ops.size(), kj::mv(w.fulfiller)});
      bytes += w.bytes;
      pending_bytes_ -= w.bytes;
      for (engine::WriteOp& op : w.ops) ops.push_back(std::move(op));
      pending_.pop_front();
    }
    // The write time travels inside the batch (a LogData record), so followers and the
    // leader's status know it for batches read back from the WAL too.
    int64_t write_time_us = NowUs();
    if (!options_.fsync_writes) {
      // On the loop thread unless RocksDB would stall (then it answers at once).
      engine::WriteOptions wo;
      wo.no_slowdown = true;
      wo.write_time_us = write_time_us;
      absl::StatusOr<engine::Batch> r = engine_.Write(ops, wo);
      if (!absl::IsResourceExhausted(r.status())) {
        Complete(group, std::move(r), write_time_us);
        return;
      }
    }
    writer_busy_ = true;
    engine::WriteOptions wo;
    wo.sync = options_.fsync_writes;
    wo.write_time_us = write_time_us;
    tasks_.add(
        node_pool_.Run([e = &engine_, ops = std::move(ops), wo]() { return e->Write(ops, wo); })
            .then(
                [](absl::StatusOr<engine::Batch> r) { return r; },
                [](kj::Exception&& e) -> absl::StatusOr<engine::Batch> {
                  // Never expected (the node's queue is sized for its own work); if it comes,
                  // the group fails and the writer is free again, so nothing wedges.
                  return absl::InternalError(
                      absl::StrCat("node work queue: ", e.getDescription().cStr()));
                })
            .then([this, group = std::move(group),
                   write_time_us](absl::StatusOr<engine::Batch> r) mutable {
              writer_busy_ = false;
              Complete(group, std::move(r), write_time_us);
            }));
  }

  // `write_time_us` is the time FlushWrites put into the batch.
  void Complete(std::vector<GroupMember>& group, absl::StatusOr<engine::Batch> r,
                int64_t write_time_us) {
    if (!r.ok()) {
      // While RocksDB refuses writes after a storage error, that error says why (and
      // StorageLoop has logged it once).
      if (absl::Status e = engine_.StorageError(); !e.ok()) {
        r = e;
        spdlog::debug("write of {} requests refused: {}", group.size(), e.ToString());
      } else {
        spdlog::error("write of {} requests failed: {}", group.size(), r.status().ToString());
      }
      for (GroupMember& m : group) m.fulfiller->fulfill(WriteOutcome{r.status()});
    } else {
      SequenceNumber seq = r->first_seq;
      leader_->OnLocalWrite(std::move(*r), write_time_us);
      for (GroupMember& m : group) {
        m.fulfiller->fulfill(WriteOutcome{absl::OkStatus(), seq, seq + m.ops - 1});
        seq += m.ops;
      }
      writes_accepted_ += group.size();
      ++write_groups_;
      SchedulePump();
    }
    ScheduleFlush();
  }

  // ---- Leader: shipping ----
  //
  // What goes to each follower and when is the Shipper's decision (replication/shipper.h);
  // here its outbox is carried out: messages sent, WAL reads run on the WAL thread, ended
  // streams closed, and one timer armed for its next wake-up.

  // Pumps at the end of this event-loop turn, after the turn's group commit and, as a rule,
  // after the replies to its writers have gone out: a writer waiting for its reply does not
  // also wait for the messages to the followers, which are sent while it works on its next
  // request, and an ack or a wake-up in the same turn as a write lets that write travel in
  // the message they free. (KJ runs the evalLast callbacks of one turn newest first, so the
  // group commit and the replies' socket flushes, scheduled after this, run before it.)
  void SchedulePump() {
    if (pump_scheduled_) return;
    pump_scheduled_ = true;
    tasks_.add(kj::evalLast([this]() {
      pump_scheduled_ = false;
      if (!pending_.empty() && !writer_busy_) {
        // A group commit of this turn has not run yet: run it first; its completion
        // schedules the pump again, behind the replies.
        FlushWrites();
        if (pump_scheduled_) return;
      }
      // Answered pushes are released now: each sends its Finish, which then shares a socket
      // write with the next message instead of taking one of its own.
      for (auto& [sid, stream] : streams_) stream.answered.clear();
      replication::Outbox out;
      shipper_->Pump(MonoNowUs(), &out);
      Carry(std::move(out));
      ArmWakeUp();
    }));
  }

  int64_t MonoNowUs() const {
    return (io_.provider->getTimer().now() - kj::origin<kj::TimePoint>()) / kj::MICROSECONDS;
  }

  // One timer for the Shipper's next wake-up; an earlier one already armed stays.
  void ArmWakeUp() {
    int64_t at = shipper_->NextWakeUp();
    if (at == replication::kNever) return;
    int64_t now = MonoNowUs();
    if (wake_armed_ && wake_at_us_ <= at && wake_at_us_ > now) return;
    wake_armed_ = true;
    wake_at_us_ = at;
    wake_timer_ = io_.provider->getTimer()
                      .afterDelay(std::max<int64_t>(0, at - now) * kj::MICROSECONDS)
                      .then([this]() {
                        wake_armed_ = false;
                        SchedulePump();
                      })
                      .eagerlyEvaluate(nullptr);
  }

  void Carry(replication::Outbox out) {
    for (uint64_t sid : out.ended) streams_.erase(sid);
    for (auto& send : out.sends) Send(send.session, std::move(send.ship));
    for (auto& read : out.wal_reads) RunWalRead(std::move(read));
  }

  // Runs a WAL read the Shipper asked for on the WAL thread, so that the loop never waits for
  // the disk; its end goes back to the Shipper and pumps again.
  void RunWalRead(replication::WalRead read) {
    uint64_t sid = read.session;
    SequenceNumber from_seq = read.from_seq;
    tasks_.add(
        wal_pool_
            .Run([read = std::move(read)]() mutable {
              read.Run();
              return std::move(read);
            })
            .then([](replication::WalRead done) { return done; },
                  [sid, from_seq](kj::Exception&& e) {  // the queue was full: as a failure
                    replication::WalRead failed;
                    failed.session = sid;
                    failed.from_seq = from_seq;
                    failed.status = absl::UnavailableError(e.getDescription().cStr());
                    return failed;
                  })
            .then([this](replication::WalRead done) {
              if (!done.status.ok() && !absl::IsOutOfRange(done.status)) {
                spdlog::warn("reading the WAL from seq {} failed: {}", done.from_seq,
                             done.status.ToString());
              }
              replication::Outbox out;
              shipper_->OnWalRead(std::move(done), MonoNowUs(), &out);
              Carry(std::move(out));
              SchedulePump();
            }));
  }

  void Send(uint64_t sid, Ship ship) {
    auto it = streams_.find(sid);
    if (it == streams_.end()) return;
    Stream& s = it->second;
    size_t words = ShipBytes(ship) / 8 + ship.batches.size() * 8 + 64;
    auto req = s.sink.pushRequest(capnp::MessageSize{words, 0});
    ToCapnp(ship, req.initShip());
    if (!ship.needs_snapshot.empty()) {
      spdlog::error("follower '{}' NEEDS SNAPSHOT: {}", s.follower_id, ship.needs_snapshot);
    }
    tasks_.add(req.send().then(
        [this, sid](capnp::Response<schema::BatchSink::PushResults> resp) {
          if (streams_.find(sid) == streams_.end()) return;
          Ack ack = FromCapnp(resp.getAck());
          if (ack.outcome != replication::AckOutcome::kOk) {
            spdlog::warn("follower '{}' answered {}: {}", streams_.at(sid).follower_id,
                         replication::AckOutcomeName(ack.outcome), ack.message);
          }
          replication::Outbox out;
          shipper_->OnAck(sid, ack, &out);
          Carry(std::move(out));
          auto live = streams_.find(sid);
          if (live != streams_.end()) live->second.answered.push_back(kj::mv(resp));
          SchedulePump();
        },
        [this, sid](kj::Exception&& e) {
          auto lost = streams_.find(sid);
          if (lost == streams_.end()) return;
          spdlog::warn("lost follower '{}': {}", lost->second.follower_id,
                       e.getDescription().cStr());
          shipper_->OnLost(sid);
          streams_.erase(lost);
        }));
  }

  // ---- Follower: the stream from the leader ----
  //
  // The FollowerLink (replication/follower_link.h) decides when to connect, what to apply
  // where, when to ack and when the leader is silent; here its outbox is carried out.

  void CarryLink(replication::LinkOutbox out) {
    for (auto& [level, text] : out.logs) {
      switch (level) {
        case replication::LogLevel::kInfo: spdlog::info("{}", text); break;
        case replication::LogLevel::kWarn: spdlog::warn("{}", text); break;
        case replication::LogLevel::kError: spdlog::error("{}", text); break;
      }
    }
    if (out.drop) DropConnection();
    for (auto& answer : out.answers) {
      auto it = pushes_.find(answer.push);
      if (it == pushes_.end()) continue;
      it->second->fulfill(std::move(answer.ack));
      pushes_.erase(it);
    }
    for (auto& reject : out.rejects) {
      auto it = pushes_.find(reject.push);
      if (it == pushes_.end()) continue;
      it->second->reject(KJ_EXCEPTION(FAILED, reject.why));
      pushes_.erase(it);
    }
    if (out.apply.has_value()) RunApply(std::move(*out.apply));
    if (out.fsync.has_value()) RunFsync(*out.fsync);
    if (out.connect.has_value()) Connect(std::move(*out.connect));
    ArmLinkTimer();
  }

  // One timer for the link's next wake-up; an earlier one already armed stays.
  void ArmLinkTimer() {
    int64_t at = link_->NextWakeUp();
    if (at == replication::kNever) return;
    int64_t now = MonoNowUs();
    if (link_armed_ && link_at_us_ <= at && link_at_us_ > now) return;
    link_armed_ = true;
    link_at_us_ = at;
    link_timer_ = io_.provider->getTimer()
                      .afterDelay(std::max<int64_t>(0, at - now) * kj::MICROSECONDS)
                      .then([this]() {
                        link_armed_ = false;
                        // A task of its own: what Tick carries out may replace this timer.
                        tasks_.add(kj::evalLater([this]() {
                          replication::LinkOutbox out;
                          link_->Tick(MonoNowUs(), conn_.get() == nullptr ? 0 : conn_->bytes_read(),
                                      &out);
                          CarryLink(std::move(out));
                        }));
                      })
                      .eagerlyEvaluate(nullptr);
  }

  void Connect(replication::LinkOutbox::Connect c) {
    uint64_t gen = c.generation;
    auto attempt =
        io_.provider->getNetwork()
            .parseAddress(options_.leader_address)
            .then([](kj::Own<kj::NetworkAddress> addr) {
              auto connected = addr->connect();
              return connected.attach(kj::mv(addr));
            })
            .then([this, gen, hello = std::move(c.hello)](kj::Own<kj::AsyncIoStream> stream) {
              conn_ = kj::heap<LeaderConnection>(kj::mv(stream), io_);
              auto req = conn_->node.subscribeRequest();
              ToCapnp(hello, req.initHello());
              req.setSink(kj::heap<SinkImpl>(*this, gen));
              return req.send().then(
                  [this, gen](capnp::Response<schema::PeerService::SubscribeResults> resp) {
                    OnSubscribed(gen, FromCapnp(resp.getReply()));
                  });
            })
            .catch_([this, gen](kj::Exception&& e) {
              replication::LinkOutbox out;
              link_->OnConnectionLost(gen, e.getDescription().cStr(), MonoNowUs(), &out);
              CarryLink(std::move(out));
            });
    connect_attempt_ = attempt.eagerlyEvaluate(nullptr);
  }

  void OnSubscribed(uint64_t gen, const replication::HelloReply& reply) {
    replication::LinkOutbox out;
    link_->OnHelloReply(gen, reply, MonoNowUs(), &out);
    CarryLink(std::move(out));
    if (gen != link_->generation() || !link_->streaming()) return;
    spdlog::info("streaming from leader '{}' at {}, from seq {}", options_.leader_id,
                 options_.leader_address, engine_.LatestSequence() + 1);
    tasks_.add(conn_->network.onDisconnect().then([this, gen]() {
      replication::LinkOutbox lost;
      link_->OnConnectionLost(gen, "the leader closed the connection", MonoNowUs(), &lost);
      CarryLink(std::move(lost));
    }));
  }

  // Closes the connection to the leader; pushes not answered yet are forgotten (their
  // promises reject), and a connection attempt under way is cancelled.
  void DropConnection() {
    pushes_.clear();
    // Destroyed in a later turn: this may run inside the attempt's own continuation.
    tasks_.add(kj::evalLater([attempt = kj::mv(connect_attempt_)]() mutable {}));
    connect_attempt_ = nullptr;
    // Close the socket now (the leader sees the disconnect), but keep the connection objects
    // a while: calls still in flight on it hold references into them.
    if (conn_.get() != nullptr) {
      // Fails when the peer already closed the socket; nothing more to do then.
      auto closed = kj::runCatchingExceptions([this]() {
        conn_->stream->shutdownWrite();
        conn_->stream->abortRead();
      });
      (void)closed;
      tasks_.add(io_.provider->getTimer()
                     .afterDelay(kRetireConnectionMs * kj::MILLISECONDS)
                     .then([c = kj::mv(conn_)]() {}));
    }
  }

  // An apply the link handed out: on the node's own thread.
  void RunApply(replication::LinkOutbox::Apply apply) {
    uint64_t push = apply.push;
    tasks_.add(node_pool_
                   .Run([f = follower_, ship = std::move(apply.ship)]() {
                     return f->OnShip(ship, engine::WriteOptions{});
                   })
                   .then([](absl::StatusOr<Ack> r) { return r; },
                         [](kj::Exception&& e) -> absl::StatusOr<Ack> {  // as in FlushWrites
                           return absl::InternalError(
                               absl::StrCat("node work queue: ", e.getDescription().cStr()));
                         })
                   .then([this, push](absl::StatusOr<Ack> r) {
                     replication::LinkOutbox out;
                     link_->OnApplied(push, std::move(r), MonoNowUs(), &out);
                     CarryLink(std::move(out));
                   }));
  }

  // Periodic WAL fsync on a follower (like Redis's appendfsync everysec): durable acks.
  void RunFsync(SequenceNumber seq) {
    tasks_.add(node_pool_.Run([e = &engine_]() { return e->SyncWal(); })
                   .catch_([](kj::Exception&& e) {  // the worker queue was full
                     return absl::UnavailableError(e.getDescription().cStr());
                   })
                   .then([this, seq](absl::Status s) {
                     replication::LinkOutbox out;
                     link_->OnSynced(seq, s, &out);
                     CarryLink(std::move(out));
                   }));
  }

  // Keeps the archived WAL within wal_retention_bytes every second (RocksDB alone would
  // check every 10 minutes). On every node: a follower's WAL is the log it serves once it
  // leads. A follower whose position goes is told it needs a snapshot when next served.
  kj::Promise<void> WalTrimLoop() {
    return io_.provider->getTimer()
        .afterDelay(kWalTrimIntervalMs * kj::MILLISECONDS)
        .then([this]() { return node_pool_.Run([e = &engine_]() { return e->TrimWalArchive(); }); })
        .then([](absl::StatusOr<engine::WalTrim> trim) {
          if (!trim.ok()) {
            spdlog::error("trimming the WAL archive: {}", trim.status().ToString());
          } else if (trim->deleted_files > 0) {
            spdlog::info("deleted {} archived WAL files ({} bytes) to keep the archive within "
                         "wal_retention_bytes; it holds {} bytes",
                         trim->deleted_files, trim->deleted_bytes, trim->archived_bytes);
          }
        })
        .catch_([](kj::Exception&& e) {  // the worker queue was full: try again next time
          spdlog::warn("WAL archive trim skipped: {}", e.getDescription().cStr());
        })
        .then([this]() { return WalTrimLoop(); });
  }

  // Watches for a storage error (a failed flush or compaction, a full disk: RocksDB then
  // refuses every write) every second: logs it, shows it in status, and asks RocksDB to
  // resume once its cause is gone, at most every kMaxResumeIntervalMs while it persists.
  kj::Promise<void> StorageLoop() {
    return io_.provider->getTimer()
        .afterDelay(kStorageCheckIntervalMs * kj::MILLISECONDS)
        .then([this]() -> kj::Promise<void> {
          absl::Status error = engine_.StorageError();
          if (error.ok()) {
            if (storage_failed_) spdlog::info("storage recovered; writes are accepted again");
            storage_failed_ = false;
            return kj::READY_NOW;
          }
          int64_t now = NowUs();
          if (!storage_failed_) {
            spdlog::error("STORAGE ERROR: {}", std::string(error.message()));
            storage_failed_ = true;
            resume_interval_ms_ = kStorageCheckIntervalMs;
          } else if (now < next_resume_us_) {
            return kj::READY_NOW;
          }
          next_resume_us_ = now + int64_t{resume_interval_ms_} * 1000;
          resume_interval_ms_ = std::min(resume_interval_ms_ * 2, kMaxResumeIntervalMs);
          return node_pool_.Run([e = &engine_]() { return e->Resume(); })
              .then([](absl::Status s) {
                if (s.ok()) return;
                spdlog::warn("storage not recovered yet: {}", s.ToString());
              });
        })
        .catch_([](kj::Exception&& e) {
          spdlog::warn("storage check skipped: {}", e.getDescription().cStr());
        })
        .then([this]() { return StorageLoop(); });
  }

  class SinkImpl final : public schema::BatchSink::Server {
   public:
    SinkImpl(Core& core, uint64_t generation) : core_(core), generation_(generation) {}
    kj::Promise<void> push(PushContext ctx) override {
      Ship ship = FromCapnp(ctx.getParams().getShip());
      return core_.OnPush(generation_, std::move(ship)).then([ctx](Ack ack) mutable {
        ToCapnp(ack, ctx.getResults().initAck());
      });
    }

   private:
    Core& core_;
    uint64_t generation_;
  };

  const NodeServerOptions& options_;
  engine::Engine& engine_;
  replication::Leader* const leader_;      // exactly one of leader_ and follower_ is set
  replication::Follower* const follower_;
  kj::AsyncIoContext& io_;
  kj::TaskSet tasks_;
  // Client work (large scans) may fill its queue and be refused; the node's own work (write
  // groups, applies, WAL trims and fsyncs: at most one of each at a time) has a thread and a
  // queue of its own, so that no client can stop writes or replication.
  WorkerPool client_pool_;
  WorkerPool node_pool_;
  // The leader's WAL reads for followers catching up (ReadWalFor): a thread of their own, so
  // that a long read neither waits behind nor delays the node's writes.
  WorkerPool wal_pool_;

  // Leader write path.
  std::deque<PendingWrite> pending_;
  uint64_t pending_bytes_ = 0;  // of the keys and values in pending_
  bool flush_scheduled_ = false;
  bool pump_scheduled_ = false;
  bool writer_busy_ = false;  // a write group is on a worker; later groups wait
  uint64_t writes_accepted_ = 0;
  uint64_t write_groups_ = 0;
  ConnectionStats connection_stats_;
  uint64_t scan_reply_bytes_reserved_ = 0;  // ReserveScanReply
  std::unique_ptr<replication::Shipper> shipper_;  // set on a leader
  std::map<uint64_t, Stream> streams_;             // by session
  bool wake_armed_ = false;       // wake_timer_ pumps at wake_at_us_ (ArmWakeUp)
  int64_t wake_at_us_ = 0;
  kj::Promise<void> wake_timer_ = nullptr;

  // Storage errors (StorageLoop).
  bool storage_failed_ = false;
  uint32_t resume_interval_ms_ = 0;
  int64_t next_resume_us_ = 0;

  // Follower side.
  std::unique_ptr<replication::FollowerLink> link_;  // set on a follower
  kj::Own<LeaderConnection> conn_;
  kj::Promise<void> connect_attempt_ = nullptr;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<Ack>>> pushes_;  // not yet answered
  uint64_t last_push_ = 0;
  bool link_armed_ = false;  // link_timer_ ticks the link at link_at_us_ (ArmLinkTimer)
  int64_t link_at_us_ = 0;
  kj::Promise<void> link_timer_ = nullptr;
};

// The Cap'n Proto face of a node: forwards to Core.
class NodeImpl final : public schema::Node::Server {
 public:
  // `sessions` counts the follower sessions of this connection that live.
  NodeImpl(Core& core, std::shared_ptr<uint32_t> sessions)
      : core_(core), sessions_(std::move(sessions)) {}
  kj::Promise<void> subscribe(SubscribeContext ctx) override {
    return core_.Subscribe(ctx, sessions_);
  }

 private:
  Core& core_;
  std::shared_ptr<uint32_t> sessions_;
};

// A node's RPC connection accepted from a peer, served with the peer read limit until it
// ends. (Cap'n Proto's TwoPartyServer takes no reader options in 0.9.) Each has its own
// bootstrap, which notes whether a follower subscribed on it.
struct PeerConnection {
  PeerConnection(kj::Own<BufferedStream> s, Core& core)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, PeerReaderOptions()),
        rpc(capnp::makeRpcServer(network, kj::heap<NodeImpl>(core, sessions))) {}
  // Follower sessions of this connection that live (shared with them: a session may end
  // after its connection).
  std::shared_ptr<uint32_t> sessions = std::make_shared<uint32_t>(0);
  kj::Own<BufferedStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

// One client connection (the client protocol of rpc/client.capnp, after its preamble): reads
// Requests, has Core serve them, and writes the Replies in the order the requests came.
//
// Requests take effect in the order sent, as if served one after another. Writes are served
// as they arrive, so those of a pipelining client share group commits (they enter the write
// queue in order), and small reads are served at once. A read that follows a write not yet
// applied, a write that follows a scan still running on a worker, and everything after such
// a request wait in order until the requests before them allow (Drain).
//
// The connection reads at most maxRequestsAhead requests, and about 64 MiB of deferred
// requests and unsent read replies, ahead of the replies going out; past either it stops
// reading until they are out. A client that never reads its replies is thus held back by TCP,
// not by the node's memory.
class ClientConnection {
 public:
  static constexpr size_t kMaxRequestsAhead = schema::MAX_REQUESTS_AHEAD;
  static constexpr uint64_t kMaxHeldBytes = 64 << 20;

  // After refusing a malformed request, how long the node reads and discards what the client
  // still sends before it closes (see Linger).
  static constexpr auto kLinger = 2 * kj::SECONDS;

  // `socket` (owned by `stream`, may be null) tells the idle time-out of bytes arriving.
  ClientConnection(Core& core, kj::Own<BufferedStream> stream, kj::Timer& timer,
                   const FdStream* socket)
      : core_(core), stream_(kj::mv(stream)), timer_(timer), socket_(socket) {}

  // Answers the first request with `why` and closes: the node takes no more clients.
  kj::Promise<void> RunRefused(absl::Status why) {
    Refuse(std::move(why), /*log=*/false);  // the listener logs these, at most once a second
    return Linger();
  }

  // Resolves when the client has closed the connection (or broken the protocol, or been idle
  // for client_idle_timeout_ms) and every reply is out; fails when the connection breaks.
  kj::Promise<void> Run() {
    kj::Promise<void> room = kj::READY_NOW;
    if (inflight_ >= kMaxRequestsAhead || held_bytes_ >= kMaxHeldBytes) {
      room = AfterQueuedReplies();
    }
    // A frame whose segment table declares more than a request may hold is refused before
    // its body is read (CheckRequest gives the request a traversal budget of its own).
    capnp::ReaderOptions options = RequestFramingOptions();
    return room.then([this, options]() {
      auto next = capnp::tryReadMessage(*stream_, options);
      if (core_.options().client_idle_timeout_ms > 0) {
        next = next.exclusiveJoin(IdleTimeout().then([]() {
          return kj::Maybe<kj::Own<capnp::MessageReader>>(nullptr);  // closes as at the end
        }));
      }
      return kj::mv(next).then(
              [this](kj::Maybe<kj::Own<capnp::MessageReader>> message) -> kj::Promise<void> {
                KJ_IF_MAYBE(m, message) {
                  if (Dispatch(kj::mv(*m))) return Run();
                  return Linger();  // a malformed request
                }
                return Close();  // the end of the stream
              },
              [this](kj::Exception&& e) -> kj::Promise<void> {
                if (e.getType() == kj::Exception::Type::DISCONNECTED) return kj::mv(e);
                if (std::string_view(e.getDescription().cStr()).find("Message is too large") !=
                    std::string_view::npos) {
                  Refuse(absl::InvalidArgumentError(absl::StrCat(
                      "a request whose frame declares more than the limit of ",
                      schema::MAX_REQUEST_BYTES, " bytes")));
                  return Linger();
                }
                // The framing itself is broken (too many segments, too large): say so.
                Refuse(absl::InvalidArgumentError(
                    absl::StrCat("malformed request: ", e.getDescription().cStr())));
                return Linger();
              });
    });
  }

 private:
  enum class Kind { kWrite, kRead, kWorkerRead };

  // A scan's share of the node's scan budget, given back when destroyed.
  struct ScanReservation {
    explicit ScanReservation(Core& c) : core(c) {}
    ~ScanReservation() { core.ReleaseScanReply(); }
    Core& core;
  };

  kj::Promise<void> Close() {
    return AfterQueuedReplies().then([this]() { return stream_->Flushed(); });
  }

  // Resolves once the connection has been idle for client_idle_timeout_ms: no request came,
  // no bytes of one arrived, and no reply was owed, for that long.
  kj::Promise<void> IdleTimeout() {
    uint32_t idle_ms = core_.options().client_idle_timeout_ms;
    uint64_t armed_at = socket_ == nullptr ? 0 : socket_->bytes_read();
    return timer_.afterDelay(idle_ms * kj::MILLISECONDS).then([this, idle_ms, armed_at]() {
      bool arriving = socket_ != nullptr && socket_->bytes_read() != armed_at;
      if (inflight_ > 0 || arriving) return IdleTimeout();  // not idle
      spdlog::info("closing a client connection idle for {} ms (client_idle_timeout_ms)",
                   idle_ms);
      return kj::Promise<void>(kj::READY_NOW);
    });
  }

  // Closes after a refusal without losing it: closing a socket with unread bytes makes TCP
  // reset the connection, and the client may then never read the refusal. So the node sends
  // every reply and shuts its side while it reads and discards until the client closes, all
  // within kLinger (a "lingering close").
  kj::Promise<void> Linger() {
    auto replies = Close().then([this]() { stream_->shutdownWrite(); });
    auto both = kj::joinPromises(kj::arr(kj::mv(replies), Discard()));
    // Either end -- the time is up, or the client reset the connection -- ends the lingering,
    // and the connection is closed either way: nothing to report.
    return timer_.timeoutAfter(kLinger, kj::mv(both)).catch_([](kj::Exception&&) {});
  }

  kj::Promise<void> Discard() {
    return stream_->tryRead(discard_, 1, sizeof discard_).then([this](size_t n) {
      return n == 0 ? kj::Promise<void>(kj::READY_NOW) : Discard();
    });
  }

  // Resolves once every reply queued so far is written.
  kj::Promise<void> AfterQueuedReplies() {
    auto replies = kj::mv(tail_).fork();
    tail_ = replies.addBranch();
    return replies.addBranch();
  }

  // Queues a refusal of the request just read; the connection then closes.
  void Refuse(absl::Status why, bool log = true) {
    if (log) spdlog::warn("closing a client connection: {}", std::string(why.message()));
    auto builder = kj::heap<capnp::MallocMessageBuilder>(kSmallReply.wordCount);
    ToCapnp(why, builder->initRoot<schema::Reply>().initRefused());
    Queue(kj::READY_NOW, kj::mv(builder), Kind::kRead);
  }

  // Serves one request, now or after the replies before it, and queues its reply behind
  // theirs. False when the request is malformed: it is refused, and nothing more is read.
  bool Dispatch(kj::Own<capnp::MessageReader> framed) {
    absl::StatusOr<CheckedRequest> checked = CheckRequest(kj::mv(framed));
    if (!checked.ok()) {
      Refuse(checked.status());
      return false;
    }
    kj::Own<capnp::MessageReader> message = kj::mv(checked->message);
    uint64_t words = checked->bytes / sizeof(capnp::word);
    schema::Request::Reader request = message->getRoot<schema::Request>();
    Kind kind = request.isWrite() || request.isWriteMany() ? Kind::kWrite : Kind::kRead;
    // A scan's fields may be of the wrong type: then it is no worker's (Serve refuses it).
    auto ignored = kj::runCatchingExceptions([&]() {
      if (Core::ServesOnWorker(request)) kind = Kind::kWorkerRead;
    });
    (void)ignored;
    auto builder = kj::heap<capnp::MallocMessageBuilder>(kSmallReply.wordCount);
    schema::Reply::Builder reply = builder->initRoot<schema::Reply>();
    // A scan's reply may be large: its bound is reserved from the node's budget (and counted
    // against this connection's) now, before it is built, so that neither many scans in
    // flight on one connection nor scans on many connections outgrow it.
    kj::Own<ScanReservation> reservation;
    if (request.isScan()) {
      if (!core_.ReserveScanReply()) {
        ToCapnp(absl::UnavailableError(absl::StrCat(
                    "the node is busy with large scans (", Core::kMaxScanReplyBytesReserved,
                    " bytes of replies in flight); retry")),
                reply.initRefused());
        Queue(kj::READY_NOW, kj::mv(builder), Kind::kRead);
        return true;
      }
      reservation = kj::heap<ScanReservation>(core_);
      held_bytes_ += schema::MAX_SCAN_REPLY_BYTES;
    }
    if (deferred_.empty() && !MustWait(kind)) {
      Queue(Start(request, reply, kind), kj::mv(builder), kind, kj::mv(reservation));
      return true;
    }
    // Its turn comes in Drain(), once the requests before it allow.
    uint64_t bytes = words * sizeof(capnp::word);
    held_bytes_ += bytes;
    auto paf = kj::newPromiseAndFulfiller<kj::Promise<void>>();
    deferred_.push_back(Deferred{kj::mv(message), reply, kind, bytes, kj::mv(paf.fulfiller)});
    Queue(kj::mv(paf.promise), kj::mv(builder), kind, kj::mv(reservation));
    return true;
  }

  // Whether a request of `kind` must wait for those served before it: a read for their writes
  // to be applied, a write for their scans on a worker to have read.
  bool MustWait(Kind kind) const {
    return kind == Kind::kWrite ? worker_reads_ > 0 : writes_ > 0;
  }

  // Serves the deferred requests whose turn has come, in order. Writes that become free
  // together are served together, so they share a group commit.
  void Drain() {
    while (!deferred_.empty() && !MustWait(deferred_.front().kind)) {
      Deferred d = kj::mv(deferred_.front());
      deferred_.pop_front();
      held_bytes_ -= d.bytes;
      auto request = d.message->getRoot<schema::Request>();
      d.served->fulfill(Start(request, d.reply, d.kind).attach(kj::mv(d.message)));
    }
  }

  // Serves a request whose turn has come; counts it until it is served.
  kj::Promise<void> Start(schema::Request::Reader request, schema::Reply::Builder reply,
                          Kind kind) {
    if (kind == Kind::kRead) return Serve(request, reply);  // nothing waits on it
    if (kind == Kind::kWrite) ++writes_;
    if (kind == Kind::kWorkerRead) ++worker_reads_;
    // Eager: the counts must drop when the request is served, not when the reply queue
    // reaches it (a continuation in KJ runs only when its promise is waited on).
    return Serve(request, reply)
        .then([this, kind]() {
          if (kind == Kind::kWrite) --writes_;
          if (kind == Kind::kWorkerRead) --worker_reads_;
          Drain();
        })
        .eagerlyEvaluate(nullptr);
  }

  // Core::Serve, with a request that fails to decode or to be served answered `refused`.
  kj::Promise<void> Serve(schema::Request::Reader request, schema::Reply::Builder reply) {
    return kj::evalNow([&]() { return core_.Serve(request, reply); })
        .catch_([reply](kj::Exception&& e) mutable {
          absl::Status why = RefusalOf(e);
          if (absl::IsInternal(why)) {  // the node's own fault: logged too
            spdlog::error("internal error serving a client request: {}",
                          e.getDescription().cStr());
          }
          ToCapnp(why, reply.initRefused());
        });
  }

  // Writes the reply in `builder` once `served` resolves and the replies before it are out.
  // `reservation` (a scan's; null for other requests) holds the node's scan budget, and its
  // maxScanReplyBytes count against kMaxHeldBytes, until the reply is built; the built reply
  // counts against kMaxHeldBytes until it is written.
  void Queue(kj::Promise<void> served, kj::Own<capnp::MallocMessageBuilder> builder,
             Kind kind, kj::Own<ScanReservation> reservation = {}) {
    ++inflight_;
    // A read's reply may be large: it counts against kMaxHeldBytes until it is written. (A
    // write's is a few words, and writes are bounded by the write queue.)
    kj::Own<uint64_t> held;
    if (kind != Kind::kWrite) {
      held = kj::heap<uint64_t>(0);
      served = served
                   .then([this, b = builder.get(), h = held.get(),
                          reservation = kj::mv(reservation)]() mutable {
                     *h = capnp::computeSerializedSizeInWords(*b) * sizeof(capnp::word);
                     held_bytes_ += *h;
                     if (reservation.get() != nullptr) held_bytes_ -= schema::MAX_SCAN_REPLY_BYTES;
                     // Built: from here the connection's bound holds the reply, so a client
                     // that reads slowly keeps no share of the node's scan budget.
                     reservation = nullptr;
                   })
                   .eagerlyEvaluate(nullptr);  // counted once built, not once sent
    }
    tail_ = kj::joinPromises(kj::arr(kj::mv(tail_), kj::mv(served)))
                .then([this, builder = kj::mv(builder), held = kj::mv(held)]() mutable {
                  --inflight_;
                  if (held.get() != nullptr) held_bytes_ -= *held;
                  return capnp::writeMessage(*stream_, *builder).attach(kj::mv(builder));
                })
                .eagerlyEvaluate(nullptr);
  }

  // A request waiting for its turn; `served` takes the promise of its serving.
  struct Deferred {
    kj::Own<capnp::MessageReader> message;
    schema::Reply::Builder reply;
    Kind kind;
    uint64_t bytes;
    kj::Own<kj::PromiseFulfiller<kj::Promise<void>>> served;
  };

  Core& core_;
  kj::Own<BufferedStream> stream_;
  kj::Timer& timer_;
  const FdStream* socket_;  // in stream_, or null
  kj::byte discard_[4096];  // Discard() reads into it
  std::deque<Deferred> deferred_;  // in the order sent (destroyed after tail_)
  kj::Promise<void> tail_ = kj::READY_NOW;  // every reply queued so far is written
  size_t inflight_ = 0;      // requests whose reply is not written yet
  size_t writes_ = 0;        // writes being served (not yet applied)
  size_t worker_reads_ = 0;  // scans running on a worker
  uint64_t held_bytes_ = 0;  // deferred requests and read replies not yet written
};

// Accepts connections on the listen address and tells clients from nodes by the first bytes:
// a client sends the client protocol's preamble; a node speaks Cap'n Proto RPC, whose first
// word (a segment count below 512) can never spell it.
class Listener final : private kj::TaskSet::ErrorHandler {
 public:
  Listener(Core& core, kj::ConnectionReceiver& receiver, kj::AsyncIoContext& io)
      : core_(core), receiver_(receiver), io_(io), connections_(*this) {}

  // Unidentified connections allowed beside a full house of clients, so that a peer can
  // still connect (and be told apart) when every client place is taken.
  static constexpr uint32_t kSpareUnrouted = 16;
  // Clients past max_client_connections being told so at once (each for up to 2 s).
  static constexpr uint32_t kMaxRefusing = 16;

  // Accepts until the node stops. A failed accept() (EMFILE and ENFILE when descriptors run
  // out, ENOBUFS, ENOMEM) ends nothing: the listener waits, longer after each failure in a
  // row, and accepts again; connections wait in the backlog meanwhile.
  kj::Promise<void> AcceptLoop() {
    // KJ's accept() throws at once when the listening socket was readable, and later (a
    // rejected promise) when it had to wait: both failures are handled alike.
    kj::Promise<kj::Own<kj::AsyncIoStream>> accepted = nullptr;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { accepted = receiver_.accept(); })) {
      return AcceptFailed(kj::mv(*e));
    }
    return accepted.then(
        [this](kj::Own<kj::AsyncIoStream> connection) {
          accept_backoff_ms_ = 0;
          auto& stats = core_.connection_stats();
          if (unrouted_ + stats.clients >=
              core_.options().max_client_connections + kSpareUnrouted) {
            ++stats.refused;
            // Closed at once (dropping it closes it): without a free place it would only
            // hold a descriptor until its preamble time-out.
            LogRarely("refused a connection: the node holds as many as it may (",
                      stats.clients, " clients and ", unrouted_, " not yet identified)");
            return AcceptLoop();
          }
          auto socket = FdStream::Wrap(kj::mv(connection), io_);
          const FdStream* fd = dynamic_cast<const FdStream*>(socket.get());
          connections_.add(Route(kj::heap<BufferedStream>(kj::mv(socket)), fd,
                                 kj::heap<Unrouted>(unrouted_)));
          return AcceptLoop();
        },
        [this](kj::Exception&& e) { return AcceptFailed(kj::mv(e)); });
  }

  // After a failed accept(): counted, logged at most once a second, and accepted again after
  // a pause that doubles with each failure in a row, up to 1 s.
  kj::Promise<void> AcceptFailed(kj::Exception&& e) {
    ++core_.connection_stats().accept_failures;
    accept_backoff_ms_ = std::clamp<uint32_t>(accept_backoff_ms_ * 2, 10, 1000);
    LogRarely("accepting a connection failed (", e.getDescription().cStr(),
              "); accepting again in ", accept_backoff_ms_, " ms");
    return io_.provider->getTimer()
        .afterDelay(accept_backoff_ms_ * kj::MILLISECONDS)
        .then([this]() { return AcceptLoop(); });
  }

 private:
  void taskFailed(kj::Exception&& e) override {
    // A client going away mid-request is routine; a refused request was logged already.
    spdlog::debug("client connection ended: {}", e.getDescription().cStr());
  }

  // Resolves when the connection counting its sessions in `sessions` has had none at a look
  // every preamble_timeout_ms.
  kj::Promise<void> ClosesWithoutSession(std::shared_ptr<uint32_t> sessions) {
    return io_.provider->getTimer()
        .afterDelay(core_.options().preamble_timeout_ms * kj::MILLISECONDS)
        .then([this, sessions = std::move(sessions)]() mutable -> kj::Promise<void> {
          if (*sessions > 0) return ClosesWithoutSession(std::move(sessions));
          LogRarely("closing a node connection with no follower session on it");
          return kj::READY_NOW;
        });
  }

  // Logs at most once a second: a flood must not fill the disk with the same line.
  template <typename... Args>
  void LogRarely(const Args&... args) {
    int64_t now = NowUs();
    if (now - last_refusal_log_us_ < 1'000'000) return;
    last_refusal_log_us_ = now;
    spdlog::warn("{}", absl::StrCat(args...));
  }

  // Counts a connection as not yet identified while it lives, unless Release()d first: so
  // the count drops whether routing ends well, fails (a reset before the preamble) or is
  // cancelled.
  class Unrouted {
   public:
    explicit Unrouted(uint32_t& count) : count_(&count) { ++*count_; }
    ~Unrouted() { Release(); }
    void Release() {
      if (count_ != nullptr) --*count_;
      count_ = nullptr;
    }

   private:
    uint32_t* count_;
  };

  kj::Promise<void> Route(kj::Own<BufferedStream> stream, const FdStream* socket,
                          kj::Own<Unrouted> unrouted) {
    BufferedStream& s = *stream;
    // A connection that does not say what it speaks within the bound is closed.
    auto first_bytes = s.Peek(kPreambleBytes).exclusiveJoin(
        io_.provider->getTimer()
            .afterDelay(core_.options().preamble_timeout_ms * kj::MILLISECONDS)
            .then([]() { return kj::ArrayPtr<const kj::byte>(); }));
    return first_bytes.then([this, stream = kj::mv(stream), socket,
                             unrouted = kj::mv(unrouted)](
                                kj::ArrayPtr<const kj::byte> head) mutable -> kj::Promise<void> {
      if (head.size() < kPreambleBytes) return kj::READY_NOW;  // closed or silent
      kj::StringPtr preamble = schema::CLIENT_PREAMBLE;
      auto text = head.slice(0, kPreambleBytes).asChars();
      if (text == preamble.asArray()) {
        kj::byte skipped[kPreambleBytes];
        BufferedStream& client = *stream;
        return client.tryRead(skipped, kPreambleBytes, kPreambleBytes)
            .then([this, stream = kj::mv(stream), socket,
                   unrouted = kj::mv(unrouted)](size_t) mutable -> kj::Promise<void> {
              auto connection = kj::heap<ClientConnection>(core_, kj::mv(stream),
                                                           io_.provider->getTimer(), socket);
              uint32_t limit = core_.options().max_client_connections;
              auto& stats = core_.connection_stats();
              if (stats.clients >= limit) {
                ++stats.refused;
                unrouted->Release();
                LogRarely("refused a client: ", stats.clients, " client connections are open ",
                          "(max_client_connections)");
                // The refusal goes out (Linger, 2 s at most) for at most kMaxRefusing
                // connections at once, counted apart from the places peers need; past
                // that, the connection just closes.
                if (refusing_ >= kMaxRefusing) return kj::READY_NOW;
                ++refusing_;
                auto refused = connection->RunRefused(absl::UnavailableError(absl::StrCat(
                    "the node serves ", limit, " client connections already "
                    "(max_client_connections); retry later")));
                return refused.attach(kj::mv(connection), kj::defer([this]() { --refusing_; }));
              }
              unrouted->Release();
              ++stats.clients;
              auto run = connection->Run();
              return run.attach(kj::mv(connection),
                                kj::defer([this]() { --core_.connection_stats().clients; }));
            });
      }
      if (text.slice(0, 7) == preamble.asArray().slice(0, 7)) {
        spdlog::warn("refused a client speaking protocol '{}'; this node speaks '{}'",
                     std::string(text.begin(), text.size()), preamble.cStr());
        return kj::READY_NOW;
      }
      unrouted->Release();
      auto& stats = core_.connection_stats();
      if (stats.peers >= kMaxPeerConnections) {
        ++stats.refused;
        LogRarely("refused a node connection: ", stats.peers, " are open");
        return kj::READY_NOW;
      }
      ++stats.peers;
      auto peer = kj::heap<PeerConnection>(kj::mv(stream), core_);
      auto ended = peer->network.onDisconnect();
      // Nodes connect to subscribe: a connection with no live follower session for
      // preamble_timeout_ms (none began, or it was replaced by a session of the same id on
      // another connection) is closed, so that made-up peers cannot hold the places of real
      // ones: the live ones are at most one per configured follower.
      auto deadline = ClosesWithoutSession(peer->sessions);
      return ended.exclusiveJoin(kj::mv(deadline))
          .attach(kj::mv(peer), kj::defer([this]() { --core_.connection_stats().peers; }));
    });
  }

  static constexpr size_t kPreambleBytes = 8;
  Core& core_;
  kj::ConnectionReceiver& receiver_;
  kj::AsyncIoContext& io_;
  uint32_t accept_backoff_ms_ = 0;  // after a failed accept(); 0 after a good one
  uint32_t unrouted_ = 0;           // accepted, protocol not yet known
  uint32_t refusing_ = 0;           // clients being told the node is full
  int64_t last_refusal_log_us_ = 0;
  kj::TaskSet connections_;  // last: destroyed first, while the counts above still exist
};

class NodeServerImpl final : public NodeServer {
 public:
  NodeServerImpl(NodeServerOptions options, int lock_fd, std::unique_ptr<engine::Engine> engine,
                 std::unique_ptr<replication::Leader> leader,
                 std::unique_ptr<replication::Follower> follower)
      : options_(std::move(options)),
        lock_fd_(lock_fd),
        engine_(std::move(engine)),
        leader_(std::move(leader)),
        follower_(std::move(follower)) {}

  ~NodeServerImpl() override {
    follower_.reset();
    leader_.reset();
    engine_.reset();
    ::close(lock_fd_);
  }

  absl::Status Run() override {
    try {
      auto io = kj::setupAsyncIo();
      Core core(options_, *engine_, leader_.get(), follower_.get(), io);
      auto addr = io.provider->getNetwork().parseAddress(options_.listen).wait(io.waitScope);
      kj::Own<kj::ConnectionReceiver> listener;
      KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { listener = addr->listen(); })) {
        return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen, ": ",
                                                   e->getDescription().cStr()));
      }
      Listener accepting(core, *listener, io);
      auto serving = accepting.AcceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
        spdlog::error("listener failed: {}", e.getDescription().cStr());
      });
      spdlog::info("node '{}' ({}) of cluster '{}' listening on {}; latest seq {}",
                   options_.node_id, leader_ ? "leader" : "follower", options_.cluster,
                   options_.listen, engine_->LatestSequence());
      core.Start();
      auto term = io.unixEventPort.onSignal(SIGTERM);
      auto intr = io.unixEventPort.onSignal(SIGINT);
      siginfo_t info = term.exclusiveJoin(kj::mv(intr)).wait(io.waitScope);
      spdlog::info("received {}; stopping", info.si_signo == SIGTERM ? "SIGTERM" : "SIGINT");
      // A write group on a worker finishes before the pool is destroyed with the Core;
      // writes still queued were never written and never acknowledged.
      for (int i = 0; i < 10000 && core.writer_busy(); ++i) {
        io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
      }
    } catch (kj::Exception& e) {
      return absl::UnavailableError(e.getDescription().cStr());
    }
    if (absl::Status s = engine_->SyncWal(); !s.ok()) {
      spdlog::error("final WAL fsync failed: {}", s.ToString());
    }
    // Like PostgreSQL's shutdown checkpoint: with the memtables in SSTables, the next start
    // opens at once instead of replaying up to write_buffer_bytes of WAL (W4 measured the
    // restart at 0.26 s after a million writes). The WAL is synced already, so a failure
    // here loses nothing.
    if (absl::Status s = engine_->Flush(); !s.ok()) {
      spdlog::warn("flushing memtables at shutdown failed: {}; the next start replays the WAL",
                   s.ToString());
    }
    spdlog::info("node '{}' stopped at seq {}", options_.node_id, engine_->LatestSequence());
    return absl::OkStatus();
  }

 private:
  NodeServerOptions options_;
  int lock_fd_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<replication::Leader> leader_;
  std::unique_ptr<replication::Follower> follower_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit and fits the node's descriptors within it:
// client connections, peer connections and unidentified ones, a spare for the node's and
// RocksDB's own files (listen socket, epoll, lock, WAL, manifest), and SSTables
// (max_open_files, at least kMinSstFiles). max_client_connections is lowered, with a warning,
// when the limit cannot hold it; a limit too low for any client is an error.
absl::Status FitFileLimit(NodeServerOptions& options) {
  constexpr uint64_t kSpareFiles = 64;
  constexpr uint64_t kMinSstFiles = 64;
  constexpr uint64_t kMinClients = 8;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  uint64_t files = lim.rlim_cur == RLIM_INFINITY ? (uint64_t{1} << 20) : lim.rlim_cur;
  uint64_t fixed =
      kMaxPeerConnections + Listener::kSpareUnrouted + Listener::kMaxRefusing + kSpareFiles;
  if (files < fixed + kMinSstFiles + kMinClients) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the file-descriptor limit (RLIMIT_NOFILE) is ", files, "; a node needs at least ",
        fixed + kMinSstFiles + kMinClients, ": raise it (ulimit -n)"));
  }
  uint64_t room = files - fixed - kMinSstFiles;
  if (options.max_client_connections > room) {
    spdlog::warn("max_client_connections lowered from {} to {}: the file-descriptor limit "
                 "(RLIMIT_NOFILE) is {}; raise it (ulimit -n) to serve more",
                 options.max_client_connections, room, files);
    options.max_client_connections = static_cast<uint32_t>(room);
  }
  uint64_t sst = files - fixed - options.max_client_connections;
  options.engine.max_open_files = sst >= (uint64_t{1} << 30) ? -1 : static_cast<int>(sst);
  return absl::OkStatus();
}

absl::StatusOr<int> LockDataDir(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create data dir ", data_dir, ": ", ec.message()));
  }
  std::string path = data_dir + "/walshipd.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", data_dir, " is locked by another walshipd",
        n > 0 ? absl::StrCat(" (pid ", std::string(pid, strcspn(pid, "\n")), ")") : ""));
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) < 0) {
    spdlog::warn("cannot record pid in {}", path);  // the lock itself holds
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NodeServer>> NodeServer::Open(NodeServerOptions options) {
  if (absl::Status s = FitFileLimit(options); !s.ok()) return s;
  absl::StatusOr<int> lock_fd = LockDataDir(options.data_dir);
  if (!lock_fd.ok()) return lock_fd.status();
  auto fail = [&](absl::Status s) {
    ::close(*lock_fd);
    return s;
  };
  std::string state_path = options.data_dir + "/node-state";
  absl::StatusOr<replication::NodeState> state = replication::LoadNodeState(state_path);
  if (!state.ok()) return fail(state.status());
  options.engine.path = options.data_dir + "/db";
  auto engine = engine::Engine::Open(options.engine);
  if (!engine.ok()) return fail(engine.status());
  std::unique_ptr<replication::Leader> leader;
  std::unique_ptr<replication::Follower> follower;
  SequenceNumber latest = (*engine)->LatestSequence();
  if (options.is_leader && !state->needs_snapshot.empty()) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "node '", options.node_id, "' may not lead: as a follower it was told its data is "
        "stale (", state->needs_snapshot, ", in ", state_path, "); re-seed it first")));
  }
  if (options.is_leader) {
    // Each start as leader begins a new epoch at the next sequence number (BeginEpoch).
    if (state->database_id.empty()) state->database_id = replication::NewDatabaseId();
    replication::BeginEpoch(*state, latest + 1, options.node_id);
    if (absl::Status s = replication::SaveNodeState(state_path, *state); !s.ok()) return fail(s);
    options.leader.cluster = options.cluster;
    options.leader.node_id = options.node_id;
    options.leader.read_wal_inline = false;  // ReadWalFor reads it off the loop
    options.leader.max_wal_read_bytes = std::min<uint64_t>(
        options.leader.max_ship_bytes * std::max<uint32_t>(1, options.max_inflight_ships),
        kMaxWalReadBytes);
    leader = std::make_unique<replication::Leader>(options.leader, engine->get(),
                                                   std::move(*state), replication::RealClock());
  } else {
    replication::FollowerOptions fo;
    fo.cluster = options.cluster;
    fo.node_id = options.node_id;
    fo.state_path = state_path;
    fo.fsync_apply = options.fsync_apply;
    follower = std::make_unique<replication::Follower>(fo, engine->get(), std::move(*state),
                                                       replication::RealClock());
  }
  return std::unique_ptr<NodeServer>(new NodeServerImpl(std::move(options), *lock_fd,
                                                        std::move(*engine), std::move(leader),
                                                        std::move(follower)));
}

}  // namespace walship::rpc
