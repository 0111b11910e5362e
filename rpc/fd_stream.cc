#include "rpc/fd_stream.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace walship::rpc {
namespace {

// The peer or the network went away: DISCONNECTED, which Cap'n Proto treats as a lost
// connection. Anything else (a bad descriptor, a bad buffer) is a bug: FAILED.
kj::Exception SocketError(const char* call, int error) {
  switch (error) {
    case ECONNRESET:
    case ECONNABORTED:
    case ECONNREFUSED:
    case EPIPE:
    case ETIMEDOUT:
    case ENOTCONN:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
      return KJ_EXCEPTION(DISCONNECTED, "socket", call, strerror(error));
    default:
      return KJ_EXCEPTION(FAILED, "socket", call, strerror(error));
  }
}

}  // namespace

kj::Own<kj::AsyncIoStream> FdStream::Wrap(kj::Own<kj::AsyncIoStream> stream,
                                          kj::AsyncIoContext& io) {
  int fd = -1;
  KJ_IF_MAYBE(f, stream->getFd()) { fd = *f; }
  if (fd < 0) return stream;
  // The duplicate shares the socket (and its non-blocking flag); dropping KJ's stream closes
  // only its own descriptor and takes its epoll registration with it.
  int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return stream;
  stream = nullptr;
  return kj::heap<FdStream>(own, io.unixEventPort, io.provider->getTimer());
}

FdStream::FdStream(int fd, kj::UnixEventPort& port, kj::Timer& timer)
    : fd_(fd),
      observer_(port, fd, kj::UnixEventPort::FdObserver::OBSERVE_READ_WRITE),
      timer_(timer) {}

kj::Promise<size_t> FdStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  return Read(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
}

kj::Promise<size_t> FdStream::Read(kj::byte* buffer, size_t min_bytes, size_t max_bytes,
                                   size_t done) {
  KJ_IF_MAYBE(readable, readable_) {
    kj::Promise<void> wait = kj::mv(*readable);
    readable_ = nullptr;
    return wait.then([this, buffer, min_bytes, max_bytes, done]() {
      return ReadNow(buffer, min_bytes, max_bytes, done);
    });
  }
  return ReadNow(buffer, min_bytes, max_bytes, done);
}

kj::Promise<size_t> FdStream::ReadNow(kj::byte* buffer, size_t min_bytes, size_t max_bytes,
                                      size_t done) {
  ssize_t n;
  do {
    ++read_calls_;
    n = ::read(fd_.get(), buffer, max_bytes);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return SocketError("read", errno);
    readable_ = observer_.whenBecomesReadable();
    return Read(buffer, min_bytes, max_bytes, done);
  }
  if (n == 0) return done;  // end of stream
  size_t got = static_cast<size_t>(n);
  bytes_read_ += got;
  // A short read took everything the socket held, so the next bytes raise a new readiness
  // edge: wait for it now, in this turn of the loop, before the loop polls and could let it
  // pass unobserved. Only when the observer knows the peer has not closed (then no edge
  // would come), and bounded in time (see the header).
  if (got < max_bytes) {
    bool open = false;
    KJ_IF_MAYBE(end, observer_.atEndHint()) { open = !*end; }
    if (open) {
      readable_ = observer_.whenBecomesReadable().exclusiveJoin(
          timer_.afterDelay(kReadinessRecheck));
    }
  }
  if (got >= min_bytes) return done + got;
  return Read(buffer + got, min_bytes - got, max_bytes - got, done + got);
}

kj::Promise<void> FdStream::write(const void* buffer, size_t size) {
  return WriteFrom(static_cast<const kj::byte*>(buffer), size);
}

kj::Promise<void> FdStream::WriteFrom(const kj::byte* buffer, size_t size) {
  while (size > 0) {
    // send() rather than write(): a peer that closed gives EPIPE, never SIGPIPE.
    ssize_t n = ::send(fd_.get(), buffer, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return SocketError("send", errno);
      return observer_.whenBecomesWritable().then(
          [this, buffer, size]() { return WriteFrom(buffer, size); });
    }
    buffer += n;
    size -= static_cast<size_t>(n);
  }
  return kj::READY_NOW;
}

kj::Promise<void> FdStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  // Not on a hot path here (BufferedStream writes one buffer): join the pieces and send.
  size_t total = 0;
  for (auto piece : pieces) total += piece.size();
  auto joined = kj::heapArray<kj::byte>(total);
  size_t at = 0;
  for (auto piece : pieces) {
    std::memcpy(joined.begin() + at, piece.begin(), piece.size());
    at += piece.size();
  }
  const kj::byte* start = joined.begin();
  return WriteFrom(start, total).attach(kj::mv(joined));
}

kj::Promise<void> FdStream::whenWriteDisconnected() {
  if (write_disconnected_ == nullptr) {
    write_disconnected_ = observer_.whenWriteDisconnected().fork();
  }
  KJ_IF_MAYBE(forked, write_disconnected_) { return forked->addBranch(); }
  KJ_UNREACHABLE;
}

void FdStream::shutdownWrite() {
  if (::shutdown(fd_.get(), SHUT_WR) != 0 && errno != ENOTCONN) {
    kj::throwFatalException(SocketError("shutdown", errno));
  }
}

void FdStream::abortRead() {
  if (::shutdown(fd_.get(), SHUT_RD) != 0 && errno != ENOTCONN) {
    kj::throwFatalException(SocketError("shutdown", errno));
  }
}

}  // namespace walship::rpc
