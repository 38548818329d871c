// placeholder, replaced by the datapath
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int tcpha_ingress(struct __sk_buff *skb) { (void)skb; return 0; }
char LICENSE[] SEC("license") = "GPL";
