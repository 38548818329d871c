// The datapath program run through BPF_PROG_RUN on crafted frames, the flow table
// operations of tcpha::datapath::Datapath and the flow GC. Needs root (CAP_BPF,
// CAP_NET_ADMIN).
#include "datapath/datapath.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "datapath/flow_gc.hpp"
#include "datapath_fixture.hpp"

namespace tcpha::datapath {
namespace {

TEST_F(DatapathTest, UnknownFlowPassesUntouched) {
  auto pkt = tcp4(kAck | kPsh, 100);
  auto r = run(pkt);
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  EXPECT_EQ(r.out, pkt);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_RX], 1u);
  EXPECT_EQ(c[TCPHA_DP_PASS], 1u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 0u);
}

TEST_F(DatapathTest, HeldFlowIsDropped) {
  ASSERT_TRUE(dp_->hold(client_key()));
  EXPECT_EQ(run(tcp4(kAck)).verdict, TC_ACT_SHOT);
  // Another client port is another flow.
  EXPECT_EQ(run(PacketBuilder().eth(kEthIp).ipv4(kProtoTcp).tcp(kAck, 40001).build()).verdict,
            TC_ACT_OK);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_HOLD_DROP], 1u);
  EXPECT_EQ(c[TCPHA_DP_PASS], 1u);
}

TEST_F(DatapathTest, ForwardRewritesBothMacsAndRedirects) {
  forward_client();
  const uint64_t before = now_ns();
  auto pkt = tcp4(kAck | kPsh, 300);
  auto r = run(pkt);
  const uint64_t after = now_ns();
  EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
  ASSERT_EQ(r.out.size(), pkt.size());
  EXPECT_TRUE(std::equal(kBeMac.begin(), kBeMac.end(), r.out.begin()));
  EXPECT_TRUE(std::equal(kFeMac.begin(), kFeMac.end(), r.out.begin() + 6));
  // Only the TTL and the IP checksum change beyond the MACs.
  const auto want = hopped(pkt);
  EXPECT_TRUE(std::equal(want.begin() + 12, want.end(), r.out.begin() + 12));
  EXPECT_EQ(r.out[kIp + 8], 63);
  EXPECT_TRUE(ip_checksum_ok(r.out));

  run(pkt);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 2u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD_BYTES], 2 * pkt.size());
  EXPECT_EQ(c[TCPHA_DP_PASS], 0u);
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->state, TCPHA_FLOW_FORWARD);
  EXPECT_EQ(v->backend, 3u);
  EXPECT_EQ(v->packets, 2u);
  EXPECT_EQ(v->bytes, 2 * pkt.size());
  EXPECT_GE(v->last_seen_ns, before);
  EXPECT_GE(now_ns(), v->last_seen_ns);
  EXPECT_LE(before, after);
  EXPECT_EQ(v->flags, 0);
  EXPECT_EQ(v->closing_ns, 0u);
}

// Loop protection: two hosts whose entries point at each other for one 4-tuple (a
// back-end that moved a connection back before the first one dropped its entry)
// must not bounce a packet forever. Every hop costs one TTL, and the IP checksum
// stays valid whatever its value was: all 65536 ids give all 65536 checksums.
TEST_F(DatapathTest, ForwardDecrementsTtlWithAValidChecksum) {
  forward_client();
  uint32_t bad = 0;
  for (uint32_t id = 0; id <= 0xffff; ++id) {
    auto pkt = PacketBuilder().id(uint16_t(id)).eth(kEthIp).ipv4(kProtoTcp).tcp(kAck).build();
    auto r = run(pkt);
    ASSERT_EQ(r.verdict, TC_ACT_REDIRECT);
    const auto want = hopped(pkt);
    if (!ip_checksum_ok(r.out) || !std::equal(want.begin() + 12, want.end(), r.out.begin() + 12))
      ++bad;
  }
  EXPECT_EQ(bad, 0u);
  // Down to the last hop: TTL 2 leaves as 1, which the next host drops.
  for (uint8_t ttl : {255, 2}) {
    auto r = run(PacketBuilder().ttl(ttl).eth(kEthIp).ipv4(kProtoTcp).tcp(kAck).build());
    EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
    EXPECT_EQ(r.out[kIp + 8], ttl - 1);
    EXPECT_TRUE(ip_checksum_ok(r.out));
  }
  EXPECT_EQ(dp_->counters()[TCPHA_DP_TTL_DROP], 0u);
}

TEST_F(DatapathTest, ExpiredTtlIsDroppedNotForwarded) {
  forward_client();
  for (uint8_t ttl : {1, 0}) {
    auto pkt = PacketBuilder().ttl(ttl).eth(kEthIp).ipv4(kProtoTcp).tcp(kAck).build();
    EXPECT_EQ(run(pkt).verdict, TC_ACT_SHOT) << "ttl " << int(ttl);
  }
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->packets, 0u);  // not forwarded, not stamped as traffic
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_TTL_DROP], 2u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 0u);
  // The TTL only matters for packets to forward: one for the stack keeps it.
  auto other = PacketBuilder().ttl(1).eth(kEthIp).ipv4(kProtoTcp).tcp(kAck, 40001).build();
  auto r = run(other);
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  EXPECT_EQ(r.out, other);
}

TEST_F(DatapathTest, ForwardDecrementsTheIpv6HopLimit) {
  in6_addr client{}, vip{};
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::64", &client), 1);
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::a", &vip), 1);
  FlowKey k{};
  std::memcpy(k.saddr, &client, 16);
  std::memcpy(k.daddr, &vip, 16);
  k.sport = htons(kClientPort);
  k.dport = htons(kVipPort);
  k.family = AF_INET6;
  ASSERT_TRUE(dp_->hold(k));
  ASSERT_TRUE(dp_->forward(k, 1, kBeMac, kFeMac));
  auto pkt = PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, client, vip).tcp(kAck).build();
  auto r = run(pkt);
  EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
  ASSERT_EQ(r.out.size(), pkt.size());
  auto want = pkt;
  want[kIp + 7] = 63;  // hop limit; IPv6 has no header checksum
  EXPECT_TRUE(std::equal(want.begin() + 12, want.end(), r.out.begin() + 12));
  auto last = PacketBuilder().ttl(1).eth(kEthIp6).ipv6(kProtoTcp, client, vip).tcp(kAck).build();
  EXPECT_EQ(run(last).verdict, TC_ACT_SHOT);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_TTL_DROP], 1u);
  EXPECT_EQ(dp_->lookup(k)->packets, 1u);
}

// Issue 11 item 2: anyone on the client's network can send a FIN or RST with the
// client's 4-tuple and any sequence number. They go to the back-end, whose kernel
// judges them (RFC 5961); the datapath only flags them and starts no linger.
TEST_F(DatapathTest, ClientFinIsForwardedWithoutStartingTheLinger) {
  forward_client();
  EXPECT_EQ(run(tcp4(kFin | kAck)).verdict, TC_ACT_REDIRECT);
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_FIN);
  EXPECT_EQ(v->closing_ns, 0u);
  // The last ACK still reaches the back-end.
  EXPECT_EQ(run(tcp4(kFin | kAck)).verdict, TC_ACT_REDIRECT);
  EXPECT_EQ(run(tcp4(kAck)).verdict, TC_ACT_REDIRECT);
  EXPECT_EQ(dp_->lookup(client_key())->closing_ns, 0u);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_FIN], 2u);
}

TEST_F(DatapathTest, ClientRstWithAnySequenceIsForwardedWithoutStartingTheLinger) {
  forward_client();
  for (uint32_t seq : {1000u, 0x80000000u, 7u}) {
    auto rst =
        PacketBuilder().eth(kEthIp).ipv4(kProtoTcp).tcp(kRst, kClientPort, kVipPort, seq).build();
    auto r = run(rst);
    EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
    ASSERT_EQ(r.out.size(), rst.size());
    const auto want = hopped(rst);
    EXPECT_TRUE(std::equal(want.begin() + 12, want.end(), r.out.begin() + 12)) << "seq " << seq;
  }
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->state, TCPHA_FLOW_FORWARD);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_RST);
  EXPECT_EQ(v->closing_ns, 0u);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_RST], 3u);
  EXPECT_EQ(c[TCPHA_DP_FIN], 0u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 3u);
  // And the GC does not take a flagged flow for a closed one.
  FlowGc gc(*dp_);
  auto st = gc.sweep(now_ns() + 3'600'000'000'000u, {1, 86'400'000'000'000u, 1});
  EXPECT_EQ(st.removed_closed + st.removed_idle, 0u);
  EXPECT_TRUE(dp_->lookup(client_key()));
}

// Issue 11 item 2: one spoofed SYN with the client's 4-tuple used to delete the
// live flow, and the connection died. Now it is dropped and the flow stays.
TEST_F(DatapathTest, SynOnLiveForwardFlowIsDroppedAndFlowKept) {
  forward_client();
  run(tcp4(kAck));  // a live flow: it just forwarded a packet
  auto syn = tcp4(kSyn);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(run(syn).verdict, TC_ACT_SHOT);
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->state, TCPHA_FLOW_FORWARD);
  EXPECT_EQ(v->packets, 1u);  // the SYNs were not forwarded
  EXPECT_EQ(run(tcp4(kAck | kPsh, 10)).verdict, TC_ACT_REDIRECT);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_SYN_DROP], 3u);
  EXPECT_EQ(c[TCPHA_DP_STALE_SYN], 0u);
  EXPECT_EQ(c[TCPHA_DP_PASS], 0u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 2u);
}

// A flow quiet for less than the linger is live too (a keep-alive between requests).
TEST_F(DatapathTest, SynOnFlowQuietForLessThanTheLingerIsDropped) {
  constexpr uint64_t s = 1'000'000'000;
  dp_->set_linger(5 * s);
  forward_client();
  auto v = *dp_->lookup(client_key());
  v.last_seen_ns = now_ns() - 4 * s;
  put(client_key(), v);
  EXPECT_EQ(run(tcp4(kSyn)).verdict, TC_ACT_SHOT);
  EXPECT_TRUE(dp_->lookup(client_key()));
}

TEST_F(DatapathTest, SynOnHeldFlowIsDroppedAndTheHandoffGoesOn) {
  ASSERT_TRUE(dp_->hold(client_key()));
  EXPECT_EQ(run(tcp4(kSyn)).verdict, TC_ACT_SHOT);
  ASSERT_TRUE(dp_->lookup(client_key()));
  EXPECT_EQ(dp_->lookup(client_key())->state, TCPHA_FLOW_HOLD);
  EXPECT_TRUE(dp_->forward(client_key(), 1, kBeMac, kFeMac));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_SYN_DROP], 1u);
  EXPECT_EQ(c[TCPHA_DP_HOLD_DROP], 0u);
}

// The back-end reported the connection finished: a SYN on the 4-tuple is the
// client's next connection (port reuse), for the FE's stack.
TEST_F(DatapathTest, SynAfterBackendClosedPassesAndRemovesFlow) {
  forward_client();
  run(tcp4(kAck));
  ASSERT_TRUE(dp_->mark_closing(client_key(), now_ns()));
  auto syn = tcp4(kSyn);
  auto r = run(syn);
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  EXPECT_EQ(r.out, syn);
  EXPECT_FALSE(dp_->lookup(client_key()));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_STALE_SYN], 1u);
  EXPECT_EQ(c[TCPHA_DP_SYN_DROP], 0u);
  // forward() refuses to resurrect a flow that a SYN removed.
  EXPECT_EQ(dp_->forward(client_key(), 1, kBeMac, kFeMac).error().err, ENOENT);
}

// Same after the linger too (the GC has not come by yet).
TEST_F(DatapathTest, SynAfterBackendClosedAndLingerPassesAndRemovesFlow) {
  constexpr uint64_t s = 1'000'000'000;
  dp_->set_linger(5 * s);
  forward_client();
  ASSERT_TRUE(dp_->mark_closing(client_key(), now_ns() - 6 * s));
  EXPECT_EQ(run(tcp4(kSyn)).verdict, TC_ACT_OK);
  EXPECT_FALSE(dp_->lookup(client_key()));
}

TEST_F(DatapathTest, SynOnFlowIdlePastTheLingerPassesAndRemovesFlow) {
  constexpr uint64_t s = 1'000'000'000;
  forward_client();
  auto v = *dp_->lookup(client_key());
  v.last_seen_ns = now_ns() - 2 * s;
  put(client_key(), v);
  EXPECT_EQ(dp_->linger(), TCPHA_DEFAULT_LINGER_NS);
  EXPECT_EQ(run(tcp4(kSyn)).verdict, TC_ACT_SHOT);  // 2 s < the default 5 s
  // The knob is read per packet: a reload that shortens the linger applies at once.
  dp_->set_linger(1 * s);
  EXPECT_EQ(dp_->linger(), 1 * s);
  EXPECT_EQ(run(tcp4(kSyn)).verdict, TC_ACT_OK);
  EXPECT_FALSE(dp_->lookup(client_key()));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_SYN_DROP], 1u);
  EXPECT_EQ(c[TCPHA_DP_STALE_SYN], 1u);
}

// A SYN+ACK is not a new connection: on a FORWARD flow it goes to the back-end,
// whose kernel answers it (challenge ACK), as before.
TEST_F(DatapathTest, SynAckIsNotTakenForANewConnection) {
  forward_client();
  EXPECT_EQ(run(tcp4(kSyn | kAck)).verdict, TC_ACT_REDIRECT);
  EXPECT_TRUE(dp_->lookup(client_key()));
  EXPECT_EQ(dp_->counters()[TCPHA_DP_SYN_DROP], 0u);
}

TEST_F(DatapathTest, NonTcpPasses) {
  ASSERT_TRUE(dp_->hold(client_key()));
  auto udp = PacketBuilder().eth(kEthIp).ipv4(kProtoUdp).udp().payload(20).build();
  auto arp = PacketBuilder().eth(kEthArp).payload(28).build();
  for (const auto& pkt : {udp, arp}) {
    auto r = run(pkt);
    EXPECT_EQ(r.verdict, TC_ACT_OK);
    EXPECT_EQ(r.out, pkt);
  }
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_PASS], 2u);
  EXPECT_EQ(c[TCPHA_DP_HOLD_DROP], 0u);
  EXPECT_EQ(c[TCPHA_DP_MALFORMED], 0u);
}

TEST_F(DatapathTest, TruncatedHeadersPassAsMalformed) {
  ASSERT_TRUE(dp_->hold(client_key()));
  // BPF_PROG_RUN itself refuses frames cut inside the IP header, so the cuts
  // tested here fall inside the TCP header.
  auto full = tcp4(kAck);
  std::vector<uint8_t> half_tcp(full.begin(), full.begin() + 14 + 20 + 10);
  in6_addr a{};
  auto full6 = PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, a, a).tcp(kAck).build();
  std::vector<uint8_t> half_tcp6(full6.begin(), full6.begin() + 14 + 40 + 6);
  auto bad_ihl = full;  // an IHL below 5 is impossible
  bad_ihl[14] = 0x44;
  auto bad_version = full;
  bad_version[14] = 0x65;
  for (const auto& pkt : {half_tcp, half_tcp6, bad_ihl, bad_version}) {
    auto r = run(pkt);
    EXPECT_EQ(r.verdict, TC_ACT_OK);
    EXPECT_EQ(r.out, pkt);
  }
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_MALFORMED], 4u);
  EXPECT_EQ(c[TCPHA_DP_PASS], 4u);
  EXPECT_EQ(c[TCPHA_DP_HOLD_DROP], 0u);
}

TEST_F(DatapathTest, Ipv4OptionsAreSkippedByIhl) {
  // Router alert + NOP padding: 8 option bytes, TCP starts at IP offset 28.
  const std::vector<uint8_t> opts = {0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00};
  auto pkt = PacketBuilder().eth(kEthIp).ipv4(kProtoTcp, opts).tcp(kAck).payload(10).build();
  ASSERT_TRUE(dp_->hold(client_key()));
  EXPECT_EQ(run(pkt).verdict, TC_ACT_SHOT);
  ASSERT_TRUE(dp_->forward(client_key(), 1, kBeMac, kFeMac));
  auto r = run(pkt);
  EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
  ASSERT_EQ(r.out.size(), pkt.size());
  const auto want = hopped(pkt);  // the checksum covers the options too
  EXPECT_TRUE(std::equal(want.begin() + 12, want.end(), r.out.begin() + 12));
  EXPECT_TRUE(ip_checksum_ok(r.out));
  // Options cut short by the end of the frame.
  std::vector<uint8_t> cut(pkt.begin(), pkt.begin() + 14 + 28 + 10);
  EXPECT_EQ(run(cut).verdict, TC_ACT_OK);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_MALFORMED], 1u);
}

TEST_F(DatapathTest, NonFirstFragmentPasses) {
  ASSERT_TRUE(dp_->hold(client_key()));
  // Offset 185 * 8 bytes: the bytes where the ports would be are payload.
  auto frag = PacketBuilder().eth(kEthIp).ipv4(kProtoTcp, {}, 185).tcp(kAck).build();
  EXPECT_EQ(run(frag).verdict, TC_ACT_OK);
  // The first fragment (MF set, offset 0) carries the TCP header and is the flow's.
  auto first = PacketBuilder().eth(kEthIp).ipv4(kProtoTcp, {}, 0x2000).tcp(kAck).build();
  EXPECT_EQ(run(first).verdict, TC_ACT_SHOT);
}

TEST_F(DatapathTest, Ipv6FlowsAreLookedUp) {
  in6_addr client{}, vip{};
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::64", &client), 1);
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::a", &vip), 1);
  FlowKey k{};
  std::memcpy(k.saddr, &client, 16);
  std::memcpy(k.daddr, &vip, 16);
  k.sport = htons(kClientPort);
  k.dport = htons(kVipPort);
  k.family = AF_INET6;
  auto pkt = PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, client, vip).tcp(kAck).build();
  EXPECT_EQ(run(pkt).verdict, TC_ACT_OK);
  ASSERT_TRUE(dp_->hold(k));
  EXPECT_EQ(run(pkt).verdict, TC_ACT_SHOT);
  // The IPv4 flow with the same ports is a different key.
  EXPECT_EQ(run(tcp4(kAck)).verdict, TC_ACT_OK);
}

TEST_F(DatapathTest, CountersAddUp) {
  forward_client();
  ASSERT_TRUE(dp_->hold(client_key(40001)));
  run(tcp4(kAck));
  run(PacketBuilder().eth(kEthIp).ipv4(kProtoTcp).tcp(kAck, 40001).build());
  run(PacketBuilder().eth(kEthArp).payload(28).build());
  run(tcp4(kSyn));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_RX], 4u);
  EXPECT_EQ(c[TCPHA_DP_RX], c[TCPHA_DP_PASS] + c[TCPHA_DP_HOLD_DROP] + c[TCPHA_DP_FORWARD] +
                                c[TCPHA_DP_SYN_DROP] + c[TCPHA_DP_GUARD_NOSOCK] +
                                c[TCPHA_DP_GUARD_REPAIR] + c[TCPHA_DP_TTL_DROP] +
                                c[TCPHA_DP_FAILOVER_DROP]);
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_HOLD_DROP), "hold_drop");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_FORWARD_BYTES), "forward_bytes");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_SYN_DROP), "syn_drop");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_GUARD_NOSOCK), "guard_nosock");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_GUARD_REPAIR), "guard_repair");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_TTL_DROP), "ttl_drop");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_COPY), "copy");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_FAILOVER), "failover");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_FAILOVER_DROP), "failover_drop");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_EGRESS_GUARD), "egress_guard");
  EXPECT_STREQ(Datapath::counter_help(TCPHA_DP_COPY), "client packets copied to a backup");
  EXPECT_STREQ(Datapath::counter_help(TCPHA_DP_RX), "packets seen by the datapath");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_NR_COUNTERS), "unknown");
}

TEST_F(GuardTest, OffByDefaultEverythingPassesAsBefore) {
  EXPECT_EQ(dp_->guard(), 0u);
  in_private_netns([&] {
    for (uint8_t flags : {kAck, uint8_t(kAck | kPsh), kRst, uint8_t(kFin | kAck)}) {
      auto pkt = to_vip(flags, 40000);
      auto r = run(pkt);
      EXPECT_EQ(r.verdict, TC_ACT_OK);
      EXPECT_EQ(r.out, pkt);
    }
  });
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_PASS], 4u);
  EXPECT_EQ(c[TCPHA_DP_GUARD_NOSOCK] + c[TCPHA_DP_GUARD_REPAIR], 0u);
}

TEST_F(GuardTest, NoSocketIsDroppedPureSynAndOtherAddressesPass) {
  guard_on();
  in_private_netns([&] {
    for (uint8_t flags :
         {kAck, uint8_t(kAck | kPsh), kRst, uint8_t(kFin | kAck), uint8_t(kSyn | kAck)})
      EXPECT_EQ(run(to_vip(flags, 40000)).verdict, TC_ACT_SHOT) << "flags " << int(flags);
    // A new connection's SYN is the stack's to answer, as without the guard.
    auto syn = to_vip(kSyn, 40000);
    auto r = run(syn);
    EXPECT_EQ(r.verdict, TC_ACT_OK);
    EXPECT_EQ(r.out, syn);
    // Only the guarded VIP: another local address, or the VIP's address family's
    // other half (IPv6), is untouched.
    EXPECT_EQ(run(to_vip(kAck, 40000, ip("127.0.0.78"))).verdict, TC_ACT_OK);
    in6_addr a{};
    EXPECT_EQ(
        run(PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, a, a).tcp(kAck, 40000, kGuardPort).build())
            .verdict,
        TC_ACT_OK);
  });
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_GUARD_NOSOCK], 5u);
  EXPECT_EQ(c[TCPHA_DP_GUARD_REPAIR], 0u);
  EXPECT_EQ(c[TCPHA_DP_PASS], 3u);
  // Off again: passes.
  ASSERT_TRUE(dp_->set_guard(0));
  in_private_netns([&] { EXPECT_EQ(run(to_vip(kAck, 40000)).verdict, TC_ACT_OK); });
}

// The listener is there before any import: its RST for an unknown 4-tuple is
// exactly what must not reach the client.
TEST_F(GuardTest, OnlyAListenerIsDropped) {
  guard_on();
  in_private_netns([&] {
    UniqueFd l = listener();
    EXPECT_EQ(run(to_vip(kAck | kPsh, 40000)).verdict, TC_ACT_SHOT);
    EXPECT_EQ(run(to_vip(kSyn, 40000)).verdict, TC_ACT_OK);
  });
  EXPECT_EQ(dp_->counters()[TCPHA_DP_GUARD_NOSOCK], 1u);
}

// The lookup really sees the caller's sockets: an established connection's
// 4-tuple passes where the same packet without it is dropped; in TCP_REPAIR it
// is dropped again, and passes once repair is off.
TEST_F(GuardTest, EstablishedPassesAndInRepairIsDropped) {
  guard_on();
  in_private_netns([&] {
    UniqueFd l = listener();
    Conn c = connect_to(l.get());
    ASSERT_NE(c.client_port, 0);
    auto ack = to_vip(kAck | kPsh, c.client_port);
    auto r = run(ack);
    EXPECT_EQ(r.verdict, TC_ACT_OK);
    EXPECT_EQ(r.out, ack);
    EXPECT_EQ(run(to_vip(kAck, uint16_t(c.client_port + 1))).verdict, TC_ACT_SHOT);

    set_repair(c.server.get(), 1);
    EXPECT_EQ(run(ack).verdict, TC_ACT_SHOT);
    EXPECT_EQ(run(to_vip(kFin | kAck, c.client_port)).verdict, TC_ACT_SHOT);
    set_repair(c.server.get(), 0);
    EXPECT_EQ(run(ack).verdict, TC_ACT_OK);
  });
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_GUARD_REPAIR], 2u);
  EXPECT_EQ(c[TCPHA_DP_GUARD_NOSOCK], 1u);
  EXPECT_EQ(c[TCPHA_DP_PASS], 2u);
}

// The import itself, as the target runs it: a socket in repair mode bound to the
// VIP's port next to the listener and "connected" to the client (repair mode
// hashes it as established without a packet). Dropped until repair is off.
TEST_F(GuardTest, ImportStillInRepairIsDropped) {
  guard_on();
  in_private_netns([&] {
    UniqueFd l = listener();
    constexpr uint16_t kPort = 45000;
    auto ack = to_vip(kAck | kPsh, kPort);
    EXPECT_EQ(run(ack).verdict, TC_ACT_SHOT);  // before the import: the listener only
    UniqueFd s(socket(AF_INET, SOCK_STREAM, 0));
    set_repair(s.get(), 1);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = kGuardVip;
    a.sin_port = htons(kGuardPort);
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    a.sin_addr.s_addr = kLoClient;
    a.sin_port = htons(kPort);
    ASSERT_EQ(connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0)
        << std::strerror(errno);
    EXPECT_EQ(run(ack).verdict, TC_ACT_SHOT);
    // Without the window probe that TCP_REPAIR_OFF sends: nothing listens on the
    // client's side here, and its RST would reset the socket.
    set_repair(s.get(), TCP_REPAIR_OFF_NO_WP);
    EXPECT_EQ(run(ack).verdict, TC_ACT_OK);
  });
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_GUARD_NOSOCK], 1u);
  EXPECT_EQ(c[TCPHA_DP_GUARD_REPAIR], 1u);
}

// A connection this host closed first sits in TIME_WAIT: the client's last ACK or
// a retransmitted FIN must still meet it (it answers them), not be dropped.
TEST_F(GuardTest, TimeWaitPasses) {
  guard_on();
  in_private_netns([&] {
    UniqueFd l = listener();
    Conn c = connect_to(l.get());
    auto fin = to_vip(kFin | kAck, c.client_port);
    c.server.reset();  // active close: the accepted side goes to TIME_WAIT
    char b;
    EXPECT_EQ(read(c.client.get(), &b, 1), 0);
    c.client.reset();
    EXPECT_EQ(run(fin).verdict, TC_ACT_OK);
  });
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_GUARD_NOSOCK] + c[TCPHA_DP_GUARD_REPAIR], 0u);
}

// Entries keep their behaviour: a HOLD drops as HOLD, a FORWARD forwards, with no
// socket lookup.
TEST_F(GuardTest, FlowEntriesTakePrecedence) {
  guard_on();
  const FlowKey held = make_key(kLoClient, htons(40000), kGuardVip, htons(kGuardPort));
  const FlowKey fwd = make_key(kLoClient, htons(40001), kGuardVip, htons(kGuardPort));
  ASSERT_TRUE(dp_->hold(held));
  ASSERT_TRUE(dp_->hold(fwd));
  ASSERT_TRUE(dp_->forward(fwd, 2, kBeMac, kFeMac));
  in_private_netns([&] {
    EXPECT_EQ(run(to_vip(kAck, 40000)).verdict, TC_ACT_SHOT);
    EXPECT_EQ(run(to_vip(kAck, 40001)).verdict, TC_ACT_REDIRECT);
  });
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_HOLD_DROP], 1u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 1u);
  EXPECT_EQ(c[TCPHA_DP_GUARD_NOSOCK] + c[TCPHA_DP_GUARD_REPAIR], 0u);
}

// BE failover (docs/failover.md): a flow's backup gets copies of the client packets
// that carry data, SYN, FIN or RST (in the copies ring, read with a CopyReader), and
// every packet once the primary's slot is FAILED. Forwarded packets run in a private
// network namespace, in case a redirect ever left BPF_PROG_RUN.
constexpr Mac kBackupMac{0x02, 0xbb, 0x00, 0x00, 0x00, 0x05};

// The client's flow made older than TCPHA_BACKUP_DUE_MS (its client FINs are copied).
void make_old(int flows_fd, FlowKey key = client_key()) {
  tcpha_flow_value v{};
  ASSERT_EQ(bpf_map_lookup_elem(flows_fd, &key, &v), 0);
  ASSERT_NE(v.born_ms, 0u) << "the FE stamps its flows";
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  v.born_ms = uint32_t(ts.tv_sec * 1000 + ts.tv_nsec / 1'000'000 - TCPHA_BACKUP_DUE_MS - 1);
  ASSERT_EQ(bpf_map_update_elem(flows_fd, &key, &v, BPF_EXIST), 0);
}

// ... and young for a minute, however slow this machine is (its birth "in the future").
void make_young(int flows_fd, FlowKey key = client_key()) {
  tcpha_flow_value v{};
  ASSERT_EQ(bpf_map_lookup_elem(flows_fd, &key, &v), 0);
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  v.born_ms = uint32_t(ts.tv_sec * 1000 + ts.tv_nsec / 1'000'000 + 60'000);
  ASSERT_EQ(bpf_map_update_elem(flows_fd, &key, &v, BPF_EXIST), 0);
}

uint32_t tcp_seq(const std::vector<uint8_t>& f) {  // IPv4 without options
  return uint32_t(f[38]) << 24 | uint32_t(f[39]) << 16 | uint32_t(f[40]) << 8 | f[41];
}
uint8_t tcp_flags(const std::vector<uint8_t>& f) { return f[47]; }

class FailoverTest : public GuardTest {
 protected:
  static constexpr uint32_t kPrimary = 3, kBackup = 5;
  static constexpr uint16_t kBackupField = kBackup + 1;  // slot + 1

  // The client's flow, forwarded to kPrimary with kBackup as its backup (both slots
  // known, neither failed) unless told otherwise.
  void backed_up_flow(uint16_t backup = kBackupField) {
    ASSERT_TRUE(dp_->set_backend(kPrimary, kBeMac, false));
    ASSERT_TRUE(dp_->set_backend(kBackup, kBackupMac, false));
    ASSERT_TRUE(dp_->hold(client_key()));
    ASSERT_TRUE(dp_->forward(client_key(), kPrimary, kBeMac, kFeMac, backup));
    if (young)
      make_young(dp_->flows_fd());
    else
      make_old(dp_->flows_fd());
  }
  bool young = false;  // backed_up_flow() makes it young (for a minute) rather than old

  RunResult run_isolated(const std::vector<uint8_t>& pkt) {
    RunResult r;
    in_private_netns([&] { r = run(pkt); });
    return r;
  }

  struct Copy {
    uint16_t slot;
    std::vector<uint8_t> frame;
  };
  // The copies in the ring since the last call, oldest first.
  std::vector<Copy> copies() {
    std::vector<Copy> out;
    if (!reader_) {
      auto r = CopyReader::open(*dp_);
      EXPECT_TRUE(r) << r.error().message();
      if (!r) return out;
      reader_.emplace(std::move(*r));
    }
    reader_->drain([&](uint16_t slot, const uint8_t* f, size_t n) {
      out.push_back(Copy{slot, std::vector<uint8_t>(f, f + n)});
    });
    return out;
  }
  std::optional<CopyReader> reader_;  // destroyed before the datapath

  // The frame forwarded to the MAC `to`: the MACs rewritten, TTL one less.
  static bool forwarded_to(const RunResult& r, const std::vector<uint8_t>& pkt, const Mac& to) {
    const auto want = hopped(pkt);
    return r.verdict == TC_ACT_REDIRECT && r.out.size() == pkt.size() &&
           std::equal(to.begin(), to.end(), r.out.begin()) &&
           std::equal(kFeMac.begin(), kFeMac.end(), r.out.begin() + 6) &&
           std::equal(want.begin() + 12, want.end(), r.out.begin() + 12);
  }
};

TEST_F(FailoverTest, FailedPrimarySendsEveryPacketToTheBackupUncopied) {
  backed_up_flow();
  ASSERT_TRUE(dp_->set_backend(kPrimary, kBeMac, true));  // one update for all its flows
  for (const auto& pkt : {tcp4(kAck | kPsh, 100), tcp4(kAck), tcp4(kFin | kAck)}) {
    auto r = run_isolated(pkt);
    EXPECT_TRUE(forwarded_to(r, pkt, kBackupMac));
  }
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_FAILOVER], 3u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 3u);
  EXPECT_EQ(c[TCPHA_DP_COPY], 0u);
  EXPECT_EQ(c[TCPHA_DP_FAILOVER_DROP], 0u);
  EXPECT_EQ(dp_->lookup(client_key())->packets, 3u);

  // The slot back (the FE was wrong, or it is another back-end now): to the primary.
  ASSERT_TRUE(dp_->set_backend(kPrimary, kBeMac, false));
  auto pkt = tcp4(kAck);
  EXPECT_TRUE(forwarded_to(run_isolated(pkt), pkt, kBeMac));
  EXPECT_EQ(dp_->counters()[TCPHA_DP_FAILOVER], 3u);
}

TEST_F(FailoverTest, FailedPrimaryWithoutAUsableBackupDrops) {
  // No backup; a backup that failed too; one whose MAC the FE never set; one beyond
  // the table.
  const uint16_t unknown = 10, beyond = TCPHA_MAX_BACKENDS + 44;
  for (uint16_t backup : {uint16_t(0), kBackupField, unknown, beyond}) {
    SCOPED_TRACE(backup);
    backed_up_flow(backup);
    ASSERT_TRUE(dp_->set_backend(kPrimary, kBeMac, true));
    ASSERT_TRUE(dp_->set_backend(kBackup, kBackupMac, backup == kBackupField));
    const uint64_t before = dp_->counters()[TCPHA_DP_FAILOVER_DROP];
    EXPECT_EQ(run_isolated(tcp4(kAck | kPsh, 100)).verdict, TC_ACT_SHOT);
    EXPECT_EQ(run_isolated(tcp4(kAck)).verdict, TC_ACT_SHOT);
    EXPECT_EQ(dp_->counters()[TCPHA_DP_FAILOVER_DROP], before + 2);
  }
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_FORWARD] + c[TCPHA_DP_FAILOVER] + c[TCPHA_DP_COPY], 0u);
  EXPECT_EQ(c[TCPHA_DP_RX], c[TCPHA_DP_FAILOVER_DROP]);
}

TEST_F(FailoverTest, DataSynFinAndRstAreCopiedAndStillGoToThePrimary) {
  backed_up_flow();
  const std::vector<std::vector<uint8_t>> pkts = {
      tcp4(kAck | kPsh, 300), tcp4(kAck, 1), tcp4(kSyn | kAck),
      tcp4(kFin | kAck),      tcp4(kRst),    tcp4(kRst | kAck)};
  for (const auto& pkt : pkts) {
    auto r = run_isolated(pkt);
    // The original leaves unchanged but for its MACs and TTL: its ethertype is back.
    EXPECT_TRUE(forwarded_to(r, pkt, kBeMac));
  }
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_COPY], pkts.size());
  EXPECT_EQ(c[TCPHA_DP_FORWARD], pkts.size());
  EXPECT_EQ(c[TCPHA_DP_FAILOVER] + c[TCPHA_DP_FAILOVER_DROP], 0u);
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->backup, kBackupField);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_FIN | TCPHA_FLOW_F_RST);
}

// A young flow (its BACKUP not due yet): a FIN without data is not copied, as most
// such connections end before their backup hears of them; a FIN with data is.
TEST_F(FailoverTest, AYoungFlowsFinWithoutDataIsNotCopied) {
  young = true;
  backed_up_flow();
  auto fin = tcp4(kFin | kAck);
  EXPECT_TRUE(forwarded_to(run_isolated(fin), fin, kBeMac));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_COPY], 0u);
  EXPECT_EQ(c[TCPHA_DP_COPY_FIN_LATER], 1u);
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_FIN | TCPHA_FLOW_F_FIN_UNCOPIED);
  // Young still: the FIN again, or an ACK, goes to the primary only.
  EXPECT_TRUE(forwarded_to(run_isolated(fin), fin, kBeMac));
  EXPECT_TRUE(forwarded_to(run_isolated(tcp4(kAck)), tcp4(kAck), kBeMac));
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], 0u);

  // Another flow: a young FIN with data is copied at once.
  ASSERT_TRUE(dp_->remove(client_key()));
  backed_up_flow();
  auto data_fin = tcp4(kFin | kAck | kPsh, 40);
  EXPECT_TRUE(forwarded_to(run_isolated(data_fin), data_fin, kBeMac));
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], 1u);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY_FIN_LATER], 1u);
}

// Most of a download's client packets: nothing the backup must replay. The length
// comes from the IP header, not the frame: Ethernet pads a pure ACK to 60 bytes.
TEST_F(FailoverTest, PureAcksAreNotCopied) {
  backed_up_flow();
  auto padded = tcp4(kAck);
  padded.resize(60, 0);
  const std::vector<std::vector<uint8_t>> pkts = {
      tcp4(kAck), tcp4(kAck | kPsh), padded,
      PacketBuilder().eth(kEthIp).ipv4(kProtoTcp, {1, 1, 1, 1}).tcp(kAck).build()};
  for (const auto& pkt : pkts) EXPECT_TRUE(forwarded_to(run_isolated(pkt), pkt, kBeMac));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_FORWARD], pkts.size());
  EXPECT_EQ(c[TCPHA_DP_COPY], 0u);
  // One byte after IP options is data.
  EXPECT_EQ(
      run_isolated(
          PacketBuilder().eth(kEthIp).ipv4(kProtoTcp, {1, 1, 1, 1}).tcp(kAck).payload(1).build())
          .verdict,
      TC_ACT_REDIRECT);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], 1u);
}

TEST_F(FailoverTest, Ipv6DataIsCopiedPureAcksAreNot) {
  in6_addr client{}, vip{};
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::64", &client), 1);
  ASSERT_EQ(inet_pton(AF_INET6, "fd00::a", &vip), 1);
  FlowKey k{};
  std::memcpy(k.saddr, &client, 16);
  std::memcpy(k.daddr, &vip, 16);
  k.sport = htons(kClientPort);
  k.dport = htons(kVipPort);
  k.family = AF_INET6;
  ASSERT_TRUE(dp_->set_backend(kBackup, kBackupMac, false));
  ASSERT_TRUE(dp_->point(k, kPrimary, kBeMac, kFeMac, kBackupField));
  auto data = PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, client, vip).tcp(kAck).payload(10);
  auto ack = PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, client, vip).tcp(kAck);
  EXPECT_EQ(run_isolated(ack.build()).verdict, TC_ACT_REDIRECT);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], 0u);
  // IPv6's payload length is not filled in by the builder: set it.
  auto pkt = data.build();
  const uint16_t plen = uint16_t(pkt.size() - kIp - 40);
  pkt[kIp + 4] = uint8_t(plen >> 8);
  pkt[kIp + 5] = uint8_t(plen);
  EXPECT_EQ(run_isolated(pkt).verdict, TC_ACT_REDIRECT);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], 1u);
}

TEST_F(FailoverTest, NoCopyToAFailedOrUnknownBackup) {
  backed_up_flow();
  ASSERT_TRUE(dp_->set_backend(kBackup, kBackupMac, true));
  auto pkt = tcp4(kAck | kPsh, 100);
  EXPECT_TRUE(forwarded_to(run_isolated(pkt), pkt, kBeMac));
  ASSERT_TRUE(dp_->set_backend(kBackup, Mac{}, false));  // slot without a MAC
  EXPECT_TRUE(forwarded_to(run_isolated(pkt), pkt, kBeMac));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 2u);
  EXPECT_EQ(c[TCPHA_DP_COPY] + c[TCPHA_DP_FAILOVER] + c[TCPHA_DP_FAILOVER_DROP], 0u);
}

TEST_F(FailoverTest, FlowsWithoutABackupAreForwardedAsBefore) {
  ASSERT_TRUE(dp_->set_backend(kPrimary, kBeMac, false));
  forward_client();  // slot 3, no backup
  for (const auto& pkt : {tcp4(kAck | kPsh, 100), tcp4(kFin | kAck), tcp4(kAck)})
    EXPECT_TRUE(forwarded_to(run_isolated(pkt), pkt, kBeMac));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 3u);
  EXPECT_EQ(c[TCPHA_DP_COPY] + c[TCPHA_DP_FAILOVER] + c[TCPHA_DP_FAILOVER_DROP], 0u);
  EXPECT_EQ(dp_->lookup(client_key())->backup, 0);
}

TEST_F(FailoverTest, PointStoresTheBackupMarkClosedDropsIt) {
  ASSERT_TRUE(dp_->point(client_key(), kPrimary, kBeMac, kFeMac, kBackupField));
  EXPECT_EQ(dp_->lookup(client_key())->backup, kBackupField);
  ASSERT_TRUE(dp_->mark_closed(client_key(), kPrimary, kBeMac, kFeMac, 5000));
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->backup, 0);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_BE_CLOSED);
}

TEST_F(DatapathTest, SetBackendFillsTheSlotTable) {
  const Mac mac{1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(dp_->set_backend(TCPHA_MAX_BACKENDS - 1, mac, true));
  uint32_t slot = TCPHA_MAX_BACKENDS - 1;
  tcpha_backend b{};
  ASSERT_EQ(bpf_map_lookup_elem(dp_->backends_fd(), &slot, &b), 0);
  EXPECT_TRUE(std::equal(mac.begin(), mac.end(), b.mac));
  EXPECT_EQ(b.flags, TCPHA_BACKEND_F_FAILED);
  ASSERT_TRUE(dp_->set_backend(slot, mac, false));
  ASSERT_EQ(bpf_map_lookup_elem(dp_->backends_fd(), &slot, &b), 0);
  EXPECT_EQ(b.flags, 0);
  auto s = dp_->set_backend(TCPHA_MAX_BACKENDS, mac, false);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().err, EINVAL);
}

// The egress guard (back-ends with failover on): a killed agent's kernel must not end
// connections with FIN or RST that the backup is about to take over; the agent marks
// the sockets it ends itself.
class EgressGuardTest : public DatapathTest {
 protected:
  // A segment the back-end sends from `from`:port 80 to the client.
  static std::vector<uint8_t> from_vip(uint8_t flags, size_t payload = 0, uint32_t from = kVip) {
    return PacketBuilder()
        .eth(kEthIp, kClientMac, kBeMac)
        .ipv4(kProtoTcp, {}, 0x4000, from, kClient)
        .tcp(flags, kVipPort, kClientPort)
        .payload(payload)
        .build();
  }
  // The egress program's verdict on pkt sent by a socket with SO_MARK `mark`; the
  // frame must leave untouched whatever the verdict.
  int egress(const std::vector<uint8_t>& pkt, uint32_t mark = 0) {
    __sk_buff ctx{};
    ctx.mark = mark;
    auto r = run(pkt, &ctx, dp_->egress_prog_fd());
    EXPECT_EQ(r.out, pkt);
    return r.verdict;
  }
  void guard_on() {
    ASSERT_TRUE(dp_->set_guard(kVip));
    ASSERT_TRUE(dp_->set_egress_guard(true));
    ASSERT_TRUE(dp_->egress_guard());
  }
};

TEST_F(EgressGuardTest, OffUnlessBothTheGuardAndTheEgressGuardAreOn) {
  EXPECT_FALSE(dp_->egress_guard());
  EXPECT_EQ(egress(from_vip(kFin | kAck)), TC_ACT_OK);
  ASSERT_TRUE(dp_->set_guard(kVip));  // the ingress guard alone (failover off)
  EXPECT_EQ(egress(from_vip(kFin | kAck)), TC_ACT_OK);
  EXPECT_EQ(egress(from_vip(kRst)), TC_ACT_OK);
  ASSERT_TRUE(dp_->set_guard(0));
  ASSERT_TRUE(dp_->set_egress_guard(true));  // no VIP to guard
  EXPECT_EQ(egress(from_vip(kFin | kAck)), TC_ACT_OK);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_EGRESS_GUARD], 0u);
}

TEST_F(EgressGuardTest, UnmarkedFinAndRstFromTheVipAreDropped) {
  guard_on();
  EXPECT_EQ(egress(from_vip(kFin | kAck)), TC_ACT_SHOT);
  EXPECT_EQ(egress(from_vip(kFin | kAck | kPsh, 100)), TC_ACT_SHOT);  // FIN on the last data
  EXPECT_EQ(egress(from_vip(kRst)), TC_ACT_SHOT);
  EXPECT_EQ(egress(from_vip(kRst | kAck)), TC_ACT_SHOT);
  EXPECT_EQ(egress(from_vip(kFin | kAck), 1), TC_ACT_SHOT);  // another mark
  // The TCP flags are found after IP options too (and an ACK there passes).
  auto with_options = [](uint8_t flags) {
    return PacketBuilder()
        .eth(kEthIp, kClientMac, kBeMac)
        .ipv4(kProtoTcp, {1, 1, 1, 1}, 0x4000, kVip, kClient)
        .tcp(flags, kVipPort, kClientPort)
        .build();
  };
  EXPECT_EQ(egress(with_options(kFin | kAck)), TC_ACT_SHOT);
  EXPECT_EQ(egress(with_options(kAck)), TC_ACT_OK);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_EGRESS_GUARD], 6u);
  // Turned off again: passes.
  ASSERT_TRUE(dp_->set_egress_guard(false));
  EXPECT_FALSE(dp_->egress_guard());
  EXPECT_EQ(egress(from_vip(kFin | kAck)), TC_ACT_OK);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_EGRESS_GUARD], 6u);
}

TEST_F(EgressGuardTest, MarkedEndsDataAndOtherTrafficPass) {
  guard_on();
  EXPECT_EQ(egress(from_vip(kFin | kAck), TCPHA_MARK_DONE), TC_ACT_OK);
  EXPECT_EQ(egress(from_vip(kRst), TCPHA_MARK_DONE), TC_ACT_OK);
  EXPECT_EQ(egress(from_vip(kRst | kAck), TCPHA_MARK_DONE), TC_ACT_OK);
  EXPECT_EQ(egress(from_vip(kAck | kPsh, 1000)), TC_ACT_OK);
  EXPECT_EQ(egress(from_vip(kAck)), TC_ACT_OK);
  EXPECT_EQ(egress(from_vip(kSyn | kAck)), TC_ACT_OK);
  EXPECT_EQ(egress(from_vip(kFin | kAck, 0, ip("10.0.0.2"))), TC_ACT_OK);  // not the VIP
  EXPECT_EQ(egress(from_vip(kRst, 0, ip("10.0.0.2"))), TC_ACT_OK);
  in6_addr a{};
  EXPECT_EQ(egress(PacketBuilder().eth(kEthIp6).ipv6(kProtoTcp, a, a).tcp(kFin | kAck).build()),
            TC_ACT_OK);
  EXPECT_EQ(egress(PacketBuilder().eth(kEthIp).ipv4(kProtoUdp, {}, 0x4000, kVip).udp().build()),
            TC_ACT_OK);
  EXPECT_EQ(egress(PacketBuilder().eth(kEthArp).payload(28).build()), TC_ACT_OK);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_EGRESS_GUARD], 0u);
  EXPECT_EQ(c[TCPHA_DP_RX], 0u);  // the ingress accounting is the ingress program's
}

TEST_F(DatapathTest, FullTableRefusesNewFlowsAndKeepsOldOnes) {
  dp_.reset();
  load(4);
  if (!dp_) return;
  for (uint16_t p = 1; p <= 4; ++p) ASSERT_TRUE(dp_->hold(client_key(p)));
  ASSERT_TRUE(dp_->forward(client_key(1), 7, kBeMac, kFeMac));
  Status st = dp_->hold(client_key(5));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().err, E2BIG);
  EXPECT_FALSE(dp_->lookup(client_key(5)));
  EXPECT_EQ(dp_->lookup(client_key(1))->state, TCPHA_FLOW_FORWARD);
  for (uint16_t p = 2; p <= 4; ++p) EXPECT_EQ(dp_->lookup(client_key(p))->state, TCPHA_FLOW_HOLD);
  // Existing flows can still change state while the table is full.
  EXPECT_TRUE(dp_->forward(client_key(2), 7, kBeMac, kFeMac));
  EXPECT_TRUE(dp_->hold(client_key(3)));
  // A freed slot is usable again.
  EXPECT_TRUE(dp_->remove(client_key(4)));
  EXPECT_TRUE(dp_->remove(client_key(4)));  // already gone is fine
  EXPECT_TRUE(dp_->hold(client_key(5)));
}

TEST_F(DatapathTest, MarkClosingSetsOnce) {
  forward_client();
  run(tcp4(kFin | kAck));
  ASSERT_TRUE(dp_->mark_closing(client_key(), 1000));
  ASSERT_TRUE(dp_->mark_closing(client_key(), 2000));
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->closing_ns, 1000u);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_FIN | TCPHA_FLOW_F_BE_CLOSED);
  EXPECT_EQ(v->state, TCPHA_FLOW_FORWARD);
  EXPECT_EQ(v->backend, 3u);
  EXPECT_TRUE(dp_->mark_closing(client_key(9), 1000));  // unknown flow: nothing to do
  EXPECT_FALSE(dp_->lookup(client_key(9)));
}

tcpha_flow_value flow(uint8_t state, uint64_t last_seen, uint64_t be_closed = 0,
                      uint8_t flags = 0) {
  tcpha_flow_value v{};
  v.state = state;
  v.last_seen_ns = last_seen;
  v.closing_ns = be_closed;
  v.flags = uint8_t(flags | (be_closed ? TCPHA_FLOW_F_BE_CLOSED : 0));
  return v;
}

constexpr uint64_t kSec = 1'000'000'000;
constexpr FlowLimits kLimits{60 * kSec, 300 * kSec, 2 * kSec};

// The counts a stopping FE polls (open flows) and status shows (all flows), read in
// batches: more flows than one batch (4096) holds.
TEST_F(DatapathTest, CountsEveryFlowAndTheOpenOnes) {
  load(10000);
  EXPECT_EQ(dp_->count_flows(), 0u);
  EXPECT_EQ(dp_->count_open_flows(), 0u);
  const uint64_t now = now_ns();
  for (uint16_t i = 0; i < 5000; ++i) {
    const uint8_t state = i % 5 == 0 ? TCPHA_FLOW_HOLD : TCPHA_FLOW_FORWARD;
    put(client_key(uint16_t(1000 + i)), flow(state, now, i % 5 == 1 ? now : 0));
  }
  EXPECT_EQ(dp_->count_flows(), 5000u);
  EXPECT_EQ(dp_->count_open_flows(), 3000u);  // neither held (1 in 5) nor reported closed (1 in 5)
}

TEST_F(DatapathTest, GcRemovesClosedIdleAndStaleHolds) {
  constexpr uint64_t s = kSec, now = 1000 * s;
  constexpr uint8_t fin_rst = TCPHA_FLOW_F_FIN | TCPHA_FLOW_F_RST;
  put(client_key(1), flow(TCPHA_FLOW_FORWARD, now - 61 * s, now - 61 * s));  // closed: remove
  put(client_key(2), flow(TCPHA_FLOW_FORWARD, now - s, now - 59 * s));       // lingering: keep
  put(client_key(3), flow(TCPHA_FLOW_FORWARD, now - 301 * s));               // idle: remove
  put(client_key(4), flow(TCPHA_FLOW_FORWARD, now - 299 * s));               // quiet: keep
  put(client_key(5), flow(TCPHA_FLOW_FORWARD, now + s));                     // seen after now: keep
  put(client_key(6), flow(TCPHA_FLOW_HOLD, now - 3 * s));                    // crashed handoff
  put(client_key(7), flow(TCPHA_FLOW_HOLD, now - s / 2));                    // handoff under way
  // Client FIN/RST flags alone end nothing: keep.
  put(client_key(8), flow(TCPHA_FLOW_FORWARD, now - 61 * s, 0, fin_rst));
  // Closed by the BE, but the client still sends (a slow reader's ACKs): keep.
  put(client_key(9), flow(TCPHA_FLOW_FORWARD, now - s, now - 61 * s));
  FlowGc gc(*dp_);
  auto st = gc.sweep(now, kLimits);
  EXPECT_TRUE(st.swept);
  EXPECT_EQ(st.visited, 9u);
  EXPECT_EQ(st.removed_closed, 1u);
  EXPECT_EQ(st.removed_idle, 2u);
  EXPECT_EQ(st.live, 6u);
  for (uint16_t p : {1, 3, 6}) EXPECT_FALSE(dp_->lookup(client_key(p))) << "port " << p;
  for (uint16_t p : {2, 4, 5, 7, 8, 9}) EXPECT_TRUE(dp_->lookup(client_key(p))) << "port " << p;
  auto again = gc.sweep(now, kLimits);
  EXPECT_EQ(again.removed_closed + again.removed_idle, 0u);
  EXPECT_EQ(again.live, 6u);
  // Once the slow reader has been quiet for the linger, its flow goes too.
  auto later = gc.sweep(now + 60 * s, kLimits);
  EXPECT_EQ(later.removed_closed, 2u);  // ports 2 and 9
  EXPECT_FALSE(dp_->lookup(client_key(9)));
}

TEST_F(DatapathTest, HoldIsStampedForGc) {
  ASSERT_TRUE(dp_->hold(client_key()));
  const uint64_t t = now_ns();
  FlowGc gc(*dp_);
  EXPECT_EQ(gc.sweep(t, {0, 0, 10 * kSec}).live, 1u);
  auto st = gc.sweep(t + 10 * kSec + 1, {0, 0, 10 * kSec});
  EXPECT_EQ(st.removed_idle, 1u);
  EXPECT_EQ(st.live, 0u);
}

TEST_F(DatapathTest, GcOfAnEmptyTable) {
  FlowGc gc(*dp_);
  auto st = gc.sweep(now_ns(), kLimits);
  EXPECT_TRUE(st.swept);
  EXPECT_EQ(st.visited, 0u);
  EXPECT_EQ(st.live, 0u);
}

// Many flows, read in batches far smaller than the table (batch 1 also makes the
// kernel refuse buckets with two flows, and the batch grows), in budgeted steps
// that resume where the previous one stopped.
TEST_F(DatapathTest, GcSweepsInBatchesAndSteps) {
  constexpr uint32_t kFlows = 6000;
  dp_.reset();
  load(8192);
  if (!dp_) return;
  constexpr uint64_t now = 1000 * kSec;
  std::vector<FlowKey> keys;
  std::vector<tcpha_flow_value> values;
  for (uint32_t i = 0; i < kFlows; ++i) {
    FlowKey k = make_key(htonl(0x0a000000 + i / 50000), htons(uint16_t(1 + i % 50000)), kVip,
                         htons(kVipPort));
    keys.push_back(k);
    const tcpha_flow_value kinds[] = {
        flow(TCPHA_FLOW_FORWARD, now - kSec),                        // keep
        flow(TCPHA_FLOW_FORWARD, now - 61 * kSec, now - 61 * kSec),  // closed
        flow(TCPHA_FLOW_FORWARD, now - 301 * kSec),                  // idle
    };
    values.push_back(kinds[i % 3]);
  }
  for (uint32_t batch : {1u, 7u, 4096u}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    __u32 n = kFlows;
    ASSERT_EQ(bpf_map_update_batch(dp_->flows_fd(), keys.data(), values.data(), &n, nullptr), 0);
    ASSERT_EQ(n, kFlows);
    FlowGc gc(*dp_, batch);
    GcStats sum;
    int steps = 0;
    for (GcStats st; !st.swept && steps < 10000; ++steps) {
      st = gc.step(now, kLimits, 500);
      EXPECT_LE(st.visited, 500u + std::max(batch, 8u));
      sum.visited += st.visited;
      sum.removed_closed += st.removed_closed;
      sum.removed_idle += st.removed_idle;
      sum.live = st.live;
      if (!st.swept) {
        EXPECT_GE(st.visited, 500u);
      }
    }
    EXPECT_GE(steps, int(kFlows / (500 + 4096)));
    EXPECT_EQ(sum.visited, kFlows);
    EXPECT_EQ(sum.removed_closed, kFlows / 3);
    EXPECT_EQ(sum.removed_idle, kFlows / 3);
    EXPECT_EQ(sum.live, kFlows / 3);
    for (uint32_t i = 0; i < kFlows; ++i)
      ASSERT_EQ(bool(dp_->lookup(keys[i])), i % 3 == 0) << "flow " << i;
    // The next sweep starts from the beginning and finds the survivors.
    auto again = gc.sweep(now, kLimits);
    EXPECT_EQ(again.visited, kFlows / 3);
    EXPECT_EQ(again.live, kFlows / 3);
  }
}

// What was read as over may have changed by the time of the delete: a flow that
// came back to life, or was re-programmed, must stay.
TEST_F(DatapathTest, GcDecidesAgainBeforeDeleting) {
  constexpr uint32_t kFlows = 2000;
  dp_.reset();
  load(4096);
  if (!dp_) return;
  constexpr uint64_t now = 1000 * kSec;
  std::vector<FlowKey> keys;
  for (uint32_t i = 0; i < kFlows; ++i) keys.push_back(client_key(uint16_t(i + 1)));
  for (const auto& k : keys) put(k, flow(TCPHA_FLOW_FORWARD, now - 400 * kSec));  // idle
  FlowGc gc(*dp_, 64);
  gc.after_read = [&] {
    for (uint32_t i = 0; i < kFlows; i += 4)
      put(keys[i], flow(TCPHA_FLOW_FORWARD, now));  // a packet
    for (uint32_t i = 1; i < kFlows; i += 4)
      put(keys[i], flow(TCPHA_FLOW_HOLD, now));                                  // a new hold
    for (uint32_t i = 2; i < kFlows; i += 4) ASSERT_TRUE(dp_->remove(keys[i]));  // removed
  };
  auto st = gc.sweep(now, kLimits);
  EXPECT_EQ(st.visited, kFlows);
  EXPECT_EQ(st.removed_idle, kFlows / 4);
  EXPECT_EQ(st.removed_closed, 0u);
  for (uint32_t i = 0; i < kFlows; ++i) ASSERT_EQ(bool(dp_->lookup(keys[i])), i % 4 < 2) << i;
}

// A handoff that created its flow and finds the same even epoch at COMMIT skips the
// lookup (fe/worker.cpp): the epoch must be odd while a pass may delete, and move on.
TEST_F(DatapathTest, GcEpochIsOddWhileAPassDeletes) {
  constexpr uint64_t now = 1000 * kSec;
  put(client_key(1), flow(TCPHA_FLOW_FORWARD, now - 400 * kSec));  // idle: deleted
  FlowGc gc(*dp_);
  const uint64_t e0 = dp_->gc_epoch();
  EXPECT_EQ(e0 % 2, 0u);
  uint64_t during = 0;
  gc.after_read = [&] { during = dp_->gc_epoch(); };
  auto st = gc.sweep(now, kLimits);
  EXPECT_EQ(st.removed_idle, 1u);
  const uint64_t e1 = dp_->gc_epoch();
  EXPECT_EQ(e1 % 2, 0u);
  EXPECT_GT(e1, e0) << "a pass that deleted moved the epoch on";
  EXPECT_EQ(during, e0) << "reading alone does not";
  // A pass with nothing to delete leaves it alone (no lookup forced on handoffs).
  put(client_key(2), flow(TCPHA_FLOW_FORWARD, now));
  gc.sweep(now, kLimits);
  EXPECT_EQ(dp_->gc_epoch(), e1);
}

// The FE's CLOSED in one map update: the flow keeps pointing where it did, closed now.
TEST_F(DatapathTest, MarkClosedRewritesTheFlowInOneUpdate) {
  forward_client();
  run(tcp4(kAck));
  ASSERT_TRUE(dp_->mark_closed(client_key(), 3, kBeMac, kFeMac, 5000));
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->state, TCPHA_FLOW_FORWARD);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_BE_CLOSED);
  EXPECT_EQ(v->closing_ns, 5000u);
  EXPECT_EQ(v->last_seen_ns, 5000u);
  EXPECT_EQ(v->backend, 3u);
  EXPECT_EQ(0, std::memcmp(v->dmac, kBeMac.data(), 6));
  EXPECT_EQ(0, std::memcmp(v->smac, kFeMac.data(), 6));
  // A SYN may now replace it, as after mark_closing.
  EXPECT_EQ(run(tcp4(kSyn)).verdict, TC_ACT_OK);
  EXPECT_FALSE(dp_->lookup(client_key()));
  // A flow that is gone stays gone.
  EXPECT_TRUE(dp_->mark_closed(client_key(9), 3, kBeMac, kFeMac, 5000));
  EXPECT_FALSE(dp_->lookup(client_key(9)));
}

TEST_F(DatapathTest, GcThreadSetsTheLingerSweepsAndReports) {
  constexpr uint64_t s = kSec;
  forward_client();
  const uint64_t t = now_ns();
  put(client_key(2), flow(TCPHA_FLOW_FORWARD, t - 6 * s, t - 6 * s));  // closed 6 s ago
  put(client_key(3), flow(TCPHA_FLOW_FORWARD, t - 10 * s));            // idle 10 s
  std::atomic<uint64_t> linger{7 * s};
  std::atomic<int> reports{0};
  std::atomic<size_t> live{999};
  {
    FlowGcThread th(
        *dp_,
        [&] {
          return FlowLimits{linger.load(), 600 * s, 2 * s};
        },
        [&](const GcStats& st) {
          live = st.live;
          ++reports;
        },
        std::chrono::milliseconds(5));
    EXPECT_EQ(dp_->linger(), 7 * s);  // before the first tick
    for (int i = 0; i < 400 && reports.load() < 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_GE(reports.load(), 2);
    EXPECT_EQ(live.load(), 3u);  // linger 7 s, idle 600 s: all stay
    linger = 5 * s;              // a reload
    const int seen = reports.load();
    for (int i = 0; i < 400 && reports.load() < seen + 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(dp_->linger(), 5 * s);
    EXPECT_EQ(live.load(), 2u);
    EXPECT_FALSE(dp_->lookup(client_key(2)));
    th.stop();
    th.stop();  // idempotent
  }
  EXPECT_TRUE(dp_->lookup(client_key()));
  EXPECT_TRUE(dp_->lookup(client_key(3)));
}

TEST(FlowGcThreadTest, SliceGrowsWithTheTableWithinBounds) {
  EXPECT_EQ(FlowGcThread::entries_per_tick(16), 65536u);
  EXPECT_EQ(FlowGcThread::entries_per_tick(65536), 65536u);      // swept whole every tick
  EXPECT_EQ(FlowGcThread::entries_per_tick(1u << 22), 131072u);  // 4M: 32 ticks
  EXPECT_EQ(FlowGcThread::entries_per_tick(1u << 24), 262144u);  // 16M: 64 ticks
}

TEST(DatapathSetup, RejectsZeroFlows) {
  auto r = Datapath::load_only(0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, EINVAL);
}

std::string shell(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[512];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    pclose(p);
  }
  return out;
}

// The real attach/detach path, on a veth pair in a private network namespace that
// belongs to one thread (unshare) and vanishes with it.
TEST(DatapathAttach, AttachesAndDetachesOnVeth) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (std::system("command -v ip >/dev/null && command -v tc >/dev/null") != 0)
    GTEST_SKIP() << "needs iproute2";
  std::thread([] {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    ASSERT_EQ(std::system("ip link add dp0 type veth peer name dp1 && ip link set dp0 up"), 0);
    {
      auto dp = Datapath::attach("dp0", 16);
      ASSERT_TRUE(dp) << dp.error().message();
      EXPECT_NE(shell("tc qdisc show dev dp0").find("clsact"), std::string::npos);
      EXPECT_NE(shell("tc filter show dev dp0 ingress").find("tcpha_ingress"), std::string::npos);
      // The egress guard's program only where it is wanted (a back-end with failover).
      EXPECT_EQ(shell("tc filter show dev dp0 egress"), "");
      ASSERT_TRUE((*dp)->set_egress_guard(true));
      EXPECT_NE(shell("tc filter show dev dp0 egress").find("tcpha_egress"), std::string::npos);
      // Attaching again (a restart after a crash) replaces rather than stacks.
      auto again = Datapath::attach("dp0", 16);
      ASSERT_TRUE(again) << again.error().message();
      ASSERT_TRUE((*again)->set_egress_guard(true));
      again->reset();
    }
    EXPECT_EQ(shell("tc filter show dev dp0 ingress"), "");
    EXPECT_EQ(shell("tc filter show dev dp0 egress"), "");
    EXPECT_EQ(shell("tc qdisc show dev dp0").find("clsact"), std::string::npos);

    // A clsact qdisc that was there before stays; only our filter goes.
    ASSERT_EQ(std::system("tc qdisc add dev dp0 clsact"), 0);
    {
      auto dp = Datapath::attach("dp0", 16);
      ASSERT_TRUE(dp) << dp.error().message();
      EXPECT_NE(shell("tc filter show dev dp0 ingress").find("tcpha_ingress"), std::string::npos);
      ASSERT_TRUE((*dp)->set_egress_guard(true));
      EXPECT_NE(shell("tc filter show dev dp0 egress").find("tcpha_egress"), std::string::npos);
    }
    EXPECT_EQ(shell("tc filter show dev dp0 ingress"), "");
    EXPECT_EQ(shell("tc filter show dev dp0 egress"), "");
    EXPECT_NE(shell("tc qdisc show dev dp0").find("clsact"), std::string::npos);

    auto missing = Datapath::attach("dp-missing", 16);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().err, ENODEV);
  }).join();
}

// A datapath outlives its FE (docs/fe-restart.md): one released (the process crashed
// or handed over) leaves its filter and its pins, and the next attach with adopt takes
// its flows over, from the pins first, else from the program on the interface; one
// whose layout differs (here max_flows) is refused with the reason. A clean end
// removes the filter, the pins and the bpffs the datapath mounted.
TEST(DatapathAttach, AdoptsWhatAPreviousRunLeft) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (std::system("command -v ip >/dev/null && command -v tc >/dev/null") != 0)
    GTEST_SKIP() << "needs iproute2";
  char tmpl[] = "/tmp/tcpha-adopt.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = std::string(tmpl) + "/bpf", pins = root + "/fe-1";
  std::thread([&] {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    ASSERT_EQ(std::system("ip link add dp0 type veth peer name dp1 && ip link set dp0 up"), 0);
    AttachOptions o;
    o.max_flows = 16;
    o.adopt = true;
    o.pin_dir = pins;
    const FlowKey keys[] = {client_key(40001), client_key(40002), client_key(40003)};
    {
      auto dp = Datapath::attach("dp0", o);
      ASSERT_TRUE(dp) << dp.error().message();
      EXPECT_EQ((*dp)->adoption().source, "");  // nothing to adopt
      EXPECT_EQ((*dp)->adoption().refused, "");
      for (const auto& k : keys) ASSERT_TRUE((*dp)->point(k, 1, kBeMac, kFeMac));
      EXPECT_EQ(access((pins + "/flows").c_str(), F_OK), 0);
      EXPECT_EQ(access((pins + "/ingress").c_str(), F_OK), 0);
      (*dp)->release();  // a crash: nothing undone
    }
    EXPECT_NE(shell("tc filter show dev dp0 ingress").find("tcpha_ingress"), std::string::npos);
    {
      auto dp = Datapath::attach("dp0", o);
      ASSERT_TRUE(dp) << dp.error().message();
      EXPECT_EQ((*dp)->adoption().source, "pinned");
      EXPECT_EQ((*dp)->adoption().flows, 3u);
      auto v = (*dp)->lookup(keys[1]);
      ASSERT_TRUE(v);
      EXPECT_EQ(v->state, TCPHA_FLOW_FORWARD);
      EXPECT_EQ(v->backend, 1u);
      (*dp)->release();
    }
    {
      // No pins (a process whose bpffs mount went with it): the attached program.
      AttachOptions np = o;
      np.pin_dir.clear();
      auto dp = Datapath::attach("dp0", np);
      ASSERT_TRUE(dp) << dp.error().message();
      EXPECT_EQ((*dp)->adoption().source, "attached");
      EXPECT_EQ((*dp)->adoption().flows, 3u);
      (*dp)->release();
    }
    {
      AttachOptions bigger = o;
      bigger.max_flows = 32;
      auto dp = Datapath::attach("dp0", bigger);
      ASSERT_TRUE(dp) << dp.error().message();
      EXPECT_EQ((*dp)->adoption().source, "");
      EXPECT_NE((*dp)->adoption().refused.find("max_flows"), std::string::npos)
          << (*dp)->adoption().refused;
      EXPECT_FALSE((*dp)->lookup(keys[0]));
    }  // a clean end: everything goes
    EXPECT_EQ(shell("tc filter show dev dp0 ingress"), "");
    EXPECT_NE(access((pins + "/flows").c_str(), F_OK), 0);
    EXPECT_EQ(shell("stat -f -c %T " + root + " 2>/dev/null"), "");  // unmounted and removed
  }).join();
  std::system(("umount " + root + " 2>/dev/null; rm -rf " + std::string(tmpl)).c_str());
}

// The egress guard on real sockets, with mark_done (common/net.hpp) as the back-end
// agent uses it: in a private network namespace whose `lo` carries the datapath, a
// connection to the VIP whose accepted socket closes unmarked sends no FIN the client
// sees (the kernel's close of a killed agent's socket), a marked one does, and the same
// for an RST (SO_LINGER 0).
TEST(EgressGuardSockets, OnlyMarkedSocketsEndTheirConnections) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  std::thread([] {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    {
      UniqueFd s(socket(AF_INET, SOCK_DGRAM, 0));
      ifreq ifr{};
      std::strcpy(ifr.ifr_name, "lo");
      ASSERT_EQ(ioctl(s.get(), SIOCGIFFLAGS, &ifr), 0);
      ifr.ifr_flags |= IFF_UP;
      ASSERT_EQ(ioctl(s.get(), SIOCSIFFLAGS, &ifr), 0) << std::strerror(errno);
    }
    auto dp = Datapath::attach("lo", 16);
    ASSERT_TRUE(dp) << dp.error().message();
    const uint32_t vip = ip("127.0.0.77");
    ASSERT_TRUE((*dp)->set_guard(vip));
    ASSERT_TRUE((*dp)->set_egress_guard(true));

    UniqueFd l(socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a = ipv4_endpoint(vip, htons(8080));
    ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    ASSERT_EQ(listen(l.get(), 8), 0);
    struct Conn {
      UniqueFd client, server;
    };
    auto connect_vip = [&] {
      Conn c;
      c.client = UniqueFd(socket(AF_INET, SOCK_STREAM, 0));
      EXPECT_EQ(connect(c.client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
      c.server = UniqueFd(accept(l.get(), nullptr, nullptr));
      EXPECT_TRUE(c.server.valid());
      return c;
    };
    // What the client reads within timeout_ms: 0 (FIN), -ECONNRESET, or 1 (nothing).
    auto client_sees = [](const Conn& c, int timeout_ms) {
      pollfd p{c.client.get(), POLLIN, 0};
      if (poll(&p, 1, timeout_ms) != 1) return 1;
      char b;
      ssize_t n = recv(c.client.get(), &b, 1, MSG_DONTWAIT);
      return n == 0 ? 0 : n < 0 ? -errno : 2;
    };
    auto reset = [](Conn& c) {
      linger lg{1, 0};
      setsockopt(c.server.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      c.server.reset();
    };

    Conn unmarked_fin = connect_vip(), marked_fin = connect_vip();
    Conn unmarked_rst = connect_vip(), marked_rst = connect_vip();
    unmarked_fin.server.reset();
    mark_done(marked_fin.server.get());
    marked_fin.server.reset();
    reset(unmarked_rst);
    mark_done(marked_rst.server.get());
    reset(marked_rst);
    EXPECT_EQ(client_sees(marked_fin, 2000), 0);
    EXPECT_EQ(client_sees(marked_rst, 2000), -ECONNRESET);
    EXPECT_EQ(client_sees(unmarked_fin, 300), 1);
    EXPECT_EQ(client_sees(unmarked_rst, 300), 1);
    EXPECT_GE((*dp)->counters()[TCPHA_DP_EGRESS_GUARD], 2u);

    // Guard off (failover off): the kernel's own FIN goes out as always.
    ASSERT_TRUE((*dp)->set_egress_guard(false));
    Conn plain = connect_vip();
    plain.server.reset();
    EXPECT_EQ(client_sees(plain, 2000), 0);
  }).join();
}

// A copy is the frame as it came (its MACs too), with the TTL the original leaves
// with, tagged with the backup's slot; it is in the ring before the original goes on.
TEST_F(FailoverTest, ACopyIsTheFrameAsItCameTaggedWithItsBackup) {
  backed_up_flow();
  auto data = tcp4(kAck | kPsh, 200);
  EXPECT_TRUE(forwarded_to(run_isolated(data), data, kBeMac));
  auto got = copies();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].slot, kBackup);
  const auto want = hopped(data);
  ASSERT_EQ(got[0].frame.size(), data.size());
  EXPECT_TRUE(std::equal(data.begin(), data.begin() + 14, got[0].frame.begin()));
  EXPECT_TRUE(std::equal(want.begin() + 14, want.end(), got[0].frame.begin() + 14));
  // A pure ACK goes to the primary only.
  EXPECT_TRUE(forwarded_to(run_isolated(tcp4(kAck)), tcp4(kAck), kBeMac));
  EXPECT_TRUE(copies().empty());
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], 1u);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY_LOST], 0u);
}

// A young flow's FIN, not copied then, reaches the backup with the flow's first packet
// after TCPHA_BACKUP_DUE_MS: that packet's copy is made a FIN again (seq - 1, FIN set)
// while the original goes to the primary as it came; once only.
TEST_F(FailoverTest, AYoungFlowsFinReachesTheBackupWithItsNextPacketWhenDue) {
  young = true;
  backed_up_flow();
  const auto fin = tcp4(kFin | kAck);
  EXPECT_TRUE(forwarded_to(run_isolated(fin), fin, kBeMac));
  EXPECT_TRUE(copies().empty()) << "young: not copied";
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY_FIN_LATER], 1u);
  make_old(dp_->flows_fd());
  auto ack = PacketBuilder().eth(kEthIp).ipv4(kProtoTcp).tcp(kAck).build();
  ack[41] += 1;  // one on from the FIN (tcp_seq's byte 3; no carry from the builder's seq)
  ack[50] = ack[51] = 0;  // checksums are not the point here
  ASSERT_EQ(tcp_seq(ack), tcp_seq(fin) + 1);
  auto r = run_isolated(ack);
  EXPECT_EQ(r.verdict, TC_ACT_REDIRECT);
  ASSERT_EQ(r.out.size(), ack.size());
  EXPECT_EQ(tcp_seq(r.out), tcp_seq(ack)) << "the original goes as it came";
  EXPECT_EQ(tcp_flags(r.out), tcp_flags(ack));
  auto got = copies();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].frame.size(), ack.size());
  EXPECT_EQ(tcp_seq(got[0].frame), tcp_seq(fin)) << "the copy is the FIN";
  EXPECT_EQ(tcp_flags(got[0].frame), tcp_flags(fin));
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->flags & TCPHA_FLOW_F_FIN_UNCOPIED, 0);
  // Once: the next ACK goes to the primary only.
  EXPECT_TRUE(forwarded_to(run_isolated(ack), ack, kBeMac));
  EXPECT_TRUE(copies().empty());
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], 1u);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY_FIN_LATER], 1u);
}

// Nobody reading: the ring fills, and the copies that do not fit are counted lost
// while their packets still go to the primary. Once read, it takes copies again; every
// copy it took comes out, in order.
TEST_F(FailoverTest, AFullRingLosesCopiesCountedAndTakesThemAgainOnceRead) {
  backed_up_flow();
  auto big = tcp4(kAck | kPsh, 1400);
  const size_t fits = TCPHA_COPY_RING_BYTES / (big.size() + sizeof(tcpha_copy) + 8);
  in_private_netns([&] {
    size_t runs = 0;
    while (dp_->counters()[TCPHA_DP_COPY_LOST] == 0 && runs < 2 * fits) {
      big[kIp + 20 + 4] = uint8_t(runs >> 8);  // the TCP seq's low bytes count the copies
      big[kIp + 20 + 7] = uint8_t(runs);
      ASSERT_EQ(run(big).verdict, TC_ACT_REDIRECT);
      ++runs;
    }
    ASSERT_LE(runs, fits + 1) << "the ring holds " << TCPHA_COPY_RING_BYTES << " bytes";
    const uint64_t taken = dp_->counters()[TCPHA_DP_COPY];
    EXPECT_EQ(taken, runs - 1);
    EXPECT_EQ(dp_->counters()[TCPHA_DP_FORWARD], runs);
    auto got = copies();
    ASSERT_EQ(got.size(), taken);
    bool in_order = true;
    for (size_t i = 0; i < got.size(); ++i)
      in_order &= got[i].frame.size() == big.size() && got[i].frame[kIp + 20 + 4] == uint8_t(i >> 8) &&
                  got[i].frame[kIp + 20 + 7] == uint8_t(i);
    EXPECT_TRUE(in_order);
    ASSERT_EQ(run(big).verdict, TC_ACT_REDIRECT);
    EXPECT_EQ(copies().size(), 1u);
    EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY_LOST], 1u);
  });
}

// A copy wakes the FE's reader when it takes the unread copies past a multiple of
// TCPHA_COPY_WAKE_BYTES, and no other copy does: a forced wake-up costs its packet about
// a microsecond, and while the reader was on its way every copy past the mark paid it.
// Each wake-up is an event on an edge-triggered epoll of the ring, looked at after every
// copy: two marks passed, two events, however many copies lie past them.
TEST_F(FailoverTest, OnlyTheCopyThatPassesAWakeMarkWakesTheReader) {
  backed_up_flow();
  const auto data = tcp4(kAck | kPsh, 200);
  const size_t rec = (8 + sizeof(tcpha_copy) + data.size() + 7) / 8 * 8;  // the ring's record
  // Past 2 marks, halfway to the third: many copies past each mark.
  const size_t runs = (2 * TCPHA_COPY_WAKE_BYTES + TCPHA_COPY_WAKE_BYTES / 2) / rec;
  ASSERT_GE(runs * rec, 2 * TCPHA_COPY_WAKE_BYTES);
  ASSERT_LT(runs * rec, 3 * TCPHA_COPY_WAKE_BYTES);
  ASSERT_LT(runs * rec, TCPHA_COPY_RING_BYTES);
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  ASSERT_TRUE(ep.valid());
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(epoll_ctl(ep.get(), EPOLL_CTL_ADD, dp_->copies_fd(), &ev), 0);
  size_t events = 0;
  in_private_netns([&] {
    for (size_t i = 0; i < runs; ++i) {
      ASSERT_EQ(run(data).verdict, TC_ACT_REDIRECT);
      epoll_event e;
      events += size_t(std::max(0, epoll_wait(ep.get(), &e, 1, 0)));
    }
  });
  epoll_event e;  // a last wake-up still on its way (an irq_work)
  events += size_t(std::max(0, epoll_wait(ep.get(), &e, 1, 50)));
  EXPECT_EQ(dp_->counters()[TCPHA_DP_COPY], runs);
  EXPECT_EQ(events, 2u) << runs << " copies of " << rec << " bytes";
  EXPECT_EQ(copies().size(), runs);
}

}  // namespace
}  // namespace tcpha::datapath
