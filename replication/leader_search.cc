#include "replication/leader_search.h"

#include <algorithm>
#include <utility>

namespace walship::replication {

namespace {

constexpr int64_t kMinPauseUs = 10'000;
constexpr int64_t kMaxPauseUs = 100'000;
// Leaders named and followed in one pass, at most: a node that restarted may name the leader
// it followed before, which names the current one.
constexpr int kMaxHintsPerPass = 3;

}  // namespace

LeaderSearch::LeaderSearch(std::vector<std::string> endpoints, LeaderSearchOptions options)
    : endpoints_(std::move(endpoints)), options_(options) {
  if (!endpoints_.empty()) leader_ = endpoints_.front();
}

SearchStep LeaderSearch::Begin(int64_t now_us, bool has_request_id) {
  started_us_ = now_us;
  has_request_id_ = has_request_id;
  was_unreachable_.clear();
  asked_.clear();
  unreachable_.clear();
  hints_followed_ = 0;
  return Ask(leader_);
}

SearchStep LeaderSearch::Resume(int64_t now_us) {
  was_unreachable_ = std::move(unreachable_);
  asked_.clear();
  unreachable_.clear();
  hints_followed_ = 0;
  // The believed leader first, unless it could not be reached in the last pass.
  if (!leader_.empty() && was_unreachable_.count(leader_) == 0) return Ask(leader_);
  return NextInPass(now_us);
}

SearchStep LeaderSearch::OnAnswer(Answer answer, const std::string& hint, int64_t now_us) {
  if (answer == Answer::kTaken) {
    leader_ = asking_;
    return {SearchStep::Kind::kDone, asking_, 0};
  }
  if ((answer == Answer::kInDoubt && !has_request_id_) ||
      (answer == Answer::kNotLeader && !options_.follow_hints)) {
    return {SearchStep::Kind::kGiveUp, "", 0};
  }
  if (answer == Answer::kUnreachable) unreachable_.insert(asking_);
  // A leader named that could not be reached in the last pass is asked last, as a member.
  if (options_.follow_hints && !hint.empty() && asked_.count(hint) == 0 &&
      was_unreachable_.count(hint) == 0 && hints_followed_ < kMaxHintsPerPass) {
    ++hints_followed_;
    leader_ = hint;
    return Ask(hint);
  }
  return NextInPass(now_us);
}

SearchStep LeaderSearch::NextInPass(int64_t now_us) {
  // Members not asked in this pass: those reached in the last pass first.
  for (bool late : {false, true}) {
    for (const std::string& e : endpoints_) {
      if (asked_.count(e) == 0 && (was_unreachable_.count(e) > 0) == late) return Ask(e);
    }
  }
  // Every member asked: a pause, then another pass, while the budget lasts.
  int64_t waited = now_us - started_us_;
  int64_t pause = std::clamp(waited / 10, kMinPauseUs, kMaxPauseUs);
  if (waited + pause > BudgetUs()) return {SearchStep::Kind::kGiveUp, "", 0};
  return {SearchStep::Kind::kPause, "", pause};
}

SearchStep LeaderSearch::Ask(const std::string& endpoint) {
  asking_ = endpoint;
  asked_.insert(endpoint);
  return {SearchStep::Kind::kAsk, endpoint, 0};
}

int64_t LeaderSearch::BudgetUs() const {
  return has_request_id_ ? std::max(options_.retry_for_us, options_.leader_wait_us)
                         : options_.leader_wait_us;
}

}  // namespace walship::replication
