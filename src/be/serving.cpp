// Handed-off connections served by the built-in static server (docroot mode).
#include <sys/socket.h>

#include <vector>

#include "be/agent_core.hpp"
#include "common/clock.hpp"

namespace tcpha::be {
void Agent::start_http(UniqueFd fd, uint64_t control_id, uint64_t handoff_id,
                       const PendingImport& imp, std::string bytes, uint64_t skip) {
  auto h = std::make_unique<HttpConn>(docroot_.get(), cache_.get());
  h->fd = std::move(fd);
  h->handoff_id = handoff_id;
  h->control_id = control_id;
  h->last_active = monotonic_ns();
  h->move_seq = imp.seq;
  h->routed_by_sender = imp.with_request;
  if (router_ && imp.rule >= 0 && size_t(imp.rule) < router_->rule_count()) h->rule = imp.rule;
  h->session.preload(std::move(bytes));
  if (skip) h->session.skip_output(skip);
  h->session.set_mark_done(cfg_.cluster.failover);
  // Failover: if this agent is killed, its kernel drops the socket at once instead of
  // keeping an orphan on the client's 4-tuple (common/net.hpp); undone by mark_done.
  if (cfg_.cluster.failover) abort_on_close(h->fd.get());
  if (imp.peer_fin) h->session.set_peer_fin();
  h->local = imp.local;
  h->peer = imp.peer;
  if (access_log_) {
    // Which back-end answered each request, and the connection's move number here
    // (0: the FE handed it here; n: it came by its n-th move between back-ends).
    HttpConn* conn = h.get();
    h->session.set_on_answer([this, conn](const http::Request& req, int status, uint64_t bytes) {
      access_log_->info("{} \"{} {} HTTP/1.{}\" {} {} backend={} move={}", conn->peer.str(),
                        req.method, req.target, req.version_minor, status, bytes, self_.id,
                        conn->move_seq);
    });
  }
  if (router_) {
    HttpConn* conn = h.get();
    h->session.set_router([this, conn](const http::Request& req) { return route_later(*conn, req); });
  }
  active_.fetch_add(1);
  set(EPOLL_CTL_ADD, h->fd.get(), EPOLLIN | EPOLLRDHUP, h.get());
  HttpConn* raw = h.get();
  conns_.emplace(raw, std::move(h));
  on_http(*raw, 0);  // serve the request the HANDOFF brought
}

void Agent::on_http(HttpConn& h, uint32_t events) {
  using Want = serve::StaticSession::Want;
  uint64_t now = monotonic_ns();
  h.last_active = now;
  if (events & EPOLLERR) {
    close_http(h, End::Failed);
    return;
  }
  uint64_t sent = h.session.bytes_sent(), requests = h.session.requests(),
           bad = h.session.bad_requests();
  // No event (a connection just imported): serve what is buffered, without a read
  // that would only say EAGAIN.
  Want w = (events & EPOLLIN) && !(events & EPOLLOUT) ? h.session.on_readable(h.fd.get())
                                                      : h.session.on_writable(h.fd.get());
  inc(Counter::bytes_sent, h.session.bytes_sent() - sent);
  inc(Counter::requests, h.session.requests() - requests);
  inc(Counter::bad_requests, h.session.bad_requests() - bad);
  if (w == Want::Close) {
    close_http(h, h.session.failed() ? End::Failed : End::Graceful);
    return;
  }
  if (w == Want::Move) {  // the next request belongs to another back-end
    if (h.writing) {
      h.writing = false;
      set(EPOLL_CTL_MOD, h.fd.get(), EPOLLIN | EPOLLRDHUP, &h);
    }
    start_move(h, now);
    return;
  }
  // The header timeout runs from the first byte of a request head, however slowly
  // the rest trickles in (one byte must not buy another keep-alive period).
  if (!h.session.partial_request()) h.head_started = 0;
  else if (!h.head_started) h.head_started = now;
  bool writing = w == Want::Write;
  if (writing != h.writing) {
    h.writing = writing;
    if (writing) {  // the send timeout counts from here
      h.ack_progress = now;
      h.acked = tcp_bytes_acked(h.fd.get());
      h.next_ack_check = now + kAckCheckNs;
    }
    set(EPOLL_CTL_MOD, h.fd.get(), writing ? uint32_t(EPOLLOUT) : EPOLLIN | EPOLLRDHUP, &h);
  }
}

void Agent::close_http(HttpConn& h, End how) {
  set(EPOLL_CTL_DEL, h.fd.get(), 0, &h);
  // Failover: our egress guard drops the FIN/RST of sockets a killed agent leaves to
  // the kernel; this end is ours (the FIN below or in closings_, an RST, or the close).
  if (cfg_.cluster.failover && !h.session.marked_done()) mark_done(h.fd.get());
  ClosedReport r{h.control_id, h.handoff_id, h.session.bytes_sent(), h.session.bytes_received(),
                 h.local, h.peer, h.move_seq};
  if (how == End::Graceful) {
    // FIN after the last byte; reported closed when the connection is over.
    closings_->close(std::move(h.fd), r, h.session.peer_closed(), monotonic_ns());
    conns_.erase(&h);
    return;
  }
  if (how == End::Reset) {
    linger l{1, 0};
    setsockopt(h.fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  conns_.erase(&h);  // closes the socket
  on_closed(r);
}

// Keep-alive idle, header and send timeouts of the built-in server's connections.
void Agent::http_timeouts(uint64_t now) {
  const uint64_t keepalive = uint64_t(cfg_.cluster.keepalive_timeout_ms) * kMs;
  const uint64_t header = uint64_t(cfg_.frontend.header_timeout_ms) * kMs;
  const uint64_t send = uint64_t(cfg_.cluster.send_timeout_ms) * kMs;
  std::vector<std::pair<HttpConn*, Counter>> due;  // Counter::count: keep-alive idle
  for (auto& [p, h] : conns_) {
    if (h->move.state() != handoff::Sender::State::Idle || h->awaiting_ack) continue;  // moving
    if (h->writing) {
      // A client that stopped reading acknowledges nothing: its response would hold
      // the connection (and its file) for ever.
      if (now < h->next_ack_check) continue;
      h->next_ack_check = now + kAckCheckNs;
      uint64_t acked = tcp_bytes_acked(h->fd.get());
      if (acked != h->acked) {
        h->acked = acked;
        h->ack_progress = now;
      } else if (now - h->ack_progress > send) {
        due.emplace_back(p, Counter::send_timeouts);
      }
    } else if (h->head_started && now - h->head_started > header) {
      due.emplace_back(p, Counter::header_timeouts);
    } else if (!h->head_started && now - h->last_active > keepalive) {
      due.emplace_back(p, Counter::count);
    }
  }
  for (auto [h, why] : due) {
    if (why != Counter::count) inc(why);
    close_http(*h, why == Counter::send_timeouts ? End::Reset : End::Graceful);
  }
}

}  // namespace tcpha::be
