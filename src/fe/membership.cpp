#include "fe/membership.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <list>

#include <spdlog/spdlog.h>

#include "common/net.hpp"

namespace tcpha::fe {
namespace {

constexpr size_t kMaxLinks = 1024;  // registrations at once; more are refused

struct Link {
  Link(const std::array<uint8_t, 32>& key, const std::string& self)
      : session(key, proto::Role::Fe, self) {}
  UniqueFd fd;
  proto::Session session;
  std::string in, out;
  std::string id;  // set by JOIN
};

}  // namespace

Result<std::unique_ptr<Membership>> Membership::start(const config::Config& cfg, Handlers h) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = cfg.frontend.addr;
  a.sin_port = htons(cfg.cluster.control_port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return sys_error("bind registration port " + endpoint_str(a));
  if (listen(fd.get(), 64) != 0) return sys_error("listen");
  return std::unique_ptr<Membership>(new Membership(cfg, std::move(fd), std::move(h)));
}

Membership::Membership(const config::Config& cfg, UniqueFd listener, Handlers h)
    : self_id_(cfg.frontend.id), listener_(std::move(listener)),
      stop_(eventfd(0, EFD_CLOEXEC)), h_(std::move(h)) {
  std::copy_n(cfg.cluster.key.begin(), key_.size(), key_.begin());
  thread_ = std::thread([this] { run(); });
}

Membership::~Membership() {
  uint64_t one = 1;
  if (write(stop_.get(), &one, sizeof one) < 0) spdlog::warn("membership wake: {}", strerror(errno));
  thread_.join();
}

void Membership::run() {
  std::list<Link> links;
  auto drop = [&](std::list<Link>::iterator it, const std::string& why) {
    if (!it->id.empty()) {
      spdlog::info("registration link of {} closed: {}", it->id, why);
      h_.gone(it->id);
    }
    return links.erase(it);
  };
  for (;;) {
    std::vector<pollfd> fds{{stop_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
    for (auto& l : links)
      fds.push_back({l.fd.get(), short(POLLIN | (l.out.empty() ? 0 : POLLOUT)), 0});
    if (poll(fds.data(), fds.size(), 1000) < 0) continue;
    if (fds[0].revents) return;
    if (fds[1].revents & POLLIN) {
      UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (c.valid() && links.size() < kMaxLinks) {
        links.emplace_back(key_, self_id_);
        links.back().fd = std::move(c);
        links.back().session.start(links.back().out);
      }
    }
    size_t i = 2;
    for (auto it = links.begin(); it != links.end(); ++i) {
      Link& l = *it;
      short ev = i < fds.size() ? fds[i].revents : 0;
      bool dead = false;
      std::string why;
      if (ev & POLLIN) {
        char buf[4096];
        ssize_t n = recv(l.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
          l.in.append(buf, size_t(n));
          std::vector<proto::Message> msgs;
          Status s = l.session.feed(l.in, msgs);
          for (auto& m : msgs) {
            if (auto* j = std::get_if<proto::JoinMsg>(&m)) {
              if (j->id != l.session.peer_id()) {
                dead = true;
                why = "JOIN for '" + j->id + "' on the link of '" + l.session.peer_id() + "'";
                break;
              }
              l.id = j->id;
              h_.join(*j);
            } else if (std::holds_alternative<proto::LeaveMsg>(m) && !l.id.empty()) {
              h_.leave(l.id);
            }
          }
          if (!s) {
            dead = true;
            why = "bad frame: " + s.error().message();
          }
        } else if (n == 0 || errno != EAGAIN) {
          dead = true;
          why = n == 0 ? "closed by the back-end" : strerror(errno);
        }
      } else if (ev & (POLLHUP | POLLERR)) {
        dead = true;
        why = "connection error";
      }
      if (!dead && !l.out.empty()) {
        ssize_t n = send(l.fd.get(), l.out.data(), l.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) l.out.erase(0, size_t(n));
        else if (n < 0 && errno != EAGAIN) {
          dead = true;
          why = strerror(errno);
        }
      }
      it = dead ? drop(it, why) : std::next(it);
    }
  }
}

}  // namespace tcpha::fe
