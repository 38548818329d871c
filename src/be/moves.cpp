// Multi-handoff (seed 000 4.8.2-4.8.3, seed 003): the back-end that holds a handed-off
// connection routes every later request on it with the cluster's rules. A request for
// a group this back-end is in is served here; any other is moved, with the connection,
// to a member of its group chosen by the rule's policy, by the same sender the FE uses
// (handoff/sender.hpp) and the same receiving side (imports.cpp):
//
//   1. the previous response is complete and fully acknowledged (export needs an
//      empty send queue; docs/multi-handoff.md says why the send queue is not carried)
//   2. FORWARD in this host's datapath (the FE's BPF object, attached to our
//      interface): the client's packets, which the FE still sends here, go to the
//      target (strays), whose guard drops them until it has imported the connection
//   3. export; HANDOFF (state + the unanswered bytes: the request and anything
//      pipelined after it + a lease) to the target over our link to it, which serves
//      it at once
//   4. READY: COMMIT, our socket closes silently
//   5. REPOINT to the FE worker that owns the connection's id; it points the flow at
//      the target and answers REPOINTED, after which our forwarding entry goes.
//
// A refusal gives the connection back to this back-end at once; no READY (a stalled or
// dead target, a lost link) gives it back when the lease is over (handoff/sender.hpp).
// It then routes the request again without the failed target (another member, or 503
// from here): the connection survives. The connection keeps the id the FE gave it, so
// whoever holds it reports CLOSED to the FE worker named in it.
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

#include <algorithm>
#include <cerrno>

#include "be/agent_core.hpp"
#include "common/access_log.hpp"
#include "common/clock.hpp"
#include "common/flow_key.hpp"
#include "config/config.hpp"
#include "host/host.hpp"

namespace tcpha::be {
namespace {
// A response whose last ACK has not come this long after the next request wanted to
// move is not waited for any more: the move fails and the request is answered here.
constexpr uint64_t kAckWaitNs = 2000 * kMs;
// After the FE confirmed the repoint, strays already on the wire get this long.
constexpr uint64_t kStrayGraceNs = 1000 * kMs;
constexpr uint64_t kMovesTickNs = 100 * kMs;

// b - a, or 0 when a is later (stamps taken in another order than compared).
uint64_t since(uint64_t a, uint64_t b) { return b > a ? b - a : 0; }

int unacked_bytes(int fd) {
  int n = 0;
  return ioctl(fd, SIOCOUTQ, &n) == 0 ? n : -1;
}
}  // namespace

// The sender's view of one target: our datapath and our link to it.
class Agent::PeerPort final : public handoff::SenderPort {
 public:
  PeerPort(Agent& a, PeerLink& p, int rule = -1, uint32_t seq = 0)
      : a_(a), p_(p), rule_(rule), seq_(seq) {}
  Status forward(const tcpha_flow_key& key) override {
    return a_.dp_->point(key, p_.index, p_.mac, a_.own_mac_);
  }
  void confirm_forward(const tcpha_flow_key& key) override {
    if (!a_.dp_->lookup(key)) (void)forward(key);
  }
  void release(const tcpha_flow_key& key) override { (void)a_.dp_->remove(key); }
  bool send_handoff(uint64_t id, const handoff::TcpState& st, const std::string& bytes) override {
    // The lease: from the target's last heartbeat, as long as we wait before taking the
    // connection back (move_deadline).
    const PeerLoad& l = a_.peer_load_[p_.index];
    lease_ms = handoff::lease_ms(a_.cfg_.frontend.handoff_timeout_ms, l.beat_at, monotonic_ns());
    return p_.link.send(
        proto::HandoffMsg{id, st, bytes, rule_, seq_, l.beat_ns, lease_ms, origin_ns});
  }
  uint64_t origin_ns = 0;  // the router said move (0: an idle move), for the takeover latency
  uint32_t lease_ms = 0;  // of the last HANDOFF sent
  bool send_commit(uint64_t id) override { return p_.link.send(proto::CommitMsg{id}); }
  void send_abort(uint64_t id) override { p_.link.send(proto::AbortMsg{id}); }

 private:
  Agent& a_;
  PeerLink& p_;
  int rule_;
  uint32_t seq_;  // the connection's move number at the target
};

// The other back-ends as this one sees them: usable while our link to them is up and
// they heartbeat; their load from those heartbeats. Our own entry is never asked for
// (route_held answers for the holder without the policy).
class Agent::PeerLoadView final : public sched::LoadView {
 public:
  PeerLoadView(const Agent& a, int64_t exclude, uint64_t now) : a_(a), exclude_(exclude), now_(now) {}
  bool usable(uint32_t i) const override { return int64_t(i) != exclude_ && a_.peer_usable(i, now_); }
  int64_t active(uint32_t i) const override {
    if (int32_t(i) == a_.self_index_) return a_.active_.load(std::memory_order_relaxed);
    return i < a_.peer_load_.size() ? a_.peer_load_[i].active : 0;
  }
  uint32_t cpu_permille(uint32_t i) const override {
    return i < a_.peer_load_.size() ? a_.peer_load_[i].cpu_permille : 0;
  }

 private:
  const Agent& a_;
  int64_t exclude_;
  uint64_t now_;
};

bool Agent::peer_usable(uint32_t i, uint64_t now) const {
  if (i >= peers_.size() || !peers_[i] || !peers_[i]->up) return false;
  const uint64_t dead = uint64_t(cfg_.cluster.dead_after_ms) * kMs;
  return !peer_load_[i].draining && now - peer_load_[i].heard_at <= dead &&
         now >= peer_load_[i].failed_until;
}

// Every back-end attaches the datapath (the FE's BPF object) to its interface: its
// guard drops the client's packets that reach us before the import of their
// connection, which the FE forwards here from the moment it sends the HANDOFF
// (handoff/sender.hpp), instead of letting our kernel answer them with an RST; and
// moves forward strays with it. Moves are set up whenever there is another back-end
// in the cluster file: a later request may belong to it (partitioned content), and
// drain and rebalance move idle connections to it.
Status Agent::open_moves(const std::string& ifname) {
  auto dp = datapath::Datapath::attach(ifname, TCPHA_DEFAULT_MAX_FLOWS);
  if (!dp) return Error{dp.error().err, "datapath on " + ifname + ": " + dp.error().what};
  dp_ = std::move(*dp);
  dp_->set_linger(uint64_t(cfg_.frontend.flow_linger_ms) * kMs);
  if (auto s = dp_->set_guard(cfg_.cluster.vip_addr.s_addr); !s) return s;
  if (const auto& v6 = cfg_.cluster.vip6_addr)  // the IPv6 VIP's imports alike
    if (auto s = dp_->set_guard6(*v6); !s) return s;
  // Failover: only what we end ourselves (mark_done) leaves with FIN/RST (the relay
  // marks its client sockets too: RelayOptions::mark_done).
  if (auto s = dp_->set_egress_guard(cfg_.cluster.failover); !s) return s;
  // Tunnel mode (docs/tunnel.md): packets tunnelled to our address by a front-end or
  // by another back-end forwarding a moved connection's strays are decapsulated, and
  // our own strays to a tunnel back-end leave from our address. Always on: a
  // back-end reached directly may still get strays from one that is not.
  if (auto s = set_tunnel_senders(); !s) return s;
  if (auto s = dp_->set_tunnel_source(self_.addr.s_addr); !s) return s;
  auto mac = host::interface_mac(ifname);
  if (!mac) return mac.error();
  own_mac_ = *mac;
  for (size_t i = 0; i < cfg_.backends.size(); ++i)
    if (cfg_.backends[i].id == self_.id) self_index_ = int32_t(i);
  if (self_index_ < 0 || cfg_.backends.size() < 2) return {};
  auto router = sched::Router::build(cfg_);
  if (!router) return router.error();
  router_ = std::move(*router);
  rules_ = cfg_.rules;
  if (relays_) {
    // Relay mode: the relay frames each request and response of a connection and
    // asks route_later about every request, as the built-in server does.
    static_assert(RelayRouting::kServe == serve::StaticSession::kServe &&
                  RelayRouting::kMove == serve::StaticSession::kMove);
    RelayRouting r;
    r.route = [this](HttpConn& h, const http::Request& req) { return route_later(h, req); };
    r.move = [this](HttpConn& h, UniqueFd client, std::string bytes, bool peer_fin) {
      relay_move(h, std::move(client), std::move(bytes), peer_fin);
    };
    r.forget = [this](HttpConn& h) { relay_routes_.erase(&h); };
    relays_->set_routing(std::move(r));
  }
  add_peers(monotonic_ns());
  return {};
}

// Who may tunnel to us: the front-ends and the other back-ends (nodes) of the file, the
// ones a reload appended included.
Status Agent::set_tunnel_senders() {
  std::vector<uint32_t> senders;
  for (const auto& m : cfg_.fe_members) senders.push_back(m.addr.s_addr);
  for (const auto& b : cfg_.backends)
    if (b.id != self_.id) senders.push_back(b.addr.s_addr);
  return dp_->set_decap(self_.addr.s_addr, senders);
}

// A link to every other back-end of cfg_.backends that has none yet (at start, and
// for the ones a reload appended).
void Agent::add_peers(uint64_t now) {
  peers_.resize(cfg_.backends.size());
  peer_load_.resize(cfg_.backends.size());
  for (size_t i = 0; i < cfg_.backends.size(); ++i) {
    if (int32_t(i) == self_index_ || peers_[i]) continue;
    // A direct-routing peer gets the strays of a connection moved to it at its MAC, so
    // it must be on one of our subnets. A tunnel back-end behind a router is not on the
    // DR ones': its link to one came up, then closed for want of an ARP entry, for ever
    // (tunnel_test). Moves go the other way only (a DR one encapsulates to a tunnel one).
    if (!cfg_.backends[i].tunnel() && !host::on_link(cfg_.backends[i].addr)) {
      spdlog::info(
          "back-end {} ({}) forwards directly and is on none of this host's subnets: "
          "no link to it, so no connection moves from here to it",
          cfg_.backends[i].id, ipv4_str(cfg_.backends[i].addr));
      continue;
    }
    proto::LinkOptions o;
    o.key = key_;
    o.role = proto::Role::Fe;  // the side that sends handoffs on this link
    o.node_id = self_.id;
    o.source = self_.addr;
    auto p = std::make_unique<PeerLink>(uint32_t(i), cfg_.backends[i].addr, std::move(o));
    p->link.attach(ep_.get(), static_cast<Item*>(p.get()));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr = cfg_.backends[i].addr;
    to.sin_port = htons(cfg_.cluster.control_port);
    p->link.dial(to, now);
    peers_[i] = std::move(p);
  }
}

// The session's router (StaticSession::Router) for connection h.
int Agent::route_later(HttpConn& h, const http::Request& req) {
  if (!router_) return serve::StaticSession::kServe;
  if (h.routed_by_sender) {  // the request the HANDOFF brought (agent_core.hpp)
    h.routed_by_sender = false;
    return serve::StaticSession::kServe;
  }
  // Still waiting to move for this very request (more bytes arrived meanwhile): the
  // decision stands; routing again would advance the policies for nothing.
  if (h.awaiting_ack && h.move_target >= 0) return serve::StaticSession::kMove;
  const uint64_t now = monotonic_ns();
  PeerLoadView load(*this, h.failed_target, now);
  // Being drained: a member of the request's group that is not this one, if any.
  auto d = router_->route_held(req, h.peer.addr32(), load,
                               evacuating() ? sched::Router::kNoHolder : uint32_t(self_index_));
  // No other member usable: this one serves it, if it is in the rule's group (the
  // rule already matched: no second routing).
  if (evacuating() && d.kind == sched::Decision::NoBackend) {
    const sched::Members& m = router_->members(d.rule);
    for (size_t pos = 0; pos < m.size(); ++pos)
      if (m[pos].id == uint32_t(self_index_)) d = {sched::Decision::Backend, m[pos].id, d.rule};
  }
  h.failed_target = -1;  // excluded for this request only
  h.rule = d.rule;
  switch (d.kind) {
    case sched::Decision::Backend:
      if (int32_t(d.backend) == self_index_) return serve::StaticSession::kServe;
      inc(Counter::routed_elsewhere);
      h.move_target = int64_t(d.backend);
      h.move_wanted = now;
      return serve::StaticSession::kMove;
    case sched::Decision::Local:
      // The FE's own group: the FE serves first requests only; a later one is
      // served here (what every request got before multi-handoff).
      return serve::StaticSession::kServe;
    case sched::Decision::NoRule:
      inc(Counter::no_rule);
      return 404;
    case sched::Decision::NoBackend:
      inc(Counter::no_backend);
      return 503;
  }
  return serve::StaticSession::kServe;
}

// The router said move (on_http saw Want::Move): the response before it is complete.
void Agent::start_move(HttpConn& h, uint64_t now) {
  if (h.move.state() != handoff::Sender::State::Idle) return;
  // 0. A connection this back-end still holds under a lease (its COMMIT not here yet)
  // is not ours to give away: wait for it, like for an ACK (the lease bounds it).
  if (leases_.count({h.control_id, h.handoff_id})) {
    if (!h.awaiting_ack) awaiting_ack_.push_back(&h);
    h.awaiting_ack = true;
    return;
  }
  // 1. Everything we sent must be acknowledged: TCP_REPAIR exports an empty send
  // queue only. Usually it is by now (the client's next request carries the ACK);
  // otherwise the loop looks again every millisecond (awaiting_ack_).
  const int unacked = unacked_bytes(h.fd.get());
  if (unacked != 0) {
    if (unacked > 0 && since(h.move_wanted, now) < kAckWaitNs) {
      if (!h.awaiting_ack) awaiting_ack_.push_back(&h);
      h.awaiting_ack = true;
      return;
    }
    move_failed(h, "the previous response was not acknowledged in time");
    return;
  }
  PeerLink* p = h.move_target >= 0 && size_t(h.move_target) < peers_.size()
                    ? peers_[size_t(h.move_target)].get()
                    : nullptr;
  if (!p || !p->up) {
    move_failed(h, "no link to it");
    return;
  }
  set(EPOLL_CTL_DEL, h.fd.get(), 0, &h);
  // The rule travels: the request's (the target routes it again anyway), or for an
  // idle connection the last one, so that a drain there keeps it in its group.
  PeerPort port(*this, *p, h.rule, h.move_seq + 1);
  if (!h.session.buffered().empty()) port.origin_ns = h.move_wanted;  // not an idle move
  const handoff::MovingConn mc{h.fd.get(), h.local, h.peer, flow_key(h.peer, h.local)};
  // 2-3: FORWARD, export, HANDOFF; the connection keeps the id the FE gave it.
  move_wait_latency_.record_ns(since(h.move_wanted, now));
  const auto o = h.move.start(port, mc, h.handoff_id, h.session.buffered());
  if (o != handoff::Sender::Outcome::Ok) {
    set(EPOLL_CTL_ADD, h.fd.get(), EPOLLIN | EPOLLRDHUP, &h);
    move_failed(h, handoff::Sender::describe(o));
    return;
  }
  h.move_sent = monotonic_ns();
  move_send_latency_.record_ns(since(now, h.move_sent));
  h.move_deadline = h.move_sent + uint64_t(port.lease_ms) * kMs;  // the end of the lease
  moving_[{p->index, h.handoff_id}] = &h;
}

// The connection stays here: the request is routed again without the failed target
// (another member of its group, or 503 from here).
void Agent::move_failed(HttpConn& h, const char* why) {
  inc(Counter::move_failed);
  spdlog::warn("move of {} to {}: {}", h.peer.str(),
               h.move_target >= 0 ? cfg_.backends[size_t(h.move_target)].id : "?", why);
  h.failed_target = h.move_target;
  h.move_target = -1;
  h.awaiting_ack = false;
  if (h.relayed) {  // the relay takes it back and routes the request again
    relay_take_back(h);
    return;
  }
  on_http(h, EPOLLIN);
}

// 4-5 done by the sender (FORWARD, COMMIT): the target owns the connection.
void Agent::move_committed(HttpConn& h, PeerLink& p, uint64_t now) {
  inc(Counter::moved_out);
  const uint64_t done = monotonic_ns();
  move_commit_latency_.record_ns(since(now, done));
  move_latency_.record_ns(since(h.move_wanted, done));
  const uint64_t id = h.handoff_id;
  const uint32_t seq = h.move_seq + 1;
  if (card()) {
    card_committed(h, p, seq);  // no FE: the node it entered at repoints it (card.cpp)
  } else {
    moved_flows_[{id, seq}] = MovedFlow{h.move.conn().key, now, 0};
    if (ControlConn* fe = fe_link(proto::worker_of(id)))
      fe->link.send(proto::RepointMsg{id, cfg_.backends[p.index].id, seq, h.move.exported(),
                                      h.relayed ? std::string() : h.session.buffered()});
    else
      spdlog::warn("moved connection {} to {}: no link to its FE worker to repoint the flow; "
                   "this back-end forwards its packets until they stop",
                   h.peer.str(), cfg_.backends[p.index].id);
  }
  // Our socket is still in repair mode: closing it sends nothing. No CLOSED: the
  // connection lives on at the target, which reports it.
  active_.fetch_sub(1);
  conns_.erase(&h);
}

void Agent::on_peer(PeerLink& p, uint32_t events) {
  std::vector<proto::Message> msgs;
  const unsigned changes = p.link.on_events(events, msgs, monotonic_ns());
  peer_changed(p, changes, msgs);
}

void Agent::peer_changed(PeerLink& p, unsigned changes, std::vector<proto::Message>& msgs) {
  const uint64_t now = monotonic_ns();
  if (changes & proto::Link::kWentUp) {
    const auto& want = cfg_.backends[p.index].id;
    if (p.link.peer_id() != want) {
      peer_down(p, "peer says it is '" + p.link.peer_id() + "', not '" + want + "'");
      return;
    }
    // A tunnel back-end's strays are encapsulated toward its address (its slot in our
    // datapath says so); a DR one's go to its MAC.
    const bool tunnel = cfg_.backends[p.index].tunnel();
    auto mac = tunnel ? std::optional<Mac>(Mac{}) : host::neighbour_mac(p.addr.s_addr);
    if (!mac) {
      peer_down(p, "no ARP entry for " + ipv4_str(p.addr));
      return;
    }
    p.mac = *mac;
    if (auto s = dp_->set_backend(uint32_t(p.index), *mac, false, tunnel ? p.addr.s_addr : 0); !s)
      spdlog::warn("back-end {}: {}", want, s.error().message());
    p.up = true;
    peer_load_[p.index].heard_at = now;
    spdlog::info("link to back-end {} established", want);
  }
  for (auto& m : msgs) {
    if (auto* r = std::get_if<proto::ReadyMsg>(&m)) {
      auto it = moving_.find({p.index, r->id});
      if (it == moving_.end()) continue;  // timed out already
      HttpConn& h = *it->second;
      moving_.erase(it);
      move_ready_latency_.record_ns(since(h.move_sent, now));
      PeerPort port(*this, p);
      const auto o = h.move.on_ready(port, r->status);
      if (o == handoff::Sender::Outcome::Ok) {
        move_committed(h, p, now);
      } else if (o == handoff::Sender::Outcome::Refused) {
        set(EPOLL_CTL_ADD, h.fd.get(), EPOLLIN | EPOLLRDHUP, &h);
        move_failed(h, handoff::Sender::describe(o));
      } else {
        // COMMIT not sent: the target serves it until its lease ends; ours again at
        // move_deadline (tick_moves).
        moving_[{p.index, h.handoff_id}] = &h;
      }
    } else if (auto* hb = std::get_if<proto::HeartbeatMsg>(&m)) {
      note_load(int32_t(p.index), *hb, now);
    } else if (auto* rd = std::get_if<proto::RepointedMsg>(&m); rd && card()) {
      on_repointed(*rd);  // from the entry node of a connection we moved on
    }
  }
  if (changes & proto::Link::kWentDown) peer_down(p, p.link.reason());
}

// Moves waiting for this peer come back here when their lease is over (tick_moves), not
// now: the target may be serving them until then. The link redials by itself.
void Agent::peer_down(PeerLink& p, const std::string& why) {
  if (p.up) spdlog::warn("link to back-end {} lost: {}", cfg_.backends[p.index].id, why);
  p.up = false;
  p.link.close(why);
  peer_load_[p.index].beat_ns = 0;  // a new link, a new lease base
}

void Agent::note_load(int32_t backend, const proto::HeartbeatMsg& hb, uint64_t now) {
  if (backend < 0 || size_t(backend) >= peer_load_.size()) return;
  auto& l = peer_load_[size_t(backend)];
  l.active = hb.active;
  l.cpu_permille = hb.cpu_permille;
  l.heard_at = now;
  l.beat_ns = hb.sent_ns;
  l.beat_at = now;
  l.draining = (hb.flags & proto::kHeartbeatDraining) != 0;
}

void Agent::on_repointed(const proto::RepointedMsg& m) {
  auto it = moved_flows_.find({m.id, m.seq});
  if (it == moved_flows_.end()) return;
  // ESTALE: the FE points the flow further on already (a later move's REPOINT came
  // first); no stray comes here any more either.
  if (m.status == 0 || m.status == ESTALE) {
    it->second.repointed = monotonic_ns();
  } else {
    spdlog::warn("the FE refused to repoint connection {}: {}; this back-end forwards its "
                 "packets until they stop", m.id, strerror(int(m.status)));
  }
}

// An import here (from the FE or a back-end): if this host still forwards the
// connection's packets elsewhere (it moved away from here earlier and now comes back),
// that entry must go before the client's packets are ours to receive.
// Only this back-end puts entries in its datapath, all of them in moved_flows_ (a
// hold is taken back or becomes a forwarding entry there), so an import whose 4-tuple
// is not in it costs no syscall. A CARD node's entry flows are walked too (by 4-tuple,
// see below): O(entry flows) per import.
void Agent::forget_local_flow(const handoff::TcpState& st) {
  if (!dp_) return;
  auto key = flow_key(st.peer(), st.local());
  const size_t n = std::erase_if(moved_flows_, [&](const auto& e) {
    const auto& k = e.second.key;
    return std::equal(std::begin(k.saddr), std::end(k.saddr), std::begin(key.saddr)) &&
           k.sport == key.sport && k.dport == key.dport && k.family == key.family;
  });
  // A CARD node's flows with this 4-tuple: the connection's own, when it entered here
  // and comes back, and a lingering one of an earlier connection on the same 4-tuple.
  // Found by the key, not by the connection's id: looking up the id alone left such
  // flows pointing elsewhere while the connection was served here (forwarding loops,
  // TTL_DROP, and CARD at a tenth of the FE's rate in the benchmark).
  const size_t e = std::erase_if(entry_flows_, [&](const auto& f) {
    const auto& k = f.second.key;
    return std::equal(std::begin(k.saddr), std::end(k.saddr), std::begin(key.saddr)) &&
           k.sport == key.sport && k.dport == key.dport && k.family == key.family;
  });
  if (n > 0 || e > 0) (void)dp_->remove(key);
}

// Moves waiting for the last ACK of the response before them: every turn of the loop,
// which then waits at most a millisecond (run()).
void Agent::retry_awaiting_ack(uint64_t now) {
  auto waiting = std::move(awaiting_ack_);
  awaiting_ack_.clear();
  for (HttpConn* h : waiting) {
    if (!conns_.count(h) || !h->awaiting_ack) continue;
    h->awaiting_ack = false;
    start_move(*h, now);
  }
}

void Agent::tick_moves(uint64_t now) {
  if (!dp_ || !router_ || now < next_moves_tick_) return;
  next_moves_tick_ = now + kMovesTickNs;
  // READY overdue, the lease over: the target is slow or gone and has stopped serving
  // the connection (or never did); it is ours again.
  std::vector<std::pair<uint32_t, HttpConn*>> late;
  for (auto& [k, h] : moving_)
    if (now >= h->move_deadline) late.emplace_back(k.first, h);
  for (auto [target, h] : late) {
    moving_.erase({target, h->handoff_id});
    PeerPort port(*this, *peers_[target]);
    h->move.abort(port, true);
    set(EPOLL_CTL_ADD, h->fd.get(), EPOLLIN | EPOLLRDHUP, h);
    move_failed(*h, "no READY within the lease");
  }
  // Forwarding entries of connections that moved away: gone once the FE points the
  // flow at the new owner (plus a grace for packets on the wire), or once no packet
  // has come for the linger (the FE never confirmed).
  const uint64_t linger = uint64_t(cfg_.frontend.flow_linger_ms) * kMs;
  for (auto it = moved_flows_.begin(); it != moved_flows_.end();) {
    const auto& f = it->second;
    bool done = f.repointed && now - f.repointed > kStrayGraceNs;
    if (!done && now - f.at > linger) {
      auto v = dp_->lookup(f.key);
      const uint64_t seen = v ? v->last_seen_ns : 0;
      done = !v || (now > seen && now - seen > linger);
    }
    if (done) {
      (void)dp_->remove(f.key);
      it = moved_flows_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& p : peers_) {
    if (!p) continue;
    std::vector<proto::Message> none;
    if (const unsigned changes = p->link.tick(now)) peer_changed(*p, changes, none);
  }
  share_lard();
  if (evacuating()) {
    evacuate(now);
  } else if (now >= next_rebalance_) {
    next_rebalance_ = now + std::max<uint64_t>(uint64_t(cfg_.cluster.heartbeat_ms) * kMs, 200 * kMs);
    rebalance(now);
  }
}

// SIGHUP. The access log is reopened (log rotation) whatever the file says. The rules
// are re-read, so that later requests are routed as the reloaded FE routes first ones,
// and back-ends appended to the list (scale-out) become peers: links to them, moves
// and rebalancing towards them. Back-ends already listed must stay as they were, in
// order (our links to them and the indices in every connection's state come from it):
// removing, renaming or reordering needs a restart, like the FE's restart-only keys.
// A file with errors changes nothing.
void Agent::reload() {
  if (!self_.access_log.empty())
    if (auto log = open_access_log(self_.access_log)) access_log_ = std::move(log);
  if (!router_) {
    inc(Counter::reloads);
    return;
  }
  auto r = config::load(cfg_.path);
  if (!r.config) {
    for (auto& e : r.errors) spdlog::error("reload refused: {}", e);
    inc(Counter::reload_failures);
    return;
  }
  const auto& now_be = r.config->backends;
  bool same = now_be.size() >= cfg_.backends.size();
  for (size_t i = 0; same && i < cfg_.backends.size(); ++i)
    same = now_be[i].id == cfg_.backends[i].id && now_be[i].address == cfg_.backends[i].address;
  if (!same || r.config->cluster.vip != cfg_.cluster.vip ||
      r.config->cluster.vip6 != cfg_.cluster.vip6 || r.config->card != cfg_.card) {
    spdlog::error("reload refused: back-ends removed, renamed, readdressed or reordered, or "
                  "the VIP changed, which needs a restart of the back-ends (appending is "
                  "fine); old rules kept");
    inc(Counter::reload_failures);
    return;
  }
  auto router = sched::Router::build(*r.config);
  if (!router) {
    spdlog::error("reload refused: {}", router.error().message());
    inc(Counter::reload_failures);
    return;
  }
  router_ = std::move(*router);
  rules_ = r.config->rules;
  const size_t added = now_be.size() - cfg_.backends.size();
  cfg_.backends = now_be;
  cfg_.rules = rules_;
  if (added) {
    add_peers(monotonic_ns());
    if (auto s = set_tunnel_senders(); !s)
      spdlog::warn("reload: tunnel sources: {}", s.error().message());
  }
  // A connection's rule (drain and rebalance keep it in its group) may name a rule that
  // is gone; its next request is routed afresh anyway.
  for (auto& [p, h] : conns_)
    if (h->rule >= int(router_->rule_count())) h->rule = -1;
  inc(Counter::reloads);
  spdlog::info("reloaded: {} rules, {} back-ends ({} new)", rules_.size(), cfg_.backends.size(),
               added);
}

// The LARD assignments this back-end made for the later requests it routed, to the
// other back-ends and to the FE (over one of its workers' links: the FE's table is
// shared by its workers), so that every node routes a target to the same member.
void Agent::share_lard() {
  auto changes = router_->take_lard_changes(proto::kLardMaxEntries);
  if (changes.empty()) return;
  proto::LardMsg msg;
  for (auto& c : changes) msg.entries.push_back({c.rule, c.target, std::move(c.members)});
  for (auto& p : peers_)
    if (p && p->up) p->link.send(msg);
  for (auto& [id, cc] : controls_)
    if (cc->peer_backend < 0 && cc->link.up()) {
      cc->link.send(msg);
      break;
    }
}

// Moves idle connection h (no request buffered, no response under way) to `target`.
void Agent::move_idle(HttpConn& h, uint32_t target, uint64_t now) {
  h.move_target = int64_t(target);
  h.move_wanted = now;
  h.idle_move_after = now + 1000 * kMs;  // if it fails, not again for a second
  start_move(h, now);
}

static bool idle_here(const HttpConn& h) {
  return !h.writing && h.session.idle() && !h.awaiting_ack &&
         h.move.state() == handoff::Sender::State::Idle && h.rule >= 0;
}

// Drained: every idle keep-alive connection goes to another member of the group of
// its last request (the rule's policy chooses); busy ones follow when their response
// is complete (the next tick), and a new request on one is routed away (route_later).
void Agent::evacuate(uint64_t now) {
  std::vector<HttpConn*> idle;
  for (auto& [p, h] : conns_)
    if (idle_here(*h) && now >= h->idle_move_after) idle.push_back(p);
  for (HttpConn* h : idle) {
    PeerLoadView load(*this, -1, now);
    const int pos = router_->pick(h->rule, h->peer.addr32(), load);
    if (pos < 0) {
      h->idle_move_after = now + 1000 * kMs;
      continue;
    }
    const uint32_t id = router_->members(h->rule)[size_t(pos)].id;
    if (int32_t(id) == self_index_ || id >= cfg_.backends.size()) continue;
    move_idle(*h, id, now);
  }
  if (relays_ && relays_->routing()) evacuate_relayed(now);
}

// After a back-end joins (or comes back), the others hold more than their share of the
// long-lived keep-alive connections and it holds none: each back-end compares its
// connection count with its weighted share among the usable members of each group it
// serves (counts from the heartbeats) and moves idle connections of that group to the
// member furthest below its share. Every back-end does this at once on counts a
// heartbeat old, so each moves at most half of its excess per round; the counts
// converge within a few heartbeats. Hash rules are left alone (moving would break
// their affinity), and so is a group while a move of it is under way.
//
// Only connections idle for a while (max(1 s, two heartbeats)) are moved. While clients
// are opening connections, the FE already spreads them, but the counts in the peers'
// heartbeats lag our own: compared with them we look above our share, and moved
// connections the FE had just placed (drain_moves_test under load: 13 of be1's 55 went
// to be2 while its 165 connections were opening). The long-lived idle connections the
// rebalance is for wait a second more; by then the counts have settled.
void Agent::rebalance(uint64_t now) {
  if (conns_.empty()) return;
  const uint64_t settled =
      std::max<uint64_t>(1000 * kMs, 2 * uint64_t(cfg_.cluster.heartbeat_ms) * kMs);
  std::map<int, std::vector<HttpConn*>> idle_by_rule;
  for (auto& [p, h] : conns_)
    if (idle_here(*h) && now >= h->idle_move_after && now >= h->last_active + settled)
      idle_by_rule[h->rule].push_back(p);
  PeerLoadView load(*this, -1, now);
  for (auto& [rule, idle] : idle_by_rule) {
    if (rules_.size() > size_t(rule) && rules_[size_t(rule)].policy == "hash") continue;
    const sched::Members& m = router_->members(rule);
    int64_t total = 0, weights = 0, self_weight = 0;
    bool member = false;
    for (size_t pos = 0; pos < m.size(); ++pos) {
      const uint32_t id = m[pos].id;
      if (int32_t(id) == self_index_) {
        member = true;
        self_weight = m[pos].weight;
      } else if (!m.usable(pos, load) || id >= cfg_.backends.size()) {
        continue;
      }
      total += m.active(pos, load);
      weights += m[pos].weight;
    }
    if (!member || weights <= self_weight) continue;
    int64_t own = active_.load();
    // Shares within 10% of the weights: act on an excess over 5% of the share (and at
    // least 2 connections), and move half of it.
    const double share = double(total) * double(self_weight) / double(weights);
    const double excess = double(own) - share;
    if (excess < std::max(2.0, 0.05 * share)) continue;
    int64_t to_move = std::min<int64_t>(int64_t(excess / 2 + 0.5), int64_t(idle.size()));
    std::vector<std::pair<size_t, int64_t>> deficit;  // position, connections below share
    for (size_t pos = 0; pos < m.size(); ++pos) {
      const uint32_t id = m[pos].id;
      if (int32_t(id) == self_index_ || id >= cfg_.backends.size() || !m.usable(pos, load)) continue;
      const double its_share = double(total) * double(m[pos].weight) / double(weights);
      const int64_t d = int64_t(its_share - double(m.active(pos, load)));
      if (d > 0) deficit.emplace_back(pos, d);
    }
    for (HttpConn* h : idle) {
      if (to_move <= 0 || deficit.empty()) break;
      auto most = std::max_element(deficit.begin(), deficit.end(),
                                   [](auto& a, auto& b) { return a.second < b.second; });
      move_idle(*h, m[most->first].id, now);
      if (--most->second <= 0) deficit.erase(most);
      --to_move;
    }
  }
}

// Relay mode: a relayed connection's routing state lives beside the relay's connection
// (relay_routes_); route_later treats it like a served connection's. The request the
// HANDOFF brought is served here without routing it again (routed_by_sender).
void Agent::start_relay(UniqueFd fd, uint64_t control_id, uint64_t handoff_id,
                        const PendingImport& imp, std::string bytes, uint64_t skip) {
  active_.fetch_add(1);
  // Failover: no orphan on the client's 4-tuple if this agent is killed (start_http).
  if (cfg_.cluster.failover) abort_on_close(fd.get());
  HttpConn* route = nullptr;
  if (router_ && relays_->routing()) {
    auto h = std::make_unique<HttpConn>(-1, nullptr);
    h->relayed = true;
    h->handoff_id = handoff_id;
    h->control_id = control_id;
    h->move_seq = imp.seq;
    h->routed_by_sender = imp.with_request;
    if (imp.rule >= 0 && size_t(imp.rule) < router_->rule_count()) h->rule = imp.rule;
    h->local = imp.local;
    h->peer = imp.peer;
    route = h.get();
    relay_routes_.emplace(route, std::move(h));
  }
  relays_->start(std::move(fd), imp.local, imp.peer, control_id, handoff_id, imp.peer_fin,
                 monotonic_ns(), route, std::move(bytes), skip);
}

// The relay hands over a connection whose next request belongs to h.move_target (set
// by route_later): every response before it is in the client's socket, the upstream
// connection is closed. From here it is moved like a served connection; its session
// only holds the unanswered bytes (more the client sends while the move waits for the
// last ACK are read into them) and says "move" for whatever it holds.
void Agent::relay_move(HttpConn& h, UniqueFd client, std::string bytes, bool peer_fin) {
  auto it = relay_routes_.find(&h);
  if (it == relay_routes_.end()) return;  // cannot happen: the relay got h from us
  std::unique_ptr<HttpConn> owned = std::move(it->second);
  relay_routes_.erase(it);
  const uint64_t now = monotonic_ns();
  h.fd = std::move(client);
  h.session.buffered() = std::move(bytes);
  if (peer_fin) h.session.set_peer_fin();
  h.session.set_router([](const http::Request&) { return serve::StaticSession::kMove; });
  h.last_active = now;
  set(EPOLL_CTL_ADD, h.fd.get(), EPOLLIN | EPOLLRDHUP, &h);
  conns_.emplace(&h, std::move(owned));
  start_move(h, now);
}

// Drained, relay mode: idle relayed connections move like served ones (evacuate); the
// relay hands each over with no bytes, and a failed move leaves it relayed here, not
// tried again for a second.
void Agent::evacuate_relayed(uint64_t now) {
  for (HttpConn* h : relays_->idle_routes()) {
    if (now < h->idle_move_after || h->rule < 0) continue;
    PeerLoadView load(*this, -1, now);
    const int pos = router_->pick(h->rule, h->peer.addr32(), load);
    h->idle_move_after = now + 1000 * kMs;
    if (pos < 0) continue;
    const uint32_t id = router_->members(h->rule)[size_t(pos)].id;
    if (int32_t(id) == self_index_ || id >= cfg_.backends.size()) continue;
    h->move_target = int64_t(id);
    h->move_wanted = now;
    relays_->release(*h);
  }
}

// A relayed connection's move failed (move_failed): back to the relay, which connects
// to the upstream again and routes the request again without the failed target.
void Agent::relay_take_back(HttpConn& h) {
  auto it = conns_.find(&h);
  if (it == conns_.end()) return;
  set(EPOLL_CTL_DEL, h.fd.get(), 0, &h);
  std::unique_ptr<HttpConn> owned = std::move(it->second);
  conns_.erase(it);
  UniqueFd fd = std::move(h.fd);
  std::string bytes = std::move(h.session.buffered());
  h.session.buffered().clear();
  const bool fin = h.session.peer_closed();
  relay_routes_.emplace(&h, std::move(owned));
  relays_->adopt(h, std::move(fd), h.local, h.peer, std::move(bytes), fin, h.control_id,
                 h.handoff_id, monotonic_ns());
}

}  // namespace tcpha::be
