// The CLI's text form of arbitrary bytes: printable ASCII stands for itself, and
// \\ \n \t \r \0 \xHH escape the rest (docs/cli.md).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace walship::tools {

// kInvalidArgument naming the position of a malformed escape.
absl::StatusOr<std::string> Unescape(const std::string& text);
std::string Escape(const std::string& bytes);

}  // namespace walship::tools
