// The receiving side of a handoff: HANDOFF -> import (repair mode, silent) -> READY;
// COMMIT -> activate and serve; ABORT, a lost link or the deadline -> dropped.
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "be/agent_core.hpp"
#include "common/clock.hpp"
#include "common/net.hpp"
#include "handoff/tcp_state.hpp"

namespace tcpha::be {

bool import_allowed(const handoff::TcpState& st, const config::Config& cfg) {
  if (st.is_v6()) {
    const auto& v6 = cfg.cluster.vip6_addr;
    if (!v6 || std::memcmp(st.local_addr.data(), &*v6, sizeof *v6) != 0) return false;
  } else if (st.family != AF_INET || st.local_addr[0] != cfg.cluster.vip_addr.s_addr) {
    return false;
  }
  return std::find(cfg.cluster.ports.begin(), cfg.cluster.ports.end(), ntohs(st.local_port)) !=
         cfg.cluster.ports.end();
}

// HANDOFF: import, and serve at once under the lease the sender gave (handoff/sender.hpp).
// The lease ends on our clock a quarter before the sender's timer can run out: the
// sender's lease_base_ns is one of our own heartbeats, which it heard before it sent
// the HANDOFF, so its timer starts later than our lease does. Until COMMIT we must
// stop serving the connection when the lease ends (expire_imports revokes it, with
// the margin for our tick).
void Agent::on_handoff(ControlConn& cc, proto::HandoffMsg& h) {
  const uint64_t t0 = monotonic_ns();
  // The import binds the state's local address and port: only the VIP's service
  // ports, never another address or port of this host, whoever holds the key.
  if (!import_allowed(h.state, cfg_)) {
    inc(Counter::import_refused);
    spdlog::warn("HANDOFF {} for {} refused: not the VIP and a configured port", h.id,
                 h.state.local().str());
    cc.link.send(proto::ReadyMsg{h.id, uint32_t(EACCES)});
    return;
  }
  if (cc.peer_backend >= 0 && !router_) {  // only a back-end that moves may send here
    cc.link.send(proto::ReadyMsg{h.id, uint32_t(EACCES)});
    return;
  }
  const uint64_t tick = uint64_t(std::clamp<uint32_t>(cfg_.cluster.heartbeat_ms / 2, 5, 100)) * kMs;
  const uint64_t end = handoff::lease_end(h.lease_base_ns, h.lease_ms, tick);
  auto lease_over = [&](uint64_t now) {
    return h.lease_base_ns == 0 || end == 0 || h.lease_base_ns > now || now >= end;
  };
  if (lease_over(t0)) {
    // The sender takes it back (or already has): serving it now would make two owners.
    inc(Counter::lease_refused);
    spdlog::warn("HANDOFF {} for {} refused: its lease is over ({} ms after it began)", h.id,
                 h.state.peer().str(),
                 h.lease_base_ns && t0 > h.lease_base_ns ? (t0 - h.lease_base_ns) / kMs : 0);
    cc.link.send(proto::ReadyMsg{h.id, uint32_t(ETIMEDOUT)});
    return;
  }
  forget_local_flow(h.state);
  // The request bytes stay here: served from memory, not re-queued into the socket and
  // read back (handoff::import_state_consumed).
  auto fd = handoff::import_state_consumed(h.state, h.request.size(),
                                           spare_sockets_.take(h.state.family), cwnd_carry_.get());
  uint32_t status = 0;
  if (!fd) {
    status = uint32_t(fd.error().err ? fd.error().err : EPROTO);
    inc(Counter::import_failed);
    spdlog::warn("import of {}: {}", h.state.peer().str(), fd.error().message());
  } else if (lease_over(monotonic_ns())) {
    status = ETIMEDOUT;  // a slow import; the socket, still in repair mode, closes silently
    inc(Counter::lease_refused);
  } else if (auto s = handoff::activate(fd->get()); !s) {
    status = uint32_t(s.error().err ? s.error().err : EPROTO);
    inc(Counter::activate_failed);
    spdlog::warn("activate: {}", s.error().message());
  }
  if (status != 0) {
    cc.link.send(proto::ReadyMsg{h.id, status});
    return;
  }
  // Ours to serve from here until the lease ends, and for good after COMMIT.
  leases_[{cc.id, h.id}] = end;
  cc.link.send(proto::ReadyMsg{h.id, 0});
  const uint64_t live = monotonic_ns();
  import_latency_.record_ns(live - t0);
  const uint64_t origin = h.origin_ns ? h.origin_ns : h.state.exported_ns;
  if (live > origin && live - origin < 10'000 * kMs) takeover_latency_.record_ns(live - origin);
  PendingImport imp{std::move(*fd), end, (h.state.flags & handoff::kStatePeerFin) != 0, h.rule,
                    h.seq, !h.request.empty()};
  imp.local = h.state.local();
  imp.peer = h.state.peer();
  UniqueFd client = std::move(imp.fd);
  inc(Counter::imported);
  if (relays_)
    start_relay(std::move(client), cc.id, h.id, imp, std::move(h.request));
  else
    start_http(std::move(client), cc.id, h.id, imp, std::move(h.request));
}

void Agent::on_message(ControlConn& cc, proto::Message& m) {
  if (auto* h = std::get_if<proto::HandoffMsg>(&m)) {
    on_handoff(cc, *h);
  } else if (auto* c = std::get_if<proto::CommitMsg>(&m)) {
    // The sender let go: the connection is ours, whatever the lease says now.
    if (leases_.erase({cc.id, c->id}) == 0) return;
    inc(Counter::committed);
    if (cc.peer_backend >= 0) inc(Counter::moved_in);
  } else if (auto* a = std::get_if<proto::AbortMsg>(&m)) {
    // The sender took it back at the end of the lease (it sends ABORT only then).
    if (leases_.erase({cc.id, a->id}) == 0) return;
    inc(Counter::aborted);
    revoke(cc.id, a->id);
  } else if (auto* w = std::get_if<proto::WorkerMsg>(&m); w && cc.peer_backend < 0) {
    cc.worker = int32_t(w->index);
    send_owned(cc);
  } else if (auto* d = std::get_if<proto::DrainMsg>(&m); d && cc.peer_backend < 0) {
    if (d->on != fe_drained_)
      spdlog::info("{} by the operator{}", d->on ? "drained" : "undrained",
                   d->on && router_ ? ": moving keep-alive connections to other back-ends" : "");
    fe_drained_ = d->on;
  } else if (auto* r = std::get_if<proto::RepointedMsg>(&m); r && cc.peer_backend < 0) {
    on_repointed(*r);
  } else if (auto* rp = std::get_if<proto::RepointMsg>(&m); rp && card() && cc.peer_backend >= 0) {
    on_entry_repoint(cc, *rp);  // a connection that entered at this CARD node moved on
  } else if (auto* cl = std::get_if<proto::ClosedMsg>(&m); cl && card() && cc.peer_backend >= 0) {
    on_entry_closed(cc, *cl);
  } else if (auto* hb = std::get_if<proto::HeartbeatMsg>(&m); hb && cc.peer_backend >= 0) {
    note_load(cc.peer_backend, *hb, monotonic_ns());
  } else if (auto* b = std::get_if<proto::BackupMsg>(&m); b && cc.peer_backend < 0) {
    on_backup(cc, *b);
  } else if (auto* f = std::get_if<proto::ForgetMsg>(&m); f && cc.peer_backend < 0) {
    on_forget(*f);
  } else if (auto* c = std::get_if<proto::CopiesMsg>(&m); c && cc.peer_backend < 0) {
    on_copies(*c);
  } else if (auto* t = std::get_if<proto::TakeoverMsg>(&m); t && cc.peer_backend < 0) {
    on_takeover(*t);
  } else if (auto* l = std::get_if<proto::LardMsg>(&m)) {
    // LARD assignments of the FE or another back-end (docs/multi-handoff.md).
    if (router_)
      for (auto& e : l->entries) router_->learn_lard({e.rule, e.target, std::move(e.members)});
  } else {
    spdlog::warn("unexpected control message type {}", int(proto::type_of(m)));
  }
}

// Leases no COMMIT ended: the sender may take the connection back from now on.
void Agent::expire_imports(uint64_t now) {
  std::vector<std::pair<uint64_t, uint64_t>> over;
  for (const auto& [k, end] : leases_)
    if (now >= end) over.push_back(k);
  for (const auto& k : over) {
    leases_.erase(k);
    inc(Counter::aborted);
    spdlog::warn("connection {}: no COMMIT within its lease: dropped silently", k.second);
    revoke(k.first, k.second);
  }
}

// Stops serving a connection whose lease ended without COMMIT, without a packet: its
// socket goes back into repair mode (closing it then sends neither FIN nor RST) and is
// closed. It may have ended already (a short exchange), then there is nothing to do.
void Agent::revoke(uint64_t control_id, uint64_t handoff_id) {
  for (auto& [p, h] : conns_) {
    if (h->relayed || h->handoff_id != handoff_id || h->control_id != control_id) continue;
    (void)handoff::enter_repair(h->fd.get());
    close_http(*h, End::Failed);
    return;
  }
  if (relays_) relays_->revoke(control_id, handoff_id, monotonic_ns());
}

}  // namespace tcpha::be
