// A follower's part in choosing a new leader, whichever way the cluster chooses it: by the
// embedded vote (rpc/campaign.h) or through etcd (rpc/coordinated_campaign.h). FollowerRole
// holds one when failover is on and tells it what it sees of its leader.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "replication/election.h"
#include "replication/follower.h"
#include "replication/messages.h"
#include "rpc/role.h"

namespace walship::rpc {

class Node;

class Candidate {
 public:
  virtual ~Candidate() noexcept(false) = default;

  virtual void Start() = 0;
  // The leader's stream showed a sign of life (call after the link carried out anything).
  virtual void NoteContact() = 0;
  // A heartbeat of a leader of the highest epoch this node has seen arrived (at `now_us`, the
  // precise clock).
  virtual void NoteHeartbeat(const std::string& leader, replication::Epoch epoch,
                             int64_t now_us) = 0;
  // A candidate's request for this node's vote (PeerService.requestVote).
  virtual kj::Promise<replication::VoteReply> Answer(replication::VoteRequest request) = 0;
  // Whether it is taking leadership (it may lead at once): followers are told to ask it.
  virtual bool Standing() const = 0;
  // An operator's promotion (walship promote, rpc/role.h).
  virtual kj::Promise<PromoteOutcome> Promote(bool accept_loss) = 0;
  // What status shows of it.
  virtual std::string Describe() const = 0;
};

// The node won `epoch` with its own vote saved: fsyncs the WAL (the new epoch begins after
// writes that survive this machine failing), saves the new epoch and role, and makes the node
// leader with the batches it applied last (to serve its followers from memory), calling
// `before_switch` first (the caller's role ends in a later turn). Resolves with OK once the
// node switches role, or with why it cannot lead. `elected_by`: the votes that elected it,
// which its lease counts (none when a coordinator chose it).
kj::Promise<absl::Status> BecomeLeader(Node& node,
                                       std::shared_ptr<replication::Follower> follower,
                                       replication::Epoch epoch,
                                       std::function<void()> before_switch,
                                       replication::ElectedBy elected_by = {});

}  // namespace walship::rpc
