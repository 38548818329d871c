/* A moved connection keeps its congestion window (docs/multi-handoff.md, "Congestion
 * state"). TCP_REPAIR carries sequence numbers, queues, windows and options, but not
 * the congestion window: an imported socket starts with the initial window (10
 * segments) and congestion control starts from scratch, so every move used to cost
 * the next responses a slow start. The exporter reads its cwnd (TCP_INFO), HANDOFF
 * carries it, and the importer stores it in the socket's local storage before its
 * connect() in repair mode. That connect() ends in tcp_init_transfer(), which sets the
 * initial window and then runs this program (BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
 * before congestion control is initialised: TCP_BPF_IW replaces the window there
 * (allowed while no data segment was sent, which holds for a repaired socket), and
 * BBR or CUBIC start from it.
 *
 * Attached to the agent's cgroup (v2), so it runs for every socket of that cgroup
 * that becomes established; a socket without storage costs one lookup. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "tcpha_shared.h"

#ifndef SOL_TCP
#define SOL_TCP 6
#endif

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct tcpha_import_cwnd);
} import_cwnd SEC(".maps");

/* Times the window was applied, and refused by the kernel (both read by the agent). */
__u64 tcpha_cwnd_applied = 0;
__u64 tcpha_cwnd_refused = 0;

SEC("sockops")
int tcpha_sockops(struct bpf_sock_ops *ops) {
  struct tcpha_import_cwnd *want;
  struct bpf_sock *sk;
  int cwnd;

  if (ops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) return 1;
  sk = ops->sk;
  if (!sk) return 1;
  want = bpf_sk_storage_get(&import_cwnd, sk, 0, 0);
  if (!want) return 1;
  cwnd = (int)want->cwnd;
  /* Never below what the kernel chose (a route's initcwnd may be larger). */
  if (cwnd > 0 && (__u32)cwnd > ops->snd_cwnd) {
    if (bpf_setsockopt(ops, SOL_TCP, TCP_BPF_IW, &cwnd, sizeof cwnd) == 0)
      __sync_fetch_and_add(&tcpha_cwnd_applied, 1);
    else
      __sync_fetch_and_add(&tcpha_cwnd_refused, 1);
  }
  bpf_sk_storage_delete(&import_cwnd, sk);
  return 1;
}

char LICENSE[] SEC("license") = "GPL";
