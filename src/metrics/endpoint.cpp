#include "metrics/endpoint.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <optional>
#include <string_view>
#include <vector>

#include "common/net.hpp"

namespace tcpha::metrics {
namespace {

constexpr int kBacklog = 64;
// After accept fails for lack of descriptors the listener stays readable; pausing it
// keeps the loop from spinning (and logging) until some descriptor is freed.
constexpr int64_t kAcceptPauseMs = 1000;

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// "ADDR:PORT" as parse_host_port reads it, plus port 0 (let the kernel choose).
std::optional<sockaddr_in> parse_listen_address(std::string_view s) {
  if (s.ends_with(":0")) {
    auto host = parse_ipv4(s.substr(0, s.size() - 2));
    if (!host) return std::nullopt;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr = *host;
    return sa;
  }
  return parse_host_port(s);
}

std::string http_response(std::string_view status, std::string_view content_type,
                          const std::string& body, bool head_only,
                          std::string_view extra_headers = {}) {
  std::string out = "HTTP/1.1 " + std::string(status) +
                    "\r\nContent-Type: " + std::string(content_type) +
                    "\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n" + std::string(extra_headers) + "\r\n";
  if (!head_only) out += body;
  return out;
}

std::string plain(std::string_view status, bool head_only = false,
                  std::string_view extra_headers = {}) {
  return http_response(status, "text/plain; charset=utf-8", std::string(status) + "\n", head_only,
                       extra_headers);
}

// Where the request head that starts at `from` ends (one past its blank line), or npos.
size_t head_end(const std::string& in, size_t from) {
  size_t crlf = in.find("\n\r\n", from), lf = in.find("\n\n", from);
  if (crlf != std::string::npos && (lf == std::string::npos || crlf < lf)) return crlf + 3;
  return lf == std::string::npos ? std::string::npos : lf + 2;
}

// The whole answer to one request head (request line first; header fields ignored).
std::string answer(std::string_view head, const Endpoint::Render& render) {
  std::string_view line = head.substr(0, head.find('\n'));
  if (line.ends_with('\r')) line.remove_suffix(1);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return plain("400 Bad Request");
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (method.empty() || target.empty() || target.find(' ') != std::string_view::npos ||
      !version.starts_with("HTTP/1."))
    return plain("400 Bad Request");
  const bool head_only = method == "HEAD";
  if (target.substr(0, target.find('?')) != "/metrics") return plain("404 Not Found", head_only);
  if (method != "GET" && !head_only)
    return plain("405 Method Not Allowed", false, "Allow: GET, HEAD\r\n");
  std::string body;
  try {
    body = render();
  } catch (const std::exception& e) {
    // A rendering bug must cost one scrape, not the daemon (the thread would terminate).
    spdlog::error("metrics: rendering failed: {}", e.what());
    return plain("500 Internal Server Error", head_only);
  }
  return http_response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body, head_only);
}

struct Client {
  enum State { Reading, Writing, Draining };
  UniqueFd fd;
  State state = Reading;
  std::string in, out;
  size_t sent = 0;
  int64_t deadline = 0;
};

// Sends what it can of the answer; once all is sent, half-closes and waits for the
// client's EOF (closing with unread input would reset the connection and could
// destroy the answer in flight). Returns false when the connection is finished.
bool flush(Client& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    c.sent += size_t(n);
  }
  ::shutdown(c.fd.get(), SHUT_WR);
  c.state = Client::Draining;
  c.deadline = std::min(c.deadline, now_ms() + Endpoint::kHeadTimeoutMs);
  return true;
}

// Handles readiness of one client; returns false when it is to be closed.
bool serve(Client& c, short revents, const Endpoint::Render& render) {
  if (c.state == Client::Writing) return (revents & (POLLERR | POLLHUP)) ? false : flush(c);
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    if (n == 0) return false;  // client gone, or done after our answer
    if (c.state == Client::Draining) continue;
    c.in.append(buf, size_t(n));
    // Empty lines before a request line are allowed (RFC 9112 section 2.2).
    size_t start = c.in.find_first_not_of("\r\n");
    size_t end = start == std::string::npos ? std::string::npos : head_end(c.in, start);
    if (end == std::string::npos && c.in.size() < Endpoint::kMaxHead) continue;
    c.out = end == std::string::npos || end > Endpoint::kMaxHead
                ? plain("431 Request Header Fields Too Large")
                : answer(std::string_view(c.in).substr(start, end - start), render);
    c.in.clear();
    c.state = Client::Writing;
    c.deadline = now_ms() + Endpoint::kWriteTimeoutMs;
    return flush(c);
  }
}

// The slot a new connection may take when all are in use: the one that has waited
// longest without a complete head (the earliest deadline among the Reading ones), so
// holding slots open costs a client its own slot, not the scrapers theirs. end() when
// every slot is answering.
std::vector<Client>::iterator evictable(std::vector<Client>& clients) {
  auto oldest = clients.end();
  for (auto it = clients.begin(); it != clients.end(); ++it)
    if (it->state == Client::Reading && (oldest == clients.end() || it->deadline < oldest->deadline))
      oldest = it;
  return oldest;
}

}  // namespace

Result<std::unique_ptr<Endpoint>> Endpoint::start(const std::string& addr_port, Render render,
                                                  std::vector<Ipv4Prefix> allow) {
  auto sa = parse_listen_address(addr_port);
  if (!sa) return app_error("metrics endpoint: '" + addr_port + "' is not ADDR:PORT");
  if (allow.empty() && !is_loopback(sa->sin_addr))
    return app_error("metrics endpoint: " + addr_port +
                     " is reachable from other hosts: list who may scrape it (metrics_allow)");
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("metrics endpoint: socket");
  int one = 1;  // a restarted daemon must rebind while old connections sit in TIME_WAIT
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
    return sys_error("metrics endpoint: setsockopt(SO_REUSEADDR)");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof *sa) < 0)
    return sys_error("metrics endpoint: bind " + addr_port);
  if (::listen(fd.get(), kBacklog) < 0) return sys_error("metrics endpoint: listen " + addr_port);
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) < 0)
    return sys_error("metrics endpoint: getsockname");
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop.valid()) return sys_error("metrics endpoint: eventfd");
  return std::unique_ptr<Endpoint>(new Endpoint(std::move(fd), std::move(stop), bound,
                                                std::move(render), std::move(allow)));
}

Endpoint::Endpoint(UniqueFd listener, UniqueFd stop, sockaddr_in bound, Render render,
                   std::vector<Ipv4Prefix> allow)
    : listener_(std::move(listener)),
      stop_(std::move(stop)),
      bound_(bound),
      render_(std::move(render)),
      allow_(std::move(allow)),
      thread_([this] { run(); }) {}

bool Endpoint::allowed(in_addr peer) const {
  if (allow_.empty()) return is_loopback(peer);
  return std::any_of(allow_.begin(), allow_.end(),
                     [&](const Ipv4Prefix& p) { return p.contains(peer); });
}

Endpoint::~Endpoint() {
  uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof one) < 0)
    spdlog::error("metrics endpoint: cannot stop: {}", std::strerror(errno));
  thread_.join();
}

void Endpoint::run() {
  std::vector<Client> clients;
  std::vector<pollfd> fds;
  int64_t accept_paused_until = 0;
  for (;;) {
    int64_t now = now_ms();
    std::erase_if(clients, [&](const Client& c) { return c.deadline <= now; });

    // With every slot taken, a new connection may still take the slot of one waiting
    // for its head (evictable); with every slot answering, it waits in the backlog.
    const bool room = clients.size() < kMaxClients || evictable(clients) != clients.end();
    const bool accepting = room && now >= accept_paused_until;
    fds.assign(
        {pollfd{stop_.get(), POLLIN, 0}, pollfd{accepting ? listener_.get() : -1, POLLIN, 0}});
    // Wake for the earliest client deadline, or when a paused listener may resume (a
    // listener off because every slot is answering resumes when a client leaves).
    int64_t wake = !accepting && room ? accept_paused_until : INT64_MAX;
    for (const Client& c : clients) {
      fds.push_back({c.fd.get(), short(c.state == Client::Writing ? POLLOUT : POLLIN), 0});
      wake = std::min(wake, c.deadline);
    }
    int timeout = wake == INT64_MAX ? -1 : int(std::clamp<int64_t>(wake - now, 0, 60'000));

    if (::poll(fds.data(), fds.size(), timeout) < 0) {
      if (errno != EINTR) spdlog::error("metrics endpoint: poll: {}", std::strerror(errno));
      continue;
    }
    if (fds[0].revents) return;

    // Clients first: fds[2 + i] describes clients[i] only until clients changes.
    for (size_t i = clients.size(); i-- > 0;)
      if (fds[2 + i].revents && !serve(clients[i], fds[2 + i].revents, render_))
        clients.erase(clients.begin() + std::ptrdiff_t(i));

    if (!(fds[1].revents & POLLIN)) continue;
    for (;;) {
      if (clients.size() >= kMaxClients && evictable(clients) == clients.end()) break;
      sockaddr_in peer{};
      socklen_t peer_len = sizeof peer;
      int fd = ::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        UniqueFd conn(fd);
        if (peer.sin_family != AF_INET || !allowed(peer.sin_addr)) {
          spdlog::debug("metrics endpoint: {} is not in metrics_allow; closed",
                        endpoint_str(peer));
          continue;  // closed unanswered
        }
        if (clients.size() >= kMaxClients) clients.erase(evictable(clients));
        clients.push_back(
            Client{std::move(conn), Client::Reading, {}, {}, 0, now_ms() + kHeadTimeoutMs});
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        spdlog::warn("metrics endpoint: accept: {}", std::strerror(errno));
        accept_paused_until = now_ms() + kAcceptPauseMs;
      }
      break;
    }
  }
}

}  // namespace tcpha::metrics
