// The TLS keys of the cluster config (docs/config.md): the [tls] section and a node's own
// certificate, read by tools/config.cc.
#pragma once

#include <filesystem>
#include <string>

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "tools/config.h"
#include "tools/config_error.h"

namespace walship::tools {

// Reads the [tls] table `t` into config.tls and config.client_tls, paths resolved against
// `base` (the config file's directory).
absl::Status ReadTlsSection(const ConfigError& err, const toml::table& t,
                            const std::filesystem::path& base, ClusterConfig& config);

// Reads tls_cert_file and tls_key_file of [[node]] table `t` (named `prefix`) into `n`.
absl::Status ReadNodeTls(const ConfigError& err, const toml::table& t, const std::string& prefix,
                         const std::filesystem::path& base, NodeConfig& n);

// Once every node is read: a node's certificate needs [tls]; with TLS, every node needs a
// certificate, and addresses given as IP literals need tls.server_name (certificates are
// checked by DNS name).
absl::Status CheckTlsConfig(const ConfigError& err, const ClusterConfig& config);

}  // namespace walship::tools
