#include "failover/sockets.hpp"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/mman.h>
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

// 16 blocks of 256 KiB: a block holds ~1,300 small copies (a GET with its headers)
// or at least three 64 KiB GSO segments, the largest a copy can be.
constexpr size_t kCopyBlockSize = size_t{256} << 10;
constexpr size_t kCopyBlocks = 16;
constexpr size_t kCopyFrameSize = 2048;  // only sizes the ring's frame count in V3

Result<CopyRing> CopyRing::open(int ifindex) {
  CopyRing r;
  // Protocol 0 at socket(): nothing is queued until bind() names the ethertype and
  // the interface (after the ring exists).
  r.fd_ = UniqueFd(socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!r.fd_.valid()) return sys_error("socket(AF_PACKET) for copies");
  const int version = TPACKET_V3;
  if (setsockopt(r.fd_.get(), SOL_PACKET, PACKET_VERSION, &version, sizeof version) != 0)
    return sys_error("setsockopt(PACKET_VERSION, TPACKET_V3) for copies");
  tpacket_req3 req{};
  req.tp_block_size = unsigned(kCopyBlockSize);
  req.tp_block_nr = unsigned(kCopyBlocks);
  req.tp_frame_size = unsigned(kCopyFrameSize);
  req.tp_frame_nr = unsigned(kCopyBlockSize * kCopyBlocks / kCopyFrameSize);
  req.tp_retire_blk_tov = kCopyBlockMs;
  if (setsockopt(r.fd_.get(), SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0)
    return sys_error("setsockopt(PACKET_RX_RING) for copies");
  r.map_ = Mapping(kCopyBlockSize * kCopyBlocks, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd_.get());
  if (!r.map_.valid()) return sys_error("mmap(copy ring)");
  if (auto s = bind_to(r.fd_.get(), ifindex, kEthPCopy); !s) return s.error();
  return r;
}

size_t CopyRing::drain(const std::function<void(const Segment&)>& on, size_t max_blocks) {
  size_t frames = 0;
  for (size_t b = 0; b < max_blocks && map_.valid(); ++b) {
    auto* block = reinterpret_cast<tpacket_block_desc*>(map_.data() + next_ * kCopyBlockSize);
    // The kernel hands a block over by setting TP_STATUS_USER last: read it first.
    if (!(__atomic_load_n(&block->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
      break;
    const uint32_t n = block->hdr.bh1.num_pkts;
    size_t off = block->hdr.bh1.offset_to_first_pkt;
    for (uint32_t i = 0; i < n && off + sizeof(tpacket3_hdr) <= kCopyBlockSize; ++i) {
      auto* h = reinterpret_cast<tpacket3_hdr*>(reinterpret_cast<uint8_t*>(block) + off);
      const auto* ll = reinterpret_cast<const sockaddr_ll*>(reinterpret_cast<const uint8_t*>(h) +
                                                            TPACKET_ALIGN(sizeof(tpacket3_hdr)));
      ++frames;
      if (h->tp_mac + size_t{h->tp_snaplen} <= kCopyBlockSize - off &&
          ll->sll_pkttype != PACKET_OUTGOING) {
        // A frame the ring cut short (tp_snaplen < tp_len) has an IP length beyond
        // what is here: parse_frame() rejects it.
        if (auto s = parse_frame(reinterpret_cast<const uint8_t*>(h) + h->tp_mac, h->tp_snaplen))
          on(*s);
      }
      if (h->tp_next_offset == 0) break;
      off += h->tp_next_offset;
    }
    __atomic_store_n(&block->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    next_ = (next_ + 1) % kCopyBlocks;
  }
  return frames;
}

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
