// `walship checkpoint`: a consistent checkpoint of a node, streamed into a directory on the
// machine where the CLI runs, as pg_basebackup does (docs/checkpoints.md).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "replication/seeding.h"
#include "rpc/client.h"

namespace walship::tools {

// How the transfer's progress is shown: redrawn in place on a terminal, a line every few
// seconds otherwise.
enum class ProgressStyle { kTerminal, kLines, kNone };

// Fetches a checkpoint of the node at `endpoint` into `out` (which must not hold a complete
// checkpoint; a transfer into it that was cut off resumes). `cluster` (may be empty: not
// checked) must be the node's cluster; `connect` gives the cluster secret and TLS settings.
// Returns the manifest.
absl::StatusOr<replication::SnapshotManifest> FetchCheckpointTo(const std::string& endpoint,
                                                                const std::string& cluster,
                                                                const rpc::ConnectOptions& connect,
                                                                const std::string& out,
                                                                ProgressStyle style);

// One progress line: "[#####.....] 43% 180 MiB of 420 MiB, 95 MiB/s".
std::string ProgressBar(const replication::SeedProgress& p);

}  // namespace walship::tools
