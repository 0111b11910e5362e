#include "rpc/coordinated_campaign.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "replication/election.h"
#include "rpc/node.h"

namespace walship::rpc {

CoordinatedCampaign::CoordinatedCampaign(Node& node, Coordinator& coordinator,
                                         std::shared_ptr<replication::Follower> follower,
                                         const replication::FollowerLink& link,
                                         std::function<void(std::string)> follow)
    : node_(node),
      coordinator_(coordinator),
      follower_(std::move(follower)),
      link_(link),
      follow_(std::move(follow)),
      tasks_(*this) {
  options_.self = node.options().node_id;
  options_.gather_ms = coordinator.options().gather_ms;
  options_.wait_ms = coordinator.options().candidate_wait_ms;
}

CoordinatedCampaign::~CoordinatedCampaign() noexcept(false) {
  coordinator_.ClearListener(listener_);
  // A node that leaves the follower's role (to seed, to recover) stands no more: a candidacy
  // left behind would say where its log ended, long after it went on.
  Withdraw();
  FinishPromote(PromoteOutcome::Refused(absl::AbortedError("this node's role changed meanwhile")));
}

void CoordinatedCampaign::taskFailed(kj::Exception&& e) {
  spdlog::warn("etcd campaign task failed: {}", e.getDescription().cStr());
}

void CoordinatedCampaign::Start() {
  listener_ = coordinator_.SetListener([this]() { Check(); });
  Check();
}

kj::Promise<replication::VoteReply> CoordinatedCampaign::Answer(replication::VoteRequest) {
  replication::VoteReply reply;
  reply.voter = node_.options().node_id;
  reply.epoch = follower_->HighestEpoch();
  reply.message = "etcd chooses this cluster's leader ([coordinator]): this node votes for no one";
  return reply;
}

void CoordinatedCampaign::Withdraw() {
  if (!published_.has_value()) return;
  published_.reset();
  coordinator_.Withdraw();
}

void CoordinatedCampaign::Check() {
  if (taking_) return;
  const std::string& self = node_.options().node_id;
  if (!coordinator_.leader_known()) {
    doing_ = "following the last leader known while etcd cannot be read";
    return;
  }
  const std::optional<replication::LeaderKey>& key = coordinator_.leader();
  if (key.has_value()) {
    vacant_since_us_ = 0;
    Withdraw();
    if (key->node.empty()) {
      doing_ = "the leader key holds what walship cannot read; nobody takes it over";
    } else if (key->node == self && key->lease == coordinator_.lease_id()) {
      // This node's own key, taken as leader (a handover that could not give it up): let go.
      doing_ = "giving up the leader key it held as leader";
      coordinator_.ReleaseInBackground(key->epoch);
    } else if (key->node == self) {
      doing_ = "the leader key names this node under an old lease: waiting for it to expire";
    } else {
      doing_ = absl::StrCat("following '", key->node, "', which holds the leader key");
      if (link_.leader_id() != key->node) follow_(key->node);
    }
    return;
  }
  const int64_t now = node_.PreciseNowUs();
  if (vacant_since_us_ == 0) {
    vacant_since_us_ = now;
    spdlog::warn("etcd: the leader key is gone (last held by '{}')",
                 coordinator_.last_holder());
  }
  replication::FollowerStatus fs = follower_->Status();
  replication::SequenceNumber latest = node_.engine().LatestSequence();
  replication::NodeState state = follower_->state();
  std::string why = replication::WhyNotStand(
      state, fs.phase == replication::FollowerPhase::kNeedsSnapshot, latest, fs.leader_latest,
      node_.options().max_failover_lag, /*forced=*/promoting_.get() != nullptr);
  if (!why.empty()) {
    doing_ = absl::StrCat("may not stand: ", why);
    Withdraw();
    return;
  }
  replication::LogPosition mine = replication::LogPositionOf(state, latest);
  if (!published_.has_value() || published_->seq != mine.seq ||
      published_->epoch != mine.epoch) {
    if (publishing_) return;
    publishing_ = true;
    tasks_.add(coordinator_.Publish(mine).then([this, mine](absl::Status s) {
      publishing_ = false;
      if (!s.ok()) {
        doing_ = absl::StrCat("cannot publish its candidacy: ", s.message());
        return;
      }
      published_ = mine;
      Check();
    }));
    return;
  }
  if (reading_) return;
  reading_ = true;
  tasks_.add(coordinator_.Candidacies().then(
      [this, mine](absl::StatusOr<std::vector<replication::Candidacy>> all) {
        reading_ = false;
        if (!all.ok()) {
          doing_ = absl::StrCat("cannot read the candidacies: ", all.status().message());
          return;
        }
        if (taking_ || vacant_since_us_ == 0 || coordinator_.leader().has_value()) return;
        // Its own candidacy missing (a withdrawal of an earlier vacancy that reached etcd
        // late): published again, or the others would wait for it.
        if (std::none_of(all->begin(), all->end(), [&](const replication::Candidacy& c) {
              return c.node == node_.options().node_id && c.position.seq == mine.seq &&
                     c.position.epoch == mine.epoch;
            })) {
          published_.reset();
          Check();
          return;
        }
        replication::CandidateTurn turn =
            replication::TurnToTake(options_, mine, *all, node_.membership(),
                                    coordinator_.last_holder(),
                                    vacant_since_us_, node_.PreciseNowUs());
        doing_ = turn.why;
        if (!turn.take) return;
        spdlog::info("etcd: taking the leader key: {}", turn.why);
        Take();
      }));
}

void CoordinatedCampaign::Take() {
  taking_ = true;
  doing_ = "taking the leader key";
  const std::string self = node_.options().node_id;
  auto failed = [this](const std::string& why) {
    spdlog::warn("etcd: this node does not lead: {}", why);
    taking_ = false;
    doing_ = why;
    node_.ReleaseHeld();  // hellos held while it stood are refused now
    FinishPromote(PromoteOutcome::Refused(
        absl::UnavailableError(absl::StrCat("'", node_.options().node_id, "' does not lead: ",
                                            why))));
  };
  tasks_.add(coordinator_.Take().then([this, self, failed](
                                          absl::StatusOr<replication::Epoch> taken)
                                          -> kj::Promise<void> {
    if (!taken.ok()) {
      failed(absl::StrCat("cannot take the leader key: ", taken.status().message()));
      return kj::READY_NOW;
    }
    replication::Epoch epoch = *taken;
    auto give_back = [this, epoch, failed](const std::string& why) {
      coordinator_.ReleaseInBackground(epoch);
      failed(why);
    };
    // The key's revision must be above every epoch this node has seen (a cluster that ran
    // with the vote may have passed etcd's revision): given back, and taken again later at a
    // higher revision.
    if (epoch <= follower_->HighestEpoch()) {
      give_back(absl::StrCat("etcd's revision ", epoch, " is not above epoch ",
                             follower_->HighestEpoch(), ", which this node has seen; the key "
                             "is given back and taken again at a later revision"));
      return kj::READY_NOW;
    }
    if (absl::Status vote = follower_->TakeVote(epoch, self); !vote.ok()) {
      give_back(std::string(vote.message()));
      return kj::READY_NOW;
    }
    return node_.node_pool()
        .Run([f = follower_, epoch, self]() { return f->SaveVote(epoch, self); })
        .catch_([](kj::Exception&& e) { return absl::UnavailableError(e.getDescription().cStr()); })
        .then([this, epoch, give_back](absl::Status saved) -> kj::Promise<void> {
          if (!saved.ok()) {
            give_back(absl::StrCat("cannot save its vote for itself: ", saved.message()));
            return kj::READY_NOW;
          }
          auto promoted = [this, epoch]() {
            coordinator_.Withdraw();
            FinishPromote(PromoteOutcome{absl::OkStatus(), node_.options().node_id, epoch,
                                         promote_loss_});
          };
          return BecomeLeader(node_, follower_, epoch, promoted)
              .then([give_back, epoch](absl::Status led) {
                if (!led.ok()) {
                  give_back(absl::StrCat("took epoch ", epoch, " but cannot lead: ",
                                         led.message()));
                }
              });
        });
  }));
}

kj::Promise<PromoteOutcome> CoordinatedCampaign::Promote(bool accept_loss) {
  if (promoting_.get() != nullptr || taking_) {
    return PromoteOutcome::Refused(absl::UnavailableError(
        "this node is taking the leader key already; ask again once it has"));
  }
  if (!coordinator_.leader_known()) {
    return PromoteOutcome::Refused(absl::UnavailableError(
        absl::StrCat("etcd cannot be read: ", coordinator_.error())));
  }
  if (const auto& key = coordinator_.leader(); key.has_value()) {
    return PromoteOutcome::Refused(absl::FailedPreconditionError(absl::StrCat(
        "'", key->node, "' holds the leader key (epoch ", key->epoch, "); etcd chooses this "
        "cluster's leader, so a promotion takes the key only once it is free; walship "
        "switchover moves leadership from a live leader")));
  }
  replication::FollowerStatus fs = follower_->Status();
  replication::SequenceNumber latest = node_.engine().LatestSequence();
  PromoteOutcome refused;
  refused.possible_loss = replication::PossibleLoss(latest, fs.leader_latest);
  std::string why = replication::WhyNotStand(
      follower_->state(), fs.phase == replication::FollowerPhase::kNeedsSnapshot, latest,
      fs.leader_latest, node_.options().max_failover_lag, /*forced=*/true);
  if (!why.empty()) {
    refused.status = absl::FailedPreconditionError(why);
    return refused;
  }
  if (refused.possible_loss > 0 && !accept_loss) {
    refused.status = absl::FailedPreconditionError(absl::StrCat(
        "promoting '", node_.options().node_id, "' may lose at least ", refused.possible_loss,
        " acknowledged writes: its log ends at seq ", latest, " and the last position it knew "
        "of its leader is seq ", fs.leader_latest, "; run again with --accept-loss to promote "
        "it anyway"));
    return refused;
  }
  auto paf = kj::newPromiseAndFulfiller<PromoteOutcome>();
  promoting_ = kj::mv(paf.fulfiller);
  promote_loss_ = refused.possible_loss;
  spdlog::warn("etcd: promoted by an operator: taking the leader key now");
  Take();
  return kj::mv(paf.promise);
}

void CoordinatedCampaign::FinishPromote(PromoteOutcome outcome) {
  if (promoting_.get() == nullptr) return;
  promoting_->fulfill(kj::mv(outcome));
  promoting_ = nullptr;
}

std::string CoordinatedCampaign::Describe() const {
  return absl::StrCat(coordinator_.Describe(), doing_.empty() ? "" : "; ", doing_);
}

}  // namespace walship::rpc
