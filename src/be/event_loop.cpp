// The agent's event loop: one epoll set, one thread; the timer work in tick().
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include "be/agent_core.hpp"
#include "common/access_log.hpp"
#include "common/clock.hpp"
#include "common/net.hpp"

namespace tcpha::be {

Agent::Agent(const config::Config& cfg, const config::BackendSection& self)
    : cfg_(cfg), self_(self), ep_(epoll_create1(EPOLL_CLOEXEC)) {
  std::copy_n(cfg.cluster.key.begin(), key_.size(), key_.begin());
}

void Agent::set(int op, int fd, uint32_t ev, Item* it) {
  epoll_event e{};
  e.events = ev;
  e.data.ptr = it;
  if (epoll_ctl(ep_.get(), op, fd, &e) != 0 && op != EPOLL_CTL_DEL)
    spdlog::error("epoll_ctl: {}", strerror(errno));
}

Status Agent::open(int sigfd, const std::string& ifname) {
  Closings::Options co;
  co.stall_ns = uint64_t(cfg_.cluster.send_timeout_ms) * kMs;
  co.linger_ns = kLingerNs;
  closings_ = std::make_unique<Closings>(ep_.get(), co, [this](const ClosedReport& r) { on_closed(r); });
  if (!self_.upstream.empty()) {
    RelayOptions o;
    o.upstream = *parse_socket_address(self_.upstream);  // validated with the config
    o.proxy_protocol = self_.proxy_protocol;
    o.x_forwarded_for = self_.x_forwarded_for;
    o.limits.max_head = cfg_.frontend.max_header_bytes;  // the FE's limit on the first
    o.connect_timeout_ns = uint64_t(self_.upstream_timeout_ms) * kMs;
    o.idle_timeout_ns = kRelayIdleNs;
    o.send_timeout_ns = uint64_t(cfg_.cluster.send_timeout_ms) * kMs;
    o.mark_done = cfg_.cluster.failover;  // the egress guard is on (open_moves)
    auto r = Relays::create(
        o,
        [this](const ClosedReport& r) { on_closed(r); }, ep_.get(), closings_.get());
    if (!r) return r.error();
    relays_ = std::move(*r);
  } else {
    docroot_.reset(::open(self_.docroot.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!docroot_.valid()) return sys_error("docroot " + self_.docroot);
    if (self_.cache_mb > 0) cache_ = std::make_unique<serve::FileCache>(uint64_t(self_.cache_mb) << 20);
    access_log_ = open_access_log(self_.access_log);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = self_.addr;
  a.sin_port = htons(cfg_.cluster.control_port);
  auto l = ListenSocket::open(a, 128);
  if (!l) return Error{l.error().err, "control port: " + l.error().what};
  listener_ = std::move(*l);
  listener_.attach(ep_.get(), &listener_item_);
  sigfd_ = sigfd;
  set(EPOLL_CTL_ADD, sigfd, EPOLLIN, &signal_item_);
  if (auto s = open_moves(ifname); !s) return s;
  // A moved connection keeps its congestion window (handoff/cwnd_carry.hpp). Without
  // the program, moves still work; the connections they move start with 10 segments.
  if (auto c = handoff::CwndCarry::attach(); c) {
    cwnd_carry_ = std::move(*c);
    spdlog::info("imported connections keep their congestion window (sock_ops on {})",
                 cwnd_carry_->cgroup());
  } else {
    spdlog::warn("imported connections start with the initial congestion window: {}",
                 c.error().message());
  }
  if (auto s = open_card(ifname); !s) return s;
  return open_backup(int(if_nametoindex(ifname.c_str())));
}

void Agent::run() {
  epoll_event evs[256];
  uint64_t next_tick = 0;
  while (!stop_) {
    // The tick sends heartbeats, so it runs at least twice per heartbeat interval.
    const int tick_ms = int(std::clamp<uint32_t>(cfg_.cluster.heartbeat_ms / 2, 5, 100));
    spare_sockets_.refill();  // after the last round's writes, before waiting
    int n = epoll_wait(ep_.get(), evs, 256, awaiting_ack_.empty() ? tick_ms : 1);
    const uint64_t woke = n > 0 ? monotonic_ns() : 0;
    proto::WriteBatch batch;  // control frames of this round: one write per link
    for (int i = 0; i < n; ++i) {
      if (Relays::owns(evs[i].data.u64)) {
        relays_->on_event(evs[i].data.u64, evs[i].events, woke);
        continue;
      }
      if (Closings::owns(evs[i].data.u64)) {
        closings_->on_event(evs[i].data.u64, woke);
        continue;
      }
      auto* it = static_cast<Item*>(evs[i].data.ptr);
      switch (it->kind) {
        case Item::Listener:
          on_accept();
          break;
        case Item::Signal: {
          signalfd_siginfo si{};
          if (read(sigfd_, &si, sizeof si) == sizeof si) {
            if (si.ssi_signo == SIGHUP)
              reload();
            else
              begin_drain();
          }
          break;
        }
        case Item::Control:
          on_control(*static_cast<ControlConn*>(it), evs[i].events);
          break;
        case Item::Http:
          on_http(*static_cast<HttpConn*>(it), evs[i].events);
          break;
        case Item::Peer:
          on_peer(*static_cast<PeerLink*>(it), evs[i].events);
          break;
        case Item::Answers:
          on_answers();
          break;
        case Item::Vip:
          on_vip_accept(*static_cast<VipListener*>(it));
          break;
      }
    }
    dropped_.clear();  // no event of this batch refers to them any more
    uint64_t now = monotonic_ns();
    if (!awaiting_ack_.empty()) retry_awaiting_ack(now);
    if (now >= next_tick) {
      tick(now);
      next_tick = now + uint64_t(tick_ms) * kMs;
    }
  }
}

void Agent::tick(uint64_t now) {
  expire_imports(now);
  http_timeouts(now);
  if (relays_) relays_->tick(now);
  closings_->tick(now);
  tick_moves(now);
  tick_card(now);
  if (held_) tick_backup(now);
  if (draining_) drain_tick(now);
  tick_controls(now);  // and heartbeats
}

// A served connection has ended (at once, or after its lingering close): the FE may
// free its flow.
void Agent::on_closed(const ClosedReport& r) {
  report_closed(r);
  active_.fetch_sub(1);
}

}  // namespace tcpha::be
