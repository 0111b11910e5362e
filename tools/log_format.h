// walshipd's log lines on stderr: one line per event, with the time, the level, the node and
// the role it holds when the line is written, as text (default) or as one JSON object
// ([log] format = "json", docs/operations.md).
#pragma once

#include <spdlog/logger.h>

#include <string>

namespace walship::tools {

// `format` is "text" or "json"; `node` the node's id.
void UseLogFormat(spdlog::logger& logger, const std::string& node, const std::string& format);

}  // namespace walship::tools
