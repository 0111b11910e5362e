// walship-readcheck: looks for the anomalies of reading from replicas that lag (docs/reads.md),
// for the multi-process tests. Writes go to --leader; reads go to --lagging (a follower the
// test makes lag, by stopping its process now and then) and --fresh (another follower).
// With --guard the reads ask for the guarantee that prevents the anomaly; without it they ask
// for nothing, and the anomaly should show.
//
//   ryw        write k = i, then read k at the lagging follower: an older value is a violation
//              (guard: the read carries the write's token)
//   monotonic  a writer raises a counter; reads alternate at random between the two
//              followers: a value below one read before is a violation (guard: one session
//              token carried from read to read)
//   prefix     a writer writes question i, then (once acknowledged) answer i; a read of answer
//              i at the fresh follower, then question i at the lagging one: the answer without
//              the question is a violation (guard: the second read carries the first's token).
//              Each round also scans the last pairs at the lagging follower: one snapshot
//              never shows an answer without its question, guard or not ("scan_violations")
//   staleness  a writer raises a counter, noting when each value was acknowledged; a read at
//              the lagging follower that shows a value older than what was acknowledged
//              --max-lag-ms before the read was sent is a violation (guard: the read asks for
//              --max-lag-ms)
//
// Runs until --reads reads were served (answered with data; reads answered unavailable are
// counted apart), or with --until-violation until the first violation; gives up (exit 4) after
// --seconds. Prints one JSON object: reads, served, unavailable, violations, scan_violations,
// example (the first violation, described). Exit 3 on an unexpected error.
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "rpc/client.h"

namespace {

using walship::rpc::Client;
using walship::replication::ReadToken;
using Clock = std::chrono::steady_clock;

struct Tally {
  uint64_t reads = 0, served = 0, unavailable = 0, violations = 0, scan_violations = 0;
  std::string example;
  void Violation(std::string what) {
    if (violations++ == 0) example = std::move(what);
  }
};

std::unique_ptr<Client> Connect(const std::string& endpoint) {
  auto c = Client::Connect(endpoint, absl::Seconds(5));
  if (!c.ok()) {
    std::fprintf(stderr, "walship-readcheck: %s\n", c.status().ToString().c_str());
    std::exit(3);
  }
  return std::move(*c);
}

[[noreturn]] void Unexpected(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "walship-readcheck: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(3);
}

uint64_t Number(const std::string& v) { return std::stoull(v); }

// A writer raising `key` from 1 on, noting when each value was acknowledged.
class Counter {
 public:
  Counter(const std::string& leader, std::string key) : c_(Connect(leader)), key_(std::move(key)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Counter() {
    stop_ = true;
    thread_.join();
  }
  // The highest value acknowledged at or before `t` (0: none).
  uint64_t AckedBy(Clock::time_point t) {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t v = 0;
    for (auto it = acked_.rbegin(); it != acked_.rend(); ++it) {
      if (it->first <= t) {
        v = it->second;
        break;
      }
    }
    return v;
  }

 private:
  void Run() {
    for (uint64_t i = 1; !stop_; ++i) {
      auto w = c_->Write({{walship::engine::OpType::kPut, key_, std::to_string(i)}});
      if (!w.ok()) Unexpected("counter write", w.status());
      std::lock_guard<std::mutex> lock(mu_);
      acked_.emplace_back(Clock::now(), i);
      // Paced a little, so that the followers' lag comes from the stops, not the load.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  std::unique_ptr<Client> c_;
  const std::string key_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::pair<Clock::time_point, uint64_t>> acked_;
  std::thread thread_;
};

// Reads `key` at `c` with `options`: the value, std::nullopt when absent, or false in `served`
// when the node answered unavailable.
std::optional<std::string> Read(Client& c, const std::string& key,
                                const walship::rpc::ReadOptions& options, Tally& t,
                                bool* served) {
  c.SetReadOptions(options);
  ++t.reads;
  auto v = c.Get(key);
  *served = v.ok() || absl::IsNotFound(v.status());
  if (absl::IsUnavailable(v.status())) {
    ++t.unavailable;
    return std::nullopt;
  }
  if (!*served) Unexpected("read of " + key + " at " + c.endpoint(), v.status());
  ++t.served;
  if (!v.ok()) return std::nullopt;
  return *v;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"walship-readcheck: anomalies of reads at lagging followers"};
  std::string leader, lagging, fresh, check;
  bool guard = false, until_violation = false;
  uint64_t reads = 10000;
  int64_t max_lag_ms = 50;
  int seconds = 300;
  app.add_option("--leader", leader)->required();
  app.add_option("--lagging", lagging)->required();
  app.add_option("--fresh", fresh);
  app.add_option("--check", check)->required()->check(
      CLI::IsMember({"ryw", "monotonic", "prefix", "staleness"}));
  app.add_flag("--guard", guard, "ask for the guarantee");
  app.add_flag("--until-violation", until_violation, "stop at the first violation");
  app.add_option("--reads", reads, "served reads to make");
  app.add_option("--max-lag-ms", max_lag_ms, "staleness: the bound");
  app.add_option("--seconds", seconds, "give up after this long (exit 4)");
  CLI11_PARSE(app, argc, argv);
  if ((check == "monotonic" || check == "prefix") && fresh.empty()) {
    std::fprintf(stderr, "walship-readcheck: --check %s needs --fresh\n", check.c_str());
    return 2;
  }

  Tally t;
  const std::string run = std::to_string(Clock::now().time_since_epoch().count());
  auto give_up = Clock::now() + std::chrono::seconds(seconds);
  auto done = [&] {
    return (until_violation && t.violations > 0) || t.served >= reads || Clock::now() > give_up;
  };
  walship::rpc::ReadOptions none;
  none.wait_ms = 5000;
  std::mt19937_64 rng(42);

  if (check == "ryw") {
    auto w = Connect(leader);
    auto r = Connect(lagging);
    const std::string key = "ryw/" + run;
    for (uint64_t i = 1; !done(); ++i) {
      auto written = w->Write({{walship::engine::OpType::kPut, key, std::to_string(i)}});
      if (!written.ok()) Unexpected("write", written.status());
      walship::rpc::ReadOptions o = none;
      if (guard) o.after = {written->epoch, written->last_seq};
      bool served = false;
      auto v = Read(*r, key, o, t, &served);
      if (served && (!v.has_value() || Number(*v) != i)) {
        t.Violation(absl::StrCat("wrote ", i, " (", written->epoch, ":", written->last_seq,
                                 "), read ", v.value_or("nothing"), " at ", lagging));
      }
    }
  } else if (check == "monotonic" || check == "staleness") {
    const std::string key = check + "/" + run;
    Counter counter(leader, key);
    auto lag = Connect(lagging);
    std::unique_ptr<Client> fr = check == "monotonic" ? Connect(fresh) : nullptr;
    ReadToken session;
    uint64_t highest = 0;
    while (!done()) {
      Client& c = fr != nullptr && rng() % 2 == 0 ? *fr : *lag;
      walship::rpc::ReadOptions o = none;
      if (guard && check == "monotonic") o.after = session;
      if (guard && check == "staleness") o.max_lag_ms = max_lag_ms;
      auto sent = Clock::now();
      bool served = false;
      auto v = Read(c, key, o, t, &served);
      if (!served) continue;
      uint64_t got = v.has_value() ? Number(*v) : 0;
      session = walship::replication::Later(session, c.last_read());
      if (check == "monotonic") {
        if (got < highest) {
          t.Violation(absl::StrCat("read ", highest, " before, then ", got, " at ", c.endpoint()));
        }
        highest = std::max(highest, got);
      } else if (uint64_t need = counter.AckedBy(sent - std::chrono::milliseconds(max_lag_ms));
                 got < need) {
        t.Violation(absl::StrCat("read ", got, " at ", c.endpoint(), "; ", need,
                                 " was acknowledged ", max_lag_ms, " ms before the read was sent"));
      }
    }
  } else {  // prefix
    auto w = Connect(leader);
    auto fr = Connect(fresh);
    auto lag = Connect(lagging);
    auto pair_key = [&](uint64_t i, const char* part) {
      char n[32];
      std::snprintf(n, sizeof(n), "%012llu", static_cast<unsigned long long>(i));
      return absl::StrCat("qa/", run, "/", n, "/", part);
    };
    for (uint64_t i = 1; !done(); ++i) {
      for (const char* part : {"q", "a"}) {
        auto written = w->Write({{walship::engine::OpType::kPut, pair_key(i, part), part}});
        if (!written.ok()) Unexpected("write", written.status());
      }
      bool served = false;
      auto answer = Read(*fr, pair_key(i, "a"), none, t, &served);
      if (!served || !answer.has_value()) continue;  // the fresh one lags too, now and then
      walship::rpc::ReadOptions o = none;
      if (guard) o.after = fr->last_read();
      auto question = Read(*lag, pair_key(i, "q"), o, t, &served);
      if (served && !question.has_value()) {
        t.Violation(absl::StrCat("answer ", i, " at ", fresh, ", then no question ", i, " at ",
                                 lagging));
      }
      // One snapshot: the last pairs at the lagging follower.
      walship::engine::ScanOptions scan;
      scan.prefix = absl::StrCat("qa/", run, "/");
      scan.start = pair_key(i > 20 ? i - 20 : 1, "");
      scan.limit = 64;
      lag->SetReadOptions(none);
      auto kvs = lag->Scan(scan);
      if (!kvs.ok()) {
        if (absl::IsUnavailable(kvs.status())) continue;
        Unexpected("scan", kvs.status());
      }
      // In key order an answer ("/a") comes right before its question ("/q").
      for (size_t k = 0; k < kvs->size(); ++k) {
        const std::string& key = (*kvs)[k].key;
        if (key.back() != 'a') continue;
        std::string asked = key.substr(0, key.size() - 1) + "q";
        if (k + 1 == kvs->size() || (*kvs)[k + 1].key != asked) ++t.scan_violations;
      }
    }
  }

  std::printf(
      "{\"check\": \"%s\", \"guard\": %s, \"reads\": %llu, \"served\": %llu, \"unavailable\": "
      "%llu, \"violations\": %llu, \"scan_violations\": %llu, \"example\": \"%s\"}\n",
      check.c_str(), guard ? "true" : "false", static_cast<unsigned long long>(t.reads),
      static_cast<unsigned long long>(t.served), static_cast<unsigned long long>(t.unavailable),
      static_cast<unsigned long long>(t.violations),
      static_cast<unsigned long long>(t.scan_violations), t.example.c_str());
  if (Clock::now() > give_up && !(until_violation && t.violations > 0) && t.served < reads) {
    std::fprintf(stderr, "walship-readcheck: gave up after %d s\n", seconds);
    return 4;
  }
  return 0;
}
