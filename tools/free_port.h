// A TCP port on 127.0.0.1 that was free a moment ago, for tests and benchmarks that start
// nodes on loopback. (Another process may take it before it is used; callers that start a
// node on it see a clear "cannot listen" error then.) Never the same port twice in one process.
#pragma once

#include "absl/status/statusor.h"

namespace walship::tools {

absl::StatusOr<int> FreeLoopbackPort();

}  // namespace walship::tools
