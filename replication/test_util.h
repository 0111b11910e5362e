// A settable clock for tests that drive replication/ directly (tests only).
#pragma once

#include <cstdint>

#include "replication/clock.h"

namespace walship::replication::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t now_us = 1'700'000'000'000'000) : now_us_(now_us) {}
  int64_t NowMicros() override { return now_us_; }
  void Set(int64_t now_us) { now_us_ = now_us; }

 private:
  int64_t now_us_;  // a plausible wall clock; never 0 (0 means "unknown" in messages)
};

}  // namespace walship::replication::testing
