// The FE datapath's per-packet cost: the tc program run by BPF_PROG_RUN on a client ACK
// of a handed-off (FORWARD) flow, i.e. parse, flow lookup, MAC rewrite, redirect
// verdict. The kernel's own receive and transmit work around it is not included. Needs
// root (CAP_BPF); skipped otherwise.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <bpf/bpf.h>
#include <linux/pkt_cls.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "datapath/datapath.hpp"

namespace {

using tcpha::datapath::Datapath;

constexpr tcpha::Mac kClientMac{0x02, 0, 0x0a, 0xc8, 0, 0x02};
constexpr tcpha::Mac kFeMac{0x02, 0, 0x0a, 0xc8, 0, 0x01};
constexpr tcpha::Mac kBeMac{0x02, 0, 0x0a, 0xc8, 0, 0x0b};
constexpr uint16_t kClientPort = 40000, kVipPort = 80;

// Ethernet + IPv4 + TCP with the timestamp option: a bare ACK as Linux clients send it.
std::vector<uint8_t> client_ack(uint32_t client, uint32_t vip) {
  std::vector<uint8_t> p;
  auto put = [&p](std::initializer_list<uint8_t> b) { p.insert(p.end(), b); };
  auto put16 = [&p](uint16_t v) { p.insert(p.end(), {uint8_t(v >> 8), uint8_t(v)}); };
  auto put32 = [&](uint32_t v) { put16(uint16_t(v >> 16)), put16(uint16_t(v)); };
  p.insert(p.end(), kFeMac.begin(), kFeMac.end());
  p.insert(p.end(), kClientMac.begin(), kClientMac.end());
  put16(0x0800);
  size_t ip = p.size();
  put({0x45, 0});
  put16(20 + 32);
  put16(0x1234), put16(0x4000), put({64, 6}), put16(0);
  put32(ntohl(client)), put32(ntohl(vip));
  uint32_t sum = 0;
  for (size_t i = ip; i < ip + 20; i += 2) sum += uint32_t(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  p[ip + 10] = uint8_t(~sum >> 8), p[ip + 11] = uint8_t(~sum);
  put16(kClientPort), put16(kVipPort), put32(1000), put32(2000);
  put({8 << 4, 0x10}), put16(501), put16(0), put16(0);
  put({1, 1, 8, 10}), put32(12345), put32(67890);  // NOP NOP TS
  return p;
}

void BM_DatapathForwardAck(benchmark::State& state) {
  if (geteuid() != 0) {
    state.SkipWithError("needs root (CAP_BPF) to load the datapath");
    return;
  }
  auto dp = Datapath::load_only(1024);
  if (!dp) {
    state.SkipWithError(("loading the datapath: " + dp.error().message()).c_str());
    return;
  }
  const uint32_t client = inet_addr("10.200.0.2"), vip = inet_addr("10.200.0.10");
  auto key = tcpha::datapath::make_key(client, htons(kClientPort), vip, htons(kVipPort));
  if (!(*dp)->hold(key) || !(*dp)->forward(key, 1, kBeMac, kFeMac)) {
    state.SkipWithError("could not install a FORWARD flow");
    return;
  }
  auto pkt = client_ack(client, vip);
  std::vector<uint8_t> out(pkt.size() + 64);
  constexpr uint32_t kRepeat = 10000;  // per syscall; the kernel reports the mean
  double total_ns = 0;
  for (auto _ : state) {
    bpf_test_run_opts o{};
    o.sz = sizeof o;
    o.data_in = pkt.data();
    o.data_size_in = uint32_t(pkt.size());
    o.data_out = out.data();
    o.data_size_out = uint32_t(out.size());
    o.repeat = kRepeat;
    if (bpf_prog_test_run_opts((*dp)->prog_fd(), &o) != 0 || o.retval != TC_ACT_REDIRECT) {
      state.SkipWithError("BPF_PROG_RUN did not forward the ACK");
      break;
    }
    total_ns += double(o.duration);
    state.SetIterationTime(double(o.duration) * kRepeat * 1e-9);
  }
  // An iteration is kRepeat packets; the figure that matters is the time per packet.
  if (state.iterations() > 0) state.counters["ns_per_op"] = total_ns / double(state.iterations());
}
BENCHMARK(BM_DatapathForwardAck)->UseManualTime();

}  // namespace
