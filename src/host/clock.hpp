// The one monotonic clock of the program: seconds since an arbitrary start (CLOCK_MONOTONIC),
// never going back, for deadlines, run times and rates. Lua reads it as sky.core.monotonic().
#pragma once

#include <time.h>

namespace sky {

inline double monotonic_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace sky
