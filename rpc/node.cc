#include "rpc/node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "replication/clock.h"
#include "replication/handover.h"
#include "rpc/client_service.h"
#include "rpc/coordinator.h"
#include "rpc/follower_role.h"
#include "rpc/leader_role.h"
#include "rpc/log_context.h"
#include "rpc/recovering_role.h"
#include "rpc/seeding_role.h"

namespace walship::rpc {
namespace {

constexpr uint32_t kWalTrimIntervalMs = 1000;
constexpr uint32_t kStorageCheckIntervalMs = 1000;
constexpr uint32_t kMaxResumeIntervalMs = 30000;
// The node's own work queued at once: one write group, one apply, one WAL trim and one fsync
// at most; the bound leaves room to spare.
constexpr size_t kMaxNodeTasks = 16;
// WAL reads queued at once: one per follower at most (max_followers is at most 64).
constexpr size_t kMaxWalReads = 128;

}  // namespace

Node::Node(const NodeServerOptions& options, engine::Engine& engine, kj::AsyncIoContext& io,
           replication::NodeState state, bool recover, const PeerSecurity& security)
    : options_(options),
      security_(security),
      engine_(engine),
      io_(io),
      client_pool_(options.worker_threads, options.max_queued_tasks),
      node_pool_(1, kMaxNodeTasks),
      wal_pool_(1, kMaxWalReads),
      clients_(std::make_unique<ClientService>(*this)),
      initial_state_(std::move(state)),
      recover_(recover),
      snapshots_(std::make_unique<SnapshotSource>(*this)),
      membership_(initial_state_.membership),
      tasks_(*this) {
  if (options.coordinator.enabled()) {
    coordinator_ = std::make_unique<Coordinator>(
        io, options.coordinator, options.node_id,
        options.advertise.empty() ? options.listen : options.advertise, options.cluster,
        [this]() { return PreciseNowUs(); });
  }
  auto paf = kj::newPromiseAndFulfiller<void>();
  restart_promise_ = kj::mv(paf.promise);
  restart_ = kj::mv(paf.fulfiller);
}

void Node::RequestRestart() {
  if (restart_->isWaiting()) restart_->fulfill();
}

Node::~Node() = default;

void Node::taskFailed(kj::Exception&& e) {
  spdlog::warn("background task failed: {}", e.getDescription().cStr());
}

void Node::Start() {
  snapshots_->RemoveStale();
  tasks_.add(WalTrimLoop());
  tasks_.add(StorageLoop());
  if (coordinator_ != nullptr) coordinator_->Start();
  if (recover_ && options_.failover) {
    // With automatic failover, whoever leads is elected: a node that led before it stopped
    // follows, and stands like any other (its log, if the most up to date, wins the vote).
    spdlog::info("node '{}' led before it stopped; with failover on it follows and lets the "
                 "voters elect the leader", options_.node_id);
    role_ = std::make_unique<FollowerRole>(
        *this, replication::StateForFollowing(std::move(initial_state_), ""));
  } else if (recover_) {
    role_ = std::make_unique<RecoveringRole>(*this, std::move(initial_state_));
  } else {
    role_ = MakeRole(std::move(initial_state_));
  }
  SetLogRole(role_->name());
  role_->Start();
}

std::string Node::AddressOf(const std::string& id) const {
  if (const replication::Member* m = membership_.Find(id); m != nullptr && !m->address.empty()) {
    return m->address;
  }
  auto it = options_.peers.find(id);
  if (it != options_.peers.end()) return it->second;
  return id == options_.leader_id ? options_.leader_address : "";
}

void Node::AdoptMembership(replication::Membership m) {
  if (m == membership_) return;
  spdlog::info("membership version {}: {}", m.version, replication::Describe(m));
  membership_ = std::move(m);
}

int64_t Node::MonoNowUs() const {
  return (io_.provider->getTimer().now() - kj::origin<kj::TimePoint>()) / kj::MICROSECONDS;
}

int64_t Node::PreciseNowUs() const {
  return (kj::systemPreciseMonotonicClock().now() - kj::origin<kj::TimePoint>()) /
         kj::MICROSECONDS;
}

std::unique_ptr<Role> Node::MakeRole(replication::NodeState state,
                                     std::deque<replication::ShippedBatch> recent,
                                     replication::ElectedBy elected_by) {
  if (replication::ResumesHandover(state)) {
    return std::make_unique<LeaderRole>(*this, std::move(state), /*resume_handover=*/true,
                                        std::move(recent));
  }
  if (state.role == "leader") {
    return std::make_unique<LeaderRole>(*this, std::move(state), false, std::move(recent),
                                        std::move(elected_by));
  }
  if (!state.needs_snapshot.empty() && options_.reseed == replication::ReseedPolicy::kAutomatic) {
    return std::make_unique<SeedingRole>(*this, std::move(state));
  }
  return std::make_unique<FollowerRole>(*this, std::move(state));
}

absl::Status Node::Reseed() { return role_->Reseed(); }

void Node::SwitchToSeeding(replication::NodeState state,
                           std::optional<engine::SequenceNumber> shared_upto) {
  tasks_.add(kj::evalLater([this, state = std::move(state), shared_upto]() mutable {
    role_ = std::make_unique<SeedingRole>(*this, std::move(state), shared_upto);
    spdlog::info("node '{}' is now {}", options_.node_id, role_->name());
    SetLogRole(role_->name());
    role_->Start();
    ReleaseHeld();
  }));
}

void Node::SwitchRole(replication::NodeState state, std::deque<replication::ShippedBatch> recent,
                      replication::ElectedBy elected_by) {
  tasks_.add(kj::evalLater([this, state = std::move(state), recent = std::move(recent),
                            elected_by = std::move(elected_by)]() mutable {
    std::unique_ptr<Role> next = MakeRole(std::move(state), std::move(recent),
                                          std::move(elected_by));
    spdlog::info("node '{}' is now {}", options_.node_id, next->name());
    role_ = std::move(next);  // the old role ends here
    SetLogRole(role_->name());
    role_->Start();
    clients_->reads().Poke();  // reads waiting for a position are checked against the new role
    ReleaseHeld();             // hellos held while it stood are answered by the new role
  }));
}

kj::Promise<void> Node::UntilSettled() {
  if (role_ == nullptr || !role_->Standing()) return kj::READY_NOW;
  // Those whose wait ended by its time bound go.
  held_.erase(std::remove_if(held_.begin(), held_.end(),
                             [](auto& f) { return !f->isWaiting(); }),
              held_.end());
  auto paf = kj::newPromiseAndFulfiller<void>();
  held_.push_back(kj::mv(paf.fulfiller));
  uint32_t bound_ms = std::min(options_.election_timeout_ms, kMaxHoldMs);
  return paf.promise.exclusiveJoin(
      io_.provider->getTimer().afterDelay(bound_ms * kj::MILLISECONDS));
}

void Node::ReleaseHeld() {
  if (held_.empty()) return;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> held = std::move(held_);
  held_.clear();
  for (auto& f : held) f->fulfill();
}

// Keeps the archived WAL within wal_retention_bytes every second (RocksDB alone would check
// every 10 minutes), plus, up to wal_pinned_max_bytes more, what followers and checkpoints
// being served still need. On every node: a follower's WAL is the log it serves once it leads. A
// follower whose position goes is told it needs a snapshot when next served.
kj::Promise<void> Node::WalTrimLoop() {
  return io_.provider->getTimer()
      .afterDelay(kWalTrimIntervalMs * kj::MILLISECONDS)
      .then([this]() {
        engine::SequenceNumber keep_from =
            std::min(role_ == nullptr ? UINT64_MAX : role_->WalNeededFrom(),
                     snapshots_->PinnedFrom());
        return node_pool_.Run([e = &engine_, keep_from]() { return e->TrimWalArchive(keep_from); });
      })
      .then([this](absl::StatusOr<engine::WalTrim> trim) {
        if (!trim.ok()) {
          spdlog::error("trimming the WAL archive: {}", trim.status().ToString());
          return;
        }
        wal_files_ = std::move(trim->files);
        if (trim->deleted_files > 0) {
          spdlog::info("deleted {} archived WAL files ({} bytes) to keep the archive within "
                       "wal_retention_bytes (wal_pinned_max_bytes for WAL followers still "
                       "need); it holds {} bytes, {} of them for followers",
                       trim->deleted_files, trim->deleted_bytes, trim->archived_bytes,
                       trim->pinned_bytes);
        }
      })
      .catch_([](kj::Exception&& e) {  // the worker queue was full: try again next time
        spdlog::warn("WAL archive trim skipped: {}", e.getDescription().cStr());
      })
      .then([this]() { return WalTrimLoop(); });
}

// Watches for a storage error (a failed flush or compaction, a full disk: RocksDB then refuses
// every write) every second: logs it, shows it in status, and asks RocksDB to resume once its
// cause is gone, at most every kMaxResumeIntervalMs while it persists.
kj::Promise<void> Node::StorageLoop() {
  return io_.provider->getTimer()
      .afterDelay(kStorageCheckIntervalMs * kj::MILLISECONDS)
      .then([this]() -> kj::Promise<void> {
        if (absl::Status failed = engine_.WalFailed(); !failed.ok()) {
          // As PostgreSQL panics on a failed WAL write: stop at once, and recover from the WAL
          // at the next start. Nothing may close the database (engine.h: WalFailed).
          spdlog::critical("STOPPING: {}; exit code {}: start the node again once the disk "
                           "has room",
                           std::string(failed.message()), kExitWalFailed);
          spdlog::default_logger()->flush();
          std::_Exit(kExitWalFailed);
        }
        absl::Status error = engine_.StorageError();
        if (error.ok()) {
          if (storage_failed_) spdlog::info("storage recovered; writes are accepted again");
          storage_failed_ = false;
          return kj::READY_NOW;
        }
        int64_t now = replication::RealClock()->NowMicros();
        if (!storage_failed_) {
          spdlog::error("STORAGE ERROR: {}", std::string(error.message()));
          storage_failed_ = true;
          resume_interval_ms_ = kStorageCheckIntervalMs;
        } else if (now < next_resume_us_) {
          return kj::READY_NOW;
        }
        next_resume_us_ = now + int64_t{resume_interval_ms_} * 1000;
        resume_interval_ms_ = std::min(resume_interval_ms_ * 2, kMaxResumeIntervalMs);
        return node_pool_.Run([e = &engine_]() { return e->Resume(); })
            .then([](absl::Status s) {
              if (s.ok()) return;
              spdlog::warn("storage not recovered yet: {}", s.ToString());
            });
      })
      .catch_([](kj::Exception&& e) {
        spdlog::warn("storage check skipped: {}", e.getDescription().cStr());
      })
      .then([this]() { return StorageLoop(); });
}

}  // namespace walship::rpc
