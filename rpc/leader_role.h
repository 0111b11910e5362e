// The leader's role in a node: replication's Leader and Shipper carried out over Cap'n Proto
// (streams to the followers, WAL reads on the WAL thread, one wake-up timer), and the
// handover of leadership to a follower (replication/handover.h) with the take-over call.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "replication/commit_wait.h"
#include "replication/election.h"
#include "replication/handover.h"
#include "replication/leader.h"
#include "replication/shipper.h"
#include "rpc/heartbeats.h"
#include "rpc/peer_client.h"
#include "rpc/role.h"

namespace walship::rpc {

class Coordinator;
class Node;

class LeaderRole final : public Role, private kj::TaskSet::ErrorHandler {
 public:
  // `state` is saved already and ends with this node's epoch. With `resume_handover` the node
  // stopped while handing over (replication::ResumesHandover): it asks the target again and
  // takes no writes meanwhile.
  // `recent`: the batches this node applied last as a follower (its memory tail to start);
  // `elected_by`: the votes that elected it, acknowledgements its lease counts from the start.
  LeaderRole(Node& node, replication::NodeState state, bool resume_handover,
             std::deque<replication::ShippedBatch> recent = {},
             replication::ElectedBy elected_by = {});
  ~LeaderRole() noexcept(false) override;

  const char* name() const override { return "leader"; }
  void Start() override;
  absl::Status WriteRefusal() const override;
  uint64_t WriteEpoch() const override { return leader_.epoch(); }
  void OnWritten(engine::Batch batch, int64_t write_time_us) override;
  absl::Status CheckDurability(const replication::Durability& need) const override;
  kj::Promise<ReplicationOutcome> AwaitReplicated(engine::SequenceNumber seq,
                                                  const replication::Durability& need,
                                                  bool pinned) override;
  kj::Promise<absl::Status> AwaitCommitted(engine::SequenceNumber seq) override;
  std::string ReadRefusal() const override { return ""; }
  // Its lag is 0 while it takes writes (then nothing newer exists), else unknown.
  replication::ReadPosition ReadPositionFor(engine::SequenceNumber token_seq,
                                            engine::SequenceNumber applied) const override {
    replication::ReadPosition p = replication::PositionIn(leader_.state(), applied, token_seq);
    p.lag_us = WriteRefusal().ok() ? 0 : -1;
    return p;
  }
  void FillStatus(schema::NodeStatus::Builder st) override;
  std::vector<replication::FollowerInfo> FollowerInfos() override { return leader_.Followers(); }
  kj::Promise<void> Subscribe(SubscribeContext ctx,
                              std::shared_ptr<PeerSessions> sessions) override;
  kj::Promise<void> TakeOver(TakeOverContext ctx) override;
  kj::Promise<HandoverOutcome> HandOver(std::string target, uint32_t timeout_ms) override;
  engine::SequenceNumber WalNeededFrom() const override { return leader_.WalNeededFrom(); }
  kj::Promise<replication::VoteReply> RequestVote(replication::VoteRequest request) override;
  kj::Promise<PromoteOutcome> Promote(bool accept_loss) override;
  replication::HeartbeatReply Heartbeat(const replication::Heartbeat& beat) override;
  absl::StatusOr<replication::Membership> ChangeMembership(
      const replication::MembershipChange& change) override;
  replication::PeerPosition Position() const override {
    return replication::PositionOf(leader_.state(), leader_.latest(), leader_.options().node_id);
  }

 private:
  // The transport of one follower's stream (the Shipper keeps its policy state).
  struct Stream {
    std::string follower_id;
    schema::BatchSink::Client sink;
    // Answered pushes, kept until the next pump: releasing one sends its Finish, which then
    // shares a socket write with the next message, when that pump sends one, instead of
    // taking one of its own.
    std::vector<capnp::Response<schema::BatchSink::PushResults>> answered;
    // While this stream lives, it counts in its connection's sessions; the connection closes
    // when none is left (the role ended, the session was replaced or ended).
    std::shared_ptr<void> live_on_connection;
  };

  void taskFailed(kj::Exception&& e) override;
  void SchedulePump();
  void ArmWakeUp();
  void Carry(replication::Outbox out);
  void RunWalRead(replication::WalRead read);
  void Send(uint64_t sid, replication::Ship ship);
  void PollHandover();
  void AskTakeOver();
  void OnTakeOverReply(const replication::TakeOverReply& reply);
  void FinishHandover(HandoverOutcome outcome);
  // Waits for followers: start one, carry out what CommitWait released, note a change of the
  // degraded state.
  kj::Promise<ReplicationOutcome> Wait(engine::SequenceNumber seq,
                                       const replication::Durability& need, bool pinned,
                                       bool read);
  void Release(std::vector<replication::Released> released, bool was_degraded);
  // Saves `next` (the membership after `change`) in the node state, then makes it the
  // leader's: followers get it with their next message.
  absl::StatusOr<replication::Membership> SaveMembership(
      replication::Membership next, const replication::MembershipChange& change);
  void PromoteReadyLearner();
  // Automatic failover: the lease's end after `voter` acknowledged a message sent at
  // `sent_us`; the check every heartbeat interval; and the step-down (saved as a follower of
  // no one known, which then looks for the leader among the members).
  void OnLeaseAck(const std::string& voter, int64_t sent_us);
  // A member answered a heartbeat sent at `sent_us` (rpc/heartbeats.h).
  void OnHeartbeatReply(const std::string& member, int64_t sent_us,
                        const replication::HeartbeatReply& reply);
  kj::Promise<void> LeaseLoop();
  void StepDown(const std::string& why);
  std::string DescribeLease() const;  // for status
  // Whether this leader steps down when it learns of a later epoch (automatic failover, by
  // vote or through etcd).
  bool FailsOver() const { return lease_.has_value() || coordinator_ != nullptr; }
  // Leadership through etcd (rpc/leader_coordinated.cc): writes are taken only while this
  // node holds the leader key of its epoch under its live lease. Looked at after every read
  // of the key: a leader without the key takes it when it is free and begins the key's
  // epoch; a leader whose key another holds, or whose lease lapsed a time-to-live ago, steps
  // down.
  void CheckCoordinator();
  void BeginKeyEpoch(replication::Epoch epoch);

  Node& node_;
  replication::Leader leader_;
  replication::Shipper shipper_;
  replication::CommitWait commit_wait_;
  struct Waiter {
    engine::SequenceNumber seq = 0;
    replication::Durability need;
    bool read = false;  // a committed read, not a write
    kj::Own<kj::PromiseFulfiller<ReplicationOutcome>> done;
  };
  // By CommitWait id. Bounded by the requests the node reads ahead (maxRequestsAhead per
  // connection, max_client_connections), and each by sync_timeout_ms.
  std::map<uint64_t, Waiter> waits_;
  uint64_t next_wait_ = 1;
  uint64_t writes_not_replicated_ = 0;
  uint64_t writes_degraded_ = 0;
  std::map<uint64_t, Stream> streams_;  // by session
  bool pump_scheduled_ = false;
  bool wake_armed_ = false;  // wake_timer_ pumps at wake_at_us_ (ArmWakeUp)
  int64_t wake_at_us_ = 0;
  kj::Promise<void> wake_timer_ = nullptr;
  // A handover under way, the operator's request waiting for its outcome, and the call to
  // the target.
  std::optional<replication::Handover> handover_;
  kj::Own<kj::PromiseFulfiller<HandoverOutcome>> handover_done_;
  kj::Own<PeerClient> take_over_conn_;
  bool asking_ = false;
  int64_t promote_again_us_ = 0;  // a failed promotion is tried again from then
  // Automatic failover (replication/election.h: LeaderLease): writes are taken while
  // now < lease_until_us_; a new leader holds no lease until a majority acknowledged it.
  std::optional<replication::LeaderLease> lease_;
  int64_t lease_until_us_ = replication::LeaderLease::kNotHeld;
  int64_t started_us_ = 0;
  replication::ElectedBy elected_by_;  // counted by Start
  bool stepping_down_ = false;
  bool lease_lapsed_ = true;    // as of the last check (a new leader holds none yet)
  bool lease_first_held_ = false;  // since it began leading, for the log
  uint64_t lease_lapses_ = 0;   // since it began leading, for the log
  // Through etcd: the node's link (nullptr: the vote), its listener number, whether a take
  // of the key is under way, whether it held the key at the last look, and when it last did.
  Coordinator* coordinator_ = nullptr;
  uint64_t listener_ = 0;
  bool taking_key_ = false;
  bool held_key_ = false;
  bool released_for_handover_ = false;
  // Heartbeats to the members on connections of their own: the lease, status.
  std::unique_ptr<HeartbeatSender> heartbeats_;
  kj::TaskSet tasks_;  // last: destroyed first
};

}  // namespace walship::rpc
