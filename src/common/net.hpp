#pragma once
// Small address helpers shared by every component.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tcpha {

using Mac = std::array<uint8_t, 6>;

std::optional<in_addr> parse_ipv4(std::string_view s);
std::string ipv4_str(in_addr a);
std::string ipv4_str(uint32_t be_addr);
std::string mac_str(const Mac& m);
// "host:port" with a dotted IPv4 host; nullopt when malformed.
std::optional<sockaddr_in> parse_host_port(std::string_view s);
std::string endpoint_str(const sockaddr_in& sa);
// An AF_INET socket address from a network-order address and port.
inline sockaddr_in ipv4_endpoint(uint32_t be_addr, uint16_t be_port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = be_addr;
  a.sin_port = be_port;
  return a;
}

// One end of a client connection on a VIP, IPv4 or IPv6, laid out like the addresses
// of tcpha_flow_key: network order, IPv4 in word 0 and the other words zero. Only
// client connections are dual-stack; back-end and control addresses stay IPv4.
struct Endpoint {
  uint8_t family = AF_INET;  // AF_INET or AF_INET6
  std::array<uint32_t, 4> addr{};
  uint16_t port = 0;  // network order

  static Endpoint v4(uint32_t be_addr, uint16_t be_port);
  static Endpoint v6(const in6_addr& a, uint16_t be_port);
  // nullopt for a family other than AF_INET/AF_INET6 or a short length.
  static std::optional<Endpoint> of(const sockaddr* sa, socklen_t len);
  static std::optional<Endpoint> of(const sockaddr_storage& ss, socklen_t len) {
    return of(reinterpret_cast<const sockaddr*>(&ss), len);
  }
  bool is_v6() const { return family == AF_INET6; }
  in6_addr in6() const;
  // The socket address and its length.
  socklen_t to_sockaddr(sockaddr_storage& ss) const;
  std::string addr_str() const;  // "192.0.2.1" or "fd00::1"
  std::string str() const;       // "192.0.2.1:80" or "[fd00::1]:80"
  // 32 bits of the address for hashing (per-client quotas, client hash routing): an
  // IPv4 address itself, an IPv6 one folded (its words xor-ed).
  uint32_t addr32() const { return is_v6() ? addr[0] ^ addr[1] ^ addr[2] ^ addr[3] : addr[0]; }
  bool operator==(const Endpoint&) const = default;
};

std::optional<in6_addr> parse_ipv6(std::string_view s);
std::string ipv6_str(const in6_addr& a);

// Back-ends with failover on: marks a client socket the agent is about to end itself
// (shutdown or close: FIN or RST) with SO_MARK TCPHA_MARK_DONE, which its egress
// guard lets through; the FIN/RST of unmarked sockets are dropped there, as those of
// a killed agent's sockets must be. Best effort and silent: if it fails the guard
// drops the FIN/RST and the client times out, which can only happen while failover
// is on (the guard is off otherwise, and then this need not be called). It also
// undoes abort_on_close: the FIN of a graceful end must go out and be retransmitted.
void mark_done(int fd);

// Back-ends with failover on: a client socket the agent serves closes with an abort
// (SO_LINGER with a zero time) until mark_done, so that when the agent is killed its
// kernel frees the socket at once (the RST is unmarked: the egress guard drops it). A
// normal close would leave an orphan in FIN_WAIT1 for minutes: the guard drops its FIN
// and the client's ACKs go to the backup that took the connection over. It would hold
// the 4-tuple, and a later import of a connection from the same client port on that
// host (a restarted agent's handoff, or failover takeover) would fail with
// EADDRNOTAVAIL. Best effort and silent, like mark_done.
void abort_on_close(int fd);

// An IPv4 network "A.B.C.D/LEN" (a bare address means /32): access lists.
struct Ipv4Prefix {
  uint32_t network = 0;  // host byte order, host bits zero
  int length = 32;
  bool contains(in_addr a) const {
    uint32_t mask = length == 0 ? 0 : ~uint32_t{0} << (32 - length);
    return (ntohl(a.s_addr) & mask) == network;
  }
};
// nullopt when malformed or when host bits are set ("10.0.0.1/8" is a typo for either
// "10.0.0.1" or "10.0.0.0/8": refusing it beats guessing).
std::optional<Ipv4Prefix> parse_ipv4_prefix(std::string_view s);
bool is_loopback(in_addr a);  // 127.0.0.0/8

// Where a back-end's relay reaches its local server: "host:port" (TCP over IPv4) or
// "unix:/absolute/path" (a stream socket in the file system). `text` is what the
// operator wrote, for messages.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string text;
  int family() const { return storage.ss_family; }
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};
// nullopt when neither form parses (a unix path must be absolute and fit sun_path).
std::optional<SocketAddress> parse_socket_address(std::string_view s);

}  // namespace tcpha
