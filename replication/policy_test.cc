// Unit tests of the replication policies driven by events and times handed in: the leader's
// Shipper (window, pacing, heartbeats, wake-ups) and the follower's FollowerLink (connects,
// backoff, the silence time-out, held acks, retargeting on a refusal's hint).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "replication/follower_link.h"
#include "replication/shipper.h"
#include "replication/test_fixtures.h"

namespace walship::replication {
namespace {

using namespace ::walship::replication::testing;  // NOLINT: the fixtures of these tests

constexpr int64_t kT0 = 1'000'000;

// A leader with a Shipper and one subscribed follower session.
struct ShipperFixture {
  explicit ShipperFixture(ShipperOptions so)
      : l(dir, &clock), shipper(*l.leader, so), f(dir, "f1", &clock) {
    Outbox out;
    HelloReply reply = shipper.OnHello(f.follower->MakeHello(), &session, kT0, &out);
    EXPECT_EQ(reply.outcome, HelloOutcome::kAccepted) << reply.message;
    EXPECT_TRUE(f.follower->OnHelloReply(reply).ok());
  }
  TempDir dir;
  FakeClock clock;
  LeaderNode l;
  Shipper shipper;
  FollowerNode f;
  uint64_t session = 0;
};

ShipperOptions Paced() {
  ShipperOptions so;
  so.max_inflight_ships = 2;
  so.min_ship_interval_us = 300;
  so.max_ship_hold_us = 500;
  so.heartbeat_interval_ms = 100;
  return so;
}

// A caught-up follower gets one message in flight; writes behind it wait for its ack or for
// max_ship_hold_us, and the wake-up says when.
TEST(ShipperTest, WritesWaitForTheAckInFlightAtMostTheHoldTime) {
  ShipperFixture fx(Paced());
  fx.l.Write();
  Outbox out;
  fx.shipper.Pump(kT0 + 1'000, &out);  // the interval since the subscription has passed
  ASSERT_EQ(out.sends.size(), 1u);
  fx.l.Write();
  Outbox held;
  fx.shipper.Pump(kT0 + 1'010, &held);
  EXPECT_TRUE(held.sends.empty()) << "a write behind the message in flight waits";
  EXPECT_EQ(fx.shipper.NextWakeUp(), kT0 + 1'010 + 500);
  Outbox due;
  fx.shipper.Pump(kT0 + 1'510, &due);
  ASSERT_EQ(due.sends.size(), 1u) << "the hold ends: it goes without the ack";
  EXPECT_EQ(due.sends[0].ship.batches.size(), 1u);
  // The window is full now: nothing more goes until an ack.
  fx.l.Write();
  Outbox full;
  fx.shipper.Pump(kT0 + 5'000, &full);
  EXPECT_TRUE(full.sends.empty());
  auto ack = fx.f.follower->OnShip(out.sends[0].ship, {});
  ASSERT_TRUE(ack.ok());
  Outbox after;
  fx.shipper.OnAck(fx.session, *ack, &after);
  fx.shipper.Pump(kT0 + 5'001, &after);
  EXPECT_TRUE(after.sends.empty()) << "the other message is still in flight: it waits";
  EXPECT_EQ(fx.shipper.NextWakeUp(), kT0 + 5'001 + 500);
  fx.shipper.Pump(kT0 + 5'501, &after);
  EXPECT_EQ(after.sends.size(), 1u) << "the ack made room in the window";
}

// An idle follower gets a heartbeat every heartbeat_interval_ms, and the wake-up is always
// later than the pump that computed it (a transport waking at it never spins).
TEST(ShipperTest, HeartbeatsComeEveryIntervalAndWakeUpsAreAlwaysAhead) {
  ShipperFixture fx(Paced());
  int64_t now = kT0;
  int beats = 0;
  for (int i = 0; i < 50; ++i) {
    Outbox out;
    fx.shipper.Pump(now, &out);
    for (auto& s : out.sends) {
      EXPECT_TRUE(s.ship.batches.empty());
      ++beats;
      auto ack = fx.f.follower->OnShip(s.ship, {});
      ASSERT_TRUE(ack.ok());
      Outbox acked;
      fx.shipper.OnAck(s.session, *ack, &acked);
      fx.shipper.Pump(now, &acked);  // as a transport does after every event
    }
    int64_t wake = fx.shipper.NextWakeUp();
    ASSERT_GT(wake, now);
    ASSERT_LE(wake, now + 100'000);
    now = wake;
  }
  EXPECT_GE(beats, 20);
  EXPECT_LE(now - kT0, 50 * 100'000 + 100'000);
}

// A stream that ends (a lost connection) is forgotten: no more sends, no wake-ups for it.
TEST(ShipperTest, ALostStreamIsForgotten) {
  ShipperFixture fx(Paced());
  fx.shipper.OnLost(fx.session);
  fx.l.Write();
  Outbox out;
  fx.shipper.Pump(kT0 + 1'000'000, &out);
  EXPECT_TRUE(out.sends.empty());
  EXPECT_EQ(fx.shipper.NextWakeUp(), kNever);
  EXPECT_EQ(fx.shipper.sessions(), 0u);
}

struct LinkFixture {
  LinkFixture() : l(dir, &clock), f(dir, "f1", &clock), link(*f.follower, Options(), "leader") {}
  static FollowerLinkOptions Options() {
    FollowerLinkOptions lo;
    lo.node_id = "f1";
    lo.heartbeat_timeout_ms = 1000;
    lo.connect_timeout_ms = 200;
    lo.reconnect_min_ms = 10;
    lo.reconnect_max_ms = 80;
    return lo;
  }
  // Starts the link and completes its handshake with the leader at `now`.
  void Stream(int64_t now) {
    LinkOutbox out;
    link.Start(now, &out);
    ASSERT_TRUE(out.connect.has_value());
    uint64_t sid = 0;
    HelloReply reply = l.leader->OnHello(out.connect->hello, &sid);
    LinkOutbox answered;
    link.OnHelloReply(out.connect->generation, reply, now, &answered);
    ASSERT_TRUE(link.streaming()) << reply.message;
  }
  TempDir dir;
  FakeClock clock;
  LeaderNode l;
  FollowerNode f;
  FollowerLink link;
};

// Failed connections back off, doubling up to the maximum; a connection that takes longer
// than connect_timeout_ms fails too.
TEST(FollowerLinkTest, ReconnectsBackOffUpToTheMaximum) {
  LinkFixture fx;
  LinkOutbox out;
  fx.link.Start(kT0, &out);
  ASSERT_TRUE(out.connect.has_value());
  EXPECT_EQ(out.connect->leader_id, "leader");
  int64_t now = kT0;
  std::vector<int64_t> pauses;
  for (int i = 0; i < 5; ++i) {
    LinkOutbox lost;
    fx.link.OnConnectionLost(fx.link.generation(), "refused", now, &lost);
    EXPECT_TRUE(lost.drop);
    int64_t at = fx.link.NextWakeUp();
    pauses.push_back(at - now);
    LinkOutbox again;
    fx.link.Tick(at, 0, &again);
    ASSERT_TRUE(again.connect.has_value()) << "reconnects when the pause ends";
    now = at;
  }
  EXPECT_EQ(pauses, (std::vector<int64_t>{10'000, 20'000, 40'000, 80'000, 80'000}));
  LinkOutbox slow;
  fx.link.Tick(now + 200'000, 0, &slow);
  EXPECT_TRUE(slow.drop) << "no answer within connect_timeout_ms";
}

// With search_leader (automatic failover), a follower that cannot reach the node it follows
// tries the other members in turn (id order, itself left out); a node that refuses naming
// itself (it stands for leader) is asked again; a vote makes it follow the candidate at once.
TEST(FollowerLinkTest, SearchingForTheLeaderTriesTheMembersInTurn) {
  TempDir dir;
  FakeClock clock;
  NodeState s;
  s.membership.version = 1;
  for (const char* id : {"f1", "f2", "f3", "leader"})
    s.membership.members.push_back({id, "", true});
  FollowerNode f(dir, "f1", &clock, s);
  FollowerLinkOptions lo = LinkFixture::Options();
  lo.search_leader = true;
  FollowerLink link(*f.follower, lo, "leader");
  LinkOutbox out;
  link.Start(kT0, &out);
  ASSERT_TRUE(out.connect.has_value());
  int64_t now = kT0;
  std::vector<std::string> tried = {out.connect->leader_id};
  for (int i = 0; i < 3; ++i) {
    LinkOutbox lost;
    link.OnConnectionLost(link.generation(), "refused", now, &lost);
    now = link.NextWakeUp();
    LinkOutbox again;
    link.Tick(now, 0, &again);
    ASSERT_TRUE(again.connect.has_value());
    tried.push_back(again.connect->leader_id);
  }
  EXPECT_EQ(tried, (std::vector<std::string>{"leader", "f2", "f3", "leader"}));

  // "leader" refuses naming itself: asked again soon, not passed over.
  HelloReply standing;
  standing.outcome = HelloOutcome::kRefused;
  standing.message = "not the leader yet";
  standing.leader_hint = "leader";
  LinkOutbox refused;
  link.OnHelloReply(link.generation(), standing, now, &refused);
  EXPECT_EQ(link.leader_id(), "leader");
  EXPECT_EQ(link.NextWakeUp() - now, int64_t{lo.reconnect_min_ms} * 1000);

  // This node voted for f3: it connects there at once.
  LinkOutbox voted;
  link.Follow("f3", "which this node voted for", now, &voted);
  ASSERT_TRUE(voted.connect.has_value());
  EXPECT_EQ(voted.connect->leader_id, "f3");
  EXPECT_EQ(link.leader_id(), "f3");
}

// A vote taken refuses the old leader at once, before it is saved: its messages are stale,
// and acks and hellos name the new epoch, so no leader of an older one counts them. Saved,
// it survives a restart; a node that voted for another cannot save a win in that epoch.
TEST(FollowerVoteTest, AVoteTakenFencesTheOldLeaderAtOnce) {
  LinkFixture fx;
  fx.Stream(kT0);
  Follower& f = *fx.f.follower;
  Epoch old_epoch = f.epoch();
  ASSERT_TRUE(f.TakeVote(old_epoch + 1, "f2").ok());
  EXPECT_FALSE(f.TakeVote(old_epoch + 1, "f3").ok()) << "one vote per epoch";
  EXPECT_TRUE(f.TakeVote(old_epoch + 1, "f2").ok()) << "the same vote again";
  Ship ship;
  ship.epoch = old_epoch;
  auto ack = f.OnShip(ship, engine::WriteOptions{});
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->outcome, AckOutcome::kStale);
  EXPECT_EQ(ack->epoch, old_epoch + 1);
  EXPECT_EQ(f.MakeHello().epoch, old_epoch + 1);
  EXPECT_EQ(LoadNodeState(fx.f.state_path)->vote_epoch, 0u) << "taken, not saved yet";
  ASSERT_TRUE(f.SaveVote(old_epoch + 1, "f2").ok());
  EXPECT_EQ(LoadNodeState(fx.f.state_path)->vote_epoch, old_epoch + 1);
  EXPECT_EQ(LoadNodeState(fx.f.state_path)->voted_for, "f2");
  EXPECT_FALSE(f.SaveElected(old_epoch + 1).ok()) << "its vote went to f2";
  // Its own vote in a later epoch: it may lead it, from its log's end + 1.
  ASSERT_TRUE(f.TakeVote(old_epoch + 2, "f1").ok());
  auto led = f.SaveElected(old_epoch + 2);
  ASSERT_TRUE(led.ok()) << led.status();
  EXPECT_EQ(led->role, "leader");
  EXPECT_EQ(led->history.back().epoch, old_epoch + 2);
  EXPECT_EQ(LoadNodeState(fx.f.state_path)->epoch, old_epoch + 2);
}

// Without search_leader a follower keeps asking the node it follows.
TEST(FollowerLinkTest, WithoutSearchingItKeepsItsLeader) {
  LinkFixture fx;
  LinkOutbox out;
  fx.link.Start(kT0, &out);
  LinkOutbox lost;
  fx.link.OnConnectionLost(fx.link.generation(), "refused", kT0, &lost);
  LinkOutbox again;
  fx.link.Tick(fx.link.NextWakeUp(), 0, &again);
  ASSERT_TRUE(again.connect.has_value());
  EXPECT_EQ(again.connect->leader_id, "leader");
}

// Silence past heartbeat_timeout_ms drops the connection; bytes of a large message still
// arriving count as life.
TEST(FollowerLinkTest, SilenceDropsTheConnectionButArrivingBytesDoNot) {
  LinkFixture fx;
  fx.Stream(kT0);
  uint64_t bytes = 0;
  for (int64_t t = kT0 + 250'000; t <= kT0 + 3'000'000; t += 250'000) {
    LinkOutbox out;
    fx.link.Tick(t, bytes += 4096, &out);
    ASSERT_FALSE(out.drop) << "bytes arrived in every look, at " << t - kT0 << " us";
  }
  int64_t quiet_from = kT0 + 3'000'000;
  LinkOutbox quiet;
  fx.link.Tick(quiet_from + 900'000, bytes, &quiet);
  EXPECT_FALSE(quiet.drop);
  fx.link.Tick(quiet_from + 1'100'000, bytes, &quiet);
  EXPECT_TRUE(quiet.drop) << "1.1 s of silence";
  EXPECT_FALSE(fx.link.streaming());
}

// Bytes that arrive once the stream is gone (a node that does not lead answering a search)
// say nothing of the leader: its last contact stays where the stream ended, so a voter does
// not stay loyal to a dead leader.
TEST(FollowerLinkTest, BytesAfterTheStreamEndedAreNoContactWithTheLeader) {
  LinkFixture fx;
  fx.Stream(kT0);
  LinkOutbox lost;
  fx.link.OnConnectionLost(fx.link.generation(), "the leader closed the connection",
                           kT0 + 100'000, &lost);
  int64_t contact = fx.link.last_contact_us();
  uint64_t bytes = 0;
  for (int64_t t = kT0 + 250'000; t <= kT0 + 2'000'000; t += 250'000) {
    LinkOutbox out;
    fx.link.Tick(t, bytes += 512, &out);
  }
  EXPECT_EQ(fx.link.last_contact_us(), contact);
}

// A follower knows itself caught up as of the ack time its leader echoes, once it has applied
// as far as the leader's message said the leader's log ended; the time a message spent in
// flight does not count, and a message that does not bring it that far counts once a later
// one has.
TEST(FollowerLinkTest, ItKnowsItselfCaughtUpAsOfTheAckItsLeaderEchoes) {
  LinkFixture fx;
  fx.Stream(kT0);
  std::vector<Batch> b;
  for (int i = 0; i < 3; ++i) b.push_back(fx.l.Write());
  auto push = [&](uint64_t id, std::vector<Batch> batches, SequenceNumber leader_latest,
                  int64_t echo_us, int64_t now) {
    Ship ship = ShipOf(fx.l.leader->epoch(), std::move(batches));
    ship.leader_latest = leader_latest;
    ship.echo_us = echo_us;
    LinkOutbox out;
    std::string why;
    EXPECT_TRUE(fx.link.OnPush(fx.link.generation(), id, ship, now, &out, &why)) << why;
    EXPECT_EQ(out.answers.size(), 1u);
    if (!out.answers.empty()) {
      EXPECT_EQ(out.answers[0].ack.sent_us, now) << "acks are stamped";
    }
  };
  push(1, {b[0]}, b[0].last_seq(), 0, kT0 + 10);
  EXPECT_EQ(fx.link.caught_up_us(), 0) << "no echo: the leader had no ack of ours yet";
  // Sent after the leader had our ack of kT0 + 10, received 5 s later: caught up as of then.
  push(2, {b[1]}, b[2].last_seq(), kT0 + 10, kT0 + 5'000'000);
  EXPECT_EQ(fx.link.caught_up_us(), 0) << "the leader had seq " << b[2].last_seq();
  push(3, {b[2]}, b[2].last_seq(), kT0 + 20, kT0 + 5'000'010);
  EXPECT_EQ(fx.link.caught_up_us(), kT0 + 20);
  push(4, {}, b[2].last_seq(), kT0 + 9'000'000, kT0 + 5'000'020);
  EXPECT_EQ(fx.link.caught_up_us(), kT0 + 20) << "an echo from the future is ignored";
  // The leader echoes the last ack it had.
  Ack ack;
  ack.epoch = fx.l.leader->epoch();
  ack.applied = b[2].last_seq();
  ack.sent_us = kT0 + 5'000'010;
  fx.l.leader->OnAck(1, ack);
  auto next = fx.l.leader->NextShip(1, /*heartbeat=*/true);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->echo_us, kT0 + 5'000'010);
}

// Acks may be held as long as the leader allows (capped at a quarter of the time-out); an
// ack that may not wait releases every held one first, in order.
TEST(FollowerLinkTest, HeldAcksGoOutInOrderWithTheFirstThatCannotWait) {
  LinkFixture fx;
  fx.Stream(kT0);
  std::vector<Batch> batches;
  for (int i = 0; i < 3; ++i) batches.push_back(fx.l.Write());
  LinkOutbox out;
  for (int i = 0; i < 2; ++i) {
    Ship ship = ShipOf(fx.l.leader->epoch(), {batches[i]});
    ship.max_ack_delay_us = 10'000'000;  // more than the cap: held at most 250 ms
    std::string why;
    ASSERT_TRUE(fx.link.OnPush(fx.link.generation(), 1 + i, ship, kT0 + 10, &out, &why)) << why;
  }
  EXPECT_TRUE(out.answers.empty()) << "both held";
  EXPECT_LE(fx.link.NextWakeUp(), kT0 + 10 + 250'000) << "released within the cap";
  Ship prompt = ShipOf(fx.l.leader->epoch(), {batches[2]});
  std::string why;
  ASSERT_TRUE(fx.link.OnPush(fx.link.generation(), 3, prompt, kT0 + 20, &out, &why)) << why;
  ASSERT_EQ(out.answers.size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(out.answers[i].push, i + 1);
  EXPECT_EQ(out.answers.back().ack.applied, batches[2].last_seq());
}

// A small message is applied on the caller's thread (the node's event loop), unless every
// apply waits for an fsync: then it is handed out like a large one, so that a slow disk never
// holds up what that thread answers (heartbeats, status, votes).
TEST(FollowerLinkTest, AnApplyThatWaitsForTheDiskIsHandedOut) {
  for (bool fsync_apply : {false, true}) {
    TempDir dir;
    FakeClock clock;
    LeaderNode l(dir, &clock);
    FollowerNode f(dir, "f1", &clock, std::nullopt, kCluster, fsync_apply);
    FollowerLink link(*f.follower, LinkFixture::Options(), "leader");
    LinkOutbox started;
    link.Start(kT0, &started);
    ASSERT_TRUE(started.connect.has_value());
    uint64_t sid = 0;
    LinkOutbox answered;
    link.OnHelloReply(started.connect->generation, l.leader->OnHello(started.connect->hello, &sid),
                      kT0, &answered);
    ASSERT_TRUE(link.streaming());
    Batch b = l.Write();
    LinkOutbox out;
    std::string why;
    ASSERT_TRUE(
        link.OnPush(link.generation(), 1, ShipOf(l.leader->epoch(), {b}), kT0 + 10, &out, &why))
        << why;
    if (!fsync_apply) {
      EXPECT_FALSE(out.apply.has_value());
      ASSERT_EQ(out.answers.size(), 1u) << "applied inline and answered";
      continue;
    }
    ASSERT_TRUE(out.apply.has_value()) << "an fsynced apply is handed out";
    EXPECT_TRUE(out.answers.empty());
    EXPECT_EQ(f.engine->LatestSequence(), 0u) << "nothing applied on the caller's thread";
    LinkOutbox applied;
    link.OnApplied(out.apply->push, f.follower->OnShip(out.apply->ship, {}), kT0 + 20, &applied);
    ASSERT_EQ(applied.answers.size(), 1u);
    EXPECT_EQ(applied.answers[0].ack.applied, b.last_seq());
    EXPECT_EQ(applied.answers[0].ack.durable, b.last_seq()) << "fsynced before the ack";
  }
}

// A node that does not lead names the one it follows; the link follows that name, at once.
TEST(FollowerLinkTest, ARefusalNamingTheLeaderIsFollowed) {
  LinkFixture fx;
  LinkOutbox out;
  fx.link.Start(kT0, &out);
  HelloReply refused;
  refused.outcome = HelloOutcome::kRefused;
  refused.message = "not the leader";
  refused.leader_hint = "n2";
  LinkOutbox answered;
  fx.link.OnHelloReply(out.connect->generation, refused, kT0, &answered);
  EXPECT_TRUE(answered.drop);
  EXPECT_EQ(fx.link.leader_id(), "n2");
  LinkOutbox next;
  fx.link.Tick(fx.link.NextWakeUp(), 0, &next);
  ASSERT_TRUE(next.connect.has_value());
  EXPECT_EQ(next.connect->leader_id, "n2");
  EXPECT_LE(fx.link.NextWakeUp() - kT0, 200'000 + 10'000);
}

// A message that asks for a flush is answered only after an fsync past it; messages arriving
// while that fsync runs wait for the next one, which covers them together.
TEST(FollowerLinkTest, AFlushAskedForIsDoneBeforeTheAckAndGroupsLaterOnes) {
  LinkFixture fx;
  fx.Stream(kT0);
  std::vector<Batch> batches;
  for (int i = 0; i < 3; ++i) batches.push_back(fx.l.Write());
  auto push = [&](uint64_t id, const Batch& b, LinkOutbox* out) {
    Ship ship = ShipOf(fx.l.leader->epoch(), {b});
    ship.flush = true;
    std::string why;
    ASSERT_TRUE(fx.link.OnPush(fx.link.generation(), id, ship, kT0 + 10, out, &why)) << why;
  };
  LinkOutbox first;
  push(1, batches[0], &first);
  EXPECT_TRUE(first.answers.empty()) << "not before the fsync";
  ASSERT_TRUE(first.fsync.has_value());
  EXPECT_EQ(*first.fsync, batches[0].last_seq());
  LinkOutbox during;
  push(2, batches[1], &during);
  push(3, batches[2], &during);
  EXPECT_FALSE(during.fsync.has_value()) << "one fsync at a time";
  EXPECT_TRUE(during.answers.empty());
  LinkOutbox synced;
  fx.link.OnSynced(batches[0].last_seq(), absl::OkStatus(), &synced);
  ASSERT_EQ(synced.answers.size(), 1u);
  EXPECT_EQ(synced.answers[0].push, 1u);
  EXPECT_EQ(synced.answers[0].ack.durable, batches[0].last_seq());
  ASSERT_TRUE(synced.fsync.has_value()) << "the next fsync covers both later messages";
  EXPECT_EQ(*synced.fsync, batches[2].last_seq());
  LinkOutbox again;
  fx.link.OnSynced(batches[2].last_seq(), absl::OkStatus(), &again);
  ASSERT_EQ(again.answers.size(), 2u);
  for (const auto& a : again.answers) EXPECT_EQ(a.ack.durable, batches[2].last_seq());
  EXPECT_FALSE(again.fsync.has_value());
}

// Batches a write waits for go at once, whatever the pacing, with a prompt ack and the flush
// it asks for; a follower that holds them unflushed is asked for the flush.
TEST(ShipperTest, AwaitedBatchesAreNotHeldAndAskForTheFlush) {
  ShipperFixture fx(Paced());
  fx.l.Write();
  Outbox first;
  fx.shipper.Pump(kT0 + 1'000, &first);
  ASSERT_EQ(first.sends.size(), 1u);
  EXPECT_FALSE(first.sends[0].ship.flush);
  SequenceNumber awaited = fx.l.Write().last_seq();
  Outbox held;
  fx.shipper.Pump(kT0 + 1'010, &held);
  EXPECT_TRUE(held.sends.empty()) << "without a demand the write waits behind the message";
  Outbox now;
  fx.shipper.Pump(kT0 + 1'010, &now, Demand{awaited, true});
  ASSERT_EQ(now.sends.size(), 1u) << "a write waits for it: sent within the window at once";
  EXPECT_TRUE(now.sends[0].ship.flush);
  EXPECT_EQ(now.sends[0].ship.max_ack_delay_us, 0u);
  // Both acked as received but not flushed: an empty message asks for the flush.
  Ack ack;
  ack.epoch = fx.l.leader->epoch();
  ack.received = ack.applied = awaited;
  Outbox acked;
  fx.shipper.OnAck(fx.session, ack, &acked);
  fx.shipper.OnAck(fx.session, ack, &acked);
  Outbox ask;
  fx.shipper.Pump(kT0 + 2'000, &ask, Demand{awaited, true});
  ASSERT_EQ(ask.sends.size(), 1u);
  EXPECT_TRUE(ask.sends[0].ship.batches.empty());
  EXPECT_TRUE(ask.sends[0].ship.flush);
  ack.durable = awaited;
  fx.shipper.OnAck(fx.session, ack, &acked);
  Outbox done;
  fx.shipper.Pump(kT0 + 3'000, &done, Demand{awaited, true});
  EXPECT_TRUE(done.sends.empty()) << "flushed: nothing more to ask";
}

}  // namespace
}  // namespace walship::replication
