// What a node does in its current role, as the rest of the node sees it. A node holds one
// role at a time (LeaderRole or FollowerRole) and replaces it at run time (Node::SwitchRole);
// nothing outside the roles asks which one it holds.
#pragma once

#include <kj/async.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/types.h"
#include "absl/status/statusor.h"
#include "replication/durability.h"
#include "replication/leader.h"
#include "replication/membership.h"
#include "replication/reads.h"
#include "replication/recovery.h"
#include "rpc/client.capnp.h"
#include "rpc/peer.capnp.h"

namespace walship::rpc {

using SubscribeContext =
    capnp::CallContext<schema::PeerService::SubscribeParams, schema::PeerService::SubscribeResults>;
using TakeOverContext =
    capnp::CallContext<schema::PeerService::TakeOverParams, schema::PeerService::TakeOverResults>;

// The follower sessions living on one node connection. When the last one ends, the
// connection is closed (its follower then reconnects at once, to whichever node leads).
struct PeerSessions {
  uint32_t live = 0;
  int64_t last_heartbeat_us = 0;  // a leader's heartbeats keep a connection open too
  kj::Own<kj::PromiseFulfiller<void>> close;  // fulfilled: close the connection
};

// Counts one session on a connection while it lives (a checkpoint being taken or read), so
// that the connection is not closed as one without sessions. Its end closes nothing (a
// refusal must reach the asker): the connection's idle check closes it later.
class PeerSessionHold {
 public:
  explicit PeerSessionHold(std::shared_ptr<PeerSessions> s) : s_(std::move(s)) { ++s_->live; }
  ~PeerSessionHold() { --s_->live; }
  PeerSessionHold(const PeerSessionHold&) = delete;
  PeerSessionHold& operator=(const PeerSessionHold&) = delete;

 private:
  std::shared_ptr<PeerSessions> s_;
};

// How an operator's promotion (walship promote) ended.
struct PromoteOutcome {
  // A promotion that did not happen, for `why`.
  static PromoteOutcome Refused(absl::Status why) { return {std::move(why), "", 0, 0}; }
  absl::Status status;
  std::string leader;          // the node that leads now (this one, when promoted)
  uint64_t epoch = 0;          // the epoch it began
  uint64_t possible_loss = 0;  // writes it knew its old leader held beyond its own log
};

// How a write's wait for its followers ended.
struct ReplicationOutcome {
  absl::Status status;
  bool degraded = false;  // acknowledged without them: the leader runs async for now
};

// The outcome of an admin handover request.
struct HandoverOutcome {
  absl::Status status;
  std::string leader;  // the node that leads now
  uint64_t epoch = 0;
};

class Role {
 public:
  virtual ~Role() noexcept(false) = default;  // roles hold kj::TaskSets

  virtual const char* name() const = 0;

  // Starts the role's work (streams, connections, timers). Called once it is the node's role.
  virtual void Start() = 0;

  // OK when client writes are taken here; else the error that refuses them (not the leader,
  // with a hint to it; or leadership being handed over).
  virtual absl::Status WriteRefusal() const = 0;
  // The epoch client writes are written in here (while WriteRefusal is OK), else 0.
  virtual uint64_t WriteEpoch() const { return 0; }
  // A group of client writes this node has just written (only while WriteRefusal is OK).
  virtual void OnWritten(engine::Batch batch, int64_t write_time_us) = 0;
  // Whether a write may ask for `need` here (semi-sync for more followers than vote is
  // refused), checked before it is written.
  virtual absl::Status CheckDurability(const replication::Durability& need) const = 0;
  // A write this node has written up to `seq` (OnWritten) waits until its followers hold it
  // as `need` asks; `pinned` (the write named its mode) never degrades. OK, or OK with
  // `degraded`, or a not-replicated error (rpc/convert.h) saying why.
  virtual kj::Promise<ReplicationOutcome> AwaitReplicated(engine::SequenceNumber seq,
                                                          const replication::Durability& need,
                                                          bool pinned) = 0;
  // A committed read that sees the database up to `seq`: resolves once the cluster's
  // configured replication holds for `seq` (OK), or with the error that refuses the read.
  virtual kj::Promise<absl::Status> AwaitCommitted(engine::SequenceNumber seq) = 0;
  // Why reads must not be served here, or "".
  virtual std::string ReadRefusal() const = 0;
  // Where this node stands for a read that sees up to `applied` and may need `token_seq`
  // (replication/reads.h): its history's epochs there, its lag, its leader's address.
  virtual replication::ReadPosition ReadPositionFor(engine::SequenceNumber token_seq,
                                                    engine::SequenceNumber applied) const = 0;
  // The address of the leader this node follows, for a client it cannot serve ("" if none).
  virtual std::string LeaderAddress() const { return ""; }

  virtual void FillStatus(schema::NodeStatus::Builder status) = 0;
  // The leader's record of each follower (/metrics); none on other roles.
  virtual std::vector<replication::FollowerInfo> FollowerInfos() { return {}; }

  // Whether this node stands for leader (a follower's round past its pre-vote, or an etcd
  // candidate taking the key): it may lead any moment, so a follower's hello waits for the
  // outcome (Node::UntilSettled) rather than being told to ask again.
  virtual bool Standing() const { return false; }
  // A follower subscribes (rpc/peer.capnp); `sessions` counts the live sessions of the
  // connection it came on.
  virtual kj::Promise<void> Subscribe(SubscribeContext ctx,
                                      std::shared_ptr<PeerSessions> sessions) = 0;
  // A leader asks this node to take over (a handover).
  virtual kj::Promise<void> TakeOver(TakeOverContext ctx) = 0;
  // A candidate asks for this node's vote (PeerService.requestVote, replication/election.h).
  // Only a follower votes; other roles refuse, naming the highest epoch they have seen.
  virtual kj::Promise<replication::VoteReply> RequestVote(replication::VoteRequest request) {
    (void)request;
    replication::PeerPosition p = Position();
    replication::VoteReply reply;
    reply.voter = p.node;
    reply.epoch = p.highest_epoch;
    reply.message = absl::StrCat("this node is ", name(), ": it does not vote now");
    return reply;
  }
  // A leader's heartbeat (PeerService.heartbeat, rpc/heartbeats.h): answered at once with the
  // highest epoch this node has seen. Only a follower takes it as its leader's sign of life.
  virtual replication::HeartbeatReply Heartbeat(const replication::Heartbeat& beat) {
    replication::PeerPosition p = Position();
    replication::HeartbeatReply reply;
    reply.node = p.node;
    reply.epoch = p.highest_epoch;
    reply.message = absl::StrCat("this node is ", name(), ": it takes no heartbeat from '",
                                 beat.leader, "' now");
    return reply;
  }
  // How far this node is (PeerService.position), for a leader that restarts.
  virtual replication::PeerPosition Position() const = 0;
  // An operator asks this node to hand leadership to `target`.
  virtual kj::Promise<HandoverOutcome> HandOver(std::string target, uint32_t timeout_ms) = 0;
  // The first sequence number this role's readers still need from the WAL (a leader's
  // followers); UINT64_MAX when none.
  virtual engine::SequenceNumber WalNeededFrom() const { return UINT64_MAX; }
  // An operator asks this node to re-seed itself from its leader's checkpoint: OK when it
  // starts to, else why not (only a follower told it needs a snapshot re-seeds).
  // An operator adds or removes a member (walship add-follower / remove-follower): the
  // membership as saved, or why not. Only the leader changes it.
  virtual absl::StatusOr<replication::Membership> ChangeMembership(
      const replication::MembershipChange&) {
    return absl::FailedPreconditionError(
        absl::StrCat("this node is ", name(), ": only the leader changes the membership"));
  }
  // An operator forces this node to stand for leader now (walship promote): elected by a
  // majority like any candidate, but past the lag limit, and only with `accept_loss` when it
  // knew its leader to hold writes it lacks. Only a follower with failover on stands.
  virtual kj::Promise<PromoteOutcome> Promote(bool accept_loss) {
    (void)accept_loss;
    return PromoteOutcome::Refused(absl::FailedPreconditionError(
        absl::StrCat("this node is ", name(), ": only a follower can be promoted")));
  }
  virtual absl::Status Reseed() {
    return absl::FailedPreconditionError(
        absl::StrCat("this node is ", name(), ": only a follower that needs a snapshot is "
                     "re-seeded"));
  }
};

}  // namespace walship::rpc
