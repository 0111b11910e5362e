// walship config check: a config file as walshipd would read it, and what in it is open.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "replication/durability.h"
#include "tools/config.h"

namespace walship::tools {

bool IsLoopback(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host == "localhost" || host == "[::1]" || host == "::1") return true;
  in_addr a{};  // a literal 127.x.x.x only: a host name is not taken for loopback
  return ::inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

std::string DescribeConfig(const ClusterConfig& c, bool json) {
  const rpc::NodeServerOptions& d = c.defaults;
  std::vector<std::string> warnings;
  for (const NodeConfig& n : c.nodes) {
    for (const std::string& address : {n.listen, n.http_listen}) {
      if (address.empty() || IsLoopback(address)) continue;
      if (address == n.http_listen) {
        warnings.push_back(absl::StrCat("node ", n.id, " serves /metrics on ", address,
                                        ", beyond loopback and without authentication"));
      } else if (!c.tls.on()) {
        warnings.push_back(absl::StrCat("node ", n.id, " listens on ", address,
                                        " without TLS: its traffic can be read on the way"));
      }
      if (address != n.http_listen && c.secret.empty()) {
        warnings.push_back(absl::StrCat("node ", n.id, " listens on ", address,
                                        " without a cluster secret: whoever reaches it may "
                                        "read and write every key"));
      }
    }
  }
  for (const NodeConfig& n : c.nodes) {
    // A node's files may live on its own machine only: a warning here, walshipd's error there.
    if (absl::Status s = CheckNodeTls(c, n); !s.ok()) {
      warnings.push_back(absl::StrCat("node ", n.id, ": ", s.message()));
    }
  }
  std::string mode = replication::ModeName(d.commit.cluster.mode);
  std::string server_name = c.tls.server_name.empty() ? "the host dialled" : c.tls.server_name;
  if (json) {
    nlohmann::json out = {
        {"file", c.path},
        {"cluster", c.name},
        {"secret", c.secret.empty() ? "" : c.secret_source},
        {"tls", c.tls.on() ? nlohmann::json{{"ca_file", c.tls.ca_file},
                                            {"server_name", c.tls.server_name},
                                            {"verify_clients", c.tls.verify_clients}}
                           : nlohmann::json(nullptr)},
        {"replication", {{"mode", mode},
                         {"acks", d.commit.cluster.acks},
                         {"ack_level", replication::AckLevelName(d.commit.cluster.level)},
                         {"failover", d.failover},
                         {"heartbeat_interval_ms", d.heartbeat_interval_ms}}},
        {"nodes", nlohmann::json::array()},
        {"warnings", warnings}};
    for (const NodeConfig& n : c.nodes) {
      out["nodes"].push_back({{"id", n.id},
                              {"listen", n.listen},
                              {"advertise", n.advertise},
                              {"http_listen", n.http_listen},
                              {"data_dir", n.data_dir},
                              {"role", n.role}});
    }
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  std::string text = absl::StrCat("OK ", c.path, ": cluster ", c.name, ", ", c.nodes.size(),
                                  " node(s), replication ", mode);
  if (d.commit.cluster.mode == replication::ReplicationMode::kSemiSync) {
    absl::StrAppend(&text, " (", d.commit.cluster.acks, " of the followers)");
  }
  if (d.commit.cluster.mode != replication::ReplicationMode::kAsync) {
    absl::StrAppend(&text, ", ack level ", replication::AckLevelName(d.commit.cluster.level));
  }
  absl::StrAppend(&text, ", failover ", d.failover ? "on" : "off", "\n  secret: ",
                  c.secret.empty() ? "none" : absl::StrCat("from ", c.secret_source),
                  "\n  tls: ",
                  c.tls.on() ? absl::StrCat("CA ", c.tls.ca_file, ", server name ", server_name,
                                            c.tls.verify_clients ? ", clients verified" : "")
                             : "none",
                  "\n");
  for (const NodeConfig& n : c.nodes) {
    absl::StrAppend(&text, "  ", n.id, " (", n.role, ") ", n.listen,
                    n.advertise == n.listen ? "" : absl::StrCat(" (dialled at ", n.advertise, ")"),
                    n.http_listen.empty() ? "" : absl::StrCat(", http ", n.http_listen), ", ",
                    n.data_dir, "\n");
  }
  for (const std::string& w : warnings) absl::StrAppend(&text, "  WARNING: ", w, "\n");
  return text;
}

}  // namespace walship::tools
