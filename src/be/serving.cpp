// Handed-off connections served by the built-in static server (docroot mode).
#include <sys/socket.h>

#include <vector>

#include "be/agent_core.hpp"
#include "common/clock.hpp"

namespace tcpha::be {

void Agent::start_http(UniqueFd fd, uint64_t control_id, uint64_t handoff_id) {
  auto h = std::make_unique<HttpConn>(docroot_.get(), cache_.get());
  h->fd = std::move(fd);
  h->handoff_id = handoff_id;
  h->control_id = control_id;
  h->last_active = monotonic_ns();
  inc(Counter::imported);
  active_.fetch_add(1);
  set(EPOLL_CTL_ADD, h->fd.get(), EPOLLIN | EPOLLRDHUP, h.get());
  HttpConn* raw = h.get();
  conns_.emplace(raw, std::move(h));
  on_http(*raw, EPOLLIN);  // the request is already in the receive queue
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

void Agent::close_idle_http(uint64_t now) {
  std::vector<HttpConn*> idle;
  for (auto& [p, h] : conns_)
    if (!h->writing && now - h->last_active > kKeepAliveIdleNs) idle.push_back(p);
  for (HttpConn* h : idle) close_http(*h);
}

}  // namespace tcpha::be
