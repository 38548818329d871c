// The PROXY protocol v2 header the relay sends before the client's bytes, checked
// byte by byte against the layout in haproxy's doc/proxy-protocol.txt (2.2).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>

#include "be/relay.hpp"

namespace tcpha::be {
namespace {

Endpoint endpoint(const char* addr, uint16_t port) {
  in6_addr a6{};
  if (inet_pton(AF_INET6, addr, &a6) == 1) return Endpoint::v6(a6, htons(port));
  in_addr a{};
  inet_pton(AF_INET, addr, &a);
  return Endpoint::v4(a.s_addr, htons(port));
}

std::string bytes(std::initializer_list<uint8_t> b) { return std::string(b.begin(), b.end()); }

TEST(ProxyV2, TcpOverIpv4MatchesTheSpecLayout) {
  std::string h = make_proxy_v2(endpoint("10.200.0.2", 54321), endpoint("10.200.0.10", 80));
  std::string want = bytes({
      0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,  // signature
      0x21,                    // version 2 (high nibble), command PROXY (low nibble)
      0x11,                    // AF_INET (high nibble), STREAM (low nibble)
      0x00, 0x0C,              // 12 address bytes follow, big-endian
      0x0A, 0xC8, 0x00, 0x02,  // source address: the client
      0x0A, 0xC8, 0x00, 0x0A,  // destination address: the VIP
      0xD4, 0x31,              // source port 54321
      0x00, 0x50,              // destination port 80
  });
  EXPECT_EQ(h, want);
}

TEST(ProxyV2, LengthFieldCountsExactlyTheAddressBlock) {
  std::string h = make_proxy_v2(endpoint("192.0.2.1", 1), endpoint("198.51.100.7", 8443));
  ASSERT_EQ(h.size(), 28u);  // 16-byte fixed header + 12-byte IPv4 block
  size_t len = size_t(uint8_t(h[14])) << 8 | uint8_t(h[15]);
  EXPECT_EQ(len, h.size() - 16);
}

TEST(ProxyV2, ExtremeAddressesAndPortsKeepNetworkOrder) {
  std::string h = make_proxy_v2(endpoint("255.255.255.255", 65535), endpoint("0.0.0.0", 0));
  EXPECT_EQ(h.substr(16),
            bytes({0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00}));
  h = make_proxy_v2(endpoint("1.2.3.4", 0x0102), endpoint("5.6.7.8", 0x0304));
  EXPECT_EQ(h.substr(16), bytes({1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0x02, 0x03, 0x04}));
}

TEST(ProxyV2, TcpOverIpv6MatchesTheSpecLayout) {
  std::string h = make_proxy_v2(endpoint("fd00:c8::5", 54321), endpoint("fd00:c8::10", 80));
  std::string want = bytes({
      0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,  // signature
      0x21,        // version 2, command PROXY
      0x21,        // AF_INET6 (high nibble), STREAM (low nibble)
      0x00, 0x24,  // 36 address bytes follow
      0xFD, 0x00, 0x00, 0xC8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,  // source: the client
      0xFD, 0x00, 0x00, 0xC8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,  // destination: the VIP
      0xD4, 0x31,  // source port 54321
      0x00, 0x50,  // destination port 80
  });
  EXPECT_EQ(h, want);
}

}  // namespace
}  // namespace tcpha::be
