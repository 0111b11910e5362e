// A deterministic, single-threaded, seeded simulation of a three-node cluster that runs the
// production replication classes: Leader and Shipper on the leader, Follower and
// FollowerLink on the followers, each carried out exactly as rpc/ carries them out (outboxes,
// one wake-up timer per node, applies and fsyncs and WAL reads handed out and completed
// later), over an in-memory network and on RocksDB file systems that can lose what was never
// fsynced.
//
// Faults: messages delayed (and so reordered), duplicated or lost (a loss breaks its
// connection, as TCP surfaces it: both ends are told and what was in flight is gone); a
// follower that crashes, either as a process (nothing written is lost) or as a machine (its
// WAL loses everything after its last fsync), and restarts; a leader process that restarts,
// beginning a new epoch; a handover of leadership to a follower and back; and, in some runs,
// a WAL archive kept so small that a follower that was away must be told it needs a
// snapshot.
//
// Writes ask, per run and per write, for async, semi-sync or sync at one of the ack levels
// (replication/commit_wait.h), with either timeout policy. A write acknowledged as replicated
// must be held, at the end, by every follower that had acknowledged it at its level: at
// flushed or applied whatever crashed meanwhile, at received unless that follower's machine
// crashed since.
//
// Invariants checked after every event: a follower never goes backwards (but across a
// machine crash, and then never below what it acknowledged as durable) and never passes what
// the leader wrote; every node's highest epoch only grows; the epoch history entries under
// which a node holds data never change. At the end, once faults stop and the network is
// quiet: every follower that was not told to re-seed holds exactly the leader's sequence and
// contents, and one that was holds a prefix and refuses reads.
//
// Everything that decides the course of a run comes from the seed.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

namespace walship::replication::sim {

struct Faults {
  double drop_chance = 0.01;        // per message: lost, its connection breaks
  double duplicate_chance = 0.03;   // per pushed message: delivered twice
  double long_delay_chance = 0.10;  // per message: 2-20 ms instead of 0.1-2 ms
  double crash_chance = 0.002;      // per write: a follower crashes (process or machine)
  double leader_restart_chance = 0.0005;  // per write: the leader's process restarts
  // Per write: the leader's machine fails, losing its unsynced writes, which followers may
  // hold: they must be told their history diverged (needs a snapshot), never merged.
  double leader_machine_crash_chance = 0;
  double handover_chance = 0.0005;  // per write: leadership moves to a follower
};

struct Stats {
  uint64_t writes = 0, flushes = 0, ships = 0, acks = 0, drops = 0, duplicates = 0;
  uint64_t reorders = 0, discarded = 0, gaps = 0, wal_batches = 0, tail_batches = 0;
  uint64_t reconnects = 0, process_crashes = 0, machine_crashes = 0, lost_bytes = 0;
  uint64_t leader_restarts = 0, handovers = 0, needs_snapshot = 0, worker_applies = 0;
  // Writes that waited for followers: acknowledged as replicated, degraded, timed out.
  uint64_t replicated = 0, degraded = 0, not_replicated = 0;
  // Restarted leaders that asked their peers first, and those that then handed over.
  uint64_t recoveries = 0, recovery_handovers = 0;
  // Leaders that began with the batches they applied last as followers as their memory tail.
  uint64_t seeded_tails = 0;
  // Reads with a write's token served (the write was there), refused as lost (it was not);
  // reads of a bare sequence number that would have been served without the write; checks of
  // a follower's caught-up time against what its leader held then.
  uint64_t reads_served = 0, reads_lost = 0, bare_seq_stale = 0, caught_up_checks = 0;

  void Add(const Stats& o);
};
std::ostream& operator<<(std::ostream& out, const Stats& s);

struct RunResult {
  bool ok = false;          // converged and every check held
  std::string failure;      // the first check that failed, when !ok
  Stats stats;
};

// Runs one seed in `dir` (created and removed by the caller). `small_wal` keeps the leader's
// WAL archive small, so that followers away for long need a snapshot. A follower may end
// needing a snapshot only with small_wal or leader machine crashes.
RunResult RunSeed(const std::string& dir, uint64_t seed, const Faults& faults, bool small_wal,
                  int writes);

}  // namespace walship::replication::sim
