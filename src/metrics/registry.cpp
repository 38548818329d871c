#include "metrics/registry.hpp"

#include <cctype>

namespace tcpha::metrics {

std::string counter_key(std::string_view name) {
  std::string out(name);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

nlohmann::json latency_json(const LatencyHistogram& h) {
  return {{"p50", h.quantile_us(0.50)}, {"p99", h.quantile_us(0.99)}, {"count", h.count()}};
}

namespace detail {

nlohmann::json counters_json(std::span<const CounterInfo> table, std::span<const uint64_t> values) {
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = 0; i < table.size(); ++i) out[counter_key(table[i].name)] = values[i];
  return out;
}

void add_counters(Exposition& e, std::string_view prefix, std::span<const CounterInfo> table,
                  std::span<const uint64_t> values, const Labels& labels) {
  for (size_t i = 0; i < table.size(); ++i)
    e.counter(std::string(prefix) + counter_key(table[i].name), table[i].help, values[i], labels);
}

}  // namespace detail
}  // namespace tcpha::metrics
