#include "status/status_socket.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

namespace tcpha::status {
namespace {

constexpr int kIoTimeoutMs = 2000;

Result<sockaddr_un> unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return app_error("socket path too long: " + path);
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

bool wait_fd(int fd, short events) {
  pollfd p{fd, events, 0};
  return poll(&p, 1, kIoTimeoutMs) > 0;
}

}  // namespace

std::string default_socket_path(const std::string& id) { return "/run/tcpha/" + id + ".sock"; }

bool command_allowed(const std::string& command, uid_t peer_uid, uid_t daemon_uid) {
  if (command.empty() || command == "status" || command == "ping") return true;
  return peer_uid == 0 || peer_uid == daemon_uid;
}

Result<std::unique_ptr<Server>> Server::start(const std::string& path, Handler handler,
                                              bool replace) {
  if (auto a = unix_addr(path); !a) return a.error();
  std::error_code ec;
  auto file = std::filesystem::path(path);
  auto dir = file.parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  // A socket file nobody answers on is a leftover of a crashed daemon: the rename
  // below replaces it.
  if (!replace && query(path, "ping").ok()) return app_error("status socket " + path + " is in use");

  // bind() creates the file with the process umask's mode; a chmod() afterwards leaves
  // a window in which anyone may connect. So: bind in a fresh 0700 directory next to
  // the target (nobody else can reach the socket there), set 0660, rename into place.
  std::string tmp_dir = (dir.empty() ? std::filesystem::path(".") : dir).string() + "/." +
                        file.filename().string() + ".XXXXXX";
  if (!mkdtemp(tmp_dir.data())) return sys_error("mkdtemp " + tmp_dir);
  const std::string tmp = tmp_dir + "/s";
  auto addr = unix_addr(tmp);
  UniqueFd fd;
  Status bound = [&]() -> Status {
    if (!addr) return addr.error();
    fd.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return sys_error("socket(AF_UNIX)");
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0)
      return sys_error("bind " + tmp);
    if (chmod(tmp.c_str(), 0660) != 0) return sys_error("chmod " + tmp);
    if (listen(fd.get(), 16) != 0) return sys_error("listen " + tmp);
    if (rename(tmp.c_str(), path.c_str()) != 0) return sys_error("rename to " + path);
    return {};
  }();
  unlink(tmp.c_str());  // only left when a step failed
  rmdir(tmp_dir.c_str());
  if (!bound) return bound.error();
  return std::unique_ptr<Server>(new Server(path, std::move(fd), std::move(handler)));
}

Server::Server(std::string path, UniqueFd fd, Handler h)
    : path_(std::move(path)), fd_(std::move(fd)), stop_(eventfd(0, EFD_CLOEXEC)),
      handler_(std::move(h)) {
  thread_ = std::thread([this] { run(); });
}

Server::~Server() {
  uint64_t one = 1;
  if (write(stop_.get(), &one, sizeof one) < 0) spdlog::warn("status: wake: {}", strerror(errno));
  thread_.join();
  if (!path_.empty()) unlink(path_.c_str());
}

void Server::run() {
  for (;;) {
    pollfd p[2] = {{fd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (poll(p, 2, -1) < 0) continue;
    if (p[1].revents) return;
    UniqueFd c(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!c.valid()) continue;
    ucred peer{};
    socklen_t peer_len = sizeof peer;
    if (getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0) continue;
    std::string cmd;
    char buf[512];
    while (cmd.find('\n') == std::string::npos && cmd.size() < 4096 && wait_fd(c.get(), POLLIN)) {
      ssize_t n = recv(c.get(), buf, sizeof buf, 0);
      if (n <= 0) break;
      cmd.append(buf, size_t(n));
    }
    if (auto nl = cmd.find('\n'); nl != std::string::npos) cmd.resize(nl);
    std::string answer;
    if (!command_allowed(cmd, peer.uid, geteuid())) {
      spdlog::warn("status: a command from uid {} (pid {}) refused: only root or uid {} may "
                   "change the daemon",
                   peer.uid, peer.pid, geteuid());
      answer = "{\"ok\":false,\"error\":\"permission denied: only root or the daemon's user "
               "may change it\"}";
    } else {
      answer = cmd == "ping" ? std::string("{\"pong\":true}") : handler_(cmd);
    }
    answer += '\n';
    size_t off = 0;
    while (off < answer.size() && wait_fd(c.get(), POLLOUT)) {
      ssize_t n = send(c.get(), answer.data() + off, answer.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += size_t(n);
    }
  }
}

Result<std::string> query(const std::string& path, const std::string& command) {
  auto addr = unix_addr(path);
  if (!addr) return addr.error();
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket(AF_UNIX)");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0)
    return sys_error("connect " + path);
  timeval tv{kIoTimeoutMs / 1000, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string line = command + "\n";
  if (send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != ssize_t(line.size()))
    return sys_error("send to " + path);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) return sys_error("read from " + path);
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

}  // namespace tcpha::status
