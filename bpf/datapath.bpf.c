/* The front-end's client-facing datapath (tc clsact ingress): packets of flows
 * that are being handed off are dropped (the client retransmits), packets of
 * handed-off flows go to their back-end with both MACs rewritten, everything
 * else goes to the FE's own stack. Userspace owns the flow table; this program
 * only reads it, stamps activity and marks FIN/RST for aging. */
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

static __always_inline void count(__u32 id, __u64 n) {
  __u64 *c = bpf_map_lookup_elem(&counters, &id);

  if (c) *c += n; /* per-CPU slot: no other writer */
}

static __always_inline int pass(void) {
  count(TCPHA_DP_PASS, 1);
  return TC_ACT_OK;
}

/* Records the client's first FIN/RST so that userspace ages the flow out after a
 * TIME_WAIT-like linger. Races between CPUs only ever set the same bits/time. */
static __always_inline void note_close(struct tcphdr *tcp, struct tcpha_flow_value *v, __u64 now) {
  __u8 flags = 0;

  if (tcp->fin) {
    flags |= TCPHA_FLOW_F_FIN;
    count(TCPHA_DP_FIN, 1);
  }
  if (tcp->rst) {
    flags |= TCPHA_FLOW_F_RST;
    count(TCPHA_DP_RST, 1);
  }
  if (!flags) return;
  v->flags |= flags;
  if (!v->closing_ns) v->closing_ns = now;
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
  note_close(p->tcp, v, now);
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
  /* A new connection reusing the 4-tuple: the old flow is over, and the SYN
   * belongs to the FE's stack. Never forward a SYN. */
  if (p.tcp->syn && !p.tcp->ack) {
    bpf_map_delete_elem(&flows, &p.key);
    count(TCPHA_DP_STALE_SYN, 1);
    return pass();
  }
  /* Anything not explicitly forwarded is being handed off: the connection is
   * not ours to answer any more, so drop rather than pass. */
  if (v->state != TCPHA_FLOW_FORWARD) {
    count(TCPHA_DP_HOLD_DROP, 1);
    return TC_ACT_SHOT;
  }
  return forward(skb, &p, v);
}

char LICENSE[] SEC("license") = "GPL";
