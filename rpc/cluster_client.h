// A blocking client of a whole cluster: writes go to its leader, which it finds by asking the
// members it knows and following the leader their refusals name, and a failover under way is
// waited out (replication/leader_search.h says when it asks whom, and when it gives up). It
// keeps a connection (an rpc::Client) to each member it reached, so the writes after the first
// go straight to the leader. `walship --cluster` writes through it.
//
// What is sent again, and what never is: a write refused (by a follower, IsNotLeader; by a
// leader without its lease or room in its queue, IsNotWritten) or never sent (no member
// reached, IsNotSent) was not applied, and is sent again; a write whose answer never came is
// in doubt (IsInDoubt), and one that failed otherwise (`unavailable` from the storage engine)
// may be in the leader's WAL: neither is sent again unless it carries a request id
// (WriteWithId), which makes sending it again safe. A kept connection the member closed (it
// stopped or restarted) is seen closed before a write goes on it (rpc::Client).
//
// Thread safety: none, as rpc::Client.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "replication/leader_search.h"
#include "rpc/client.h"

namespace walship::rpc {

struct ClusterClientOptions {
  absl::Duration timeout = absl::Seconds(3);  // connecting to a member, and each call
  ConnectOptions connect;
  absl::Duration leader_wait = absl::Seconds(5);  // refusals are waited out this long
  absl::Duration retry_for = absl::Seconds(30);   // with a request id, in all
  bool follow_hints = true;  // false: only the endpoints given are asked
  // Connects to a member (default: Client::Connect with `timeout` and `connect`); the place to
  // set a client's write and read options.
  std::function<absl::StatusOr<std::unique_ptr<Client>>(const std::string& endpoint)> connect_fn;
  // Told, as a line, of each refusal and what the client does next (the CLI prints them).
  std::function<void(const std::string& line)> on_refusal;
};

class ClusterClient {
 public:
  // `endpoints`: the members' client endpoints, the one believed to lead first (not empty).
  ClusterClient(std::vector<std::string> endpoints, ClusterClientOptions options);
  ~ClusterClient();

  // As Client::Write and Client::WriteWithId, at the leader. Errors: the leader's answer (a
  // condition that failed, not replicated as asked), an in-doubt error, or, when no member
  // took the write within the wait, the last refusal.
  absl::StatusOr<WriteResult> Write(const std::vector<engine::WriteOp>& ops);
  absl::StatusOr<WriteResult> WriteWithId(const std::vector<engine::WriteOp>& ops,
                                          const std::string& request_id);

  // The member believed to lead: the last that took a write, or that a refusal named.
  const std::string& leader() const { return search_.leader(); }

 private:
  absl::StatusOr<WriteResult> Send(const std::vector<engine::WriteOp>& ops,
                                   const std::string& request_id);
  // The connection to `endpoint`, kept from an earlier call or opened now.
  absl::StatusOr<Client*> ClientOf(const std::string& endpoint);
  void Tell(const std::string& line) const;

  ClusterClientOptions options_;
  replication::LeaderSearch search_;
  std::map<std::string, std::unique_ptr<Client>> clients_;
};

}  // namespace walship::rpc
