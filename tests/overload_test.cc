// A node under overload, resource exhaustion and hostile input: each case gets a clear error
// and the node keeps serving everyone else. Nodes run in-process on loopback.
#include <gtest/gtest.h>
#include <kj/async-unix.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "rpc/client.capnp.h"
#include "rpc/client.h"
#include "rpc/convert.h"
#include "tests/node_harness.h"

namespace walship::rpc {
namespace {

using engine::OpType;
using engine::WriteOp;

class OverloadTest : public NodeTest {};

// Connections that keep the node's client worker queue over-full: each pipelines rounds of
// scans large enough to run on a worker, until destroyed. Every reply must be a result or
// `unavailable` (the queue was full), never anything else.
class ScanFlood {
 public:
  ScanFlood(const std::string& endpoint, int connections) {
    for (int i = 0; i < connections; ++i) {
      threads_.emplace_back([this, endpoint] { Run(endpoint); });
    }
  }
  ~ScanFlood() { Stop(); }
  // Stops the flood; returns how many scans were refused `unavailable`.
  int Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    return refused_;
  }

 private:
  void Run(const std::string& endpoint) {
    constexpr int kRound = 32;
    RawConnection c(endpoint);
    while (!stop_) {
      for (int i = 0; i < kRound; ++i) {
        capnp::MallocMessageBuilder m;
        m.initRoot<schema::Request>().initScan().setLimit(5000);  // served on a worker
        c.Add(m);
      }
      c.Send();
      for (int i = 0; i < kRound; ++i) {
        auto r = c.Receive();
        auto reply = r->getRoot<schema::Reply>();
        absl::Status s = reply.isRefused() ? FromCapnp(reply.getRefused())
                         : reply.isScan()  ? FromCapnp(reply.getScan().getError())
                                           : absl::InternalError("not a scan reply");
        if (absl::IsUnavailable(s)) {
          ++refused_;
        } else {
          EXPECT_TRUE(s.ok()) << s;
        }
      }
    }
  }

  std::atomic<bool> stop_ = false;
  std::atomic<int> refused_ = 0;
  std::vector<std::thread> threads_;
};

// Clients can fill the worker queue with scans; the node's own work (a write group that
// fsyncs, a follower's apply of a large batch) has capacity of its own and is never refused
// for it, so writes and replication go on while the scans are refused `unavailable`.
TEST_F(OverloadTest, AFullWorkerQueueNeverStopsWritesOrApplies) {
  NodeServerOptions lo = Options("n1", true, "");
  lo.fsync_writes = true;  // every write group goes to a worker
  lo.worker_threads = 1;
  lo.max_queued_tasks = 4;
  RunningNode leader(lo);
  NodeServerOptions fo = Options("n2", false, lo.listen);
  fo.worker_threads = 1;
  fo.max_queued_tasks = 4;
  RunningNode follower(fo);
  auto c = ConnectOrDie(lo.listen);
  ASSERT_NE(c, nullptr);
  std::vector<WriteOp> keys;
  for (int i = 0; i < 2000; ++i) {
    keys.push_back({OpType::kPut, "key" + std::to_string(i), std::string(32, 'v')});
  }
  ASSERT_TRUE(c->Write(keys).ok());
  ASSERT_TRUE(WaitFor([&] { return LatestSeq(fo.listen) == 2000; }, std::chrono::seconds(20)));

  ScanFlood on_leader(lo.listen, 3);
  ScanFlood on_follower(fo.listen, 3);
  // Writes of 300 KiB: the follower applies each on a worker.
  std::string big(300 << 10, 'b');
  uint64_t last = 0;
  for (int i = 0; i < 50; ++i) {
    auto w = c->Write({{OpType::kPut, "big" + std::to_string(i), big}});
    ASSERT_TRUE(w.ok()) << i << ": " << w.status();
    last = w->last_seq;
  }
  EXPECT_TRUE(WaitFor([&] { return LatestSeq(fo.listen) == last; }, std::chrono::seconds(20)));
  EXPECT_GT(on_leader.Stop(), 0);  // the queues did fill
  EXPECT_GT(on_follower.Stop(), 0);
  auto after = c->Write({{OpType::kPut, "after", "1"}});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->first_seq, last + 1);
  EXPECT_TRUE(WaitFor([&] { return LatestSeq(fo.listen) == after->last_seq; },
                      std::chrono::seconds(20)));
}

}  // namespace
}  // namespace walship::rpc

int main(int argc, char** argv) {
  // Before any thread starts, so every thread blocks these and the node loops get them.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
