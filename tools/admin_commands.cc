// The admin commands of walship: checkpoints, rollback files, handover and promotion, and
// membership changes (docs/cli.md).
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "replication/rollback.h"
#include "replication/seeding.h"
#include "tools/checkpoint.h"
#include "tools/cli.h"
#include "tools/escape.h"
#include "tools/membership.h"
#include "tools/verify.h"
#include "tools/wal_show.h"

namespace walship::cli {

// Streams a checkpoint of the node into `out` (walship checkpoint).
int DoCheckpoint(Target& t, const std::string& out) {
  auto endpoint = Resolve(t);
  if (!endpoint.ok()) return Fail(endpoint.status());
  auto style = ::isatty(STDERR_FILENO) ? walship::tools::ProgressStyle::kTerminal
                                       : walship::tools::ProgressStyle::kLines;
  auto m = walship::tools::FetchCheckpointTo(*endpoint, t.config.has_value() ? t.config->name : "",
                                             t.connect, out, style);
  if (!m.ok()) return Fail(m.status());
  std::printf("OK checkpoint of %s at seq %llu: %s in %zu files, in %s\n", m->source.c_str(),
              static_cast<unsigned long long>(m->seq),
              walship::replication::HumanBytes(m->TotalBytes()).c_str(), m->files.size(),
              out.c_str());
  return 0;
}

// Prints a rollback file (replication/rollback.h) in the CLI's byte escapes.
int DoRollbackShow(const std::string& path, bool json) {
  auto rb = walship::replication::ReadRollbackFile(path);
  if (!rb.ok()) return Fail(rb.status());
  const auto& h = rb->header;
  if (json) {
    nlohmann::json missing = nlohmann::json::array();
    for (const auto& [first, last] : rb->missing) missing.push_back({first, last});
    nlohmann::json ops = nlohmann::json::array();
    for (const auto& r : rb->ops) {
      nlohmann::json op = walship::tools::OpToJson(r.op);
      op["seq"] = r.seq;
      op["epoch"] = r.epoch;
      ops.push_back(std::move(op));
    }
    nlohmann::json out = {{"node", h.node},
                          {"cluster", h.cluster},
                          {"database_id", h.database_id},
                          {"first", h.first},
                          {"last", h.last},
                          {"leader", h.leader},
                          {"leader_epoch", h.leader_epoch},
                          {"leader_latest", h.leader_latest},
                          {"written_unix_s", h.written_unix_s},
                          {"missing", missing},
                          {"ops", ops}};
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf(
      "node %s of cluster %s (database %s): seqs %llu-%llu are not in the history of "
      "leader %s (epoch %llu, log end %llu); written %s\n",
      h.node.c_str(), h.cluster.c_str(), h.database_id.c_str(),
      static_cast<unsigned long long>(h.first), static_cast<unsigned long long>(h.last),
      h.leader.c_str(), static_cast<unsigned long long>(h.leader_epoch),
      static_cast<unsigned long long>(h.leader_latest),
      absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixSeconds(h.written_unix_s),
                       absl::UTCTimeZone())
          .c_str());
  for (const auto& [first, last] : rb->missing) {
    std::printf("MISSING seqs %llu-%llu: the WAL no longer held them; those writes are lost\n",
                static_cast<unsigned long long>(first), static_cast<unsigned long long>(last));
  }
  for (const auto& r : rb->ops) {
    std::printf("seq %llu epoch %llu %s\n", static_cast<unsigned long long>(r.seq),
                static_cast<unsigned long long>(r.epoch), walship::tools::FormatOp(r.op).c_str());
  }
  std::printf("%zu ops\n", rb->ops.size());
  return 0;
}

// Prints the batches the node's WAL holds from `from` on (walship wal show): the leader of
// --cluster, or --node / --endpoint, each from its own WAL.
int DoWalShow(Target& t, uint64_t from, uint32_t limit, bool json) {
  auto endpoint = Resolve(t);
  if (!endpoint.ok()) return Fail(endpoint.status());
  auto client = ConnectTo(t, *endpoint);
  if (!client.ok()) return Fail(client.status());
  auto page = (*client)->ReadWal(from, limit);
  if (!page.ok()) {
    // A position the WAL cannot start at is bad input (exit 2), as the node says why.
    if (absl::IsOutOfRange(page.status())) {
      return Fail(absl::InvalidArgumentError(page.status().message()));
    }
    return Fail(page.status());
  }
  auto text = walship::tools::FormatWalPage(*page, from, json);
  if (!text.ok()) return Fail(text.status());
  std::fputs(text->c_str(), stdout);
  return 0;
}

// Compares the replicas at one sequence number (walship verify): exit 0 when every node was
// compared and all are identical, 8 when a range differs, 3 when a node could not be
// compared.
int DoVerify(Target& t, uint32_t hold_ms, uint32_t range_keys, bool json) {
  walship::tools::VerifyOptions o;
  o.hold_ms = hold_ms;
  o.range_keys = range_keys;
  o.timeout = absl::Milliseconds(t.timeout_ms);
  auto report = FollowingHints(t, "verifying at", [&](walship::rpc::Client& c) {
    o.connect = t.connect;  // with --cluster, the secret and TLS of the file Resolve read
    return walship::tools::Verify(c, o);
  });
  if (!report.ok()) return Fail(report.status());
  std::fputs(walship::tools::FormatVerify(*report, json).c_str(), stdout);
  if (report->differs) return kExitReplicasDiffer;
  return report->not_compared.empty() ? 0 : kExitError;
}

// Asks the leader to hand leadership to `target` (the config's leader may have handed over
// before, so hints are followed as for writes).
int DoHandover(Target& t, const std::string& target, uint32_t catch_up_ms) {
  auto r = FollowingHints(t, "asking", [&](walship::rpc::Client& c) {
    return c.Handover(target, absl::Milliseconds(catch_up_ms));
  });
  if (!r.ok()) return Fail(r.status());
  std::printf("OK %s leads, epoch %llu\n", r->leader.c_str(),
              static_cast<unsigned long long>(r->epoch));
  return 0;
}

// Asks node `id` of the cluster file (or --endpoint) to stand for leader now.
int DoPromote(Target& t, const std::string& id, bool accept_loss) {
  if (t.endpoint.empty()) t.node = id;
  auto endpoint = Resolve(t);
  if (!endpoint.ok()) return Fail(endpoint.status());
  auto client =
      walship::rpc::Client::Connect(*endpoint, absl::Milliseconds(t.timeout_ms), t.connect);
  if (!client.ok()) return Fail(client.status());
  auto r = (*client)->Promote(accept_loss);
  if (!r.ok()) return Fail(r.status());
  std::printf("OK %s leads, epoch %llu", r->leader.c_str(),
              static_cast<unsigned long long>(r->epoch));
  if (r->possible_loss > 0) {
    std::printf(
        "; at least %llu writes its old leader held were lost (the old leader keeps "
        "them in a rollback file when it returns)",
        static_cast<unsigned long long>(r->possible_loss));
  }
  std::printf("\n");
  return 0;
}

// Adds node `id` at `address` as a learner through the leader; with a wait, until it votes.
int DoAddFollower(Target& t, const std::string& id, const std::string& address, int wait_s) {
  std::string leader;
  auto r = FollowingHints(t, "asking", [&](walship::rpc::Client& c) {
    leader = c.endpoint();
    return walship::tools::AddOrKeep(c, id, address);
  });
  if (!r.ok()) return Fail(r.status());
  std::printf("OK %s is a member: %s\n", id.c_str(), walship::tools::DescribeMembers(*r).c_str());
  if (wait_s <= 0) return 0;
  auto style = ::isatty(STDERR_FILENO) ? walship::tools::ProgressStyle::kTerminal
                                       : walship::tools::ProgressStyle::kLines;
  absl::Status s = walship::tools::WaitUntilVoter(leader, id, address, absl::Seconds(wait_s), style,
                                                  absl::Milliseconds(t.timeout_ms), t.connect);
  if (!s.ok()) return Fail(s);
  std::printf("OK %s is ready and votes\n", id.c_str());
  return 0;
}

int DoRemoveFollower(Target& t, const std::string& id) {
  auto r = FollowingHints(t, "asking", [&](walship::rpc::Client& c) {
    return c.ChangeMembership(walship::replication::MembershipOp::kRemove, id, "");
  });
  if (!r.ok()) return Fail(r.status());
  std::printf("OK %s removed: %s\n", id.c_str(), walship::tools::DescribeMembers(*r).c_str());
  return 0;
}

}  // namespace walship::cli
