// Address parsing shared by the cluster file and the daemons: what the relay's
// `upstream` accepts (HOST:PORT or unix:/ABSOLUTE/PATH) and what it refuses.
#include "common/net.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace tcpha {
namespace {

TEST(HostPort, ParsesDottedIpv4AndPort) {
  auto a = parse_host_port("127.0.0.1:8080");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->sin_family, AF_INET);
  EXPECT_EQ(ntohs(a->sin_port), 8080);
  EXPECT_EQ(endpoint_str(*a), "127.0.0.1:8080");
}

TEST(HostPort, RefusesNamesBadPortsAndMissingParts) {
  for (const char* s : {"localhost:80", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                        "127.0.0.1:80x", ":80", "1.2.3:80", "127.0.0.1:-1"})
    EXPECT_FALSE(parse_host_port(s)) << s;
}

TEST(SocketAddress, TcpFormKeepsTheTextAndASockaddrIn) {
  auto a = parse_socket_address("10.0.0.5:81");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family(), AF_INET);
  EXPECT_EQ(a->length, sizeof(sockaddr_in));
  EXPECT_EQ(a->text, "10.0.0.5:81");
  auto* in = reinterpret_cast<const sockaddr_in*>(a->get());
  EXPECT_EQ(ntohs(in->sin_port), 81);
  char buf[INET_ADDRSTRLEN];
  EXPECT_STREQ(inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf), "10.0.0.5");
}

TEST(SocketAddress, UnixFormGivesThePathWithItsNul) {
  auto a = parse_socket_address("unix:/run/nginx/relay.sock");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family(), AF_UNIX);
  auto* un = reinterpret_cast<const sockaddr_un*>(a->get());
  EXPECT_STREQ(un->sun_path, "/run/nginx/relay.sock");
  EXPECT_EQ(a->length, offsetof(sockaddr_un, sun_path) + std::strlen("/run/nginx/relay.sock") + 1);
}

TEST(SocketAddress, UnixPathsMustBeAbsoluteAndFit) {
  sockaddr_un un{};
  std::string longest = "/" + std::string(sizeof un.sun_path - 2, 'a');  // 107 bytes + NUL
  EXPECT_TRUE(parse_socket_address("unix:" + longest));
  EXPECT_FALSE(parse_socket_address("unix:" + longest + "a"));
  EXPECT_FALSE(parse_socket_address("unix:"));
  EXPECT_FALSE(parse_socket_address("unix:relative.sock"));
  EXPECT_FALSE(parse_socket_address(std::string("unix:/a\0b", 9)));
  EXPECT_FALSE(parse_socket_address("unix//run/x.sock"));
  EXPECT_FALSE(parse_socket_address("/run/x.sock"));
}

// metrics_allow entries: networks, with host bits refused as a likely typo.
TEST(Ipv4Prefix, ParsesNetworksAndMatches) {
  auto a = [](const char* s) { return *parse_ipv4(s); };
  auto net = parse_ipv4_prefix("10.0.0.0/8");
  ASSERT_TRUE(net);
  EXPECT_TRUE(net->contains(a("10.1.2.3")));
  EXPECT_FALSE(net->contains(a("11.0.0.1")));
  auto host = parse_ipv4_prefix("192.0.2.7");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->length, 32);
  EXPECT_TRUE(host->contains(a("192.0.2.7")));
  EXPECT_FALSE(host->contains(a("192.0.2.8")));
  auto any = parse_ipv4_prefix("0.0.0.0/0");
  ASSERT_TRUE(any);
  EXPECT_TRUE(any->contains(a("203.0.113.9")));
  for (const char* bad : {"", "10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1",
                          "10.0.0.0/8x", "10.0.0/8", "host/8", "10.0.0.0/ 8"})
    EXPECT_FALSE(parse_ipv4_prefix(bad)) << bad;
  EXPECT_TRUE(is_loopback(a("127.0.0.1")));
  EXPECT_TRUE(is_loopback(a("127.255.0.9")));
  EXPECT_FALSE(is_loopback(a("10.0.0.1")));
}

}  // namespace
}  // namespace tcpha

namespace tcpha {
namespace {

TEST(Endpoint, Ipv4AndIpv6FromSocketAddressesAndBack) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.7", &in.sin_addr);
  in.sin_port = htons(8080);
  auto e = Endpoint::of(reinterpret_cast<const sockaddr*>(&in), sizeof in);
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->is_v6());
  EXPECT_EQ(e->addr[0], in.sin_addr.s_addr);
  EXPECT_EQ(e->addr[1] | e->addr[2] | e->addr[3], 0u) << "IPv4 in word 0, as in the flow key";
  EXPECT_EQ(e->str(), "192.0.2.7:8080");
  EXPECT_EQ(e->addr32(), in.sin_addr.s_addr);

  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "fd00:c8::5", &in6.sin6_addr);
  in6.sin6_port = htons(443);
  auto e6 = Endpoint::of(reinterpret_cast<const sockaddr*>(&in6), sizeof in6);
  ASSERT_TRUE(e6);
  EXPECT_TRUE(e6->is_v6());
  EXPECT_EQ(e6->str(), "[fd00:c8::5]:443");
  EXPECT_EQ(e6->addr_str(), "fd00:c8::5");
  sockaddr_storage ss{};
  ASSERT_EQ(e6->to_sockaddr(ss), socklen_t(sizeof(sockaddr_in6)));
  const auto* back = reinterpret_cast<const sockaddr_in6*>(&ss);
  EXPECT_EQ(back->sin6_family, AF_INET6);
  EXPECT_EQ(std::memcmp(&back->sin6_addr, &in6.sin6_addr, 16), 0);
  EXPECT_EQ(back->sin6_port, in6.sin6_port);
  EXPECT_EQ(Endpoint::of(ss, sizeof(sockaddr_in6)), e6);

  // A short length or another family is no endpoint.
  EXPECT_FALSE(Endpoint::of(reinterpret_cast<const sockaddr*>(&in6), sizeof(sockaddr_in)));
  sockaddr_storage un{};
  un.ss_family = AF_UNIX;
  EXPECT_FALSE(Endpoint::of(un, sizeof un));
}

TEST(Ipv6, ParsesAndPrints) {
  auto a = parse_ipv6("fd00::10");
  ASSERT_TRUE(a);
  EXPECT_EQ(ipv6_str(*a), "fd00::10");
  EXPECT_FALSE(parse_ipv6("10.0.0.1"));
  EXPECT_FALSE(parse_ipv6("fd00::10::1"));
  EXPECT_FALSE(parse_ipv6(std::string(100, 'f')));
}

// A connected pair over loopback whose server side has bytes the client has not read
// (a download under way when the agent dies); `how` runs on the server socket, which
// is then closed, as a killed agent's kernel closes it. Returns how the client's
// stream ends after all the bytes that reach it: 0 (FIN) or the errno.
int end_seen_by_client(void (*how)(int)) {
  int lst = socket(AF_INET, SOCK_STREAM, 0), cli = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = ipv4_endpoint(htonl(INADDR_LOOPBACK), 0);
  socklen_t len = sizeof a;
  EXPECT_EQ(bind(lst, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(listen(lst, 1), 0);
  EXPECT_EQ(getsockname(lst, reinterpret_cast<sockaddr*>(&a), &len), 0);
  EXPECT_EQ(connect(cli, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  int srv = accept(lst, nullptr, nullptr);
  EXPECT_GE(srv, 0);
  close(lst);
  std::string chunk(64 * 1024, 'x');
  while (send(srv, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
  }
  how(srv);
  close(srv);
  int end = 0;
  for (;;) {
    ssize_t n = recv(cli, chunk.data(), chunk.size(), 0);
    if (n > 0) continue;
    end = n == 0 ? 0 : errno;
    break;
  }
  close(cli);
  return end;
}

// Failover: a socket the agent serves aborts on close (the kernel frees it at once,
// no orphan keeps its 4-tuple); one the agent ends itself (mark_done) closes with a
// FIN after its last byte, as before.
TEST(FailoverClose, ServedSocketsAbortUntilMarkedDone) {
  EXPECT_EQ(end_seen_by_client([](int) {}), 0);
  EXPECT_EQ(end_seen_by_client([](int fd) { abort_on_close(fd); }), ECONNRESET);
  EXPECT_EQ(end_seen_by_client([](int fd) {
              abort_on_close(fd);
              mark_done(fd);
            }),
            0);
}

}  // namespace
}  // namespace tcpha
