// The control protocol: handshake, exact round trips, incremental decoding, and every
// way a frame can be forged, replayed, reordered, reflected or cut short.
#include <gtest/gtest.h>
#include <sodium.h>

#include <cerrno>
#include <cstring>

#include "proto/bytes.hpp"
#include "proto/control.hpp"

namespace tcpha::proto {
namespace {

using Key = std::array<uint8_t, 32>;

Key make_key(uint8_t seed) {
  Key k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed + 7 * i);
  return k;
}

const Key kKey = make_key(1);

handoff::TcpState sample_state() {
  handoff::TcpState s;
  s.local_addr = {0x0a00000a, 0, 0, 0};
  s.peer_addr = {0xc0a80105, 0, 0, 0};
  s.local_port = 0x5000;
  s.peer_port = 0xd431;
  s.snd_seq = 0x89abcdef;
  s.rcv_seq = 0x12345678;
  s.mss = 1448;
  s.timestamp = 0xfedcba99;
  s.options = handoff::kOptTimestamps | handoff::kOptSack | handoff::kOptWscale;
  s.snd_wscale = 7;
  s.rcv_wscale = 9;
  s.flags = 0x5a;
  s.snd_wl1 = 0x11111112;
  s.snd_wnd = 64240;
  s.max_window = 65535;
  s.rcv_wnd = 131072;
  s.rcv_wup = 0x22222223;
  s.exported_ns = 0x0102030405060708;
  s.snd_cwnd = 0xfedc;
  return s;
}

// An IPv6 client on the IPv6 VIP: fd00::10 and fd00:c8::5, as raw network-order bytes.
handoff::TcpState sample_state6() {
  handoff::TcpState s = sample_state();
  s.family = AF_INET6;
  const uint8_t vip[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
  const uint8_t client[16] = {0xfd, 0, 0, 0xc8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
  std::memcpy(s.local_addr.data(), vip, 16);
  std::memcpy(s.peer_addr.data(), client, 16);
  return s;
}

void expect_same(const handoff::TcpState& a, const handoff::TcpState& b) {
  EXPECT_EQ(a.local_addr, b.local_addr);
  EXPECT_EQ(a.peer_addr, b.peer_addr);
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.local_port, b.local_port);
  EXPECT_EQ(a.peer_port, b.peer_port);
  EXPECT_EQ(a.snd_seq, b.snd_seq);
  EXPECT_EQ(a.rcv_seq, b.rcv_seq);
  EXPECT_EQ(a.mss, b.mss);
  EXPECT_EQ(a.timestamp, b.timestamp);
  EXPECT_EQ(a.options, b.options);
  EXPECT_EQ(a.snd_wscale, b.snd_wscale);
  EXPECT_EQ(a.rcv_wscale, b.rcv_wscale);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.snd_wl1, b.snd_wl1);
  EXPECT_EQ(a.snd_wnd, b.snd_wnd);
  EXPECT_EQ(a.max_window, b.max_window);
  EXPECT_EQ(a.rcv_wnd, b.rcv_wnd);
  EXPECT_EQ(a.rcv_wup, b.rcv_wup);
  EXPECT_EQ(a.exported_ns, b.exported_ns);
  EXPECT_EQ(a.snd_cwnd, b.snd_cwnd);
}

// Field-by-field equality of two messages of the same type.
void expect_same(const Message& a, const Message& b) {
  ASSERT_EQ(a.index(), b.index());
  if (auto* x = std::get_if<HandoffMsg>(&a)) {
    const auto& y = std::get<HandoffMsg>(b);
    EXPECT_EQ(x->id, y.id);
    expect_same(x->state, y.state);
    EXPECT_EQ(x->request, y.request);
    EXPECT_EQ(x->rule, y.rule);
    EXPECT_EQ(x->seq, y.seq);
    EXPECT_EQ(x->lease_base_ns, y.lease_base_ns);
    EXPECT_EQ(x->lease_ms, y.lease_ms);
    EXPECT_EQ(x->origin_ns, y.origin_ns);
  } else if (auto* x = std::get_if<ReadyMsg>(&a)) {
    EXPECT_EQ(x->id, std::get<ReadyMsg>(b).id);
    EXPECT_EQ(x->status, std::get<ReadyMsg>(b).status);
  } else if (auto* x = std::get_if<CommitMsg>(&a)) {
    EXPECT_EQ(x->id, std::get<CommitMsg>(b).id);
  } else if (auto* x = std::get_if<AbortMsg>(&a)) {
    EXPECT_EQ(x->id, std::get<AbortMsg>(b).id);
  } else if (auto* x = std::get_if<ClosedMsg>(&a)) {
    const auto& y = std::get<ClosedMsg>(b);
    EXPECT_EQ(x->id, y.id);
    EXPECT_EQ(x->bytes_sent, y.bytes_sent);
    EXPECT_EQ(x->bytes_received, y.bytes_received);
    EXPECT_EQ(x->seq, y.seq);
  } else if (auto* x = std::get_if<JoinMsg>(&a)) {
    const auto& y = std::get<JoinMsg>(b);
    EXPECT_EQ(x->id, y.id);
    EXPECT_EQ(x->address, y.address);
    EXPECT_EQ(x->weight, y.weight);
    EXPECT_EQ(x->groups, y.groups);
  } else if (std::holds_alternative<LeaveMsg>(a)) {
    EXPECT_TRUE(std::holds_alternative<LeaveMsg>(b));
  } else if (auto* x = std::get_if<WorkerMsg>(&a)) {
    EXPECT_EQ(x->index, std::get<WorkerMsg>(b).index);
  } else if (auto* x = std::get_if<RepointMsg>(&a)) {
    EXPECT_EQ(x->id, std::get<RepointMsg>(b).id);
    EXPECT_EQ(x->target, std::get<RepointMsg>(b).target);
    EXPECT_EQ(x->seq, std::get<RepointMsg>(b).seq);
    expect_same(x->state, std::get<RepointMsg>(b).state);
    EXPECT_EQ(x->request, std::get<RepointMsg>(b).request);
  } else if (auto* x = std::get_if<DrainMsg>(&a)) {
    EXPECT_EQ(x->on, std::get<DrainMsg>(b).on);
  } else if (auto* x = std::get_if<LardMsg>(&a)) {
    const auto& y = std::get<LardMsg>(b);
    ASSERT_EQ(x->entries.size(), y.entries.size());
    for (size_t i = 0; i < x->entries.size(); ++i) {
      EXPECT_EQ(x->entries[i].rule, y.entries[i].rule);
      EXPECT_EQ(x->entries[i].target, y.entries[i].target);
      EXPECT_EQ(x->entries[i].members, y.entries[i].members);
    }
  } else if (auto* x = std::get_if<BackupMsg>(&a)) {
    const auto& y = std::get<BackupMsg>(b);
    EXPECT_EQ(x->id, y.id);
    EXPECT_EQ(x->primary, y.primary);
    expect_same(x->state, y.state);
    EXPECT_EQ(x->request, y.request);
  } else if (auto* x = std::get_if<ForgetMsg>(&a)) {
    EXPECT_EQ(x->ids, std::get<ForgetMsg>(b).ids);
  } else if (auto* x = std::get_if<TakeoverMsg>(&a)) {
    EXPECT_EQ(x->dead, std::get<TakeoverMsg>(b).dead);
  } else if (auto* x = std::get_if<TakenMsg>(&a)) {
    EXPECT_EQ(x->id, std::get<TakenMsg>(b).id);
    EXPECT_EQ(x->status, std::get<TakenMsg>(b).status);
  } else if (auto* x = std::get_if<OwnedMsg>(&a)) {
    const auto& y = std::get<OwnedMsg>(b);
    ASSERT_EQ(x->conns.size(), y.conns.size());
    for (size_t i = 0; i < x->conns.size(); ++i) {
      EXPECT_EQ(x->conns[i].id, y.conns[i].id);
      EXPECT_EQ(x->conns[i].seq, y.conns[i].seq);
      EXPECT_EQ(x->conns[i].family, y.conns[i].family);
      EXPECT_EQ(x->conns[i].client, y.conns[i].client);
      EXPECT_EQ(x->conns[i].local, y.conns[i].local);
      EXPECT_EQ(x->conns[i].client_port, y.conns[i].client_port);
      EXPECT_EQ(x->conns[i].local_port, y.conns[i].local_port);
    }
  } else if (auto* x = std::get_if<FeStateMsg>(&a)) {
    const auto& y = std::get<FeStateMsg>(b);
    EXPECT_EQ(x->priority, y.priority);
    EXPECT_EQ(x->active, y.active);
    EXPECT_EQ(x->epoch, y.epoch);
  } else if (auto* x = std::get_if<FlowsMsg>(&a)) {
    const auto& y = std::get<FlowsMsg>(b);
    EXPECT_EQ(x->sent_unix_ns, y.sent_unix_ns);
    EXPECT_EQ(x->full, y.full);
    ASSERT_EQ(x->entries.size(), y.entries.size());
    for (size_t i = 0; i < x->entries.size(); ++i) {
      EXPECT_EQ(x->entries[i].key, y.entries[i].key);
      EXPECT_EQ(x->entries[i].gone, y.entries[i].gone);
      EXPECT_EQ(x->entries[i].state, y.entries[i].state);
      EXPECT_EQ(x->entries[i].flags, y.entries[i].flags);
      EXPECT_EQ(x->entries[i].backup, y.entries[i].backup);
      EXPECT_EQ(x->entries[i].backend, y.entries[i].backend);
      EXPECT_EQ(x->entries[i].dmac, y.entries[i].dmac);
    }
  } else if (auto* x = std::get_if<CopiesMsg>(&a)) {
    EXPECT_EQ(x->count, std::get<CopiesMsg>(b).count);
    EXPECT_EQ(x->packed, std::get<CopiesMsg>(b).packed);
  } else if (auto* x = std::get_if<RepointedMsg>(&a)) {
    EXPECT_EQ(x->id, std::get<RepointedMsg>(b).id);
    EXPECT_EQ(x->status, std::get<RepointedMsg>(b).status);
    EXPECT_EQ(x->seq, std::get<RepointedMsg>(b).seq);
  } else {
    const auto& p = std::get<HeartbeatMsg>(a);
    const auto& q = std::get<HeartbeatMsg>(b);
    EXPECT_EQ(p.sent_ns, q.sent_ns);
    EXPECT_EQ(p.active, q.active);
    EXPECT_EQ(p.cpu_permille, q.cpu_permille);
    EXPECT_EQ(p.cache_hit_permille, q.cache_hit_permille);
    EXPECT_EQ(p.flags, q.flags);
  }
}

CopiesMsg copies_of(const std::vector<std::string>& frames) {
  CopiesMsg m;
  for (const auto& f : frames) EXPECT_TRUE(m.add(f.data(), f.size()));
  return m;
}

std::vector<Message> all_messages() {
  return {
      HandoffMsg{0x1122334455667788, sample_state(), "GET /a.png HTTP/1.1\r\nHost: x\r\n\r\n"},
      HandoffMsg{2, handoff::TcpState{}, "", 3, 0xfffffffe},
      HandoffMsg{3, sample_state(), "x", -1, 1, 0x0102030405060708, 500, 0x1112131415161718},
      HandoffMsg{4, sample_state6(), "GET / HTTP/1.1\r\n\r\n", 0, 2, 7, 500, 9},
      ReadyMsg{0x1122334455667788, 0},
      ReadyMsg{3, ENOSPC},
      CommitMsg{0xffffffffffffffff},
      AbortMsg{4},
      ClosedMsg{5, 10'000'000'000, 77, 3},
      HeartbeatMsg{0x7fffffffffffffff, 4'000'000'000, 1000, 999, kHeartbeatDraining},
      JoinMsg{"be4", 0x0e00c80a, 3, {"all", "images"}},
      JoinMsg{"x", 0, 1, {}},
      LeaveMsg{},
      WorkerMsg{7},
      RepointMsg{0x0001000000000009, "be3", 7, sample_state(), "GET /next HTTP/1.1\r\n\r\n"},
      RepointMsg{1, "", 0},
      RepointMsg{2, "be1", 3, sample_state6(), "GET /6 HTTP/1.1\r\n\r\n"},
      RepointedMsg{0x0001000000000009, 0, 7},
      RepointedMsg{2, ENOENT, 1},
      DrainMsg{true},
      DrainMsg{false},
      LardMsg{},
      LardMsg{{{2, 0xfedcba9876543210, {7}}, {0, 1, {1, 2, 0xffffffffffffffff}}}},
      BackupMsg{0x0001000000000009, "be2", sample_state(), "GET / HTTP/1.1\r\n\r\n"},
      BackupMsg{1, "", handoff::TcpState{}, ""},
      BackupMsg{2, "be1", sample_state6(), "x"},
      ForgetMsg{},
      ForgetMsg{{1, 0xffffffffffffffff, 0x0001000000000002}},
      TakeoverMsg{"be3"},
      TakenMsg{0x0001000000000009, 0},
      TakenMsg{2, ECONNRESET},
      OwnedMsg{},
      FeStateMsg{3, true, 1796041792139},
      FeStateMsg{},
      FlowsMsg{},
      FlowsMsg{0x1122334455667788, true,
               {{{1, 2, 3}, false, 2, 1, 7, 0xfffffffe, {2, 0, 0, 0, 0, 9}},
                {{0xff}, true, 0, 0, 0, 0, {}}}},
      CopiesMsg{},
      copies_of({"x", std::string(kCopyFrameMax, 'f'), std::string(60, '\0')}),
      OwnedMsg{{{0x0001000000000009, 3, AF_INET, {10, 0, 0, 2}, {10, 0, 0, 10}, 0x1234, 0x5000},
                {7, 0, AF_INET6, {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
                 {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}, 1, 0xffff}}},
  };
}

// An FE and a BE session with their HELLOs sent (not yet delivered).
struct Pair {
  Session fe;
  Session be;
  std::string fe_hello, be_hello;
  std::string fe_auth, be_auth;  // each side's AUTH, once it has the other's HELLO
  explicit Pair(const Key& fe_key = kKey, const Key& be_key = kKey)
      : fe(fe_key, Role::Fe, "fe"), be(be_key, Role::Be, "be1") {
    fe.start(fe_hello);
    be.start(be_hello);
  }
  // Delivers both HELLOs; each side answers with its AUTH.
  void exchange_hellos() {
    std::vector<Message> msgs;
    std::string a = fe_hello, b = be_hello;
    ASSERT_TRUE(be.feed(a, msgs, be_auth).ok());
    ASSERT_TRUE(fe.feed(b, msgs, fe_auth).ok());
    ASSERT_TRUE(msgs.empty());
    ASSERT_EQ(fe_auth.size(), kHeaderSize + kAuthSize + kMacSize);
    ASSERT_EQ(be_auth.size(), kHeaderSize + kAuthSize + kMacSize);
    ASSERT_FALSE(fe.established() || be.established()) << "no answer to our challenge yet";
  }
  // Delivers both HELLOs (unless done already) and both AUTHs.
  void establish() {
    if (fe_auth.empty()) exchange_hellos();
    std::vector<Message> msgs;
    std::string a = fe_auth, b = be_auth, none;
    ASSERT_TRUE(be.feed(a, msgs, none).ok());
    ASSERT_TRUE(fe.feed(b, msgs, none).ok());
    ASSERT_TRUE(msgs.empty());
    ASSERT_TRUE(none.empty());
    ASSERT_TRUE(fe.established() && be.established());
  }
};

std::string frame_of(Session& s, const Message& m) {
  std::string out;
  EXPECT_TRUE(s.send(m, out));
  return out;
}

// Feeds all of `bytes`; returns the status and the decoded messages (what the session
// answers is dropped).
Status deliver(Session& s, std::string bytes, std::vector<Message>& msgs) {
  std::string out;
  return s.feed(bytes, msgs, out);
}

// What an independent implementation of the key schedule in control.hpp computes from
// the two HELLOs on the wire and the cluster key.
Key derive(const Key& cluster, const char* label, const std::string& fe_hello,
           const std::string& be_hello) {
  constexpr size_t kNonceAt = 40;
  std::string in = label;
  in += fe_hello.substr(kNonceAt, kNonceSize);
  in += be_hello.substr(kNonceAt, kNonceSize);
  Key k;
  crypto_generichash(k.data(), k.size(), reinterpret_cast<const uint8_t*>(in.data()), in.size(),
                     cluster.data(), cluster.size());
  return k;
}

// Builds a frame by hand with the given key, for contents Session::send never produces.
std::string forge(const Key& k, uint8_t type, uint16_t flags, uint64_t seq,
                  const std::string& payload) {
  std::string f(kHeaderSize, '\0');
  auto* h = reinterpret_cast<uint8_t*>(f.data());
  std::memcpy(h, "TCPH", 4);
  h[4] = kVersion;
  h[5] = type;
  store_be(h + 6, flags);
  store_be(h + 8, static_cast<uint32_t>(payload.size()));
  store_be(h + 12, seq);
  f += payload;
  // The tag as control.hpp specifies it: ChaCha20-Poly1305, no plaintext, the frame as
  // additional data, nonce 4 zero bytes || seq.
  uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = {};
  store_be(nonce + 4, seq);
  uint8_t mac[kMacSize], none[1];
  unsigned long long mac_len = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(none, mac, &mac_len, nullptr, 0,
                                                     reinterpret_cast<const uint8_t*>(f.data()),
                                                     f.size(), nullptr, nonce, k.data());
  f.append(reinterpret_cast<const char*>(mac), kMacSize);
  return f;
}

std::string payload_of(const Message& m) {
  std::string p;
  EXPECT_TRUE(encode_payload(m, p));
  return p;
}

TEST(ProtoSession, HandshakeEstablishesBothSidesWithPeerIds) {
  Pair p;
  EXPECT_EQ(p.fe_hello.size(), kHelloSize);
  EXPECT_FALSE(p.fe.established());
  std::string out;
  EXPECT_FALSE(p.fe.send(CommitMsg{1}, out)) << "send before the peer's HELLO";
  EXPECT_TRUE(out.empty());
  p.exchange_hellos();
  EXPECT_FALSE(p.fe.send(CommitMsg{1}, out)) << "send before the peer's AUTH";
  EXPECT_TRUE(out.empty());
  p.establish();
  EXPECT_EQ(p.fe.peer_id(), "be1");
  EXPECT_EQ(p.be.peer_id(), "fe");
  EXPECT_EQ(p.fe.frames_received(), 1u) << "the AUTH";
}

TEST(ProtoSession, HelloMayArriveBeforeOurOwnStart) {
  Session fe(kKey, Role::Fe, "fe"), be(kKey, Role::Be, "be1");
  std::string wire, be_out, fe_out;
  std::vector<Message> msgs;
  fe.start(wire);
  ASSERT_TRUE(be.feed(wire, msgs, be_out).ok());
  EXPECT_TRUE(be_out.empty()) << "no AUTH before our own HELLO";
  EXPECT_FALSE(be.established());
  be.start(be_out);  // HELLO, then AUTH at once
  EXPECT_EQ(be_out.size(), kHelloSize + kHeaderSize + kAuthSize + kMacSize);
  ASSERT_TRUE(fe.feed(be_out, msgs, fe_out).ok());
  ASSERT_TRUE(fe.established()) << "the BE answered";
  ASSERT_FALSE(be.established()) << "the FE has not answered yet";
  ASSERT_TRUE(deliver(be, fe_out, msgs).ok());
  ASSERT_TRUE(be.established());
  ASSERT_TRUE(deliver(be, frame_of(fe, CommitMsg{9}), msgs).ok());
  ASSERT_EQ(msgs.size(), 1u);
}

TEST(ProtoSession, EveryMessageRoundTripsInBothDirections) {
  Pair p;
  p.establish();
  const auto sent = all_messages();
  for (auto [from, to] : {std::pair{&p.fe, &p.be}, std::pair{&p.be, &p.fe}}) {
    std::string wire;
    for (const auto& m : sent) ASSERT_TRUE(from->send(m, wire));
    std::vector<Message> got;
    std::string none;
    ASSERT_TRUE(to->feed(wire, got, none).ok());
    EXPECT_TRUE(wire.empty());
    EXPECT_TRUE(none.empty());
    ASSERT_EQ(got.size(), sent.size());
    for (size_t i = 0; i < sent.size(); ++i) expect_same(sent[i], got[i]);
  }
}

TEST(ProtoSession, LargestHandoffFitsAndOneByteMoreIsRefused) {
  Pair p;
  p.establish();
  // id, state, length, rule, seq, lease base, lease ms, origin
  const size_t fixed = 8 + kTcpStateWireSize + 4 + 4 + 4 + 8 + 4 + 8;
  HandoffMsg big{1, sample_state(), std::string(kMaxPayload - fixed, 'r')};
  std::string wire;
  ASSERT_TRUE(p.fe.send(big, wire));
  EXPECT_EQ(wire.size(), kHeaderSize + kMaxPayload + kMacSize);
  std::vector<Message> got;
  ASSERT_TRUE(deliver(p.be, wire, got).ok());
  ASSERT_EQ(got.size(), 1u);
  expect_same(big, got[0]);

  big.request.push_back('r');
  std::string out = "keep";
  EXPECT_FALSE(p.fe.send(big, out));
  EXPECT_EQ(out, "keep");
  ASSERT_TRUE(deliver(p.be, frame_of(p.fe, CommitMsg{2}), got).ok()) << "seq not consumed";
}

TEST(ProtoSession, FramesSplitAtEveryByteBoundaryStillDecode) {
  const auto sent = all_messages();
  for (size_t cut = 0;; ++cut) {
    Pair p;
    p.exchange_hellos();
    std::vector<Message> msgs;
    ASSERT_TRUE(deliver(p.fe, p.be_auth, msgs).ok());
    std::string stream = p.fe_auth;  // the BE receives AUTH and frames in one stream
    for (const auto& m : sent) ASSERT_TRUE(p.fe.send(m, stream));
    if (cut > stream.size()) break;
    std::string in = stream.substr(0, cut), out;
    ASSERT_TRUE(p.be.feed(in, msgs, out).ok()) << "cut " << cut;
    in += stream.substr(cut);
    ASSERT_TRUE(p.be.feed(in, msgs, out).ok()) << "cut " << cut;
    EXPECT_TRUE(in.empty());
    ASSERT_EQ(msgs.size(), sent.size()) << "cut " << cut;
    for (size_t i = 0; i < sent.size(); ++i) expect_same(sent[i], msgs[i]);
  }
}

TEST(ProtoSession, HelloByteByByteAnswersOnceComplete) {
  Pair p;
  std::string in, out;
  std::vector<Message> msgs;
  for (char c : p.fe_hello) {
    EXPECT_TRUE(out.empty());
    in.push_back(c);
    ASSERT_TRUE(p.be.feed(in, msgs, out).ok());
  }
  EXPECT_TRUE(in.empty());
  EXPECT_EQ(out.size(), kHeaderSize + kAuthSize + kMacSize);
}

TEST(ProtoSession, ByteByByteFeedKeepsPartialFramesBuffered) {
  Pair p;
  p.establish();
  std::string wire;
  for (const auto& m : all_messages()) ASSERT_TRUE(p.be.send(m, wire));
  std::string in;
  std::vector<Message> msgs;
  std::string none;
  for (char c : wire) {
    in.push_back(c);
    ASSERT_TRUE(p.fe.feed(in, msgs, none).ok());
  }
  EXPECT_TRUE(in.empty());
  EXPECT_EQ(msgs.size(), all_messages().size());
}

TEST(ProtoSession, WrongClusterKeyFailsAtHello) {
  Pair p(kKey, make_key(2));
  std::vector<Message> msgs;
  Status be = deliver(p.be, p.fe_hello, msgs);
  Status fe = deliver(p.fe, p.be_hello, msgs);
  ASSERT_FALSE(be.ok());
  ASSERT_FALSE(fe.ok());
  EXPECT_EQ(be.error().err, EBADMSG);
  EXPECT_EQ(fe.error().err, EBADMSG);
  EXPECT_FALSE(p.be.established());
  EXPECT_TRUE(p.be.dead());
  EXPECT_FALSE(deliver(p.be, p.fe_hello, msgs).ok()) << "a dead session stays dead";
}

TEST(ProtoSession, SameRoleHelloIsRefused) {
  Session fe1(kKey, Role::Fe, "fe"), fe2(kKey, Role::Fe, "fe2");
  std::string hello;
  std::vector<Message> msgs;
  fe1.start(hello);
  Status st = deliver(fe2, hello, msgs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, EPROTO);
}

TEST(ProtoSession, ReflectedHelloIsRefused) {
  Pair p;
  std::vector<Message> msgs;
  EXPECT_FALSE(deliver(p.fe, p.fe_hello, msgs).ok());
}

TEST(ProtoSession, FlippedBitAnywhereInHelloIsRefused) {
  for (size_t bit = 0; bit < kHelloSize * 8; ++bit) {
    Pair p;
    std::string hello = p.fe_hello;
    hello[bit / 8] = static_cast<char>(hello[bit / 8] ^ (1 << (bit % 8)));
    std::vector<Message> msgs;
    EXPECT_FALSE(deliver(p.be, hello, msgs).ok()) << "bit " << bit;
    EXPECT_FALSE(p.be.established());
  }
}

TEST(ProtoSession, FlippedBitAnywhereInFrameIsRefusedAndNothingDelivered) {
  const HandoffMsg m{7, sample_state(), "GET / HTTP/1.0\r\n\r\n"};
  size_t frame_bits = 0;
  for (size_t bit = 0; frame_bits == 0 || bit < frame_bits; ++bit) {
    Pair p;
    p.establish();
    std::string f = frame_of(p.fe, m);
    frame_bits = f.size() * 8;
    f[bit / 8] = static_cast<char>(f[bit / 8] ^ (1 << (bit % 8)));
    std::vector<Message> msgs;
    std::string none;
    Status st = p.be.feed(f, msgs, none);
    if (st.ok()) {
      // A flip that enlarged the length field leaves the frame incomplete; once the
      // claimed bytes arrive it must fail like any other.
      f.append(kMaxPayload + kMacSize, '\0');
      st = p.be.feed(f, msgs, none);
    }
    EXPECT_FALSE(st.ok()) << "bit " << bit;
    EXPECT_TRUE(msgs.empty()) << "bit " << bit;
  }
}

TEST(ProtoSession, ReplayedFrameIsRefused) {
  Pair p;
  p.establish();
  const std::string f = frame_of(p.fe, CommitMsg{1});
  std::vector<Message> msgs;
  ASSERT_TRUE(deliver(p.be, f, msgs).ok());
  Status st = deliver(p.be, f, msgs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, EPROTO);
  EXPECT_EQ(msgs.size(), 1u);
}

TEST(ProtoSession, ReorderedFramesAreRefused) {
  Pair p;
  p.establish();
  const std::string first = frame_of(p.fe, CommitMsg{1});
  const std::string second = frame_of(p.fe, AbortMsg{2});
  std::vector<Message> msgs;
  Status st = deliver(p.be, second + first, msgs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, EPROTO);
  EXPECT_TRUE(msgs.empty());
}

TEST(ProtoSession, ValidFramesBeforeABadOneAreStillDelivered) {
  Pair p;
  p.establish();
  const std::string first = frame_of(p.fe, CommitMsg{1});
  std::vector<Message> msgs;
  std::string in = first + first, none;
  EXPECT_FALSE(p.be.feed(in, msgs, none).ok());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(in, first) << "the valid frame is consumed, the bad one left";
}

TEST(ProtoSession, ReflectedFrameIsRefused) {
  Pair p;
  p.establish();
  std::vector<Message> msgs;
  Status st = deliver(p.fe, frame_of(p.fe, CommitMsg{1}), msgs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, EBADMSG);
  EXPECT_TRUE(msgs.empty());
}

// A node that saw a whole session: every byte the FE sent, played back on a new
// connection to a fresh BE. The HELLO verifies (it is authentic), but the BE's fresh
// challenge makes new keys, so the recorded AUTH does not answer it.
TEST(ProtoSession, ReplayedWholeSessionNeverEstablishes) {
  Pair old;
  old.establish();
  const std::string recording = old.fe_hello + old.fe_auth +
                                frame_of(old.fe, HandoffMsg{1, sample_state(), "GET /"}) +
                                frame_of(old.fe, CommitMsg{1});
  // Delivered at once, and byte by byte: the BE is never established at any point.
  for (bool bytewise : {false, true}) {
    Session be(kKey, Role::Be, "be1");
    std::string be_out, in;
    be.start(be_out);
    std::vector<Message> msgs;
    Status st;
    for (size_t i = 0; i < recording.size() && st.ok(); i += bytewise ? 1 : recording.size()) {
      in += recording.substr(i, bytewise ? 1 : recording.size());
      st = be.feed(in, msgs, be_out);
      EXPECT_FALSE(be.established()) << "byte " << i;
    }
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EBADMSG) << st.error().message();
    EXPECT_TRUE(msgs.empty());
    EXPECT_FALSE(be.established());
    std::string out;
    EXPECT_FALSE(be.send(HeartbeatMsg{}, out)) << "nothing goes to a replayer";
  }
}

// Only a captured HELLO: the replayer gets the fresh BE's HELLO and AUTH, but without
// the cluster key it cannot answer; whatever it sends next fails, nothing is delivered.
TEST(ProtoSession, ReplayedHelloNeverEstablishes) {
  Pair old;
  old.establish();
  Session be(kKey, Role::Be, "be1");
  std::string be_out;
  be.start(be_out);
  std::vector<Message> msgs;
  std::string in = old.fe_hello;
  ASSERT_TRUE(be.feed(in, msgs, be_out).ok()) << "the HELLO itself is authentic";
  EXPECT_FALSE(be.established()) << "a HELLO alone is no proof";
  std::string out;
  EXPECT_FALSE(be.send(HeartbeatMsg{}, out));
  // Its best tries: the old session's AUTH, and AUTHs forged with the keys it can
  // compute (the old session's, or a guessed cluster key over the new nonces).
  const std::string be_hello = be_out.substr(0, kHelloSize);
  const std::string forged_payload(kAuthSize, '\0');
  const std::string tries[] = {
      old.fe_auth,
      forge(derive(kKey, "tcpha-ctl-v2 fe2be", old.fe_hello, old.be_hello), 10, 0, 1,
            forged_payload),
      forge(derive(make_key(9), "tcpha-ctl-v2 fe2be", old.fe_hello, be_hello), 10, 0, 1,
            forged_payload),
  };
  for (const auto& t : tries) {
    Session fresh(kKey, Role::Be, "be1");
    std::string o, i = old.fe_hello;
    fresh.start(o);
    ASSERT_TRUE(fresh.feed(i, msgs, o).ok());
    i = t;
    EXPECT_FALSE(fresh.feed(i, msgs, o).ok());
    EXPECT_FALSE(fresh.established());
  }
  EXPECT_TRUE(msgs.empty());
}

TEST(ProtoSession, AuthOverAnotherTranscriptIsRefused) {
  // The right key for these nonces (a holder of the cluster key) but not this transcript.
  Pair p;
  p.exchange_hellos();
  const Key k = derive(kKey, "tcpha-ctl-v2 fe2be", p.fe_hello, p.be_hello);
  std::vector<Message> msgs;
  Status st = deliver(p.be, forge(k, 10, 0, 1, std::string(kAuthSize, 'x')), msgs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, EPROTO);
  EXPECT_FALSE(p.be.established());
}

TEST(ProtoSession, BeforeAuthOnlyTheHandshakeSizesPass) {
  // A header claiming a 1 MiB HANDOFF right after the HELLO fails at once, before any
  // MAC check and without waiting for (or buffering) the payload.
  for (uint8_t type : {uint8_t(2), uint8_t(10)}) {
    Pair p;
    p.exchange_hellos();
    std::string header(kHeaderSize, '\0');
    auto* h = reinterpret_cast<uint8_t*>(header.data());
    std::memcpy(h, "TCPH", 4);
    h[4] = kVersion;
    h[5] = type;
    store_be(h + 8, static_cast<uint32_t>(kMaxPayload));
    store_be(h + 12, uint64_t{1});
    std::vector<Message> msgs;
    std::string in = header, out;
    Status st = p.be.feed(in, msgs, out);
    ASSERT_FALSE(st.ok()) << int(type);
    EXPECT_TRUE(p.be.dead());
  }
  // A valid frame of another type before the AUTH: refused from its type byte on.
  Pair q;
  q.exchange_hellos();
  std::vector<Message> msgs;
  Status st = deliver(q.be, std::string("TCPH") + char(kVersion) + "\x04", msgs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, EPROTO);
  // And an AUTH after the handshake is a protocol violation.
  Pair r;
  r.establish();
  st = deliver(r.be, r.fe_auth, msgs);
  ASSERT_FALSE(st.ok());
}

TEST(ProtoSession, KeyScheduleMatchesTheDocumentedDerivation) {
  Pair p;
  p.establish();
  const Key fe2be = derive(kKey, "tcpha-ctl-v2 fe2be", p.fe_hello, p.be_hello);
  const Key be2fe = derive(kKey, "tcpha-ctl-v2 be2fe", p.fe_hello, p.be_hello);
  // AUTH (type 10, sequence 1) carries BLAKE2b-256(FE HELLO || BE HELLO).
  uint8_t t[kAuthSize];
  const std::string both = p.fe_hello + p.be_hello;
  crypto_generichash(t, sizeof t, reinterpret_cast<const uint8_t*>(both.data()), both.size(),
                     nullptr, 0);
  const std::string transcript(reinterpret_cast<const char*>(t), sizeof t);
  EXPECT_EQ(p.fe_auth, forge(fe2be, 10, 0, 1, transcript));
  EXPECT_EQ(p.be_auth, forge(be2fe, 10, 0, 1, transcript));
  EXPECT_EQ(frame_of(p.fe, CommitMsg{42}), forge(fe2be, 4, 0, 2, payload_of(CommitMsg{42})));
  EXPECT_EQ(frame_of(p.be, AbortMsg{43}), forge(be2fe, 5, 0, 2, payload_of(AbortMsg{43})));
}

TEST(ProtoSession, AuthenticFramesBreakingTheProtocolAreRefused) {
  struct Case {
    uint8_t type;
    uint16_t flags;
    std::string payload;
    int err;
  };
  const std::string commit = payload_of(CommitMsg{1});
  const Case cases[] = {
      {4, 0, commit.substr(0, 4), EBADMSG},  // truncated id
      {4, 0, commit + "x", EBADMSG},         // trailing byte
      {0, 0, commit, EBADMSG},               // unknown types
      {8, 0, commit, EBADMSG},
      {1, 0, std::string(kHelloSize, 'h'), EPROTO},  // a second HELLO
      {4, 1, commit, EPROTO},                        // undefined flag
  };
  for (const auto& c : cases) {
    Pair p;
    p.establish();
    const Key k = derive(kKey, "tcpha-ctl-v2 fe2be", p.fe_hello, p.be_hello);
    std::vector<Message> msgs;
    Status st = deliver(p.be, forge(k, c.type, c.flags, 2, c.payload), msgs);
    ASSERT_FALSE(st.ok()) << int(c.type);
    EXPECT_EQ(st.error().err, c.err) << st.error().message();
    EXPECT_TRUE(msgs.empty());
  }
}

TEST(ProtoSession, OversizeLengthFailsWithoutWaitingForThePayload) {
  Pair p;
  p.establish();
  std::string header(kHeaderSize, '\0');
  auto* h = reinterpret_cast<uint8_t*>(header.data());
  std::memcpy(h, "TCPH", 4);
  h[4] = kVersion;
  h[5] = 2;
  store_be(h + 8, static_cast<uint32_t>(kMaxPayload + 1));
  store_be(h + 12, uint64_t{2});
  std::vector<Message> msgs;
  Status st = deliver(p.be, header, msgs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, EBADMSG);
}

TEST(ProtoSession, LengthOverTheTypesLargestPayloadFailsAtTheHeader) {
  for (uint8_t type = 0; type < 16; ++type) {
    Pair p;
    p.establish();
    const auto max = max_payload(MsgType(type));
    std::string header(kHeaderSize, '\0');
    auto* h = reinterpret_cast<uint8_t*>(header.data());
    std::memcpy(h, "TCPH", 4);
    h[4] = kVersion;
    h[5] = type;
    store_be(h + 8, static_cast<uint32_t>(max ? *max + 1 : 0));
    store_be(h + 12, uint64_t{2});
    std::vector<Message> msgs;
    EXPECT_FALSE(deliver(p.be, header, msgs).ok()) << "type " << int(type) << ": header alone";
    if (max && *max < kMaxPayload) {
      EXPECT_LT(*max, size_t{70'000}) << "only HANDOFF may be large";
    }
  }
}

TEST(ProtoSession, GarbageFailsAtTheFirstWrongByte) {
  Pair p;
  std::vector<Message> msgs;
  EXPECT_FALSE(deliver(p.be, "G", msgs).ok()) << "an HTTP client on the control port";
  Pair q;
  q.establish();
  EXPECT_FALSE(deliver(q.be, "TCPH\x01", msgs).ok()) << "another version";
  Pair r;
  Status st = deliver(r.be, std::string("TCPH") + char(kVersion) + "\x04", msgs);
  ASSERT_FALSE(st.ok()) << "a frame before the HELLO";
  EXPECT_EQ(st.error().err, EPROTO);
}

TEST(ProtoCodec, WireLayoutIsBigEndianWithAddressesInNetworkOrder) {
  EXPECT_EQ(payload_of(ReadyMsg{0x0102030405060708, 0x0a0b0c0d}),
            std::string("\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x0b\x0c\x0d", 12));
  handoff::TcpState s;
  const uint8_t addr[4] = {10, 0, 0, 10};
  std::memcpy(&s.local_addr, addr, 4);
  s.mss = 1460;
  const std::string p = payload_of(HandoffMsg{1, s, "ab"});
  ASSERT_EQ(p.size(), 8 + kTcpStateWireSize + 4 + 2 + 4 + 4 + 8 + 4 + 8);
  EXPECT_EQ(p.substr(8, 16), std::string("\x0a\x00\x00\x0a", 4) + std::string(12, '\0'));
  EXPECT_EQ(p.substr(8 + 36, 1), std::string("\x02", 1));                 // family AF_INET
  EXPECT_EQ(p.substr(8 + 45, 4), std::string("\x00\x00\x05\xb4", 4));  // mss
  EXPECT_EQ(p.substr(8 + kTcpStateWireSize), std::string("\x00\x00\x00\x02"
                                                         "ab"
                                                         "\xff\xff\xff\xff"
                                                         "\x00\x00\x00\x00"
                                                         "\x00\x00\x00\x00\x00\x00\x00\x00"
                                                         "\x00\x00\x00\x00"
                                                         "\x00\x00\x00\x00\x00\x00\x00\x00",
                                                         34));  // rule -1, seq 0, no lease, no origin
}

TEST(ProtoCodec, EveryTruncationAndTrailingByteIsRefused) {
  for (const auto& m : all_messages()) {
    const std::string full = payload_of(m);
    const auto* p = reinterpret_cast<const uint8_t*>(full.data());
    auto ok = decode_payload(type_of(m), p, full.size());
    ASSERT_TRUE(ok.ok());
    expect_same(m, *ok);
    for (size_t n = 0; n < full.size(); ++n) {
      auto r = decode_payload(type_of(m), p, n);
      ASSERT_FALSE(r.ok()) << "type " << int(type_of(m)) << " cut at " << n;
      EXPECT_EQ(r.error().err, EBADMSG);
    }
    const std::string longer = full + '\0';
    EXPECT_FALSE(
        decode_payload(type_of(m), reinterpret_cast<const uint8_t*>(longer.data()), longer.size())
            .ok());
  }
  const std::string hello(kHelloSize, '\0');
  EXPECT_FALSE(
      decode_payload(MsgType::Hello, reinterpret_cast<const uint8_t*>(hello.data()), hello.size())
          .ok());
}

// Found by the fuzzer: DRAIN's byte is 0 or 1; anything else would decode to a message
// that encodes differently (every encoding is canonical).
TEST(ProtoCodec, DrainFlagOtherThanZeroOrOneIsRefused) {
  const uint8_t two[1] = {2}, space[1] = {0x20};
  EXPECT_FALSE(decode_payload(MsgType::Drain, two, 1).ok());
  EXPECT_FALSE(decode_payload(MsgType::Drain, space, 1).ok());
}

// COPIES: each frame 1..kCopyFrameMax bytes after its length, the last one ending the
// payload; the batch no larger than kMaxPayload (add() refuses what would not fit).
TEST(ProtoCodec, CopiesAreFramedExactly) {
  auto decode = [](const std::string& p) {
    return decode_payload(MsgType::Copies, reinterpret_cast<const uint8_t*>(p.data()), p.size());
  };
  auto be32 = [](uint32_t n) {
    uint8_t b[4];
    store_be(b, n);
    return std::string(reinterpret_cast<const char*>(b), 4);
  };
  auto one = [&](uint32_t n, const std::string& bytes) { return be32(1) + be32(n) + bytes; };
  EXPECT_TRUE(decode(one(3, "abc")).ok());
  EXPECT_TRUE(decode(be32(0)).ok()) << "no copy";
  EXPECT_FALSE(decode(one(0, "")).ok()) << "an empty frame";
  EXPECT_FALSE(decode(one(4, "abc")).ok()) << "a frame cut short";
  EXPECT_FALSE(decode(one(2, "abc")).ok()) << "bytes after the last frame";
  EXPECT_FALSE(decode(one(3, "abc") + std::string(2, '\0')).ok()) << "half a length";
  EXPECT_FALSE(decode(be32(2) + be32(3) + "abc").ok()) << "fewer frames than counted";
  EXPECT_FALSE(decode(one(kCopyFrameMax + 1, std::string(kCopyFrameMax + 1, 'x'))).ok());

  CopiesMsg m;
  EXPECT_FALSE(m.add("", 0));
  std::string frame(kCopyFrameMax, 'y');
  EXPECT_FALSE(m.add(frame.data(), frame.size() + 1));
  size_t n = 0;
  while (m.add(frame.data(), frame.size())) ++n;
  EXPECT_EQ(n, (kMaxPayload - 4) / (4 + kCopyFrameMax));
  EXPECT_EQ(m.count, n);
  EXPECT_LE(4 + m.packed.size(), kMaxPayload);
  auto back = decode(payload_of(m));
  ASSERT_TRUE(back.ok());
  size_t seen = 0;
  std::get<CopiesMsg>(*back).for_each([&](const uint8_t* f, size_t len) {
    seen += len == frame.size() && f[0] == 'y';
  });
  EXPECT_EQ(seen, n);
}

// LARD: more entries or servers than the limits, or an entry with no server, would
// decode to a message that encodes differently: refused.
TEST(ProtoCodec, ForgetOverItsLimitIsRefusedAndEncodingClamps) {
  std::string over;
  uint8_t n[2];
  store_be(n, uint16_t(kForgetMax + 1));
  over.append(reinterpret_cast<const char*>(n), 2);
  over.append((kForgetMax + 1) * 8, '\0');
  EXPECT_FALSE(
      decode_payload(MsgType::Forget, reinterpret_cast<const uint8_t*>(over.data()), over.size())
          .ok());
  ForgetMsg big;
  big.ids.assign(kForgetMax + 3, 7);
  std::string p = payload_of(big);
  EXPECT_EQ(p.size(), 2 + kForgetMax * 8);
  auto m = decode_payload(MsgType::Forget, reinterpret_cast<const uint8_t*>(p.data()), p.size());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(std::get<ForgetMsg>(*m).ids.size(), kForgetMax);
}

// OWNED: at most kOwnedMax entries (the encoder clamps, senders split), each of a
// known address family.
TEST(ProtoCodec, OwnedOverItsLimitOrOfAnUnknownFamilyIsRefused) {
  auto decode = [](const std::string& p) {
    return decode_payload(MsgType::Owned, reinterpret_cast<const uint8_t*>(p.data()), p.size());
  };
  OwnedMsg big;
  big.conns.resize(kOwnedMax + 2, OwnedMsg::Conn{5, 0, AF_INET, {}, {}, 1, 2});
  std::string p = payload_of(big);
  EXPECT_EQ(p.size(), 2 + kOwnedMax * kOwnedEntrySize);
  auto m = decode(p);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(std::get<OwnedMsg>(*m).conns.size(), kOwnedMax);
  std::string over = p;
  store_be(reinterpret_cast<uint8_t*>(over.data()), uint16_t(kOwnedMax + 1));
  over.append(kOwnedEntrySize, '\0');
  EXPECT_FALSE(decode(over).ok());
  std::string bad = payload_of(OwnedMsg{{{5, 0, AF_INET, {}, {}, 1, 2}}});
  bad[2 + 8 + 4] = 7;  // family
  EXPECT_FALSE(decode(bad).ok());
  EXPECT_FALSE(decode(bad.substr(0, bad.size() - 1)).ok());  // truncated
}

TEST(ProtoCodec, LardOverItsLimitsOrWithoutServersIsRefused) {
  auto decode = [](const std::string& p) {
    return decode_payload(MsgType::Lard, reinterpret_cast<const uint8_t*>(p.data()), p.size());
  };
  std::string one = payload_of(LardMsg{{{1, 2, {3}}}});
  ASSERT_TRUE(decode(one).ok());
  std::string none = one;
  none[2 + 4 + 8] = 0;  // n = 0
  none.resize(2 + 4 + 8 + 1);
  EXPECT_FALSE(decode(none).ok());
  std::string many = payload_of(LardMsg{{{1, 2, std::vector<uint64_t>(kLardMaxServers, 5)}}});
  ASSERT_TRUE(decode(many).ok());
  many[2 + 4 + 8] = char(kLardMaxServers + 1);
  many.append(8, '\0');
  EXPECT_FALSE(decode(many).ok());
  std::string count = one;
  store_be(reinterpret_cast<uint8_t*>(count.data()), uint16_t(kLardMaxEntries + 1));
  EXPECT_FALSE(decode(count).ok());
  LardMsg big;
  big.entries.resize(kLardMaxEntries + 5, LardMsg::Entry{0, 9, {1}});
  auto clamped = decode(payload_of(big));
  ASSERT_TRUE(clamped.ok()) << "the encoder clamps to the limit";
  EXPECT_EQ(std::get<LardMsg>(*clamped).entries.size(), kLardMaxEntries);
}

TEST(ProtoCodec, HandoffRequestLengthBeyondPayloadIsRefused) {
  std::string p = payload_of(HandoffMsg{1, sample_state(), "abc"});
  store_be(reinterpret_cast<uint8_t*>(p.data()) + 8 + kTcpStateWireSize, uint32_t{0xffffffff});
  EXPECT_FALSE(
      decode_payload(MsgType::Handoff, reinterpret_cast<const uint8_t*>(p.data()), p.size()).ok());
}

TEST(ProtoCodec, Ipv6StateKeepsAllSixteenAddressBytes) {
  const handoff::TcpState s = sample_state6();
  const std::string p = payload_of(HandoffMsg{1, s, ""});
  EXPECT_EQ(p.substr(8, 16), std::string(reinterpret_cast<const char*>(s.local_addr.data()), 16));
  EXPECT_EQ(p.substr(8 + 16, 16),
            std::string(reinterpret_cast<const char*>(s.peer_addr.data()), 16));
  EXPECT_EQ(p.substr(8 + 36, 1), std::string("\x0a", 1));  // AF_INET6
  auto m = decode_payload(MsgType::Handoff, reinterpret_cast<const uint8_t*>(p.data()), p.size());
  ASSERT_TRUE(m.ok());
  const auto& got = std::get<HandoffMsg>(*m).state;
  EXPECT_TRUE(got.is_v6());
  EXPECT_EQ(got.peer().str(), "[fd00:c8::5]:12756");
  EXPECT_EQ(got.local().str(), "[fd00::10]:80");
}

TEST(ProtoCodec, StateWithAnUnknownFamilyOrDirtyIpv4AddressIsRefused) {
  auto decodes = [](const std::string& p) {
    const auto* b = reinterpret_cast<const uint8_t*>(p.data());
    return decode_payload(MsgType::Handoff, b, p.size()).ok();
  };
  const std::string good = payload_of(HandoffMsg{1, sample_state(), "ab"});
  ASSERT_TRUE(decodes(good));
  for (uint8_t family : {0, 1, 3, 9, 11, 255}) {
    std::string p = good;
    p[8 + 36] = char(family);
    EXPECT_FALSE(decodes(p)) << "family " << int(family);
  }
  // IPv4 in the first 4 bytes, the rest zero: one encoding per state.
  for (size_t at : {8 + 4, 8 + 15, 8 + 16 + 4, 8 + 31}) {
    std::string p = good;
    p[at] = 1;
    EXPECT_FALSE(decodes(p)) << "byte " << at;
  }
}

}  // namespace
}  // namespace tcpha::proto
