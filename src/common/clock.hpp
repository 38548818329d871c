#pragma once
#include <time.h>

#include <cstdint>

namespace tcpha {

// CLOCK_MONOTONIC in nanoseconds: the clock of every deadline in the daemons, and
// the clock bpf_ktime_get_ns() reads, so userspace and the datapath compare times.
inline uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

}  // namespace tcpha
