#include "rpc/dial.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/time/clock.h"

namespace walship::rpc {
namespace {

// A connected, blocking socket to `a`, or why not (the socket closed again).
absl::StatusOr<int> DialOne(const addrinfo& a, absl::Time deadline) {
  int fd = ::socket(a.ai_family, a.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a.ai_protocol);
  if (fd < 0) return absl::UnavailableError(std::strerror(errno));
  auto fail = [fd](const char* why) {
    ::close(fd);
    return absl::UnavailableError(why);
  };
  if (::connect(fd, a.ai_addr, a.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return fail(std::strerror(errno));
    while (true) {
      pollfd p{fd, POLLOUT, 0};
      int ms = static_cast<int>(
          std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
      int n = ::poll(&p, 1, ms);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) return fail("connect timed out");
      if (n < 0) return fail(std::strerror(errno));
      break;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(std::strerror(err));
  }
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

}  // namespace

absl::StatusOr<int> DialTcp(const std::string& endpoint, absl::Time deadline) {
  size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size()) {
    return absl::InvalidArgumentError("expected host:port");
  }
  std::string host = endpoint.substr(0, colon), port = endpoint.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int e = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); e != 0) {
    return absl::UnavailableError(::gai_strerror(e));
  }
  absl::StatusOr<int> fd = absl::UnavailableError("no address");
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = DialOne(*a, deadline);
    if (fd.ok()) break;
  }
  ::freeaddrinfo(found);
  if (!fd.ok()) return fd.status();
  int one = 1;
  ::setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace walship::rpc
