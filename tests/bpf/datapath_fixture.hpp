// Shared by the BPF tests: frames built byte by byte, BPF_PROG_RUN of the datapath's
// programs, and the fixtures (a loaded datapath; the guard's private network
// namespace). Included by one test file per executable.
#pragma once

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "datapath/datapath.hpp"

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

[[maybe_unused]] uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

// Appends headers in wire order; build() fills in the IPv4 total length and checksum.
class PacketBuilder {
 public:
  // IPv4 TTL / IPv6 hop limit and IPv4 id of the next ipv4()/ipv6().
  PacketBuilder& ttl(uint8_t t) {
    ttl_ = t;
    return *this;
  }
  PacketBuilder& id(uint16_t i) {
    id_ = i;
    return *this;
  }
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
    put8(0x40 | uint8_t(ip_hlen_ / 4)).put8(0).put16(0).put16(id_).put16(frag_off);
    put8(ttl_).put8(proto).put16(0);
    put32be(saddr).put32be(daddr);
    b_.insert(b_.end(), options.begin(), options.end());
    return *this;
  }
  PacketBuilder& ipv6(uint8_t next, const in6_addr& saddr, const in6_addr& daddr) {
    put32(0x60000000).put16(0).put8(next).put8(ttl_);
    b_.insert(b_.end(), saddr.s6_addr, saddr.s6_addr + 16);
    b_.insert(b_.end(), daddr.s6_addr, daddr.s6_addr + 16);
    return *this;
  }
  PacketBuilder& tcp(uint8_t flags, uint16_t sport = kClientPort, uint16_t dport = kVipPort,
                     uint32_t seq = 1000) {
    put16(sport).put16(dport).put32(seq).put32(flags & kAck ? 2000 : 0);
    return put8(5 << 4).put8(flags).put16(65535).put16(0).put16(0);
  }
  PacketBuilder& udp(uint16_t sport = kClientPort, uint16_t dport = kVipPort) {
    return put16(sport).put16(dport).put16(8).put16(0);
  }
  PacketBuilder& bytes(const std::vector<uint8_t>& b) {
    b_.insert(b_.end(), b.begin(), b.end());
    return *this;
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
  uint8_t ttl_ = 64;
  uint16_t id_ = 0x1234;
};

constexpr size_t kIp = 14;  // offset of the IP header in an Ethernet frame

// The one's-complement sum of the IPv4 header of an Ethernet frame, folded.
uint16_t ip_header_sum(const std::vector<uint8_t>& f) {
  const size_t hlen = size_t(f[kIp] & 0x0f) * 4;
  uint32_t sum = 0;
  for (size_t i = 0; i < hlen; i += 2) sum += uint32_t(f[kIp + i] << 8 | f[kIp + i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(sum);
}

bool ip_checksum_ok(const std::vector<uint8_t>& f) { return ip_header_sum(f) == 0xffff; }

// What a forwarded IPv4 frame must look like after its MACs: TTL one less, and the
// checksum computed from scratch (not incrementally, as the program does).
std::vector<uint8_t> hopped(std::vector<uint8_t> f) {
  f[kIp + 8]--;
  f[kIp + 10] = f[kIp + 11] = 0;
  const uint16_t check = uint16_t(~ip_header_sum(f));
  f[kIp + 10] = uint8_t(check >> 8);
  f[kIp + 11] = uint8_t(check);
  return f;
}

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

// BPF_PROG_RUN of a tc program on pkt; ctx sets the __sk_buff fields it takes (mark,
// ifindex: the device the packet arrives on, else the loopback device).
RunResult run_prog(int prog_fd, const std::vector<uint8_t>& pkt, const __sk_buff* ctx = nullptr) {
  RunResult r;
  r.out.resize(pkt.size() + 256);
  __sk_buff ctx_in{};
  if (ctx) ctx_in = *ctx;
  bpf_test_run_opts o{};
  o.sz = sizeof o;
  o.data_in = pkt.data();
  o.data_size_in = uint32_t(pkt.size());
  o.data_out = r.out.data();
  o.data_size_out = uint32_t(r.out.size());
  if (ctx) {
    o.ctx_in = &ctx_in;
    o.ctx_size_in = sizeof ctx_in;
  }
  o.repeat = 1;
  EXPECT_EQ(bpf_prog_test_run_opts(prog_fd, &o), 0) << std::strerror(errno);
  r.out.resize(o.data_size_out);
  r.verdict = int(o.retval);
  return r;
}

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

  // Runs the ingress program (or prog_fd) on pkt; see run_prog.
  RunResult run(const std::vector<uint8_t>& pkt, const __sk_buff* ctx = nullptr, int prog_fd = -1) {
    return run_prog(prog_fd >= 0 ? prog_fd : dp_->prog_fd(), pkt, ctx);
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

// The guard (back-ends): a client packet for a connection whose flow already points
// here but whose socket is not imported yet, or still in TCP_REPAIR, is dropped; the
// kernel would answer an RST or hand it to a half-restored socket. The program's
// socket lookup uses the network namespace of the BPF_PROG_RUN caller, so each test
// runs in a private one (a thread of its own) where the only sockets are its own.
const uint32_t kGuardVip = ip("127.0.0.77"), kLoClient = ip("127.0.0.1");
constexpr uint16_t kGuardPort = 8080;

class GuardTest : public DatapathTest {
 public:
  static void in_private_netns(const std::function<void()>& body) {
    std::thread([&] {
      ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);
      UniqueFd s(socket(AF_INET, SOCK_DGRAM, 0));
      ifreq ifr{};
      std::strcpy(ifr.ifr_name, "lo");
      ASSERT_EQ(ioctl(s.get(), SIOCGIFFLAGS, &ifr), 0);
      ifr.ifr_flags |= IFF_UP;
      ASSERT_EQ(ioctl(s.get(), SIOCSIFFLAGS, &ifr), 0) << std::strerror(errno);
      body();
    }).join();
  }

 protected:
  // A client packet 127.0.0.1:client_port -> VIP:port.
  static std::vector<uint8_t> to_vip(uint8_t flags, uint16_t client_port,
                                     uint32_t daddr = kGuardVip, uint16_t port = kGuardPort) {
    return PacketBuilder()
        .eth(kEthIp)
        .ipv4(kProtoTcp, {}, 0x4000, kLoClient, daddr)
        .tcp(flags, client_port, port)
        .payload(flags & kPsh ? 20 : 0)
        .build();
  }

  static UniqueFd listener(uint32_t addr = kGuardVip, uint16_t port = kGuardPort) {
    UniqueFd l(socket(AF_INET, SOCK_STREAM, 0));
    const int one = 1;
    setsockopt(l.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = addr;
    a.sin_port = htons(port);
    EXPECT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    EXPECT_EQ(listen(l.get(), 8), 0);
    return l;
  }

  // An established loopback connection to the listener: the client's socket, the
  // accepted one (whose 4-tuple the client's packets carry) and the client's port.
  struct Conn {
    UniqueFd client, server;
    uint16_t client_port = 0;
  };
  static Conn connect_to(int listen_fd) {
    Conn c;
    c.client = UniqueFd(socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a{};
    socklen_t len = sizeof a;
    getsockname(listen_fd, reinterpret_cast<sockaddr*>(&a), &len);
    EXPECT_EQ(connect(c.client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0)
        << std::strerror(errno);
    c.server = UniqueFd(accept(listen_fd, nullptr, nullptr));
    EXPECT_GE(c.server.get(), 0);
    len = sizeof a;
    getsockname(c.client.get(), reinterpret_cast<sockaddr*>(&a), &len);
    c.client_port = ntohs(a.sin_port);
    return c;
  }

  static void set_repair(int fd, int on) {
    ASSERT_EQ(setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof on), 0) << std::strerror(errno);
  }

  void guard_on() {
    ASSERT_TRUE(dp_->set_guard(kGuardVip));
    ASSERT_EQ(dp_->guard(), kGuardVip);
  }
};

}  // namespace
}  // namespace tcpha::datapath
