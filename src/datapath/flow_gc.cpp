#include "datapath/flow_gc.hpp"

#include <bpf/bpf.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "common/clock.hpp"

namespace tcpha::datapath {
namespace {

// A bucket larger than the batch makes the kernel refuse the read (ENOSPC); the
// batch grows up to this, far beyond any bucket a keyed hash produces.
constexpr uint32_t kMaxBatch = 1u << 20;

}  // namespace

FlowVerdict classify_flow(const tcpha_flow_value& v, uint64_t now, const FlowLimits& limits) {
  // now > ts: a packet stamped after `now` was taken is fresh, not ancient.
  auto older = [now](uint64_t ts, uint64_t age) { return now > ts && now - ts > age; };
  if (v.state != TCPHA_FLOW_FORWARD)
    return older(v.last_seen_ns, limits.hold_max_ns) ? FlowVerdict::idle : FlowVerdict::keep;
  // Only the back-end's report starts the linger (a client FIN/RST may be spoofed),
  // and a client still sending (a slow reader's ACKs, a FIN retransmitted) keeps
  // the flow until it has been quiet for the linger too.
  if ((v.flags & TCPHA_FLOW_F_BE_CLOSED) && older(v.closing_ns, limits.linger_ns) &&
      older(v.last_seen_ns, limits.linger_ns))
    return FlowVerdict::closed;
  return older(v.last_seen_ns, limits.idle_ns) ? FlowVerdict::idle : FlowVerdict::keep;
}

FlowGc::FlowGc(Datapath& dp, uint32_t batch) : dp_(dp), batch_(std::clamp(batch, 1u, kMaxBatch)) {}

void FlowGc::restart() {
  started_ = false;
  sweep_live_ = 0;
}

size_t FlowGc::read_batch(bool& end) {
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  for (;;) {
    keys_.resize(batch_);
    values_.resize(batch_);
    FlowKey next{};  // the token is a u32 for hash maps; a key's size is ample
    __u32 count = batch_;
    int rc = bpf_map_lookup_batch(dp_.flows_fd(), started_ ? &cursor_ : nullptr, &next,
                                  keys_.data(), values_.data(), &count, &opts);
    if (rc == 0) {
      cursor_ = next;
      started_ = true;
      end = false;
      return count;
    }
    end = true;
    if (rc == -ENOENT) return count;  // the end of the table, with its last entries
    if (rc == -ENOSPC && batch_ < kMaxBatch) {
      batch_ *= 2;
      continue;
    }
    // Nothing better to do than to start over next time (and say so).
    spdlog::warn("flow gc: reading the flow table: {}", std::strerror(-rc));
    return 0;
  }
}

void FlowGc::remove_doomed(uint64_t now_ns, const FlowLimits& limits, GcStats& st) {
  if (doomed_.empty()) return;
  // From the first look below to the last delete, a flow created meanwhile for the same
  // 4-tuple may be deleted: handoffs look their flow up again then (Datapath::gc_epoch).
  dp_.gc_pass_begins();
  struct End {
    Datapath& dp;
    ~End() { dp.gc_pass_ends(); }
  } end{dp_};
  const int fd = dp_.flows_fd();
  confirmed_.clear();
  why_.clear();
  tcpha_flow_value v;
  for (const FlowKey& k : doomed_) {
    if (bpf_map_lookup_elem(fd, &k, &v) < 0) continue;  // gone meanwhile
    const FlowVerdict why = classify_flow(v, now_ns, limits);
    if (why == FlowVerdict::keep) continue;
    confirmed_.push_back(k);
    why_.push_back(why);
  }
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  for (size_t done = 0; done < confirmed_.size();) {
    __u32 count = uint32_t(confirmed_.size() - done);
    const int rc = bpf_map_delete_batch(fd, confirmed_.data() + done, &count, &opts);
    // The kernel deletes in order and stops at the first failure; count says how far.
    for (size_t i = done; i < done + count; ++i)
      ++(why_[i] == FlowVerdict::closed ? st.removed_closed : st.removed_idle);
    done += count;
    if (rc == 0) break;
    if (rc == -ENOENT) {
      ++done;  // that flow vanished since it was checked (a SYN or the worker removed it)
      continue;
    }
    spdlog::warn("flow gc: deleting flows: {}", std::strerror(-rc));
    break;
  }
}

GcStats FlowGc::step(uint64_t now_ns, const FlowLimits& limits, size_t max_entries) {
  GcStats st;
  doomed_.clear();
  bool end = false;
  do {
    const size_t n = read_batch(end);
    st.visited += n;
    for (size_t i = 0; i < n; ++i)
      if (classify_flow(values_[i], now_ns, limits) != FlowVerdict::keep)
        doomed_.push_back(keys_[i]);
  } while (!end && st.visited < max_entries);
  if (after_read) after_read();
  remove_doomed(now_ns, limits, st);
  sweep_live_ += st.visited - st.removed_closed - st.removed_idle;
  if (end) {
    st.swept = true;
    st.live = sweep_live_;
    restart();
  }
  return st;
}

GcStats FlowGc::sweep(uint64_t now_ns, const FlowLimits& limits) {
  restart();
  return step(now_ns, limits, SIZE_MAX);
}

FlowGcThread::FlowGcThread(Datapath& dp, LimitsFn limits, ReportFn report,
                           std::chrono::milliseconds interval)
    : dp_(dp),
      gc_(dp),
      limits_(std::move(limits)),
      report_(std::move(report)),
      interval_(interval),
      per_tick_(entries_per_tick(dp.max_flows())) {
  dp_.set_linger(limits_().linger_ns);
  thread_ = std::thread([this] { run(); });
}

size_t FlowGcThread::entries_per_tick(uint32_t max_flows) {
  return std::clamp(size_t(max_flows) / kTicksPerSweep, kMinPerTick, kMaxPerTick);
}

FlowGcThread::~FlowGcThread() { stop(); }

void FlowGcThread::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FlowGcThread::run() {
  std::unique_lock lk(mu_);
  while (!cv_.wait_for(lk, interval_, [this] { return stopping_; })) {
    lk.unlock();
    const FlowLimits lim = limits_();
    if (dp_.linger() != lim.linger_ns) dp_.set_linger(lim.linger_ns);
    const GcStats st = gc_.step(monotonic_ns(), lim, per_tick_);
    sweep_.removed_closed += st.removed_closed;
    sweep_.removed_idle += st.removed_idle;
    sweep_.visited += st.visited;
    if (st.swept) {
      sweep_.swept = true;
      sweep_.live = st.live;
      if (sweep_.removed_closed || sweep_.removed_idle)
        spdlog::debug("flows: {} closed and {} idle removed, {} live", sweep_.removed_closed,
                      sweep_.removed_idle, sweep_.live);
      report_(sweep_);
      sweep_ = {};
    }
    lk.lock();
  }
}

}  // namespace tcpha::datapath
