#include "rpc/campaign.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "replication/handover.h"
#include "rpc/convert.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {


uint64_t SeedFor(const std::string& self, int64_t now_us) {
  return std::hash<std::string>{}(self) ^ static_cast<uint64_t>(now_us);
}

}  // namespace

replication::ElectionOptions ElectionOptionsFor(const NodeServerOptions& o) {
  replication::ElectionOptions eo;
  eo.self = o.node_id;
  eo.cluster = o.cluster;
  eo.election_timeout_ms = o.election_timeout_ms;
  eo.jitter_ms = o.election_jitter_ms;
  eo.round_timeout_ms = std::max<uint32_t>(100, o.election_timeout_ms / 2);
  eo.phi_threshold = o.phi_threshold;
  eo.phi_min_std_ms = o.phi_min_std_ms;
  eo.phi_max_wait_ms = o.heartbeat_timeout_ms;
  eo.max_failover_lag = o.max_failover_lag;
  return eo;
}

void LogRefusedVote(const replication::VoteRequest& request, const replication::VoteReply& reply) {
  spdlog::info("election: refused {} to '{}' in epoch {}: {}",
               request.pre_vote ? "a pre-vote" : "a vote", request.candidate, request.epoch,
               reply.message);
}

Campaign::Campaign(Node& node, std::shared_ptr<replication::Follower> follower,
                   const replication::FollowerLink& link, std::function<void(std::string)> follow)
    : node_(node),
      follower_(std::move(follower)),
      link_(link),
      follow_(std::move(follow)),
      options_(ElectionOptionsFor(node.options())),
      election_(options_, SeedFor(options_.self, node.PreciseNowUs()), node.PreciseNowUs()),
      heard_us_(node.PreciseNowUs()),
      tasks_(*this) {}

Campaign::~Campaign() noexcept(false) {
  for (auto& [id, conn] : voters_) conn->Close();
  FinishPromote(PromoteOutcome::Refused(absl::AbortedError("this node's role changed meanwhile")));
}

void Campaign::taskFailed(kj::Exception&& e) {
  spdlog::warn("election task failed: {}", e.getDescription().cStr());
}

void Campaign::Start() { Arm(); }

void Campaign::NoteContact() {
  if (link_.last_contact_us() <= link_contact_us_) return;
  link_contact_us_ = link_.last_contact_us();
  // Noted on the precise clock, now: the loop's cached clock may lag behind a long turn, and
  // a voter must never think it heard its leader earlier than it did.
  heard_us_ = node_.PreciseNowUs();
  heard_from_ = follower_->state().leader;
  election_.OnLeaderContact(heard_us_);
  CheckPromote();
  Arm();
}

void Campaign::NoteHeartbeat(const std::string& leader, replication::Epoch epoch,
                             int64_t now_us) {
  heard_us_ = std::max(heard_us_, now_us);
  heard_from_ = leader;
  election_.OnLeaderHeartbeat(leader, epoch, now_us);
  if (promoting_.get() != nullptr) {
    promote_log_.push_back("a leader of the highest epoch this node has seen is alive");
    promote_stood_ = true;  // its round, if any, ended: the promotion failed
  }
  CheckPromote();
  Arm();
}

kj::Promise<PromoteOutcome> Campaign::Promote(bool accept_loss) {
  if (promoting_.get() != nullptr || Standing()) {
    return PromoteOutcome::Refused(absl::UnavailableError(
        "this node is standing for leader already; ask again once its round has ended"));
  }
  NoteContact();
  replication::FollowerStatus fs = follower_->Status();
  replication::SequenceNumber latest = node_.engine().LatestSequence();
  PromoteOutcome refused;
  refused.possible_loss = replication::PossibleLoss(latest, fs.leader_latest);
  std::string why = replication::WhyNotStand(
      follower_->state(), fs.phase == replication::FollowerPhase::kNeedsSnapshot, latest,
      fs.leader_latest, options_.max_failover_lag, /*forced=*/true);
  if (!why.empty()) {
    refused.status = absl::FailedPreconditionError(why);
    return refused;
  }
  if (refused.possible_loss > 0 && !accept_loss) {
    refused.status = absl::FailedPreconditionError(absl::StrCat(
        "promoting '", options_.self, "' may lose at least ", refused.possible_loss,
        " acknowledged writes: its log ends at seq ", latest,
        " and the last position it knew of its leader '", link_.leader_id(), "' is seq ",
        fs.leader_latest, "; run again with --accept-loss to promote it anyway"));
    return refused;
  }
  spdlog::warn("election: promoted by an operator: standing now{}",
               refused.possible_loss > 0
                   ? absl::StrCat(", accepting the loss of at least ", refused.possible_loss,
                                  " writes")
                   : "");
  auto paf = kj::newPromiseAndFulfiller<PromoteOutcome>();
  promoting_ = kj::mv(paf.fulfiller);
  uint64_t promotion = ++promotions_;
  promote_stood_ = false;
  promote_loss_ = refused.possible_loss;
  promote_log_.clear();
  // Not before an election time-out after this node last heard its leader: until then the
  // leader's lease may rest on this node's loyalty, as on every voter's (its own vote for
  // itself is granted without the checks a voter makes).
  election_.StandAt(std::max(node_.PreciseNowUs(),
                             heard_us_ + int64_t{options_.election_timeout_ms} * 1000));
  Arm();
  // Bounded: the voters answer within a round's time-out, but a round may be given up and no
  // other started (the leader was heard meanwhile).
  uint32_t bound_ms = 3 * options_.election_timeout_ms + options_.round_timeout_ms;
  tasks_.add(node_.io().provider->getTimer().afterDelay(bound_ms * kj::MILLISECONDS).then(
      [this, bound_ms, promotion]() {
        if (promoting_.get() == nullptr || promotion != promotions_) return;
        promote_log_.push_back(absl::StrCat("not elected within ", bound_ms, " ms"));
        promote_stood_ = true;
        CheckPromote();
      }));
  return kj::mv(paf.promise);
}

void Campaign::FinishPromote(PromoteOutcome outcome) {
  if (promoting_.get() == nullptr) return;
  promoting_->fulfill(kj::mv(outcome));
  promoting_ = nullptr;
  promote_log_.clear();
}

void Campaign::CheckPromote() {
  if (promoting_.get() == nullptr || !promote_stood_ || leading_ ||
      election_.phase() != replication::Election::Phase::kFollowing) {
    return;
  }
  // The last lines say why: the refusals of the round, its time-out, a leader heard.
  size_t from = promote_log_.size() > 4 ? promote_log_.size() - 4 : 0;
  std::string why;
  for (size_t i = from; i < promote_log_.size(); ++i) {
    absl::StrAppend(&why, why.empty() ? "" : "; ", promote_log_[i]);
  }
  FinishPromote(PromoteOutcome{
      absl::UnavailableError(absl::StrCat("'", options_.self, "' was not elected: ",
                                          why.empty() ? "its round ended" : why)),
      "", 0, promote_loss_});
}

std::string Campaign::Describe() const {
  using Phase = replication::Election::Phase;
  switch (election_.phase()) {
    case Phase::kFollowing: {
      if (!why_not_.empty()) return absl::StrCat("following; may not stand: ", why_not_);
      int64_t at = election_.NextWakeUp();
      if (at == replication::kNever) return "following";
      return absl::StrCat("following; stands in ",
                          std::max<int64_t>(0, at - node_.PreciseNowUs()) / 1000,
                          " ms unless the leader is heard");
    }
    case Phase::kPreVote:
      return absl::StrCat("standing for epoch ", election_.epoch(), " (pre-vote)");
    case Phase::kVote:
      return absl::StrCat("asking for votes in epoch ", election_.epoch());
    case Phase::kWon:
      return absl::StrCat("won epoch ", election_.epoch());
  }
  return "";
}

// One timer for the election's next wake-up; an earlier one already armed stays. Called
// after every change of the election's state: a round that ended without a win lets the
// followers' hellos held meanwhile be answered.
void Campaign::Arm() {
  if (!Standing()) node_.ReleaseHeld();
  if (leading_) return;
  int64_t now = node_.PreciseNowUs();
  int64_t at = election_.NextWakeUp();
  // Not allowed to stand (yet): whether it may is looked at again an election time-out on
  // (a follower seeded meanwhile may).
  if (at == replication::kNever) at = now + int64_t{options_.election_timeout_ms} * 1000;
  if (armed_ && armed_at_us_ <= at && armed_at_us_ > now) return;
  armed_ = true;
  armed_at_us_ = at;
  timer_ = node_.io()
               .provider->getTimer()
               .afterDelay(std::max<int64_t>(0, at - now) * kj::MICROSECONDS)
               .then([this]() {
                 armed_ = false;
                 tasks_.add(kj::evalLater([this]() { Tick(); }));
               })
               .eagerlyEvaluate(nullptr);
}

void Campaign::Tick() {
  NoteContact();
  // A node that must be re-seeded holds stale data, and one never seeded holds no database
  // at all: they vote, but never stand.
  replication::NodeState state = follower_->state();
  replication::FollowerStatus fs = follower_->Status();
  std::string why = replication::WhyNotStand(
      state, fs.phase == replication::FollowerPhase::kNeedsSnapshot,
      node_.engine().LatestSequence(), fs.leader_latest, options_.max_failover_lag,
      /*forced=*/promoting_.get() != nullptr);
  if (why != why_not_ && !why.empty() && !state.database_id.empty()) {
    spdlog::warn("election: this node may not stand: {}", why);
  }
  why_not_ = why;
  election_.set_may_stand(why.empty());
  int64_t now = node_.PreciseNowUs();
  if (election_.phase() == replication::Election::Phase::kFollowing && why.empty() &&
      election_.NextWakeUp() <= now && !confirming_) {
    // About to stand: first one more turn of the event loop. After a stall of this loop the
    // timer fires before the messages that arrived meanwhile are read, and a heartbeat of a
    // live leader may be among them.
    confirming_ = true;
    tasks_.add(node_.io().provider->getTimer().afterDelay(1 * kj::MILLISECONDS).then([this]() {
      Tick();
    }));
    return;
  }
  confirming_ = false;
  replication::ElectionOutbox out;
  election_.Tick(state, node_.engine().LatestSequence(), node_.PreciseNowUs(), &out);
  Carry(std::move(out));
}

void Campaign::Carry(replication::ElectionOutbox out) {
  for (const std::string& line : out.logs) spdlog::info("election: {}", line);
  if (promoting_.get() != nullptr) {
    promote_log_.insert(promote_log_.end(), out.logs.begin(), out.logs.end());
    if (election_.phase() != replication::Election::Phase::kFollowing) promote_stood_ = true;
  }
  CheckPromote();
  if (out.save.has_value()) {
    // Its vote for itself, taken at once (no message of the old leader is taken from here
    // on) and saved before anyone is asked (and before it may lead).
    replication::Epoch epoch = out.save->vote_epoch;
    if (absl::Status taken = follower_->TakeVote(epoch, options_.self); !taken.ok()) {
      spdlog::info("election: {}", std::string(taken.message()));
      election_.Abandon(node_.PreciseNowUs());
      Arm();
      return;
    }
    tasks_.add(node_.node_pool()
                   .Run([f = follower_, epoch, self = options_.self]() {
                     return f->SaveVote(epoch, self);
                   })
                   .catch_([](kj::Exception&& e) {  // the node's queue was full
                     return absl::UnavailableError(e.getDescription().cStr());
                   })
                   .then([this, epoch, out = std::move(out)](absl::Status saved) mutable {
                     if (!saved.ok()) {
                       spdlog::warn("election: cannot save this node's vote for itself: {}",
                                    saved.ToString());
                       // Only the round that rested on it: one that ended meanwhile (a vote
                       // granted to another, a leader heard) keeps the wait it set.
                       if (election_.phase() == replication::Election::Phase::kVote &&
                           election_.epoch() == epoch) {
                         election_.Abandon(node_.PreciseNowUs());
                       }
                       Arm();
                       return;
                     }
                     // The round may have ended meanwhile (the leader was heard, or its
                     // time-out passed): then nobody is asked.
                     if (election_.phase() != replication::Election::Phase::kVote ||
                         election_.epoch() != epoch) {
                       Arm();
                       return;
                     }
                     Send(std::move(out.send));
                     if (out.lead.has_value()) Lead(*out.lead, std::move(out.elected_by));
                     Arm();
                   }));
    return;
  }
  Send(std::move(out.send));
  if (out.lead.has_value()) Lead(*out.lead, std::move(out.elected_by));
  Arm();
}

void Campaign::Send(std::vector<std::pair<std::string, replication::VoteRequest>> requests) {
  for (auto& [voter, request] : requests) Ask(voter, std::move(request));
}

// One call, on the voter's connection (opened when there is none); a call that fails or
// outlasts the round closes that connection, so the next round opens a fresh one.
void Campaign::Ask(const std::string& voter, replication::VoteRequest request, bool may_retry) {
  std::string address = node_.AddressOf(voter);
  if (address.empty()) {
    spdlog::warn("election: no address is known for voter '{}'", voter);
    return;
  }
  kj::Promise<schema::Node::Client> conn = nullptr;
  // The connection this call goes on: a failure closes that one, not a newer one.
  auto used = std::make_shared<const PeerClient*>(nullptr);
  bool reused = false;
  if (auto it = voters_.find(voter); it != voters_.end()) {
    reused = true;
    *used = it->second.get();
    conn = kj::Promise<schema::Node::Client>(it->second->node);
  } else {
    conn = ConnectToPeer(node_.io(), address, node_.security()).then([this, voter, used](kj::Own<PeerClient> c) {
      kj::Own<PeerClient>& slot = voters_[voter];
      if (slot.get() != nullptr) {
        slot->Close();
        tasks_.add(kj::evalLater([old = kj::mv(slot)]() {}));  // calls on it may still unwind
      }
      slot = kj::mv(c);
      *used = slot.get();
      return slot->node;
    });
  }
  auto call = conn.then([request](schema::Node::Client node) {
    auto req = node.requestVoteRequest();
    ToCapnp(request, req.initRequest());
    return req.send().then([](capnp::Response<schema::PeerService::RequestVoteResults> resp) {
      return FromCapnp(resp.getReply());
    });
  });
  auto bounded = call.exclusiveJoin(node_.io()
                                        .provider->getTimer()
                                        .afterDelay(options_.round_timeout_ms * kj::MILLISECONDS)
                                        .then([]() -> replication::VoteReply {
                                          KJ_FAIL_REQUIRE("no answer within the round's time-out");
                                        }));
  tasks_.add(bounded.then(
      [this, request](replication::VoteReply reply) {
        replication::ElectionOutbox out;
        election_.OnReply(request, reply, follower_->state(), node_.engine().LatestSequence(),
                          node_.PreciseNowUs(), &out);
        Carry(std::move(out));
      },
      [this, voter, request, used, reused, may_retry](kj::Exception&& e) {
        spdlog::debug("election: no answer from '{}': {}", voter, e.getDescription().cStr());
        if (auto it = voters_.find(voter); it != voters_.end() && it->second.get() == *used) {
          it->second->Close();
          // Destroyed in a later turn: calls on it may still unwind.
          tasks_.add(kj::evalLater([c = kj::mv(it->second)]() {}));
          voters_.erase(it);
        }
        // A connection kept from an earlier round may have died with its voter's old process
        // (restarted since): asked again at once on a fresh one, instead of losing the round.
        using Phase = replication::Election::Phase;
        bool same_round = election_.epoch() == request.epoch &&
                          election_.phase() == (request.pre_vote ? Phase::kPreVote : Phase::kVote);
        if (may_retry && reused && same_round &&
            e.getType() == kj::Exception::Type::DISCONNECTED) {
          Ask(voter, request, /*may_retry=*/false);
        }
      }));
}

kj::Promise<absl::Status> BecomeLeader(Node& node,
                                       std::shared_ptr<replication::Follower> follower,
                                       replication::Epoch epoch,
                                       std::function<void()> before_switch,
                                       replication::ElectedBy elected_by) {
  struct Elected {
    absl::StatusOr<replication::NodeState> next;
    std::deque<replication::ShippedBatch> recent;
  };
  return node.node_pool()
      .Run([e = &node.engine(), f = follower, epoch]() -> Elected {
        if (absl::Status synced = e->SyncWal(); !synced.ok()) return {synced, {}};
        Elected won{f->SaveElected(epoch), {}};
        if (won.next.ok()) won.recent = f->TakeRecent();
        return won;
      })
      .catch_([](kj::Exception&& e) -> Elected {
        return {absl::UnavailableError(e.getDescription().cStr()), {}};
      })
      .then([&node, epoch, before_switch = std::move(before_switch),
             elected_by = std::move(elected_by)](Elected won) mutable {
        if (!won.next.ok()) return won.next.status();
        if (before_switch) before_switch();
        spdlog::warn("elected leader of epoch {} from seq {}", epoch,
                     won.next->history.back().start_seq);
        node.SwitchRole(std::move(*won.next), std::move(won.recent), std::move(elected_by));
        return absl::OkStatus();
      });
}

// Won: leads from its log's end + 1 (BecomeLeader).
void Campaign::Lead(replication::Epoch epoch, replication::ElectedBy elected_by) {
  leading_ = true;
  auto promoted = [this, epoch]() {
    FinishPromote(PromoteOutcome{absl::OkStatus(), options_.self, epoch, promote_loss_});
  };
  auto led_or_not = BecomeLeader(node_, follower_, epoch, promoted, std::move(elected_by));
  tasks_.add(led_or_not.then([this, epoch](absl::Status led) {
    if (!led.ok()) {
      spdlog::error("election: won epoch {} but cannot lead: {}", epoch, led.ToString());
      leading_ = false;
      election_.Abandon(node_.PreciseNowUs());
      promote_log_.push_back(
          absl::StrCat("won epoch ", epoch, " but cannot lead: ", led.message()));
      CheckPromote();
      Arm();
    }
  }));
}

kj::Promise<replication::VoteReply> Campaign::Answer(replication::VoteRequest request) {
  NoteContact();
  replication::VoterView view;
  view.latest = node_.engine().LatestSequence();
  view.leads = leading_;  // won, and becoming leader: it votes for no one else
  view.leader_heard_us = heard_us_;
  view.heard_from = heard_from_;
  int64_t now = node_.PreciseNowUs();
  replication::VoteAnswer a =
      replication::AnswerVote(follower_->state(), view, request, options_, now);
  // Standing together with a candidate at least as fit: this node yields (not while an
  // operator's promotion of this node is under way).
  if (request.pre_vote && a.reply.granted && promoting_.get() == nullptr) {
    replication::ElectionOutbox out;
    if (election_.OnPreVoteGranted(request, follower_->state(), view.latest, now, &out)) {
      for (const std::string& line : out.logs) spdlog::info("election: {}", line);
      Arm();
    }
  }
  // A pre-vote refused: this node may stand without the jitter, or ask that candidate again
  // for the vote it refused this node's round.
  if (request.pre_vote && !a.reply.granted) {
    replication::ElectionOutbox out;
    if (election_.OnPreVoteRefused(request, a.refusal, follower_->state(), view.latest, now,
                                  &out)) {
      if (out.logs.empty()) {
        spdlog::info("election: '{}' stands; this node stands as soon as it suspects its "
                     "leader too",
                     request.candidate);
      }
      Carry(std::move(out));
    }
  }
  if (a.save.has_value()) {
    // Taken at once, in the same turn as the checks above: a message of the old leader that
    // arrives while the vote is saved is refused, and an apply admitted before it is acked
    // in the new epoch, which no leader of an older one counts.
    if (absl::Status taken = follower_->TakeVote(request.epoch, request.candidate); !taken.ok()) {
      a.reply.granted = false;
      a.reply.message = std::string(taken.message());
      a.reply.epoch = follower_->HighestEpoch();
      a.save.reset();
    } else {
      // The wait restarts from the vote taken, not from its save: a timer that fires while
      // the vote is being saved would otherwise stand against the candidate just voted for
      // (in the next epoch, which would then depose it). And the vote counts as the leader
      // heard: other candidates are refused for an election time-out, which the candidate's
      // lease counts on (replication::ElectedBy).
      heard_us_ = std::max(heard_us_, now);
      heard_from_ = request.candidate;
      election_.OnLeaderContact(now);
      Arm();
    }
  }
  if (!a.save.has_value()) {
    if (!a.reply.granted) LogRefusedVote(request, a.reply);
    return a.reply;
  }
  // Wrapped: the role (and this) may end while the vote is being saved.
  return canceler_.wrap(
      node_.node_pool()
          .Run([f = follower_, request]() { return f->SaveVote(request.epoch, request.candidate); })
          .then([this, reply = a.reply, request](absl::Status saved) -> replication::VoteReply {
            // Not saved: no answer (the candidate asks again), never a refusal.
            KJ_REQUIRE(saved.ok(), "cannot save the vote", saved.ToString());
            spdlog::info("election: voted for '{}' in epoch {}", request.candidate, request.epoch);
            // A vote restarts the wait, as a leader's message does: the candidate gets its
            // time to win before this node stands itself.
            election_.OnLeaderContact(node_.PreciseNowUs());
            Arm();
            follow_(request.candidate);
            return reply;
          }));
}

}  // namespace walship::rpc
