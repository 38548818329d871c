// ListenSocket: out of descriptors, a level-triggered listener leaves the epoll set for
// a while instead of waking the loop in a spin, then comes back and accepts.
#include "common/listen_socket.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "common/fd.hpp"

namespace tcpha {
namespace {

constexpr uint64_t kMs = 1'000'000;

sockaddr_in loopback_any_port() {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

UniqueFd connect_to(int listener) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return c;
}

int wait_events(int ep) {
  epoll_event ev[4];
  return epoll_wait(ep, ev, 4, 0);
}

TEST(ListenSocket, PausesOnEmfileInsteadOfSpinningAndResumes) {
  auto l = ListenSocket::open(loopback_any_port(), 16);
  ASSERT_TRUE(l.ok()) << l.error().message();
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  int tag = 0;
  l->attach(ep.get(), &tag);
  UniqueFd client = connect_to(l->fd());
  ASSERT_EQ(wait_events(ep.get()), 1) << "a connection is pending";

  // No descriptor left for accept(): the lowest free one is at the limit.
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  UniqueFd probe(dup(0));
  ASSERT_TRUE(probe.valid());
  rlimit low = old;
  low.rlim_cur = rlim_t(probe.get());
  probe.reset();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  sockaddr_in peer{};
  UniqueFd none = l->accept(&peer, 1000 * kMs);
  const int err = errno;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_FALSE(none.valid());
  EXPECT_EQ(err, EMFILE);
  EXPECT_TRUE(l->paused());
  EXPECT_EQ(l->pauses(), 1u);
  EXPECT_EQ(wait_events(ep.get()), 0) << "paused: the pending connection wakes nobody";
  EXPECT_FALSE(l->accept(&peer, 1001 * kMs).valid()) << "a paused listener accepts nothing";

  l->tick(1000 * kMs + ListenSocket::kPauseNs - 1);
  EXPECT_TRUE(l->paused());
  l->tick(1000 * kMs + ListenSocket::kPauseNs);
  EXPECT_FALSE(l->paused());
  ASSERT_EQ(wait_events(ep.get()), 1) << "back in the epoll set";
  UniqueFd c = l->accept(&peer, 1200 * kMs);
  EXPECT_TRUE(c.valid()) << "the connection waited in the backlog";
  EXPECT_EQ(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
  EXPECT_FALSE(l->accept(&peer, 1200 * kMs).valid()) << "nothing more pending";
  EXPECT_FALSE(l->paused()) << "EAGAIN does not pause";
}

TEST(ListenSocket, OpenReportsTheAddressItCouldNotBind) {
  auto a = ListenSocket::open(loopback_any_port(), 4);
  ASSERT_TRUE(a.ok());
  sockaddr_in taken{};
  socklen_t len = sizeof taken;
  getsockname(a->fd(), reinterpret_cast<sockaddr*>(&taken), &len);
  auto b = ListenSocket::open(taken, 4);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().err, EADDRINUSE);
  EXPECT_NE(b.error().what.find("127.0.0.1:"), std::string::npos) << b.error().what;
}

}  // namespace
}  // namespace tcpha
