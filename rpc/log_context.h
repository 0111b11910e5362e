// What every log line of a node says besides its message: the role the node holds when the
// line is written (set by Node whenever its role changes, read by walshipd's log formatter on
// whichever thread logs).
#pragma once

#include <atomic>

namespace walship::rpc {

inline std::atomic<const char*>& LogRoleSlot() {
  static std::atomic<const char*> role{"starting"};
  return role;
}
// `role` must live for the process (roles' names are string literals).
inline void SetLogRole(const char* role) { LogRoleSlot().store(role, std::memory_order_relaxed); }
inline const char* LogRole() { return LogRoleSlot().load(std::memory_order_relaxed); }

}  // namespace walship::rpc
