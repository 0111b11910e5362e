// Helpers for tests that use real engines in temporary directories (tests only).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace walship::engine::testing {

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "walship-test") {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string Sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Opens an engine at `path`; a failure is a test failure and gives nullptr.
inline std::unique_ptr<Engine> OpenOrDie(const std::string& path, EngineOptions options = {}) {
  options.path = path;
  auto engine = Engine::Open(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

// Every key and value, in order (up to the engine's scan cap).
inline std::vector<KeyValue> ScanAll(Engine& e) {
  ScanOptions all;
  all.limit = 1000000;
  auto kvs = e.Scan(all);
  EXPECT_TRUE(kvs.ok()) << kvs.status();
  return kvs.ok() ? *kvs : std::vector<KeyValue>{};
}

inline bool SameContents(Engine& a, Engine& b) {
  auto x = ScanAll(a), y = ScanAll(b);
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i].key != y[i].key || x[i].value != y[i].value) return false;
  }
  return true;
}

}  // namespace walship::engine::testing
