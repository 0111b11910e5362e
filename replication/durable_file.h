// Replaces a small file atomically and durably: written to PATH.tmp, fsynced, renamed over
// PATH, and the directory fsynced. Used for rollback files and to create or grow the
// node-state file (defined in node_state.cc).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace walship::replication {

// kUnavailable naming the file and the system's error when a step fails; PATH is then
// either as it was or wholly replaced.
absl::Status WriteFileDurably(const std::string& path, const std::string& text);

}  // namespace walship::replication
