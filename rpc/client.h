// A blocking client for one walship node, used by the CLI, tests and benchmarks. It speaks
// the client protocol of rpc/client.capnp over one TCP connection (docs/protocol.md).
//
// Thread safety: none; a Client is used by one thread at a time. It runs no event loop, so a
// thread may also run a KJ loop of its own (a node, in tests). Every call is bounded by the
// timeout given to Connect(). A failed call closes the connection, and the next call
// connects again.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/engine.h"
#include "replication/durability.h"
#include "replication/membership.h"
#include "replication/reads.h"
#include "rpc/tls_options.h"

namespace walship::rpc {

struct WriteResult {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  bool degraded = false;  // acknowledged without the followers it asked for (the leader runs
                          // async for now: sync timeout policy `degrade`)
  uint64_t epoch = 0;     // the leader's epoch it was written in
  bool duplicate = false;  // WriteWithId: the id named a write made before, whose outcome
                           // this is; nothing was written now
};

// What each write sent from now on asks of replication (docs/replication.md); by default the
// cluster's configured mode and level.
struct WriteOptions {
  std::optional<replication::ReplicationMode> mode;  // unset: the cluster's
  uint32_t acks = 0;  // semi-sync: how many followers; 0: the cluster's. > 0 without a mode
                      // asks for semi-sync
  std::optional<replication::AckLevel> level;  // unset: the cluster's
  // Applied only if this holds when the leader writes it; else kFailedPrecondition with
  // IsConditionFailed (rpc/convert.h) and nothing is written.
  std::optional<engine::Condition> condition;
  // How long a write may wait for its followers beyond the client's timeout (the cluster's
  // sync_timeout_ms, so that its verdict arrives before the client gives up).
  absl::Duration wait = absl::ZeroDuration();
};

struct FollowerStatusInfo {
  std::string id, state;
  uint64_t sent_seq = 0, received_seq = 0, durable_seq = 0, applied_seq = 0, lag_seq = 0;
  int64_t lag_ms = 0;
  uint64_t bytes_shipped = 0;
  int64_t last_ack_ago_ms = -1;
  std::string message;
  uint64_t wal_pinned_bytes = 0;  // WAL the leader keeps for it
  bool voter = true;              // false: a learner
  int64_t heartbeat_ago_ms = -1;  // since it last answered a heartbeat; -1: never
  double heartbeat_phi = 0;
  bool silent = false;  // no answer to a heartbeat and no ack for heartbeat_timeout_ms
};

struct NodeStatusInfo {
  std::string node, cluster, role, database_id, listen, leader_id, leader_address;
  uint64_t latest_seq = 0, data_bytes = 0, epoch = 0;
  std::vector<FollowerStatusInfo> followers;  // leader only
  std::string replication_state;               // follower only, and below
  uint64_t applied_seq = 0, leader_latest_seq = 0, lag_seq = 0;
  int64_t lag_ms = 0;
  std::string message;
  uint64_t writes_accepted = 0, write_groups = 0;
  uint32_t client_connections = 0, peer_connections = 0;
  uint64_t connections_refused = 0, accept_failures = 0, auth_failures = 0;
  std::string storage_error;  // why the node's storage refuses writes; empty when it does not
  std::string handover_to;    // leader: the follower it is handing leadership to, or empty
  // The cluster's replication as configured, and on a leader how it stands.
  std::string replication_mode, ack_level, on_sync_timeout;
  uint32_t replication_acks = 0, sync_timeout_ms = 0, writes_waiting = 0;
  int64_t degraded_for_ms = -1;
  uint64_t writes_not_replicated = 0, writes_degraded = 0;
  // Followers: on the way to serving reads ("snapshot: copying ...", "catching up: lag N",
  // "ready"), and while seeded the checkpoint's bytes verified and in all.
  std::string phase;
  bool ready = false;
  uint64_t seed_done_bytes = 0, seed_total_bytes = 0;
  uint64_t wal_bytes = 0;          // WAL files this node holds
  uint32_t snapshots_serving = 0;  // checkpoints being read from it
  // The cluster's membership as this node knows it; on a leader, the voters that do not hold
  // its last change yet while fewer than a majority do.
  uint64_t membership_version = 0;
  std::vector<replication::Member> members;
  std::string membership_waiting_for;
  std::string failover;  // the election or the lease ("" when failover is off)
  int64_t leader_heartbeat_ago_ms = -1;  // follower: since its leader's last heartbeat
  double leader_heartbeat_phi = 0;
};

struct MembershipResult {
  uint64_t version = 0;
  std::vector<replication::Member> members;
};

struct PromoteResult {
  std::string leader;
  uint64_t epoch = 0;
  uint64_t possible_loss = 0;  // writes it knew its old leader held beyond its own log
};

struct HandoverResult {
  std::string leader;  // the node that leads now
  uint64_t epoch = 0;  // the epoch it began
};

// One JSON object (fields as in docs/cli.md).
std::string StatusToJson(const NodeStatusInfo& s);
// A human-readable, multi-line rendering.
std::string StatusToText(const NodeStatusInfo& s);

// What each read sent from now on asks for (docs/reads.md); by default nothing: whatever the
// node holds now.
struct ReadOptions {
  // Answered only by a node that has applied this position, in the same history: the token
  // of a write (WriteResult::epoch, last_seq) or of a read (Client::last_read).
  replication::ReadToken after;
  // Answered only by a node that knows itself within this many ms of its leader; -1: any.
  int64_t max_lag_ms = -1;
  // How long a node may wait for `after` or the lag bound before it answers unavailable
  // (0: 1000 ms); the call's timeout grows by as much.
  uint32_t wait_ms = 0;
  // Committed reads (served by the leader once its followers hold everything they see).
  bool committed = false;
};

// Batches of a node's WAL (Client::ReadWal).
struct WalPage {
  struct Entry {
    engine::Batch batch;
    uint64_t epoch = 0;  // by the node's history; 0 when it does not reach back to it
  };
  std::vector<Entry> batches;
  engine::SequenceNumber latest_seq = 0;  // the node's, when it read them
};

// One key range's checksum in `walship verify` (rpc/verify_service.h).
struct RangeSum {
  std::string last_key;  // inclusive; "" for the open range after the last bound
  uint64_t keys = 0;
  std::string digest;    // the first 8 bytes of SHA-256 over the range's keys and values
};

// One step of `walship verify` (rpc/client.capnp, VerifyRequest; tools/verify.cc runs them).
struct VerifyCall {
  enum Kind { kHold, kSnapshot, kResume, kChecksum, kDrop } kind = kHold;
  uint64_t id = 0;                  // all but kHold
  engine::SequenceNumber seq = 0;   // kSnapshot
  uint64_t epoch = 0;               // kSnapshot
  uint32_t ms = 0;                  // kHold: the hold's bound; kSnapshot: the wait's
  std::vector<std::string> bounds;  // kChecksum: each range's last key; empty: by range_keys
  uint32_t range_keys = 0;          // kChecksum without bounds
};
struct VerifyAnswer {
  uint64_t id = 0;
  engine::SequenceNumber seq = 0;
  uint64_t epoch = 0;
  std::vector<RangeSum> ranges;  // kChecksum
};

// How a client connects.
struct ConnectOptions {
  // The cluster secret, proven on every connection before anything else (rpc/auth.h); empty:
  // none (a node that has one answers every request `unauthenticated`).
  std::string secret;
  // TLS (rpc/tls_channel.h): the node's certificate must chain to tls.ca_file and name
  // TlsServerName(tls, endpoint); tls.cert_file and key_file are presented when the node asks
  // for a client certificate. ca_file empty: plain text.
  TlsOptions tls;
};

class Client {
 public:
  // Connects to "host:port". kUnavailable (naming the endpoint) when the node cannot be
  // reached within `timeout`; the same timeout then bounds every call. kUnauthenticated when
  // the node and this client do not share the cluster secret.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& endpoint,
                                                          absl::Duration timeout,
                                                          ConnectOptions options = {});
  virtual ~Client() = default;

  // What the writes sent from now on ask for (replication, condition).
  virtual void SetWriteOptions(const WriteOptions& options) = 0;
  // true: reads sent from now on are committed reads (served by the leader once its
  // followers hold everything they see, as the cluster's replication asks).
  virtual void SetCommittedReads(bool committed) = 0;
  // What the reads sent from now on ask for (replaces SetCommittedReads's choice too).
  virtual void SetReadOptions(const ReadOptions& options) = 0;
  // Read-your-writes and monotonic reads for this client object: from now on it remembers the
  // latest position it wrote or read (starting at `start`), and every read asks for it, at
  // whichever node it is sent to. A client that moves to another node (Connect) may carry
  // session() over with UseSession(session()).
  virtual void UseSession(replication::ReadToken start = {}) = 0;
  virtual replication::ReadToken session() const = 0;
  // The position the last read answered saw (its token), {0, 0} before any.
  virtual replication::ReadToken last_read() const = 0;

  // Errors: a not-leader error (IsNotLeader / LeaderHint in rpc/convert.h) on a follower,
  // kUnavailable when the node cannot be reached in time, a not-replicated error
  // (IsNotReplicated) when its followers did not acknowledge it as asked: it is written on
  // the leader, and its fate after a failover is in doubt.
  // A write sent whose answer did not come (the connection broke, or the timeout passed) is
  // an in-doubt error (IsInDoubt; kUnavailable): it may or may not have been applied. Do not
  // send it again blindly; read it back, or use WriteWithId.
  virtual absl::StatusOr<WriteResult> Write(const std::vector<engine::WriteOp>& ops) = 0;
  // A write that carries `request_id` (1 to engine::kMaxRequestIdBytes bytes, unique per
  // write: say a random 128-bit prefix per client and a counter). The leader remembers it
  // with the write, on every node the write reaches, for the cluster's request_retention_s:
  // sent again, to this leader or to one elected since, it is answered with the first
  // outcome (WriteResult::duplicate) instead of being applied twice. So after an in-doubt
  // error, sending it again with the same id is safe, within that retention.
  virtual absl::StatusOr<WriteResult> WriteWithId(const std::vector<engine::WriteOp>& ops,
                                                  const std::string& request_id) = 0;
  // Sends every write of `writes`, keeping up to `depth` (at most 1024) in flight on this
  // connection, and returns each one's latency in nanoseconds (send to reply), in order.
  // Stops at the first error: after a write the node refused, no more are sent (those
  // already in flight may be applied); a write above the request size limit is not sent,
  // and the call returns kInvalidArgument once the writes before it are answered.
  virtual absl::StatusOr<std::vector<int64_t>> WriteMany(
      const std::vector<std::vector<engine::WriteOp>>& writes, size_t depth) = 0;
  // Sends `writes` as one pipeline (one message, one round trip): independent writes, each
  // applied atomically on its own in the order given, like Redis's pipelined commands.
  // Returns one result per write, in order; one failing does not stop the others. The outer
  // status fails when the pipeline was refused whole (a not-leader error on a follower,
  // kInvalidArgument past 10000 writes), could not be sent (kUnavailable: unreachable), or got
  // no answer within the timeout times 1 + size / 64: an in-doubt error (IsInDoubt), and then
  // any of its writes may or may not have been applied.
  virtual absl::StatusOr<std::vector<absl::StatusOr<WriteResult>>> WritePipeline(
      absl::Span<const std::vector<engine::WriteOp>> writes) = 0;
  // kNotFound when absent. A read that asks for a position or a lag bound (ReadOptions,
  // UseSession) this node cannot give in time is kUnavailable, with its leader's address as
  // LeaderHint (rpc/convert.h) when it follows one; one whose token names a write a later
  // epoch replaced is IsWriteLost (the history the node follows replaced it). `min_seq` > 0
  // asks for a bare sequence number when no token is asked for (whatever history wrote it).
  virtual absl::StatusOr<std::string> Get(const std::string& key, uint64_t min_seq = 0) = 0;
  // Up to scan.limit keys in order. A node answers at most 16 MiB of keys and values per
  // reply (maxScanReplyBytes); past it this asks again from where the reply stopped, so a
  // large scan is several reads, each of the database as it is then.
  virtual absl::StatusOr<std::vector<engine::KeyValue>> Scan(const engine::ScanOptions& scan,
                                                             uint64_t min_seq = 0) = 0;
  virtual absl::StatusOr<NodeStatusInfo> Status() = 0;
  // Asks the leader this client is connected to to hand leadership to node `target` (the
  // manual switchover), allowing it `catch_up` to apply everything first. Returns once the
  // target leads; errors name why not (not the leader, no such node, not caught up in time:
  // the old leader leads on).
  virtual absl::StatusOr<HandoverResult> Handover(const std::string& target,
                                                  absl::Duration catch_up) = 0;
  // Asks the follower this client is connected to to re-seed itself from its leader's
  // checkpoint (it needs a snapshot); OK once it has started.
  virtual absl::Status Reseed() = 0;
  // The batches this node's WAL holds from `from_seq` on (a batch boundary), at most
  // `max_batches` (1 to 1000), as it would ship them: for debugging (`walship wal show`).
  // Fewer when they reach about 16 MiB; none when `from_seq` is just past the end.
  // kInvalidArgument for a position inside a batch or beyond the end, kOutOfRange when the
  // WAL no longer holds it.
  virtual absl::StatusOr<WalPage> ReadWal(engine::SequenceNumber from_seq,
                                          uint32_t max_batches) = 0;
  // One step of comparing the replicas (`walship verify`, VerifyCall): errors as the node
  // gives them (the hold refused, a follower past the sequence number, no such snapshot).
  virtual absl::StatusOr<VerifyAnswer> Verify(const VerifyCall& call) = 0;
  // Asks the leader to add node `id` (listening on `address`) as a learner, or to remove it
  // (walship add-follower / remove-follower). Returns the membership it saved.
  virtual absl::StatusOr<MembershipResult> ChangeMembership(replication::MembershipOp op,
                                                            const std::string& id,
                                                            const std::string& address) = 0;
  // Asks the follower this client is connected to to stand for leader now (walship promote,
  // docs/failover.md): elected by a majority, past max_failover_lag, and only with
  // `accept_loss` when it knew its leader to hold writes it lacks. Returns once it leads.
  virtual absl::StatusOr<PromoteResult> Promote(bool accept_loss) = 0;
  virtual const std::string& endpoint() const = 0;

 protected:
  Client() = default;
};

}  // namespace walship::rpc
