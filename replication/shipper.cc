#include "replication/shipper.h"

#include <algorithm>
#include <utility>

namespace walship::replication {
namespace {
constexpr int64_t kFlushAskIntervalUs = 10'000;
}  // namespace

Shipper::Shipper(Leader& leader, ShipperOptions options)
    : leader_(leader), options_(options) {}

HelloReply Shipper::OnHello(const Hello& hello, uint64_t* session, int64_t now_us,
                            Outbox* out) {
  HelloReply reply = leader_.OnHello(hello, session);
  if (*session == 0) return reply;
  // The Leader ended the follower's earlier sessions; their streams go too.
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (it->second.follower_id == hello.follower_id) {
      out->ended.push_back(it->first);
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
  Session& s = sessions_[*session];
  s.follower_id = hello.follower_id;
  s.last_ship_us = now_us;
  return reply;
}

void Shipper::OnAck(uint64_t session, const Ack& ack, Outbox* out) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  Session& s = it->second;
  if (s.inflight > 0) --s.inflight;
  leader_.OnAck(session, ack);
  if (s.final_sent) {
    out->ended.push_back(session);
    sessions_.erase(it);
  }
}

void Shipper::OnLost(uint64_t session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  leader_.OnDisconnect(session);
  sessions_.erase(it);
}

void Shipper::OnWalRead(WalRead read, int64_t now_us, Outbox* out) {
  uint64_t sid = read.session;
  bool failed = !read.status.ok();
  std::optional<Ship> final_ship = leader_.OnWalRead(std::move(read));
  auto it = sessions_.find(sid);
  if (it == sessions_.end()) return;
  if (final_ship.has_value()) {  // the position is gone: the follower needs a snapshot
    Send(sid, it->second, std::move(*final_ship), now_us, out);
  } else if (failed) {
    it->second.wal_retry_us = now_us + int64_t{options_.wal_read_retry_ms} * 1000;
    NoteWakeUp(it->second.wal_retry_us);
  }
}

const std::string* Shipper::FollowerOf(uint64_t session) const {
  auto it = sessions_.find(session);
  return it == sessions_.end() ? nullptr : &it->second.follower_id;
}

void Shipper::Pump(int64_t now_us, Outbox* out, const Demand& demand) {
  next_wake_up_us_ = kNever;
  // Sessions the leader no longer serves (a member removed, a hello refused) end here.
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (leader_.Serves(it->first)) {
      ++it;
    } else {
      out->ended.push_back(it->first);
      it = sessions_.erase(it);
    }
  }
  for (auto& [sid, s] : sessions_) PumpSession(sid, s, now_us, demand, out);
}

// With prompt acks (ack_delay_us = 0) a caught-up follower gets one message in flight, and
// at most one per min_ship_interval_us: writes arriving meanwhile wait and travel together in
// the next message, which costs both ends far less per write than a message each. The wait is
// bounded: max_ship_hold_us after the first write was held back, what is pending goes within
// the window without the ack, which keeps the lag of heavy pipelines, whose acks come slowly,
// low. A follower catching up (a full message pending) is never held and gets the whole
// window. With delayed acks every message may hold its ack except the one that fills the
// window, which asks for a prompt ack: one ack then answers several messages, and nothing
// waits on an ack while the window has room. Batches that a write waits for (`demand`) are
// neither held nor their acks delayed: the write's latency is what the pacing would save.
void Shipper::PumpSession(uint64_t sid, Session& s, int64_t now_us, const Demand& demand,
                          Outbox* out) {
  if (s.final_sent) return;
  const uint32_t window = options_.max_inflight_ships;
  const bool delayed_acks = options_.ack_delay_us > 0;
  while (s.inflight < window && leader_.HasWork(sid)) {
    ReadWalFor(sid, s, now_us, out);  // when the follower is older than the memory tail
    const bool awaited = demand.upto >= leader_.NextToShip(sid);
    if (!delayed_acks && !awaited) {
      if (!s.held_since_us.has_value()) s.held_since_us = now_us;
      int64_t due = ShipDueAt(s);
      if (now_us < due && leader_.PendingBytes(sid) < leader_.options().max_ship_bytes) {
        s.hold_until_us = due;
        NoteWakeUp(due);
        break;
      }
    }
    std::optional<Ship> ship = leader_.NextShip(sid, false);
    if (!ship.has_value()) break;  // a WAL read is under way: its end pumps again
    if (awaited) {
      ship->flush = demand.flush;
    } else if (delayed_acks && s.inflight + 1 < window) {
      ship->max_ack_delay_us = options_.ack_delay_us;
    }
    Send(sid, s, std::move(*ship), now_us, out);
    if (s.final_sent) return;
  }
  // It holds batches a write waits for, sent before that write asked for a flush (a committed
  // read, a follower that reconnected): ask for the flush with an empty message, at most once
  // per kFlushAskIntervalUs (a follower whose fsync fails answers at once).
  if (demand.flush && s.inflight == 0 &&
      leader_.PositionOf(sid, AckLevel::kFlushed) <
          std::min(demand.upto, leader_.PositionOf(sid, AckLevel::kReceived))) {
    int64_t due = s.flush_asked_us + kFlushAskIntervalUs;
    if (now_us >= due) {
      std::optional<Ship> ask = leader_.NextShip(sid, true);
      if (ask.has_value()) {
        ask->flush = true;
        s.flush_asked_us = now_us;
        Send(sid, s, std::move(*ask), now_us, out);
        return;
      }
    } else {
      NoteWakeUp(due);
    }
  }
  if (s.wal_retry_us > now_us && leader_.HasWork(sid)) NoteWakeUp(s.wal_retry_us);
  const int64_t heartbeat_us = int64_t{options_.heartbeat_interval_ms} * 1000;
  if (s.inflight == 0) {
    if (now_us - s.last_ship_us >= heartbeat_us) {
      std::optional<Ship> beat = leader_.NextShip(sid, true);
      if (beat.has_value()) {
        Send(sid, s, std::move(*beat), now_us, out);
        return;
      }
      s.last_ship_us = now_us;  // nothing to send it (an ended stream): not before the next
    }
    NoteWakeUp(s.last_ship_us + heartbeat_us);
  }
}

void Shipper::Send(uint64_t sid, Session& s, Ship ship, int64_t now_us, Outbox* out) {
  ++s.inflight;
  s.last_ship_us = now_us;
  // What was held back goes now; later writes start a new hold.
  s.held_since_us.reset();
  s.hold_until_us = kNever;
  if (!ship.needs_snapshot.empty()) s.final_sent = true;
  out->sends.push_back(Outbox::Send{sid, std::move(ship)});
}

// Starts the WAL read the leader needs for `s`, unless a failed one waits to be retried.
void Shipper::ReadWalFor(uint64_t sid, Session& s, int64_t now_us, Outbox* out) {
  if (now_us < s.wal_retry_us) return;
  std::optional<WalRead> read = leader_.TakeWalRead(sid);
  if (read.has_value()) out->wal_reads.push_back(std::move(*read));
}

// Prompt acks: when the writes held back for `s` may go. While a message is in flight, after
// its ack (which pumps) or max_ship_hold_us after the first of them was held back; with none
// in flight, min_ship_interval_us after the last message, within the same bound.
int64_t Shipper::ShipDueAt(const Session& s) const {
  int64_t due = *s.held_since_us + options_.max_ship_hold_us;
  if (s.inflight == 0) due = std::min(due, s.last_ship_us + options_.min_ship_interval_us);
  return due;
}

void Shipper::NoteWakeUp(int64_t at_us) { next_wake_up_us_ = std::min(next_wake_up_us_, at_us); }

}  // namespace walship::replication
