#include "tools/config_tls.h"

#include <arpa/inet.h>

#include "absl/strings/str_cat.h"
#include "rpc/tls.h"

namespace walship::tools {
namespace {

namespace fs = std::filesystem;

// A path key: a non-empty string, resolved against `base` when relative.
absl::Status PathKey(const ConfigError& err, const toml::node& v, const std::string& key,
                     const fs::path& base, std::string& out) {
  if (!v.is_string() || v.value<std::string>()->empty()) {
    return err.At(v.source(), key, "must be a file path (a non-empty string)");
  }
  fs::path p(*v.value<std::string>());
  out = p.is_absolute() ? p.string() : (base / p).lexically_normal().string();
  return absl::OkStatus();
}

bool IsIpLiteral(const std::string& address) {
  std::string host = address.substr(0, address.rfind(':'));
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

absl::Status ReadTlsSection(const ConfigError& err, const toml::table& t, const fs::path& base,
                            ClusterConfig& config) {
  rpc::TlsOptions& tls = config.tls;
  rpc::TlsOptions& client = config.client_tls;
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    std::string full = absl::StrCat("tls.", key);
    absl::Status s;
    if (key == "ca_file") {
      s = PathKey(err, v, full, base, tls.ca_file);
    } else if (key == "cert_file") {
      s = PathKey(err, v, full, base, tls.cert_file);
    } else if (key == "key_file") {
      s = PathKey(err, v, full, base, tls.key_file);
    } else if (key == "client_cert_file") {
      s = PathKey(err, v, full, base, client.cert_file);
    } else if (key == "client_key_file") {
      s = PathKey(err, v, full, base, client.key_file);
    } else if (key == "server_name") {
      if (!v.is_string() || v.value<std::string>()->empty()) {
        return err.At(v.source(), full, "must be a DNS name (a non-empty string)");
      }
      tls.server_name = *v.value<std::string>();
      if (IsIpLiteral(tls.server_name + ":0")) {
        return err.At(v.source(), full,
                      "is an IP address; certificates are checked by DNS name: give the DNS "
                      "name the nodes' certificates carry");
      }
    } else if (key == "verify_clients") {
      if (!v.is_boolean()) return err.At(v.source(), full, "must be true or false");
      tls.verify_clients = *v.value<bool>();
    } else {
      return err.At(k.source(), full,
                    "unknown key (expected ca_file, cert_file, key_file, server_name, "
                    "verify_clients, client_cert_file or client_key_file)");
    }
    if (!s.ok()) return s;
  }
  if (tls.ca_file.empty()) return err.At(t.source(), "tls.ca_file", "missing");
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return err.At(t.source(), tls.cert_file.empty() ? "tls.cert_file" : "tls.key_file",
                  "missing (cert_file and key_file come together)");
  }
  if (client.cert_file.empty() != client.key_file.empty()) {
    return err.At(t.source(), client.cert_file.empty() ? "tls.client_cert_file"
                                                       : "tls.client_key_file",
                  "missing (client_cert_file and client_key_file come together)");
  }
  client.ca_file = tls.ca_file;
  client.server_name = tls.server_name;
  return absl::OkStatus();
}

absl::Status ReadNodeTls(const ConfigError& err, const toml::table& t, const std::string& prefix,
                         const fs::path& base, NodeConfig& n) {
  if (const toml::node* v = t.get("tls_cert_file")) {
    if (absl::Status s = PathKey(err, *v, prefix + ".tls_cert_file", base, n.tls_cert_file);
        !s.ok()) {
      return s;
    }
  }
  if (const toml::node* v = t.get("tls_key_file")) {
    if (absl::Status s = PathKey(err, *v, prefix + ".tls_key_file", base, n.tls_key_file);
        !s.ok()) {
      return s;
    }
  }
  if (n.tls_cert_file.empty() != n.tls_key_file.empty()) {
    return err.At(t.source(), prefix + (n.tls_cert_file.empty() ? ".tls_cert_file" : ".tls_key_file"),
                  "missing (tls_cert_file and tls_key_file come together)");
  }
  return absl::OkStatus();
}

absl::Status CheckTlsConfig(const ConfigError& err, const ClusterConfig& config) {
  for (const NodeConfig& n : config.nodes) {
    if (!n.tls_cert_file.empty() && !config.tls.on()) {
      return err.File(absl::StrCat("node ", n.id, " names a TLS certificate but there is no "
                                   "[tls] section (with the CA file that checks it)"));
    }
    if (!config.tls.on()) continue;
    if (n.tls_cert_file.empty() && config.tls.cert_file.empty()) {
      return err.File(absl::StrCat("node ", n.id, " has no TLS certificate: give [tls] "
                                   "cert_file and key_file, or the node's tls_cert_file and "
                                   "tls_key_file"));
    }
    if (config.tls.server_name.empty() && IsIpLiteral(n.advertise)) {
      return err.File(absl::StrCat(
          "tls.server_name is missing and node ", n.id, " is reached at the IP address ",
          n.advertise, "; certificates are checked by DNS name: set server_name to the DNS "
          "name every node's certificate carries"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckNodeTls(const ClusterConfig& config, const NodeConfig& node) {
  if (!config.tls.on()) return absl::OkStatus();
  if (config.tls.server_name.empty() && IsIpLiteral(node.advertise)) {
    // A node added at run time, which CheckTlsConfig did not see.
    return absl::InvalidArgumentError(absl::StrCat(
        "tls.server_name is missing and node ", node.id, " is reached at the IP address ",
        node.advertise, "; certificates are checked by DNS name: set server_name to the DNS "
        "name every node's certificate carries"));
  }
  rpc::TlsOptions o = config.tls;
  if (!node.tls_cert_file.empty()) {
    o.cert_file = node.tls_cert_file;
    o.key_file = node.tls_key_file;
  }
  return rpc::CheckTlsFiles(o, true, rpc::TlsUse::kNode);
}

}  // namespace walship::tools
