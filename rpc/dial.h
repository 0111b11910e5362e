// Opening a blocking TCP connection within a deadline, for the blocking client (rpc/client.cc).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace walship::rpc {

// Connects to "host:port" ("[v6]:port" too), trying each address the name resolves to until
// one answers or `deadline` passes. Returns a blocking socket with TCP_NODELAY set, which the
// caller closes. kInvalidArgument for an endpoint that is not host:port; kUnavailable with
// the last address's error otherwise.
absl::StatusOr<int> DialTcp(const std::string& endpoint, absl::Time deadline);

}  // namespace walship::rpc
