#pragma once
// What the daemons change on the host, each as an RAII guard that undoes exactly
// what it did (an address added to an interface, a sysctl written), and what they
// look up about it (interfaces, link-layer addresses).
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/net.hpp"
#include "common/result.hpp"

namespace tcpha::host {

// Adds addr/32 (IPv6: addr/128, nodad) to an interface (RTM_NEWADDR); removes it on
// destruction, unless the address was already there (then it is left alone).
class AddressGuard {
 public:
  static Result<std::unique_ptr<AddressGuard>> add(const std::string& ifname, in_addr addr);
  static Result<std::unique_ptr<AddressGuard>> add(const std::string& ifname, const in6_addr& addr);
  ~AddressGuard();
  AddressGuard(const AddressGuard&) = delete;
  AddressGuard& operator=(const AddressGuard&) = delete;
  bool added() const { return added_; }
  // The address was there already because a previous run of ours left it (a crashed
  // or upgraded FE whose datapath we adopted): remove it on exit like our own.
  void adopt() { added_ = true; }
  // A successor owns it now (an FE upgrade): leave it on exit.
  void release() { added_ = false; }

 private:
  static Result<std::unique_ptr<AddressGuard>> add(const std::string& ifname, const Endpoint& addr);
  AddressGuard(int ifindex, const Endpoint& addr, bool added)
      : ifindex_(ifindex), addr_(addr), added_(added) {}
  int ifindex_;
  Endpoint addr_;  // the port unused
  bool added_;
};

// Writes a value under /proc/sys; restores the old value on destruction.
class SysctlGuard {
 public:
  static Result<std::unique_ptr<SysctlGuard>> set(const std::string& name, const std::string& value);
  ~SysctlGuard();
  SysctlGuard(const SysctlGuard&) = delete;
  SysctlGuard& operator=(const SysctlGuard&) = delete;
  // A successor relies on the value now (an FE upgrade): leave it on exit.
  void release() { released_ = true; }

 private:
  SysctlGuard(std::string path, std::string old) : path_(std::move(path)), old_(std::move(old)) {}
  std::string path_, old_;
  bool released_ = false;
};

Result<std::string> read_sysctl(const std::string& name);
Status write_sysctl(const std::string& name, const std::string& value);

// The name of the interface that holds `addr`, or an error.
Result<std::string> interface_of(in_addr addr);
Result<std::string> interface_of(const in6_addr& addr);
// Whether `addr` is in the subnet of an IPv4 address of one of this host's interfaces
// (that is up): reachable without a router, by its own MAC.
bool on_link(in_addr addr);

// The MAC address of a local Ethernet interface (SIOCGIFHWADDR); loopback gives
// 00:00:00:00:00:00. Error{ENODEV} when there is no such interface.
Result<Mac> interface_mac(const std::string& ifname);
// An interface's MTU (at least 1280, else an error).
Result<uint32_t> interface_mtu(const std::string& ifname);
// Announces that `ip` is at `mac` on ifname: a gratuitous ARP request and reply
// (broadcast, sender = target = ip), which update the neighbours' existing entries
// (a hot-standby FE taking the VIP over). Needs CAP_NET_RAW.
Status send_gratuitous_arp(const std::string& ifname, in_addr ip, const Mac& mac);
// The same for an IPv6 address: an unsolicited neighbour advertisement (RFC 4861
// 7.2.6) to all nodes, with the Override flag and our MAC, which updates the entries
// neighbours already have. Needs CAP_NET_RAW.
Status send_unsolicited_na(const std::string& ifname, const in6_addr& ip, const Mac& mac);
// An IPv4 neighbour's MAC from /proc/net/arp (complete entries only), nullopt if absent.
std::optional<Mac> neighbour_mac(uint32_t addr_be);

}  // namespace tcpha::host
