#pragma once
// A lock-free latency histogram: 1 us buckets below 1 ms, then 64 us buckets below
// ~17 ms, then one overflow bucket. Writers (one per worker) only increment relaxed
// atomics; readers sum and interpolate. Good enough for p50/p99 of handoffs.
#include <array>
#include <atomic>
#include <cstdint>

namespace tcpha {

class LatencyHistogram {
 public:
  static constexpr size_t kFine = 1024;    // [0, 1024) us, 1 us wide
  static constexpr size_t kCoarse = 256;   // [1024, 1024+256*64) us, 64 us wide
  static constexpr uint64_t kCoarseWidth = 64;
  static constexpr size_t kBuckets = kFine + kCoarse + 1;

  void record_ns(uint64_t ns) {
    uint64_t us = ns / 1000;
    size_t b;
    if (us < kFine) b = us;
    else if (us < kFine + kCoarse * kCoarseWidth) b = kFine + (us - kFine) / kCoarseWidth;
    else b = kBuckets - 1;
    buckets_[b].fetch_add(1, std::memory_order_relaxed);
  }

  uint64_t count() const {
    uint64_t n = 0;
    for (auto& b : buckets_) n += b.load(std::memory_order_relaxed);
    return n;
  }

  // Upper edge of the bucket holding quantile q (0..1), in microseconds; 0 if empty.
  double quantile_us(double q) const {
    std::array<uint64_t, kBuckets> snap;
    uint64_t n = 0;
    for (size_t i = 0; i < kBuckets; ++i) n += snap[i] = buckets_[i].load(std::memory_order_relaxed);
    if (n == 0) return 0;
    uint64_t rank = uint64_t(q * double(n - 1)) + 1, seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += snap[i];
      if (seen >= rank) return upper_edge_us(i);
    }
    return upper_edge_us(kBuckets - 1);
  }

  void merge_into(std::array<uint64_t, kBuckets>& out) const {
    for (size_t i = 0; i < kBuckets; ++i) out[i] += buckets_[i].load(std::memory_order_relaxed);
  }

  static double upper_edge_us(size_t b) {
    if (b < kFine) return double(b + 1);
    return double(kFine + (b - kFine + 1) * kCoarseWidth);
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
};

}  // namespace tcpha
