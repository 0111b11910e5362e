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
  const bool known = !m.members.empty();
  const Candidacy* fittest = nullptr;
  size_t heard = 0;    // voters that published
  size_t covered = 0;  // of them, those whose log this node's is fitter than
  for (const Candidacy& c : others) {
    if (c.node == options.self) continue;
    // Learners and strangers do not count (anyone does while no membership is known).
    const Member* member = m.Find(c.node);
    if (known && (member == nullptr || !member->voter)) continue;
    ++heard;
    if (!Fitter(c.position, c.node, mine, options.self)) {
      ++covered;
    } else if (fittest == nullptr || Fitter(c.position, c.node, fittest->position,
                                            fittest->node)) {
      fittest = &c;
    }
  }
  // A majority of the voters, this node included, whose logs this node's covers: one of them
  // holds every write a majority acknowledged (as the vote's majority does), so this node
  // holds it too. With no membership known only the gathering time tells.
  const Member* me = m.Find(options.self);
  const size_t with_me = covered + (!known || (me != nullptr && me->voter) ? 1 : 0);
  const size_t majority = known ? m.Majority() : 1;
  const std::string short_of =
      absl::StrCat("; it covers ", with_me, " of the ", majority, " voters it needs");
  if (fittest != nullptr) {
    const std::string fitter = absl::StrCat("'", fittest->node, "', whose log (",
                                            Describe(fittest->position),
                                            ") is fitter than this node's (", Describe(mine),
                                            ")");
    if (waited_us < int64_t{options.wait_ms} * 1000) {
      turn.why = absl::StrCat("waiting for ", fitter);
    } else if (with_me < majority) {
      turn.why = absl::StrCat("waiting for ", fitter, ", or for more voters that it is "
                              "fitter than to publish", short_of);
    } else {
      turn.take = true;
      turn.why = absl::StrCat(fitter, " has not taken the key in ", options.wait_ms,
                              " ms; this node's log is the fittest of ", with_me,
                              " voters, a majority");
    }
    return turn;
  }
  // The voters that may still publish: every voter but this node and the last leader (with
  // no membership known, only the gathering time tells).
  size_t expected = known ? 0 : SIZE_MAX;
  if (known) {
    for (const std::string& v : m.VotersExcept(options.self)) {
      if (v != last_leader) ++expected;
    }
  }
  if (heard < expected && waited_us < int64_t{options.gather_ms} * 1000) {
    turn.why = absl::StrCat("gathering candidacies (", heard, " of ", expected,
                            " other voters so far)");
    return turn;
  }
  if (with_me < majority) {
    turn.why = absl::StrCat("too few voters have published their logs (", heard, " of ",
                            expected, " others)", short_of,
                            ": a voter that has not may hold acknowledged writes");
    return turn;
  }
  turn.take = true;
  turn.why = absl::StrCat("its log (", Describe(mine), ") is the fittest of ", heard + 1,
                          " candidates");
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
