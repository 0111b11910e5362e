// Time as replication/ sees it, so the simulation can drive a fake clock.
#pragma once

#include <cstdint>

namespace walship::replication {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time in microseconds since the Unix epoch. Leader write times are stamped with
  // it and compared on followers, so lag in milliseconds assumes clocks in sync (NTP); on one
  // machine they are the same clock.
  virtual int64_t NowMicros() = 0;
};

// The system clock.
Clock* RealClock();

}  // namespace walship::replication
