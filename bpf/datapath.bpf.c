/* The front-end's client-facing datapath (tcpha_ingress, tc clsact ingress):
 * packets of flows that are being handed off are dropped (the client retransmits),
 * packets of handed-off flows go to their back-end with both MACs rewritten,
 * everything else goes to the FE's own stack. Userspace owns the flow table; this
 * program reads it, stamps activity, and removes a flow only for a SYN that may
 * have it. Back-ends also run tcpha_egress (clsact egress), the egress guard below.
 *
 * Flow lifetime (docs/design.md, "Flow lifetime"). Anyone on the client's network
 * can send packets with the client's 4-tuple, so no single client packet may end a
 * live flow:
 * - A SYN (without ACK) never reaches a back-end. On a FORWARD flow it removes the
 *   flow and goes to the FE's stack only when the connection is provably over: the
 *   back-end reported it closed (F_BE_CLOSED, set by userspace), or the flow has
 *   been idle (no forwarded packet) longer than the linger. Otherwise it is dropped
 *   (SYN_DROP): a spoof, or a client reusing its port too early, which retransmits.
 *   On a HOLD flow (a handoff under way, microseconds) it is always dropped.
 * - FIN and RST are forwarded like any segment and only flagged (F_FIN, F_RST):
 *   the back-end's kernel checks their sequence numbers (RFC 5961); if they are
 *   acceptable its socket closes and the back-end reports CLOSED, which starts the
 *   linger in userspace. A spoofed FIN/RST changes nothing.
 * - Userspace ages flows out (src/datapath/flow_gc.cpp): FORWARD flows the back-end
 *   reported closed once both the report and their last packet are older than the
 *   linger, FORWARD flows idle longer than flow_idle_s, HOLDs older than the hold
 *   maximum.
 * - Loops: forward() decrements the IPv4 TTL (checksum updated) or the IPv6 hop
 *   limit, and drops a packet that arrives with 1 or less (TTL_DROP). Back-ends run
 *   this program too, to forward the strays of connections they moved: when a
 *   back-end moves a connection back before the first one dropped its entry, two
 *   hosts briefly point at each other for one 4-tuple, and the TTL bounds the
 *   bouncing as a router's would.
 *
 * Guard (back-ends only, off unless userspace sets tcpha_guard_vip, and for the IPv6
 * VIP tcpha_guard_vip6, which guard alike). A back-end's
 * flow is pointed at it before it has imported the socket, and the import runs in
 * TCP_REPAIR for a few microseconds. A client packet that arrives meanwhile must
 * not meet the stack: with no socket (or only the listener) the kernel answers an
 * RST, which kills the connection, and a socket still in repair mode would take it
 * half restored. So a TCP packet to the guarded VIP that has no flow and is not a
 * pure SYN is checked against the sockets (bpf_skc_lookup_tcp) and dropped, the
 * client retransmits, when none or only a listener matches (GUARD_NOSOCK) or the
 * socket is in repair mode (GUARD_REPAIR). Established, TIME_WAIT and request
 * sockets, pure SYNs, flows and other addresses are as without the guard.
 *
 * BE failover (docs/failover.md; off unless userspace fills the backends map and
 * gives flows a backup). A flow may name a backup back-end (`backup`: its slot + 1)
 * that holds the client's byte stream since the handoff, so that it can take the
 * connection over when the primary dies:
 * - Copies: a packet of such a flow that carries payload, SYN, FIN or RST is also
 *   appended to the "copies" ring buffer (struct tcpha_copy, then the frame as it
 *   came), before the packet itself goes on, so a copy exists of everything the
 *   primary can acknowledge. The FE's agent reads the ring in batches and sends the
 *   copies to their backups over its control links (a copy costs the datapath two
 *   memcpy's; a clone sent over the wire cost each packet a second trip through the
 *   bridge and the backup's stack). A full ring or a frame longer than
 *   TCPHA_COPY_FRAME_MAX makes no copy (COPY_LOST). Pure ACKs are never copied
 *   (seed 004's selective multicast): they carry nothing the backup must replay, and
 *   they are most of a download's client packets. A backup that is FAILED or has no
 *   MAC yet gets nothing.
 * - Failure: the FE marks a dead back-end's slot FAILED in the backends map, one
 *   update for all its flows, instead of rewriting each flow. From then on every
 *   packet of a flow whose primary is FAILED goes to that flow's backup instead
 *   (FAILOVER), uncopied; a flow without a usable backup has its packets dropped
 *   (FAILOVER_DROP): the client retransmits, the connection is lost either way and
 *   the dead primary must not get them. Flows without a backup cost one array
 *   lookup (the primary's slot) over the plain forward.
 *
 * Egress guard (back-ends with failover on: tcpha_egress, clsact egress). When a
 * back-end's agent is killed its kernel lives on and closes the agent's sockets:
 * FIN (or RST, with unread data) to clients whose downloads the backup is about to
 * take over, which would end them truncated. So, while tcpha_egress_guard and
 * tcpha_guard_vip are set, an IPv4 TCP segment from the VIP with FIN or RST is
 * dropped unless its socket carries SO_MARK TCPHA_MARK_DONE, which the agent sets
 * right before it ends a connection itself (EGRESS_GUARD). Everything else passes.
 *
 * Tunnel (forward = "tunnel", docs/tunnel.md). A back-end whose slot says
 * TCPHA_FORWARD_TUNNEL need not share our L2 segment: its packets are encapsulated
 * in an outer IPv4 header (protocol 4 for an IPv4 client, 41 for an IPv6 one) from
 * tcpha_tunnel_src to the slot's tunnel_addr, with DF set, and sent toward the next
 * hop the kernel's FIB gives (bpf_fib_lookup; a next hop whose neighbour entry is not
 * resolved yet goes through bpf_redirect_neigh, which resolves it). No route, no
 * source address, or a packet bigger than the route's MTU is dropped (TUNNEL_DROP):
 * the front-end clamps the MSS it advertises so that full-size segments fit.
 * A back-end decapsulates (tcpha_decap_addr set: its own address): an IPv4 packet to
 * that address carrying IPv4 or IPv6 whose outer source is in tunnel_sources (the
 * cluster's front-ends and back-ends, filled by the agent) and whose inner
 * destination is the guarded VIP loses its outer header and goes on through this
 * program as if it had arrived bare (DECAP); any other tunnelled packet to that
 * address is dropped (DECAP_DROP): an unknown sender, a fragment (we set DF, so a
 * fragment was not ours), or an inner packet for someone else. */
/* The uapi headers must precede libbpf's, which use their types. */
/* clang-format off */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
/* clang-format on */

#include "lib/parse.h"
#include "tcpha_shared.h"

/* Preallocated (no BPF_F_NO_PREALLOC): faster, and a full table is a clean
 * E2BIG for userspace instead of an allocation failure on the fast path.
 * max_entries is set by userspace before load. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __type(key, struct tcpha_flow_key);
  __type(value, struct tcpha_flow_value);
  __uint(max_entries, TCPHA_DEFAULT_MAX_FLOWS);
} flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __type(key, __u32);
  __type(value, __u64);
  __uint(max_entries, TCPHA_DP_NR_COUNTERS);
} counters SEC(".maps");

/* Copies for backups (see the top), read by the FE's agent. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, TCPHA_COPY_RING_BYTES);
} copies SEC(".maps");

/* A copy is assembled here (header, then the frame) and appended to the ring in one
 * piece: the ring's reservations are of a constant size, a frame's is not. One
 * entry per CPU (userspace sets max_entries to the possible CPUs): tc programs run
 * with migration off, and not nested on one CPU. */
struct copy_buf {
  struct tcpha_copy hdr;
  __u8 frame[TCPHA_COPY_FRAME_MAX + 1];
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct copy_buf);
  __uint(max_entries, 1);
} copy_bufs SEC(".maps");

/* Back-end slots (the FE's BackendState::uid): MAC and FAILED flag, for failover.
 * An array: the verifier inlines its lookups, and marking a back-end failed is one
 * update. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct tcpha_backend);
  __uint(max_entries, TCPHA_MAX_BACKENDS);
} backends SEC(".maps");

/* The state layout (TCPHA_STATE_LAYOUT), the only variable in .rodata: a starting FE
 * compares the .rodata of the datapath it would adopt with its own. */
const volatile __u32 tcpha_state_layout = TCPHA_STATE_LAYOUT;

/* How long a FORWARD flow must have been idle before a SYN may replace it
 * (flow_linger_ms). In .data, not .rodata: userspace rewrites it through the
 * skeleton's mapping when a reload changes the configured linger. */
volatile __u64 tcpha_linger_ns = TCPHA_DEFAULT_LINGER_NS;

/* The guarded VIP (IPv4, network order), 0 = guard off; see the top. In .data
 * (explicitly: a zero would put it in .bss) so that userspace can turn it on and
 * off at run time, like the linger. */
volatile __u32 tcpha_guard_vip SEC(".data") = 0;

/* Non-zero: the egress program guards tcpha_guard_vip (see the top). In .data like
 * the guard, for the same reason. */
volatile __u32 tcpha_egress_guard SEC(".data") = 0;

/* The guarded IPv6 VIP (network order), all zero = off: the IPv6 twin of
 * tcpha_guard_vip. */
volatile __u32 tcpha_guard_vip6[4] SEC(".data") = {};

/* Tunnel (see the top): the outer source address of encapsulated packets, this
 * host's IPv4 address (network order); 0 = none, tunnel packets are dropped. */
volatile __u32 tcpha_tunnel_src SEC(".data") = 0;

/* Back-ends: the address tunnelled packets arrive for (ours, network order); 0 =
 * decapsulation off, tunnelled packets are the stack's business. */
volatile __u32 tcpha_decap_addr SEC(".data") = 0;

/* The outer source addresses a back-end decapsulates from (the cluster's front-ends
 * and back-ends; see the top). Key: IPv4, network order; the value is unused. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __type(key, __u32);
  __type(value, __u8);
  __uint(max_entries, 1024);
} tunnel_sources SEC(".maps");

/* The one field of the kernel's tcp_sock the guard reads. CO-RE: libbpf finds the
 * bitfield's real position in the running kernel's BTF at load time. */
struct tcp_sock {
  __u8 repair : 1;
} __attribute__((preserve_access_index));

static __always_inline void count(__u32 id, __u64 n) {
  __u64 *c = bpf_map_lookup_elem(&counters, &id);

  if (c) *c += n; /* per-CPU slot: no other writer */
}

static __always_inline int pass(void) {
  count(TCPHA_DP_PASS, 1);
  return TC_ACT_OK;
}

/* Flags the client's FIN/RST for status; they end nothing by themselves (see the
 * top). Races between CPUs only ever set the same bits. */
static __always_inline void note_fin_rst(struct tcphdr *tcp, struct tcpha_flow_value *v) {
  __u8 flags = 0;

  if (tcp->fin) {
    flags |= TCPHA_FLOW_F_FIN;
    count(TCPHA_DP_FIN, 1);
  }
  if (tcp->rst) {
    flags |= TCPHA_FLOW_F_RST;
    count(TCPHA_DP_RST, 1);
  }
  if (flags && (v->flags & flags) != flags) v->flags |= flags;
}

/* True when the connection behind a FORWARD flow is over, so that a SYN on its
 * 4-tuple is a new connection: the back-end said so, or nothing was forwarded for
 * longer than the linger. now > last_seen: a stamp taken after `now` is fresh. */
static __always_inline int flow_over(const struct tcpha_flow_value *v, __u64 now) {
  __u64 linger = tcpha_linger_ns;

  if (v->flags & TCPHA_FLOW_F_BE_CLOSED) return 1;
  return now > v->last_seen_ns && now - v->last_seen_ns > linger;
}

/* A SYN whose 4-tuple has a flow. Never forwarded: a back-end's socket in
 * ESTABLISHED would only answer a challenge ACK, and a SYN that is let through
 * to the FE's stack starts a new connection there. */
static __always_inline int on_syn(struct tcpha_packet *p, struct tcpha_flow_value *v) {
  if (v->state == TCPHA_FLOW_FORWARD && flow_over(v, bpf_ktime_get_ns())) {
    bpf_map_delete_elem(&flows, &p->key);
    count(TCPHA_DP_STALE_SYN, 1);
    return pass();
  }
  count(TCPHA_DP_SYN_DROP, 1);
  return TC_ACT_SHOT;
}

/* Decrements the IPv4 TTL or the IPv6 hop limit of a packet about to be forwarded;
 * false (packet untouched) when it has none left, as a router would: two back-ends
 * whose entries point at each other for a moment must not bounce a packet forever.
 * The IPv4 checksum is updated incrementally like the kernel's ip_decrease_ttl():
 * TTL is the high byte of its 16-bit word, so the sum drops by 0x0100 and the
 * checksum (its complement) grows by as much, end-around carry included. No helper
 * call, and the packet pointers stay valid. */
static __always_inline int hop(struct tcpha_packet *p) {
  if (p->ip4) {
    struct iphdr *ip = p->ip4;
    __u32 check;

    if (ip->ttl <= 1) return 0;
    check = ip->check + (__u32)bpf_htons(0x0100);
    ip->check = (__u16)(check + (check >= 0xffff));
    ip->ttl--;
    return 1;
  }
  if (p->ip6) {
    if (p->ip6->hop_limit <= 1) return 0;
    p->ip6->hop_limit--;
  }
  return 1;
}

/* The slot of a flow's backup (backup = slot + 1, non-zero) when it can take
 * packets: not FAILED, and its MAC known. */
static __always_inline struct tcpha_backend *usable_backup(__u16 backup) {
  __u32 slot = (__u32)backup - 1;
  struct tcpha_backend *b = bpf_map_lookup_elem(&backends, &slot);
  __u32 mac_hi;
  __u16 mac_lo;

  if (!b || (b->flags & TCPHA_BACKEND_F_FAILED)) return NULL;
  __builtin_memcpy(&mac_hi, b->mac, sizeof(mac_hi));
  __builtin_memcpy(&mac_lo, b->mac + 4, sizeof(mac_lo));
  return mac_hi | mac_lo ? b : NULL;
}

/* True for the packets a backup needs: TCP payload, SYN, FIN or RST. Pure ACKs (and
 * window updates) are not copied. The headers were bounds-checked by the parser. */
static __always_inline int worth_a_copy_data(const struct tcpha_packet *p) {
  __u32 tcp_len = p->tcp->doff * 4;

  if (p->ip4) return bpf_ntohs(p->ip4->tot_len) > p->ip4->ihl * 4 + tcp_len;
  if (p->ip6) return bpf_ntohs(p->ip6->payload_len) > tcp_len;
  return 0;
}

static __always_inline int worth_a_copy(const struct tcpha_packet *p) {
  const struct tcphdr *tcp = p->tcp;

  if (tcp->syn || tcp->fin || tcp->rst) return 1;
  return worth_a_copy_data(p);
}

/* Appends a copy of the packet for the backup in `slot` to the copies ring (see the
 * top). `as_fin`: the copy says FIN one sequence number before this packet (the FIN
 * this flow's backup did not get, TCPHA_FLOW_F_FIN_UNCOPIED). The backup does not
 * check TCP checksums (failover/held.hpp, parse_frame). */
static __always_inline void copy_to_backup(struct __sk_buff *skb, const struct tcpha_packet *p,
                                           __u32 slot, int as_fin) {
  __u32 cpu = bpf_get_smp_processor_id();
  __u64 tcp_off = (void *)p->tcp - (void *)p->eth;
  __u32 len = skb->len;
  struct copy_buf *b = bpf_map_lookup_elem(&copy_bufs, &cpu);
  __u64 flags = BPF_RB_NO_WAKEUP;

  if (!b || len == 0 || len > TCPHA_COPY_FRAME_MAX || tcp_off > 128 ||
      bpf_skb_load_bytes(skb, 0, b->frame, len) < 0) {
    count(TCPHA_DP_COPY_LOST, 1);
    return;
  }
  if (as_fin) {
    struct tcphdr *tcp = (struct tcphdr *)(b->frame + tcp_off);

    tcp->seq = bpf_htonl(bpf_ntohl(tcp->seq) - 1);
    tcp->fin = 1;
  }
  b->hdr.len = len;
  b->hdr.backup = slot;
  b->hdr.pad = 0;
  /* One wake-up per TCPHA_COPY_WAKE_BYTES of unread copies: the copy that takes the
   * unread bytes past a multiple of it. Not every copy past the mark: a forced wake-up
   * is an irq_work, a self-interrupt (on a VM, an exit), and while the reader was on
   * its way every copy paid it (BM_DatapathForwardData: a copy cost ~1000 ns then,
   * ~100 now). Copies from two CPUs that cross one mark together wake twice or not
   * at all; the next mark, or the reader's timer, covers that. */
  __u64 unread = bpf_ringbuf_query(&copies, BPF_RB_AVAIL_DATA);
  if (unread / TCPHA_COPY_WAKE_BYTES != (unread + sizeof(b->hdr) + len) / TCPHA_COPY_WAKE_BYTES)
    flags = BPF_RB_FORCE_WAKEUP;
  if (bpf_ringbuf_output(&copies, b, sizeof(b->hdr) + len, flags) < 0) {
    count(TCPHA_DP_COPY_LOST, 1);
    return;
  }
  count(TCPHA_DP_COPY, 1);
}

/* Younger than TCPHA_BACKUP_DUE_MS: its backup has no BACKUP yet (0: unknown, old).
 * Signed, mod 2^32 ms: a birth "in the future" is young too (tests make flows young
 * for as long as they need that way; the FE's clock is this one). */
static __always_inline int young(const struct tcpha_flow_value *v, __u64 now) {
  return v->born_ms && (__s32)((__u32)(now / 1000000) - v->born_ms) < TCPHA_BACKUP_DUE_MS;
}

/* A client FIN without data of a young flow (most such connections end before their
 * BACKUP is due): not copied, noted in the flow. 1 when the packet is one. */
static __always_inline int fin_too_early(const struct tcpha_packet *p,
                                         struct tcpha_flow_value *v, __u64 now) {
  const struct tcphdr *tcp = p->tcp;

  if (!tcp->fin || tcp->syn || tcp->rst || worth_a_copy_data(p) || !young(v, now)) return 0;
  if (!(v->flags & TCPHA_FLOW_F_FIN_UNCOPIED)) v->flags |= TCPHA_FLOW_F_FIN_UNCOPIED;
  count(TCPHA_DP_COPY_FIN_LATER, 1);
  return 1;
}

/* Not in this system's uapi headers before Linux 6.3 (the kernel has them since). */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif
#define TCPHA_IP_DF 0x4000
#define TCPHA_IP_MF_OFFSET 0x3fff /* more-fragments flag and fragment offset */
#define TCPHA_AF_INET_FIB 2       /* AF_INET, for bpf_fib_lookup */

/* The IPv4 header checksum of a 20-byte header whose check field is 0. */
static __always_inline __u16 ip_checksum(struct iphdr *ip) {
  __u32 sum = 0;
  __u16 *w = (__u16 *)ip;

#pragma unroll
  for (int i = 0; i < (int)(sizeof(*ip) / 2); i++) sum += w[i];
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (__u16)~sum;
}

/* Sends the packet to a tunnel back-end (see the top): outer IPv4 header in front of
 * the client's IP packet, next hop from the FIB. The flow's statistics are taken
 * before the helpers, which invalidate every packet pointer. */
static __always_inline int tunnel(struct __sk_buff *skb, struct tcpha_packet *p,
                                  struct tcpha_flow_value *v, __u32 to) {
  struct bpf_fib_lookup fib = {};
  struct iphdr outer = {};
  const __u32 from = tcpha_tunnel_src;
  __u64 len = skb->len;
  void *data, *data_end;
  struct ethhdr *eth;
  __u32 inner_len, hdrs;
  int rc;

  if (p->ip4) {
    inner_len = bpf_ntohs(p->ip4->tot_len);
    hdrs = p->ip4->ihl * 4 + p->tcp->doff * 4;
    outer.tos = p->ip4->tos;
    outer.protocol = IPPROTO_IPIP;
  } else if (p->ip6) {
    inner_len = bpf_ntohs(p->ip6->payload_len) + sizeof(struct ipv6hdr);
    hdrs = sizeof(struct ipv6hdr) + p->tcp->doff * 4;
    outer.tos = (__u8)(p->ip6->priority << 4 | p->ip6->flow_lbl[0] >> 4);
    outer.protocol = IPPROTO_IPV6;
  } else {
    goto drop;
  }
  if (!from || !to || inner_len + sizeof(outer) > 0xffff) goto drop;
  outer.version = 4;
  outer.ihl = 5;
  outer.tot_len = bpf_htons((__u16)(inner_len + sizeof(outer)));
  outer.frag_off = bpf_htons(TCPHA_IP_DF);
  outer.ttl = 64;
  outer.saddr = from;
  outer.daddr = to;
  outer.check = ip_checksum(&outer);

  fib.family = TCPHA_AF_INET_FIB;
  fib.tos = outer.tos;
  fib.l4_protocol = outer.protocol;
  /* A GSO packet (a TSO sender on this host, or GRO) is segmented after us: the MTU
   * check is for its segments, below. 0: the helper checks no size. */
  fib.tot_len = skb->gso_size ? 0 : bpf_ntohs(outer.tot_len);
  fib.ipv4_src = from;
  fib.ipv4_dst = to;
  fib.ifindex = skb->ifindex;
  /* OUTPUT: routed as our own packet, which it now is (no forwarding sysctl needed). */
  rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
  if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) goto drop;
  /* mtu_result (the route's MTU) shares tot_len's place; each segment, outer header
   * included, must fit. */
  if (skb->gso_size && skb->gso_size + hdrs + sizeof(outer) > fib.mtu_result) goto drop;

  v->last_seen_ns = bpf_ktime_get_ns();
  if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
    goto drop;
  if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &outer, sizeof(outer), 0)) goto drop;
  data = (void *)(long)skb->data;
  data_end = (void *)(long)skb->data_end;
  eth = data;
  if ((void *)(eth + 1) > data_end) goto drop;
  eth->h_proto = bpf_htons(ETH_P_IP);
  __sync_fetch_and_add(&v->packets, 1);
  __sync_fetch_and_add(&v->bytes, len);
  count(TCPHA_DP_FORWARD, 1);
  count(TCPHA_DP_FORWARD_BYTES, len);
  count(TCPHA_DP_TUNNEL, 1);
  if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
  __builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
  __builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
  return bpf_redirect(fib.ifindex, 0);
drop:
  count(TCPHA_DP_TUNNEL_DROP, 1);
  return TC_ACT_SHOT;
}

enum { DECAP_NONE, DECAP_DONE, DECAP_DROP };

/* Back-ends: takes the outer header off a tunnelled packet for us (see the top).
 * DECAP_NONE: not one, the packet is untouched; DECAP_DONE: the client's packet now
 * starts after the Ethernet header; DECAP_DROP: drop it. */
static __always_inline int decap(struct __sk_buff *skb) {
  const __u32 me = tcpha_decap_addr;
  void *data = (void *)(long)skb->data;
  void *data_end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  __u16 proto = ETH_P_IP;
  struct iphdr *ip;
  __u64 flags = 0;

  if (!me || (void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP)) return DECAP_NONE;
  ip = (void *)(eth + 1);
  if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->daddr != me ||
      (ip->protocol != IPPROTO_IPIP && ip->protocol != IPPROTO_IPV6))
    return DECAP_NONE;
  if (ip->ihl != 5 || (ip->frag_off & bpf_htons(TCPHA_IP_MF_OFFSET)) ||
      !bpf_map_lookup_elem(&tunnel_sources, &ip->saddr))
    return DECAP_DROP;
  if (ip->protocol == IPPROTO_IPIP) {
    struct iphdr *in = (void *)(ip + 1);
    const __u32 vip = tcpha_guard_vip;

    if ((void *)(in + 1) > data_end || !vip || in->daddr != vip) return DECAP_DROP;
  } else {
    struct ipv6hdr *in6 = (void *)(ip + 1);
    const __u32 *vip6 = (const __u32 *)tcpha_guard_vip6;
    const __u32 *d;

    if ((void *)(in6 + 1) > data_end) return DECAP_DROP;
    d = (const __u32 *)&in6->daddr;
    if (!(vip6[0] | vip6[1] | vip6[2] | vip6[3]) || d[0] != vip6[0] || d[1] != vip6[1] ||
        d[2] != vip6[2] || d[3] != vip6[3])
      return DECAP_DROP;
    /* The stack must take the inner packet as IPv6 (skb->protocol); IPv4 in IPv4 needs
     * no flag, and so also works on kernels before 6.3, which lack it. */
    flags = BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
    proto = ETH_P_IPV6;
  }
  if (bpf_skb_adjust_room(skb, -(__s32)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, flags))
    return DECAP_DROP;
  data = (void *)(long)skb->data;
  data_end = (void *)(long)skb->data_end;
  eth = data;
  if ((void *)(eth + 1) > data_end) return DECAP_DROP;
  eth->h_proto = bpf_htons(proto);
  count(TCPHA_DP_DECAP, 1);
  return DECAP_DONE;
}

/* Direct server return on the same segment: the back-end owns the connection now
 * and answers the client itself; the source MAC must be ours, or the switch
 * learns the client's MAC on our port and the back-end's answers come here. A
 * flow whose back-end FAILED goes to its backup; a flow with a backup sends it
 * copies (see the top). */
static __always_inline int forward(struct __sk_buff *skb, struct tcpha_packet *p,
                                   struct tcpha_flow_value *v) {
  const struct tcpha_backend *primary, *copy = NULL;
  const __u8 *dmac = v->dmac;
  const __u16 backup = v->backup;
  __u32 slot = v->backend;
  __u64 now = bpf_ktime_get_ns();
  int as_fin = 0;

  /* NULL for a slot beyond the table (an array lookup checks its bound). */
  primary = bpf_map_lookup_elem(&backends, &slot);
  if (primary && primary->forward == TCPHA_FORWARD_TUNNEL &&
      !(primary->flags & TCPHA_BACKEND_F_FAILED)) {
    if (!hop(p)) {
      count(TCPHA_DP_TTL_DROP, 1);
      return TC_ACT_SHOT;
    }
    note_fin_rst(p->tcp, v);
    return tunnel(skb, p, v, primary->tunnel_addr);
  }
  if (primary && (primary->flags & TCPHA_BACKEND_F_FAILED)) {
    const struct tcpha_backend *b = backup ? usable_backup(backup) : NULL;

    if (!b) {
      count(TCPHA_DP_FAILOVER_DROP, 1);
      return TC_ACT_SHOT;
    }
    dmac = b->mac;
    count(TCPHA_DP_FAILOVER, 1);
  } else if (backup && (v->flags & TCPHA_FLOW_F_FIN_UNCOPIED)) {
    /* Past its young FIN (nothing while young: ACKs, the FIN again): the flow lived
     * on, its first packet since goes to the backup as that FIN (a packet after a FIN
     * carries no data), a RST as itself. */
    if (!young(v, now)) {
      copy = usable_backup(backup);
      as_fin = !p->tcp->rst;
      v->flags &= ~TCPHA_FLOW_F_FIN_UNCOPIED;
    }
  } else if (backup && worth_a_copy(p) && !fin_too_early(p, v, now)) {
    copy = usable_backup(backup);
  }
  if (!hop(p)) {
    count(TCPHA_DP_TTL_DROP, 1);
    return TC_ACT_SHOT;
  }
  note_fin_rst(p->tcp, v);
  if (copy) copy_to_backup(skb, p, backup - 1, as_fin);
  __builtin_memcpy(p->eth->h_dest, dmac, ETH_ALEN);
  __builtin_memcpy(p->eth->h_source, v->smac, ETH_ALEN);
  v->last_seen_ns = now;
  __sync_fetch_and_add(&v->packets, 1);
  __sync_fetch_and_add(&v->bytes, skb->len);
  count(TCPHA_DP_FORWARD, 1);
  count(TCPHA_DP_FORWARD_BYTES, skb->len);
  return bpf_redirect(skb->ifindex, 0);
}

/* True for an IPv6 key to the guarded IPv6 VIP (tcpha_guard_vip6, set). */
static __always_inline int guarded6(const struct tcpha_flow_key *k) {
  const __u32 *vip6 = (const __u32 *)tcpha_guard_vip6;

  return (vip6[0] | vip6[1] | vip6[2] | vip6[3]) && k->daddr[0] == vip6[0] &&
         k->daddr[1] == vip6[1] && k->daddr[2] == vip6[2] && k->daddr[3] == vip6[3];
}

/* A packet to the guarded VIP without a flow (see the top): pass only if a socket
 * that can take it exists. One socket lookup, only for such packets. */
static __always_inline int guard(struct __sk_buff *skb, struct tcpha_packet *p) {
  struct bpf_sock_tuple t = {};
  struct bpf_sock *sk;
  struct tcp_sock *tp;
  __u32 tuple_size;
  int repair = 0;

  /* The stack answers a new connection's SYN itself (SYN-ACK, or an RST when
   * nothing listens), as without the guard. */
  if (p->tcp->syn && !p->tcp->ack) return pass();
  if (p->key.family == TCPHA_AF_INET) {
    t.ipv4.saddr = p->key.saddr[0];
    t.ipv4.daddr = p->key.daddr[0];
    t.ipv4.sport = p->key.sport;
    t.ipv4.dport = p->key.dport;
    tuple_size = sizeof(t.ipv4);
  } else {
    __builtin_memcpy(t.ipv6.saddr, p->key.saddr, sizeof(t.ipv6.saddr));
    __builtin_memcpy(t.ipv6.daddr, p->key.daddr, sizeof(t.ipv6.daddr));
    t.ipv6.sport = p->key.sport;
    t.ipv6.dport = p->key.dport;
    tuple_size = sizeof(t.ipv6);
  }
  sk = bpf_skc_lookup_tcp(skb, &t, tuple_size, BPF_F_CURRENT_NETNS, 0);
  if (!sk) {
    count(TCPHA_DP_GUARD_NOSOCK, 1);
    return TC_ACT_SHOT;
  }
  /* A listener only: the connection is not imported yet (it would get an RST). */
  if (sk->state == BPF_TCP_LISTEN) {
    bpf_sk_release(sk);
    count(TCPHA_DP_GUARD_NOSOCK, 1);
    return TC_ACT_SHOT;
  }
  /* NULL for TIME_WAIT and request sockets, which are not being restored. Read
   * before the release: tp is only valid while sk is held. */
  tp = bpf_skc_to_tcp_sock(sk);
  if (tp) repair = BPF_CORE_READ_BITFIELD(tp, repair);
  bpf_sk_release(sk);
  if (repair) {
    count(TCPHA_DP_GUARD_REPAIR, 1);
    return TC_ACT_SHOT;
  }
  return pass();
}

SEC("tc")
int tcpha_ingress(struct __sk_buff *skb) {
  struct tcpha_flow_value *v;
  struct tcpha_packet p;

  count(TCPHA_DP_RX, 1);
  tcpha_pull_headers(skb);
  switch (decap(skb)) {
    case DECAP_DROP:
      count(TCPHA_DP_DECAP_DROP, 1);
      return TC_ACT_SHOT;
    case DECAP_DONE:
      tcpha_pull_headers(skb);
      break;
    default:
      break;
  }
  switch (tcpha_parse(skb, &p)) {
    case TCPHA_PARSE_TCP:
      break;
    case TCPHA_PARSE_MALFORMED:
      count(TCPHA_DP_MALFORMED, 1);
      return pass();
    default:
      return pass();
  }

  v = bpf_map_lookup_elem(&flows, &p.key);
  if (!v) {
    __u32 vip = tcpha_guard_vip;

    if (vip && p.key.family == TCPHA_AF_INET && p.key.daddr[0] == vip) return guard(skb, &p);
    if (p.key.family == TCPHA_AF_INET6 && guarded6(&p.key)) return guard(skb, &p);
    return pass();
  }
  if (p.tcp->syn && !p.tcp->ack) return on_syn(&p, v);
  /* Anything not explicitly forwarded is being handed off: the connection is
   * not ours to answer any more, so drop rather than pass. */
  if (v->state != TCPHA_FLOW_FORWARD) {
    count(TCPHA_DP_HOLD_DROP, 1);
    return TC_ACT_SHOT;
  }
  return forward(skb, &p, v);
}

/* Back-ends with failover on (see the top): FIN/RST from the VIP that the agent did
 * not send on purpose are dropped. One load and return while off. */
SEC("tc")
/* Reads the two headers with bpf_skb_load_bytes rather than pulling them into the
 * linear area: a TCP segment on its way out is a clone (the socket keeps the original
 * for retransmission) with its payload in pages, and bpf_skb_pull_data on it copies
 * its head into a new buffer, every segment of every response (it cost ka-1k 7% of
 * its throughput on the bed: docs/failover.md). */
int tcpha_egress(struct __sk_buff *skb) {
  __u32 vip = tcpha_guard_vip;
  struct iphdr ip;
  __u8 flags;

  if (!tcpha_egress_guard || !vip) return TC_ACT_OK;
  if (skb->protocol != bpf_htons(ETH_P_IP) || skb->mark == TCPHA_MARK_DONE) return TC_ACT_OK;
  if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip, sizeof ip) < 0) return TC_ACT_OK;
  if (ip.version != 4 || ip.ihl < 5 || ip.protocol != IPPROTO_TCP || ip.saddr != vip ||
      (ip.frag_off & bpf_htons(TCPHA_IP_OFFSET)))
    return TC_ACT_OK;
  /* The flags byte: offset 13 of the TCP header (FIN 0x01, RST 0x04). */
  if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip.ihl * 4 + 13, &flags, 1) < 0)
    return TC_ACT_OK;
  if (!(flags & 0x05)) return TC_ACT_OK;
  count(TCPHA_DP_EGRESS_GUARD, 1);
  return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
