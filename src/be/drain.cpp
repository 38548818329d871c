// SIGTERM/SIGINT: stop taking work (LEAVE), let what runs finish (bounded), then exit.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "be/agent_core.hpp"
#include "common/clock.hpp"

namespace tcpha::be {

void Agent::begin_drain() {
  if (draining_) {
    stop_ = true;  // a second signal: stop now
    return;
  }
  draining_ = true;
  drain_started_ = monotonic_ns();
  drain_deadline_ = drain_started_ + kDrainTimeoutNs;
  spdlog::info("draining: {} connections to finish (at most {} s); signal again to stop now",
               active_.load(), kDrainTimeoutNs / 1'000'000'000);
  if (on_drain_) on_drain_();
}

// How long idle keep-alive connections get to move to other back-ends before a drain
// closes those that could not (no other member of their group usable).
constexpr uint64_t kDrainMoveGraceNs = 2000 * kMs;
// A drain that has had no FE link this long stops waiting for its connections.
constexpr uint64_t kFeGoneNs = 1000 * kMs;

void Agent::drain_tick(uint64_t now) {
  // Idle keep-alive connections would hold the drain open. Where connections can
  // move, tick_moves() moves them to other back-ends (evacuate()); what is still here
  // after the grace, and everything where they cannot move, is closed.
  if (!router_ || now - drain_started_ > kDrainMoveGraceNs) {
    std::vector<HttpConn*> idle_now;
    for (auto& [p, h] : conns_)
      if (!h->writing && h->session.idle() && h->move.state() == handoff::Sender::State::Idle &&
          !h->awaiting_ack)
        idle_now.push_back(p);
    for (HttpConn* h : idle_now) close_http(*h);
  }
  // Closed connections may still have response bytes in flight: the kernel sends
  // them after close(), but only while the VIP is still ours. Wait for them too.
  // Connections moved away: until the FE has pointed their flows at the new owner,
  // our datapath forwards their strays, and it goes with the process.
  const bool strays = std::any_of(moved_flows_.begin(), moved_flows_.end(), [&](const auto& f) {
    return f.second.repointed == 0 && now - f.second.at < kDrainMoveGraceNs;
  });
  // A CARD node's datapath also carries the connections that entered here to their
  // owners elsewhere (card.cpp): they end when their owners say CLOSED.
  const bool entries = std::any_of(entry_flows_.begin(), entry_flows_.end(),
                                   [](const auto& e) { return e.second.closed_at == 0; });
  bool done = active_.load() <= 0 && leases_.empty() && moving_.empty() && !strays &&
              !entries && !vip_sockets_sending();
  // Clients' packets reach us only through the FE's datapath, which goes with the FE:
  // with no FE link for a second (the FE stopped too), nothing left can finish, and
  // waiting for it would only hold the drain to its bound. (Connections served under a
  // lease when the FE stopped are among them: their clients' resets came before the
  // import and met the guard.)
  // (A CARD node has no front-end: clients reach it through the routers.)
  if (control_links_.load() == 0 && !card()) {
    if (!fe_gone_since_) fe_gone_since_ = now;
    if (!done && now - fe_gone_since_ >= kFeGoneNs) {
      spdlog::info("the front-end is gone: no client packet can reach the {} connections left",
                   active_.load());
      done = true;
    }
  } else {
    fe_gone_since_ = 0;
  }
  if (done || now >= drain_deadline_) {
    if (!done && active_.load() > 0)
      spdlog::warn("drain timeout: {} connections still open are cut", active_.load());
    stop_ = true;
  }
}

// True while a TCP socket on the VIP still has unacknowledged data or an unanswered
// FIN (states ESTABLISHED, FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING, or a send queue).
// Read from /proc/net/tcp, which shows this network namespace's sockets only.
bool Agent::vip_sockets_sending() const {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  char want[9];
  std::snprintf(want, sizeof want, "%08X", cfg_.cluster.vip_addr.s_addr);
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string sl, local, remote, state, queues;
    if (!(in >> sl >> local >> remote >> state >> queues)) continue;
    if (local.compare(0, 8, want) != 0) continue;
    unsigned st = std::stoul(state, nullptr, 16);
    unsigned long txq = std::stoul(queues.substr(0, queues.find(':')), nullptr, 16);
    if (txq > 0 || st == 0x01 || st == 0x04 || st == 0x08 || st == 0x09 || st == 0x0B) return true;
  }
  return false;
}

}  // namespace tcpha::be
