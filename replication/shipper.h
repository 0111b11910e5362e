// The leader's shipping policy: when each follower's next message goes, how many may be in
// flight, how long writes are held back to travel together, when an idle follower gets a
// heartbeat, and when a failed WAL read is tried again.
//
// Event in, actions out: the transport (rpc/ in a node, the simulation in tests) tells the
// Shipper what happened (a hello, an ack, a lost connection, a WAL read done) and calls Pump
// when it may send; the Shipper answers with an Outbox of messages to send, WAL reads to run
// and streams to end, and with the time by which Pump must run again (NextWakeUp) even if
// nothing else happens. Times are monotonic microseconds handed in by the caller; the
// Shipper reads no clock and starts no timer, so a simulation drives it exactly as a node
// does.
//
// Thread safety: none; one thread at a time (with its Leader).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "replication/leader.h"
#include "replication/messages.h"

namespace walship::replication {

struct ShipperOptions {
  // Messages in flight (sent, not yet acked) per follower.
  uint32_t max_inflight_ships = 4;
  // 0: prompt acks, with pacing (below). > 0: followers may hold acks this long, so that one
  // ack answers several messages; every message may then hold its ack except the one that
  // fills the window, and nothing is paced.
  uint32_t ack_delay_us = 0;
  // Prompt acks: writes held back (by the message in flight, or by min_ship_interval_us) go
  // without the ack once the first of them has waited this long, within the window.
  uint32_t max_ship_hold_us = 500;
  // Prompt acks: a caught-up follower gets at most one message per this interval, so that
  // writes arriving meanwhile travel together (max_ship_hold_us bounds the wait). A follower
  // catching up (a full message pending) is never held.
  uint32_t min_ship_interval_us = 300;
  // An idle follower (nothing in flight) gets an empty message this often.
  uint32_t heartbeat_interval_ms = 100;
  // After a failed WAL read for a follower, the next waits this long.
  uint32_t wal_read_retry_ms = 100;
};

// What the transport must do after an event, in order.
struct Outbox {
  struct Send {
    uint64_t session = 0;
    Ship ship;
  };
  std::vector<Send> sends;
  // WAL reads to run (off the leader's thread); each comes back through OnWalRead.
  std::vector<WalRead> wal_reads;
  // Streams that are over (their final message was answered, or the follower subscribed
  // again): close them. Their acks and failures are ignored from now on.
  std::vector<uint64_t> ended;

  bool empty() const { return sends.empty() && wal_reads.empty() && ended.empty(); }
};

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// What writes waiting for their followers (CommitWait) need from the shipping: the batches up
// to `upto` sent at once and acknowledged promptly, and with `flush` fsynced by the follower
// before it acks.
struct Demand {
  SequenceNumber upto = 0;  // 0: nothing waits
  bool flush = false;
};

class Shipper {
 public:
  // `leader` must outlive the Shipper. With read_wal_inline = false in the leader's options,
  // WAL reads come out in Outbox::wal_reads; with true, NextShip reads inline.
  Shipper(Leader& leader, ShipperOptions options);

  // A follower's hello (Leader::OnHello). On acceptance `*session` is its new session; the
  // follower's earlier sessions end (in out->ended), and the next Pump starts its stream.
  HelloReply OnHello(const Hello& hello, uint64_t* session, int64_t now_us, Outbox* out);

  // The ack of a message sent on `session`. Ignored for ended sessions.
  void OnAck(uint64_t session, const Ack& ack, Outbox* out);

  // A message of `session` could not be delivered, or its connection is gone: the session
  // ends (Leader::OnDisconnect). Ignored for ended sessions.
  void OnLost(uint64_t session);

  // A WAL read from Outbox::wal_reads, done.
  void OnWalRead(WalRead read, int64_t now_us, Outbox* out);

  // Sends what each follower may be sent now (and ends the streams of sessions the leader no
  // longer serves, such as a removed member's): its batches within the window and the pacing,
  // a heartbeat when it is idle, and the WAL reads it needs. Batches that writes wait for
  // (`demand`) are never held back nor their acks delayed; a follower that holds them but has
  // not flushed them, when a flush is asked, gets an empty message asking for it.
  void Pump(int64_t now_us, Outbox* out, const Demand& demand = {});

  // When Pump must run again although no event comes (a hold ends, a heartbeat is due, a WAL
  // read may be retried), as of the last Pump; kNever when nothing waits. Always later than
  // that Pump's now_us, so a transport that pumps at this time never spins.
  int64_t NextWakeUp() const { return next_wake_up_us_; }

  // The follower id of a live session, or null.
  const std::string* FollowerOf(uint64_t session) const;
  size_t sessions() const { return sessions_.size(); }

 private:
  struct Session {
    std::string follower_id;
    uint32_t inflight = 0;
    int64_t last_ship_us = 0;     // the last message sent (or the subscription)
    std::optional<int64_t> held_since_us;  // the first write held back, while any wait
    int64_t hold_until_us = kNever;        // while held: when the hold ends
    int64_t wal_retry_us = 0;     // after a failed WAL read: the next not before this
    bool final_sent = false;      // a needs-snapshot message went; its ack ends the stream
    int64_t flush_asked_us = 0;   // the last empty message that asked for a flush
  };

  void PumpSession(uint64_t sid, Session& s, int64_t now_us, const Demand& demand,
                   Outbox* out);
  void Send(uint64_t sid, Session& s, Ship ship, int64_t now_us, Outbox* out);
  void ReadWalFor(uint64_t sid, Session& s, int64_t now_us, Outbox* out);
  int64_t ShipDueAt(const Session& s) const;
  void NoteWakeUp(int64_t at_us);

  Leader& leader_;
  const ShipperOptions options_;
  std::map<uint64_t, Session> sessions_;
  int64_t next_wake_up_us_ = kNever;
};

}  // namespace walship::replication
