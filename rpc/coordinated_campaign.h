// A follower's part when etcd chooses the leader (replication/coordinated.h, rpc/coordinator.h):
// it follows the node the leader key names; when the key is gone it publishes where its log
// ends, reads the others' candidacies, and takes the key when replication::TurnToTake says
// so; having taken it, it saves its own vote in the key's epoch and leads (BecomeLeader). It
// votes for no one: in this mode the key, not a vote, says who leads.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "replication/coordinated.h"
#include "replication/follower.h"
#include "replication/follower_link.h"
#include "rpc/candidate.h"
#include "rpc/coordinator.h"

namespace walship::rpc {

class CoordinatedCampaign final : public Candidate, private kj::TaskSet::ErrorHandler {
 public:
  // As Campaign: `follow` is called with the node the leader key names when the stream
  // follows another.
  CoordinatedCampaign(Node& node, Coordinator& coordinator,
                      std::shared_ptr<replication::Follower> follower,
                      const replication::FollowerLink& link,
                      std::function<void(std::string)> follow);
  ~CoordinatedCampaign() noexcept(false) override;

  void Start() override;
  void NoteContact() override {}
  void NoteHeartbeat(const std::string&, replication::Epoch, int64_t) override {}
  kj::Promise<replication::VoteReply> Answer(replication::VoteRequest request) override;
  bool Standing() const override { return taking_; }
  kj::Promise<PromoteOutcome> Promote(bool accept_loss) override;
  std::string Describe() const override;

 private:
  void taskFailed(kj::Exception&& e) override;
  // Looks at what the coordinator last heard and acts (called on every change and every
  // poll interval).
  void Check();
  // Takes the key and leads in its epoch.
  void Take();
  void Withdraw();
  void FinishPromote(PromoteOutcome outcome);

  Node& node_;
  Coordinator& coordinator_;
  std::shared_ptr<replication::Follower> follower_;
  const replication::FollowerLink& link_;
  std::function<void(std::string)> follow_;
  replication::CandidateOptions options_;
  int64_t vacant_since_us_ = 0;  // when this node saw the key gone (0: it is held)
  std::optional<replication::LogPosition> published_;  // the candidacy etcd holds
  bool publishing_ = false;
  bool reading_ = false;
  bool taking_ = false;
  std::string doing_;  // what it does now, for status
  kj::Own<kj::PromiseFulfiller<PromoteOutcome>> promoting_;
  uint64_t promote_loss_ = 0;
  uint64_t listener_ = 0;  // Coordinator::SetListener's number
  kj::TaskSet tasks_;  // last: destroyed first
};

}  // namespace walship::rpc
