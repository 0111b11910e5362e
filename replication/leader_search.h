// Where a client sends a write next, when it knows the cluster's members and looks for their
// leader, and when it gives up: the policy behind rpc::ClusterClient (and so `walship
// --cluster`), apart from the sockets and the clock.
//
// A write goes first to the node believed to lead (the last that took one, or named one; at
// first the first endpoint). Each answer decides the next step:
//   - taken (any answer that is the write's outcome: done, a condition that failed, not
//     replicated as asked): the search ends, and that node is believed to lead;
//   - refused and certainly not applied (the node does not lead; a leader that does not take
//     writes now, for want of its lease or room in its queue; the node could not be reached,
//     or the write could not be sent whole): the leader the refusal names is asked next,
//     unless this pass asked it already; else the next member not asked in this pass. When
//     every member of a pass was asked, the search pauses a tenth of the time it has waited
//     so far, 10 ms to 100 ms (a write is answered at most about a tenth, and never more than
//     100 ms, later than the cluster could answer it; a pass over live nodes costs a round
//     trip each), and starts a new pass, until `leader_wait_us` has passed. A failover
//     is such a wait: the followers name the dead leader until they elect another;
//   - in doubt (sent, and no answer came): it may have been applied, so without a request id
//     the search gives up at once; with one, sending it again is safe and it is treated as
//     refused, for up to `retry_for_us` in all.
// A client bound to one node (`follow_hints` false) gives up when that node does not lead.
// Members that could not be reached in the last pass are asked last in the next (a dead
// node over a network costs a connect time-out per try).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace walship::replication {

struct LeaderSearchOptions {
  int64_t leader_wait_us = 5'000'000;  // how long refusals are waited out (0: one pass)
  int64_t retry_for_us = 30'000'000;   // with a request id: how long, in all (at least the above)
  // false: a client told to talk to one node only: the leader a refusal names is not asked,
  // and a node that does not lead ends the search.
  bool follow_hints = true;
};

enum class Answer {
  kTaken,        // the write's outcome
  kNotLeader,    // not applied: the node does not lead (the hint names the leader, if known)
  kRefused,      // not applied: a leader not taking writes now (no lease, queue full)
  kUnreachable,  // not applied: the node could not be reached, or the write not sent whole
  kInDoubt,      // sent, and no answer: it may have been applied
};

struct SearchStep {
  enum class Kind { kAsk, kPause, kGiveUp, kDone };
  Kind kind = Kind::kGiveUp;
  std::string endpoint;  // kAsk: whom
  int64_t pause_us = 0;  // kPause: how long, then call Resume
};

class LeaderSearch {
 public:
  // `endpoints`: the members' client endpoints, in the order to ask them (not empty).
  LeaderSearch(std::vector<std::string> endpoints, LeaderSearchOptions options);

  // Starts a write's search at `now_us` (a monotonic clock): whom to ask first.
  // `has_request_id`: the write carries one, so an answer in doubt may be sent again.
  SearchStep Begin(int64_t now_us, bool has_request_id);
  // What `endpoint` (the one the last step named) answered; `hint` is the leader a refusal
  // named ("" for none).
  SearchStep OnAnswer(Answer answer, const std::string& hint, int64_t now_us);
  // After a kPause: the next pass's first step.
  SearchStep Resume(int64_t now_us);

  // The node believed to lead: the last that took a write, or that a refusal named.
  const std::string& leader() const { return leader_; }

 private:
  SearchStep Ask(const std::string& endpoint);
  SearchStep NextInPass(int64_t now_us);
  int64_t BudgetUs() const;

  const std::vector<std::string> endpoints_;
  const LeaderSearchOptions options_;
  std::string leader_;
  std::string asking_;
  int64_t started_us_ = 0;
  bool has_request_id_ = false;
  int hints_followed_ = 0;                 // in this pass
  std::set<std::string> asked_;            // in this pass
  std::set<std::string> unreachable_;      // in this pass
  std::set<std::string> was_unreachable_;  // in the last pass: asked last in this one
};

}  // namespace walship::replication
