#include "rpc/checkpoint_files.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"

namespace walship::rpc {
namespace {

namespace fs = std::filesystem;
using replication::SnapshotFile;
using replication::SnapshotManifest;

absl::Status Errno(const char* what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Errno("cannot read", path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

namespace {
absl::StatusOr<std::string> ReadWhole(const std::string& path) { return ReadWholeFile(path); }

absl::Status FsyncPath(const std::string& path, bool dir) {
  int fd = ::open(path.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("cannot fsync", path);
  return absl::OkStatus();
}

absl::Status Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", from, " to ", to, ": ",
                                               std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status RemoveAll(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot delete ", path, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

uint32_t Crc32(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (n > 0) {  // zlib takes a uInt length
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = ::crc32(c, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

absl::StatusOr<SnapshotFile> ChecksumFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  SnapshotFile f;
  f.name = fs::path(path).filename().string();
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = Errno("cannot read", path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    f.crc = Crc32(f.crc, buf.data(), static_cast<size_t>(n));
    f.size += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return f;
}

absl::Status SyncDir(const std::string& dir) { return FsyncPath(dir, true); }

absl::Status WriteFileDurably(const std::string& path, const std::string& contents) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.flush();
    if (!out) return Errno("cannot write", tmp);
  }
  if (absl::Status s = FsyncPath(tmp, false); !s.ok()) return s;
  if (absl::Status s = Rename(tmp, path); !s.ok()) return s;
  return SyncDir(fs::path(path).parent_path().string());
}

absl::Status AppendDurably(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open", path);
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
            ::fdatasync(fd) == 0;
  absl::Status s = ok ? absl::OkStatus() : Errno("cannot append to", path);
  ::close(fd);
  return s;
}

absl::StatusOr<std::vector<SnapshotFile>> ReadVerified(const std::string& dir) {
  std::string path = dir + "/" + kVerifiedFile;
  if (::access(path.c_str(), F_OK) != 0) return std::vector<SnapshotFile>{};
  absl::StatusOr<std::string> text = ReadWhole(path);
  if (!text.ok()) return text.status();
  return replication::ParseVerified(*text, path);
}

absl::StatusOr<SnapshotManifest> VerifyCheckpointDir(const std::string& dir) {
  std::string manifest_path = dir + "/" + kManifestFile;
  if (::access(manifest_path.c_str(), F_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " is not a complete walship checkpoint: it has no ", kManifestFile));
  }
  absl::StatusOr<std::string> text = ReadWhole(manifest_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<SnapshotManifest> m = replication::ParseManifest(*text, manifest_path);
  if (!m.ok()) return m.status();
  std::map<std::string, bool> listed;
  for (const SnapshotFile& want : m->files) {
    listed[want.name] = true;
    std::string path = dir + "/db/" + want.name;
    absl::StatusOr<SnapshotFile> have = ChecksumFile(path);
    if (!have.ok()) return have.status();
    if (have->size != want.size || have->crc != want.crc) {
      return absl::DataLossError(absl::StrCat(
          path, " is damaged: ", have->size, " bytes with CRC-32 ", have->crc, ", the manifest "
          "lists ", want.size, " bytes with CRC-32 ", want.crc));
    }
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir + "/db", ec)) {
    std::string name = entry.path().filename().string();
    if (!listed.count(name)) {
      return absl::DataLossError(absl::StrCat(dir, "/db holds ", name,
                                              ", which the manifest does not list"));
    }
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list ", dir, "/db: ", ec.message()));
  absl::StatusOr<engine::SequenceNumber> seq = engine::Engine::CheckpointSequence(dir + "/db");
  if (!seq.ok()) return seq.status();
  if (*seq != m->seq) {
    return absl::DataLossError(absl::StrCat("the database in ", dir, "/db ends at seq ", *seq,
                                            "; its manifest says ", m->seq));
  }
  return m;
}

absl::StatusOr<uint64_t> FreeBytes(const std::string& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return Errno("cannot stat the file system of", dir);
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

absl::Status StageCheckpoint(const std::string& from, const std::string& data_dir) {
  absl::StatusOr<std::string> manifest = ReadWhole(from + "/" + kManifestFile);
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<SnapshotManifest> m = replication::ParseManifest(*manifest, from);
  if (!m.ok()) return m.status();
  absl::StatusOr<uint64_t> free = FreeBytes(data_dir);
  if (!free.ok()) return free.status();
  if (*free < m->TotalBytes()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough disk space in ", data_dir, " for the checkpoint: it needs ",
        replication::HumanBytes(m->TotalBytes()), ", the disk has ",
        replication::HumanBytes(*free), " free"));
  }
  std::string seed = data_dir + "/seed";
  if (absl::Status s = RemoveAll(seed); !s.ok()) return s;
  std::error_code ec;
  fs::create_directories(seed + "/db", ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", seed, ": ", ec.message()));
  for (const SnapshotFile& f : m->files) {
    fs::copy_file(from + "/db/" + f.name, seed + "/db/" + f.name, ec);
    if (ec) {
      absl::Status s = absl::UnavailableError(
          absl::StrCat("cannot copy ", from, "/db/", f.name, ": ", ec.message()));
      (void)RemoveAll(seed);  // the old data stays as it was
      return s;
    }
    if (absl::Status s = FsyncPath(seed + "/db/" + f.name, false); !s.ok()) return s;
  }
  if (absl::Status s = SyncDir(seed + "/db"); !s.ok()) return s;
  return WriteFileDurably(seed + "/" + kManifestFile, *manifest);
}

absl::StatusOr<std::optional<SnapshotManifest>> InstallStagedSeed(const std::string& data_dir,
                                                                  const std::string& state_path,
                                                                  const std::string& leader) {
  std::string seed = data_dir + "/seed";
  std::string manifest_path = seed + "/" + kManifestFile;
  std::string db = data_dir + "/db", old = data_dir + "/db.old";
  std::error_code ec;
  bool complete = ::access(manifest_path.c_str(), F_OK) == 0;
  if (!complete) {
    // An install cut off after it moved the old database aside, with its seed lost since
    // (a restore that replaced it failed): the old database goes back.
    if (!fs::exists(db, ec) && fs::exists(old, ec)) {
      spdlog::warn("{} is missing and {} holds the database an install moved aside; putting it "
                   "back", db, old);
      if (absl::Status s = Rename(old, db); !s.ok()) return s;
      if (absl::Status s = SyncDir(data_dir); !s.ok()) return s;
    } else if (fs::exists(db, ec) && fs::exists(old, ec)) {
      if (absl::Status s = RemoveAll(old); !s.ok()) return s;  // left by a finished install
    }
    return std::optional<SnapshotManifest>();
  }
  absl::StatusOr<std::string> text = ReadWhole(manifest_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<SnapshotManifest> m = replication::ParseManifest(*text, manifest_path);
  if (!m.ok()) return m.status();
  bool staged = fs::exists(seed + "/db", ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot look at ", seed, "/db: ", ec.message()));
  if (staged) {
    // Every listed file is there at its size (their checksums were checked as they came):
    // else the seed is not complete after all (a crash lost a name), and is fetched again.
    for (const SnapshotFile& f : m->files) {
      std::error_code size_ec;
      if (fs::file_size(seed + "/db/" + f.name, size_ec) != f.size || size_ec) {
        spdlog::error("the checkpoint staged in {} lacks {} (or it is cut short); it is not "
                      "installed and will be fetched again", seed, f.name);
        ::unlink(manifest_path.c_str());
        if (absl::Status s = SyncDir(seed); !s.ok()) return s;
        return std::optional<SnapshotManifest>();
      }
    }
    if (fs::exists(db, ec)) {
      // db.old here is left from an install that finished before: db is the newer.
      if (absl::Status s = RemoveAll(old); !s.ok()) return s;
      if (absl::Status s = Rename(db, old); !s.ok()) return s;
    }
    if (absl::Status s = Rename(seed + "/db", db); !s.ok()) return s;
    if (absl::Status s = SyncDir(data_dir); !s.ok()) return s;
  } else if (!fs::exists(db, ec)) {
    return absl::DataLossError(absl::StrCat(
        "the checkpoint in ", seed, " was being installed, but neither ", seed, "/db nor ", db,
        " exists; the previous database may be in ", old));
  }
  // The new database is in place (now, or by an install a crash cut short): name it.
  absl::StatusOr<replication::NodeState> state = replication::LoadNodeState(state_path);
  if (!state.ok()) return state.status();
  replication::NodeState next = replication::StateAfterSeed(*state, *m, leader);
  if (absl::Status s = replication::SaveNodeState(state_path, next); !s.ok()) return s;
  if (absl::Status s = RemoveAll(seed); !s.ok()) return s;
  if (absl::Status s = RemoveAll(old); !s.ok()) return s;
  if (absl::Status s = SyncDir(data_dir); !s.ok()) return s;
  return std::optional<SnapshotManifest>(std::move(*m));
}

}  // namespace walship::rpc
