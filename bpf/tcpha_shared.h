/* The one header that the BPF datapath and the C++ daemons both see: map keys,
 * map values and counter ids. Fixed-width types only; C++ static_asserts the sizes
 * (src/datapath/datapath.cpp). */
#ifndef TCPHA_SHARED_H
#define TCPHA_SHARED_H

#include <linux/types.h>

/* Flow state, as seen by the client-facing datapath of the front-end. */
enum tcpha_flow_state {
  TCPHA_FLOW_HOLD = 1,    /* handoff under way: drop the client's packets (it retransmits) */
  TCPHA_FLOW_FORWARD = 2, /* handed off: rewrite MACs and send to the back-end */
};

/* Flags the datapath sets on a flow so that userspace can age it out. */
enum tcpha_flow_flags {
  TCPHA_FLOW_F_FIN = 1 << 0, /* client sent FIN */
  TCPHA_FLOW_F_RST = 1 << 1, /* client sent RST */
};

/* Client 4-tuple, as it arrives at the FE: saddr/sport = client, daddr/dport = VIP.
 * Addresses are 16 bytes so that IPv6 fits; IPv4 uses word 0, the rest is zero.
 * All fields in network byte order. */
struct tcpha_flow_key {
  __u32 saddr[4];
  __u32 daddr[4];
  __u16 sport;
  __u16 dport;
  __u8 family; /* AF_INET (2) or AF_INET6 (10) */
  __u8 pad[3];
};

struct tcpha_flow_value {
  __u8 state;       /* enum tcpha_flow_state */
  __u8 flags;       /* enum tcpha_flow_flags, set by the datapath */
  __u16 pad;
  __u32 backend;    /* index of the back-end in the FE's table (for status) */
  __u8 dmac[6];     /* back-end's MAC: new destination */
  __u8 smac[6];     /* FE's own MAC: new source (so the switch never learns the
                       client's MAC on the FE's port) */
  __u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet, for idle aging */
  __u64 closing_ns;   /* first FIN/RST seen (0: none), for TIME_WAIT-like aging */
  __u64 packets;      /* packets forwarded */
  __u64 bytes;        /* bytes forwarded */
};

/* Per-CPU counters, declared once: X(id, description). */
#define TCPHA_DP_COUNTERS(X)                                              \
  X(RX, "packets seen by the datapath")                                   \
  X(PASS, "packets passed to the FE's stack")                             \
  X(HOLD_DROP, "client packets dropped while their flow was held")        \
  X(FORWARD, "packets forwarded to a back-end")                           \
  X(FORWARD_BYTES, "bytes forwarded to a back-end")                       \
  X(STALE_SYN, "SYNs that matched a stale flow, which was removed")       \
  X(FIN, "client FINs seen on forwarded flows")                           \
  X(RST, "client RSTs seen on forwarded flows")                           \
  X(MALFORMED, "truncated or malformed IP/TCP headers passed untouched")

enum tcpha_dp_counter {
#define TCPHA_X_ENUM(id, desc) TCPHA_DP_##id,
  TCPHA_DP_COUNTERS(TCPHA_X_ENUM)
#undef TCPHA_X_ENUM
  TCPHA_DP_NR_COUNTERS
};

#define TCPHA_DEFAULT_MAX_FLOWS 65536

#endif /* TCPHA_SHARED_H */
