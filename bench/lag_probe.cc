#include "bench/lag_probe.h"

#include <algorithm>
#include <cstdio>

#include "bench/stats.h"

namespace walship::bench {
namespace {

constexpr auto kMarkerEvery = std::chrono::milliseconds(10);
constexpr auto kUnseenAfter = std::chrono::seconds(1);
constexpr auto kBackToBackFor = std::chrono::milliseconds(1);
constexpr auto kMaxPollGap = std::chrono::microseconds(100);
constexpr int kMaxErrors = 100;  // the writer gives up after this many failures

}  // namespace

LagProbe::LagProbe(std::function<absl::StatusOr<std::unique_ptr<MarkerWriter>>()> connect_writer,
                   std::vector<Follower> followers)
    : samples_(followers.size()) {
  for (const Follower& f : followers) ids_.push_back(f.id);
  threads_.emplace_back([this, c = std::move(connect_writer)] { RunWriter(c); });
  for (size_t i = 0; i < followers.size(); ++i) {
    threads_.emplace_back([this, i, f = std::move(followers[i])] { RunFollower(i, f); });
  }
}

LagProbe::~LagProbe() { Stop(); }

// The writer stops first; then each follower settles every marker acknowledged so far, seen
// or (a second after its acknowledgement) unseen, so that a follower behind at the end
// loses none of its slowest samples.
void LagProbe::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stop_writer_ = true;
  threads_.front().join();
  {
    std::lock_guard<std::mutex> l(mu_);
    draining_ = true;
  }
  acked_cv_.notify_all();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  for (size_t i = 0; i < ids_.size(); ++i) results_[ids_[i]] = std::move(samples_[i]);
  markers_ = acked_.size();
}

// Markers carry a number above any an earlier probe wrote (microseconds since the epoch at
// the start, plus one per marker), so that a follower still serving an earlier probe's last
// marker does not settle this one's first.
void LagProbe::RunWriter(std::function<absl::StatusOr<std::unique_ptr<MarkerWriter>>()> connect) {
  const uint64_t base =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  std::unique_ptr<MarkerWriter> writer;
  uint64_t seq = base + 1;
  // At least one marker, however soon the probe is stopped.
  do {
    auto next = Clock::now() + kMarkerEvery;
    if (writer == nullptr) {
      auto made = connect();
      if (!made.ok()) {
        ++errors_;
        std::fprintf(stderr, "lag probe: leader: %s\n", made.status().ToString().c_str());
        std::this_thread::sleep_until(next);
        continue;
      }
      writer = std::move(*made);
    }
    if (absl::Status s = writer->Write(seq); !s.ok()) {
      ++errors_;
      std::fprintf(stderr, "lag probe: marker %llu: %s\n",
                   static_cast<unsigned long long>(seq - base), s.ToString().c_str());
      writer.reset();  // connect again
      std::this_thread::sleep_until(next);
      continue;
    }
    auto at = Clock::now();
    {
      std::lock_guard<std::mutex> l(mu_);
      acked_.push_back({seq, at});
    }
    acked_cv_.notify_all();
    writer->AfterAck();
    ++seq;
    std::this_thread::sleep_until(next);
  } while (!stop_writer_ && errors_ < kMaxErrors);
}

void LagProbe::RunFollower(size_t index, Follower f) {
  Samples& out = samples_[index];
  auto reader = f.connect();
  while (!reader.ok()) {
    ++errors_;
    std::fprintf(stderr, "lag probe: follower %s: %s\n", f.id.c_str(),
                 reader.status().ToString().c_str());
    std::unique_lock<std::mutex> l(mu_);
    if (acked_cv_.wait_for(l, std::chrono::milliseconds(100), [&] { return draining_; })) {
      out.unseen += static_cast<int>(acked_.size());  // none could be looked for
      return;
    }
    l.unlock();
    reader = f.connect();
  }
  size_t next = 0;  // the oldest marker this follower has not settled, as an index in acked_
  while (true) {
    Clock::time_point oldest;
    {
      std::unique_lock<std::mutex> l(mu_);
      acked_cv_.wait(l, [&] { return draining_ || acked_.size() > next; });
      if (next == acked_.size()) return;  // draining, and every marker settled
      oldest = acked_[next].at;
    }
    auto sent = Clock::now();
    absl::StatusOr<uint64_t> got = (*reader)->Read();
    auto answered = Clock::now();
    out.read_us.push_back(std::chrono::duration<double, std::micro>(answered - sent).count());
    {
      std::lock_guard<std::mutex> l(mu_);
      for (; next < acked_.size(); ++next) {
        const Acked& a = acked_[next];
        if (got.ok() && a.seq <= *got) {
          // Seen before its acknowledgement was taken down (shipping races the reply): no lag.
          double lag_ms =
              std::max(0.0, std::chrono::duration<double, std::milli>(answered - a.at).count());
          out.lag_ms.push_back(lag_ms);
          out.series.push_back({std::chrono::duration<double>(a.at - t0_).count(), lag_ms});
          last_lag_ms_ = lag_ms;
        } else if (answered - a.at > kUnseenAfter) {
          ++out.unseen;
        } else {
          break;
        }
      }
      if (next == acked_.size()) continue;  // all settled: wait for the next marker
      oldest = acked_[next].at;
    }
    if (!got.ok()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // reconnecting or starting
      continue;
    }
    auto age = Clock::now() - oldest;
    if (age > kBackToBackFor) {
      std::this_thread::sleep_for(std::min<Clock::duration>(kMaxPollGap, age / 10));
    }
  }
}

void LagProbe::AddCounters(Row& row) const {
  double worst = 0;
  for (const auto& [id, s] : results_) {
    row.counters["lag_p50_ms/" + id] = Percentile(s.lag_ms, 50);
    row.counters["lag_p99_ms/" + id] = Percentile(s.lag_ms, 99);
    row.counters["lag_max_ms/" + id] = Percentile(s.lag_ms, 100);
    row.counters["lag_unseen/" + id] = s.unseen;
    row.counters["read_p50_us/" + id] = Percentile(s.read_us, 50);
    worst = std::max(worst, Percentile(s.lag_ms, 99));
  }
  if (!results_.empty()) row.counters["lag_p99_ms/worst"] = worst;
  row.counters["lag_markers"] = static_cast<double>(markers_);
  row.counters["lag_probe_errors"] = errors_.load();
}

}  // namespace walship::bench
