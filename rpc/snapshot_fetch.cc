#include "rpc/snapshot_fetch.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "replication/messages.h"
#include "rpc/checkpoint_files.h"

namespace walship::rpc {
namespace {

namespace fs = std::filesystem;
using replication::SeedProgress;
using replication::SnapshotFile;
using replication::SnapshotManifest;
using ReadResponse = capnp::Response<schema::SnapshotReader::ReadResults>;

// Progress is reported at most this often while copying.
constexpr int64_t kProgressEveryUs = 250'000;

struct Chunk {
  uint32_t file = 0;  // index into the manifest's files
  uint64_t offset = 0;
  uint32_t length = 0;
};

// One transfer: the plan, the reads in flight, and the file being written.
struct Transfer {
  Transfer(kj::Timer& t, FetchOptions o) : timer(t), options(std::move(o)) {}
  ~Transfer() {
    if (fd >= 0) ::close(fd);
  }

  kj::Timer& timer;
  FetchOptions options;
  std::string manifest_text;
  SnapshotManifest manifest;
  schema::SnapshotReader::Client reader = nullptr;
  std::vector<uint32_t> files;      // manifest indexes to fetch, in order
  // Per file to fetch: the bytes already staged by a transfer cut off (kept), and their CRC.
  std::vector<std::pair<uint64_t, uint32_t>> starts;
  std::vector<Chunk> chunks;        // every read, in order
  size_t next_chunk = 0;            // the next read to send
  size_t next_file = 0;             // index into `files` of the file being written
  std::deque<kj::Promise<ReadResponse>> inflight;  // answered in the order sent
  int fd = -1;
  uint64_t written = 0;             // of the file being written
  uint32_t crc = 0;
  SeedProgress progress;
  kj::TimePoint started = kj::origin<kj::TimePoint>();
  kj::TimePoint reported = kj::origin<kj::TimePoint>();
  uint64_t fetched = 0;             // bytes received in this transfer

  std::string db_dir() const { return options.dir + "/db"; }

  void Report(bool force) {
    if (!options.progress) return;
    kj::TimePoint now = timer.now();
    if (!force && (now - reported) / kj::MICROSECONDS < kProgressEveryUs) return;
    reported = now;
    int64_t us = (now - started) / kj::MICROSECONDS;
    progress.bytes_per_sec = us <= 0 ? 0 : static_cast<uint64_t>(fetched * 1e6 / us);
    options.progress(progress);
  }

  absl::Status Fail(absl::Status s) {
    progress.phase = SeedProgress::Phase::kFailed;
    progress.error = std::string(s.message());
    Report(true);
    return s;
  }

  // Opens the next file to fetch, finishing those of no bytes on the way. OK at the end.
  absl::Status OpenNext() {
    while (fd < 0 && next_file < files.size()) {
      const SnapshotFile& f = manifest.files[files[next_file]];
      std::string path = db_dir() + "/" + f.name;
      auto [start, start_crc] = starts[next_file];
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | (start == 0 ? O_TRUNC : 0) | O_CLOEXEC, 0644);
      if (fd < 0 || (start > 0 && (::ftruncate(fd, static_cast<off_t>(start)) != 0 ||
                                   ::lseek(fd, static_cast<off_t>(start), SEEK_SET) < 0))) {
        return absl::UnavailableError(absl::StrCat("cannot create ", path, ": ",
                                                   std::strerror(errno)));
      }
      written = start;
      crc = start_crc;
      if (written == f.size) {
        if (absl::Status s = FinishFile(); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status FinishFile() {
    const SnapshotFile& f = manifest.files[files[next_file]];
    std::string path = db_dir() + "/" + f.name;
    int rc = ::fdatasync(fd);
    ::close(fd);
    fd = -1;
    if (rc != 0) {
      return absl::UnavailableError(absl::StrCat("cannot fsync ", path, ": ", std::strerror(errno)));
    }
    if (crc != f.crc) {
      ::unlink(path.c_str());
      return absl::DataLossError(absl::StrCat(
          path, " arrived damaged from ", options.source, ": CRC-32 ", crc, ", the manifest lists ",
          f.crc, " (", f.size, " bytes); it is fetched again on the next attempt"));
    }
    ++next_file;
    return AppendDurably(options.dir + "/" + kVerifiedFile, replication::FormatVerified(f));
  }

  absl::Status Consume(const Chunk& c, capnp::Data::Reader data) {
    const SnapshotFile& f = manifest.files[c.file];
    if (data.size() != c.length) {
      return absl::DataLossError(absl::StrCat(
          options.source, " sent ", data.size(), " bytes of ", f.name, " at offset ", c.offset,
          " where the manifest promises ", c.length, " (the file changed on the source?)"));
    }
    if (absl::Status s = OpenNext(); !s.ok()) return s;
    const kj::byte* p = data.begin();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return absl::UnavailableError(absl::StrCat("cannot write ", db_dir(), "/", f.name, ": ",
                                                   std::strerror(errno)));
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    // Start writing these bytes back now, without waiting: the file's fdatasync at its end
    // then waits for the last chunks only, not for the whole file.
    ::sync_file_range(fd, static_cast<off_t>(written), static_cast<off_t>(data.size()),
                      SYNC_FILE_RANGE_WRITE);
    crc = Crc32(crc, data.begin(), data.size());
    written += data.size();
    fetched += data.size();
    progress.done_bytes += data.size();
    if (written == f.size) {
      if (absl::Status s = FinishFile(); !s.ok()) return s;
      if (absl::Status s = OpenNext(); !s.ok()) return s;  // files of no bytes after it
    }
    Report(false);
    return absl::OkStatus();
  }

  void Send() {
    while (inflight.size() < options.max_inflight && next_chunk < chunks.size()) {
      const Chunk& c = chunks[next_chunk++];
      auto req = reader.readRequest();
      req.setFile(c.file);
      req.setOffset(c.offset);
      req.setMaxBytes(c.length);
      inflight.push_back(req.send());
    }
  }
};

kj::Promise<absl::Status> Pump(std::shared_ptr<Transfer> t) {
  t->Send();
  if (t->inflight.empty()) return absl::OkStatus();
  kj::Promise<ReadResponse> front = kj::mv(t->inflight.front());
  t->inflight.pop_front();
  size_t index = t->next_chunk - t->inflight.size() - 1;
  return front.then([t, index](ReadResponse r) -> kj::Promise<absl::Status> {
    if (absl::Status s = t->Consume(t->chunks[index], r.getData()); !s.ok()) return s;
    return Pump(t);
  });
}

// Sets up the directory for the manifest `t` received: keeps what an earlier transfer
// verified, deletes the rest, and lays out the reads.
absl::Status Prepare(Transfer& t) {
  std::error_code ec;
  fs::create_directories(t.db_dir(), ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", t.db_dir(), ": ", ec.message()));
  absl::StatusOr<std::vector<SnapshotFile>> verified = ReadVerified(t.options.dir);
  if (!verified.ok()) return verified.status();
  // A file listed as verified but gone or cut short (a crash before its name reached the
  // disk) is not kept.
  std::erase_if(*verified, [&](const SnapshotFile& f) {
    std::error_code size_ec;
    return fs::file_size(t.db_dir() + "/" + f.name, size_ec) != f.size || size_ec;
  });
  replication::FetchPlan plan = replication::PlanFetch(t.manifest, *verified);
  // The manifest of the transfer cut off, if any: a file it listed as this one does, and was
  // fetching, continues after the bytes staged.
  std::optional<SnapshotManifest> previous;
  std::string fetching = t.options.dir + "/" + kFetchingFile;
  if (absl::StatusOr<std::string> text = ReadWholeFile(fetching); text.ok()) {
    absl::StatusOr<SnapshotManifest> m = replication::ParseManifest(*text, fetching);
    if (m.ok()) previous = std::move(*m);
  }
  std::map<std::string, bool> keep;
  for (const SnapshotFile& f : plan.keep) keep[f.name] = true;
  std::map<std::string, std::pair<uint64_t, uint32_t>> partial;
  for (const SnapshotFile& f : plan.fetch) {
    if (!replication::ResumesPartial(previous ? &*previous : nullptr, f)) continue;
    absl::StatusOr<SnapshotFile> staged = ChecksumFile(t.db_dir() + "/" + f.name);
    if (staged.ok() && staged->size > 0 && staged->size <= f.size) {
      partial[f.name] = {staged->size, staged->crc};
      keep[f.name] = true;
    }
  }
  for (const auto& entry : fs::directory_iterator(t.db_dir(), ec)) {
    if (keep.count(entry.path().filename().string())) continue;
    // A stale file left in place would be installed beside the checkpoint's own.
    std::error_code gone;
    if (!fs::remove(entry.path(), gone) && gone) {
      return absl::UnavailableError(
          absl::StrCat("cannot delete ", entry.path().string(), ": ", gone.message()));
    }
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list ", t.db_dir(), ": ", ec.message()));
  std::string kept;
  for (const SnapshotFile& f : plan.keep) kept += replication::FormatVerified(f);
  if (absl::Status s = WriteFileDurably(t.options.dir + "/" + kVerifiedFile, kept); !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFileDurably(fetching, t.manifest_text); !s.ok()) return s;
  absl::StatusOr<uint64_t> free = FreeBytes(t.options.dir);
  if (!free.ok()) return free.status();
  if (*free < plan.fetch_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough disk space in ", t.options.dir, ": the checkpoint needs ",
        replication::HumanBytes(plan.fetch_bytes), " more, the disk has ",
        replication::HumanBytes(*free), " free"));
  }
  std::map<std::string, uint32_t> index;
  for (uint32_t i = 0; i < t.manifest.files.size(); ++i) index[t.manifest.files[i].name] = i;
  uint64_t staged_bytes = 0;
  for (const SnapshotFile& f : plan.fetch) {
    uint32_t i = index[f.name];
    t.files.push_back(i);
    auto it = partial.find(f.name);
    std::pair<uint64_t, uint32_t> start = it == partial.end() ? std::pair<uint64_t, uint32_t>{0, 0}
                                                              : it->second;
    t.starts.push_back(start);
    staged_bytes += start.first;
    for (uint64_t off = start.first; off < f.size; off += t.options.chunk_bytes) {
      t.chunks.push_back(Chunk{i, off, static_cast<uint32_t>(
                                           std::min<uint64_t>(t.options.chunk_bytes, f.size - off))});
    }
  }
  t.progress.phase = SeedProgress::Phase::kCopying;
  t.progress.total_bytes = t.manifest.TotalBytes();
  t.progress.done_bytes = plan.kept_bytes + staged_bytes;
  return t.OpenNext();  // files of no bytes at the front
}

}  // namespace

kj::Promise<absl::StatusOr<SnapshotManifest>> FetchCheckpoint(kj::Timer& timer,
                                                              schema::PeerService::Client peer,
                                                              FetchOptions options) {
  auto t = std::make_shared<Transfer>(timer, std::move(options));
  t->progress.source = t->options.source;
  t->started = t->reported = timer.now();
  t->Report(true);
  auto req = peer.snapshotRequest();
  auto r = req.initRequest();
  r.setVersion(replication::kPeerProtocolVersion);
  r.setCluster(t->options.cluster);
  r.setRequester(t->options.requester);
  return req.send()
      .then([t](capnp::Response<schema::PeerService::SnapshotResults> resp)
                -> kj::Promise<absl::Status> {
        t->manifest_text = resp.getManifest();
        absl::StatusOr<SnapshotManifest> m = replication::ParseManifest(
            t->manifest_text, absl::StrCat("the manifest from ", t->options.source));
        if (!m.ok()) return m.status();
        t->manifest = std::move(*m);
        if (!t->options.cluster.empty() && t->manifest.cluster != t->options.cluster) {
          return absl::FailedPreconditionError(absl::StrCat(
              t->options.source, " belongs to cluster '", t->manifest.cluster, "', not '",
              t->options.cluster, "'"));
        }
        if (t->options.state.has_value()) {
          absl::Status fits =
              replication::CheckSeedFor(t->manifest, t->options.cluster, *t->options.state);
          if (!fits.ok()) return fits;
        }
        t->reader = resp.getReader();
        if (absl::Status s = Prepare(*t); !s.ok()) return s;
        t->started = t->timer.now();
        t->Report(true);
        return Pump(t);
      })
      .then([t](absl::Status s) -> absl::StatusOr<SnapshotManifest> {
        t->reader = nullptr;  // the source may drop its checkpoint now
        if (!s.ok()) return t->Fail(std::move(s));
        t->progress.phase = SeedProgress::Phase::kVerifying;
        t->Report(true);
        absl::StatusOr<engine::SequenceNumber> seq =
            engine::Engine::CheckpointSequence(t->db_dir());
        if (!seq.ok()) return t->Fail(seq.status());
        if (*seq != t->manifest.seq) {
          return t->Fail(absl::DataLossError(absl::StrCat(
              "the checkpoint from ", t->options.source, " opens at seq ", *seq,
              "; its manifest says ", t->manifest.seq)));
        }
        // The files' names must be durable before the manifest says they are all there.
        if (absl::Status d = SyncDir(t->db_dir()); !d.ok()) return t->Fail(d);
        if (absl::Status w = WriteFileDurably(t->options.dir + "/" + kManifestFile,
                                              t->manifest_text);
            !w.ok()) {
          return t->Fail(w);
        }
        ::unlink((t->options.dir + "/" + kFetchingFile).c_str());  // complete: not needed
        return t->manifest;
      },
      [t](kj::Exception&& e) -> absl::StatusOr<SnapshotManifest> {
        return t->Fail(absl::UnavailableError(absl::StrCat(
            "checkpoint transfer from ", t->options.source, ": ", e.getDescription().cStr())));
      });
}

}  // namespace walship::rpc
