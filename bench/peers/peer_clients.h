// One connection to a peer's node, speaking the workloads' operations in that system's own
// protocol: hiredis for Redis, libpq for PostgreSQL (keys and values as bytea, sent and read
// in binary). Each client lives on one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace walship::bench::peers {

class KvClient {
 public:
  virtual ~KvClient() = default;
  // One write and its round trip: key(i) = value(i).
  virtual absl::Status Put(const std::string& key, const std::string& value) = 0;
  // Keys start..start+n-1, `per` at a time: Redis sends `per` SETs, then reads their
  // replies (a pipeline); PostgreSQL writes `per` rows in one transaction.
  virtual absl::Status PutMany(uint64_t start, uint64_t n, size_t value_size, size_t per) = 0;
  // The value, or nullopt when the key is absent.
  virtual absl::StatusOr<std::optional<std::string>> Get(const std::string& key) = 0;
};

struct ClientOptions {
  // Redis: after each write, WAIT for this many replicas (0: do not wait).
  int redis_wait_replicas = 0;
  // PostgreSQL: the session's synchronous_commit ("local", "off", "on", "remote_apply").
  std::string pg_synchronous_commit = "local";
};

// Connects to `system` ("redis" or "pg") on 127.0.0.1:port.
absl::StatusOr<std::unique_ptr<KvClient>> Connect(const std::string& system, int port,
                                                  const ClientOptions& options = {});

}  // namespace walship::bench::peers
