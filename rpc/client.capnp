# The client protocol of a walship node, and the Node interface every node serves to the
# others (both on one port). See docs/protocol.md.
@0xe7c4a2d9b3f18a55;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("walship::rpc::schema");

using Peer = import "peer.capnp";

enum ErrorCode {
  ok @0;
  notFound @1;           # get: the key is absent
  invalidArgument @2;    # the request is malformed; do not retry it as is
  notLeader @3;          # writes go to the leader: see leaderHint
  unavailable @4;        # retry later or elsewhere (overloaded, behind the read's token or
                         # lag bound: see leaderHint; shutting down)
  failedPrecondition @5; # do not retry until the node's state is fixed (needs snapshot)
  dataLoss @6;           # corruption detected
  internal @7;
  unimplemented @8;      # the request asks for a feature this node does not have yet
  notReplicated @9;      # the write is committed on the leader (firstSeq..lastSeq) but its
                         # followers did not acknowledge it as asked in time (or the leader
                         # stopped leading first): whether it survives a failover is in doubt.
                         # Do not retry it blindly; read to learn its outcome.
  conditionFailed @10;   # a conditional write's condition did not hold: nothing was written
  writeLost @11;         # a read's token names a write that a later epoch replaced (it was
                         # lost in a failover): the history this node follows does not hold it
  unauthenticated @12;   # the node requires the cluster secret and this connection did not
                         # prove it (docs/operations.md); the node closes the connection
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
  leaderHint @2 :Text;   # with notLeader: "host:port" of the leader when known, else empty;
                         # with unavailable while a handover runs: the coming leader's;
                         # with unavailable for a read this follower could not serve: its
                         # leader's
  notWritten @3 :Bool;   # with unavailable for a write: it was refused before anything of it
                         # was written (a leader without its lease, stepping down or handing
                         # over; a full write queue), so sending it again cannot apply it
                         # twice. Without it an unavailable write may have failed in the
                         # storage engine, and be in the WAL.
}

enum OpType {
  put @0;
  delete @1;
  deleteRange @2;        # deletes keys in [key, value)
}

struct Op {
  type @0 :OpType;
  key @1 :Data;          # arbitrary bytes
  value @2 :Data;        # put: the value; deleteRange: the end key (exclusive)
}

enum WriteMode {
  # How many followers must have a write before it is acknowledged (docs/replication.md).
  clusterDefault @0;     # the cluster's configured mode (semiSync when acks > 0)
  async @1;              # acknowledged after the leader's local write
  semiSync @2;           # after `acks` followers, any of them, have it at `level`
  sync @3;               # after every voting follower has it at `level`
}

enum AckLevel {
  # How far a follower has taken a write when it acknowledges it.
  clusterDefault @0;     # the cluster's configured level
  received @1;           # written to its database (OS buffers): survives its process crashing
  flushed @2;            # and its WAL fsynced: survives its machine losing power
  applied @3;            # flushed and visible to reads on it (PostgreSQL's remote_apply)
}

struct Condition {
  # The write is applied only if `key` holds exactly `value` (or, with `absent`, has no value)
  # when the leader writes it; else nothing is written and the reply is conditionFailed.
  key @0 :Data;
  union {
    value @1 :Data;
    absent @2 :Void;
  }
}

struct WriteRequest {
  ops @0 :List(Op);
  mode @1 :WriteMode;
  acks @2 :UInt32;       # semiSync: how many followers (0: the cluster's)
  level @3 :AckLevel;
  condition @4 :Condition;
  hasCondition @5 :Bool;
  requestId @6 :Data;    # 1-64 bytes chosen by the client (empty: none). The leader remembers
                         # it with the write, on every node it reaches, for
                         # request_retention_s: asked again, it answers with the first
                         # outcome (duplicate set) instead of writing twice.
}

struct WriteReply {
  error @0 :Error;
  firstSeq @1 :UInt64;   # also set with notReplicated: where the write is on the leader
  lastSeq @2 :UInt64;
  degraded @3 :Bool;     # acknowledged without the followers it asked for: the leader runs
                         # async for now (sync timeout policy `degrade`)
  epoch @4 :UInt64;      # the leader's epoch the write was written in (with firstSeq, where
                         # it is in the history); 0 when it was not written
  duplicate @5 :Bool;    # its requestId named a write made before: these are that write's
                         # sequence numbers and epoch, and nothing was written now
}

struct KeyValue {
  key @0 :Data;
  value @1 :Data;
}

struct FollowerStatus {
  # One follower as the leader sees it.
  id @0 :Text;
  state @1 :Text;          # connected | disconnected | needs_snapshot | refused
  sentSeq @2 :UInt64;      # end of the last batch shipped
  receivedSeq @3 :UInt64;  # acknowledged: received
  durableSeq @4 :UInt64;   # acknowledged: fsynced
  appliedSeq @5 :UInt64;   # acknowledged: applied
  lagSeq @6 :UInt64;       # leader latest - applied
  lagMs @7 :Int64;         # age of the oldest write not yet applied
  bytesShipped @8 :UInt64; # batch bytes sent since the leader started
  lastAckAgoMs @9 :Int64;  # -1: never acked
  message @10 :Text;       # why it needs a snapshot or was refused
  walPinnedBytes @11 :UInt64;  # WAL bytes the leader keeps for it (from its position on)
  voter @12 :Bool;         # false: a learner (not waited for by sync modes, no vote)
  heartbeatAgoMs @13 :Int64;   # since it last answered a heartbeat (rpc/heartbeats.h); -1: never
  heartbeatPhi @14 :Float64;   # phi of its answers (replication/failure_detector.h)
  silent @15 :Bool;            # no answer to a heartbeat and no ack for heartbeat_timeout_ms
}

struct NodeStatus {
  node @0 :Text;           # node id
  cluster @1 :Text;
  role @2 :Text;           # leader | follower (it changes at run time: handover)
  latestSeq @3 :UInt64;    # latest sequence number of the local database
  dataBytes @4 :UInt64;    # SSTables + memtables, estimated
  epoch @5 :UInt64;
  databaseId @6 :Text;
  listen @7 :Text;
  leaderId @8 :Text;       # follower: its leader's id
  leaderAddress @9 :Text;  # follower: its leader's address
  followers @10 :List(FollowerStatus);   # leader only
  # Follower only:
  replicationState @11 :Text;  # connecting | streaming | needs_snapshot
  appliedSeq @12 :UInt64;
  leaderLatestSeq @13 :UInt64;
  lagSeq @14 :UInt64;
  lagMs @15 :Int64;
  message @16 :Text;
  writesAccepted @17 :UInt64;  # client write requests acknowledged since start
  writeGroups @18 :UInt64;     # RocksDB writes they were grouped into
  clientConnections @19 :UInt32;  # being served now
  peerConnections @20 :UInt32;    # node-to-node connections open now
  connectionsRefused @21 :UInt64; # since start: over max_client_connections or other caps
  acceptFailures @22 :UInt64;     # since start: accept() failed (descriptors ran out, ...)
  storageError @23 :Text;         # why RocksDB refuses writes (disk full, I/O error); "" if not
  handoverTo @24 :Text;           # leader: the follower it is handing leadership to; "" if none
  # The cluster's replication (docs/replication.md), as configured:
  replicationMode @25 :Text;      # async | semi-sync | sync
  replicationAcks @26 :UInt32;    # semi-sync: k
  ackLevel @27 :Text;             # received | flushed | applied
  syncTimeoutMs @28 :UInt32;
  onSyncTimeout @29 :Text;        # fail | degrade
  # Leader only:
  degradedForMs @30 :Int64;       # -1: not degraded; else running async for this long
  writesWaiting @31 :UInt32;      # writes and committed reads waiting for followers now
  writesNotReplicated @32 :UInt64;  # since start: writes answered notReplicated
  writesDegraded @33 :UInt64;     # since start: writes acknowledged degraded
  # Follower only: where it is on its way to serving reads (docs/checkpoints.md):
  phase @34 :Text;    # "snapshot: copying 43% (180 MiB of 420 MiB, 95 MiB/s) from n1",
                      # "catching up: lag 12345", "ready", "needs_snapshot", "connecting"
  ready @35 :Bool;    # streaming within ready_lag of its leader
  seedDoneBytes @36 :UInt64;   # being seeded: bytes of the checkpoint verified so far
  seedTotalBytes @37 :UInt64;  # and in all
  # Every node:
  walBytes @38 :UInt64;        # WAL files held (archived and live)
  snapshotsServing @39 :UInt32;  # checkpoints being read from this node now
  # The cluster's membership as this node knows it (docs/membership.md):
  membershipVersion @40 :UInt64;
  members @41 :List(Peer.Member);
  membershipWaitingFor @42 :Text;  # leader: voters that do not hold the last change yet,
                                   # while fewer than a majority do ("" once settled)
  failover @43 :Text;          # automatic failover: a follower's election, a leader's lease
                               # ("" when failover is off)
  leaderHeartbeatAgoMs @44 :Int64;  # follower: since its leader's last heartbeat; -1: none
  leaderHeartbeatPhi @45 :Float64;  # and their phi (replication/failure_detector.h)
  authFailures @46 :UInt64;    # connections refused since start: no or a wrong cluster secret
}

struct GetRequest {
  key @0 :Data;
  minSeq @1 :UInt64;     # with afterEpoch, the read's token (docs/reads.md): answered once
                         # this node has applied minSeq in a history that wrote it under
                         # afterEpoch; writeLost when a later epoch replaced it. afterEpoch 0:
                         # a bare sequence number, whatever history wrote it. 0: no token
  committed @2 :Bool;    # leader only: answer once everything the read sees has reached the
                         # cluster's replication level (a majority read), within the sync
                         # timeout, else unavailable
  afterEpoch @3 :UInt64;
  maxLagMs @4 :Int64 = -1;  # >= 0: answered only while this node knows itself within this
                            # many ms of its leader (the leader: 0); -1: any lag
  waitMs @5 :UInt32;     # how long the node may wait for the token or the lag bound before it
                         # answers unavailable (0: 1000; at most 60000)
}

struct GetReply {
  error @0 :Error;       # notFound when the key is absent
  value @1 :Data;
  seq @2 :UInt64;        # the position read: the last sequence number the read saw ...
  epoch @3 :UInt64;      # ... and the epoch it was written under (with seq: a read token)
}

struct ScanRequest {
  start @0 :Data;        # keys >= start ...
  prefix @1 :Data;       # ... having this prefix, in order
  limit @2 :UInt32;      # at most this many (0: 1000; capped at 100000)
  minSeq @3 :UInt64;     # minSeq to waitMs: as in GetRequest
  committed @4 :Bool;    # as GetRequest.committed
  afterEpoch @5 :UInt64;
  maxLagMs @6 :Int64 = -1;
  waitMs @7 :UInt32;
}

struct ScanReply {
  error @0 :Error;
  items @1 :List(KeyValue);
  seq @2 :UInt64;        # the position read, as in GetReply: every item is of one snapshot
  epoch @5 :UInt64;      # at this sequence number
  truncated @3 :Bool;    # cut short by the reply's byte bound (maxScanReplyBytes) before the
                         # limit: more keys may follow; ask again from nextStart
  nextStart @4 :Data;    # when truncated: the start of the next scan (the last key + 0x00)
}

const maxScanReplyBytes :UInt64 = 16777216;
# A scan reply holds keys and values up to this many bytes, and the one that crosses it.

struct WalReadRequest {
  fromSeq @0 :UInt64;      # the first batch's first sequence number (a batch boundary)
  maxBatches @1 :UInt32;   # at most this many (1 to 1000; 0: 100)
}

struct WalBatch {
  firstSeq @0 :UInt64;
  count @1 :UInt64;        # sequence numbers it consumed: [firstSeq, firstSeq + count)
  epoch @2 :UInt64;        # the epoch it was written under, by this node's history (0: unknown)
  data @3 :Data;           # RocksDB's WriteBatch bytes, as the WAL holds them and as shipped
}

struct WalReadReply {
  error @0 :Error;         # invalidArgument: fromSeq inside a batch or past the end;
                           # outOfRange: the WAL no longer holds it (purged)
  batches @1 :List(WalBatch);  # in order, up to maxBatches and about maxScanReplyBytes (at
                               # least one when there is one)
  latestSeq @2 :UInt64;    # this node's latest sequence number when read
}

struct VerifyRequest {
  # `walship verify` (docs/cli.md): the replicas compared at one sequence number. The leader
  # holds its writes for a moment and keeps a snapshot at its latest sequence number; each
  # follower keeps one once it has applied exactly that far; the leader lets writes go on;
  # then every node checksums its snapshot over the same key ranges, at leisure.
  union {
    hold @0 :UInt32;        # leader: hold writes (queued, not refused) for at most this many
                            # ms, keep a snapshot at the latest seq; answers id, seq, epoch
    snapshot @1 :VerifyAt;  # follower: keep a snapshot once applied reaches exactly `seq`
    resume @2 :UInt64;      # leader: end the hold of this id (writes go on)
    checksum @3 :VerifyChecksum;  # any: checksums of the snapshot of `id`, range by range
    drop @4 :UInt64;        # any: forget the snapshot of this id (unused ones go after 60 s)
  }
}

struct VerifyAt {
  id @0 :UInt64;
  seq @1 :UInt64;
  epoch @2 :UInt64;        # the leader's epoch at seq: a node of another history refuses
  waitMs @3 :UInt32;       # how long to wait until applied reaches seq
}

struct VerifyChecksum {
  id @0 :UInt64;
  bounds @1 :List(Data);   # each range's last key (inclusive), in order, then one open range;
                           # empty: ranges of rangeKeys keys each, which the answer names
  rangeKeys @2 :UInt32;    # with no bounds: keys per range
}

struct VerifyRange {
  lastKey @0 :Data;        # the range's last key (with bounds: the bound; the open range: "")
  keys @1 :UInt64;
  digest @2 :Data;         # SHA-256 of the range's keys and values in order (8 bytes of it)
}

struct VerifyReply {
  error @0 :Error;
  id @1 :UInt64;
  seq @2 :UInt64;
  epoch @3 :UInt64;
  ranges @4 :List(VerifyRange);
}

struct WriteManyRequest {
  writes @0 :List(WriteRequest);
}

struct WriteManyReply {
  error @0 :Error;       # the pipeline refused whole: then no replies
  replies @1 :List(WriteReply);
}

# The client protocol. A client opens a TCP connection to any node, sends the 8 bytes of
# `clientPreamble`, then Cap'n Proto messages (standard stream framing), each a Request. The
# node answers every Request with one Reply, in the order the requests came, and serves
# requests of one connection concurrently (a client may pipeline). See docs/protocol.md.
const clientPreamble :Text = "WALSHIP1";

const maxRequestBytes :UInt64 = 67108864;
# A larger Request is refused (invalidArgument) and closes its connection. 64 MiB.

const maxRequestsAhead :UInt32 = 1024;
# A node reads at most this many requests of one connection ahead of their replies (and at
# most 64 MiB of them); a client keeping more in flight waits for replies before it can send.

struct Request {
  union {
    write @0 :WriteRequest;
    # Applies ops atomically as one batch. On success the ops consumed [firstSeq, lastSeq]; a
    # read with the token (epoch, lastSeq) then sees this write, on any node (read-your-writes).
    writeMany @1 :WriteManyRequest;
    # A pipeline: independent writes in one message, like Redis's pipelined commands. Each
    # write is applied atomically on its own, in the order given, exactly as if sent with
    # `write` one after another; replies[i] answers writes[i], and one write failing does not
    # stop the others. A pipeline refused as a whole (this node is not the leader, or it holds
    # more than 10000 writes) gets `error` and no replies.
    get @2 :GetRequest;
    scan @3 :ScanRequest;
    status @4 :Void;
    handover @5 :HandoverRequest;
    # Sent to the leader: hands leadership to a follower (the manual switchover). Answered
    # once it is done (the follower leads; this node follows it) or has failed.
    reseed @6 :Void;
    # Sent to a follower that needs a snapshot (with reseed = "operator"): it starts to seed
    # itself from its leader's checkpoint. Answered at once; status shows the progress.
    changeMembership @7 :MembershipRequest;
    # Sent to the leader: adds a node as a learner, or removes one (docs/membership.md).
    # Answered once the leader has saved the new membership; followers get it next.
    promote @8 :PromoteRequest;
    # Sent to a follower (failover = true): it stands for leader now, past max_failover_lag,
    # and is elected by a majority like any candidate (docs/failover.md). Answered once it
    # won (it leads at once) or was not elected.
    walRead @9 :WalReadRequest;
    # The batches this node's WAL holds from fromSeq on, as it would ship them to a follower
    # (`walship wal show`, for debugging): any node answers, from its own WAL.
    verify @10 :VerifyRequest;
    # Compares the replicas at one sequence number (VerifyRequest above).
  }
}

enum MembershipOp {
  addLearner @0;   # a node not in the cluster joins; it votes once it is ready
  remove @1;       # a member leaves (not the leader)
}

struct MembershipRequest {
  op @0 :MembershipOp;
  id @1 :Text;        # the node id
  address @2 :Text;   # addLearner: the host:port it listens on
}

struct MembershipReply {
  error @0 :Error;    # notLeader, invalidArgument (the change does not apply), unavailable
                      # (the last change is not held by a majority of the voters yet)
  version @1 :UInt64;
  members @2 :List(Peer.Member);
}

struct PromoteRequest {
  acceptLoss @0 :Bool;   # stand even when it knew its leader to hold writes it lacks
}

struct PromoteReply {
  error @0 :Error;       # failedPrecondition: it may lose writes (and acceptLoss is off), or
                         # cannot stand; unavailable: not elected (the message says why)
  leader @1 :Text;       # the node that leads now
  epoch @2 :UInt64;      # the epoch it began
  possibleLoss @3 :UInt64;  # writes it knew its old leader held beyond its own log
}

struct HandoverRequest {
  target @0 :Text;       # the node id of the follower to lead
  timeoutMs @1 :UInt32;  # how long the follower may take to catch up (0: 10000)
}

struct HandoverReply {
  error @0 :Error;       # why not: notLeader, invalidArgument (no such follower),
                         # unavailable (it did not catch up in time; writes go on here),
                         # failedPrecondition (it refused)
  leader @1 :Text;       # the node that leads now
  epoch @2 :UInt64;      # the epoch it began
}

struct Reply {
  union {
    write @0 :WriteReply;
    writeMany @1 :WriteManyReply;
    get @2 :GetReply;
    scan @3 :ScanReply;
    status @4 :NodeStatus;
    refused @5 :Error;
    handover @6 :HandoverReply;
    reseed @7 :Error;      # ok: seeding has started (or was under way)
    changeMembership @8 :MembershipReply;
    promote @9 :PromoteReply;
    walRead @10 :WalReadReply;
    verify @11 :VerifyReply;
    # The request could not be served as sent: a kind of request this node does not know
    # (unimplemented), a field of the wrong type (invalidArgument), a scan the worker pool
    # cannot take now (unavailable) -- the connection stays open after these -- or a
    # malformed or oversized message (invalidArgument; the node then closes the connection).
  }
}

interface Node extends(Peer.PeerService) {
  # What every walship node serves over Cap'n Proto RPC on its listen address, to the other
  # nodes. Clients speak the client protocol above on the same address; the preamble tells
  # the two apart.
}
