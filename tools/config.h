// The cluster config file (TOML), documented key by key in docs/config.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rpc/node_server.h"

namespace walship::tools {

struct NodeConfig {
  std::string id;
  std::string listen;    // host:port
  std::string data_dir;  // absolute, or resolved against the config file's directory
  std::string role;      // "leader" or "follower"
  std::string http_listen;  // host:port for /metrics and the health endpoints; "" none
  // host:port the other nodes and clients dial: `advertise`, else `listen` (which may then
  // not be a wildcard such as 0.0.0.0).
  std::string advertise;
  // This node's TLS certificate and key ([[node]] tls_cert_file, tls_key_file); "": the
  // [tls] section's cert_file and key_file.
  std::string tls_cert_file;
  std::string tls_key_file;
};

struct ClusterConfig {
  std::string path;  // the file it was read from
  std::string name;
  // The cluster secret (cluster.secret, or the file cluster.secret_file names); "" for none.
  std::string secret;
  std::string secret_source;  // where it was read: the secret file's path, or this file
  std::vector<NodeConfig> nodes;
  // [tls]: TLS on every connection when tls.ca_file is set (docs/config.md); cert_file and
  // key_file are the nodes' unless a node names its own.
  rpc::TlsOptions tls;
  // What the walship tools present and check: the CA and server name of [tls], with
  // client_cert_file and client_key_file (for nodes that verify clients).
  rpc::TlsOptions client_tls;
  std::string log_format = "text";  // [log] format: "text" or "json" (walshipd's stderr)
  // Tunables from [replication]; defaults in rpc::NodeServerOptions.
  rpc::NodeServerOptions defaults;

  const NodeConfig* Find(const std::string& id) const;
  const NodeConfig* Leader() const;
};

// Reads and checks the whole file. Every error is one line naming the file, the line and the
// key: "cluster.toml:7: node[2].listen: duplicate listen address 127.0.0.1:7101 (also node n1)".
absl::StatusOr<ClusterConfig> LoadConfig(const std::string& path);

// Whether host:port `address` has a wildcard host (0.0.0.0, [::]): a node may listen there,
// but nobody can dial it.
bool IsWildcard(const std::string& address);

// The node walshipd runs: `id` as the file gives it, or, with `listen` and `data_dir`, a node
// that is not in the file (added at run time: a follower of the file's leader, its data dir
// resolved against the current directory). kInvalidArgument naming the file and what is
// wrong: an id not in the file without both flags, flags for a node of the file, an id or
// address the file would refuse, or an address or data dir a node of the file has.
absl::StatusOr<NodeConfig> NodeToRun(const ClusterConfig& config, const std::string& id,
                                     const std::string& listen, const std::string& data_dir);

// Whether host:port `listen` is a loopback address (127.0.0.0/8, ::1, localhost): a node
// listening anywhere else without a secret is open to whoever reaches it.
bool IsLoopback(const std::string& listen);

// `walship config check`: what walshipd would run from `config`, in text or as one JSON
// object, with a warning line for each node open beyond loopback without a secret.
std::string DescribeConfig(const ClusterConfig& config, bool json);

// Reads a cluster secret from `path`: one line, at least rpc::auth::kMinSecretBytes bytes,
// in a file only its owner may read. kInvalidArgument saying what is wrong.
absl::StatusOr<std::string> LoadSecretFile(const std::string& path);

// The TLS files node `node` uses (its own certificate, or the cluster's), checked as walshipd
// checks them at start: kInvalidArgument naming the file and what is wrong.
absl::Status CheckNodeTls(const ClusterConfig& config, const NodeConfig& node);

// The options walshipd runs node `node` with.
rpc::NodeServerOptions ServerOptionsFor(const ClusterConfig& config, const NodeConfig& node);

}  // namespace walship::tools
