// The agent's control links: the FE workers connect to the control port; each link
// carries HANDOFF/COMMIT/ABORT in and READY/CLOSED/HEARTBEAT out.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "be/agent_core.hpp"
#include "common/io.hpp"

namespace tcpha::be {

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

// Lets the FE free the flow early (ARCHITECTURE.md, teardown).
void Agent::report_closed(uint64_t control_id, uint64_t handoff_id, uint64_t sent,
                          uint64_t received) {
  if (auto it = controls_.find(control_id); it != controls_.end() && it->second->session.established()) {
    it->second->session.send(proto::ClosedMsg{handoff_id, sent, received}, it->second->out);
    flush(*it->second);
  }
}

// Heartbeats: the FE marks a BE down when they stop, even if the TCP connection
// stays open (a stopped or hung agent). They carry the load for the policies.
void Agent::send_heartbeats(uint64_t now) {
  if (now < next_heartbeat_) return;
  next_heartbeat_ = now + uint64_t(cfg_.cluster.heartbeat_ms) * kMs;
  uint32_t cpu = cpu_.sample(now);
  cpu_permille_.store(cpu, std::memory_order_relaxed);
  proto::HeartbeatMsg hb{now, uint32_t(std::max<int64_t>(0, active_.load())), cpu,
                         cache_hit_permille()};
  std::vector<ControlConn*> links;
  for (auto& [id, cc] : controls_)
    if (cc->session.established()) links.push_back(cc.get());
  for (ControlConn* cc : links) {
    cc->session.send(hb, cc->out);
    flush(*cc);
  }
}

}  // namespace tcpha::be
