#pragma once
// State the front-end's workers share: the back-end table (atomics only: workers
// never lock on the data path), counters and the handoff latency histogram.
#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/histogram.hpp"
#include "common/net.hpp"
#include "config/config.hpp"

namespace tcpha::datapath {
class Datapath;
}

namespace tcpha::fe {

// Front-end counters, declared once: X(name, help). Exposed by status (and metrics).
#define TCPHA_FE_COUNTERS(X)                                                        \
  X(accepted, "client connections accepted")                                        \
  X(handoff_ok, "connections handed off (COMMIT sent)")                             \
  X(handoff_failed, "handoffs aborted (BE refused, timed out or unreachable)")      \
  X(handoff_timeout, "handoffs aborted because no READY came in time")              \
  X(no_backend, "requests answered 503 because no back-end was available")          \
  X(flow_table_full, "requests answered 503 because the flow table was full")       \
  X(bad_request, "requests refused as malformed (400/501/505)")                     \
  X(too_large, "requests refused as too large (414/431)")                           \
  X(header_timeout, "connections closed after the request head timeout (408)")      \
  X(client_gone, "clients that closed before sending a whole request head")         \
  X(ctl_connects, "control connections established")                                \
  X(ctl_failures, "control connections lost or refused")                            \
  X(ctl_bad_frames, "control frames that failed authentication or parsing")         \
  X(be_closed, "CLOSED reports received from back-ends")

enum class Counter {
#define TCPHA_X(name, help) name,
  TCPHA_FE_COUNTERS(TCPHA_X)
#undef TCPHA_X
      count
};

struct Counters {
  std::array<std::atomic<uint64_t>, size_t(Counter::count)> v{};
  void inc(Counter c, uint64_t n = 1) { v[size_t(c)].fetch_add(n, std::memory_order_relaxed); }
  uint64_t get(Counter c) const { return v[size_t(c)].load(std::memory_order_relaxed); }
};

struct BackendState {
  const config::BackendSection* cfg = nullptr;
  uint32_t index = 0;
  std::atomic<uint32_t> links_up{0};   // workers whose control connection is established
  std::atomic<bool> drained{false};
  std::atomic<uint64_t> mac{0};        // packed MAC (low 48 bits), 0 = unknown
  std::atomic<uint64_t> handoffs{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<int64_t> active{0};      // handed-off connections not yet reported closed

  static uint64_t pack(const Mac& m) {
    uint64_t v = 0;
    for (uint8_t b : m) v = (v << 8) | b;
    return v;
  }
  static Mac unpack(uint64_t v) {
    Mac m;
    for (int i = 5; i >= 0; --i, v >>= 8) m[size_t(i)] = uint8_t(v);
    return m;
  }
};

struct Shared {
  const config::Config* cfg = nullptr;
  datapath::Datapath* dp = nullptr;
  Mac fe_mac{};
  uint32_t workers = 1;
  std::vector<std::unique_ptr<BackendState>> backends;
  Counters counters;
  LatencyHistogram handoff_latency;  // request complete -> COMMIT sent
  LatencyHistogram export_latency;   // HOLD + export
  LatencyHistogram ready_latency;    // HANDOFF sent -> READY received (BE import + round trip)

  // "up" when every worker has a control link, "down" when none has.
  std::string state_of(const BackendState& b) const {
    uint32_t up = b.links_up.load(std::memory_order_relaxed);
    if (up == 0) return "down";
    if (b.drained.load(std::memory_order_relaxed)) return "drained";
    return up == workers ? "up" : "degraded";
  }
};

}  // namespace tcpha::fe
