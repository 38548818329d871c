/* The one header that the BPF datapath and the C++ daemons both see: map keys,
 * map values, flags and counter ids. Fixed-width types only; the layout asserts at
 * the end are checked by both compilers (clang -target bpf and the C++ build), so
 * the two sides cannot disagree on a size or an offset. */
#ifndef TCPHA_SHARED_H
#define TCPHA_SHARED_H

#include <linux/types.h>

/* Flow state, as seen by the client-facing datapath of the front-end. */
enum tcpha_flow_state {
  TCPHA_FLOW_HOLD = 1,    /* handoff under way: drop the client's packets (it retransmits) */
  TCPHA_FLOW_FORWARD = 2, /* handed off: rewrite MACs and send to the back-end */
};

/* Flow flags. FIN and RST are information only (status, debugging): anyone on the
 * client's network can send them with any sequence number, so they never end a
 * flow by themselves. BE_CLOSED does: only userspace sets it, when the back-end
 * reports the connection finished. */
enum tcpha_flow_flags {
  TCPHA_FLOW_F_FIN = 1 << 0,       /* a client FIN was forwarded (datapath) */
  TCPHA_FLOW_F_RST = 1 << 1,       /* a client RST was forwarded (datapath) */
  TCPHA_FLOW_F_BE_CLOSED = 1 << 2, /* the back-end reported CLOSED (userspace) */
  TCPHA_FLOW_F_FIN_UNCOPIED = 1 << 3, /* a client FIN came while the flow was young: its
                                         backup gets it with the next packet (datapath) */
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
  __u8 flags;       /* enum tcpha_flow_flags */
  __u16 backup;     /* the flow's backup back-end: its slot + 1, 0 = none (failover) */
  __u32 backend;    /* index of the back-end in the FE's table (for status) */
  __u8 dmac[6];     /* back-end's MAC: new destination */
  __u8 smac[6];     /* FE's own MAC: new source (so the switch never learns the
                       client's MAC on the FE's port) */
  __u32 born_ms;    /* CLOCK_MONOTONIC ms (mod 2^32) when userspace pointed the flow at
                       its back-end; 0 = unknown (failover: TCPHA_BACKUP_DUE_MS) */
  __u64 last_seen_ns; /* bpf_ktime_get_ns() of the last forwarded packet (HOLD: of
                         the hold), for idle aging */
  __u64 closing_ns;   /* when the back-end reported CLOSED (0: not yet), set by
                         userspace with F_BE_CLOSED; the linger runs from here */
  __u64 packets;      /* packets forwarded */
  __u64 bytes;        /* bytes forwarded */
};

/* The meaning of the state a restarted or upgrading FE adopts from a datapath left
 * running (the flows, backends and counters maps; docs/fe-restart.md): the program
 * carries it in .rodata, and a datapath whose value differs is not adopted. Bump it
 * whenever that meaning changes, even when no size does (sizes are checked anyway). */
#define TCPHA_STATE_LAYOUT 4

/* BE failover (docs/failover.md). Back-end slots are the FE's BackendState::uid; the
 * "backends" array map holds one struct tcpha_backend per slot. */
#define TCPHA_MAX_BACKENDS 256
/* Copies of client packets for a flow's backup (docs/failover.md, "Copies"): the FE's
 * datapath appends each one to the "copies" ring buffer as a struct tcpha_copy
 * followed by the frame (from its Ethernet header, as it arrived); the FE's agent
 * reads them in batches and sends them to the backups over their control links. */
struct tcpha_copy {
  __u32 len;    /* bytes of frame after this header */
  __u16 backup; /* the backup's slot (BackendState::uid) */
  __u16 pad;
};
/* Longest frame copied (a GRO/GSO packet may be longer: not copied, COPY_LOST). */
#define TCPHA_COPY_FRAME_MAX 65535
/* The ring's size (a power of two, pages): a few hundred milliseconds of copies at
 * the bed's request rate; the FE reads it every few milliseconds. */
#define TCPHA_COPY_RING_BYTES (8u << 20)
/* Each time the unread copies pass a multiple of this, the copy that passes it wakes
 * the FE's reader; other copies wake nobody (the reader's own timer drains the ring
 * every 20 ms). Small batches: a backup handles a batch in one go, and its own
 * requests wait meanwhile. On ka-1k (two beds at once, 96 pairs each, geometric mean
 * of ring / off): 64 KiB 0.946; 16 KiB 0.974 and 0.970; 8 KiB 0.952; 4 KiB 0.987 and
 * 0.959; an off / off control 0.992 (docs/failover.md). 16 KiB gains what the smaller
 * marks do with a quarter of their wake-ups (~600 a second at 60k requests/s). */
#define TCPHA_COPY_WAKE_BYTES (16u << 10)
/* A connection's BACKUP is due this long after the FE pointed its flow at its owner
 * (the FE sends it at its next tick). Until then a client FIN without data is not
 * copied: most short connections end before their BACKUP is due, and their backup
 * never hears of them. A flow that lives on sends its backup the FIN with its first
 * packet after that (the copy of that packet, made a FIN again: seq - 1). */
#define TCPHA_BACKUP_DUE_MS 10
/* SO_MARK a back-end sets on a client socket right before it ends the connection
 * itself; its egress guard drops FIN/RST from the VIP without it. */
#define TCPHA_MARK_DONE 0x7c4a0001u

enum tcpha_backend_flags {
  TCPHA_BACKEND_F_FAILED = 1 << 0, /* the FE lost the back-end: its flows go to their backups */
};

/* How packets reach a back-end (tcpha_backend.forward). */
enum tcpha_forward {
  TCPHA_FORWARD_DR = 0,     /* same L2 segment: MAC rewrite */
  TCPHA_FORWARD_TUNNEL = 1, /* IPIP (or IPv6-in-IPv4) to tunnel_addr, routed by the FIB */
};

struct tcpha_backend {
  __u8 mac[6];      /* the back-end's MAC (DR); all zero: unknown */
  __u8 flags;       /* enum tcpha_backend_flags */
  __u8 forward;     /* enum tcpha_forward */
  __u32 tunnel_addr; /* TUNNEL: the back-end's IPv4 address, network order */
};

/* The congestion window a moved connection's importer asks for (bpf/cwnd.bpf.c). The
 * importing agent stores it in the socket's local storage (map "import_cwnd", keyed by
 * the socket's fd from user space) before connect() in repair mode; the sock_ops
 * program applies it when that connect() establishes the socket, after the kernel set
 * the initial window and before congestion control starts. */
struct tcpha_import_cwnd {
  __u32 cwnd; /* segments; applied only when above the kernel's initial window */
};

/* Per-CPU counters, declared once: X(id, description). Every packet of the ingress
 * program ends in exactly one of PASS, HOLD_DROP, FORWARD, SYN_DROP, GUARD_NOSOCK,
 * GUARD_REPAIR, TTL_DROP, FAILOVER_DROP, TUNNEL_DROP and DECAP_DROP (RX is their
 * sum); FAILOVER and TUNNEL packets are FORWARD ones too, a DECAP one goes on to one
 * of the others; COPY counts clones on top, EGRESS_GUARD the egress program. */
#define TCPHA_DP_COUNTERS(X)                                                                      \
  X(RX, "packets seen by the datapath")                                                           \
  X(PASS, "packets passed to the FE's stack")                                                     \
  X(HOLD_DROP, "client packets dropped while their flow was held")                                \
  X(FORWARD, "packets forwarded to a back-end")                                                   \
  X(FORWARD_BYTES, "bytes forwarded to a back-end")                                               \
  X(STALE_SYN, "SYNs that matched a finished flow, which was removed")                            \
  X(FIN, "client FINs seen on forwarded flows")                                                   \
  X(RST, "client RSTs seen on forwarded flows")                                                   \
  X(MALFORMED, "truncated or malformed IP/TCP headers passed untouched")                          \
  X(SYN_DROP, "SYNs dropped because the flow of their 4-tuple is live")                           \
  X(GUARD_NOSOCK, "guarded packets dropped: no flow, and no socket or only a listener")           \
  X(GUARD_REPAIR, "guarded packets dropped: their socket is still in TCP_REPAIR")                 \
  X(TTL_DROP, "packets to forward dropped for a TTL/hop limit <= 1 (a loop)")                     \
  X(COPY, "client packets copied to a backup")                                                    \
  X(COPY_LOST, "copies not made: the copy ring was full or the packet too long")                  \
  X(COPY_FIN_LATER, "client FINs without data of flows younger than TCPHA_BACKUP_DUE_MS: not copied") \
  X(FAILOVER, "packets of a failed back-end's flows sent to its backup")                          \
  X(FAILOVER_DROP, "packets of a failed back-end's flows dropped: the flow has no usable backup") \
  X(EGRESS_GUARD, "FIN/RST of a back-end connection its agent did not end, dropped")            \
  X(TUNNEL, "packets encapsulated toward a tunnel back-end (FORWARD ones too)")                   \
  X(TUNNEL_DROP, "packets to a tunnel back-end dropped: no route, no source address or too big")  \
  X(DECAP, "tunnelled packets decapsulated for the VIP")                                          \
  X(DECAP_DROP, "tunnelled packets dropped: unknown sender, fragment, or not for the VIP")

enum tcpha_dp_counter {
#define TCPHA_X_ENUM(id, desc) TCPHA_DP_##id,
  TCPHA_DP_COUNTERS(TCPHA_X_ENUM)
#undef TCPHA_X_ENUM
  TCPHA_DP_NR_COUNTERS
};

#define TCPHA_DEFAULT_MAX_FLOWS 65536
/* The datapath's linger until userspace sets the configured one (flow_linger_ms's
 * default). */
#define TCPHA_DEFAULT_LINGER_NS 5000000000ULL

/* The layouts both sides must agree on; checked by clang -target bpf and by C++. */
#ifdef __cplusplus
#define TCPHA_LAYOUT(cond) static_assert(cond, #cond)
#else
#define TCPHA_LAYOUT(cond) _Static_assert(cond, #cond)
#endif
TCPHA_LAYOUT(sizeof(struct tcpha_flow_key) == 40);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_key, sport) == 32);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_key, dport) == 34);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_key, family) == 36);
TCPHA_LAYOUT(sizeof(struct tcpha_flow_value) == 56);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, flags) == 1);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, backup) == 2);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, backend) == 4);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, dmac) == 8);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, smac) == 14);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, born_ms) == 20);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, last_seen_ns) == 24);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, closing_ns) == 32);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_flow_value, bytes) == 48);
TCPHA_LAYOUT(sizeof(struct tcpha_backend) == 12);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_backend, flags) == 6);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_backend, forward) == 7);
TCPHA_LAYOUT(__builtin_offsetof(struct tcpha_backend, tunnel_addr) == 8);
TCPHA_LAYOUT(sizeof(struct tcpha_import_cwnd) == 4);
#undef TCPHA_LAYOUT

#endif /* TCPHA_SHARED_H */
