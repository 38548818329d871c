// Moves a live loopback connection from one socket to another with TCP_REPAIR, in a
// private network namespace, and checks that both ends keep talking byte-exact.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "handoff/tcp_state.hpp"

using namespace tcpha;

namespace {

bool enter_private_netns() {
  if (geteuid() != 0) return false;
  if (unshare(CLONE_NEWNET) != 0) return false;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, "lo");
  ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP;
  bool ok = ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
  close(s);
  return ok;
}

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char(seed + (i * 7) % 61);
  return s;
}

void send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    ASSERT_GT(poll(&p, 1, 5000), 0) << "send stalled";
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN) continue;
    ASSERT_GT(n, 0) << strerror(errno);
    off += size_t(n);
  }
}

std::string recv_exact(int fd, size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) break;
    ssize_t r = recv(fd, buf, std::min(sizeof buf, n - out.size()), MSG_DONTWAIT);
    if (r < 0 && errno == EAGAIN) continue;
    if (r <= 0) break;
    out.append(buf, size_t(r));
  }
  return out;
}

// Sends `data` on `from` while reading it on `to`, so the transfer never depends on
// the socket buffers being large enough to hold it all.
std::string transfer(int from, int to, const std::string& data) {
  std::string got;
  size_t off = 0;
  char buf[65536];
  while (got.size() < data.size()) {
    pollfd p[2] = {{from, short(off < data.size() ? POLLOUT : 0), 0}, {to, POLLIN, 0}};
    if (poll(p, 2, 5000) <= 0) break;  // stalled
    if ((p[0].revents & POLLOUT) && off < data.size()) {
      ssize_t n = send(from, data.data() + off, data.size() - off, MSG_DONTWAIT);
      if (n > 0) off += size_t(n);
    }
    if (p[1].revents & POLLIN) {
      ssize_t n = recv(to, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) break;
      if (n > 0) got.append(buf, size_t(n));
    }
  }
  return got;
}

void wait_send_queue_empty(int fd) {
  for (int i = 0; i < 1000; ++i) {
    int outq = 0;
    ioctl(fd, SIOCOUTQ, &outq);
    if (outq == 0) return;
    usleep(1000);
  }
}

class TcpStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static bool in_netns = enter_private_netns();
    if (!in_netns) GTEST_SKIP() << "needs root (CAP_NET_ADMIN for TCP_REPAIR and a private netns)";
    lst_ = socket(family_, SOCK_STREAM, 0);
    sockaddr_storage a{};
    socklen_t len = 0;
    if (family_ == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&a);
      in6->sin6_family = AF_INET6;
      in6->sin6_addr = in6addr_loopback;
      len = sizeof *in6;
    } else {
      auto* in = reinterpret_cast<sockaddr_in*>(&a);
      in->sin_family = AF_INET;
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof *in;
    }
    ASSERT_EQ(bind(lst_, reinterpret_cast<sockaddr*>(&a), len), 0) << strerror(errno);
    getsockname(lst_, reinterpret_cast<sockaddr*>(&a), &len);
    ASSERT_EQ(listen(lst_, 8), 0);
    cli_ = socket(family_, SOCK_STREAM, 0);
    ASSERT_EQ(connect(cli_, reinterpret_cast<sockaddr*>(&a), len), 0);
    srv_ = accept(lst_, nullptr, nullptr);
    ASSERT_GE(srv_, 0);
    sockaddr_storage l{}, p{};
    socklen_t ll = sizeof l, pl = sizeof p;
    getsockname(srv_, reinterpret_cast<sockaddr*>(&l), &ll);
    getpeername(srv_, reinterpret_cast<sockaddr*>(&p), &pl);
    auto le = Endpoint::of(l, ll), pe = Endpoint::of(p, pl);
    ASSERT_TRUE(le && pe);
    local_ = *le;
    peer_ = *pe;
  }
  void TearDown() override {
    for (int fd : {lst_, cli_, srv_})
      if (fd >= 0) close(fd);
  }
  int family_ = AF_INET;
  int lst_ = -1, cli_ = -1, srv_ = -1;
  Endpoint local_{}, peer_{};
};

// The same over IPv6 (::1): the IPv6 VIP's connections move the same way.
class TcpState6Test : public TcpStateTest {
 protected:
  TcpState6Test() { family_ = AF_INET6; }
};

TEST_F(TcpStateTest, MovesMidStreamConnectionByteExact) {
  // Some traffic in both directions first, so sequence numbers are not initial.
  std::string hello = pattern(100000, 'a');
  EXPECT_EQ(transfer(srv_, cli_, hello), hello);
  wait_send_queue_empty(srv_);

  // The client sends a "request"; the server reads part of it, the rest stays queued.
  std::string request = pattern(3000, 'A');
  send_all(cli_, request);
  std::string already = recv_exact(srv_, 1000);
  ASSERT_EQ(already.size(), 1000u);
  usleep(20000);  // let the rest arrive in the receive queue

  auto st = handoff::export_state(srv_, local_, peer_, already);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_EQ(already, request) << "export must append the unread bytes";
  EXPECT_GT(st->mss, 536u);
  close(srv_);  // silent: in repair mode
  srv_ = -1;

  auto moved = handoff::import_state(*st, already);
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  ASSERT_TRUE(handoff::activate(moved->get()).ok());
  int fd = moved->get();
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);

  // The new socket has the whole request, in order, then keeps talking.
  EXPECT_EQ(recv_exact(fd, request.size()), request);
  std::string reply = pattern(2'000'000, '0');
  EXPECT_EQ(transfer(fd, cli_, reply), reply);
  std::string more = pattern(50000, 'k');
  EXPECT_EQ(transfer(cli_, fd, more), more);

  // Orderly close from the new owner reaches the client as EOF.
  shutdown(fd, SHUT_WR);
  char c;
  pollfd p{cli_, POLLIN, 0};
  ASSERT_GT(poll(&p, 1, 5000), 0);
  EXPECT_EQ(recv(cli_, &c, 1, 0), 0);
}

// Leaving repair mode clears SO_REUSEADDR; activate() sets it again, so that the
// socket's TIME_WAIT does not keep a new listener (a CARD node restarted on the host)
// off the port for a minute.
TEST_F(TcpStateTest, AnImportedConnectionsTimeWaitLetsAListenerBind) {
  std::string none;
  auto st = handoff::export_state(srv_, local_, peer_, none);
  ASSERT_TRUE(st.ok()) << st.error().message();
  close(srv_);  // silent: in repair mode
  srv_ = -1;
  auto moved = handoff::import_state(*st, none);
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  ASSERT_TRUE(handoff::activate(moved->get()).ok());
  int fd = moved->get(), reuse = 0;
  socklen_t len = sizeof reuse;
  ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len), 0);
  EXPECT_EQ(reuse, 1);
  // The moved socket closes first: it ends in TIME_WAIT on the listener's address.
  shutdown(fd, SHUT_WR);
  char c;
  pollfd p{cli_, POLLIN, 0};
  ASSERT_GT(poll(&p, 1, 5000), 0);
  ASSERT_EQ(recv(cli_, &c, 1, 0), 0);
  close(cli_);
  cli_ = -1;
  pollfd q{fd, POLLIN, 0};
  ASSERT_GT(poll(&q, 1, 5000), 0);
  ASSERT_EQ(recv(fd, &c, 1, MSG_DONTWAIT), 0);
  moved->reset();
  close(lst_);
  lst_ = -1;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(l, 0);
  const int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage a{};
  socklen_t alen = local_.to_sockaddr(a);
  EXPECT_EQ(bind(l, reinterpret_cast<sockaddr*>(&a), alen), 0) << strerror(errno);
  close(l);
}

// An import onto a socket made ahead (RepairSockets: already in repair mode) works as
// one on a fresh socket: the request, then traffic both ways.
TEST_F(TcpStateTest, ImportOntoASpareSocketFromThePool) {
  handoff::RepairSockets pool(2);
  pool.refill();
  ASSERT_EQ(pool.size(), 2u) << "needs CAP_NET_ADMIN";
  std::string request = pattern(1500, 'R');
  send_all(cli_, request);
  usleep(20000);
  std::string already;
  auto st = handoff::export_state(srv_, local_, peer_, already);
  ASSERT_TRUE(st.ok()) << st.error().message();
  close(srv_);
  srv_ = -1;
  auto moved = handoff::import_state(*st, already, pool.take());
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  EXPECT_EQ(pool.size(), 1u);
  ASSERT_TRUE(handoff::activate(moved->get()).ok());
  int fd = moved->get();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  EXPECT_EQ(recv_exact(fd, request.size()), request);
  std::string reply = pattern(100'000, 'z');
  EXPECT_EQ(transfer(fd, cli_, reply), reply);
  pool.refill();
  EXPECT_EQ(pool.size(), 2u);
}

uint32_t snd_cwnd_of(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
  return info.tcpi_snd_cwnd;
}

// TCP_REPAIR does not carry the congestion window: the export reads it (TCP_INFO) and
// an import with a CwndCarry starts from it (bpf/cwnd.bpf.c), one without from the
// kernel's initial window. Either way the connection keeps working byte-exact.
TEST_F(TcpStateTest, ImportStartsWithTheCarriedCongestionWindow) {
  auto carry = handoff::CwndCarry::attach();
  ASSERT_TRUE(carry.ok()) << carry.error().message();
  std::string hello = pattern(300000, 'h');
  EXPECT_EQ(transfer(srv_, cli_, hello), hello);
  wait_send_queue_empty(srv_);
  const uint32_t before = snd_cwnd_of(srv_);
  std::string already;
  auto st = handoff::export_state(srv_, local_, peer_, already);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_EQ(st->snd_cwnd, before) << "the export carries the socket's own window";
  close(srv_);
  srv_ = -1;

  // A window no fresh socket has, so that only the carry can explain it.
  st->snd_cwnd = 77;
  const uint64_t applied = (*carry)->applied();
  auto moved = handoff::import_state(*st, already, {}, carry->get());
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  ASSERT_TRUE(handoff::activate(moved->get()).ok());
  EXPECT_EQ(snd_cwnd_of(moved->get()), 77u);
  EXPECT_EQ((*carry)->applied(), applied + 1);
  EXPECT_EQ((*carry)->refused(), 0u);
  int fd = moved->get();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  std::string reply = pattern(500'000, 'c');
  EXPECT_EQ(transfer(fd, cli_, reply), reply);

  // Moved again without the carry: the kernel's initial window (10 segments).
  wait_send_queue_empty(fd);
  std::string none;
  auto again = handoff::export_state(fd, local_, peer_, none);
  ASSERT_TRUE(again.ok()) << again.error().message();
  { UniqueFd exported = std::move(*moved); }  // in repair mode: closes silently
  auto plain = handoff::import_state(*again, none);
  ASSERT_TRUE(plain.ok()) << plain.error().message();
  ASSERT_TRUE(handoff::activate(plain->get()).ok());
  EXPECT_EQ(snd_cwnd_of(plain->get()), 10u);
  EXPECT_EQ((*carry)->applied(), applied + 1);
}

// A request followed at once by the client's FIN (a half-close): the socket is in
// CLOSE_WAIT when it is exported. The export says so, and the importer's socket takes
// the client's next segments (rcv_nxt already past the FIN) and answers to EOF.
TEST_F(TcpStateTest, MovesHalfClosedConnection) {
  std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  send_all(cli_, request);
  shutdown(cli_, SHUT_WR);
  usleep(20000);  // the FIN arrives: CLOSE_WAIT
  std::string already;
  auto st = handoff::export_state(srv_, local_, peer_, already);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_TRUE(st->flags & handoff::kStatePeerFin);
  EXPECT_EQ(already, request) << "the request bytes, without the FIN";
  close(srv_);
  srv_ = -1;

  auto moved = handoff::import_state(*st, already);
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  ASSERT_TRUE(handoff::activate(moved->get()).ok());
  int fd = moved->get();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  EXPECT_EQ(recv_exact(fd, request.size()), request);
  std::string reply = pattern(300000, 'r');
  send_all(fd, reply);
  shutdown(fd, SHUT_WR);
  EXPECT_EQ(recv_exact(cli_, reply.size()), reply);
  char c;
  pollfd p{cli_, POLLIN, 0};
  ASSERT_GT(poll(&p, 1, 5000), 0);
  EXPECT_EQ(recv(cli_, &c, 1, 0), 0) << "the client sees the answer's FIN";
}

TEST_F(TcpStateTest, AbortGivesTheSocketBack) {
  std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  send_all(cli_, request);
  std::string already = recv_exact(srv_, request.size());
  auto st = handoff::export_state(srv_, local_, peer_, already);
  ASSERT_TRUE(st.ok()) << st.error().message();
  ASSERT_TRUE(handoff::leave_repair(srv_).ok());
  std::string answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
  send_all(srv_, answer);
  EXPECT_EQ(recv_exact(cli_, answer.size()), answer);
}

TEST_F(TcpStateTest, ExportRefusesUnsentData) {
  // Fill the send queue while the client does not read: export must refuse, and
  // leave the socket usable.
  int small = 4096;
  setsockopt(cli_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  std::string blob = pattern(200000, 'z');
  send(srv_, blob.data(), blob.size(), MSG_DONTWAIT);
  std::string none;
  auto st = handoff::export_state(srv_, local_, peer_, none);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(none.empty());
  int one = 1;
  EXPECT_EQ(send(srv_, &one, 1, MSG_DONTWAIT) >= 0 || errno == EAGAIN, true);
}

// An IPv6 connection moves byte-exact: the state carries the 16-byte addresses and the
// family, and the import binds an AF_INET6 socket to [::1]:port.
TEST_F(TcpState6Test, MovesMidStreamIpv6ConnectionByteExact) {
  ASSERT_TRUE(local_.is_v6() && peer_.is_v6());
  std::string hello = pattern(50000, 'a');
  EXPECT_EQ(transfer(srv_, cli_, hello), hello);
  wait_send_queue_empty(srv_);
  std::string request = pattern(3000, 'A');
  send_all(cli_, request);
  std::string already = recv_exact(srv_, 500);
  ASSERT_EQ(already.size(), 500u);
  usleep(20000);

  auto st = handoff::export_state(srv_, local_, peer_, already);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_TRUE(st->is_v6());
  EXPECT_EQ(st->local(), local_);
  EXPECT_EQ(st->peer(), peer_);
  EXPECT_EQ(already, request);
  close(srv_);
  srv_ = -1;

  // The pool keeps IPv6 spares only once one was asked for; the import then runs on
  // one made ahead (already in repair mode, IPV6_V6ONLY).
  handoff::RepairSockets pool(1);
  pool.refill();
  EXPECT_EQ(pool.size(AF_INET), 1u);
  EXPECT_EQ(pool.size(AF_INET6), 0u);
  EXPECT_FALSE(pool.take(AF_INET6).valid());
  pool.refill();
  ASSERT_EQ(pool.size(AF_INET6), 1u);
  auto moved = handoff::import_state(*st, already, pool.take(AF_INET6));
  EXPECT_EQ(pool.size(AF_INET6), 0u);
  EXPECT_EQ(pool.size(AF_INET), 1u);
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  ASSERT_TRUE(handoff::activate(moved->get()).ok());
  int fd = moved->get();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  sockaddr_storage l{};
  socklen_t ll = sizeof l;
  getsockname(fd, reinterpret_cast<sockaddr*>(&l), &ll);
  EXPECT_EQ(l.ss_family, AF_INET6);
  EXPECT_EQ(Endpoint::of(l, ll), local_);
  EXPECT_EQ(recv_exact(fd, request.size()), request);
  std::string reply = pattern(2'000'000, '0');
  EXPECT_EQ(transfer(fd, cli_, reply), reply);
  std::string more = pattern(50000, 'k');
  EXPECT_EQ(transfer(cli_, fd, more), more);
}

// A served-from-memory import (the BE's path) of an IPv6 connection.
TEST_F(TcpState6Test, ConsumedImportOfIpv6Connection) {
  std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  send_all(cli_, request);
  usleep(20000);
  std::string already;
  auto st = handoff::export_state(srv_, local_, peer_, already);
  ASSERT_TRUE(st.ok()) << st.error().message();
  close(srv_);
  srv_ = -1;
  auto moved = handoff::import_state_consumed(*st, already.size());
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  ASSERT_TRUE(handoff::activate(moved->get()).ok());
  int fd = moved->get();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  std::string reply = pattern(300000, 'r');
  EXPECT_EQ(transfer(fd, cli_, reply), reply);
}

TEST_F(TcpStateTest, ExportRefusesMixedFamilies) {
  Endpoint v6 = peer_;
  v6.family = AF_INET6;
  std::string none;
  EXPECT_FALSE(handoff::export_state(srv_, local_, v6, none).ok());
}

}  // namespace

// Tunnel mode (docs/tunnel.md): the FE's listeners clamp the MSS they advertise and
// keep each SYN; the export hands the BE the MSS the client announced in it.
TEST(SynMss, ParsesTheMssOptionOfIpv4AndIpv6Syns) {
  // IPv4 header (20) + TCP header with NOP, NOP, MSS 1460, window scale 7 (32 bytes).
  std::vector<uint8_t> v4(20 + 32, 0);
  v4[0] = 0x45;
  v4[9] = IPPROTO_TCP;
  v4[20 + 12] = 8 << 4;
  const uint8_t opts[] = {1, 1, 2, 4, 0x05, 0xb4, 3, 3, 7, 0, 0, 0};
  std::copy(std::begin(opts), std::end(opts), v4.begin() + 40);
  EXPECT_EQ(handoff::parse_syn_mss(v4.data(), v4.size()), 1460u);
  // The same TCP header behind an IPv6 header.
  std::vector<uint8_t> v6(40, 0);
  v6[0] = 0x60;
  v6[6] = IPPROTO_TCP;
  v6.insert(v6.end(), v4.begin() + 20, v4.end());
  EXPECT_EQ(handoff::parse_syn_mss(v6.data(), v6.size()), 1460u);
  // No MSS option, a truncated option, a header cut short, not TCP: none.
  auto no_mss = v4;
  std::fill(no_mss.begin() + 42, no_mss.begin() + 46, 1);  // the MSS option becomes no-ops
  EXPECT_EQ(handoff::parse_syn_mss(no_mss.data(), no_mss.size()), std::nullopt);
  EXPECT_EQ(handoff::parse_syn_mss(v4.data(), 43), std::nullopt);
  auto udp = v4;
  udp[9] = IPPROTO_UDP;
  EXPECT_EQ(handoff::parse_syn_mss(udp.data(), udp.size()), std::nullopt);
  EXPECT_EQ(handoff::parse_syn_mss(v4.data(), 0), std::nullopt);
}

TEST(SynMss, ASavedSynGivesTheClientsMssOnce) {
  UniqueFd l(socket(AF_INET, SOCK_STREAM, 0));
  const int one = 1, clamp = 1200, client_mss = 1300;
  ASSERT_EQ(setsockopt(l.get(), IPPROTO_TCP, TCP_SAVE_SYN, &one, sizeof one), 0) << std::strerror(errno);
  ASSERT_EQ(setsockopt(l.get(), IPPROTO_TCP, TCP_MAXSEG, &clamp, sizeof clamp), 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(l.get(), 4), 0);
  socklen_t len = sizeof a;
  getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len);
  UniqueFd c(socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_EQ(setsockopt(c.get(), IPPROTO_TCP, TCP_MAXSEG, &client_mss, sizeof client_mss), 0);
  ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  UniqueFd s(accept(l.get(), nullptr, nullptr));
  ASSERT_TRUE(s.valid());
  EXPECT_EQ(handoff::saved_syn_mss(s.get()), uint32_t(client_mss));  // not the listener's clamp
  EXPECT_EQ(handoff::saved_syn_mss(s.get()), std::nullopt);           // read once
  UniqueFd l2(socket(AF_INET, SOCK_STREAM, 0));                       // no TCP_SAVE_SYN: none
  EXPECT_EQ(handoff::saved_syn_mss(l2.get()), std::nullopt);
}
