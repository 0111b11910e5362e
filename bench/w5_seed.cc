#include "bench/w5_seed.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "rpc/client.h"

namespace walship::bench {
namespace {

namespace fs = std::filesystem;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Writes keys 0..keys-1, 64 in flight.
void Load(const std::string& leader, uint64_t keys, size_t value_size) {
  auto client = rpc::Client::Connect(leader, absl::Seconds(10));
  if (!client.ok()) {
    std::fprintf(stderr, "W5: %s\n", client.status().ToString().c_str());
    std::exit(3);
  }
  constexpr uint64_t kChunk = 50000;
  for (uint64_t start = 0; start < keys; start += kChunk) {
    std::vector<std::vector<engine::WriteOp>> writes;
    for (uint64_t i = start; i < std::min(keys, start + kChunk); ++i) {
      writes.push_back({{engine::OpType::kPut, Key(i), Value(i, value_size)}});
    }
    if (auto r = (*client)->WriteMany(writes, 64); !r.ok()) {
      std::fprintf(stderr, "W5: loading: %s\n", r.status().ToString().c_str());
      std::exit(3);
    }
    if (::isatty(STDERR_FILENO)) {  // redrawn in place; a file or a pipe gets one line
      std::fprintf(stderr, "\rW5: loading %llu of %llu keys",
                   static_cast<unsigned long long>(std::min(keys, start + kChunk)),
                   static_cast<unsigned long long>(keys));
    }
  }
  std::fprintf(stderr, "%sW5: loaded %llu keys\n", ::isatty(STDERR_FILENO) ? "\r" : "",
               static_cast<unsigned long long>(keys));
}

// What the new follower's status showed while it was seeded.
struct Seeding {
  double start_s = -1;  // first seen copying
  double end_s = -1;    // first seen as a follower after that
  uint64_t bytes = 0;   // the checkpoint's size
};

// Polls `addr` until it serves `key` = `want` (at most 600 s; -1 if not): its status on the
// way tells when the copy ran.
double UntilServed(const std::string& addr, const std::string& key, const std::string& want,
                   Clock::time_point t0, Seeding* seen) {
  while (Since(t0) < 600) {
    auto c = rpc::Client::Connect(addr, absl::Seconds(1));
    while (c.ok() && Since(t0) < 600) {
      auto st = (*c)->Status();
      if (!st.ok()) break;
      if (st->role == "seeding" && st->seed_total_bytes > 0) {
        if (seen->start_s < 0) seen->start_s = Since(t0);
        seen->bytes = st->seed_total_bytes;
      } else if (st->role == "follower" && seen->start_s >= 0 && seen->end_s < 0) {
        seen->end_s = Since(t0);
      }
      if (st->role == "follower") {
        auto v = (*c)->Get(key);
        if (v.ok() && *v == want) return Since(t0);
        if (!v.ok() && !absl::IsNotFound(v.status()) && !absl::IsUnavailable(v.status())) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return -1;
}

// A plain copy, on this machine, of the files a checkpoint of the leader holds (its tables,
// manifest, options and CURRENT; not its WAL archive, lock or logs): MiB/s. With `sync`, the
// copies are then fsynced (`sync FILE...`), as a seeded follower's must be before it counts
// them as received.
double CopyMiBps(const fs::path& db, const fs::path& to, bool sync) {
  uint64_t bytes = 0;
  std::string files;
  for (const auto& e : fs::directory_iterator(db)) {
    std::string name = e.path().filename().string();
    bool in_checkpoint = name.ends_with(".sst") || name.starts_with("MANIFEST-") ||
                         name.starts_with("OPTIONS-") || name == "CURRENT";
    if (!e.is_regular_file() || !in_checkpoint) continue;
    bytes += e.file_size();
    files += absl::StrCat(" '", e.path().string(), "'");
  }
  fs::remove_all(to);
  fs::create_directories(to);
  std::string cmd = absl::StrCat("cp", files, " '", to.string(), "/'");
  if (sync) absl::StrAppend(&cmd, " && sync '", to.string(), "'/*");
  auto t0 = Clock::now();
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "W5: %s failed\n", cmd.c_str());
  double s = Since(t0);
  fs::remove_all(to);
  return s > 0 ? bytes / s / (1 << 20) : 0;
}

// One write per round trip from one client for `seconds`, or while `keep_going` holds: ops/s.
template <typename Cond>
double WriteRate(const std::string& leader, uint64_t first_key, size_t value_size,
                 double seconds, Cond keep_going) {
  auto client = rpc::Client::Connect(leader, absl::Seconds(10));
  if (!client.ok()) std::exit(3);
  auto t0 = Clock::now();
  uint64_t n = 0;
  while (Since(t0) < seconds && keep_going()) {
    std::vector<engine::WriteOp> op = {
        {engine::OpType::kPut, Key(first_key + n), Value(first_key + n, value_size)}};
    if (!(*client)->Write(op).ok()) std::exit(3);
    ++n;
  }
  double s = Since(t0);
  return s > 0 ? n / s : 0;
}

// walship add-follower: the leader (n1) takes `id`, at the address the cluster gives it.
void AddFollower(LocalCluster& cluster, const std::string& id) {
  auto client = rpc::Client::Connect(cluster.addr("n1"), absl::Seconds(10));
  auto added = client.ok() ? (*client)->ChangeMembership(replication::MembershipOp::kAddLearner,
                                                         id, cluster.addr(id))
                           : absl::StatusOr<rpc::MembershipResult>(client.status());
  if (!added.ok()) {
    std::fprintf(stderr, "W5: add-follower %s: %s\n", id.c_str(), added.status().ToString().c_str());
    std::exit(3);
  }
}

}  // namespace

std::vector<Row> RunW5(const std::string& walshipd, const W5Options& o) {
  std::vector<Row> rows;
  std::string last_key = Key(o.keys - 1);
  std::string want = Value(o.keys - 1, o.value_size);
  {
    LocalCluster cluster(walshipd, 1, o.replication);
    cluster.Start("n1");
    cluster.WaitReachable("n1");
    Load(cluster.addr("n1"), o.keys, o.value_size);
    fs::path db = cluster.data_dir("n1") / "db", to = cluster.data_dir("n1") / "cp-baseline";
    double cp = CopyMiBps(db, to, false);
    double cp_sync = CopyMiBps(db, to, true);
    // From the add-follower request on: the leader saves n2 as a learner, n2 starts with an
    // empty data dir and is seeded.
    auto t0 = Clock::now();
    AddFollower(cluster, "n2");
    cluster.StartAdded("n2");
    Seeding seen;
    double secs = UntilServed(cluster.addr("n2"), last_key, want, t0, &seen);
    Row row;
    row.name = absl::StrCat("W5/new-follower/", o.keys, "-keys");
    row.seconds = secs;
    row.ops = o.keys;
    double copy_s = seen.end_s - seen.start_s;
    double mib = seen.bytes / double(1 << 20);
    row.counters["until_served_s"] = secs;
    row.counters["snapshot_s"] = copy_s;
    row.counters["snapshot_mib"] = mib;
    row.counters["snapshot_mib_per_s"] = copy_s > 0 ? mib / copy_s : 0;
    row.counters["cp_mib_per_s"] = cp;
    row.counters["cp_sync_mib_per_s"] = cp_sync;
    if (cp > 0 && copy_s > 0) row.counters["ratio_snapshot_to_cp"] = mib / copy_s / cp;
    if (cp_sync > 0 && copy_s > 0) row.counters["ratio_snapshot_to_cp_sync"] = mib / copy_s / cp_sync;
    rows.push_back(row);
    std::fprintf(stderr, "W5: served after %.2f s; copy %.2f s of %.0f MiB (%.0f MiB/s; cp %.0f "
                 "MiB/s, cp and sync %.0f MiB/s)\n",
                 secs, copy_s, mib, copy_s > 0 ? mib / copy_s : 0, cp, cp_sync);
  }
  {
    std::vector<std::string> repl = o.replication;
    repl.push_back(absl::StrCat("snapshot_max_bytes_per_sec = ", o.bounded_bytes_per_sec));
    LocalCluster cluster(walshipd, 1, repl);
    cluster.Start("n1");
    cluster.WaitReachable("n1");
    Load(cluster.addr("n1"), o.keys, o.value_size);
    const std::string& leader = cluster.addr("n1");
    double without = WriteRate(leader, o.keys, o.value_size, o.write_window_s, [] { return true; });
    double row_without_before = 0;
    AddFollower(cluster, "n2");
    cluster.StartAdded("n2");
    // Writes while n2 copies (from when it is seen copying, for the window or until it ends).
    auto seeding = [&]() {
      auto c = rpc::Client::Connect(cluster.addr("n2"), absl::Seconds(1));
      if (!c.ok()) return false;
      auto st = (*c)->Status();
      return st.ok() && st->role == "seeding" && st->seed_total_bytes > 0 &&
             st->seed_done_bytes < st->seed_total_bytes;
    };
    auto t0 = Clock::now();
    while (!seeding() && Since(t0) < 60) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::atomic<bool> copying{true};
    std::thread watch([&]() {
      while (copying && Since(t0) < 600) {
        copying = seeding();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
    double during = WriteRate(leader, 2 * o.keys, o.value_size, o.write_window_s,
                              [&] { return copying.load(); });
    copying = false;
    watch.join();
    // The rate without a snapshot is taken before it and again after it (the follower
    // stopped, so that the leader again serves no one): compactions after the load slow the
    // first, and the mean of the two is the fairer figure.
    cluster.Stop("n2");
    double after = WriteRate(leader, 3 * o.keys, o.value_size, o.write_window_s, [] { return true; });
    row_without_before = without;
    without = (without + after) / 2;
    Row row;
    row.name = absl::StrCat("W5/writes-during-bounded-snapshot/", o.keys, "-keys");
    row.ops_per_s = during;
    row.counters["ops_per_s_without"] = without;
    row.counters["ops_per_s_without_before"] = row_without_before;
    row.counters["snapshot_bound_mib_per_s"] = o.bounded_bytes_per_sec / double(1 << 20);
    if (without > 0) row.counters["ratio_to_without"] = during / without;
    rows.push_back(row);
    std::fprintf(stderr, "W5: one write per round trip %.0f ops/s during a snapshot bounded at "
                 "%.0f MiB/s, %.0f without (%.0f before, %.0f after)\n", during,
                 o.bounded_bytes_per_sec / double(1 << 20), without, row_without_before, after);
  }
  return rows;
}

}  // namespace walship::bench
