#include "rpc/heartbeats.h"

#include <spdlog/spdlog.h>

#include <set>

#include "rpc/convert.h"
#include "rpc/node.h"

namespace walship::rpc {

HeartbeatSender::HeartbeatSender(Node& node, replication::Epoch epoch, OnReply on_reply)
    : node_(node), on_reply_(std::move(on_reply)), tasks_(*this) {
  beat_.cluster = node.options().cluster;
  beat_.leader = node.options().node_id;
  beat_.epoch = epoch;
}

HeartbeatSender::~HeartbeatSender() noexcept(false) {
  // Closed only: the calls on them end with tasks_, before the connections go.
  for (auto& [id, peer] : peers_) {
    if (peer.conn.get() != nullptr) peer.conn->Close();
  }
}

void HeartbeatSender::taskFailed(kj::Exception&& e) {
  spdlog::debug("heartbeat task failed: {}", e.getDescription().cStr());
}

void HeartbeatSender::Start() { tasks_.add(Loop()); }

HeartbeatSender::PeerView HeartbeatSender::View(const std::string& member) const {
  PeerView v;
  auto it = peers_.find(member);
  if (it == peers_.end() || it->second.detector.last_heartbeat_us() == 0) return v;
  int64_t now = node_.PreciseNowUs();
  v.heard_ago_ms = (now - it->second.detector.last_heartbeat_us()) / 1000;
  v.phi = it->second.detector.Phi(now);
  return v;
}

void HeartbeatSender::Drop(Peer& peer) {
  if (peer.conn.get() != nullptr) {
    peer.conn->Close();
    tasks_.add(kj::evalLater([c = kj::mv(peer.conn)]() {}));
  }
  peer.in_flight = false;
  ++peer.generation;
}

kj::Promise<void> HeartbeatSender::Loop() {
  int64_t now = node_.PreciseNowUs();
  const std::string& self = node_.options().node_id;
  std::set<std::string> members;
  for (const replication::Member& m : node_.membership().members) {
    if (m.id == self || m.address.empty()) continue;
    members.insert(m.id);
    Beat(m.id, m.address, now);
  }
  for (auto it = peers_.begin(); it != peers_.end();) {  // removed from the membership
    if (members.count(it->first) == 0) {
      Drop(it->second);
      it = peers_.erase(it);
    } else {
      ++it;
    }
  }
  return node_.io()
      .provider->getTimer()
      .afterDelay(node_.options().heartbeat_interval_ms * kj::MILLISECONDS)
      .then([this]() { return Loop(); });
}

void HeartbeatSender::Beat(const std::string& id, const std::string& address, int64_t now_us) {
  const int64_t timeout_us = int64_t{node_.options().heartbeat_timeout_ms} * 1000;
  Peer& peer =
      peers_.try_emplace(id, int64_t{node_.options().phi_min_std_ms} * 1000, timeout_us)
          .first->second;
  if (peer.in_flight) {
    // Unanswered for the heartbeat time-out: the connection is taken for dead.
    if (now_us - peer.sent_us < timeout_us) return;
    Drop(peer);
  }
  if (peer.connecting || now_us < peer.connect_again_us) return;
  if (peer.conn.get() == nullptr) {
    peer.connecting = true;
    // Bounded: a connect into a partition that drops packets would otherwise wait for the
    // kernel's time-out (minutes) with this member unheard.
    auto connect = ConnectToPeer(node_.io(), address, node_.security())
                       .exclusiveJoin(node_.io()
                                          .provider->getTimer()
                                          .afterDelay(timeout_us * kj::MICROSECONDS)
                                          .then([]() -> kj::Own<PeerClient> {
                                            KJ_FAIL_REQUIRE("connect timed out");
                                          }));
    tasks_.add(kj::mv(connect).then(
        [this, id](kj::Own<PeerClient> c) {
          auto p = peers_.find(id);
          if (p == peers_.end()) return;  // no longer a member
          p->second.connecting = false;
          p->second.conn = kj::mv(c);
          Send(id, p->second, node_.PreciseNowUs());
        },
        [this, id](kj::Exception&&) {
          // Unreachable for now: the next heartbeat interval tries again, and status shows
          // the member's heartbeat age growing (and `silent` once its stream is too).
          auto p = peers_.find(id);
          if (p != peers_.end()) p->second.connecting = false;
        }));
    return;
  }
  Send(id, peer, now_us);
}

void HeartbeatSender::Send(const std::string& id, Peer& peer, int64_t now_us) {
  peer.in_flight = true;
  peer.sent_us = now_us;
  uint64_t generation = peer.generation;
  auto req = peer.conn->node.heartbeatRequest();
  ToCapnp(beat_, req.initBeat());
  tasks_.add(req.send().then(
      [this, id, generation, sent = now_us](
          capnp::Response<schema::PeerService::HeartbeatResults> resp) {
        auto p = peers_.find(id);
        if (p == peers_.end() || p->second.generation != generation) return;
        p->second.in_flight = false;
        p->second.detector.OnHeartbeat(node_.PreciseNowUs());
        on_reply_(id, sent, FromCapnp(resp.getReply()));
      },
      [this, id, generation](kj::Exception&& e) {
        auto p = peers_.find(id);
        if (p == peers_.end() || p->second.generation != generation) return;
        Drop(p->second);
        if (e.getType() == kj::Exception::Type::UNIMPLEMENTED) {
          // A node of an older walship (peer protocol below 7): its hello is refused with
          // both versions named; here, say it once and ask again only now and then.
          if (!p->second.told_unserved) {
            spdlog::warn("member '{}' does not answer heartbeats: it runs an older walship "
                         "(peer protocol below {}); run one version in a cluster",
                         id, replication::kPeerProtocolVersion);
            p->second.told_unserved = true;
          }
          p->second.connect_again_us =
              node_.PreciseNowUs() + int64_t{node_.options().heartbeat_timeout_ms} * 1000;
        }
      }));
}

}  // namespace walship::rpc
