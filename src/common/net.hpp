#pragma once
// Small address helpers shared by every component.
#include <netinet/in.h>

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

}  // namespace tcpha
