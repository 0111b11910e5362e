// Leadership from an external coordinator (etcd): what a node decides from what the
// coordinator holds, with no I/O (rpc/coordinator.h talks to etcd).
//
// The leader key. The node that leads holds one key, bound to its own etcd lease, which it
// keeps alive. The key's create revision is the epoch it leads: etcd's revisions only grow, so
// every leader's epoch is above every earlier one's, and no two leaders share one. A node
// that created the key begins that epoch (at its log's end + 1) only when it is above every
// epoch the node has seen.
//
// The lease rule. etcd keeps a lease at least `ttl` after it received the last keep-alive,
// which is after the node sent it. A leader takes writes only until `ttl` after it sent the
// last keep-alive etcd answered, less a tenth for clocks that run at different rates: it
// stops before the key can expire anywhere, so an old leader cut off from etcd never
// acknowledges a write while another leads (no split brain).
//
// Choosing the candidate. When the key is gone, every node that may stand publishes where its
// log ends (a candidacy key, bound to its own lease: a dead node's vanishes with its lease).
// A node takes the key (a transaction that creates it only while it is absent) when no voter
// that published holds a more up-to-date log (the same comparison as the vote's: a later
// epoch, or the same and further; the lower id between equal logs), once every voter but the
// last leader has published or a gathering time has passed (so that a lagging node that saw
// the vacancy first does not take the key before the others could say where they stand), and
// only when the voters whose logs it covers, itself included, are a majority: as with the
// vote, one of any majority holds every write a majority acknowledged. A node that is not the
// fittest waits a bounded time for the fittest to take the key, and then takes it itself when
// the voters it covers are a majority without the fitter ones, so that a stuck best candidate
// does not leave a cluster leaderless that can do without it; a dead one's candidacy goes
// with its lease.
//
// Thread safety: none; one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "replication/election.h"
#include "replication/membership.h"

namespace walship::replication {

// The leader key as read from the coordinator.
struct LeaderKey {
  std::string node;     // the node that leads
  std::string address;  // where it is dialled
  std::string cluster;  // the cluster it leads
  Epoch epoch = 0;      // the key's create revision
  int64_t lease = 0;    // the etcd lease it is bound to
};

// A node's published candidacy.
struct Candidacy {
  std::string node;
  LogPosition position;
};

struct CandidateOptions {
  std::string self;
  // Until every voter but the last leader has published, a node takes the key as the fittest
  // only this long after it saw the key gone.
  uint32_t gather_ms = 300;
  // A node that is not the fittest takes the key this long after it saw it gone, when the
  // voters whose logs it covers, itself included, are a majority.
  uint32_t wait_ms = 2000;
};

struct CandidateTurn {
  bool take = false;
  std::string why;  // why it takes the key now, or why it waits
};

// Whether `options.self`, whose log ends at `mine`, takes the vacant leader key now. `others`
// are the candidacies read (its own among them is ignored); only voting members of `m` count.
// `last_leader` is the node that held the key last ("" when unknown); `vacant_since_us` when
// this node saw the key gone.
CandidateTurn TurnToTake(const CandidateOptions& options, const LogPosition& mine,
                         const std::vector<Candidacy>& others, const Membership& m,
                         const std::string& last_leader, int64_t vacant_since_us,
                         int64_t now_us);

// The leader's hold on its coordinator lease (above).
class CoordinatorLease {
 public:
  // A keep-alive sent at `sent_us` (the monotonic clock) was answered with `ttl_s` seconds
  // left (0: etcd no longer holds the lease).
  void OnRenewed(int64_t sent_us, int64_t ttl_s);
  // The lease is gone (etcd said so, or a new one replaced it).
  void OnLost() { until_us_ = kNotHeld; }
  bool Holds(int64_t now_us) const { return now_us < until_us_; }
  // Until when it holds, kNotHeld when it never did or was lost.
  int64_t until_us() const { return until_us_; }
  static constexpr int64_t kNotHeld = INT64_MIN;

 private:
  int64_t until_us_ = kNotHeld;
};

}  // namespace walship::replication
