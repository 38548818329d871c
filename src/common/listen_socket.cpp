#include "common/listen_socket.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/net.hpp"

namespace tcpha {

Result<ListenSocket> ListenSocket::open(const sockaddr_in& addr, int backlog, bool reuse_port) {
  return open(Endpoint::v4(addr.sin_addr.s_addr, addr.sin_port), backlog, reuse_port);
}

Result<ListenSocket> ListenSocket::open(const Endpoint& addr, int backlog, bool reuse_port) {
  UniqueFd fd(socket(addr.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (addr.is_v6() && setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
    return sys_error("setsockopt(IPV6_V6ONLY)");
  sockaddr_storage sa{};
  const socklen_t len = addr.to_sockaddr(sa);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa), len) != 0)
    return sys_error("bind " + addr.str());
  if (listen(fd.get(), backlog) != 0) return sys_error("listen " + addr.str());
  ListenSocket l(std::move(fd));
  if (!addr.is_v6()) l.addr_ = ipv4_endpoint(addr.addr[0], addr.port);
  l.endpoint_ = addr;
  return l;
}

Result<ListenSocket> ListenSocket::adopt(UniqueFd fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  int listening = 0;
  socklen_t ll = sizeof listening;
  std::optional<Endpoint> ep;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0) ep = Endpoint::of(a, len);
  if (!ep || getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || !listening)
    return Error{EINVAL, "not a listening IPv4 or IPv6 socket"};
  ListenSocket l(std::move(fd));
  if (!ep->is_v6()) l.addr_ = ipv4_endpoint(ep->addr[0], ep->port);
  l.endpoint_ = *ep;
  return l;
}

void ListenSocket::detach() {
  if (!paused()) arm(false);
  epfd_ = -1;
}

void ListenSocket::attach(int epfd, void* tag) {
  epfd_ = epfd;
  tag_ = tag;
  if (!paused()) arm(true);
}

void ListenSocket::arm(bool on) {
  if (epfd_ < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = tag_;
  epoll_ctl(epfd_, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd_.get(), &ev);
}

UniqueFd ListenSocket::accept(sockaddr_in* peer, uint64_t now) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  UniqueFd c = accept_raw(sa, len, now);
  if (c.valid() && peer) {
    *peer = {};
    if (sa.ss_family == AF_INET) std::memcpy(peer, &sa, sizeof *peer);
  }
  return c;
}

UniqueFd ListenSocket::accept(Endpoint* peer, uint64_t now) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  UniqueFd c = accept_raw(sa, len, now);
  if (c.valid() && peer) {
    auto e = Endpoint::of(sa, len);
    if (!e) return UniqueFd();  // cannot happen on a TCP/IP listener
    *peer = *e;
  }
  return c;
}

UniqueFd ListenSocket::accept_raw(sockaddr_storage& sa, socklen_t& len, uint64_t now) {
  if (paused() || !fd_.valid()) return UniqueFd();
  UniqueFd c(
      accept4(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (c.valid()) return c;
  if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
    paused_until_ = now + kPauseNs;
    ++pauses_;
    arm(false);
  }
  return c;
}

void ListenSocket::tick(uint64_t now) {
  if (!paused() || now < paused_until_) return;
  paused_until_ = 0;
  arm(true);
}

}  // namespace tcpha
