// Changing roles at run time, and the handover of leadership to a named follower (the manual
// switchover; failover will automate it).
//
// A handover, as the leader sees it:
//   1. Asked to hand over to follower T, the leader accepts no more writes: writes not yet
//      written are refused with an error that names T (in-flight ones finish).
//   2. Once T has applied everything the leader wrote, the leader fsyncs its WAL, saves
//      "handing over to T" in its node state (StateForHandingOver: from then on it never
//      takes a write by itself) and asks T to take over, again and again until T answers,
//      across restarts too.
//   3. T checks that it follows this leader in this epoch and holds everything it wrote,
//      fsyncs its WAL, saves a new epoch above every epoch it has seen with itself as leader,
//      answers, and leads. A state it cannot save is no answer, never a refusal.
//   4. The leader saves "follower of T" (StateAfterHandover) and follows T. A clear refusal
//      from T (it was not caught up; it knows no newer epoch) makes the leader lead on, in a
//      new epoch; a refusal naming a newer epoch makes it follow T, whose refusals of its
//      hello name whoever leads.
// The other followers lose their stream; the old leader's refusal of their next hello names
// T, and they follow T from where they are, since T's WAL keeps the leader's batch
// boundaries.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "replication/leader.h"
#include "replication/messages.h"
#include "replication/node_state.h"

namespace walship::replication {

// The node state a node saves before it leads: a new epoch at latest + 1, named by `self`.
NodeState StateForLeading(NodeState state, SequenceNumber latest, const std::string& self);
// The node state a node saves before it follows `leader`.
NodeState StateForFollowing(NodeState state, const std::string& leader);
// The node state a leader saves before it asks `target` to take over.
NodeState StateForHandingOver(NodeState state, const std::string& target);
// The node state a leader saves once `reply` from `target` makes it step down
// (Handover::StepsDown): it follows `target`. When `target` took over, the epoch it began
// at request.latest + 1 is recorded as `target`'s, as the follower's first hello will find.
NodeState StateAfterHandover(NodeState state, const std::string& target,
                             const TakeOver& request, const TakeOverReply& reply);

// A follower's answer to a take-over request. `*take_over` is set when the follower must
// now take over: save StateForLeading(state, applied, self), lead, and answer with that
// epoch (reply.start_seq is its first sequence number). It may when it follows `request.from`
// in `request.epoch` and holds at least what that leader holds: exactly that after a handover,
// more when the leader lost the tail of its log (replication/recovery.h). A node that took over from this very request already (an answer was lost and
// the leader asks again) is answered as accepted again, with its epoch. A refusal carries
// the highest epoch the node has seen: a leader may lead on after a refusal only when no
// epoch above its own exists there.
TakeOverReply AnswerTakeOver(const NodeState& state, SequenceNumber applied,
                             const std::string& self, const TakeOver& request, bool* take_over);

// A node that stopped while handing over (its state says "handing over to T") cannot know
// whether T took over: it resumes the handover (Handover::Resumed) and asks T again, taking
// no writes, rather than lead beside T or follow a T that may be waiting for it.
bool ResumesHandover(const NodeState& state);

class Handover {
 public:
  // A take-over request with no answer (none came, or the call failed) is sent again after
  // this long.
  static constexpr int64_t kAskAgainUs = 500'000;

  enum class Phase {
    kCatchingUp,  // writes refused; waiting for the target to apply everything
    kAsked,       // TakeOver sent; waiting for its answer
  };

  Handover(std::string target, int64_t now_us, int64_t timeout_us);
  // A handover whose request may have reached the target already (ResumesHandover): asked.
  static Handover Resumed(std::string target, TakeOver request);

  const std::string& target() const { return target_; }
  Phase phase() const { return phase_; }
  // The error for a write refused while the handover runs.
  absl::Status WriteRefusal() const;

  // While catching up: the TakeOver to send (after saving StateForHandingOver) once the target
  // has applied everything and acknowledged the current membership, and no write is in
  // progress (`writes_idle`); else std::nullopt.
  // Once asked, the same request is sent again (request()) until an answer comes: a request
  // that may have been taken is never abandoned.
  std::optional<TakeOver> Poll(Leader& leader, bool writes_idle, int64_t now_us);
  const TakeOver& request() const { return request_; }

  // The target's answer: true when the leader steps down and follows the target (it took
  // over, or it has seen a newer epoch than ours, so someone else may lead); false when it
  // refused and knows no newer epoch (nothing changed there): the leader leads on.
  bool StepsDown(const TakeOverReply& reply) const;
  // The target never caught up in time: give up (writes are accepted again).
  bool TimedOut(int64_t now_us) const { return now_us >= deadline_us_; }
  int64_t deadline_us() const { return deadline_us_; }

 private:
  std::string target_;
  Phase phase_ = Phase::kCatchingUp;
  TakeOver request_;
  int64_t deadline_us_;
};

}  // namespace walship::replication
