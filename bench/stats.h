// Statistics for the benchmark harness (unit-tested in bench/stats_test.cc).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace walship::bench {

// The p-th percentile (0-100) by the nearest-rank method: the smallest sample with at least
// p% of the samples at or below it. 0 for no samples.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  if (p <= 0) return v.front();
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  return v[std::min(v.size(), std::max<size_t>(1, rank)) - 1];
}

// a / b, or 0 when b is 0.
inline double Ratio(double a, double b) { return b == 0 ? 0 : a / b; }

}  // namespace walship::bench
