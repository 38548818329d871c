#include "be/registration.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "common/clock.hpp"
#include "common/net.hpp"
#include "proto/link.hpp"

namespace tcpha::be {

Registration::Registration(const config::Config& cfg, const config::BackendSection& self)
    : cfg_(cfg), self_(self), wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  thread_ = std::thread([this] { run(); });
}

Registration::~Registration() {
  stopping_ = true;
  uint64_t one = 1;
  if (write(wake_.get(), &one, sizeof one) < 0) spdlog::warn("registration wake: {}", strerror(errno));
  thread_.join();
}

void Registration::leave() {
  leaving_ = true;
  uint64_t one = 1;
  if (write(wake_.get(), &one, sizeof one) < 0) spdlog::warn("registration wake: {}", strerror(errno));
}

void Registration::run() {
  proto::LinkOptions opt;
  std::copy_n(cfg_.cluster.key.begin(), opt.key.size(), opt.key.begin());
  opt.role = proto::Role::Be;
  opt.node_id = self_.id;
  // Keepalives both ways: a restarted FE answers ours with a reset, one that vanished
  // goes silent; either way we dial again (with backoff) and JOIN again.
  opt.keepalive_ns = proto::kRegistrationKeepaliveNs;
  opt.idle_ns = proto::kRegistrationIdleNs;
  opt.source = self_.addr;  // the FE ties our JOIN to the address the link comes from
  proto::Link link(std::move(opt));
  // With hot standbys only the active front-end listens: while no link comes up, the
  // next front-end of the file is tried every kNextFeNs.
  constexpr uint64_t kNextFeNs = 1'500'000'000;
  size_t target = 0;
  auto fe_at = [&](size_t i) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = cfg_.fe_members.empty() ? cfg_.frontend.addr : cfg_.fe_members[i].addr;
    a.sin_port = htons(cfg_.cluster.control_port);
    return a;
  };
  sockaddr_in fe = fe_at(0);
  uint64_t dialed_at = monotonic_ns(), up_at = 0;
  link.dial(fe, dialed_at);
  bool left = false;
  std::vector<proto::Message> msgs;
  while (!stopping_) {
    pollfd p[2] = {{wake_.get(), POLLIN, 0}, {link.fd(), short(link.events()), 0}};
    if (poll(p, link.fd() >= 0 ? 2 : 1, 100) < 0 && errno != EINTR) {
      spdlog::error("registration poll: {}", strerror(errno));
      return;
    }
    if (stopping_) return;
    uint64_t v;
    if (p[0].revents && read(wake_.get(), &v, sizeof v) < 0 && errno != EAGAIN)
      spdlog::warn("registration wake read: {}", strerror(errno));
    const uint64_t now = monotonic_ns();
    unsigned r = 0;
    msgs.clear();
    if (link.fd() >= 0 && p[1].revents) r |= link.on_events(uint32_t(p[1].revents), msgs, now);
    r |= link.tick(now);  // messages from the FE are keepalives only
    if (!link.up() && cfg_.fe_members.size() > 1 && now - std::max(dialed_at, up_at) > kNextFeNs) {
      target = (target + 1) % cfg_.fe_members.size();
      fe = fe_at(target);
      link.stop("trying the next front-end");
      link.dial(fe, now);
      dialed_at = now;
      continue;
    }
    if (r & proto::Link::kWentUp) {
      left = false;
      link.send(proto::JoinMsg{self_.id, self_.addr.s_addr, self_.weight, self_.groups});
      linked_ = true;
      spdlog::info("registered with the front-end at {}", endpoint_str(fe));
    }
    if (link.up() && leaving_ && !left) left = link.send(proto::LeaveMsg{});
    if (r & proto::Link::kWentDown) {
      if (linked_) spdlog::warn("registration link to the front-end lost: {}", link.reason());
      linked_ = false;
      up_at = now;  // the next front-end is tried kNextFeNs from here
    }
  }
}

}  // namespace tcpha::be
