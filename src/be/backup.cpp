// Failover on the backup's side (seed 004; docs/failover.md). The FE sends us, after
// COMMIT, the state and request of connections another back-end (their primary) now
// owns, and copies of the client's data-bearing packets of them, which its datapath
// took (COPIES, on the control link: our IP stack never sees them). We keep each connection's
// client byte stream since its last answered request (failover::Store). When the FE
// says the primary died (TAKEOVER), we learn where each client is with a probe (its
// kernel answers with its ACK point), import the socket there and answer the held
// requests again, sending only the response bytes the client does not have.
//
// Ownership: the FE sends TAKEOVER only after it pointed the dead primary's flows at
// their backups, and the primary is dead (its agent's links closed, or it was silent
// for dead_after_ms); its kernel's FIN/RST for the dead agent's sockets are dropped
// by its own egress guard. So the import here is the only live copy.
#include <net/if.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "be/agent_core.hpp"
#include "be/relay_takeover.hpp"
#include "common/clock.hpp"
#include "failover/sockets.hpp"
#include "http/request.hpp"
#include "serve/static_files.hpp"

namespace tcpha::be {
namespace {

// What the backups held here may take in all (copies and requests): beyond it new
// BACKUPs are refused (their connections simply have no backup).
constexpr size_t kHeldBytesMax = size_t{64} << 20;
// A probe unanswered this long is sent again, at most kProbes times in all; then the
// connection counts as lost (the client is gone or unreachable).
constexpr uint64_t kProbeRetryNs = 100 * kMs;
constexpr int kProbes = 5;
// After an answer that is ahead of the copies: the FE sends every copy it has ahead of
// its TAKEOVER on that link, but copies it sent earlier on another worker's link may
// still be on their way (a busy link, a busy FE): probe again after this.
constexpr uint64_t kCopyWaitNs = 10 * kMs;
// Response sizes remembered (response_size()): entries, and for how long.
constexpr size_t kSizeCacheEntries = 4096;
constexpr size_t kSizeCacheKeyMax = 1024;  // longer requests are sized every time (<= 4 MiB)
constexpr uint64_t kSizeCacheNs = 1000 * kMs;

}  // namespace

// Backups are kept when the cluster has failover on, by back-ends of both kinds: the
// built-in server generates a response again, a relay asks its upstream again
// (docs/relay.md, "Failover"). The socket that catches probe answers is open only
// while a takeover runs.
Status Agent::open_backup(int ifindex) {
  if (!cfg_.cluster.failover) return {};
  ifindex_ = ifindex;
  held_ = std::make_unique<failover::Store>(kHeldBytesMax);
  return {};
}

// How long the response to the first request of `stream` is: the same plan the built-in
// server makes (StaticSession), so that the copies' ACK numbers tell which requests the
// client has had all of. nullopt: no complete request at the front, or one that closes
// the connection (nothing after it matters).
//
// A size is kept for kSizeCacheNs by the request's exact bytes: clients repeat the same
// requests, and planning one opens and stats the file. The held stream's trim relies on
// the file not changing while it is served, as the takeover's regeneration does
// (docs/failover.md, "Limits"); the cache stretches that window to the cache's age.
std::optional<std::pair<size_t, uint64_t>> Agent::response_size(std::string_view stream) {
  // A relay does not know its upstream's response sizes: nothing is trimmed, and a
  // connection whose held stream outgrows failover::kMaxStream is not recoverable.
  if (relays_) return std::nullopt;
  const uint64_t now = monotonic_ns();
  // Most copies repeat a request seen lately: looked up by its head's bytes, without
  // parsing it. Only a request that parsed complete is kept, under exactly the bytes
  // its parse took, so a key equal to the stream's bytes up to its first empty line
  // is a whole request without a body, and parsing the stream would end there too.
  if (const size_t end = stream.find("\r\n\r\n"); end != std::string_view::npos) {
    const std::string_view head = stream.substr(0, end + 4);
    if (auto it = sizes_.find(head); it != sizes_.end() && now < it->second.until_ns)
      return std::make_pair(head.size(), it->second.bytes);
  }
  http::Request req;
  auto r = http::parse_request(stream, req);
  if (r.status != http::ParseStatus::Complete) return std::nullopt;
  const std::string_view key = stream.substr(0, r.consumed);
  if (auto it = sizes_.find(key); it != sizes_.end() && now < it->second.until_ns)
    return std::make_pair(r.consumed, it->second.bytes);
  auto reply = serve::plan_static_reply(docroot_.get(), req, "tcpha", time(nullptr));
  const uint64_t bytes = uint64_t(reply.head.size() + reply.inline_body.size()) + reply.length;
  if (key.size() <= kSizeCacheKeyMax) {
    if (sizes_.size() >= kSizeCacheEntries) sizes_.clear();  // simpler than LRU, and rare
    sizes_.insert_or_assign(std::string(key), KnownSize{bytes, now + kSizeCacheNs});
  }
  return std::make_pair(r.consumed, bytes);
}

void Agent::on_backup(ControlConn& cc, proto::BackupMsg& m) {
  // IPv6 connections have no backup (docs/ipv6.md): the copies and probes of the held
  // machinery are IPv4 frames, and its tuples IPv4 addresses. The FE sends none.
  if (!held_ || !import_allowed(m.state, cfg_) || m.state.is_v6()) {
    inc(Counter::backups_refused);
    return;
  }
  (void)cc;
  auto rs = [this](std::string_view s) { return response_size(s); };
  if (!held_->add(failover::Held(m.id, std::move(m.primary), m.state, std::move(m.request)), rs)) {
    inc(Counter::backups_refused);
    return;
  }
  inc(Counter::backups);
}

void Agent::on_forget(const proto::ForgetMsg& m) {
  if (!held_) return;
  for (uint64_t id : m.ids) held_->forget(id);
}

void Agent::on_copies(const proto::CopiesMsg& m) {
  if (!held_) return;
  const uint64_t now = monotonic_ns();
  auto rs = [this](std::string_view s) { return response_size(s); };
  m.for_each([&](const uint8_t* frame, size_t n) {
    auto seg = failover::parse_frame(frame, n);
    if (!seg) {
      inc(Counter::copies_malformed);
      return;
    }
    auto t = takeovers_.find({seg->client_addr, seg->client_port});
    if (t != takeovers_.end()) {
      t->second.held.add(*seg, rs);  // a request that came while the probe is out
      return;
    }
    held_->on_copy(*seg, rs, now);
  });
}

// The primary died: probe every client whose connection we hold for it. Their answers
// come to the VIP, which the FE now forwards here; our guard drops them (no socket yet),
// but a packet tap sees them first (failover::open_answer_socket).
void Agent::on_takeover(const proto::TakeoverMsg& m) {
  if (m.dead == self_.id) {
    fence();
    return;
  }
  // For proto::kFailoverWindowMs the FE keeps the dead one's slot FAILED, even when it
  // is back (restarted at once): a connection moved to it then would have its packets
  // sent to its backup, which has no socket for it, and if it died again in the window
  // it would not be failed over again. So it is no peer of ours for that long, and a
  // second more: the FE ends the window at a tick after it, once it has heard the BE.
  const uint64_t now0 = monotonic_ns();
  for (size_t i = 0; i < cfg_.backends.size() && i < peer_load_.size(); ++i)
    if (cfg_.backends[i].id == m.dead)
      peer_load_[i].failed_until = now0 + (uint64_t(proto::kFailoverWindowMs) + 1000) * kMs;
  if (!held_) return;
  auto held = held_->take(m.dead);
  spdlog::warn("{} died: taking over {} connection(s) backed up here", m.dead, held.size());
  if (held.empty()) return;
  takeover_started_ = monotonic_ns();
  if (!answers_fd_.valid()) {
    auto fd = failover::open_answer_socket(ifindex_, cfg_.cluster.vip_addr.s_addr);
    if (!fd) {
      for (auto& h : held) takeover_lost(h, fd.error().err, "answer socket: " + fd.error().what);
      return;
    }
    answers_fd_ = std::move(*fd);
    set(EPOLL_CTL_ADD, answers_fd_.get(), EPOLLIN, &answers_item_);
  }
  if (!probe_fd_.valid()) {
    auto fd = failover::open_probe_socket();
    if (!fd) {
      for (auto& h : held) takeover_lost(h, fd.error().err, "probe socket: " + fd.error().what);
      return;
    }
    probe_fd_ = std::move(*fd);
  }
  const uint64_t now = monotonic_ns();
  for (auto& h : held) {
    if (h.reset()) {
      takeover_lost(h, ECONNRESET, "the client had reset it");
      continue;
    }
    const auto& st = h.snapshot();
    auto [it, fresh] =
        takeovers_.try_emplace({st.peer_addr[0], st.peer_port}, Takeover{std::move(h)});
    if (!fresh) continue;  // the same client 4-tuple twice: keep the first
    if (auto s = failover::send_probe(probe_fd_.get(), failover::build_probe(it->second.held)); !s)
      spdlog::warn("probe: {}", s.error().message());
    it->second.probed_at = now;
    it->second.probes = 1;
  }
}

void Agent::on_answers() {
  auto rs = [this](std::string_view s) { return response_size(s); };
  failover::drain(answers_fd_.get(), [&](const failover::Segment& seg) {
    auto it = takeovers_.find({seg.client_addr, seg.client_port});
    if (it == takeovers_.end()) return;
    // Data or a FIN the client (re)sent after the primary died: part of its stream (no
    // copy carries it), not the probe's answer.
    if (!failover::is_answer(it->second.held, seg)) {
      it->second.held.add(seg, rs);
      return;
    }
    auto plan = failover::plan_takeover(it->second.held, seg, monotonic_ns());
    // A keepalive looks like an answer (EPROTO), and an answer can overtake data the
    // client retransmits, or a copy still in the ring's open block (ENODATA): the next
    // probe's answer decides, until the last. After ENODATA that probe goes out once
    // the block must have been handed over, not a whole retry interval later.
    if (!plan && (plan.error().err == EPROTO || plan.error().err == ENODATA) &&
        it->second.probes < kProbes && !it->second.held.overflowed()) {
      if (plan.error().err == ENODATA)
        it->second.probed_at = monotonic_ns() - kProbeRetryNs + kCopyWaitNs;
      return;
    }
    Takeover t = std::move(it->second);
    takeovers_.erase(it);
    take_over(t.held, std::move(plan));
  });
  if (takeovers_.empty() && answers_fd_.valid()) {
    set(EPOLL_CTL_DEL, answers_fd_.get(), 0, &answers_item_);
    answers_fd_.reset();  // a tap on every packet costs: only while takeovers run
  }
}

// The client's answer says where it is: import there and serve the held requests again.
void Agent::take_over(failover::Held& h, Result<failover::Plan> plan) {
  if (!plan) {
    takeover_lost(h, plan.error().err, plan.error().what);
    return;
  }
  ControlConn* fe = fe_link(proto::worker_of(h.id()));
  // A relay asks its upstream again only for GET and HEAD: anything else may have been
  // executed by the primary's upstream, and is never executed twice (the client is reset).
  const int unsafe = relays_ ? resume::check_held(plan->requests) : 0;
  forget_local_flow(plan->state);
  auto fd = handoff::import_state_consumed(plan->state, plan->requests.size(),
                                           spare_sockets_.take(plan->state.family),
                                           cwnd_carry_.get());
  if (!fd) {
    takeover_lost(h, fd.error().err ? fd.error().err : EPROTO, "import: " + fd.error().what);
    return;
  }
  if (auto s = handoff::activate(fd->get()); !s) {
    takeover_lost(h, s.error().err ? s.error().err : EPROTO, "activate: " + s.error().what);
    return;  // still in repair mode: closes silently
  }
  if (unsafe) {
    // The reset comes from here (the connection's sequence numbers are ours now), let
    // out by the egress guard.
    mark_done(fd->get());
    linger l{1, 0};
    setsockopt(fd->get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    fd->reset();
    takeover_lost(h, unsafe, "a held request that is not GET or HEAD: reset, not replayed");
    return;
  }
  inc(Counter::taken_over);
  recovery_latency_.record_ns(monotonic_ns() - takeover_started_);
  if (fe) fe->link.send(proto::TakenMsg{h.id(), 0});
  PendingImport imp{UniqueFd{}, 0, (plan->state.flags & handoff::kStatePeerFin) != 0, -1, 0,
                    !plan->requests.empty()};
  imp.local = plan->state.local();
  imp.peer = plan->state.peer();
  inc(Counter::imported);
  if (relays_)
    start_relay(std::move(*fd), fe ? fe->id : 0, h.id(), imp, std::move(plan->requests), plan->skip);
  else
    start_http(std::move(*fd), fe ? fe->id : 0, h.id(), imp, std::move(plan->requests), plan->skip);
}

void Agent::takeover_lost(const failover::Held& h, int err, const std::string& why) {
  inc(Counter::takeover_lost);
  const auto& st = h.snapshot();
  spdlog::warn("takeover of {} (from {}) failed: {}", st.peer().str(), h.primary(), why);
  if (ControlConn* fe = fe_link(proto::worker_of(h.id())))
    fe->link.send(proto::TakenMsg{h.id(), uint32_t(err ? err : EPROTO)});
}

// TAKEOVER naming us: the FE failed us over (we were silent too long: overloaded, or
// cut off from it) and our backups serve our connections from now on. Let go of them
// without a packet (repair mode, then close), so that nothing we would still send
// competes with them; the link closes after this and we come back as a new back-end.
void Agent::fence() {
  std::vector<HttpConn*> mine;
  for (auto& [p, h] : conns_)
    if (!h->relayed) mine.push_back(p);
  for (HttpConn* h : mine) {
    (void)handoff::enter_repair(h->fd.get());
    close_http(*h, End::Failed);
  }
  // Relayed connections too (their routing states go with them).
  const size_t relayed = relays_ ? relays_->fence(monotonic_ns()) : 0;
  spdlog::warn("the front-end failed this back-end over: dropped its {} connection(s) silently",
               mine.size() + relayed);
  leases_.clear();
  inc(Counter::fenced, mine.size() + relayed);
}

void Agent::tick_backup(uint64_t now) {
  held_->expire(now);
  for (auto it = takeovers_.begin(); it != takeovers_.end();) {
    Takeover& t = it->second;
    if (now - t.probed_at < kProbeRetryNs) {
      ++it;
      continue;
    }
    if (t.probes >= kProbes) {
      takeover_lost(t.held, ETIMEDOUT, "the client never answered the probe");
      it = takeovers_.erase(it);
      continue;
    }
    (void)failover::send_probe(probe_fd_.get(), failover::build_probe(t.held));
    t.probed_at = now;
    ++t.probes;
    ++it;
  }
  if (takeovers_.empty() && answers_fd_.valid()) {
    set(EPOLL_CTL_DEL, answers_fd_.get(), 0, &answers_item_);
    answers_fd_.reset();
  }
  held_count_.store(held_->size());
  held_bytes_.store(held_->memory());
  takeovers_pending_.store(takeovers_.size());
}

}  // namespace tcpha::be
