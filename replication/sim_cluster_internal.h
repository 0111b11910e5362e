// The simulated cluster of replication/sim_cluster.h, shared by its two source files
// (tests only): sim_cluster.cc (the run, writes and faults, checks) and sim_nodes.cc (nodes
// and their roles, the network, each side of a stream, the handover).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/crash_fs.h"
#include "engine/engine.h"
#include "replication/clock.h"
#include "replication/commit_wait.h"
#include "replication/follower.h"
#include "replication/follower_link.h"
#include "replication/handover.h"
#include "replication/leader.h"
#include "replication/node_state.h"
#include "replication/reads.h"
#include "replication/recovery.h"
#include "replication/shipper.h"
#include "replication/sim_cluster.h"

namespace walship::replication::sim::detail {

using engine::Engine;
using engine::OpType;
using engine::WriteOp;

inline constexpr int kNodes = 3;
inline constexpr uint64_t kMaxTailBytes = 4 << 10;
inline constexpr uint64_t kMaxShipBytes = 2 << 10;
inline constexpr int64_t kMaxWriteIntervalUs = 400;
inline constexpr int64_t kQuietDelayUs = 500;
inline constexpr uint64_t kMaxEvents = 3'000'000;
inline constexpr int kFlushOneInWrites = 150;
inline constexpr int64_t kHandoverTimeoutUs = 2'000'000;
inline constexpr int64_t kRecoveryWaitUs = 500'000;
inline constexpr int64_t kRecoveryAskUs = 20'000;

// Time for replication/: the simulation's clock, one for wall and monotonic time.
class SimClock final : public Clock {
 public:
  int64_t NowMicros() override { return now_us; }
  int64_t now_us = 1'700'000'000'000'000;
};

inline std::string NodeId(int i) { return "n" + std::to_string(i); }
// The key every write puts (with its index among the run's writes), so that a read can tell
// whether a node holds that write.
inline std::string MarkerKey(uint64_t index) { return "w/" + std::to_string(index); }
inline int NodeIndex(const std::string& id) {
  for (int i = 0; i < kNodes; ++i) {
    if (NodeId(i) == id) return i;
  }
  return -1;
}

class Cluster {
 public:
  Cluster(std::string dir, uint64_t seed, const sim::Faults& faults, bool small_wal, int writes)
      : dir_(std::move(dir)), rng_(seed), faults_(faults), small_wal_(small_wal),
        writes_wanted_(writes) {}

  RunResult Run();

 private:
  enum class Kind {
    kWrite, kDeliver, kTick, kRestart, kApplyDone, kSyncDone, kWalReadDone, kConnectFailed,
    kHandover, kHandoverAsk, kRecoveryAsk
  };
  enum class MsgType {
    kHello, kHelloReply, kShip, kAck, kTakeOver, kTakeOverReply, kPosition, kPositionReply
  };
  struct Message {
    explicit Message(MsgType t) : type(t) {}
    MsgType type = MsgType::kHello;
    uint64_t msg_id = 0;  // a Ship's id; its Ack carries it
    uint64_t send_idx = 0;
    Hello hello;
    HelloReply reply;
    Ship ship;
    Ack ack;
    TakeOver take_over;
    TakeOverReply take_over_reply;
    PeerPosition position;
  };
  struct Event {
    explicit Event(Kind k) : kind(k) {}
    Event(Event&&) = default;
    Event& operator=(Event&&) = default;
    Kind kind = Kind::kWrite;
    int node = 0;
    uint64_t incarnation = 0;  // of `node` when scheduled; stale events are dropped
    uint64_t conn = 0;
    uint64_t id = 0;           // push, sync seq, tick time
    Message msg{MsgType::kHello};
    Ship ship;
    WalRead read;
  };
  // A connection from a follower (`from`) to the node it follows (`to`).
  struct Conn {
    int from = 0, to = 0;
    uint64_t from_inc = 0, to_inc = 0;
    uint64_t generation = 0;  // the follower link's
    uint64_t session = 0;     // the leader's, once accepted
    bool open = true;
    uint64_t sent[2] = {0, 0};
    uint64_t delivered_max[2] = {0, 0};
    std::set<uint64_t> acked;  // Ship ids answered (a duplicate's ack is not passed on)
  };
  struct Node {
    std::unique_ptr<engine::testing::CrashableEnv> env =
        std::make_unique<engine::testing::CrashableEnv>();
    std::unique_ptr<Engine> engine;
    bool up = false;
    uint64_t incarnation = 0;
    // Leader role.
    std::unique_ptr<Leader> leader;
    std::unique_ptr<Shipper> shipper;
    std::map<uint64_t, uint64_t> conn_of_session;
    std::optional<Handover> handover;
    std::unique_ptr<CommitWait> commit_wait;
    // Restarted as leader: asking its peers before it leads again (no role meanwhile).
    std::optional<Recovery> recovery;
    struct Waiting {
      SequenceNumber seq = 0;
      Durability need;
      std::vector<uint64_t> machine_crashes;  // of every node when it was written
    };
    std::map<uint64_t, Waiting> waiting;  // by wait id
    // Follower role.
    std::unique_ptr<Follower> follower;
    std::unique_ptr<FollowerLink> link;
    uint64_t conn = 0;  // the current connection to its leader
    uint64_t bytes_received = 0;
    std::map<uint64_t, std::pair<uint64_t, uint64_t>> pushes;  // push -> (conn, Ship id)
    uint64_t next_push = 0;
    int64_t tick_at = kNever;
    // For the invariants.
    SequenceNumber last_latest = 0;
    SequenceNumber durable_acked = 0;  // the highest `durable` it acked this incarnation
    Epoch highest_epoch = 0;
  };

  // ---- Plumbing ----

  std::string StatePath(int i) const { return dir_ + "/" + NodeId(i) + ".state"; }
  int64_t Uniform(int64_t lo, int64_t hi);
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  void Schedule(Event e, int64_t delay_us);
  bool Check(bool ok, const std::string& what);
  void Fail(const std::string& what) { Check(false, what); }
  int64_t NetworkDelay();
  int LeaderIndex() const;

  // ---- Nodes ----

  void Start(int i);

  // The role a saved state gives, as rpc::Node::MakeRole chooses it: at start and at every
  // role change, which both go through the saved state.
  void BecomeFromState(int i, const NodeState& state);
  // Drops whatever role objects the node holds.
  void EndRole(Node& n);
  void BecomeLeader(int i, NodeState state);
  void BecomeFollower(int i, const NodeState& state);

  // A node goes down: a process crash keeps what it wrote, a machine crash loses its WAL past
  // the last fsync. Every connection it had breaks.
  void Crash(int i, bool machine);
  void Restart(int i);

  // ---- Network ----

  void Send(uint64_t conn_id, bool to_follower, Message m);
  // A connection of its own from node `i` to node `peer` for one call (a take-over, a
  // position), answered "to the leader" on it; closed when `peer` is down.
  uint64_t OpenCall(int i, int peer);

  // A connection breaks: both ends are told (if still up), what was in flight is lost.
  void Break(uint64_t conn_id);
  void Deliver(Event& e);

  // ---- The leader's side ----

  void OnHello(uint64_t conn_id, const Hello& hello);
  void OnAck(uint64_t conn_id, uint64_t ship_id, const Ack& ack);
  void CarryLeader(int i, Outbox out);
  void LeaderPump(int i);

  // ---- The follower's side ----

  void OnHelloReply(uint64_t conn_id, const HelloReply& reply);
  void OnShip(uint64_t conn_id, uint64_t ship_id, Ship ship);
  void CarryLink(int i, LinkOutbox out);
  void Connect(int i, LinkOutbox::Connect c);
  void ScheduleTick(int i, int64_t at);
  void Tick(int i, int64_t at);

  // ---- Handover ----

  void StartHandover();
  void PollHandover(int i);

  // Sends the take-over request on a connection of its own (as rpc/ does: a call to the
  // target), and again after a while until an answer comes.
  void AskTakeOver(int i);
  void OnTakeOver(uint64_t conn_id, const TakeOver& t);
  void OnTakeOverReply(uint64_t conn_id, const TakeOverReply& reply);

  // No answer yet: ask again (the target may have taken over; the request is never dropped).
  void HandoverUnanswered(int i);

  // ---- A restarted leader's recovery (sim_recovery.cc) ----

  // Node `i` led before it stopped: it asks its peers how far they are. False when it has
  // nothing to ask (a new database, or no history).
  bool StartRecovery(int i, const NodeState& state);
  // Asks the peers that have not answered, and decides when it may.
  void AskPositions(int i);
  void OnPosition(uint64_t conn_id);
  void OnPositionReply(uint64_t conn_id, const PeerPosition& p);
  void DecideRecovery(int i);
  // The position node `i` answers with, in whatever role it is.
  PeerPosition PositionOfNode(int i) const;

  // ---- Writes and faults ----

  std::vector<WriteOp> RandomOps();
  void Write();
  void InjectFaults();
  void Handle(Event e);

  // ---- Writes that wait for followers (sim_commits.cc) ----

  // The run's replication: mode, acks, level, timeout and policy, from the seed.
  void ChooseReplication();
  Durability RandomDurability();
  // Leader `i` wrote up to `seq`: the write asks for the run's replication or its own.
  void AwaitFollowers(int i, SequenceNumber seq);
  // What CommitWait released on leader `i`; the replicated ones are recorded with the
  // followers that held them.
  void OnReleased(int i, const std::vector<Released>& released);
  // Every write acknowledged as replicated is still held as its level promises.
  void CheckAckedWrites();

  // ---- Reads (sim_reads.cc) ----

  // Node `i` wrote a batch as leader (its last seq under its epoch) holding marker `index`.
  void NoteWritten(int i, SequenceNumber last_seq, uint64_t index);
  // A read at a random node with the token of a random recent write (replication/reads.h):
  // served only where that write is, called lost only where it is not.
  void ReadAtRandom();
  // Every follower's bound on its staleness holds: it has applied what the leader held at the
  // moment it believes itself caught up as of (FollowerLink::caught_up_us).
  void CheckCaughtUp();
  std::string Near(std::vector<std::pair<int64_t, SequenceNumber>>::iterator it);

  // ---- Checks ----

  // The history entries under which node `i` holds data never change.
  void CheckHistoryKept(int i, const NodeState& now);
  void CheckInvariants();
  bool NeedsSnapshot(const Node& n) const;
  bool Quiet();
  void FinalChecks();

  const std::string dir_;
  std::mt19937_64 rng_;
  const sim::Faults faults_;
  const bool small_wal_;
  const int writes_wanted_;
  SimClock clock_;
  Node nodes_[kNodes];
  bool machine_crashed_[kNodes] = {false, false, false};
  std::vector<EpochEntry> kept_history_[kNodes];
  std::map<uint64_t, Conn> conns_;
  std::map<std::pair<int64_t, uint64_t>, Event> events_;  // by (time, order of scheduling)
  uint64_t next_order_ = 0;
  uint64_t next_conn_ = 0;
  uint64_t next_msg_id_ = 1;
  int writes_done_ = 0;
  SequenceNumber max_leader_latest_ = 0;
  CommitWaitOptions commit_;
  uint64_t next_wait_ = 1;
  uint64_t machine_crash_count_[kNodes] = {0, 0, 0};
  // A write acknowledged as replicated, and the followers that held it at its level then
  // (with how many machine crashes each had had when the write was written: one that crashed
  // since may have acknowledged it before and lost it with its OS buffers).
  struct AckedWrite {
    SequenceNumber seq = 0;
    Durability need;
    std::vector<std::pair<int, uint64_t>> holders;
    EpochEntry epoch;  // the leader's history entry it was written under
  };
  std::vector<AckedWrite> acked_;
  bool quiet_ = false;
  // Reads: every write's token and marker index; the leading node's latest seq over time (at
  // each write, and when a node begins to lead).
  struct Written {
    ReadToken token;
    uint64_t index = 0;
  };
  std::vector<Written> written_;
  std::vector<std::pair<int64_t, SequenceNumber>> leader_log_;
  Stats stats_;
  std::string failure_;
};

}  // namespace walship::replication::sim::detail
