#pragma once
// Exporting an established TCP socket's state with TCP_REPAIR on one host and
// importing it into a new socket on another, so that the connection moves without
// the client noticing. The order of the steps matters; see
// ../shared/design/ARCHITECTURE.md, "TCP_REPAIR: what was learned the hard way".
#include <netinet/in.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "common/result.hpp"
#include "handoff/cwnd_carry.hpp"

namespace tcpha::handoff {

// Option bits, as in tcpi_options (linux/tcp.h TCPI_OPT_*).
inline constexpr uint8_t kOptTimestamps = 1;
inline constexpr uint8_t kOptSack = 2;
inline constexpr uint8_t kOptWscale = 4;

// TcpState::flags.
// The client's FIN arrived before the export (the socket was in CLOSE_WAIT): rcv_seq
// and the re-queued bytes are followed by that FIN, which the importer's kernel will
// never see again (the exporter acknowledged it). The importer answers what is queued
// and then closes; it must not wait for another request.
inline constexpr uint8_t kStatePeerFin = 1;

// Everything the importing side needs, in host byte order except the addresses and
// ports (network order, as in sockaddr_in). Fixed-size: it travels in HANDOFF. The
// addresses are laid out like tcpha_flow_key's: 16 bytes, IPv4 in word 0 and the
// rest zero, so that an IPv6 client on the IPv6 VIP moves like an IPv4 one.
struct TcpState {
  std::array<uint32_t, 4> local_addr{};  // the VIP
  std::array<uint32_t, 4> peer_addr{};   // the client
  uint16_t local_port = 0;
  uint16_t peer_port = 0;
  uint8_t family = AF_INET;  // AF_INET or AF_INET6 (both addresses)
  uint8_t pad = 0;
  // The exporter's congestion window in segments (TCP_INFO), which TCP_REPAIR does not
  // carry: an importer with a CwndCarry starts from it (0 from an older exporter).
  uint16_t snd_cwnd = 0;
  uint32_t snd_seq = 0;      // next sequence number to send (send queue is empty)
  uint32_t rcv_seq = 0;      // sequence number of the first byte to re-queue
  uint32_t mss = 0;          // client's MSS clamp
  uint32_t timestamp = 0;    // TCP_TIMESTAMP, opaque (bit 0 may be a flag)
  uint8_t options = 0;       // kOpt* negotiated with the client
  uint8_t snd_wscale = 0;
  uint8_t rcv_wscale = 0;
  uint8_t flags = 0;        // kState*
  // TCP_REPAIR_WINDOW
  uint32_t snd_wl1 = 0;
  uint32_t snd_wnd = 0;
  uint32_t max_window = 0;
  uint32_t rcv_wnd = 0;
  uint32_t rcv_wup = 0;
  uint64_t exported_ns = 0;  // CLOCK_MONOTONIC at export, to advance the timestamp

  Endpoint local() const { return endpoint(local_addr, local_port); }
  Endpoint peer() const { return endpoint(peer_addr, peer_port); }
  bool is_v6() const { return family == AF_INET6; }

 private:
  Endpoint endpoint(const std::array<uint32_t, 4>& a, uint16_t port) const {
    Endpoint e;
    e.family = family;
    e.addr = a;
    e.port = port;
    return e;
  }
};
static_assert(sizeof(TcpState) == 88, "TcpState travels on the wire; keep it packed");

// Puts `fd` (established, send queue empty) in repair mode and reads its state.
// `local` and `peer` are its addresses, which the caller knows from accept(); both of
// one family, AF_INET or AF_INET6.
// `already_read` holds the bytes the caller has read from it; unread bytes still in
// the receive queue are appended to it, so that it holds everything to re-queue.
// On success the socket stays in repair mode: closing it is then silent, and
// leave_repair() gives it back to the caller if the handoff is aborted.
Result<TcpState> export_state(int fd, const Endpoint& local, const Endpoint& peer,
                              std::string& already_read);

// The MSS option of a SYN as TCP_SAVED_SYN gives it (IPv4 or IPv6 header, then the TCP
// header with its options); nullopt when it has none or the headers are malformed.
std::optional<uint32_t> parse_syn_mss(const uint8_t* syn, size_t len);
// The MSS the client announced in its SYN, read once from an accepted socket whose
// listener had TCP_SAVE_SYN on (the kernel frees the copy as it is read); nullopt when
// there is none (no saved SYN: a SYN cookie, or the listener did not save it).
std::optional<uint32_t> saved_syn_mss(int fd);

// Turns repair mode off again on a socket export_state() was called on.
Status leave_repair(int fd);

// Creates a socket in repair mode carrying `st`, bound to the VIP and connected to
// the client without sending anything, with `queued` in its receive queue. It stays
// in repair mode (silent) until activate(). `spare`, when valid, is a socket from
// RepairSockets::take(st.family) used instead of a new one (a spare of the other
// family fails the import at bind). With `carry`
// the socket starts with the exporter's congestion window (st.snd_cwnd).
Result<UniqueFd> import_state(const TcpState& st, const std::string& queued,
                              UniqueFd spare = {}, const CwndCarry* carry = nullptr);
// The same for a caller that keeps `queued` itself (it serves those bytes from memory):
// the socket's receive queue starts empty, after them. One send() into the queue and
// the caller's recv() of the same bytes fewer per import.
Result<UniqueFd> import_state_consumed(const TcpState& st, size_t queued_bytes,
                                       UniqueFd spare = {}, const CwndCarry* carry = nullptr);

// Sockets made ahead of imports (socket() and TCP_REPAIR on, and IPV6_V6ONLY for
// IPv6: syscalls off the handoff's critical path). refill() tops the pools up after
// the event loop's round; take(family) gives an invalid fd when that pool is empty
// (import_state then makes its own). One pool per address family: the IPv6 one is
// kept only once an IPv6 socket was asked for, so a cluster without `vip6` holds none.
class RepairSockets {
 public:
  explicit RepairSockets(size_t target = 8) : target_(target) {}
  UniqueFd take(int family = AF_INET);
  void refill();
  size_t size(int family = AF_INET) const { return pool(family).fds.size(); }

 private:
  struct Pool {
    int family;
    bool wanted;
    std::vector<UniqueFd> fds;
  };
  Pool& pool(int family) { return family == AF_INET6 ? v6_ : v4_; }
  const Pool& pool(int family) const { return family == AF_INET6 ? v6_ : v4_; }
  size_t target_;
  Pool v4_{AF_INET, true, {}};
  Pool v6_{AF_INET6, false, {}};
};

// Leaves repair mode: the kernel sends a window probe and the socket is live.
Status activate(int fd);

// Puts a live socket back into repair mode, to drop it without a packet: closing it
// then sends neither FIN nor RST (a revoked lease, imports.cpp).
Status enter_repair(int fd);

}  // namespace tcpha::handoff
