#include "fe/membership.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <list>
#include <map>

#include "common/clock.hpp"
#include "common/net.hpp"
#include "proto/link.hpp"

namespace tcpha::fe {
namespace {

constexpr uint64_t kTickNs = 100'000'000;

struct Slot {
  explicit Slot(proto::LinkOptions o) : link(std::move(o)) {}
  proto::Link link;
  std::string id;     // the id this link holds (its JOIN was accepted and not superseded)
  bool dead = false;  // dropped; erased after the current batch of events
};

}  // namespace

Result<std::unique_ptr<Membership>> Membership::start(const config::Config& cfg, Handlers h,
                                                     UniqueFd given) {
  if (given.valid()) {
    auto l = ListenSocket::adopt(std::move(given));
    if (!l) return Error{l.error().err, "registration port handed over: " + l.error().what};
    return std::unique_ptr<Membership>(new Membership(cfg, std::move(*l), std::move(h)));
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = cfg.frontend.addr;
  a.sin_port = htons(cfg.cluster.control_port);
  auto l = ListenSocket::open(a, 64);
  if (!l) return Error{l.error().err, "registration port: " + l.error().what};
  return std::unique_ptr<Membership>(new Membership(cfg, std::move(*l), std::move(h)));
}

Membership::Membership(const config::Config& cfg, ListenSocket listener, Handlers h)
    : self_id_(cfg.frontend.id),
      listener_(std::move(listener)),
      stop_(eventfd(0, EFD_CLOEXEC)),
      h_(std::move(h)) {
  std::copy_n(cfg.cluster.key.begin(), key_.size(), key_.begin());
  thread_ = std::thread([this] { run(); });
}

Membership::~Membership() {
  uint64_t one = 1;
  if (write(stop_.get(), &one, sizeof one) < 0)
    spdlog::warn("membership wake: {}", strerror(errno));
  thread_.join();
}

void Membership::run() {
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  int stop_tag = 0, listen_tag = 0;  // addresses only: what woke us
  epoll_event sev{};
  sev.events = EPOLLIN;
  sev.data.ptr = &stop_tag;
  epoll_ctl(ep.get(), EPOLL_CTL_ADD, stop_.get(), &sev);
  listener_.attach(ep.get(), &listen_tag);

  proto::LinkOptions opt;
  opt.key = key_;
  opt.role = proto::Role::Fe;
  opt.node_id = self_id_;
  opt.keepalive_ns = proto::kRegistrationKeepaliveNs;
  opt.idle_ns = proto::kRegistrationIdleNs;
  std::list<Slot> slots;
  std::map<std::string, Slot*> holders;  // id -> the slot whose JOIN holds it
  size_t open = 0;                       // slots not dropped

  // Bookkeeping at once; the slot itself goes after the batch of events it is in.
  auto drop = [&](Slot& s, const std::string& why) {
    if (s.dead) return;
    s.dead = true;
    --open;
    s.link.stop(why);
    if (!s.id.empty()) {
      spdlog::info("registration link of {} closed: {}", s.id, why);
      holders.erase(s.id);
      h_.gone(s.id);
    } else {
      spdlog::debug("registration link from {} closed: {}", endpoint_str(s.link.peer()), why);
    }
  };
  // Returns false when the link must close (the reason in `why`).
  auto on_message = [&](Slot& s, const proto::Message& m, std::string& why) {
    if (const auto* j = std::get_if<proto::JoinMsg>(&m)) {
      if (j->id != s.link.peer_id()) {
        why = "JOIN for '" + j->id + "' on the link of '" + s.link.peer_id() + "'";
        return false;
      }
      auto held = holders.find(j->id);
      if (held != holders.end() && held->second != &s &&
          held->second->link.peer().sin_addr.s_addr != s.link.peer().sin_addr.s_addr) {
        why = "JOIN for '" + j->id + "', which a live link from " +
              ipv4_str(held->second->link.peer().sin_addr) + " holds";
        return false;
      }
      why = h_.join(*j, s.link.peer().sin_addr);
      if (!why.empty()) {
        why = "JOIN refused: " + why;
        return false;
      }
      if (held != holders.end() && held->second != &s) {
        // The same BE again on a new link (it restarted or redialled): the new link holds
        // the id from now on; the old one closes without removing anything.
        held->second->id.clear();
        drop(*held->second, "superseded by a new registration of " + j->id);
      }
      s.id = j->id;
      holders[s.id] = &s;
    } else if (std::holds_alternative<proto::LeaveMsg>(m)) {
      if (!s.id.empty()) h_.leave(s.id);
    }
    return true;  // heartbeats only keep the link alive
  };

  // A new connection when all slots are taken displaces the oldest one still in its
  // handshake: a flood of idle connections cannot lock registered BEs out for longer
  // than it keeps flooding, and never displaces an authenticated link.
  auto make_room = [&] {
    if (open < kMaxLinks) return true;
    for (Slot& s : slots)
      if (!s.dead && !s.link.up()) {
        drop(s, "displaced by a newer connection (" + std::to_string(kMaxLinks) + " links open)");
        return true;
      }
    return false;
  };

  epoll_event evs[64];
  uint64_t next_tick = 0;
  std::vector<proto::Message> msgs;
  for (;;) {
    const int n = epoll_wait(ep.get(), evs, 64, int(kTickNs / 1'000'000));
    const uint64_t now = monotonic_ns();
    for (int i = 0; i < n; ++i) {
      void* tag = evs[i].data.ptr;
      if (tag == &stop_tag) return;
      if (tag == &listen_tag) {
        for (int burst = 0; burst < 64; ++burst) {
          sockaddr_in peer{};
          UniqueFd c = listener_.accept(&peer, now);
          if (!c.valid()) break;
          if (!make_room()) {
            spdlog::warn("registration from {} refused: {} links open", endpoint_str(peer),
                         kMaxLinks);
            continue;
          }
          Slot& s = slots.emplace_back(opt);
          ++open;
          s.link.attach(ep.get(), &s);
          s.link.adopt(std::move(c), peer, now);
        }
        continue;
      }
      Slot& s = *static_cast<Slot*>(tag);
      if (s.dead) continue;
      msgs.clear();
      const unsigned r = s.link.on_events(evs[i].events, msgs, now);
      std::string why;
      bool ok = true;
      for (const auto& m : msgs)
        if (!(ok = on_message(s, m, why))) break;
      if (!ok)
        drop(s, why);
      else if (r & proto::Link::kWentDown)
        drop(s, s.link.reason());
    }
    if (now >= next_tick) {
      next_tick = now + kTickNs;
      listener_.tick(now);
      for (Slot& s : slots)
        if (!s.dead && (s.link.tick(now) & proto::Link::kWentDown)) drop(s, s.link.reason());
    }
    slots.remove_if([](const Slot& s) { return s.dead; });
  }
}

}  // namespace tcpha::fe
