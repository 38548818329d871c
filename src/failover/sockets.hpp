#pragma once
// The raw sockets of a backup: copies of client packets from the FE (an ethertype of
// their own), the probe to a client, and the client's answer to it.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "common/fd.hpp"
#include "common/mapping.hpp"
#include "common/result.hpp"
#include "failover/held.hpp"

namespace tcpha::failover {

// The FE's copy frames (ethertype kEthPCopy) on `ifindex`, received into a TPACKET_V3
// ring shared with the kernel: the kernel fills blocks of frames and hands a block
// over when it is full or kCopyBlockMs after its first frame, so the agent wakes and
// reads once per block, not once per copy (a client's every request is copied: at
// tens of thousands a second, a recvfrom() and a wake-up each were most of what a
// backup cost). 4 MiB of blocks take bursts while the event loop is busy; a lost copy
// makes that connection unrecoverable. The price is up to kCopyBlockMs before a copy
// is seen: a takeover whose probe answer is ahead of a copy probes again once the
// block must have come (ENODATA is not final before the last probe, backup.cpp).
// 20 ms, not less: the block timer runs whether copies come or not, and at 2 ms it
// cost ka-1m (one copy per megabyte) 6% of its throughput on this bed (ring / off
// 0.89-0.95x against 0.98-1.03x at 20 ms, alternating rounds).
inline constexpr unsigned kCopyBlockMs = 20;
class CopyRing {
 public:
  static Result<CopyRing> open(int ifindex);

  int fd() const { return fd_.get(); }
  // Calls `on` for every frame parse_frame() takes in the blocks the kernel has handed
  // over, at most `max_blocks` of them, and gives the blocks back. The segment's
  // payload points into the ring: valid during the call only. Returns frames seen.
  size_t drain(const std::function<void(const Segment&)>& on, size_t max_blocks = 4);

 private:
  CopyRing() = default;
  UniqueFd fd_;
  Mapping map_;      // the ring's blocks (their count and size: sockets.cpp)
  size_t next_ = 0;  // the block the kernel hands over next
};

// AF_PACKET ETH_P_ALL socket on `ifindex` with a classic BPF filter passing only
// IPv4 TCP frames to `vip_be` (network order): the clients' answers to probes. A tap
// sees a frame before tc ingress, where the BE's guard drops segments for which no
// socket exists yet. The filter is attached before the socket is bound, so it never
// queues a frame unfiltered. Besides the answers it sees every other client segment
// to the VIP, among them data and FINs the client sent after the primary died (the
// FE then forwards them to the backup as they are, not as copies): those belong in
// the Held (add()); is_answer() tells them apart.
Result<UniqueFd> open_answer_socket(int ifindex, uint32_t vip_be);

// AF_INET SOCK_RAW IPPROTO_RAW (the packet carries its own IP header), nonblocking.
Result<UniqueFd> open_probe_socket();

// Sends a build_probe() packet to the destination in its IP header.
Status send_probe(int fd, const std::string& packet);

// Reads frames until EAGAIN or `max` frames; calls `on` for every received (not
// outgoing: a tap sees both directions) frame that parse_frame() takes. The
// segment's payload points into a buffer that is reused: valid during the call only.
// Returns the number of frames read.
size_t drain(int fd, const std::function<void(const Segment&)>& on, size_t max = 256);

}  // namespace tcpha::failover
