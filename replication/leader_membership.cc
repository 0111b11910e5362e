// The leader's side of membership changes (replication/membership.h): who may follow, who
// votes, when a change is held by enough voters for the next, and which learner is ready to
// vote.
#include <algorithm>

#include "absl/strings/str_join.h"
#include "replication/leader.h"
#include "replication/seeding.h"

namespace walship::replication {

bool Leader::IsMember(const std::string& id) const {
  return options_.members_only && id != options_.node_id &&
         state_.membership.Find(id) != nullptr;
}

bool Leader::IsVoter(const std::string& id) const {
  if (!options_.members_only) return true;
  const Member* m = state_.membership.Find(id);
  return m != nullptr && m->voter;
}

// Sent once per stream and change; and again with a heartbeat (sent only when nothing is in
// flight, so every earlier ack is in) while the follower still reports another version: its
// save failed.
bool Leader::MembershipDue(const Record& rec, bool heartbeat) const {
  if (!options_.members_only || state_.membership.version == 0) return false;
  return rec.membership_sent != state_.membership.version ||
         (heartbeat && rec.info.membership_acked != state_.membership.version);
}

bool Leader::HoldsMembership(const FollowerInfo& f) const {
  return !options_.members_only || state_.membership.version == 0 ||
         f.membership_acked == state_.membership.version;
}

void Leader::NoteMembership() {
  voter_ids_ = state_.membership.VotersExcept(options_.node_id);
  has_learners_ = false;
  for (const Member& m : state_.membership.members) has_learners_ |= !m.voter;
}

bool Leader::MembershipSettled() const { return MembershipWaitingFor().empty(); }

std::string Leader::MembershipWaitingFor() const {
  const Membership& m = state_.membership;
  if (!options_.members_only || m.version == 0) return "";
  size_t holding = IsVoter(options_.node_id) ? 1 : 0;
  std::vector<std::string> waiting;
  for (const std::string& id : voter_ids_) {
    auto it = followers_.find(id);
    if (it != followers_.end() && it->second.info.membership_acked == m.version) {
      ++holding;
    } else {
      waiting.push_back(id);
    }
  }
  return holding >= m.Majority() ? "" : absl::StrJoin(waiting, ", ");
}

void Leader::SetMembership(Membership next) {
  state_.membership = std::move(next);
  NoteMembership();
  if (!options_.members_only) return;
  std::erase_if(followers_, [&](const auto& entry) { return !IsMember(entry.first); });
}

std::optional<MembershipChange> Leader::DuePromotion() const {
  if (!options_.members_only || !has_learners_) return std::nullopt;
  for (const auto& [id, rec] : followers_) {
    const Member* m = state_.membership.Find(id);
    if (m != nullptr && !m->voter && rec.info.state == FollowerState::kConnected &&
        rec.info.membership_acked == state_.membership.version &&
        IsReady(rec.info.applied, latest_, options_.ready_lag)) {
      // Checked last: it walks the voters, and this runs on every pump.
      if (!MembershipSettled()) return std::nullopt;
      return MembershipChange{MembershipOp::kPromote, id, ""};
    }
  }
  return std::nullopt;
}

}  // namespace walship::replication
