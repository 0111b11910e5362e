#include "rpc/snapshot_source.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "replication/clock.h"
#include "replication/messages.h"
#include "replication/node_state.h"
#include "replication/seeding.h"
#include "rpc/checkpoint_files.h"
#include "rpc/node.h"

namespace walship::rpc {
namespace {

namespace fs = std::filesystem;
using replication::SnapshotFile;

// The largest read answered at once.
constexpr uint32_t kMaxReadBytes = 1 << 20;

struct Taken {
  std::string manifest;
  std::vector<SnapshotFile> files;
  engine::SequenceNumber seq = 0;
};

// Takes the checkpoint into `dir` and describes it (on a worker).
absl::StatusOr<Taken> TakeCheckpoint(engine::Engine& engine, const std::string& dir,
                                     const std::string& state_path, const std::string& cluster,
                                     const std::string& self) {
  absl::StatusOr<engine::SequenceNumber> seq = engine.CreateCheckpoint(dir);
  if (!seq.ok()) return seq.status();
  absl::StatusOr<replication::NodeState> state = replication::LoadNodeState(state_path);
  if (!state.ok()) return state.status();
  if (state->database_id.empty()) {
    return absl::FailedPreconditionError("this node holds no database yet (it was never seeded)");
  }
  replication::SnapshotManifest m;
  m.cluster = cluster;
  m.database_id = state->database_id;
  m.source = self;
  m.seq = *seq;
  m.epoch = state->epoch;
  m.history = state->history;
  m.taken_unix_ms = replication::RealClock()->NowMicros() / 1000;
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    absl::StatusOr<SnapshotFile> f = ChecksumFile(dir + "/" + name);
    if (!f.ok()) return f.status();
    m.files.push_back(std::move(*f));
  }
  Taken t;
  t.manifest = replication::FormatManifest(m);
  t.files = std::move(m.files);
  t.seq = *seq;
  return t;
}

// A checkpoint being taken: released (its pin dropped, its directory deleted) when the asker
// goes away before it is handed to a reader, however that happens (the call cancelled, the
// worker queue full, the checkpoint failing).
struct Pending {
  Pending(SnapshotSource& s, uint64_t i, std::string d) : source(s), id(i), dir(std::move(d)) {}
  ~Pending() {
    if (handed) return;
    *cancelled = true;  // a checkpoint the worker still writes is deleted there (TakeCheckpoint)
    source.Released(id, 0);
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  SnapshotSource& source;
  uint64_t id;
  std::string dir;
  bool handed = false;
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
};

class ReaderImpl final : public schema::SnapshotReader::Server {
 public:
  // Lives while the asker holds the reader, and the connection with it (`hold`). Readers
  // die with their connections, which the listener ends before the Node goes.
  ReaderImpl(Node& node, uint64_t id, std::string dir, Taken taken,
             std::shared_ptr<PeerSessionHold> hold)
      : node_(node), id_(id), dir_(std::move(dir)), taken_(std::move(taken)),
        hold_(std::move(hold)) {}
  ~ReaderImpl() {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
    node_.snapshots().Released(id_, taken_.seq);
    std::error_code ec;
    fs::remove_all(dir_, ec);  // hard links: quick
    if (ec) spdlog::warn("cannot delete checkpoint {}: {}", dir_, ec.message());
  }

  kj::Promise<void> read(ReadContext ctx) override {
    auto p = ctx.getParams();
    KJ_REQUIRE(p.getFile() < taken_.files.size(), "no such file in this checkpoint",
               p.getFile());
    const SnapshotFile& f = taken_.files[p.getFile()];
    uint64_t offset = p.getOffset();
    uint64_t n = offset >= f.size ? 0 : std::min<uint64_t>(f.size - offset, p.getMaxBytes());
    n = std::min<uint64_t>(n, kMaxReadBytes);
    int64_t wait_us = node_.snapshots().ReserveRate(n);
    kj::Promise<void> paced = wait_us <= 0 ? kj::Promise<void>(kj::READY_NOW)
                                           : node_.io().provider->getTimer().afterDelay(
                                                 wait_us * kj::MICROSECONDS);
    return paced.then([this, ctx, file = p.getFile(), offset, n]() mutable {
      kj::ArrayPtr<kj::byte> into = ctx.getResults().initData(static_cast<unsigned>(n));
      // What the page cache holds is copied straight into the reply on this thread: the
      // copy is the only work, so a worker would add a hand-over and a second copy.
      size_t got = ReadCached(file, offset, into);
      if (got == into.size()) return kj::Promise<void>(kj::READY_NOW);
      // The rest needs the disk: a worker reads it, into its own buffer (the reply may be
      // gone by the time it is done, if the asker cancels).
      std::string path = dir_ + "/" + taken_.files[file].name;
      if (!read_disk_) {
        read_disk_ = true;
        spdlog::info("checkpoint {}: parts of {} are not in the page cache; workers read them "
                     "from the disk", id_, taken_.files[file].name);
      }
      uint64_t from = offset + got;
      size_t want = into.size() - got;
      return node_.client_pool()
          .Run([path, from, want]() -> absl::StatusOr<std::string> {
            int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
              return absl::UnavailableError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
            }
            std::string buf(want, '\0');
            size_t done = 0;
            while (done < want) {
              ssize_t r = ::pread(fd, buf.data() + done, want - done,
                                  static_cast<off_t>(from + done));
              if (r < 0 && errno == EINTR) continue;
              if (r <= 0) break;
              done += static_cast<size_t>(r);
            }
            ::close(fd);
            buf.resize(done);
            return buf;
          })
          .then([into, got](absl::StatusOr<std::string> rest) mutable {
            KJ_REQUIRE(rest.ok(), "reading the checkpoint failed", rest.status().ToString());
            // The checkpoint's files do not change: a short read means one was damaged.
            KJ_REQUIRE(got + rest->size() == into.size(),
                       "a checkpoint file is shorter than when it was taken");
            std::memcpy(into.begin() + got, rest->data(), rest->size());
          });
    });
  }

 private:
  // Copies into `into` what the page cache holds of `file` from `offset` on, without
  // waiting for the disk (RWF_NOWAIT): the bytes copied, from none to all.
  size_t ReadCached(uint32_t file, uint64_t offset, kj::ArrayPtr<kj::byte> into) {
    if (fds_.empty()) fds_.assign(taken_.files.size(), -1);
    int& fd = fds_[file];
    if (fd < 0) fd = ::open((dir_ + "/" + taken_.files[file].name).c_str(), O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    while (fd >= 0 && got < into.size()) {
      iovec v{into.begin() + got, into.size() - got};
      ssize_t r = ::preadv2(fd, &v, 1, static_cast<off_t>(offset + got), RWF_NOWAIT);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;  // EAGAIN: not cached; anything else: the worker reports it
      got += static_cast<size_t>(r);
    }
    return got;
  }

  Node& node_;
  uint64_t id_;
  std::string dir_;
  Taken taken_;
  std::vector<int> fds_;  // per file, opened at its first read
  bool read_disk_ = false;  // a read needed the disk (logged once)
  std::shared_ptr<PeerSessionHold> hold_;
};

}  // namespace

SnapshotSource::SnapshotSource(Node& node) : node_(node) {}
SnapshotSource::~SnapshotSource() = default;

void SnapshotSource::RemoveStale() {
  std::error_code ec;
  fs::remove_all(node_.options().data_dir + "/checkpoints", ec);
  if (ec) spdlog::warn("cannot delete old checkpoints: {}", ec.message());
}

kj::Promise<void> SnapshotSource::Serve(SnapshotContext ctx,
                                        std::shared_ptr<PeerSessionHold> hold) {
  auto req = ctx.getParams().getRequest();
  const NodeServerOptions& o = node_.options();
  std::string who = req.getRequester().size() == 0 ? std::string("a tool")
                                                   : absl::StrCat("node '", req.getRequester().cStr(), "'");
  KJ_REQUIRE(req.getVersion() == replication::kPeerProtocolVersion,
             "the asker speaks another peer protocol version: run one walship version in a "
             "cluster", req.getVersion(), replication::kPeerProtocolVersion);
  KJ_REQUIRE(req.getCluster().size() == 0 || std::string(req.getCluster().cStr()) == o.cluster,
             "the asker belongs to another cluster", req.getCluster().cStr(), o.cluster.c_str());
  KJ_REQUIRE(serving_ < kMaxServing, "this node serves the most checkpoints it serves at once; "
             "ask again later", serving_);
  uint64_t id = next_id_++;
  std::string dir = absl::StrCat(o.data_dir, "/checkpoints/", id);
  std::error_code ec;
  fs::create_directories(o.data_dir + "/checkpoints", ec);
  ++serving_;
  live_[id] = 0;  // pins the whole WAL until the checkpoint's sequence number is known
  spdlog::info("taking a checkpoint for {}", who);
  auto pending = std::make_shared<Pending>(*this, id, dir);
  return node_.client_pool()
      .Run([e = &node_.engine(), dir, state = node_.state_path(), cluster = o.cluster,
            self = o.node_id, cancelled = pending->cancelled]() {
        absl::StatusOr<Taken> t = TakeCheckpoint(*e, dir, state, cluster, self);
        if (*cancelled) {  // the asker went away meanwhile: nobody deletes it later
          std::error_code gone;
          fs::remove_all(dir, gone);
        }
        return t;
      })
      .then([this, ctx, id, dir, who, pending, hold](absl::StatusOr<Taken> taken) mutable {
        if (!taken.ok()) {
          KJ_FAIL_REQUIRE("cannot take a checkpoint", taken.status().ToString());
        }
        pending->handed = true;
        live_[id] = taken->seq;
        spdlog::info("checkpoint {} at seq {} ({} in {} files) serves {}", id, taken->seq,
                     replication::HumanBytes([&] {
                       uint64_t n = 0;
                       for (const SnapshotFile& f : taken->files) n += f.size;
                       return n;
                     }()),
                     taken->files.size(), who);
        auto results = ctx.getResults();
        results.setManifest(taken->manifest);
        results.setReader(kj::heap<ReaderImpl>(node_, id, dir, std::move(*taken), hold));
      });
}

void SnapshotSource::Released(uint64_t id, engine::SequenceNumber seq) {
  if (live_.erase(id) == 0) return;
  --serving_;
  if (seq > 0) after_.emplace(node_.MonoNowUs() + kPinAfterUs, seq);
}

engine::SequenceNumber SnapshotSource::PinnedFrom() {
  int64_t now = node_.MonoNowUs();
  while (!after_.empty() && after_.begin()->first <= now) after_.erase(after_.begin());
  engine::SequenceNumber from = UINT64_MAX;
  for (const auto& [id, seq] : live_) from = std::min(from, seq + 1);
  for (const auto& [until, seq] : after_) from = std::min(from, seq + 1);
  return from;
}

int64_t SnapshotSource::ReserveRate(uint64_t bytes) {
  uint64_t rate = node_.options().snapshot_max_bytes_per_sec;
  if (rate == 0 || bytes == 0) return 0;
  int64_t now = node_.MonoNowUs();
  int64_t start = std::max(now, rate_free_us_);
  rate_free_us_ = start + static_cast<int64_t>(bytes * 1'000'000 / rate);
  return start - now;
}

}  // namespace walship::rpc
