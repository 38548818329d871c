#pragma once
// The FE<->BE control protocol: persistent TCP connections (the FE connects, the BE
// listens) carrying framed, authenticated binary messages. The codec works on byte
// buffers only, never on sockets, so that nonblocking epoll loops own all I/O.
//
// Session setup: a mutual challenge-response in two messages each way.
// 1. Each side first sends one HELLO (kHelloSize = 88 bytes):
//   "TCPH" | version u8 = kVersion (7) | type u8 = HELLO | role u8 (1 = FE, 2 = BE) | pad u8 = 0 |
//   node id (32 bytes, NUL padded) | nonce (16 random bytes, its challenge) |
//   HMAC-SHA256 over all preceding bytes, keyed with the 32-byte cluster key.
// The receiver checks magic, version, MAC, that the role is the opposite of its own and
// that the nonce is not its own (a reflected HELLO). Both sides then derive one key per
// direction from both challenges:
//   k_fe2be = BLAKE2b-256(key = cluster key, "tcpha-ctl-v2 fe2be" || nonce_fe || nonce_be)
//   k_be2fe = the same with "tcpha-ctl-v2 be2fe".
// 2. Each side's first frame (below) is AUTH, sequence 1, whose payload is the
// transcript hash BLAKE2b-256(FE's HELLO || BE's HELLO), both exactly as on the wire.
// Its MAC, under the direction key, answers the peer's challenge: only a holder of the
// cluster key who saw this session's nonces can make it. A session is established
// only when the peer's AUTH verified; nothing else is accepted before it. So a captured
// HELLO replays forever in vain (the replayer cannot answer the new challenge), and a
// recorded session replayed to a node fails at its AUTH.
// Before the peer's AUTH, only the handshake's sizes are accepted: a HELLO is judged by
// its first bytes and the next frame header must announce an AUTH of exactly
// kAuthSize bytes, so an unauthenticated peer cannot make a node buffer more.
//
// Every later frame (kHeaderSize = 20, kMacSize = 16), integers big-endian:
//   "TCPH" | version u8 | type u8 | flags u16 (none defined: must be 0) |
//   length u32 (payload bytes, at most kMaxPayload) | seq u64 | payload |
//   Poly1305 tag of (header || payload) with a one-time key from the sending
//   direction's key and the frame's seq: ChaCha20-Poly1305 (RFC 8439, libsodium's
//   _ietf) over no plaintext, header and payload as its additional data, nonce
//   4 zero bytes || seq. About 2.5x faster than the keyed BLAKE2b-256 it replaced
//   (version 8) and 10x HMAC-SHA256 here: failover's copies put every request's bytes
//   through it twice, and each handoff signs and checks three frames. A seq is used
//   once per session and direction, and the directions' keys are the session's own.
// seq starts at 1 (the AUTH) in each direction and must be exactly the previous one
// plus 1, which rejects replayed, reordered and dropped frames. A frame from our own
// direction fed back to us (reflection) fails the MAC, since the directions use
// different keys.
//
// Any invalid frame (magic, version, length, MAC, sequence, type, payload layout) is an
// error: nothing in it is acted upon, the session is dead and the caller closes the
// connection and counts it. Magic, version, type and length are checked as soon as their
// bytes arrive, so a length over the type's largest payload (max_payload) fails without
// waiting for the payload.
//
// Payloads (big-endian, every field encoded explicitly; exact length, no trailing bytes):
//   AUTH      32-byte transcript hash (handshake only; never delivered as a message)
//   HANDOFF   u64 id | TcpState (below) | u32 request length | request bytes |
//             i32 rule (the cluster file's rule the connection was last routed by,
//             -1: none; drain and rebalance keep it in its group) | u32 seq (the
//             connection's move number at the receiver: 0 from the FE, +1 per move) |
//             u64 lease_base_ns | u32 lease_ms: the lease the receiver may serve the
//             connection under before COMMIT (docs/design.md, "Handoff"): lease_base_ns
//             is the sent_ns of the last HEARTBEAT the sender heard from the receiver,
//             a time on the RECEIVER's clock that precedes the HANDOFF; lease_ms is
//             how long after it the sender may take the connection back |
//             u64 origin_ns: the sender's clock when the request that made it move was
//             complete (0: none, an idle move); for the target's takeover latency
//   READY     u64 id | u32 status (0 = imported and serving under the lease, else an
//             errno-like reason the receiver refused: it holds nothing)
//   COMMIT    u64 id (the sender has let go: the lease becomes ownership)
//   ABORT     u64 id (the lease expired and the sender took the connection back)
//   CLOSED    u64 id | u64 bytes_sent | u64 bytes_received (seen by the BE) | u32 seq (the
//             move number of the ownership that ended; 0: unknown)
//   HEARTBEAT u64 sent_ns | u32 active | u32 cpu_permille | u32 cache_hit_permille |
//             u32 flags (kHeartbeatDraining: the sender is being drained; take no
//             connections there)
//   JOIN      u8 id length | id | address (4 raw bytes) | u32 weight | u8 group count |
//             per group: u8 length | name
//   LEAVE     (empty)
//   WORKER    u32 index       FE worker -> BE, once per link: which worker this link is
//                             (a connection's id carries its worker in bits 48..63, so a
//                             BE that received it from another BE reports CLOSED to
//                             the right worker)
//   REPOINT   u64 id | u32 seq | u8 length | target BE id | TcpState | u32 length |
//                             request bytes   BE -> FE: the connection moved to that BE
//                             (committed there, its move number seq); point the flow at
//                             it. The state and bytes are the move's HANDOFF's: the FE backs
//                             the connection up from them at its new owner (failover). REPOINTs of one connection come
//                             from different BEs on different links and may arrive out
//                             of order: the FE applies only a seq above the last one.
//   REPOINTED u64 id | u32 status (0 = done) | u32 seq   FE -> BE: the answer to REPOINT
//   DRAIN     u8 on            FE -> BE: the operator drained (1) or undrained (0) it;
//                             a drained BE moves its keep-alive connections away
//   LARD      u16 count (<= kLardMaxEntries) | per entry: u32 rule | u64 target (hash
//             of the path) | u8 n (1..kLardMaxServers) | n x u64 member (Member::seed)
//                             any node -> the others: LARD assignments it made
//                             (sched::Router::LardShare), so that every node that
//                             routes keeps the same table
//   BACKUP    u64 id | u8 length | primary BE id | TcpState | u32 length | request bytes
//                             FE -> the backup of a connection it committed to the
//                             primary (failover, docs/failover.md): the state it
//                             exported and the request, to take over if the primary dies
//   FORGET    u16 count (<= kForgetMax) | count x u64 id   FE -> backup: those connections
//                             closed or moved; drop their backups
//   TAKEOVER  u8 length | dead BE id   FE -> BE: that back-end died; take over the
//                             connections you back up for it
//   TAKEN     u64 id | u32 status   BE -> FE: the outcome of one takeover (0: the sender
//                             imported the connection and serves it; else why it is lost,
//                             errno-like)
//   OWNED     u16 count (<= kOwnedMax) | per entry: u64 id | u32 seq | u8 family |
//             16 bytes client address | u16 client port | 16 bytes local address |
//             u16 local port (addresses and ports raw, network order; IPv4 in the first
//             4 bytes)   BE -> FE worker, after its WORKER: the connections with that
//                             worker's ids this BE owns (committed here). An FE that
//                             restarted or took over (docs/fe-restart.md) learns them
//                             again; one that knows them ignores the list.
//   FESTATE   u32 priority | u8 active | u64 epoch   FE <-> FE (hot standby): the
//             sender's role, every advert interval
//   COPIES    u32 count | count x (u32 length (1..kCopyFrameMax) | frame)   FE -> backup: copies
//             of client packets of connections it backs up, as the FE's datapath took
//             them (Ethernet frames; docs/failover.md, "Copies"), in the order taken
//   FLOWS     u64 sent_unix_ns | u8 full | u16 count (<= kFlowsMax) | per entry: 40
//             bytes key | u8 gone | u8 state | u8 flags | u16 backup | u32 backend |
//             6 bytes dmac   active FE -> standby: flow table changes (full: the first
//             batch of a whole copy, the receiver drops what it had)
// TcpState travels field by field in declaration order (kTcpStateWireSize = 87 bytes):
// addresses (16 bytes each, IPv4 in the first 4 and the rest zero) and ports, already
// in network order in the struct, as their raw bytes; then u8 family (AF_INET = 2 or
// AF_INET6 = 10; anything else, or an IPv4 state with bytes past its first 4, is
// invalid); every other field big-endian, snd_cwnd (u16) last; the struct's padding never
// travels.
#include <sodium.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.hpp"
#include "handoff/tcp_state.hpp"

namespace tcpha::proto {

inline constexpr char kMagic[4] = {'T', 'C', 'P', 'H'};
// 5: OWNED (an FE that restarted learns its connections); 6: TcpState carries IPv6
// (16-byte addresses and the family); 7: TcpState carries the congestion window;
// 8: COPIES (copies for backups travel on the control link, not as Ethernet frames);
// 9: frames authenticated by ChaCha20-Poly1305 (16-byte tags), not keyed BLAKE2b
inline constexpr uint8_t kVersion = 9;
inline constexpr size_t kHeaderSize = 20;
inline constexpr size_t kMacSize = 16;       // a frame's tag
inline constexpr size_t kHelloMacSize = 32;  // a HELLO's HMAC-SHA256
inline constexpr size_t kNodeIdSize = 32;
inline constexpr size_t kNonceSize = 16;
inline constexpr size_t kHelloSize = 8 + kNodeIdSize + kNonceSize + kHelloMacSize;
inline constexpr size_t kAuthSize = 32;
inline constexpr size_t kMaxPayload = size_t{1} << 20;
inline constexpr size_t kTcpStateWireSize = 87;

enum class MsgType : uint8_t {
  Hello = 1,
  Handoff = 2,
  Ready = 3,
  Commit = 4,
  Abort = 5,
  Closed = 6,
  Heartbeat = 7,
  Join = 8,   // BE -> FE registration link: add me (dynamic membership, seed 000 4.10)
  Leave = 9,  // BE -> FE registration link: I am going; no new handoffs, let mine finish
  Auth = 10,  // handshake: the answer to the peer's challenge (session.cpp)
  Worker = 11,     // FE -> BE: the FE worker behind this link
  Repoint = 12,    // BE -> FE: a connection moved to another BE (multi-handoff)
  Repointed = 13,  // FE -> BE: the flow now points at the new owner
  Drain = 14,      // FE -> BE: drained or undrained by the operator
  Lard = 15,       // any -> any: LARD assignments made by the sender
  Backup = 16,     // FE -> BE: back this connection up (failover)
  Forget = 17,     // FE -> BE: drop these backups
  Takeover = 18,   // FE -> BE: this back-end died; take its connections over
  Taken = 19,      // BE -> FE: one connection taken over, or lost
  Owned = 20,      // BE -> FE worker: the connections of that worker this BE owns
  FeState = 21,    // FE <-> FE: role advert (hot standby)
  Flows = 22,      // active FE -> standby: flow table changes
  Copies = 23,     // FE -> BE: copies of client packets for the connections it backs up
};
enum class Role : uint8_t { Fe = 1, Be = 2 };

struct HandoffMsg {
  uint64_t id = 0;
  handoff::TcpState state;
  std::string request;  // the bytes the FE read from the client, to re-queue on the BE
  int32_t rule = -1;
  uint32_t seq = 0;
  uint64_t lease_base_ns = 0;  // the receiver's clock (a HEARTBEAT's sent_ns); 0: none
  uint32_t lease_ms = 0;
  uint64_t origin_ns = 0;  // the sender's clock: the request complete (0: none)
};
struct ReadyMsg {
  uint64_t id = 0;
  uint32_t status = 0;  // 0 = ok, else why the BE refused (errno-like)
};
struct CommitMsg {
  uint64_t id = 0;
};
struct AbortMsg {
  uint64_t id = 0;
};
struct ClosedMsg {
  uint64_t id = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
  // The sender's move number for the connection (HandoffMsg::seq of the move that
  // brought it there; 0: unknown). A CARD entry applies a CLOSED only to the ownership
  // it ends, not to a later one (docs/card.md).
  uint32_t seq = 0;
};
inline constexpr uint32_t kHeartbeatDraining = 1;
struct HeartbeatMsg {
  uint64_t sent_ns = 0;
  uint32_t active = 0, cpu_permille = 0, cache_hit_permille = 0;
  uint32_t flags = 0;  // kHeartbeat*
};
struct JoinMsg {
  std::string id;
  uint32_t address = 0;  // network order, like sockaddr_in
  uint32_t weight = 1;
  std::vector<std::string> groups;
};
struct LeaveMsg {};
struct WorkerMsg {
  uint32_t index = 0;
};
struct RepointMsg {
  uint64_t id = 0;
  std::string target;  // the id of the BE that owns the connection now
  uint32_t seq = 0;    // the connection's move number there
  handoff::TcpState state;  // what the move's HANDOFF carried, for a backup there
  std::string request;
};
struct RepointedMsg {
  uint64_t id = 0;
  uint32_t status = 0;  // 0 = the flow points at the new owner; ESTALE: a later move
                        // was applied already; else errno-like
  uint32_t seq = 0;     // the REPOINT's
};
struct DrainMsg {
  bool on = false;
};
inline constexpr size_t kLardMaxEntries = 256, kLardMaxServers = 16;
struct LardMsg {
  struct Entry {
    uint32_t rule = 0;
    uint64_t target = 0;
    std::vector<uint64_t> members;  // 1..kLardMaxServers
  };
  std::vector<Entry> entries;  // at most kLardMaxEntries
};
struct BackupMsg {
  uint64_t id = 0;
  std::string primary;  // the id of the BE that owns the connection
  handoff::TcpState state;
  std::string request;
};
inline constexpr size_t kForgetMax = 4096;
struct ForgetMsg {
  std::vector<uint64_t> ids;  // at most kForgetMax
};
struct TakeoverMsg {
  std::string dead;  // the BE that died
};
// A failed-over BE's window: for this long after its failover the FE keeps its
// datapath slot FAILED (its flows go to their backups) and gives it no new
// connection, while the backups take over; the back-ends told by its TAKEOVER move
// no connection to it for as long (docs/failover.md).
inline constexpr uint32_t kFailoverWindowMs = 3000;
struct TakenMsg {
  uint64_t id = 0;
  uint32_t status = 0;  // 0 = recovered and served by the sender; else errno-like
};
inline constexpr size_t kOwnedMax = 1024;
inline constexpr size_t kOwnedEntrySize = 8 + 4 + 1 + 16 + 2 + 16 + 2;
struct OwnedMsg {
  struct Conn {
    uint64_t id = 0;
    uint32_t seq = 0;  // its move number at the sender (HandoffMsg::seq)
    uint8_t family = 0;  // AF_INET or AF_INET6
    std::array<uint8_t, 16> client{}, local{};  // network order; IPv4: first 4 bytes
    uint16_t client_port = 0, local_port = 0;  // network order
  };
  std::vector<Conn> conns;  // at most kOwnedMax: senders split larger lists
};
// Hot standby (docs/fe-restart.md): every front-end tells the others its role every
// advert interval; the active one streams the changes of its flow table.
struct FeStateMsg {
  uint32_t priority = 0;  // index in Config::fe_members
  bool active = false;
  uint64_t epoch = 0;     // when it became active (unix ms; 0: standby)
};
inline constexpr size_t kFlowsMax = 1024;
inline constexpr size_t kFlowEntrySize = 40 + 1 + 1 + 1 + 2 + 4 + 6;
struct FlowsMsg {
  struct Entry {
    std::array<uint8_t, 40> key{};  // struct tcpha_flow_key, raw
    bool gone = false;              // removed (the rest is zero)
    uint8_t state = 0, flags = 0;
    uint16_t backup = 0;
    uint32_t backend = 0;
    std::array<uint8_t, 6> dmac{};
  };
  uint64_t sent_unix_ns = 0;  // the sender's wall clock (transit time, same-host beds)
  bool full = false;          // the first batch of a full copy: forget what you have
  std::vector<Entry> entries;  // at most kFlowsMax
};
// Copies of client packets (failover): the frames, each after its u32 length, exactly as
// on the wire, so that the FE appends a copy to a batch with one memcpy and the backup
// reads them in place.
inline constexpr size_t kCopyFrameMax = 65535;
struct CopiesMsg {
  uint32_t count = 0;  // frames in packed
  std::string packed;  // count x (u32 big-endian length | frame); 4 + its size <= kMaxPayload
  // Appends one frame (1..kCopyFrameMax bytes); false when it would not fit kMaxPayload.
  bool add(const void* frame, size_t n);
  // Calls f(const uint8_t*, size_t) for every frame, in order.
  template <typename F>
  void for_each(F&& f) const {
    const auto* p = reinterpret_cast<const uint8_t*>(packed.data());
    const uint8_t* end = p + packed.size();
    while (end - p >= 4) {
      const size_t n = size_t(p[0]) << 24 | size_t(p[1]) << 16 | size_t(p[2]) << 8 | p[3];
      if (size_t(end - p - 4) < n) return;  // decode_payload() let no such message through
      f(p + 4, n);
      p += 4 + n;
    }
  }
};
using Message = std::variant<HandoffMsg, ReadyMsg, CommitMsg, AbortMsg, ClosedMsg, HeartbeatMsg,
                             JoinMsg, LeaveMsg, WorkerMsg, RepointMsg, RepointedMsg, DrainMsg,
                             LardMsg, BackupMsg, ForgetMsg, TakeoverMsg, TakenMsg, OwnedMsg,
                             FeStateMsg, FlowsMsg, CopiesMsg>;

// The FE worker that owns a connection id (ids are (worker << 48) | counter).
constexpr uint32_t worker_of(uint64_t id) { return uint32_t(id >> 48); }

MsgType type_of(const Message& m);

// Appends m's payload encoding to `out`. Returns false (out unchanged) only when the
// payload would exceed kMaxPayload (a HANDOFF request that large).
bool encode_payload(const Message& m, std::string& out);

// The largest payload a frame of type `t` may carry; nullopt for HELLO and unknown
// types. Checked against a frame's header, so that a claim of more fails before the
// payload is buffered.
std::optional<size_t> max_payload(MsgType t);

// Decodes a payload of type `t` (not Hello); EBADMSG on an unknown type, a truncated
// field or trailing bytes.
Result<Message> decode_payload(MsgType t, const uint8_t* p, size_t n);

// One per control connection, per side. Move-only: a copy would repeat sequence numbers.
class Session {
 public:
  // node_id identifies this node to the peer; longer than kNodeIdSize is truncated
  // (the configuration limits ids, so this does not happen in practice).
  Session(const std::array<uint8_t, 32>& cluster_key, Role self, std::string_view node_id);
  ~Session();
  Session(Session&&) = default;
  Session& operator=(Session&&) = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Appends our HELLO to `out` (and our AUTH, when the peer's HELLO came first). Call
  // once, before anything else is sent.
  void start(std::string& out);

  // Consumes every complete frame at the front of `in` (erasing it), appending the
  // decoded messages to `msgs` and what the handshake must answer (our AUTH) to `out`;
  // a partial frame stays in `in` for the next call. On an invalid frame returns an
  // Error (err EBADMSG: malformed or not authentic; EPROTO: authentic bytes that break
  // the protocol, e.g. wrong role or sequence). Messages of valid frames before it are
  // still delivered. After an error the session is dead.
  Status feed(std::string& in, std::vector<Message>& msgs, std::string& out);

  // Our HELLO and AUTH were sent and the peer's verified: the peer proved that it
  // holds the cluster key in this very session. send() works from now on.
  bool established() const { return started_ && peer_auth_ && !dead_; }
  bool dead() const { return dead_; }
  const std::string& peer_id() const { return peer_id_; }
  uint64_t frames_received() const { return recv_seq_; }  // authentic frames so far

  // Appends one authenticated frame carrying m to `out`. Returns false (out unchanged)
  // before established(), after an error, or when m is too large for one frame.
  bool send(const Message& m, std::string& out);

 private:
  Status take_hello(const uint8_t* p, size_t n, size_t& used, std::string& out);
  Status take_frame(const uint8_t* p, size_t n, std::vector<Message>& msgs, size_t& used);
  void derive_keys(const uint8_t* peer_hello);
  void seal(std::string& out, size_t base, MsgType t);
  void send_auth(std::string& out);

  std::array<uint8_t, 32> cluster_key_;
  Role self_;
  std::array<uint8_t, kNodeIdSize> node_id_{};
  std::array<uint8_t, kNonceSize> nonce_{};
  std::array<uint8_t, kHelloSize> hello_{};      // ours, built once
  std::array<uint8_t, kAuthSize> transcript_{};  // hash of both HELLOs
  // Each direction's key (derive_keys); a frame's one-time key comes from it and the
  // frame's seq.
  std::array<uint8_t, crypto_aead_chacha20poly1305_ietf_KEYBYTES> send_key_{};
  std::array<uint8_t, crypto_aead_chacha20poly1305_ietf_KEYBYTES> recv_key_{};
  uint64_t send_seq_ = 0;  // last sequence number sent
  uint64_t recv_seq_ = 0;  // last sequence number received
  std::string peer_id_;
  bool started_ = false;
  bool peer_hello_ = false;
  bool peer_auth_ = false;
  bool dead_ = false;
};

}  // namespace tcpha::proto
