// Payload encodings of the control messages (layout: control.hpp). Every field is
// written and read explicitly with bounds checks: structs are never copied as memory,
// so padding and host byte order never reach the wire.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <optional>

#include "proto/bytes.hpp"
#include "proto/control.hpp"

namespace tcpha::proto {
namespace {

template <typename T>
void put_be(std::string& out, T v) {
  uint8_t b[sizeof(T)];
  store_be(b, v);
  out.append(reinterpret_cast<const char*>(b), sizeof(T));
}

// Fields already in network order (addresses, ports) travel as their raw bytes.
template <typename T>
void put_raw(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

// Bounds-checked reader: once a read fails, every later one fails too, so a decoder
// can read all fields and check ok() once at the end.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}

  template <typename T>
  T be() {
    return take(sizeof(T)) ? load_be<T>(p_ - sizeof(T)) : 0;
  }
  template <typename T>
  T raw() {
    T v = 0;
    if (take(sizeof(T))) std::memcpy(&v, p_ - sizeof(T), sizeof(T));
    return v;
  }
  void bytes(std::string& s, size_t n) {
    if (take(n)) s.assign(reinterpret_cast<const char*>(p_ - n), n);
  }
  void rest(std::string& s) { bytes(s, size_t(end_ - p_)); }
  // Every field was present and nothing is left over.
  bool ok() const { return ok_ && p_ == end_; }
  // A field's value is outside its domain (encodings are canonical: one per message).
  void invalid() { ok_ = false; }

 private:
  bool take(size_t n) {
    if (!ok_ || static_cast<size_t>(end_ - p_) < n) return ok_ = false;
    p_ += n;
    return true;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

void put_state(std::string& out, const handoff::TcpState& s) {
  put_raw(out, s.local_addr);
  put_raw(out, s.peer_addr);
  put_raw(out, s.local_port);
  put_raw(out, s.peer_port);
  put_be(out, s.family);
  put_be(out, s.snd_seq);
  put_be(out, s.rcv_seq);
  put_be(out, s.mss);
  put_be(out, s.timestamp);
  put_be(out, s.options);
  put_be(out, s.snd_wscale);
  put_be(out, s.rcv_wscale);
  put_be(out, s.flags);
  put_be(out, s.snd_wl1);
  put_be(out, s.snd_wnd);
  put_be(out, s.max_window);
  put_be(out, s.rcv_wnd);
  put_be(out, s.rcv_wup);
  put_be(out, s.exported_ns);
  put_be(out, s.snd_cwnd);
}

void get_state(Reader& r, handoff::TcpState& s) {
  for (auto& w : s.local_addr) w = r.raw<uint32_t>();
  for (auto& w : s.peer_addr) w = r.raw<uint32_t>();
  s.local_port = r.raw<uint16_t>();
  s.peer_port = r.raw<uint16_t>();
  s.family = r.be<uint8_t>();
  // Canonical: IPv4 addresses have their other words zero, as in the flow key.
  const bool v4_clean = s.local_addr[1] == 0 && s.local_addr[2] == 0 && s.local_addr[3] == 0 &&
                        s.peer_addr[1] == 0 && s.peer_addr[2] == 0 && s.peer_addr[3] == 0;
  if (!(s.family == AF_INET6 || (s.family == AF_INET && v4_clean))) r.invalid();
  s.snd_seq = r.be<uint32_t>();
  s.rcv_seq = r.be<uint32_t>();
  s.mss = r.be<uint32_t>();
  s.timestamp = r.be<uint32_t>();
  s.options = r.be<uint8_t>();
  s.snd_wscale = r.be<uint8_t>();
  s.rcv_wscale = r.be<uint8_t>();
  s.flags = r.be<uint8_t>();
  s.snd_wl1 = r.be<uint32_t>();
  s.snd_wnd = r.be<uint32_t>();
  s.max_window = r.be<uint32_t>();
  s.rcv_wnd = r.be<uint32_t>();
  s.rcv_wup = r.be<uint32_t>();
  s.exported_ns = r.be<uint64_t>();
  s.snd_cwnd = r.be<uint16_t>();
}

void put(std::string& out, const HandoffMsg& m) {
  put_be(out, m.id);
  put_state(out, m.state);
  put_be(out, static_cast<uint32_t>(m.request.size()));
  out.append(m.request);
  put_be(out, static_cast<uint32_t>(m.rule));
  put_be(out, m.seq);
  put_be(out, m.lease_base_ns);
  put_be(out, m.lease_ms);
  put_be(out, m.origin_ns);
}
void put(std::string& out, const ReadyMsg& m) {
  put_be(out, m.id);
  put_be(out, m.status);
}
void put(std::string& out, const CommitMsg& m) { put_be(out, m.id); }
void put(std::string& out, const AbortMsg& m) { put_be(out, m.id); }
void put(std::string& out, const ClosedMsg& m) {
  put_be(out, m.id);
  put_be(out, m.bytes_sent);
  put_be(out, m.bytes_received);
  put_be(out, m.seq);
}
void put(std::string& out, const HeartbeatMsg& m) {
  put_be(out, m.sent_ns);
  put_be(out, m.active);
  put_be(out, m.cpu_permille);
  put_be(out, m.cache_hit_permille);
  put_be(out, m.flags);
}

// Short strings: u8 length, then the bytes.
void put_str(std::string& out, const std::string& v) {
  put_be(out, static_cast<uint8_t>(std::min<size_t>(v.size(), 255)));
  out.append(v, 0, std::min<size_t>(v.size(), 255));
}
void get_str(Reader& r, std::string& v) { r.bytes(v, r.be<uint8_t>()); }

void put(std::string& out, const JoinMsg& m) {
  put_str(out, m.id);
  put_raw(out, m.address);
  put_be(out, m.weight);
  put_be(out, static_cast<uint8_t>(std::min<size_t>(m.groups.size(), 255)));
  for (size_t i = 0; i < m.groups.size() && i < 255; ++i) put_str(out, m.groups[i]);
}
void put(std::string&, const LeaveMsg&) {}

void get(Reader& r, JoinMsg& m) {
  get_str(r, m.id);
  m.address = r.raw<uint32_t>();
  m.weight = r.be<uint32_t>();
  const uint8_t n = r.be<uint8_t>();
  m.groups.resize(n);
  for (auto& g : m.groups) get_str(r, g);
}
void get(Reader&, LeaveMsg&) {}

void put(std::string& out, const WorkerMsg& m) { put_be(out, m.index); }
void get(Reader& r, WorkerMsg& m) { m.index = r.be<uint32_t>(); }
void put(std::string& out, const RepointMsg& m) {
  put_be(out, m.id);
  put_be(out, m.seq);
  put_str(out, m.target);
  put_state(out, m.state);
  put_be(out, static_cast<uint32_t>(m.request.size()));
  out.append(m.request);
}
void get(Reader& r, RepointMsg& m) {
  m.id = r.be<uint64_t>();
  m.seq = r.be<uint32_t>();
  get_str(r, m.target);
  get_state(r, m.state);
  r.bytes(m.request, r.be<uint32_t>());
}
void put(std::string& out, const RepointedMsg& m) {
  put_be(out, m.id);
  put_be(out, m.status);
  put_be(out, m.seq);
}
void put(std::string& out, const DrainMsg& m) { put_be(out, uint8_t(m.on ? 1 : 0)); }
void get(Reader& r, DrainMsg& m) {
  const uint8_t on = r.be<uint8_t>();
  if (on > 1) r.invalid();
  m.on = on == 1;
}
// Encoding clamps to the limits (senders split larger batches); decoding refuses what
// is over them, so every accepted frame re-encodes to itself.
void put(std::string& out, const LardMsg& m) {
  const size_t n = std::min(m.entries.size(), kLardMaxEntries);
  put_be(out, uint16_t(n));
  for (size_t i = 0; i < n; ++i) {
    const auto& e = m.entries[i];
    put_be(out, e.rule);
    put_be(out, e.target);
    const size_t k = std::clamp<size_t>(e.members.size(), 1, kLardMaxServers);
    put_be(out, uint8_t(k));
    for (size_t j = 0; j < k; ++j) put_be(out, j < e.members.size() ? e.members[j] : uint64_t{0});
  }
}
void get(Reader& r, LardMsg& m) {
  const uint16_t n = r.be<uint16_t>();
  if (n > kLardMaxEntries) return r.invalid();
  m.entries.resize(n);
  for (auto& e : m.entries) {
    e.rule = r.be<uint32_t>();
    e.target = r.be<uint64_t>();
    const uint8_t k = r.be<uint8_t>();
    if (k == 0 || k > kLardMaxServers) return r.invalid();
    e.members.resize(k);
    for (auto& x : e.members) x = r.be<uint64_t>();  // a truncated frame reads k = 0 next
  }
}
void put(std::string& out, const BackupMsg& m) {
  put_be(out, m.id);
  put_str(out, m.primary);
  put_state(out, m.state);
  put_be(out, static_cast<uint32_t>(m.request.size()));
  out.append(m.request);
}
void get(Reader& r, BackupMsg& m) {
  m.id = r.be<uint64_t>();
  get_str(r, m.primary);
  get_state(r, m.state);
  r.bytes(m.request, r.be<uint32_t>());
}
// Clamped like LARD: senders split larger batches.
void put(std::string& out, const ForgetMsg& m) {
  const size_t n = std::min(m.ids.size(), kForgetMax);
  put_be(out, uint16_t(n));
  for (size_t i = 0; i < n; ++i) put_be(out, m.ids[i]);
}
void get(Reader& r, ForgetMsg& m) {
  const uint16_t n = r.be<uint16_t>();
  if (n > kForgetMax) return r.invalid();
  m.ids.resize(n);
  for (auto& id : m.ids) id = r.be<uint64_t>();
}
void put(std::string& out, const CopiesMsg& m) {
  put_be(out, m.count);
  out.append(m.packed);
}
// Exactly `count` frames, each length in 1..kCopyFrameMax, the last one ending the payload.
void get(Reader& r, CopiesMsg& m) {
  m.count = r.be<uint32_t>();
  std::string all;
  r.rest(all);
  const auto* p = reinterpret_cast<const uint8_t*>(all.data());
  size_t at = 0;
  for (uint32_t i = 0; i < m.count; ++i) {
    if (all.size() - at < 4) return r.invalid();
    const size_t n = load_be<uint32_t>(p + at);
    if (n == 0 || n > kCopyFrameMax || all.size() - at - 4 < n) return r.invalid();
    at += 4 + n;
  }
  if (at != all.size()) return r.invalid();
  m.packed = std::move(all);
}
void put(std::string& out, const TakeoverMsg& m) { put_str(out, m.dead); }
void get(Reader& r, TakeoverMsg& m) { get_str(r, m.dead); }
void put(std::string& out, const TakenMsg& m) {
  put_be(out, m.id);
  put_be(out, m.status);
}
void get(Reader& r, TakenMsg& m) {
  m.id = r.be<uint64_t>();
  m.status = r.be<uint32_t>();
}
void put(std::string& out, const OwnedMsg& m) {
  const size_t n = std::min(m.conns.size(), kOwnedMax);
  put_be(out, uint16_t(n));
  for (size_t i = 0; i < n; ++i) {
    const auto& c = m.conns[i];
    put_be(out, c.id);
    put_be(out, c.seq);
    out.push_back(char(c.family));
    out.append(reinterpret_cast<const char*>(c.client.data()), c.client.size());
    out.append(reinterpret_cast<const char*>(&c.client_port), 2);
    out.append(reinterpret_cast<const char*>(c.local.data()), c.local.size());
    out.append(reinterpret_cast<const char*>(&c.local_port), 2);
  }
}
void get(Reader& r, OwnedMsg& m) {
  const uint16_t n = r.be<uint16_t>();
  if (n > kOwnedMax) return r.invalid();
  m.conns.resize(n);
  std::string raw;
  auto addr = [&](std::array<uint8_t, 16>& a) {
    r.bytes(raw, a.size());
    if (raw.size() == a.size()) std::memcpy(a.data(), raw.data(), a.size());
  };
  for (auto& c : m.conns) {
    c.id = r.be<uint64_t>();
    c.seq = r.be<uint32_t>();
    c.family = r.be<uint8_t>();
    addr(c.client);
    c.client_port = r.raw<uint16_t>();
    addr(c.local);
    c.local_port = r.raw<uint16_t>();
    if (c.family != AF_INET && c.family != AF_INET6) return r.invalid();
  }
}
void put(std::string& out, const FeStateMsg& m) {
  put_be(out, m.priority);
  out.push_back(char(m.active ? 1 : 0));
  put_be(out, m.epoch);
}
void get(Reader& r, FeStateMsg& m) {
  m.priority = r.be<uint32_t>();
  const uint8_t a = r.be<uint8_t>();
  if (a > 1) r.invalid();
  m.active = a == 1;
  m.epoch = r.be<uint64_t>();
}
void put(std::string& out, const FlowsMsg& m) {
  const size_t n = std::min(m.entries.size(), kFlowsMax);
  put_be(out, m.sent_unix_ns);
  out.push_back(char(m.full ? 1 : 0));
  put_be(out, uint16_t(n));
  for (size_t i = 0; i < n; ++i) {
    const auto& e = m.entries[i];
    out.append(reinterpret_cast<const char*>(e.key.data()), e.key.size());
    out.push_back(char(e.gone ? 1 : 0));
    out.push_back(char(e.state));
    out.push_back(char(e.flags));
    put_be(out, e.backup);
    put_be(out, e.backend);
    out.append(reinterpret_cast<const char*>(e.dmac.data()), e.dmac.size());
  }
}
void get(Reader& r, FlowsMsg& m) {
  m.sent_unix_ns = r.be<uint64_t>();
  const uint8_t full = r.be<uint8_t>();
  if (full > 1) return r.invalid();
  m.full = full == 1;
  const uint16_t n = r.be<uint16_t>();
  if (n > kFlowsMax) return r.invalid();
  m.entries.resize(n);
  std::string raw;
  for (auto& e : m.entries) {
    r.bytes(raw, e.key.size());
    if (raw.size() == e.key.size()) std::memcpy(e.key.data(), raw.data(), e.key.size());
    const uint8_t gone = r.be<uint8_t>();
    if (gone > 1) return r.invalid();
    e.gone = gone == 1;
    e.state = r.be<uint8_t>();
    e.flags = r.be<uint8_t>();
    e.backup = r.be<uint16_t>();
    e.backend = r.be<uint32_t>();
    r.bytes(raw, e.dmac.size());
    if (raw.size() == e.dmac.size()) std::memcpy(e.dmac.data(), raw.data(), e.dmac.size());
  }
}
void get(Reader& r, RepointedMsg& m) {
  m.id = r.be<uint64_t>();
  m.status = r.be<uint32_t>();
  m.seq = r.be<uint32_t>();
}

void get(Reader& r, HandoffMsg& m) {
  m.id = r.be<uint64_t>();
  get_state(r, m.state);
  const uint32_t len = r.be<uint32_t>();
  r.bytes(m.request, len);
  m.rule = static_cast<int32_t>(r.be<uint32_t>());
  m.seq = r.be<uint32_t>();
  m.lease_base_ns = r.be<uint64_t>();
  m.lease_ms = r.be<uint32_t>();
  m.origin_ns = r.be<uint64_t>();
}
void get(Reader& r, ReadyMsg& m) {
  m.id = r.be<uint64_t>();
  m.status = r.be<uint32_t>();
}
void get(Reader& r, CommitMsg& m) { m.id = r.be<uint64_t>(); }
void get(Reader& r, AbortMsg& m) { m.id = r.be<uint64_t>(); }
void get(Reader& r, ClosedMsg& m) {
  m.id = r.be<uint64_t>();
  m.bytes_sent = r.be<uint64_t>();
  m.bytes_received = r.be<uint64_t>();
  m.seq = r.be<uint32_t>();
}
void get(Reader& r, HeartbeatMsg& m) {
  m.sent_ns = r.be<uint64_t>();
  m.active = r.be<uint32_t>();
  m.cpu_permille = r.be<uint32_t>();
  m.cache_hit_permille = r.be<uint32_t>();
  m.flags = r.be<uint32_t>();
}

template <typename M>
Result<Message> decode_as(const uint8_t* p, size_t n) {
  Reader r(p, n);
  M m;
  get(r, m);
  if (!r.ok()) return Error{EBADMSG, "control message: truncated field or trailing bytes"};
  return Message{std::move(m)};
}

// HANDOFF's fixed part: id, TcpState, request length, rule, seq.
constexpr size_t kHandoffFixed = 8 + kTcpStateWireSize + 4 + 4 + 4 + 8 + 4 + 8;

// Every message type once, in the order of the Message variant: its wire type, its
// largest payload (checked against a frame's header) and its decoder. HELLO and AUTH
// are the session's own frames, never messages.
struct TypeInfo {
  MsgType type;
  size_t max_payload;
  Result<Message> (*decode)(const uint8_t*, size_t);
};
constexpr TypeInfo kTypes[] = {
    {MsgType::Handoff, kMaxPayload, decode_as<HandoffMsg>},
    {MsgType::Ready, 8 + 4, decode_as<ReadyMsg>},
    {MsgType::Commit, 8, decode_as<CommitMsg>},
    {MsgType::Abort, 8, decode_as<AbortMsg>},
    {MsgType::Closed, 3 * 8 + 4, decode_as<ClosedMsg>},
    {MsgType::Heartbeat, 8 + 4 * 4, decode_as<HeartbeatMsg>},
    // id, address, weight, up to 255 groups of up to 255 bytes
    {MsgType::Join, (1 + 255) + 4 + 4 + 1 + 255 * (1 + 255), decode_as<JoinMsg>},
    {MsgType::Leave, 0, decode_as<LeaveMsg>},
    {MsgType::Worker, 4, decode_as<WorkerMsg>},
    {MsgType::Repoint, kMaxPayload, decode_as<RepointMsg>},
    {MsgType::Repointed, 8 + 4 + 4, decode_as<RepointedMsg>},
    {MsgType::Drain, 1, decode_as<DrainMsg>},
    {MsgType::Lard, 2 + kLardMaxEntries * (4 + 8 + 1 + kLardMaxServers * 8), decode_as<LardMsg>},
    {MsgType::Backup, kMaxPayload, decode_as<BackupMsg>},
    {MsgType::Forget, 2 + kForgetMax * 8, decode_as<ForgetMsg>},
    {MsgType::Takeover, 1 + 255, decode_as<TakeoverMsg>},
    {MsgType::Taken, 8 + 4, decode_as<TakenMsg>},
    {MsgType::Owned, 2 + kOwnedMax * kOwnedEntrySize, decode_as<OwnedMsg>},
    {MsgType::FeState, 4 + 1 + 8, decode_as<FeStateMsg>},
    {MsgType::Flows, 8 + 1 + 2 + kFlowsMax * kFlowEntrySize, decode_as<FlowsMsg>},
    {MsgType::Copies, kMaxPayload, decode_as<CopiesMsg>},
};
static_assert(std::size(kTypes) == std::variant_size_v<Message>);

const TypeInfo* info(MsgType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return &i;
  return nullptr;
}

}  // namespace

MsgType type_of(const Message& m) { return kTypes[m.index()].type; }

bool encode_payload(const Message& m, std::string& out) {
  if (const auto* h = std::get_if<HandoffMsg>(&m);
      h && h->request.size() > kMaxPayload - kHandoffFixed) {
    return false;
  }
  if (const auto* r = std::get_if<RepointMsg>(&m);
      r && r->request.size() > kMaxPayload - (8 + 4 + 256 + kTcpStateWireSize + 4)) {
    return false;
  }
  if (const auto* b = std::get_if<BackupMsg>(&m);
      b && b->request.size() > kMaxPayload - (8 + 256 + kTcpStateWireSize + 4)) {
    return false;
  }
  std::visit([&out](const auto& v) { put(out, v); }, m);
  return true;
}

bool CopiesMsg::add(const void* frame, size_t n) {
  if (n == 0 || n > kCopyFrameMax || 4 + packed.size() + 4 + n > kMaxPayload) return false;
  ++count;
  put_be(packed, uint32_t(n));
  packed.append(static_cast<const char*>(frame), n);
  return true;
}

std::optional<size_t> max_payload(MsgType t) {
  const TypeInfo* i = info(t);
  return i ? std::optional<size_t>(i->max_payload) : std::nullopt;
}

Result<Message> decode_payload(MsgType t, const uint8_t* p, size_t n) {
  if (const TypeInfo* i = info(t)) return i->decode(p, n);
  return Error{EBADMSG, "control message: unknown type " + std::to_string(static_cast<int>(t))};
}

}  // namespace tcpha::proto
