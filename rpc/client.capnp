# The client API of a walship node, and the Node interface every node serves (client API +
# node-to-node protocol on one port). See docs/protocol.md.
@0xe7c4a2d9b3f18a55;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("walship::rpc::schema");

using Peer = import "peer.capnp";

enum ErrorCode {
  ok @0;
  notFound @1;           # get: the key is absent
  invalidArgument @2;    # the request is malformed; do not retry it as is
  notLeader @3;          # writes go to the leader: see leaderHint
  unavailable @4;        # retry later (overloaded, behind minSeq, shutting down)
  failedPrecondition @5; # do not retry until the node's state is fixed (needs snapshot)
  dataLoss @6;           # corruption detected
  internal @7;
  unimplemented @8;      # the request asks for a feature this node does not have yet
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
  leaderHint @2 :Text;   # with notLeader: "host:port" of the leader when known, else empty
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
  # How many followers must have a write before it is acknowledged.
  clusterDefault @0;     # the cluster's configured mode
  async @1;              # acknowledged after the leader's local write
  semiSync @2;           # after k followers (not yet implemented: unimplemented error)
  sync @3;               # after every follower (not yet implemented: unimplemented error)
}

struct WriteRequest {
  ops @0 :List(Op);
  mode @1 :WriteMode;
}

struct WriteReply {
  error @0 :Error;
  firstSeq @1 :UInt64;
  lastSeq @2 :UInt64;
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
}

struct NodeStatus {
  node @0 :Text;           # node id
  cluster @1 :Text;
  role @2 :Text;           # leader | follower
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
}

interface KvService {
  write @0 (ops :List(Op), mode :WriteMode) -> (error :Error, firstSeq :UInt64, lastSeq :UInt64);
  # Applies ops atomically as one batch. On success the ops consumed [firstSeq, lastSeq]; a
  # read with minSeq = lastSeq then sees this write (read-your-writes).

  get @1 (key :Data, minSeq :UInt64) -> (error :Error, value :Data, seq :UInt64);
  # error.code = notFound when absent. minSeq > 0: refused with unavailable unless this node
  # has applied at least minSeq. seq: the node's latest sequence number at the read.

  scan @2 (start :Data, prefix :Data, limit :UInt32, minSeq :UInt64)
      -> (error :Error, items :List(KeyValue), seq :UInt64);
  # Keys >= start having the prefix, in order, at most limit (capped at 100000).

  status @3 () -> (status :NodeStatus);

  writeMany @4 (writes :List(WriteRequest)) -> (error :Error, replies :List(WriteReply));
  # A pipeline: independent writes in one message, like Redis's pipelined commands. Each
  # write is applied atomically on its own, in the order given, exactly as if sent with
  # `write` one after another; replies[i] answers writes[i], and one write failing does not
  # stop the others. A pipeline refused as a whole (this node is not the leader, or it holds
  # more than 10000 writes) gets `error` and no replies.
}

interface Node extends(KvService, Peer.PeerService) {
  # What every walship node serves on its listen address.
}
