/* The front-end's client-facing datapath (tc clsact ingress): packets of flows
 * that are being handed off are dropped (the client retransmits), packets of
 * handed-off flows go to their back-end with both MACs rewritten, everything
 * else goes to the FE's own stack. Userspace owns the flow table; this program
 * reads it, stamps activity, and removes a flow only for a SYN that may have it.
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
 *   maximum. */
/* The uapi headers must precede libbpf's, which use their types. */
/* clang-format off */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
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

/* How long a FORWARD flow must have been idle before a SYN may replace it
 * (flow_linger_ms). In .data, not .rodata: userspace rewrites it through the
 * skeleton's mapping when a reload changes the configured linger. */
volatile __u64 tcpha_linger_ns = TCPHA_DEFAULT_LINGER_NS;

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

/* Direct server return on the same segment: the back-end owns the connection now
 * and answers the client itself; the source MAC must be ours, or the switch
 * learns the client's MAC on our port and the back-end's answers come here. */
static __always_inline int forward(struct __sk_buff *skb, struct tcpha_packet *p,
                                   struct tcpha_flow_value *v) {
  __u64 now = bpf_ktime_get_ns();

  __builtin_memcpy(p->eth->h_dest, v->dmac, ETH_ALEN);
  __builtin_memcpy(p->eth->h_source, v->smac, ETH_ALEN);
  v->last_seen_ns = now;
  __sync_fetch_and_add(&v->packets, 1);
  __sync_fetch_and_add(&v->bytes, skb->len);
  note_fin_rst(p->tcp, v);
  count(TCPHA_DP_FORWARD, 1);
  count(TCPHA_DP_FORWARD_BYTES, skb->len);
  return bpf_redirect(skb->ifindex, 0);
}

SEC("tc")
int tcpha_ingress(struct __sk_buff *skb) {
  struct tcpha_flow_value *v;
  struct tcpha_packet p;

  count(TCPHA_DP_RX, 1);
  tcpha_pull_headers(skb);
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
  if (!v) return pass();
  if (p.tcp->syn && !p.tcp->ack) return on_syn(&p, v);
  /* Anything not explicitly forwarded is being handed off: the connection is
   * not ours to answer any more, so drop rather than pass. */
  if (v->state != TCPHA_FLOW_FORWARD) {
    count(TCPHA_DP_HOLD_DROP, 1);
    return TC_ACT_SHOT;
  }
  return forward(skb, &p, v);
}

char LICENSE[] SEC("license") = "GPL";
