#include "rpc/cluster_client.h"

#include <chrono>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rpc/convert.h"

namespace walship::rpc {

namespace {

using replication::Answer;
using replication::SearchStep;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

replication::LeaderSearchOptions SearchOptions(const ClusterClientOptions& o) {
  replication::LeaderSearchOptions s;
  s.leader_wait_us = absl::ToInt64Microseconds(o.leader_wait);
  s.retry_for_us = absl::ToInt64Microseconds(o.retry_for);
  s.follow_hints = o.follow_hints;
  return s;
}

// How an answer counts for the search, or nullopt when it is the write's outcome: done, or an
// error to return (a condition that failed, not replicated, a bad request, a secret not
// shared).
std::optional<Answer> Classify(const absl::Status& s, bool has_request_id) {
  if (s.ok()) return std::nullopt;
  if (IsInDoubt(s)) return Answer::kInDoubt;
  if (IsNotSent(s)) return Answer::kUnreachable;
  if (IsNotLeader(s)) return Answer::kNotLeader;
  // A leader's refusal before writing anything (no lease, stepping down or handing over, a
  // full queue). Any other `unavailable` may be a storage failure during the write, which may
  // be in the WAL: sent again only with a request id.
  if (IsNotWritten(s)) return Answer::kRefused;
  if (absl::IsUnavailable(s) && has_request_id) return Answer::kRefused;
  return std::nullopt;
}

}  // namespace

ClusterClient::ClusterClient(std::vector<std::string> endpoints, ClusterClientOptions options)
    : options_(std::move(options)), search_(std::move(endpoints), SearchOptions(options_)) {
  if (!options_.connect_fn) {
    options_.connect_fn = [timeout = options_.timeout,
                           connect = options_.connect](const std::string& endpoint) {
      return Client::Connect(endpoint, timeout, connect);
    };
  }
}

ClusterClient::~ClusterClient() = default;

absl::StatusOr<WriteResult> ClusterClient::Write(const std::vector<engine::WriteOp>& ops) {
  return Send(ops, "");
}

absl::StatusOr<WriteResult> ClusterClient::WriteWithId(const std::vector<engine::WriteOp>& ops,
                                                       const std::string& request_id) {
  return Send(ops, request_id);
}

absl::StatusOr<Client*> ClusterClient::ClientOf(const std::string& endpoint) {
  auto it = clients_.find(endpoint);
  if (it != clients_.end()) return it->second.get();
  absl::StatusOr<std::unique_ptr<Client>> c = options_.connect_fn(endpoint);
  if (!c.ok()) return c.status();
  return (clients_[endpoint] = std::move(*c)).get();
}

void ClusterClient::Tell(const std::string& line) const {
  if (options_.on_refusal) options_.on_refusal(line);
}

absl::StatusOr<WriteResult> ClusterClient::Send(const std::vector<engine::WriteOp>& ops,
                                                const std::string& request_id) {
  const int64_t start = NowUs();
  SearchStep step = search_.Begin(start, !request_id.empty());
  absl::Status last = absl::UnavailableError("no member was asked");
  // Given up, the error returned is an answer in doubt, if one came (the write may have been
  // applied), else the last refusal of a member reached, which says more (`not the leader`,
  // naming it) than the dead leader's `cannot reach`.
  std::optional<absl::Status> in_doubt, last_reached;
  while (true) {
    if (step.kind == SearchStep::Kind::kGiveUp) {
      return in_doubt.value_or(last_reached.value_or(last));
    }
    if (step.kind == SearchStep::Kind::kPause) {
      Tell(absl::StrCat(last.message(), "; asking again in ", step.pause_us / 1000, " ms",
                        request_id.empty() ? "" : " with the same request id", " (",
                        (NowUs() - start) / 1000, " ms so far)"));
      std::this_thread::sleep_for(std::chrono::microseconds(step.pause_us));
      step = search_.Resume(NowUs());
      continue;
    }
    const std::string endpoint = step.endpoint;
    absl::StatusOr<Client*> client = ClientOf(endpoint);
    if (!client.ok()) {
      // Not reached: nothing was sent. Any other failure to connect (a secret not shared, a
      // certificate refused) is no refusal: it is returned.
      if (!absl::IsUnavailable(client.status())) return client.status();
      last = client.status();
      step = search_.OnAnswer(Answer::kUnreachable, "", NowUs());
      if (step.kind == SearchStep::Kind::kAsk) {
        Tell(absl::StrCat(endpoint, ": ", last.message(), "; asking ", step.endpoint));
      }
      continue;
    }
    absl::StatusOr<WriteResult> r =
        request_id.empty() ? (*client)->Write(ops) : (*client)->WriteWithId(ops, request_id);
    std::optional<Answer> answer = Classify(r.status(), !request_id.empty());
    if (!answer.has_value()) {
      search_.OnAnswer(Answer::kTaken, "", NowUs());
      return r;
    }
    last = r.status();
    if (*answer == Answer::kInDoubt) {
      in_doubt = last;
    } else if (*answer != Answer::kUnreachable) {
      last_reached = last;
    }
    const std::string hint = LeaderHint(last);
    step = search_.OnAnswer(*answer, hint, NowUs());
    if (step.kind == SearchStep::Kind::kAsk) {
      Tell(step.endpoint == hint && IsNotLeader(last)
               ? absl::StrCat(endpoint, " is not the leader; retrying at ", hint)
               : absl::StrCat(endpoint, ": ", last.message(), "; asking ", step.endpoint));
    }
  }
}

}  // namespace walship::rpc
