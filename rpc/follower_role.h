// The follower's role in a node: replication's Follower and FollowerLink carried out over
// Cap'n Proto (the connection to whichever node leads, pushes answered with acks, applies
// and fsyncs on the node's thread, one wake-up timer), and the answer to a take-over.
//
// Thread safety: lives on the event-loop thread (applies handed out run on the node's
// thread and touch only the Follower, which is thread-safe).
#pragma once

#include <kj/async.h>

#include <map>
#include <memory>
#include <string>

#include "replication/failure_detector.h"
#include "replication/follower.h"
#include "replication/follower_link.h"
#include "rpc/candidate.h"
#include "rpc/peer_client.h"
#include "rpc/role.h"

namespace walship::rpc {

class Node;

class FollowerRole final : public Role, private kj::TaskSet::ErrorHandler {
 public:
  // `state` is saved already; the node follows state.leader (or the config's leader).
  FollowerRole(Node& node, replication::NodeState state);
  ~FollowerRole() noexcept(false) override;

  const char* name() const override { return "follower"; }
  void Start() override;
  absl::Status WriteRefusal() const override;
  void OnWritten(engine::Batch batch, int64_t write_time_us) override;
  absl::Status CheckDurability(const replication::Durability&) const override {
    return absl::OkStatus();  // writes are refused here anyway
  }
  kj::Promise<ReplicationOutcome> AwaitReplicated(engine::SequenceNumber seq,
                                                  const replication::Durability& need,
                                                  bool pinned) override;
  kj::Promise<absl::Status> AwaitCommitted(engine::SequenceNumber seq) override;
  std::string ReadRefusal() const override { return follower_->ReadRefusal(); }
  replication::ReadPosition ReadPositionFor(engine::SequenceNumber token_seq,
                                            engine::SequenceNumber applied) const override;
  std::string LeaderAddress() const override;
  bool Standing() const override { return campaign_ != nullptr && campaign_->Standing(); }
  void FillStatus(schema::NodeStatus::Builder st) override;
  kj::Promise<void> Subscribe(SubscribeContext ctx,
                              std::shared_ptr<PeerSessions> sessions) override;
  kj::Promise<void> TakeOver(TakeOverContext ctx) override;
  kj::Promise<HandoverOutcome> HandOver(std::string target, uint32_t timeout_ms) override;
  replication::PeerPosition Position() const override;
  kj::Promise<replication::VoteReply> RequestVote(replication::VoteRequest request) override;
  replication::HeartbeatReply Heartbeat(const replication::Heartbeat& beat) override;
  absl::Status Reseed() override { return StartReseed(); }
  kj::Promise<PromoteOutcome> Promote(bool accept_loss) override;
  absl::StatusOr<replication::Membership> ChangeMembership(
      const replication::MembershipChange&) override {
    return WriteRefusal();  // not the leader: names it
  }

  // A push from the leader on the connection of `generation` (BatchSink).
  kj::Promise<replication::Ack> OnPush(uint64_t generation, replication::Ship ship);

 private:
  void taskFailed(kj::Exception&& e) override;
  void CarryLink(replication::LinkOutbox out);
  void ArmLinkTimer();
  void Connect(replication::LinkOutbox::Connect c);
  void OnSubscribed(uint64_t gen, const replication::HelloReply& reply);
  void DropConnection();
  void RunApply(replication::LinkOutbox::Apply apply);
  void RunFsync(engine::SequenceNumber seq);
  absl::Status StartReseed();

  Node& node_;
  // Shared with applies running on the node's thread, which may outlive this role.
  std::shared_ptr<replication::Follower> follower_;
  replication::FollowerLink link_;
  kj::Own<PeerClient> conn_;
  kj::Promise<void> connect_attempt_ = nullptr;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<replication::Ack>>> pushes_;  // unanswered
  uint64_t last_push_ = 0;
  bool taking_over_ = false;
  bool reseeding_ = false;   // the seeding role takes over  // a take-over waits for its WAL fsync
  uint64_t membership_saves_ = 0;  // the Follower's count last seen (AdoptMembership)
  bool link_armed_ = false;  // link_timer_ ticks the link at link_at_us_ (ArmLinkTimer)
  int64_t link_at_us_ = 0;
  kj::Promise<void> link_timer_ = nullptr;
  std::unique_ptr<Candidate> campaign_;  // automatic failover only
  // The leader's heartbeats (PeerService.heartbeat), for status: when, and their phi.
  replication::PhiAccrualDetector leader_beats_;
  kj::TaskSet tasks_;  // last: destroyed first
};

}  // namespace walship::rpc
