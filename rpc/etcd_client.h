// A client of etcd's v3 JSON gateway (the HTTP API etcd serves beside gRPC), with Cap'n
// Proto's kj-http on the node's event loop: leases, keys, and the one transaction the leader
// key needs. Only what rpc/coordinator.h uses is here.
//
// Each call goes to one endpoint, bounded by the call time-out; a call that fails there is
// tried once on each other endpoint in turn, and the endpoint that answered is asked first
// next time. Keys and values are bytes (base64 on the wire, as the gateway asks).
//
// Thread safety: lives on the event-loop thread.
#pragma once

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace walship::rpc {

struct EtcdKv {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t lease = 0;
};

struct EtcdLease {
  int64_t id = 0;
  int64_t ttl_s = 0;
};

struct EtcdCreate {
  bool created = false;
  int64_t revision = 0;          // the store's revision after the transaction
  std::optional<EtcdKv> holder;  // not created: the key as it is
};

// Checks an endpoint as the config gives it: "http://HOST:PORT". kInvalidArgument saying
// what is wrong (https is not spoken: etcd's JSON gateway is reached on loopback or a
// trusted network).
absl::Status CheckEtcdEndpoint(const std::string& endpoint);

class EtcdClient {
 public:
  EtcdClient(kj::AsyncIoContext& io, std::vector<std::string> endpoints, uint32_t timeout_ms);
  ~EtcdClient();

  kj::Promise<absl::StatusOr<EtcdLease>> Grant(int64_t ttl_s);
  // The lease's time left after the renewal (0: etcd no longer holds it).
  kj::Promise<absl::StatusOr<int64_t>> KeepAlive(int64_t lease);
  kj::Promise<absl::Status> Revoke(int64_t lease);
  kj::Promise<absl::StatusOr<std::optional<EtcdKv>>> Get(std::string key);
  kj::Promise<absl::StatusOr<std::vector<EtcdKv>>> GetPrefix(std::string prefix);
  kj::Promise<absl::Status> Put(std::string key, std::string value, int64_t lease);
  kj::Promise<absl::Status> Delete(std::string key);
  // Creates `key` bound to `lease` only while it does not exist (one transaction).
  kj::Promise<absl::StatusOr<EtcdCreate>> CreateIfAbsent(std::string key, std::string value,
                                                         int64_t lease);
  // Deletes `key` only while its create revision is `create_revision` (one transaction):
  // whether it did.
  kj::Promise<absl::StatusOr<bool>> DeleteIfCreated(std::string key, int64_t create_revision);

  // The endpoint asked first (the last that answered).
  const std::string& endpoint() const { return endpoints_[current_]; }

 private:
  // POSTs `body` (JSON text) to `path` on each endpoint in turn until one answers 200; the
  // answer's body.
  kj::Promise<absl::StatusOr<std::string>> Call(std::string path, std::string body);
  kj::Promise<absl::StatusOr<std::string>> CallFrom(size_t index, size_t left, std::string path,
                                                    std::string body, std::string errors);
  kj::Promise<absl::StatusOr<std::string>> CallAt(size_t index, std::string path,
                                                  std::string body);

  kj::AsyncIoContext& io_;
  std::vector<std::string> endpoints_;
  const uint32_t timeout_ms_;
  size_t current_ = 0;
  kj::Own<kj::HttpHeaderTable> table_;
  kj::Own<kj::HttpClient> http_;
};

}  // namespace walship::rpc
