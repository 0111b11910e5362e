// A latency histogram with fixed bucket bounds, in the shape Prometheus exposes one
// (cumulative counts per upper bound, a sum and a count). Observing is an array increment,
// cheap enough for every write; the bounds span a loopback round trip (25 us) to a stalled
// disk (30 s), so that one scrape's buckets say where most of the time goes.
//
// Thread safety: none; each histogram lives on one thread (the event loop).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace walship {

class LatencyHistogram {
 public:
  // Upper bounds of the buckets, in microseconds; a last bucket (+Inf) holds the rest.
  static constexpr std::array<int64_t, 19> kBoundsUs = {
      25,     50,     100,    250,     500,     1000,    2500,     5000,     10000,  25000,
      50000,  100000, 250000, 500000,  1000000, 2500000, 5000000,  10000000, 30000000};

  void Observe(int64_t us) {
    if (us < 0) us = 0;  // a clock stepped back: counted, as no time
    size_t i = 0;
    while (i < kBoundsUs.size() && us > kBoundsUs[i]) ++i;
    ++counts_[i];
    ++count_;
    sum_us_ += static_cast<uint64_t>(us);
  }

  // Observations at most kBoundsUs[i] (i < kBoundsUs.size()), or all of them.
  uint64_t CumulativeCount(size_t i) const {
    uint64_t n = 0;
    for (size_t j = 0; j <= i && j < counts_.size(); ++j) n += counts_[j];
    return n;
  }
  uint64_t count() const { return count_; }
  uint64_t sum_us() const { return sum_us_; }

 private:
  std::array<uint64_t, kBoundsUs.size() + 1> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_us_ = 0;
};

}  // namespace walship
