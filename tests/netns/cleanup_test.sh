#!/usr/bin/env bash
# The daemons undo what they set up: after one request and a SIGTERM to each daemon,
# the VIP is gone from the FE's eth0 and the BEs' lo, the FE has no tc filter or
# clsact qdisc left, the BEs' ARP and reverse-path sysctls are back to their earlier
# values, no daemon process remains and every daemon exited with status 0.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum awk sysctl tc
tb_require_tcpha
tb_init 3
tb_key
for k in 1 2 3; do tb_docroot "$k"; done
tb_config

nodes=("$TB_NS_FE" "${TB_NS_BE[@]:1}")
# Start from values other than the kernel defaults, so that "restored" cannot pass by
# a daemon writing the defaults back.
for k in 1 2 3; do
  tb_be "$k" sysctl -qw net.ipv4.conf.eth0.rp_filter=2 net.ipv4.conf.eth0.arp_announce=1
done
sysctls() {
  ip netns exec "$1" grep -H . /proc/sys/net/ipv4/conf/{all,default,lo,eth0}/{arp_ignore,arp_announce,rp_filter}
}
has_vip() { [[ $(ip -n "$1" -o -4 addr show dev "$2") == *" $TB_VIP/"* ]]; }
declare -A before=()
for ns in "${nodes[@]}"; do before[$ns]=$(sysctls "$ns"); done
qdiscs_before=$(tc -n "$TB_NS_FE" qdisc show dev eth0)

for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready
tb_fetch f100k.bin >/dev/null || tb_fail "request through the VIP failed"

echo "== while running: the daemons' changes are in place"
has_vip "$TB_NS_FE" eth0 || tb_fail "the FE did not add the VIP to eth0"
[[ -n $(tc -n "$TB_NS_FE" filter show dev eth0 ingress) ]] || tb_fail "no tc ingress filter on the FE"
for k in 1 2 3; do
  has_vip "${TB_NS_BE[k]}" lo || tb_fail "be$k did not add the VIP to lo"
  [[ $(sysctls "${TB_NS_BE[k]}") != "${before[${TB_NS_BE[k]}]}" ]] ||
    tb_fail "be$k did not change arp_ignore/arp_announce (the VIP would answer ARP)"
done
declare -A pids=()
for name in fe be1 be2 be3; do pids[$name]=${TB_PID[$name]}; done

echo "== SIGTERM"
for name in fe be1 be2 be3; do
  tb_stop "$name" 10 || tb_fail "$name exited with status $? after SIGTERM, want 0"
  echo "$name stopped, status 0"
done

echo "== after: nothing left"
for name in "${!pids[@]}"; do
  [[ ! -e /proc/${pids[$name]} ]] || tb_fail "$name (pid ${pids[$name]}) is still there"
done
for ns in "${nodes[@]}"; do
  left=$(ip netns pids "$ns")
  [[ -z $left ]] || tb_fail "processes left in $ns: $left"
done
! has_vip "$TB_NS_FE" eth0 || tb_fail "VIP left on the FE's eth0"
filters=$(tc -n "$TB_NS_FE" filter show dev eth0 ingress 2>&1 || true)
[[ -z $filters ]] || tb_fail "tc ingress filters left on the FE: $filters"
qdiscs=$(tc -n "$TB_NS_FE" qdisc show dev eth0)
! grep -q clsact <<<"$qdiscs" || tb_fail "clsact qdisc left on the FE: $qdiscs"
[[ $qdiscs == "$qdiscs_before" ]] || tb_fail "FE qdiscs changed: '$qdiscs_before' -> '$qdiscs'"
for ns in "${nodes[@]}"; do
  [[ $ns == "$TB_NS_FE" ]] || ! has_vip "$ns" lo || tb_fail "VIP left on lo in $ns"
  after=$(sysctls "$ns")
  [[ $after == "${before[$ns]}" ]] ||
    tb_fail "sysctls not restored in $ns:"$'\n'"$(diff <(echo "${before[$ns]}") <(echo "$after"))"
done

echo "PASS: cleanup"
