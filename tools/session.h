// The CLI's session file (walship --session FILE): the latest position (replication/reads.h)
// a command of the session wrote or read, so that the next command's reads, at any node, see
// it (read-your-writes and monotonic reads across commands).
//
// The file is one line, "walship-position 1 EPOCH:SEQ\n", replaced atomically (a temporary
// file renamed over it), so a command that dies midway leaves the last position whole; FILE.lock
// serialises the commands of one session that end together.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "replication/reads.h"

namespace walship::tools {

// The position saved in `path`; {0, 0} when the file does not exist yet. kInvalidArgument,
// naming the file and what is wrong, when it is not a session file.
absl::StatusOr<replication::ReadToken> LoadSession(const std::string& path);

// Saves the later of what `path` holds and `at` (two commands of one session may end in
// either order). kUnavailable naming the file when it cannot be written.
absl::Status SaveSession(const std::string& path, const replication::ReadToken& at);

}  // namespace walship::tools
