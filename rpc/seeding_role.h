// The role of a follower being seeded from its leader's checkpoint: it asks the leader for a
// checkpoint (PeerService.snapshot), receives it into DATA_DIR/seed (rpc/snapshot_fetch.h),
// and once it is complete and verified has the node restart on it (Node::RequestRestart: the
// server installs the seed in place of the database and starts the follower again, which
// catches up from the checkpoint's sequence number). A transfer that fails is tried again,
// with a growing pause, from the files already verified. Meanwhile the node takes no writes,
// refuses reads (its data is stale or empty), refuses followers and take-overs, and shows its
// progress in status.
//
// It still votes, as a follower does (replication/election.h): in a cluster of three, a node
// re-seeded after its history parted from the leader's must not leave the third without a
// majority should the leader fail meanwhile. Its log, as voters compare it, ends where its
// history and its leader's part (`shared_upto`): what lies past that point is in its rollback
// file, never in the cluster's history, so no committed write can hang on it. Unknown (it
// restarted while seeded) it is the database's end, which only ever makes it refuse more. It
// takes its leader's heartbeats (so the leader's lease may count on it) and refuses votes for
// an election time-out after one; a leader of the highest epoch it has seen that heartbeats it
// becomes the node it seeds from.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <memory>
#include <optional>
#include <string>

#include "engine/types.h"
#include "replication/node_state.h"
#include "replication/seeding.h"
#include "rpc/peer_client.h"
#include "rpc/role.h"

namespace walship::rpc {

class Node;

class SeedingRole final : public Role, private kj::TaskSet::ErrorHandler {
 public:
  // `state` is the saved state (it names the leader to seed from); `shared_upto` the last
  // sequence number its history shares with that leader's, when known.
  SeedingRole(Node& node, replication::NodeState state,
              std::optional<engine::SequenceNumber> shared_upto = std::nullopt);
  ~SeedingRole() noexcept(false) override = default;

  const char* name() const override { return "seeding"; }
  void Start() override;
  absl::Status WriteRefusal() const override;
  void OnWritten(engine::Batch batch, int64_t write_time_us) override;
  absl::Status CheckDurability(const replication::Durability&) const override {
    return absl::OkStatus();
  }
  kj::Promise<ReplicationOutcome> AwaitReplicated(engine::SequenceNumber seq,
                                                  const replication::Durability& need,
                                                  bool pinned) override;
  kj::Promise<absl::Status> AwaitCommitted(engine::SequenceNumber seq) override;
  std::string ReadRefusal() const override;
  replication::ReadPosition ReadPositionFor(engine::SequenceNumber,
                                            engine::SequenceNumber applied) const override {
    replication::ReadPosition p;
    p.applied = applied;
    p.refusal = ReadRefusal();
    return p;
  }
  void FillStatus(schema::NodeStatus::Builder st) override;
  kj::Promise<void> Subscribe(SubscribeContext ctx,
                              std::shared_ptr<PeerSessions> sessions) override;
  kj::Promise<void> TakeOver(TakeOverContext ctx) override;
  kj::Promise<HandoverOutcome> HandOver(std::string target, uint32_t timeout_ms) override;
  replication::PeerPosition Position() const override;
  absl::Status Reseed() override { return absl::OkStatus(); }  // under way already
  kj::Promise<replication::VoteReply> RequestVote(replication::VoteRequest request) override;
  replication::HeartbeatReply Heartbeat(const replication::Heartbeat& beat) override;

 private:
  void taskFailed(kj::Exception&& e) override;
  void Attempt();
  void Retry(const absl::Status& why);
  void RetireConnection();
  std::string LeaderId() const;

  Node& node_;
  replication::NodeState state_;
  replication::SeedProgress progress_;
  uint32_t pause_ms_ = 0;  // before the next attempt; grows with each failure
  uint32_t attempts_ = 0;
  bool waiting_ = false;     // between attempts (Retry's pause)
  uint64_t attempt_id_ = 0;  // a paused attempt runs only if no other began meanwhile
  engine::SequenceNumber vote_latest_ = 0;  // its log's end as voters compare it
  int64_t heard_us_ = 0;  // its leader's last heartbeat (the role's start at first)
  std::string heard_from_;  // that leader, or the candidate it last voted for
  kj::Own<PeerClient> conn_;
  kj::TaskSet tasks_;  // last: destroyed first
};

}  // namespace walship::rpc
