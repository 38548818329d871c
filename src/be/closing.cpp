#include "be/closing.hpp"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <vector>

namespace tcpha::be {
namespace {

constexpr uint64_t kTag = uint64_t{1} << 62;  // see Closings::owns()
// tcpi_state values (the kernel's enum in include/net/tcp_states.h, not exported by
// <linux/tcp.h>; glibc's <netinet/tcp.h> clashes with <linux/tcp.h>).
constexpr int kTcpFinWait2 = 5;
constexpr int kTcpClose = 7;
// How often tick() looks at each socket: a state change raises an event, but
// acknowledgements alone do not (EPOLLOUT is not watched), and progress only needs
// to be seen once per second against limits of many seconds.
constexpr uint64_t kCheckEveryNs = 1'000'000'000;
// Reads per event: a client pouring bytes in cannot hold the loop; the rest is read
// on the next tick.
constexpr int kReadsPerTurn = 16;

struct SocketState {
  int state = kTcpClose;
  uint64_t bytes_acked = 0;
};

SocketState socket_state(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  SocketState s;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0) {
    s.state = info.tcpi_state;
    s.bytes_acked = info.tcpi_bytes_acked;
  }
  return s;
}

}  // namespace

uint64_t tcp_bytes_acked(int fd) { return socket_state(fd).bytes_acked; }

Closings::Closings(int epoll_fd, Options opts, ClosedFn closed)
    : ep_(epoll_fd), opts_(opts), closed_(std::move(closed)) {}

Closings::~Closings() = default;

void Closings::close(UniqueFd fd, const ClosedReport& report, bool peer_fin, uint64_t now_ns) {
  // FIN after the last byte (no-op when already sent). With failover on, the caller
  // has marked the socket done (mark_done) so that the egress guard lets this FIN,
  // and a reset in finish(), through.
  shutdown(fd.get(), SHUT_WR);
  uint64_t id = next_id_++;
  Conn& c = conns_[id];
  c.fd = std::move(fd);
  c.report = report;
  c.peer_fin = peer_fin;
  c.since = c.last_progress = now_ns;
  c.next_check = now_ns + kCheckEveryNs;
  epoll_event e{};
  e.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  e.data.u64 = kTag | id;
  epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd.get(), &e);
  if (over(c, now_ns)) finish(id, false);
}

void Closings::on_event(uint64_t tag, uint64_t now_ns) {
  uint64_t id = tag & ~kTag;
  auto it = conns_.find(id);
  if (it != conns_.end() && over(it->second, now_ns)) finish(id, false);
}

bool Closings::over(Conn& c, uint64_t now_ns) {
  static char sink[65536];  // MSG_TRUNC: TCP discards without copying into it
  for (int i = 0;; ++i) {
    if (i == kReadsPerTurn) {
      c.next_check = now_ns;  // more may wait, and no new edge will say so
      break;
    }
    ssize_t n = recv(c.fd.get(), sink, sizeof sink, MSG_DONTWAIT | MSG_TRUNC);
    if (n > 0) {
      c.report.received += uint64_t(n);
      inc(Counter::discarded_bytes, uint64_t(n));
      c.last_progress = c.last_data = now_ns;
      continue;
    }
    if (n == 0) c.peer_fin = true;
    else if (errno != EAGAIN && errno != EINTR) return true;  // reset: over
    break;
  }
  SocketState s = socket_state(c.fd.get());
  if (s.bytes_acked != c.acked) {
    c.acked = s.bytes_acked;
    c.last_progress = now_ns;
  }
  c.fin_wait2 = s.state == kTcpFinWait2;
  return s.state == kTcpClose || (c.fin_wait2 && c.peer_fin);
}

void Closings::finish(uint64_t id, bool reset) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  if (reset) {
    // Unacknowledged bytes would keep an orphan socket retransmitting to a client
    // that does not read: reset instead.
    linger l{1, 0};
    setsockopt(it->second.fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  } else {
    inc(Counter::lingered);
  }
  ClosedReport r = it->second.report;
  conns_.erase(it);  // closing the socket also removes it from the epoll set
  closed_(r);
}

void Closings::tick(uint64_t now_ns) {
  std::vector<std::pair<uint64_t, int>> done;  // id, 0 over / 1 stalled / 2 linger
  for (auto& [id, c] : conns_) {
    if (now_ns < c.next_check) continue;
    c.next_check = now_ns + kCheckEveryNs;
    if (over(c, now_ns)) done.emplace_back(id, 0);
    else if (now_ns - c.last_progress > opts_.stall_ns) done.emplace_back(id, 1);
    else if (now_ns - c.since > opts_.linger_ns && now_ns - c.last_data < kCheckEveryNs)
      done.emplace_back(id, 2);
  }
  for (auto [id, why] : done) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    if (why == 1) inc(Counter::stalled);
    if (why == 2) inc(Counter::linger_timeouts);
    // Given up in FIN_WAIT2, everything we sent has arrived: a plain close leaves the
    // kernel to wait for the client's FIN (tcp_fin_timeout). Otherwise reset.
    finish(id, why != 0 && !it->second.fin_wait2);
  }
}

}  // namespace tcpha::be
