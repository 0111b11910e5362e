#include "tools/top.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "replication/seeding.h"

namespace walship::tools {
namespace {

constexpr int kBarWidth = 10;

// [###.......] for `lag_ms` on a scale of `scale_ms`.
std::string Bar(int64_t lag_ms, int64_t scale_ms) {
  int filled = scale_ms <= 0 ? 0
                             : static_cast<int>(std::min<int64_t>(
                                   kBarWidth, (lag_ms * kBarWidth + scale_ms - 1) / scale_ms));
  return absl::StrCat("[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'), "]");
}

uint64_t ShippedBytes(const rpc::NodeStatusInfo& s) {
  uint64_t total = 0;
  for (const auto& f : s.followers) total += f.bytes_shipped;
  return total;
}

}  // namespace

std::string RenderTop(const std::vector<std::pair<std::string, std::string>>& nodes,
                      const TopSample& now, const TopSample* before, double secs) {
  // A leader's view of its followers' lag, where there is one; else each follower's own.
  std::map<std::string, const rpc::FollowerStatusInfo*> seen_by_leader;
  for (const auto& [id, s] : now.status) {
    if (s.role != "leader") continue;
    for (const auto& f : s.followers) seen_by_leader[f.id] = &f;
  }
  int64_t scale_ms = 1000;  // the bars' full width: 1 s, or the largest lag shown
  for (const auto& [id, f] : seen_by_leader) scale_ms = std::max(scale_ms, f->lag_ms);
  for (const auto& [id, s] : now.status) {
    if (s.role != "leader") scale_ms = std::max(scale_ms, s.lag_ms);
  }
  std::string out = absl::StrFormat("%-10s %-10s %6s %12s %9s %8s %-12s %10s %10s\n", "NODE",
                                    "ROLE", "EPOCH", "LATEST SEQ", "LAG SEQ", "LAG MS", "LAG",
                                    "WRITES/S", "SHIPPED/S");
  for (const auto& [id, address] : nodes) {
    auto it = now.status.find(id);
    if (it == now.status.end()) {
      auto e = now.errors.find(id);
      absl::StrAppend(&out, absl::StrFormat("%-10s %s\n", id,
                                            e == now.errors.end() ? "?" : e->second));
      continue;
    }
    const rpc::NodeStatusInfo& s = it->second;
    std::string lag_seq = "-", lag_ms = "-", bar;
    if (s.role != "leader") {
      uint64_t seq = s.lag_seq;
      int64_t ms = s.lag_ms;
      if (auto f = seen_by_leader.find(id); f != seen_by_leader.end()) {
        seq = f->second->lag_seq;
        ms = f->second->lag_ms;
      }
      lag_seq = absl::StrCat(seq);
      lag_ms = absl::StrCat(ms);
      bar = Bar(ms, scale_ms);
    }
    std::string writes = "", shipped = "";
    if (s.role == "leader" && before != nullptr && secs > 0) {
      if (auto b = before->status.find(id); b != before->status.end() && b->second.role == "leader") {
        double w = static_cast<double>(s.writes_accepted - std::min(s.writes_accepted,
                                                                    b->second.writes_accepted));
        uint64_t now_bytes = ShippedBytes(s), then_bytes = ShippedBytes(b->second);
        writes = absl::StrFormat("%.0f", w / secs);
        shipped = absl::StrCat(replication::HumanBytes(static_cast<uint64_t>(
            static_cast<double>(now_bytes - std::min(now_bytes, then_bytes)) / secs)));
      }
    }
    absl::StrAppend(&out, absl::StrFormat("%-10s %-10s %6d %12d %9s %8s %-12s %10s %10s\n", id,
                                          s.role, s.epoch, s.latest_seq, lag_seq, lag_ms, bar,
                                          writes, shipped));
    if (!s.storage_error.empty()) absl::StrAppend(&out, "  STORAGE ERROR: ", s.storage_error, "\n");
  }
  return out;
}

int RunTop(const TopOptions& o) {
  // The file's nodes, and the members added at run time as the nodes report them.
  std::vector<std::pair<std::string, std::string>> nodes = o.nodes;
  std::map<std::string, std::unique_ptr<rpc::Client>> clients;
  TopSample before;
  bool have_before = false;
  absl::Time before_at;
  for (uint32_t i = 0; o.iterations == 0 || i < o.iterations; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.interval_ms));
    TopSample now;
    for (const auto& [id, address] : nodes) {
      auto& c = clients[id];
      if (c == nullptr) {
        auto made = rpc::Client::Connect(address, absl::Milliseconds(o.timeout_ms), o.connect);
        if (!made.ok()) {
          now.errors[id] = std::string(made.status().message());
          continue;
        }
        c = std::move(*made);
      }
      auto st = c->Status();
      if (!st.ok()) {
        now.errors[id] = std::string(st.status().message());
        c.reset();  // connect again next time
        continue;
      }
      now.status[id] = std::move(*st);
    }
    for (const auto& [id, st] : now.status) {
      for (const auto& m : st.members) {
        bool known = std::any_of(nodes.begin(), nodes.end(),
                                 [&](const auto& n) { return n.first == m.id; });
        if (!known && !m.address.empty()) nodes.emplace_back(m.id, m.address);
      }
    }
    absl::Time at = absl::Now();
    std::string view = RenderTop(nodes, now, have_before ? &before : nullptr,
                                 have_before ? absl::ToDoubleSeconds(at - before_at) : 0);
    std::string cluster = now.status.empty() ? "?" : now.status.begin()->second.cluster;
    std::printf("%s%s cluster %s, every %u ms%s\n%s", o.redraw ? "\x1b[H\x1b[2J" : "",
                absl::FormatTime("%Y-%m-%dT%H:%M:%S", at, absl::LocalTimeZone()).c_str(),
                cluster.c_str(), o.interval_ms, o.redraw ? " (Ctrl-C to quit)" : "",
                view.c_str());
    if (!o.redraw) std::printf("\n");
    std::fflush(stdout);
    before = std::move(now);
    before_at = at;
    have_before = true;
  }
  return 0;
}

}  // namespace walship::tools
