// A socket stream that does not ask the kernel for bytes it knows are not there yet.
//
// KJ's own socket stream (kj 0.9) answers every read by calling read() first and waiting for
// readability only after read() failed with EAGAIN. A connection that carries one message at
// a time (a request, then its reply) therefore makes two read() calls per message, one of them
// for nothing: strace of a leader at one write per round trip counted 1.9 failed reads per
// write, a fifth of all its system calls. FdStream remembers when a read came back short (the
// socket's buffer was drained then) and waits for the socket to become readable before the
// next read() -- the rule KJ's FdObserver documents for edge-triggered readiness.
//
// A short read only nearly proves the socket empty: TCP also stops a read at an urgent mark
// (a peer's MSG_OOB), and a signal arriving during a non-blocking read can cut it short with
// data left behind (kernel bug 199131, the reason KJ's own stream gave the rule up). So that
// such a read can never stall a connection, the wait after a short read is bounded: after
// kReadinessRecheck the stream calls read() anyway (a failed read then proves the socket
// empty, and the wait after it is not bounded). Only a connection idle for longer pays that
// one extra wake-up.
//
// Thread safety: like every KJ object, it belongs to the event loop that created it.
#pragma once

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/io.h>

namespace walship::rpc {

class FdStream final : public kj::AsyncIoStream {
 public:
  static constexpr auto kReadinessRecheck = 50 * kj::MILLISECONDS;

  // Takes over the socket of `stream` (KJ's own, from connect() or accept()). Streams
  // without a file descriptor (in-memory pipes) are returned unchanged.
  static kj::Own<kj::AsyncIoStream> Wrap(kj::Own<kj::AsyncIoStream> stream,
                                         kj::AsyncIoContext& io);

  // Owns `fd`, a connected non-blocking socket.
  FdStream(int fd, kj::UnixEventPort& port, kj::Timer& timer);

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  void shutdownWrite() override;
  void abortRead() override;
  kj::Maybe<int> getFd() const override { return fd_.get(); }

  // read() system calls made so far, failed ones included (tests check that none is wasted).
  uint64_t read_calls() const { return read_calls_; }
  // Bytes read so far: a peer that is sending a large message shows progress before the
  // message is whole.
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  kj::Promise<size_t> Read(kj::byte* buffer, size_t min_bytes, size_t max_bytes, size_t done);
  kj::Promise<size_t> ReadNow(kj::byte* buffer, size_t min_bytes, size_t max_bytes,
                              size_t done);
  kj::Promise<void> WriteFrom(const kj::byte* buffer, size_t size);

  kj::AutoCloseFd fd_;  // closed after the observer has left epoll
  kj::UnixEventPort::FdObserver observer_;
  kj::Timer& timer_;
  // Set while the socket is believed drained: resolves once bytes (or the end) arrive.
  kj::Maybe<kj::Promise<void>> readable_;
  // The observer keeps one waiter for this; every caller gets a branch.
  kj::Maybe<kj::ForkedPromise<void>> write_disconnected_;
  uint64_t read_calls_ = 0;
  uint64_t bytes_read_ = 0;
};

}  // namespace walship::rpc
