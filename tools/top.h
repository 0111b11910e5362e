// walship top: a live view of a cluster, as redis-cli --stat and pg_top give one: every node's
// role, epoch and position, each follower's lag with a small bar, and the leader's write and
// ship rates, redrawn in place on a terminal (one block per refresh otherwise).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "rpc/client.h"

namespace walship::tools {

struct TopOptions {
  std::vector<std::pair<std::string, std::string>> nodes;  // id, address: the file's nodes
  rpc::ConnectOptions connect;
  uint32_t interval_ms = 1000;
  uint32_t iterations = 0;  // 0: until interrupted
  bool redraw = false;      // clear the screen before each view (a terminal)
  uint32_t timeout_ms = 1000;
};

// One view from the nodes' statuses (an absent entry: that node did not answer, with why),
// with rates from the previous view's, `secs` apart (0: no rates yet).
struct TopSample {
  std::map<std::string, rpc::NodeStatusInfo> status;
  std::map<std::string, std::string> errors;
};
std::string RenderTop(const std::vector<std::pair<std::string, std::string>>& nodes,
                      const TopSample& now, const TopSample* before, double secs);

// Runs until `iterations` views were shown (or forever); returns the exit status.
int RunTop(const TopOptions& options);

}  // namespace walship::tools
