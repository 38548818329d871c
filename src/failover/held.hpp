#pragma once
// The backup side of BE failover (issue 13, /work/failover_spec.md): per connection
// handed off to another BE (the primary), the client's byte stream since the FE's
// snapshot, kept from the copies the FE's datapath sends, and what a takeover needs
// to resume it after the primary died: a probe that makes the client's kernel tell
// where it is, and the TcpState to import from its answer.
//
// Pure logic: no sockets here (sockets.hpp has them), so every rule is unit-tested.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "handoff/tcp_state.hpp"
#include "tcpha_shared.h"

namespace tcpha::failover {

// A client segment from a copy frame or a probe answer. Addresses and ports in
// network order (as in TcpState), everything else in host order.
struct Segment {
  uint32_t client_addr = 0, vip_addr = 0;  // for an answer: saddr = client, daddr = VIP
  uint16_t client_port = 0, vip_port = 0;
  uint32_t seq = 0, ack = 0;
  uint16_t window = 0;  // the raw field, unscaled
  bool syn = false, fin = false, rst = false, has_ack = false;
  bool has_ts = false;
  uint32_t tsval = 0, tsecr = 0;
  std::string_view payload;  // points into the frame
};

// An Ethernet frame holding IPv4 + TCP (the ethertype is not looked at: a copy is the
// frame as it reached the FE). nullopt when it is not IPv4/TCP, is truncated, has
// inconsistent lengths or is an IP fragment. IP options are skipped. Checksums are
// not verified: on veth and loopback a received frame may carry only the partial
// (pseudo-header) sum, and the copies are the bytes the FE forwarded anyway.
std::optional<Segment> parse_frame(const uint8_t* p, size_t n);

// Sequence arithmetic mod 2^32 (RFC 793).
inline bool seq_before(uint32_t a, uint32_t b) { return int32_t(a - b) < 0; }
inline bool seq_after(uint32_t a, uint32_t b) { return int32_t(a - b) > 0; }

// For the stream starting at a request boundary: {bytes of the first complete
// request, bytes of the response the server sends for it}; nullopt when no complete
// request is at the front or its response size cannot be known.
using ResponseSize = std::function<std::optional<std::pair<size_t, uint64_t>>(std::string_view)>;

// Bounds of one held connection. Past them it cannot be recovered (bytes the primary
// has were not kept) and its buffers are freed.
inline constexpr size_t kMaxStream = 256 * 1024;     // in-order bytes not yet trimmed
inline constexpr size_t kMaxOutOfOrder = 64 * 1024;  // bytes held after a hole

// One backed-up connection.
class Held {
 public:
  // snapshot.rcv_seq = client seq of request[0]; snapshot.snd_seq = server seq of the
  // first response byte. `request` may be empty (nothing read yet at the snapshot).
  Held(uint64_t id, std::string primary, const handoff::TcpState& snapshot, std::string request);

  // A copy of a client segment of this connection. Its payload extends the stream
  // when in order; out-of-order pieces wait (bounded); duplicates and overlaps are
  // cut. A FIN counts once the stream reaches it, an RST when its seq is in the
  // receive window. Then, when the segment carries an ACK, every request at the
  // front whose whole response the client acknowledged is dropped.
  void add(const Segment& s, const ResponseSize& rs);

  uint64_t id() const { return id_; }
  const std::string& primary() const { return primary_; }
  const handoff::TcpState& snapshot() const { return snapshot_; }
  bool reset() const { return reset_; }
  bool fin() const { return fin_; }
  bool overflowed() const { return overflowed_; }
  // Client seq of stream()[0]; the stream is every client byte from there on that
  // the backup has in order (requests answered and acknowledged are trimmed).
  uint32_t stream_seq() const { return stream_seq_; }
  const std::string& stream() const { return stream_; }
  // Client seq just after the stream (not counting a FIN).
  uint32_t stream_end() const { return stream_seq_ + uint32_t(stream_.size()); }
  // Server seq of the first byte of the response to stream()'s first request.
  uint32_t response_seq() const { return response_seq_; }
  // Bytes held: the object and the heap it owns.
  size_t memory() const;

 private:
  void append(std::string_view data);
  void take_out_of_order();
  void trim(uint32_t ack, const ResponseSize& rs);
  void overflow();

  struct Piece {
    uint32_t seq;
    std::string data;
  };

  uint64_t id_;
  handoff::TcpState snapshot_;
  std::string primary_;
  std::string stream_;
  std::vector<Piece> out_of_order_;
  uint32_t stream_seq_;
  uint32_t response_seq_;
  uint32_t fin_seq_ = 0;  // valid when fin_seen_
  uint32_t out_of_order_bytes_ = 0;
  bool fin_seen_ = false;  // a FIN arrived (maybe ahead of a hole)
  bool fin_ = false;       // ... and the stream reached it
  bool reset_ = false;
  bool overflowed_ = false;
  // The size of the front request's response, once known: a copy's ACK usually shows
  // the previous response complete and the front one not yet, so without this every
  // copy would size the front request again (a file lookup each time).
  // 0: not known yet.
  uint32_t front_request_ = 0, front_response_ = 0;
};

struct Plan {
  // To import with handoff::import_state_consumed(state, requests.size()):
  // snd_seq = the client's ack; rcv_seq + requests.size() = the client's snd_nxt
  // (with a FIN: kStatePeerFin, and rcv_seq is one past stream_seq, as export_state
  // makes it for a CLOSE_WAIT socket); the window from the answer; a timestamp above
  // every TSval the client accepted.
  handoff::TcpState state;
  std::string requests;  // the held stream: served again from memory
  uint64_t skip = 0;     // response bytes the client already has: answer.ack - response_seq
};

// Errors: ECONNRESET the client answered RST; ENODATA the client sent bytes the
// backup never saw (its seq is beyond the stream end) or the stream overflowed;
// EPROTO anything inconsistent (an ack before response_seq, a seq before the stream
// end, no ACK, no timestamp when they were negotiated).
Result<Plan> plan_takeover(const Held& h, const Segment& answer, uint64_t now_ns);

// Whether `s`, seen on the answer socket, can be the client's answer to h's probe:
// its 4-tuple, no payload, no SYN or FIN. The client's other segments caught there
// (data or a FIN sent after the primary died, which no copy carries) belong in
// h.add() instead; a keepalive also looks like an answer (seq = snd_nxt - 1), and
// plan_takeover() rejects it with EPROTO: wait for the next one.
bool is_answer(const Held& h, const Segment& s);

// Milliseconds (or microseconds with usec timestamps) the imported socket's TSval is
// put above the client's TSecr.
inline constexpr uint32_t kTimestampStep = 60000;

// The probe: a complete IPv4 packet (IP + TCP headers, 1 byte of payload, no options,
// checksums computed) from VIP:port to the client. seq = response_seq() - 1, a byte
// the client has already received, so its kernel answers with a duplicate ACK
// carrying its rcv_nxt (a data segment's duplicate ACK is never rate-limited, unlike
// the answer to an out-of-window pure ACK); ack = end of the stream (with the FIN).
std::string build_probe(const Held& h);

// Every held connection of this BE, by id and by client 4-tuple.
class Store {
 public:
  struct Counters {
    uint64_t copies = 0;          // copies received (on_copy calls)
    uint64_t parked = 0;          // copies for an unknown 4-tuple, kept a while
    uint64_t parked_dropped = 0;  // ... dropped: expired or over the bound
    uint64_t refused = 0;         // connections not held: over max_bytes
  };
  // How long and how many copies for an unknown 4-tuple wait for their BACKUP.
  static constexpr uint64_t kParkNs = 2'000'000'000;
  static constexpr size_t kMaxParked = 4096;
  static constexpr size_t kMaxParkedBytes = 1 << 20;

  explicit Store(size_t max_bytes) : max_bytes_(max_bytes) {}
  // false (not stored, counted) when it would take memory() over the bound. Copies
  // parked for its 4-tuple are applied to it first. A Held with an id already
  // stored replaces it.
  bool add(Held h, const ResponseSize& rs);
  void forget(uint64_t id);
  // To its Held; copies for an unknown 4-tuple are parked (a copy can arrive before
  // the BACKUP message: they travel different paths).
  void on_copy(const Segment& s, const ResponseSize& rs, uint64_t now_ns);
  // Removes and returns the primary's connections.
  std::vector<Held> take(const std::string& primary);
  // Drops parked copies older than kParkNs and held connections that were reset.
  void expire(uint64_t now_ns);
  const Held* find(uint64_t id) const;

  size_t size() const { return held_.size(); }
  // Held connections plus parked copies.
  size_t memory() const { return held_bytes_ + parked_bytes_; }
  size_t parked() const { return parked_live_; }
  const Counters& counters() const { return counters_; }

 private:
  struct Tuple {
    uint32_t client_addr, vip_addr;
    uint16_t client_port, vip_port;
    bool operator==(const Tuple&) const = default;
  };
  // Mixed so that every bit counts: the 4-tuples differ in a few bits of a port, and the
  // previous hash (a multiply, no shift) filled 1559 of 5087 buckets with 4096 parked
  // copies from one client, chains whose cache misses cost ~1% of the bed's CPU.
  struct TupleHash {
    size_t operator()(const Tuple& t) const {
      uint64_t x = ((uint64_t(t.client_addr) << 32) | t.vip_addr) ^
                   (((uint64_t(t.client_port) << 16) | t.vip_port) * 0x9E3779B97F4A7C15ULL);
      x ^= x >> 31;
      x *= 0xBF58476D1CE4E5B9ULL;
      return x ^ (x >> 29);
    }
  };
  struct Parked {
    uint64_t at_ns;
    Tuple tuple;
    Segment seg;       // its payload is empty: the bytes are in `data` (a view into a
    std::string data;  // moved string would dangle)
    uint64_t prev;     // position of the 4-tuple's previous parked copy, or kNoPosition
    bool taken = false;  // merged into its Held; left for the front to pop
  };
  static constexpr uint64_t kNoPosition = ~uint64_t{0};
  static Tuple tuple_of(const handoff::TcpState& st);
  static Tuple tuple_of(const Segment& s);
  void pop_parked_front();

  size_t max_bytes_;
  size_t held_bytes_ = 0;
  size_t parked_bytes_ = 0;
  std::unordered_map<uint64_t, Held> held_;
  std::unordered_map<Tuple, uint64_t, TupleHash> by_tuple_;
  // Parked copies in arrival order (expiry and the bound take the oldest), and by
  // 4-tuple: the position of its newest copy, whose `prev` leads to the older ones
  // (positions: parked_first_ is the position of parked_.front(); one below it is
  // gone). Most copies parked are never claimed: a short connection's last FIN copy
  // comes when no BACKUP will (the FE sends none for a connection over before it is
  // due) or after its FORGET. add() must not walk them all for every BACKUP (it did:
  // 3% of the bed's tcpha CPU on close-1k), and parking one costs one map entry.
  std::deque<Parked> parked_;
  std::unordered_map<Tuple, uint64_t, TupleHash> parked_at_;
  uint64_t parked_first_ = 0;
  size_t parked_live_ = 0;  // not taken
  Counters counters_;
};

}  // namespace tcpha::failover
