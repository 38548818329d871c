#include "fe/worker.hpp"

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
#include "http/request.hpp"
#include "http/static_files.hpp"

namespace tcpha::fe {
namespace {

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kTickNs = 20 * kMs;          // timeouts are checked this often
constexpr uint64_t kCloseLingerNs = 2000 * kMs; // after an error reply, wait for the client's FIN
constexpr uint64_t kBackoffMinMs = 50, kBackoffMaxMs = 2000;

}  // namespace

struct Worker::ClientConn : Item {
  enum State { Reading, Handing, Closing } state = Reading;
  ClientConn() : Item(Client) {}
  UniqueFd fd;
  sockaddr_in peer{}, local{};
  std::string buf;
  uint64_t deadline = 0;      // header timeout, handoff timeout or close linger
  uint64_t request_done = 0;  // when the whole head had arrived
  uint64_t handoff_sent = 0;
  uint64_t id = 0;
  uint32_t be = 0;
  tcpha_flow_key key{};
};

struct Worker::ControlConn : Item {
  enum State { Idle, Connecting, Handshake, Up } state = Idle;
  ControlConn(uint32_t be_, const std::array<uint8_t, 32>& key, const std::string& self)
      : Item(Control), be(be_), session(key, proto::Role::Fe, self) {}
  uint32_t be;
  UniqueFd fd;
  proto::Session session;
  std::string in, out;
  uint64_t retry_at = 0;
  uint64_t backoff_ms = kBackoffMinMs;
  bool want_out = false;
};

Worker::Worker(Shared& shared, uint32_t index)
    : sh_(shared), index_(index), sched_(shared), ep_(epoll_create1(EPOLL_CLOEXEC)),
      wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  std::array<uint8_t, 32> key{};
  std::copy_n(sh_.cfg->cluster.key.begin(), key.size(), key.begin());
  for (uint32_t i = 0; i < sh_.backends.size(); ++i)
    controls_.push_back(std::make_unique<ControlConn>(i, key, sh_.cfg->frontend.id));
  epoll_set(EPOLL_CTL_ADD, wake_.get(), EPOLLIN, &wake_item_);
}

Worker::~Worker() {
  // Connections still being handed off go back to the FE's stack and are refused.
  for (auto& [id, c] : pending_) {
    (void)handoff::leave_repair(c->fd.get());
    (void)sh_.dp->remove(c->key);
  }
  for (auto& cc : controls_)
    if (cc->state == ControlConn::Up) sh_.backends[cc->be]->links_up.fetch_sub(1);
}

void Worker::epoll_set(int op, int fd, uint32_t events, Item* item) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = item;
  if (epoll_ctl(ep_.get(), op, fd, &ev) != 0 && op != EPOLL_CTL_DEL)
    spdlog::error("epoll_ctl({}, fd {}): {}", op, fd, strerror(errno));
}

Status Worker::open_listeners() {
  for (uint16_t port : sh_.cfg->cluster.ports) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return sys_error("socket");
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = sh_.cfg->cluster.vip_addr;
    a.sin_port = htons(port);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      return sys_error("bind " + endpoint_str(a));
    if (listen(fd.get(), 4096) != 0) return sys_error("listen " + endpoint_str(a));
    epoll_set(EPOLL_CTL_ADD, fd.get(), EPOLLIN, &listener_item_);
    listeners_.push_back(std::move(fd));
  }
  return {};
}

void Worker::stop() {
  uint64_t one = 1;
  if (write(wake_.get(), &one, sizeof one) < 0) spdlog::warn("worker wake: {}", strerror(errno));
}

void Worker::run() {
  for (auto& cc : controls_) connect_control(*cc);
  epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep_.get(), evs, 256, int(kTickNs / kMs));
    if (n < 0 && errno != EINTR) {
      spdlog::error("epoll_wait: {}", strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      auto* item = static_cast<Item*>(evs[i].data.ptr);
      switch (item->kind) {
        case Item::Wake:
          return;
        case Item::Listener:
          for (auto& l : listeners_) on_accept(l.get());
          break;
        case Item::Client:
          on_client(*static_cast<ClientConn*>(item), evs[i].events);
          break;
        case Item::Control:
          on_control(*static_cast<ControlConn*>(item), evs[i].events);
          break;
      }
    }
    uint64_t now = now_ns();
    if (now >= next_tick_) {
      tick(now);
      next_tick_ = now + kTickNs;
    }
  }
}

void Worker::on_accept(int lfd) {
  for (int burst = 0; burst < 64; ++burst) {
    auto c = std::make_unique<ClientConn>();
    socklen_t len = sizeof c->peer;
    c->fd.reset(accept4(lfd, reinterpret_cast<sockaddr*>(&c->peer), &len,
                        SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!c->fd.valid()) return;
    len = sizeof c->local;
    getsockname(c->fd.get(), reinterpret_cast<sockaddr*>(&c->local), &len);
    sh_.counters.inc(Counter::accepted);
    c->deadline = now_ns() + sh_.cfg->frontend.header_timeout_ms * kMs;
    c->buf.reserve(2048);
    epoll_set(EPOLL_CTL_ADD, c->fd.get(), EPOLLIN | EPOLLRDHUP, c.get());
    ClientConn* raw = c.get();
    clients_.emplace(raw, std::move(c));
    on_client(*raw, EPOLLIN);  // the request often arrives with the ACK
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
  const auto& fcfg = sh_.cfg->frontend;
  for (;;) {
    size_t old = c.buf.size();
    // Never read more than one byte past the limit: enough for the parser to say 431.
    size_t room = fcfg.max_header_bytes + 1 - std::min<size_t>(old, fcfg.max_header_bytes);
    size_t want = std::min<size_t>(room, 16384);
    c.buf.resize(old + want);
    ssize_t n = recv(c.fd.get(), c.buf.data() + old, want, 0);
    if (n <= 0) {
      c.buf.resize(old);
      if (n < 0 && errno == EAGAIN) break;
      sh_.counters.inc(Counter::client_gone);
      destroy(c);
      return;
    }
    c.buf.resize(old + size_t(n));
    if (size_t(n) < want || c.buf.size() > fcfg.max_header_bytes) break;
  }
  if (c.buf.empty()) return;

  http::Request req;
  http::Limits lim;
  lim.max_head = fcfg.max_header_bytes;
  auto r = http::parse_request(c.buf, req, lim);
  switch (r.status) {
    case http::ParseStatus::NeedMore:
      return;
    case http::ParseStatus::Error: {
      bool large = r.http_status == 414 || r.http_status == 431;
      sh_.counters.inc(large ? Counter::too_large : Counter::bad_request);
      spdlog::debug("bad request from {}: {} at byte {} ({})", endpoint_str(c.peer),
                    r.http_status, r.error_pos, r.reason);
      reply_and_close(c, r.http_status);
      return;
    }
    case http::ParseStatus::Complete:
      break;
  }
  c.request_done = now_ns();
  int be = sched_.choose(req, [this](uint32_t i) {
    return controls_[i]->state == ControlConn::Up &&
           sh_.backends[i]->mac.load(std::memory_order_relaxed) != 0;
  });
  if (be < 0) {
    sh_.counters.inc(Counter::no_backend);
    reply_and_close(c, 503);
    return;
  }
  start_handoff(c, uint32_t(be));
}

void Worker::start_handoff(ClientConn& c, uint32_t be) {
  c.key = datapath::make_key(c.peer.sin_addr.s_addr, c.peer.sin_port, c.local.sin_addr.s_addr,
                             c.local.sin_port);
  // 1. HOLD: from here the client's packets are dropped (it retransmits them).
  if (auto s = sh_.dp->hold(c.key); !s) {
    bool full = s.error().err == E2BIG;
    sh_.counters.inc(full ? Counter::flow_table_full : Counter::handoff_failed);
    if (!full) spdlog::warn("hold {}: {}", endpoint_str(c.peer), s.error().message());
    reply_and_close(c, 503);
    return;
  }
  // 2. Export; the socket stays in repair mode, so closing it later is silent.
  epoll_set(EPOLL_CTL_DEL, c.fd.get(), 0, &c);
  auto st = handoff::export_state(c.fd.get(), c.local, c.peer, c.buf);
  if (!st) {
    spdlog::warn("export {}: {}", endpoint_str(c.peer), st.error().message());
    (void)sh_.dp->remove(c.key);
    sh_.counters.inc(Counter::handoff_failed);
    epoll_set(EPOLL_CTL_ADD, c.fd.get(), EPOLLIN | EPOLLRDHUP, &c);
    reply_and_close(c, 503);
    return;
  }
  ControlConn& cc = *controls_[be];
  c.id = (uint64_t(index_) << 48) | next_id_++;
  c.be = be;
  proto::HandoffMsg msg{c.id, *st, std::move(c.buf)};
  c.buf.clear();
  if (!cc.session.send(msg, cc.out)) {
    c.buf = std::move(msg.request);
    abort_handoff(c, false);
    return;
  }
  c.state = ClientConn::Handing;
  c.handoff_sent = now_ns();
  sh_.export_latency.record_ns(c.handoff_sent - c.request_done);
  c.deadline = c.handoff_sent + sh_.cfg->frontend.handoff_timeout_ms * kMs;
  pending_[c.id] = &c;
  flush(cc);
}

void Worker::on_ready(ControlConn& cc, uint64_t id, uint32_t status) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // timed out already; the BE drops its import
  ClientConn& c = *it->second;
  pending_.erase(it);
  BackendState& b = *sh_.backends[c.be];
  uint64_t now = now_ns();
  sh_.ready_latency.record_ns(now - c.handoff_sent);
  if (status != 0) {
    spdlog::warn("{} refused handoff of {}: {}", b.cfg->id, endpoint_str(c.peer),
                 strerror(int(status)));
    abort_handoff(c, false);
    return;
  }
  // 3. FORWARD, then close silently (repair mode): the BE owns the connection now.
  Mac be_mac = BackendState::unpack(b.mac.load(std::memory_order_relaxed));
  if (auto s = sh_.dp->forward(c.key, c.be, be_mac, sh_.fe_mac); !s) {
    spdlog::warn("forward {}: {}", endpoint_str(c.peer), s.error().message());
    abort_handoff(c, true);
    return;
  }
  // 4. COMMIT: the BE leaves repair mode and answers. Our socket is still in repair
  // mode and the client's packets no longer reach it, so closing it after COMMIT is
  // just as silent and keeps the close off the BE's critical path.
  cc.session.send(proto::CommitMsg{id}, cc.out);
  flush(cc);
  sh_.handoff_latency.record_ns(now_ns() - c.request_done);
  c.fd.reset();
  sh_.counters.inc(Counter::handoff_ok);
  b.handoffs.fetch_add(1, std::memory_order_relaxed);
  b.active.fetch_add(1, std::memory_order_relaxed);
  committed_[id] = Committed{c.key, c.be};
  clients_.erase(&c);
}

void Worker::abort_handoff(ClientConn& c, bool tell_be) {
  pending_.erase(c.id);
  ControlConn& cc = *controls_[c.be];
  if (tell_be && cc.session.established()) {
    cc.session.send(proto::AbortMsg{c.id}, cc.out);
    flush(cc);
  }
  sh_.counters.inc(Counter::handoff_failed);
  sh_.backends[c.be]->failures.fetch_add(1, std::memory_order_relaxed);
  // The connection is still ours: out of repair, unheld, refused politely.
  if (auto s = handoff::leave_repair(c.fd.get()); !s) spdlog::warn("{}", s.error().message());
  (void)sh_.dp->remove(c.key);
  epoll_set(EPOLL_CTL_ADD, c.fd.get(), EPOLLIN | EPOLLRDHUP, &c);
  reply_and_close(c, 503);
}

void Worker::reply_and_close(ClientConn& c, int status) {
  std::string reply = http::simple_reply(status, true);
  // A few hundred bytes into an empty socket buffer: one send is enough.
  if (send(c.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
    destroy(c);
    return;
  }
  shutdown(c.fd.get(), SHUT_WR);
  c.state = ClientConn::Closing;
  c.deadline = now_ns() + kCloseLingerNs;
  c.buf.clear();
}

void Worker::destroy(ClientConn& c) {
  if (c.fd.valid()) epoll_set(EPOLL_CTL_DEL, c.fd.get(), 0, &c);
  clients_.erase(&c);
}

void Worker::connect_control(ControlConn& cc) {
  const auto* be = sh_.backends[cc.be]->cfg;
  cc.fd.reset(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(cc.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = be->addr;
  a.sin_port = htons(sh_.cfg->cluster.control_port);
  cc.in.clear();
  cc.out.clear();
  std::array<uint8_t, 32> key{};
  std::copy_n(sh_.cfg->cluster.key.begin(), key.size(), key.begin());
  cc.session = proto::Session(key, proto::Role::Fe, sh_.cfg->frontend.id);
  if (connect(cc.fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 &&
      errno != EINPROGRESS) {
    control_down(cc, std::string("connect: ") + strerror(errno));
    return;
  }
  cc.state = ControlConn::Connecting;
  cc.want_out = true;
  epoll_set(EPOLL_CTL_ADD, cc.fd.get(), EPOLLIN | EPOLLOUT | EPOLLRDHUP, &cc);
}

void Worker::control_down(ControlConn& cc, const std::string& why) {
  BackendState& b = *sh_.backends[cc.be];
  if (cc.state == ControlConn::Up) {
    b.links_up.fetch_sub(1);
    spdlog::warn("[w{}] {} down: {}", index_, b.cfg->id, why);
  } else {
    spdlog::debug("[w{}] {} unreachable: {}", index_, b.cfg->id, why);
  }
  sh_.counters.inc(Counter::ctl_failures);
  if (cc.fd.valid()) epoll_set(EPOLL_CTL_DEL, cc.fd.get(), 0, &cc);
  cc.fd.reset();
  cc.state = ControlConn::Idle;
  cc.retry_at = now_ns() + cc.backoff_ms * kMs;
  cc.backoff_ms = std::min(cc.backoff_ms * 2, kBackoffMaxMs);
  // Handoffs in flight to it are aborted; connections it owns are no longer counted
  // (it cannot report them closed any more; the datapath ages their flows out).
  std::vector<ClientConn*> victims;
  for (auto& [id, c] : pending_)
    if (c->be == cc.be) victims.push_back(c);
  for (ClientConn* c : victims) abort_handoff(*c, false);
  for (auto it = committed_.begin(); it != committed_.end();) {
    if (it->second.be == cc.be) {
      b.active.fetch_sub(1, std::memory_order_relaxed);
      it = committed_.erase(it);
    } else {
      ++it;
    }
  }
}

void Worker::flush(ControlConn& cc) {
  while (!cc.out.empty()) {
    ssize_t n = send(cc.fd.get(), cc.out.data(), cc.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN) break;
      control_down(cc, std::string("send: ") + strerror(errno));
      return;
    }
    cc.out.erase(0, size_t(n));
  }
  bool want = !cc.out.empty();
  if (want != cc.want_out) {
    cc.want_out = want;
    epoll_set(EPOLL_CTL_MOD, cc.fd.get(), EPOLLIN | EPOLLRDHUP | (want ? uint32_t(EPOLLOUT) : 0u), &cc);
  }
}

void Worker::on_control(ControlConn& cc, uint32_t events) {
  if (cc.state == ControlConn::Connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(cc.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      control_down(cc, std::string("connect: ") + strerror(err ? err : ECONNREFUSED));
      return;
    }
    cc.state = ControlConn::Handshake;
    cc.session.start(cc.out);
  }
  if (events & EPOLLIN) {
    char buf[65536];
    for (;;) {
      ssize_t n = recv(cc.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        cc.in.append(buf, size_t(n));
        continue;
      }
      if (n < 0 && errno == EAGAIN) break;
      control_down(cc, n == 0 ? "connection closed by back-end" : strerror(errno));
      return;
    }
    std::vector<proto::Message> msgs;
    Status s = cc.session.feed(cc.in, msgs);
    if (cc.state == ControlConn::Handshake && cc.session.established()) {
      BackendState& b = *sh_.backends[cc.be];
      // The neighbour entry exists now that we talked to it; DR needs its MAC.
      if (auto mac = datapath::neighbour_mac(b.cfg->addr.s_addr)) {
        b.mac.store(BackendState::pack(*mac), std::memory_order_relaxed);
      } else {
        control_down(cc, "no ARP entry for " + b.cfg->address);
        return;
      }
      if (cc.session.peer_id() != b.cfg->id) {
        control_down(cc, "peer says it is '" + cc.session.peer_id() + "'");
        return;
      }
      cc.state = ControlConn::Up;
      cc.backoff_ms = kBackoffMinMs;
      b.links_up.fetch_add(1);
      sh_.counters.inc(Counter::ctl_connects);
      spdlog::info("[w{}] {} up ({})", index_, b.cfg->id, mac_str(BackendState::unpack(b.mac)));
    }
    for (auto& m : msgs) on_message(cc, m);
    if (!s) {
      sh_.counters.inc(Counter::ctl_bad_frames);
      control_down(cc, "bad frame: " + s.error().message());
      return;
    }
  }
  if (cc.fd.valid() && (events & EPOLLOUT)) flush(cc);
  if (cc.fd.valid() && (events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN))
    control_down(cc, "connection error");
}

void Worker::on_message(ControlConn& cc, proto::Message& m) {
  if (auto* r = std::get_if<proto::ReadyMsg>(&m)) {
    on_ready(cc, r->id, r->status);
  } else if (auto* cl = std::get_if<proto::ClosedMsg>(&m)) {
    sh_.counters.inc(Counter::be_closed);
    auto it = committed_.find(cl->id);
    if (it == committed_.end()) return;
    (void)sh_.dp->mark_closing(it->second.key, now_ns());
    sh_.backends[it->second.be]->active.fetch_sub(1, std::memory_order_relaxed);
    committed_.erase(it);
  } else if (std::holds_alternative<proto::HeartbeatMsg>(m)) {
    // Load reports: used by the policies once they weigh BE load.
  } else {
    spdlog::warn("[w{}] unexpected message type {} from back-end", index_,
                 int(proto::type_of(m)));
  }
}

void Worker::tick(uint64_t now) {
  std::vector<ClientConn*> expired;
  for (auto& [p, c] : clients_)
    if (c->deadline && now >= c->deadline) expired.push_back(p);
  for (ClientConn* c : expired) {
    switch (c->state) {
      case ClientConn::Reading:
        sh_.counters.inc(Counter::header_timeout);
        reply_and_close(*c, 408);
        break;
      case ClientConn::Handing:
        sh_.counters.inc(Counter::handoff_timeout);
        spdlog::warn("handoff of {} to {}: no READY in {} ms", endpoint_str(c->peer),
                     sh_.backends[c->be]->cfg->id, sh_.cfg->frontend.handoff_timeout_ms);
        abort_handoff(*c, true);
        break;
      case ClientConn::Closing:
        destroy(*c);
        break;
    }
  }
  for (auto& cc : controls_)
    if (cc->state == ControlConn::Idle && now >= cc->retry_at) connect_control(*cc);
}

}  // namespace tcpha::fe
