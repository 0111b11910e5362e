// The client API in-process: NodeServer instances on loopback in threads of this process,
// driven through rpc::Client.
#include <gtest/gtest.h>
#include <capnp/any.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize.h>
#include <kj/async-unix.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "rpc/client.h"
#include "rpc/convert.h"
#include "rpc/node_server.h"
#include "rpc/client.capnp.h"
#include "rpc/peer.capnp.h"
#include "tests/node_harness.h"
#include "tools/free_port.h"

namespace walship::rpc {
namespace {

using engine::OpType;
using engine::WriteOp;

class RpcTest : public NodeTest {};

// A client idle for longer than its timeout still gets its next call answered: every call is
// bounded from when it is made, not from the last time the client's event loop ran.
TEST_F(RpcTest, ACallAfterAnIdleSpellLongerThanTheTimeoutIsAnswered) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);  // the node is up
  auto c = Client::Connect(lo.listen, absl::Seconds(1));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Write({{OpType::kPut, "a", "1"}}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto w = (*c)->Write({{OpType::kPut, "b", "2"}});
  EXPECT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE((*c)->Get("b").ok());
}

TEST_F(RpcTest, ClientApiOnLeaderAndFollower) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  auto c = ConnectOrDie(lo.listen);
  ASSERT_NE(c, nullptr);

  auto w = c->Write({{OpType::kPut, "a", "1"}, {OpType::kPut, std::string("b\0", 2), "2"}});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->first_seq, 1u);
  EXPECT_EQ(w->last_seq, 2u);
  EXPECT_EQ(*c->Get(std::string("b\0", 2)), "2");
  EXPECT_TRUE(absl::IsNotFound(c->Get("zz").status()));
  // A read that names a sequence the node has not reached is refused, not answered stale.
  EXPECT_TRUE(absl::IsUnavailable(c->Get("a", 99).status()));
  EXPECT_TRUE(c->Get("a", 2).ok());
  // Bad input is an error naming the problem, and writes nothing.
  auto bad = c->Write({{OpType::kDeleteRange, "z", "a"}});
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status())) << bad.status();
  EXPECT_TRUE(absl::IsInvalidArgument(c->Write({}).status()));
  engine::ScanOptions scan;
  auto kvs = c->Scan(scan);
  ASSERT_TRUE(kvs.ok());
  EXPECT_EQ(kvs->size(), 2u);
  auto st = c->Status();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->role, "leader");
  EXPECT_EQ(st->latest_seq, 2u);

  NodeServerOptions fo = Options("n2", false, lo.listen);
  RunningNode follower(fo);
  auto f = ConnectOrDie(fo.listen);
  ASSERT_NE(f, nullptr);
  auto refused = f->Write({{OpType::kPut, "x", "y"}});
  EXPECT_TRUE(IsNotLeader(refused.status())) << refused.status();
  EXPECT_EQ(LeaderHint(refused.status()), lo.listen);
  // The follower catches up, then sees later writes too (read-your-writes via min_seq).
  auto w2 = c->Write({{OpType::kPut, "c", "3"}});
  ASSERT_TRUE(w2.ok());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  absl::StatusOr<std::string> v = absl::UnavailableError("not yet");
  while (!v.ok() && std::chrono::steady_clock::now() < deadline) {
    v = f->Get("c", w2->last_seq);
    if (!v.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, "3");
  auto fst = f->Status();
  ASSERT_TRUE(fst.ok());
  EXPECT_EQ(fst->role, "follower");
  EXPECT_EQ(fst->replication_state, "streaming");
  auto lst = c->Status();
  ASSERT_EQ(lst->followers.size(), 1u);
  EXPECT_EQ(lst->followers[0].id, "n2");
  c.reset();
  f.reset();
}

// Reads the leader's view of follower n2's applied position (a failed call fails the test).
uint64_t LeaderSeesApplied(Client& leader) {
  auto st = leader.Status();
  if (!st.ok() || st->followers.size() != 1) {
    ADD_FAILURE() << "leader status: " << st.status();
    return 0;
  }
  return st->followers[0].applied_seq;
}

// Waits (bounded) until `f` is true; returns whether it became true.

// An idle follower still hears from the leader every heartbeat_interval_ms and acks it, so
// the leader's view of it stays fresh (and it has no silence to reconnect over).
TEST_F(RpcTest, AnIdleFollowerIsHeardFromEveryHeartbeat) {
  NodeServerOptions lo = Options("n1", true, "");  // heartbeats every 20 ms
  RunningNode leader(lo);
  auto c = ConnectOrDie(lo.listen);
  ASSERT_NE(c, nullptr);
  RunningNode follower(Options("n2", false, lo.listen));
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = c->Status();
        return st.ok() && st->followers.size() == 1 && st->followers[0].state == "connected";
      },
      std::chrono::seconds(10)));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // nothing written
  auto st = c->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->followers.size(), 1u);
  EXPECT_EQ(st->followers[0].state, "connected");
  EXPECT_GE(st->followers[0].last_ack_ago_ms, 0);  // acked at least once
  EXPECT_LT(st->followers[0].last_ack_ago_ms, 1000);  // without heartbeats: over 1500
}

// Delayed acks: a follower holds the ack of a message up to ack_delay_us (the leader's view
// of its position lags), and answers at once when the message that fills the leader's
// window asks for it, so a full window never waits out the delay.
TEST_F(RpcTest, FollowerHoldsAcksUpToTheDelayUnlessTheLeaderAsks) {
  NodeServerOptions lo = Options("n1", true, "");
  lo.ack_delay_us = 2'000'000;
  lo.max_inflight_ships = 2;
  lo.heartbeat_timeout_ms = 20'000;  // above the delay (the config requires it)
  // No heartbeats during the test: one in flight would take a place in the window of 2.
  lo.heartbeat_interval_ms = 10'000;
  RunningNode leader(lo);
  auto c = ConnectOrDie(lo.listen);
  ASSERT_NE(c, nullptr);
  NodeServerOptions fo = Options("n2", false, lo.listen);
  fo.heartbeat_timeout_ms = 20'000;
  RunningNode follower(fo);
  auto f = ConnectOrDie(fo.listen);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = c->Status();
        return st.ok() && st->followers.size() == 1 && st->followers[0].state == "connected";
      },
      std::chrono::seconds(10)));
  // Let the subscription settle: nothing is in flight before the first write.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  auto w1 = c->Write({{OpType::kPut, "a", "1"}});
  ASSERT_TRUE(w1.ok()) << w1.status();
  ASSERT_TRUE(WaitFor([&] { return f->Get("a", w1->last_seq).ok(); }, std::chrono::seconds(5)));
  // Applied on the follower; its ack is held (first message in a window of 2).
  EXPECT_LT(LeaderSeesApplied(*c), w1->last_seq);
  // The delay expires and the ack goes out on its own.
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return LeaderSeesApplied(*c) >= w1->last_seq; },
                      std::chrono::seconds(10)));
  EXPECT_GT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));

  // Two messages in quick succession: the second fills the window and asks for a prompt
  // ack, which releases the held one too; the leader sees both long before the delay.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto w2 = c->Write({{OpType::kPut, "b", "2"}});
  auto w3 = c->Write({{OpType::kPut, "c", "3"}});
  ASSERT_TRUE(w2.ok() && w3.ok());
  t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return LeaderSeesApplied(*c) >= w3->last_seq; },
                      std::chrono::seconds(10)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  c.reset();
  f.reset();
}

// Plays a follower over the real node-to-node protocol, on its own thread and event loop:
// subscribes as a fresh follower, records every push and acks them only when the test says.
class ScriptedFollower {
 public:
  explicit ScriptedFollower(const std::string& leader) {
    thread_ = std::thread([this, leader] { Run(leader); });
    std::unique_lock lock(mu_);
    ready_cv_.wait(lock, [&] { return executor_ != nullptr; });  // set before any blocking
  }
  ~ScriptedFollower() {
    executor_->executeSync([this] { stop_->fulfill(); });
    thread_.join();
  }

  bool subscribed() {
    std::lock_guard lock(mu_);
    return subscribed_;
  }
  // Each push received so far, as the [first, last] sequence numbers it covers.
  std::vector<std::pair<uint64_t, uint64_t>> Pushes() {
    std::lock_guard lock(mu_);
    return pushes_;
  }
  // When each push arrived.
  std::vector<std::chrono::steady_clock::time_point> PushTimes() {
    std::lock_guard lock(mu_);
    return push_times_;
  }
  // Acks every push received so far as applied, as a real follower would.
  void AckAll() {
    executor_->executeSync([this] {
      for (auto& f : unacked_) f->fulfill();
      unacked_.clear();
    });
  }

 private:
  class Sink final : public schema::BatchSink::Server {
   public:
    explicit Sink(ScriptedFollower& f) : f_(f) {}
    kj::Promise<void> push(PushContext ctx) override {
      replication::Ship ship = FromCapnp(ctx.getParams().getShip());
      if (ship.batches.empty()) return kj::READY_NOW;  // a heartbeat: acked by returning
      uint64_t first = ship.batches.front().batch.first_seq;
      uint64_t last = ship.batches.back().batch.first_seq + ship.batches.back().batch.count - 1;
      {
        std::lock_guard lock(f_.mu_);
        f_.pushes_.push_back({first, last});
        f_.push_times_.push_back(std::chrono::steady_clock::now());
      }
      auto paf = kj::newPromiseAndFulfiller<void>();
      f_.unacked_.push_back(kj::mv(paf.fulfiller));
      return paf.promise.then([ctx, epoch = ship.epoch, last]() mutable {
        replication::Ack ack;
        ack.epoch = epoch;
        ack.received = ack.durable = ack.applied = last;
        ToCapnp(ack, ctx.getResults().initAck());
      });
    }

   private:
    ScriptedFollower& f_;
  };

  // Keeps the connection (and so the subscription) until the loop ends.
  void Subscribe(kj::AsyncIoContext& io, const std::string& leader) {
    // Bounded, so that the destructor's join cannot wait on a leader that never answers.
    auto bounded = [&]<typename T>(kj::Promise<T> promise) {
      return io.provider->getTimer()
          .timeoutAfter(10 * kj::SECONDS, kj::mv(promise))
          .wait(io.waitScope);
    };
    addr_ = bounded(io.provider->getNetwork().parseAddress(leader));
    stream_ = bounded(addr_->connect());
    client_ = kj::heap<capnp::TwoPartyClient>(*stream_);
    auto req = client_->bootstrap().castAs<schema::Node>().subscribeRequest();
    replication::Hello hello;
    hello.cluster = "rpc";
    hello.follower_id = "scripted";
    ToCapnp(hello, req.initHello());
    req.setSink(kj::heap<Sink>(*this));
    auto reply = bounded(kj::Promise<capnp::Response<schema::PeerService::SubscribeResults>>(
        req.send()));
    std::lock_guard lock(mu_);
    subscribed_ = reply.getReply().getOutcome() == schema::HelloOutcome::ACCEPTED;
  }

  void Run(const std::string& leader) {
    auto io = kj::setupAsyncIo();
    auto stop = kj::newPromiseAndFulfiller<void>();
    stop_ = kj::mv(stop.fulfiller);
    {
      std::lock_guard lock(mu_);
      executor_ = &kj::getCurrentThreadExecutor();
    }
    ready_cv_.notify_all();
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { Subscribe(io, leader); })) {
      ADD_FAILURE() << "scripted follower: " << e->getDescription().cStr();
    }
    stop.promise.wait(io.waitScope);
    unacked_.clear();
    client_ = nullptr;
    stream_ = nullptr;
    addr_ = nullptr;
  }

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable ready_cv_;
  const kj::Executor* executor_ = nullptr;                 // set once, under mu_
  kj::Own<kj::PromiseFulfiller<void>> stop_;               // loop thread only
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> unacked_;  // loop thread only
  kj::Own<kj::NetworkAddress> addr_;                       // loop thread only
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<capnp::TwoPartyClient> client_;
  std::vector<std::pair<uint64_t, uint64_t>> pushes_;     // under mu_
  std::vector<std::chrono::steady_clock::time_point> push_times_;  // under mu_
  bool subscribed_ = false;                                // under mu_
};

// A leader started with `lo`, a client of it, and a ScriptedFollower subscribed to it.
struct ScriptedPair {
  explicit ScriptedPair(const NodeServerOptions& lo)
      : leader(lo), c(ConnectOrDie(lo.listen)), f(lo.listen) {}
  // The client connected and the follower subscribed (bounded).
  bool Ready() {
    return c != nullptr && WaitFor([&] { return f.subscribed(); }, std::chrono::seconds(10));
  }
  RunningNode leader;
  std::unique_ptr<Client> c;
  ScriptedFollower f;
};

// With the window full, `w` stays unsent for `watch` (`sent` messages are out), however long
// the hold, and goes alone once an ack frees a place.
void ExpectHeldUntilAnAck(ScriptedFollower& f, size_t sent, const WriteResult& w,
                          std::chrono::milliseconds watch) {
  std::this_thread::sleep_for(watch);
  EXPECT_EQ(f.Pushes().size(), sent);
  f.AckAll();
  ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == sent + 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(f.Pushes()[sent], std::make_pair(w.first_seq, w.last_seq));
}

// Prompt acks (the default): while a message is in flight to a caught-up follower, later
// writes wait for its ack and then travel together in one message; once they have waited
// max_ship_hold_us they go without the ack, within the window (max_inflight_ships).
TEST_F(RpcTest, WritesWaitForTheAckInFlightAtMostTheHoldTime) {
  using std::chrono::milliseconds;
  NodeServerOptions lo = PromptAckLeader(1'000'000);
  ScriptedPair pair(lo);
  ASSERT_TRUE(pair.Ready());
  auto& c = pair.c;
  ScriptedFollower& f = pair.f;
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_TRUE(f.Pushes().empty());

  auto w1 = c->Write({{OpType::kPut, "a", "1"}});
  ASSERT_TRUE(w1.ok()) << w1.status();
  // Nothing was in flight: it goes at once.
  ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 1; }, std::chrono::seconds(5)));
  // The leader holds w2 from when it reads it, which is after this.
  auto held_from = std::chrono::steady_clock::now();
  auto w2 = c->Write({{OpType::kPut, "b", "2"}});
  auto w3 = c->Write({{OpType::kPut, "c", "3"}});
  ASSERT_TRUE(w2.ok() && w3.ok());
  std::this_thread::sleep_for(milliseconds(200));
  auto acked_at = std::chrono::steady_clock::now();
  f.AckAll();
  ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 2; }, std::chrono::seconds(5)));
  // Held: nothing went before the ack or the end of the 1 s hold, however slow the machine.
  EXPECT_GE(f.PushTimes()[1], std::min(acked_at, held_from + milliseconds(1000)));
  EXPECT_EQ(f.Pushes()[1], std::make_pair(w2->first_seq, w3->last_seq));  // one message

  // Message 2 stays unacknowledged: w4 waits for it, then goes when the hold is over.
  auto w4 = c->Write({{OpType::kPut, "d", "4"}});
  ASSERT_TRUE(w4.ok());
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 3; }, std::chrono::seconds(10)));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(800));
  EXPECT_EQ(f.Pushes()[2], std::make_pair(w4->first_seq, w4->last_seq));

  // Two messages in flight fill the window of 2: w5 waits past the hold, until an ack.
  auto w5 = c->Write({{OpType::kPut, "e", "5"}});
  ASSERT_TRUE(w5.ok());
  ExpectHeldUntilAnAck(f, 3, *w5, milliseconds(1500));
  c.reset();
}

// max_ship_hold_us = 0: nothing waits for an ack while the window has room.
TEST_F(RpcTest, WithoutAHoldEveryWriteGoesWhileTheWindowHasRoom) {
  NodeServerOptions lo = PromptAckLeader(0);
  ScriptedPair pair(lo);
  ASSERT_TRUE(pair.Ready());
  auto& c = pair.c;
  ScriptedFollower& f = pair.f;

  auto w1 = c->Write({{OpType::kPut, "a", "1"}});
  ASSERT_TRUE(w1.ok()) << w1.status();
  ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 1; }, std::chrono::seconds(5)));
  auto w2 = c->Write({{OpType::kPut, "b", "2"}});
  ASSERT_TRUE(w2.ok());
  ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 2; }, std::chrono::seconds(5)));
  EXPECT_EQ(f.Pushes()[1], std::make_pair(w2->first_seq, w2->last_seq));
  // The window of 2 is full: w3 waits for an ack.
  auto w3 = c->Write({{OpType::kPut, "c", "3"}});
  ASSERT_TRUE(w3.ok());
  ExpectHeldUntilAnAck(f, 2, *w3, std::chrono::milliseconds(200));
  c.reset();
}

// A node connection holds its place only while a follower session lives on it: when a
// subscribe with the same follower id on another connection replaces its session, the old
// connection is closed within preamble_timeout_ms, so made-up subscribers cannot pile up.
TEST_F(RpcTest, AConnectionWhoseSessionWasReplacedIsClosed) {
  NodeServerOptions lo = PromptAckLeader(0);
  lo.preamble_timeout_ms = 200;
  RunningNode leader(lo);
  auto c = ConnectOrDie(lo.listen);
  ASSERT_NE(c, nullptr);
  auto peers = [&] {
    auto st = c->Status();
    return st.ok() ? st->peer_connections : 99u;
  };
  ScriptedFollower first(lo.listen);
  ASSERT_TRUE(WaitFor([&] { return first.subscribed(); }, std::chrono::seconds(10)));
  ScriptedFollower second(lo.listen);  // the same follower id: it replaces the first
  ASSERT_TRUE(WaitFor([&] { return second.subscribed(); }, std::chrono::seconds(10)));
  EXPECT_TRUE(WaitFor([&] { return peers() == 1; }, std::chrono::seconds(10))) << peers();
  auto w = c->Write({{OpType::kPut, "k", "v"}});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(WaitFor([&] { return !second.Pushes().empty(); }, std::chrono::seconds(10)));
}

// Pacing (prompt acks): a caught-up follower gets at most one message per
// min_ship_interval_us. Writes arriving within it travel together once it ends, whether the
// ack came before them or after; a write after a quiet spell of an interval goes at once.
TEST_F(RpcTest, ACaughtUpFollowerGetsAtMostOneMessagePerInterval) {
  using std::chrono::milliseconds;
  using Clock = std::chrono::steady_clock;
  NodeServerOptions lo = PromptAckLeader(4'000'000);  // the hold outlasts the interval
  lo.min_ship_interval_us = 2'000'000;
  ScriptedPair pair(lo);
  ASSERT_TRUE(pair.Ready());
  auto& c = pair.c;
  ScriptedFollower& f = pair.f;
  // Waits (bounded) for the n-th push, which must come between `low` and `high` after `from`.
  auto pushes_within = [&](size_t n, Clock::time_point from, milliseconds low,
                           milliseconds high) {
    if (!WaitFor([&] { return f.Pushes().size() == n; }, std::chrono::seconds(10))) return false;
    EXPECT_GE(Clock::now() - from, low);
    EXPECT_LT(Clock::now() - from, high);
    return true;
  };

  auto w1_sent = Clock::now();  // message 1 went after this, so the interval ends after
  auto w1 = c->Write({{OpType::kPut, "a", "1"}});
  ASSERT_TRUE(w1.ok()) << w1.status();
  ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 1; }, std::chrono::seconds(5)));
  auto shipped = Clock::now();
  f.AckAll();  // and the leader sees it: nothing in flight, only the interval holds w2, w3
  ASSERT_TRUE(WaitFor([&] { return LeaderSeesApplied(*c) >= w1->last_seq; },
                      std::chrono::seconds(5)));
  auto w2 = c->Write({{OpType::kPut, "b", "2"}});
  auto w3 = c->Write({{OpType::kPut, "c", "3"}});
  ASSERT_TRUE(w2.ok() && w3.ok());
  ASSERT_TRUE(pushes_within(2, shipped, milliseconds(1800), milliseconds(3500)));
  // Held for the interval, however slow the machine: not sent before it passed.
  EXPECT_GE(f.PushTimes()[1], w1_sent + milliseconds(2000));
  EXPECT_EQ(f.Pushes()[1], std::make_pair(w2->first_seq, w3->last_seq));  // one message

  // w4 comes while message 2 is unacknowledged: it waits for the ack, with the 4 s hold as
  // its bound. The ack comes after 300 ms; then the interval, 2 s after message 2, is the
  // earlier bound, and the leader's timer moves to it.
  shipped = Clock::now();
  auto w4 = c->Write({{OpType::kPut, "d", "4"}});
  ASSERT_TRUE(w4.ok());
  std::this_thread::sleep_for(milliseconds(300));
  f.AckAll();
  ASSERT_TRUE(pushes_within(3, shipped, milliseconds(1800), milliseconds(3500)));
  EXPECT_EQ(f.Pushes()[2], std::make_pair(w4->first_seq, w4->last_seq));

  f.AckAll();
  std::this_thread::sleep_for(milliseconds(2100));  // a quiet spell of an interval
  auto w5 = c->Write({{OpType::kPut, "e", "5"}});
  ASSERT_TRUE(w5.ok());
  ASSERT_TRUE(pushes_within(4, Clock::now(), milliseconds(0), milliseconds(1500)));  // at once
  EXPECT_EQ(f.Pushes()[3], std::make_pair(w5->first_seq, w5->last_seq));
  c.reset();
}

// Pacing gives way: to a hold shorter than the interval, to delayed acks (which never pace),
// and to a follower with a full message pending (catching up). In each, a write right after
// an acknowledged message goes well before the 2 s interval would let it.
TEST_F(RpcTest, PacingGivesWayToAShorterHoldDelayedAcksAndCatchingUp) {
  using std::chrono::milliseconds;
  using Clock = std::chrono::steady_clock;
  auto second_write_goes_at_once = [&](NodeServerOptions lo, size_t value_bytes,
                                       const std::string& dir) {
    lo.data_dir = (dir_ / dir).string();  // a fresh database for each case
    lo.min_ship_interval_us = 2'000'000;
    ScriptedPair pair(lo);
    ASSERT_TRUE(pair.Ready());
    auto& c = pair.c;
    ScriptedFollower& f = pair.f;
    auto w1 = c->Write({{OpType::kPut, "a", std::string(value_bytes, 'x')}});
    ASSERT_TRUE(w1.ok()) << w1.status();
    ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 1; }, std::chrono::seconds(5)));
    f.AckAll();
    ASSERT_TRUE(WaitFor([&] { return LeaderSeesApplied(*c) >= w1->last_seq; },
                        std::chrono::seconds(5)));
    auto t0 = Clock::now();
    auto w2 = c->Write({{OpType::kPut, "b", std::string(value_bytes, 'y')}});
    ASSERT_TRUE(w2.ok()) << w2.status();
    ASSERT_TRUE(WaitFor([&] { return f.Pushes().size() == 2; }, std::chrono::seconds(10)));
    EXPECT_LT(Clock::now() - t0, milliseconds(1500));
    c.reset();
  };
  {
    SCOPED_TRACE("a 100 ms hold");
    second_write_goes_at_once(PromptAckLeader(100'000), 1, "short-hold");
  }
  {
    SCOPED_TRACE("delayed acks");
    NodeServerOptions lo = PromptAckLeader(4'000'000);
    lo.ack_delay_us = 1000;
    second_write_goes_at_once(lo, 1, "delayed-acks");
  }
  {
    SCOPED_TRACE("a full message pending");
    NodeServerOptions lo = PromptAckLeader(4'000'000);
    lo.leader.max_ship_bytes = 1024;
    second_write_goes_at_once(lo, 2048, "catching-up");
  }
}

// A pipeline's writes are independent: each gets its own result and sequence range, in the
// order sent; a bad one fails alone; a pipeline over the limit is refused whole.
TEST_F(RpcTest, PipelineWritesAreIndependentAndOrdered) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  auto c = ConnectOrDie(lo.listen);
  ASSERT_NE(c, nullptr);

  std::vector<std::vector<WriteOp>> writes;
  for (int i = 0; i < 100; ++i) {
    writes.push_back({{OpType::kPut, "k" + std::to_string(i), "v" + std::to_string(i)}});
  }
  writes[50] = {{OpType::kDeleteRange, "z", "a"}};  // invalid: begin sorts after end
  writes[60] = {{OpType::kPut, "m1", "1"}, {OpType::kDelete, "k0", ""}};  // two ops, atomic
  auto r = c->WritePipeline(writes);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), writes.size());
  uint64_t next = 1;
  for (size_t i = 0; i < writes.size(); ++i) {
    if (i == 50) {
      EXPECT_TRUE(absl::IsInvalidArgument((*r)[i].status())) << (*r)[i].status();
      continue;
    }
    ASSERT_TRUE((*r)[i].ok()) << i << ": " << (*r)[i].status();
    EXPECT_EQ((*r)[i]->first_seq, next) << i;
    EXPECT_EQ((*r)[i]->last_seq, next + writes[i].size() - 1) << i;
    next += writes[i].size();
  }
  EXPECT_EQ(c->Status()->latest_seq, next - 1);
  EXPECT_TRUE(absl::IsNotFound(c->Get("k0").status()));  // write 60 came after write 0
  EXPECT_EQ(*c->Get("k99"), "v99");
  EXPECT_EQ(*c->Get("m1"), "1");
  EXPECT_TRUE(absl::IsNotFound(c->Get("k50").status()));

  std::vector<std::vector<WriteOp>> too_many(10001, {{OpType::kPut, "x", "y"}});
  auto big = c->WritePipeline(too_many);
  EXPECT_TRUE(absl::IsInvalidArgument(big.status())) << big.status();
  EXPECT_TRUE(absl::IsNotFound(c->Get("x").status()));
  EXPECT_EQ(c->Status()->latest_seq, next - 1);

  // A follower refuses the whole pipeline with the leader's address.
  NodeServerOptions fo = Options("n2", false, lo.listen);
  RunningNode follower(fo);
  auto f = ConnectOrDie(fo.listen);
  ASSERT_NE(f, nullptr);
  auto refused = f->WritePipeline({{{OpType::kPut, "a", "1"}}, {{OpType::kPut, "b", "2"}}});
  EXPECT_TRUE(IsNotLeader(refused.status())) << refused.status();
  EXPECT_EQ(LeaderHint(refused.status()), lo.listen);
  c.reset();
  f.reset();
}

// WriteMany keeps `depth` writes in flight and stops sending at the first error: a write the
// node refuses stops the writes after it, one the client will not send (too large) still lets
// the earlier ones go; either way the connection stays usable.
TEST_F(RpcTest, WriteManyStopsAtTheFirstErrorAndKeepsItsConnection) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);
  std::vector<std::vector<WriteOp>> writes;
  for (int i = 0; i < 40; ++i) writes.push_back({{OpType::kPut, "k" + std::to_string(i), "v"}});
  writes[5] = {{OpType::kDeleteRange, "z", "a"}};  // refused by the node
  auto c = Client::Connect(lo.listen, absl::Seconds(5));
  ASSERT_TRUE(c.ok()) << c.status();
  auto r = (*c)->WriteMany(writes, 4);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE((*c)->Get("k" + std::to_string(i)).ok()) << i;
  EXPECT_TRUE(absl::IsNotFound((*c)->Get("k39").status()));

  // The first call of a new connection: its preamble must survive the refusal.
  auto fresh = Client::Connect(lo.listen, absl::Seconds(5));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  std::vector<std::vector<WriteOp>> local = {
      {{OpType::kPut, "a0", "v"}},
      {{OpType::kPut, "a1", "v"}},
      {{OpType::kPut, "a2", std::string(schema::MAX_REQUEST_BYTES, 'x')}},
      {{OpType::kPut, "a3", "v"}}};
  auto t = (*fresh)->WriteMany(local, 4);
  EXPECT_TRUE(absl::IsInvalidArgument(t.status())) << t.status();
  EXPECT_TRUE((*fresh)->Write({{OpType::kPut, "after", "v"}}).ok());
  EXPECT_TRUE((*fresh)->Get("a0").ok());
  EXPECT_TRUE((*fresh)->Get("a1").ok());
  EXPECT_TRUE(absl::IsNotFound((*fresh)->Get("a3").status()));
}

// Requests pipelined on one connection take effect in the order sent: each read sees the
// writes sent before it, although writes are served as they arrive and reads at once.
TEST_F(RpcTest, PipelinedRequestsTakeEffectInTheOrderSent) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);
  RawConnection c(lo.listen);
  auto write = [&](const std::string& value) { c.AddPut("a", value); };
  auto get = [&]() {
    capnp::MallocMessageBuilder m;
    m.initRoot<schema::Request>().initGet().setKey(ToData("a"));
    c.Add(m);
  };
  for (int round = 0; round < 20; ++round) {
    write("w" + std::to_string(round));
    get();
    write("x" + std::to_string(round));
    write("y" + std::to_string(round));
    get();
  }
  c.AddStatus();
  c.Send();
  uint64_t seq = 0;
  for (int round = 0; round < 20; ++round) {
    for (const char* expected : {"w", "x", "y"}) {
      auto r = c.Receive();
      auto reply = r->getRoot<schema::Reply>();
      ASSERT_TRUE(reply.isWrite()) << round;
      ASSERT_TRUE(FromCapnp(reply.getWrite().getError()).ok());
      EXPECT_EQ(reply.getWrite().getFirstSeq(), ++seq);
      if (*expected == 'x') continue;  // its get comes after y
      auto g = c.Receive();
      auto got = g->getRoot<schema::Reply>();
      ASSERT_TRUE(got.isGet()) << round;
      ASSERT_TRUE(FromCapnp(got.getGet().getError()).ok()) << round;
      EXPECT_EQ(ToString(got.getGet().getValue()), expected + std::to_string(round));
      EXPECT_EQ(got.getGet().getSeq(), seq);
    }
  }
  auto last = c.Receive();
  ASSERT_TRUE(last->getRoot<schema::Reply>().isStatus());
  EXPECT_EQ(last->getRoot<schema::Reply>().getStatus().getLatestSeq(), 60u);
}

// The writes behind a read that had to wait are served together once it is served: they
// share group commits instead of taking one RocksDB write each.
TEST_F(RpcTest, WritesBehindAWaitingReadStillShareGroupCommits) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  auto client = ConnectOrDie(lo.listen);
  ASSERT_NE(client, nullptr);
  uint64_t groups_before = client->Status()->write_groups;
  RawConnection c(lo.listen);
  c.AddPut("a", "0");
  capnp::MallocMessageBuilder get;
  get.initRoot<schema::Request>().initGet().setKey(ToData("a"));
  c.Add(get);  // waits for the first write
  for (int i = 1; i <= 50; ++i) c.AddPut("a", std::to_string(i));
  c.Add(get);
  c.Send();
  ASSERT_TRUE(c.Receive()->getRoot<schema::Reply>().isWrite());
  auto first = c.Receive();
  ASSERT_TRUE(first->getRoot<schema::Reply>().isGet());
  EXPECT_EQ(ToString(first->getRoot<schema::Reply>().getGet().getValue()), "0");
  for (int i = 1; i <= 50; ++i) ASSERT_TRUE(c.Receive()->getRoot<schema::Reply>().isWrite());
  auto last = c.Receive();
  ASSERT_TRUE(last->getRoot<schema::Reply>().isGet());
  EXPECT_EQ(ToString(last->getRoot<schema::Reply>().getGet().getValue()), "50");
  auto status = client->Status();
  ASSERT_TRUE(status.ok());
  // One group for the first write, then the 50 together (a few at most, if they straddle a
  // loop turn); one group per write would be 51.
  EXPECT_LE(status->write_groups - groups_before, 5u);
  EXPECT_EQ(status->latest_seq, 51u);
}

TEST_F(RpcTest, AnUnknownKindOfRequestIsRefusedAndTheConnectionStaysOpen) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);
  RawConnection c(lo.listen);
  capnp::MallocMessageBuilder unknown;
  auto request = unknown.initRoot<schema::Request>();
  request.setStatus();
  // A kind from a newer client: the union's tag (the first 16 bits of the data) set past the
  // last kind this schema knows.
  auto data = capnp::toAny(request).getDataSection();
  ASSERT_GE(data.size(), 2u);
  data[0] = 99;
  data[1] = 0;
  c.Add(unknown);
  c.AddStatus();
  c.Send();
  absl::Status refused = c.NextRefusal();
  EXPECT_TRUE(absl::IsUnimplemented(refused)) << refused;
  auto s = c.Receive();
  ASSERT_TRUE(s->getRoot<schema::Reply>().isStatus());
  EXPECT_EQ(std::string(s->getRoot<schema::Reply>().getStatus().getNode().cStr()), "n1");
}

TEST_F(RpcTest, AMalformedRequestIsRefusedAndClosesItsConnectionOnly) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  auto good = ConnectOrDie(lo.listen);
  ASSERT_NE(good, nullptr);
  RawConnection c(lo.listen);
  // One segment of two words: a root struct pointer whose target lies far outside it.
  const uint32_t table[2] = {0, 2};
  const uint64_t words[2] = {uint64_t{1000} << 2 | uint64_t{1} << 32, 0};  // 1 data word
  c.Add(std::string_view(reinterpret_cast<const char*>(table), sizeof table));
  c.Add(std::string_view(reinterpret_cast<const char*>(words), sizeof words));
  c.Send();
  absl::Status refused = c.NextRefusal();
  EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
  EXPECT_NE(refused.message().find("malformed request"), std::string_view::npos) << refused;
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(good->Write({{OpType::kPut, "k", "v"}}).ok());  // others are served on
}

// A scan large enough to run on a worker still takes effect before the writes sent after it.
TEST_F(RpcTest, AWriteSentAfterAScanOnAWorkerIsNotSeenByIt) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  auto client = ConnectOrDie(lo.listen);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write({{OpType::kPut, "k", "0"}}).ok());
  RawConnection c(lo.listen);
  for (int round = 1; round <= 20; ++round) {
    capnp::MallocMessageBuilder scan;
    auto s = scan.initRoot<schema::Request>().initScan();
    s.setPrefix(ToData("k"));
    s.setLimit(5000);  // above what a node scans on its loop thread
    c.Add(scan);
    c.AddPut("k" + std::to_string(round), "v");
  }
  c.Send();
  for (int round = 1; round <= 20; ++round) {
    auto r = c.Receive();
    auto reply = r->getRoot<schema::Reply>();
    ASSERT_TRUE(reply.isScan()) << round;
    EXPECT_EQ(reply.getScan().getItems().size(), static_cast<size_t>(round)) << round;
    auto w = c.Receive();
    ASSERT_TRUE(w->getRoot<schema::Reply>().isWrite()) << round;
  }
}

TEST_F(RpcTest, AFieldOfTheWrongTypeIsRefusedAndTheConnectionStaysOpen) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);
  RawConnection c(lo.listen);
  capnp::MallocMessageBuilder bad;
  auto get = bad.initRoot<schema::Request>().initGet();
  // The key (Data) pointer made to point at a struct.
  capnp::toAny(get).getPointerSection()[0].initAs<schema::Error>().setMessage("not a key");
  c.Add(bad);
  // A scan whose request (a struct) is a list of numbers.
  capnp::MallocMessageBuilder bad_scan;
  auto request = bad_scan.initRoot<schema::Request>();
  request.initScan();
  capnp::toAny(request).getPointerSection()[0].initAs<capnp::List<uint64_t>>(3);
  c.Add(bad_scan);
  // A pipeline whose second write has a key of the wrong type: refused whole, its first
  // write not applied either.
  capnp::MallocMessageBuilder bad_many;
  auto many = bad_many.initRoot<schema::Request>().initWriteMany().initWrites(2);
  auto ok_op = many[0].initOps(1);
  ok_op[0].setType(schema::OpType::PUT);
  ok_op[0].setKey(ToData("first"));
  ok_op[0].setValue(ToData("1"));
  auto bad_op = many[1].initOps(1);
  bad_op[0].setType(schema::OpType::PUT);
  capnp::toAny(bad_op[0]).getPointerSection()[0].initAs<schema::Error>().setMessage("no key");
  c.Add(bad_many);
  c.AddStatus();
  c.Send();
  for (int i = 0; i < 3; ++i) {
    absl::Status refused = c.NextRefusal();
    EXPECT_TRUE(absl::IsInvalidArgument(refused)) << i << ": " << refused;
  }
  auto status = c.Receive();
  ASSERT_TRUE(status->getRoot<schema::Reply>().isStatus());
  EXPECT_EQ(status->getRoot<schema::Reply>().getStatus().getLatestSeq(), 0u);
}

TEST_F(RpcTest, ARequestAboveTheSizeLimitIsRefusedOnBothEnds) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  auto client = ConnectOrDie(lo.listen);
  ASSERT_NE(client, nullptr);
  std::string big(schema::MAX_REQUEST_BYTES + 1024, 'x');
  // The client refuses to send it, and its connection is still good.
  auto w = client->Write({{OpType::kPut, "big", big}});
  EXPECT_TRUE(absl::IsInvalidArgument(w.status())) << w.status();
  EXPECT_TRUE(client->Write({{OpType::kPut, "small", "v"}}).ok());
  // A message is measured by what it holds, not by what its root reaches: a status request
  // with a second, unreferenced segment of 65 MiB is refused too.
  {
    RawConnection c(lo.listen);
    capnp::MallocMessageBuilder status;
    status.initRoot<schema::Request>().setStatus();
    auto flat = capnp::messageToFlatArray(status);  // one segment: table word, then words
    uint32_t segment0 = static_cast<uint32_t>(flat.size() - 1);
    uint32_t segment1 = static_cast<uint32_t>(schema::MAX_REQUEST_BYTES / 8 + 1024);
    const uint32_t table[4] = {1, segment0, segment1, 0};
    c.Add(std::string_view(reinterpret_cast<const char*>(table), sizeof table));
    c.Add(std::string_view(reinterpret_cast<const char*>(flat.begin() + 1), segment0 * 8));
    c.Add(std::string(size_t{segment1} * 8, '\0'));
    c.Send();
    absl::Status refused = c.NextRefusal();
    EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
  }
  // A client that sends it anyway is refused, and that connection closes.
  RawConnection c(lo.listen);
  c.AddPut("big", big);
  c.Send();
  absl::Status refused = c.NextRefusal();
  EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(absl::IsNotFound(client->Get("big").status()));
}

// A frame whose segment table declares more than the limit is refused before its body
// comes (the node neither waits for nor buffers it); a one-segment request of 40 MiB, below
// the limit, is measured right and served.
TEST_F(RpcTest, AFrameDeclaringMoreThanTheLimitIsRefusedBeforeItsBody) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);
  {
    RawConnection c(lo.listen);
    const uint32_t table[2] = {0, static_cast<uint32_t>(schema::MAX_REQUEST_BYTES / 8 + 1)};
    c.Add(std::string_view(reinterpret_cast<const char*>(table), sizeof table));
    c.Add(std::string(4096, '\0'));  // a little of the body, never all of it
    c.Send();
    absl::Status refused = c.NextRefusal();  // within the connection's 5 s read bound
    EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
    EXPECT_NE(refused.message().find(std::to_string(schema::MAX_REQUEST_BYTES)),
              std::string_view::npos)
        << refused;
  }
  RawConnection c(lo.listen);
  const size_t value_bytes = 40 << 20;
  capnp::MallocMessageBuilder m(value_bytes / 8 + 64);  // one segment holds it all
  auto ops = m.initRoot<schema::Request>().initWrite().initOps(1);
  ops[0].setType(schema::OpType::PUT);
  ops[0].setKey(ToData("big"));
  ops[0].setValue(ToData(std::string(value_bytes, 'v')));
  ASSERT_EQ(m.getSegmentsForOutput().size(), 1u);
  c.Add(m);
  c.Send();
  auto r = c.Receive();
  auto reply = r->getRoot<schema::Reply>();
  ASSERT_TRUE(reply.isWrite()) << (reply.isRefused() ? FromCapnp(reply.getRefused()).ToString()
                                                     : std::string("?"));
  EXPECT_TRUE(FromCapnp(reply.getWrite().getError()).ok());
}

// The refusal reaches a client that sent more after the malformed request: the node does not
// close with unread bytes (which makes TCP reset the connection and drop the reply) but
// shuts its side, then reads and discards until the client closes, for a bounded time.
TEST_F(RpcTest, ARefusalIsDeliveredEvenWithMoreBytesBehindTheMalformedRequest) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);
  RawConnection c(lo.listen);
  const uint32_t table[2] = {0, 2};
  const uint64_t words[2] = {uint64_t{1000} << 2 | uint64_t{1} << 32, 0};
  c.Add(std::string_view(reinterpret_cast<const char*>(table), sizeof table));
  c.Add(std::string_view(reinterpret_cast<const char*>(words), sizeof words));
  c.Add(std::string(1 << 20, '\0'));  // more than the node reads ahead
  c.Send();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the node has acted
  absl::Status refused = c.NextRefusal();
  EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
}

TEST_F(RpcTest, AnotherProtocolVersionIsRefusedWithoutAReply) {
  NodeServerOptions lo = Options("n1", true, "");
  RunningNode leader(lo);
  ASSERT_NE(ConnectOrDie(lo.listen), nullptr);
  RawConnection c(lo.listen, /*preamble=*/false);
  c.Add("WALSHIP9");
  c.AddStatus();
  c.Send();
  EXPECT_TRUE(c.Closed());
  EXPECT_NE(ConnectOrDie(lo.listen), nullptr);
}

// Every call is bounded by the client's timeout, also when the other end accepts the
// connection and never answers; the next call connects again and is bounded the same way.
TEST_F(RpcTest, ACallToAPeerThatNeverAnswersFailsWithinItsTimeout) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(listener, 8), 0);  // connections complete in the backlog; none is read
  socklen_t len = sizeof a;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
  std::string endpoint = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  auto c = Client::Connect(endpoint, absl::Milliseconds(300));
  ASSERT_TRUE(c.ok()) << c.status();
  for (int call = 0; call < 2; ++call) {
    auto start = std::chrono::steady_clock::now();
    auto s = (*c)->Status();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    EXPECT_TRUE(absl::IsUnavailable(s.status())) << s.status();
    EXPECT_GE(ms, 290) << call;
    EXPECT_LT(ms, 1500) << call;
  }
  ::close(listener);
}

}  // namespace
}  // namespace walship::rpc
