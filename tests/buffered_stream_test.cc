// BufferedStream: bytes arrive intact and in order, writes made in one event-loop turn reach
// the socket as one write, and reads of any size are served across buffer refills.
#include "rpc/buffered_stream.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/vector.h>

#include <string>

namespace walship::rpc {
namespace {

// Forwards to a stream and counts the writes that reach it.
class CountingStream final : public kj::AsyncIoStream {
 public:
  CountingStream(kj::Own<kj::AsyncIoStream> inner, int* writes)
      : inner_(kj::mv(inner)), writes_(writes) {}
  kj::Promise<size_t> tryRead(void* b, size_t min, size_t max) override {
    return inner_->tryRead(b, min, max);
  }
  kj::Promise<void> write(const void* b, size_t n) override {
    ++*writes_;
    return inner_->write(b, n);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    ++*writes_;
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }

 private:
  kj::Own<kj::AsyncIoStream> inner_;
  int* writes_;
};

TEST(BufferedStreamTest, CoalescesOneTurnsWritesAndDeliversEveryByteInOrder) {
  auto io = kj::setupAsyncIo();
  auto pipe = io.provider->newTwoWayPipe();
  int socket_writes = 0;
  BufferedStream writer(kj::heap<CountingStream>(kj::mv(pipe.ends[0]), &socket_writes));
  BufferedStream reader(kj::mv(pipe.ends[1]));

  std::string expected;
  kj::Vector<kj::Promise<void>> writes;
  for (int i = 0; i < 500; ++i) {
    std::string piece = "message " + std::to_string(i) + std::string(i % 97, 'x') + ";";
    expected += piece;
    writes.add(writer.write(piece.data(), piece.size()));
  }
  kj::joinPromises(writes.releaseAsArray()).wait(io.waitScope);
  // Reads of awkward sizes, larger and smaller than what is buffered.
  std::string got(expected.size(), '\0');
  size_t off = 0;
  size_t step = 1;
  while (off < got.size()) {
    size_t n = std::min(step, got.size() - off);
    size_t r = reader.tryRead(got.data() + off, n, n).wait(io.waitScope);
    ASSERT_EQ(r, n);
    off += n;
    step = step * 3 % 70001 + 1;
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(socket_writes, 1) << "the 500 writes of one turn should reach the socket as one";

  // End of stream: a short read, not a hang.
  writer.shutdownWrite();
  char buf[16];
  EXPECT_EQ(reader.tryRead(buf, 16, 16).wait(io.waitScope), 0u);
}

TEST(BufferedStreamTest, WritesPastTheBufferBoundWaitForTheSocket) {
  auto io = kj::setupAsyncIo();
  auto pipe = io.provider->newTwoWayPipe();
  BufferedStream writer(kj::mv(pipe.ends[0]));
  std::string big(BufferedStream::kMaxBufferedWriteBytes + 1, 'b');
  auto pending = writer.write(big.data(), big.size());
  // Nobody reads yet: the write cannot complete while the socket is full.
  EXPECT_FALSE(pending.poll(io.waitScope));
  std::string sink(big.size(), '\0');
  auto read = pipe.ends[1]->read(sink.data(), sink.size());
  pending.wait(io.waitScope);
  read.wait(io.waitScope);
  EXPECT_EQ(sink, big);
}

}  // namespace
}  // namespace walship::rpc
