#pragma once
// Chooses the back-end for a request. Round-robin over the usable back-ends for now;
// content rules and policies (LARD, least-conn, hash) plug in here.
#include <cstdint>
#include <functional>

#include "fe/shared.hpp"
#include "http/request.hpp"

namespace tcpha::fe {

class Scheduler {
 public:
  explicit Scheduler(const Shared& shared) : shared_(shared) {}

  // `usable(i)`: this worker can reach back-end i now. Returns -1 when none can serve.
  int choose(const http::Request& req, const std::function<bool(uint32_t)>& usable) {
    (void)req;
    const size_t n = shared_.backends.size();
    for (size_t tries = 0; tries < n; ++tries) {
      uint32_t i = uint32_t(next_++ % n);
      if (shared_.backends[i]->drained.load(std::memory_order_relaxed)) continue;
      if (usable(i)) return int(i);
    }
    return -1;
  }

 private:
  const Shared& shared_;
  uint64_t next_ = 0;
};

}  // namespace tcpha::fe
