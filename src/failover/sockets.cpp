#include "failover/sockets.hpp"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <utility>
#include <vector>

namespace tcpha::failover {
namespace {

Status bind_to(int fd, int ifindex, uint16_t proto) {
  sockaddr_ll a{};
  a.sll_family = AF_PACKET;
  a.sll_protocol = htons(proto);
  a.sll_ifindex = ifindex;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
    return sys_error("bind(AF_PACKET)");
  return {};
}

}  // namespace

Result<UniqueFd> open_answer_socket(int ifindex, uint32_t vip_be) {
  UniqueFd fd(socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("socket(AF_PACKET) for probe answers");
  // Offsets in the frame: ethertype 12, IP protocol 14+9, IP daddr 14+16.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 5),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 30),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ntohl(vip_be), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0x40000),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
    return sys_error("setsockopt(SO_ATTACH_FILTER) for probe answers");
  // The BE's own responses leave through this interface: without this every one of
  // them would run the filter (Linux >= 4.20; drain() skips outgoing frames anyway).
  int one = 1;
  (void)setsockopt(fd.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
  if (auto s = bind_to(fd.get(), ifindex, ETH_P_ALL); !s) return s.error();
  return fd;
}

Result<UniqueFd> open_probe_socket() {
  UniqueFd fd(socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW));
  if (!fd.valid()) return sys_error("socket(SOCK_RAW, IPPROTO_RAW) for probes");
  return fd;
}

Status send_probe(int fd, const std::string& packet) {
  if (packet.size() < 20) return app_error("send_probe: not an IPv4 packet");
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  std::memcpy(&dst.sin_addr.s_addr, packet.data() + 16, 4);
  ssize_t n = sendto(fd, packet.data(), packet.size(), 0, reinterpret_cast<const sockaddr*>(&dst),
                     sizeof dst);
  if (n < 0) return sys_error("sendto(probe)");
  if (size_t(n) != packet.size()) return app_error("sendto(probe): short write");
  return {};
}

size_t drain(int fd, const std::function<void(const Segment&)>& on, size_t max) {
  // Copies are single client segments (no GRO for a private ethertype): a frame
  // larger than the buffer is cut, and parse_frame() rejects the cut one.
  thread_local std::vector<uint8_t> buf(65536 + 64);
  size_t frames = 0;
  while (frames < max) {
    sockaddr_ll from{};
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf.data(), buf.size(), MSG_DONTWAIT,
                         reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) break;  // EAGAIN, or an error the next poll shows again
    ++frames;
    if (from.sll_pkttype == PACKET_OUTGOING) continue;
    if (auto s = parse_frame(buf.data(), size_t(n))) on(*s);
  }
  return frames;
}

}  // namespace tcpha::failover
