// A stream wrapper that batches socket I/O for Cap'n Proto connections.
//
// Cap'n Proto 0.9 reads each message with two or three read() calls (segment table, then
// segments) and writes each message with its own writev(). With 64 requests in flight that
// is ~200 system calls per 64 writes, and they dominated the node's profile. This wrapper
// reads up to kReadBufferBytes at a time and serves small reads from that buffer, and it
// gathers the writes made during one event-loop turn into one write at the end of the turn
// (kj::evalLast). A write returns at once while the buffer holds less than
// kMaxBufferedWriteBytes; past it, the caller waits for the flush (backpressure). A failed
// flush fails every later write and read.
//
// Thread safety: like every KJ object, it belongs to the event loop that created it.
#pragma once

#include <kj/async-io.h>

#include <cstddef>
#include <string>
#include <vector>

namespace walship::rpc {

class BufferedStream final : public kj::AsyncIoStream, private kj::TaskSet::ErrorHandler {
 public:
  static constexpr size_t kReadBufferBytes = 64 << 10;
  static constexpr size_t kMaxBufferedWriteBytes = 4 << 20;

  explicit BufferedStream(kj::Own<kj::AsyncIoStream> inner);
  ~BufferedStream() noexcept(false);

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  void shutdownWrite() override;
  void abortRead() override;

  // Waits until `n` (at most kReadBufferBytes) bytes are buffered, or the stream ends, and
  // returns the buffered bytes without consuming them: fewer than `n` only at the end.
  kj::Promise<kj::ArrayPtr<const kj::byte>> Peek(size_t n);
  // Resolves once every byte written so far has been handed to the socket.
  kj::Promise<void> Flushed();

 private:
  void taskFailed(kj::Exception&& e) override;
  kj::Promise<void> Buffered();
  void ScheduleFlush();
  kj::Promise<void> Flush();

  kj::Own<kj::AsyncIoStream> inner_;
  // Read side: bytes [read_start_, read_end_) of read_buf_ are unread.
  std::string read_buf_;
  size_t read_start_ = 0;
  size_t read_end_ = 0;
  // Write side.
  std::string out_;           // written by callers, not yet handed to the socket
  std::string inflight_;      // being written to the socket
  bool writing_ = false;
  bool flush_scheduled_ = false;
  bool shutdown_pending_ = false;
  kj::Maybe<kj::Exception> write_error_;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> flushed_;  // a writer waiting for room
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> drained_;  // Flushed() callers
  kj::TaskSet tasks_;
};

}  // namespace walship::rpc
