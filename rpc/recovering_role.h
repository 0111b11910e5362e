// The role of a node that led before it stopped, until it knows it may lead again
// (replication/recovery.h): it asks every peer for its position, and then leads in a new
// epoch, hands leadership to the peer that holds writes it lost, or follows a peer that has
// seen a newer epoch. Meanwhile it takes no writes, serves reads of what it holds, and refuses
// followers (they ask again).
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <map>
#include <memory>
#include <string>

#include "replication/recovery.h"
#include "rpc/peer_client.h"
#include "rpc/role.h"

namespace walship::rpc {

class Node;

class RecoveringRole final : public Role, private kj::TaskSet::ErrorHandler {
 public:
  // `state` is the saved state of the epoch this node led.
  RecoveringRole(Node& node, replication::NodeState state);
  ~RecoveringRole() noexcept(false) override = default;

  const char* name() const override { return "recovering"; }
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
  std::string ReadRefusal() const override { return ""; }
  replication::ReadPosition ReadPositionFor(engine::SequenceNumber token_seq,
                                            engine::SequenceNumber applied) const override {
    return replication::PositionIn(recovery_.state(), applied, token_seq);  // lag unknown
  }
  void FillStatus(schema::NodeStatus::Builder st) override;
  kj::Promise<void> Subscribe(SubscribeContext ctx,
                              std::shared_ptr<PeerSessions> sessions) override;
  kj::Promise<void> TakeOver(TakeOverContext ctx) override;
  kj::Promise<HandoverOutcome> HandOver(std::string target, uint32_t timeout_ms) override;
  replication::PeerPosition Position() const override;

 private:
  void taskFailed(kj::Exception&& e) override;
  void Ask(const std::string& peer);
  void Decide();
  std::string Waiting() const;

  Node& node_;
  replication::Recovery recovery_;
  std::map<std::string, kj::Own<PeerClient>> conns_;  // to peers being asked
  bool decided_ = false;
  kj::TaskSet tasks_;  // last: destroyed first
};

}  // namespace walship::rpc
