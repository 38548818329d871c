// The backup's held streams (src/failover/held.*): frames parsed, client streams
// rebuilt from copies and trimmed by the client's ACKs, the takeover plan from a
// probe's answer, the probe packet, and the store.
#include "failover/held.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "handoff/tcp_state.hpp"

using namespace tcpha;
using namespace tcpha::failover;

namespace {

const uint32_t kClient = inet_addr("192.0.2.10");
const uint32_t kVip = inet_addr("198.51.100.1");
const uint16_t kClientPort = htons(40000);
const uint16_t kVipPort = htons(80);

struct FrameSpec {
  uint32_t saddr = kClient, daddr = kVip;
  uint16_t sport = kClientPort, dport = kVipPort;
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0x10;  // ACK
  uint16_t window = 502;
  std::string payload;
  std::string tcp_options;  // a multiple of 4 bytes
  std::string ip_options;   // a multiple of 4 bytes
  uint8_t proto = 6;
  uint16_t frag = 0x4000;  // DF
  uint16_t ethertype = 0x0800;  // as the FE took it (IPv4)
};

void put16(std::string& s, size_t at, uint16_t v) {
  s[at] = char(v >> 8);
  s[at + 1] = char(v);
}
void put32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + size_t(i)] = char(v >> (24 - 8 * i));
}

std::string frame(const FrameSpec& f) {
  std::string out(14, '\0');
  put16(out, 12, f.ethertype);
  const size_t ihl = 20 + f.ip_options.size();
  const size_t doff = 20 + f.tcp_options.size();
  std::string ip(ihl, '\0');
  ip[0] = char(0x40 | (ihl / 4));
  put16(ip, 2, uint16_t(ihl + doff + f.payload.size()));
  put16(ip, 6, f.frag);
  ip[8] = 64;
  ip[9] = char(f.proto);
  std::memcpy(&ip[12], &f.saddr, 4);
  std::memcpy(&ip[16], &f.daddr, 4);
  ip.replace(20, f.ip_options.size(), f.ip_options);
  std::string tcp(doff, '\0');
  std::memcpy(&tcp[0], &f.sport, 2);
  std::memcpy(&tcp[2], &f.dport, 2);
  put32(tcp, 4, f.seq);
  put32(tcp, 8, f.ack);
  tcp[12] = char((doff / 4) << 4);
  tcp[13] = char(f.flags);
  put16(tcp, 14, f.window);
  tcp.replace(20, f.tcp_options.size(), f.tcp_options);
  return out + ip + tcp + f.payload;
}

std::optional<Segment> parse(const std::string& f) {
  return parse_frame(reinterpret_cast<const uint8_t*>(f.data()), f.size());
}

std::string ts_option(uint32_t val, uint32_t ecr) {
  std::string o = {1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0};
  put32(o, 4, val);
  put32(o, 8, ecr);
  return o;
}

// ---- parse_frame ----

TEST(ParseFrame, GoodFrame) {
  FrameSpec f;
  f.seq = 1000;
  f.ack = 2000;
  f.flags = 0x18;  // PSH ACK
  f.payload = "GET / HTTP/1.1\r\n\r\n";
  const std::string bytes = frame(f);
  auto s = parse(bytes);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->client_addr, kClient);
  EXPECT_EQ(s->vip_addr, kVip);
  EXPECT_EQ(s->client_port, kClientPort);
  EXPECT_EQ(s->vip_port, kVipPort);
  EXPECT_EQ(s->seq, 1000u);
  EXPECT_EQ(s->ack, 2000u);
  EXPECT_EQ(s->window, 502);
  EXPECT_TRUE(s->has_ack);
  EXPECT_FALSE(s->syn || s->fin || s->rst || s->has_ts);
  EXPECT_EQ(s->payload, f.payload);
}

TEST(ParseFrame, FlagsAndTimestampOption) {
  FrameSpec f;
  f.flags = 0x01 | 0x04 | 0x10;  // FIN RST ACK
  f.tcp_options = std::string{2, 4, 0x05, char(0xb4)} + ts_option(0xdeadbeef, 0x01020304);
  const std::string bytes = frame(f);
  auto s = parse(bytes);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->fin && s->rst && s->has_ack && !s->syn);
  EXPECT_TRUE(s->has_ts);
  EXPECT_EQ(s->tsval, 0xdeadbeefu);
  EXPECT_EQ(s->tsecr, 0x01020304u);
  EXPECT_EQ(s->payload, "");
}

TEST(ParseFrame, MalformedOptionsEndTheSearchOnly) {
  FrameSpec f;
  f.tcp_options = std::string{8, 0, 0, 0};  // a zero length
  f.payload = "x";
  const std::string bytes = frame(f);
  auto s = parse(bytes);
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->has_ts);
  EXPECT_EQ(s->payload, "x");
}

TEST(ParseFrame, IpOptionsAndEthernetPaddingAreFine) {
  FrameSpec f;
  f.ip_options = std::string{1, 1, 1, 0};
  f.payload = "ab";
  std::string bytes = frame(f) + std::string(10, '\0');  // padding after the IP packet
  auto s = parse(bytes);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->payload, "ab");
  EXPECT_EQ(s->vip_port, kVipPort);
}

TEST(ParseFrame, AnswersWithTheIpEthertypeToo) {
  FrameSpec f;
  f.ethertype = 0x0800;
  EXPECT_TRUE(parse(frame(f)));
}

TEST(ParseFrame, RejectsTruncated) {
  FrameSpec f;
  f.payload = "hello";
  const std::string bytes = frame(f);
  EXPECT_FALSE(parse(bytes.substr(0, bytes.size() - 1)));  // IP total length beyond the frame
  EXPECT_FALSE(parse(bytes.substr(0, 14 + 19)));
  EXPECT_FALSE(parse(bytes.substr(0, 14 + 20 + 19)));
  EXPECT_FALSE(parse_frame(nullptr, 0));
}

TEST(ParseFrame, RejectsBadHeaderLengths) {
  FrameSpec f;
  std::string bytes = frame(f);
  std::string bad = bytes;
  bad[14] = 0x44;  // ihl 16 bytes
  EXPECT_FALSE(parse(bad));
  bad = bytes;
  bad[14] = 0x65;  // IPv6 version nibble
  EXPECT_FALSE(parse(bad));
  bad = bytes;
  bad[14 + 20 + 12] = 0x40;  // doff 16 bytes
  EXPECT_FALSE(parse(bad));
  bad = bytes;
  bad[14 + 20 + 12] = char(0xF0);  // doff 60 bytes, beyond the packet
  EXPECT_FALSE(parse(bad));
  bad = bytes;
  put16(bad, 14 + 2, 30);  // total length shorter than the headers
  EXPECT_FALSE(parse(bad));
}

TEST(ParseFrame, RejectsFragmentsAndOtherProtocols) {
  FrameSpec f;
  f.frag = 0x2000;  // MF
  EXPECT_FALSE(parse(frame(f)));
  f.frag = 0x0010;  // an offset
  EXPECT_FALSE(parse(frame(f)));
  f.frag = 0;
  EXPECT_TRUE(parse(frame(f)));
  f.proto = 17;
  EXPECT_FALSE(parse(frame(f)));
}

// ---- Held ----

constexpr uint32_t kRcv = 1000;   // client seq of the request's first byte
constexpr uint32_t kSnd = 50000;  // server seq of the first response byte

handoff::TcpState snapshot(uint32_t rcv = kRcv, uint32_t snd = kSnd) {
  handoff::TcpState st;
  st.local_addr[0] = kVip;
  st.local_port = kVipPort;
  st.peer_addr[0] = kClient;
  st.peer_port = kClientPort;
  st.rcv_seq = rcv;
  st.snd_seq = snd;
  st.mss = 1460;
  st.timestamp = 123457;  // bit 0 set: microsecond timestamps
  st.options = handoff::kOptTimestamps | handoff::kOptSack | handoff::kOptWscale;
  st.snd_wscale = 7;
  st.rcv_wscale = 9;
  st.snd_wl1 = rcv;
  st.snd_wnd = 64240;
  st.max_window = 64240;
  st.rcv_wnd = 65536;
  st.rcv_wup = rcv;
  return st;
}

Segment seg(uint32_t seq, std::string_view payload, uint32_t ack = 0, bool has_ack = false) {
  Segment s;
  s.client_addr = kClient;
  s.vip_addr = kVip;
  s.client_port = kClientPort;
  s.vip_port = kVipPort;
  s.seq = seq;
  s.ack = ack;
  s.has_ack = has_ack;
  s.payload = payload;
  return s;
}

// Requests "GET /<name>\r\n\r\n" answered with sizes from a map.
struct Sizes {
  std::map<std::string, uint64_t> bytes;
  ResponseSize fn() const {
    return [this](std::string_view s) -> std::optional<std::pair<size_t, uint64_t>> {
      size_t end = s.find("\r\n\r\n");
      if (end == std::string_view::npos || s.substr(0, 5) != "GET /") return std::nullopt;
      auto it = bytes.find(std::string(s.substr(5, end - 5)));
      if (it == bytes.end()) return std::nullopt;
      return std::pair<size_t, uint64_t>{end + 4, it->second};
    };
  }
};

const Sizes kSizes{{{"a", 100}, {"bb", 50}, {"c", 7}}};
const std::string kA = "GET /a\r\n\r\n";    // 10 bytes
const std::string kBb = "GET /bb\r\n\r\n";  // 11 bytes

TEST(Held, InOrderAppends) {
  Held h(7, "be1", snapshot(), kA);
  EXPECT_EQ(h.id(), 7u);
  EXPECT_EQ(h.primary(), "be1");
  EXPECT_EQ(h.stream_seq(), kRcv);
  EXPECT_EQ(h.response_seq(), kSnd);
  h.add(seg(kRcv + 10, "GET /b"), kSizes.fn());
  h.add(seg(kRcv + 16, "b\r\n\r\n"), kSizes.fn());
  EXPECT_EQ(h.stream(), kA + kBb);
  EXPECT_EQ(h.stream_end(), kRcv + 21);
  EXPECT_FALSE(h.fin() || h.reset() || h.overflowed());
}

TEST(Held, OutOfOrderWaitsForTheHole) {
  Held h(1, "be1", snapshot(), kA);
  h.add(seg(kRcv + 16, "b\r\n\r\n"), kSizes.fn());
  EXPECT_EQ(h.stream(), kA);
  h.add(seg(kRcv + 10, "GET /b"), kSizes.fn());
  EXPECT_EQ(h.stream(), kA + kBb);
}

TEST(Held, DuplicatesAndOverlapsAreCut) {
  Held h(1, "be1", snapshot(), "");
  const std::string data = "0123456789abcdefghij";
  h.add(seg(kRcv, data.substr(0, 10)), kSizes.fn());
  h.add(seg(kRcv, data.substr(0, 10)), kSizes.fn());      // duplicate
  h.add(seg(kRcv + 5, data.substr(5, 10)), kSizes.fn());  // overlaps 5 bytes
  EXPECT_EQ(h.stream(), data.substr(0, 15));
  // Out-of-order pieces overlapping each other and the stream.
  h.add(seg(kRcv + 17, data.substr(17, 3)), kSizes.fn());
  h.add(seg(kRcv + 16, data.substr(16, 3)), kSizes.fn());
  h.add(seg(kRcv + 12, data.substr(12, 5)), kSizes.fn());
  EXPECT_EQ(h.stream(), data);
  h.add(seg(kRcv - 5, "zzzzz"), kSizes.fn());  // entirely before the stream
  EXPECT_EQ(h.stream(), data);
}

TEST(Held, FinCountsWhenInOrder) {
  Held h(1, "be1", snapshot(), kA);
  Segment fin = seg(kRcv + 13, "\r\n\r\n");
  fin.fin = true;
  h.add(fin, kSizes.fn());
  EXPECT_FALSE(h.fin()) << "a hole before it";
  h.add(seg(kRcv + 10, "GET"), kSizes.fn());
  EXPECT_TRUE(h.fin());
  EXPECT_EQ(h.stream(), kA + "GET\r\n\r\n");
  h.add(seg(kRcv + 17, "after the FIN"), kSizes.fn());
  EXPECT_EQ(h.stream(), kA + "GET\r\n\r\n");
}

TEST(Held, FinBeforeTheStreamEndIsIgnored) {
  Held h(1, "be1", snapshot(), kA);
  Segment fin = seg(kRcv + 5, "");
  fin.fin = true;
  h.add(fin, kSizes.fn());
  EXPECT_FALSE(h.fin());
  h.add(seg(kRcv + 10, "GET"), kSizes.fn());
  EXPECT_EQ(h.stream(), kA + "GET") << "the stream goes on";
}

TEST(Held, RstInWindowResets) {
  Held h(1, "be1", snapshot(), kA);
  Segment rst = seg(kRcv + 10 + 1000000, "");
  rst.rst = true;
  h.add(rst, kSizes.fn());
  EXPECT_FALSE(h.reset()) << "far outside the window: not this connection's";
  rst.seq = kRcv + 5;
  h.add(rst, kSizes.fn());
  EXPECT_FALSE(h.reset()) << "before the stream's end";
  rst.seq = kRcv + 10;
  h.add(rst, kSizes.fn());
  EXPECT_TRUE(h.reset());
}

TEST(Held, TrimsRequestsWhoseResponsesWereAcknowledged) {
  Held h(1, "be1", snapshot(), kA + kBb + "GET /c\r");
  auto ack = [&](uint32_t a) { h.add(seg(kRcv + 28, "", a, true), kSizes.fn()); };
  ack(kSnd + 99);
  EXPECT_EQ(h.stream_seq(), kRcv) << "one byte of /a's response not acknowledged";
  ack(kSnd + 100);
  EXPECT_EQ(h.stream_seq(), kRcv + 10);
  EXPECT_EQ(h.response_seq(), kSnd + 100);
  EXPECT_EQ(h.stream(), kBb + "GET /c\r");
  ack(kSnd + 1000);  // beyond /bb's response: the incomplete /c stays
  EXPECT_EQ(h.stream_seq(), kRcv + 21);
  EXPECT_EQ(h.response_seq(), kSnd + 150);
  EXPECT_EQ(h.stream(), "GET /c\r");
  // Without the ACK flag the number means nothing.
  h.add(seg(kRcv + 28, "\n\r\n"), kSizes.fn());
  EXPECT_EQ(h.stream(), "GET /c\r\n\r\n");
  h.add(seg(kRcv + 31, "", kSnd + 157, false), kSizes.fn());
  EXPECT_EQ(h.stream(), "GET /c\r\n\r\n");
  h.add(seg(kRcv + 31, "", kSnd + 157, true), kSizes.fn());
  EXPECT_EQ(h.stream(), "");
  EXPECT_EQ(h.response_seq(), kSnd + 157);
}

// A keep-alive client's copies each show the previous response complete and the front
// one not yet: the front request's size is found once, not once per copy (for the
// built-in server each sizing is a file lookup).
TEST(Held, EachRequestIsSizedOnce) {
  int calls = 0;
  ResponseSize counting = [&](std::string_view st) {
    ++calls;
    return kSizes.fn()(st);
  };
  Held h(1, "be1", snapshot(), kA);
  for (uint32_t a = 1; a < 100; a += 10)
    h.add(seg(kRcv + 10, "", kSnd + a, true), counting);  // /a's response in flight
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(h.stream(), kA);
  h.add(seg(kRcv + 10, kBb, kSnd + 100, true), counting);  // /a done, /bb next
  EXPECT_EQ(h.stream(), kBb);
  EXPECT_EQ(calls, 2);  // /a (known) trimmed, /bb sized
  h.add(seg(kRcv + 21, "", kSnd + 120, true), counting);
  h.add(seg(kRcv + 21, "", kSnd + 149, true), counting);
  EXPECT_EQ(calls, 2);
  h.add(seg(kRcv + 21, "", kSnd + 150, true), counting);
  EXPECT_EQ(h.stream(), "");
  EXPECT_EQ(h.response_seq(), kSnd + 150);
}

TEST(Held, UnknownResponseSizeStopsTrimming) {
  Held h(1, "be1", snapshot(), "GET /unknown\r\n\r\n" + kA);
  h.add(seg(kRcv + 26, "", kSnd + 100000, true), kSizes.fn());
  EXPECT_EQ(h.stream_seq(), kRcv);
}

TEST(Held, OverflowsPastTheBounds) {
  Held h(1, "be1", snapshot(), "");
  const std::string big(64 * 1024, 'x');
  uint32_t seq = kRcv;
  for (int i = 0; i < 4; ++i, seq += uint32_t(big.size())) h.add(seg(seq, big), kSizes.fn());
  EXPECT_FALSE(h.overflowed());
  EXPECT_EQ(h.stream().size(), kMaxStream);
  h.add(seg(seq, "y"), kSizes.fn());
  EXPECT_TRUE(h.overflowed());
  EXPECT_EQ(h.stream(), "");
  EXPECT_LT(h.memory(), 512u) << "its buffers are freed";

  Held o(2, "be1", snapshot(), "");
  o.add(seg(kRcv + 10, big), kSizes.fn());
  EXPECT_FALSE(o.overflowed());
  o.add(seg(kRcv + 10 + uint32_t(big.size()), "z"), kSizes.fn());
  EXPECT_TRUE(o.overflowed()) << "more than kMaxOutOfOrder after a hole";
}

TEST(Held, SnapshotWithPeerFinFollowsExportStatesConvention) {
  handoff::TcpState st = snapshot();
  st.flags = handoff::kStatePeerFin;
  st.rcv_seq = kRcv + 1;  // export_state: rcv_nxt (counting the FIN) - queued
  Held h(1, "be1", st, kA);
  EXPECT_EQ(h.stream_seq(), kRcv);
  EXPECT_TRUE(h.fin());
  h.add(seg(kRcv + 10, "more"), kSizes.fn());
  EXPECT_EQ(h.stream(), kA);
}

// The figure for the design: one keep-alive connection with one GET of ~100 bytes.
TEST(Held, MemoryOfATypicalConnection) {
  const std::string get =
      "GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\n"
      "Accept: */*\r\n\r\n";
  Sizes sizes{
      {{"index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\n"
        "Accept: */*",
        4096}}};
  Held h(1, "be1", snapshot(), get);
  const size_t holding = h.memory();
  h.add(seg(kRcv + uint32_t(get.size()), "", kSnd + 4096, true), sizes.fn());
  ASSERT_EQ(h.stream(), "");
  const size_t idle = h.memory();
  std::cout << "[ memory   ] sizeof(Held) " << sizeof(Held) << ", with its " << get.size()
            << "-byte GET " << holding << " B, response acknowledged " << idle << " B\n";
  // 208 B since TcpState carries 16-byte addresses and the family (IPv6, +24 B); 216
  // since it keeps its front request's size (8 B).
  EXPECT_LE(idle, 216u);
  EXPECT_LE(holding, idle + get.size() + 1);
}

// ---- plan_takeover ----

Segment answer(uint32_t seq, uint32_t ack, uint16_t window = 1000, uint32_t tsecr = 777000) {
  Segment a = seg(seq, "", ack, true);
  a.window = window;
  a.has_ts = true;
  a.tsval = 5;
  a.tsecr = tsecr;
  return a;
}

TEST(PlanTakeover, IdleConnectionWhoseResponseWasAcknowledged) {
  Held h(1, "be1", snapshot(), kA);
  h.add(seg(kRcv + 10, "", kSnd + 100, true), kSizes.fn());
  ASSERT_EQ(h.stream(), "");
  auto p = plan_takeover(h, answer(kRcv + 10, kSnd + 100), 42);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->requests, "");
  EXPECT_EQ(p->skip, 0u);
  EXPECT_EQ(p->state.snd_seq, kSnd + 100);
  EXPECT_EQ(p->state.rcv_seq, kRcv + 10);
  EXPECT_EQ(p->state.rcv_wup, kRcv + 10);
  EXPECT_EQ(p->state.exported_ns, 42u);
}

TEST(PlanTakeover, IdleConnectionWhoseAckCopyWasNotSeen) {
  // The last ACK's copy did not arrive (or had not yet): the request is still held
  // and the client's answer says it has the whole response.
  Held h(1, "be1", snapshot(), kA);
  auto p = plan_takeover(h, answer(kRcv + 10, kSnd + 100), 42);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->requests, kA);
  EXPECT_EQ(p->skip, 100u);
  EXPECT_EQ(p->state.rcv_seq, kRcv);
  EXPECT_EQ(p->state.rcv_seq + p->requests.size(), kRcv + 10) << "the client's snd_nxt";
}

TEST(PlanTakeover, MidResponse) {
  Held h(1, "be1", snapshot(), kA + kBb);
  h.add(seg(kRcv + 21, "", kSnd + 100, true), kSizes.fn());  // /a done
  auto p = plan_takeover(h, answer(kRcv + 21, kSnd + 140, 300, 0x1000), 1);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->requests, kBb);
  EXPECT_EQ(p->skip, 40u);
  const handoff::TcpState& st = p->state;
  EXPECT_EQ(st.snd_seq, kSnd + 140);
  EXPECT_EQ(st.rcv_seq, kRcv + 10);
  EXPECT_EQ(st.snd_wnd, 300u << 7);
  EXPECT_EQ(st.snd_wl1, kRcv + 21);
  EXPECT_EQ(st.max_window, 64240u) << "never below the snapshot's";
  EXPECT_EQ(st.rcv_wup, kRcv + 21);
  EXPECT_EQ(st.rcv_wnd, 65536u);
  EXPECT_EQ(st.timestamp, ((0x1000u + kTimestampStep) & ~1u) | 1u) << "bit 0 kept";
  EXPECT_EQ(st.flags & handoff::kStatePeerFin, 0);
  EXPECT_EQ(st.local_addr[0], kVip);
  EXPECT_EQ(st.peer_port, kClientPort);
  EXPECT_EQ(st.mss, 1460u);
}

TEST(PlanTakeover, MaxWindowGrowsWithTheAnswersWindow) {
  Held h(1, "be1", snapshot(), kA);
  auto p = plan_takeover(h, answer(kRcv + 10, kSnd, 4000), 1);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->state.snd_wnd, 4000u << 7);
  EXPECT_EQ(p->state.max_window, 4000u << 7);
}

TEST(PlanTakeover, MillisecondTimestampsKeepBitZeroClear) {
  handoff::TcpState snap = snapshot();
  snap.timestamp = 1000;
  Held h(1, "be1", snap, kA);
  auto p = plan_takeover(h, answer(kRcv + 10, kSnd, 1000, 4001), 1);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->state.timestamp, (4001u + kTimestampStep) & ~1u);
}

TEST(PlanTakeover, ClientFin) {
  Held h(1, "be1", snapshot(), kA);
  Segment fin = seg(kRcv + 10, "");
  fin.fin = true;
  h.add(fin, kSizes.fn());
  ASSERT_TRUE(h.fin());
  auto bad = plan_takeover(h, answer(kRcv + 10, kSnd), 1);
  ASSERT_FALSE(bad) << "the client's seq must count the FIN";
  EXPECT_EQ(bad.error().err, EPROTO);
  auto p = plan_takeover(h, answer(kRcv + 11, kSnd + 30), 1);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(p->state.flags & handoff::kStatePeerFin);
  // As export_state makes it: rcv_seq + queued = rcv_nxt, which counts the FIN.
  EXPECT_EQ(p->state.rcv_seq + p->requests.size(), kRcv + 11);
  EXPECT_EQ(p->state.rcv_wup, kRcv + 11);
  EXPECT_EQ(p->skip, 30u);
}

TEST(PlanTakeover, RstAnswerIsConnReset) {
  Held h(1, "be1", snapshot(), kA);
  Segment a = seg(kRcv + 10, "");
  a.rst = true;
  auto p = plan_takeover(h, a, 1);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().err, ECONNRESET);
}

TEST(PlanTakeover, GapIsNoData) {
  Held h(1, "be1", snapshot(), kA);
  h.add(seg(kRcv + 20, "later"), kSizes.fn());  // a hole of 10 bytes before it
  auto p = plan_takeover(h, answer(kRcv + 25, kSnd + 100), 1);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().err, ENODATA);
}

TEST(PlanTakeover, OverflowIsNoData) {
  Held h(1, "be1", snapshot(), std::string(kMaxStream + 1, 'x'));
  ASSERT_TRUE(h.overflowed());
  auto p = plan_takeover(h, answer(kRcv + uint32_t(kMaxStream) + 1, kSnd), 1);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().err, ENODATA);
}

TEST(PlanTakeover, InconsistentAnswersAreProtocolErrors) {
  Held h(1, "be1", snapshot(), kA);
  h.add(seg(kRcv + 10, "", kSnd + 100, true), kSizes.fn());
  auto p = plan_takeover(h, answer(kRcv + 10, kSnd + 99), 1);
  ASSERT_FALSE(p) << "acknowledges less than a response the client acknowledged before";
  EXPECT_EQ(p.error().err, EPROTO);
  p = plan_takeover(h, answer(kRcv + 9, kSnd + 100), 1);
  ASSERT_FALSE(p) << "seq before the held stream's end";
  EXPECT_EQ(p.error().err, EPROTO);
  Segment no_ack = answer(kRcv + 10, kSnd + 100);
  no_ack.has_ack = false;
  p = plan_takeover(h, no_ack, 1);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().err, EPROTO);
  Segment no_ts = answer(kRcv + 10, kSnd + 100);
  no_ts.has_ts = false;
  p = plan_takeover(h, no_ts, 1);
  ASSERT_FALSE(p) << "timestamps were negotiated";
  EXPECT_EQ(p.error().err, EPROTO);

  handoff::TcpState plain = snapshot();
  plain.options = 0;
  Held q(2, "be1", plain, kA);
  auto ok = plan_takeover(q, no_ts, 1);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->state.snd_wnd, 1000u) << "no window scaling";
  EXPECT_EQ(ok->state.timestamp, plain.timestamp);
}

TEST(PlanTakeover, SequenceNumbersWrapAround) {
  const uint32_t rcv = 0xFFFFFFFAu;  // the request crosses 2^32
  const uint32_t snd = 0xFFFFFFF0u;  // so do the responses
  Held h(1, "be1", snapshot(rcv, snd), kA);
  h.add(seg(rcv + 10, kBb), kSizes.fn());
  EXPECT_EQ(h.stream(), kA + kBb);
  h.add(seg(rcv + 21, "", snd + 100, true), kSizes.fn());
  EXPECT_EQ(h.stream_seq(), 4u);
  EXPECT_EQ(h.response_seq(), 84u);
  EXPECT_EQ(h.stream(), kBb);
  // Out of order across the wrap too.
  Held o(2, "be1", snapshot(rcv, snd), "");
  o.add(seg(rcv + 4, "456789"), kSizes.fn());
  o.add(seg(rcv, "0123"), kSizes.fn());
  EXPECT_EQ(o.stream(), "0123456789");

  auto p = plan_takeover(h, answer(rcv + 21, snd + 120), 1);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->skip, 20u);
  EXPECT_EQ(p->requests, kBb);
  EXPECT_EQ(p->state.rcv_seq, 4u);
  EXPECT_EQ(p->state.snd_seq, 104u);
  auto gap = plan_takeover(h, answer(rcv + 22, snd + 120), 1);
  ASSERT_FALSE(gap);
  EXPECT_EQ(gap.error().err, ENODATA);
  auto before = plan_takeover(h, answer(rcv + 21, snd + 80), 1);
  ASSERT_FALSE(before);
  EXPECT_EQ(before.error().err, EPROTO);
}

TEST(IsAnswer, PureAckOrRstOfTheConnectionOnly) {
  Held h(1, "be1", snapshot(), kA);
  EXPECT_TRUE(is_answer(h, answer(kRcv + 10, kSnd)));
  Segment rst = seg(kRcv + 10, "");
  rst.rst = true;
  EXPECT_TRUE(is_answer(h, rst));
  EXPECT_FALSE(is_answer(h, seg(kRcv + 10, ""))) << "no ACK, no RST";
  EXPECT_FALSE(is_answer(h, seg(kRcv + 10, "data", kSnd, true))) << "data goes to add()";
  Segment fin = answer(kRcv + 10, kSnd);
  fin.fin = true;
  EXPECT_FALSE(is_answer(h, fin));
  Segment syn = answer(kRcv + 10, kSnd);
  syn.syn = true;
  EXPECT_FALSE(is_answer(h, syn));
  Segment other = answer(kRcv + 10, kSnd);
  other.client_port = htons(40001);
  EXPECT_FALSE(is_answer(h, other));
  other = answer(kRcv + 10, kSnd);
  other.vip_addr = inet_addr("198.51.100.2");
  EXPECT_FALSE(is_answer(h, other));
}

// ---- build_probe ----

uint32_t ones_sum(const uint8_t* p, size_t n, uint32_t acc = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) acc += uint32_t(p[i] << 8 | p[i + 1]);
  if (n & 1) acc += uint32_t(p[n - 1]) << 8;
  while (acc >> 16) acc = (acc & 0xFFFF) + (acc >> 16);
  return acc;
}

TEST(BuildProbe, FieldsAndChecksums) {
  Held h(0x1234, "be1", snapshot(), kA + kBb);
  h.add(seg(kRcv + 21, "", kSnd + 100, true), kSizes.fn());
  const std::string pkt = build_probe(h);
  ASSERT_EQ(pkt.size(), 41u);
  const auto* p = reinterpret_cast<const uint8_t*>(pkt.data());
  EXPECT_EQ(p[0], 0x45);
  EXPECT_EQ(p[9], 6);
  EXPECT_EQ(p[2] << 8 | p[3], 41);
  EXPECT_EQ(ones_sum(p, 20), 0xFFFFu) << "IP header checksum";
  uint8_t pseudo[12];
  std::memcpy(pseudo, p + 12, 8);
  pseudo[8] = 0;
  pseudo[9] = 6;
  pseudo[10] = 0;
  pseudo[11] = 21;
  EXPECT_EQ(ones_sum(p + 20, 21, ones_sum(pseudo, 12)), 0xFFFFu) << "TCP checksum";

  auto s = parse(std::string(14, '\0') + pkt);  // from the VIP: the roles are swapped
  ASSERT_TRUE(s);
  EXPECT_EQ(s->client_addr, kVip);
  EXPECT_EQ(s->vip_addr, kClient);
  EXPECT_EQ(s->client_port, kVipPort);
  EXPECT_EQ(s->vip_port, kClientPort);
  EXPECT_EQ(s->seq, kSnd + 100 - 1) << "the byte before the first held response";
  EXPECT_EQ(s->ack, kRcv + 21) << "the held stream's end";
  EXPECT_TRUE(s->has_ack);
  EXPECT_FALSE(s->syn || s->fin || s->rst || s->has_ts);
  EXPECT_EQ(s->window, 65536 >> 9);
  EXPECT_EQ(s->payload.size(), 1u);
}

TEST(BuildProbe, AckCountsTheFinAndSeqWraps) {
  Held h(1, "be1", snapshot(kRcv, 0), kA);
  Segment fin = seg(kRcv + 10, "");
  fin.fin = true;
  h.add(fin, kSizes.fn());
  auto s = parse(std::string(14, '\0') + build_probe(h));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->ack, kRcv + 11);
  EXPECT_EQ(s->seq, 0xFFFFFFFFu);
}

// ---- Store ----

handoff::TcpState snapshot_for(uint16_t client_port) {
  handoff::TcpState st = snapshot();
  st.peer_port = htons(client_port);
  return st;
}

Segment copy_for(uint16_t client_port, uint32_t seq, std::string_view payload) {
  Segment s = seg(seq, payload);
  s.client_port = htons(client_port);
  return s;
}

TEST(Store, CopiesBeforeTheBackupAreParkedAndMerged) {
  Store store(1 << 20);
  store.on_copy(copy_for(1, kRcv + 10, "GET /bb\r\n\r\n"), kSizes.fn(), 100);
  store.on_copy(copy_for(2, kRcv, "other"), kSizes.fn(), 100);
  EXPECT_EQ(store.parked(), 2u);
  EXPECT_EQ(store.counters().parked, 2u);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  EXPECT_EQ(store.parked(), 1u) << "the other 4-tuple's copy still waits";
  const Held* h = store.find(1);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->stream(), kA + kBb);
  store.on_copy(copy_for(1, kRcv + 21, "GET /c\r\n\r\n"), kSizes.fn(), 200);
  EXPECT_EQ(h->stream(), kA + kBb + "GET /c\r\n\r\n");
  EXPECT_EQ(store.counters().copies, 3u);
  EXPECT_EQ(store.size(), 1u);
}

// Copies of many 4-tuples wait interleaved; a BACKUP takes only its own, in order, and
// what it took leaves no trace in the counts (the rest still expire as dropped).
TEST(Store, ABackupTakesOnlyItsParkedCopiesInOrder) {
  Store store(1 << 20);
  for (uint16_t port = 10; port < 1000; ++port) store.on_copy(copy_for(port, kRcv, "z"), kSizes.fn(), 1);
  store.on_copy(copy_for(1, kRcv + 10, "GET /bb\r\n\r\n"), kSizes.fn(), 1);
  store.on_copy(copy_for(5, kRcv, "y"), kSizes.fn(), 1);
  store.on_copy(copy_for(1, kRcv + 21, "GET /c\r\n\r\n"), kSizes.fn(), 1);
  EXPECT_EQ(store.parked(), 993u);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  EXPECT_EQ(store.find(1)->stream(), kA + kBb + "GET /c\r\n\r\n");
  EXPECT_EQ(store.parked(), 991u);
  ASSERT_TRUE(store.add(Held(2, "be1", snapshot_for(5), kA), kSizes.fn()));
  EXPECT_EQ(store.parked(), 990u);
  store.expire(2 + Store::kParkNs);
  EXPECT_EQ(store.parked(), 0u);
  EXPECT_EQ(store.counters().parked_dropped, 990u);
  EXPECT_EQ(store.memory(), store.find(1)->memory() + store.find(2)->memory());
  // Parked again after the front moved on: positions still find their copies.
  store.on_copy(copy_for(7, kRcv + 10, "GET /bb\r\n\r\n"), kSizes.fn(), 3 * Store::kParkNs);
  ASSERT_TRUE(store.add(Held(3, "be1", snapshot_for(7), kA), kSizes.fn()));
  EXPECT_EQ(store.find(3)->stream(), kA + kBb);
  EXPECT_EQ(store.parked(), 0u);
}

// A 4-tuple's oldest parked copy dropped by the bound: its chain ends at the next one,
// which a BACKUP then takes alone; the map entry of a 4-tuple whose only copy was
// dropped goes with it.
TEST(Store, ABackupAfterItsOldestCopyWasDroppedTakesTheRest) {
  Store store(1 << 20);
  store.on_copy(copy_for(1, kRcv + 10, "GET /bb\r\n\r\n"), kSizes.fn(), 1);
  for (uint16_t port = 10; port < 10 + Store::kMaxParked - 1; ++port)
    store.on_copy(copy_for(port, kRcv, "z"), kSizes.fn(), 1);
  EXPECT_EQ(store.counters().parked_dropped, 0u);
  store.on_copy(copy_for(1, kRcv + 21, "GET /c\r\n\r\n"), kSizes.fn(), 1);
  EXPECT_EQ(store.counters().parked_dropped, 1u) << "the oldest, port 1's first copy";
  EXPECT_EQ(store.parked(), Store::kMaxParked);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  EXPECT_EQ(store.parked(), Store::kMaxParked - 1) << "only its second copy was left";
  // Port 10's only copy goes by the bound; a BACKUP for it then finds none.
  store.on_copy(copy_for(2, kRcv, "y"), kSizes.fn(), 1);
  store.on_copy(copy_for(3, kRcv, "y"), kSizes.fn(), 1);
  EXPECT_EQ(store.counters().parked_dropped, 2u);
  ASSERT_TRUE(store.add(Held(2, "be1", snapshot_for(10), kA), kSizes.fn()));
  EXPECT_EQ(store.find(2)->stream(), kA);
  EXPECT_EQ(store.parked(), Store::kMaxParked);
}

TEST(Store, ParkedCopiesExpire) {
  Store store(1 << 20);
  store.on_copy(copy_for(1, kRcv + 10, "x"), kSizes.fn(), 1'000'000'000);
  store.expire(1'000'000'000 + Store::kParkNs);
  EXPECT_EQ(store.parked(), 1u);
  store.expire(1'000'000'001 + Store::kParkNs);
  EXPECT_EQ(store.parked(), 0u);
  EXPECT_EQ(store.counters().parked_dropped, 1u);
  EXPECT_EQ(store.memory(), 0u);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  EXPECT_EQ(store.find(1)->stream(), kA);
}

TEST(Store, ParkedCopiesAreBounded) {
  Store store(1 << 20);
  for (size_t i = 0; i < Store::kMaxParked + 10; ++i)
    store.on_copy(copy_for(uint16_t(i), kRcv, "x"), kSizes.fn(), 1);
  EXPECT_EQ(store.parked(), Store::kMaxParked);
  EXPECT_EQ(store.counters().parked_dropped, 10u);
  const std::string big(100 * 1024, 'b');
  for (int i = 0; i < 20; ++i) store.on_copy(copy_for(1, kRcv, big), kSizes.fn(), 1);
  EXPECT_LE(store.memory(), Store::kMaxParkedBytes);
}

TEST(Store, ForgetAndTake) {
  Store store(1 << 20);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  ASSERT_TRUE(store.add(Held(2, "be2", snapshot_for(2), kA), kSizes.fn()));
  ASSERT_TRUE(store.add(Held(3, "be1", snapshot_for(3), kA), kSizes.fn()));
  EXPECT_EQ(store.size(), 3u);
  store.forget(3);
  store.forget(99);  // unknown: nothing
  EXPECT_EQ(store.size(), 2u);
  store.on_copy(copy_for(3, kRcv + 10, "x"), kSizes.fn(), 1);
  EXPECT_EQ(store.parked(), 1u) << "a forgotten connection's copies are not its any more";

  auto taken = store.take("be1");
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].id(), 1u);
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.find(1), nullptr);
  EXPECT_NE(store.find(2), nullptr);
  EXPECT_TRUE(store.take("be1").empty());
  store.forget(2);
  EXPECT_EQ(store.size(), 0u);
  EXPECT_GT(store.memory(), 0u) << "the parked copy";
  store.expire(10 * Store::kParkNs);
  EXPECT_EQ(store.memory(), 0u);
}

TEST(Store, RefusesOverItsBound) {
  const size_t one = Held(1, "be1", snapshot_for(1), kA).memory();
  Store store(2 * one);
  EXPECT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  EXPECT_TRUE(store.add(Held(2, "be1", snapshot_for(2), kA), kSizes.fn()));
  EXPECT_EQ(store.memory(), 2 * one);
  EXPECT_FALSE(store.add(Held(3, "be1", snapshot_for(3), kA), kSizes.fn()));
  EXPECT_EQ(store.counters().refused, 1u);
  EXPECT_EQ(store.size(), 2u);
  store.forget(1);
  EXPECT_TRUE(store.add(Held(3, "be1", snapshot_for(3), kA), kSizes.fn()));
}

TEST(Store, MemoryFollowsGrowthAndTrimming) {
  Store store(1 << 20);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  const std::string body(1000, 'p');
  Segment s = copy_for(1, kRcv + 10, body);
  store.on_copy(s, kSizes.fn(), 1);
  EXPECT_EQ(store.memory(), store.find(1)->memory());
  EXPECT_GT(store.memory(), 1000u);
  store.forget(1);
  EXPECT_EQ(store.memory(), 0u);
}

TEST(Store, SameIdReplacesAndReusedTupleEndsTheOldOne) {
  Store store(1 << 20);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  ASSERT_TRUE(store.add(Held(1, "be2", snapshot_for(1), kBb), kSizes.fn()));
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.find(1)->primary(), "be2");
  ASSERT_TRUE(store.add(Held(2, "be1", snapshot_for(1), kA), kSizes.fn()));
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.find(1), nullptr);
  store.on_copy(copy_for(1, kRcv + 10, "GET"), kSizes.fn(), 1);
  EXPECT_EQ(store.find(2)->stream(), kA + "GET");
}

TEST(Store, ExpireDropsResetConnections) {
  Store store(1 << 20);
  ASSERT_TRUE(store.add(Held(1, "be1", snapshot_for(1), kA), kSizes.fn()));
  ASSERT_TRUE(store.add(Held(2, "be1", snapshot_for(2), kA), kSizes.fn()));
  Segment rst = copy_for(1, kRcv + 10, "");
  rst.rst = true;
  store.on_copy(rst, kSizes.fn(), 1);
  ASSERT_TRUE(store.find(1)->reset());
  store.expire(2);
  EXPECT_EQ(store.find(1), nullptr);
  EXPECT_NE(store.find(2), nullptr);
  EXPECT_EQ(store.memory(), store.find(2)->memory());
}

}  // namespace
