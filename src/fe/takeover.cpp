#include "fe/takeover.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include <spdlog/spdlog.h>

namespace tcpha::fe::takeover {
namespace {

constexpr size_t kMaxFds = 250;  // the kernel's SCM_MAX_FD is 253
constexpr size_t kMaxText = 16384;
constexpr const char* kRequest = "TAKEOVER 1";

Result<sockaddr_un> address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return Error{ENAMETOOLONG, "takeover socket " + path};
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  do rc = poll(&p, 1, timeout_ms);
  while (rc < 0 && errno == EINTR);
  return rc > 0;
}

// One message; "" on EOF, error or timeout.
std::string recv_text(int fd, int timeout_ms, std::vector<UniqueFd>* fds = nullptr) {
  if (!readable(fd, timeout_ms)) return "";
  std::string buf(kMaxText, '\0');
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))];
  iovec iov{buf.data(), buf.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n <= 0) return "";
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
      if (fds)
        fds->emplace_back(got);
      else
        close(got);  // none expected here
    }
  }
  if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return "";
  buf.resize(size_t(n));
  return buf;
}

}  // namespace

std::string socket_path(const std::string& status_socket) { return status_socket + ".takeover"; }

Result<Listener> Listener::open(const std::string& path) {
  auto a = address(path);
  if (!a) return a.error();
  // Bound under a temporary name with its mode set, then renamed into place: the path
  // never names a socket others could use, and a predecessor's is replaced at once.
  const std::string tmp = path + ".tmp" + std::to_string(getpid());
  auto t = address(tmp);
  if (!t) return t.error();
  Listener l;
  l.fd_.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!l.fd_.valid()) return sys_error("takeover socket");
  unlink(tmp.c_str());
  if (bind(l.fd_.get(), reinterpret_cast<const sockaddr*>(&*t), sizeof *t) != 0)
    return sys_error("bind " + tmp);
  if (chmod(tmp.c_str(), 0600) != 0 || listen(l.fd_.get(), 4) != 0 ||
      rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = sys_error("takeover socket " + path);
    unlink(tmp.c_str());
    return e;
  }
  l.path_ = path;
  return l;
}

Listener::~Listener() {
  if (!path_.empty()) unlink(path_.c_str());
}

UniqueFd Listener::accept_successor() {
  UniqueFd c(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!c.valid()) return c;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != 0 && cred.uid != geteuid())) {
    spdlog::warn("takeover: refused a connection from uid {}", cred.uid);
    return UniqueFd();
  }
  if (recv_text(c.get(), 1000) != kRequest) {
    spdlog::warn("takeover: a connection that did not ask for a takeover: closed");
    return UniqueFd();
  }
  return c;
}

Status send(int conn, const std::vector<std::pair<std::string, int>>& fds) {
  if (fds.size() > kMaxFds) return Error{E2BIG, "takeover: too many sockets to hand over"};
  std::string text = "FDS";
  for (const auto& [what, fd] : fds) text += "\n" + what;
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))]{};
  iovec iov{text.data(), text.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (!fds.empty()) {
    m.msg_control = control;
    m.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    for (size_t i = 0; i < fds.size(); ++i)
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fds[i].second, sizeof(int));
  }
  if (sendmsg(conn, &m, MSG_NOSIGNAL) < 0) return sys_error("takeover: send sockets");
  return {};
}

bool wait_ready(int conn, int timeout_ms) { return recv_text(conn, timeout_ms) == "READY"; }

Result<Session> request(const std::string& path) {
  auto a = address(path);
  if (!a) return a.error();
  Session s;
  s.conn.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s.conn.valid()) return sys_error("takeover socket");
  if (connect(s.conn.get(), reinterpret_cast<const sockaddr*>(&*a), sizeof *a) != 0)
    return sys_error("no front-end to take over at " + path);
  if (::send(s.conn.get(), kRequest, std::strlen(kRequest), MSG_NOSIGNAL) < 0)
    return sys_error("takeover: ask " + path);
  std::vector<UniqueFd> fds;
  const std::string text = recv_text(s.conn.get(), 5000, &fds);
  std::istringstream lines(text);
  std::string line;
  if (!std::getline(lines, line) || line != "FDS")
    return Error{EPROTO, "takeover: the running front-end did not hand its sockets over"};
  for (auto& fd : fds) {
    if (!std::getline(lines, line))
      return Error{EPROTO, "takeover: more sockets than descriptions"};
    s.fds.push_back({line, std::move(fd)});
  }
  return s;
}

Status say_ready(int conn) {
  if (::send(conn, "READY", 5, MSG_NOSIGNAL) < 0) return sys_error("takeover: say READY");
  return {};
}

}  // namespace tcpha::fe::takeover
