#pragma once
// Ages flows out of the datapath's table (the rules are at the top of
// bpf/datapath.bpf.c and in docs/design.md, "Flow lifetime"). The table may hold
// 16M flows, so it is read with batch map operations (one syscall per few thousand
// flows) and swept in slices: each step reads a bounded number of entries and
// continues where the previous one stopped.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "datapath/datapath.hpp"

namespace tcpha::datapath {

// What ends a flow; CLOCK_MONOTONIC nanoseconds, the clock of bpf_ktime_get_ns().
struct FlowLimits {
  uint64_t linger_ns = 0;    // FORWARD flow the BE reported closed: removed this long after
                             // the report and its last packet
  uint64_t idle_ns = 0;      // FORWARD flow with no packet this long: removed
  uint64_t hold_max_ns = 0;  // HOLD older than this: left by a crashed handoff, removed
};

// Why a flow goes, or not (exposed for tests and the benchmark).
enum class FlowVerdict { keep, closed, idle };
FlowVerdict classify_flow(const tcpha_flow_value& v, uint64_t now_ns, const FlowLimits& limits);

struct GcStats {
  size_t removed_closed = 0, removed_idle = 0;
  size_t visited = 0;  // entries read by this step
  bool swept = false;  // this step ended a sweep of the whole table
  size_t live = 0;     // when swept: flows the sweep read and left in the table
};

class FlowGc {
 public:
  static constexpr uint32_t kDefaultBatch = 4096;  // entries per lookup syscall

  explicit FlowGc(Datapath& dp, uint32_t batch = kDefaultBatch);

  // Continues the current sweep over about max_entries entries (whole batches, so
  // up to one batch more) and removes those that `limits` say are over, deciding
  // again for each just before it is deleted (it may have woken up or been
  // re-programmed since it was read). At the end of the table the result has
  // swept = true, and the next step starts from the beginning.
  GcStats step(uint64_t now_ns, const FlowLimits& limits, size_t max_entries);
  // One whole sweep from the beginning of the table.
  GcStats sweep(uint64_t now_ns, const FlowLimits& limits);

  // Tests: runs between a step's reads and its deletes.
  std::function<void()> after_read;

 private:
  void restart();
  size_t read_batch(bool& end);  // fills keys_/values_; returns entries read
  void remove_doomed(uint64_t now_ns, const FlowLimits& limits, GcStats& st);

  Datapath& dp_;
  uint32_t batch_;
  bool started_ = false;   // cursor_ holds the position of an unfinished sweep
  FlowKey cursor_{};       // the kernel's batch token (a bucket index for hash maps)
  size_t sweep_live_ = 0;  // kept flows read so far in this sweep
  // Scratch, kept to reuse its capacity.
  std::vector<FlowKey> keys_;
  std::vector<tcpha_flow_value> values_;
  std::vector<FlowKey> doomed_, confirmed_;
  std::vector<FlowVerdict> why_;
};

// Runs a FlowGc every `interval` on a thread of its own, until stop() or
// destruction. Each tick reads one slice of the table (entries_per_tick), so a
// table of up to 64K flows is swept whole every tick and a 16M one in 64 ticks,
// never with more than a slice of work at once (a batch read costs about 0.4 us
// of CPU per flow here: 256K flows, the largest slice, about 100 ms).
class FlowGcThread {
 public:
  static constexpr size_t kMinPerTick = 65536;
  static constexpr size_t kMaxPerTick = 262144;
  static constexpr size_t kTicksPerSweep = 32;  // between the two bounds
  static size_t entries_per_tick(uint32_t max_flows);

  using LimitsFn = std::function<FlowLimits()>;          // asked every tick (reloads change it)
  using ReportFn = std::function<void(const GcStats&)>;  // after every completed sweep

  // Sets the datapath's linger from limits() before the thread starts, and again
  // whenever it changes.
  FlowGcThread(Datapath& dp, LimitsFn limits, ReportFn report,
               std::chrono::milliseconds interval = std::chrono::milliseconds(500));
  ~FlowGcThread();
  FlowGcThread(const FlowGcThread&) = delete;
  FlowGcThread& operator=(const FlowGcThread&) = delete;

  // Stops and joins the thread; idempotent. The datapath must outlive this call.
  void stop();

 private:
  void run();

  Datapath& dp_;
  FlowGc gc_;
  LimitsFn limits_;
  ReportFn report_;
  std::chrono::milliseconds interval_;
  size_t per_tick_;
  GcStats sweep_;  // the removals of the sweep in progress, reported with its end
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after every member it uses exists
};

}  // namespace tcpha::datapath
