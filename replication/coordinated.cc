#include "replication/coordinated.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace walship::replication {

namespace {

// Whether a log at `a` of node `a_id` is fitter than one at `b` of `b_id`: more up to date,
// or equal and of the lower id.
bool Fitter(const LogPosition& a, const std::string& a_id, const LogPosition& b,
            const std::string& b_id) {
  bool a_covers = AtLeastAsUpToDate(a, b);
  bool b_covers = AtLeastAsUpToDate(b, a);
  if (a_covers && !b_covers) return true;
  if (b_covers && !a_covers) return false;
  if (a_covers && b_covers) return a_id < b_id;  // equal logs
  // Neither covers the other (the same epoch number begun by two nodes, from states of
  // before elections): the later position, then the lower id.
  if (a.seq != b.seq) return a.seq > b.seq;
  return a_id < b_id;
}

}  // namespace

CandidateTurn TurnToTake(const CandidateOptions& options, const LogPosition& mine,
                         const std::vector<Candidacy>& others, const Membership& m,
                         const std::string& last_leader, int64_t vacant_since_us,
                         int64_t now_us) {
  CandidateTurn turn;
  const int64_t waited_us = now_us - vacant_since_us;
  const Candidacy* fittest = nullptr;
  size_t heard = 0;
  for (const Candidacy& c : others) {
    if (c.node == options.self) continue;
    // Learners and strangers do not count (anyone does while no membership is known).
    const Member* member = m.Find(c.node);
    if (!m.members.empty() && (member == nullptr || !member->voter)) continue;
    ++heard;
    if (Fitter(c.position, c.node, mine, options.self) &&
        (fittest == nullptr || Fitter(c.position, c.node, fittest->position, fittest->node))) {
      fittest = &c;
    }
  }
  if (fittest != nullptr) {
    if (waited_us >= int64_t{options.wait_ms} * 1000) {
      turn.take = true;
      turn.why = absl::StrCat("'", fittest->node, "' holds a fitter log (",
                              Describe(fittest->position), ") but has not taken the key in ",
                              options.wait_ms, " ms");
      return turn;
    }
    turn.why = absl::StrCat("waiting for '", fittest->node, "', whose log (",
                            Describe(fittest->position), ") is fitter than this node's (",
                            Describe(mine), ")");
    return turn;
  }
  // The voters that may still publish: every voter but this node and the last leader (with
  // no membership known, only the gathering time tells).
  size_t expected = m.members.empty() ? SIZE_MAX : 0;
  if (!m.members.empty()) for (const std::string& v : m.VotersExcept(options.self)) {
    if (v != last_leader) ++expected;
  }
  if (heard >= expected || waited_us >= int64_t{options.gather_ms} * 1000) {
    turn.take = true;
    turn.why = absl::StrCat("its log (", Describe(mine), ") is the fittest of ", heard + 1,
                            " candidates");
    return turn;
  }
  turn.why = absl::StrCat("gathering candidacies (", heard, " of ", expected,
                          " other voters so far)");
  return turn;
}

void CoordinatorLease::OnRenewed(int64_t sent_us, int64_t ttl_s) {
  if (ttl_s <= 0) {
    until_us_ = kNotHeld;
    return;
  }
  // A tenth kept back for clocks that run at different rates.
  until_us_ = std::max(until_us_, sent_us + ttl_s * 900'000);
}

}  // namespace walship::replication
