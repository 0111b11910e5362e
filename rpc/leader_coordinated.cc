// The leader's part when etcd chooses the leader (replication/coordinated.h): it takes writes
// only while it holds the leader key of its epoch under its live lease; without the key it
// takes it when free and begins the key's epoch; it steps down when another node holds the
// key, or when its own lease lapsed a whole time-to-live ago (etcd has let the key go by then).
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "replication/node_state.h"
#include "rpc/coordinator.h"
#include "rpc/leader_role.h"
#include "rpc/node.h"

namespace walship::rpc {

void LeaderRole::CheckCoordinator() {
  // A handover gives the key up and lets the target take it; the take-over's answer ends it.
  if (stepping_down_ || taking_key_ || handover_.has_value()) return;
  const std::string& self = node_.options().node_id;
  const replication::Epoch epoch = leader_.epoch();
  if (coordinator_->Holds(epoch)) {
    if (!held_key_) {
      spdlog::warn("etcd: this node holds the leader key of epoch {}; writes are taken", epoch);
    }
    held_key_ = true;
    return;
  }
  if (held_key_) {
    spdlog::warn("etcd: this node's hold on the leader key lapsed ({}); writes are refused",
                 coordinator_->Describe());
    held_key_ = false;
  }
  const int64_t now = node_.PreciseNowUs();
  const int64_t ttl_us = int64_t{coordinator_->options().lease_ttl_s} * 1'000'000;
  // The key, if this node had it, has gone from etcd a time-to-live after its lease lapsed
  // here: another node may lead by now.
  const int64_t until = coordinator_->lease_until_us();
  if (until != replication::CoordinatorLease::kNotHeld && now - until >= ttl_us &&
      now - started_us_ >= ttl_us) {
    StepDown(absl::StrCat("its etcd lease was not renewed for a time-to-live (",
                          coordinator_->options().lease_ttl_s, " s)"));
    return;
  }
  if (!coordinator_->leader_known()) return;  // etcd unreachable: writes stay refused
  const std::optional<replication::LeaderKey>& key = coordinator_->leader();
  if (key.has_value()) {
    // A read sent before this role began may show the key as it was before a handover.
    if (key->node != self && coordinator_->read_us() < started_us_) return;
    if (key->node != self) {
      StepDown(absl::StrCat("etcd names '", key->node, "' leader (the key's epoch ", key->epoch,
                            ")"));
    } else if (key->lease == coordinator_->lease_id() && key->epoch > epoch) {
      BeginKeyEpoch(key->epoch);  // taken, but its epoch not begun (a save failed)
    }
    // Else the key names this node under an old lease (before a restart): it expires.
    return;
  }
  if (!coordinator_->LeaseAlive()) return;
  taking_key_ = true;
  tasks_.add(coordinator_->Take().then([this](absl::StatusOr<replication::Epoch> taken) {
    taking_key_ = false;
    if (!taken.ok()) {
      spdlog::info("etcd: cannot take the leader key: {}",
                   std::string(taken.status().message()));
      return;
    }
    BeginKeyEpoch(*taken);
  }));
}

// Begins the key's epoch at this node's log's end + 1, saved with its vote for itself in it,
// after an fsync of the WAL; then leads it as a new LeaderRole.
void LeaderRole::BeginKeyEpoch(replication::Epoch epoch) {
  replication::NodeState state = leader_.state();
  if (epoch <= state.HighestEpoch()) {
    spdlog::warn("etcd: the key's revision {} is not above epoch {}, which this node has seen; "
                 "giving it back to take it again at a later revision",
                 epoch, state.HighestEpoch());
    coordinator_->ReleaseInBackground(epoch);
    return;
  }
  taking_key_ = true;
  std::string self = node_.options().node_id;
  std::string path = node_.state_path();
  tasks_.add(node_.node_pool()
                 .Run([e = &node_.engine(), state, epoch, self,
                       path]() -> absl::StatusOr<replication::NodeState> {
                   if (absl::Status s = e->SyncWal(); !s.ok()) return s;
                   replication::NodeState next = state;
                   next.vote_epoch = epoch;
                   next.voted_for = self;
                   replication::BeginElectedEpoch(next, e->LatestSequence() + 1, self, epoch);
                   next.role = "leader";
                   next.leader.clear();
                   next.handover_to.clear();
                   if (absl::Status s = replication::SaveNodeState(path, next); !s.ok()) return s;
                   return next;
                 })
                 .catch_([](kj::Exception&& e) -> absl::StatusOr<replication::NodeState> {
                   return absl::UnavailableError(e.getDescription().cStr());
                 })
                 .then([this, epoch](absl::StatusOr<replication::NodeState> next) {
                   taking_key_ = false;
                   if (!next.ok()) {
                     spdlog::error("etcd: took the leader key but cannot begin epoch {}: {}",
                                   epoch, next.status().ToString());
                     coordinator_->ReleaseInBackground(epoch);
                     return;
                   }
                   spdlog::warn("leading epoch {} (the leader key's revision) from seq {}",
                                epoch, next->history.back().start_seq);
                   stepping_down_ = true;  // this role takes nothing more
                   node_.SwitchRole(std::move(*next));
                 }));
}

}  // namespace walship::rpc
