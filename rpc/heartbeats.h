// The leader's heartbeats to the members, on connections of their own (PeerService.heartbeat).
//
// A follower answers a push only once it has applied it, and fsynced it when the push asks
// for a flush, and a large push takes the stream for as long as its bytes take to cross: so
// a stream's acknowledgements say how the follower's disk and the link's backlog are doing,
// not whether the follower lives. These heartbeats share no connection with data and are
// answered at once, so the lease (replication/election.h) and the failure detectors
// (replication/failure_detector.h) on both ends see the peer itself.
//
// One heartbeat in flight per member, sent every heartbeat interval; a connection that fails,
// or whose heartbeat is not answered within the heartbeat time-out, is closed and opened again.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async.h>

#include <functional>
#include <map>
#include <string>

#include "replication/failure_detector.h"
#include "replication/messages.h"
#include "rpc/peer_client.h"

namespace walship::rpc {

class Node;

class HeartbeatSender final : private kj::TaskSet::ErrorHandler {
 public:
  // `on_reply(member, sent_us, reply)` for every answer; `sent_us` is when that heartbeat
  // left, on the node's precise monotonic clock.
  using OnReply =
      std::function<void(const std::string&, int64_t, const replication::HeartbeatReply&)>;

  HeartbeatSender(Node& node, replication::Epoch epoch, OnReply on_reply);
  ~HeartbeatSender() noexcept(false);

  void Start();

  // What the leader's status shows of one member.
  struct PeerView {
    int64_t heard_ago_ms = -1;  // since its last answer; -1: none yet
    double phi = 0;             // of its answers' arrivals
  };
  PeerView View(const std::string& member) const;

 private:
  struct Peer {
    Peer(int64_t min_std_us, int64_t max_interval_us)
        : detector(min_std_us, replication::PhiAccrualDetector::kDefaultWindow,
                   max_interval_us) {}
    kj::Own<PeerClient> conn;
    bool connecting = false;
    int64_t connect_again_us = 0;  // after a peer that does not serve heartbeats
    bool told_unserved = false;    // that was logged
    bool in_flight = false;
    int64_t sent_us = 0;  // of the heartbeat in flight
    replication::PhiAccrualDetector detector;
    uint64_t generation = 0;  // of `conn`: answers on a closed one are dropped
  };

  void taskFailed(kj::Exception&& e) override;
  kj::Promise<void> Loop();
  // Sends `id` a heartbeat, connecting first when it has no connection.
  void Beat(const std::string& id, const std::string& address, int64_t now_us);
  void Send(const std::string& id, Peer& peer, int64_t now_us);
  // Closes the peer's connection; it is destroyed in a later turn (calls on it may still
  // unwind).
  void Drop(Peer& peer);

  Node& node_;
  replication::Heartbeat beat_;
  OnReply on_reply_;
  std::map<std::string, Peer> peers_;
  kj::TaskSet tasks_;  // last: destroyed first
};

}  // namespace walship::rpc
