#include "common/net.hpp"

#include <arpa/inet.h>
#include <sys/un.h>

#include <charconv>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "tcpha_shared.h"

namespace tcpha {

std::optional<in_addr> parse_ipv4(std::string_view s) {
  if (s.size() > INET_ADDRSTRLEN) return std::nullopt;
  std::string tmp(s);
  in_addr a{};
  if (inet_pton(AF_INET, tmp.c_str(), &a) != 1) return std::nullopt;
  return a;
}

std::optional<in6_addr> parse_ipv6(std::string_view s) {
  if (s.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  std::string tmp(s);
  in6_addr a{};
  if (inet_pton(AF_INET6, tmp.c_str(), &a) != 1) return std::nullopt;
  return a;
}

std::string ipv6_str(const in6_addr& a) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &a, buf, sizeof buf);
  return buf;
}

Endpoint Endpoint::v4(uint32_t be_addr, uint16_t be_port) {
  Endpoint e;
  e.family = AF_INET;
  e.addr[0] = be_addr;
  e.port = be_port;
  return e;
}

Endpoint Endpoint::v6(const in6_addr& a, uint16_t be_port) {
  Endpoint e;
  e.family = AF_INET6;
  std::memcpy(e.addr.data(), &a, sizeof a);
  e.port = be_port;
  return e;
}

std::optional<Endpoint> Endpoint::of(const sockaddr* sa, socklen_t len) {
  if (sa->sa_family == AF_INET && len >= socklen_t(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    return v4(in->sin_addr.s_addr, in->sin_port);
  }
  if (sa->sa_family == AF_INET6 && len >= socklen_t(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    return v6(in6->sin6_addr, in6->sin6_port);
  }
  return std::nullopt;
}

in6_addr Endpoint::in6() const {
  in6_addr a{};
  std::memcpy(&a, addr.data(), sizeof a);
  return a;
}

socklen_t Endpoint::to_sockaddr(sockaddr_storage& ss) const {
  ss = {};
  if (is_v6()) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_addr = this->in6();
    in6->sin6_port = port;
    return sizeof(sockaddr_in6);
  }
  auto* in = reinterpret_cast<sockaddr_in*>(&ss);
  in->sin_family = AF_INET;
  in->sin_addr.s_addr = addr[0];
  in->sin_port = port;
  return sizeof(sockaddr_in);
}

std::string Endpoint::addr_str() const { return is_v6() ? ipv6_str(in6()) : ipv4_str(addr[0]); }

std::string Endpoint::str() const {
  // Appended piece by piece: GCC 12 at -O3 warns (-Wrestrict, a false positive) about
  // "[" + std::string.
  std::string s;
  if (is_v6()) s += '[';
  s += addr_str();
  if (is_v6()) s += ']';
  s += ':';
  s += std::to_string(ntohs(port));
  return s;
}

std::optional<Ipv4Prefix> parse_ipv4_prefix(std::string_view s) {
  size_t slash = s.find('/');
  auto a = parse_ipv4(s.substr(0, slash));
  if (!a) return std::nullopt;
  Ipv4Prefix p;
  if (slash != std::string_view::npos) {
    std::string_view len = s.substr(slash + 1);
    auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), p.length);
    if (len.empty() || ec != std::errc() || end != len.data() + len.size() || p.length < 0 ||
        p.length > 32)
      return std::nullopt;
  }
  p.network = ntohl(a->s_addr);
  if (!p.contains(*a)) return std::nullopt;  // host bits set
  return p;
}

void mark_done(int fd) {
  const uint32_t mark = TCPHA_MARK_DONE;
  (void)setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark);
  const linger normal{0, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &normal, sizeof normal);
}

void abort_on_close(int fd) {
  const linger at_once{1, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &at_once, sizeof at_once);
}

bool is_loopback(in_addr a) { return (ntohl(a.s_addr) >> 24) == 127; }

std::string ipv4_str(in_addr a) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string ipv4_str(uint32_t be_addr) {
  in_addr a{};
  a.s_addr = be_addr;
  return ipv4_str(a);
}

std::string mac_str(const Mac& m) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                m[5]);
  return buf;
}

std::optional<sockaddr_in> parse_host_port(std::string_view s) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto host = parse_ipv4(s.substr(0, colon));
  if (!host) return std::nullopt;
  auto port_s = s.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_s.data(), port_s.data() + port_s.size(), port);
  if (ec != std::errc{} || p != port_s.data() + port_s.size() || port == 0 || port > 65535)
    return std::nullopt;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr = *host;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  return sa;
}

std::string endpoint_str(const sockaddr_in& sa) {
  return ipv4_str(sa.sin_addr) + ":" + std::to_string(ntohs(sa.sin_port));
}

std::optional<SocketAddress> parse_socket_address(std::string_view s) {
  SocketAddress a;
  a.text = std::string(s);
  constexpr std::string_view kUnix = "unix:";
  if (s.substr(0, kUnix.size()) == kUnix) {
    auto path = s.substr(kUnix.size());
    sockaddr_un un{};
    // Absolute only: the agent's working directory is not the operator's. The path
    // needs its terminating NUL inside sun_path; no NUL may hide inside it.
    if (path.empty() || path[0] != '/' || path.size() >= sizeof un.sun_path ||
        path.find('\0') != std::string_view::npos)
      return std::nullopt;
    un.sun_family = AF_UNIX;
    path.copy(un.sun_path, path.size());
    std::memcpy(&a.storage, &un, sizeof un);
    a.length = socklen_t(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return a;
  }
  auto in = parse_host_port(s);
  if (!in) return std::nullopt;
  std::memcpy(&a.storage, &*in, sizeof *in);
  a.length = sizeof *in;
  return a;
}

}  // namespace tcpha
