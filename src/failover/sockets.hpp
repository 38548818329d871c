#pragma once
// The raw sockets of a backup: the probe to a client, and the client's answer to it.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "common/fd.hpp"
#include "common/result.hpp"
#include "failover/held.hpp"

namespace tcpha::failover {

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
