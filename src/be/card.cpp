// CARD (seed 001, docs/card.md): no front-end. Every node is a back-end agent that also
// accepts clients on the VIP (the routers spread it over the nodes by ECMP, or DNS
// does): the node a connection arrives at is its *entry*. It routes the first request
// with the cluster's rules like any later one (route_later): its own groups are served
// here from the accepted socket, with no handoff and no copy; any other request moves
// the connection to a member of the rule's group with the multi-handoff sender
// (moves.cpp), the same protocol an FE or a back-end runs. What the FE does for its
// connections the entry does for these:
//   - its datapath forwards the connection's client packets (which keep arriving here:
//     the routers' hash does not change) to the owner for the connection's whole life
//     (entry_flows_), not only until a repoint as for a back-end's own moves;
//   - an owner that moves the connection on sends REPOINT here (the id names the
//     entry, as an FE's ids name the worker), and the entry points the flow at the new
//     owner and answers REPOINTED; the owner that ends it sends CLOSED, and the entry
//     removes the flow after the linger.
// A connection that moves back to its entry is imported here like anywhere else; the
// import removes the entry flow (forget_local_flow) before the socket is live.
#include <arpa/inet.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cerrno>

#include "be/agent_core.hpp"
#include "common/clock.hpp"
#include "common/flow_key.hpp"
#include "host/host.hpp"

namespace tcpha::be {
namespace {
// Entry flows are looked at this often: closed ones leave after the linger. Idle ones
// (an owner that died, or a CLOSED lost with a link) leave after flow_idle_s, looked
// for less often: that costs a map lookup per flow.
constexpr uint64_t kCardTickNs = 1000 * kMs;
constexpr int kIdleScanTicks = 30;
// An early REPOINT or CLOSED (agent_core.hpp, early_entry_) waits this long for its
// move's COMMIT, far longer than a lease; at most kMaxEarly of them.
constexpr uint64_t kEarlyEntryNs = 10'000 * kMs;
constexpr size_t kMaxEarly = 65536;
// A node's connection ids: the entry's index where an FE puts its worker's.
constexpr uint64_t kIdMask = (uint64_t(1) << 48) - 1;
}  // namespace

Status Agent::open_card(const std::string& ifname) {
  if (!card()) return {};
  if (self_index_ < 0) return Error{EINVAL, "node " + self_.id + " is not in the cluster file"};
  // Nodes reached by tunnel (docs/tunnel.md): the entry wraps the client's packets in a
  // 20-byte outer header toward the owner, so the MSS the VIP's listeners announce
  // leaves room for it, as the FE's do. (Unlike the FE, the entry also sends with it,
  // and so does an owner a connection moves to: the exported state carries the clamp.)
  int mss = 0;
  if (std::any_of(cfg_.backends.begin(), cfg_.backends.end(), [](const auto& b) { return b.tunnel(); })) {
    auto mtu = host::interface_mtu(ifname);
    if (!mtu) return Error{mtu.error().err, "interface " + ifname + ": " + mtu.error().what};
    mss = int(*mtu) - 20 - 40;
  }
  for (uint16_t port : cfg_.cluster.ports) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = cfg_.cluster.vip_addr;
    a.sin_port = htons(port);
    auto l = ListenSocket::open(a, 4096);
    if (!l) return Error{l.error().err, "VIP port " + std::to_string(port) + ": " + l.error().what};
    if (mss > 0 && setsockopt(l->fd(), IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss) != 0)
      return sys_error("TCP_MAXSEG " + std::to_string(mss) + " on a VIP listener");
    auto v = std::make_unique<VipListener>();
    v->sock = std::move(*l);
    v->sock.attach(ep_.get(), static_cast<Item*>(v.get()));
    vip_listeners_.push_back(std::move(v));
  }
  return {};
}

// A client connection entered here: served by this node's server from the first
// request on, which route_later routes (here, or a move to its owner).
void Agent::on_vip_accept(VipListener& l) {
  const uint64_t now = monotonic_ns();
  for (int burst = 0; burst < 64; ++burst) {  // the rest on the next turn of the loop
    Endpoint peer{};
    UniqueFd fd = l.sock.accept(&peer, now);
    if (!fd.valid()) return;
    if (draining_) continue;  // stopping: closed at once (the routers should not send any)
    const int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const uint64_t id = (uint64_t(uint32_t(self_index_)) << 48) | (next_conn_id_++ & kIdMask);
    PendingImport imp{};
    imp.local = l.sock.endpoint();
    imp.peer = peer;
    inc(Counter::accepted);
    if (relays_)
      start_relay(std::move(fd), 0, id, imp, std::string());
    else
      start_http(std::move(fd), 0, id, imp, std::string());
  }
}

PeerLink* Agent::entry_link(uint64_t id) {
  const uint32_t entry = proto::worker_of(id);
  if (entry >= peers_.size() || !peers_[entry] || !peers_[entry]->up) return nullptr;
  return peers_[entry].get();
}

// A move committed (move_committed): the entry learns where the connection is now.
// When the entry is this node, its datapath already forwards to the target (the
// sender pointed the flow there) and keeps doing so: an entry flow, not a move's
// temporary one.
void Agent::card_committed(HttpConn& h, PeerLink& p, uint32_t seq) {
  const uint64_t id = h.handoff_id;
  if (entered_here(id)) {
    EntryFlow& f = entry_flows_[id] = EntryFlow{h.move.conn().key, p.index, seq, 0};
    if (auto e = early_entry_.find(id); e != early_entry_.end()) {
      const EarlyEntry early = e->second;
      early_entry_.erase(e);
      if (early.repoint_from == int32_t(f.owner) && early.repoint_seq > f.seq)
        (void)apply_repoint(id, f, uint32_t(early.repoint_to), early.repoint_seq);
      // Only a CLOSED of this ownership: a stale one (from a node fenced as dead, about
      // an ownership that ended before the connection came back here) must not end
      // the flow of the connection this move gives that node again.
      if (early.closed_from == int32_t(f.owner) && (early.closed_seq == 0 || early.closed_seq == seq)) {
        f.closed_at = monotonic_ns();
        (void)dp_->mark_closing(f.key, f.closed_at);
      }
    }
    entry_flow_count_.store(entry_flows_.size(), std::memory_order_relaxed);
    return;
  }
  moved_flows_[{id, seq}] = MovedFlow{h.move.conn().key, monotonic_ns(), 0};
  if (PeerLink* e = entry_link(id)) {
    e->link.send(proto::RepointMsg{id, cfg_.backends[p.index].id, seq, h.move.exported(), {}});
  } else {
    spdlog::warn("moved connection {} to {}: no link to its entry node to repoint it; this "
                 "node forwards its packets until they stop",
                 h.peer.str(), cfg_.backends[p.index].id);
  }
}

// A connection ended here: its entry may let the flow go (after the linger).
void Agent::card_closed(const ClosedReport& r) {
  if (entered_here(r.handoff_id)) {
    // Served here since it entered, or back here: no flow of ours points elsewhere
    // (the import that brought it back removed it).
    return;
  }
  if (PeerLink* e = entry_link(r.handoff_id))
    e->link.send(proto::ClosedMsg{r.handoff_id, r.sent, r.received, r.move_seq});
  // No link: the entry's idle timeout removes the flow.
}

// REPOINT from the node that moved a connection that entered here: point its flow at
// the new owner. Only the current owner may (the key proves membership, the link
// which member; a REPOINT's sender is the owner that committed the move).
void Agent::on_entry_repoint(ControlConn& cc, const proto::RepointMsg& m) {
  auto reply = [&](uint32_t status) { cc.link.send(proto::RepointedMsg{m.id, status, m.seq}); };
  const config::BackendSection* to = cfg_.find_backend(m.target);
  auto it = entry_flows_.find(m.id);
  if (!entered_here(m.id) || !to) {
    inc(Counter::entry_refused);
    spdlog::warn("REPOINT of {} from {} refused: {}", m.id, cc.link.peer_id(),
                 to ? "it did not enter here" : "unknown target");
    reply(EINVAL);
    return;
  }
  const auto target = uint32_t(to - cfg_.backends.data());
  if (it == entry_flows_.end()) {
    // Back at its entry: the import removed the flow, and this node serves it now.
    if (int32_t(target) == self_index_) {
      reply(0);
      return;
    }
    // Before the READY of our move to its sender, probably: applied at the COMMIT.
    if (early_entry_.size() < kMaxEarly || early_entry_.count(m.id)) {
      EarlyEntry& e = early_entry_[m.id];
      if (!e.at) e.at = monotonic_ns();
      if (m.seq > e.repoint_seq) {
        e.repoint_from = cc.peer_backend;
        e.repoint_to = int32_t(target);
        e.repoint_seq = m.seq;
      }
      reply(0);
      return;
    }
    inc(Counter::entry_refused);
    spdlog::warn("REPOINT of {} from {} refused: no flow, and too many early ones", m.id,
                 cc.link.peer_id());
    reply(ENOENT);
    return;
  }
  EntryFlow& f = it->second;
  if (m.seq <= f.seq) {
    reply(ESTALE);  // a later move's REPOINT came first
    return;
  }
  if (f.owner != uint32_t(cc.peer_backend)) {
    inc(Counter::entry_refused);
    spdlog::warn("REPOINT of {} from {}, which does not own it: ignored", m.id, cc.link.peer_id());
    reply(EPERM);
    return;
  }
  reply(apply_repoint(m.id, f, target, m.seq));
}

// 0, or why the flow could not be pointed at `target`.
uint32_t Agent::apply_repoint(uint64_t id, EntryFlow& f, uint32_t target, uint32_t seq) {
  if (int32_t(target) == self_index_ || target >= peers_.size() || !peers_[target] ||
      !peers_[target]->up) {
    // To us it comes by import (which removed the flow already); to a node we have no
    // link to, we could not address it.
    inc(Counter::entry_refused);
    spdlog::warn("REPOINT of {} (move {}) to node {} refused: {}", id, seq, target,
                 int32_t(target) == self_index_ ? "ourselves" : "no live link to it");
    return EHOSTUNREACH;
  }
  if (auto s = dp_->point(f.key, target, peers_[target]->mac, own_mac_); !s) {
    spdlog::warn("REPOINT of {}: {}", id, s.error().message());
    return uint32_t(s.error().err ? s.error().err : EIO);
  }
  f.owner = target;
  f.seq = seq;
  f.closed_at = 0;
  inc(Counter::entry_repoints);
  // The new owner's CLOSED of this move may have come first (on_entry_closed()).
  if (auto e = early_entry_.find(id); e != early_entry_.end() &&
                                      e->second.closed_from == int32_t(target) &&
                                      e->second.closed_seq == seq) {
    early_entry_.erase(e);
    f.closed_at = monotonic_ns();
    (void)dp_->mark_closing(f.key, f.closed_at);
  }
  return 0;
}

// CLOSED from the owner of a connection that entered here.
void Agent::on_entry_closed(ControlConn& cc, const proto::ClosedMsg& m) {
  auto it = entry_flows_.find(m.id);
  // Early: no flow yet (before the READY of our move to its sender, probably: applied
  // at the COMMIT), or the flow is at an earlier move (a later move's owner closed it
  // before that move's REPOINT, from the mover on another link, reached us: applied
  // with that REPOINT, apply_repoint()).
  const bool early = it == entry_flows_.end() ? entered_here(m.id) : m.seq > it->second.seq;
  if (early && (early_entry_.size() < kMaxEarly || early_entry_.count(m.id))) {
    EarlyEntry& e = early_entry_[m.id];
    if (!e.at) e.at = monotonic_ns();
    e.closed_from = cc.peer_backend;
    e.closed_seq = m.seq;
    return;
  }
  if (it == entry_flows_.end() || it->second.owner != uint32_t(cc.peer_backend) ||
      (m.seq != 0 && m.seq != it->second.seq)) {
    inc(Counter::entry_refused);
    if (it == entry_flows_.end())
      spdlog::warn("CLOSED of {} (move {}) from {} refused: {}", m.id, m.seq, cc.link.peer_id(),
                   entered_here(m.id) ? "no flow, and too many early ones" : "it did not enter here");
    else
      spdlog::warn("CLOSED of {} (move {}) from {} refused: its flow is move {} owned by node {}",
                   m.id, m.seq, cc.link.peer_id(), it->second.seq, it->second.owner);
    return;
  }
  const uint64_t now = monotonic_ns();
  if (!it->second.closed_at) {
    it->second.closed_at = now;
    (void)dp_->mark_closing(it->second.key, now);
  }
}

void Agent::tick_card(uint64_t now) {
  if (!card()) return;
  for (auto& l : vip_listeners_) l->sock.tick(now);
  {
    std::vector<NodeView> nodes;
    for (size_t i = 0; i < cfg_.backends.size(); ++i) {
      if (int32_t(i) == self_index_) continue;
      const PeerLoad* l = i < peer_load_.size() ? &peer_load_[i] : nullptr;
      nodes.push_back({cfg_.backends[i].id, peer_usable(uint32_t(i), now), l ? int64_t(l->active) : 0,
                       l && l->heard_at ? int64_t((now - std::min(now, l->heard_at)) / kMs) : -1});
    }
    std::lock_guard lk(nodes_mu_);
    nodes_view_ = std::move(nodes);
  }
  if (now < next_card_tick_) return;
  next_card_tick_ = now + kCardTickNs;
  const uint64_t linger = uint64_t(cfg_.frontend.flow_linger_ms) * kMs;
  const uint64_t idle = uint64_t(cfg_.frontend.flow_idle_s) * 1000 * kMs;
  static_assert(kIdleScanTicks > 0);
  const bool scan = ++card_ticks_ % kIdleScanTicks == 0;
  for (auto it = entry_flows_.begin(); it != entry_flows_.end();) {
    const EntryFlow& f = it->second;
    bool done = f.closed_at && now - f.closed_at > linger;
    if (!done && scan) {
      auto v = dp_->lookup(f.key);
      done = !v || (now > v->last_seen_ns && now - v->last_seen_ns > idle);
    }
    if (done) {
      (void)dp_->remove(f.key);
      it = entry_flows_.erase(it);
    } else {
      ++it;
    }
  }
  entry_flow_count_.store(entry_flows_.size(), std::memory_order_relaxed);
  std::erase_if(early_entry_, [&](const auto& e) { return now - e.second.at > kEarlyEntryNs; });
}

}  // namespace tcpha::be
