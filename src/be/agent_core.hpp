#pragma once
// The back-end agent's single-threaded core: one epoll set holding the control
// listener, the control links from the FE workers, the handed-off client connections
// and the signalfd. Its parts live in one file each:
//   event_loop.cpp     open(), run(), tick(): the loop and what runs on its timer
//   control_links.cpp  accepting and running control links, sending on them
//   imports.cpp        the receiving side of a handoff: HANDOFF -> import, serve under
//                      a lease, READY; COMMIT ends the lease; ABORT or its end revokes
//   serving.cpp        connections served by the built-in static server
//   moves.cpp          multi-handoff: routing each later request, moving a connection
//                      to the BE that serves it (handoff::Sender), links to the other
//                      BEs, the local datapath that holds and forwards during a move
//   drain.cpp          SIGTERM: stop taking work, let what runs finish
//   backup.cpp         failover: backing up another BE's connections (BACKUP, the
//                      datapath's copies of their client packets) and taking them over
//                      when it dies (TAKEOVER: probe, import, serve again, TAKEN)
//   stats.cpp          status JSON and Prometheus views of the counters
//   card.cpp           CARD (seed 001, docs/card.md): a node also accepts clients on the
//                      VIP and is the entry of their connections (the FE's part of it)
// run_backend (agent.cpp) sets up the host around it.
#include <sys/epoll.h>

#include <array>
#include <deque>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>

#include "be/closing.hpp"
#include "be/cpu_load.hpp"
#include "be/relay.hpp"
#include "common/fd.hpp"
#include "common/histogram.hpp"
#include "common/listen_socket.hpp"
#include "common/net.hpp"
#include "common/result.hpp"
#include "config/config.hpp"
#include "datapath/datapath.hpp"
#include "failover/sockets.hpp"
#include "handoff/sender.hpp"
#include "handoff/tcp_state.hpp"
#include "metrics/registry.hpp"
#include "proto/control.hpp"
#include "proto/link.hpp"
#include "sched/router.hpp"
#include "serve/file_cache.hpp"
#include "serve/static_session.hpp"

namespace tcpha::be {

inline constexpr uint64_t kMs = 1'000'000;
inline constexpr uint64_t kDrainTimeoutNs = 30'000 * kMs;  // SIGTERM waits this long for connections
// Control links (control_links.cpp): at most this many, and of them at most this many
// still unauthenticated (a newer connection displaces the oldest of those).
inline constexpr size_t kMaxControlLinks = 256, kMaxPendingControl = 64;
// Relayed connections: longer than common servers' keep-alive and send timeouts, so
// the server's own timeouts normally decide; this reaps connections whose peer vanished.
inline constexpr uint64_t kRelayIdleNs = 300'000 * kMs;
// A client that keeps sending this long after the response is complete (lingering
// close) is reset: nginx's lingering_time.
inline constexpr uint64_t kLingerNs = 30'000 * kMs;
// Served connections' acknowledgement progress is looked at this often (one TCP_INFO
// each): the send timeout it enforces is tens of seconds.
inline constexpr uint64_t kAckCheckNs = 1'000 * kMs;

#define TCPHA_BE_COUNTERS(X)                                                  \
  X(imported, "connections imported (served at once, under a lease until COMMIT)") \
  X(import_failed, "HANDOFFs refused because the import failed")              \
  X(aborted, "leased connections revoked silently: ABORT, or no COMMIT within the lease") \
  X(lease_refused, "HANDOFFs refused: their lease was over on arrival (a late or stalled back-end)") \
  X(committed, "leases ended by COMMIT: the connection is this back-end's")   \
  X(requests, "HTTP requests answered")                                       \
  X(bad_requests, "requests refused as malformed or too large")               \
  X(bytes_sent, "response bytes sent (heads and bodies)")                     \
  X(ctl_accepted, "control connections accepted")                             \
  X(ctl_refused, "control connections refused: not from the FE's address, or too many") \
  X(ctl_dropped, "control connections dropped unauthenticated (deadline, garbage, cap)") \
  X(ctl_bad_frames, "control frames that failed authentication or parsing")     \
  X(import_refused, "HANDOFFs refused: not the VIP and a configured port")    \
  X(activate_failed, "imports that could not leave repair mode (refused)")    \
  X(send_timeouts, "connections reset: the client acknowledged nothing for send_timeout_ms") \
  X(header_timeouts, "connections closed: a request head incomplete after header_timeout_ms") \
  X(moved_out, "connections moved to another back-end for a later request (committed there)") \
  X(moved_in, "connections received from another back-end and committed here")  \
  X(move_failed, "moves that did not happen (refused, timed out, link down): served or answered here") \
  X(routed_elsewhere, "later requests whose rule's group does not include this back-end") \
  X(no_rule, "later requests answered 404: no rule matches")                    \
  X(no_backend, "later requests answered 503: no member of their group is usable") \
  X(peer_refused, "links from other back-ends refused: the id does not match the address") \
  X(reloads, "SIGHUPs applied: access log reopened, rules re-read")           \
  X(reload_failures, "SIGHUPs whose cluster file was refused (errors, or a changed [[backend]] list)") \
  X(backups, "connections of other back-ends backed up here (BACKUP)")        \
  X(backups_refused, "BACKUPs not kept: failover off here, relay mode, or over the memory bound") \
  X(copies_malformed, "copies from the FE that are not an IPv4 TCP frame (COPIES)") \
  X(taken_over, "connections of a dead back-end taken over and served here")   \
  X(takeover_lost, "connections of a dead back-end this backup could not take over") \
  X(fenced, "connections dropped silently because the FE failed this back-end over") \
  X(accepted, "client connections accepted on the VIP (CARD node: this node is their entry)") \
  X(entry_repoints, "REPOINTs applied to connections that entered at this node (CARD)") \
  X(entry_refused, "REPOINTs and CLOSEDs refused: not from the connection's owner, or unknown (CARD)")

inline constexpr auto kBeCounters =
    std::to_array<metrics::CounterInfo>({TCPHA_BE_COUNTERS(TCPHA_METRICS_COUNTER)});

enum class Counter {
#define TCPHA_X(name, help) name,
  TCPHA_BE_COUNTERS(TCPHA_X)
#undef TCPHA_X
      count
};

struct Item {
  enum Kind { Listener, Control, Http, Signal, Peer, Answers, Vip } kind;  // relayed sockets: Relays::owns()
  explicit Item(Kind k) : kind(k) {}
};

struct ControlConn : Item {
  ControlConn(uint64_t id_, proto::LinkOptions o) : Item(Control), id(id_), link(std::move(o)) {}
  uint64_t id;
  proto::Link link;
  bool counted = false;  // established: counted in control_links_
  bool dropped = false;  // closed, waiting in Agent::dropped_ for the batch to end
  // Who is at the other end: an FE worker (its index, from WORKER; -1 until then) or
  // another back-end (its index in the cluster file) that moves connections here.
  int32_t worker = -1;
  int32_t peer_backend = -1;
};

// This back-end's link to another one of the cluster file (moves.cpp): dialed from
// here, so this side sends the handoffs (role FE in the handshake) and the other side
// answers READY. Its heartbeats give the load the router's policies see.
struct PeerLink : Item {
  PeerLink(uint32_t index_, in_addr addr_, proto::LinkOptions o)
      : Item(Peer), index(index_), addr(addr_), link(std::move(o)) {}
  uint32_t index;  // in cfg.backends
  in_addr addr;
  proto::Link link;
  bool up = false;  // established, id checked, MAC known
  Mac mac{};
};

// CARD: a listener on the VIP (one per port); what it accepts enters the cluster here.
struct VipListener : Item {
  VipListener() : Item(Vip) {}
  ListenSocket sock;
};

// What this back-end knows of another one's load (heartbeats on either link).
struct PeerLoad {
  uint32_t active = 0, cpu_permille = 0;
  uint64_t heard_at = 0;
  uint64_t beat_ns = 0;  // its last heartbeat's sent_ns (its clock): our HANDOFFs' lease base
  uint64_t beat_at = 0;  // when we heard it (our clock)
  bool draining = false;  // takes no connections (kHeartbeatDraining)
  // The FE failed it over (its TAKEOVER): no connection moves to it before this (our
  // clock; Agent::on_takeover).
  uint64_t failed_until = 0;
};

// What a HANDOFF says about the connection it brings, for serving it.
struct PendingImport {
  UniqueFd fd;
  uint64_t deadline;  // the end of its lease, on our clock
  bool peer_fin = false;  // handoff::kStatePeerFin: the client's FIN follows the request
  int32_t rule = -1;      // HandoffMsg::rule
  uint32_t seq = 0;       // HandoffMsg::seq
  bool with_request = false;  // the HANDOFF carried request bytes (not an idle move)
  Endpoint local{}, peer{};   // from the imported state: no getsockname/getpeername
};

// A handed-off connection served by the built-in static server.
struct HttpConn : Item {
  HttpConn(int docroot, serve::FileCache* cache) : Item(Http), session(docroot, "tcpha", cache) {}
  UniqueFd fd;
  uint64_t handoff_id = 0;
  uint64_t control_id = 0;  // the control connection to report CLOSED on
  serve::StaticSession session;
  bool writing = false;     // epoll interest is EPOLLOUT
  uint64_t last_active = 0;
  uint64_t head_started = 0;  // first byte of an incomplete request head seen (0: none)
  // Send timeout: tcpi_bytes_acked when last looked at, and when it last grew.
  uint64_t acked = 0, ack_progress = 0, next_ack_check = 0;
  // Multi-handoff (moves.cpp).
  Endpoint local{}, peer{};   // IPv4 or IPv6
  int64_t move_target = -1;   // the back-end the next request belongs to
  int64_t failed_target = -1; // the one a failed move went to: not chosen again for it
  int rule = -1;              // the rule of the last request routed (drain, rebalance)
  uint64_t idle_move_after = 0;  // an idle move failed: not tried again before this
  uint32_t move_seq = 0;      // the connection's move number here (HandoffMsg::seq)
  // The next request is the one the HANDOFF brought: its sender routed it here, so it
  // is served here whatever this back-end's own view says (no ping-pong between
  // views a heartbeat apart, or between an FE that reloaded its rules and us).
  bool routed_by_sender = false;
  bool awaiting_ack = false;  // waiting for the previous response's last ACK
  // Relay mode: the routing state of a relayed connection (Agent::relay_routes_), in
  // conns_ only while it moves; a failed move gives it back to the relay.
  bool relayed = false;
  uint64_t move_wanted = 0;   // when the router said move (latency, ack wait limit)
  uint64_t move_deadline = 0; // READY expected by then
  uint64_t move_sent = 0;     // HANDOFF sent (the parts of move_latency)
  handoff::Sender move;
};

// Whether a HANDOFF's connection may be imported here: its local address is the VIP
// and its local port one of the cluster's ports (imports.cpp).
bool import_allowed(const handoff::TcpState& st, const config::Config& cfg);

class StatsView;

class Agent {
 public:
  Agent(const config::Config& cfg, const config::BackendSection& self);

  // ifname: this host's interface toward the FE (the datapath for moves goes there).
  Status open(int sigfd, const std::string& ifname);
  void run();
  std::string status_json() const;
  std::string prometheus() const;
  uint32_t cache_hit_permille() const;
  // Every number the agent reports, once; status_json and prometheus render it.
  void report(StatsView& v) const;
  bool vip_sockets_sending() const;
  void set_on_drain(std::function<void()> f) { on_drain_ = std::move(f); }

 private:
  void set(int op, int fd, uint32_t ev, Item* it);
  void inc(Counter c, uint64_t n = 1) { counters_[size_t(c)].fetch_add(n, std::memory_order_relaxed); }
  void tick(uint64_t now);
  // control_links.cpp
  void on_accept();
  void on_control(ControlConn& cc, uint32_t events);
  void drop_control(ControlConn& cc, const std::string& why);
  proto::LinkOptions control_options() const;
  bool control_source_allowed(in_addr a) const;
  bool is_fe_address(in_addr a) const;
  bool make_room_for_control();
  void control_changed(ControlConn& cc, unsigned changes, std::vector<proto::Message>& msgs);
  void tick_controls(uint64_t now);
  void report_closed(const ClosedReport& r);
  ControlConn* fe_link(uint32_t worker);
  void send_owned(ControlConn& cc);
  void send_heartbeats(uint64_t now);
  proto::HeartbeatMsg heartbeat(uint64_t now) const;
  // imports.cpp
  void on_message(ControlConn& cc, proto::Message& m);
  void on_handoff(ControlConn& cc, proto::HandoffMsg& h);
  void expire_imports(uint64_t now);
  void revoke(uint64_t control_id, uint64_t handoff_id);
  // serving.cpp
  // `bytes`: what the HANDOFF brought (not re-queued in the socket: served from here).
  // `skip`: response bytes the client already has (a failover takeover).
  // Neither counts the connection (imported, accepted): the callers do.
  void start_http(UniqueFd fd, uint64_t control_id, uint64_t handoff_id,
                  const PendingImport& imp, std::string bytes, uint64_t skip = 0);
  void on_http(HttpConn& h, uint32_t events);
  // Graceful: the conversation is over (lingering close, Closings); else the
  // connection failed or timed out and is closed (Reset: with RST) and reported at once.
  enum class End { Graceful, Failed, Reset };
  void close_http(HttpConn& h, End how = End::Graceful);
  void http_timeouts(uint64_t now);
  void on_closed(const ClosedReport& r);
  // moves.cpp
  class PeerPort;
  class PeerLoadView;
  Status open_moves(const std::string& ifname);
  int route_later(HttpConn& h, const http::Request& req);
  void start_move(HttpConn& h, uint64_t now);
  void move_failed(HttpConn& h, const char* why);
  void retry_awaiting_ack(uint64_t now);
  void move_committed(HttpConn& h, PeerLink& p, uint64_t now);
  void on_peer(PeerLink& p, uint32_t events);
  void peer_changed(PeerLink& p, unsigned changes, std::vector<proto::Message>& msgs);
  void peer_down(PeerLink& p, const std::string& why);
  void on_repointed(const proto::RepointedMsg& m);
  void forget_local_flow(const handoff::TcpState& st);
  void tick_moves(uint64_t now);
  void share_lard();  // this back-end's LARD assignments to the others and the FE
  void add_peers(uint64_t now);  // links to the back-ends that have none yet
  Status set_tunnel_senders();   // the datapath decapsulates what they tunnel to us
  // SIGHUP: reopen the access log and re-read the rules (moves.cpp).
  void reload();
  void note_load(int32_t backend, const proto::HeartbeatMsg& hb, uint64_t now);
  // Another back-end may be chosen: our link to it is up, it heartbeats, not draining.
  bool peer_usable(uint32_t i, uint64_t now) const;
  // Relay mode (moves.cpp): relayed connections are routed and moved too.
  // skip: response bytes the client already has (a failover takeover, Relays::start).
  void start_relay(UniqueFd fd, uint64_t control_id, uint64_t handoff_id,
                   const PendingImport& imp, std::string bytes, uint64_t skip = 0);
  void relay_move(HttpConn& h, UniqueFd client, std::string bytes, bool peer_fin);
  void relay_take_back(HttpConn& h);
  void evacuate_relayed(uint64_t now);
  // Drain (SIGTERM or the operator's `tcpha drain`) and rebalance move idle
  // keep-alive connections instead of closing them.
  bool evacuating() const { return draining_ || fe_drained_; }
  void move_idle(HttpConn& h, uint32_t target, uint64_t now);
  void evacuate(uint64_t now);
  void rebalance(uint64_t now);
  // card.cpp
  bool card() const { return cfg_.card; }
  Status open_card(const std::string& ifname);
  void on_vip_accept(VipListener& l);
  // The node a connection entered at (CARD ids carry it where an FE's carry its worker).
  PeerLink* entry_link(uint64_t id);
  bool entered_here(uint64_t id) const {
    return int32_t(proto::worker_of(id)) == self_index_;
  }
  void card_committed(HttpConn& h, PeerLink& p, uint32_t seq);
  void card_closed(const ClosedReport& r);
  void on_entry_repoint(ControlConn& cc, const proto::RepointMsg& m);
  void on_entry_closed(ControlConn& cc, const proto::ClosedMsg& m);
  void tick_card(uint64_t now);
  // drain.cpp
  void begin_drain();
  void drain_tick(uint64_t now);
  // backup.cpp
  Status open_backup(int ifindex);
  void on_backup(ControlConn& cc, proto::BackupMsg& m);
  void on_forget(const proto::ForgetMsg& m);
  void on_takeover(const proto::TakeoverMsg& m);
  void on_copies(const proto::CopiesMsg& m);
  void on_answers();
  void tick_backup(uint64_t now);
  void take_over(failover::Held& h, Result<failover::Plan> plan);
  void fence();
  void takeover_lost(const failover::Held& h, int err, const std::string& why);
  std::optional<std::pair<size_t, uint64_t>> response_size(std::string_view stream);

  // A copy: a reload appends back-ends and replaces the rules (moves.cpp, reload()).
  config::Config cfg_;
  const config::BackendSection& self_;
  std::array<uint8_t, 32> key_{};
  UniqueFd ep_, docroot_;
  ListenSocket listener_;  // the control port
  std::unique_ptr<serve::FileCache> cache_;  // cache_mb > 0
  std::shared_ptr<spdlog::logger> access_log_;  // [[backend]] access_log
  Item listener_item_{Item::Listener}, signal_item_{Item::Signal};
  // Connections whose response is complete, until they are really over (both kinds).
  std::unique_ptr<Closings> closings_;
  // Upstream mode (self_.upstream set): relayed connections instead of HttpConns.
  std::unique_ptr<Relays> relays_;
  uint64_t next_control_id_ = 1;
  // CLOSEDs no FE link could take (the FE restarting): told to the next link of their
  // worker with the connection's addresses (send_owned). Bounded: the oldest go first.
  static constexpr size_t kMaxUnsentClosed = 65536;
  std::deque<ClosedReport> unsent_closed_;
  std::map<uint64_t, std::unique_ptr<ControlConn>> controls_;
  // Links dropped while the loop still holds events for them (a new connection can
  // displace another link whose event is later in the same epoll batch): closed at
  // once, freed after the batch.
  std::vector<std::unique_ptr<ControlConn>> dropped_;
  // Connections served under a lease, until COMMIT: (control link, handoff id) -> the
  // end of the lease on our clock (imports.cpp).
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> leases_;
  std::unordered_map<HttpConn*, std::unique_ptr<HttpConn>> conns_;
  std::array<std::atomic<uint64_t>, size_t(Counter::count)> counters_{};
  std::atomic<int64_t> active_{0};
  LatencyHistogram import_latency_;  // HANDOFF decoded -> READY sent
  // The request complete at the sender (HandoffMsg::origin_ns, else its export; its
  // clock) -> serving here: the handoff's latency as the client sees it, measurable
  // where sender and target share a clock (one host: the test beds and the benchmark);
  // other values are skipped.
  LatencyHistogram takeover_latency_;
  handoff::RepairSockets spare_sockets_;  // imports: socket() + TCP_REPAIR done ahead
  // Imports start with the exporter's congestion window (null: with the initial one).
  std::unique_ptr<handoff::CwndCarry> cwnd_carry_;
  // Multi-handoff (moves.cpp); all empty when the cluster file has no [[rule]] (every
  // back-end serves every request: nothing ever moves).
  std::unique_ptr<sched::Router> router_;
  std::vector<config::RuleSection> rules_;  // router_'s rules (from the file last read)
  int32_t self_index_ = -1;                      // in cfg_.backends
  std::unique_ptr<datapath::Datapath> dp_;       // this host's copy of the FE's datapath
  Mac own_mac_{};
  std::vector<std::unique_ptr<PeerLink>> peers_;  // by backend index; null for self
  std::vector<PeerLoad> peer_load_;               // by backend index
  std::map<std::pair<uint32_t, uint64_t>, HttpConn*> moving_;  // (target, id): READY awaited
  std::vector<HttpConn*> awaiting_ack_;  // moves waiting for their last response's ACK
  // Relay mode: the routing state of each relayed connection (HttpConn::relayed),
  // while the relay holds it.
  std::unordered_map<HttpConn*, std::unique_ptr<HttpConn>> relay_routes_;
  struct MovedFlow {
    tcpha_flow_key key;
    uint64_t at = 0;          // committed elsewhere (our datapath forwards strays)
    uint64_t repointed = 0;   // the FE confirmed (0: not yet)
  };
  // By connection id and the move number at the new owner: a connection can leave this
  // back-end more than once, and the FE's answers may come out of order.
  std::map<std::pair<uint64_t, uint32_t>, MovedFlow> moved_flows_;
  LatencyHistogram move_latency_;  // the router said move -> COMMIT sent
  // Its parts: waiting for the previous response's ACK; HOLD + export + HANDOFF queued
  // (written at the end of the loop's round: proto::WriteBatch); HANDOFF queued -> READY
  // (the target's import and the round trip); READY -> FORWARD + COMMIT queued.
  LatencyHistogram move_wait_latency_, move_send_latency_, move_ready_latency_,
      move_commit_latency_;
  uint64_t next_moves_tick_ = 0, next_rebalance_ = 0;
  bool fe_drained_ = false;     // the operator drained this back-end (DRAIN from the FE)
  uint64_t drain_started_ = 0;  // SIGTERM
  std::atomic<size_t> control_links_{0};
  std::atomic<size_t> peer_links_{0};  // established links from other back-ends
  bool stop_ = false;
  uint64_t next_heartbeat_ = 0;
  CpuLoad cpu_;  // the load heartbeats carry
  std::atomic<uint32_t> cpu_permille_{0};  // its last value, for the stats
  // Closings' counters, or zeros before open().
  const Closings::Counters& closings_counters() const {
    static const Closings::Counters kNone{};
    return closings_ ? closings_->counters() : kNone;
  }
  // SIGTERM/SIGINT: stop taking work, let what runs finish (bounded), then exit.
  std::function<void()> on_drain_;
  bool draining_ = false;
  int sigfd_ = -1;
  uint64_t drain_deadline_ = 0;
  uint64_t fe_gone_since_ = 0;  // draining with no FE link (0: one is up)
  // Failover (backup.cpp): the connections backed up here, the copies of their client
  // packets (COPIES from the FE), and the takeovers under way (probe sent, the
  // client's answer awaited), by client address and port.
  std::unique_ptr<failover::Store> held_;
  // Response sizes by the exact request bytes, for kSizeCacheNs (backup.cpp,
  // response_size()): clients repeat requests, and sizing one is a file lookup.
  struct KnownSize {
    uint64_t bytes;
    uint64_t until_ns;
  };
  struct SizeKeyHash {
    using is_transparent = void;  // looked up by string_view: no copy of the request
    size_t operator()(std::string_view k) const { return std::hash<std::string_view>()(k); }
  };
  std::unordered_map<std::string, KnownSize, SizeKeyHash, std::equal_to<>> sizes_;
  int ifindex_ = 0;
  UniqueFd answers_fd_, probe_fd_;
  Item answers_item_{Item::Answers};
  struct Takeover {
    failover::Held held;
    uint64_t probed_at = 0;
    int probes = 0;
  };
  std::map<std::pair<uint32_t, uint16_t>, Takeover> takeovers_;
  LatencyHistogram recovery_latency_;  // TAKEOVER received -> the connection served here
  // For status (another thread): the store's size and memory, as of the last tick.
  std::atomic<size_t> held_count_{0}, held_bytes_{0}, takeovers_pending_{0};
  uint64_t takeover_started_ = 0;
  // CARD (card.cpp): the VIP's listeners, the ids of connections accepted here, and the
  // connections that entered here and are owned elsewhere: this node's datapath
  // forwards their client packets to the owner for their whole life, as an FE's does
  // (by id: the owner's REPOINT and CLOSED name it).
  std::vector<std::unique_ptr<VipListener>> vip_listeners_;
  uint64_t next_conn_id_ = 1;
  struct EntryFlow {
    tcpha_flow_key key;
    uint32_t owner = 0;       // index in cfg_.backends
    uint32_t seq = 0;         // the connection's move number there
    uint64_t closed_at = 0;   // its owner said CLOSED: removed after the linger
  };
  std::unordered_map<uint64_t, EntryFlow> entry_flows_;
  // REPOINT and CLOSED that came before the READY of the move that made their sender
  // the owner (the owner serves from its import on and answers READY on another
  // link: a short response can be over before our READY arrives). Applied when that
  // move commits (card_committed), forgotten after kEarlyEntryNs.
  struct EarlyEntry {
    uint64_t at = 0;
    int32_t repoint_from = -1, repoint_to = -1;  // backend indices
    uint32_t repoint_seq = 0;
    int32_t closed_from = -1;
    uint32_t closed_seq = 0;  // ClosedMsg::seq (0: unknown)
  };
  std::unordered_map<uint64_t, EarlyEntry> early_entry_;
  uint32_t apply_repoint(uint64_t id, EntryFlow& f, uint32_t target, uint32_t seq);
  std::atomic<size_t> entry_flow_count_{0};  // for status (another thread)
  uint64_t next_card_tick_ = 0, card_ticks_ = 0;
  struct NodeView {
    std::string id;
    bool up = false;
    int64_t active = 0, age_ms = -1;
  };
  mutable std::mutex nodes_mu_;  // the status thread reads nodes_view_
  std::vector<NodeView> nodes_view_;
};

}  // namespace tcpha::be
