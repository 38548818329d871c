#include "be/agent.hpp"
#include "common/clock.hpp"
#include "common/io.hpp"
#include "be/registration.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <fstream>
#include <sstream>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "be/relay.hpp"
#include "common/fd.hpp"
#include "common/histogram.hpp"
#include "common/net.hpp"
#include "handoff/tcp_state.hpp"
#include "host/host.hpp"
#include "http/request.hpp"
#include "http/static_files.hpp"
#include "metrics/endpoint.hpp"
#include "metrics/registry.hpp"
#include "proto/control.hpp"
#include "serve/static_session.hpp"
#include "status/status_socket.hpp"

namespace tcpha::be {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kKeepAliveIdleNs = 60'000 * kMs;  // idle keep-alive connections close
constexpr uint64_t kDrainTimeoutNs = 30'000 * kMs;  // SIGTERM waits this long for connections
// Relayed connections: longer than common servers' keep-alive and send timeouts, so
// the server's own timeouts normally decide; this reaps connections whose peer vanished.
constexpr uint64_t kRelayIdleNs = 300'000 * kMs;

#define TCPHA_BE_COUNTERS(X)                                                  \
  X(imported, "connections imported and committed")                          \
  X(import_failed, "HANDOFFs refused because the import failed")              \
  X(aborted, "imports dropped on ABORT, timeout or control link loss")        \
  X(requests, "HTTP requests answered")                                       \
  X(bad_requests, "requests refused as malformed or too large")               \
  X(bytes_sent, "response bytes sent (heads and bodies)")                     \
  X(ctl_accepted, "control connections accepted")                             \
  X(ctl_bad_frames, "control frames that failed authentication or parsing")

constexpr auto kBeCounters =
    std::to_array<metrics::CounterInfo>({TCPHA_BE_COUNTERS(TCPHA_METRICS_COUNTER)});

enum class Counter {
#define TCPHA_X(name, help) name,
  TCPHA_BE_COUNTERS(TCPHA_X)
#undef TCPHA_X
      count
};

struct Item {
  enum Kind { Listener, Control, Http, Signal } kind;  // relayed sockets: Relays::owns()
  explicit Item(Kind k) : kind(k) {}
};

struct ControlConn : Item {
  ControlConn(uint64_t id_, const std::array<uint8_t, 32>& key, const std::string& self)
      : Item(Control), id(id_), session(key, proto::Role::Be, self) {}
  uint64_t id;
  UniqueFd fd;
  proto::Session session;
  std::string in, out;
  bool want_out = false;
};

// A handed-off connection, imported and held in repair mode until COMMIT.
struct PendingImport {
  UniqueFd fd;
  uint64_t deadline;
};

// A handed-off connection served by the built-in static server.
struct HttpConn : Item {
  HttpConn(int docroot, serve::FileCache* cache) : Item(Http), session(docroot, "tcpha", cache) {}
  UniqueFd fd;
  uint64_t handoff_id = 0;
  uint64_t control_id = 0;  // the control connection to report CLOSED on
  serve::StaticSession session;
  bool writing = false;     // epoll interest is EPOLLOUT
  uint64_t last_active = 0;
};

class Agent {
 public:
  Agent(const config::Config& cfg, const config::BackendSection& self)
      : cfg_(cfg), self_(self), ep_(epoll_create1(EPOLL_CLOEXEC)) {
    std::copy_n(cfg.cluster.key.begin(), key_.size(), key_.begin());
  }

  Status open(int sigfd);
  void run();
  std::string status_json() const;
  std::string prometheus() const;
  uint32_t cache_hit_permille() const;
  bool vip_sockets_sending() const;

 private:
  void set(int op, int fd, uint32_t ev, Item* it) {
    epoll_event e{};
    e.events = ev;
    e.data.ptr = it;
    if (epoll_ctl(ep_.get(), op, fd, &e) != 0 && op != EPOLL_CTL_DEL)
      spdlog::error("epoll_ctl: {}", strerror(errno));
  }
  void inc(Counter c, uint64_t n = 1) { counters_[size_t(c)].fetch_add(n, std::memory_order_relaxed); }
  void on_accept();
  void on_control(ControlConn& cc, uint32_t events);
  void on_message(ControlConn& cc, proto::Message& m);
  void drop_control(ControlConn& cc, const std::string& why);
  void flush(ControlConn& cc);
  void on_http(HttpConn& h, uint32_t events);
  void close_http(HttpConn& h);
  void report_closed(uint64_t control_id, uint64_t handoff_id, uint64_t sent, uint64_t received);
  void tick(uint64_t now);

  const config::Config& cfg_;
  const config::BackendSection& self_;
  std::array<uint8_t, 32> key_{};
  UniqueFd ep_, listener_, docroot_;
  std::unique_ptr<serve::FileCache> cache_;  // cache_mb > 0
  Item listener_item_{Item::Listener}, signal_item_{Item::Signal};
  // Upstream mode (self_.upstream set): relayed connections instead of HttpConns.
  std::unique_ptr<Relays> relays_;
  uint64_t next_control_id_ = 1;
  std::map<uint64_t, std::unique_ptr<ControlConn>> controls_;
  std::map<std::pair<uint64_t, uint64_t>, PendingImport> pending_;  // (control, handoff id)
  std::unordered_map<HttpConn*, std::unique_ptr<HttpConn>> conns_;
  std::array<std::atomic<uint64_t>, size_t(Counter::count)> counters_{};
  std::atomic<int64_t> active_{0};
  LatencyHistogram import_latency_;  // HANDOFF decoded -> READY sent
  std::atomic<size_t> control_links_{0};
  bool stop_ = false;
  uint64_t next_heartbeat_ = 0;
  // SIGTERM/SIGINT: stop taking work, let what runs finish (bounded), then exit.
  void begin_drain();
  std::function<void()> on_drain_;
  bool draining_ = false;
  int sigfd_ = -1;
  uint64_t drain_deadline_ = 0;

 public:
  void set_on_drain(std::function<void()> f) { on_drain_ = std::move(f); }
};

Status Agent::open(int sigfd) {
  if (!self_.upstream.empty()) {
    RelayOptions o;
    o.upstream = *parse_socket_address(self_.upstream);  // validated with the config
    o.proxy_protocol = self_.proxy_protocol;
    o.x_forwarded_for = self_.x_forwarded_for;
    o.limits.max_head = cfg_.frontend.max_header_bytes;  // the FE's limit on the first
    o.connect_timeout_ns = uint64_t(self_.upstream_timeout_ms) * kMs;
    o.idle_timeout_ns = kRelayIdleNs;
    auto r = Relays::create(
        o,
        [this](uint64_t control_id, uint64_t handoff_id, uint64_t sent, uint64_t received) {
          report_closed(control_id, handoff_id, sent, received);
          active_.fetch_sub(1);
        },
        ep_.get());
    if (!r) return r.error();
    relays_ = std::move(*r);
  } else {
    docroot_.reset(::open(self_.docroot.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!docroot_.valid()) return sys_error("docroot " + self_.docroot);
    if (self_.cache_mb > 0) cache_ = std::make_unique<serve::FileCache>(uint64_t(self_.cache_mb) << 20);
  }
  listener_.reset(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = self_.addr;
  a.sin_port = htons(cfg_.cluster.control_port);
  if (bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return sys_error("bind control port " + endpoint_str(a));
  if (listen(listener_.get(), 128) != 0) return sys_error("listen");
  set(EPOLL_CTL_ADD, listener_.get(), EPOLLIN, &listener_item_);
  sigfd_ = sigfd;
  set(EPOLL_CTL_ADD, sigfd, EPOLLIN, &signal_item_);
  return {};
}

void Agent::run() {
  epoll_event evs[256];
  uint64_t next_tick = 0;
  while (!stop_) {
    // The tick sends heartbeats, so it runs at least twice per heartbeat interval.
    const int tick_ms = int(std::clamp<uint32_t>(cfg_.cluster.heartbeat_ms / 2, 5, 100));
    int n = epoll_wait(ep_.get(), evs, 256, tick_ms);
    const uint64_t woke = n > 0 ? monotonic_ns() : 0;
    for (int i = 0; i < n; ++i) {
      if (Relays::owns(evs[i].data.u64)) {
        relays_->on_event(evs[i].data.u64, evs[i].events, woke);
        continue;
      }
      auto* it = static_cast<Item*>(evs[i].data.ptr);
      switch (it->kind) {
        case Item::Listener:
          on_accept();
          break;
        case Item::Signal: {
          signalfd_siginfo si{};
          if (read(sigfd_, &si, sizeof si) == sizeof si) begin_drain();
          break;
        }
        case Item::Control:
          on_control(*static_cast<ControlConn*>(it), evs[i].events);
          break;
        case Item::Http:
          on_http(*static_cast<HttpConn*>(it), evs[i].events);
          break;
      }
    }
    uint64_t now = monotonic_ns();
    if (now >= next_tick) {
      tick(now);
      next_tick = now + uint64_t(tick_ms) * kMs;
    }
  }
}

void Agent::on_accept() {
  for (;;) {
    UniqueFd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) return;
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto cc = std::make_unique<ControlConn>(next_control_id_++, key_, self_.id);
    cc->fd = std::move(fd);
    cc->session.start(cc->out);
    set(EPOLL_CTL_ADD, cc->fd.get(), EPOLLIN | EPOLLRDHUP, cc.get());
    inc(Counter::ctl_accepted);
    ControlConn* raw = cc.get();
    controls_.emplace(raw->id, std::move(cc));
    flush(*raw);
  }
}

void Agent::flush(ControlConn& cc) {
  if (int err = send_pending(cc.fd.get(), cc.out)) {
    drop_control(cc, strerror(err));
    return;
  }
  bool want = !cc.out.empty();
  if (want != cc.want_out) {
    cc.want_out = want;
    set(EPOLL_CTL_MOD, cc.fd.get(), EPOLLIN | EPOLLRDHUP | (want ? uint32_t(EPOLLOUT) : 0u), &cc);
  }
}

void Agent::drop_control(ControlConn& cc, const std::string& why) {
  if (cc.session.established()) {
    control_links_.fetch_sub(1);
    spdlog::warn("control link from {} lost: {}", cc.session.peer_id(), why);
  }
  // Imports not yet committed die with the link that would have committed them.
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->first.first == cc.id) {
      inc(Counter::aborted);
      it = pending_.erase(it);  // closing a socket in repair mode is silent
    } else {
      ++it;
    }
  }
  set(EPOLL_CTL_DEL, cc.fd.get(), 0, &cc);
  controls_.erase(cc.id);
}

void Agent::on_control(ControlConn& cc, uint32_t events) {
  if (events & EPOLLIN) {
    if (int err = recv_available(cc.fd.get(), cc.in)) {
      drop_control(cc, err == kPeerClosed ? "closed by peer" : strerror(err));
      return;
    }
    bool was = cc.session.established();
    std::vector<proto::Message> msgs;
    Status s = cc.session.feed(cc.in, msgs);
    if (!was && cc.session.established()) {
      control_links_.fetch_add(1);
      spdlog::info("control link from {} established", cc.session.peer_id());
    }
    uint64_t id = cc.id;
    for (auto& m : msgs) {
      on_message(cc, m);
      if (!controls_.count(id)) return;
    }
    if (!s) {
      inc(Counter::ctl_bad_frames);
      drop_control(cc, "bad frame: " + s.error().message());
      return;
    }
    flush(cc);
    return;
  }
  if (events & EPOLLOUT) flush(cc);
  else if (events & (EPOLLERR | EPOLLHUP)) drop_control(cc, "connection error");
}

void Agent::on_message(ControlConn& cc, proto::Message& m) {
  if (auto* h = std::get_if<proto::HandoffMsg>(&m)) {
    uint64_t t0 = monotonic_ns();
    auto fd = handoff::import_state(h->state, h->request);
    uint32_t status = 0;
    if (!fd) {
      status = uint32_t(fd.error().err ? fd.error().err : EPROTO);
      inc(Counter::import_failed);
      spdlog::warn("import of {}:{}: {}", ipv4_str(h->state.peer_addr), ntohs(h->state.peer_port),
                   fd.error().message());
    } else {
      // Held in repair mode (silent) until the FE has pointed the flow at us.
      uint64_t wait = 2 * kMs * cfg_.frontend.handoff_timeout_ms + 1000 * kMs;
      pending_[{cc.id, h->id}] = PendingImport{std::move(*fd), monotonic_ns() + wait};
    }
    cc.session.send(proto::ReadyMsg{h->id, status}, cc.out);
    flush(cc);
    import_latency_.record_ns(monotonic_ns() - t0);
  } else if (auto* c = std::get_if<proto::CommitMsg>(&m)) {
    auto it = pending_.find({cc.id, c->id});
    if (it == pending_.end()) return;
    UniqueFd fd = std::move(it->second.fd);
    pending_.erase(it);
    if (auto s = handoff::activate(fd.get()); !s) {
      spdlog::warn("activate: {}", s.error().message());
      return;
    }
    if (relays_) {
      inc(Counter::imported);
      active_.fetch_add(1);
      relays_->start(std::move(fd), cc.id, c->id, monotonic_ns());
      return;
    }
    auto h = std::make_unique<HttpConn>(docroot_.get(), cache_.get());
    h->fd = std::move(fd);
    h->handoff_id = c->id;
    h->control_id = cc.id;
    h->last_active = monotonic_ns();
    inc(Counter::imported);
    active_.fetch_add(1);
    set(EPOLL_CTL_ADD, h->fd.get(), EPOLLIN | EPOLLRDHUP, h.get());
    HttpConn* raw = h.get();
    conns_.emplace(raw, std::move(h));
    on_http(*raw, EPOLLIN);  // the request is already in the receive queue
  } else if (auto* a = std::get_if<proto::AbortMsg>(&m)) {
    if (pending_.erase({cc.id, a->id})) inc(Counter::aborted);
  } else {
    spdlog::warn("unexpected control message type {}", int(proto::type_of(m)));
  }
}

void Agent::on_http(HttpConn& h, uint32_t events) {
  using Want = serve::StaticSession::Want;
  h.last_active = monotonic_ns();
  if (events & EPOLLERR) {
    close_http(h);
    return;
  }
  uint64_t sent = h.session.bytes_sent(), requests = h.session.requests(),
           bad = h.session.bad_requests();
  Want w = (events & EPOLLOUT) ? h.session.on_writable(h.fd.get())
                               : h.session.on_readable(h.fd.get());
  inc(Counter::bytes_sent, h.session.bytes_sent() - sent);
  inc(Counter::requests, h.session.requests() - requests);
  inc(Counter::bad_requests, h.session.bad_requests() - bad);
  if (w == Want::Close) {
    close_http(h);
    return;
  }
  bool writing = w == Want::Write;
  if (writing != h.writing) {
    h.writing = writing;
    set(EPOLL_CTL_MOD, h.fd.get(), writing ? uint32_t(EPOLLOUT) : EPOLLIN | EPOLLRDHUP, &h);
  }
}

void Agent::close_http(HttpConn& h) {
  // Graceful: FIN after the last byte; the client's FIN/ACK are forwarded to us.
  shutdown(h.fd.get(), SHUT_WR);
  set(EPOLL_CTL_DEL, h.fd.get(), 0, &h);
  report_closed(h.control_id, h.handoff_id, h.session.bytes_sent(), h.session.bytes_received());
  active_.fetch_sub(1);
  conns_.erase(&h);
}

// Lets the FE free the flow early (ARCHITECTURE.md, teardown).
void Agent::report_closed(uint64_t control_id, uint64_t handoff_id, uint64_t sent,
                          uint64_t received) {
  if (auto it = controls_.find(control_id); it != controls_.end() && it->second->session.established()) {
    it->second->session.send(proto::ClosedMsg{handoff_id, sent, received}, it->second->out);
    flush(*it->second);
  }
}

void Agent::tick(uint64_t now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now >= it->second.deadline) {
      inc(Counter::aborted);
      spdlog::warn("import {} never committed: dropped", it->first.second);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<HttpConn*> idle;
  for (auto& [p, h] : conns_)
    if (!h->writing && now - h->last_active > kKeepAliveIdleNs) idle.push_back(p);
  for (HttpConn* h : idle) close_http(*h);
  if (relays_) relays_->tick(now);
  if (draining_) {
    // Idle keep-alive connections would hold the drain open: close them now.
    std::vector<HttpConn*> idle_now;
    for (auto& [p, h] : conns_)
      if (!h->writing && h->session.idle()) idle_now.push_back(p);
    for (HttpConn* h : idle_now) close_http(*h);
    // Closed connections may still have response bytes in flight: the kernel sends
    // them after close(), but only while the VIP is still ours. Wait for them too.
    bool done = active_.load() <= 0 && pending_.empty() && !vip_sockets_sending();
    if (done || now >= drain_deadline_) {
      if (active_.load() > 0)
        spdlog::warn("drain timeout: {} connections still open are cut", active_.load());
      stop_ = true;
    }
  }
  // Heartbeats: the FE marks a BE down when they stop, even if the TCP connection
  // stays open (a stopped or hung agent). They carry the load for the policies.
  if (now >= next_heartbeat_) {
    next_heartbeat_ = now + uint64_t(cfg_.cluster.heartbeat_ms) * kMs;
    proto::HeartbeatMsg hb{now, uint32_t(std::max<int64_t>(0, active_.load())), 0,
                           cache_hit_permille()};
    std::vector<ControlConn*> links;
    for (auto& [id, cc] : controls_)
      if (cc->session.established()) links.push_back(cc.get());
    for (ControlConn* cc : links) {
      cc->session.send(hb, cc->out);
      flush(*cc);
    }
  }
}

// True while a TCP socket on the VIP still has unacknowledged data or an unanswered
// FIN (states ESTABLISHED, FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING, or a send queue).
// Read from /proc/net/tcp, which shows this network namespace's sockets only.
bool Agent::vip_sockets_sending() const {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  char want[9];
  std::snprintf(want, sizeof want, "%08X", cfg_.cluster.vip_addr.s_addr);
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string sl, local, remote, state, queues;
    if (!(in >> sl >> local >> remote >> state >> queues)) continue;
    if (local.compare(0, 8, want) != 0) continue;
    unsigned st = std::stoul(state, nullptr, 16);
    unsigned long txq = std::stoul(queues.substr(0, queues.find(':')), nullptr, 16);
    if (txq > 0 || st == 0x01 || st == 0x04 || st == 0x08 || st == 0x09 || st == 0x0B) return true;
  }
  return false;
}

void Agent::begin_drain() {
  if (draining_) {
    stop_ = true;  // a second signal: stop now
    return;
  }
  draining_ = true;
  drain_deadline_ = monotonic_ns() + kDrainTimeoutNs;
  spdlog::info("draining: {} connections to finish (at most {} s); signal again to stop now",
               active_.load(), kDrainTimeoutNs / 1'000'000'000);
  if (on_drain_) on_drain_();
}

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

}  // namespace

int run_backend(const config::Config& cfg, const std::string& id, const std::string& status_socket) {
  const auto* self = cfg.find_backend(id);
  if (!self) {
    spdlog::error("{}: no [[backend]] with id '{}'", cfg.path, id);
    return 1;
  }
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  sigset_t stop_sigs;
  sigemptyset(&stop_sigs);
  sigaddset(&stop_sigs, SIGINT);
  sigaddset(&stop_sigs, SIGTERM);
  UniqueFd sigfd(signalfd(-1, &stop_sigs, SFD_CLOEXEC | SFD_NONBLOCK));

  auto ifname = host::interface_of(self->addr);
  if (!ifname) {
    spdlog::error("{}", ifname.error().message());
    return 2;
  }
  // Silence ARP for the VIP before it exists on lo, so no neighbour ever learns it
  // here; let packets to the VIP arrive on the LAN interface.
  std::vector<std::unique_ptr<host::SysctlGuard>> sysctls;
  for (auto [name, value] : {std::pair<std::string, std::string>{"net.ipv4.conf.all.arp_ignore", "1"},
                             {"net.ipv4.conf.all.arp_announce", "2"},
                             {"net.ipv4.conf.all.rp_filter", "0"},
                             {"net.ipv4.conf." + *ifname + ".rp_filter", "0"}}) {
    auto g = host::SysctlGuard::set(name, value);
    if (!g) {
      spdlog::error("{}", g.error().message());
      return 2;
    }
    sysctls.push_back(std::move(*g));
  }
  auto vip = host::AddressGuard::add("lo", cfg.cluster.vip_addr);
  if (!vip) {
    spdlog::error("{}", vip.error().message());
    return 2;
  }

  Agent agent(cfg, *self);
  if (auto s = agent.open(sigfd.get()); !s) {
    spdlog::error("{}", s.error().message());
    return 2;
  }
  auto status = status::Server::start(status_socket, [&](const std::string&) { return agent.status_json(); });
  if (!status) {
    spdlog::error("status socket: {}", status.error().message());
    return 2;
  }
  spdlog::info("back-end {} on {} ({}), VIP {} on lo, {} {}", id, self->address, *ifname,
               cfg.cluster.vip, self->upstream.empty() ? "docroot" : "relay to",
               self->upstream.empty() ? self->docroot : self->upstream);
  std::unique_ptr<metrics::Endpoint> metrics_endpoint;
  if (!self->metrics.empty()) {
    auto m = metrics::Endpoint::start(self->metrics, [&] { return agent.prometheus(); });
    if (!m) {
      spdlog::error("metrics endpoint {}: {}", self->metrics, m.error().message());
      return 2;
    }
    metrics_endpoint = std::move(*m);
  }
  Registration registration(cfg, *self);
  agent.set_on_drain([&] { registration.leave(); });
  agent.run();
  spdlog::info("back-end {} stopping; VIP and sysctls restored", id);
  return 0;
}

}  // namespace tcpha::be
