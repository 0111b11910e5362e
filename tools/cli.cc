#include "tools/cli.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "rpc/tls.h"

namespace walship::cli {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "walship: %s\n", std::string(s.message()).c_str());
  if (absl::IsNotFound(s)) return kExitNotFound;
  if (absl::IsInvalidArgument(s)) return kExitUsage;
  if (walship::rpc::IsConditionFailed(s)) return kExitConditionFailed;
  if (walship::rpc::IsNotReplicated(s)) return kExitNotReplicated;
  if (walship::rpc::IsInDoubt(s)) return kExitInDoubt;
  if (walship::rpc::IsWriteLost(s)) return kExitWriteLost;
  return kExitError;
}

void UseConfigSecurity(Target& t, const walship::tools::ClusterConfig& config) {
  if (t.secret_path.empty()) t.connect.secret = config.secret;
  if (!t.tls_flags.on()) t.connect.tls = config.client_tls;
}

// The endpoint to talk to: --endpoint, or --node / the leader from --cluster.
absl::StatusOr<std::string> Resolve(Target& t) {
  if (!t.endpoint.empty()) return t.endpoint;
  if (t.cluster_path.empty()) {
    return absl::InvalidArgumentError("give --cluster FILE or --endpoint HOST:PORT");
  }
  auto config = walship::tools::LoadConfig(t.cluster_path);
  if (!config.ok()) return config.status();
  t.config = *config;
  UseConfigSecurity(t, *t.config);
  if (t.connect.tls.on() && !t.tls_flags.on()) {
    if (absl::Status s = walship::rpc::CheckTlsFiles(t.connect.tls, false, walship::rpc::TlsUse::kClient); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(t.cluster_path, ": ", s.message()));
    }
  }
  const walship::tools::NodeConfig* n =
      t.node.empty() ? t.config->Leader() : t.config->Find(t.node);
  if (n != nullptr) return n->advertise;
  // A node added at run time: the nodes of the file know its address.
  for (const auto& known : t.config->nodes) {
    auto client = walship::rpc::Client::Connect(known.advertise, absl::Milliseconds(t.timeout_ms),
                                                t.connect);
    if (!client.ok()) continue;
    auto st = (*client)->Status();
    if (!st.ok()) continue;
    for (const auto& m : st->members) {
      if (m.id == t.node && !m.address.empty()) return m.address;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--node '", t.node, "' is neither in ", t.cluster_path,
                   " nor a member any node of it knows (walship add-follower adds one)"));
}

std::vector<std::string> OtherNodes(const Target& t, const std::string& endpoint) {
  std::vector<std::string> others;
  if (!t.node.empty() || !t.endpoint.empty() || !t.config.has_value()) return others;
  for (const auto& n : t.config->nodes) {
    if (n.advertise != endpoint) others.push_back(n.advertise);
  }
  return others;
}

absl::StatusOr<std::unique_ptr<walship::rpc::Client>> ConnectTo(const Target& t,
                                                                const std::string& endpoint) {
  auto client =
      walship::rpc::Client::Connect(endpoint, absl::Milliseconds(t.timeout_ms), t.connect);
  if (client.ok()) {
    walship::rpc::WriteOptions write = t.write;
    // A write (or committed read) may wait for the followers up to the cluster's sync
    // timeout: the node's verdict comes before the client gives up.
    if (t.config.has_value()) {
      write.wait = absl::Milliseconds(t.config->defaults.commit.timeout_ms);
    }
    (*client)->SetWriteOptions(write);
    (*client)->SetReadOptions(t.read);
    if (!t.session_path.empty()) (*client)->UseSession(t.session);
  }
  return client;
}

}  // namespace walship::cli
