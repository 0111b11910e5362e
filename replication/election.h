// Failover by majority vote: when a node stands for leader, how the others vote, and how long
// a leader may go on taking writes without hearing from a majority.
//
// A follower that has heard nothing from its leader for the election time-out, plus a random
// part of the jitter (so that one node usually stands alone), stands in epoch E, one above
// every epoch it has seen:
//   1. Pre-vote: it asks every other voter whether it would vote for it in E. A pre-vote
//      changes nothing anywhere, so a node cut off from the others, which could never win,
//      does not raise the epoch everyone else must then refuse below.
//   2. With a majority of the voters (itself included) willing, it saves a vote for itself in
//      E and asks for real votes. A voter grants one vote per epoch, saved before it answers.
//   3. With a majority of real votes it has won E: it begins E at its log's end + 1 and leads.
// A round that gets no majority within the round time-out, or that so many voters refused
// that a majority is out of reach, is given up, and the node stands again after another
// random wait. A leader heard from meanwhile ends the election. A candidate that grants
// another candidate's pre-vote in its own epoch yields to it when that one is the fitter
// (OnPreVoteGranted), so that two who stood together do not split the vote. A node asked by a
// candidate whose log is behind its own, or that refused one for a leader heard lately, stands
// without its jitter, or asks that candidate again for the vote it refused (OnPreVoteRefused):
// the fittest does not wait on chance.
//
// A voter grants a vote (or a pre-vote) only when all of these hold:
//   - the candidate is a voting member of the cluster, and so is the voter;
//   - E is above every epoch the voter has seen (or the voter voted for this candidate in E
//     already, and its answer was lost);
//   - the voter does not lead, and has not heard from a leader within the election time-out
//     (so a node that merely lost its own connection cannot depose a leader the others hear);
//   - the candidate's log is at least as up to date as the voter's: it ends in a later epoch,
//     or in the same epoch and at least as far. The winner's log is then at least as long as
//     a majority's, and every write a majority held is in it: a follower that lags is never
//     elected over one that holds more of the history.
//
// The lease: a leader counts, for each voter, when it sent the last message that voter
// acknowledged. While a majority of the voters (itself included) acknowledged one sent
// within the lease, no other node can be elected: each of them refuses votes for the
// election time-out after it heard from the leader, and the lease is shorter. Past it, the
// leader accepts no more writes and steps down, so a leader cut off from the others stops
// acknowledging writes before anyone else can lead (no split brain).
//
// Thread safety: none; one thread at a time.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "replication/failure_detector.h"
#include "replication/messages.h"
#include "replication/node_state.h"
#include "replication/shipper.h"

namespace walship::replication {

struct ElectionOptions {
  std::string self;
  std::string cluster;
  // A leader silent this long is suspected, and a voter that heard from a leader more
  // recently refuses to vote.
  uint32_t election_timeout_ms = 2000;
  // A node stands a random part of this later than the time-out, and as much again after a
  // round without a majority.
  uint32_t jitter_ms = 1000;
  // A round of votes without a majority by this long is given up.
  uint32_t round_timeout_ms = 1000;
  // Above 0: the node also waits until the phi of its leader's heartbeats
  // (replication/failure_detector.h) reaches this before it stands. The time-out above stays
  // the least wait (the lease rests on it), so phi only ever makes a node wait longer: as long
  // as its leader's heartbeats have lately been seen to be late.
  double phi_threshold = 0;
  uint32_t phi_min_std_ms = 50;  // the detector's floor for the standard deviation
  // Phi makes a node wait at most this long after its leader's last sign of life (and the
  // detector keeps no interval longer): past it the leader is suspected whatever phi says.
  uint32_t phi_max_wait_ms = 2000;
  // Above 0: a node whose log ends more than this many sequence numbers before the last
  // position it knew of its leader does not stand (WhyNotStand).
  uint64_t max_failover_lag = 0;
};

// Why a node may not stand for leader now, or "" when it may: it was never seeded (it holds
// no database), it was told to re-seed (its data is stale), or, with `max_lag` above 0, its
// log (ending at `latest`) ends more than `max_lag` sequence numbers before `leader_latest`,
// the last position it knew of its leader (0: none known since it started). The last is
// Patroni's maximum_lag_on_failover: an asynchronous cluster whose followers all lag that
// much waits for its leader, or for an operator's `walship promote`, rather than lose more
// acknowledged writes. `forced` (that promotion) skips it.
std::string WhyNotStand(const NodeState& state, bool needs_snapshot, SequenceNumber latest,
                        SequenceNumber leader_latest, uint64_t max_lag, bool forced);
// The writes a node whose log ends at `latest` knew its leader to hold beyond it: what it
// would lose by leading now, at least (its leader may have written more since).
inline uint64_t PossibleLoss(SequenceNumber latest, SequenceNumber leader_latest) {
  return leader_latest > latest ? leader_latest - latest : 0;
}

// Where a node's log ends, as voters compare it: its last sequence number and the epoch entry
// it was written under.
struct LogPosition {
  SequenceNumber seq = 0;
  Epoch epoch = 0;
  std::string leader;  // the node that began that epoch ("": unknown)
};

LogPosition LogPositionOf(const NodeState& state, SequenceNumber latest);
// Whether a log ending at `a` is at least as up to date as one ending at `b`: a later epoch,
// or the same epoch (begun by the same node, when both are known) and at least as far.
bool AtLeastAsUpToDate(const LogPosition& a, const LogPosition& b);
std::string Describe(const LogPosition& p);

// What a voter knows besides its saved state.
struct VoterView {
  SequenceNumber latest = 0;  // its log's end
  bool leads = false;         // it leads now
  // When it last heard from the leader it follows, or last granted a real vote (the monotonic
  // clock, µs). A node that starts counts its start as such a time: it may have acknowledged
  // a leader just before it stopped, and that leader's lease relies on it refusing votes for
  // an election time-out after. kNever: no leader to be loyal to (tests).
  int64_t leader_heard_us = kNever;
  // Whom it heard then: the leader, or the candidate it voted for ("" after its start). That
  // node is not refused for it: a lease rests on refusing the *others* (a candidate whose vote
  // answer was lost asks again in the next epoch, and gets it).
  std::string heard_from = "";
};

// Why a voter refused: the election reacts to another voter suspecting the leader only when
// that candidate could have had the vote but for its log or a leader heard lately
// (Election::OnPreVoteRefused); a request of another cluster, version, a non-voter or an old
// epoch says nothing of the leader.
enum class Refusal { kNone, kInvalid, kLeaderHeard, kBehind };

struct VoteAnswer {
  VoteReply reply;
  Refusal refusal = Refusal::kNone;  // why it was refused (kNone when granted)
  // A real vote granted: save this state before answering. A vote that cannot be saved is
  // no answer (the candidate asks again), never a refusal.
  std::optional<NodeState> save;
};

// The answer of the voter `options.self`, holding `state`, to `request`. A real vote granted
// counts, for the caller, as its leader heard at `now_us` (VoterView::leader_heard_us): the
// voter refuses every other candidate for an election time-out after, so the new leader may
// count the vote towards its lease (ElectedBy), as it would a heartbeat's acknowledgement.
VoteAnswer AnswerVote(const NodeState& state, const VoterView& view, const VoteRequest& request,
                      const ElectionOptions& options, int64_t now_us);

// A node's answer to a leader's heartbeat: heard when the leader speaks this version, is of
// this cluster and leads an epoch at least as high as any this node (`self`) has seen.
HeartbeatReply AnswerHeartbeat(const std::string& self, const std::string& cluster,
                               Epoch highest_seen, const Heartbeat& beat);

// The votes that elected a leader, as acknowledgements for its lease (LeaderLease::OnAck):
// each voter granted after the round asked, and refuses other candidates for an election
// time-out after granting (AnswerVote). A new leader so holds its lease as it begins, instead
// of a round trip later.
struct ElectedBy {
  int64_t asked_us = 0;             // when the round's requests were made (they went after)
  std::vector<std::string> voters;  // those that granted, the winner included
};

struct ElectionOutbox {
  // Save this state (the node's vote for itself) before sending or leading; when the save
  // fails, send nothing, do not lead, and call Election::Abandon.
  std::optional<NodeState> save;
  std::vector<std::pair<std::string, VoteRequest>> send;  // (voter, request)
  // Won: begin this epoch (BeginElectedEpoch at the log's end + 1) and lead, elected by these.
  std::optional<Epoch> lead;
  ElectedBy elected_by;
  std::vector<std::string> logs;
};

class Election {
 public:
  enum class Phase {
    kFollowing,  // the leader is heard, or was until lately
    kPreVote,    // a round of pre-votes is out
    kVote,       // a round of real votes is out (the node voted for itself)
    kWon,        // it won `epoch()`; the caller leads
  };

  // `seed` draws the random waits; `now_us` starts the first wait for the leader.
  Election(ElectionOptions options, uint64_t seed, int64_t now_us);

  // The leader was heard from (any message of the stream of a leader whose epoch is at least
  // the highest this node has seen; a stale leader's counts for nothing): an election not yet
  // won ends.
  void OnLeaderContact(int64_t now_us);
  // A heartbeat arrived from `leader` leading `epoch` (PeerService.heartbeat): contact, and a
  // sample of the intervals phi is reckoned from (forgotten when the leader or its epoch
  // changes: another leader's heartbeats say nothing of this one's).
  void OnLeaderHeartbeat(const std::string& leader, Epoch epoch, int64_t now_us);
  // The phi of the leader's heartbeats now (0 before enough of them were seen).
  double LeaderPhi(int64_t now_us) const { return detector_.Phi(now_us); }
  // Runs what is due: stands when the leader has been silent too long, gives up a round past
  // its time-out. `state` is the node's saved state, `latest` its log's end.
  void Tick(const NodeState& state, SequenceNumber latest, int64_t now_us, ElectionOutbox* out);
  // This node granted `request`, another candidate's pre-vote, while it stands in the same
  // epoch itself. Two candidates that stood together would both go on to the vote, each vote
  // for itself, and lose a round (the round time-out and another wait): the one whose log is
  // the more up to date (the lower id between equal logs) goes on, and this node, if it is the
  // other, yields: it ends its round and stands again only a round's time-out and a random
  // part of the jitter later, should no leader be heard by then. `latest` is its log's end.
  // Returns whether it yielded.
  bool OnPreVoteGranted(const VoteRequest& request, const NodeState& state, SequenceNumber latest,
                        int64_t now_us, ElectionOutbox* out);
  // This node refused `request`, a pre-vote, for `why` (nothing changes unless the candidate
  // was refused for a leader heard lately or for its log). Another voter suspects the leader:
  //   - Not standing: when the candidate's log is behind this node's (it cannot take this
  //     node's vote), or when this node refused because it heard its leader lately, it drops
  //     the random part of its jitter, which only keeps candidates of equal logs apart: it
  //     stands as soon as it suspects its leader itself (at once, when it already does). Its
  //     own time-out (and phi) still decide when the leader is silent. Standing, it asks the
  //     candidate, which, if fitter, then asks it again (below) and wins at once.
  //   - Standing, and refused by that candidate in this round, whose log is behind: it asks it
  //     again at once (`out`), since what it refused for (a leader heard lately) may be past
  //     now that it stands.
  // Returns whether anything changed.
  bool OnPreVoteRefused(const VoteRequest& request, Refusal why, const NodeState& state,
                        SequenceNumber latest, int64_t now_us, ElectionOutbox* out);
  // The answer to `request` (sent from an outbox) from its voter.
  void OnReply(const VoteRequest& request, const VoteReply& reply, const NodeState& state,
               SequenceNumber latest, int64_t now_us, ElectionOutbox* out);
  // The vote for itself could not be saved: the round ends as if refused (a win that rested
  // on it is void).
  void Abandon(int64_t now_us);

  int64_t NextWakeUp() const;
  Phase phase() const { return phase_; }
  Epoch epoch() const { return epoch_; }  // the epoch stood for (0: never)
  // Standing is off (a learner, or an operator's choice): the node only votes.
  void set_may_stand(bool may) { may_stand_ = may; }
  // Stands at the first Tick from `at_us`, whatever phi or the jitter say (an operator's
  // promotion); a round under way goes on.
  void StandAt(int64_t at_us);

 private:
  void StartRound(bool pre_vote, const NodeState& state, SequenceNumber latest, int64_t now_us,
                  ElectionOutbox* out);
  void Count(const NodeState& state, SequenceNumber latest, int64_t now_us, ElectionOutbox* out);
  void GiveUp(int64_t now_us);
  int64_t Jitter();
  // When the node suspects its leader, heard last at `contact_us`: the time-out after that
  // contact, or later when phi is on and has not reached its threshold by then.
  int64_t SuspectAt(int64_t contact_us) const;

  const ElectionOptions options_;
  std::mt19937_64 rng_;
  Phase phase_ = Phase::kFollowing;
  bool may_stand_ = true;
  PhiAccrualDetector detector_;
  int64_t stand_at_us_;    // kFollowing: when to stand if nothing is heard
  int64_t suspect_at_us_;  // kFollowing: the same without the random part of the jitter
  int64_t round_deadline_us_ = kNever;
  Epoch epoch_ = 0;                      // the epoch of the current (or last) round
  Epoch seen_epoch_ = 0;                 // the highest epoch a refusal named
  std::map<std::string, bool> granted_;  // this round's answers, by voter
  VoteRequest round_request_;            // what this round asks
  int64_t round_asked_us_ = 0;           // when it was made
  uint64_t majority_ = 1;
  uint64_t voters_ = 1;  // this round's voters, itself included
};

// A leader's lease (see above): when it sent the last message each voter acknowledged.
class LeaderLease {
 public:
  // `lease_ms` must be below the voters' election time-out (by a margin for clock rates).
  explicit LeaderLease(uint32_t lease_ms) : lease_us_(int64_t{lease_ms} * 1000) {}

  // `voter` acknowledged a message this leader sent at `sent_us`.
  void OnAck(const std::string& voter, int64_t sent_us);
  // Whether a majority of `m`'s voters, `self` included, acknowledged a message sent after
  // now - lease. A new leader (a new LeaderLease) holds none until they have.
  bool Holds(const Membership& m, const std::string& self, int64_t now_us) const;
  // Until when it holds if no acknowledgement comes: kNotHeld when a majority never
  // acknowledged, kNever when this leader is the only voter.
  int64_t ExpiresAt(const Membership& m, const std::string& self) const;
  static constexpr int64_t kNotHeld = std::numeric_limits<int64_t>::min();
  int64_t lease_us() const { return lease_us_; }

  // Whether the leader should step down for want of a majority at `now_us`: `grace_us` (an
  // election time-out: by then the others may have elected a leader) after the lease it held
  // ended, or, when it never held one, after a voter first answered it. A leader no voter has
  // answered waits however long it takes: the first leader of a new cluster whose followers
  // start later. That is safe: it takes no write, and no voter hears it (a voter that hears a
  // leader answers it), so none refuses the others its vote for its sake; they can elect
  // without it, and it steps down once one of them answers with their later epoch. A voter
  // that answered may hear it and refuse others its vote: from then on, a grace frees it.
  // Looked at regularly (the first answer counts from the look that sees it).
  bool StepDownDue(const Membership& m, const std::string& self, int64_t now_us,
                   int64_t grace_us);

 private:
  const int64_t lease_us_;
  std::map<std::string, int64_t> acked_sent_us_;
  int64_t held_until_us_ = kNotHeld;  // the latest end of the lease seen by StepDownDue
  int64_t answered_us_ = kNotHeld;    // when StepDownDue first saw a voter's answer
};

}  // namespace walship::replication
