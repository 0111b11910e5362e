// A RocksDB file system that fails on command, for tests of storage errors (tests only).
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <atomic>
#include <memory>
#include <string>

namespace walship::engine::testing {

// Fails the creation of new SSTables (what a memtable flush or a compaction writes) while
// failing() is set, with "no space left", as a full disk would.
class FailingFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  FailingFileSystem() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FailingFileSystem"; }

  void set_failing(bool failing) { failing_ = failing; }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* file,
                                    rocksdb::IODebugContext* dbg) override {
    if (failing_ && name.size() > 4 && name.compare(name.size() - 4, 4, ".sst") == 0) {
      return rocksdb::IOStatus::NoSpace("injected: no space to create " + name);
    }
    return target()->NewWritableFile(name, options, file, dbg);
  }

 private:
  std::atomic<bool> failing_ = false;
};

// An Env running on a FailingFileSystem; keep both alive as long as any engine using it.
struct FailingEnv {
  std::shared_ptr<FailingFileSystem> fs = std::make_shared<FailingFileSystem>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
};

}  // namespace walship::engine::testing
