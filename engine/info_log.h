// RocksDB's info log (the LOG file in the database directory), written by walship rather than
// by RocksDB's own file logger. RocksDB 7.8's logger writes through a WritableFileWriter, and
// once one write to it failed (a full disk) the next one trips an assertion that Debian's
// build keeps: the node aborted on a full disk just for a log line. This one writes with
// stdio, drops lines it cannot write (counting them), and keeps the file under a size limit
// by moving it to LOG.old, as RocksDB's own rolling does.
//
// Thread safety: any thread (RocksDB logs from its background threads).
#pragma once

#include <rocksdb/env.h>

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace walship::engine {

class InfoLog final : public rocksdb::Logger {
 public:
  // Appends to `path` (its directory is created when missing); a file that cannot be opened
  // leaves a logger that drops every line.
  explicit InfoLog(std::string path, uint64_t max_bytes = 64 << 20);
  ~InfoLog() override;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;
  size_t GetLogFileSize() const override;
  // Lines that could not be written (a full disk, an unopenable file).
  uint64_t dropped() const;

 private:
  rocksdb::Status CloseImpl() override;
  void Roll();  // under mu_

  const std::string path_;
  const uint64_t max_bytes_;
  mutable std::mutex mu_;
  std::FILE* file_ = nullptr;  // under mu_
  uint64_t size_ = 0;          // under mu_
  uint64_t dropped_ = 0;       // under mu_
};

}  // namespace walship::engine
