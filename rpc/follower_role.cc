#include "rpc/follower_role.h"

#include <spdlog/spdlog.h>

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "replication/clock.h"
#include "replication/handover.h"
#include "replication/rollback.h"
#include "replication/seeding.h"
#include "rpc/campaign.h"
#include "rpc/client_service.h"
#include "rpc/coordinated_campaign.h"
#include "rpc/convert.h"
#include "rpc/node.h"
#include "rpc/wal_sync.h"

namespace walship::rpc {
namespace {

using engine::SequenceNumber;
using replication::Ack;
using replication::Ship;

constexpr uint32_t kRetireConnectionMs = 5000;

replication::FollowerOptions FollowerOptionsFor(const Node& node) {
  const NodeServerOptions& o = const_cast<Node&>(node).options();
  replication::FollowerOptions fo;
  fo.cluster = o.cluster;
  fo.node_id = o.node_id;
  fo.state_path = o.data_dir + "/node-state";
  fo.fsync_apply = o.fsync_apply;
  // A node that may be elected keeps what its leader's memory tail would hold.
  if (o.failover) fo.keep_recent_bytes = o.leader.max_tail_bytes;
  return fo;
}

replication::FollowerLinkOptions LinkOptionsFor(const NodeServerOptions& o) {
  replication::FollowerLinkOptions lo;
  lo.node_id = o.node_id;
  lo.heartbeat_timeout_ms = o.heartbeat_timeout_ms;
  lo.reconnect_min_ms = o.reconnect_min_ms;
  lo.reconnect_max_ms = o.reconnect_max_ms;
  lo.fsync_interval_ms = o.follower_fsync_interval_ms;
  lo.search_leader = o.failover;
  return lo;
}

// The node to follow first: the saved leader, else the config's; a node that stepped down
// knows none, and starts its search at another member.
std::string LeaderOf(const replication::NodeState& state, const NodeServerOptions& o) {
  std::string id = state.leader.empty() ? o.leader_id : state.leader;
  if (!id.empty() && id != o.node_id) return id;  // the config's leader names none
  for (const replication::Member& m : state.membership.members) {
    if (m.id != o.node_id) return m.id;
  }
  return id;
}

// The follower's side of a stream: each push is answered with its ack.
class SinkImpl final : public schema::BatchSink::Server {
 public:
  SinkImpl(FollowerRole& role, uint64_t generation) : role_(role), generation_(generation) {}
  kj::Promise<void> push(PushContext ctx) override {
    Ship ship = FromCapnp(ctx.getParams().getShip());
    return role_.OnPush(generation_, std::move(ship)).then([ctx](Ack ack) mutable {
      ToCapnp(ack, ctx.getResults().initAck());
    });
  }

 private:
  FollowerRole& role_;
  uint64_t generation_;
};

}  // namespace

FollowerRole::FollowerRole(Node& node, replication::NodeState state)
    : node_(node),
      follower_(std::make_shared<replication::Follower>(FollowerOptionsFor(node), &node.engine(),
                                                        state, replication::RealClock())),
      link_(*follower_, LinkOptionsFor(node.options()), LeaderOf(state, node.options())),
      leader_beats_(int64_t{node.options().phi_min_std_ms} * 1000,
                    replication::PhiAccrualDetector::kDefaultWindow,
                    int64_t{node.options().heartbeat_timeout_ms} * 1000),
      tasks_(*this) {
  if (node.coordinator() != nullptr) {
    campaign_ = std::make_unique<CoordinatedCampaign>(
        node, *node.coordinator(), follower_, link_, [this](std::string id) {
          replication::LinkOutbox out;
          link_.Follow(id, "which holds the leader key in etcd", node_.MonoNowUs(), &out);
          CarryLink(std::move(out));
        });
  } else if (node.options().failover) {
    campaign_ = std::make_unique<Campaign>(node, follower_, link_, [this](std::string id) {
      replication::LinkOutbox out;
      link_.Follow(id, "which this node voted for", node_.MonoNowUs(), &out);
      CarryLink(std::move(out));
    });
  }
}

FollowerRole::~FollowerRole() noexcept(false) {
  pushes_.clear();
  if (conn_.get() != nullptr) conn_->Close();
}

void FollowerRole::taskFailed(kj::Exception&& e) {
  spdlog::warn("follower task failed: {}", e.getDescription().cStr());
}

void FollowerRole::Start() {
  replication::LinkOutbox out;
  link_.Start(node_.MonoNowUs(), &out);
  CarryLink(std::move(out));
  if (campaign_ != nullptr) campaign_->Start();
}

kj::Promise<replication::VoteReply> FollowerRole::RequestVote(replication::VoteRequest request) {
  if (campaign_ != nullptr) return campaign_->Answer(std::move(request));
  replication::VoteReply reply;
  reply.voter = node_.options().node_id;
  reply.epoch = follower_->HighestEpoch();
  reply.message = "automatic failover is off on this node (failover = false)";
  return reply;
}

replication::HeartbeatReply FollowerRole::Heartbeat(const replication::Heartbeat& beat) {
  const NodeServerOptions& o = node_.options();
  replication::HeartbeatReply reply =
      replication::AnswerHeartbeat(o.node_id, o.cluster, follower_->HighestEpoch(), beat);
  if (!reply.heard) return reply;
  int64_t now = node_.PreciseNowUs();
  leader_beats_.OnHeartbeatFrom(beat.leader, beat.epoch, now);
  if (campaign_ != nullptr) campaign_->NoteHeartbeat(beat.leader, beat.epoch, now);
  // A leader of a later epoch than the stream's: the stream's leader was replaced (this node
  // missed the election, or it stepped down): follow the new one now rather than wait for the
  // old stream to time out.
  if (o.failover && beat.leader != link_.leader_id() && beat.epoch > follower_->epoch()) {
    replication::LinkOutbox out;
    link_.Follow(beat.leader, absl::StrCat("which leads epoch ", beat.epoch), node_.MonoNowUs(),
                 &out);
    CarryLink(std::move(out));
  }
  return reply;
}

kj::Promise<PromoteOutcome> FollowerRole::Promote(bool accept_loss) {
  if (campaign_ == nullptr) {
    return PromoteOutcome::Refused(absl::FailedPreconditionError(
        "automatic failover is off on this node (failover = false): a promotion is an election "
        "by the voters, which then refuse; with the leader alive, use walship switchover"));
  }
  return campaign_->Promote(accept_loss);
}

absl::Status FollowerRole::WriteRefusal() const {
  return NotLeaderError(node_.AddressOf(link_.leader_id()));
}

void FollowerRole::OnWritten(engine::Batch batch, int64_t) {
  // Never expected: writes are refused here, and a handover waits for writes in progress.
  spdlog::error("a follower wrote a client batch at seq {}", batch.first_seq);
}

kj::Promise<ReplicationOutcome> FollowerRole::AwaitReplicated(engine::SequenceNumber seq,
                                                             const replication::Durability&,
                                                             bool) {
  // Never expected, as OnWritten.
  return ReplicationOutcome{NotReplicatedError(absl::StrCat(
      "seq ", seq, " was written while this node followed; nothing waits for followers here"))};
}

replication::PeerPosition FollowerRole::Position() const {
  return replication::PositionOf(follower_->state(), follower_->Status().applied,
                                 node_.options().node_id);
}

// Only the leader knows what its followers acknowledged: a committed read goes there.
kj::Promise<absl::Status> FollowerRole::AwaitCommitted(engine::SequenceNumber) {
  absl::Status s = NotLeaderError(node_.AddressOf(link_.leader_id()));
  absl::Status refused(s.code(), absl::StrCat("committed reads are served by the leader; ",
                                              s.message()));
  s.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    refused.SetPayload(url, payload);
  });
  return refused;
}

void FollowerRole::FillStatus(schema::NodeStatus::Builder st) {
  replication::FollowerStatus fs = follower_->Status();
  bool streaming = fs.phase == replication::FollowerPhase::kStreaming;
  bool ready = streaming && replication::IsReady(fs.applied, fs.leader_latest,
                                                 node_.options().ready_lag);
  st.setReady(ready);
  st.setPhase(ready ? "ready"
                    : streaming ? absl::StrCat("catching up: lag ", fs.lag_seq)
                                : replication::FollowerPhaseName(fs.phase));
  st.setEpoch(fs.epoch);
  st.setDatabaseId(fs.database_id);
  st.setLeaderId(link_.leader_id());
  st.setLeaderAddress(node_.AddressOf(link_.leader_id()));
  st.setReplicationState(replication::FollowerPhaseName(fs.phase));
  st.setAppliedSeq(fs.applied);
  st.setLeaderLatestSeq(fs.leader_latest);
  st.setLagSeq(fs.lag_seq);
  st.setLagMs(fs.lag_ms);
  st.setMessage(fs.message);
  if (campaign_ != nullptr) st.setFailover(campaign_->Describe());
  int64_t now = node_.PreciseNowUs();
  if (leader_beats_.last_heartbeat_us() != 0) {
    st.setLeaderHeartbeatAgoMs((now - leader_beats_.last_heartbeat_us()) / 1000);
    st.setLeaderHeartbeatPhi(leader_beats_.Phi(now));
  } else {
    st.setLeaderHeartbeatAgoMs(-1);
  }
}

kj::Promise<void> FollowerRole::Subscribe(SubscribeContext ctx, std::shared_ptr<PeerSessions>) {
  replication::Hello hello = FromCapnp(ctx.getParams().getHello());
  replication::HelloReply reply;
  reply.outcome = replication::HelloOutcome::kRefused;
  reply.message = absl::StrCat("node '", node_.options().node_id, "' is not the leader");
  reply.epoch = follower_->epoch();
  // The follower follows that one; a node standing for leader names itself (the hello
  // waited for its round's outcome, Node::UntilSettled, in vain: the follower asks again
  // soon).
  reply.leader_hint = Standing() ? node_.options().node_id : link_.leader_id();
  ToCapnp(reply, ctx.getResults().initReply());
  spdlog::info("refused follower '{}': not the leader; named '{}'", hello.follower_id,
               reply.leader_hint);
  return kj::READY_NOW;
}

// Takes over when replication::AnswerTakeOver says so, after the WAL is fsynced: the new
// leader's epoch must start after writes that survive its machine failing. A node state that
// cannot be saved is no answer (the call fails and the leader asks again), never a refusal:
// the file may hold the new role already.
kj::Promise<void> FollowerRole::TakeOver(TakeOverContext ctx) {
  replication::TakeOver request = FromCapnp(ctx.getParams().getRequest());
  bool take_over = false;
  replication::TakeOverReply reply =
      replication::AnswerTakeOver(follower_->state(), node_.engine().LatestSequence(),
                                  node_.options().node_id, request, &take_over);
  if (!take_over) {
    if (!reply.accepted) {
      spdlog::warn("refused to take over from '{}': {}", request.from, reply.message);
    }
    ToCapnp(reply, ctx.getResults().initReply());
    return kj::READY_NOW;
  }
  if (taking_over_) return KJ_EXCEPTION(OVERLOADED, "a take-over is under way; ask again");
  taking_over_ = true;
  return node_.node_pool()
      .Run([e = &node_.engine()]() { return e->SyncWal(); })
      .then([this, ctx, request](absl::Status synced) mutable -> kj::Promise<void> {
        taking_over_ = false;
        if (!synced.ok()) {
          return KJ_EXCEPTION(FAILED, absl::StrCat("cannot fsync the WAL to take over: ",
                                                   synced.message()));
        }
        // Asked again on what it holds now, durably.
        replication::NodeState state = follower_->state();
        SequenceNumber applied = node_.engine().LatestSequence();
        bool still = false;
        replication::TakeOverReply answer = replication::AnswerTakeOver(
            state, applied, node_.options().node_id, request, &still);
        if (still) {
          replication::NodeState next =
              replication::StateForLeading(state, applied, node_.options().node_id);
          if (absl::Status s = replication::SaveNodeState(node_.state_path(), next); !s.ok()) {
            return KJ_EXCEPTION(FAILED, absl::StrCat("cannot save the node state to take "
                                                     "over: ", s.message()));
          }
          spdlog::warn("taking over from '{}' at seq {}: leading epoch {}", request.from,
                       applied, next.epoch);
          answer.epoch = next.epoch;
          node_.SwitchRole(std::move(next));
        }
        ToCapnp(answer, ctx.getResults().initReply());
        return kj::READY_NOW;
      });
}

kj::Promise<HandoverOutcome> FollowerRole::HandOver(std::string, uint32_t) {
  return HandoverOutcome{NotLeaderError(node_.AddressOf(link_.leader_id())), link_.leader_id(),
                         follower_->epoch()};
}

kj::Promise<Ack> FollowerRole::OnPush(uint64_t generation, Ship ship) {
  if (generation != link_.generation()) {
    return KJ_EXCEPTION(DISCONNECTED, "push on a connection this follower has dropped");
  }
  uint64_t push = ++last_push_;
  auto paf = kj::newPromiseAndFulfiller<Ack>();
  pushes_.emplace(push, kj::mv(paf.fulfiller));
  replication::LinkOutbox out;
  std::string why;
  if (!link_.OnPush(generation, push, std::move(ship), node_.MonoNowUs(), &out, &why)) {
    pushes_.erase(push);
    return KJ_EXCEPTION(OVERLOADED, why);
  }
  CarryLink(std::move(out));
  return kj::mv(paf.promise);
}

// ---- The stream from the leader ----
//
// The FollowerLink (replication/follower_link.h) decides when to connect and to whom, what to
// apply where, when to ack and when the leader is silent; here its outbox is carried out.

void FollowerRole::CarryLink(replication::LinkOutbox out) {
  for (auto& [level, text] : out.logs) {
    switch (level) {
      case replication::LogLevel::kInfo: spdlog::info("{}", text); break;
      case replication::LogLevel::kWarn: spdlog::warn("{}", text); break;
      case replication::LogLevel::kError: spdlog::error("{}", text); break;
    }
  }
  // A membership the leader sent and the Follower saved: the node learns the new addresses.
  if (uint64_t saves = follower_->membership_saves(); saves != membership_saves_) {
    membership_saves_ = saves;
    node_.AdoptMembership(follower_->membership());
  }
  // Answers first: the acks an apply failure releases, and its refusal, go out before the
  // connection closes.
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
  if (out.drop) DropConnection();
  if (out.apply.has_value()) RunApply(std::move(*out.apply));
  if (out.fsync.has_value()) RunFsync(*out.fsync);
  if (out.connect.has_value()) Connect(std::move(*out.connect));
  ArmLinkTimer();
  node_.clients().reads().Poke();  // an apply or a leader's message may let reads through
  if (campaign_ != nullptr) campaign_->NoteContact();
  if (node_.options().reseed == replication::ReseedPolicy::kAutomatic &&
      follower_->Status().phase == replication::FollowerPhase::kNeedsSnapshot) {
    if (absl::Status s = StartReseed(); !s.ok()) {
      spdlog::error("cannot start re-seeding this follower: {}", s.ToString());
    }
  }
}

// Once the leader said it cannot serve this follower and the verdict is saved, the node
// re-seeds itself (the seeding role), keeping its data until the new copy is verified.
absl::Status FollowerRole::StartReseed() {
  if (reseeding_) return absl::OkStatus();
  if (follower_->Status().phase != replication::FollowerPhase::kNeedsSnapshot) {
    return absl::FailedPreconditionError(
        "this follower streams from its leader: only one that needs a snapshot is re-seeded");
  }
  absl::StatusOr<replication::NodeState> saved = replication::LoadNodeState(node_.state_path());
  if (!saved.ok()) return saved.status();
  if (saved->needs_snapshot.empty()) {
    // Not saved (yet, or its save failed and was logged): the seeding goes ahead all the same;
    // should the process stop before it ends, the leader gives the verdict again.
    saved->needs_snapshot = follower_->Status().message;
  }
  // Seeded from the node that gave the verdict: a node that stepped down, or looked for its
  // leader among the members, has found it since its state was saved. Saved with it, so
  // that a node that stops while seeded seeds from that leader again when restarted.
  if (link_.leader_id().empty() || link_.leader_id() == node_.options().node_id) {
    return absl::FailedPreconditionError("no leader is known to seed this node from yet");
  }
  if (saved->leader != link_.leader_id()) {
    saved->leader = link_.leader_id();
    if (absl::Status s = replication::SaveNodeState(node_.state_path(), *saved); !s.ok()) {
      spdlog::warn("cannot save the leader to seed from ({}); seeding from it all the same",
                   s.ToString());
    }
  }
  reseeding_ = true;
  // What this node holds past the point where its history parts from the leader's (it led,
  // and wrote what no survivor received) is kept in a rollback file before the re-seed
  // replaces the database.
  std::optional<replication::Follower::LeaderLog> leader = follower_->VerdictLeaderLog();
  replication::NodeState ours = follower_->state();
  SequenceNumber latest = node_.engine().LatestSequence();
  SequenceNumber from =
      leader.has_value()
          ? replication::DivergenceStart(ours.history, latest, leader->history, leader->latest)
          : latest + 1;
  if (from > latest) {
    node_.SwitchToSeeding(std::move(*saved));
    return absl::OkStatus();
  }
  replication::RollbackHeader h;
  h.cluster = node_.options().cluster;
  h.database_id = ours.database_id;
  h.node = node_.options().node_id;
  h.first = from;
  h.last = latest;
  h.leader = link_.leader_id();
  h.leader_epoch = leader->epoch;
  h.leader_latest = leader->latest;
  h.written_unix_s = absl::ToUnixSeconds(absl::Now());
  std::string dir = node_.options().data_dir + "/rollback";
  std::string path = absl::StrCat(dir, "/rollback-", h.written_unix_s, "-", from, "-", latest,
                                  ".txt");
  tasks_.add(node_.node_pool()
                 .Run([e = &node_.engine(), ours, h, dir, path]() {
                   ::mkdir(dir.c_str(), 0755);
                   return replication::WriteRollbackFile(*e, ours, h, path);
                 })
                 .then([path, h](absl::StatusOr<replication::Rollback> written) {
                   if (!written.ok()) {
                     spdlog::error("ROLLBACK FILE NOT WRITTEN for seqs {}-{}: {}; those writes "
                                   "are lost with the re-seed", h.first, h.last,
                                   written.status().ToString());
                   } else {
                     spdlog::warn("ROLLBACK: seqs {}-{} ({} ops) are not in leader '{}''s "
                                  "history; written to {} (walship rollback show FILE)",
                                  h.first, h.last, written->ops.size(), h.leader, path);
                   }
                 },
                 [](kj::Exception&& e) {
                   spdlog::error("ROLLBACK FILE NOT WRITTEN: {}", e.getDescription().cStr());
                 })
                 .then([this, saved = std::move(*saved), from]() mutable {
                   node_.SwitchToSeeding(std::move(saved), from - 1);
                 }));
  return absl::OkStatus();
}

// One timer for the link's next wake-up; an earlier one already armed stays.
void FollowerRole::ArmLinkTimer() {
  int64_t at = link_.NextWakeUp();
  if (at == replication::kNever) return;
  int64_t now = node_.MonoNowUs();
  if (link_armed_ && link_at_us_ <= at && link_at_us_ > now) return;
  link_armed_ = true;
  link_at_us_ = at;
  link_timer_ = node_.io()
                    .provider->getTimer()
                    .afterDelay(std::max<int64_t>(0, at - now) * kj::MICROSECONDS)
                    .then([this]() {
                      link_armed_ = false;
                      // A task of its own: what Tick carries out may replace this timer.
                      tasks_.add(kj::evalLater([this]() {
                        replication::LinkOutbox out;
                        link_.Tick(node_.MonoNowUs(),
                                   conn_.get() == nullptr ? 0 : conn_->bytes_read(), &out);
                        CarryLink(std::move(out));
                      }));
                    })
                    .eagerlyEvaluate(nullptr);
}

void FollowerRole::Connect(replication::LinkOutbox::Connect c) {
  uint64_t gen = c.generation;
  std::string address = node_.AddressOf(c.leader_id);
  if (address.empty()) {
    tasks_.add(kj::evalLater([this, gen, id = c.leader_id]() {
      replication::LinkOutbox out;
      link_.OnConnectionLost(gen, absl::StrCat("no address is known for node '", id,
                                               "' (it is not in the config)"),
                             node_.MonoNowUs(), &out);
      CarryLink(std::move(out));
    }));
    return;
  }
  auto attempt =
      ConnectToPeer(node_.io(), address, node_.security())
          .then([this, gen, hello = std::move(c.hello)](kj::Own<PeerClient> conn) -> kj::Promise<void> {
            if (gen != link_.generation()) return kj::READY_NOW;  // dropped meanwhile
            conn_ = kj::mv(conn);
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
            link_.OnConnectionLost(gen, e.getDescription().cStr(), node_.MonoNowUs(), &out);
            CarryLink(std::move(out));
          });
  connect_attempt_ = attempt.eagerlyEvaluate(nullptr);
}

void FollowerRole::OnSubscribed(uint64_t gen, const replication::HelloReply& reply) {
  replication::LinkOutbox out;
  link_.OnHelloReply(gen, reply, node_.MonoNowUs(), &out);
  CarryLink(std::move(out));
  if (gen != link_.generation() || !link_.streaming()) return;
  spdlog::info("streaming from leader '{}' at {}, from seq {}", link_.leader_id(),
               node_.AddressOf(link_.leader_id()), node_.engine().LatestSequence() + 1);
  tasks_.add(conn_->network.onDisconnect().then([this, gen]() {
    replication::LinkOutbox lost;
    link_.OnConnectionLost(gen, "the leader closed the connection", node_.MonoNowUs(), &lost);
    CarryLink(std::move(lost));
  }));
}

// Closes the connection to the leader; pushes not answered yet are forgotten (their promises
// reject), and a connection attempt under way is cancelled.
void FollowerRole::DropConnection() {
  pushes_.clear();
  // Destroyed in a later turn: this may run inside the attempt's own continuation.
  tasks_.add(kj::evalLater([attempt = kj::mv(connect_attempt_)]() mutable {}));
  connect_attempt_ = nullptr;
  // Close the socket now (the leader sees the disconnect), but keep the connection objects a
  // while: calls still in flight on it hold references into them.
  if (conn_.get() != nullptr) {
    conn_->Close();
    tasks_.add(node_.io()
                   .provider->getTimer()
                   .afterDelay(kRetireConnectionMs * kj::MILLISECONDS)
                   .then([c = kj::mv(conn_)]() {}));
  }
}

replication::ReadPosition FollowerRole::ReadPositionFor(SequenceNumber token_seq,
                                                       SequenceNumber applied) const {
  replication::ReadPosition p = follower_->ReadPositionAt(applied, token_seq);
  if (int64_t at = link_.caught_up_us(); at > 0) {
    // Now, not the turn's start: a long turn must not make this node look fresher.
    p.lag_us = std::max<int64_t>(0, node_.PreciseNowUs() - at);
  }
  return p;
}

std::string FollowerRole::LeaderAddress() const { return node_.AddressOf(link_.leader_id()); }

// An apply the link handed out: on the node's own thread.
void FollowerRole::RunApply(replication::LinkOutbox::Apply apply) {
  uint64_t push = apply.push;
  tasks_.add(node_.node_pool()
                 .Run([f = follower_, ship = std::move(apply.ship)]() {
                   return f->OnShip(ship, engine::WriteOptions{});
                 })
                 .then([](absl::StatusOr<Ack> r) { return r; },
                       [](kj::Exception&& e) -> absl::StatusOr<Ack> {  // the queue was full
                         return absl::InternalError(
                             absl::StrCat("node work queue: ", e.getDescription().cStr()));
                       })
                 .then([this, push](absl::StatusOr<Ack> r) {
                   replication::LinkOutbox out;
                   link_.OnApplied(push, std::move(r), node_.MonoNowUs(), &out);
                   CarryLink(std::move(out));
                 }));
}

// Periodic WAL fsync on a follower (like Redis's appendfsync everysec): durable acks.
void FollowerRole::RunFsync(SequenceNumber seq) {
  tasks_.add(SyncWalTimed(node_, "a follower's acknowledgements").then([this, seq](absl::Status s) {
    replication::LinkOutbox out;
    link_.OnSynced(seq, s, &out);
    CarryLink(std::move(out));
  }));
}

}  // namespace walship::rpc
