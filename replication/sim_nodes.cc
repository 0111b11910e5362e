// The simulated cluster's nodes and their roles, the network, each side of a stream and
// the handover (replication/sim_cluster.h says what the simulation is).
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "replication/sim_cluster_internal.h"

namespace walship::replication::sim::detail {

void Cluster::Start(int i) {
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
  if (state->role == "leader" && !ResumesHandover(*state) && StartRecovery(i, *state)) return;
  if (state->role == "leader" && !ResumesHandover(*state)) {
    // As a node does at start (rpc/node_server.cc): each start as leader, a new epoch.
    NodeState next = StateForLeading(*state, n.engine->LatestSequence(), NodeId(i));
    if (!Check(SaveNodeState(StatePath(i), next).ok(), "leader state saved")) return;
    *state = next;
  }
  BecomeFromState(i, *state);
}

void Cluster::BecomeFromState(int i, const NodeState& state) {
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

void Cluster::EndRole(Node& n) {
  n.shipper.reset();
  n.leader.reset();
  n.link.reset();
  n.follower.reset();
  n.handover.reset();
  n.conn_of_session.clear();
  n.commit_wait.reset();  // writes still waiting are in doubt: never acknowledged
  n.waiting.clear();
  n.recovery.reset();
}

void Cluster::BecomeLeader(int i, NodeState state) {
  Node& n = nodes_[i];
  // A follower elected hands over the batches it applied last (kept by half the followers).
  std::deque<ShippedBatch> recent;
  if (n.follower != nullptr) recent = n.follower->TakeRecent();
  EndRole(n);
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
  leader_log_.emplace_back(clock_.now_us, n.engine->LatestSequence());
  if (n.leader->SeedTail(std::move(recent)) > 0) ++stats_.seeded_tails;
  ShipperOptions so;
  so.max_inflight_ships = 4;
  so.ack_delay_us = Chance(0.3) ? 2000 : 0;
  so.heartbeat_interval_ms = 20;
  n.shipper = std::make_unique<Shipper>(*n.leader, so);
  n.commit_wait = std::make_unique<CommitWait>(commit_);
  n.highest_epoch = std::max(n.highest_epoch, n.leader->epoch());
  LeaderPump(i);
}

void Cluster::BecomeFollower(int i, const NodeState& state) {
  Node& n = nodes_[i];
  EndRole(n);
  FollowerOptions fo;
  fo.cluster = "sim";
  fo.node_id = NodeId(i);
  fo.state_path = StatePath(i);
  fo.keep_recent_bytes = Chance(0.5) ? kMaxTailBytes : 0;
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

void Cluster::Crash(int i, bool machine) {
  Node& n = nodes_[i];
  if (!n.up) return;
  n.last_latest = n.engine->LatestSequence();
  for (auto& [id, c] : conns_) {
    if (c.open && (c.from == i || c.to == i)) Break(id);
  }
  n.up = false;
  EndRole(n);
  n.pushes.clear();
  if (machine) n.env->fs->Crash();
  n.engine.reset();
  if (machine) {
    stats_.lost_bytes += n.env->fs->LoseUnsynced();
    ++stats_.machine_crashes;
    ++machine_crash_count_[i];
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

void Cluster::Restart(int i) {
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

void Cluster::Send(uint64_t conn_id, bool to_follower, Message m) {
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

void Cluster::Break(uint64_t conn_id) {
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

void Cluster::Deliver(Event& e) {
  Conn& c = conns_[e.conn];
  if (!c.open) {
    ++stats_.discarded;
    return;
  }
  Message& m = e.msg;
  bool to_follower = m.type == MsgType::kHelloReply || m.type == MsgType::kShip ||
                     m.type == MsgType::kTakeOver || m.type == MsgType::kPosition;
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
    case MsgType::kPosition: OnPosition(e.conn); break;
    case MsgType::kPositionReply: OnPositionReply(e.conn, m.position); break;
  }
}

void Cluster::OnHello(uint64_t conn_id, const Hello& hello) {
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

void Cluster::OnAck(uint64_t conn_id, uint64_t ship_id, const Ack& ack) {
  Conn& c = conns_[conn_id];
  Node& n = nodes_[c.to];
  if (!n.shipper || c.session == 0 || !c.acked.insert(ship_id).second) return;
  ++stats_.acks;
  if (ack.outcome == AckOutcome::kGap) ++stats_.gaps;
  Outbox out;
  n.shipper->OnAck(c.session, ack, &out);
  CarryLeader(c.to, std::move(out));
  std::vector<Released> released;
  n.commit_wait->OnProgress(*n.leader, clock_.now_us, &released);
  OnReleased(c.to, released);
  LeaderPump(c.to);
}

void Cluster::CarryLeader(int i, Outbox out) {
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

void Cluster::LeaderPump(int i) {
  Node& n = nodes_[i];
  if (!n.shipper) return;
  std::vector<Released> released;
  n.commit_wait->Tick(*n.leader, clock_.now_us, &released);
  OnReleased(i, released);
  Outbox out;
  n.leader->set_echo(!n.handover.has_value());  // as rpc/ does
  n.shipper->Pump(clock_.now_us, &out, n.commit_wait->demand());
  CarryLeader(i, std::move(out));
  if (n.handover.has_value()) PollHandover(i);
  if (n.shipper) {
    ScheduleTick(i, std::min(n.shipper->NextWakeUp(), n.commit_wait->NextWakeUp()));
  }
}

void Cluster::OnHelloReply(uint64_t conn_id, const HelloReply& reply) {
  Conn& c = conns_[conn_id];
  Node& n = nodes_[c.from];
  if (!n.link) return;
  LinkOutbox out;
  n.link->OnHelloReply(c.generation, reply, clock_.now_us, &out);
  CarryLink(c.from, std::move(out));
}

void Cluster::OnShip(uint64_t conn_id, uint64_t ship_id, Ship ship) {
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

void Cluster::CarryLink(int i, LinkOutbox out) {
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

void Cluster::Connect(int i, LinkOutbox::Connect c) {
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

void Cluster::ScheduleTick(int i, int64_t at) {
  Node& n = nodes_[i];
  if (at == kNever || at >= n.tick_at) return;
  n.tick_at = at;
  Event e(Kind::kTick);
  e.node = i;
  e.incarnation = n.incarnation;
  e.id = static_cast<uint64_t>(at);
  Schedule(std::move(e), std::max<int64_t>(0, at - clock_.now_us));
}

void Cluster::Tick(int i, int64_t at) {
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

void Cluster::StartHandover() {
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

void Cluster::PollHandover(int i) {
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

uint64_t Cluster::OpenCall(int i, int peer) {
  uint64_t id = ++next_conn_;
  Conn& conn = conns_[id];
  conn.from = peer;  // the peer answers "to the leader" on this connection
  conn.to = i;
  conn.from_inc = nodes_[peer].incarnation;
  conn.to_inc = nodes_[i].incarnation;
  conn.open = nodes_[peer].up;
  return id;
}

void Cluster::AskTakeOver(int i) {
  Node& n = nodes_[i];
  Message m(MsgType::kTakeOver);
  m.take_over = n.handover->request();
  Send(OpenCall(i, NodeIndex(n.handover->target())), true, std::move(m));
  Event again(Kind::kHandoverAsk);
  again.node = i;
  again.incarnation = n.incarnation;
  Schedule(std::move(again), Handover::kAskAgainUs);
}

void Cluster::OnTakeOver(uint64_t conn_id, const TakeOver& t) {
  Conn& c = conns_[conn_id];
  Node& n = nodes_[c.from];
  if (!n.up) return;
  NodeState state = n.follower   ? n.follower->state()
                    : n.leader   ? n.leader->state()
                    : n.recovery ? n.recovery->state()
                                 : NodeState{};
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

void Cluster::OnTakeOverReply(uint64_t conn_id, const TakeOverReply& reply) {
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

void Cluster::HandoverUnanswered(int i) {
  Node& n = nodes_[i];
  if (n.handover.has_value() && n.handover->phase() == Handover::Phase::kAsked) AskTakeOver(i);
}

}  // namespace walship::replication::sim::detail
