// The receiving side of a handoff: HANDOFF -> import (repair mode, silent) -> READY;
// COMMIT -> activate and serve; ABORT, a lost link or the deadline -> dropped.
#include <arpa/inet.h>

#include <algorithm>

#include "be/agent_core.hpp"
#include "common/clock.hpp"
#include "common/net.hpp"
#include "handoff/tcp_state.hpp"

namespace tcpha::be {

bool import_allowed(const handoff::TcpState& st, const config::Config& cfg) {
  if (st.local_addr != cfg.cluster.vip_addr.s_addr) return false;
  return std::find(cfg.cluster.ports.begin(), cfg.cluster.ports.end(), ntohs(st.local_port)) !=
         cfg.cluster.ports.end();
}

void Agent::on_message(ControlConn& cc, proto::Message& m) {
  if (auto* h = std::get_if<proto::HandoffMsg>(&m)) {
    uint64_t t0 = monotonic_ns();
    // The import binds the state's local address and port: only the VIP's service
    // ports, never another address or port of this host, whoever holds the key.
    if (!import_allowed(h->state, cfg_)) {
      inc(Counter::import_refused);
      spdlog::warn("HANDOFF {} for {}:{} refused: not the VIP and a configured port", h->id,
                   ipv4_str(h->state.local_addr), ntohs(h->state.local_port));
      cc.link.send(proto::ReadyMsg{h->id, uint32_t(EACCES)});
      return;
    }
    if (cc.peer_backend >= 0 && !router_) {  // only a back-end that moves may send here
      cc.link.send(proto::ReadyMsg{h->id, uint32_t(EACCES)});
      return;
    }
    forget_local_flow(h->state);
    auto fd = handoff::import_state(h->state, h->request, spare_sockets_.take());
    uint32_t status = 0;
    if (!fd) {
      status = uint32_t(fd.error().err ? fd.error().err : EPROTO);
      inc(Counter::import_failed);
      spdlog::warn("import of {}:{}: {}", ipv4_str(h->state.peer_addr), ntohs(h->state.peer_port),
                   fd.error().message());
    } else {
      // Held in repair mode (silent) until the FE has pointed the flow at us.
      uint64_t wait = 2 * kMs * cfg_.frontend.handoff_timeout_ms + 1000 * kMs;
      PendingImport imp{std::move(*fd), monotonic_ns() + wait,
                        (h->state.flags & handoff::kStatePeerFin) != 0, h->rule, h->seq,
                        !h->request.empty()};
      imp.local = ipv4_endpoint(h->state.local_addr, h->state.local_port);
      imp.peer = ipv4_endpoint(h->state.peer_addr, h->state.peer_port);
      pending_[{cc.id, h->id}] = std::move(imp);
    }
    cc.link.send(proto::ReadyMsg{h->id, status});
    import_latency_.record_ns(monotonic_ns() - t0);
  } else if (auto* c = std::get_if<proto::CommitMsg>(&m)) {
    auto it = pending_.find({cc.id, c->id});
    if (it == pending_.end()) return;
    PendingImport imp = std::move(it->second);
    UniqueFd fd = std::move(imp.fd);
    pending_.erase(it);
    if (auto s = handoff::activate(fd.get()); !s) {
      // The FE has pointed the flow here and counts the connection active: tell it
      // the connection is gone, or it keeps both for ever.
      inc(Counter::activate_failed);
      spdlog::warn("activate: {}", s.error().message());
      report_closed(cc.id, c->id, 0, 0);
      return;
    }
    if (cc.peer_backend >= 0) inc(Counter::moved_in);
    if (relays_) {
      start_relay(std::move(fd), cc.id, c->id, imp);
      return;
    }
    start_http(std::move(fd), cc.id, c->id, imp);
  } else if (auto* a = std::get_if<proto::AbortMsg>(&m)) {
    if (pending_.erase({cc.id, a->id})) inc(Counter::aborted);
  } else if (auto* w = std::get_if<proto::WorkerMsg>(&m); w && cc.peer_backend < 0) {
    cc.worker = int32_t(w->index);
  } else if (auto* d = std::get_if<proto::DrainMsg>(&m); d && cc.peer_backend < 0) {
    if (d->on != fe_drained_)
      spdlog::info("{} by the operator{}", d->on ? "drained" : "undrained",
                   d->on && router_ ? ": moving keep-alive connections to other back-ends" : "");
    fe_drained_ = d->on;
  } else if (auto* r = std::get_if<proto::RepointedMsg>(&m); r && cc.peer_backend < 0) {
    on_repointed(*r);
  } else if (auto* hb = std::get_if<proto::HeartbeatMsg>(&m); hb && cc.peer_backend >= 0) {
    note_load(cc.peer_backend, *hb, monotonic_ns());
  } else if (auto* l = std::get_if<proto::LardMsg>(&m)) {
    // LARD assignments of the FE or another back-end (docs/multi-handoff.md).
    if (router_)
      for (auto& e : l->entries) router_->learn_lard({e.rule, e.target, std::move(e.members)});
  } else {
    spdlog::warn("unexpected control message type {}", int(proto::type_of(m)));
  }
}

void Agent::expire_imports(uint64_t now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now >= it->second.deadline) {
      inc(Counter::aborted);
      spdlog::warn("import {} never committed: dropped", it->first.second);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace tcpha::be
