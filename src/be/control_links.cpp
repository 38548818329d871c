// The agent's control links: the FE workers connect to the control port; each link
// carries HANDOFF/COMMIT/ABORT in and READY/CLOSED/HEARTBEAT out. Before a link has
// authenticated it is bounded: only the FE's address may connect, at most
// kMaxPendingControl links wait in their handshake (a newer connection displaces the
// oldest), each for at most the handshake deadline (proto::Link), and the listener
// pauses instead of spinning when descriptors run out (ListenSocket).
#include <netinet/in.h>

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "be/agent_core.hpp"
#include "common/clock.hpp"
#include "common/net.hpp"

namespace tcpha::be {

proto::LinkOptions Agent::control_options() const {
  proto::LinkOptions o;
  o.key = key_;
  o.role = proto::Role::Be;
  o.node_id = self_.id;
  return o;
}

// Only the front-end connects here ([frontend] address; a standby's too, once the
// configuration has standbys), and, when connections move between back-ends, the
// other back-ends of the cluster file.
bool Agent::control_source_allowed(in_addr a) const {
  if (is_fe_address(a)) return true;
  if (!router_) return false;
  for (size_t i = 0; i < cfg_.backends.size(); ++i)
    if (int32_t(i) != self_index_ && cfg_.backends[i].addr.s_addr == a.s_addr) return true;
  return false;
}

// [frontend] or a [[standby]] (the active one of them dials us).
bool Agent::is_fe_address(in_addr a) const {
  for (const auto& m : cfg_.fe_members)
    if (m.addr.s_addr == a.s_addr) return true;
  return a.s_addr == cfg_.frontend.addr.s_addr;
}

// The established link of FE worker `worker` (WORKER told us which link is whose).
ControlConn* Agent::fe_link(uint32_t worker) {
  for (auto& [id, cc] : controls_)
    if (cc->worker == int32_t(worker) && cc->peer_backend < 0 && cc->link.up()) return cc.get();
  return nullptr;
}

// Room for one more unauthenticated link: the oldest one still in its handshake goes
// when kMaxPendingControl wait; nothing is displaced once kMaxControlLinks are up.
bool Agent::make_room_for_control() {
  size_t pending = 0;
  ControlConn* oldest = nullptr;
  for (auto& [id, cc] : controls_)  // by id: oldest first
    if (!cc->link.up() && pending++ == 0) oldest = cc.get();
  if (pending >= kMaxPendingControl && oldest) {
    inc(Counter::ctl_dropped);
    drop_control(*oldest, "displaced by a newer connection before authenticating");
    return true;
  }
  return controls_.size() < kMaxControlLinks;
}

void Agent::on_accept() {
  const uint64_t now = monotonic_ns();
  for (int burst = 0; burst < 64; ++burst) {  // the rest on the next turn of the loop
    sockaddr_in peer{};
    UniqueFd fd = listener_.accept(&peer, now);
    if (!fd.valid()) return;
    if (!control_source_allowed(peer.sin_addr) || !make_room_for_control()) {
      inc(Counter::ctl_refused);
      spdlog::debug("control connection from {} refused", endpoint_str(peer));
      continue;  // closed at once
    }
    auto cc = std::make_unique<ControlConn>(next_control_id_++, control_options());
    ControlConn* raw = cc.get();
    controls_.emplace(raw->id, std::move(cc));
    raw->link.attach(ep_.get(), static_cast<Item*>(raw));
    raw->link.adopt(std::move(fd), peer, now);
    inc(Counter::ctl_accepted);
  }
}

void Agent::drop_control(ControlConn& cc, const std::string& why) {
  if (cc.counted) {
    (cc.peer_backend < 0 ? control_links_ : peer_links_).fetch_sub(1);
    spdlog::warn("control link from {} lost: {}", cc.link.peer_id(), why);
  }
  // Connections it leased us stay leased until the lease ends (expire_imports): no
  // COMMIT can come now, but the sender may have sent one we lost (then it let go), or
  // takes the connection back only once the lease is over; either way not before.
  auto it = controls_.find(cc.id);
  if (it == controls_.end()) return;
  cc.dropped = true;
  cc.link.stop(why);  // closes the socket now
  dropped_.push_back(std::move(it->second));
  controls_.erase(it);
}

void Agent::on_control(ControlConn& cc, uint32_t events) {
  if (cc.dropped) return;  // dropped earlier in this batch of events
  std::vector<proto::Message> msgs;
  const unsigned changes = cc.link.on_events(events, msgs, monotonic_ns());
  control_changed(cc, changes, msgs);
}

void Agent::control_changed(ControlConn& cc, unsigned changes, std::vector<proto::Message>& msgs) {
  if (changes & proto::Link::kWentUp) {
    // A link from another back-end's address must carry that back-end's id: the key
    // proves membership of the cluster, the address which member it is.
    const in_addr from = cc.link.peer().sin_addr;
    if (!is_fe_address(from)) {
      for (size_t i = 0; i < cfg_.backends.size(); ++i)
        if (cfg_.backends[i].addr.s_addr == from.s_addr) cc.peer_backend = int32_t(i);
      if (cc.peer_backend < 0 || cfg_.backends[size_t(cc.peer_backend)].id != cc.link.peer_id()) {
        inc(Counter::peer_refused);
        drop_control(cc, "peer says it is '" + cc.link.peer_id() + "' from " + ipv4_str(from));
        return;
      }
    }
    cc.counted = true;
    (cc.peer_backend < 0 ? control_links_ : peer_links_).fetch_add(1);
    spdlog::info("control link from {} established", cc.link.peer_id());
    // A heartbeat at once: the first HANDOFF on this link needs one for its lease.
    cc.link.send(heartbeat(monotonic_ns()));
  }
  const uint64_t id = cc.id;
  for (auto& m : msgs) {
    on_message(cc, m);
    if (!controls_.count(id)) return;
  }
  if (changes & proto::Link::kWentDown) {
    if (cc.link.failure() == proto::Link::Failure::BadFrame) inc(Counter::ctl_bad_frames);
    if (!cc.counted) inc(Counter::ctl_dropped);
    drop_control(cc, cc.link.reason());
  }
}

// Lets the FE free the flow early (ARCHITECTURE.md, teardown).
// The FE worker that owns the id: the link the connection came on when it came from
// that worker, else (it came from another back-end) that worker's link.
void Agent::report_closed(const ClosedReport& r) {
  if (card()) {  // to the node the connection entered at (card.cpp)
    card_closed(r);
    return;
  }
  const proto::ClosedMsg m{r.handoff_id, r.sent, r.received, r.move_seq};
  const int32_t worker = int32_t(proto::worker_of(r.handoff_id));
  if (auto it = controls_.find(r.control_id); it != controls_.end() &&
                                              it->second->peer_backend < 0 &&
                                              it->second->link.up() &&
                                              (it->second->worker < 0 || it->second->worker == worker)) {
    it->second->link.send(m);
  } else if (ControlConn* fe = fe_link(uint32_t(worker))) {
    fe->link.send(m);
  } else if (r.handoff_id != 0 && (r.local.family == AF_INET || r.local.family == AF_INET6)) {
    if (unsent_closed_.size() == kMaxUnsentClosed) unsent_closed_.pop_front();
    unsent_closed_.push_back(r);
  }
}

// An FE worker's link said which worker it is: the connections with that worker's ids
// this back-end owns, so that an FE that restarted or took over from another process
// (docs/fe-restart.md) knows them again; it reaps their flows on CLOSED and repoints
// them when they move. An FE that knows them ignores the list. Leased connections are
// left out: their sender decides them (COMMIT, or the lease ends).
void Agent::send_owned(ControlConn& cc) {
  if (cc.worker < 0) return;
  std::set<uint64_t> leased;
  for (const auto& [key, deadline] : leases_) leased.insert(key.second);
  proto::OwnedMsg msg;
  size_t sent = 0;
  auto flush = [&] {
    if (msg.conns.empty()) return;
    sent += msg.conns.size();
    cc.link.send(msg);
    msg.conns.clear();
  };
  auto add = [&](uint64_t id, uint32_t seq, const Endpoint& local, const Endpoint& peer) {
    if (id == 0 || proto::worker_of(id) != uint32_t(cc.worker) || leased.count(id)) return;
    proto::OwnedMsg::Conn c;
    c.id = id;
    c.seq = seq;
    c.family = local.family;
    std::memcpy(c.client.data(), peer.addr.data(), 16);
    std::memcpy(c.local.data(), local.addr.data(), 16);
    c.client_port = peer.port;
    c.local_port = local.port;
    msg.conns.push_back(c);
    if (msg.conns.size() == proto::kOwnedMax) flush();
  };
  auto add_fd = [&](int fd, uint64_t id) {
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) < 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) < 0)
      return;  // gone meanwhile: its CLOSED follows
    auto l = Endpoint::of(local, ll), p = Endpoint::of(peer, pl);
    if (l && p && l->family == p->family) add(id, 0, *l, *p);
  };
  for (const auto& [p, h] : conns_) add(h->handoff_id, h->move_seq, h->local, h->peer);
  if (relays_) relays_->for_each(add_fd);
  if (closings_) closings_->for_each(add_fd);
  // Those that ended while no link of this worker was up: owned, then closed.
  std::vector<proto::ClosedMsg> closed;
  for (auto it = unsent_closed_.begin(); it != unsent_closed_.end();) {
    if (proto::worker_of(it->handoff_id) != uint32_t(cc.worker)) {
      ++it;
      continue;
    }
    add(it->handoff_id, 0, it->local, it->peer);
    closed.push_back({it->handoff_id, it->sent, it->received});
    it = unsent_closed_.erase(it);
  }
  flush();
  for (const auto& m : closed) cc.link.send(m);
  if (sent)
    spdlog::info("told FE worker {} of the {} connections of its we own ({} of them closed since)",
                 cc.worker, sent, closed.size());
}

// Deadlines of the links (handshake; failures inside send()) and the listener's pause;
// then the heartbeats.
void Agent::tick_controls(uint64_t now) {
  listener_.tick(now);
  std::vector<ControlConn*> links;
  for (auto& [id, cc] : controls_) links.push_back(cc.get());
  std::vector<proto::Message> none;
  for (ControlConn* cc : links)
    if (const unsigned changes = cc->link.tick(now)) control_changed(*cc, changes, none);
  send_heartbeats(now);
}

// Heartbeats: the FE marks a BE down when they stop, even if the TCP connection
// stays open (a stopped or hung agent). They carry the load for the policies.
proto::HeartbeatMsg Agent::heartbeat(uint64_t now) const {
  return proto::HeartbeatMsg{now, uint32_t(std::max<int64_t>(0, active_.load())),
                             cpu_permille_.load(std::memory_order_relaxed), cache_hit_permille(),
                             evacuating() ? proto::kHeartbeatDraining : 0u};
}

void Agent::send_heartbeats(uint64_t now) {
  if (now < next_heartbeat_) return;
  next_heartbeat_ = now + uint64_t(cfg_.cluster.heartbeat_ms) * kMs;
  cpu_permille_.store(cpu_.sample(now), std::memory_order_relaxed);
  const proto::HeartbeatMsg hb = heartbeat(now);
  for (auto& [id, cc] : controls_) cc->link.send(hb);  // nothing unless up
  for (auto& p : peers_)
    if (p) p->link.send(hb);
}

}  // namespace tcpha::be
