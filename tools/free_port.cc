#include "tools/free_port.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"

namespace walship::tools {

namespace {

absl::StatusOr<int> AnyFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) return absl::UnavailableError(absl::StrCat("bind 127.0.0.1:0: ", std::strerror(err)));
  return ntohs(a.sin_port);
}

}  // namespace

// A port is handed out once per process: a node started on the last one may not have bound
// it yet (it listens on a thread of its own), and the kernel hands a freed port out again.
absl::StatusOr<int> FreeLoopbackPort() {
  static std::mutex mu;
  static std::set<int> given;
  for (int attempt = 0; attempt < 100; ++attempt) {
    absl::StatusOr<int> port = AnyFreePort();
    if (!port.ok()) return port;
    std::lock_guard<std::mutex> lock(mu);
    if (given.insert(*port).second) return port;
  }
  return absl::UnavailableError("no loopback port free that this process has not handed out");
}

}  // namespace walship::tools
