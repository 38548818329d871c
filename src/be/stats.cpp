// The agent's numbers, declared once (Agent::report) and rendered two ways: the status
// JSON (`tcpha status --json`) and Prometheus text. Every number is one call in
// report(), which both views implement, so none exists in one view only.
//
// Names: a number `n` of section `s` is JSON .s.n (top level when s is empty) and
// Prometheus tcpha_be_[s_]n, plus _total for counters, except that section "counters"
// (the agent's own counters) adds no s_; a latency histogram `n` is JSON n_us
// (p50/p99/count) and Prometheus tcpha_be_n_seconds.
#include <nlohmann/json.hpp>

#include <span>

#include "be/agent_core.hpp"
#include "metrics/exposition.hpp"

namespace tcpha::be {

class StatsView {
 public:
  virtual ~StatsView() = default;
  // A block of counters declared with an X-list table.
  virtual void counters(std::string_view section, std::span<const metrics::CounterInfo> table,
                        std::span<const uint64_t> values) = 0;
  virtual void counter(std::string_view section, std::string_view name, std::string_view help,
                       uint64_t v) = 0;
  virtual void gauge(std::string_view section, std::string_view name, std::string_view help,
                     double v) = 0;
  virtual void latency(std::string_view name, std::string_view help, const LatencyHistogram& h) = 0;
};

namespace {

class JsonView : public StatsView {
 public:
  explicit JsonView(nlohmann::json& j) : j_(j) {}
  void counters(std::string_view section, std::span<const metrics::CounterInfo> table,
                std::span<const uint64_t> values) override {
    for (size_t i = 0; i < table.size(); ++i) at(section)[metrics::counter_key(table[i].name)] = values[i];
  }
  void counter(std::string_view section, std::string_view name, std::string_view, uint64_t v) override {
    at(section)[std::string(name)] = v;
  }
  void gauge(std::string_view section, std::string_view name, std::string_view, double v) override {
    at(section)[std::string(name)] = v;
  }
  void latency(std::string_view name, std::string_view, const LatencyHistogram& h) override {
    j_[std::string(name) + "_us"] = metrics::latency_json(h);
  }

 private:
  nlohmann::json& at(std::string_view section) {
    return section.empty() ? j_ : j_[std::string(section)];
  }
  nlohmann::json& j_;
};

class PromView : public StatsView {
 public:
  explicit PromView(metrics::Exposition& e) : e_(e) {}
  void counters(std::string_view section, std::span<const metrics::CounterInfo> table,
                std::span<const uint64_t> values) override {
    for (size_t i = 0; i < table.size(); ++i)
      e_.counter(name(section, metrics::counter_key(table[i].name)), table[i].help, values[i]);
  }
  void counter(std::string_view section, std::string_view n, std::string_view help, uint64_t v) override {
    e_.counter(name(section, n), help, v);
  }
  void gauge(std::string_view section, std::string_view n, std::string_view help, double v) override {
    e_.gauge(name(section, n), help, v);
  }
  void latency(std::string_view n, std::string_view help, const LatencyHistogram& h) override {
    e_.histogram(name("", n) + "_seconds", help, h);
  }

 private:
  static std::string name(std::string_view section, std::string_view n) {
    std::string s = "tcpha_be_";
    if (!section.empty() && section != "counters") (s += section) += '_';
    return s += n;
  }
  metrics::Exposition& e_;
};

}  // namespace

void Agent::report(StatsView& v) const {
  // The status JSON's "counters" are the Prometheus tcpha_be_<name>_total.
  v.counters("counters", kBeCounters, metrics::snapshot(counters_));
  v.counters("counters", kClosingCounters, metrics::snapshot(closings_counters()));
  v.gauge("", "active", "connections this back-end serves (until really over)", double(active_.load()));
  v.gauge("", "control_links", "established control links from front-end workers",
          double(control_links_.load()));
  v.gauge("", "peer_links", "established links from other back-ends (multi-handoff)",
          double(peer_links_.load()));
  v.gauge("", "cpu_permille", "host CPU use sent in heartbeats, permille of all CPUs",
          double(cpu_permille_.load()));
  v.latency("import_latency", "HANDOFF received to READY sent (import, serving from then)",
            import_latency_);
  v.latency("takeover_latency",
            "the request complete at the sender to serving here (same host only: the sender's clock)",
            takeover_latency_);
  v.latency("move_latency", "a later request routed elsewhere to COMMIT queued (multi-handoff)",
            move_latency_);
  v.latency("move_wait_latency", "move: waiting for the previous response's last ACK",
            move_wait_latency_);
  v.latency("move_send_latency", "move: FORWARD + export + HANDOFF queued", move_send_latency_);
  v.latency("move_ready_latency", "move: HANDOFF queued -> READY received (the target serves from its import on)",
            move_ready_latency_);
  v.latency("move_commit_latency", "move: READY -> COMMIT queued", move_commit_latency_);
  if (cwnd_carry_) {
    v.counter("cwnd", "applied", "imports that started with the exporter's congestion window",
              cwnd_carry_->applied());
    v.counter("cwnd", "refused", "imports whose carried congestion window the kernel refused",
              cwnd_carry_->refused());
  }
  if (dp_) {
    // The guard's drops (packets that came before their import) and the strays forwarded
    // after moves, as the FE shows its own datapath.
    static constexpr auto kDpCounters =
        std::to_array<metrics::CounterInfo>({TCPHA_DP_COUNTERS(TCPHA_METRICS_COUNTER)});
    v.counters("datapath", kDpCounters, dp_->counters());
  }
  if (cache_) {
    v.counter("cache", "hits", "file cache hits", cache_->hits());
    v.counter("cache", "misses", "file cache misses", cache_->misses());
    v.gauge("cache", "bytes", "bytes held by the file cache", double(cache_->bytes()));
    v.gauge("cache", "capacity", "the file cache's budget in bytes", double(cache_->capacity()));
    v.gauge("cache", "hit_rate", "file cache hits / lookups", cache_hit_permille() / 1000.0);
  }
  if (relays_) v.counters("relay", kRelayCounters, relays_->counters());
  if (card())
    v.gauge("", "entry_flows", "connections that entered at this CARD node, owned by another one",
            double(entry_flow_count_.load(std::memory_order_relaxed)));
  if (held_) {
    v.gauge("failover", "held", "connections of other back-ends backed up here",
            double(held_count_.load()));
    v.gauge("failover", "held_bytes", "memory those backups take (states, requests, copies)",
            double(held_bytes_.load()));
    v.gauge("failover", "takeovers_pending", "takeovers waiting for their client's answer",
            double(takeovers_pending_.load()));
    v.latency("recovery_latency", "TAKEOVER received -> a dead back-end's connection served here",
              recovery_latency_);
  }
}

std::string Agent::status_json() const {
  auto j = nlohmann::json{{"role", card() ? "node" : "be"}, {"id", self_.id}, {"address", self_.address}};
  JsonView view(j);
  report(view);
  if (card()) {
    // The other nodes as this one sees them: "up" while its link to them is up and
    // they heartbeat (they are chosen as owners only then).
    std::lock_guard lk(nodes_mu_);
    auto& a = j["nodes"] = nlohmann::json::array();
    for (const auto& n : nodes_view_)
      a.push_back({{"id", n.id}, {"state", n.up ? "up" : "down"}, {"active", n.active},
                   {"heartbeat_age_ms", n.age_ms}});
  }
  // Kept for the tools that read it before "counters" existed: the same number as
  // .counters.imported (tcpha_be_imported_total).
  j["imported"] = counters_[size_t(Counter::imported)].load();
  return j.dump();
}

std::string Agent::prometheus() const {
  metrics::Exposition e;
  PromView view(e);
  report(view);
  return e.str();
}

uint32_t Agent::cache_hit_permille() const {
  if (!cache_) return 0;
  uint64_t h = cache_->hits(), total = h + cache_->misses();
  return total ? uint32_t(h * 1000 / total) : 0;
}

}  // namespace tcpha::be
