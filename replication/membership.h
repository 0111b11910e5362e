// Who belongs to the cluster: every node, the address it serves on, and whether it votes.
//
// The config file gives the first membership (version 1: every node of the file, all voting).
// After that it changes at run time, through the leader only and one node at a time: the
// leader saves the new membership in its node state, ships it to every follower with the next
// message (they save it before they acknowledge it), and takes no other change until a
// majority of the voters hold it. A node added is a learner (it neither counts for the
// synchronous modes nor in majorities) until the leader sees it ready (within ready_lag of
// its log); the leader then makes it a voter, which is a change of its own. Since every
// change adds or removes one voter at most, and the next waits for a majority of the voters
// to hold the last, any two majorities of consecutive memberships share a node: two different
// majorities can never decide at once (Raft's single-server changes).
//
// Thread safety: plain functions and values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace walship::replication {

struct Member {
  std::string id;
  std::string address;  // host:port it listens on ("" when not known: tests)
  bool voter = true;    // false: a learner
  bool operator==(const Member&) const = default;
};

struct Membership {
  // 0: none known (a node that never ran with one, or a simulation); changes count up.
  uint64_t version = 0;
  std::vector<Member> members;  // every node, the leader too; in id order

  const Member* Find(absl::string_view id) const;
  // The voting members other than `self`.
  std::vector<std::string> VotersExcept(absl::string_view self) const;
  // The voters that make a majority (of every voter, `self` included when it votes).
  size_t Majority() const;
  bool operator==(const Membership&) const = default;
};

enum class MembershipOp {
  kAddLearner,  // a node that is not a member yet joins as a learner
  kPromote,     // a learner becomes a voter
  kRemove,      // a member leaves (never the leader itself)
};

struct MembershipChange {
  MembershipOp op = MembershipOp::kAddLearner;
  std::string id;
  std::string address;  // kAddLearner only
};

// "add n4 (127.0.0.1:7104) as a learner", "make n4 a voter", "remove n3".
std::string Describe(const MembershipChange& c);
// "n1 voter 127.0.0.1:7101, n4 learner 127.0.0.1:7104".
std::string Describe(const Membership& m);

// A node id as the config file allows it: 1 to 64 letters, digits, '.', '_' or '-', and not
// "-" alone. kInvalidArgument naming what is wrong.
absl::Status CheckNodeId(absl::string_view id);

// An address a member listens on: host:port with a port in 1-65535, at most 255 bytes of
// printable ASCII. kInvalidArgument naming it.
absl::Status CheckAddress(absl::string_view address);

// Ids unique and well formed, addresses without spaces, in id order.
absl::Status ValidateMembership(const Membership& m);

// The membership after `c`, its version one higher, made by `leader` (who may not remove
// itself). kInvalidArgument naming the node when the change does not apply: a node added that
// is a member already (or whose address another member has), a node removed or promoted that
// is not a member, or is not a learner.
absl::StatusOr<Membership> ApplyChange(const Membership& m, const MembershipChange& c,
                                       absl::string_view leader);

// A membership of these nodes, all voting, at `version`.
Membership MembershipOf(std::vector<Member> members, uint64_t version);

}  // namespace walship::replication
