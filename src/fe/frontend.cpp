#include "fe/frontend.hpp"
#include "common/access_log.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include "common/clock.hpp"
#include "datapath/datapath.hpp"
#include "datapath/flow_gc.hpp"
#include "fe/membership.hpp"
#include "fe/standby.hpp"
#include "fe/takeover.hpp"
#include "fe/worker.hpp"
#include "host/host.hpp"
#include "metrics/endpoint.hpp"
#include "metrics/registry.hpp"
#include "status/status_socket.hpp"

namespace tcpha::fe {
namespace {

using metrics::latency_json;

constexpr auto kFeCounters =
    std::to_array<metrics::CounterInfo>({TCPHA_FE_COUNTERS(TCPHA_METRICS_COUNTER)});
constexpr auto kDpCounters =
    std::to_array<metrics::CounterInfo>({TCPHA_DP_COUNTERS(TCPHA_METRICS_COUNTER)});

// The FE's latency histograms, declared once: status shows them under `json` (in
// microseconds), Prometheus as tcpha_fe_<prom>_seconds.
struct LatencyInfo {
  const char* json;
  const char* prom;
  const char* help;
  LatencyHistogram Shared::*hist;
};
constexpr LatencyInfo kLatencies[] = {
    // The BE serves from its import on, so the client's wait ends between the first part
    // and READY (the BE's takeover_latency); the whole is the handoff's cost to the FE.
    {"handoff_latency_us", "handoff_latency", "request complete to COMMIT queued",
     &Shared::handoff_latency},
    // The key predates the lease protocol (there was a HOLD before the export); kept for
    // the scripts that read it.
    {"hold_export_send", "handoff_export", "request complete to FORWARD + export + HANDOFF queued",
     &Shared::export_latency},
    {"send_to_ready", "handoff_ready", "HANDOFF queued to READY received (the BE serving already)",
     &Shared::ready_latency},
    {"ready_to_commit", "handoff_commit", "READY received to COMMIT queued",
     &Shared::commit_latency},
};

// Per-back-end numbers, declared once: a field of each entry of status's
// "backends" and the Prometheus family tcpha_backend_<name> (with _total for
// counters), labelled by back-end.
struct BackendStat {
  const char* name;
  const char* help;
  bool counter;
  double (*get)(const BackendState&);
};
constexpr BackendStat kBackendStats[] = {
    {"handoffs", "connections handed off to the back-end", true,
     [](const BackendState& b) { return double(b.handoffs.load()); }},
    {"failures", "failed handoff attempts to the back-end", true,
     [](const BackendState& b) { return double(b.failures.load()); }},
    {"active", "handed-off connections not yet reported closed", false,
     [](const BackendState& b) { return double(b.active.load()); }},
    {"reported_active", "connections the back-end reports serving (heartbeat)", false,
     [](const BackendState& b) { return double(b.reported_active.load()); }},
    {"heartbeat_age_ms", "age of the newest heartbeat any worker saw, ms (-1: none)", false,
     [](const BackendState& b) { return double(b.heartbeat_age_ms.load()); }},
    {"cache_hit_rate", "the back-end's file cache hit rate (heartbeat)", false,
     [](const BackendState& b) { return b.cache_hit_permille.load() / 1000.0; }},
    {"cpu_load", "the back-end's CPU load, in CPUs (heartbeat)", false,
     [](const BackendState& b) { return b.cpu_permille.load() / 1000.0; }},
};

// Builds the snapshot a configuration becomes: router, back-end states, docroot.
Result<std::shared_ptr<const Snapshot>> make_snapshot(Shared& sh,
                                                      std::shared_ptr<const config::Config> cfg,
                                                      uint64_t generation) {
  auto snap = std::make_shared<Snapshot>();
  auto router = sched::Router::build(*cfg);
  if (!router) return router.error();
  snap->router = std::move(*router);
  for (const auto& b : cfg->backends) {
    BackendState* st = sh.backend(b.id);
    st->tunnel.store(b.tunnel() ? b.addr.s_addr : 0, std::memory_order_relaxed);
    // A tunnel BE's slot is complete without its link (no MAC to learn): filled now, so
    // that a standby taking over, or a restarted FE, forwards its flows before the links
    // are up. Slots follow the file's order, the same in every FE process.
    if (sh.dp && b.tunnel() && st->uid < TCPHA_MAX_BACKENDS)
      (void)sh.dp->set_backend(st->uid, Mac{}, false, b.addr.s_addr);
    snap->backends.push_back(st);
  }
  if (!cfg->frontend.docroot.empty()) {
    snap->local_docroot.reset(open(cfg->frontend.docroot.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!snap->local_docroot.valid()) return sys_error("[frontend] docroot " + cfg->frontend.docroot);
  }
  snap->cfg = std::move(cfg);
  snap->generation = generation;
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

// What a reload may not change: these are bound into sockets, addresses and BPF.
std::string restart_only_change(const config::Config& a, const config::Config& b) {
  if (a.cluster.vip != b.cluster.vip) return "[cluster] vip";
  if (a.cluster.vip6 != b.cluster.vip6) return "[cluster] vip6";
  if (a.cluster.ports != b.cluster.ports) return "[cluster] ports";
  if (a.cluster.control_port != b.cluster.control_port) return "[cluster] control_port";
  if (a.cluster.key != b.cluster.key) return "[cluster] key_file contents";
  if (a.frontend.id != b.frontend.id) return "[frontend] id";
  if (a.frontend.interface != b.frontend.interface) return "[frontend] interface";
  if (a.frontend.address != b.frontend.address) return "[frontend] address";
  if (a.frontend.workers != b.frontend.workers) return "[frontend] workers";
  if (a.frontend.max_flows != b.frontend.max_flows) return "[frontend] max_flows";
  return "";
}

class Frontend {
 public:
  Frontend(const config::Config& boot, Shared& sh,
           const std::vector<std::unique_ptr<Worker>>& workers)
      : path_(boot.path), sh_(sh), workers_(workers),
        file_cfg_(std::make_shared<const config::Config>(boot)) {}

  // SIGHUP: re-read the cluster file; a bad one leaves everything as it was.
  void reload() {
    // Log rotation: the access log is reopened on every SIGHUP, whatever the file says.
    sh_.access_log.store(open_access_log(file_cfg_->frontend.access_log));
    auto r = config::load(path_);
    if (!r.config) {
      for (auto& e : r.errors) spdlog::error("reload refused: {}", e);
      sh_.counters.inc(Counter::reload_failures);
      return;
    }
    if (auto what = restart_only_change(*file_cfg_, *r.config); !what.empty()) {
      spdlog::error("reload refused: {} changed, which needs a restart; old configuration kept",
                    what);
      sh_.counters.inc(Counter::reload_failures);
      return;
    }
    std::lock_guard lk(mu_);
    auto previous = file_cfg_;
    file_cfg_ = std::make_shared<const config::Config>(std::move(*r.config));
    if (!publish_locked()) {
      file_cfg_ = previous;
      sh_.counters.inc(Counter::reload_failures);
      return;
    }
    if (file_cfg_->frontend.access_log != previous->frontend.access_log)
      sh_.access_log.store(open_access_log(file_cfg_->frontend.access_log));
    sh_.counters.inc(Counter::reloads);
  }

  // A back-end registered itself (JOIN) on a link from `peer`. One the file lists must
  // come from its listed address and is only taken back from its own LEAVE (an
  // operator's drain stays). Returns why the JOIN is refused, or "".
  std::string join(const proto::JoinMsg& j, in_addr peer) {
    std::lock_guard lk(mu_);
    if (const auto* listed = file_cfg_->find_backend(j.id)) {
      if (listed->addr.s_addr != peer.s_addr)
        return j.id + " is listed at " + listed->address + ", the link comes from " + ipv4_str(peer);
      sh_.backend(j.id)->leaving.store(false);
      spdlog::info("{} registered (listed in the cluster file)", j.id);
      return "";
    }
    std::string why = validate_join(j, peer);
    if (!why.empty()) {
      spdlog::warn("JOIN from {} refused: {}", j.id, why);
      return why;
    }
    config::BackendSection b;
    b.id = j.id;
    b.addr.s_addr = j.address;
    b.address = ipv4_str(b.addr);
    b.weight = j.weight;
    b.groups = j.groups;
    b.docroot = "(dynamic)";
    b.forward = file_cfg_->cluster.forward;
    auto previous = dynamic_;
    dynamic_[j.id] = b;
    sh_.backend(j.id)->leaving.store(false);
    if (!publish_locked()) {
      dynamic_ = previous;
      return "configuration refused";
    }
    spdlog::info("{} joined at {} (groups {})", j.id, b.address, fmt::join(b.groups, ","));
    return "";
  }

  // LEAVE: no new handoffs; its connections finish. Separate from an operator's drain,
  // so that the BE's next JOIN undoes this and only this.
  void leave(const std::string& id) {
    sh_.backend(id)->leaving.store(true);
    spdlog::info("{} is leaving: drained", id);
  }

  // The registration link closed: a dynamic back-end is gone for good.
  void gone(const std::string& id) {
    std::lock_guard lk(mu_);
    if (!dynamic_.erase(id)) return;
    publish_locked();
    spdlog::info("{} left the cluster", id);
  }

  // The Prometheus view of the same numbers as status().
  std::string prometheus(size_t flows) {
    metrics::Exposition e;
    metrics::add_counters(e, "tcpha_fe_", kFeCounters, metrics::snapshot(sh_.counters.v));
    metrics::add_counters(e, "tcpha_datapath_", kDpCounters, sh_.dp->counters());
    e.gauge("tcpha_fe_flows", "flows in the datapath table", double(flows));
    e.gauge("tcpha_fe_local_active", "connections the front-end serves itself",
            double(sh_.local_active.load()));
    for (const auto& h : kLatencies)
      e.histogram(std::string("tcpha_fe_") + h.prom + "_seconds", h.help, sh_.*h.hist);
    auto snap = sh_.snapshot.load();
    for (const BackendState* b : snap->backends) {
      metrics::Labels l{{"backend", b->id}};
      e.gauge("tcpha_backend_up", "1 when every worker has a live link to the back-end",
              sh_.state_of(*b) == "up" ? 1 : 0, l);
      for (const auto& st : kBackendStats) {
        std::string name = std::string("tcpha_backend_") + st.name;
        if (st.counter)
          e.counter(name + "_total", st.help, uint64_t(st.get(*b)), l);
        else
          e.gauge(name, st.help, st.get(*b), l);
      }
    }
    return e.str();
  }

  void set_standby(const Standby* s) { standby_ = s; }

  bool is_dynamic(const std::string& id) {
    std::lock_guard lk(mu_);
    return dynamic_.count(id) != 0;
  }

 private:
  std::string validate_join(const proto::JoinMsg& j, in_addr peer) const {
    if (j.id.empty() || j.id.size() > 31 ||
        j.id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
            std::string::npos)
      return "bad id";
    if (j.id == file_cfg_->frontend.id) return "id is the front-end's";
    if (j.address == 0 || j.address == file_cfg_->cluster.vip_addr.s_addr) return "bad address";
    if (j.address != peer.s_addr)
      return "address " + ipv4_str(j.address) + " is not the link's source " + ipv4_str(peer);
    for (const auto& b : file_cfg_->backends)
      if (b.addr.s_addr == j.address) return "address already used by " + b.id;
    for (const auto& [id, b] : dynamic_)
      if (id != j.id && b.addr.s_addr == j.address) return "address already used by " + id;
    if (j.weight < 1 || j.weight > 1000) return "weight out of 1..1000";
    if (j.groups.empty()) return "no groups";
    for (const auto& g : j.groups)
      if (g.empty()) return "empty group name";
    return "";
  }

  // Builds and publishes the snapshot of the file's configuration plus the dynamic
  // back-ends. Caller holds mu_.
  bool publish_locked() {
    auto cfg = std::make_shared<config::Config>(*file_cfg_);
    for (auto& [id, b] : dynamic_)
      if (!cfg->find_backend(id)) cfg->backends.push_back(b);
    uint64_t gen = sh_.snapshot.load()->generation + 1;
    auto snap = make_snapshot(sh_, std::move(cfg), gen);
    if (!snap) {
      spdlog::error("configuration refused: {}", snap.error().message());
      return false;
    }
    sh_.snapshot.store(*snap);
    sh_.generation.store(gen, std::memory_order_release);
    for (auto& w : workers_) w->wake();
    spdlog::info("configuration generation {}: {} back-ends ({} dynamic), {} rules", gen,
                 (*snap)->cfg->backends.size(), dynamic_.size(), (*snap)->router->rule_count());
    return true;
  }

 public:
  std::string command(const std::string& cmd, size_t flows) {
    using nlohmann::json;
    if (cmd.empty() || cmd == "status") return status(flows).dump();
    for (const char* verb : {"drain ", "undrain "}) {
      if (cmd.rfind(verb, 0) != 0) continue;
      std::string id = cmd.substr(std::strlen(verb));
      auto snap = sh_.snapshot.load();
      for (BackendState* b : snap->backends) {
        if (b->id != id) continue;
        b->drained.store(verb[0] == 'd');
        spdlog::info("{} {}", verb[0] == 'd' ? "draining" : "undraining", id);
        return json{{"ok", true}, {"id", id}, {"state", sh_.state_of(*b)}}.dump();
      }
      return json{{"ok", false}, {"error", "no backend '" + id + "'"}}.dump();
    }
    return json{{"ok", false}, {"error", "unknown command '" + cmd + "'"}}.dump();
  }

  nlohmann::json status(size_t flows) {
    using nlohmann::json;
    std::lock_guard lk(mu_);
    auto snap = sh_.snapshot.load();
    json bes = json::array();
    for (size_t i = 0; i < snap->backends.size(); ++i) {
      const BackendState& b = *snap->backends[i];
      const auto& c = snap->cfg->backends[i];
      uint64_t mac = b.mac.load();
      json be = {{"id", b.id},
                 {"address", c.address},
                 {"state", sh_.state_of(b)},
                 {"weight", c.weight},
                 {"groups", c.groups},
                 {"dynamic", dynamic_.count(b.id) != 0},
                 {"mac", mac ? mac_str(BackendState::unpack(mac)) : ""}};
      for (const auto& st : kBackendStats) {
        const double v = st.get(b);
        if (double(int64_t(v)) == v)
          be[st.name] = int64_t(v);  // counts stay integers in JSON
        else
          be[st.name] = v;
      }
      bes.push_back(std::move(be));
    }
    json counters = metrics::counters_json(kFeCounters, metrics::snapshot(sh_.counters.v));
    // The first histogram is the whole handoff; the others are its parts.
    json breakdown = json::object();
    for (size_t i = 1; i < std::size(kLatencies); ++i)
      breakdown[kLatencies[i].json] = latency_json(sh_.*kLatencies[i].hist);
    json dp = metrics::counters_json(kDpCounters, sh_.dp->counters());
    // Failover (docs/failover.md): the last BE failed over, when, how long it had been
    // silent then, and how its connections fared; recovery_ms runs from the detection
    // to the last backup's answer.
    json failover = {{"mode", snap->cfg->cluster.failover ? "ring" : "off"},
                     {"backups", sh_.counters.get(Counter::backups)},
                     {"failovers", sh_.counters.get(Counter::failovers)},
                     {"taken_over", sh_.counters.get(Counter::taken_over)},
                     {"lost", sh_.counters.get(Counter::takeover_lost)}};
    {
      std::lock_guard flk(sh_.failover_mu);
      json history = json::array();
      for (const auto& l : sh_.failovers)
        history.push_back({{"backend", l.backend},
                           {"at_unix_ms", l.at_unix_ms},
                           {"silent_ms", l.silent_ms},
                           {"recovered", l.recovered},
                           {"lost", l.lost},
                           {"recovery_ms", l.last_taken_ns > l.at_ns
                                               ? double(l.last_taken_ns - l.at_ns) / 1e6
                                               : 0.0}});
      if (!history.empty()) {
        failover["last"] = history.back();
        failover["history"] = std::move(history);  // the last 8, oldest first
      }
    }
    json out = {{"role", "fe"},
            {"id", snap->cfg->frontend.id},
            {"vip", snap->cfg->cluster.vip},
            {"vip6", snap->cfg->cluster.vip6},
            {"workers", sh_.workers},
            {"generation", snap->generation},
            {"backends", bes},
            {"local_active", sh_.local_active.load()},
            {"handoffs",
             {{"ok", sh_.counters.get(Counter::handoff_ok)},
              {"failed", sh_.counters.get(Counter::handoff_failed)}}},
            {"flows", flows},
            {"adoption",
             {{"source", sh_.dp->adoption().source.empty() ? "none" : sh_.dp->adoption().source},
              {"flows", sh_.dp->adoption().flows},
              {"refused", sh_.dp->adoption().refused}}},
            {"pid", int64_t(getpid())},
            {kLatencies[0].json, latency_json(sh_.*kLatencies[0].hist)},
            {"handoff_breakdown_us", breakdown},
            {"failover", failover},
            {"counters", counters},
            {"datapath", dp}};
    if (standby_) out["standby"] = standby_->status();
    return out;
  }

 private:
  std::string path_;
  Shared& sh_;
  const std::vector<std::unique_ptr<Worker>>& workers_;
  std::mutex mu_;
  std::shared_ptr<const config::Config> file_cfg_;
  std::map<std::string, config::BackendSection> dynamic_;
  const Standby* standby_ = nullptr;
};


// The front-end daemon. Its members are what it set up on the host and in the
// process, declared in the order they are set up, so that destruction (the reverse
// order) tears down correctly on every path, early failures included: worker threads
// stop first, then the flow GC, the listeners for BEs and operators, the workers'
// sockets, and last the VIP and the datapath.
class Daemon {
 public:
  explicit Daemon(const config::Config& boot) : boot_(boot) {}
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Sets everything up; 0, or the exit status to fail with (INTERFACE.md). takeover:
  // from the FE running with the same status socket (takeover.hpp).
  int start(const std::string& status_socket, bool takeover);
  // Until SIGINT/SIGTERM or a successor's READY; SIGHUP reloads. The signals must be
  // blocked in every thread.
  enum class Outcome { Stop, HandedOver };
  Outcome run(const sigset_t& sigs);
  // After run(): a stop lets the handed-off connections finish (stop_timeout_s), a
  // handover the handoffs under way; then the destructor removes what is still ours.
  void finish(Outcome how, const sigset_t& sigs);
  // start() failed after the datapath was adopted (a restart or a takeover): what it
  // adopted goes on forwarding for the running FE or the next attempt, not torn down.
  void abandon() {
    if (!dp_ || (!taking_over_ && dp_->adoption().source.empty())) return;
    dp_->release();
    if (vip_) vip_->release();
    if (vip6_) vip6_->release();
    if (forwarding_) forwarding_->release();
    spdlog::warn("start failed: the adopted datapath and the VIP are left running");
  }

 private:
  void serve_successor();
  bool successor_ready();
  int activate();
  void announce_vip();
  static constexpr uint64_t kGarpGapNs = 300'000'000;
  size_t in_progress() const {
    size_t n = 0;
    for (const auto& w : workers_) n += w->in_progress();
    return n;
  }
  Status start_metrics();
  // Stops the workers and joins their threads before anything they use goes away.
  struct Threads {
    explicit Threads(std::vector<std::unique_ptr<Worker>>& w) : workers(w) {
      for (auto& wk : workers) threads.emplace_back([&wk] { wk->run(); });
    }
    std::vector<std::unique_ptr<Worker>>& workers;
    std::vector<std::thread> threads;
    ~Threads() {
      for (auto& w : workers) w->stop();
      for (auto& t : threads) t.join();
    }
  };

  const config::Config& boot_;
  std::unique_ptr<datapath::Datapath> dp_;
  // With [[standby]] front-ends. Out of the set-up order: the status server's thread
  // reads it (Frontend::status), so it must outlive status_, and it writes to dp_.
  std::unique_ptr<Standby> standby_;
  std::unique_ptr<host::AddressGuard> vip_;
  std::unique_ptr<host::AddressGuard> vip6_;  // [cluster] vip6, when set
  std::unique_ptr<host::SysctlGuard> forwarding_;  // tunnel back-ends only
  Shared sh_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<Frontend> fe_;
  std::atomic<size_t> flows_{0};
  std::unique_ptr<status::Server> status_;
  std::unique_ptr<metrics::Endpoint> metrics_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<datapath::FlowGcThread> gc_;
  std::unique_ptr<Threads> threads_;
  int garp_left_ = 0;  // gratuitous ARPs (and IPv6 advertisements) still to send after taking over
  uint64_t next_garp_ = 0;
  takeover::Listener takeover_;
  takeover::Session handed_;  // what --takeover received, until activate() uses it
  std::string status_socket_;
  bool taking_over_ = false;
  UniqueFd successor_;  // a new FE process taking over, until its READY
  UniqueFd signals_;    // signalfd
};

int Daemon::start(const std::string& status_socket, bool takeover) {
  const auto& f = boot_.frontend;
  status_socket_ = status_socket;
  const bool standbys = boot_.fe_members.size() > 1;
  if (takeover && standbys) {
    spdlog::error("--takeover with [[standby]] front-ends is not supported yet (docs/fe-restart.md)");
    return 2;
  }
  // An upgrade: the running FE's listening sockets first (they keep their accept
  // queues); its datapath is adopted below like a crashed one's.
  if (takeover) {
    auto s = takeover::request(takeover::socket_path(status_socket));
    if (!s) {
      spdlog::error("--takeover: {}", s.error().message());
      return 2;
    }
    handed_ = std::move(*s);
    taking_over_ = true;
    spdlog::info("takeover: {} sockets handed over by the running front-end", handed_.fds.size());
  }
  auto fe_mac = host::interface_mac(f.interface);
  if (!fe_mac) {
    spdlog::error("interface {}: {}", f.interface, fe_mac.error().message());
    return 2;
  }
  // A datapath a crashed, killed or upgraded FE left running keeps forwarding its
  // connections; we adopt its flows (docs/fe-restart.md).
  datapath::AttachOptions dopts;
  dopts.max_flows = f.max_flows;
  dopts.adopt = true;
  dopts.pin_dir = datapath::default_pin_dir(f.id);
  auto dp = datapath::Datapath::attach(f.interface, dopts);
  if (!dp) {
    spdlog::error("datapath on {}: {} (needs root, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN, and tc clsact)",
                  f.interface, dp.error().message());
    return 2;
  }
  dp_ = std::move(*dp);
  flows_.store(dp_->adoption().flows);  // until the flow GC's first sweep counts them
  if (const auto& a = dp_->adoption(); !a.source.empty())
    spdlog::info("datapath: adopted {} flows from the {} datapath a previous front-end left",
                 a.flows, a.source);
  else if (!a.refused.empty())
    spdlog::warn("datapath: {}; its connections are lost", a.refused);

  // Tunnel back-ends (docs/tunnel.md): packets to them leave from our address, and the
  // MSS we advertise leaves room for the outer header, so that a client's full-size
  // segment still fits the interface's MTU once encapsulated. Set when the cluster's
  // default is the tunnel too: back-ends that join at run time take that default.
  if (Status s = dp_->set_tunnel_source(f.addr.s_addr); !s) {
    spdlog::error("{}", s.error().message());
    return 2;
  }
  if (boot_.cluster.forward == "tunnel" ||
      std::any_of(boot_.backends.begin(), boot_.backends.end(), [](const auto& b) { return b.tunnel(); })) {
    auto mtu = host::interface_mtu(f.interface);
    if (!mtu) {
      spdlog::error("interface {}: {}", f.interface, mtu.error().message());
      return 2;
    }
    // The datapath finds a tunnel packet's next hop with bpf_fib_lookup(), which
    // answers only for an interface that forwards IPv4 (restored on exit).
    auto fwd = host::SysctlGuard::set("net.ipv4.conf." + f.interface + ".forwarding", "1");
    if (!fwd) {
      spdlog::error("{}", fwd.error().message());
      return 2;
    }
    forwarding_ = std::move(*fwd);
    sh_.tunnel_mss4 = uint16_t(*mtu - kTunnelOverhead - 40);  // IPv4 + TCP headers
    sh_.tunnel_mss6 = uint16_t(*mtu - kTunnelOverhead - 60);  // IPv6 + TCP headers
    spdlog::info("tunnel: advertised MSS {} (IPv4 clients), {} (IPv6) for an MTU of {}",
                 sh_.tunnel_mss4, sh_.tunnel_mss6, *mtu);
  }
  sh_.boot = &boot_;
  sh_.dp = dp_.get();
  auto copies = datapath::CopyReader::open(*dp_);
  if (!copies) {
    spdlog::error("datapath: {}", copies.error().message());
    return 2;
  }
  sh_.copies.emplace(std::move(*copies));
  sh_.fe_mac = *fe_mac;
  sh_.workers = f.workers ? f.workers : uint32_t(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  auto snap = make_snapshot(sh_, std::make_shared<const config::Config>(boot_), 1);
  if (!snap) {
    spdlog::error("{}", snap.error().message());
    return 1;
  }
  sh_.snapshot.store(*snap);
  sh_.generation.store(1);
  sh_.access_log.store(open_access_log(f.access_log));
  fe_ = std::make_unique<Frontend>(boot_, sh_, workers_);

  auto status = status::Server::start(
      status_socket, [this](const std::string& cmd) { return fe_->command(cmd, flows_.load()); },
      takeover);
  if (!status) {
    spdlog::error("status socket: {}", status.error().message());
    return 2;
  }
  status_ = std::move(*status);

  // Ages flows out of the datapath table (datapath/flow_gc.hpp): closed ones after
  // the linger, idle ones, and holds a crashed handoff left behind.
  gc_ = std::make_unique<datapath::FlowGcThread>(
      *dp_,
      [this] {
        const uint64_t ms = 1'000'000;
        const auto& cf = sh_.snapshot.load()->cfg->frontend;
        return datapath::FlowLimits{cf.flow_linger_ms * ms, uint64_t(cf.flow_idle_s) * 1000 * ms,
                                    (2ull * cf.handoff_timeout_ms + 1000) * ms};
      },
      [this](const datapath::GcStats& st) { flows_.store(st.live); });

  if (!standbys) return activate();
  // Hot standby (standby.hpp): serve only once this front-end is the active one. A
  // standby holds no VIP (only the active one answers ARP for it): one left here by
  // our own crash goes.
  if (auto on = host::interface_of(boot_.cluster.vip_addr); on && *on == f.interface) {
    auto leftover = host::AddressGuard::add(f.interface, boot_.cluster.vip_addr);
    if (leftover) (*leftover)->adopt();  // there already: removed as it goes out of scope
    spdlog::info("{} removed from {}: a standby holds no VIP", boot_.cluster.vip, f.interface);
  }
  if (const auto& v6 = boot_.cluster.vip6_addr)
    if (auto on = host::interface_of(*v6); on && *on == f.interface) {
      auto leftover = host::AddressGuard::add(f.interface, *v6);
      if (leftover) (*leftover)->adopt();
      spdlog::info("{} removed from {}: a standby holds no VIP", boot_.cluster.vip6, f.interface);
    }
  auto sb = Standby::start(boot_, *dp_, *fe_mac);
  if (!sb) {
    spdlog::error("{}", sb.error().message());
    return 2;
  }
  standby_ = std::move(*sb);
  fe_->set_standby(standby_.get());
  spdlog::info("front-end {} on {}: waiting for its role ({} front-ends in the file)", f.id,
               f.interface, boot_.fe_members.size());
  return 0;
}

// This front-end serves: the VIP, the listeners and workers, the registration port.
int Daemon::activate() {
  const auto& f = boot_.frontend;
  auto vip = host::AddressGuard::add(f.interface, boot_.cluster.vip_addr);
  if (!vip) {
    spdlog::error("{}", vip.error().message());
    return 2;
  }
  vip_ = std::move(*vip);
  // Left by the FE whose datapath we adopted: ours to remove on exit now.
  if ((taking_over_ || !dp_->adoption().source.empty()) && !vip_->added()) {
    vip_->adopt();
    spdlog::info("{} was left by the previous front-end: removed on exit after all",
                 boot_.cluster.vip);
  }
  // The IPv6 VIP beside it (docs/ipv6.md): added without duplicate address detection,
  // so that the kernel answers neighbour solicitations for it on this interface at once.
  if (const auto& v6 = boot_.cluster.vip6_addr) {
    auto g = host::AddressGuard::add(f.interface, *v6);
    if (!g) {
      spdlog::error("{}", g.error().message());
      return 2;
    }
    vip6_ = std::move(*g);
    if ((taking_over_ || !dp_->adoption().source.empty()) && !vip6_->added()) vip6_->adopt();
  }
  // The handed-over listeners are dealt out to the workers; a worker without one for a
  // port binds its own (SO_REUSEPORT joins the same group).
  std::vector<std::vector<UniqueFd>> given(sh_.workers);
  UniqueFd registration;
  size_t dealt = 0;
  for (auto& h : handed_.fds) {
    if (h.what.rfind("listen ", 0) == 0)
      given[dealt++ % sh_.workers].push_back(std::move(h.fd));
    else if (h.what == "registration")
      registration = std::move(h.fd);
  }
  for (uint32_t i = 0; i < sh_.workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(sh_, i));
    if (auto s = workers_.back()->open_listeners(std::move(given[i])); !s) {
      spdlog::error("{}", s.error().message());
      return 2;
    }
  }
  if (Status s = start_metrics(); !s) {
    spdlog::error("metrics endpoint {}: {}", f.metrics, s.error().message());
    return 2;
  }
  auto membership = Membership::start(
      boot_, {[this](const proto::JoinMsg& j, in_addr peer) { return fe_->join(j, peer); },
              [this](const std::string& id) { fe_->leave(id); },
              [this](const std::string& id) { fe_->gone(id); }},
      std::move(registration));
  if (!membership) {
    spdlog::error("registration listener: {}", membership.error().message());
    return 2;
  }
  membership_ = std::move(*membership);

  threads_ = std::make_unique<Threads>(workers_);
  // Where the next upgrade asks for our sockets (takeover.hpp).
  auto tl = takeover::Listener::open(takeover::socket_path(status_socket_));
  if (tl)
    takeover_ = std::move(*tl);
  else
    spdlog::warn("takeover socket: {}: no upgrade can take over from this process",
                 tl.error().message());
  spdlog::info("front-end {} on {} VIP {} ports {}, {} workers, {} back-ends", f.id, f.interface,
               boot_.cluster.vip + (boot_.cluster.vip6.empty() ? "" : " and " + boot_.cluster.vip6),
               fmt::join(boot_.cluster.ports, ","), sh_.workers, boot_.backends.size());
  if (standby_) {
    standby_->activated();
    announce_vip();
    garp_left_ = 3;  // and again from run(): a neighbour may miss one
    next_garp_ = monotonic_ns() + kGarpGapNs;
  }
  if (taking_over_) {
    if (Status s = takeover::say_ready(handed_.conn.get()); !s)
      spdlog::warn("{}", s.error().message());  // it goes on anyway: both serve until it sees
    spdlog::info("takeover: serving; the previous front-end finishes its handoffs and exits");
    handed_ = {};
  }
  return 0;
}

void Daemon::announce_vip() {
  if (Status s = host::send_gratuitous_arp(boot_.frontend.interface, boot_.cluster.vip_addr,
                                           sh_.fe_mac);
      !s)
    spdlog::warn("{}", s.error().message());
  // The IPv6 VIP's neighbours learn the move the same way (docs/ipv6.md).
  if (const auto& v6 = boot_.cluster.vip6_addr)
    if (Status s = host::send_unsolicited_na(boot_.frontend.interface, *v6, sh_.fe_mac); !s)
      spdlog::warn("{}", s.error().message());
}

Status Daemon::start_metrics() {
  const auto& f = boot_.frontend;
  if (f.metrics.empty()) return {};
  auto m = metrics::Endpoint::start(
      f.metrics, [this] { return fe_->prometheus(flows_.load()); }, f.metrics_allow);
  if (!m) return m.error();
  metrics_ = std::move(*m);
  return {};
}

// A new FE process asks for our sockets. The metrics port is not handed over: ours
// closes so that the successor can bind it (and opens again if the successor fails).
void Daemon::serve_successor() {
  UniqueFd c = takeover_.accept_successor();
  if (!c.valid()) return;
  if (successor_.valid()) {
    spdlog::warn("takeover: a second successor while one is starting: refused");
    return;
  }
  std::vector<std::pair<std::string, int>> fds;
  for (const auto& w : workers_)
    for (int fd : w->listener_fds()) {
      sockaddr_storage a{};
      socklen_t len = sizeof a;
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
      auto ep = Endpoint::of(a, len);  // the successor reads it back itself (ListenSocket::adopt)
      fds.push_back({"listen " + (ep ? ep->str() : std::string("?")), fd});
    }
  if (membership_ && membership_->listener_fd() >= 0)
    fds.push_back({"registration", membership_->listener_fd()});
  metrics_.reset();
  if (Status s = takeover::send(c.get(), fds); !s) {
    spdlog::warn("{}", s.error().message());
    (void)start_metrics();
    return;
  }
  spdlog::info("takeover: {} sockets handed to a new front-end process; waiting for it to serve",
               fds.size());
  successor_ = std::move(c);
}

// The successor spoke: READY, or it went away (it failed: we carry on as before).
bool Daemon::successor_ready() {
  const bool ready = takeover::wait_ready(successor_.get(), 0);
  successor_.reset();
  if (!ready) {
    spdlog::warn("takeover: the new front-end process failed before serving; carrying on");
    if (Status s = start_metrics(); !s) spdlog::warn("metrics endpoint: {}", s.error().message());
  }
  return ready;
}

Daemon::Outcome Daemon::run(const sigset_t& sigs) {
  signals_.reset(signalfd(-1, &sigs, SFD_CLOEXEC));
  for (;;) {
    pollfd p[4] = {{signals_.get(), POLLIN, 0},
                   {takeover_.fd(), POLLIN, 0},
                   {successor_.get(), POLLIN, 0},
                   {standby_ && !standby_->active() ? standby_->promote_fd() : -1, POLLIN, 0}};
    const int wait_ms = garp_left_ > 0 ? 50 : -1;
    if (poll(p, 4, wait_ms) < 0) continue;
    if (p[3].revents & POLLIN) {
      // The active front-end is gone (or there is none): this one serves now.
      const uint64_t t0 = monotonic_ns();
      if (int rc = activate(); rc != 0) {
        spdlog::error("could not become the active front-end: stopping");
        return Outcome::Stop;
      }
      spdlog::info("active front-end now ({:.1f} ms to take over)", double(monotonic_ns() - t0) / 1e6);
    }
    if (garp_left_ > 0 && monotonic_ns() >= next_garp_) {
      announce_vip();
      --garp_left_;
      next_garp_ = monotonic_ns() + kGarpGapNs;
    }
    if (p[0].revents & POLLIN) {
      signalfd_siginfo si{};
      if (read(signals_.get(), &si, sizeof si) == sizeof si) {
        if (si.ssi_signo != SIGHUP) {
          spdlog::info("signal {}: stopping", si.ssi_signo);
          return Outcome::Stop;
        }
        fe_->reload();
      }
    }
    if (p[1].revents & POLLIN) serve_successor();
    if (successor_.valid() && (p[2].revents & (POLLIN | POLLHUP | POLLERR)) && successor_ready())
      return Outcome::HandedOver;
  }
}

void Daemon::finish(Outcome how, const sigset_t&) {
  for (auto& w : workers_) w->stop_accepting();
  // A standby that stops while the active one serves has no connection of its own to
  // wait for: its table is a copy.
  if (standby_ && !standby_->active()) return;
  const auto& f = sh_.snapshot.load()->cfg->frontend;
  auto second_signal = [this](int timeout_ms) {
    pollfd p{signals_.get(), POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    signalfd_siginfo si{};
    return read(signals_.get(), &si, sizeof si) == sizeof si && si.ssi_signo != SIGHUP;
  };
  const uint64_t start = monotonic_ns();
  if (how == Outcome::HandedOver) {
    // The successor serves; everything we set up on the host is its now.
    membership_.reset();
    status_->release();
    takeover_.release();
    dp_->release();
    vip_->release();
    if (vip6_) vip6_->release();
    if (forwarding_) forwarding_->release();
    // Handoffs under way finish here (their links and repaired sockets are ours); a
    // client still sending its request head has header_timeout_ms.
    const uint64_t limit = (uint64_t(f.header_timeout_ms) + 2ull * f.handoff_timeout_ms + 1000) * 1'000'000;
    while (in_progress() > 0 && monotonic_ns() - start < limit) second_signal(20);
    spdlog::info("takeover: done ({} connections still in progress), exiting", in_progress());
    return;
  }
  // A stop: handed-off connections go on being forwarded until they close, for
  // stop_timeout_s at most; a second signal ends the wait.
  const uint64_t limit = uint64_t(f.stop_timeout_s) * 1'000'000'000;
  uint64_t open = dp_->count_open_flows();
  if (open == 0 || limit == 0) return;
  spdlog::info("stopping: {} handed-off connections still open; forwarding them for up to {} s "
               "(a second signal stops at once)", open, f.stop_timeout_s);
  while (open > 0 && monotonic_ns() - start < limit) {
    if (second_signal(200)) {
      spdlog::info("second signal: stopping now");
      break;
    }
    open = dp_->count_open_flows();
  }
  if (open) spdlog::warn("stopping with {} handed-off connections still open: they are cut", open);
}

}  // namespace

int run_frontend(const config::Config& boot, const std::string& status_socket, bool takeover) {
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before any thread starts
  Daemon::Outcome how;
  {
    Daemon d(boot);
    if (int rc = d.start(status_socket, takeover); rc != 0) {
      d.abandon();
      return rc;
    }
    how = d.run(sigs);
    d.finish(how, sigs);
  }
  if (how == Daemon::Outcome::HandedOver)
    spdlog::info("front-end handed over to its successor; VIP and datapath left to it");
  else
    spdlog::info("front-end stopped; VIP and datapath removed");
  return 0;
}

}  // namespace tcpha::fe
