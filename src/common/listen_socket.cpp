#include "common/listen_socket.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>

#include "common/net.hpp"

namespace tcpha {

Result<ListenSocket> ListenSocket::open(const sockaddr_in& addr, int backlog, bool reuse_port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return sys_error("bind " + endpoint_str(addr));
  if (listen(fd.get(), backlog) != 0) return sys_error("listen " + endpoint_str(addr));
  ListenSocket l(std::move(fd));
  l.addr_ = addr;
  return l;
}

Result<ListenSocket> ListenSocket::adopt(UniqueFd fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  int listening = 0;
  socklen_t ll = sizeof listening;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0 || a.sin_family != AF_INET ||
      getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || !listening)
    return Error{EINVAL, "not a listening IPv4 socket"};
  ListenSocket l(std::move(fd));
  l.addr_ = a;
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
  if (paused() || !fd_.valid()) return UniqueFd();
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  UniqueFd c(
      accept4(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (c.valid()) {
    if (peer) *peer = sa;
    return c;
  }
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
