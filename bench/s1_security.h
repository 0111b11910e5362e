// S1: what securing connections costs (docs/operations.md), on three three-node clusters
// started side by side: plain, with a cluster secret, and with TLS (a throwaway CA,
// scripts/make-test-certs.sh), measured in rounds that take the clusters in turn so that all
// see the same machine:
//
//   connect/<plain|secret|tls>  a new connection, one get, closed: connections per second and
//                               the time to the answer (the secret's handshake adds two round
//                               trips; TLS its handshake and its key exchange)
//   w1/<plain|secret|tls>       one write per round trip on one connection, as W1 at depth 1:
//                               the secret costs nothing once a connection is proven; TLS
//                               encrypts every request and reply
//
// The secret and tls rows carry ratio_to_plain (their ops/s over the plain row's: < 1 is
// slower).
#pragma once

#include <string>
#include <vector>

#include "bench/bench_cluster.h"

namespace walship::bench {

struct S1Options {
  size_t value_size = 100;
  double cap_s = 5;  // each case runs this long in all, over several rounds
  std::vector<std::string> replication;
};

std::vector<Row> RunS1(const std::string& walshipd, const S1Options& o);

}  // namespace walship::bench
