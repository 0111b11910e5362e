// Automatic failover with nodes in-process on loopback, where a test needs what only
// in-process nodes allow: a disk made slow on command (engine/fault_env.h). The failover of
// real processes killed and paused is in tests/e2e/test_failover.py.
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/fault_env.h"
#include "rpc/client.h"
#include "rpc/cluster_client.h"
#include "tests/node_harness.h"

namespace walship::rpc {
namespace {

using engine::OpType;
using engine::WriteOp;

// What the in-process nodes log, from construction on: attach it before the nodes start
// (the logger's sinks may not change while anything logs) and read it, or let it go, once
// they have stopped. Detached when destroyed, also when a test ends early.
class LogLines {
 public:
  LogLines() { spdlog::default_logger()->sinks().push_back(sink_); }
  ~LogLines() { Detach(); }
  // Every line since construction (up to the last 4096), message only.
  std::vector<std::string> Take() {
    Detach();
    return sink_->last_formatted();
  }

 private:
  void Detach() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_ = [] {
    auto s = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(4096);
    s->set_pattern("%v");
    return s;
  }();
};

class FailoverTest : public NodeTest {
 protected:
  // n1 leads, n2 and n3 follow on the given disks; failover on, the default time-outs.
  std::vector<NodeServerOptions> ThreeNodes(engine::testing::FailingEnv& disk2,
                                            engine::testing::FailingEnv& disk3) {
    std::vector<NodeServerOptions> o = {Options("n1", true, ""), Options("n2", false, ""),
                                        Options("n3", false, "")};
    o[1].leader_address = o[2].leader_address = o[0].listen;
    o[1].engine.env = disk2.env.get();
    o[2].engine.env = disk3.env.get();
    for (auto& n : o) {
      n.failover = true;
      n.heartbeat_interval_ms = 100;
      n.heartbeat_timeout_ms = 5000;  // the stream's own time-out is not what is tested
      for (const auto& peer : o) {
        if (peer.node_id != n.node_id) n.peers[peer.node_id] = peer.listen;
      }
    }
    return o;
  }

  static absl::StatusOr<NodeStatusInfo> StatusOf(const std::string& endpoint) {
    auto c = Client::Connect(endpoint, absl::Seconds(5));
    if (!c.ok()) return c.status();
    return (*c)->Status();
  }
};

// A follower acknowledges a push that asks for a flush only once its WAL is fsynced; the
// leader's lease does not wait for that: it rests on heartbeats that a connection of their own
// carries and that are answered at once (rpc/heartbeats.h). Here every WAL sync of both
// followers takes 1.5 s, past the lease (550 ms) and the election time-out (800 ms), and
// writes that wait for a flushed follower still go through one after another: no write is
// refused for a lapsed lease, the leader never steps down, and no follower stands.
TEST_F(FailoverTest, ASlowFollowerDiskNeitherEndsTheLeaseNorStartsAnElection) {
  engine::testing::FailingEnv disk2, disk3;
  std::vector<NodeServerOptions> o = ThreeNodes(disk2, disk3);
  o[0].commit.cluster = {replication::ReplicationMode::kSemiSync, 1,
                         replication::AckLevel::kFlushed};
  o[0].commit.timeout_ms = 20000;
  LogLines lines;  // before the nodes log
  std::optional<RunningNode> n1(o[0]), n2(o[1]), n3(o[2]);
  auto c = ConnectOrDie(o[0].listen);
  ASSERT_NE(c, nullptr);
  // The lease is held, and both followers answer heartbeats.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = c->Status();
        if (!st.ok() || st->followers.size() != 2) return false;
        if (st->failover.find("lease held") == std::string::npos) return false;
        for (const auto& f : st->followers) {
          if (f.heartbeat_ago_ms < 0) return false;
        }
        return true;
      },
      std::chrono::seconds(10)));
  ASSERT_TRUE(c->Write({{OpType::kPut, "k0", "v"}}).ok());
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(1500));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(1500));
  auto slow = Client::Connect(o[0].listen, absl::Seconds(30));
  ASSERT_TRUE(slow.ok()) << slow.status();
  for (int i = 1; i <= 3; ++i) {
    auto w = (*slow)->Write({{OpType::kPut, "k" + std::to_string(i), "v"}});
    ASSERT_TRUE(w.ok()) << i << ": " << w.status();
    auto st = c->Status();
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->role, "leader");
    EXPECT_EQ(st->epoch, 1u);
    EXPECT_NE(st->failover.find("lease held"), std::string::npos) << st->failover;
    for (const auto& f : st->followers) EXPECT_FALSE(f.silent) << f.id;
  }
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  for (const auto& n : {o[1], o[2]}) {
    auto f = ConnectOrDie(n.listen);
    ASSERT_NE(f, nullptr);
    auto st = f->Status();
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->epoch, 1u) << n.node_id;  // no follower stood
    EXPECT_GE(st->leader_heartbeat_ago_ms, 0) << n.node_id;
  }
  // The nodes said why the writes waited.
  n1.reset();
  n2.reset();
  n3.reset();
  std::vector<std::string> logged = lines.Take();
  EXPECT_TRUE(std::any_of(logged.begin(), logged.end(), [](const std::string& l) {
    return absl::StartsWith(l, "slow WAL fsync: ") &&
           absl::StrContains(l, " ms for a follower's acknowledgements");
  }));
}

// An asynchronous cluster whose followers lag far behind their leader when it dies: with
// max_failover_lag neither stands (their leader held writes they lack), status says why, and
// `walship promote` refuses to lose writes unless told to accept the loss, which it then
// reports. Both followers' disks are slow (every apply waits for a 250 ms WAL sync, which
// holds up neither heartbeats nor status) and the leader's messages small, so they hear of
// the leader's writes seconds before they hold them.
TEST_F(FailoverTest, AFollowerTooFarBehindIsNotElectedUnlessPromotedAcceptingTheLoss) {
  engine::testing::FailingEnv disk2, disk3;
  std::vector<NodeServerOptions> o = ThreeNodes(disk2, disk3);
  for (auto& n : o) {
    n.max_failover_lag = 20;
    n.fsync_apply = true;
  }
  // Messages of about 1 KiB, four in flight: a follower hears the leader's position with
  // each, long before it holds the writes up to it.
  o[0].leader.max_ship_bytes = 1024;
  std::optional<RunningNode> n1(o[0]);
  RunningNode n2(o[1]), n3(o[2]);
  auto c = ConnectOrDie(o[0].listen);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto w = c->Write({{OpType::kPut, "first", "v"}});
        return w.ok();  // once the lease is held
      },
      std::chrono::seconds(10)));
  ASSERT_TRUE(WaitFor([&] { return LatestSeq(o[1].listen) == 1 && LatestSeq(o[2].listen) == 1; },
                      std::chrono::seconds(10)));
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(250));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(250));
  std::vector<std::vector<WriteOp>> writes;
  for (int i = 0; i < 300; ++i) {
    writes.push_back({{OpType::kPut, "k" + std::to_string(i), std::string(100, 'v')}});
  }
  auto many = c->WriteMany(writes, 16);
  ASSERT_TRUE(many.ok()) << many.status();  // async: acknowledged by the leader alone
  // Both followers have heard of writes they do not hold yet.
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& n : {o[1], o[2]}) {
          auto st = StatusOf(n.listen);
          if (!st.ok() || st->leader_latest_seq != 301 || st->lag_seq <= 100) return false;
        }
        return true;
      },
      std::chrono::seconds(10)));
  // Meanwhile the leader held its lease and neither follower thought of standing: their
  // applies wait for the disk, their heartbeat answers do not.
  auto leading = StatusOf(o[0].listen);
  ASSERT_TRUE(leading.ok()) << leading.status();
  EXPECT_NE(leading->failover.find("lease held"), std::string::npos) << leading->failover;
  for (const auto& n : {o[1], o[2]}) {
    auto st = StatusOf(n.listen);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->failover.find("may not stand"), std::string::npos) << st->failover;
  }
  n1.reset();  // the leader is gone
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  // Past the election time-out both say why they do not stand, and neither leads.
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& n : {o[1], o[2]}) {
          auto st = StatusOf(n.listen);
          if (!st.ok() || st->failover.find("may not stand") == std::string::npos) return false;
        }
        return true;
      },
      std::chrono::seconds(10)));
  for (const auto& n : {o[1], o[2]}) {
    auto st = StatusOf(n.listen);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->role, "follower") << n.node_id;
    EXPECT_NE(st->failover.find("max_failover_lag (20)"), std::string::npos) << st->failover;
  }
  // The one holding more is promoted (the other would refuse its vote to the one holding
  // less: the most up-to-date rule holds for a promotion too).
  std::string pick = LatestSeq(o[1].listen) >= LatestSeq(o[2].listen) ? "n2" : "n3";
  const std::string& at = pick == "n2" ? o[1].listen : o[2].listen;
  uint64_t held = LatestSeq(at);
  ASSERT_LT(held, 301u);
  auto p = Client::Connect(at, absl::Seconds(10));
  ASSERT_TRUE(p.ok()) << p.status();
  auto refused = (*p)->Promote(/*accept_loss=*/false);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find(absl::StrCat("may lose at least ", 301 - held)),
            std::string::npos)
      << refused.status();
  auto promoted = (*p)->Promote(/*accept_loss=*/true);
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  EXPECT_EQ(promoted->leader, pick);
  EXPECT_GE(promoted->epoch, 2u);
  EXPECT_EQ(promoted->possible_loss, 301 - held);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto w = (*p)->Write({{OpType::kPut, "after", "1"}});
        return w.ok();
      },
      std::chrono::seconds(10)));
  auto st = StatusOf(at);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->role, "leader");
}

// A write whose answer is lost is in doubt: here the leader waits for a follower's fsync (3 s
// on both followers' disks) longer than the client waits, so the client gives up on a write
// the leader did make. Sent again with its request id, the same write is answered with its
// first outcome once that fsync is done, and nothing is written twice.
TEST_F(FailoverTest, AWriteWhoseAnswerIsLostIsInDoubtAndItsRequestIdMakesTheRetrySafe) {
  engine::testing::FailingEnv disk2, disk3;
  std::vector<NodeServerOptions> o = ThreeNodes(disk2, disk3);
  o[0].commit.cluster = {replication::ReplicationMode::kSemiSync, 1,
                         replication::AckLevel::kFlushed};
  o[0].commit.timeout_ms = 30000;
  RunningNode n1(o[0]), n2(o[1]), n3(o[2]);
  auto c = ConnectOrDie(o[0].listen);
  ASSERT_NE(c, nullptr);
  WriteOptions async;
  async.mode = replication::ReplicationMode::kAsync;
  c->SetWriteOptions(async);
  ASSERT_TRUE(WaitFor(
      [&] {
        return c->Write({{OpType::kPut, "k0", "v"}}).ok();
      },
      std::chrono::seconds(10)));  // the lease is held
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(3000));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(3000));
  auto impatient = Client::Connect(o[0].listen, absl::Seconds(1));
  ASSERT_TRUE(impatient.ok()) << impatient.status();
  uint64_t before = LatestSeq(o[0].listen);
  auto lost = (*impatient)->Write({{OpType::kPut, "a", "1"}});
  ASSERT_FALSE(lost.ok());
  EXPECT_TRUE(IsInDoubt(lost.status())) << lost.status();
  EXPECT_EQ(LatestSeq(o[0].listen), before + 1) << "in doubt, and made all the same";
  auto lost_with_id = (*impatient)->WriteWithId({{OpType::kPut, "b", "first"}}, "req-b");
  ASSERT_FALSE(lost_with_id.ok());
  EXPECT_TRUE(IsInDoubt(lost_with_id.status())) << lost_with_id.status();
  const uint64_t written = LatestSeq(o[0].listen);
  EXPECT_EQ(written, before + 3) << "the put and its request record";
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  auto patient = Client::Connect(o[0].listen, absl::Seconds(30));
  ASSERT_TRUE(patient.ok()) << patient.status();
  auto again = (*patient)->WriteWithId({{OpType::kPut, "b", "second"}}, "req-b");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->first_seq, before + 2);
  EXPECT_EQ(again->last_seq, before + 2);
  EXPECT_EQ(again->epoch, 1u);
  EXPECT_EQ(LatestSeq(o[0].listen), written) << "nothing written twice";
  auto b = (*patient)->Get("b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, "first");
  // A new id is a new write.
  auto fresh = (*patient)->WriteWithId({{OpType::kPut, "b", "third"}}, "req-c");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->duplicate);
  EXPECT_EQ(fresh->first_seq, written + 1);
}

// A request id travels with its write to the followers, so the leader elected after the one
// that made the write answers a retry with the first outcome too: the same sequence numbers,
// the epoch it was written in, and the value it wrote, not the retry's.
TEST_F(FailoverTest, ARequestIdIsAnsweredWithItsFirstOutcomeByTheNextLeader) {
  engine::testing::FailingEnv disk2, disk3;
  std::vector<NodeServerOptions> o = ThreeNodes(disk2, disk3);
  for (auto& n : o) n.heartbeat_timeout_ms = 1000;
  std::optional<RunningNode> n1(o[0]);
  RunningNode n2(o[1]), n3(o[2]);
  auto c = ConnectOrDie(o[0].listen);
  ASSERT_NE(c, nullptr);
  absl::StatusOr<WriteResult> first = absl::UnknownError("not yet");
  ASSERT_TRUE(WaitFor(
      [&] {
        first = c->WriteWithId({{OpType::kPut, "id", "first"}}, "order-17");
        return first.ok();
      },
      std::chrono::seconds(10)));
  EXPECT_FALSE(first->duplicate);
  auto same = c->WriteWithId({{OpType::kPut, "id", "retried"}}, "order-17");
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->duplicate);
  EXPECT_EQ(same->first_seq, first->first_seq);
  EXPECT_EQ(same->last_seq, first->last_seq);
  EXPECT_EQ(LatestSeq(o[0].listen), first->last_seq + 1) << "the put and its request record, once";
  // A client of the cluster, which keeps its connection to n1 from this write on.
  ClusterClientOptions co;
  co.leader_wait = absl::Seconds(20);
  std::vector<std::string> told;
  co.on_refusal = [&](const std::string& line) { told.push_back(line); };
  ClusterClient cluster({o[0].listen, o[1].listen, o[2].listen}, co);
  auto warm = cluster.Write({{OpType::kPut, "warm", "1"}});
  ASSERT_TRUE(warm.ok()) << warm.status();
  EXPECT_EQ(cluster.leader(), o[0].listen);
  const uint64_t latest = warm->last_seq;
  ASSERT_TRUE(
      WaitFor([&] { return LatestSeq(o[1].listen) == latest && LatestSeq(o[2].listen) == latest; },
              std::chrono::seconds(10)));
  n1.reset();  // the leader is gone; one of the others is elected
  // A write without an id, sent while they elect: the kept connection to n1 is found closed
  // (not written into and reported in doubt), the others name n1 or no leader, and the
  // client waits the election out, following the leader they then name.
  auto during = cluster.Write({{OpType::kPut, "during", "failover"}});
  ASSERT_TRUE(during.ok()) << during.status();
  auto waited = [](const std::string& l) { return absl::StrContains(l, "asking again in"); };
  EXPECT_TRUE(std::any_of(told.begin(), told.end(), waited)) << "the election was waited out";
  EXPECT_EQ(during->last_seq, latest + 1) << "written once";
  EXPECT_NE(cluster.leader(), o[0].listen);
  // The id's write again: the new leader knows it from the replicated write.
  told.clear();
  auto retried = cluster.WriteWithId({{OpType::kPut, "id", "retried"}}, "order-17");
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_TRUE(told.empty()) << told.front();  // straight to the leader now
  auto next = ConnectOrDie(cluster.leader());
  ASSERT_NE(next, nullptr);
  EXPECT_TRUE(retried->duplicate);
  EXPECT_EQ(retried->first_seq, first->first_seq);
  EXPECT_EQ(retried->epoch, first->epoch) << "the epoch it was written in";
  auto v = next->Get("id");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, "first");
  auto st = next->Status();
  ASSERT_TRUE(st.ok());
  EXPECT_GT(st->epoch, first->epoch);
  EXPECT_EQ(st->latest_seq, latest + 1) << "the retry wrote nothing";
}

// A follower that votes for a candidate asks it for its stream at once, before the candidate
// leads: the candidate holds that hello and answers it as leader, instead of telling the
// follower to ask again after its reconnect pause. Here every WAL fsync takes 300 ms, so the
// winner spends that long between its win and leading (it fsyncs first); the follower's hello
// comes in meanwhile, and no node ever tells it to ask again.
TEST_F(FailoverTest, AHelloToANodeAboutToLeadIsAnsweredOnceItLeads) {
  engine::testing::FailingEnv disk2, disk3;
  std::vector<NodeServerOptions> o = ThreeNodes(disk2, disk3);
  for (auto& n : o) {
    n.heartbeat_timeout_ms = 1000;
    n.commit.cluster = {replication::ReplicationMode::kSemiSync, 1,
                        replication::AckLevel::kReceived};
  }
  LogLines lines;  // what the three nodes log, from before they start
  std::optional<RunningNode> n1(o[0]), n2(o[1]), n3(o[2]);
  auto c = ConnectOrDie(o[0].listen);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(WaitFor([&] { return c->Write({{OpType::kPut, "k", "v"}}).ok(); },
                      std::chrono::seconds(10)));
  ASSERT_TRUE(WaitFor([&] { return LatestSeq(o[1].listen) == 1 && LatestSeq(o[2].listen) == 1; },
                      std::chrono::seconds(10)));
  c.reset();
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(300));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(300));
  n1.reset();  // the leader is gone; one of the others is elected
  std::string winner, other;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (size_t i : {1u, 2u}) {
          auto st = StatusOf(o[i].listen);
          auto peer = StatusOf(o[3 - i].listen);
          if (!st.ok() || !peer.ok() || st->role != "leader") continue;
          if (peer->leader_id != o[i].node_id || peer->replication_state != "streaming") continue;
          // And it takes writes: the votes' lease ran out while it fsynced (300 ms each), so
          // it holds one once the other answers a heartbeat, a few ms after leading.
          if (!absl::StrContains(st->failover, "lease held")) continue;
          winner = o[i].node_id;
          other = o[3 - i].node_id;
          return true;
        }
        return false;
      },
      std::chrono::seconds(20)));
  const std::string& at = winner == "n2" ? o[1].listen : o[2].listen;
  auto w = Client::Connect(at, absl::Seconds(10));
  ASSERT_TRUE(w.ok()) << w.status();
  auto after = (*w)->Write({{OpType::kPut, "after", "1"}});  // acknowledged by the other
  EXPECT_TRUE(after.ok()) << after.status();
  disk2.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  disk3.fs->set_wal_sync_delay(std::chrono::milliseconds(0));
  n2.reset();
  n3.reset();
  std::vector<std::string> logged = lines.Take();
  const std::string voted = absl::StrCat("voted for '", winner, "'");
  const std::string asked_again =
      absl::StrCat("refused follower '", other, "': not the leader; named '", winner, "'");
  EXPECT_TRUE(std::any_of(logged.begin(), logged.end(),
                          [&](const std::string& l) { return l.find(voted) != l.npos; }))
      << "the follower's hello came after its vote (it is what this test is about)";
  EXPECT_TRUE(std::any_of(logged.begin(), logged.end(), [](const std::string& l) {
    return absl::StartsWith(l, "lease held ") &&
           absl::StrContains(l, " ms after this node began leading; writes are taken");
  })) << "the new leader says when it first held its lease";
  for (const std::string& l : logged) {
    EXPECT_FALSE(absl::StrContains(l, asked_again)) << "the follower was told to ask again: " << l;
  }
}

}  // namespace
}  // namespace walship::rpc
