#include "replication/sim_cluster.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/crash_fs.h"
#include "engine/engine.h"
#include "replication/clock.h"
#include "replication/follower.h"
#include "replication/follower_link.h"
#include "replication/handover.h"
#include "replication/leader.h"
#include "replication/node_state.h"
#include "replication/shipper.h"

namespace walship::replication::sim {

void Stats::Add(const Stats& o) {
  writes += o.writes, flushes += o.flushes, ships += o.ships, acks += o.acks;
  drops += o.drops, duplicates += o.duplicates, reorders += o.reorders;
  discarded += o.discarded, gaps += o.gaps, wal_batches += o.wal_batches;
  tail_batches += o.tail_batches, reconnects += o.reconnects;
  process_crashes += o.process_crashes, machine_crashes += o.machine_crashes;
  lost_bytes += o.lost_bytes, leader_restarts += o.leader_restarts;
  handovers += o.handovers, needs_snapshot += o.needs_snapshot;
  worker_applies += o.worker_applies;
}

std::ostream& operator<<(std::ostream& out, const Stats& s) {
  return out << "writes=" << s.writes << " flushes=" << s.flushes << " ships=" << s.ships
             << " acks=" << s.acks << " drops=" << s.drops << " dups=" << s.duplicates
             << " reorders=" << s.reorders << " discarded=" << s.discarded << " gaps=" << s.gaps
             << " batches_shipped=" << s.tail_batches << " batches_read_from_wal=" << s.wal_batches
             << " reconnects=" << s.reconnects << " process_crashes=" << s.process_crashes
             << " machine_crashes=" << s.machine_crashes << " lost_bytes=" << s.lost_bytes
             << " leader_restarts=" << s.leader_restarts << " handovers=" << s.handovers
             << " needs_snapshot=" << s.needs_snapshot
             << " worker_applies=" << s.worker_applies;
}

namespace {

using engine::Engine;
using engine::OpType;
using engine::WriteOp;

constexpr int kNodes = 3;
constexpr uint64_t kMaxTailBytes = 4 << 10;
constexpr uint64_t kMaxShipBytes = 2 << 10;
constexpr int64_t kMaxWriteIntervalUs = 400;
constexpr int64_t kQuietDelayUs = 500;
constexpr uint64_t kMaxEvents = 3'000'000;
constexpr int kFlushOneInWrites = 150;
constexpr int64_t kHandoverTimeoutUs = 2'000'000;

// Time for replication/: the simulation's clock, one for wall and monotonic time.
class SimClock final : public Clock {
 public:
  int64_t NowMicros() override { return now_us; }
  int64_t now_us = 1'700'000'000'000'000;
};

std::string NodeId(int i) { return "n" + std::to_string(i); }
int NodeIndex(const std::string& id) {
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

  RunResult Run() {
    for (int i = 0; i < kNodes; ++i) {
      NodeState seed;
      if (i == 0) {
        seed.database_id = "sim-db";
        seed.role = "leader";
      } else {
        seed.role = "follower";
        seed.leader = NodeId(0);
      }
      if (!Check(SaveNodeState(StatePath(i), seed).ok(), "seed state saved")) break;
      Start(i);
    }
    Schedule(Event(Kind::kWrite), 0);
    for (uint64_t step = 0; step < kMaxEvents && failure_.empty(); ++step) {
      if (writes_done_ >= writes_wanted_ && Quiet()) {
        FinalChecks();
        break;
      }
      if (events_.empty()) {
        Fail("no more events, and the cluster is not quiet");
        break;
      }
      auto node = events_.extract(events_.begin());
      clock_.now_us = std::max(clock_.now_us, node.key().first);
      Handle(std::move(node.mapped()));
      CheckInvariants();
    }
    if (failure_.empty() && !(writes_done_ >= writes_wanted_ && Quiet())) {
      Fail(absl::StrCat("never quiet within ", kMaxEvents, " events"));
    }
    RunResult r;
    r.ok = failure_.empty();
    r.failure = failure_;
    r.stats = stats_;
    for (auto& n : nodes_) n.engine.reset();
    return r;
  }

 private:
  enum class Kind {
    kWrite, kDeliver, kTick, kRestart, kApplyDone, kSyncDone, kWalReadDone, kConnectFailed,
    kHandover, kHandoverAsk
  };
  enum class MsgType { kHello, kHelloReply, kShip, kAck, kTakeOver, kTakeOverReply };
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
  int64_t Uniform(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng_() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  void Schedule(Event e, int64_t delay_us) {
    events_.emplace(std::make_pair(clock_.now_us + delay_us, next_order_++), std::move(e));
  }
  bool Check(bool ok, const std::string& what) {
    if (!ok && failure_.empty()) failure_ = what;
    return ok;
  }
  void Fail(const std::string& what) { Check(false, what); }
  int64_t NetworkDelay() {
    if (quiet_) return kQuietDelayUs;
    if (Chance(faults_.long_delay_chance)) return Uniform(2'000, 20'000);
    return Uniform(100, 2'000);
  }
  int LeaderIndex() const {
    for (int i = 0; i < kNodes; ++i) {
      if (nodes_[i].leader != nullptr) return i;
    }
    return -1;
  }

  // ---- Nodes ----

  void Start(int i) {
    Node& n = nodes_[i];
    engine::EngineOptions eo;
    eo.path = dir_ + "/" + NodeId(i);
    eo.env = n.env->env.get();
    if (small_wal_) {
      eo.wal_retention_bytes = 24 << 10;
      eo.wal_retention_seconds = 0;
    }
    auto engine = Engine::Open(eo);
    if (!Check(engine.ok(), absl::StrCat(NodeId(i), " opens: ", engine.status().ToString()))) {
      return;
    }
    n.engine = std::move(*engine);
    n.up = true;
    ++n.incarnation;
    n.tick_at = kNever;
    n.durable_acked = 0;
    n.last_latest = n.engine->LatestSequence();
    auto state = LoadNodeState(StatePath(i));
    if (!Check(state.ok(), absl::StrCat(NodeId(i), " state: ", state.status().ToString()))) {
      return;
    }
    if (std::getenv("WALSHIP_SIM_TRACE") != nullptr) {  // each node start, to follow a seed
      std::string have;
      for (const EpochEntry& x : state->history) {
        absl::StrAppend(&have, " (", x.epoch, ", ", x.start_seq, ", ", x.leader, ")");
      }
      std::fprintf(stderr, "t=%lld start %s role=%s leader=%s latest=%llu history%s\n",
                   static_cast<long long>(clock_.now_us), NodeId(i).c_str(),
                   state->role.c_str(), state->leader.c_str(),
                   static_cast<unsigned long long>(n.engine->LatestSequence()), have.c_str());
    }
    CheckHistoryKept(i, *state);
    if (state->role == "leader" && !ResumesHandover(*state)) {
      // As a node does at start (rpc/node_server.cc): each start as leader, a new epoch.
      NodeState next = StateForLeading(*state, n.engine->LatestSequence(), NodeId(i));
      if (!Check(SaveNodeState(StatePath(i), next).ok(), "leader state saved")) return;
      *state = next;
    }
    BecomeFromState(i, *state);
  }

  // The role a saved state gives, as rpc::Node::MakeRole chooses it: at start and at every
  // role change, which both go through the saved state.
  void BecomeFromState(int i, const NodeState& state) {
    Node& n = nodes_[i];
    std::vector<uint64_t> conns;
    for (auto& [sid, conn] : n.conn_of_session) conns.push_back(conn);
    for (uint64_t conn : conns) conns_[conn].session = 0;
    n.conn_of_session.clear();
    for (uint64_t conn : conns) Break(conn);  // a role that ends closes its followers' streams
    if (n.conn != 0) Break(n.conn);
    n.conn = 0;
    if (ResumesHandover(state)) {
      TakeOver again;
      again.from = NodeId(i);
      again.epoch = state.epoch;
      again.latest = n.engine->LatestSequence();
      BecomeLeader(i, state);
      n.handover.emplace(Handover::Resumed(state.handover_to, again));
      AskTakeOver(i);
    } else if (state.role == "leader") {
      BecomeLeader(i, state);
    } else {
      BecomeFollower(i, state);
    }
  }

  void BecomeLeader(int i, NodeState state) {
    Node& n = nodes_[i];
    n.follower.reset();
    n.link.reset();
    n.handover.reset();
    n.conn_of_session.clear();
    LeaderOptions lo;
    lo.cluster = "sim";
    lo.node_id = NodeId(i);
    lo.max_tail_bytes = kMaxTailBytes;
    lo.max_ship_bytes = kMaxShipBytes;
    lo.read_wal_inline = false;
    lo.max_wal_read_bytes = 4 * kMaxShipBytes;
    lo.members_only = true;
    for (int j = 0; j < kNodes; ++j) {
      if (j != i) lo.members.push_back(NodeId(j));
    }
    n.leader = std::make_unique<Leader>(lo, n.engine.get(), std::move(state), &clock_);
    ShipperOptions so;
    so.max_inflight_ships = 4;
    so.ack_delay_us = Chance(0.3) ? 2000 : 0;
    so.heartbeat_interval_ms = 20;
    n.shipper = std::make_unique<Shipper>(*n.leader, so);
    n.highest_epoch = std::max(n.highest_epoch, n.leader->epoch());
    LeaderPump(i);
  }

  void BecomeFollower(int i, const NodeState& state) {
    Node& n = nodes_[i];
    n.leader.reset();
    n.shipper.reset();
    n.conn_of_session.clear();
    n.handover.reset();
    FollowerOptions fo;
    fo.cluster = "sim";
    fo.node_id = NodeId(i);
    fo.state_path = StatePath(i);
    n.follower = std::make_unique<Follower>(fo, n.engine.get(), state, &clock_);
    FollowerLinkOptions lo;
    lo.node_id = NodeId(i);
    lo.heartbeat_timeout_ms = 200;
    lo.connect_timeout_ms = 100;
    lo.reconnect_min_ms = 1;
    lo.reconnect_max_ms = 30;
    lo.fsync_interval_ms = Uniform(5, 50);
    lo.inline_apply_bytes = Chance(0.5) ? 256 << 10 : 1 << 10;
    std::string leader = state.leader.empty() ? NodeId(0) : state.leader;
    n.link = std::make_unique<FollowerLink>(*n.follower, lo, leader);
    LinkOutbox out;
    n.link->Start(clock_.now_us, &out);
    CarryLink(i, std::move(out));
  }

  // A node goes down: a process crash keeps what it wrote, a machine crash loses its WAL past
  // the last fsync. Every connection it had breaks.
  void Crash(int i, bool machine) {
    Node& n = nodes_[i];
    if (!n.up) return;
    n.last_latest = n.engine->LatestSequence();
    for (auto& [id, c] : conns_) {
      if (c.open && (c.from == i || c.to == i)) Break(id);
    }
    n.up = false;
    n.shipper.reset();
    n.leader.reset();
    n.link.reset();
    n.follower.reset();
    n.conn_of_session.clear();
    n.handover.reset();
    n.pushes.clear();
    if (machine) n.env->fs->Crash();
    n.engine.reset();
    if (machine) {
      stats_.lost_bytes += n.env->fs->LoseUnsynced();
      ++stats_.machine_crashes;
      machine_crashed_[i] = true;
    } else {
      n.env->fs->Restart();
      ++stats_.process_crashes;
    }
    ++n.incarnation;
    Event e(Kind::kRestart);
    e.node = i;
    e.incarnation = n.incarnation;
    Schedule(std::move(e), Uniform(1'000, 50'000));
  }

  void Restart(int i) {
    Node& n = nodes_[i];
    SequenceNumber durable = n.durable_acked, before = n.last_latest;
    bool machine = machine_crashed_[i];
    machine_crashed_[i] = false;
    Start(i);
    if (!n.up) return;
    SequenceNumber now = n.engine->LatestSequence();
    if (machine) {
      Check(now >= durable, absl::StrCat(NodeId(i), " lost acknowledged-durable writes: at ", now,
                                         " after a crash, acked durable ", durable));
    } else {
      Check(now == before, absl::StrCat(NodeId(i), " lost writes in a process crash: ", before,
                                        " -> ", now));
    }
    n.last_latest = now;
  }

  // ---- Network ----

  void Send(uint64_t conn_id, bool to_follower, Message m) {
    Conn& c = conns_[conn_id];
    if (!c.open) return;
    if (!quiet_ && Chance(faults_.drop_chance)) {
      ++stats_.drops;
      Break(conn_id);
      return;
    }
    int dir = to_follower ? 0 : 1;
    m.send_idx = c.sent[dir]++;
    Event e(Kind::kDeliver);
    e.node = to_follower ? c.from : c.to;
    e.conn = conn_id;
    if (m.type == MsgType::kShip && !quiet_ && Chance(faults_.duplicate_chance)) {
      ++stats_.duplicates;
      Event dup(Kind::kDeliver);
      dup.node = e.node;
      dup.conn = conn_id;
      dup.msg = m;
      Schedule(std::move(dup), NetworkDelay());
    }
    e.msg = std::move(m);
    Schedule(std::move(e), NetworkDelay());
  }

  // A connection breaks: both ends are told (if still up), what was in flight is lost.
  void Break(uint64_t conn_id) {
    Conn& c = conns_[conn_id];
    if (!c.open) return;
    c.open = false;
    Node& leader = nodes_[c.to];
    if (leader.up && leader.incarnation == c.to_inc && leader.shipper && c.session != 0) {
      leader.shipper->OnLost(c.session);
      leader.conn_of_session.erase(c.session);
      LeaderPump(c.to);
    }
    Node& f = nodes_[c.from];
    if (f.up && f.incarnation == c.from_inc && f.link && f.conn == conn_id) {
      LinkOutbox out;
      f.link->OnConnectionLost(c.generation, "connection broken", clock_.now_us, &out);
      CarryLink(c.from, std::move(out));
    }
  }

  void Deliver(Event& e) {
    Conn& c = conns_[e.conn];
    if (!c.open) {
      ++stats_.discarded;
      return;
    }
    Message& m = e.msg;
    bool to_follower = m.type == MsgType::kHelloReply || m.type == MsgType::kShip ||
                       m.type == MsgType::kTakeOver;
    int dir = to_follower ? 0 : 1;
    if (m.send_idx + 1 < c.delivered_max[dir]) ++stats_.reorders;
    c.delivered_max[dir] = std::max(c.delivered_max[dir], m.send_idx + 1);
    switch (m.type) {
      case MsgType::kHello: OnHello(e.conn, m.hello); break;
      case MsgType::kHelloReply: OnHelloReply(e.conn, m.reply); break;
      case MsgType::kShip: OnShip(e.conn, m.msg_id, std::move(m.ship)); break;
      case MsgType::kAck: OnAck(e.conn, m.msg_id, m.ack); break;
      case MsgType::kTakeOver: OnTakeOver(e.conn, m.take_over); break;
      case MsgType::kTakeOverReply: OnTakeOverReply(e.conn, m.take_over_reply); break;
    }
  }

  // ---- The leader's side ----

  void OnHello(uint64_t conn_id, const Hello& hello) {
    Conn& c = conns_[conn_id];
    Node& n = nodes_[c.to];
    HelloReply reply;
    if (n.shipper == nullptr) {
      reply.outcome = HelloOutcome::kRefused;
      reply.message = NodeId(c.to) + " is not the leader";
      if (n.link) reply.leader_hint = n.link->leader_id();
    } else {
      Outbox out;
      reply = n.shipper->OnHello(hello, &c.session, clock_.now_us, &out);
      if (c.session != 0) n.conn_of_session[c.session] = conn_id;
      Message m(MsgType::kHelloReply);
      m.reply = reply;
      Send(conn_id, true, std::move(m));
      CarryLeader(c.to, std::move(out));
      LeaderPump(c.to);
      return;
    }
    Message m(MsgType::kHelloReply);
    m.reply = reply;
    Send(conn_id, true, std::move(m));
  }

  void OnAck(uint64_t conn_id, uint64_t ship_id, const Ack& ack) {
    Conn& c = conns_[conn_id];
    Node& n = nodes_[c.to];
    if (!n.shipper || c.session == 0 || !c.acked.insert(ship_id).second) return;
    ++stats_.acks;
    if (ack.outcome == AckOutcome::kGap) ++stats_.gaps;
    Outbox out;
    n.shipper->OnAck(c.session, ack, &out);
    CarryLeader(c.to, std::move(out));
    LeaderPump(c.to);
  }

  void CarryLeader(int i, Outbox out) {
    Node& n = nodes_[i];
    for (uint64_t sid : out.ended) {
      auto it = n.conn_of_session.find(sid);
      if (it == n.conn_of_session.end()) continue;
      uint64_t conn = it->second;
      n.conn_of_session.erase(it);
      conns_[conn].session = 0;
      Break(conn);
    }
    for (auto& send : out.sends) {
      auto it = n.conn_of_session.find(send.session);
      if (it == n.conn_of_session.end()) continue;
      ++stats_.ships;
      stats_.tail_batches += send.ship.batches.size();
      Message m(MsgType::kShip);
      m.msg_id = next_msg_id_++;
      m.ship = std::move(send.ship);
      Send(it->second, true, std::move(m));
    }
    for (auto& read : out.wal_reads) {
      Event e(Kind::kWalReadDone);
      e.node = i;
      e.incarnation = n.incarnation;
      e.read = std::move(read);
      Schedule(std::move(e), Uniform(50, 3'000));
    }
  }

  void LeaderPump(int i) {
    Node& n = nodes_[i];
    if (!n.shipper) return;
    Outbox out;
    n.shipper->Pump(clock_.now_us, &out);
    CarryLeader(i, std::move(out));
    if (n.handover.has_value()) PollHandover(i);
    if (n.shipper) ScheduleTick(i, n.shipper->NextWakeUp());
  }

  // ---- The follower's side ----

  void OnHelloReply(uint64_t conn_id, const HelloReply& reply) {
    Conn& c = conns_[conn_id];
    Node& n = nodes_[c.from];
    if (!n.link) return;
    LinkOutbox out;
    n.link->OnHelloReply(c.generation, reply, clock_.now_us, &out);
    CarryLink(c.from, std::move(out));
  }

  void OnShip(uint64_t conn_id, uint64_t ship_id, Ship ship) {
    Conn& c = conns_[conn_id];
    Node& n = nodes_[c.from];
    if (!n.link) return;
    n.bytes_received += 1 + ship.batches.size();
    uint64_t push = ++n.next_push;
    n.pushes[push] = {conn_id, ship_id};
    LinkOutbox out;
    std::string why;
    if (!n.link->OnPush(c.generation, push, std::move(ship), clock_.now_us, &out, &why)) {
      n.pushes.erase(push);
      Break(conn_id);  // the push fails: the leader ends the stream
      return;
    }
    CarryLink(c.from, std::move(out));
  }

  void CarryLink(int i, LinkOutbox out) {
    Node& n = nodes_[i];
    for (auto& a : out.answers) {
      auto it = n.pushes.find(a.push);
      if (it == n.pushes.end()) continue;
      auto [conn, ship_id] = it->second;
      n.pushes.erase(it);
      Check(a.ack.applied == n.engine->LatestSequence() || a.ack.applied < n.engine->LatestSequence(),
            "an ack claims more than the follower applied");
      n.durable_acked = std::max(n.durable_acked, a.ack.durable);
      Message m(MsgType::kAck);
      m.msg_id = ship_id;
      m.ack = std::move(a.ack);
      Send(conn, false, std::move(m));
    }
    for (auto& r : out.rejects) {
      auto it = n.pushes.find(r.push);
      if (it == n.pushes.end()) continue;
      uint64_t conn = it->second.first;
      n.pushes.erase(it);
      Break(conn);
    }
    // As rpc::FollowerRole does: answers and refusals go out before the connection closes.
    if (out.drop && n.conn != 0) {
      uint64_t conn = n.conn;
      n.conn = 0;
      n.pushes.clear();
      Break(conn);
    }
    if (out.apply.has_value()) {
      ++stats_.worker_applies;
      Event e(Kind::kApplyDone);
      e.node = i;
      e.incarnation = n.incarnation;
      e.id = out.apply->push;
      e.ship = std::move(out.apply->ship);
      Schedule(std::move(e), Uniform(50, 3'000));
    }
    if (out.fsync.has_value()) {
      Event e(Kind::kSyncDone);
      e.node = i;
      e.incarnation = n.incarnation;
      e.id = *out.fsync;
      Schedule(std::move(e), Uniform(100, 2'000));
    }
    if (out.connect.has_value()) Connect(i, std::move(*out.connect));
    if (n.link) ScheduleTick(i, n.link->NextWakeUp());
  }

  void Connect(int i, LinkOutbox::Connect c) {
    Node& n = nodes_[i];
    ++stats_.reconnects;
    int to = NodeIndex(c.leader_id);
    uint64_t id = ++next_conn_;
    Conn& conn = conns_[id];
    conn.from = i;
    conn.to = to;
    conn.from_inc = n.incarnation;
    conn.generation = c.generation;
    n.conn = id;
    if (to < 0 || !nodes_[to].up) {  // connection refused
      conn.open = false;
      Event e(Kind::kConnectFailed);
      e.node = i;
      e.incarnation = n.incarnation;
      e.id = c.generation;
      Schedule(std::move(e), Uniform(100, 1'000));
      return;
    }
    conn.to_inc = nodes_[to].incarnation;
    Message m(MsgType::kHello);
    m.hello = std::move(c.hello);
    Send(id, false, std::move(m));
  }

  void ScheduleTick(int i, int64_t at) {
    Node& n = nodes_[i];
    if (at == kNever || at >= n.tick_at) return;
    n.tick_at = at;
    Event e(Kind::kTick);
    e.node = i;
    e.incarnation = n.incarnation;
    e.id = static_cast<uint64_t>(at);
    Schedule(std::move(e), std::max<int64_t>(0, at - clock_.now_us));
  }

  void Tick(int i, int64_t at) {
    Node& n = nodes_[i];
    if (n.tick_at != at) return;  // replaced by an earlier one
    n.tick_at = kNever;
    if (n.link) {
      LinkOutbox out;
      n.link->Tick(clock_.now_us, n.bytes_received, &out);
      CarryLink(i, std::move(out));
    } else if (n.shipper) {
      LeaderPump(i);
    }
  }

  // ---- Handover ----

  void StartHandover() {
    int l = LeaderIndex();
    if (l < 0 || nodes_[l].handover.has_value()) return;
    std::vector<int> targets;
    for (int j = 0; j < kNodes; ++j) {
      if (j != l && nodes_[j].up && nodes_[j].follower &&
          nodes_[j].follower->Status().phase == FollowerPhase::kStreaming) {
        targets.push_back(j);
      }
    }
    if (targets.empty()) return;
    int t = targets[static_cast<size_t>(Uniform(0, static_cast<int64_t>(targets.size()) - 1))];
    nodes_[l].handover.emplace(NodeId(t), clock_.now_us, kHandoverTimeoutUs);
    LeaderPump(l);
  }

  void PollHandover(int i) {
    Node& n = nodes_[i];
    Handover& h = *n.handover;
    if (h.phase() == Handover::Phase::kAsked) return;  // kHandoverAsk sends it again
    if (h.TimedOut(clock_.now_us)) {
      n.handover.reset();  // the target never caught up: writes go on
      return;
    }
    std::optional<TakeOver> ask = h.Poll(*n.leader, /*writes_idle=*/true, clock_.now_us);
    if (!ask.has_value()) {
      ScheduleTick(i, std::min(h.deadline_us(), clock_.now_us + 1'000));
      return;
    }
    // As rpc::LeaderRole does: the WAL fsynced, then the commit point: from here this node
    // takes no write by itself until it is answered.
    if (!Check(n.engine->SyncWal().ok(), "handover fsync")) return;
    NodeState next = StateForHandingOver(n.leader->state(), h.target());
    if (!Check(SaveNodeState(StatePath(i), next).ok(), "handover state saved")) return;
    // Now and then the target's machine fails just before the request reaches it: it comes
    // back without what it had not fsynced, and must refuse to take over.
    if (!quiet_ && Chance(0.2)) Crash(NodeIndex(h.target()), /*machine=*/true);
    AskTakeOver(i);
  }

  // Sends the take-over request on a connection of its own (as rpc/ does: a call to the
  // target), and again after a while until an answer comes.
  void AskTakeOver(int i) {
    Node& n = nodes_[i];
    int t = NodeIndex(n.handover->target());
    uint64_t id = ++next_conn_;
    Conn& conn = conns_[id];
    conn.from = t;  // the target answers "to the leader" on this connection
    conn.to = i;
    conn.from_inc = nodes_[t].incarnation;
    conn.to_inc = n.incarnation;
    conn.open = nodes_[t].up;
    Message m(MsgType::kTakeOver);
    m.take_over = n.handover->request();
    Send(id, true, std::move(m));
    Event again(Kind::kHandoverAsk);
    again.node = i;
    again.incarnation = n.incarnation;
    Schedule(std::move(again), 50'000);
  }

  void OnTakeOver(uint64_t conn_id, const TakeOver& t) {
    Conn& c = conns_[conn_id];
    Node& n = nodes_[c.from];
    if (!n.up) return;
    NodeState state = n.follower ? n.follower->state() : n.leader->state();
    SequenceNumber applied = n.engine->LatestSequence();
    bool take_over = false;
    TakeOverReply reply = AnswerTakeOver(state, applied, NodeId(c.from), t, &take_over);
    if (take_over) {
      // As rpc::FollowerRole does: the WAL is fsynced before the new epoch is saved.
      if (!Check(n.engine->SyncWal().ok(), "take-over fsync")) return;
      NodeState next = StateForLeading(state, applied, NodeId(c.from));
      if (!Check(SaveNodeState(StatePath(c.from), next).ok(), "take-over state saved")) return;
      BecomeFromState(c.from, next);
      reply.epoch = next.epoch;
      ++stats_.handovers;
    }
    Message m(MsgType::kTakeOverReply);
    m.take_over_reply = reply;
    Send(conn_id, false, std::move(m));
    // Now and then the new leader's machine fails at once: it must come back holding
    // everything it took over (the old leader follows it and must not find it behind).
    if (take_over && !quiet_ && Chance(0.1)) Crash(c.from, /*machine=*/true);
  }

  void OnTakeOverReply(uint64_t conn_id, const TakeOverReply& reply) {
    Conn& c = conns_[conn_id];
    c.open = false;
    Node& n = nodes_[c.to];
    if (!n.handover.has_value() || n.handover->phase() != Handover::Phase::kAsked) return;
    if (n.handover->StepsDown(reply)) {
      NodeState next = StateAfterHandover(n.leader->state(), n.handover->target(),
                                          n.handover->request(), reply);
      if (!Check(SaveNodeState(StatePath(c.to), next).ok(), "step-down state saved")) return;
      BecomeFromState(c.to, next);
      return;
    }
    // A clear refusal and no newer epoch there: nothing changed on the target; lead on, in a
    // new epoch (as after any restart: what this node wrote may differ from what it wrote
    // before a crash under the same epoch).
    NodeState next = StateForLeading(n.leader->state(), n.engine->LatestSequence(), NodeId(c.to));
    if (!Check(SaveNodeState(StatePath(c.to), next).ok(), "handover undone")) return;
    BecomeFromState(c.to, next);
  }

  // No answer yet: ask again (the target may have taken over; the request is never dropped).
  void HandoverUnanswered(int i) {
    Node& n = nodes_[i];
    if (n.handover.has_value() && n.handover->phase() == Handover::Phase::kAsked) AskTakeOver(i);
  }

  // ---- Writes and faults ----

  std::vector<WriteOp> RandomOps() {
    std::vector<WriteOp> ops;
    int count = static_cast<int>(Uniform(1, 6));
    auto key = [&] {
      std::string k = "k" + std::to_string(Uniform(0, 299));
      if (Chance(0.1)) k.push_back('\0');
      return k;
    };
    for (int i = 0; i < count; ++i) {
      int64_t r = Uniform(0, 9);
      if (r == 0) {
        ops.push_back({OpType::kDelete, key(), ""});
      } else if (r == 1) {
        std::string a = key(), b = key();
        if (b < a) std::swap(a, b);
        if (a == b) b.push_back('\xff');
        ops.push_back({OpType::kDeleteRange, a, b});
      } else {
        std::string value(static_cast<size_t>(Uniform(0, 120)), '\0');
        for (char& ch : value) ch = static_cast<char>(rng_());
        ops.push_back({OpType::kPut, key(), value});
      }
    }
    return ops;
  }

  void Write() {
    int l = LeaderIndex();
    if (l >= 0 && nodes_[l].up && nodes_[l].handover.has_value()) {
      InjectFaults();  // no writes while leadership moves, but faults go on
    } else if (l >= 0 && nodes_[l].up) {
      Node& n = nodes_[l];
      engine::WriteOptions wo;
      wo.write_time_us = clock_.now_us;
      auto batch = n.engine->Write(RandomOps(), wo);
      if (!Check(batch.ok(), "leader write")) return;
      n.leader->OnLocalWrite(*batch, clock_.now_us);
      max_leader_latest_ = std::max(max_leader_latest_, batch->last_seq());
      ++writes_done_;
      ++stats_.writes;
      if (Uniform(1, kFlushOneInWrites) == 1) {
        Check(n.engine->Flush().ok(), "flush");
        if (small_wal_) Check(n.engine->TrimWalArchive().ok(), "trim");
        ++stats_.flushes;
      }
      LeaderPump(l);
      InjectFaults();
    }
    if (writes_done_ < writes_wanted_) {
      Schedule(Event(Kind::kWrite), Uniform(0, kMaxWriteIntervalUs));
    } else {
      quiet_ = true;  // from now on: no faults, FIFO delivery
    }
  }

  void InjectFaults() {
    if (Chance(faults_.crash_chance)) {
      int l = LeaderIndex();
      int f = static_cast<int>(Uniform(0, kNodes - 1));
      if (f != l) Crash(f, Chance(0.5));
    }
    if (Chance(faults_.leader_restart_chance)) {
      int l = LeaderIndex();
      if (l >= 0) {
        ++stats_.leader_restarts;
        Crash(l, /*machine=*/false);
      }
    }
    if (Chance(faults_.leader_machine_crash_chance)) {
      int l = LeaderIndex();
      if (l >= 0) {
        ++stats_.leader_restarts;
        Crash(l, /*machine=*/true);
      }
    }
    if (Chance(faults_.handover_chance)) StartHandover();
  }

  void Handle(Event e) {
    Node* n = e.kind == Kind::kWrite ? nullptr : &nodes_[e.node];
    if (n != nullptr && e.kind != Kind::kDeliver && e.incarnation != n->incarnation) return;
    switch (e.kind) {
      case Kind::kWrite: Write(); break;
      case Kind::kDeliver: Deliver(e); break;
      case Kind::kTick: Tick(e.node, static_cast<int64_t>(e.id)); break;
      case Kind::kRestart: Restart(e.node); break;
      case Kind::kApplyDone: {
        if (!n->link) break;
        absl::StatusOr<Ack> r = n->follower->OnShip(e.ship, engine::WriteOptions{});
        LinkOutbox out;
        n->link->OnApplied(e.id, std::move(r), clock_.now_us, &out);
        CarryLink(e.node, std::move(out));
        break;
      }
      case Kind::kSyncDone: {
        if (!n->link) break;
        absl::Status s = n->engine->SyncWal();
        LinkOutbox out;
        n->link->OnSynced(e.id, s, &out);
        CarryLink(e.node, std::move(out));
        break;
      }
      case Kind::kWalReadDone: {
        if (!n->shipper) break;
        e.read.Run();
        stats_.wal_batches += e.read.batches.size();
        Outbox out;
        n->shipper->OnWalRead(std::move(e.read), clock_.now_us, &out);
        CarryLeader(e.node, std::move(out));
        LeaderPump(e.node);
        break;
      }
      case Kind::kConnectFailed: {
        if (!n->link) break;
        LinkOutbox out;
        n->link->OnConnectionLost(e.id, "connection refused", clock_.now_us, &out);
        CarryLink(e.node, std::move(out));
        break;
      }
      case Kind::kHandover: StartHandover(); break;
      case Kind::kHandoverAsk: HandoverUnanswered(e.node); break;
    }
  }

  // ---- Checks ----

  // The history entries under which node `i` holds data never change.
  void CheckHistoryKept(int i, const NodeState& now) {
    Node& n = nodes_[i];
    Check(now.HighestEpoch() >= n.highest_epoch,
          absl::StrCat(NodeId(i), "'s highest epoch went back: ", n.highest_epoch, " -> ",
                       now.HighestEpoch()));
    n.highest_epoch = std::max(n.highest_epoch, now.HighestEpoch());
    auto& kept = kept_history_[i];
    SequenceNumber latest = n.engine ? n.engine->LatestSequence() : 0;
    for (const EpochEntry& e : kept) {
      if (e.start_seq > latest) continue;
      bool found = false;
      for (const EpochEntry& x : now.history) found = found || x == e;
      if (!found) {
        std::string have;
        for (const EpochEntry& x : now.history) {
          absl::StrAppend(&have, " (", x.epoch, ", ", x.start_seq, ", ", x.leader, ")");
        }
        Fail(absl::StrCat(NodeId(i), " dropped history entry (", e.epoch, ", ", e.start_seq,
                          ", ", e.leader, ") while holding seq ", latest, "; it holds", have));
      }
    }
    kept.clear();
    for (const EpochEntry& e : now.history) {
      if (e.start_seq <= latest) kept.push_back(e);
    }
  }

  void CheckInvariants() {
    for (int i = 0; i < kNodes && failure_.empty(); ++i) {
      Node& n = nodes_[i];
      if (!n.up || !n.engine) continue;
      SequenceNumber latest = n.engine->LatestSequence();
      Check(latest >= n.last_latest, absl::StrCat(NodeId(i), " went back from seq ",
                                                  n.last_latest, " to ", latest));
      Check(latest <= max_leader_latest_ || n.leader != nullptr,
            absl::StrCat(NodeId(i), " holds seq ", latest, ", past anything a leader wrote (",
                         max_leader_latest_, ")"));
      n.last_latest = latest;
      max_leader_latest_ = std::max(max_leader_latest_, n.leader ? latest : 0);
      Epoch epoch = n.leader ? n.leader->epoch() : n.follower ? n.follower->epoch() : 0;
      Check(epoch >= n.highest_epoch || n.follower != nullptr,
            absl::StrCat(NodeId(i), "'s epoch went back"));
      n.highest_epoch = std::max(n.highest_epoch, epoch);
      if (n.follower && n.follower->Status().phase == FollowerPhase::kNeedsSnapshot) {
        Check(small_wal_ || faults_.leader_machine_crash_chance > 0, absl::StrCat(NodeId(i), " needs a snapshot although the WAL is kept: ",
                                       n.follower->Status().message));
      }
    }
  }

  bool NeedsSnapshot(const Node& n) const {
    return n.follower && n.follower->Status().phase == FollowerPhase::kNeedsSnapshot;
  }

  bool Quiet() {
    int l = LeaderIndex();
    if (l < 0 || !nodes_[l].up || nodes_[l].handover.has_value()) return false;
    SequenceNumber latest = nodes_[l].engine->LatestSequence();
    for (int i = 0; i < kNodes; ++i) {
      if (i == l) continue;
      const Node& n = nodes_[i];
      if (!n.up || !n.follower) return false;
      if (NeedsSnapshot(n)) continue;
      if (n.engine->LatestSequence() != latest || !n.link->streaming()) return false;
    }
    for (const FollowerInfo& f : nodes_[l].leader->Followers()) {
      if (f.state == FollowerState::kConnected && f.applied != latest) return false;
    }
    return true;
  }

  void FinalChecks() {
    int l = LeaderIndex();
    Node& leader = nodes_[l];
    engine::ScanOptions all;
    all.limit = 1'000'000;
    auto expected = leader.engine->Scan(all);
    if (!Check(expected.ok(), "leader scan")) return;
    for (int i = 0; i < kNodes; ++i) {
      if (i == l) continue;
      Node& n = nodes_[i];
      auto state = LoadNodeState(StatePath(i));
      if (Check(state.ok(), "final state")) CheckHistoryKept(i, *state);
      if (NeedsSnapshot(n)) {
        ++stats_.needs_snapshot;
        Check(!n.follower->ReadRefusal().empty(), "a follower that needs a snapshot reads");
        continue;
      }
      Check(n.engine->LatestSequence() == leader.engine->LatestSequence(),
            absl::StrCat(NodeId(i), " ends at ", n.engine->LatestSequence(), ", the leader at ",
                         leader.engine->LatestSequence()));
      auto got = n.engine->Scan(all);
      if (!Check(got.ok(), "follower scan")) return;
      bool same = got->size() == expected->size();
      for (size_t k = 0; same && k < got->size(); ++k) {
        same = (*got)[k].key == (*expected)[k].key && (*got)[k].value == (*expected)[k].value;
      }
      Check(same, absl::StrCat(NodeId(i), "'s contents differ from the leader's"));
    }
  }

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
  bool quiet_ = false;
  Stats stats_;
  std::string failure_;
};

}  // namespace

RunResult RunSeed(const std::string& dir, uint64_t seed, const Faults& faults, bool small_wal,
                  int writes) {
  std::filesystem::create_directories(dir);
  Cluster cluster(dir, seed, faults, small_wal, writes);
  return cluster.Run();
}

}  // namespace walship::replication::sim
