#include "failover/held.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace tcpha::failover {
namespace {

constexpr size_t kEthHeader = 14;
constexpr uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpAck = 0x10;

uint16_t load16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t load32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
void store16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
void store32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}

// Heap bytes a string owns (0 while its characters fit in the object itself).
size_t heap_of(const std::string& s) {
  const char* self = reinterpret_cast<const char*>(&s);
  if (s.data() >= self && s.data() < self + sizeof s) return 0;
  return s.capacity() + 1;
}

// RFC 1071 sum of `n` bytes, folded later.
uint32_t sum16(const uint8_t* p, size_t n, uint32_t acc = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) acc += load16(p + i);
  if (n & 1) acc += uint32_t(p[n - 1]) << 8;
  return acc;
}
uint16_t fold(uint32_t acc) {
  while (acc >> 16) acc = (acc & 0xFFFF) + (acc >> 16);
  return uint16_t(~acc);
}

}  // namespace

std::optional<Segment> parse_frame(const uint8_t* p, size_t n) {
  if (n < kEthHeader + 20) return std::nullopt;
  const uint8_t* ip = p + kEthHeader;
  const size_t avail = n - kEthHeader;
  if ((ip[0] >> 4) != 4) return std::nullopt;
  const size_t ihl = size_t(ip[0] & 0x0F) * 4;
  const size_t total = load16(ip + 2);
  if (ihl < 20 || total < ihl + 20 || total > avail) return std::nullopt;
  if (load16(ip + 6) & 0x3FFF) return std::nullopt;  // MF or an offset: a fragment
  if (ip[9] != 6) return std::nullopt;               // not TCP
  const uint8_t* tcp = ip + ihl;
  const size_t tcp_len = total - ihl;
  const size_t doff = size_t(tcp[12] >> 4) * 4;
  if (doff < 20 || doff > tcp_len) return std::nullopt;

  Segment s;
  std::memcpy(&s.client_addr, ip + 12, 4);
  std::memcpy(&s.vip_addr, ip + 16, 4);
  std::memcpy(&s.client_port, tcp, 2);
  std::memcpy(&s.vip_port, tcp + 2, 2);
  s.seq = load32(tcp + 4);
  s.ack = load32(tcp + 8);
  const uint8_t flags = tcp[13];
  s.fin = flags & kTcpFin;
  s.syn = flags & kTcpSyn;
  s.rst = flags & kTcpRst;
  s.has_ack = flags & kTcpAck;
  s.window = load16(tcp + 14);
  // Options: only the timestamp is wanted; a malformed list just ends the search.
  for (size_t i = 20; i < doff;) {
    const uint8_t kind = tcp[i];
    if (kind == 0) break;  // end of options
    if (kind == 1) {       // NOP
      ++i;
      continue;
    }
    if (i + 1 >= doff) break;
    const size_t len = tcp[i + 1];
    if (len < 2 || i + len > doff) break;
    if (kind == 8 && len == 10) {
      s.has_ts = true;
      s.tsval = load32(tcp + i + 2);
      s.tsecr = load32(tcp + i + 6);
    }
    i += len;
  }
  s.payload = std::string_view(reinterpret_cast<const char*>(tcp + doff), tcp_len - doff);
  return s;
}

Held::Held(uint64_t id, std::string primary, const handoff::TcpState& snapshot, std::string request)
    : id_(id),
      snapshot_(snapshot),
      primary_(std::move(primary)),
      stream_(std::move(request)),
      stream_seq_(snapshot.rcv_seq),
      response_seq_(snapshot.snd_seq) {
  if (snapshot.flags & handoff::kStatePeerFin) {
    // export_state's convention for a CLOSE_WAIT socket: rcv_seq + queued bytes is
    // rcv_nxt, which counts the FIN, so the first byte is one before rcv_seq.
    stream_seq_ = snapshot.rcv_seq - 1;
    fin_seen_ = fin_ = true;
    fin_seq_ = stream_end();
  }
  if (stream_.size() > kMaxStream) overflow();
}

void Held::overflow() {
  overflowed_ = true;
  std::string().swap(stream_);
  std::vector<Piece>().swap(out_of_order_);
  out_of_order_bytes_ = 0;
}

void Held::append(std::string_view data) {
  // Nothing after a FIN belongs to the stream.
  if (fin_seen_) {
    if (seq_after(stream_end(), fin_seq_)) return;
    const uint32_t room = fin_seq_ - stream_end();
    data = data.substr(0, std::min<size_t>(data.size(), room));
  }
  if (stream_.size() + data.size() > kMaxStream) return overflow();
  stream_.append(data);
}

// Moves the pieces the stream has reached into it (cutting what it already has).
void Held::take_out_of_order() {
  bool progress = true;
  while (progress && !overflowed_) {
    progress = false;
    for (size_t i = 0; i < out_of_order_.size(); ++i) {
      Piece& piece = out_of_order_[i];
      const int32_t off = int32_t(piece.seq - stream_end());
      if (off > 0) continue;
      const size_t cut = size_t(-int64_t(off));
      std::string data = std::move(piece.data);
      out_of_order_bytes_ -= uint32_t(data.size());
      out_of_order_.erase(out_of_order_.begin() + ptrdiff_t(i));
      if (cut < data.size()) append(std::string_view(data).substr(cut));
      progress = true;
      break;
    }
  }
  if (out_of_order_.empty() && out_of_order_.capacity() > 0)
    std::vector<Piece>().swap(out_of_order_);
}

void Held::trim(uint32_t ack, const ResponseSize& rs) {
  bool trimmed = false;
  while (!stream_.empty()) {
    if (front_request_ == 0) {  // unknown, or an incomplete request: asked again
      const auto r = rs(stream_);
      if (!r) break;
      const auto [n, len] = *r;
      if (n == 0 || n > stream_.size() || len > 0x7FFFFFFF) break;
      front_request_ = uint32_t(n);
      front_response_ = uint32_t(len);
    }
    const uint32_t done = response_seq_ + front_response_;
    if (seq_before(ack, done)) break;
    stream_.erase(0, front_request_);
    stream_seq_ += front_request_;
    response_seq_ = done;
    front_request_ = 0;
    trimmed = true;
  }
  // A keep-alive connection spends most of its life idle with everything trimmed:
  // give the buffer back then, not only at the end.
  if (trimmed && stream_.capacity() > 64 && stream_.capacity() > 2 * stream_.size())
    stream_.shrink_to_fit();
}

void Held::add(const Segment& s, const ResponseSize& rs) {
  if (overflowed_) return;
  // A SYN on this 4-tuple is not part of the connection's stream (the FE's datapath
  // handles a reused 4-tuple); its ACK number means nothing here either.
  if (s.syn) return;
  const uint32_t end = stream_end() + (fin_ ? 1 : 0);
  if (s.rst) {
    // Only an RST inside the receive window could have reset the primary's socket
    // (RFC 5961 narrows that further; a blind one outside it is noise). One not
    // believed here costs nothing: the takeover's probe then meets the RST anyway.
    const uint32_t wnd = std::max<uint32_t>(snapshot_.rcv_wnd, 65535);
    if (!seq_before(s.seq, end) && !seq_after(s.seq, end + wnd)) reset_ = true;
    return;
  }
  const std::string_view data = s.payload;
  // A FIN before the bytes the stream already has is not this stream's (the client's
  // FIN comes after everything it sent).
  if (s.fin && !fin_seen_ && !seq_before(s.seq + uint32_t(data.size()), stream_end())) {
    fin_seen_ = true;
    fin_seq_ = s.seq + uint32_t(data.size());
  }
  if (!data.empty()) {
    const int32_t off = int32_t(s.seq - stream_end());
    if (off <= 0) {
      const size_t cut = size_t(-int64_t(off));
      if (cut < data.size()) append(data.substr(cut));
    } else if (size_t(off) <= kMaxStream) {
      if (out_of_order_bytes_ + data.size() > kMaxOutOfOrder) return overflow();
      out_of_order_.push_back(Piece{s.seq, std::string(data)});
      out_of_order_bytes_ += uint32_t(data.size());
    }
    // Further ahead than any stream this backup would keep: not this connection's.
  }
  if (overflowed_) return;
  take_out_of_order();
  if (overflowed_) return;
  if (fin_seen_ && !fin_ && stream_end() == fin_seq_) fin_ = true;
  if (s.has_ack) trim(s.ack, rs);
}

size_t Held::memory() const {
  size_t m = sizeof *this + heap_of(primary_) + heap_of(stream_);
  m += out_of_order_.capacity() * sizeof(Piece);
  for (const Piece& p : out_of_order_) m += heap_of(p.data);
  return m;
}

Result<Plan> plan_takeover(const Held& h, const Segment& answer, uint64_t now_ns) {
  if (answer.rst) return Error{ECONNRESET, "takeover: the client answered the probe with RST"};
  if (h.overflowed()) return Error{ENODATA, "takeover: the held stream overflowed"};
  if (!answer.has_ack) return Error{EPROTO, "takeover: the answer carries no ACK"};
  const uint32_t end = h.stream_end() + (h.fin() ? 1 : 0);
  if (seq_after(answer.seq, end))
    return Error{ENODATA, "takeover: the client sent " + std::to_string(answer.seq - end) +
                              " bytes the backup never saw"};
  if (answer.seq != end)
    return Error{EPROTO, "takeover: the client's seq is before the held stream's end"};
  if (seq_before(answer.ack, h.response_seq()))
    return Error{EPROTO, "takeover: the client acknowledges less than the held responses' start"};
  const handoff::TcpState& snap = h.snapshot();
  const bool ts = snap.options & handoff::kOptTimestamps;
  if (ts && !answer.has_ts)
    return Error{EPROTO, "takeover: the answer has no timestamp, though they were negotiated"};

  Plan p;
  p.state = snap;
  handoff::TcpState& st = p.state;
  st.snd_seq = answer.ack;
  st.rcv_seq = h.stream_seq() + (h.fin() ? 1 : 0);
  st.flags =
      uint8_t((snap.flags & ~handoff::kStatePeerFin) | (h.fin() ? handoff::kStatePeerFin : 0));
  const uint8_t shift = (snap.options & handoff::kOptWscale) ? snap.snd_wscale : 0;
  st.snd_wnd = uint32_t(answer.window) << shift;
  st.snd_wl1 = answer.seq;
  st.max_window = std::max(snap.max_window, st.snd_wnd);
  st.rcv_wup = end;
  if (ts) {
    // Above every TSval the client accepted from the primary (it echoes the latest),
    // so PAWS takes the new socket's segments; a forward step of any size is fine.
    // Bit 0 keeps the snapshot's meaning (microsecond timestamps on newer kernels).
    st.timestamp = ((answer.tsecr + kTimestampStep) & ~1u) | (snap.timestamp & 1u);
  }
  st.exported_ns = now_ns;
  p.requests = h.stream();
  p.skip = uint32_t(answer.ack - h.response_seq());
  return p;
}

bool is_answer(const Held& h, const Segment& s) {
  const handoff::TcpState& st = h.snapshot();
  // Copies and answers are IPv4 only (parse_frame): an IPv6 connection never matches.
  return !st.is_v6() && s.client_addr == st.peer_addr[0] && s.client_port == st.peer_port &&
         s.vip_addr == st.local_addr[0] && s.vip_port == st.local_port && s.payload.empty() &&
         !s.syn && !s.fin && (s.has_ack || s.rst);
}

std::string build_probe(const Held& h) {
  constexpr size_t kIp = 20, kTcp = 20, kLen = kIp + kTcp + 1;
  const handoff::TcpState& st = h.snapshot();
  std::string out(kLen, '\0');
  uint8_t* ip = reinterpret_cast<uint8_t*>(out.data());
  ip[0] = 0x45;
  store16(ip + 2, uint16_t(kLen));
  store16(ip + 4, uint16_t(h.id()));
  store16(ip + 6, 0x4000);  // DF
  ip[8] = 64;
  ip[9] = 6;
  std::memcpy(ip + 12, &st.local_addr[0], 4);
  std::memcpy(ip + 16, &st.peer_addr[0], 4);
  store16(ip + 10, fold(sum16(ip, kIp)));

  uint8_t* tcp = ip + kIp;
  std::memcpy(tcp, &st.local_port, 2);
  std::memcpy(tcp + 2, &st.peer_port, 2);
  store32(tcp + 4, h.response_seq() - 1);
  store32(tcp + 8, h.stream_end() + (h.fin() ? 1 : 0));
  tcp[12] = uint8_t((kTcp / 4) << 4);
  tcp[13] = kTcpAck;
  // The window the snapshot's socket offered, in the units the client expects.
  const uint8_t shift = (st.options & handoff::kOptWscale) ? st.rcv_wscale : 0;
  uint32_t wnd = st.rcv_wnd ? (st.rcv_wnd >> shift) : 65535;
  store16(tcp + 14, uint16_t(std::clamp<uint32_t>(wnd, 1, 65535)));
  tcp[kTcp] = 0;  // the payload: an old byte; the client's kernel does not compare it

  // Pseudo-header: addresses, protocol, TCP length.
  uint32_t acc = sum16(ip + 12, 8);
  acc += 6 + uint32_t(kTcp + 1);
  store16(tcp + 16, fold(sum16(tcp, kTcp + 1, acc)));
  return out;
}

// ---- Store ----

Store::Tuple Store::tuple_of(const handoff::TcpState& st) {
  // IPv4 only: the BE keeps no backup of an IPv6 connection (Agent::on_backup).
  return Tuple{st.peer_addr[0], st.local_addr[0], st.peer_port, st.local_port};
}
Store::Tuple Store::tuple_of(const Segment& s) {
  return Tuple{s.client_addr, s.vip_addr, s.client_port, s.vip_port};
}

bool Store::add(Held h, const ResponseSize& rs) {
  forget(h.id());
  const Tuple t = tuple_of(h.snapshot());
  // Copies that came before the BACKUP message, in arrival order.
  if (auto at = parked_at_.find(t); at != parked_at_.end()) {
    std::vector<uint64_t> chain;  // newest first
    for (uint64_t pos = at->second; pos != kNoPosition && pos >= parked_first_;
         pos = parked_[size_t(pos - parked_first_)].prev)
      chain.push_back(pos);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      Parked& p = parked_[size_t(*it - parked_first_)];
      Segment seg = p.seg;
      seg.payload = p.data;
      h.add(seg, rs);
      parked_bytes_ -= p.data.size() + sizeof(Parked);
      p.taken = true;
      std::string().swap(p.data);
      --parked_live_;
    }
    parked_at_.erase(at);
  }
  const size_t m = h.memory();
  if (held_bytes_ + m > max_bytes_) {
    ++counters_.refused;
    return false;
  }
  // Another connection held under the same 4-tuple is an older one: the client
  // reused it, so that one is over.
  if (auto old = by_tuple_.find(t); old != by_tuple_.end()) forget(old->second);
  held_bytes_ += m;
  by_tuple_[t] = h.id();
  held_.emplace(h.id(), std::move(h));
  return true;
}

void Store::forget(uint64_t id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  held_bytes_ -= it->second.memory();
  auto t = by_tuple_.find(tuple_of(it->second.snapshot()));
  if (t != by_tuple_.end() && t->second == id) by_tuple_.erase(t);
  held_.erase(it);
}

// Pops the oldest parked entry: one taken already goes quietly, one still waiting is
// dropped (counted). It is the oldest of its 4-tuple's chain, which ends above it from
// now on; if it was the only one, the 4-tuple has none left.
void Store::pop_parked_front() {
  Parked& p = parked_.front();
  if (!p.taken) {
    parked_bytes_ -= p.data.size() + sizeof(Parked);
    --parked_live_;
    ++counters_.parked_dropped;
    if (auto at = parked_at_.find(p.tuple); at != parked_at_.end() && at->second == parked_first_)
      parked_at_.erase(at);
  }
  parked_.pop_front();
  ++parked_first_;
}

void Store::on_copy(const Segment& s, const ResponseSize& rs, uint64_t now_ns) {
  ++counters_.copies;
  const Tuple t = tuple_of(s);
  if (auto id = by_tuple_.find(t); id != by_tuple_.end()) {
    Held& h = held_.at(id->second);
    held_bytes_ -= h.memory();
    h.add(s, rs);
    held_bytes_ += h.memory();
    return;
  }
  if (s.payload.size() + sizeof(Parked) > kMaxParkedBytes) {
    ++counters_.parked_dropped;
    return;
  }
  ++counters_.parked;
  const uint64_t pos = parked_first_ + parked_.size();
  auto [at, fresh] = parked_at_.try_emplace(t, pos);
  Parked p{now_ns, t, s, std::string(s.payload), fresh ? kNoPosition : at->second};
  if (!fresh) at->second = pos;
  p.seg.payload = {};
  parked_bytes_ += p.data.size() + sizeof(Parked);
  parked_.push_back(std::move(p));
  ++parked_live_;
  while (parked_live_ > kMaxParked || parked_bytes_ > kMaxParkedBytes) pop_parked_front();
  // Taken entries wait for the front; should a copy that is never claimed hold the
  // front while many come and go behind it, the oldest go early rather than the
  // deque growing without bound.
  while (!parked_.empty() && (parked_.front().taken || parked_.size() > 2 * kMaxParked))
    pop_parked_front();
}

std::vector<Held> Store::take(const std::string& primary) {
  std::vector<Held> out;
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->second.primary() != primary) {
      ++it;
      continue;
    }
    held_bytes_ -= it->second.memory();
    auto t = by_tuple_.find(tuple_of(it->second.snapshot()));
    if (t != by_tuple_.end() && t->second == it->first) by_tuple_.erase(t);
    out.push_back(std::move(it->second));
    it = held_.erase(it);
  }
  return out;
}

void Store::expire(uint64_t now_ns) {
  while (!parked_.empty() && (parked_.front().taken || now_ns - parked_.front().at_ns > kParkNs))
    pop_parked_front();
  for (auto it = held_.begin(); it != held_.end();) {
    if (!it->second.reset()) {
      ++it;
      continue;
    }
    const uint64_t id = it->first;
    ++it;
    forget(id);
  }
}

const Held* Store::find(uint64_t id) const {
  auto it = held_.find(id);
  return it == held_.end() ? nullptr : &it->second;
}

}  // namespace tcpha::failover
