#include "tools/membership.h"

#include <cstdio>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "replication/seeding.h"

namespace walship::tools {
namespace {

constexpr absl::Duration kPollInterval = absl::Milliseconds(250);
constexpr absl::Duration kLineInterval = absl::Seconds(2);

// What the new node says of itself, or why it does not answer.
std::string PhaseOf(const std::string& address, absl::Duration call_timeout,
                    const rpc::ConnectOptions& connect, rpc::NodeStatusInfo* st) {
  auto client = rpc::Client::Connect(address, call_timeout, connect);
  if (!client.ok()) return absl::StrCat("not answering at ", address, " (not started yet?)");
  auto s = (*client)->Status();
  if (!s.ok()) return absl::StrCat("no status from ", address, ": ", s.status().message());
  *st = *s;
  if (s->seed_total_bytes > 0 && absl::StartsWith(s->phase, "snapshot")) {
    replication::SeedProgress p;
    p.phase = replication::SeedProgress::Phase::kCopying;
    p.done_bytes = s->seed_done_bytes;
    p.total_bytes = s->seed_total_bytes;
    return absl::StrCat(ProgressBar(p), " (", s->phase, ")");
  }
  return s->phase.empty() ? s->role : s->phase;
}

}  // namespace

std::string DescribeMembers(const rpc::MembershipResult& m) {
  std::string out;
  for (const replication::Member& n : m.members) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", n.id, n.voter ? " voter" : " learner");
  }
  return absl::StrCat(out, " (version ", m.version, ")");
}

absl::StatusOr<rpc::MembershipResult> AddOrKeep(rpc::Client& leader, const std::string& id,
                                                const std::string& address) {
  auto st = leader.Status();
  if (!st.ok()) return st.status();
  for (const replication::Member& m : st->members) {
    if (m.id == id && m.address == address && st->role == "leader") {
      return rpc::MembershipResult{st->membership_version, st->members};
    }
  }
  return leader.ChangeMembership(replication::MembershipOp::kAddLearner, id, address);
}

absl::Status WaitUntilVoter(const std::string& leader_endpoint, const std::string& id,
                            const std::string& address, absl::Duration wait,
                            ProgressStyle style, absl::Duration call_timeout,
                            const rpc::ConnectOptions& connect) {
  const absl::Time deadline = absl::Now() + wait;
  absl::Time last_line = absl::InfinitePast();
  std::string phase = "not asked yet";
  for (;;) {
    auto leader = rpc::Client::Connect(leader_endpoint, call_timeout, connect);
    if (leader.ok()) {
      auto st = (*leader)->Status();
      if (st.ok()) {
        const replication::Member* me = nullptr;
        for (const replication::Member& m : st->members) {
          if (m.id == id) me = &m;
        }
        if (me == nullptr) {
          if (style == ProgressStyle::kTerminal) std::fprintf(stderr, "\n");
          return absl::FailedPreconditionError(absl::StrCat(
              "'", id, "' is no longer a member of the cluster (version ",
              st->membership_version, ")"));
        }
        if (me->voter) {
          if (style == ProgressStyle::kTerminal) std::fprintf(stderr, "\n");
          return absl::OkStatus();
        }
      }
    }
    rpc::NodeStatusInfo node;
    phase = PhaseOf(address, call_timeout, connect, &node);
    if (style == ProgressStyle::kTerminal) {
      std::fprintf(stderr, "\r%s: %-90s", id.c_str(), phase.c_str());
    } else if (style == ProgressStyle::kLines && absl::Now() - last_line >= kLineInterval) {
      std::fprintf(stderr, "%s: %s\n", id.c_str(), phase.c_str());
      last_line = absl::Now();
    }
    if (absl::Now() >= deadline) break;
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(kPollInterval));
  }
  if (style == ProgressStyle::kTerminal) std::fprintf(stderr, "\n");
  return absl::DeadlineExceededError(absl::StrCat(
      "'", id, "' does not vote yet after ", absl::FormatDuration(wait), " (", phase,
      "); it stays a learner until it is within ready_lag of the leader, and the leader "
      "promotes it then by itself"));
}

}  // namespace walship::tools
