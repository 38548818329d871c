#include "fe/worker.hpp"
#include "fe/worker_internal.hpp"
#include "common/clock.hpp"
#include "common/flow_key.hpp"
#include "common/listen_socket.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "datapath/datapath.hpp"
#include "handoff/tcp_state.hpp"
#include "host/host.hpp"
#include "http/request.hpp"
#include "serve/static_files.hpp"
#include "serve/static_session.hpp"

namespace tcpha::fe {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kTickNs = 20 * kMs;           // timeouts are checked this often
constexpr uint64_t kCloseLingerNs = 2000 * kMs;  // after an error reply, wait for the client's FIN
constexpr uint64_t kRetireGraceNs = 60'000 * kMs;  // a removed BE's link lives on for CLOSEDs
constexpr int kMaxAttempts = 2;                    // handoff attempts per request

std::array<uint8_t, 32> key_of(const config::Config& cfg) {
  std::array<uint8_t, 32> key{};
  std::copy_n(cfg.cluster.key.begin(), key.size(), key.begin());
  return key;
}

}  // namespace

// The handoff sender's view of one target back-end: this worker's datapath (shared by
// all workers) and this worker's control link to it.
class Worker::Port final : public handoff::SenderPort {
 public:
  // epoch: where the connection keeps the flow GC's epoch of its forward() (null: none).
  Port(Worker& w, BackendState& b, int rule = -1, uint64_t* epoch = nullptr)
      : w_(w), b_(b), rule_(rule), epoch_(epoch) {}
  Status forward(const tcpha_flow_key& key) override {
    Mac be_mac = BackendState::unpack(b_.mac.load(std::memory_order_relaxed));
    if (epoch_) *epoch_ = w_.sh_.dp->gc_epoch();
    return w_.sh_.dp->point(key, b_.uid, be_mac, w_.sh_.fe_mac, backup);
  }
  // Tunnel mode: the BE sends with the MSS the client announced, not with our clamp
  // (clamp_mss). Only the FE's first export has a saved SYN (the kernel frees it as it
  // is read): a retry after an aborted handoff exports the clamp, correct but smaller.
  Result<handoff::TcpState> export_socket(int fd, const Endpoint& local, const Endpoint& peer,
                                          std::string& bytes) override {
    auto st = handoff::export_state(fd, local, peer, bytes);
    if (st && w_.sh_.tunnel_mss4)
      if (auto mss = handoff::saved_syn_mss(fd); mss && *mss > st->mss) st->mss = *mss;
    return st;
  }
  void confirm_forward(const tcpha_flow_key& key) override {
    // No GC pass that deletes ran since forward(): the entry is there (only the GC and
    // a SYN on a finished flow delete entries, and this one is neither).
    if (epoch_ && *epoch_ % 2 == 0 && w_.sh_.dp->gc_epoch() == *epoch_) return;
    if (w_.sh_.dp->lookup(key)) return;
    w_.sh_.counters.inc(Counter::flow_restored);
    if (auto s = forward(key); !s) spdlog::error("flow of handoff lost: {}", s.error().message());
  }
  void release(const tcpha_flow_key& key) override { (void)w_.sh_.dp->remove(key); }
  bool send_handoff(uint64_t id, const handoff::TcpState& st, const std::string& bytes) override {
    auto it = w_.controls_.find(&b_);
    if (it == w_.controls_.end()) return false;
    // The lease: from the BE's last heartbeat, as long as we wait before taking the
    // connection back (the handoff timeout, plus that heartbeat's age).
    lease_ms = handoff::lease_ms(w_.snap_->cfg->frontend.handoff_timeout_ms, it->second->beat_at,
                                 monotonic_ns());
    return it->second->link.send(
        proto::HandoffMsg{id, st, bytes, rule_, 0, it->second->beat_ns, lease_ms, origin_ns});
  }
  uint64_t origin_ns = 0;  // the request complete, for the BE's takeover latency
  uint16_t backup = 0;     // the flow's backup slot + 1 (Worker::backup_slot), 0 = none
  uint32_t lease_ms = 0;  // of the last HANDOFF sent
  bool send_commit(uint64_t id) override { return send(proto::CommitMsg{id}); }
  void send_abort(uint64_t id) override { send(proto::AbortMsg{id}); }

 private:
  bool send(const proto::Message& m) {
    auto it = w_.controls_.find(&b_);
    return it != w_.controls_.end() && it->second->link.send(m);
  }
  Worker& w_;
  BackendState& b_;
  int rule_;  // the rule the request was routed by, for the BE's drain and rebalance
  uint64_t* epoch_;
};

Worker::Worker(Shared& shared, uint32_t index)
    : sh_(shared), index_(index), ep_(epoll_create1(EPOLL_CLOEXEC)),
      wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  epoll_set(EPOLL_CTL_ADD, wake_.get(), EPOLLIN, &wake_item_);
  // Worker 0 reads the copies; the datapath wakes it only when they pile up (its tick
  // reads them otherwise).
  if (index_ == 0 && sh_.copies && sh_.copies->fd() >= 0)
    epoll_set(EPOLL_CTL_ADD, sh_.copies->fd(), EPOLLIN, &copies_item_);
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  next_id_ = uint64_t(ts.tv_sec) * 1'000'000 + uint64_t(ts.tv_nsec) / 1000;
  reconcile();
}

Worker::~Worker() {
  // Connections still being handed off are not taken back: their BE may be serving them
  // under its lease. Their sockets, still in repair mode, close silently.
  for (auto& [b, cc] : controls_) set_live(*cc, false);
}

void Worker::epoll_set(int op, int fd, uint32_t events, Item* item) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = item;
  if (epoll_ctl(ep_.get(), op, fd, &ev) != 0 && op != EPOLL_CTL_DEL)
    spdlog::error("epoll_ctl({}, fd {}): {}", op, fd, strerror(errno));
}

Status Worker::open_listeners(std::vector<UniqueFd> given) {
  for (auto& fd : given) {
    auto l = ListenSocket::adopt(std::move(fd));
    if (!l) return Error{l.error().err, "listener handed over: " + l.error().what};
    listeners_.push_back(std::move(*l));  // accepting starts in start_accepting()
  }
  // The IPv4 VIP, and the IPv6 one beside it when configured (docs/ipv6.md).
  std::vector<Endpoint> vips{Endpoint::v4(sh_.boot->cluster.vip_addr.s_addr, 0)};
  if (sh_.boot->cluster.vip6_addr) vips.push_back(Endpoint::v6(*sh_.boot->cluster.vip6_addr, 0));
  for (Endpoint a : vips)
    for (uint16_t port : sh_.boot->cluster.ports) {
      a.port = htons(port);
      bool have = false;
      for (const auto& l : listeners_) have = have || l.endpoint() == a;
      if (have) continue;
      auto l = ListenSocket::open(a, 4096, /*reuse_port=*/true);  // one per worker and port
      if (!l) return l.error();
      listeners_.push_back(std::move(*l));
    }
  return clamp_mss();
}

// With tunnel back-ends, the MSS the listeners advertise leaves room for the outer
// header (Shared::tunnel_mss4/6; docs/tunnel.md). Listeners handed over by a
// predecessor get it too: the configuration may have changed. The clamp also lowers
// our own socket's sending MSS, which the export would hand to the BE; the BE answers
// the client directly, not through the tunnel, so the listeners also keep each SYN
// (TCP_SAVE_SYN) and the export gives the BE the MSS the client announced
// (Port::export_socket).
Status Worker::clamp_mss() {
  if (!sh_.tunnel_mss4) return {};
  const int one = 1;
  for (const auto& l : listeners_) {
    int domain = AF_INET;
    socklen_t len = sizeof domain;
    (void)getsockopt(l.fd(), SOL_SOCKET, SO_DOMAIN, &domain, &len);
    const int mss = domain == AF_INET6 ? sh_.tunnel_mss6 : sh_.tunnel_mss4;
    if (setsockopt(l.fd(), IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss) != 0)
      return sys_error("TCP_MAXSEG " + std::to_string(mss) + " on a VIP listener");
    if (setsockopt(l.fd(), IPPROTO_TCP, TCP_SAVE_SYN, &one, sizeof one) != 0)
      return sys_error("TCP_SAVE_SYN on a VIP listener");
  }
  return {};
}

std::vector<int> Worker::listener_fds() const {
  std::vector<int> fds;
  for (const auto& l : listeners_) fds.push_back(l.fd());
  return fds;
}

// Accepting starts once a back-end can take a handoff (a link with its first
// heartbeat), or after kAcceptAnywayNs: a client accepted earlier could only get a
// 503. Meanwhile the kernel queues the connections; in an upgrade the old process
// accepts them from the same sockets.
void Worker::start_accepting(uint64_t now) {
  constexpr uint64_t kAcceptAnywayNs = 1000 * kMs;
  if (accepting_ || stop_accepting_) return;
  bool ready = now - started_ >= kAcceptAnywayNs;
  for (const auto& [b, cc] : controls_) ready = ready || (cc->live && cc->beat_ns != 0);
  if (!ready) return;
  accepting_ = true;
  for (auto& l : listeners_) l.attach(ep_.get(), &listener_item_);
}

void Worker::stop_accepting() {
  stop_accepting_ = true;
  wake();
}

void Worker::stop() {
  stopping_ = true;  // read by run() after the wakeup (eventfd write/read order it)
  wake();
}

void Worker::wake() {
  uint64_t one = 1;
  if (write(wake_.get(), &one, sizeof one) < 0) spdlog::warn("worker wake: {}", strerror(errno));
}

void Worker::run() {
  running_ = true;
  started_ = monotonic_ns();
  for (auto& [b, cc] : controls_)
    if (cc->link.state() == proto::Link::State::Idle) connect_control(*cc);
  epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep_.get(), evs, 256, int(kTickNs / kMs));
    if (n < 0 && errno != EINTR) {
      spdlog::error("epoll_wait: {}", strerror(errno));
      return;
    }
    proto::WriteBatch batch;  // control frames of this round: one write per link
    for (int i = 0; i < n; ++i) {
      auto* item = static_cast<Item*>(evs[i].data.ptr);
      switch (item->kind) {
        case Item::Wake: {
          uint64_t v;
          if (read(wake_.get(), &v, sizeof v) < 0 && errno != EAGAIN)
            spdlog::warn("wake read: {}", strerror(errno));
          if (stopping_) {
            // What the backups were still due goes with this round's batch: the
            // connections outlive this process (a successor adopts them).
            flush_backups(monotonic_ns(), true);
            send_copies();
            flush_forgets();
            return;
          }
          if (stop_accepting_ && !listeners_.empty()) {
            if (accepting_)
              for (auto& l : listeners_) l.detach();
            listeners_.clear();
          }
          break;
        }
        case Item::Listener:
          for (auto& l : listeners_) on_accept(l);
          break;
        case Item::Client: {
          auto& c = *static_cast<ClientConn*>(item);
          if (c.state == ClientConn::Local)
            on_local(c, evs[i].events);
          else
            on_client(c, evs[i].events);
          break;
        }
        case Item::Control:
          on_control(*static_cast<ControlConn*>(item), evs[i].events);
          break;
        case Item::Copies:
          send_copies();
          break;
      }
    }
    if (sh_.generation.load(std::memory_order_acquire) != generation_) reconcile();
    in_progress_.store(clients_.size(), std::memory_order_relaxed);
    uint64_t now = monotonic_ns();
    if (!accepting_) start_accepting(now);
    if (now >= next_tick_) {
      tick(now);
      next_tick_ = now + kTickNs;
    }
  }
}

void Worker::reconcile() {
  snap_ = sh_.snapshot.load();
  generation_ = snap_->generation;
  const auto& cfg = *snap_->cfg;
  std::unordered_map<BackendState*, in_addr> wanted;
  for (size_t i = 0; i < snap_->backends.size(); ++i)
    wanted[snap_->backends[i]] = cfg.backends[i].addr;
  for (auto& [b, cc] : controls_) {
    auto it = wanted.find(b);
    if (it == wanted.end()) {
      if (!cc->retired_at) cc->retired_at = monotonic_ns();
    } else if (it->second.s_addr != cc->addr.s_addr) {
      // Same id, new address: a different machine now.
      control_down(*cc, "address changed by reload");
      cc->addr = it->second;
      cc->retired_at = 0;
    } else {
      cc->retired_at = 0;
    }
  }
  for (auto& [b, addr] : wanted) {
    if (controls_.count(b)) continue;
    auto cc = std::make_unique<ControlConn>(*b, addr, control_options());
    ControlConn* raw = cc.get();
    raw->link.attach(ep_.get(), static_cast<Item*>(raw));
    controls_.emplace(b, std::move(cc));
    if (running_) connect_control(*raw);  // run() connects the initial ones
  }
}

void Worker::on_accept(ListenSocket& l) {
  const uint64_t now = monotonic_ns();
  for (int burst = 0; burst < 64; ++burst) {
    auto c = std::make_unique<ClientConn>();
    const uint64_t pauses = l.pauses();
    c->fd = l.accept(&c->peer, now);
    if (l.pauses() != pauses) sh_.counters.inc(Counter::accept_paused);
    if (!c->fd.valid()) return;
    c->local = l.endpoint();  // bound to the VIP and the port: no getsockname()
    sh_.counters.inc(Counter::accepted);
    c->deadline = monotonic_ns() + snap_->cfg->frontend.header_timeout_ms * kMs;
    c->buf.reserve(2048);
    ClientConn* raw = c.get();
    clients_.emplace(raw, std::move(c));
    // The request often arrives with the ACK: read it at once, and enter the epoll set
    // only if more is to come. A connection handed off from here never enters it (two
    // epoll_ctl calls fewer per connection).
    on_client(*raw, EPOLLIN);
    if (clients_.count(raw) && raw->state != ClientConn::Handing && !raw->watched)
      watch(*raw, EPOLLIN | EPOLLRDHUP);
  }
}

void Worker::on_client(ClientConn& c, uint32_t events) {
  if (c.state == ClientConn::Closing) {
    // After an error reply: discard what the client still sends until its FIN, so
    // our close() does not turn into a reset that could destroy the reply.
    char sink[4096];
    ssize_t n;
    while ((n = recv(c.fd.get(), sink, sizeof sink, 0)) > 0) {
    }
    if (n == 0 || (n < 0 && errno != EAGAIN) || (events & (EPOLLHUP | EPOLLERR))) destroy(c);
    return;
  }
  if (c.state != ClientConn::Reading) return;
  const auto& fcfg = snap_->cfg->frontend;
  for (;;) {
    // Never read more than one byte past the limit: enough for the parser to say 431.
    size_t old = c.buf.size();
    size_t room = fcfg.max_header_bytes + 1 - std::min<size_t>(old, fcfg.max_header_bytes);
    // Into the worker's scratch buffer, then appended: growing buf to the read's size
    // first would zero-fill 16 KiB per read (the profile showed that memset and the
    // allocator's madvise per connection).
    size_t want = std::min<size_t>(room, sizeof read_buf_);
    ssize_t n = recv(c.fd.get(), read_buf_, want, 0);
    if (n == 0 && old > 0) {
      // A half-close right after the request (`printf ... | nc`) is legal: the
      // request is still answered, by whoever gets the connection.
      c.peer_fin = true;
      break;
    }
    if (n <= 0) {
      if (n < 0 && errno == EAGAIN) break;
      sh_.counters.inc(Counter::client_gone);
      destroy(c);
      return;
    }
    c.buf.append(read_buf_, size_t(n));
    if (size_t(n) < want || c.buf.size() > fcfg.max_header_bytes) break;
  }
  if (c.buf.empty()) return;
  route(c);
}

void Worker::route(ClientConn& c) {
  const auto& fcfg = snap_->cfg->frontend;
  http::Request req;
  http::Limits lim;
  lim.max_head = fcfg.max_header_bytes;
  auto r = http::parse_request(c.buf, req, lim);
  switch (r.status) {
    case http::ParseStatus::NeedMore:
      if (c.peer_fin) {  // the rest of the head will never come
        sh_.counters.inc(Counter::client_gone);
        destroy(c);
      }
      return;
    case http::ParseStatus::Error: {
      bool large = r.http_status == 414 || r.http_status == 431;
      sh_.counters.inc(large ? Counter::too_large : Counter::bad_request);
      spdlog::debug("bad request from {}: {} at byte {} ({})", c.peer.str(), r.http_status,
                    r.error_pos, r.reason);
      reply_and_close(c, r.http_status, "bad-request");
      return;
    }
    case http::ParseStatus::Complete:
      break;
  }
  if (!c.request_done) {
    c.request_done = monotonic_ns();
    c.consumed = c.buf.size();
    if (sh_.access_log.load())
      c.request_line = std::string(req.method) + " " + std::string(req.target) + " HTTP/1." +
                       std::to_string(req.version_minor);
  }
  c.snap = snap_;
  Load load(*this, c.failed_be);
  auto d = snap_->router->route(req, c.peer.addr32(), load);
  c.rule = d.rule;
  switch (d.kind) {
    case sched::Decision::Backend:
      start_handoff(c, *snap_->backends[d.backend]);
      return;
    case sched::Decision::Local:
      serve_locally(c);
      return;
    case sched::Decision::NoRule:
      sh_.counters.inc(Counter::no_rule);
      reply_and_close(c, 404, "no-rule");
      return;
    case sched::Decision::NoBackend:
      sh_.counters.inc(Counter::no_backend);
      reply_and_close(c, 503, "no-backend");
      return;
  }
}

void Worker::serve_locally(ClientConn& c) {
  sh_.counters.inc(Counter::served_locally);
  sh_.local_active.fetch_add(1, std::memory_order_relaxed);
  c.state = ClientConn::Local;
  c.deadline = 0;
  c.session = std::make_unique<serve::StaticSession>(c.snap->local_docroot.get(), "tcpha");
  c.session->preload(std::move(c.buf));
  c.buf.clear();
  access(c, "local");
  on_local(c, 0);
}

void Worker::on_local(ClientConn& c, uint32_t events) {
  using Want = serve::StaticSession::Want;
  Want w = (events & EPOLLOUT) ? c.session->on_writable(c.fd.get())
                               : c.session->on_readable(c.fd.get());
  if (w == Want::Close) {
    sh_.local_active.fetch_sub(1, std::memory_order_relaxed);
    destroy(c);
    return;
  }
  bool want_write = w == Want::Write;
  if (want_write != c.want_write) {
    c.want_write = want_write;
    watch(c, want_write ? uint32_t(EPOLLOUT) : EPOLLIN | EPOLLRDHUP);
  }
}

void Worker::watch(ClientConn& c, uint32_t events) {
  epoll_set(c.watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c.fd.get(), events, &c);
  c.watched = true;
}

void Worker::unwatch(ClientConn& c) {
  if (!c.watched) return;
  epoll_set(EPOLL_CTL_DEL, c.fd.get(), 0, &c);
  c.watched = false;
}

void Worker::start_handoff(ClientConn& c, BackendState& be) {
  c.key = flow_key(c.peer, c.local);
  ++c.attempts;
  if (!c.quota) {
    if (!sh_.client_quota.acquire(c.peer.addr32(), c.snap->cfg->frontend.max_flows_per_client)) {
      sh_.counters.inc(Counter::client_flow_cap);
      reply_and_close(c, 503, "client-flow-cap");
      return;
    }
    c.quota = true;
  }
  constexpr uint64_t kCounterMask = (uint64_t{1} << 48) - 1;
  if ((next_id_ & kCounterMask) == 0) ++next_id_;  // 0 is no id
  c.id = (uint64_t(index_) << 48) | (next_id_++ & kCounterMask);
  c.be = &be;
  // Steps 1-3 (handoff/sender.hpp): FORWARD, export, HANDOFF. Out of the epoll set
  // meanwhile: the socket is in repair mode.
  unwatch(c);
  Port port(*this, be, c.rule, &c.gc_epoch);
  port.origin_ns = c.request_done;
  // Failover: the backup is chosen now, so that the flow copies the client's packets to
  // it from the start; it gets the connection's state after COMMIT (back_up_later()).
  // Backups hold IPv4 connections only (failover/held.hpp): an IPv6 one has none.
  c.backup = snap_->cfg->cluster.failover && !c.peer.is_v6() ? backup_for(be) : nullptr;
  if (snap_->cfg->cluster.failover && c.peer.is_v6()) sh_.counters.inc(Counter::ipv6_no_backup);
  port.backup = backup_slot(c.backup);
  const handoff::MovingConn mc{c.fd.get(), c.local, c.peer, c.key};
  using Outcome = handoff::Sender::Outcome;
  const Outcome o = c.move.start(port, mc, c.id, c.buf);
  if (o == Outcome::LinkDown) {
    c.state = ClientConn::Handing;
    attempt_failed(c, false);
    return;
  }
  if (o != Outcome::Ok) {
    const bool full = o == Outcome::TableFull;
    sh_.counters.inc(full ? Counter::flow_table_full : Counter::handoff_failed);
    if (!full) spdlog::warn("handoff of {}: {}", c.peer.str(), handoff::Sender::describe(o));
    watch(c, EPOLLIN | EPOLLRDHUP);
    reply_and_close(c, 503,
                    full                            ? "flow-table-full"
                    : o == Outcome::ExportFailed    ? "export-failed"
                                                    : "forward-failed");
    return;
  }
  c.state = ClientConn::Handing;
  c.handoff_sent = monotonic_ns();
  sh_.export_latency.record_ns(c.handoff_sent - c.request_done);
  // The end of the BE's lease, on our clock: until then only a refusal gives the
  // connection back (the BE may be serving it).
  c.deadline = c.handoff_sent + port.lease_ms * kMs;
  pending_[c.id] = &c;
}

void Worker::on_ready(ControlConn& cc, uint64_t id, uint32_t status) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // taken back already (the lease ran out)
  ClientConn& c = *it->second;
  if (c.be != cc.be) {
    // Only the BE the handoff went to may answer it: another BE's READY would make
    // us let go of a connection that BE does not hold.
    sh_.counters.inc(Counter::ctl_unauthorized);
    spdlog::warn("[w{}] READY for handoff {} from {}, which was sent to {}: ignored", index_, id,
                 cc.be->id, c.be->id);
    return;
  }
  BackendState& b = *c.be;
  uint64_t ready_at = monotonic_ns();
  // Step 4: COMMIT. The flow points at the BE since step 1, and the BE has served the
  // request since its import; our socket is still in repair mode and closes silently.
  Port port(*this, b, -1, &c.gc_epoch);
  port.backup = backup_slot(c.backup);
  using Outcome = handoff::Sender::Outcome;
  switch (c.move.on_ready(port, status)) {
    case Outcome::Ok:
      break;
    case Outcome::Refused:
      pending_.erase(it);
      spdlog::warn("{} refused handoff of {}: {}", b.id, c.peer.str(), strerror(int(status)));
      attempt_failed(c, false);
      return;
    default:
      // COMMIT could not be sent (the link is going down): the BE serves it until its
      // lease ends and then drops it; we take it back at our deadline (tick()).
      return;
  }
  pending_.erase(it);
  sh_.ready_latency.record_ns(ready_at - c.handoff_sent);
  b.handoffs.fetch_add(1, std::memory_order_relaxed);
  b.active.fetch_add(1, std::memory_order_relaxed);
  committed_[id] = Committed{c.key, &b, 0, c.backup};
  if (c.backup)
    back_up_later(id, *c.backup, b, proto::BackupMsg{id, b.id, c.move.exported(), std::move(c.buf)},
                  ready_at);
  c.quota = false;  // the committed entry holds it now, until CLOSED
  sh_.counters.inc(Counter::handoff_ok);
  uint64_t done = monotonic_ns();
  sh_.commit_latency.record_ns(done - ready_at);
  sh_.handoff_latency.record_ns(done - c.request_done);
  c.fd.reset();
  access(c, "handoff", done - c.request_done);
  clients_.erase(&c);
}

// A connection the sender has given back (out of repair, unheld) is the FE's again:
// read from, with the bytes peeked at export time left in the socket.
void Worker::take_back(ClientConn& c) {
  pending_.erase(c.id);
  c.buf.resize(c.consumed);
  c.state = ClientConn::Reading;
  watch(c, EPOLLIN | EPOLLRDHUP);
}

void Worker::attempt_failed(ClientConn& c, bool tell_be) {
  BackendState& b = *c.be;
  Port port(*this, b);
  c.move.abort(port, tell_be);  // NotPending when the sender has taken it back already
  sh_.counters.inc(Counter::handoff_failed);
  b.failures.fetch_add(1, std::memory_order_relaxed);
  take_back(c);
  if (c.attempts < kMaxAttempts) {
    sh_.counters.inc(Counter::handoff_retried);
    c.failed_be = &b;
    c.deadline = monotonic_ns() + snap_->cfg->frontend.handoff_timeout_ms * kMs;
    route(c);
    return;
  }
  reply_and_close(c, 503, "handoff-failed");
}

void Worker::reply_and_close(ClientConn& c, int status, const char* outcome) {
  access(c, outcome);
  std::string reply = http::simple_reply(status, true);
  // A few hundred bytes into an empty socket buffer: one send is enough.
  if (send(c.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
    destroy(c);
    return;
  }
  shutdown(c.fd.get(), SHUT_WR);
  c.state = ClientConn::Closing;
  c.deadline = monotonic_ns() + kCloseLingerNs;
  c.buf.clear();
}

// The BE reported the connection over: the flow's linger starts (one map update: we
// know where it points).
void Worker::mark_closed(const Committed& c) {
  const Mac mac = BackendState::unpack(c.be->mac.load(std::memory_order_relaxed));
  (void)sh_.dp->mark_closed(c.key, c.be->uid, mac, sh_.fe_mac, monotonic_ns());
}

// Forgets a handed-off connection (closed, or its BE's link lost): its BE's active
// count and its client's quota slot go with it.
Worker::CommittedMap::iterator Worker::release(CommittedMap::iterator it) {
  cancel_backup(it->first);  // a BACKUP still due is of no use now
  it->second.be->active.fetch_sub(1, std::memory_order_relaxed);
  sh_.client_quota.release(key_client(it->second.key).addr32());
  return committed_.erase(it);
}

void Worker::destroy(ClientConn& c) {
  if (c.quota) sh_.client_quota.release(c.peer.addr32());
  if (c.fd.valid()) unwatch(c);
  clients_.erase(&c);
}

void Worker::access(const ClientConn& c, const char* outcome, uint64_t handoff_ns) {
  auto log = sh_.access_log.load();
  if (!log) return;
  log->info("{} \"{}\" rule={} backend={} outcome={} handoff_us={}", c.peer.str(), c.request_line,
            c.rule >= 0 && c.snap ? c.snap->router->rule_name(c.rule) : "-",
            c.state == ClientConn::Local ? "local" : (c.be ? c.be->id : "-"), outcome,
            handoff_ns / 1000);
}

void Worker::set_live(ControlConn& cc, bool live) {
  if (cc.live == live) return;
  cc.live = live;
  if (live)
    cc.be->links_up.fetch_add(1);
  else
    cc.be->links_up.fetch_sub(1);
}

// Every control link to a BE: dialed from the FE's own address (a BE accepts control
// connections from that address only, and the VIP lives on the same interface).
proto::LinkOptions Worker::control_options() const {
  const auto& cfg = *snap_->cfg;
  proto::LinkOptions o;
  o.key = key_of(cfg);
  o.role = proto::Role::Fe;
  o.node_id = cfg.frontend.id;
  o.source = cfg.frontend.addr;
  return o;
}

void Worker::connect_control(ControlConn& cc) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = cc.addr;
  a.sin_port = htons(snap_->cfg->cluster.control_port);
  cc.link.dial(a, monotonic_ns());  // redials by itself, with proto::Backoff
}

void Worker::control_down(ControlConn& cc, const std::string& why) {
  BackendState& b = *cc.be;
  if (cc.up)
    spdlog::warn("[w{}] {} down: {}", index_, b.id, why);
  else
    spdlog::debug("[w{}] {} unreachable: {}", index_, b.id, why);
  set_live(cc, false);
  sh_.counters.inc(Counter::ctl_failures);
  cc.link.close(why);  // if still open; it redials after the backoff
  cc.up = false;
  cc.beat_ns = 0;  // a new link, a new lease base
  // Handoffs in flight to it are taken back when their lease is over (tick()), not now:
  // the BE may have imported them and be serving them until then. Connections it owns
  // are no longer counted (it cannot report them closed any more; the datapath ages
  // their flows out), except those backed up elsewhere: they wait for their backup's
  // TAKEN if this was the BE's last link (failover.cpp).
  const uint64_t now = monotonic_ns();
  const bool failover = snap_->cfg->cluster.failover && !stopping_;
  for (auto it = committed_.begin(); it != committed_.end();) {
    if (it->second.be != &b) {
      ++it;
    } else if (failover && it->second.backup) {
      if (!it->second.orphaned_at) ++orphans_;
      it->second.orphaned_at = now;
      // A BE failed over already (its link closed after that) counts as failed over since.
      it->second.orphan_epoch = b.failover_count.load(std::memory_order_relaxed) -
                                (b.failed_at.load(std::memory_order_relaxed) ? 1 : 0);
      ++it;
    } else {
      it = release(it);
    }
  }
  maybe_fail_over(cc, now);
}

void Worker::on_control(ControlConn& cc, uint32_t events) {
  std::vector<proto::Message> msgs;
  const unsigned changes = cc.link.on_events(events, msgs, monotonic_ns());
  control_changed(cc, changes, msgs);
}

void Worker::control_changed(ControlConn& cc, unsigned changes, std::vector<proto::Message>& msgs) {
  BackendState& b = *cc.be;
  if (changes & proto::Link::kWentUp) {
    if (cc.link.peer_id() != b.id) {
      control_down(cc, "peer says it is '" + cc.link.peer_id() + "'");
      return;
    }
    // The neighbour entry exists now that we talked to it; DR needs its MAC. A tunnel
    // back-end is beyond a router: its packets go by the FIB's next hop instead.
    const uint32_t tunnel = b.tunnel.load(std::memory_order_relaxed);
    std::optional<Mac> mac = tunnel ? Mac{} : host::neighbour_mac(cc.addr.s_addr);
    if (!mac) {
      control_down(cc, "no ARP entry for " + ipv4_str(cc.addr));
      return;
    }
    if (!tunnel) b.mac.store(BackendState::pack(*mac), std::memory_order_relaxed);
    // The datapath's slot table: how its flows' packets reach it, and (failed false)
    // its own flows are its own again if it had been failed over, but not while its
    // backups may still be taking them over (end_failover()).
    if (b.uid < TCPHA_MAX_BACKENDS)
      (void)sh_.dp->set_backend(b.uid, *mac, b.failed_at.load(std::memory_order_relaxed) != 0,
                                tunnel);
    cc.up = true;
    end_failover(b, monotonic_ns());
    cc.told_drained = false;
    // Which worker this link is: a BE that received one of our connections from
    // another BE reports its CLOSED to the worker named in the connection's id.
    cc.link.send(proto::WorkerMsg{index_});
    sh_.counters.inc(Counter::ctl_connects);
    spdlog::info("[w{}] {} up ({})", index_, b.id, tunnel ? "tunnel" : mac_str(*mac));
  }
  // Any frame counts as a heartbeat (tick() reads the link's last_heard()).
  const bool heard = (changes & proto::Link::kWentUp) || !msgs.empty();
  if (cc.up && heard && !cc.live && cc.retired_at == 0) set_live(cc, true);
  for (auto& m : msgs) on_message(cc, m);
  if (changes & proto::Link::kWentDown) {
    if (cc.link.failure() == proto::Link::Failure::BadFrame)
      sh_.counters.inc(Counter::ctl_bad_frames);
    control_down(cc, cc.link.reason());
  }
}

// The LARD assignments the workers made since the last tick of any of them (the table
// is shared), to every BE over this worker's links: BEs route later requests with the
// same table (docs/multi-handoff.md). A BE that is not up misses them; it learns the
// targets again as they change.
void Worker::share_lard() {
  auto changes = snap_->router->take_lard_changes(proto::kLardMaxEntries);
  if (changes.empty()) return;
  proto::LardMsg msg;
  for (auto& c : changes) msg.entries.push_back({c.rule, c.target, std::move(c.members)});
  for (auto& [b, cc] : controls_)
    if (cc->up) cc->link.send(msg);
}

void Worker::on_message(ControlConn& cc, proto::Message& m) {
  if (auto* r = std::get_if<proto::ReadyMsg>(&m)) {
    on_ready(cc, r->id, r->status);
  } else if (auto* cl = std::get_if<proto::ClosedMsg>(&m)) {
    on_closed(cc, *cl);
  } else if (auto* rp = std::get_if<proto::RepointMsg>(&m)) {
    on_repoint(cc, *rp);
  } else if (auto* hb = std::get_if<proto::HeartbeatMsg>(&m)) {
    cc.beat_ns = hb->sent_ns;
    cc.beat_at = monotonic_ns();
    cc.be->reported_active.store(hb->active, std::memory_order_relaxed);
    cc.be->cache_hit_permille.store(hb->cache_hit_permille, std::memory_order_relaxed);
    cc.be->cpu_permille.store(hb->cpu_permille, std::memory_order_relaxed);
  } else if (auto* l = std::get_if<proto::LardMsg>(&m)) {
    for (auto& e : l->entries) snap_->router->learn_lard({e.rule, e.target, std::move(e.members)});
  } else if (auto* t = std::get_if<proto::TakenMsg>(&m)) {
    on_taken(cc, *t);
  } else if (auto* o = std::get_if<proto::OwnedMsg>(&m)) {
    on_owned(cc, *o);
  } else {
    spdlog::warn("[w{}] unexpected message type {} from {}", index_, int(proto::type_of(m)),
                 cc.be->id);
  }
}

void Worker::on_closed(ControlConn& cc, const proto::ClosedMsg& cl) {
  sh_.counters.inc(Counter::be_closed);
  auto it = committed_.find(cl.id);
  if (it == committed_.end()) return;
  if (it->second.be != cc.be) {
    // Only the owner may end a connection. A BE it has just moved to may report
    // before the REPOINT naming it arrives: kept until then (on_repoint).
    early_closed_[cl.id] = EarlyClosed{cc.be, monotonic_ns()};
    return;
  }
  if (it->second.be->failed_at.load(std::memory_order_relaxed)) count_fenced(it->second);
  mark_closed(it->second);
  if (it->second.backup) {
    if (cancel_backup(cl.id))
      sh_.counters.inc(Counter::backups_unsent);
    else
      forget_later(*it->second.backup, cl.id);
  }
  release(it);
}

// A BE lists the connections of this worker's ids it owns (after our WORKER). Those we
// do not know were handed off by the FE process before us (docs/fe-restart.md): they
// become ours to track, so that their CLOSED reaps the adopted flow and their moves
// repoint it. The flow is (re)pointed at the BE that says it owns the connection: it
// holds the cluster key, and it is the one kernel with the socket.
void Worker::on_owned(ControlConn& cc, const proto::OwnedMsg& m) {
  if (!cc.be->addressable()) return;
  const Mac mac = BackendState::unpack(cc.be->mac.load(std::memory_order_relaxed));
  uint64_t learned = 0;
  for (const auto& o : m.conns) {
    if (proto::worker_of(o.id) != index_ || (o.family != AF_INET && o.family != AF_INET6)) continue;
    if (committed_.count(o.id) || pending_.count(o.id)) continue;
    Endpoint client, local;
    client.family = local.family = o.family;
    std::memcpy(client.addr.data(), o.client.data(), 16);
    std::memcpy(local.addr.data(), o.local.data(), 16);
    client.port = o.client_port;
    local.port = o.local_port;
    const auto key = flow_key(client, local);
    // An adopted flow that already points there keeps its counters; else (re)made.
    auto v = sh_.dp->lookup(key);
    if (!v || v->state != TCPHA_FLOW_FORWARD || v->backend != cc.be->uid ||
        (v->flags & TCPHA_FLOW_F_BE_CLOSED))
      if (auto s = sh_.dp->point(key, cc.be->uid, mac, sh_.fe_mac); !s) {
        spdlog::warn("[w{}] connection {} {} owns: {}", index_, o.id, cc.be->id, s.error().message());
        continue;
      }
    committed_[o.id] = Committed{key, cc.be, o.seq};
    cc.be->active.fetch_add(1, std::memory_order_relaxed);
    (void)sh_.client_quota.acquire(client.addr32(), UINT32_MAX);  // released with the entry
    ++learned;
  }
  if (learned) {
    sh_.counters.inc(Counter::resynced, learned);
    spdlog::info("[w{}] {} owns {} connections handed off before this FE started: tracked again",
                 index_, cc.be->id, learned);
  }
}

// Multi-handoff: a BE moved a connection to another BE (committed there) and asks us
// to point the flow at the new owner; the answer tells it when it may stop forwarding
// the strays it still receives. The REPOINTs of one connection come from the BEs it
// passes through, on different links, and a busy worker may read them out of order:
// each carries the connection's move number, and only a number above the last one
// applied counts (an older one is answered ESTALE: its sender forwards nothing any
// more, the flow points further on). Any BE of the cluster may send one (each holds
// the cluster key and could import the connection anyway); only to a BE we know.
void Worker::on_repoint(ControlConn& cc, const proto::RepointMsg& m) {
  uint32_t status = 0;
  auto it = committed_.find(m.id);
  BackendState* to = nullptr;
  BackendState* backup = nullptr;
  for (BackendState* b : snap_->backends)
    if (b->id == m.target) to = b;
  if (it == committed_.end()) {
    status = ENOENT;
  } else if (m.seq <= it->second.seq) {
    status = ESTALE;
  } else if (!to || !to->addressable()) {
    status = EHOSTUNREACH;
  } else {
    // Failover: a backup for its new owner, from the state and request the move carried
    // (the same protocol as our own handoffs, run from where the connection is now).
    backup = snap_->cfg->cluster.failover && it->second.key.family == AF_INET ? backup_for(*to)
                                                                              : nullptr;
    Mac mac = BackendState::unpack(to->mac.load(std::memory_order_relaxed));
    if (auto s = sh_.dp->forward(it->second.key, to->uid, mac, sh_.fe_mac, backup_slot(backup)); !s)
      status = uint32_t(s.error().err ? s.error().err : EIO);
  }
  if (status == ESTALE) {
    sh_.counters.inc(Counter::repoint_stale);
  } else if (status != 0) {
    sh_.counters.inc(Counter::repoint_refused);
    spdlog::warn("[w{}] REPOINT of {} to '{}' from {}: {}", index_, m.id, m.target, cc.be->id,
                 strerror(int(status)));
  } else {
    sh_.counters.inc(Counter::repoints);
    it->second.be->active.fetch_sub(1, std::memory_order_relaxed);
    to->active.fetch_add(1, std::memory_order_relaxed);
    it->second.be = to;
    it->second.seq = m.seq;
    // Moved between back-ends: the backup made for the previous owner is of no use now
    // (if its BACKUP went out; a BACKUP still due is replaced by the new one).
    if (it->second.backup && !cancel_backup(m.id)) forget_later(*it->second.backup, m.id);
    it->second.backup = backup;
    if (backup) {
      // The old backup can be this one (the ring skipped an unusable BE, or the
      // connection moved away and back within a tick): the FORGET queued for it above
      // or by that earlier move would reach it after this BACKUP and remove it,
      // leaving the connection with no backup (be_failover_test: 3 in one run).
      bool holds_it = false;
      if (auto f = forgets_.find(backup); f != forgets_.end())
        holds_it = std::erase(f->second, m.id) != 0;
      proto::BackupMsg msg{m.id, to->id, m.state, m.request};
      // Then it still holds the connection as its previous owner's, and the client's
      // copies from now on go to that entry: a BACKUP due later would replace it and
      // drop them (a gap its trim never gets past: "the held stream overflowed" in
      // the failover timeline, 3 of 10 connections in one run). It goes now.
      if (!holds_it)
        back_up_later(m.id, *backup, *to, std::move(msg), monotonic_ns());
      else if (!send_backup(*backup, msg))
        it->second.backup = nullptr;
    }
  }
  cc.link.send(proto::RepointedMsg{m.id, status, m.seq});
  if (status == 0) {
    auto e = early_closed_.find(m.id);
    if (e != early_closed_.end() && e->second.be == to) {
      mark_closed(it->second);
      release(it);
    }
    if (e != early_closed_.end()) early_closed_.erase(e);
  }
}

// A CLOSED that no REPOINT justified within a few seconds came from a BE that never
// owned the connection.
void Worker::expire_early_closed(uint64_t now) {
  constexpr uint64_t kWaitNs = 5000 * kMs;
  for (auto it = early_closed_.begin(); it != early_closed_.end();) {
    if (now - it->second.at < kWaitNs) {
      ++it;
      continue;
    }
    sh_.counters.inc(Counter::ctl_unauthorized);
    spdlog::warn("[w{}] CLOSED for handoff {} from {}, which never owned it: ignored", index_,
                 it->first, it->second.be->id);
    it = early_closed_.erase(it);
  }
}

// A connection the FE serves itself times out like one on a BE: idle between
// requests for keepalive_timeout_ms, no response byte taken by the client for
// send_timeout_ms, or a request head still incomplete header_timeout_ms after the
// last answer. Only answers count as progress, so a byte every few seconds
// (slowloris) does not keep it.
bool Worker::local_expired(ClientConn& c, uint64_t now) {
  const uint64_t progress = c.session->bytes_sent() + c.session->requests();
  if (progress != c.progress || c.progress_at == 0) {
    c.progress = progress;
    c.progress_at = now;
    return false;
  }
  const auto& cfg = *c.snap->cfg;
  uint64_t limit_ms = c.want_write        ? cfg.cluster.send_timeout_ms
                      : c.session->idle() ? cfg.cluster.keepalive_timeout_ms
                                          : cfg.frontend.header_timeout_ms;
  return now - c.progress_at > limit_ms * kMs;
}

void Worker::tick(uint64_t now) {
  for (auto& l : listeners_) l.tick(now);
  if (!early_closed_.empty()) expire_early_closed(now);
  std::vector<ClientConn*> expired;
  for (auto& [p, c] : clients_) {
    if (c->state == ClientConn::Local) {
      if (local_expired(*c, now)) expired.push_back(p);
    } else if (c->deadline && now >= c->deadline) {
      expired.push_back(p);
    }
  }
  for (ClientConn* c : expired) {
    // Handling one may free others (a failed handoff's flush can take a control link
    // down, which fails every handoff pending on it): skip those.
    if (!clients_.count(c)) continue;
    switch (c->state) {
      case ClientConn::Reading:
        sh_.counters.inc(Counter::header_timeout);
        reply_and_close(*c, 408, "header-timeout");
        break;
      case ClientConn::Handing:
        sh_.counters.inc(Counter::handoff_timeout);
        spdlog::warn("handoff of {} to {}: no READY within the lease: taken back", c->peer.str(),
                     c->be->id);
        attempt_failed(*c, true);
        break;
      case ClientConn::Closing:
        destroy(*c);
        break;
      case ClientConn::Local:
        sh_.counters.inc(Counter::local_timeouts);
        sh_.local_active.fetch_sub(1, std::memory_order_relaxed);
        destroy(*c);
        break;
    }
  }
  share_lard();
  flush_backups(now, false);
  if (index_ == 0) send_copies();
  flush_forgets();
  if (orphans_) sweep_orphans(now);
  const uint64_t dead_ns = uint64_t(snap_->cfg->cluster.dead_after_ms) * kMs;
  std::vector<BackendState*> gone;
  for (auto& [b, cc] : controls_) {
    // The link's own deadlines and redial (not for a retired BE); a failure inside
    // send() is reported here too.
    cc->link.redial(cc->retired_at == 0);
    if (cc->retired_at == 0 && cc->link.state() == proto::Link::State::Idle &&
        cc->link.peer().sin_addr.s_addr != cc->addr.s_addr)
      connect_control(*cc);  // never dialed, or a reload moved the BE
    if (const unsigned changes = cc->link.tick(now)) {
      std::vector<proto::Message> none;
      control_changed(*cc, changes, none);
    }
    // The operator's drain, passed on: a drained BE moves its keep-alive connections
    // to other BEs of their groups (multi-handoff) instead of keeping them.
    if (const bool d = b->drained.load(std::memory_order_relaxed);
        cc->up && d != cc->told_drained && cc->link.send(proto::DrainMsg{d}))
      cc->told_drained = d;
    if (cc->up) {
      if (cc->live) end_failover(*b, now);  // heard from since its failover
      uint64_t age = now - cc->link.last_heard();
      b->heartbeat_age_ms.store(int64_t(age / kMs), std::memory_order_relaxed);
      // A BE that stops talking (hung, stopped, overloaded) is taken out of rotation
      // while its connection is still open; the next frame brings it back.
      if (cc->live && age > dead_ns) {
        // Frames that arrived while this worker was busy (or starved of CPU) are not
        // silence: read them first. Failover acts on this verdict.
        std::vector<proto::Message> msgs;
        const unsigned changes = cc->link.on_events(EPOLLIN, msgs, now);
        if (changes || !msgs.empty()) control_changed(*cc, changes, msgs);
        if (!cc->up) continue;
        age = now - cc->link.last_heard();
      }
      if (cc->live && age > dead_ns) {
        sh_.counters.inc(Counter::ctl_stale);
        spdlog::warn("[w{}] {} down: no heartbeat for {} ms", index_, b->id, age / kMs);
        set_live(*cc, false);
        maybe_fail_over(*cc, now);
      }
    }
    if (cc->retired_at) {
      set_live(*cc, false);
      bool busy = std::any_of(pending_.begin(), pending_.end(),
                              [&](auto& p) { return p.second->be == b; }) ||
                  std::any_of(committed_.begin(), committed_.end(),
                              [&](auto& p) { return p.second.be == b; });
      if (!busy || now - cc->retired_at > kRetireGraceNs) gone.push_back(b);
    }
  }
  for (BackendState* b : gone) {
    auto& cc = *controls_.at(b);
    if (cc.link.fd() >= 0) control_down(cc, "removed from the configuration");
    controls_.erase(b);
  }
}

}  // namespace tcpha::fe
