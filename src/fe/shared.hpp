#pragma once
// State the front-end's workers share: the back-end registry (atomics only: workers
// never lock on the data path), the current configuration snapshot, counters and the
// handoff latency histograms.
#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "common/histogram.hpp"
#include "common/net.hpp"
#include "config/config.hpp"
#include "datapath/datapath.hpp"
#include "sched/router.hpp"

namespace spdlog {
class logger;
}
namespace tcpha::datapath {
class Datapath;
}

namespace tcpha::fe {

// Front-end counters, declared once: X(name, help). Exposed by status and metrics.
#define TCPHA_FE_COUNTERS(X)                                                        \
  X(accepted, "client connections accepted")                                        \
  X(accept_paused, "times a listener paused accepting (out of descriptors or memory)") \
  X(handoff_ok, "connections handed off (COMMIT sent)")                             \
  X(handoff_failed, "handoff attempts aborted (BE refused, timed out or unreachable)") \
  X(handoff_timeout, "handoff attempts taken back because no READY came within the lease") \
  X(handoff_retried, "requests handed to another back-end after a failed attempt")  \
  X(served_locally, "connections the front-end served itself (local node)")         \
  X(no_rule, "requests answered 404 because no rule matched")                       \
  X(no_backend, "requests answered 503 because no back-end was available")          \
  X(flow_table_full, "requests answered 503 because the flow table was full")       \
  X(client_flow_cap, "requests answered 503: the client holds max_flows_per_client") \
  X(bad_request, "requests refused as malformed (400/501/505)")                     \
  X(too_large, "requests refused as too large (414/431)")                           \
  X(header_timeout, "connections closed after the request head timeout (408)")      \
  X(client_gone, "clients that closed before sending a whole request head")         \
  X(local_timeouts, "local-node connections closed idle, stalled or slow (timeouts)") \
  X(ctl_connects, "control connections established")                                \
  X(ctl_failures, "control connections lost or refused")                            \
  X(ctl_bad_frames, "control frames that failed authentication or parsing")         \
  X(ctl_stale, "control links marked down for missed heartbeats")                   \
  X(ctl_unauthorized, "READY/CLOSED about a handoff another back-end owns (ignored)") \
  X(be_closed, "CLOSED reports received from back-ends")                            \
  X(repoints, "flows repointed to the back-end a connection moved to (REPOINT)")    \
  X(repoint_refused, "REPOINTs refused: unknown connection or unknown target")         \
  X(repoint_stale, "REPOINTs older than one already applied (out of order; harmless)") \
  X(flow_restored, "handoff flow entries found gone at COMMIT and put back (GC race)") \
  X(backups, "connections backed up on another back-end after COMMIT (failover ring)")  \
  X(backups_unsent, "connections that ended before their BACKUP was due: none sent")   \
  X(copies_sent, "copies of client packets sent to backups (COPIES)")                  \
  X(copies_unsent, "copies of client packets not sent: their backup unknown or unreachable") \
  X(ipv6_no_backup, "IPv6 connections handed off without a backup (failover covers IPv4 only)") \
  X(failovers, "back-ends failed over: their flows sent to their backups")           \
  X(taken_over, "connections of a dead back-end that its backup took over")          \
  X(takeover_lost, "connections of a dead back-end that could not be taken over")    \
  X(resynced, "connections a back-end owns that this FE learned from it (handed off before it started)") \
  X(reloads, "configuration reloads applied")                                       \
  X(reload_failures, "configuration reloads refused (the old one stays)")

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

// Connections per client address that hold a flow (being handed off, or handed off
// and not yet reported closed), so that one source cannot fill the flow table that
// every client shares. Lock-free: addresses hash into a fixed array of counters;
// two addresses that share a bucket share its count, which can only make the cap
// stricter for them, never looser.
class ClientQuota {
 public:
  // False (and nothing counted) when the address already holds `cap`.
  bool acquire(uint32_t addr, uint32_t cap) {
    auto& n = slot(addr);
    if (n.fetch_add(1, std::memory_order_relaxed) < cap) return true;
    n.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  void release(uint32_t addr) { slot(addr).fetch_sub(1, std::memory_order_relaxed); }

 private:
  static constexpr size_t kBuckets = size_t{1} << 16;
  std::atomic<uint32_t>& slot(uint32_t addr) {
    uint64_t h = uint64_t(addr) * 0x9e3779b97f4a7c15ull;  // Fibonacci hashing
    return n_[size_t(h >> 48)];
  }
  std::array<std::atomic<uint32_t>, kBuckets> n_{};
};

// One back-end, by id. Lives as long as the front-end (a reload that removes a
// back-end only takes it out of the snapshot), so workers may keep pointers to it.
struct BackendState {
  std::string id;
  uint32_t uid = 0;                    // stable number, stored in datapath flows
  std::atomic<uint32_t> links_up{0};   // workers with a live, heartbeating control link
  std::atomic<bool> drained{false};   // by the operator (tcpha drain)
  std::atomic<bool> leaving{false};   // by the BE itself (LEAVE); its next JOIN clears it
  std::atomic<uint64_t> mac{0};        // packed MAC (low 48 bits), 0 = unknown
  // forward = "tunnel": the BE's IPv4 (network order), the outer destination of its
  // packets; 0 = DR, which needs the MAC. Set from the configuration.
  std::atomic<uint32_t> tunnel{0};
  std::atomic<uint64_t> handoffs{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<int64_t> active{0};      // handed-off connections not yet reported closed
  std::atomic<int64_t> heartbeat_age_ms{-1};  // age of the newest heartbeat any worker saw
  std::atomic<uint32_t> reported_active{0};   // the BE's own count, from heartbeats
  std::atomic<uint32_t> cache_hit_permille{0};  // the BE's file cache, from heartbeats
  std::atomic<uint32_t> cpu_permille{0};  // the BE's CPU load, from heartbeats
  // Failover: when (monotonic ns) the FE failed it over, 0 when not failed over since its
  // links were last up. Set once per failure by the worker whose link went last.
  std::atomic<uint64_t> failed_at{0};
  std::atomic<uint32_t> failover_count{0};  // times it was failed over

  // The datapath can send it packets: by tunnel, or to its MAC once known.
  bool addressable() const {
    return tunnel.load(std::memory_order_relaxed) != 0 || mac.load(std::memory_order_relaxed) != 0;
  }
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

// Everything a reload replaces, as one immutable unit that workers pick up between
// events. The router's policy state is internally synchronised.
struct Snapshot {
  std::shared_ptr<const config::Config> cfg;
  std::unique_ptr<sched::Router> router;
  std::vector<BackendState*> backends;  // parallel to cfg->backends
  UniqueFd local_docroot;               // the FE's own docroot (local node), if any
  uint64_t generation = 0;
};

// The last failover, for status (docs/failover.md).
struct LastFailover {
  std::string backend;          // "" = none yet
  uint64_t at_ns = 0;           // monotonic, when detected
  int64_t at_unix_ms = 0;       // the same on the wall clock, for operators and tests
  uint64_t silent_ms = 0;       // how long the BE had been silent when it was detected
  uint64_t last_taken_ns = 0;   // the last TAKEN (recovered or lost) of its connections
  uint64_t recovered = 0, lost = 0;
};

// IPv4 outer header of a tunnelled packet (docs/tunnel.md).
inline constexpr uint32_t kTunnelOverhead = 20;

struct Shared {
  datapath::Datapath* dp = nullptr;
  Mac fe_mac{};
  // MSS the VIP listeners advertise when a back-end is reached by tunnel, per client
  // family; 0 = the kernel's (no tunnel back-end).
  uint16_t tunnel_mss4 = 0, tunnel_mss6 = 0;
  uint32_t workers = 1;
  const config::Config* boot = nullptr;  // what cannot change without a restart

  std::atomic<std::shared_ptr<const Snapshot>> snapshot;
  std::atomic<uint64_t> generation{0};
  std::atomic<std::shared_ptr<spdlog::logger>> access_log;  // null when off

  Counters counters;
  std::atomic<int64_t> local_active{0};  // connections the FE serves itself
  ClientQuota client_quota;              // [frontend] max_flows_per_client
  LatencyHistogram handoff_latency;      // request complete -> COMMIT sent
  LatencyHistogram export_latency;       // request complete -> FORWARD + export + HANDOFF sent
  LatencyHistogram ready_latency;        // HANDOFF sent -> READY received
  LatencyHistogram commit_latency;       // READY received -> COMMIT sent (FORWARD + send)

  // The datapath's copies for backups (docs/failover.md, "Copies"): worker 0 reads them
  // every tick, a worker failing a back-end over reads them before its TAKEOVERs.
  std::mutex copies_mu;  // one reader at a time
  std::optional<datapath::CopyReader> copies;

  std::mutex failover_mu;  // guards failovers (rare writes)
  std::deque<LastFailover> failovers;  // the last kFailoverHistory, oldest first
  static constexpr size_t kFailoverHistory = 8;
  // The newest failover of that back-end, or null (with failover_mu held).
  LastFailover* failover_of(const std::string& backend) {
    for (auto it = failovers.rbegin(); it != failovers.rend(); ++it)
      if (it->backend == backend) return &*it;
    return nullptr;
  }

  // Get-or-create by id; the registry never shrinks.
  BackendState* backend(const std::string& id) {
    std::lock_guard lk(mu_);
    auto& slot = registry_[id];
    if (!slot) {
      slot = std::make_unique<BackendState>();
      slot->id = id;
      slot->uid = next_uid_++;
      by_uid_.push_back(slot.get());
    }
    return slot.get();
  }
  // By datapath slot (uid), or null.
  BackendState* backend_by_uid(uint32_t uid) {
    std::lock_guard lk(mu_);
    return uid < by_uid_.size() ? by_uid_[uid] : nullptr;
  }

  // "up" when every worker has a live link, "down" when none has.
  std::string state_of(const BackendState& b) const {
    uint32_t up = b.links_up.load(std::memory_order_relaxed);
    if (up == 0) return "down";
    if (b.drained.load(std::memory_order_relaxed) || b.leaving.load(std::memory_order_relaxed))
      return "drained";
    return up == workers ? "up" : "degraded";
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<BackendState>> registry_;
  std::vector<BackendState*> by_uid_;  // index: uid
  uint32_t next_uid_ = 0;
};

}  // namespace tcpha::fe
