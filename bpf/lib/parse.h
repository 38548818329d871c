/* Packet parsing for the client-facing datapath: Ethernet, IPv4 or IPv6, TCP.
 * Only what the flow lookup needs; everything else is the stack's business. */
#ifndef TCPHA_BPF_PARSE_H
#define TCPHA_BPF_PARSE_H

/* The uapi headers must precede libbpf's, which use their types. */
/* clang-format off */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
/* clang-format on */

#include "tcpha_shared.h"

#define TCPHA_AF_INET 2
#define TCPHA_AF_INET6 10
#define TCPHA_IP_OFFSET 0x1fff /* fragment offset bits of iphdr.frag_off */

/* The most header bytes the parser reads: Ethernet, an IPv4 header with the
 * largest options (60 bytes), the fixed TCP header. */
#define TCPHA_MAX_HDR (sizeof(struct ethhdr) + 60 + sizeof(struct tcphdr))

enum tcpha_parse_result {
  TCPHA_PARSE_TCP,       /* p->eth, p->ip4 or p->ip6, p->tcp and p->key are set */
  TCPHA_PARSE_OTHER,     /* not TCP over IP, or a non-first fragment */
  TCPHA_PARSE_MALFORMED, /* truncated or impossible headers */
};

struct tcpha_packet {
  struct ethhdr *eth;
  struct iphdr *ip4;   /* IPv4 packets (key.family AF_INET), else NULL */
  struct ipv6hdr *ip6; /* IPv6 packets (key.family AF_INET6), else NULL */
  struct tcphdr *tcp;
  struct tcpha_flow_key key;
};

/* Makes the headers linear when a driver left them in fragments, so that direct
 * packet access sees them. Invalidates every packet pointer taken before. */
static __always_inline void tcpha_pull_headers(struct __sk_buff *skb) {
  __u32 want = skb->len < TCPHA_MAX_HDR ? skb->len : TCPHA_MAX_HDR;

  if ((void *)(long)skb->data + want > (void *)(long)skb->data_end) bpf_skb_pull_data(skb, want);
}

static __always_inline int tcpha_parse_ipv4(struct iphdr *ip, void *data_end,
                                            struct tcpha_packet *p) {
  if ((void *)(ip + 1) > data_end) return TCPHA_PARSE_MALFORMED;
  if (ip->version != 4 || ip->ihl < 5) return TCPHA_PARSE_MALFORMED;
  if (ip->protocol != IPPROTO_TCP) return TCPHA_PARSE_OTHER;
  /* Only the first fragment carries the ports; the stack reassembles the rest. */
  if (ip->frag_off & bpf_htons(TCPHA_IP_OFFSET)) return TCPHA_PARSE_OTHER;
  p->ip4 = ip;
  p->tcp = (void *)ip + ip->ihl * 4;
  p->key.saddr[0] = ip->saddr;
  p->key.daddr[0] = ip->daddr;
  p->key.family = TCPHA_AF_INET;
  return TCPHA_PARSE_TCP;
}

static __always_inline int tcpha_parse_ipv6(struct ipv6hdr *ip6, void *data_end,
                                            struct tcpha_packet *p) {
  if ((void *)(ip6 + 1) > data_end) return TCPHA_PARSE_MALFORMED;
  if (ip6->version != 6) return TCPHA_PARSE_MALFORMED;
  /* Extension headers are not walked: clients send TCP right after the fixed
   * header, and whatever else arrives is left to the stack. */
  if (ip6->nexthdr != IPPROTO_TCP) return TCPHA_PARSE_OTHER;
  p->ip6 = ip6;
  p->tcp = (void *)(ip6 + 1);
  __builtin_memcpy(p->key.saddr, &ip6->saddr, sizeof(p->key.saddr));
  __builtin_memcpy(p->key.daddr, &ip6->daddr, sizeof(p->key.daddr));
  p->key.family = TCPHA_AF_INET6;
  return TCPHA_PARSE_TCP;
}

static __always_inline int tcpha_parse(struct __sk_buff *skb, struct tcpha_packet *p) {
  void *data = (void *)(long)skb->data;
  void *data_end = (void *)(long)skb->data_end;
  int rc;

  /* The key is hashed byte by byte: padding and unused address words must be 0. */
  __builtin_memset(&p->key, 0, sizeof(p->key));
  p->ip4 = NULL;
  p->ip6 = NULL;
  p->eth = data;
  if ((void *)(p->eth + 1) > data_end) return TCPHA_PARSE_MALFORMED;
  if (p->eth->h_proto == bpf_htons(ETH_P_IP))
    rc = tcpha_parse_ipv4((void *)(p->eth + 1), data_end, p);
  else if (p->eth->h_proto == bpf_htons(ETH_P_IPV6))
    rc = tcpha_parse_ipv6((void *)(p->eth + 1), data_end, p);
  else
    return TCPHA_PARSE_OTHER;
  if (rc != TCPHA_PARSE_TCP) return rc;
  if ((void *)(p->tcp + 1) > data_end) return TCPHA_PARSE_MALFORMED;
  p->key.sport = p->tcp->source;
  p->key.dport = p->tcp->dest;
  return TCPHA_PARSE_TCP;
}

#endif /* TCPHA_BPF_PARSE_H */
