// The peers walship is compared with, as the benchmark starts them on this machine: Redis and
// PostgreSQL, each one primary and its replicas on loopback ports picked free, all data in a
// temporary directory that goes with the object. Every server is started and stopped by this
// code and by process id (PostgreSQL's as the user `postgres`, which it insists on).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace walship::bench::peers {

// Installs what is missing of Redis, PostgreSQL 15 and their tools from Debian (apt-get; the
// packages' own services are kept from starting). Exits with a message when it cannot.
void InstallPeers();

// One replicated system: node 0 is the primary, 1..n its replicas.
class PeerSystem {
 public:
  virtual ~PeerSystem();
  virtual std::string name() const = 0;  // "redis" or "pg"
  // Starts the primary and `replicas` replicas, and waits until they replicate.
  virtual void Start(int replicas) = 0;
  int port(int node) const { return ports_.at(node); }
  int replicas() const { return static_cast<int>(ports_.size()) - 1; }
  // Empties the store (on the primary; replicas follow).
  virtual void Clear() = 0;
  // Stops replica `node` as its operator would (a clean shutdown), and starts it again on
  // its own data.
  virtual void StopReplica(int node) = 0;
  virtual void StartReplica(int node) = 0;
  // Adds a new empty replica (node id returned) and removes it again. For PostgreSQL the time
  // the base backup took is stored in `*copy_s`.
  virtual int AddReplica(double* copy_s) = 0;
  virtual void RemoveReplica(int node) = 0;

 protected:
  PeerSystem();
  std::filesystem::path dir_;
  std::map<int, int> ports_;
  std::map<int, pid_t> pids_;
  void Kill(int node, int sig);
};

std::unique_ptr<PeerSystem> MakeRedis();
std::unique_ptr<PeerSystem> MakePostgres();

}  // namespace walship::bench::peers
