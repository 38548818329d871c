// The FE datapath's per-packet cost: the tc program run by BPF_PROG_RUN on a client ACK
// of a handed-off (FORWARD) flow, i.e. parse, flow lookup, MAC rewrite, redirect
// verdict. The kernel's own receive and transmit work around it is not included.
// And the flow GC's cost on a table of 1M live flows: one whole sweep with batch map
// reads (FlowGc) against the key-by-key walk it replaced, and one slice of a sweep as
// the GC thread runs it every 500 ms. Needs root (CAP_BPF); skipped otherwise.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <bpf/bpf.h>
#include <linux/pkt_cls.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "datapath/datapath.hpp"
#include "datapath/flow_gc.hpp"

namespace {

using tcpha::datapath::Datapath;

constexpr tcpha::Mac kClientMac{0x02, 0, 0x0a, 0xc8, 0, 0x02};
constexpr tcpha::Mac kFeMac{0x02, 0, 0x0a, 0xc8, 0, 0x01};
constexpr tcpha::Mac kBeMac{0x02, 0, 0x0a, 0xc8, 0, 0x0b};
constexpr uint16_t kClientPort = 40000, kVipPort = 80;

// Ethernet + IPv4 + TCP with the timestamp option: a bare ACK as Linux clients send it,
// or with `payload` bytes of data (a request).
std::vector<uint8_t> client_ack(uint32_t client, uint32_t vip, uint16_t payload = 0) {
  std::vector<uint8_t> p;
  auto put = [&p](std::initializer_list<uint8_t> b) { p.insert(p.end(), b); };
  auto put16 = [&p](uint16_t v) { p.insert(p.end(), {uint8_t(v >> 8), uint8_t(v)}); };
  auto put32 = [&](uint32_t v) { put16(uint16_t(v >> 16)), put16(uint16_t(v)); };
  p.insert(p.end(), kFeMac.begin(), kFeMac.end());
  p.insert(p.end(), kClientMac.begin(), kClientMac.end());
  put16(0x0800);
  size_t ip = p.size();
  put({0x45, 0});
  put16(uint16_t(20 + 32 + payload));
  put16(0x1234), put16(0x4000), put({255, 6}), put16(0);  // TTL: see kRepeat
  put32(ntohl(client)), put32(ntohl(vip));
  uint32_t sum = 0;
  for (size_t i = ip; i < ip + 20; i += 2) sum += uint32_t(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  p[ip + 10] = uint8_t(~sum >> 8), p[ip + 11] = uint8_t(~sum);
  put16(kClientPort), put16(kVipPort), put32(1000), put32(2000);
  put({8 << 4, 0x10}), put16(501), put16(0), put16(0);
  put({1, 1, 8, 10}), put32(12345), put32(67890);  // NOP NOP TS
  p.resize(p.size() + payload, 'x');
  return p;
}

// A datapath of its own for a benchmark; null (the benchmark skipped) without root or
// when it does not load.
std::unique_ptr<Datapath> load_datapath(benchmark::State& state) {
  if (geteuid() != 0) {
    state.SkipWithError("needs root (CAP_BPF) to load the datapath");
    return nullptr;
  }
  auto dp = Datapath::load_only(1024);
  if (!dp) {
    state.SkipWithError(("loading the datapath: " + dp.error().message()).c_str());
    return nullptr;
  }
  return std::move(*dp);
}

// Per syscall; the kernel reports the mean. BPF_PROG_RUN repeats on the same packet and
// each forward decrements its TTL (loop protection): 255 allows 254.
constexpr uint32_t kRepeat = 250;

// Times the tc program forwarding `pkt`, kRepeat runs per iteration, and sets
// ns_per_op, the time per packet (the figure that matters). `between()` runs after each
// iteration, outside the timed part. `what` names the packet in the skip message.
template <class Between>
void time_forward(benchmark::State& state, const Datapath& dp, const std::vector<uint8_t>& pkt,
                  const char* what, Between between) {
  std::vector<uint8_t> out(pkt.size() + 64);
  double total_ns = 0;
  for (auto _ : state) {
    bpf_test_run_opts o{};
    o.sz = sizeof o;
    o.data_in = pkt.data();
    o.data_size_in = uint32_t(pkt.size());
    o.data_out = out.data();
    o.data_size_out = uint32_t(out.size());
    o.repeat = kRepeat;
    if (bpf_prog_test_run_opts(dp.prog_fd(), &o) != 0 || o.retval != TC_ACT_REDIRECT) {
      state.SkipWithError((std::string("BPF_PROG_RUN did not forward the ") + what).c_str());
      break;
    }
    total_ns += double(o.duration);
    state.SetIterationTime(double(o.duration) * kRepeat * 1e-9);
    between();
  }
  if (state.iterations() > 0) state.counters["ns_per_op"] = total_ns / double(state.iterations());
}

void BM_DatapathForwardAck(benchmark::State& state) {
  auto dp = load_datapath(state);
  if (!dp) return;
  const uint32_t client = inet_addr("10.200.0.2"), vip = inet_addr("10.200.0.10");
  auto key = tcpha::datapath::make_key(client, htons(kClientPort), vip, htons(kVipPort));
  if (!dp->hold(key) || !dp->forward(key, 1, kBeMac, kFeMac)) {
    state.SkipWithError("could not install a FORWARD flow");
    return;
  }
  time_forward(state, *dp, client_ack(client, vip), "ACK", [] {});
}
BENCHMARK(BM_DatapathForwardAck)->UseManualTime();

// A request (200 bytes of data) of a FORWARD flow, with failover's copy for its backup
// (state.range(0) == 1) or without a backup (0): what a copy adds to a packet that
// carries data (docs/failover.md, "Cost"). The ring is read between runs, outside the
// timed part, as the FE's worker reads it.
void BM_DatapathForwardData(benchmark::State& state) {
  auto dp = load_datapath(state);
  if (!dp) return;
  const bool backed_up = state.range(0) != 0;
  constexpr uint32_t kPrimary = 1, kBackup = 2;
  constexpr tcpha::Mac kBackupMac{0x02, 0, 0x0a, 0xc8, 0, 0x0c};
  const uint32_t client = inet_addr("10.200.0.2"), vip = inet_addr("10.200.0.10");
  auto key = tcpha::datapath::make_key(client, htons(kClientPort), vip, htons(kVipPort));
  if (!dp->set_backend(kPrimary, kBeMac, false) || !dp->set_backend(kBackup, kBackupMac, false) ||
      !dp->hold(key) ||
      !dp->forward(key, kPrimary, kBeMac, kFeMac, backed_up ? uint16_t(kBackup + 1) : 0)) {
    state.SkipWithError("could not install a FORWARD flow");
    return;
  }
  auto reader = tcpha::datapath::CopyReader::open(*dp);
  if (!reader) {
    state.SkipWithError(("copies ring: " + reader.error().message()).c_str());
    return;
  }
  size_t copies = 0;
  const tcpha::datapath::CopyReader::OnCopy ignore = [](uint16_t, const uint8_t*, size_t) {};
  time_forward(state, *dp, client_ack(client, vip, 200), "request",
               [&] { copies += reader->drain(ignore); });
  if (state.iterations() > 0)
    state.counters["copies_per_op"] = double(copies) / double(state.iterations() * kRepeat);
}
BENCHMARK(BM_DatapathForwardData)->Arg(0)->Arg(1)->UseManualTime();

using tcpha::datapath::FlowGc;
using tcpha::datapath::FlowKey;
using tcpha::datapath::FlowLimits;
using tcpha::datapath::FlowVerdict;

constexpr uint32_t kGcFlows = 1u << 20;
// Nothing is over: the steady state, where a pass only reads.
constexpr FlowLimits kGcLimits{5'000'000'000ull, 900'000'000'000ull, 3'000'000'000ull};

// One table of kGcFlows live FORWARD flows, filled once and shared by the GC benchmarks.
Datapath* gc_table(benchmark::State& state) {
  static std::unique_ptr<Datapath> dp;
  static bool tried = false;
  if (!tried) {
    tried = true;
    if (geteuid() != 0) return nullptr;
    auto r = Datapath::load_only(kGcFlows);
    if (!r) return nullptr;
    std::vector<FlowKey> keys(kGcFlows);
    std::vector<tcpha_flow_value> values(kGcFlows);
    const uint64_t now = tcpha::monotonic_ns();
    const uint32_t vip = inet_addr("10.200.0.10");
    for (uint32_t i = 0; i < kGcFlows; ++i) {
      keys[i] = tcpha::datapath::make_key(htonl(0x0ac80000 + i / 60000),
                                          htons(uint16_t(1024 + i % 60000)), vip, htons(kVipPort));
      values[i].state = TCPHA_FLOW_FORWARD;
      values[i].last_seen_ns = now;
    }
    __u32 n = kGcFlows;
    if (bpf_map_update_batch((*r)->flows_fd(), keys.data(), values.data(), &n, nullptr) != 0 ||
        n != kGcFlows)
      return nullptr;
    dp = std::move(*r);
  }
  if (!dp) state.SkipWithError("needs root (CAP_BPF) and memory for a 1M-flow table");
  return dp.get();
}

// The GC before batch operations: bpf_map_get_next_key + bpf_map_lookup_elem per
// flow (two syscalls each), as Datapath::gc did.
size_t keywise_pass(int fd, uint64_t now, const FlowLimits& limits, std::vector<FlowKey>& doomed) {
  size_t live = 0;
  tcpha_flow_value v;
  doomed.clear();
  FlowKey cur, next;
  for (const FlowKey* prev = nullptr; bpf_map_get_next_key(fd, prev, &next) == 0; prev = &cur) {
    cur = next;
    if (bpf_map_lookup_elem(fd, &cur, &v) < 0) continue;
    ++live;
    if (tcpha::datapath::classify_flow(v, now, limits) != FlowVerdict::keep) doomed.push_back(cur);
  }
  return live;
}

void BM_FlowGcPassKeyByKey(benchmark::State& state) {
  Datapath* dp = gc_table(state);
  if (!dp) return;
  std::vector<FlowKey> doomed;
  size_t live = 0;
  for (auto _ : state)
    live = keywise_pass(dp->flows_fd(), tcpha::monotonic_ns(), kGcLimits, doomed);
  if (live != kGcFlows) state.SkipWithError("the walk missed flows");
  state.counters["flows"] = double(live);
  state.counters["ns_per_flow"] =
      benchmark::Counter(double(live) * double(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_FlowGcPassKeyByKey)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_FlowGcPassBatch(benchmark::State& state) {
  Datapath* dp = gc_table(state);
  if (!dp) return;
  FlowGc gc(*dp);
  size_t live = 0;
  for (auto _ : state) live = gc.sweep(tcpha::monotonic_ns(), kGcLimits).live;
  if (live != kGcFlows) state.SkipWithError("the sweep missed flows");
  state.counters["flows"] = double(live);
  state.counters["ns_per_flow"] =
      benchmark::Counter(double(live) * double(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_FlowGcPassBatch)->Unit(benchmark::kMillisecond)->Iterations(5);

// What the GC thread does per 500 ms tick on this table: one slice of a sweep.
void BM_FlowGcTick(benchmark::State& state) {
  Datapath* dp = gc_table(state);
  if (!dp) return;
  FlowGc gc(*dp);
  const size_t per_tick = tcpha::datapath::FlowGcThread::entries_per_tick(dp->max_flows());
  size_t visited = 0;
  for (auto _ : state) visited += gc.step(tcpha::monotonic_ns(), kGcLimits, per_tick).visited;
  state.counters["flows_per_tick"] = double(visited) / double(state.iterations());
}
BENCHMARK(BM_FlowGcTick)->Unit(benchmark::kMillisecond)->Iterations(20);

}  // namespace
