#include "replication/election.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace walship::replication {
namespace {

bool IsVoter(const Membership& m, const std::string& id) {
  if (m.version == 0) return true;  // no membership known (a simulation): everyone votes
  const Member* member = m.Find(id);
  return member != nullptr && member->voter;
}

VoteAnswer Refuse(const std::string& self, Epoch highest, std::string why,
                  Refusal refusal = Refusal::kInvalid) {
  VoteAnswer a;
  a.refusal = refusal;
  a.reply.granted = false;
  a.reply.voter = self;
  a.reply.epoch = highest;
  a.reply.message = std::move(why);
  return a;
}

}  // namespace

LogPosition LogPositionOf(const NodeState& state, SequenceNumber latest) {
  LogPosition p;
  p.seq = latest;
  if (const EpochEntry* e = state.EntryOf(latest); e != nullptr) {
    p.epoch = e->epoch;
    p.leader = e->leader;
  }
  return p;
}

bool AtLeastAsUpToDate(const LogPosition& a, const LogPosition& b) {
  if (a.epoch != b.epoch) return a.epoch > b.epoch;
  // The same number begun by two nodes (never under elections; possible in states from
  // before them): neither log can be said to hold the other's writes.
  if (!a.leader.empty() && !b.leader.empty() && a.leader != b.leader) return false;
  return a.seq >= b.seq;
}

std::string Describe(const LogPosition& p) {
  return absl::StrCat("seq ", p.seq, " of epoch ", p.epoch,
                      p.leader.empty() ? "" : absl::StrCat(" (", p.leader, ")"));
}

std::string WhyNotStand(const NodeState& state, bool needs_snapshot, SequenceNumber latest,
                        SequenceNumber leader_latest, uint64_t max_lag, bool forced) {
  if (state.database_id.empty()) return "this node was never seeded: it holds no database";
  if (needs_snapshot) return "this node must be re-seeded: its data is stale";
  uint64_t behind = PossibleLoss(latest, leader_latest);
  if (!forced && max_lag > 0 && behind > max_lag) {
    return absl::StrCat("its log ends at seq ", latest, ", ", behind,
                        " behind the last position it knew of its leader (seq ", leader_latest,
                        "), more than max_failover_lag (", max_lag,
                        "); `walship promote` can force it");
  }
  return "";
}

HeartbeatReply AnswerHeartbeat(const std::string& self, const std::string& cluster,
                               Epoch highest_seen, const Heartbeat& beat) {
  HeartbeatReply r;
  r.node = self;
  r.epoch = highest_seen;
  if (beat.version != kPeerProtocolVersion) {
    r.message = absl::StrCat("leader '", beat.leader, "' speaks peer protocol version ",
                             beat.version, "; this node speaks ", kPeerProtocolVersion);
  } else if (beat.cluster != cluster) {
    r.message = absl::StrCat("leader '", beat.leader, "' is of cluster '", beat.cluster,
                             "'; this node is of '", cluster, "'");
  } else if (beat.epoch < highest_seen) {
    r.message = absl::StrCat("leader '", beat.leader, "' leads epoch ", beat.epoch,
                             "; this node has seen epoch ", highest_seen);
  } else {
    r.heard = true;
  }
  return r;
}

VoteAnswer AnswerVote(const NodeState& state, const VoterView& view, const VoteRequest& request,
                      const ElectionOptions& options, int64_t now_us) {
  const std::string& self = options.self;
  const Epoch highest = state.HighestEpoch();
  if (request.version != kPeerProtocolVersion) {
    return Refuse(self, highest,
                  absl::StrCat("candidate '", request.candidate, "' speaks peer protocol version ",
                               request.version, "; this node speaks ", kPeerProtocolVersion));
  }
  if (request.cluster != options.cluster) {
    return Refuse(self, highest,
                  absl::StrCat("candidate '", request.candidate, "' is of cluster '",
                               request.cluster, "'; this node is of '", options.cluster, "'"));
  }
  if (!IsVoter(state.membership, request.candidate)) {
    return Refuse(self, highest,
                  absl::StrCat("'", request.candidate, "' is not a voting member of the cluster"));
  }
  if (!IsVoter(state.membership, self)) {
    return Refuse(self, highest, "this node is a learner: it does not vote");
  }
  if (request.epoch <= highest) {
    if (!request.pre_vote && request.epoch == state.vote_epoch &&
        state.voted_for == request.candidate) {
      VoteAnswer again;  // our answer was lost: the same vote again
      again.reply.granted = true;
      again.reply.voter = self;
      again.reply.epoch = highest;
      return again;
    }
    return Refuse(
        self, highest,
        state.vote_epoch == request.epoch
            ? absl::StrCat("this node voted for '", state.voted_for, "' in epoch ", request.epoch)
            : absl::StrCat("epoch ", request.epoch, " is not above epoch ", highest,
                           ", which this node has seen"));
  }
  if (view.leads) {
    return Refuse(self, highest, absl::StrCat("this node leads epoch ", state.epoch));
  }
  if (view.leader_heard_us != kNever && request.candidate != view.heard_from &&
      now_us - view.leader_heard_us < int64_t{options.election_timeout_ms} * 1000) {
    return Refuse(self, highest,
                  absl::StrCat("this node heard from its leader '", state.leader, "' ",
                               (now_us - view.leader_heard_us) / 1000, " ms ago"),
                  Refusal::kLeaderHeard);
  }
  LogPosition mine = LogPositionOf(state, view.latest);
  LogPosition theirs{request.last_seq, request.last_epoch, request.last_leader};
  if (!AtLeastAsUpToDate(theirs, mine)) {
    return Refuse(self, highest,
                  absl::StrCat("the candidate's log ends at ", Describe(theirs),
                               ", behind this node's, which ends at ", Describe(mine)),
                  Refusal::kBehind);
  }
  VoteAnswer a;
  a.reply.granted = true;
  a.reply.voter = self;
  a.reply.epoch = highest;
  if (!request.pre_vote) {
    NodeState next = state;
    next.vote_epoch = request.epoch;
    next.voted_for = request.candidate;
    a.reply.epoch = request.epoch;
    a.save = std::move(next);
  }
  return a;
}

Election::Election(ElectionOptions options, uint64_t seed, int64_t now_us)
    : options_(std::move(options)),
      rng_(seed),
      detector_(int64_t{options_.phi_min_std_ms} * 1000, PhiAccrualDetector::kDefaultWindow,
                int64_t{options_.phi_max_wait_ms} * 1000) {
  suspect_at_us_ = now_us + int64_t{options_.election_timeout_ms} * 1000;
  stand_at_us_ = suspect_at_us_ + Jitter();
}

int64_t Election::SuspectAt(int64_t contact_us) const {
  int64_t at = contact_us + int64_t{options_.election_timeout_ms} * 1000;
  if (options_.phi_threshold > 0 && detector_.last_heartbeat_us() != 0) {
    int64_t after = detector_.SuspectAfterUs(options_.phi_threshold);
    if (after > 0) {
      int64_t cap = contact_us + int64_t{options_.phi_max_wait_ms} * 1000;
      at = std::max(at, std::min(cap, detector_.last_heartbeat_us() + after));
    }
  }
  return at;
}

void Election::OnLeaderHeartbeat(const std::string& leader, Epoch epoch, int64_t now_us) {
  detector_.OnHeartbeatFrom(leader, epoch, now_us);
  OnLeaderContact(now_us);
}

int64_t Election::Jitter() {
  if (options_.jitter_ms == 0) return 0;
  return static_cast<int64_t>(rng_() % (uint64_t{options_.jitter_ms} * 1000));
}

void Election::OnLeaderContact(int64_t now_us) {
  if (phase_ == Phase::kWon) return;
  phase_ = Phase::kFollowing;
  round_deadline_us_ = kNever;
  granted_.clear();
  suspect_at_us_ = SuspectAt(now_us);
  stand_at_us_ = suspect_at_us_ + Jitter();
}

void Election::StandAt(int64_t at_us) {
  if (phase_ != Phase::kFollowing) return;
  stand_at_us_ = at_us;
  suspect_at_us_ = std::min(suspect_at_us_, at_us);
}

void Election::GiveUp(int64_t now_us) {
  phase_ = Phase::kFollowing;
  round_deadline_us_ = kNever;
  granted_.clear();
  // Never earlier than a wait set meanwhile (a vote granted restarts it).
  suspect_at_us_ = std::max(suspect_at_us_, now_us);
  stand_at_us_ = std::max(suspect_at_us_, now_us + Jitter());
}

void Election::Abandon(int64_t now_us) {
  GiveUp(now_us);  // a win that rested on the unsaved vote is void too
}

int64_t Election::NextWakeUp() const {
  switch (phase_) {
    case Phase::kFollowing:
      return may_stand_ ? stand_at_us_ : kNever;
    case Phase::kPreVote:
    case Phase::kVote:
      return round_deadline_us_;
    case Phase::kWon:
      return kNever;
  }
  return kNever;
}

void Election::Tick(const NodeState& state, SequenceNumber latest, int64_t now_us,
                    ElectionOutbox* out) {
  switch (phase_) {
    case Phase::kFollowing:
      if (!may_stand_ || now_us < stand_at_us_) return;
      if (!IsVoter(state.membership, options_.self)) {
        stand_at_us_ = now_us + int64_t{options_.election_timeout_ms} * 1000;
        return;
      }
      StartRound(/*pre_vote=*/true, state, latest, now_us, out);
      return;
    case Phase::kPreVote:
    case Phase::kVote:
      if (now_us >= round_deadline_us_) {
        out->logs.push_back(absl::StrCat(
            "no majority for epoch ", epoch_, " within ", options_.round_timeout_ms, " ms (",
            phase_ == Phase::kPreVote ? "pre-vote" : "vote", "); standing again later"));
        GiveUp(now_us);
      }
      return;
    case Phase::kWon:
      return;
  }
}

void Election::StartRound(bool pre_vote, const NodeState& state, SequenceNumber latest,
                          int64_t now_us, ElectionOutbox* out) {
  if (pre_vote) {
    epoch_ = std::max(state.HighestEpoch(), seen_epoch_) + 1;
  } else {
    if (state.HighestEpoch() >= epoch_) {
      // This node voted in that epoch meanwhile (for another candidate), or heard of it.
      out->logs.push_back(absl::StrCat("epoch ", epoch_,
                                       " was taken up meanwhile (this node "
                                       "has seen ",
                                       state.HighestEpoch(),
                                       "); standing again "
                                       "later"));
      GiveUp(now_us);
      return;
    }
    NodeState next = state;
    next.vote_epoch = epoch_;
    next.voted_for = options_.self;
    out->save = std::move(next);
  }
  phase_ = pre_vote ? Phase::kPreVote : Phase::kVote;
  round_deadline_us_ = now_us + int64_t{options_.round_timeout_ms} * 1000;
  granted_.clear();
  granted_[options_.self] = true;
  majority_ = state.membership.version == 0 ? 1 : state.membership.Majority();
  voters_ = state.membership.version == 0 ? 1 : state.membership.VotersExcept("").size();
  LogPosition mine = LogPositionOf(state, latest);
  VoteRequest r;
  r.cluster = options_.cluster;
  r.candidate = options_.self;
  r.epoch = epoch_;
  r.pre_vote = pre_vote;
  r.last_seq = mine.seq;
  r.last_epoch = mine.epoch;
  r.last_leader = mine.leader;
  for (const std::string& voter : state.membership.VotersExcept(options_.self)) {
    out->send.emplace_back(voter, r);
  }
  round_request_ = r;
  round_asked_us_ = now_us;
  out->logs.push_back(absl::StrCat(pre_vote ? "standing for epoch " : "asking for votes in epoch ",
                                   epoch_, pre_vote ? " (pre-vote)" : "", "; log ends at ",
                                   Describe(mine)));
  Count(state, latest, now_us, out);
}

bool Election::OnPreVoteGranted(const VoteRequest& request, const NodeState& state,
                                SequenceNumber latest, int64_t now_us, ElectionOutbox* out) {
  if (phase_ != Phase::kPreVote || !request.pre_vote || request.epoch != epoch_ ||
      request.candidate == options_.self) {
    return false;
  }
  LogPosition mine = LogPositionOf(state, latest);
  LogPosition theirs{request.last_seq, request.last_epoch, request.last_leader};
  // Granted, so theirs is at least as up to date as ours; equal when ours is too.
  bool equal = AtLeastAsUpToDate(mine, theirs);
  if (equal && request.candidate > options_.self) return false;
  phase_ = Phase::kFollowing;
  round_deadline_us_ = kNever;
  granted_.clear();
  // The fitter candidate gets its round: no early standing before it is over.
  suspect_at_us_ = now_us + int64_t{options_.round_timeout_ms} * 1000;
  stand_at_us_ = suspect_at_us_ + Jitter();
  out->logs.push_back(absl::StrCat("yields epoch ", epoch_, " to '", request.candidate, "', whose log ",
                                   equal ? "is as up to date (and whose id is lower)"
                                         : "is more up to date",
                                   "; standing again later unless a leader is heard"));
  return true;
}

bool Election::OnPreVoteRefused(const VoteRequest& request, Refusal why, const NodeState& state,
                                SequenceNumber latest, int64_t now_us, ElectionOutbox* out) {
  if (!may_stand_ || !request.pre_vote || request.candidate == options_.self ||
      (why != Refusal::kLeaderHeard && why != Refusal::kBehind) ||
      !IsVoter(state.membership, options_.self)) {
    return false;
  }
  LogPosition mine = LogPositionOf(state, latest);
  LogPosition theirs{request.last_seq, request.last_epoch, request.last_leader};
  const bool behind = AtLeastAsUpToDate(mine, theirs) && !AtLeastAsUpToDate(theirs, mine);
  if (phase_ == Phase::kPreVote || phase_ == Phase::kVote) {
    if (!behind) return false;
    auto it = granted_.find(request.candidate);
    if (it == granted_.end() || it->second) return false;
    // It refused this round, and stands now: what it refused for (a leader heard lately,
    // most often) may be past. Asked again at once rather than at the next round.
    granted_.erase(it);
    out->send.emplace_back(request.candidate, round_request_);
    out->logs.push_back(absl::StrCat("asking '", request.candidate, "' again for its ",
                                     round_request_.pre_vote ? "pre-vote" : "vote", " in epoch ",
                                     epoch_, ": it refused, and stands itself now"));
    return true;
  }
  // Refused for a leader heard lately, the candidate may be the fitter: this node standing
  // when it suspects the leader too makes that candidate ask it again (above).
  if (phase_ != Phase::kFollowing || (!behind && now_us >= suspect_at_us_)) return false;
  int64_t at = std::max(now_us, suspect_at_us_);
  if (at >= stand_at_us_) return false;
  stand_at_us_ = at;
  return true;
}

void Election::OnReply(const VoteRequest& request, const VoteReply& reply, const NodeState& state,
                       SequenceNumber latest, int64_t now_us, ElectionOutbox* out) {
  if (!reply.granted) seen_epoch_ = std::max(seen_epoch_, reply.epoch);
  bool current = request.epoch == epoch_ && ((phase_ == Phase::kPreVote && request.pre_vote) ||
                                             (phase_ == Phase::kVote && !request.pre_vote));
  if (!current || reply.voter.empty() || reply.voter == options_.self) return;
  granted_[reply.voter] = reply.granted;
  if (!reply.granted) {
    out->logs.push_back(absl::StrCat("'", reply.voter, "' refused its ",
                                     request.pre_vote ? "pre-vote" : "vote", " in epoch ", epoch_,
                                     ": ", reply.message));
  }
  Count(state, latest, now_us, out);
}

void Election::Count(const NodeState& state, SequenceNumber latest, int64_t now_us,
                     ElectionOutbox* out) {
  size_t yes = 0, no = 0;
  for (const auto& [voter, granted] : granted_) (granted ? yes : no) += 1;
  if (yes < majority_) {
    if (voters_ >= no && voters_ - no >= majority_) return;
    // Refused by so many that a majority is out of reach (two candidates that stood together
    // and each voted for itself): given up now, not at the round's time-out.
    out->logs.push_back(absl::StrCat("refused by ", no, " of ", voters_, " voters in epoch ",
                                     epoch_, ": no majority possible; standing again later"));
    GiveUp(now_us);
    return;
  }
  if (phase_ == Phase::kPreVote) {
    StartRound(/*pre_vote=*/false, state, latest, now_us, out);
  } else if (phase_ == Phase::kVote) {
    phase_ = Phase::kWon;
    round_deadline_us_ = kNever;
    out->lead = epoch_;
    out->elected_by.asked_us = round_asked_us_;
    for (const auto& [voter, granted] : granted_) {
      if (granted) out->elected_by.voters.push_back(voter);
    }
    out->logs.push_back(absl::StrCat("won epoch ", epoch_, " with ", yes, " of the votes"));
  }
}

void LeaderLease::OnAck(const std::string& voter, int64_t sent_us) {
  int64_t& t = acked_sent_us_[voter];
  t = std::max(t, sent_us);
}

int64_t LeaderLease::ExpiresAt(const Membership& m, const std::string& self) const {
  // The majority-th most recent send time among the voters, the leader's own being "now".
  std::vector<int64_t> times;
  bool self_votes = m.version == 0 || IsVoter(m, self);
  for (const Member& member : m.members) {
    if (!member.voter || member.id == self) continue;
    auto it = acked_sent_us_.find(member.id);
    times.push_back(it == acked_sent_us_.end() ? kNotHeld : it->second);
  }
  size_t need = m.version == 0 ? 1 : m.Majority();
  if (self_votes) {
    if (need <= 1) return kNever;  // the only voter holds it alone
    need -= 1;
  }
  if (times.size() < need) return kNotHeld;
  std::sort(times.begin(), times.end(), std::greater<int64_t>());
  int64_t t = times[need - 1];
  return t == kNotHeld ? kNotHeld : t + lease_us_;
}

bool LeaderLease::Holds(const Membership& m, const std::string& self, int64_t now_us) const {
  return now_us < ExpiresAt(m, self);
}

bool LeaderLease::StepDownDue(const Membership& m, const std::string& self, int64_t now_us,
                              int64_t grace_us) {
  int64_t until = ExpiresAt(m, self);
  // The only voter holds it through now (should voters join, its grace counts from there).
  if (until == kNever) until = now_us;
  held_until_us_ = std::max(held_until_us_, until);
  if (answered_us_ == kNotHeld) {
    for (const Member& member : m.members) {
      if (member.voter && member.id != self && acked_sent_us_.contains(member.id)) {
        answered_us_ = now_us;
        break;
      }
    }
  }
  int64_t since = std::max(held_until_us_, answered_us_);
  return since != kNotHeld && now_us - since >= grace_us;
}

}  // namespace walship::replication
