// The walship command line's shared pieces: the exit codes, the target of a command (which
// node, with what options), its error reporting, and the admin commands that live in
// tools/admin_commands.cc (tools/walship.cc parses the command line and runs the rest).
#pragma once

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/reads.h"
#include "rpc/client.h"
#include "rpc/convert.h"
#include "tools/config.h"

namespace walship::cli {

inline constexpr int kExitNotFound = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitError = 3;
inline constexpr int kExitConditionFailed = 4;
inline constexpr int kExitNotReplicated = 5;
inline constexpr int kExitInDoubt = 6;
inline constexpr int kExitWriteLost = 7;
inline constexpr int kExitReplicasDiffer = 8;  // walship verify found a range that differs

struct Target {
  std::string cluster_path;
  std::string node;
  std::string endpoint;
  int timeout_ms = 3000;
  std::optional<walship::tools::ClusterConfig> config;
  std::string secret_path;              // --secret-file
  walship::rpc::TlsOptions tls_flags;    // --tls-ca, --tls-cert, --tls-key, --tls-server-name
  // The cluster secret and TLS: from the flags, else from the config.
  walship::rpc::ConnectOptions connect;
  walship::rpc::WriteOptions write;  // for writes
  std::string request_id;            // for writes: empty for none
  int retry_for_ms = 30000;          // a write with a request id asks again this long
  int leader_wait_ms = 5000;         // a write not applied asks again this long (--cluster)
  walship::rpc::ReadOptions read;    // for reads
  std::string session_path;          // --session: "" for none
  walship::replication::ReadToken session;  // as loaded from it
};

// Prints `s` on stderr and returns its exit code.
int Fail(const absl::Status& s);

// Takes the secret and TLS settings of `config` that no flag gave (--secret-file, --tls-ca).
void UseConfigSecurity(Target& t, const walship::tools::ClusterConfig& config);

// The endpoint to talk to: --endpoint, or --node / the leader from --cluster (loads the config
// into t.config, and its secret unless --secret-file gave one).
absl::StatusOr<std::string> Resolve(Target& t);

// A client of `endpoint` with the target's write and read options and session.
absl::StatusOr<std::unique_ptr<rpc::Client>> ConnectTo(const Target& t,
                                                      const std::string& endpoint);

// With --cluster, a node that is not the leader names the one it follows; the hints are
// followed up to kMaxHops times, never to an endpoint already asked (a node that restarted
// may still name the leader it followed before, which names the current one).
constexpr int kMaxHops = 3;

// With --cluster and neither --node nor --endpoint (talking to "the leader" of the file): the
// file's nodes other than `endpoint`, to ask when it cannot be reached; else none.
std::vector<std::string> OtherNodes(const Target& t, const std::string& endpoint);

template <typename Call>
auto FollowingHints(Target& t, const char* verb, Call call)
    -> decltype(call(std::declval<walship::rpc::Client&>())) {
  auto endpoint = Resolve(t);
  if (!endpoint.ok()) return endpoint.status();
  std::vector<std::string> asked = {*endpoint};
  // When the node the file names as leader cannot be reached (it failed, and another leads
  // now), the file's other nodes are asked in turn.
  std::vector<std::string> others = OtherNodes(t, *endpoint);
  for (int hop = 0;; ++hop) {
    auto client = ConnectTo(t, asked.back());
    if (!client.ok() && hop == 0 && !others.empty()) {
      for (const std::string& other : others) {
        std::fprintf(stderr, "walship: %s: %s; asking %s\n", asked.back().c_str(),
                     std::string(client.status().message()).c_str(), other.c_str());
        asked.push_back(other);  // the unreachable one stays asked: hints to it are not taken
        client = ConnectTo(t, other);
        if (client.ok()) break;
      }
    }
    if (!client.ok()) return client.status();
    auto r = call(**client);
    if (r.ok() || !walship::rpc::IsNotLeader(r.status()) || !t.config.has_value()) return r;
    std::string hint = walship::rpc::LeaderHint(r.status());
    if (hint.empty() || hop == kMaxHops ||
        std::find(asked.begin(), asked.end(), hint) != asked.end()) {
      return r;
    }
    std::fprintf(stderr, "walship: %s is not the leader; %s %s\n", asked.back().c_str(), verb,
                 hint.c_str());
    asked.push_back(hint);
  }
}

// The admin commands (docs/cli.md).
int DoCheckpoint(Target& t, const std::string& out);
int DoRollbackShow(const std::string& path, bool json);
int DoWalShow(Target& t, uint64_t from, uint32_t limit, bool json);
int DoVerify(Target& t, uint32_t hold_ms, uint32_t range_keys, bool json);
int DoHandover(Target& t, const std::string& target, uint32_t catch_up_ms);
int DoPromote(Target& t, const std::string& id, bool accept_loss);
int DoAddFollower(Target& t, const std::string& id, const std::string& address, int wait_s);
int DoRemoveFollower(Target& t, const std::string& id);

}  // namespace walship::cli
