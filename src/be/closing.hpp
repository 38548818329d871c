#pragma once
// The end of a served client connection, for the built-in server and the relay alike.
//
// A server that close()s right after queueing its last byte gets two things wrong on a
// handed-off connection:
//  - unread request bytes (a POST body after a 405, pipelined requests after a
//    `Connection: close` one) make close() send RST, which destroys the response the
//    client has not read yet. Servers do a lingering close instead: FIN, then read
//    and discard until the client's FIN (nginx's lingering_close).
//  - the FE keeps the client's flow pointed at this BE only until CLOSED plus
//    flow_linger_ms. A client still reading a large response when the flow goes has
//    its ACKs answered by the FE's own stack: RST. So CLOSED goes out only when the
//    connection is really over.
//
// Closings owns such connections from the moment the server is done with them: it
// sends FIN (shutdown SHUT_WR), keeps the socket, discards what the client still
// sends, and reports the connection closed when it is over:
//  - the socket is in TCP_CLOSE: both FINs exchanged and ours acknowledged (the kernel
//    moved the connection to TIME_WAIT), or a reset;
//  - it is in FIN_WAIT2 (everything we sent, FIN included, acknowledged) and the
//    client's FIN is known: read here, or consumed by the FE before the handoff
//    (handoff::kStatePeerFin), in which case this kernel never sees it;
//  - or it gives up: no progress (nothing acknowledged, nothing received) for
//    stall_ns, or the client still sending after linger_ns. A slow reader that keeps
//    acknowledging is never given up on, however long it takes.
// Its sockets sit in the agent's epoll set (edge-triggered: a socket whose both
// directions are shut reports EPOLLHUP for ever), tagged so that owns() tells their
// events apart: bit 62 set, bit 63 clear (Relays::owns), which no user-space pointer has.
#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <unordered_map>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "metrics/registry.hpp"

namespace tcpha::be {

#define TCPHA_CLOSING_COUNTERS(X)                                                             \
  X(lingered, "connections closed gracefully after the response (FIN, then waited for the end)") \
  X(discarded_bytes, "request bytes read and discarded after the response (lingering close)")  \
  X(stalled, "connections reset: no acknowledgement for send_timeout_ms while closing")          \
  X(linger_timeouts, "connections reset: the client kept sending long after the response")

inline constexpr auto kClosingCounters =
    std::to_array<metrics::CounterInfo>({TCPHA_CLOSING_COUNTERS(TCPHA_METRICS_COUNTER)});

// tcpi_bytes_acked of a TCP socket (0 on error): acknowledgement progress, which the
// send timeouts measure. Here because <linux/tcp.h> has the field and glibc's
// <netinet/tcp.h>, which the relay needs, does not (and the two clash).
uint64_t tcp_bytes_acked(int fd);

struct ClosedReport {
  uint64_t control_id = 0, handoff_id = 0, sent = 0, received = 0;
  // The connection's addresses (the VIP, the client): a CLOSED no FE link could take
  // is kept and told, with them, to the next FE (Agent::send_owned).
  Endpoint local{}, peer{};  // family 0: unknown
  // The connection's move number here (HttpConn::move_seq; 0: unknown, as for relayed
  // connections), which CLOSED carries to a CARD entry.
  uint32_t move_seq = 0;
};

class Closings {
 public:
  enum class Counter {
#define TCPHA_X(name, help) name,
    TCPHA_CLOSING_COUNTERS(TCPHA_X)
#undef TCPHA_X
        count
  };
  using Counters = std::array<std::atomic<uint64_t>, size_t(Counter::count)>;
  using ClosedFn = std::function<void(const ClosedReport&)>;

  struct Options {
    uint64_t stall_ns = 0;   // no acknowledgement and nothing received this long: give up
    uint64_t linger_ns = 0;  // the client still sends this long after our FIN: give up
  };

  // epoll_fd: the agent's epoll set, which must outlive this object.
  Closings(int epoll_fd, Options opts, ClosedFn closed);
  ~Closings();
  Closings(const Closings&) = delete;
  Closings& operator=(const Closings&) = delete;

  static bool owns(uint64_t tag) { return (tag >> 62) == 1; }

  // Takes over a connection whose response is complete. peer_fin: the client's FIN
  // has been read already, or consumed by the FE before the handoff. May report it
  // closed at once.
  void close(UniqueFd fd, const ClosedReport& report, bool peer_fin, uint64_t now_ns);
  void on_event(uint64_t tag, uint64_t now_ns);
  void tick(uint64_t now_ns);  // time limits; call every ~100 ms
  size_t size() const { return conns_.size(); }
  // Every connection still here: its socket and the handoff id it came with (an FE that
  // restarted learns them again, Agent::send_owned).
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [id, c] : conns_) f(c.fd.get(), c.report.handoff_id);
  }
  const Counters& counters() const { return counters_; }  // safe from another thread

 private:
  struct Conn {
    UniqueFd fd;
    ClosedReport report;
    bool peer_fin = false;
    uint64_t since = 0;          // handed to us
    uint64_t last_progress = 0;  // bytes acknowledged or received
    uint64_t last_data = 0;      // bytes received
    bool fin_wait2 = false;      // everything we sent is acknowledged, FIN included
    uint64_t acked = 0;          // tcpi_bytes_acked when last looked at
    uint64_t next_check = 0;
  };
  // Reads and discards, looks at the socket's state; true when it is over (then the
  // caller calls finish).
  bool over(Conn& c, uint64_t now_ns);
  void finish(uint64_t id, bool reset);
  void inc(Counter c, uint64_t n = 1) { counters_[size_t(c)].fetch_add(n, std::memory_order_relaxed); }

  int ep_;
  Options opts_;
  ClosedFn closed_;
  Counters counters_{};
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Conn> conns_;
};

}  // namespace tcpha::be
