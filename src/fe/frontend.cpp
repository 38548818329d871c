#include "fe/frontend.hpp"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "datapath/datapath.hpp"
#include "fe/worker.hpp"
#include "host/host.hpp"
#include "status/status_socket.hpp"

namespace tcpha::fe {
namespace {

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

nlohmann::json latency_json(const LatencyHistogram& h) {
  return {{"p50", h.quantile_us(0.50)}, {"p99", h.quantile_us(0.99)}, {"count", h.count()}};
}

nlohmann::json status_json(const Shared& sh, size_t flows) {
  using nlohmann::json;
  json bes = json::array();
  for (auto& b : sh.backends) {
    bes.push_back({{"id", b->cfg->id},
                   {"address", b->cfg->address},
                   {"state", sh.state_of(*b)},
                   {"weight", b->cfg->weight},
                   {"handoffs", b->handoffs.load()},
                   {"failures", b->failures.load()},
                   {"active", b->active.load()},
                   {"mac", b->mac.load() ? mac_str(BackendState::unpack(b->mac.load())) : ""}});
  }
  json counters = json::object();
#define TCPHA_X(name, help) counters[#name] = sh.counters.get(Counter::name);
  TCPHA_FE_COUNTERS(TCPHA_X)
#undef TCPHA_X
  json dp = json::object();
  auto dpc = sh.dp->counters();
  for (int i = 0; i < TCPHA_DP_NR_COUNTERS; ++i) dp[datapath::Datapath::counter_name(i)] = dpc[size_t(i)];
  return {{"role", "fe"},
          {"id", sh.cfg->frontend.id},
          {"vip", sh.cfg->cluster.vip},
          {"workers", sh.workers},
          {"backends", bes},
          {"handoffs",
           {{"ok", sh.counters.get(Counter::handoff_ok)},
            {"failed", sh.counters.get(Counter::handoff_failed)}}},
          {"flows", flows},
          {"handoff_latency_us", latency_json(sh.handoff_latency)},
          {"handoff_breakdown_us",
           {{"hold_export", latency_json(sh.export_latency)},
            {"handoff_to_ready", latency_json(sh.ready_latency)}}},
          {"counters", counters},
          {"datapath", dp}};
}

std::string handle_command(Shared& sh, const std::string& cmd, std::atomic<size_t>& flows) {
  using nlohmann::json;
  if (cmd.empty() || cmd == "status") return status_json(sh, flows.load()).dump();
  for (const char* verb : {"drain ", "undrain "}) {
    if (cmd.rfind(verb, 0) != 0) continue;
    std::string id = cmd.substr(std::strlen(verb));
    for (auto& b : sh.backends) {
      if (b->cfg->id != id) continue;
      b->drained.store(verb[0] == 'd');
      spdlog::info("{} {}", verb[0] == 'd' ? "draining" : "undraining", id);
      return json{{"ok", true}, {"id", id}, {"state", sh.state_of(*b)}}.dump();
    }
    return json{{"ok", false}, {"error", "no backend '" + id + "'"}}.dump();
  }
  return json{{"ok", false}, {"error", "unknown command '" + cmd + "'"}}.dump();
}

}  // namespace

int run_frontend(const config::Config& cfg, const std::string& status_socket) {
  const auto& f = cfg.frontend;
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before any thread starts

  auto fe_mac = datapath::interface_mac(f.interface);
  if (!fe_mac) {
    spdlog::error("interface {}: {}", f.interface, fe_mac.error().message());
    return 2;
  }
  auto dp = datapath::Datapath::attach(f.interface, f.max_flows);
  if (!dp) {
    spdlog::error("datapath on {}: {} (needs root/CAP_BPF+CAP_NET_ADMIN and tc clsact)",
                  f.interface, dp.error().message());
    return 2;
  }
  auto vip = host::AddressGuard::add(f.interface, cfg.cluster.vip_addr);
  if (!vip) {
    spdlog::error("{}", vip.error().message());
    return 2;
  }

  Shared sh;
  sh.cfg = &cfg;
  sh.dp = dp->get();
  sh.fe_mac = *fe_mac;
  sh.workers = f.workers ? f.workers : uint32_t(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  for (uint32_t i = 0; i < cfg.backends.size(); ++i) {
    auto b = std::make_unique<BackendState>();
    b->cfg = &cfg.backends[i];
    b->index = i;
    sh.backends.push_back(std::move(b));
  }

  std::vector<std::unique_ptr<Worker>> workers;
  for (uint32_t i = 0; i < sh.workers; ++i) {
    workers.push_back(std::make_unique<Worker>(sh, i));
    if (auto s = workers.back()->open_listeners(); !s) {
      spdlog::error("{}", s.error().message());
      return 2;
    }
  }

  std::atomic<size_t> flows{0};
  auto status = status::Server::start(
      status_socket, [&](const std::string& cmd) { return handle_command(sh, cmd, flows); });
  if (!status) {
    spdlog::error("status socket: {}", status.error().message());
    return 2;
  }

  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });

  // Ages flows out of the datapath table: closed ones after a TIME_WAIT-like linger,
  // idle ones, and holds a crashed handoff left behind.
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread gc([&] {
    const uint64_t ms = 1'000'000;
    std::unique_lock lk(mu);
    while (!cv.wait_for(lk, std::chrono::milliseconds(500), [&] { return stopping; })) {
      auto st = sh.dp->gc(now_ns(), f.flow_linger_ms * ms, uint64_t(f.flow_idle_s) * 1000 * ms,
                          (2ull * f.handoff_timeout_ms + 1000) * ms);
      flows.store(st.live);
      if (st.removed_closed || st.removed_idle)
        spdlog::debug("flows: {} closed and {} idle removed, {} live", st.removed_closed,
                      st.removed_idle, st.live);
    }
  });

  spdlog::info("front-end {} on {} VIP {} ports {}, {} workers, {} back-ends", f.id, f.interface,
               cfg.cluster.vip, fmt::join(cfg.cluster.ports, ","), sh.workers,
               cfg.backends.size());
  for (;;) {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: configuration reload is not supported yet; nothing changed");
      continue;
    }
    spdlog::info("signal {}: stopping", sig);
    break;
  }
  for (auto& w : workers) w->stop();
  for (auto& t : threads) t.join();
  {
    std::lock_guard lk(mu);
    stopping = true;
  }
  cv.notify_all();
  gc.join();
  workers.clear();
  status->reset();
  vip->reset();
  dp->reset();
  spdlog::info("front-end stopped; VIP and datapath removed");
  return 0;
}

}  // namespace tcpha::fe
