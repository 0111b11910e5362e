// The [coordinator] section of the cluster config (docs/config.md): leadership through etcd
// instead of the embedded vote.
#pragma once

#include <toml++/toml.h>

#include "absl/status/status.h"
#include "tools/config.h"
#include "tools/config_error.h"

namespace walship::tools {

// Reads the [coordinator] table `t` into config.defaults.coordinator (the prefix defaults to
// /walship/CLUSTER once the cluster's name is known) and turns failover on.
absl::Status ReadCoordinatorSection(const ConfigError& err, const toml::table& t,
                                    ClusterConfig& config);

}  // namespace walship::tools
