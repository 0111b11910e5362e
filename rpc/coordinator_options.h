// The settings of leadership through etcd ([coordinator] in the config, docs/failover.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace walship::rpc {

struct CoordinatorOptions {
  // etcd's client URLs (http://HOST:PORT); empty: the embedded vote chooses the leader.
  std::vector<std::string> etcd;
  // Every key walship keeps in etcd is under this prefix: PREFIX/leader, PREFIX/candidates/ID.
  std::string prefix;
  // The time-to-live of each node's etcd lease, in seconds (etcd refuses less than its own
  // minimum, about 1.5 election time-outs of etcd rounded up). A dead leader's key goes
  // this long after its last renewal.
  uint32_t lease_ttl_s = 2;
  // How often a node reads the leader key.
  uint32_t poll_ms = 100;
  // replication::CandidateOptions: how long a candidate waits for the others to publish
  // where their logs end, and how long one that is not the fittest waits for the fittest.
  uint32_t gather_ms = 300;
  uint32_t candidate_wait_ms = 2000;

  bool enabled() const { return !etcd.empty(); }
};

}  // namespace walship::rpc
