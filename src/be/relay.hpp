#pragma once
// The back-end's relay to an unmodified local HTTP server (nginx, Apache, ...): each
// imported client connection is joined to a fresh connection to the server (loopback
// TCP or a unix socket).
// Response bytes go upstream -> pipe -> client with splice(2), never through user
// space; the pipe bounds what is in flight. Request bytes pass through a small
// buffer the agent can see. With multi-handoff (RelayRouting) every request is
// routed and response ends are found (http::ResponseFramer), so that a keep-alive
// connection can move to another back-end between two requests. See docs/relay.md.
#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "be/closing.hpp"
#include "common/fd.hpp"
#include "common/net.hpp"
#include "common/result.hpp"
#include "http/request.hpp"
#include "http/response_framer.hpp"
#include "metrics/registry.hpp"

namespace tcpha::be {

// The PROXY protocol v2 header (haproxy's proxy-protocol.txt, section 2.2) for a TCP
// over IPv4 connection from `client` to `server` (the VIP): 12-byte signature, 0x21
// (v2, PROXY), 0x11 (AF_INET, STREAM), length 12, then source address, destination
// address, source port, destination port, all in network order. 28 bytes.
std::string make_proxy_v2(const Endpoint& client, const Endpoint& server);

struct HttpConn;  // be/agent_core.hpp: a connection's routing state (multi-handoff)

// Multi-handoff in relay mode (Agent::open_moves sets it when moves are possible): the
// agent routes each request of a relayed connection, and moves the connection when a
// request belongs to another back-end.
struct RelayRouting {
  static constexpr int kServe = 0, kMove = -1;  // as serve::StaticSession's
  // Routes one request (Agent::route_later): kServe, kMove (the target is in the
  // routing state), or an HTTP status (404, 503) the relay answers with itself.
  std::function<int(HttpConn&, const http::Request&)> route;
  // The connection leaves: the client socket, the bytes read and not answered (the
  // request that moves and whatever was pipelined after it), whether the client's
  // FIN was read. Every response before them is complete and delivered to the client
  // socket; the upstream connection is closed. A failed move comes back by adopt().
  std::function<void(HttpConn&, UniqueFd client, std::string bytes, bool peer_fin)> move;
  // The relayed connection ended here: its routing state goes.
  std::function<void(HttpConn&)> forget;
};

struct RelayOptions {
  SocketAddress upstream;           // TCP (loopback) or a unix stream socket
  int proxy_protocol = 0;           // 0 or 2
  bool x_forwarded_for = false;     // X-Forwarded-For line in every request head
  http::Limits limits;              // request framing (x_forwarded_for, routing)
  uint64_t connect_timeout_ns = 0;  // no connection by then: 504
  uint64_t idle_timeout_ns = 0;     // no byte moved either way for this long: closed
  // Response bytes wait for the client and it has acknowledged nothing for this long
  // (it stopped reading): reset. 0: off.
  uint64_t send_timeout_ns = 0;
  // Response bytes in flight per connection. 64 KiB (the default pipe size) moved
  // 12-20% more throughput than 256 KiB on the bench (docs/relay.md).
  size_t pipe_bytes = 64 * 1024;
  size_t request_buffer = 16 * 1024;  // request bytes held per connection
  // Failover (the egress guard is on): every client socket the relay ends itself is
  // marked done (SO_MARK, common/net.hpp mark_done) before its FIN or RST, which the
  // guard drops otherwise. Off: no system call for it.
  bool mark_done = false;
};

#define TCPHA_RELAY_COUNTERS(X)                                                          \
  X(relayed, "connections relayed to the upstream")                                      \
  X(upstream_refused, "upstream connections refused or failed: 502 sent")                \
  X(upstream_timeouts, "upstream connections not established in time: 504 sent")         \
  X(upstream_resets, "relays ended by an upstream error or reset")                       \
  X(client_resets, "relays ended by a client error or reset")                            \
  X(idle_closed, "relays closed after upstream idle timeout")                            \
  X(send_timeouts, "relays reset: the client acknowledged nothing for send_timeout_ms")  \
  X(forwarded_for, "request heads given an X-Forwarded-For line")                        \
  X(bad_requests, "relays reset: a later request could not be framed (x_forwarded_for)") \
  X(upgrades, "upgrade requests the upstream accepted (101): passed through from then")  \
  X(upgrades_declined, "upgrade requests the upstream answered without 101: still framed") \
  X(moved_away, "connections handed over to move to another back-end for a later request") \
  X(taken_back, "moves that failed: the relay took the connection back, routed it again") \
  X(moves_refused, "later requests for another back-end served here: close-delimited or 101") \
  X(answered_here, "later requests the relay answered itself (404, 503, 4xx not framed)") \
  X(bytes_to_client, "response bytes spliced to clients (and 502/504 replies)")          \
  X(bytes_to_upstream, "request bytes written to the upstream (with PROXY headers)")     \
  X(resumed, "failover takeovers whose responses were resumed (Range or head again)")    \
  X(resume_failed, "failover takeovers reset: the upstream's answer could not be resumed")

inline constexpr auto kRelayCounters =
    std::to_array<metrics::CounterInfo>({TCPHA_RELAY_COUNTERS(TCPHA_METRICS_COUNTER)});

// All relayed connections of one agent, driven by the agent's event loop. Their
// sockets sit in the agent's own epoll set (one epoll_wait per wake-up, not two),
// tagged so that owns() tells their events from the agent's: the tags have the top
// bit set, which no user-space pointer has.
class Relays {
 public:
  // Once per relayed connection that ends with a reset or error, for the FE's
  // CLOSED. Connections that end gracefully go to `closing` instead, which reports
  // them when they are over.
  using ClosedFn = std::function<void(const ClosedReport&)>;

  // epoll_fd: the agent's epoll set; it and `closing` must outlive this object.
  static Result<std::unique_ptr<Relays>> create(const RelayOptions& opts, ClosedFn closed,
                                                int epoll_fd, Closings* closing);
  ~Relays();
  Relays(const Relays&) = delete;
  Relays& operator=(const Relays&) = delete;

  // Whether an event of the agent's epoll set is one of ours (epoll_event.data.u64).
  static bool owns(uint64_t tag) { return tag >> 63; }
  // Takes over an activated client socket and starts connecting to the upstream.
  // local, peer: the socket's addresses (the VIP, the client), from the imported state.
  // peer_fin: the client's FIN follows the queued request bytes (handoff::kStatePeerFin).
  // route: the connection's routing state when set_routing() was called (every
  // request is then routed), else null.
  // bytes: what the client sent before the handoff (not in the socket's receive queue).
  // skip (a failover takeover, docs/relay.md "Failover"): the client already has this
  // many bytes of the responses to `bytes` (which hold only GET and HEAD requests:
  // resume::check_held); they are learned from the upstream and skipped, the response
  // in progress resumed (Range), and the connection reset rather than sent wrong bytes.
  void start(UniqueFd client, const Endpoint& local, const Endpoint& peer, uint64_t control_id,
             uint64_t handoff_id, bool peer_fin, uint64_t now_ns, HttpConn* route = nullptr,
             std::string bytes = {}, uint64_t skip = 0);
  void set_routing(RelayRouting r) { routing_ = std::move(r); }
  bool routing() const { return bool(routing_.route); }
  // A move failed (RelayRouting::move): the connection is relayed here again, over a
  // new upstream connection (with the PROXY header again); `bytes` are routed again.
  void adopt(HttpConn& route, UniqueFd client, const Endpoint& local, const Endpoint& peer,
             std::string bytes, bool peer_fin, uint64_t control_id, uint64_t handoff_id,
             uint64_t now_ns);
  // Route mode, for drain: the routing states of the connections with nothing under
  // way (every response out, no request byte buffered or pending), and handing one
  // of them over (RelayRouting::move, no bytes) to move to h's move_target; false
  // when it is not idle any more.
  std::vector<HttpConn*> idle_routes() const;
  // A lease ended without COMMIT (imports.cpp): the client socket goes back into repair
  // mode and the relay ends without a packet to the client (the upstream is reset).
  void revoke(uint64_t control_id, uint64_t handoff_id, uint64_t now_ns);
  // Failover fencing (the FE failed this back-end over: its backups serve its clients
  // now): every connection ends as revoke() ends one, without a packet to its client.
  // Returns how many.
  size_t fence(uint64_t now_ns);
  bool release(HttpConn& route);
  void on_event(uint64_t tag, uint32_t events, uint64_t now_ns);
  void tick(uint64_t now_ns);  // timeouts; call every ~100 ms
  size_t active() const { return conns_.size(); }
  // Every relayed connection: its client socket and handoff id (Agent::send_owned).
  void for_each(const std::function<void(int fd, uint64_t handoff_id)>& f) const;
  // Counters (kRelayCounters); safe to read from another thread.
  std::array<uint64_t, kRelayCounters.size()> counters() const { return metrics::snapshot(counters_); }

 private:
  enum class Counter {
#define TCPHA_X(name, help) name,
    TCPHA_RELAY_COUNTERS(TCPHA_X)
#undef TCPHA_X
        count
  };
  struct Conn;
  enum class End {
    Graceful, ClientError, UpstreamError, Refused, Timeout, Idle, BadRequest, SendTimeout,
    Revoked
  };

  Relays(const RelayOptions& opts, ClosedFn closed, Closings* closing);
  void inc(Counter c, uint64_t n = 1) {
    counters_[size_t(c)].fetch_add(n, std::memory_order_relaxed);
  }
  Conn* admit(UniqueFd client, const Endpoint& local, const Endpoint& peer, uint64_t control_id,
              uint64_t handoff_id, bool peer_fin, uint64_t now_ns, HttpConn* route,
              std::string bytes);
  void again(Conn& c);
  bool pump(Conn& c, uint64_t now_ns);
  bool frame_requests(Conn& c);
  void pass_head(Conn& c, const http::Request& req);
  enum class Peek { Go, Wait, Again, Failed };
  Peek peek_response(Conn& c);
  bool settle(Conn& c, bool& moved, uint64_t now_ns);
  void hand_over(Conn& c);
  bool read_client(Conn& c, bool& moved);
  bool feed_client(Conn& c, std::string_view in);
  bool resolve_upgrade(Conn& c);
  bool stalled_client(Conn& c, uint64_t now_ns);
  // Failover takeover (start with skip): walks the held requests (resume_next), reads
  // the upstream's answers to what it asked (resume_read), ends with the rest of the
  // held bytes passed on as usual (resume_end).
  enum class Resumed { Wait, Again, Body, Failed };
  Resumed resume_next(Conn& c);
  Resumed resume_read(Conn& c);
  bool resume_end(Conn& c);
  void mark_client(Conn& c);
  void finish(Conn& c, End how, uint64_t now_ns);
  Status open_pipe(Conn& c);
  void warn(const std::string& msg);

  RelayOptions opts_;
  RelayRouting routing_;
  std::vector<char> peek_;  // response heads and chunk lines looked at (MSG_PEEK)
  ClosedFn closed_;
  Closings* closing_ = nullptr;
  int ep_ = -1;    // the agent's epoll set
  UniqueFd wake_;  // an eventfd in ep_, readable while again_ has work
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::vector<uint64_t> again_;  // connections that used up their turn with work left
  std::vector<std::array<UniqueFd, 2>> spare_pipes_;  // empty pipes kept for reuse
  std::array<std::atomic<uint64_t>, size_t(Counter::count)> counters_{};
  uint64_t last_warn_ns_ = 0, warn_suppressed_ = 0;
};

}  // namespace tcpha::be
