// A RocksDB file system for tests (tests only): it fails on command, and it records which
// threads read files.
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace walship::engine::testing {

// Fails the creation of new SSTables (what a memtable flush or a compaction writes) while
// failing() is set, with "no space left", as a full disk would. Records every thread that
// opens a file for reading or reads one (SSTables, WAL files, the manifest), so a test can
// check that a thread never waits for the disk.
class FailingFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  FailingFileSystem() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FailingFileSystem"; }

  void set_failing(bool failing) { failing_ = failing; }
  // While set, appends to WAL files fail with "no space left" (a WAL that cannot grow).
  void set_failing_wal(bool failing) { failing_wal_ = failing; }
  // Every sync of a WAL file takes this much longer (a slow or overloaded disk).
  void set_wal_sync_delay(std::chrono::milliseconds delay) { wal_sync_delay_ms_ = delay.count(); }

  // Whether `thread` has opened or read a file since the last ForgetReaders().
  bool HasRead(std::thread::id thread) {
    std::lock_guard lock(mu_);
    return readers_.count(thread) > 0;
  }
  void ForgetReaders() {
    std::lock_guard lock(mu_);
    readers_.clear();
  }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* file,
                                    rocksdb::IODebugContext* dbg) override {
    if (failing_ && name.size() > 4 && name.compare(name.size() - 4, 4, ".sst") == 0) {
      return rocksdb::IOStatus::NoSpace("injected: no space to create " + name);
    }
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0) {
      std::unique_ptr<rocksdb::FSWritableFile> inner;
      rocksdb::IOStatus s = target()->NewWritableFile(name, options, &inner, dbg);
      if (s.ok()) file->reset(new Wal(std::move(inner), *this));
      return s;
    }
    return target()->NewWritableFile(name, options, file, dbg);
  }

  rocksdb::IOStatus ReopenWritableFile(const std::string& name,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* file,
                                       rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> inner;
    rocksdb::IOStatus s = target()->ReopenWritableFile(name, options, &inner, dbg);
    if (s.ok()) file->reset(new Wal(std::move(inner), *this));
    return s;
  }

  rocksdb::IOStatus NewRandomAccessFile(const std::string& name,
                                        const rocksdb::FileOptions& options,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* file,
                                        rocksdb::IODebugContext* dbg) override {
    Note();
    std::unique_ptr<rocksdb::FSRandomAccessFile> inner;
    rocksdb::IOStatus s = target()->NewRandomAccessFile(name, options, &inner, dbg);
    if (s.ok()) file->reset(new RandomAccess(std::move(inner), *this));
    return s;
  }

  rocksdb::IOStatus NewSequentialFile(const std::string& name, const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSSequentialFile>* file,
                                      rocksdb::IODebugContext* dbg) override {
    Note();
    std::unique_ptr<rocksdb::FSSequentialFile> inner;
    rocksdb::IOStatus s = target()->NewSequentialFile(name, options, &inner, dbg);
    if (s.ok()) file->reset(new Sequential(std::move(inner), *this));
    return s;
  }

 private:
  void DelaySync() {
    if (int64_t ms = wal_sync_delay_ms_; ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
  }
  void Note() {
    std::lock_guard lock(mu_);
    readers_.insert(std::this_thread::get_id());
  }

  class RandomAccess final : public rocksdb::FSRandomAccessFileOwnerWrapper {
   public:
    RandomAccess(std::unique_ptr<rocksdb::FSRandomAccessFile> inner, FailingFileSystem& fs)
        : rocksdb::FSRandomAccessFileOwnerWrapper(std::move(inner)), fs_(fs) {}
    rocksdb::IOStatus Read(uint64_t offset, size_t n, const rocksdb::IOOptions& options,
                           rocksdb::Slice* result, char* scratch,
                           rocksdb::IODebugContext* dbg) const override {
      fs_.Note();
      return target()->Read(offset, n, options, result, scratch, dbg);
    }
    rocksdb::IOStatus MultiRead(rocksdb::FSReadRequest* reqs, size_t num_reqs,
                                const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
      fs_.Note();
      return target()->MultiRead(reqs, num_reqs, options, dbg);
    }

   private:
    FailingFileSystem& fs_;
  };

  class Wal final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    Wal(std::unique_ptr<rocksdb::FSWritableFile> inner, FailingFileSystem& fs)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(inner)), fs_(fs) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_.failing_wal_) return rocksdb::IOStatus::NoSpace("injected: no space for the WAL");
      return target()->Append(data, options, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_.failing_wal_) return rocksdb::IOStatus::NoSpace("injected: no space for the WAL");
      return target()->Append(data, options, info, dbg);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
      fs_.DelaySync();
      return target()->Sync(options, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
      fs_.DelaySync();
      return target()->Fsync(options, dbg);
    }

   private:
    FailingFileSystem& fs_;
  };

  class Sequential final : public rocksdb::FSSequentialFileOwnerWrapper {
   public:
    Sequential(std::unique_ptr<rocksdb::FSSequentialFile> inner, FailingFileSystem& fs)
        : rocksdb::FSSequentialFileOwnerWrapper(std::move(inner)), fs_(fs) {}
    rocksdb::IOStatus Read(size_t n, const rocksdb::IOOptions& options, rocksdb::Slice* result,
                           char* scratch, rocksdb::IODebugContext* dbg) override {
      fs_.Note();
      return target()->Read(n, options, result, scratch, dbg);
    }

   private:
    FailingFileSystem& fs_;
  };

  std::atomic<bool> failing_ = false;
  std::atomic<bool> failing_wal_ = false;
  std::atomic<int64_t> wal_sync_delay_ms_ = 0;
  std::mutex mu_;
  std::set<std::thread::id> readers_;  // under mu_
};

// An Env running on a FailingFileSystem; keep both alive as long as any engine using it.
struct FailingEnv {
  std::shared_ptr<FailingFileSystem> fs = std::make_shared<FailingFileSystem>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
};

}  // namespace walship::engine::testing
