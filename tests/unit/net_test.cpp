// Address parsing shared by the cluster file and the daemons: what the relay's
// `upstream` accepts (HOST:PORT or unix:/ABSOLUTE/PATH) and what it refuses.
#include "common/net.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/un.h>

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
