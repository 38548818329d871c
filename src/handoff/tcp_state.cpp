#include "handoff/tcp_state.hpp"
#include "common/clock.hpp"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cstring>

namespace tcpha::handoff {
namespace {

// <linux/tcp.h> names; glibc's <netinet/tcp.h> clashes with it, so spell out the
// option codes (RFC 793/7323/2018) here.
constexpr uint32_t kTcpOptMaxseg = 2;
constexpr uint32_t kTcpOptWindow = 3;
constexpr uint32_t kTcpOptSackPerm = 4;
constexpr uint32_t kTcpOptTimestamp = 8;
constexpr uint32_t kTimestampOptionBytes = 12;  // TCPOLEN_TSTAMP_ALIGNED

Status set_int(int fd, int opt, int val, const char* what) {
  if (setsockopt(fd, IPPROTO_TCP, opt, &val, sizeof val) != 0) return sys_error(what);
  return {};
}

Result<uint32_t> get_u32(int fd, int opt, const char* what) {
  uint32_t v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, IPPROTO_TCP, opt, &v, &len) != 0) return sys_error(what);
  return v;
}

Result<uint32_t> queue_seq(int fd, int queue) {
  if (auto s = set_int(fd, TCP_REPAIR_QUEUE, queue, "setsockopt(TCP_REPAIR_QUEUE)"); !s)
    return s.error();
  return get_u32(fd, TCP_QUEUE_SEQ, "getsockopt(TCP_QUEUE_SEQ)");
}

Status export_into(int fd, std::string& already_read, TcpState& st) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
    return sys_error("getsockopt(TCP_INFO)");
  // CLOSE_WAIT: the client sent its request and then its FIN (a legal half-close).
  // rcv_nxt already counts the FIN, so the importer's rcv_nxt matches what the
  // client sends next; it learns of the FIN from the flag, not from its kernel.
  if (info.tcpi_state == 8 /* TCP_CLOSE_WAIT */)
    st.flags |= kStatePeerFin;
  else if (info.tcpi_state != 1 /* TCP_ESTABLISHED */)
    return app_error("export: socket not established");
  // The FE never answers a request it hands off: nothing may be in flight or unsent.
  if (info.tcpi_unacked != 0 || info.tcpi_notsent_bytes != 0)
    return app_error("export: send queue not empty");
  st.options = info.tcpi_options & (kOptTimestamps | kOptSack | kOptWscale);
  st.snd_wscale = info.tcpi_snd_wscale;
  st.rcv_wscale = info.tcpi_rcv_wscale;
  // tcpi_snd_mss is the sending MSS after the timestamp option's bytes; the importer
  // needs the clamp the client announced.
  st.mss = info.tcpi_snd_mss + ((st.options & kOptTimestamps) ? kTimestampOptionBytes : 0);
  st.snd_cwnd = uint16_t(std::min<uint32_t>(info.tcpi_snd_cwnd, UINT16_MAX));

  auto snd = queue_seq(fd, TCP_SEND_QUEUE);
  if (!snd) return snd.error();
  auto rcv = queue_seq(fd, TCP_RECV_QUEUE);
  if (!rcv) return rcv.error();

  // Bytes that arrived after the caller's last read are still queued: peek them.
  int inq = 0;
  if (ioctl(fd, SIOCINQ, &inq) != 0) return sys_error("ioctl(SIOCINQ)");
  if (inq > 0) {
    size_t base = already_read.size();
    already_read.resize(base + size_t(inq));
    ssize_t n = recv(fd, already_read.data() + base, size_t(inq), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) return sys_error("recv(MSG_PEEK) in repair mode");
    already_read.resize(base + size_t(n));
  }
  st.snd_seq = *snd;
  st.rcv_seq = *rcv - uint32_t(already_read.size());

  tcp_repair_window w{};
  len = sizeof w;
  if (getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &len) != 0)
    return sys_error("getsockopt(TCP_REPAIR_WINDOW)");
  st.snd_wl1 = w.snd_wl1;
  st.snd_wnd = w.snd_wnd;
  st.max_window = w.max_window;
  st.rcv_wnd = w.rcv_wnd;
  st.rcv_wup = w.rcv_wup;

  auto ts = get_u32(fd, TCP_TIMESTAMP, "getsockopt(TCP_TIMESTAMP)");
  if (!ts) return ts.error();
  st.timestamp = *ts;
  st.exported_ns = monotonic_ns();
  return {};
}

}  // namespace

std::optional<uint32_t> parse_syn_mss(const uint8_t* syn, size_t len) {
  if (len < 1) return std::nullopt;
  size_t tcp = 0;
  if (syn[0] >> 4 == 4 && len >= 20) {
    tcp = size_t(syn[0] & 0x0f) * 4;
    if (tcp < 20 || syn[9] != IPPROTO_TCP) return std::nullopt;
  } else if (syn[0] >> 4 == 6 && len >= 40) {
    if (syn[6] != IPPROTO_TCP) return std::nullopt;  // extension headers: not walked
    tcp = 40;
  } else {
    return std::nullopt;
  }
  if (len < tcp + 20) return std::nullopt;
  const size_t end = tcp + size_t(syn[tcp + 12] >> 4) * 4;
  if (end < tcp + 20 || end > len) return std::nullopt;
  for (size_t i = tcp + 20; i < end;) {
    const uint8_t kind = syn[i];
    if (kind == 0) break;  // end of options
    if (kind == 1) {       // no-op
      ++i;
      continue;
    }
    if (i + 1 >= end || syn[i + 1] < 2 || i + syn[i + 1] > end) break;
    if (kind == 2 && syn[i + 1] == 4) return uint32_t(syn[i + 2] << 8 | syn[i + 3]);
    i += syn[i + 1];
  }
  return std::nullopt;
}

std::optional<uint32_t> saved_syn_mss(int fd) {
  uint8_t syn[128];  // an IPv6 header and a TCP header with the most options fit
  socklen_t len = sizeof syn;
  if (getsockopt(fd, IPPROTO_TCP, TCP_SAVED_SYN, syn, &len) != 0) return std::nullopt;
  return parse_syn_mss(syn, len);
}

Result<TcpState> export_state(int fd, const Endpoint& local, const Endpoint& peer,
                              std::string& already_read) {
  if (local.family != peer.family || (local.family != AF_INET && local.family != AF_INET6))
    return app_error("export: the addresses are not both IPv4 or both IPv6");
  if (auto s = set_int(fd, TCP_REPAIR, TCP_REPAIR_ON, "setsockopt(TCP_REPAIR on)"); !s)
    return s.error();
  TcpState st;
  st.family = local.family;
  st.local_addr = local.addr;
  st.local_port = local.port;
  st.peer_addr = peer.addr;
  st.peer_port = peer.port;
  size_t read_before = already_read.size();
  if (auto s = export_into(fd, already_read, st); !s) {
    already_read.resize(read_before);
    (void)leave_repair(fd);
    return s.error();
  }
  return st;
}

Status leave_repair(int fd) {
  return set_int(fd, TCP_REPAIR, TCP_REPAIR_OFF, "setsockopt(TCP_REPAIR off)");
}

namespace {

// queued == nullptr: `consumed` bytes were delivered to the caller, not re-queued.
Status import_into(int fd, const TcpState& st, const std::string* queued, size_t consumed,
                   bool in_repair, const CwndCarry* carry) {
  if (!in_repair)
    if (auto s = set_int(fd, TCP_REPAIR, TCP_REPAIR_ON, "setsockopt(TCP_REPAIR on)"); !s) return s;
  if (auto s = set_int(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE send"); !s) return s;
  if (auto s = set_int(fd, TCP_QUEUE_SEQ, int(st.snd_seq), "TCP_QUEUE_SEQ send"); !s) return s;
  if (auto s = set_int(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE recv"); !s) return s;
  // rcv_seq is where the bytes that travel with the state begin; delivered to the
  // caller, the queue starts after them (at the exporter's rcv_nxt).
  const uint32_t rcv_seq = st.rcv_seq + uint32_t(queued ? 0 : consumed);
  if (auto s = set_int(fd, TCP_QUEUE_SEQ, int(rcv_seq), "TCP_QUEUE_SEQ recv"); !s) return s;
  // Before connect(), or the MSS stays at the 536-byte default. The kernel caps the
  // user MSS at 32767 (loopback's is larger); the repair option below sets the rest.
  constexpr uint32_t kMaxUserMss = 32767;
  if (auto s = set_int(fd, TCP_MAXSEG, int(std::min(st.mss, kMaxUserMss)), "setsockopt(TCP_MAXSEG)");
      !s)
    return s;

  // Before connect(): the sock_ops program applies it as connect() establishes the
  // socket. Best effort: without it the connection starts with the initial window.
  // A window the kernel gives anyway (a first handoff's: the FE never sent data) is not
  // stored, which saves the import a bpf() call.
  constexpr uint16_t kInitialCwnd = 10;  // TCP_INIT_CWND
  if (carry && st.snd_cwnd > kInitialCwnd) (void)carry->store(fd, st.snd_cwnd);

  sockaddr_storage local{}, peer{};
  const socklen_t local_len = st.local().to_sockaddr(local);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local), local_len) != 0)
    return sys_error("bind(VIP) for import");
  const socklen_t peer_len = st.peer().to_sockaddr(peer);
  // In repair mode connect() goes straight to ESTABLISHED and sends nothing.
  if (connect(fd, reinterpret_cast<const sockaddr*>(&peer), peer_len) != 0)
    return sys_error("connect(client) in repair mode");

  tcp_repair_opt opts[4];
  unsigned n = 0;
  opts[n++] = {kTcpOptMaxseg, st.mss};
  if (st.options & kOptWscale)
    opts[n++] = {kTcpOptWindow, uint32_t(st.snd_wscale) | (uint32_t(st.rcv_wscale) << 16)};
  if (st.options & kOptTimestamps) opts[n++] = {kTcpOptTimestamp, 0};
  if (st.options & kOptSack) opts[n++] = {kTcpOptSackPerm, 0};
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts, socklen_t(n * sizeof opts[0])) != 0)
    return sys_error("setsockopt(TCP_REPAIR_OPTIONS)");

  if (st.options & kOptTimestamps) {
    // Opaque value; bit 0 flags microsecond timestamps on newer kernels. Advance it
    // by the time the handoff took so the client never sees TSval go backwards.
    // exported_ns is the sender's clock: on another host it says nothing, and any
    // step forward is correct (PAWS rejects only steps back), so an elapsed time that
    // is negative or over a minute counts as none.
    const uint64_t now = monotonic_ns();
    uint64_t elapsed_ns = now - st.exported_ns;
    if (now < st.exported_ns || elapsed_ns > 60'000'000'000ULL) elapsed_ns = 0;
    uint32_t step = (st.timestamp & 1) ? uint32_t(elapsed_ns / 1000) & ~1u
                                       : uint32_t(elapsed_ns / 1'000'000) + 1;
    uint32_t ts = st.timestamp + step;
    if (setsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, &ts, sizeof ts) != 0)
      return sys_error("setsockopt(TCP_TIMESTAMP)");
  }

  // The receive queue is still selected: send() in repair mode fills it.
  size_t off = 0;
  while (queued && off < queued->size()) {
    ssize_t w = send(fd, queued->data() + off, queued->size() - off, 0);
    if (w <= 0) return sys_error("send() into the receive queue");
    off += size_t(w);
  }

  // After the receive queue is filled: the kernel checks it against rcv_nxt.
  tcp_repair_window w{st.snd_wl1, st.snd_wnd, st.max_window, st.rcv_wnd, st.rcv_wup};
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) != 0)
    return sys_error("setsockopt(TCP_REPAIR_WINDOW)");
  return {};
}

UniqueFd new_socket(int family = AF_INET) {
  UniqueFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  // Only the IPv6 VIP: never an IPv4-mapped address.
  const int one = 1;
  if (fd.valid() && family == AF_INET6 &&
      setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
    return {};
  return fd;
}

UniqueFd socket_for(const TcpState& st, UniqueFd& spare, bool& in_repair) {
  in_repair = spare.valid();
  return in_repair ? std::move(spare) : new_socket(st.is_v6() ? AF_INET6 : AF_INET);
}

}  // namespace

Result<UniqueFd> import_state(const TcpState& st, const std::string& queued, UniqueFd spare,
                              const CwndCarry* carry) {
  bool in_repair = false;
  UniqueFd fd = socket_for(st, spare, in_repair);
  if (!fd.valid()) return sys_error("socket");
  if (auto s = import_into(fd.get(), st, &queued, 0, in_repair, carry); !s) return s.error();
  return fd;
}

Result<UniqueFd> import_state_consumed(const TcpState& st, size_t queued_bytes, UniqueFd spare,
                                       const CwndCarry* carry) {
  bool in_repair = false;
  UniqueFd fd = socket_for(st, spare, in_repair);
  if (!fd.valid()) return sys_error("socket");
  if (auto s = import_into(fd.get(), st, nullptr, queued_bytes, in_repair, carry); !s)
    return s.error();
  return fd;
}

UniqueFd RepairSockets::take(int family) {
  Pool& p = pool(family);
  p.wanted = true;
  if (p.fds.empty()) return {};
  UniqueFd fd = std::move(p.fds.back());
  p.fds.pop_back();
  return fd;
}

// A socket that cannot enter repair mode (no CAP_NET_ADMIN) is not kept: import_state
// then fails on its own socket with the real error.
void RepairSockets::refill() {
  for (Pool* p : {&v4_, &v6_}) {
    while (p->wanted && p->fds.size() < target_) {
      UniqueFd fd = new_socket(p->family);
      if (!fd.valid() || !set_int(fd.get(), TCP_REPAIR, TCP_REPAIR_ON, "setsockopt(TCP_REPAIR on)"))
        break;
      p->fds.push_back(std::move(fd));
    }
  }
}

Status activate(int fd) {
  if (auto s = set_int(fd, TCP_REPAIR, TCP_REPAIR_OFF, "setsockopt(TCP_REPAIR off)"); !s) return s;
  // Leaving repair mode also clears the socket's SO_REUSEADDR (repair had forced it,
  // to bind beside the other connections on the VIP's port). Without it the socket,
  // and the TIME_WAIT and orphaned sockets it leaves when it ends, keep a listener off
  // that port for a minute: a CARD node restarted on this host (or one that follows a
  // back-end, as in the benchmark) could not bind the VIP's port ("Address already in
  // use"). One setsockopt per import.
  const int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    return sys_error("setsockopt(SO_REUSEADDR)");
  return {};
}

Status enter_repair(int fd) {
  return set_int(fd, TCP_REPAIR, TCP_REPAIR_ON, "setsockopt(TCP_REPAIR on)");
}

}  // namespace tcpha::handoff
