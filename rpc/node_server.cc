#include "rpc/node_server.h"

#include <fcntl.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "replication/handover.h"
#include "replication/node_state.h"
#include "rpc/checkpoint_files.h"
#include "rpc/client_service.h"
#include "rpc/connections.h"
#include "rpc/convert.h"
#include "rpc/http_endpoint.h"
#include "rpc/peer_client.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {

using engine::SequenceNumber;

// The node a follower in `state` follows.
std::string LeaderOf(const replication::NodeState& state, const NodeServerOptions& options) {
  return state.leader.empty() ? options.leader_id : state.leader;
}

class NodeServerImpl final : public NodeServer {
 public:
  NodeServerImpl(NodeServerOptions options, int lock_fd, std::unique_ptr<engine::Engine> engine,
                 replication::NodeState state, bool recover)
      : options_(std::move(options)),
        lock_fd_(lock_fd),
        engine_(std::move(engine)),
        state_(std::move(state)),
        recover_(recover) {}

  ~NodeServerImpl() override {
    engine_.reset();
    ::close(lock_fd_);
  }

  absl::Status Run() override {
    // The TLS context lives as long as the nodes of this run (one per restart).
    auto security = MakePeerSecurity(options_.secret, options_.tls);
    if (!security.ok()) return security.status();
    try {
      auto io = kj::setupAsyncIo();
      auto addr = io.provider->getNetwork().parseAddress(options_.listen).wait(io.waitScope);
      kj::Own<kj::ConnectionReceiver> receiver;
      KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { receiver = addr->listen(); })) {
        return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen, ": ",
                                                   e->getDescription().cStr()));
      }
      kj::Own<kj::ConnectionReceiver> http_receiver;
      if (!options_.http_listen.empty()) {
        KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                      http_receiver = io.provider->getNetwork()
                                          .parseAddress(options_.http_listen)
                                          .wait(io.waitScope)
                                          ->listen();
                    })) {
          return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ",
                                                     options_.http_listen, ": ",
                                                     e->getDescription().cStr()));
        }
      }
      auto term = io.unixEventPort.onSignal(SIGTERM);
      auto intr = io.unixEventPort.onSignal(SIGINT);
      auto stop = term.exclusiveJoin(kj::mv(intr))
                      .then([](siginfo_t info) {
                        spdlog::info("received {}; stopping",
                                     info.si_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                      })
                      .fork();
      for (;;) {
        bool restart = false;
        {
          Node node(options_, *engine_, io, state_, recover_, security->security);
          kj::Own<Listener> listener = Listener::Create(node, *receiver, io);
          auto serving = listener->AcceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
            spdlog::error("listener failed: {}", e.getDescription().cStr());
          });
          kj::Own<HttpEndpoint> http;
          kj::Promise<void> http_serving = nullptr;
          if (http_receiver) {
            http = HttpEndpoint::Create(node, *http_receiver, io);
            http_serving = http->AcceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
              spdlog::error("HTTP listener failed: {}", e.getDescription().cStr());
            });
            spdlog::info("serving /metrics, /health, /leader and /replica on http://{}",
                         options_.http_listen);
          }
          spdlog::info("node '{}' ({}) of cluster '{}' listening on {}; latest seq {}",
                       options_.node_id, state_.role, options_.cluster, options_.listen,
                       engine_->LatestSequence());
          node.Start();
          auto restarting = node.Restarting().then([&restart]() { restart = true; });
          stop.addBranch().exclusiveJoin(kj::mv(restarting)).wait(io.waitScope);
          // A write group on a worker finishes before the pool is destroyed with the node;
          // writes still queued were never written and never acknowledged.
          for (int i = 0; i < 10000 && node.clients().writer_busy(); ++i) {
            io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
          }
        }
        if (!restart) break;
        if (absl::Status s = Reopen(); !s.ok()) return s;
      }
    } catch (kj::Exception& e) {
      return absl::UnavailableError(e.getDescription().cStr());
    }
    if (absl::Status s = engine_->SyncWal(); !s.ok()) {
      spdlog::error("final WAL fsync failed: {}", s.ToString());
    }
    // Like PostgreSQL's shutdown checkpoint: with the memtables in SSTables, the next start
    // opens at once instead of replaying up to write_buffer_bytes of WAL (W4 measured the
    // restart at 0.26 s after a million writes). The WAL is synced already, so a failure
    // here loses nothing.
    if (absl::Status s = engine_->Flush(); !s.ok()) {
      spdlog::warn("flushing memtables at shutdown failed: {}; the next start replays the WAL",
                   s.ToString());
    }
    spdlog::info("node '{}' stopped at seq {}", options_.node_id, engine_->LatestSequence());
    return absl::OkStatus();
  }

 private:
  // After a seeding role received a checkpoint: closes the database, installs the seed in
  // its place, and opens it again as the node state now says.
  absl::Status Reopen() {
    engine_.reset();
    std::string state_path = options_.data_dir + "/node-state";
    // The leader as saved now (a handover may have moved it since the process started).
    absl::StatusOr<replication::NodeState> saved = replication::LoadNodeState(state_path);
    if (!saved.ok()) return saved.status();
    absl::StatusOr<std::optional<replication::SnapshotManifest>> installed =
        InstallStagedSeed(options_.data_dir, state_path, LeaderOf(*saved, options_));
    if (!installed.ok()) return installed.status();
    absl::StatusOr<replication::NodeState> state = replication::LoadNodeState(state_path);
    if (!state.ok()) return state.status();
    auto engine = engine::Engine::Open(options_.engine);
    if (!engine.ok()) return engine.status();
    engine_ = std::move(*engine);
    state_ = std::move(*state);
    recover_ = false;
    if (installed->has_value()) {
      spdlog::info("node '{}' holds the checkpoint of '{}' at seq {} (database {}) and follows "
                   "'{}' from there",
                   options_.node_id, (*installed)->source, engine_->LatestSequence(),
                   state_.database_id, state_.leader);
    }
    return absl::OkStatus();
  }

  NodeServerOptions options_;
  int lock_fd_;
  std::unique_ptr<engine::Engine> engine_;
  replication::NodeState state_;  // as the node starts
  bool recover_;                  // it led: RecoveringRole first
};

// Raises the soft RLIMIT_NOFILE to the hard limit and fits the node's descriptors within it:
// client connections, peer connections and unidentified ones, a spare for the node's and
// RocksDB's own files (listen socket, epoll, lock, WAL, manifest), and SSTables
// (max_open_files, at least kMinSstFiles). max_client_connections is lowered, with a warning,
// when the limit cannot hold it; a limit too low for any client is an error.
absl::Status FitFileLimit(NodeServerOptions& options) {
  constexpr uint64_t kSpareFiles = 64;
  constexpr uint64_t kMinSstFiles = 64;
  constexpr uint64_t kMinClients = 8;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  uint64_t files = lim.rlim_cur == RLIM_INFINITY ? (uint64_t{1} << 20) : lim.rlim_cur;
  uint64_t fixed =
      kMaxPeerConnections + kSpareUnrouted + kMaxRefusing + kSpareFiles;
  if (files < fixed + kMinSstFiles + kMinClients) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the file-descriptor limit (RLIMIT_NOFILE) is ", files, "; a node needs at least ",
        fixed + kMinSstFiles + kMinClients, ": raise it (ulimit -n)"));
  }
  uint64_t room = files - fixed - kMinSstFiles;
  if (options.max_client_connections > room) {
    spdlog::warn("max_client_connections lowered from {} to {}: the file-descriptor limit "
                 "(RLIMIT_NOFILE) is {}; raise it (ulimit -n) to serve more",
                 options.max_client_connections, room, files);
    options.max_client_connections = static_cast<uint32_t>(room);
  }
  uint64_t sst = files - fixed - options.max_client_connections;
  options.engine.max_open_files = sst >= (uint64_t{1} << 30) ? -1 : static_cast<int>(sst);
  return absl::OkStatus();
}

absl::StatusOr<int> LockDataDir(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create data dir ", data_dir, ": ", ec.message()));
  }
  std::string path = data_dir + "/walshipd.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", data_dir, " is locked by another walshipd",
        n > 0 ? absl::StrCat(" (pid ", std::string(pid, strcspn(pid, "\n")), ")") : ""));
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) < 0) {
    spdlog::warn("cannot record pid in {}", path);  // the lock itself holds
  }
  return fd;
}

// Asks `address` for its position, within a few seconds.
absl::StatusOr<replication::PeerPosition> AskPosition(const std::string& address,
                                                      const NodeServerOptions& options) {
  auto security = MakePeerSecurity(options.secret, options.tls);
  if (!security.ok()) return security.status();
  auto io = kj::setupAsyncIo();
  auto asked = ConnectToPeer(io, address, security->security).then([](kj::Own<PeerClient> conn) {
    auto sent = conn->node.positionRequest().send();
    return sent.then([](capnp::Response<schema::PeerService::PositionResults> r) {
                 return absl::StatusOr<replication::PeerPosition>(FromCapnp(r.getPosition()));
               })
        .attach(kj::mv(conn));
  });
  auto timeout = io.provider->getTimer().afterDelay(3 * kj::SECONDS).then([address]() {
    return absl::StatusOr<replication::PeerPosition>(
        absl::UnavailableError(absl::StrCat("no answer from ", address, " within 3 s")));
  });
  absl::StatusOr<replication::PeerPosition> out = absl::UnavailableError("");
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                out = asked.exclusiveJoin(kj::mv(timeout)).wait(io.waitScope);
              })) {
    return absl::UnavailableError(absl::StrCat("cannot reach ", address, ": ",
                                               e->getDescription().cStr()));
  }
  return out;
}

// walshipd --restore-from DIR: checks the checkpoint in DIR (every file's checksum, the
// database opening at its sequence number), that it belongs to this cluster and database,
// that this node follows, and that the leader's WAL still holds what follows the checkpoint;
// then copies it into DATA_DIR/seed, for InstallStagedSeed. Any fault leaves the data dir
// as it was.
absl::Status StageRestore(const NodeServerOptions& options, const replication::NodeState& state) {
  const std::string& dir = options.restore_from;
  auto refuse = [&](absl::string_view why) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot restore from ", dir, ": ", why, "; ", options.data_dir,
                     " is left as it was"));
  };
  absl::StatusOr<replication::SnapshotManifest> m = VerifyCheckpointDir(dir);
  if (!m.ok()) return refuse(m.status().message());
  if (absl::Status s = replication::CheckSeedFor(*m, options.cluster, state); !s.ok()) {
    return refuse(s.message());
  }
  std::string role = state.role.empty() ? (options.is_leader ? "leader" : "follower") : state.role;
  if (role != "follower") {
    return refuse(absl::StrCat("this node is ", role, "; a checkpoint seeds a follower, which "
                               "then catches up from its leader"));
  }
  // A checkpoint older than what the node holds would drop writes it has acknowledged.
  std::error_code ec;
  if (std::filesystem::exists(options.data_dir + "/db/CURRENT", ec)) {
    absl::StatusOr<engine::SequenceNumber> held =
        engine::Engine::CheckpointSequence(options.data_dir + "/db");
    if (!held.ok()) return refuse(held.status().message());
    if (*held > m->seq) {
      return refuse(absl::StrCat("this node holds writes up to seq ", *held, ", past the "
                                 "checkpoint's ", m->seq, ": restoring would drop writes it "
                                 "acknowledged (move its data dir away to restore anyway)"));
    }
  }
  std::string leader = LeaderOf(state, options);
  std::string address = leader == options.leader_id ? options.leader_address
                                                    : options.peers.count(leader)
                                                          ? options.peers.at(leader)
                                                          : std::string();
  if (const replication::Member* member = state.membership.Find(leader);
      member != nullptr && !member->address.empty()) {
    address = member->address;
  }
  absl::StatusOr<replication::PeerPosition> at =
      address.empty() ? absl::StatusOr<replication::PeerPosition>(
                            absl::NotFoundError("its address is not in the config"))
                      : AskPosition(address, options);
  if (!at.ok()) {
    spdlog::warn("restoring from {} without asking leader '{}' whether it can serve seq {} on: "
                 "{}; if it cannot, this follower is re-seeded from it",
                 dir, leader, m->seq + 1, at.status().ToString());
  } else if (at->database_id != m->database_id) {
    return refuse(absl::StrCat("the checkpoint holds database ", m->database_id, ", leader '",
                               leader, "' database ", at->database_id));
  } else if (at->wal_oldest > m->seq + 1) {
    return refuse(absl::StrCat("it ends at seq ", m->seq, " and '", leader,
                               "' keeps its WAL only from seq ", at->wal_oldest,
                               ": take a newer checkpoint"));
  } else if (!at->leads || at->wal_oldest == 0) {
    spdlog::warn("restoring from {}: '{}' {}, so whether the leader can serve seq {} on is not "
                 "known; if it cannot, this follower is re-seeded from it",
                 dir, leader, at->leads ? "has not listed its WAL yet" : "does not lead",
                 m->seq + 1);
  }
  spdlog::info("restoring from {}: the checkpoint of '{}' at seq {}, {} in {} files", dir,
               m->source, m->seq, replication::HumanBytes(m->TotalBytes()), m->files.size());
  return StageCheckpoint(dir, options.data_dir);
}

}  // namespace

absl::StatusOr<std::unique_ptr<NodeServer>> NodeServer::Open(NodeServerOptions options) {
  if (absl::Status s = FitFileLimit(options); !s.ok()) return s;
  absl::StatusOr<int> lock_fd = LockDataDir(options.data_dir);
  if (!lock_fd.ok()) return lock_fd.status();
  auto fail = [&](absl::Status s) {
    ::close(*lock_fd);
    return s;
  };
  std::string state_path = options.data_dir + "/node-state";
  absl::StatusOr<replication::NodeState> state = replication::LoadNodeState(state_path);
  if (!state.ok()) return fail(state.status());
  // A checkpoint received in full before the process stopped goes in place of the database
  // before it opens (an install a crash cut short is finished); then one to restore from.
  for (bool restoring : {false, true}) {
    if (restoring) {
      if (options.restore_from.empty()) break;
      if (absl::Status s = StageRestore(options, *state); !s.ok()) return fail(s);
    }
    absl::StatusOr<std::optional<replication::SnapshotManifest>> installed =
        InstallStagedSeed(options.data_dir, state_path, LeaderOf(*state, options));
    if (!installed.ok()) return fail(installed.status());
    if (installed->has_value()) {
      spdlog::info("installed the checkpoint of '{}' at seq {} in {}/db", (*installed)->source,
                   (*installed)->seq, options.data_dir);
      state = replication::LoadNodeState(state_path);
      if (!state.ok()) return fail(state.status());
    }
  }
  options.engine.path = options.data_dir + "/db";
  auto engine = engine::Engine::Open(options.engine);
  if (!engine.ok()) return fail(engine.status());
  SequenceNumber latest = (*engine)->LatestSequence();
  const std::string& self = options.node_id;
  // The saved role wins over the config's, which only seeds a node state without one: a
  // handover moved leadership at run time, and restarting from the config must never make a
  // second leader.
  std::string config_role = options.is_leader ? "leader" : "follower";
  if (state->role.empty()) {
    state->role = config_role;
    if (!options.is_leader) state->leader = options.leader_id;
  } else if (state->role != config_role) {
    spdlog::warn("node '{}' starts as {}{}, as its node state {} says; the config's role ({}) "
                 "only seeds a new data dir",
                 self, state->role,
                 state->leader.empty() ? "" : absl::StrCat(" of '", state->leader, "'"),
                 state_path, config_role);
  }
  bool resumes = replication::ResumesHandover(*state);
  if ((state->role == "leader" || resumes) && !state->needs_snapshot.empty()) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "node '", self, "' may not lead: as a follower it was told its data is stale (",
        state->needs_snapshot, ", in ", state_path, "); re-seed it first")));
  }
  if (state->membership.version == 0) {
    // The config file's nodes are the first membership; after that the saved one wins.
    std::vector<replication::Member> members{
        {self, options.advertise.empty() ? options.listen : options.advertise, true}};
    for (const auto& [id, address] : options.peers) members.push_back({id, address, true});
    state->membership = replication::MembershipOf(std::move(members), 1);
  }
  bool recover = false;
  if (state->role == "leader" && !resumes) {
    if (state->database_id.empty()) state->database_id = replication::NewDatabaseId();
    if (state->history.empty() || state->membership.VotersExcept(self).empty()) {
      // A new database, or no peer that could hold more: a new epoch at the next sequence
      // number (BeginEpoch) at once.
      *state = replication::StateForLeading(std::move(*state), latest, self);
    } else {
      // It led before: its peers may hold writes it lost (replication/recovery.h). The new
      // epoch begins once they have answered (RecoveringRole).
      recover = true;
    }
  } else if (state->role == "follower" && state->leader.empty()) {
    state->leader = options.leader_id;
  }
  if (absl::Status s = replication::SaveNodeState(state_path, *state); !s.ok()) return fail(s);
  return std::unique_ptr<NodeServer>(
      new NodeServerImpl(std::move(options), *lock_fd, std::move(*engine), std::move(*state),
                         recover));
}

}  // namespace walship::rpc
