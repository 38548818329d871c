#include "fe/standby.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "common/clock.hpp"
#include "metrics/registry.hpp"

namespace tcpha::fe {
namespace {

uint64_t unix_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
}

sockaddr_in sync_address(const config::Config& cfg, const config::FeMember& m) {
  return ipv4_endpoint(m.addr.s_addr, htons(uint16_t(cfg.cluster.control_port + Standby::kPortOffset)));
}

}  // namespace

size_t Standby::KeyHash::operator()(const std::array<uint8_t, 40>& k) const {
  return std::hash<std::string_view>()(
      std::string_view(reinterpret_cast<const char*>(k.data()), k.size()));
}

proto::LinkOptions Standby::link_options() const {
  proto::LinkOptions o;
  std::copy_n(cfg_.cluster.key.begin(), o.key.size(), o.key.begin());
  o.node_id = cfg_.frontend.id;
  o.source = cfg_.frontend.addr;
  o.idle_ns = kDownNs * 4;        // a silent peer's link goes (its adverts stopped long ago)
  o.keepalive_ns = kAdvertNs * 2;  // adverts flow anyway
  o.handshake_ns = 1'000'000'000;
  o.max_out = size_t{64} << 20;    // a full copy of a big table
  return o;
}

Result<std::unique_ptr<Standby>> Standby::start(const config::Config& cfg, datapath::Datapath& dp,
                                                const Mac& self_mac) {
  auto l = ListenSocket::open(sync_address(cfg, cfg.fe_members[cfg.self_index()]), 16);
  if (!l) return Error{l.error().err, "standby port: " + l.error().what};
  return std::unique_ptr<Standby>(new Standby(cfg, dp, self_mac, std::move(*l)));
}

Standby::Standby(const config::Config& cfg, datapath::Datapath& dp, const Mac& mac, ListenSocket l)
    : cfg_(cfg), dp_(dp), mac_(mac), self_(cfg.self_index()), listener_(std::move(l)),
      stop_(eventfd(0, EFD_CLOEXEC)), promote_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  const uint64_t now = monotonic_ns();
  started_ = now;
  // The lower index dials: one link per pair.
  for (size_t i = self_ + 1; i < cfg_.fe_members.size(); ++i) {
    Peer p;
    p.index = i;
    p.dialer = true;
    auto o = link_options();
    o.role = proto::Role::Fe;
    p.link = std::make_unique<proto::Link>(o);
    p.link->dial(sync_address(cfg_, cfg_.fe_members[i]), now);
    peers_.push_back(std::move(p));
  }
  thread_ = std::thread([this] { run(); });
}

Standby::~Standby() {
  uint64_t one = 1;
  if (write(stop_.get(), &one, sizeof one) < 0) spdlog::warn("standby wake: {}", strerror(errno));
  thread_.join();
}

void Standby::activated() {
  epoch_ = unix_ns() / 1'000'000;
  active_.store(true);
}

void Standby::on_accept(uint64_t now) {
  sockaddr_in from{};
  UniqueFd c = listener_.accept(&from, now);
  if (!c.valid()) return;
  // Only the front-ends that dial us (those before us in the file), from their address.
  size_t index = SIZE_MAX;
  for (size_t i = 0; i < self_; ++i)
    if (cfg_.fe_members[i].addr.s_addr == from.sin_addr.s_addr) index = i;
  if (index == SIZE_MAX) {
    spdlog::warn("standby: a link from {}, not a front-end before us in the file: refused",
                 ipv4_str(from.sin_addr));
    return;
  }
  // A front-end that dials again replaces its old link.
  std::erase_if(peers_, [&](const Peer& p) { return !p.dialer && p.index == index; });
  Peer p;
  p.index = index;
  auto o = link_options();
  o.role = proto::Role::Be;
  p.link = std::make_unique<proto::Link>(o);
  p.link->adopt(std::move(c), from, now);
  peers_.push_back(std::move(p));
}

void Standby::on_link(Peer& p, unsigned changes, std::vector<proto::Message>& msgs, uint64_t now) {
  const auto& m = cfg_.fe_members[p.index];
  if (changes & proto::Link::kWentUp) {
    if (p.link->peer_id() != m.id) {
      spdlog::warn("standby: the link to {} says it is '{}': dropped", m.id, p.link->peer_id());
      p.link->close("wrong id");
      return;
    }
    p.up = true;
    p.full_sent = false;
    p.heard_at = now;
    spdlog::info("standby: link to front-end {} up", m.id);
    p.link->send(proto::FeStateMsg{uint32_t(self_), active_.load(), active_.load() ? epoch_ : 0});
  }
  for (auto& msg : msgs) {
    if (auto* st = std::get_if<proto::FeStateMsg>(&msg)) {
      p.heard_at = now;
      if (st->active && !p.active)
        spdlog::info("standby: front-end {} is active (since {} ms unix)", m.id, st->epoch);
      p.active = st->active;
      p.epoch = st->epoch;
      if (st->active) {
        active_heard_ = now;
        std::lock_guard lk(mu_);
        active_peer_ = m.id;
      }
      if (st->active && active_.load()) {
        // Two active front-ends (a partition healed): both answer ARP for the VIP. Not
        // resolved automatically (docs/fe-restart.md): said loudly.
        spdlog::error("standby: front-end {} is active too (since {} ms; we since {} ms)", m.id,
                      st->epoch, epoch_);
      }
    } else if (auto* f = std::get_if<proto::FlowsMsg>(&msg)) {
      if (!active_.load()) apply(*f, now);
    }
  }
  if (changes & proto::Link::kWentDown) {
    if (p.up) spdlog::warn("standby: link to front-end {} lost: {}", m.id, p.link->reason());
    p.up = false;
    p.active = false;
  }
}

// A standby writes the active FE's flows into its own table: its own MAC as the source,
// its own clock for aging (the active's is another host's), closed flows lingering from
// now.
void Standby::apply(const proto::FlowsMsg& m, uint64_t now) {
  if (m.full) {
    std::vector<datapath::FlowKey> all;
    dp_.for_each_flow([&](const datapath::FlowKey& k, const tcpha_flow_value&) { all.push_back(k); });
    for (const auto& k : all) (void)dp_.remove(k);
  }
  for (const auto& e : m.entries) {
    datapath::FlowKey key;
    static_assert(sizeof key == 40);
    std::memcpy(&key, e.key.data(), sizeof key);
    if (e.gone) {
      (void)dp_.remove(key);
      continue;
    }
    tcpha_flow_value v{};
    v.state = e.state;
    v.flags = e.flags;
    v.backup = e.backup;
    v.backend = e.backend;
    std::memcpy(v.dmac, e.dmac.data(), sizeof v.dmac);
    std::memcpy(v.smac, mac_.data(), sizeof v.smac);
    v.last_seen_ns = now;
    if (v.flags & TCPHA_FLOW_F_BE_CLOSED) v.closing_ns = now;
    if (auto s = dp_.put(key, v); !s) spdlog::warn("standby: {}", s.error().message());
  }
  const uint64_t sent = m.sent_unix_ns, at = unix_ns();
  std::lock_guard lk(mu_);
  replicated_ += m.entries.size();
  if (at >= sent) transit_.record_ns(at - sent);
}

// The active FE: the table's changes since the last round to every standby, and a full
// copy to a link that has none yet.
void Standby::replicate(uint64_t) {
  bool any = false;
  for (const auto& p : peers_) any = any || p.up;
  if (!any) return;
  const uint64_t cpu0 = thread_cpu_ns();
  std::unordered_map<std::array<uint8_t, 40>, Shadow, KeyHash> now_table;
  now_table.reserve(shadow_.size() + 16);
  dp_.for_each_flow([&](const datapath::FlowKey& k, const tcpha_flow_value& v) {
    std::array<uint8_t, 40> key;
    std::memcpy(key.data(), &k, key.size());
    Shadow s{v.state, v.flags, v.backup, v.backend, {}};
    std::memcpy(s.dmac.data(), v.dmac, 6);
    now_table.emplace(key, s);
  });
  auto entry = [](const std::array<uint8_t, 40>& k, const Shadow* s) {
    proto::FlowsMsg::Entry e;
    e.key = k;
    if (!s) {
      e.gone = true;
      return e;
    }
    e.state = s->state;
    e.flags = s->flags;
    e.backup = s->backup;
    e.backend = s->backend;
    e.dmac = s->dmac;
    return e;
  };
  std::vector<proto::FlowsMsg::Entry> diff;
  for (const auto& [k, s] : now_table) {
    auto it = shadow_.find(k);
    if (it == shadow_.end() || !(it->second == s)) diff.push_back(entry(k, &s));
  }
  for (const auto& [k, s] : shadow_)
    if (!now_table.count(k)) diff.push_back(entry(k, nullptr));
  shadow_ = std::move(now_table);
  auto send_all = [&](Peer& p, const std::vector<proto::FlowsMsg::Entry>& es, bool full) {
    proto::FlowsMsg m;
    m.full = full;
    for (size_t i = 0; i < es.size() || (full && i == 0); i += proto::kFlowsMax) {
      m.entries.assign(es.begin() + std::min(i, es.size()),
                       es.begin() + std::min(i + proto::kFlowsMax, es.size()));
      m.sent_unix_ns = unix_ns();
      p.link->send(m);
      m.full = false;
    }
  };
  uint64_t sent = 0;
  std::vector<proto::FlowsMsg::Entry> full;
  for (auto& p : peers_) {
    if (!p.up) continue;
    if (!p.full_sent) {
      if (full.empty())
        for (const auto& [k, s] : shadow_) full.push_back(entry(k, &s));
      send_all(p, full, true);
      p.full_sent = true;
      sent += full.size();
    } else if (!diff.empty()) {
      send_all(p, diff, false);
      sent += diff.size();
    }
  }
  std::lock_guard lk(mu_);
  replicated_ += sent;
  if (sent) {
    sync_cpu_ns_ += thread_cpu_ns() - cpu0;
    synced_changes_ += sent;
  }
}

uint64_t Standby::claim_after(bool cold, size_t self, const std::vector<size_t>& earlier_alive) {
  // At start: time for an active one to be heard, and among front-ends starting
  // together, for the earlier ones in the file to claim first.
  if (cold) return kColdWaitNs + kPerPlaceNs * self;
  // The active one went silent: the first live standby of the file claims at once,
  // each later one a place after every live one before it (two would both answer ARP).
  uint64_t wait = kDownNs;
  for (size_t e : earlier_alive)
    if (e < self) wait = std::max(wait, kDownNs + kPerPlaceNs * (self - e));
  return wait;
}

void Standby::decide(uint64_t now) {
  if (active_.load() || promoted_.load()) return;
  // An active front-end heard lately: we stay a standby.
  if (active_heard_ && now - active_heard_ < kDownNs) return;
  std::vector<size_t> earlier;  // live standbys before us in the file
  for (const auto& p : peers_)
    if (p.up && p.index < self_ && !p.active && now - p.heard_at < kDownNs)
      earlier.push_back(p.index);
  const bool cold = active_heard_ == 0;
  if (now - (cold ? started_ : active_heard_) < claim_after(cold, self_, earlier)) return;
  promoted_.store(true);
  if (active_heard_)
    spdlog::warn("standby: no active front-end heard for {} ms: taking over",
                 (now - active_heard_) / 1'000'000);
  else
    spdlog::info("standby: no active front-end: this one becomes active");
  uint64_t one = 1;
  if (write(promote_.get(), &one, sizeof one) < 0) spdlog::warn("standby: {}", strerror(errno));
}

void Standby::run() {
  for (;;) {
    const uint64_t now = monotonic_ns();
    std::vector<pollfd> pfds;
    pfds.push_back({stop_.get(), POLLIN, 0});
    pfds.push_back({listener_.fd(), POLLIN, 0});
    for (auto& p : peers_) pfds.push_back({p.link->fd(), short(p.link->events()), 0});
    if (poll(pfds.data(), pfds.size(), 20) < 0 && errno != EINTR) return;
    if (pfds[0].revents) return;
    const uint64_t t = monotonic_ns();
    if (pfds[1].revents & POLLIN) on_accept(t);
    std::vector<proto::Message> msgs;
    {
      proto::WriteBatch batch;
      for (size_t i = 0; i < peers_.size() && i + 2 < pfds.size(); ++i) {
        Peer& p = peers_[i];
        msgs.clear();
        unsigned ch = 0;
        if (pfds[i + 2].revents && p.link->fd() == pfds[i + 2].fd)
          ch = p.link->on_events(uint32_t(pfds[i + 2].revents), msgs, t);
        ch |= p.link->tick(t);
        if (ch || !msgs.empty()) on_link(p, ch, msgs, t);
      }
      // Accepted links that failed are gone for good (the peer dials again).
      std::erase_if(peers_, [](const Peer& p) {
        return !p.dialer && p.link->state() == proto::Link::State::Closed;
      });
      if (t >= next_advert_) {
        next_advert_ = t + kAdvertNs;
        const proto::FeStateMsg st{uint32_t(self_), active_.load(), active_.load() ? epoch_ : 0};
        for (auto& p : peers_)
          if (p.up) p.link->send(st);
      }
      if (active_.load() && t >= next_sync_) {
        next_sync_ = t + kSyncNs;
        replicate(t);
      }
    }
    decide(t);
    (void)now;
  }
}

nlohmann::json Standby::status() const {
  using nlohmann::json;
  json peers = json::array();
  // peers_ belongs to the thread: only the configuration is read here.
  for (size_t i = 0; i < cfg_.fe_members.size(); ++i)
    if (i != self_) peers.push_back(cfg_.fe_members[i].id);
  std::lock_guard lk(mu_);
  json j = {{"state", active_.load() ? "active" : "standby"},
            {"priority", self_},
            {"peers", peers},
            {"replicated_flows", replicated_},
            {"transit_us", metrics::latency_json(transit_)},
            {"lag_ms_p99", double(kSyncNs) / 1e6 + transit_.quantile_us(0.99) / 1000.0},
            {"sync_cpu_ns_per_flow",
             synced_changes_ ? double(sync_cpu_ns_) / double(synced_changes_) : 0.0}};
  if (!active_.load()) j["active_peer"] = active_peer_;
  return j;
}

}  // namespace tcpha::fe
