// walship-faultload: the client side of the fault suite (tests/fault/run.py). Threads write
// and read registers while the harness injects faults, and record every operation, with its
// start, end, result and token, as one JSON line in --history (docs/fault-testing.md):
//
//   {"p":0,"f":"write","k":"p0-k3","v":17,"node":"n1","s":..,"e":..,"r":"ok","ep":2,"seq":90,
//    "dur":"sync:applied"}
//
// Each key has one writer thread, which writes the counter values 1, 2, 3... to it in order,
// so the checker can tell which write a value came from. Results: "ok" (acknowledged), "fail"
// (refused, nothing written: a follower's not-leader answer) or "info" (unknown: a timeout, a
// lost connection, a not-replicated answer; the write may or may not be there). Reads ask
// for what they were promised: a read at any node with --min-seq of the thread's last
// acknowledged write (it must see that write), or a committed read at the leader.
// Times are CLOCK_MONOTONIC microseconds, the clock the harness logs its faults by.
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "replication/durability.h"
#include "rpc/client.h"
#include "rpc/convert.h"

namespace {

using walship::rpc::Client;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

struct Node {
  std::string id, address;
};

// One durability a write may ask for: "" (the cluster's), "async", "semi-sync:LEVEL",
// "sync:LEVEL".
struct Durability {
  std::string name;
  walship::rpc::WriteOptions options;
};

Durability ParseDurability(const std::string& name, uint32_t wait_ms) {
  Durability d{name, {}};
  d.options.wait = absl::Milliseconds(wait_ms);
  if (name == "cluster") return d;
  std::vector<std::string> parts = absl::StrSplit(name, ':');
  auto mode = walship::replication::ParseMode(parts[0]);
  if (!mode.ok()) {
    std::fprintf(stderr, "--durability %s: %s\n", name.c_str(), mode.status().ToString().c_str());
    std::exit(2);
  }
  d.options.mode = *mode;
  if (*mode == walship::replication::ReplicationMode::kSemiSync) d.options.acks = 1;
  if (parts.size() > 1) {
    auto level = walship::replication::ParseAckLevel(parts[1]);
    if (!level.ok()) {
      std::fprintf(stderr, "--durability %s: %s\n", name.c_str(),
                   level.status().ToString().c_str());
      std::exit(2);
    }
    d.options.level = *level;
  }
  return d;
}

class History {
 public:
  explicit History(const std::string& path) : f_(std::fopen(path.c_str(), "w")) {
    if (f_ == nullptr) {
      std::perror(path.c_str());
      std::exit(2);
    }
  }
  ~History() { std::fclose(f_); }
  void Add(const std::string& line) {
    std::lock_guard<std::mutex> l(mu_);
    std::fputs(line.c_str(), f_);
    std::fputc('\n', f_);
    std::fflush(f_);  // a history survives the harness killing this process
  }

 private:
  std::mutex mu_;
  std::FILE* f_;
};

struct Options {
  std::vector<Node> nodes;
  std::vector<Durability> durabilities;
  uint32_t keys = 20;
  uint32_t timeout_ms = 2000;
  int read_percent = 25;
};

class Worker {
 public:
  Worker(int id, uint64_t seed, const Options& o, History& h, const std::atomic<bool>& stop)
      : id_(id), rng_(seed * 1000003 + static_cast<uint64_t>(id)), o_(o), h_(h), stop_(stop),
        counters_(o.keys, 0) {}

  void Run() {
    while (!stop_.load()) {
      if (leader_ == nullptr && !FindLeader()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      int dice = static_cast<int>(rng_() % 100);
      if (dice < o_.read_percent / 2) {
        ReadAtAnyNode();
      } else if (dice < o_.read_percent) {
        CommittedRead();
      } else {
        Write();
      }
    }
  }

  uint64_t writes = 0, acked = 0, reads = 0;

 private:
  std::string Key(uint32_t k) const {
    return "p" + std::to_string(id_) + "-k" + std::to_string(k);
  }

  std::string Head(const char* f, const std::string& key, const std::string& node,
                   int64_t start) {
    return "{\"p\":" + std::to_string(id_) + ",\"f\":\"" + f + "\",\"k\":" + Quote(key) +
           ",\"node\":" + Quote(node) + ",\"s\":" + std::to_string(start) +
           ",\"e\":" + std::to_string(NowUs());
  }

  void Write() {
    uint32_t k = static_cast<uint32_t>(rng_() % o_.keys);
    uint64_t v = ++counters_[k];
    const Durability& d = o_.durabilities[rng_() % o_.durabilities.size()];
    leader_->SetWriteOptions(d.options);
    std::string key = Key(k);
    int64_t start = NowUs();
    auto r = leader_->Write({{walship::engine::OpType::kPut, key, std::to_string(v)}});
    std::string line = Head("write", key, leader_id_, start) + ",\"v\":" + std::to_string(v) +
                       ",\"dur\":" + Quote(d.name);
    ++writes;
    if (r.ok()) {
      ++acked;
      last_acked_seq_ = r->last_seq;
      line += ",\"r\":\"ok\",\"ep\":" + std::to_string(r->epoch) +
              ",\"seq\":" + std::to_string(r->last_seq) +
              (r->degraded ? ",\"degraded\":true" : "");
    } else {
      // A follower's not-leader answer wrote nothing; anything else may have been written.
      bool refused = walship::rpc::IsNotLeader(r.status()) ||
                     absl::IsInvalidArgument(r.status()) ||
                     absl::IsResourceExhausted(r.status());
      line += std::string(",\"r\":\"") + (refused ? "fail" : "info") +
              "\",\"err\":" + Quote(r.status().ToString());
      Lost(r.status());
    }
    h_.Add(line + "}");
  }

  // A plain read at a random node, asking for the thread's last acknowledged write.
  void ReadAtAnyNode() {
    const Node& n = o_.nodes[rng_() % o_.nodes.size()];
    auto& c = readers_[n.id];
    if (c == nullptr) {
      auto r = Client::Connect(n.address, absl::Milliseconds(o_.timeout_ms));
      if (!r.ok()) return;
      c = std::move(*r);
    }
    (void)Read(*c, n.id, false);  // a follower that refuses is no lost leader
  }

  void CommittedRead() {
    leader_->SetCommittedReads(true);
    absl::Status s = Read(*leader_, leader_id_, true);
    leader_->SetCommittedReads(false);
    if (!s.ok()) Lost(s);
  }

  // The error that failed the read, or OK.
  absl::Status Read(Client& c, const std::string& node, bool committed) {
    uint32_t k = static_cast<uint32_t>(rng_() % o_.keys);
    std::string key = Key(k);
    uint64_t min_seq = committed ? 0 : last_acked_seq_;
    int64_t start = NowUs();
    auto r = c.Get(key, min_seq);
    std::string line = Head("read", key, node, start) + ",\"min\":" + std::to_string(min_seq) +
                       ",\"c\":" + (committed ? "true" : "false");
    ++reads;
    if (r.ok()) {
      line += ",\"r\":\"ok\",\"v\":" + std::to_string(std::stoull(*r));
    } else if (absl::IsNotFound(r.status())) {
      line += ",\"r\":\"ok\",\"v\":0";
    } else {
      line += ",\"r\":\"fail\",\"err\":" + Quote(r.status().ToString());
    }
    h_.Add(line + "}");
    return r.ok() || absl::IsNotFound(r.status()) ? absl::OkStatus() : r.status();
  }

  // After a failed call to the leader: follow its hint, or look for the leader again.
  void Lost(const absl::Status& s) {
    std::string hint = walship::rpc::LeaderHint(s);
    leader_.reset();
    for (const Node& n : o_.nodes) {
      if (!hint.empty() && n.address == hint) {
        auto c = Client::Connect(n.address, absl::Milliseconds(o_.timeout_ms));
        if (c.ok()) {
          leader_ = std::move(*c);
          leader_id_ = n.id;
        }
        return;
      }
    }
  }

  // The node that says it leads, in the highest epoch any node reports.
  bool FindLeader() {
    uint64_t best_epoch = 0;
    const Node* best = nullptr;
    for (const Node& n : o_.nodes) {
      auto c = Client::Connect(n.address, absl::Milliseconds(500));
      if (!c.ok()) continue;
      auto st = (*c)->Status();
      if (st.ok() && st->role == "leader" && st->epoch >= best_epoch) {
        best_epoch = st->epoch;
        best = &n;
      }
    }
    if (best == nullptr) return false;
    auto c = Client::Connect(best->address, absl::Milliseconds(o_.timeout_ms));
    if (!c.ok()) return false;
    leader_ = std::move(*c);
    leader_id_ = best->id;
    return true;
  }

  int id_;
  std::mt19937_64 rng_;
  const Options& o_;
  History& h_;
  const std::atomic<bool>& stop_;
  std::vector<uint64_t> counters_;
  uint64_t last_acked_seq_ = 0;
  std::unique_ptr<Client> leader_;
  std::string leader_id_;
  std::map<std::string, std::unique_ptr<Client>> readers_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"walship-faultload: writes and reads that record a history for the checker"};
  std::vector<std::string> nodes, durabilities{"cluster"};
  std::string history;
  uint32_t seconds = 60, threads = 4, wait_ms = 1000;
  uint64_t seed = 1;
  Options o;
  app.add_option("--node", nodes, "ID=HOST:PORT, one per node")->required();
  app.add_option("--history", history, "the JSON-lines history to write")->required();
  app.add_option("--seconds", seconds, "how long to run");
  app.add_option("--threads", threads, "client threads, each with keys of its own");
  app.add_option("--keys", o.keys, "keys per thread");
  app.add_option("--seed", seed);
  app.add_option("--durability", durabilities,
                 "what writes ask for, one picked per write: cluster, async, "
                 "semi-sync:LEVEL, sync:LEVEL");
  app.add_option("--timeout-ms", o.timeout_ms, "every call's bound");
  app.add_option("--wait-ms", wait_ms, "how long a write may wait for its followers");
  app.add_option("--read-percent", o.read_percent);
  CLI11_PARSE(app, argc, argv);
  for (const std::string& n : nodes) {
    std::vector<std::string> kv = absl::StrSplit(n, absl::MaxSplits('=', 1));
    if (kv.size() != 2) {
      std::fprintf(stderr, "--node %s: expected ID=HOST:PORT\n", n.c_str());
      return 2;
    }
    o.nodes.push_back({kv[0], kv[1]});
  }
  for (const std::string& d : durabilities) o.durabilities.push_back(ParseDurability(d, wait_ms));

  History h(history);
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> running;
  for (uint32_t i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<Worker>(static_cast<int>(i), seed, o, h, stop));
  }
  for (auto& w : workers) running.emplace_back([&w] { w->Run(); });
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : running) t.join();
  uint64_t writes = 0, acked = 0, reads = 0;
  for (auto& w : workers) {
    writes += w->writes;
    acked += w->acked;
    reads += w->reads;
  }
  std::printf("writes %llu acked %llu reads %llu\n", static_cast<unsigned long long>(writes),
              static_cast<unsigned long long>(acked), static_cast<unsigned long long>(reads));
  return 0;
}
