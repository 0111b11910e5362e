#include "replication/failure_detector.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace walship::replication {

PhiAccrualDetector::PhiAccrualDetector(int64_t min_std_us, size_t window,
                                       int64_t max_interval_us)
    : min_std_us_(std::max<int64_t>(1, min_std_us)),
      window_(std::max<size_t>(1, window)),
      max_interval_us_(max_interval_us) {}

void PhiAccrualDetector::Reset() {
  intervals_.clear();
  sum_ = sum_sq_ = 0;
  last_us_ = 0;
}

void PhiAccrualDetector::OnHeartbeatFrom(const std::string& source, uint64_t generation,
                                         int64_t now_us) {
  if (source != source_ || generation != generation_) {
    Reset();
    source_ = source;
    generation_ = generation;
  }
  OnHeartbeat(now_us);
}

void PhiAccrualDetector::OnHeartbeat(int64_t now_us) {
  if (last_us_ != 0 && now_us >= last_us_ &&
      (max_interval_us_ <= 0 || now_us - last_us_ <= max_interval_us_)) {
    int64_t interval = now_us - last_us_;
    intervals_.push_back(interval);
    sum_ += static_cast<double>(interval);
    sum_sq_ += static_cast<double>(interval) * static_cast<double>(interval);
    if (intervals_.size() > window_) {
      double old = static_cast<double>(intervals_.front());
      intervals_.pop_front();
      sum_ -= old;
      sum_sq_ -= old * old;
    }
  }
  last_us_ = std::max(last_us_, now_us);
}

double PhiAccrualDetector::mean_us() const {
  return intervals_.empty() ? 0 : sum_ / static_cast<double>(intervals_.size());
}

double PhiAccrualDetector::std_us() const {
  double floor = static_cast<double>(min_std_us_);
  if (intervals_.empty()) return floor;
  double n = static_cast<double>(intervals_.size());
  double mean = sum_ / n;
  double variance = std::max(0.0, sum_sq_ / n - mean * mean);
  return std::max(floor, std::sqrt(variance));
}

// The normal distribution's tail by the logistic approximation Akka uses (within 0.0001 of
// the exact one, and it never takes the log of 0 before the tail is far below 1e-300).
double PhiAccrualDetector::PhiAfter(double silence_us) const {
  double mean = mean_us(), sd = std_us();
  double y = (silence_us - mean) / sd;
  double e = std::exp(-y * (1.5976 + 0.070566 * y * y));
  double p = silence_us > mean ? e / (1.0 + e) : 1.0 - 1.0 / (1.0 + e);
  if (p <= 0) return std::numeric_limits<double>::infinity();
  return -std::log10(p);
}

double PhiAccrualDetector::Phi(int64_t now_us) const {
  if (intervals_.size() < kMinSamples || now_us <= last_us_) return 0;
  return std::min(kMaxPhi, PhiAfter(static_cast<double>(now_us - last_us_)));
}

int64_t PhiAccrualDetector::SuspectAfterUs(double threshold) const {
  if (intervals_.size() < kMinSamples || threshold <= 0) return 0;
  // phi grows with the silence: bisect between a silence below the threshold and one above.
  double lo = 0, hi = mean_us() + std_us();
  while (PhiAfter(hi) < threshold) hi *= 2;  // phi is infinite well before hi overflows
  for (int i = 0; i < 64 && hi - lo > 1; ++i) {
    double mid = (lo + hi) / 2;
    (PhiAfter(mid) < threshold ? lo : hi) = mid;
  }
  return static_cast<int64_t>(std::ceil(hi));
}

}  // namespace walship::replication
