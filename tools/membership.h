// `walship add-follower` and `walship remove-follower`: membership changes at run time
// (docs/membership.md), and the wait, with its progress, until an added node votes.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rpc/client.h"
#include "tools/checkpoint.h"

namespace walship::tools {

// Asks `leader` to add node `id` (listening on `address`) as a learner. A node that is a
// member already with that address is not added again (the answer is the membership as it
// stands), so the command may be run again to wait for it.
absl::StatusOr<rpc::MembershipResult> AddOrKeep(rpc::Client& leader, const std::string& id,
                                                const std::string& address);

// Waits, at most `wait`, until node `id` votes: polls the leader's status (at
// `leader_endpoint`) and the node's own (at `address`), showing the node's phase
// ("snapshot: copying 43% ...", "catching up: lag N") as `style` says. kDeadlineExceeded
// naming the phase it is in when the wait ends first; kFailedPrecondition when it left the
// membership meanwhile.
absl::Status WaitUntilVoter(const std::string& leader_endpoint, const std::string& id,
                            const std::string& address, absl::Duration wait,
                            ProgressStyle style, absl::Duration call_timeout,
                            const rpc::ConnectOptions& connect);

// "n1 voter, n2 voter, n4 learner" (version 5).
std::string DescribeMembers(const rpc::MembershipResult& m);

}  // namespace walship::tools
