#include "be/registration.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "common/net.hpp"
#include "proto/control.hpp"

namespace tcpha::be {
namespace {
constexpr int kBackoffMinMs = 100, kBackoffMaxMs = 5000;
}

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
  std::array<uint8_t, 32> key{};
  std::copy_n(cfg_.cluster.key.begin(), key.size(), key.begin());
  int backoff = kBackoffMinMs;
  while (!stopping_) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in fe{};
    fe.sin_family = AF_INET;
    fe.sin_addr = cfg_.frontend.addr;
    fe.sin_port = htons(cfg_.cluster.control_port);
    timeval tv{1, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&fe), sizeof fe) == 0) {
      proto::Session session(key, proto::Role::Be, self_.id);
      std::string in, out;
      session.start(out);
      bool joined = false, left = false;
      for (;;) {
        if (session.established() && !joined) {
          session.send(proto::JoinMsg{self_.id, self_.addr.s_addr, self_.weight, self_.groups}, out);
          joined = true;
          linked_ = true;
          backoff = kBackoffMinMs;
          spdlog::info("registered with the front-end at {}", endpoint_str(fe));
        }
        if (joined && leaving_ && !left) {
          session.send(proto::LeaveMsg{}, out);
          left = true;
        }
        if (!out.empty()) {
          ssize_t n = send(fd.get(), out.data(), out.size(), MSG_NOSIGNAL);
          if (n <= 0) break;
          out.erase(0, size_t(n));
        }
        pollfd p[2] = {{fd.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
        if (poll(p, 2, 1000) < 0) continue;
        if (stopping_) return;
        if (p[1].revents) {
          uint64_t v;
          if (read(wake_.get(), &v, sizeof v) < 0) {
          }
        }
        if (p[0].revents) {
          char buf[4096];
          ssize_t n = recv(fd.get(), buf, sizeof buf, MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN)) break;
          if (n > 0) {
            in.append(buf, size_t(n));
            std::vector<proto::Message> msgs;
            if (!session.feed(in, msgs)) {
              spdlog::warn("registration link: bad frame from the front-end");
              break;
            }
          }
        }
      }
      linked_ = false;
    }
    // The FE may not run yet, or restarted: try again, with backoff.
    pollfd p{wake_.get(), POLLIN, 0};
    poll(&p, 1, backoff);
    backoff = std::min(backoff * 2, kBackoffMaxMs);
  }
}

}  // namespace tcpha::be
