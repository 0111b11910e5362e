# The node-to-node protocol: a follower subscribes to the leader and the leader streams the
# batches of its WAL to it. Mirrors replication/messages.h field by field; see
# docs/protocol.md for the whole exchange.
#
# Every message carries the sender's epoch. A node refuses a message from an epoch older than
# its own; see docs/protocol.md ("Epochs").
@0xd1a8c3b5f4e2a901;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("walship::rpc::schema");

struct EpochEntry {
  epoch @0 :UInt64;      # a leader epoch
  startSeq @1 :UInt64;   # first sequence number written in that epoch
  leader @2 :Text;       # the node id that began the epoch (empty: unknown)
}

struct Hello {
  # Sent by a follower when it connects to the leader. A leader refuses a hello of another
  # protocol version (`refused`, naming both versions).
  cluster @0 :Text;             # must equal the leader's cluster name
  databaseId @1 :Text;          # the database the follower holds; empty if never seeded
  followerId @2 :Text;          # the follower's node id from the config
  epoch @3 :UInt64;             # the follower's current epoch
  lastApplied @4 :UInt64;       # end of the last batch it applied (0: empty database)
  lastAppliedEpoch @5 :UInt64;  # epoch under which that batch was written (0: unknown)
  lastAppliedLeader @6 :Text;   # the node that began that epoch (empty: unknown)
  version @7 :UInt32;           # the peer protocol version the follower speaks (now 7;
                                # nodes from before versions were carried send none: 0)
}

enum HelloOutcome {
  accepted @0;        # the stream starts at lastApplied + 1
  needsSnapshot @1;   # the leader cannot serve lastApplied + 1: re-seed from a checkpoint
  refused @2;         # wrong cluster, wrong database or stale epoch; see message
}

struct HelloReply {
  outcome @0 :HelloOutcome;
  message @1 :Text;            # why, when not accepted
  epoch @2 :UInt64;            # the leader's epoch (the follower adopts it)
  databaseId @3 :Text;         # the leader's database id (a fresh follower adopts it)
  history @4 :List(EpochEntry);  # the leader's epoch history, ascending
  leaderLatest @5 :UInt64;     # the leader's latest sequence number
  version @6 :UInt32;          # the peer protocol version the leader speaks; a follower
                               # refuses any other, naming both
  leaderHint @7 :Text;         # refused by a node that does not lead: the node it names as
                               # leader (the follower follows that one)
}

struct TakeOver {
  # Leader -> the follower it hands leadership to, once that follower has applied all it wrote
  # and it accepts no more writes.
  version @0 :UInt32;
  from @1 :Text;               # the leader's node id
  epoch @2 :UInt64;            # its epoch
  latest @3 :UInt64;           # its last sequence number
}

struct TakeOverReply {
  accepted @0 :Bool;
  message @1 :Text;            # why not
  epoch @2 :UInt64;            # accepted: the epoch the new leader began; refused: the
                               # highest epoch the node has seen
  startSeq @3 :UInt64;         # accepted: the new epoch's first sequence number
}

struct Batch {
  # One WAL record of the leader, exactly as RocksDB wrote it.
  firstSeq @0 :UInt64;        # sequence number of its first op
  count @1 :UInt64;           # ops; the batch covers [firstSeq, firstSeq + count)
  data @2 :Data;              # RocksDB WriteBatch bytes: 12-byte header, then records
  leaderTimeUs @3 :Int64;     # leader wall clock at write, µs since 1970 (0: unknown)
}

struct Member {
  id @0 :Text;
  address @1 :Text;     # host:port it listens on
  voter @2 :Bool;       # false: a learner (not waited for, not counted in majorities)
}

struct Membership {
  # Who belongs to the cluster (replication/membership.h); changed through the leader only,
  # one node at a time.
  version @0 :UInt64;
  members @1 :List(Member);  # every node, the leader too, in id order
}

struct Ship {
  # Leader -> follower. Batches are contiguous; none is a heartbeat.
  epoch @0 :UInt64;
  batches @1 :List(Batch);
  leaderLatest @2 :UInt64;    # the leader's latest sequence number when sent
  leaderTimeUs @3 :Int64;     # leader wall clock when sent
  needsSnapshot @4 :Text;     # non-empty: the leader can no longer serve this follower
  maxAckDelayUs @5 :UInt32;   # the follower may hold its ack this long, so that one ack
                              # answers several messages; 0: ack at once
  flush @6 :Bool;             # fsync the WAL before acking (a write waits for `flushed`);
                              # the ack then carries durable >= its batches
  membership @7 :Membership;  # set once per stream and after each change, and on heartbeats
                              # while the acks report another version: the follower saves it
                              # before it acks
  echoUs @8 :Int64;           # the sentUs of the last ack the leader had from this follower
                              # when it sent this (the follower's monotonic clock; 0: none)
}

enum AckOutcome {
  ok @0;       # applied (or already held)
  gap @1;      # the batches started past applied + 1; nothing applied; resend from there
  stale @2;    # the message's epoch is older than the follower's; ignored
  failed @3;   # could not apply; see message
}

struct Ack {
  # Follower -> leader, the answer to each Ship.
  epoch @0 :UInt64;
  outcome @1 :AckOutcome;
  received @2 :UInt64;   # highest sequence number received
  durable @3 :UInt64;    # highest sequence number fsynced
  applied @4 :UInt64;    # highest sequence number applied (readable)
  message @5 :Text;
  membershipVersion @6 :UInt64;  # the membership version the follower has saved
  sentUs @7 :Int64;      # the follower's monotonic clock when it made this ack (echoed back)
}

struct Position {
  # How far a node is (see replication/recovery.h): asked by a leader that restarts, before it
  # leads again.
  node @0 :Text;
  databaseId @1 :Text;
  highestEpoch @2 :UInt64;
  lastApplied @3 :UInt64;        # its log's end
  lastAppliedEpoch @4 :UInt64;   # the epoch entry that sequence number was written under
  lastAppliedLeader @5 :Text;
  needsSnapshot @6 :Bool;
  walOldest @7 :UInt64;          # the first sequence number its WAL holds (0: not known)
  leads @8 :Bool;                # it is the leader now
}

struct VoteRequest {
  # Candidate -> every other voter: would you make me leader of `epoch`? (replication/election.h)
  version @0 :UInt32;
  cluster @1 :Text;
  candidate @2 :Text;
  epoch @3 :UInt64;         # the epoch it would begin: above every epoch it has seen
  preVote @4 :Bool;         # only asks whether the vote would be granted; changes nothing
  lastSeq @5 :UInt64;       # the candidate's log's end
  lastEpoch @6 :UInt64;     # the epoch entry that sequence number was written under
  lastLeader @7 :Text;      # the node that began that epoch
}

struct VoteReply {
  granted @0 :Bool;
  voter @1 :Text;
  epoch @2 :UInt64;         # the highest epoch the voter has seen (after this request)
  message @3 :Text;         # why not
}

struct Heartbeat {
  # Leader -> each member, every heartbeat interval, on a connection of its own (no data
  # waits in front of it, and the answer waits for no apply or fsync): the leader's lease
  # and both sides' failure detectors count these (replication/failure_detector.h).
  version @0 :UInt32;
  cluster @1 :Text;
  leader @2 :Text;
  epoch @3 :UInt64;
}

struct HeartbeatReply {
  node @0 :Text;
  epoch @1 :UInt64;         # the highest epoch the node has seen
  heard @2 :Bool;           # taken as its leader's: the leader's epoch is the highest it saw
  message @3 :Text;         # why not
}

struct SnapshotRequest {
  # Asks a node for a checkpoint of its database (a follower seeding itself, or
  # `walship checkpoint`).
  version @0 :UInt32;          # the peer protocol version the asker speaks
  cluster @1 :Text;            # must equal the node's cluster name (empty: a tool that does
                               # not know it; the manifest names it)
  requester @2 :Text;          # the asking node's id; empty for a tool
}

interface SnapshotReader {
  # The files of one checkpoint, held on the serving node until this capability is dropped.
  # The asker keeps a bounded number of reads in flight (flow control); the node answers at
  # most its configured snapshot rate, and each reply at most 1 MiB.
  read @0 (file :UInt32, offset :UInt64, maxBytes :UInt32) -> (data :Data);
  # `file` indexes the manifest's file lines; a read at or past the file's end answers empty.
}

interface BatchSink {
  # Implemented by the follower and handed to the leader in subscribe(). The leader keeps a
  # bounded number of pushes in flight per follower (flow control); each reply is the ack.
  push @0 (ship :Ship) -> (ack :Ack);
}

interface PeerService {
  # The stream lasts while the connection does. A follower whose connection drops, or that
  # hears nothing (no batch, no heartbeat) for its heartbeat timeout, reconnects and says
  # hello again with its own position.
  subscribe @0 (hello :Hello, sink :BatchSink) -> (reply :HelloReply);

  takeOver @1 (request :TakeOver) -> (reply :TakeOverReply);
  position @2 () -> (position :Position);
  snapshot @3 (request :SnapshotRequest) -> (manifest :Text, reader :SnapshotReader);
  # A consistent checkpoint of this node's database: its manifest (the text format of
  # replication/seeding.h: cluster, database id, sequence number, epoch history, every file
  # with its size and CRC-32) and a reader of its files. A leader keeps its WAL from the
  # checkpoint's sequence number while the reader lives, and a while after, so the asker can
  # catch up from there. Refused (an exception naming why) for another cluster or version.
  # Any node answers with its own position, whatever its role.
  requestVote @4 (request :VoteRequest) -> (reply :VoteReply);
  # An election (replication/election.h). A granted real vote is saved before the answer; a
  # vote that cannot be saved fails the call (no answer), never refuses.
  heartbeat @5 (beat :Heartbeat) -> (reply :HeartbeatReply);
  # Answered at once by every node, whatever its role: a follower notes its leader's sign of
  # life, any node names the highest epoch it has seen (a leader below it steps down).
  # A handover (see replication/handover.h): the follower takes over when it follows the
  # caller in its epoch and holds all it wrote; asked again after a lost answer, a node that
  # took over answers accepted again.
}
