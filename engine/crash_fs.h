// A RocksDB file system that can lose what was never fsynced, as a machine that loses power
// does (tests only): every WAL file's length at its last sync is recorded, and after a
// simulated crash each WAL file is cut back to that length before the database is opened
// again. Other files (SSTables, the manifest) are synced by RocksDB before they count, so
// they are kept whole.
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace walship::engine::testing {

class CrashableFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  CrashableFileSystem() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "CrashableFileSystem"; }

  // The power goes: from now until Recover, syncs no longer count (closing the database
  // after this must not make anything durable).
  void Crash() {
    std::lock_guard lock(mu_);
    crashed_ = true;
  }

  // Call once the crashed database is closed: cuts every WAL file written since the last
  // recovery back to its length at its last sync. Returns the bytes lost.
  uint64_t LoseUnsynced() {
    std::lock_guard lock(mu_);
    uint64_t lost = 0;
    for (const auto& [path, synced] : synced_) {
      uint64_t size = 0;
      if (!target()->GetFileSize(path, rocksdb::IOOptions(), &size, nullptr).ok()) continue;
      if (size > synced) {
        lost += size - synced;
        if (::truncate(path.c_str(), static_cast<off_t>(synced)) != 0) continue;
      }
    }
    synced_.clear();
    crashed_ = false;
    return lost;
  }

  // The process dies, the machine does not: everything written stays.
  void Restart() {
    std::lock_guard lock(mu_);
    synced_.clear();
    crashed_ = false;
  }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* file,
                                    rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> inner;
    rocksdb::IOStatus s = target()->NewWritableFile(name, options, &inner, dbg);
    if (!s.ok() || !IsWal(name)) {
      *file = std::move(inner);
      return s;
    }
    {
      std::lock_guard lock(mu_);
      synced_[name] = 0;
    }
    file->reset(new Wal(std::move(inner), name, *this));
    return s;
  }

  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->RenameFile(src, dst, options, dbg);
    std::lock_guard lock(mu_);
    if (s.ok()) {
      if (auto it = synced_.find(src); it != synced_.end()) {
        synced_[dst] = it->second;
        synced_.erase(it);
      }
    }
    return s;
  }

  rocksdb::IOStatus DeleteFile(const std::string& name, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->DeleteFile(name, options, dbg);
    std::lock_guard lock(mu_);
    if (s.ok()) synced_.erase(name);
    return s;
  }

 private:
  static bool IsWal(const std::string& name) {
    return name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0;
  }

  void Synced(const std::string& name, uint64_t size) {
    std::lock_guard lock(mu_);
    if (crashed_) return;
    // A renamed file (archived) is no longer written; its record moved with it.
    if (auto it = synced_.find(name); it != synced_.end()) it->second = size;
  }

  class Wal final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    Wal(std::unique_ptr<rocksdb::FSWritableFile> inner, std::string name,
        CrashableFileSystem& fs)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(inner)), name_(std::move(name)), fs_(fs) {}
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
      rocksdb::IOStatus s = target()->Sync(options, dbg);
      if (s.ok()) fs_.Synced(name_, target()->GetFileSize(options, dbg));
      return s;
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
      rocksdb::IOStatus s = target()->Fsync(options, dbg);
      if (s.ok()) fs_.Synced(name_, target()->GetFileSize(options, dbg));
      return s;
    }

   private:
    const std::string name_;
    CrashableFileSystem& fs_;
  };

  std::mutex mu_;
  bool crashed_ = false;                    // under mu_
  std::map<std::string, uint64_t> synced_;  // WAL path -> length at its last sync; under mu_
};

// An Env running on a CrashableFileSystem; keep both alive as long as any engine using it.
struct CrashableEnv {
  std::shared_ptr<CrashableFileSystem> fs = std::make_shared<CrashableFileSystem>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
};

}  // namespace walship::engine::testing
