// A running node: the engine, the worker pools, the client service, the node's current role
// and the background work every node does (WAL archive trims, storage-error checks). It holds
// exactly one role at a time and replaces it at run time (SwitchRole) after the new role was
// saved in the node state; the rest of the node reaches the role only through Role.
//
// Thread safety: everything here lives on the event-loop thread.
#pragma once

#include <kj/async-io.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "replication/election.h"
#include "replication/messages.h"
#include "replication/node_state.h"
#include "rpc/node_server.h"
#include "rpc/peer_client.h"
#include "rpc/role.h"
#include "rpc/snapshot_source.h"
#include "rpc/worker_pool.h"

namespace walship::rpc {

class ClientService;
class Coordinator;

// What the listener counts, for status.
struct ConnectionStats {
  uint32_t clients = 0;  // client connections being served
  uint32_t peers = 0;    // node connections being served
  uint64_t refused = 0;  // since start, over a cap
  uint64_t accept_failures = 0;
  uint64_t auth_failures = 0;  // since start, connections refused for the cluster secret
};

class Node final : public kj::TaskSet::ErrorHandler {
 public:
  // `state` is the saved node state the node starts in (Open prepared it). With `recover`, the
  // node led before it stopped and first asks its peers whether they hold writes it lost
  // (RecoveringRole).
  // `security` is what its connections to other nodes prove and check (the TLS context it
  // points to outlives the node), and what it asks of those it accepts.
  Node(const NodeServerOptions& options, engine::Engine& engine, kj::AsyncIoContext& io,
       replication::NodeState state, bool recover, const PeerSecurity& security);
  ~Node();

  // Starts the background work and the role.
  void Start();

  const NodeServerOptions& options() const { return options_; }
  const PeerSecurity& security() const { return security_; }
  engine::Engine& engine() { return engine_; }
  kj::AsyncIoContext& io() { return io_; }
  ClientService& clients() { return *clients_; }
  Role& role() { return *role_; }
  // The link to etcd when etcd chooses the leader ([coordinator]), else nullptr.
  Coordinator* coordinator() { return coordinator_.get(); }
  ConnectionStats& connection_stats() { return connection_stats_; }
  // Client work (large scans) may fill its queue and be refused; the node's own work (write
  // groups, applies, WAL trims and fsyncs: at most one of each at a time) has a thread and a
  // queue of its own, so that no client can stop writes or replication; the leader's WAL
  // reads for followers catching up have a third, so that a long read neither waits behind
  // nor delays the node's writes.
  WorkerPool& client_pool() { return client_pool_; }
  WorkerPool& node_pool() { return node_pool_; }
  WorkerPool& wal_pool() { return wal_pool_; }

  std::string state_path() const { return options_.data_dir + "/node-state"; }
  // The listen address of node `id` (from the membership, else the config's peers or leader),
  // or "" when it is not a peer.
  std::string AddressOf(const std::string& id) const;
  // The cluster's membership as this node knows it (saved in its node state).
  const replication::Membership& membership() const { return membership_; }
  // A role saved a new membership (the leader changed it, or a follower was sent it).
  void AdoptMembership(replication::Membership m);
  // The event loop's monotonic clock, in microseconds (what replication/ is handed). It is
  // read once per turn of the loop, so within a long turn it lags.
  int64_t MonoNowUs() const;
  // The same clock read now: for the leader's lease and a voter's last contact with its
  // leader, which must never be taken as earlier than they are.
  int64_t PreciseNowUs() const;

  // Makes `state` (saved already) the node's role, in a later turn: the current role may be
  // the caller, and is destroyed then. Roles that end close their followers' connections.
  // A follower that needs a snapshot gets the seeding role when it re-seeds by itself.
  // `recent`: the batches it applied last as a follower, for a LeaderRole's memory tail;
  // `elected_by`: the votes that elected a LeaderRole, which its lease counts.
  void SwitchRole(replication::NodeState state, std::deque<replication::ShippedBatch> recent = {},
                  replication::ElectedBy elected_by = {});
  // Resolves at once unless the role stands for leader (Role::Standing); then once the role
  // changes or its round ends (ReleaseHeld), or after an election time-out (at most
  // kMaxHoldMs). A follower's hello waits on it: a candidate answering at once could only say
  // "ask again", and the follower's pause before asking again (reconnect_min_ms) would delay
  // every failover's first acknowledged write.
  kj::Promise<void> UntilSettled();
  // The role's round ended without a change of role: what waits in UntilSettled goes on now.
  void ReleaseHeld();
  // Held for at most this long: well inside the follower's connect time-out (2 s), so that it
  // never gives up on the node it voted for.
  static constexpr uint32_t kMaxHoldMs = 1000;

  // An operator's `walship reseed`: the current role starts re-seeding, or says why not.
  absl::Status Reseed();
  // Starts re-seeding from the leader, whatever the reseed policy (after Reseed()).
  // `shared_upto`: the last sequence number its history shares with the leader's, when known
  // (it votes with its log ending there: rpc/seeding_role.h).
  void SwitchToSeeding(replication::NodeState state,
                       std::optional<engine::SequenceNumber> shared_upto = std::nullopt);

  // Checkpoints served from here (PeerService.snapshot).
  SnapshotSource& snapshots() { return *snapshots_; }
  // The WAL files as the last archive trim left them (oldest first).
  const std::vector<engine::WalFileSpan>& wal_files() const { return wal_files_; }

  // Ends this Node so that the server opens the database again and starts a new one: a
  // checkpoint staged in DATA_DIR/seed is then installed in place of the database. Resolves
  // Restarting().
  void RequestRestart();
  kj::Promise<void> Restarting() { return kj::mv(restart_promise_); }

  void taskFailed(kj::Exception&& e) override;

 private:
  std::unique_ptr<Role> MakeRole(replication::NodeState state,
                                 std::deque<replication::ShippedBatch> recent = {},
                                 replication::ElectedBy elected_by = {});
  kj::Promise<void> WalTrimLoop();
  kj::Promise<void> StorageLoop();

  const NodeServerOptions& options_;
  PeerSecurity security_;
  engine::Engine& engine_;
  kj::AsyncIoContext& io_;
  WorkerPool client_pool_;
  WorkerPool node_pool_;
  WorkerPool wal_pool_;
  ConnectionStats connection_stats_;
  std::unique_ptr<ClientService> clients_;
  replication::NodeState initial_state_;
  bool recover_ = false;
  std::unique_ptr<Coordinator> coordinator_;  // before role_: the roles use it to their end
  std::unique_ptr<Role> role_;
  std::unique_ptr<SnapshotSource> snapshots_;
  std::vector<engine::WalFileSpan> wal_files_;
  replication::Membership membership_;
  kj::Promise<void> restart_promise_ = nullptr;
  kj::Own<kj::PromiseFulfiller<void>> restart_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> held_;  // UntilSettled
  // Storage errors (StorageLoop).
  bool storage_failed_ = false;
  uint32_t resume_interval_ms_ = 0;
  int64_t next_resume_us_ = 0;
  kj::TaskSet tasks_;  // last: destroyed first
};

}  // namespace walship::rpc
