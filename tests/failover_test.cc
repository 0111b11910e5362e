// Automatic failover with nodes in-process on loopback, where a test needs what only
// in-process nodes allow: a disk made slow on command (engine/fault_env.h). The failover of
// real processes killed and paused is in tests/e2e/test_failover.py.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/fault_env.h"
#include "rpc/client.h"
#include "tests/node_harness.h"

namespace walship::rpc {
namespace {

using engine::OpType;
using engine::WriteOp;

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
  RunningNode n1(o[0]), n2(o[1]), n3(o[2]);
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

}  // namespace
}  // namespace walship::rpc
