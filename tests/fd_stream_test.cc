// FdStream: after a read that drained the socket it waits for readiness instead of calling
// read() on an empty socket, and still sees every later byte and the end of the stream.
#include "rpc/fd_stream.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <sys/socket.h>

#include <csignal>
#include <string>

namespace walship::rpc {
namespace {

constexpr auto kTimeout = 5 * kj::SECONDS;  // bounds every wait below

struct Pair {
  explicit Pair(kj::AsyncIoContext& io) {
    auto pipe = io.provider->newTwoWayPipe();
    a = FdStream::Wrap(kj::mv(pipe.ends[0]), io);
    b = FdStream::Wrap(kj::mv(pipe.ends[1]), io);
  }
  FdStream& A() { return static_cast<FdStream&>(*a); }
  FdStream& B() { return static_cast<FdStream&>(*b); }
  kj::Own<kj::AsyncIoStream> a, b;
};

template <typename T>
T Wait(kj::AsyncIoContext& io, kj::Promise<T> p) {
  return io.provider->getTimer().timeoutAfter(kTimeout, kj::mv(p)).wait(io.waitScope);
}

TEST(FdStreamTest, WrapsSocketsOnly) {
  auto io = kj::setupAsyncIo();
  auto pipe = io.provider->newTwoWayPipe();
  kj::AsyncIoStream* raw = pipe.ends[0].get();
  auto wrapped = FdStream::Wrap(kj::mv(pipe.ends[0]), io);
  EXPECT_NE(wrapped.get(), raw);
  EXPECT_NE(dynamic_cast<FdStream*>(wrapped.get()), nullptr);
  // An in-memory pipe has no descriptor: it comes back as it was.
  auto mem = kj::newTwoWayPipe();
  kj::AsyncIoStream* m = mem.ends[0].get();
  EXPECT_EQ(FdStream::Wrap(kj::mv(mem.ends[0]), io).get(), m);
}

TEST(FdStreamTest, BytesAlreadyInTheSocketWhenWrappedAreRead) {
  auto io = kj::setupAsyncIo();
  auto pipe = io.provider->newTwoWayPipe();
  pipe.ends[1]->write("early", 5).wait(io.waitScope);
  auto reader = FdStream::Wrap(kj::mv(pipe.ends[0]), io);
  char buf[16];
  EXPECT_EQ(Wait(io, reader->tryRead(buf, 5, sizeof buf)), 5u);
  EXPECT_EQ(std::string(buf, 5), "early");
}

// TCP stops a read at an urgent mark (the peer's MSG_OOB) with bytes still queued and no new
// readiness to come: the bounded wait after a short read still reads them.
TEST(FdStreamTest, AShortReadThatLeftBytesQueuedDoesNotStall) {
  auto io = kj::setupAsyncIo();
  auto addr = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
  auto listener = addr->listen();
  auto to = io.provider->getNetwork()
                .parseAddress("127.0.0.1", listener->getPort())
                .wait(io.waitScope);
  auto connecting = to->connect();
  auto accepted = FdStream::Wrap(listener->accept().wait(io.waitScope), io);
  auto sender = connecting.wait(io.waitScope);
  int fd = -1;
  KJ_IF_MAYBE(f, sender->getFd()) { fd = *f; }
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, "abc", 3, 0), 3);
  ASSERT_EQ(::send(fd, "X", 1, MSG_OOB), 1);  // out of band: not part of the stream
  ASSERT_EQ(::send(fd, "def", 3, 0), 3);
  // Let the loop see the socket readable, so the reader knows the peer has not closed.
  io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
  std::string got;
  char buf[16];
  while (got.size() < 6) {
    size_t n = Wait(io, accepted->tryRead(buf, 1, sizeof buf));
    ASSERT_GT(n, 0u) << "end of stream after \"" << got << "\"";
    got.append(buf, n);
  }
  EXPECT_EQ(got, "abcdef");
}

// Ping-pong of one message at a time, the shape of a request and its reply, each side reading
// before the other has written (as Cap'n Proto's reader loop does): each message costs the
// reader one read(), not a second one that finds the socket empty.
TEST(FdStreamTest, PingPongMakesOneReadPerMessage) {
  auto io = kj::setupAsyncIo();
  Pair p(io);
  constexpr int kRounds = 200;
  char a_buf[64];
  char b_buf[64];
  for (int i = 0; i < kRounds; ++i) {
    auto b_reads = p.B().tryRead(b_buf, 1, sizeof b_buf);
    auto a_reads = p.A().tryRead(a_buf, 1, sizeof a_buf);
    std::string ping = "ping " + std::to_string(i);
    Wait(io, p.A().write(ping.data(), ping.size()));
    size_t n = Wait(io, kj::mv(b_reads));
    ASSERT_EQ(std::string(b_buf, n), ping);
    std::string pong = "pong " + std::to_string(i);
    Wait(io, p.B().write(pong.data(), pong.size()));
    n = Wait(io, kj::mv(a_reads));
    ASSERT_EQ(std::string(a_buf, n), pong);
  }
  // KJ's own stream makes 2 per message (the second fails with EAGAIN). The first read of
  // each side finds the socket empty: nothing had been read before it.
  EXPECT_EQ(p.A().read_calls(), uint64_t{kRounds} + 1);
  EXPECT_EQ(p.B().read_calls(), uint64_t{kRounds} + 1);
}

// Bytes that arrive while the reader waits after a short read, in many small writes over
// many loop turns, all arrive in order; min_bytes larger than one write is honoured.
TEST(FdStreamTest, ReaderWaitingAfterAShortReadSeesEveryLaterByte) {
  auto io = kj::setupAsyncIo();
  Pair p(io);
  std::string expected;
  for (int i = 0; i < 300; ++i) expected += "chunk " + std::to_string(i) + ";";
  std::string got(expected.size(), '\0');
  // A short read first, once the loop has seen the socket readable (so the reader knows the
  // peer is open): the reader then waits for readiness.
  Wait(io, p.A().write("x", 1));
  io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
  char one;
  ASSERT_EQ(Wait(io, p.B().tryRead(&one, 1, 1000)), 1u);
  auto reading = p.B().tryRead(got.data(), got.size(), got.size());
  kj::Promise<void> writing = kj::READY_NOW;
  for (size_t off = 0; off < expected.size(); off += 7) {
    size_t n = std::min<size_t>(7, expected.size() - off);
    writing = writing.then([&, off, n]() {
      return kj::evalLater([&, off, n]() { return p.A().write(expected.data() + off, n); });
    });
  }
  Wait(io, kj::mv(writing));
  EXPECT_EQ(Wait(io, kj::mv(reading)), expected.size());
  EXPECT_EQ(got, expected);
}

TEST(FdStreamTest, EndOfStreamWhileWaitingIsAShortRead) {
  auto io = kj::setupAsyncIo();
  Pair p(io);
  Wait(io, p.A().write("abc", 3));
  char buf[16];
  ASSERT_EQ(Wait(io, p.B().tryRead(buf, 1, sizeof buf)), 3u);  // short: now waiting
  auto reading = p.B().tryRead(buf, 4, sizeof buf);
  auto later = kj::evalLater([&]() { return p.A().write("de", 2); }).then([&]() {
    p.A().shutdownWrite();
  });
  Wait(io, kj::mv(later));
  EXPECT_EQ(Wait(io, kj::mv(reading)), 2u) << "two bytes, then the end";
  EXPECT_EQ(Wait(io, p.B().tryRead(buf, 1, sizeof buf)), 0u);
}

TEST(FdStreamTest, LargeWriteWaitsForTheReader) {
  auto io = kj::setupAsyncIo();
  Pair p(io);
  std::string big(8 << 20, 'b');
  for (size_t i = 0; i < big.size(); i += 4099) big[i] = static_cast<char>('a' + i % 26);
  auto writing = p.A().write(big.data(), big.size());
  EXPECT_FALSE(writing.poll(io.waitScope)) << "8 MiB cannot fit in the socket buffers";
  std::string got(big.size(), '\0');
  auto reading = p.B().read(got.data(), got.size());
  Wait(io, kj::mv(writing));
  Wait(io, kj::mv(reading));
  EXPECT_EQ(got, big);
}

TEST(FdStreamTest, WritingToAClosedPeerFailsWithoutSigpipe) {
  auto io = kj::setupAsyncIo();
  // KJ ignores SIGPIPE when it sets up its loop; a server embedding walship may not. With the
  // default action, a write that raised SIGPIPE would kill this test.
  auto old = std::signal(SIGPIPE, SIG_DFL);
  KJ_DEFER(std::signal(SIGPIPE, old));
  Pair p(io);
  p.b = nullptr;  // closes the peer
  std::string data(1 << 20, 'x');
  auto result = kj::runCatchingExceptions([&]() {
    for (int i = 0; i < 8; ++i) Wait(io, p.A().write(data.data(), data.size()));
  });
  KJ_IF_MAYBE(e, result) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED);
  } else {
    ADD_FAILURE() << "writes to a closed peer succeeded";
  }
}

}  // namespace
}  // namespace walship::rpc
