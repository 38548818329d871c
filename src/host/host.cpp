#include "host/host.hpp"

#include <ifaddrs.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "common/fd.hpp"
#include "common/net.hpp"

namespace tcpha::host {
namespace {

// One RTM_NEWADDR / RTM_DELADDR request for addr/32 (IPv4) or addr/128 (IPv6, with
// IFA_F_NODAD), acknowledged by the kernel. Returns 0 or a positive errno.
int address_request(int type, int flags, int ifindex, const Endpoint& addr) {
  UniqueFd nl(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!nl.valid()) return errno;
  struct {
    nlmsghdr nh;
    ifaddrmsg ifa;
    char attrs[64];
  } req{};
  req.nh.nlmsg_type = uint16_t(type);
  req.nh.nlmsg_flags = uint16_t(NLM_F_REQUEST | NLM_F_ACK | flags);
  req.nh.nlmsg_seq = 1;
  const bool v6 = addr.is_v6();
  const size_t alen = v6 ? 16 : 4;
  req.ifa.ifa_family = uint8_t(addr.family);
  req.ifa.ifa_prefixlen = v6 ? 128 : 32;
  // No duplicate address detection: the VIP is on several hosts by design (the FE's
  // interface, every BE's lo), and a tentative address can be neither bound to nor
  // answered for. The FE's kernel answers neighbour solicitations for it at once.
  if (v6) req.ifa.ifa_flags = IFA_F_NODAD;
  req.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  req.ifa.ifa_index = uint32_t(ifindex);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  for (unsigned short attr : {IFA_LOCAL, IFA_ADDRESS}) {
    auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) + NLMSG_ALIGN(req.nh.nlmsg_len));
    rta->rta_type = attr;
    rta->rta_len = RTA_LENGTH(alen);
    std::memcpy(RTA_DATA(rta), addr.addr.data(), alen);
    req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  }
  if (send(nl.get(), &req, req.nh.nlmsg_len, 0) < 0) return errno;
  char buf[4096];
  ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
  if (n < 0) return errno;
  auto* nh = reinterpret_cast<nlmsghdr*>(buf);
  if (!NLMSG_OK(nh, size_t(n)) || nh->nlmsg_type != NLMSG_ERROR) return EPROTO;
  return -static_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;
}

std::string sysctl_path(const std::string& name) {
  std::string p = name;
  std::replace(p.begin(), p.end(), '.', '/');
  return "/proc/sys/" + p;
}

}  // namespace

Result<std::unique_ptr<AddressGuard>> AddressGuard::add(const std::string& ifname, in_addr addr) {
  return add(ifname, Endpoint::v4(addr.s_addr, 0));
}

Result<std::unique_ptr<AddressGuard>> AddressGuard::add(const std::string& ifname,
                                                        const in6_addr& addr) {
  return add(ifname, Endpoint::v6(addr, 0));
}

Result<std::unique_ptr<AddressGuard>> AddressGuard::add(const std::string& ifname,
                                                        const Endpoint& addr) {
  int ifindex = int(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return sys_error("interface " + ifname);
  const std::string text = addr.addr_str() + (addr.is_v6() ? "/128" : "/32");
  int err = address_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, addr);
  if (err != 0 && err != EEXIST) {
    errno = err;
    return sys_error("add " + text + " to " + ifname);
  }
  if (err == EEXIST) spdlog::info("{} already on {}: left in place on exit", text, ifname);
  return std::unique_ptr<AddressGuard>(new AddressGuard(ifindex, addr, err == 0));
}

AddressGuard::~AddressGuard() {
  if (!added_) return;
  if (int err = address_request(RTM_DELADDR, 0, ifindex_, addr_); err != 0)
    spdlog::warn("removing {}: {}", addr_.addr_str(), std::strerror(err));
}

Result<std::string> read_sysctl(const std::string& name) {
  std::ifstream f(sysctl_path(name));
  std::string v;
  if (!f || !std::getline(f, v)) return sys_error("read sysctl " + name);
  return v;
}

Status write_sysctl(const std::string& name, const std::string& value) {
  std::ofstream f(sysctl_path(name));
  if (!f) return sys_error("open sysctl " + name);
  f << value << '\n';
  f.flush();
  if (!f) return sys_error("write sysctl " + name);
  return {};
}

Result<std::unique_ptr<SysctlGuard>> SysctlGuard::set(const std::string& name,
                                                      const std::string& value) {
  auto old = read_sysctl(name);
  if (!old) return old.error();
  if (auto s = write_sysctl(name, value); !s) return s.error();
  return std::unique_ptr<SysctlGuard>(new SysctlGuard(name, *old));
}

SysctlGuard::~SysctlGuard() {
  if (released_) return;
  if (auto s = write_sysctl(path_, old_); !s) spdlog::warn("restoring {}: {}", path_, s.error().message());
}

Result<std::string> interface_of(in_addr addr) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return sys_error("getifaddrs");
  std::string name;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if (reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == addr.s_addr) {
      name = i->ifa_name;
      break;
    }
  }
  freeifaddrs(list);
  if (name.empty()) return app_error("no interface holds " + ipv4_str(addr));
  return name;
}

Result<std::string> interface_of(const in6_addr& addr) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return sys_error("getifaddrs");
  std::string name;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET6) continue;
    const auto* in6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
    if (std::memcmp(&in6->sin6_addr, &addr, sizeof addr) == 0) {
      name = i->ifa_name;
      break;
    }
  }
  freeifaddrs(list);
  if (name.empty()) return app_error("no interface holds " + ipv6_str(addr));
  return name;
}

bool on_link(in_addr addr) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr || !i->ifa_netmask || i->ifa_addr->sa_family != AF_INET ||
        !(i->ifa_flags & IFF_UP))
      continue;
    const uint32_t mine = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr;
    const uint32_t mask = reinterpret_cast<sockaddr_in*>(i->ifa_netmask)->sin_addr.s_addr;
    found = ((mine ^ addr.s_addr) & mask) == 0;
  }
  freeifaddrs(list);
  return found;
}

Result<Mac> interface_mac(const std::string& ifname) {
  ifreq ifr{};
  if (ifname.empty() || ifname.size() >= sizeof ifr.ifr_name)
    return Error{EINVAL, "interface name '" + ifname + "'"};
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket for SIOCGIFHWADDR");
  std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
  if (ioctl(fd.get(), SIOCGIFHWADDR, &ifr) < 0) return sys_error("SIOCGIFHWADDR " + ifname);
  // The datapath parses and rewrites Ethernet headers; an L3 device has none.
  const auto type = ifr.ifr_hwaddr.sa_family;
  if (type != ARPHRD_ETHER && type != ARPHRD_LOOPBACK)
    return Error{EAFNOSUPPORT, ifname + " is not an Ethernet interface"};
  Mac m;
  std::memcpy(m.data(), ifr.ifr_hwaddr.sa_data, m.size());
  return m;
}

Result<uint32_t> interface_mtu(const std::string& ifname) {
  ifreq ifr{};
  if (ifname.empty() || ifname.size() >= sizeof ifr.ifr_name)
    return Error{EINVAL, "interface name '" + ifname + "'"};
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket for SIOCGIFMTU");
  std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
  if (ioctl(fd.get(), SIOCGIFMTU, &ifr) < 0) return sys_error("SIOCGIFMTU " + ifname);
  // Below IPv6's minimum there is no room for an encapsulated segment worth sending.
  if (ifr.ifr_mtu < 1280) return Error{EINVAL, ifname + ": MTU " + std::to_string(ifr.ifr_mtu) + " is below 1280"};
  return uint32_t(ifr.ifr_mtu);
}

std::optional<Mac> neighbour_mac(uint32_t addr_be) {
  // IP address  HW type  Flags  HW address  Mask  Device
  std::ifstream arp("/proc/net/arp");
  std::string line;
  std::getline(arp, line);  // header
  while (std::getline(arp, line)) {
    char ip[64], hw[64];
    unsigned type = 0, flags = 0;
    if (std::sscanf(line.c_str(), "%63s 0x%x 0x%x %63s", ip, &type, &flags, hw) != 4) continue;
    if (!(flags & ATF_COM)) continue;  // incomplete: resolution still under way or failed
    auto a = parse_ipv4(ip);
    if (!a || a->s_addr != addr_be) continue;
    unsigned b[6];
    if (std::sscanf(hw, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
      continue;
    Mac m;
    for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<uint8_t>(b[i]);
    return m;
  }
  return std::nullopt;
}

Status send_gratuitous_arp(const std::string& ifname, in_addr ip, const Mac& mac) {
  const int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return sys_error("interface " + ifname);
  UniqueFd s(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP)));
  if (!s.valid()) return sys_error("gratuitous ARP socket");
  for (uint16_t op : {uint16_t(ARPOP_REQUEST), uint16_t(ARPOP_REPLY)}) {
    uint8_t f[42]{};
    std::memset(f, 0xff, 6);  // broadcast
    std::memcpy(f + 6, mac.data(), 6);
    f[12] = 0x08, f[13] = 0x06;                    // ARP
    f[14] = 0, f[15] = 1;                          // Ethernet
    f[16] = 0x08, f[17] = 0x00;                    // IPv4
    f[18] = 6, f[19] = 4;
    f[20] = uint8_t(op >> 8), f[21] = uint8_t(op);
    std::memcpy(f + 22, mac.data(), 6);            // sender: the VIP at our MAC
    std::memcpy(f + 28, &ip, 4);
    if (op == ARPOP_REPLY) std::memset(f + 32, 0xff, 6);
    std::memcpy(f + 38, &ip, 4);                   // target: the VIP itself
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_ARP);
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    std::memset(to.sll_addr, 0xff, 6);
    if (sendto(s.get(), f, sizeof f, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
      return sys_error("gratuitous ARP on " + ifname);
  }
  return {};
}

Status send_unsolicited_na(const std::string& ifname, const in6_addr& ip, const Mac& mac) {
  const int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return sys_error("interface " + ifname);
  UniqueFd s(socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6));  // the kernel sums it
  if (!s.valid()) return sys_error("neighbour advertisement socket");
  const int hops = 255;  // required: receivers drop NDP with any other hop limit
  setsockopt(s.get(), IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops);
  setsockopt(s.get(), IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex);
  uint8_t na[32]{};
  na[0] = 136;   // neighbour advertisement
  na[4] = 0x20;  // Override; not Solicited (it answers nobody), not Router
  std::memcpy(na + 8, &ip, 16);
  na[24] = 2, na[25] = 1;  // option: target link-layer address, 8 bytes
  std::memcpy(na + 26, mac.data(), 6);
  sockaddr_in6 to{};
  to.sin6_family = AF_INET6;
  to.sin6_addr.s6_addr[0] = 0xff, to.sin6_addr.s6_addr[1] = 0x02, to.sin6_addr.s6_addr[15] = 1;
  to.sin6_scope_id = uint32_t(ifindex);
  if (sendto(s.get(), na, sizeof na, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
    return sys_error("neighbour advertisement on " + ifname);
  return {};
}

}  // namespace tcpha::host
