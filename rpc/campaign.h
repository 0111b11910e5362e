// A follower's part in automatic failover: replication::Election carried out over Cap'n Proto.
// It notes when the leader was last heard from (the stream's last sign of life), stands when
// the leader is silent (one timer), asks the other voters (PeerService.requestVote, one
// connection per voter, each call bounded by the round time-out), saves the node's own vote
// before asking for votes, and once it has won fsyncs the WAL, saves the new epoch and role
// and makes the node leader. It also answers other candidates' requests, saving a granted vote
// before the answer goes out.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "replication/election.h"
#include "replication/follower.h"
#include "replication/follower_link.h"
#include "rpc/candidate.h"
#include "rpc/peer_client.h"
#include "rpc/role.h"

namespace walship::rpc {

class Node;
struct NodeServerOptions;

// The election's settings from the node's (failover keys of the config).
replication::ElectionOptions ElectionOptionsFor(const NodeServerOptions& o);
// Logs a vote (or pre-vote) this node refused, and why (a follower's and a seeding node's).
void LogRefusedVote(const replication::VoteRequest& request, const replication::VoteReply& reply);

class Campaign final : public Candidate, private kj::TaskSet::ErrorHandler {
 public:
  // `follower` holds the node's state and saves its votes; `link` is the stream from the
  // leader (its last contact is the leader's last sign of life). `follow` is called with a
  // candidate this node voted for, so that the stream looks for it there first.
  Campaign(Node& node, std::shared_ptr<replication::Follower> follower,
           const replication::FollowerLink& link, std::function<void(std::string)> follow);
  ~Campaign() noexcept(false) override;

  void Start() override;
  // The leader's stream showed a sign of life (call after the link carried out anything).
  void NoteContact() override;
  // A heartbeat of a leader of the highest epoch this node has seen arrived (at `now_us`, the
  // precise clock): contact, and a sample of phi (replication/failure_detector.h).
  void NoteHeartbeat(const std::string& leader, replication::Epoch epoch,
                     int64_t now_us) override;
  // A candidate's request (PeerService.requestVote).
  kj::Promise<replication::VoteReply> Answer(replication::VoteRequest request) override;
  // Whether it asks for votes (it voted for itself) or won: it may lead at once.
  bool Standing() const override {
    return election_.phase() == replication::Election::Phase::kVote ||
           election_.phase() == replication::Election::Phase::kWon;
  }
  // An operator's promotion (walship promote, rpc/role.h): stands now, past the lag limit;
  // resolves once this node won (before it leads) or the round failed.
  kj::Promise<PromoteOutcome> Promote(bool accept_loss) override;
  // What status shows: "following", "standing for epoch N (pre-vote)", ...
  std::string Describe() const override;
  // When the leader was last heard from, on the monotonic clock (µs).
  int64_t leader_heard_us() const { return heard_us_; }

 private:
  void taskFailed(kj::Exception&& e) override;
  void Arm();
  void Tick();
  void Carry(replication::ElectionOutbox out);
  void Send(std::vector<std::pair<std::string, replication::VoteRequest>> requests);
  // Asks `voter` on its connection (opened when there is none); a kept connection found dead
  // is replaced and asked again once, `may_retry`.
  void Ask(const std::string& voter, replication::VoteRequest request, bool may_retry = true);
  void Lead(replication::Epoch epoch, replication::ElectedBy elected_by);
  // Ends a promotion under way with `outcome` (when one is).
  void FinishPromote(PromoteOutcome outcome);
  // A promotion whose round ended without a win has failed.
  void CheckPromote();

  Node& node_;
  std::shared_ptr<replication::Follower> follower_;
  const replication::FollowerLink& link_;
  std::function<void(std::string)> follow_;
  replication::ElectionOptions options_;
  replication::Election election_;
  int64_t heard_us_;             // the role's start counts as contact (replication/election.h)
  std::string heard_from_;       // the leader heard, or the candidate voted for, then
  int64_t link_contact_us_ = 0;  // the link's last contact as last noted
  std::map<std::string, kj::Own<PeerClient>> voters_;  // open connections, by voter id
  bool leading_ = false;                               // won: the node becomes leader
  bool armed_ = false;
  bool confirming_ = false;  // the turn before it stands (Tick)
  int64_t armed_at_us_ = 0;
  kj::Promise<void> timer_ = nullptr;
  kj::Canceler canceler_;  // vote answers being saved
  std::string why_not_;    // why this node may not stand now ("" when it may), for status
  // A promotion under way: its answer, whether its round started, what the rounds logged.
  kj::Own<kj::PromiseFulfiller<PromoteOutcome>> promoting_;
  bool promote_stood_ = false;
  uint64_t promotions_ = 0;  // promotions begun, so that an old one's time bound ends no other
  uint64_t promote_loss_ = 0;
  std::vector<std::string> promote_log_;
  kj::TaskSet tasks_;      // last: destroyed first
};

}  // namespace walship::rpc
