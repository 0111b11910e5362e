#include "rpc/buffered_stream.h"

#include <kj/debug.h>

#include <algorithm>
#include <cstring>

namespace walship::rpc {

BufferedStream::BufferedStream(kj::Own<kj::AsyncIoStream> inner)
    : inner_(kj::mv(inner)), read_buf_(kReadBufferBytes, '\0'), tasks_(*this) {}

BufferedStream::~BufferedStream() noexcept(false) {}

void BufferedStream::taskFailed(kj::Exception&& e) {
  // A flush failed: the connection is broken. Later writes report it; waiting writers and
  // readers are woken with it.
  if (write_error_ == nullptr) write_error_ = kj::cp(e);
  KJ_IF_MAYBE(f, flushed_) {
    (*f)->reject(kj::cp(e));
    flushed_ = nullptr;
  }
  for (auto& d : drained_) d->reject(kj::cp(e));
  drained_.clear();
  // The socket may already be gone; nothing more to do then.
  auto ignored = kj::runCatchingExceptions([this]() { inner_->abortRead(); });
  (void)ignored;
}

kj::Promise<size_t> BufferedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  auto* out = static_cast<kj::byte*>(buffer);
  size_t n = std::min(read_end_ - read_start_, max_bytes);
  std::memcpy(out, read_buf_.data() + read_start_, n);
  read_start_ += n;
  if (n >= min_bytes) return n;
  if (max_bytes - n >= kReadBufferBytes) {
    // A large read goes straight into the caller's buffer.
    return inner_->tryRead(out + n, min_bytes - n, max_bytes - n)
        .then([n](size_t got) { return n + got; });
  }
  return inner_->tryRead(read_buf_.data(), 1, read_buf_.size())
      .then([this, out, n, min_bytes, max_bytes](size_t got) -> kj::Promise<size_t> {
        read_start_ = 0;
        read_end_ = got;
        if (got == 0) return n;  // end of stream: a short read
        return tryRead(out + n, min_bytes - n, max_bytes - n).then([n](size_t more) {
          return n + more;
        });
      });
}

kj::Promise<kj::ArrayPtr<const kj::byte>> BufferedStream::Peek(size_t n) {
  KJ_REQUIRE(n <= kReadBufferBytes, "peek too large", n);
  auto* buf = reinterpret_cast<kj::byte*>(read_buf_.data());
  size_t have = read_end_ - read_start_;
  if (have >= n) return kj::ArrayPtr<const kj::byte>(buf + read_start_, have);
  std::memmove(buf, buf + read_start_, have);
  read_start_ = 0;
  read_end_ = have;
  return inner_->tryRead(buf + read_end_, 1, read_buf_.size() - read_end_)
      .then([this, n](size_t got) -> kj::Promise<kj::ArrayPtr<const kj::byte>> {
        read_end_ += got;
        if (got == 0) {  // the end of the stream
          return kj::ArrayPtr<const kj::byte>(
              reinterpret_cast<kj::byte*>(read_buf_.data()) + read_start_, read_end_);
        }
        return Peek(n);
      });
}

kj::Promise<void> BufferedStream::Flushed() {
  KJ_IF_MAYBE(e, write_error_) { return kj::cp(*e); }
  if (!writing_ && out_.empty()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  drained_.push_back(kj::mv(paf.fulfiller));
  ScheduleFlush();
  return kj::mv(paf.promise);
}

kj::Promise<void> BufferedStream::write(const void* buffer, size_t size) {
  KJ_IF_MAYBE(e, write_error_) { return kj::cp(*e); }
  out_.append(static_cast<const char*>(buffer), size);
  return Buffered();
}

kj::Promise<void> BufferedStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  KJ_IF_MAYBE(e, write_error_) { return kj::cp(*e); }
  for (auto piece : pieces) out_.append(reinterpret_cast<const char*>(piece.begin()), piece.size());
  return Buffered();
}

kj::Promise<void> BufferedStream::Buffered() {
  ScheduleFlush();
  if (out_.size() < kMaxBufferedWriteBytes) return kj::READY_NOW;
  // Too much buffered: this writer waits until the socket has taken a flush.
  auto paf = kj::newPromiseAndFulfiller<void>();
  KJ_IF_MAYBE(f, flushed_) { (*f)->fulfill(); }
  flushed_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

void BufferedStream::ScheduleFlush() {
  if (flush_scheduled_ || writing_) return;
  flush_scheduled_ = true;
  // evalLast: after every other ready event of this turn, so their writes join this one.
  tasks_.add(kj::evalLast([this]() {
    flush_scheduled_ = false;
    return Flush();
  }));
}

kj::Promise<void> BufferedStream::Flush() {
  if (out_.empty()) {
    if (shutdown_pending_) {
      shutdown_pending_ = false;
      // Fails when the peer already closed the socket: then it is shut anyway.
      auto ignored = kj::runCatchingExceptions([this]() { inner_->shutdownWrite(); });
      (void)ignored;
    }
    return kj::READY_NOW;
  }
  writing_ = true;
  inflight_.swap(out_);
  out_.clear();
  return inner_->write(inflight_.data(), inflight_.size()).then([this]() {
    writing_ = false;
    inflight_.clear();
    KJ_IF_MAYBE(f, flushed_) {
      (*f)->fulfill();
      flushed_ = nullptr;
    }
    if (!out_.empty() || shutdown_pending_) {
      ScheduleFlush();
    } else {
      for (auto& d : drained_) d->fulfill();
      drained_.clear();
    }
  });
}

kj::Promise<void> BufferedStream::whenWriteDisconnected() { return inner_->whenWriteDisconnected(); }

void BufferedStream::shutdownWrite() {
  if (writing_ || !out_.empty()) {
    shutdown_pending_ = true;  // after the buffered bytes are out
    ScheduleFlush();
    return;
  }
  inner_->shutdownWrite();
}

void BufferedStream::abortRead() { inner_->abortRead(); }

}  // namespace walship::rpc
