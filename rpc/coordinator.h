// A node's link to etcd when etcd chooses the leader (replication/coordinated.h): the node's
// own etcd lease, kept alive a third of its time-to-live apart; the leader key, read every
// poll interval; and the calls a role makes to take, give up or wait for the key. The roles
// decide; this only talks to etcd and remembers what it last heard.
//
// etcd being unreachable is never taken as leadership: a node holds the lease only until
// the time-to-live after it sent the last renewal etcd answered (less a tenth), and the
// leader key is what it last read, with how long ago.
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async-io.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "replication/coordinated.h"
#include "rpc/coordinator_options.h"
#include "rpc/etcd_client.h"

namespace walship::rpc {

class Coordinator final : private kj::TaskSet::ErrorHandler {
 public:
  // `now_us` reads the monotonic clock (µs) precisely (Node::PreciseNowUs).
  Coordinator(kj::AsyncIoContext& io, CoordinatorOptions options, std::string self,
              std::string address, std::string cluster, std::function<int64_t()> now_us);
  ~Coordinator() noexcept(false);

  void Start();

  // Called after every read of the leader key and every change of the lease. One listener,
  // the node's current role: a new one replaces the old, and ClearListener with the number
  // SetListener returned clears only that one (a role ends after the next one started).
  uint64_t SetListener(std::function<void()> listener) {
    listener_ = std::move(listener);
    return ++listener_id_;
  }
  void ClearListener(uint64_t id) {
    if (id == listener_id_) listener_ = nullptr;
  }

  // Whether the last read of the leader key succeeded, and what it found.
  bool leader_known() const { return leader_known_; }
  const std::optional<replication::LeaderKey>& leader() const { return leader_; }
  // When the last read of the leader key that succeeded was sent (monotonic µs; 0: none).
  int64_t read_us() const { return read_us_; }
  // The node the key named when last seen held ("" before), across roles.
  const std::string& last_holder() const { return last_holder_; }
  // Whether this node holds the leader key for `epoch` under its live lease now.
  bool Holds(replication::Epoch epoch) const;
  // The same for whichever epoch the key it holds is of.
  bool HoldsKey() const { return leader_.has_value() && Holds(leader_->epoch); }
  // Whether this node's lease is alive now, and until when (monotonic µs).
  bool LeaseAlive() const { return lease_.Holds(now_us_()); }
  int64_t lease_until_us() const { return lease_.until_us(); }
  int64_t lease_id() const { return lease_id_; }
  // The last failure to reach etcd ("" after a success), for status and health.
  const std::string& error() const { return error_; }
  // Whether etcd answers: the last read of the leader key and the last call since succeeded.
  bool reachable() const { return leader_known_ && error_.empty(); }
  const CoordinatorOptions& options() const { return options_; }

  // Takes the leader key when it is absent: the epoch it leads (the key's create revision),
  // or why not (held by another, no lease, etcd unreachable).
  kj::Promise<absl::StatusOr<replication::Epoch>> Take();
  // Gives up the key of `epoch` when this node still holds it (a step-down, a handover):
  // whether it did.
  kj::Promise<absl::StatusOr<bool>> Release(replication::Epoch epoch);
  // The same, carried out here (the caller's role may end meanwhile).
  void ReleaseInBackground(replication::Epoch epoch);
  // This node's candidacy: where its log ends; Withdraw removes it.
  kj::Promise<absl::Status> Publish(const replication::LogPosition& position);
  void Withdraw();
  kj::Promise<absl::StatusOr<std::vector<replication::Candidacy>>> Candidacies();

  // What status shows: the endpoint, the key's holder and epoch, the lease.
  std::string Describe() const;
  std::string leader_key() const { return options_.prefix + "/leader"; }

 private:
  void taskFailed(kj::Exception&& e) override;
  // Each loop goes on whatever one turn does: a turn that fails (an exception, from etcd's
  // answer or a listener) is noted, and the next comes a poll interval later.
  kj::Promise<void> LeaseLoop();
  kj::Promise<uint32_t> RenewLease();  // the milliseconds until the next renewal
  kj::Promise<void> PollLoop();
  kj::Promise<void> ReadLeaderKey();
  void Notify();
  void NoteError(const absl::Status& s);

  kj::AsyncIoContext& io_;
  const CoordinatorOptions options_;
  const std::string self_;
  const std::string address_;
  const std::string cluster_;
  std::function<int64_t()> now_us_;
  EtcdClient etcd_;
  std::function<void()> listener_;
  uint64_t listener_id_ = 0;
  int64_t lease_id_ = 0;
  replication::CoordinatorLease lease_;
  bool leader_known_ = false;
  std::optional<replication::LeaderKey> leader_;
  int64_t read_us_ = 0;  // when the leader key was last read
  // When this node last took or gave up the key: a read sent before tells less than it knows.
  int64_t changed_us_ = 0;
  std::string last_holder_;
  std::string error_;
  kj::TaskSet tasks_;  // last: destroyed first
};

// The leader key's value: {"node", "address", "cluster"} as JSON (what etcdctl shows).
std::string EncodeLeaderValue(const std::string& node, const std::string& address,
                              const std::string& cluster);
// The key's value read back; kDataLoss naming what is wrong.
absl::StatusOr<replication::LeaderKey> DecodeLeaderValue(const std::string& value);
// A candidacy's value: {"node", "seq", "epoch", "epoch_leader"}.
std::string EncodeCandidacy(const std::string& node, const replication::LogPosition& p);
absl::StatusOr<replication::Candidacy> DecodeCandidacy(const std::string& value);

}  // namespace walship::rpc
