// A walship node: the engine, its current role (leader or follower, switched at run time),
// and the Cap'n Proto server that serves clients and peers on one address. The parts:
// rpc/node.h (the node, its role and its background work), rpc/client_service.h (the client
// API and group commit), rpc/leader_role.h and rpc/follower_role.h (replication, carried
// out for replication/), rpc/connections.h (the listener and the connections).
//
// Thread safety: Open() may run on any thread; Run() runs the KJ event loop on the calling
// thread and every RPC object lives there. Blocking RocksDB work goes to a bounded worker
// pool. The caller must have called kj::UnixEventPort::captureSignal(SIGTERM/SIGINT) before
// starting any thread (see tools/walshipd.cc).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "replication/commit_wait.h"
#include "replication/leader.h"
#include "replication/seeding.h"
#include "rpc/coordinator_options.h"
#include "rpc/tls_options.h"

namespace walship::rpc {

// walshipd's exit status after a failed WAL write (EX_TEMPFAIL): start it again once the disk
// has room; it recovers from its WAL (engine::Engine::WalFailed).
inline constexpr int kExitWalFailed = 75;

struct NodeServerOptions {
  std::string cluster;
  std::string node_id;
  std::string listen;    // host:port
  std::string advertise;  // host:port the others dial (its membership address); "": listen
  std::string data_dir;  // holds db/ (RocksDB) and node-state
  // The cluster secret every connection proves before anything else is served (rpc/auth.h);
  // empty: none, and connections are served as they come.
  std::string secret;
  // TLS on every connection the node accepts or opens (rpc/tls.h); tls.ca_file empty: none.
  TlsOptions tls;
  // host:port of the HTTP port for /metrics and the health endpoints (rpc/http_endpoint.h);
  // empty: none.
  std::string http_listen;
  // The role the config gives: it seeds a data dir whose node state holds no role yet; after
  // that the saved role wins (it changes at run time: handover).
  bool is_leader = false;
  std::string leader_id;       // followers: the leader's id and address
  std::string leader_address;
  // Every other node of the cluster: id -> address (followers connect to whichever leads).
  std::map<std::string, std::string> peers;

  engine::EngineOptions engine;             // path is filled in from data_dir
  replication::LeaderOptions leader;        // cluster and node_id are filled in
  // What a write promises by default (mode, acks, level), and how long it waits for its
  // followers before the timeout policy applies (docs/replication.md).
  replication::CommitWaitOptions commit;
  bool fsync_writes = false;                // leader: fsync each write group before acking
  bool fsync_apply = false;                 // follower: fsync each apply before acking

  uint32_t max_inflight_ships = 4;          // per follower
  // 0: prompt acks; a caught-up follower gets one message in flight, at most one per
  // min_ship_interval_us, and later writes wait for its ack and the interval, at most
  // max_ship_hold_us, to travel together. > 0: followers may hold acks
  // this long (one ack answers several messages) and the leader keeps up to
  // max_inflight_ships in flight to every follower, asking for a prompt ack on the message
  // that fills the window.
  uint32_t ack_delay_us = 0;
  // Prompt acks: writes held back (by the message in flight or by min_ship_interval_us) are
  // sent, without the ack, once the first of them has waited this long (within
  // max_inflight_ships).
  uint32_t max_ship_hold_us = 500;
  // Prompt acks: a caught-up follower gets at most one message per this interval (a
  // catching-up one is not paced), so that writes arriving meanwhile travel together;
  // max_ship_hold_us bounds the wait.
  uint32_t min_ship_interval_us = 300;
  // A node that led before it stopped asks every peer how far it is before it leads again,
  // for up to this long; past it, it decides on the answers the cluster's mode needs
  // (replication/recovery.h).
  uint32_t leader_recovery_wait_ms = 5000;
  // Automatic failover (replication/election.h): a follower whose leader is silent for
  // election_timeout_ms (plus up to election_jitter_ms) stands for leader, voters elect the
  // most up-to-date by majority, and a leader that has not heard from a majority within
  // lease_ms refuses writes and steps down. Off: a leader is replaced by an operator only
  // (walship handover).
  bool failover = false;
  uint32_t election_timeout_ms = 800;
  uint32_t election_jitter_ms = 200;
  uint32_t lease_ms = 550;
  // Above 0: a follower also waits until the phi of its leader's heartbeats reaches this
  // before it stands (replication/failure_detector.h); the election time-out stays the least
  // wait. phi_min_std_ms is the detector's floor for the heartbeats' standard deviation.
  uint32_t phi_threshold = 0;
  uint32_t phi_min_std_ms = 20;
  // Above 0: a follower whose log ends more than this many sequence numbers before the last
  // position it knew of its leader does not stand (walship promote can force it).
  uint64_t max_failover_lag = 0;
  // Leadership from etcd instead of the vote (rpc/coordinator.h); implies failover.
  CoordinatorOptions coordinator;
  uint32_t heartbeat_interval_ms = 100;     // leader -> idle follower
  uint32_t heartbeat_timeout_ms = 2000;     // follower reconnects after this much silence
  uint32_t reconnect_min_ms = 50;           // follower backoff, doubling up to max
  uint32_t reconnect_max_ms = 2000;
  uint32_t follower_fsync_interval_ms = 1000;  // follower fsyncs its WAL this often
  uint32_t max_pending_writes = 65536;      // queued client writes; more are refused
  uint64_t max_pending_write_bytes = 256ull << 20;  // and their keys and values, in bytes
  uint32_t max_write_group_ops = 4096;      // ops in one grouped RocksDB write
  uint32_t max_write_group_bytes = 4u << 20;
  uint32_t worker_threads = 2;
  uint32_t max_queued_tasks = 1024;
  // Client connections served at once; one more is refused with an error and closed. Nodes
  // connect beside them (up to kMaxPeerConnections), so a full node still hears its peers.
  // Lowered at start, with a warning, when the file-descriptor limit cannot hold it.
  uint32_t max_client_connections = 1024;
  // Checkpoints served to followers being seeded and to `walship checkpoint` are read at most
  // this fast, all together (0: no bound), so that serving one leaves the disk to the writes.
  uint64_t snapshot_max_bytes_per_sec = 0;
  // A follower told it needs a snapshot re-seeds itself at once, or waits for `walship reseed`.
  replication::ReseedPolicy reseed = replication::ReseedPolicy::kAutomatic;
  // A follower counts as ready (status) within this many sequence numbers of its leader.
  uint64_t ready_lag = 1000;
  // Seed this node's data dir from this checkpoint directory before it starts (walshipd
  // --restore-from): verified, checked against the cluster and the leader's WAL, then
  // installed in place of the data it holds, which stays untouched if anything is wrong.
  std::string restore_from;
  // A connection that has not said which protocol it speaks within this is closed.
  uint32_t preamble_timeout_ms = 5000;
  // A client connection with no request for this long is closed; 0: never.
  uint32_t client_idle_timeout_ms = 0;
};

// Peer (node-to-node) connections a node accepts at once, beside its clients.
inline constexpr uint32_t kMaxPeerConnections = 128;

class NodeServer {
 public:
  // Locks data_dir (kFailedPrecondition if another process holds it), loads the node state
  // and opens the database. Touches nothing before the lock is held.
  static absl::StatusOr<std::unique_ptr<NodeServer>> Open(NodeServerOptions options);

  virtual ~NodeServer() = default;

  // Serves until SIGTERM or SIGINT, then stops cleanly. Returns an error if the listen
  // address cannot be bound.
  virtual absl::Status Run() = 0;

 protected:
  NodeServer() = default;
};

}  // namespace walship::rpc
