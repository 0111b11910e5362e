// The pieces the cluster benchmark's workloads share: keys and values of the workloads'
// shape, a cluster of walshipd processes started on 127.0.0.1, and one result row.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "rpc/client.h"

namespace walship::bench {

using Clock = std::chrono::steady_clock;

// "key" and 12 digits.
std::string Key(uint64_t i);
// `size` pseudo-random bytes from splitmix64 seeded by i: incompressible, with NUL bytes.
std::string Value(uint64_t i, size_t size);
// A free loopback port; exits when there is none.
int FreePort();

// Waits (at most 30 s, else exits) until the leader at `leader` has `followers` followers
// connected with everything applied, so that a run starts from a formed, idle cluster and
// not while followers are still connecting or applying the previous run.
// `connect`: the cluster's secret and TLS, as LocalCluster::connect_options() gives them.
void WaitCaughtUp(const std::string& leader, size_t followers,
                  const rpc::ConnectOptions& connect = {});

// What a benchmark cluster's connections prove: the cluster secret ("" for none), and TLS
// with a throwaway CA (scripts/make-test-certs.sh) when `tls`.
struct ClusterSecurity {
  std::string secret;
  bool tls = false;
};

// A cluster of walshipd processes the benchmark starts and stops itself.
class LocalCluster {
 public:
  // `replication` lines ("key = value") go into the config's [replication] table; a
  // secret (when not empty) goes into an owner-only file the config names.
  LocalCluster(const std::string& walshipd, int nodes,
               const std::vector<std::string>& replication, ClusterSecurity security = {});
  ~LocalCluster();
  std::string config() const { return (dir_ / "cluster.toml").string(); }
  // How a client connects to its nodes (the secret, the CA to trust).
  const rpc::ConnectOptions& connect_options() const { return connect_; }
  const std::vector<std::string>& ids() const { return ids_; }
  // The node's address; a node not in the config file gets a free port the first time.
  const std::string& addr(const std::string& id);
  std::filesystem::path data_dir(const std::string& id) const { return dir_ / "data" / id; }

  void Start(const std::string& id);
  // Starts node `id`, which is not in the config file (added at run time with
  // walship add-follower), on a free port of its own.
  void StartAdded(const std::string& id);
  void StartAll();
  void Stop(const std::string& id, int sig = SIGTERM);
  void WaitReachable(const std::string& id);

 private:
  std::string walshipd_;
  rpc::ConnectOptions connect_;
  std::filesystem::path dir_;
  std::vector<std::string> ids_;
  std::map<std::string, std::string> addr_;
  std::map<std::string, pid_t> pids_;

  void Spawn(const std::string& id, const std::vector<std::string>& args);
};

struct Row {
  std::string name;      // e.g. "W1/depth:64/walship-3node"
  double ops_per_s = 0;  // 0 when not a throughput row
  double seconds = 0;
  uint64_t ops = 0;
  std::map<std::string, double> counters;  // p50_us, lag_p99_ms/n2, ...
};

}  // namespace walship::bench
