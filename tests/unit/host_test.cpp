// What tcpha::host looks up about the machine: link-layer addresses of interfaces and
// neighbours. Unprivileged (SIOCGIFHWADDR and /proc/net/arp need no capability).
#include "host/host.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>

#include <string>

namespace tcpha::host {
namespace {

TEST(HostTest, InterfaceMac) {
  auto lo = interface_mac("lo");
  ASSERT_TRUE(lo) << lo.error().message();
  EXPECT_EQ(*lo, Mac{});  // loopback has an all-zero address
  auto none = interface_mac("tcpha-nodev");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().err, ENODEV);
  auto too_long = interface_mac(std::string(IFNAMSIZ, 'x'));
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().err, EINVAL);
  EXPECT_FALSE(interface_mac(""));
}

TEST(HostTest, NeighbourMacOfAnUnknownAddress) {
  EXPECT_FALSE(neighbour_mac(inet_addr("192.0.2.123")));  // TEST-NET-1: never a neighbour
  EXPECT_FALSE(neighbour_mac(INADDR_ANY));
}

TEST(HostTest, OnLink) {
  EXPECT_TRUE(on_link(in_addr{inet_addr("127.0.0.1")}));
  EXPECT_TRUE(on_link(in_addr{inet_addr("127.3.2.1")}));   // lo holds 127.0.0.0/8
  EXPECT_FALSE(on_link(in_addr{inet_addr("240.0.0.1")}));  // reserved (class E): on no subnet
}

}  // namespace
}  // namespace tcpha::host
