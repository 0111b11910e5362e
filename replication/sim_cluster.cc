#include "replication/sim_cluster.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "replication/sim_cluster_internal.h"

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
  replicated += o.replicated, degraded += o.degraded, not_replicated += o.not_replicated;
  recoveries += o.recoveries, recovery_handovers += o.recovery_handovers;
  seeded_tails += o.seeded_tails;
  reads_served += o.reads_served, reads_lost += o.reads_lost;
  bare_seq_stale += o.bare_seq_stale, caught_up_checks += o.caught_up_checks;
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
             << " worker_applies=" << s.worker_applies << " replicated=" << s.replicated
             << " degraded=" << s.degraded << " not_replicated=" << s.not_replicated
             << " recoveries=" << s.recoveries << " recovery_handovers=" << s.recovery_handovers
             << " seeded_tails=" << s.seeded_tails << " reads_served=" << s.reads_served
             << " reads_lost=" << s.reads_lost << " bare_seq_stale=" << s.bare_seq_stale
             << " caught_up_checks=" << s.caught_up_checks;
}

namespace detail {

RunResult Cluster::Run() {
  ChooseReplication();
  std::vector<Member> members;
  for (int i = 0; i < kNodes; ++i) members.push_back({NodeId(i), "", true});
  for (int i = 0; i < kNodes; ++i) {
    NodeState seed;
    // As a node's first start saves it: every node of the cluster, voting.
    seed.membership = MembershipOf(members, 1);
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

int64_t Cluster::Uniform(int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(rng_() % static_cast<uint64_t>(hi - lo + 1));
}

void Cluster::Schedule(Event e, int64_t delay_us) {
  events_.emplace(std::make_pair(clock_.now_us + delay_us, next_order_++), std::move(e));
}

bool Cluster::Check(bool ok, const std::string& what) {
  if (!ok && failure_.empty()) failure_ = what;
  return ok;
}

int64_t Cluster::NetworkDelay() {
  if (quiet_) return kQuietDelayUs;
  if (Chance(faults_.long_delay_chance)) return Uniform(2'000, 20'000);
  return Uniform(100, 2'000);
}

int Cluster::LeaderIndex() const {
  for (int i = 0; i < kNodes; ++i) {
    if (nodes_[i].leader != nullptr) return i;
  }
  return -1;
}

std::vector<WriteOp> Cluster::RandomOps() {
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

void Cluster::Write() {
  int l = LeaderIndex();
  if (l >= 0 && nodes_[l].up && nodes_[l].handover.has_value()) {
    InjectFaults();  // no writes while leadership moves, but faults go on
  } else if (l >= 0 && nodes_[l].up) {
    Node& n = nodes_[l];
    engine::WriteOptions wo;
    wo.write_time_us = clock_.now_us;
    std::vector<WriteOp> ops = RandomOps();
    uint64_t index = static_cast<uint64_t>(writes_done_);
    ops.push_back({OpType::kPut, MarkerKey(index), ""});  // tells whether a node holds it
    auto batch = n.engine->Write(ops, wo);
    if (!Check(batch.ok(), "leader write")) return;
    NoteWritten(l, batch->last_seq(), index);
    n.leader->OnLocalWrite(*batch, clock_.now_us);
    AwaitFollowers(l, batch->last_seq());
    max_leader_latest_ = std::max(max_leader_latest_, batch->last_seq());
    ++writes_done_;
    ++stats_.writes;
    if (Uniform(1, kFlushOneInWrites) == 1) {
      Check(n.engine->Flush().ok(), "flush");
      if (small_wal_) Check(n.engine->TrimWalArchive().ok(), "trim");
      ++stats_.flushes;
    }
    LeaderPump(l);
    if (Chance(0.3)) ReadAtRandom();
    InjectFaults();
  }
  if (writes_done_ < writes_wanted_) {
    Schedule(Event(Kind::kWrite), Uniform(0, kMaxWriteIntervalUs));
  } else {
    quiet_ = true;  // from now on: no faults, FIFO delivery
  }
}

void Cluster::InjectFaults() {
  if (Chance(faults_.crash_chance)) {
    // A follower: a node that leads, hands over or asks its peers before leading is the
    // leader faults' to crash (its machine crashing may cost its WAL files).
    int f = static_cast<int>(Uniform(0, kNodes - 1));
    if (nodes_[f].follower != nullptr) Crash(f, Chance(0.5));
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

void Cluster::Handle(Event e) {
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
    case Kind::kRecoveryAsk: AskPositions(e.node); break;
  }
}

void Cluster::CheckHistoryKept(int i, const NodeState& now) {
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

void Cluster::CheckInvariants() {
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
    Epoch epoch = n.leader     ? n.leader->epoch()
                  : n.follower ? n.follower->epoch()
                  : n.recovery ? n.recovery->state().epoch
                               : 0;
    Check(epoch >= n.highest_epoch || n.follower != nullptr,
          absl::StrCat(NodeId(i), "'s epoch went back"));
    n.highest_epoch = std::max(n.highest_epoch, epoch);
    if (n.follower && n.follower->Status().phase == FollowerPhase::kNeedsSnapshot) {
      Check(small_wal_ || faults_.leader_machine_crash_chance > 0, absl::StrCat(NodeId(i), " needs a snapshot although the WAL is kept: ",
                                     n.follower->Status().message));
    }
  }
  if (failure_.empty()) CheckCaughtUp();
}

bool Cluster::NeedsSnapshot(const Node& n) const {
  return n.follower && n.follower->Status().phase == FollowerPhase::kNeedsSnapshot;
}

bool Cluster::Quiet() {
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
    if (f.state == FollowerState::kConnected &&
        (f.applied != latest || !nodes_[l].leader->HoldsMembership(f))) {
      return false;
    }
  }
  return true;
}

void Cluster::FinalChecks() {
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
    if (Check(state.ok(), "final state")) {
      CheckHistoryKept(i, *state);
      Check(state->membership == leader.leader->membership(),
            absl::StrCat(NodeId(i), " saved membership version ", state->membership.version,
                         ", the leader holds ", leader.leader->membership().version));
    }
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
  CheckAckedWrites();
}

}  // namespace detail

RunResult RunSeed(const std::string& dir, uint64_t seed, const Faults& faults, bool small_wal,
                  int writes) {
  std::filesystem::create_directories(dir);
  detail::Cluster cluster(dir, seed, faults, small_wal, writes);
  return cluster.Run();
}

}  // namespace walship::replication::sim
