// The datapath program run through BPF_PROG_RUN on crafted frames, and the flow
// table operations of tcpha::datapath::Datapath. Needs root (CAP_BPF, CAP_NET_ADMIN).
#include "datapath/datapath.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace tcpha::datapath {
namespace {

constexpr Mac kClientMac{0x02, 0xc1, 0x1e, 0x00, 0x00, 0x01};
constexpr Mac kFeMac{0x02, 0xfe, 0x00, 0x00, 0x00, 0x01};
constexpr Mac kBeMac{0x02, 0xbe, 0x00, 0x00, 0x00, 0x01};
constexpr uint16_t kEthIp = 0x0800, kEthIp6 = 0x86dd, kEthArp = 0x0806;
constexpr uint8_t kProtoTcp = 6, kProtoUdp = 17;
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;
constexpr uint16_t kClientPort = 40000, kVipPort = 80;

uint32_t ip(const char* s) { return inet_addr(s); }
const uint32_t kClient = ip("10.0.0.100"), kVip = ip("10.0.0.10");

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

// Appends headers in wire order; build() fills in the IPv4 total length and checksum.
class PacketBuilder {
 public:
  PacketBuilder& eth(uint16_t type, const Mac& dst = kFeMac, const Mac& src = kClientMac) {
    b_.insert(b_.end(), dst.begin(), dst.end());
    b_.insert(b_.end(), src.begin(), src.end());
    return put16(type);
  }
  PacketBuilder& ipv4(uint8_t proto, const std::vector<uint8_t>& options = {},
                      uint16_t frag_off = 0x4000 /* DF */, uint32_t saddr = kClient,
                      uint32_t daddr = kVip) {
    ip_at_ = b_.size();
    ip_hlen_ = 20 + options.size();
    put8(0x40 | uint8_t(ip_hlen_ / 4)).put8(0).put16(0).put16(0x1234).put16(frag_off);
    put8(64).put8(proto).put16(0);
    put32be(saddr).put32be(daddr);
    b_.insert(b_.end(), options.begin(), options.end());
    return *this;
  }
  PacketBuilder& ipv6(uint8_t next, const in6_addr& saddr, const in6_addr& daddr) {
    put32(0x60000000).put16(0).put8(next).put8(64);
    b_.insert(b_.end(), saddr.s6_addr, saddr.s6_addr + 16);
    b_.insert(b_.end(), daddr.s6_addr, daddr.s6_addr + 16);
    return *this;
  }
  PacketBuilder& tcp(uint8_t flags, uint16_t sport = kClientPort, uint16_t dport = kVipPort) {
    put16(sport).put16(dport).put32(1000).put32(flags & kAck ? 2000 : 0);
    return put8(5 << 4).put8(flags).put16(65535).put16(0).put16(0);
  }
  PacketBuilder& udp(uint16_t sport = kClientPort, uint16_t dport = kVipPort) {
    return put16(sport).put16(dport).put16(8).put16(0);
  }
  PacketBuilder& payload(size_t n) {
    for (size_t i = 0; i < n; ++i) b_.push_back(uint8_t('a' + i % 26));
    return *this;
  }
  std::vector<uint8_t> build() {
    if (ip_at_) {
      set16(*ip_at_ + 2, uint16_t(b_.size() - *ip_at_));
      uint32_t sum = 0;
      for (size_t i = 0; i < ip_hlen_; i += 2) sum += (b_[*ip_at_ + i] << 8) | b_[*ip_at_ + i + 1];
      while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
      set16(*ip_at_ + 10, uint16_t(~sum));
    }
    return b_;
  }

 private:
  PacketBuilder& put8(uint8_t v) {
    b_.push_back(v);
    return *this;
  }
  PacketBuilder& put16(uint16_t v) { return put8(uint8_t(v >> 8)).put8(uint8_t(v)); }
  PacketBuilder& put32(uint32_t v) { return put16(uint16_t(v >> 16)).put16(uint16_t(v)); }
  PacketBuilder& put32be(uint32_t be) { return put32(ntohl(be)); }
  void set16(size_t at, uint16_t v) {
    b_[at] = uint8_t(v >> 8);
    b_[at + 1] = uint8_t(v);
  }

  std::vector<uint8_t> b_;
  std::optional<size_t> ip_at_;
  size_t ip_hlen_ = 0;
};

std::vector<uint8_t> tcp4(uint8_t flags, size_t payload = 0) {
  return PacketBuilder().eth(kEthIp).ipv4(kProtoTcp).tcp(flags).payload(payload).build();
}

FlowKey client_key(uint16_t port = kClientPort) {
  return make_key(kClient, htons(port), kVip, htons(kVipPort));
}

struct RunResult {
  int verdict = -1;
  std::vector<uint8_t> out;
};

class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override { load(64); }

  void load(uint32_t max_flows) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for BPF";
    auto r = Datapath::load_only(max_flows);
    if (!r && r.error().err == EPERM) GTEST_SKIP() << r.error().message();
    ASSERT_TRUE(r) << r.error().message();
    dp_ = std::move(*r);
  }

  RunResult run(const std::vector<uint8_t>& pkt) {
    RunResult r;
    r.out.resize(pkt.size() + 256);
    bpf_test_run_opts o{};
    o.sz = sizeof o;
    o.data_in = pkt.data();
    o.data_size_in = uint32_t(pkt.size());
    o.data_out = r.out.data();
    o.data_size_out = uint32_t(r.out.size());
    o.repeat = 1;
    EXPECT_EQ(bpf_prog_test_run_opts(dp_->prog_fd(), &o), 0) << std::strerror(errno);
    r.out.resize(o.data_size_out);
    r.verdict = int(o.retval);
    return r;
  }

  void put(const FlowKey& k, const tcpha_flow_value& v) {
    ASSERT_EQ(bpf_map_update_elem(dp_->flows_fd(), &k, &v, BPF_ANY), 0);
  }

  void forward_client() {
    ASSERT_TRUE(dp_->hold(client_key()));
    ASSERT_TRUE(dp_->forward(client_key(), 3, kBeMac, kFeMac));
  }

  std::unique_ptr<Datapath> dp_;
};

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
  EXPECT_TRUE(std::equal(pkt.begin() + 12, pkt.end(), r.out.begin() + 12));

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

TEST_F(DatapathTest, ClientFinMarksFlowClosing) {
  forward_client();
  const uint64_t before = now_ns();
  EXPECT_EQ(run(tcp4(kFin | kAck)).verdict, TC_ACT_REDIRECT);
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_FIN);
  EXPECT_GE(v->closing_ns, before);
  const uint64_t first = v->closing_ns;
  // The last ACK still reaches the back-end; the first close time stays.
  EXPECT_EQ(run(tcp4(kFin | kAck)).verdict, TC_ACT_REDIRECT);
  EXPECT_EQ(run(tcp4(kAck)).verdict, TC_ACT_REDIRECT);
  EXPECT_EQ(dp_->lookup(client_key())->closing_ns, first);
  EXPECT_EQ(dp_->counters()[TCPHA_DP_FIN], 2u);
}

TEST_F(DatapathTest, ClientRstMarksFlowClosing) {
  forward_client();
  EXPECT_EQ(run(tcp4(kRst)).verdict, TC_ACT_REDIRECT);
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->flags, TCPHA_FLOW_F_RST);
  EXPECT_NE(v->closing_ns, 0u);
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_RST], 1u);
  EXPECT_EQ(c[TCPHA_DP_FIN], 0u);
}

TEST_F(DatapathTest, SynOnExistingFlowRemovesItAndPasses) {
  forward_client();
  auto syn = tcp4(kSyn);
  auto r = run(syn);
  EXPECT_EQ(r.verdict, TC_ACT_OK);
  EXPECT_EQ(r.out, syn);
  EXPECT_FALSE(dp_->lookup(client_key()));
  // Same for a held flow: the client gave up on the old connection.
  ASSERT_TRUE(dp_->hold(client_key()));
  EXPECT_EQ(run(syn).verdict, TC_ACT_OK);
  EXPECT_FALSE(dp_->lookup(client_key()));
  auto c = dp_->counters();
  EXPECT_EQ(c[TCPHA_DP_STALE_SYN], 2u);
  EXPECT_EQ(c[TCPHA_DP_FORWARD], 0u);
  // forward() refuses to resurrect a flow that a SYN removed mid-handoff.
  EXPECT_EQ(dp_->forward(client_key(), 1, kBeMac, kFeMac).error().err, ENOENT);
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
  EXPECT_TRUE(std::equal(pkt.begin() + 12, pkt.end(), r.out.begin() + 12));
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
  EXPECT_EQ(c[TCPHA_DP_RX], c[TCPHA_DP_PASS] + c[TCPHA_DP_HOLD_DROP] + c[TCPHA_DP_FORWARD]);
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_HOLD_DROP), "hold_drop");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_FORWARD_BYTES), "forward_bytes");
  EXPECT_STREQ(Datapath::counter_help(TCPHA_DP_RX), "packets seen by the datapath");
  EXPECT_STREQ(Datapath::counter_name(TCPHA_DP_NR_COUNTERS), "unknown");
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
  ASSERT_TRUE(dp_->mark_closing(client_key(), 1000));
  ASSERT_TRUE(dp_->mark_closing(client_key(), 2000));
  auto v = dp_->lookup(client_key());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->closing_ns, 1000u);
  EXPECT_EQ(v->state, TCPHA_FLOW_FORWARD);
  EXPECT_EQ(v->backend, 3u);
  EXPECT_TRUE(dp_->mark_closing(client_key(9), 1000));  // unknown flow: nothing to do
  EXPECT_FALSE(dp_->lookup(client_key(9)));
}

TEST_F(DatapathTest, GcRemovesClosedIdleAndStaleHolds) {
  constexpr uint64_t s = 1'000'000'000, now = 1000 * s;
  constexpr uint64_t linger = 60 * s, idle = 300 * s, hold_max = 2 * s;
  auto flow = [](uint8_t state, uint64_t last_seen, uint64_t closing) {
    tcpha_flow_value v{};
    v.state = state;
    v.last_seen_ns = last_seen;
    v.closing_ns = closing;
    return v;
  };
  put(client_key(1), flow(TCPHA_FLOW_FORWARD, now - s, now - 61 * s));  // closed: remove
  put(client_key(2), flow(TCPHA_FLOW_FORWARD, now - s, now - 59 * s));  // lingering: keep
  put(client_key(3), flow(TCPHA_FLOW_FORWARD, now - 301 * s, 0));       // idle: remove
  put(client_key(4), flow(TCPHA_FLOW_FORWARD, now - 299 * s, 0));       // quiet: keep
  put(client_key(5), flow(TCPHA_FLOW_FORWARD, now + s, 0));             // seen after now: keep
  put(client_key(6), flow(TCPHA_FLOW_HOLD, now - 3 * s, 0));            // crashed handoff
  put(client_key(7), flow(TCPHA_FLOW_HOLD, now - s / 2, 0));            // handoff under way
  auto st = dp_->gc(now, linger, idle, hold_max);
  EXPECT_EQ(st.removed_closed, 1u);
  EXPECT_EQ(st.removed_idle, 2u);
  EXPECT_EQ(st.live, 4u);
  for (uint16_t p : {1, 3, 6}) EXPECT_FALSE(dp_->lookup(client_key(p))) << "port " << p;
  for (uint16_t p : {2, 4, 5, 7}) EXPECT_TRUE(dp_->lookup(client_key(p))) << "port " << p;
  auto again = dp_->gc(now, linger, idle, hold_max);
  EXPECT_EQ(again.removed_closed + again.removed_idle, 0u);
  EXPECT_EQ(again.live, 4u);
}

TEST_F(DatapathTest, HoldIsStampedForGc) {
  ASSERT_TRUE(dp_->hold(client_key()));
  const uint64_t t = now_ns();
  EXPECT_EQ(dp_->gc(t, 0, 0, 10'000'000'000u).live, 1u);
  auto st = dp_->gc(t + 10'000'000'001u, 0, 0, 10'000'000'000u);
  EXPECT_EQ(st.removed_idle, 1u);
  EXPECT_EQ(st.live, 0u);
}

TEST(DatapathSetup, RejectsZeroFlows) {
  auto r = Datapath::load_only(0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, EINVAL);
}

TEST(DatapathSetup, InterfaceMac) {
  auto lo = interface_mac("lo");
  ASSERT_TRUE(lo) << lo.error().message();
  EXPECT_EQ(*lo, Mac{});
  auto none = interface_mac("tcpha-nodev");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().err, ENODEV);
  EXPECT_FALSE(interface_mac(std::string(IFNAMSIZ, 'x')));
  EXPECT_FALSE(neighbour_mac(ip("192.0.2.123")));  // TEST-NET-1: never a neighbour
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
      // Attaching again (a restart after a crash) replaces rather than stacks.
      auto again = Datapath::attach("dp0", 16);
      ASSERT_TRUE(again) << again.error().message();
      again->reset();
    }
    EXPECT_EQ(shell("tc filter show dev dp0 ingress"), "");
    EXPECT_EQ(shell("tc qdisc show dev dp0").find("clsact"), std::string::npos);

    // A clsact qdisc that was there before stays; only our filter goes.
    ASSERT_EQ(std::system("tc qdisc add dev dp0 clsact"), 0);
    {
      auto dp = Datapath::attach("dp0", 16);
      ASSERT_TRUE(dp) << dp.error().message();
      EXPECT_NE(shell("tc filter show dev dp0 ingress").find("tcpha_ingress"), std::string::npos);
    }
    EXPECT_EQ(shell("tc filter show dev dp0 ingress"), "");
    EXPECT_NE(shell("tc qdisc show dev dp0").find("clsact"), std::string::npos);

    auto missing = Datapath::attach("dp-missing", 16);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().err, ENODEV);
  }).join();
}

}  // namespace
}  // namespace tcpha::datapath
