// The agent's counters as `tcpha status --json` and as Prometheus text.
#include <nlohmann/json.hpp>

#include "be/agent_core.hpp"

namespace tcpha::be {

std::string Agent::status_json() const {
  auto j = nlohmann::json{{"role", "be"},
                          {"id", self_.id},
                          {"address", self_.address},
                          {"imported", counters_[size_t(Counter::imported)].load()},
                          {"active", active_.load()},
                          {"control_links", control_links_.load()},
                          {"import_latency_us", metrics::latency_json(import_latency_)},
                          {"counters", metrics::counters_json(kBeCounters, metrics::snapshot(counters_))}};
  if (cache_)
    j["cache"] = {{"hits", cache_->hits()},
                  {"misses", cache_->misses()},
                  {"bytes", cache_->bytes()},
                  {"capacity", cache_->capacity()},
                  {"hit_rate", cache_hit_permille() / 1000.0}};
  if (relays_) j["relay"] = relays_->status();
  return j.dump();
}

std::string Agent::prometheus() const {
  metrics::Exposition e;
  metrics::add_counters(e, "tcpha_be_", kBeCounters, metrics::snapshot(counters_));
  e.gauge("tcpha_be_active", "connections this back-end serves", double(active_.load()));
  e.gauge("tcpha_be_control_links", "established control links from front-end workers",
          double(control_links_.load()));
  e.histogram("tcpha_be_import_latency_seconds", "HANDOFF received to READY sent",
              import_latency_);
  if (cache_) {
    e.counter("tcpha_be_cache_hits_total", "file cache hits", cache_->hits());
    e.counter("tcpha_be_cache_misses_total", "file cache misses", cache_->misses());
    e.gauge("tcpha_be_cache_bytes", "bytes held by the file cache", double(cache_->bytes()));
  }
  if (relays_) relays_->prometheus(e);
  return e.str();
}

uint32_t Agent::cache_hit_permille() const {
  if (!cache_) return 0;
  uint64_t h = cache_->hits(), total = h + cache_->misses();
  return total ? uint32_t(h * 1000 / total) : 0;
}

}  // namespace tcpha::be
