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
