#pragma once
// A listening TCP socket for an event loop that must not spin when accept() fails for
// lack of descriptors or memory. The loops' listeners are level-triggered: the pending
// connection that accept() could not take wakes the loop again at once, so EMFILE,
// ENFILE, ENOBUFS and ENOMEM would turn the loop into a 100% CPU spin. Instead the
// listener leaves the epoll set for kPauseNs (connections wait in the backlog
// meanwhile) and tick() puts it back.
//
//   auto l = ListenSocket::open(addr, 128);    // bound, listening, nonblocking
//   l->attach(epfd, &listener_item);           // EPOLLIN, data.ptr = tag
//   on EPOLLIN:  while (auto fd = l->accept(&peer, now); fd.valid()) { ... }
//   every tick:  l->tick(now);
// A poll loop polls fd() only while !paused().
#include <netinet/in.h>

#include <cstdint>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "common/result.hpp"

namespace tcpha {

class ListenSocket {
 public:
  static constexpr uint64_t kPauseNs = 100'000'000;

  // socket + SO_REUSEADDR (+ SO_REUSEPORT) + bind + listen, nonblocking, close-on-exec.
  static Result<ListenSocket> open(const sockaddr_in& addr, int backlog, bool reuse_port = false);
  // The same for either family; an IPv6 socket is IPV6_V6ONLY (the IPv4 VIP has its
  // own listener, and an IPv4-mapped client would be keyed wrongly).
  static Result<ListenSocket> open(const Endpoint& addr, int backlog, bool reuse_port = false);
  // A listening socket handed over by another process (an FE upgrade): its address is
  // read back with getsockname. EINVAL when fd is not a listening TCP/IPv4 or IPv6 socket.
  static Result<ListenSocket> adopt(UniqueFd fd);
  ListenSocket() = default;  // none yet: fd() < 0, accept() takes nothing
  explicit ListenSocket(UniqueFd fd) : fd_(std::move(fd)) {}
  ListenSocket(ListenSocket&&) = default;
  ListenSocket& operator=(ListenSocket&&) = default;

  // Registers the socket in `epfd` for EPOLLIN with data.ptr = tag.
  void attach(int epfd, void* tag);

  // One accept4 (nonblocking, close-on-exec); `peer` may be null. An invalid fd when
  // nothing is pending, on an error that concerns only that connection, or when the
  // process or system ran out of descriptors or memory: then the listener is paused.
  UniqueFd accept(sockaddr_in* peer, uint64_t now);
  UniqueFd accept(Endpoint* peer, uint64_t now);  // either family

  // Leaves the epoll set. Needed before closing a socket another process also holds
  // (an FE upgrade): epoll forgets a socket only when every descriptor of it is closed.
  void detach();

  // Resumes a paused listener once kPauseNs have passed.
  void tick(uint64_t now);

  bool paused() const { return paused_until_ != 0; }
  uint64_t pauses() const { return pauses_; }  // how often it paused, for counters
  int fd() const { return fd_.get(); }
  // The address open() bound: the local address of every connection accepted when it
  // is a specific one (not INADDR_ANY), without a getsockname() per connection.
  // An IPv4 listener's; zero for an IPv6 one (see endpoint()).
  const sockaddr_in& address() const { return addr_; }
  const Endpoint& endpoint() const { return endpoint_; }  // either family

 private:
  void arm(bool on);

  UniqueFd fd_;
  UniqueFd accept_raw(sockaddr_storage& sa, socklen_t& len, uint64_t now);

  sockaddr_in addr_{};
  Endpoint endpoint_{};
  int epfd_ = -1;
  void* tag_ = nullptr;
  uint64_t paused_until_ = 0;
  uint64_t pauses_ = 0;
};

}  // namespace tcpha
