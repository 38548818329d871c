#pragma once
// Counters are declared once, as X(name, help) lists next to the code that counts
// (TCPHA_FE_COUNTERS, TCPHA_BE_COUNTERS, TCPHA_DP_COUNTERS). This turns such a list
// into a table that both views read: `tcpha status --json` (counters_json) and the
// Prometheus endpoint (add_counters), so a counter added to the list shows up in both
// under the same name, with the same help.
//
//   constexpr auto kFeCounters =
//       std::to_array<tcpha::metrics::CounterInfo>({TCPHA_FE_COUNTERS(TCPHA_METRICS_COUNTER)});
//   add_counters(expo, "tcpha_fe_", kFeCounters, snapshot(shared.counters.v));
#include <array>
#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>

#include "common/histogram.hpp"
#include "metrics/exposition.hpp"

namespace tcpha::metrics {

struct CounterInfo {
  std::string_view name;  // as declared; may be upper case (the datapath's are)
  std::string_view help;
};

#define TCPHA_METRICS_COUNTER(name, help) ::tcpha::metrics::CounterInfo{#name, help},

// The key a counter has in status JSON and, with a prefix and "_total", in Prometheus:
// the declared name in lower case ("HOLD_DROP" -> "hold_drop").
std::string counter_key(std::string_view name);

// The values of a block of atomic counters, each read once.
template <size_t N>
std::array<uint64_t, N> snapshot(const std::array<std::atomic<uint64_t>, N>& counters) {
  std::array<uint64_t, N> out{};
  for (size_t i = 0; i < N; ++i) out[i] = counters[i].load(std::memory_order_relaxed);
  return out;
}

// {"p50": us, "p99": us, "count": n}: the latency summary `tcpha status` shows.
nlohmann::json latency_json(const LatencyHistogram& h);

namespace detail {
nlohmann::json counters_json(std::span<const CounterInfo> table, std::span<const uint64_t> values);
void add_counters(Exposition& e, std::string_view prefix, std::span<const CounterInfo> table,
                  std::span<const uint64_t> values, const Labels& labels);
}  // namespace detail

// {"<key>": value, ...}. The sizes are tied at compile time, so a table and a block
// of values cannot drift apart.
template <size_t N>
nlohmann::json counters_json(const std::array<CounterInfo, N>& table,
                             const std::array<uint64_t, N>& values) {
  return detail::counters_json(table, values);
}

// Every counter of the table as <prefix><key>_total.
template <size_t N>
void add_counters(Exposition& e, std::string_view prefix, const std::array<CounterInfo, N>& table,
                  const std::array<uint64_t, N>& values, const Labels& labels = {}) {
  detail::add_counters(e, prefix, table, values, labels);
}

}  // namespace tcpha::metrics
