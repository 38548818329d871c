// Tunnel mode in the datapath (docs/tunnel.md), through BPF_PROG_RUN: encapsulation
// toward a tunnel back-end with the next hop from the FIB, decapsulation on a back-end
// with every refusal path, and the guard of an IPv6 VIP. Needs root (CAP_BPF,
// CAP_NET_ADMIN).
#include <sched.h>

#include <cstdlib>

#include "datapath_fixture.hpp"

namespace tcpha::datapath {
namespace {

constexpr uint8_t kProtoIpip = 4, kProtoIpv6 = 41;
const uint32_t kFeAddr = ip("192.0.2.1"), kBeAddr = ip("198.51.100.11"),
               kOtherBe = ip("198.51.100.12"), kStranger = ip("203.0.113.9");

in6_addr ip6(const char* s) {
  in6_addr a{};
  inet_pton(AF_INET6, s, &a);
  return a;
}
const in6_addr kClient6 = ip6("2001:db8::100"), kVip6 = ip6("2001:db8::10");

FlowKey client_key6() {
  FlowKey k{};
  std::memcpy(k.saddr, &kClient6, 16);
  std::memcpy(k.daddr, &kVip6, 16);
  k.sport = htons(kClientPort);
  k.dport = htons(kVipPort);
  k.family = AF_INET6;
  return k;
}

// The inner packet (no Ethernet header) of a frame built by PacketBuilder.
std::vector<uint8_t> ip_part(const std::vector<uint8_t>& frame) { return {frame.begin() + 14, frame.end()}; }

// A tunnelled frame: Ethernet, outer IPv4 from -> to carrying `inner` (an IP packet).
std::vector<uint8_t> tunnelled(uint32_t from, uint32_t to, uint8_t proto, const std::vector<uint8_t>& inner,
                               uint16_t frag_off = 0x4000, const std::vector<uint8_t>& options = {}) {
  return PacketBuilder().eth(kEthIp).ipv4(proto, options, frag_off, from, to).bytes(inner).build();
}

std::vector<uint8_t> tcp6(uint8_t flags, size_t payload = 0) {
  auto f = PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, kClient6, kVip6).tcp(flags).payload(payload).build();
  const uint16_t plen = uint16_t(f.size() - 14 - 40);
  f[kIp + 4] = uint8_t(plen >> 8);
  f[kIp + 5] = uint8_t(plen);
  return f;
}

// ---- Decapsulation (back-ends) ----

class DecapTest : public DatapathTest {
 protected:
  void decap_on() {
    ASSERT_TRUE(dp_->set_guard(kVip));
    ASSERT_TRUE(dp_->set_decap(kBeAddr, {kFeAddr, kOtherBe}));
  }
  void expect_dropped(const std::vector<uint8_t>& f, const char* what) {
    const auto before = dp_->counters()[TCPHA_DP_DECAP_DROP];
    auto r = run(f);
    EXPECT_EQ(r.verdict, TC_ACT_SHOT) << what;
    EXPECT_EQ(dp_->counters()[TCPHA_DP_DECAP_DROP], before + 1) << what;
  }
};

TEST_F(DecapTest, OffTunnelledPacketsPassUntouched) {
  ASSERT_TRUE(dp_->set_guard(kVip));
  auto f = tunnelled(kFeAddr, kBeAddr, kProtoIpip, ip_part(tcp4(kSyn)));
  auto r = run(f);
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  EXPECT_EQ(r.out, f);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_DECAP], 0u);
}

TEST_F(DecapTest, IpipFromAMemberLosesItsOuterHeader) {
  decap_on();
  const auto bare = tcp4(kSyn);  // a pure SYN: the guard lets it through to the stack
  auto r = run(tunnelled(kFeAddr, kBeAddr, kProtoIpip, ip_part(bare)));
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  ASSERT_EQ(r.out.size(), bare.size());
  EXPECT_TRUE(std::equal(bare.begin() + 12, bare.end(), r.out.begin() + 12));  // type + packet
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_DECAP], 1u);
  EXPECT_EQ(c[TCPHA_DP_PASS], 1u);
  EXPECT_EQ(c[TCPHA_DP_RX], 1u);
}

// After decapsulation the packet goes through the program as if it had arrived bare:
// a flow pointing elsewhere (a moved connection's stray) is forwarded, and the guard
// drops a non-SYN for which there is neither a flow nor a socket.
TEST_F(DecapTest, TheInnerPacketMeetsFlowsAndTheGuard) {
  decap_on();
  ASSERT_TRUE(dp_->point(client_key(), 3, kBeMac, kFeMac));
  const auto bare = tcp4(kAck | kPsh, 100);
  auto r = run(tunnelled(kOtherBe, kBeAddr, kProtoIpip, ip_part(bare)));
  EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
  ASSERT_EQ(r.out.size(), bare.size());
  EXPECT_TRUE(std::equal(kBeMac.begin(), kBeMac.end(), r.out.begin()));
  const auto want = hopped(bare);
  EXPECT_TRUE(std::equal(want.begin() + 12, want.end(), r.out.begin() + 12));
  ASSERT_TRUE(dp_->remove(client_key()));
  GuardTest::in_private_netns([&] {
    r = run(tunnelled(kFeAddr, kBeAddr, kProtoIpip, ip_part(bare)));
    EXPECT_EQ(r.verdict, TC_ACT_SHOT);
  });
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_DECAP], 2u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 1u);
  EXPECT_EQ(c[TCPHA_DP_GUARD_NOSOCK], 1u);
}

TEST_F(DecapTest, Ipv6InIpv4BecomesAnIpv6Frame) {
  decap_on();
  ASSERT_TRUE(dp_->set_guard6(kVip6));
  const auto bare = tcp6(kSyn);
  auto r = run(tunnelled(kFeAddr, kBeAddr, kProtoIpv6, ip_part(bare)));
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  ASSERT_EQ(r.out.size(), bare.size());
  EXPECT_EQ(r.out[12] << 8 | r.out[13], kEthIp6);
  EXPECT_TRUE(std::equal(bare.begin() + 14, bare.end(), r.out.begin() + 14));
  EXPECT_EQ(dp_->counters()[TCPHA_DP_DECAP], 1u);
}

TEST_F(DecapTest, EveryRefusalIsDroppedAndCounted) {
  decap_on();
  const auto inner = ip_part(tcp4(kSyn));
  expect_dropped(tunnelled(kStranger, kBeAddr, kProtoIpip, inner), "sender not a member");
  expect_dropped(tunnelled(kFeAddr, kBeAddr, kProtoIpip, inner, 0x2000), "first fragment (MF)");
  expect_dropped(tunnelled(kFeAddr, kBeAddr, kProtoIpip, inner, 0x0010), "later fragment");
  expect_dropped(tunnelled(kFeAddr, kBeAddr, kProtoIpip, inner, 0x4000, {1, 1, 1, 0}),
                 "outer IP options");
  auto other = PacketBuilder().eth(kEthIp).ipv4(kProtoTcp, {}, 0x4000, kClient, ip("10.0.0.99")).tcp(kSyn).build();
  expect_dropped(tunnelled(kFeAddr, kBeAddr, kProtoIpip, ip_part(other)), "inner not for the VIP");
  expect_dropped(tunnelled(kFeAddr, kBeAddr, kProtoIpip, {inner.begin(), inner.begin() + 12}),
                 "truncated inner header");
  expect_dropped(tunnelled(kFeAddr, kBeAddr, kProtoIpv6, ip_part(tcp6(kSyn))), "IPv6 inside, no IPv6 VIP");
  // A removed member is refused from then on.
  ASSERT_TRUE(dp_->set_decap(kBeAddr, {kOtherBe}));
  expect_dropped(tunnelled(kFeAddr, kBeAddr, kProtoIpip, inner), "member removed");
  EXPECT_EQ(dp_->counters()[TCPHA_DP_DECAP], 0u);
}

TEST_F(DecapTest, TunnelledPacketsForSomeoneElseAreNotOurs) {
  decap_on();
  auto f = tunnelled(kFeAddr, kOtherBe, kProtoIpip, ip_part(tcp4(kSyn)));
  auto r = run(f);
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  EXPECT_EQ(r.out, f);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_DECAP] + c[TCPHA_DP_DECAP_DROP], 0u);
}

// ---- Encapsulation (the front-end, or a back-end tunnelling a move's strays) ----
//
// In a private network namespace (a thread of its own): a veth whose end dp0 has
// 192.0.2.1/24, forwards IPv4 (bpf_fib_lookup answers only then), and reaches
// 198.51.100.0/24 through the router 192.0.2.254, whose neighbour entry is permanent.

constexpr Mac kRouterMac{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe};

class EncapTest : public DatapathTest {
 protected:
  void in_routed_netns(const std::function<void(int ifindex, const Mac& own)>& body) {
    if (std::system("command -v ip >/dev/null") != 0) GTEST_SKIP() << "needs iproute2";
    std::thread([&] {
      ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);
      ASSERT_EQ(std::system("ip link add dp0 type veth peer name dp1 && ip link set dp0 up && "
                            "ip link set dp1 up && ip addr add 192.0.2.1/24 dev dp0 && "
                            "ip neigh add 192.0.2.254 lladdr 02:00:00:00:00:fe dev dp0 nud permanent && "
                            "ip route add 198.51.100.0/24 via 192.0.2.254 && "
                            "ip route add 198.51.101.0/24 via 192.0.2.253 && "
                            "echo 1 > /proc/sys/net/ipv4/conf/dp0/forwarding"),
                0);
      const int dp0 = int(if_nametoindex("dp0"));
      UniqueFd s(socket(AF_INET, SOCK_DGRAM, 0));
      ifreq ifr{};
      std::strcpy(ifr.ifr_name, "dp0");
      ASSERT_EQ(ioctl(s.get(), SIOCGIFHWADDR, &ifr), 0);
      Mac own;
      std::memcpy(own.data(), ifr.ifr_hwaddr.sa_data, 6);
      body(dp0, own);
    }).join();
  }

  RunResult run_on(int ifindex, const std::vector<uint8_t>& f) {
    __sk_buff ctx{};
    ctx.ifindex = uint32_t(ifindex);
    return run(f, &ctx);
  }

  // Checks the outer header of an encapsulated frame and returns the inner packet.
  static std::vector<uint8_t> outer_ok(const std::vector<uint8_t>& f, uint32_t from, uint32_t to, uint8_t proto) {
    EXPECT_GE(f.size(), 34u);
    if (f.size() < 34) return {};
    EXPECT_EQ(f[12] << 8 | f[13], kEthIp);
    EXPECT_EQ(f[kIp], 0x45);
    EXPECT_EQ(size_t(f[kIp + 2] << 8 | f[kIp + 3]), f.size() - 14);  // tot_len
    EXPECT_EQ(f[kIp + 6] & 0x40, 0x40);                                // DF
    EXPECT_EQ(f[kIp + 8], 64);                                         // TTL
    EXPECT_EQ(f[kIp + 9], proto);
    uint32_t s, d;
    std::memcpy(&s, &f[kIp + 12], 4);
    std::memcpy(&d, &f[kIp + 16], 4);
    EXPECT_EQ(s, from);
    EXPECT_EQ(d, to);
    EXPECT_TRUE(ip_checksum_ok(f));
    return {f.begin() + 34, f.end()};
  }
};

TEST_F(EncapTest, Ipv4ClientGoesInIpipToTheFibsNextHop) {
  in_routed_netns([&](int dp0, const Mac& own) {
    ASSERT_TRUE(dp_->set_tunnel_source(kFeAddr));
    ASSERT_TRUE(dp_->set_backend(3, Mac{}, false, kBeAddr));
    ASSERT_TRUE(dp_->point(client_key(), 3, Mac{}, kFeMac));
    const auto bare = tcp4(kAck | kPsh, 300);
    auto r = run_on(dp0, bare);
    EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
    ASSERT_EQ(r.out.size(), bare.size() + 20);
    EXPECT_TRUE(std::equal(kRouterMac.begin(), kRouterMac.end(), r.out.begin()));
    EXPECT_TRUE(std::equal(own.begin(), own.end(), r.out.begin() + 6));
    const auto inner = outer_ok(r.out, kFeAddr, kBeAddr, kProtoIpip);
    EXPECT_EQ(inner, ip_part(hopped(bare)));  // the client's packet, TTL one less
    auto c = dp_->counters();
    EXPECT_EQ(c[TCPHA_DP_TUNNEL], 1u);
    EXPECT_EQ(c[TCPHA_DP_FORWARD], 1u);
    EXPECT_EQ(c[TCPHA_DP_FORWARD_BYTES], bare.size());
    auto v = dp_->lookup(client_key());
    ASSERT_TRUE(v);
    EXPECT_EQ(v->packets, 1u);
  });
}

TEST_F(EncapTest, Ipv6ClientGoesInIpv4AsProtocol41) {
  in_routed_netns([&](int dp0, const Mac&) {
    ASSERT_TRUE(dp_->set_tunnel_source(kFeAddr));
    ASSERT_TRUE(dp_->set_backend(4, Mac{}, false, kBeAddr));
    ASSERT_TRUE(dp_->point(client_key6(), 4, Mac{}, kFeMac));
    auto bare = tcp6(kAck | kPsh, 200);
    auto r = run_on(dp0, bare);
    EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
    ASSERT_EQ(r.out.size(), bare.size() + 20);
    const auto inner = outer_ok(r.out, kFeAddr, kBeAddr, kProtoIpv6);
    bare[kIp + 7]--;  // hop limit
    EXPECT_EQ(inner, ip_part(bare));
    EXPECT_EQ(dp_->counters()[TCPHA_DP_TUNNEL], 1u);
  });
}

// No route, no source address, a packet too big for the route once encapsulated, a
// TTL at its end, or an interface that does not forward: dropped, counted, the flow's
// packet count untouched. An unresolved next hop is not a failure: the neighbour
// subsystem resolves it (bpf_redirect_neigh).
TEST_F(EncapTest, EveryFailureIsDroppedAndCounted) {
  in_routed_netns([&](int dp0, const Mac&) {
    ASSERT_TRUE(dp_->set_tunnel_source(kFeAddr));
    ASSERT_TRUE(dp_->set_backend(3, Mac{}, false, kBeAddr));
    ASSERT_TRUE(dp_->set_backend(4, Mac{}, false, kStranger));  // no route there
    ASSERT_TRUE(dp_->set_backend(5, Mac{}, false, ip("198.51.101.7")));  // gateway unresolved
    auto drops = [&] { return dp_->counters()[TCPHA_DP_TUNNEL_DROP]; };

    ASSERT_TRUE(dp_->point(client_key(), 4, Mac{}, kFeMac));
    EXPECT_EQ(run_on(dp0, tcp4(kAck)).verdict, TC_ACT_SHOT);
    EXPECT_EQ(drops(), 1u);

    ASSERT_TRUE(dp_->point(client_key(), 3, Mac{}, kFeMac));
    const auto full = tcp4(kAck | kPsh, 1500 - 40);  // 1500 bytes: 1520 encapsulated
    EXPECT_EQ(run_on(dp0, full).verdict, TC_ACT_SHOT);
    EXPECT_EQ(drops(), 2u);
    EXPECT_EQ(run_on(dp0, tcp4(kAck | kPsh, 1500 - 60)).verdict, TC_ACT_REDIRECT);  // fits

    EXPECT_EQ(run_on(dp0, PacketBuilder().ttl(1).eth(kEthIp).ipv4(kProtoTcp).tcp(kAck).build()).verdict,
              TC_ACT_SHOT);
    EXPECT_EQ(dp_->counters()[TCPHA_DP_TTL_DROP], 1u);

    ASSERT_TRUE(dp_->set_tunnel_source(0));
    EXPECT_EQ(run_on(dp0, tcp4(kAck)).verdict, TC_ACT_SHOT);
    EXPECT_EQ(drops(), 3u);
    ASSERT_TRUE(dp_->set_tunnel_source(kFeAddr));

    ASSERT_EQ(std::system("echo 0 > /proc/sys/net/ipv4/conf/dp0/forwarding"), 0);
    EXPECT_EQ(run_on(dp0, tcp4(kAck)).verdict, TC_ACT_SHOT);
    EXPECT_EQ(drops(), 4u);
    ASSERT_EQ(std::system("echo 1 > /proc/sys/net/ipv4/conf/dp0/forwarding"), 0);

    auto v = dp_->lookup(client_key());
    ASSERT_TRUE(v);
    EXPECT_EQ(v->packets, 1u);  // the one that fitted

    ASSERT_TRUE(dp_->point(client_key(), 5, Mac{}, kFeMac));
    EXPECT_EQ(run_on(dp0, tcp4(kAck)).verdict, TC_ACT_REDIRECT);
    EXPECT_EQ(drops(), 4u);
    EXPECT_EQ(dp_->counters()[TCPHA_DP_TUNNEL], 2u);
  });
}

// A failed tunnel back-end's flows go to their backup like a DR one's (never to the
// dead back-end's address).
TEST_F(EncapTest, AFailedTunnelBackendIsNotTunnelledTo) {
  in_routed_netns([&](int dp0, const Mac&) {
    ASSERT_TRUE(dp_->set_tunnel_source(kFeAddr));
    ASSERT_TRUE(dp_->set_backend(3, Mac{}, true, kBeAddr));
    ASSERT_TRUE(dp_->point(client_key(), 3, Mac{}, kFeMac));
    EXPECT_EQ(run_on(dp0, tcp4(kAck)).verdict, TC_ACT_SHOT);
    auto c = dp_->counters();
    EXPECT_EQ(c[TCPHA_DP_FAILOVER_DROP], 1u);
    EXPECT_EQ(c[TCPHA_DP_TUNNEL], 0u);
  });
}

// ---- The guard of an IPv6 VIP (back-ends) ----

TEST_F(GuardTest, Ipv6VipIsGuardedLikeTheIpv4One) {
  const in6_addr lo6 = ip6("::1");
  auto to_vip6 = [&](uint8_t flags, uint16_t client_port) {
    auto f = PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, lo6, lo6).tcp(flags, client_port, kGuardPort)
                 .payload(flags & kPsh ? 20 : 0).build();
    const uint16_t plen = uint16_t(f.size() - 14 - 40);
    f[kIp + 4] = uint8_t(plen >> 8);
    f[kIp + 5] = uint8_t(plen);
    return f;
  };
  in_private_netns([&] {
    EXPECT_EQ(run(to_vip6(kAck | kPsh, 40001)).verdict, TC_ACT_OK);  // off: as before
    ASSERT_TRUE(dp_->set_guard6(lo6));
    EXPECT_EQ(run(to_vip6(kAck | kPsh, 40001)).verdict, TC_ACT_SHOT);  // no socket
    EXPECT_EQ(run(to_vip6(kSyn, 40001)).verdict, TC_ACT_OK);           // a new connection
    UniqueFd l(socket(AF_INET6, SOCK_STREAM, 0));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = lo6;
    a.sin6_port = htons(kGuardPort);
    ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    ASSERT_EQ(listen(l.get(), 4), 0);
    EXPECT_EQ(run(to_vip6(kAck | kPsh, 40001)).verdict, TC_ACT_SHOT);  // only a listener
    UniqueFd c(socket(AF_INET6, SOCK_STREAM, 0));
    ASSERT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    UniqueFd srv(accept(l.get(), nullptr, nullptr));
    sockaddr_in6 me{};
    socklen_t len = sizeof me;
    getsockname(c.get(), reinterpret_cast<sockaddr*>(&me), &len);
    EXPECT_EQ(run(to_vip6(kAck | kPsh, ntohs(me.sin6_port))).verdict, TC_ACT_OK);  // established
    auto cnt = dp_->counters();
    EXPECT_EQ(cnt[TCPHA_DP_GUARD_NOSOCK], 2u);
  });
}

}  // namespace
}  // namespace tcpha::datapath
