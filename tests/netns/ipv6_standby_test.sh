#!/usr/bin/env bash
# The IPv6 VIP through a hot-standby takeover (issues 14 and 15): the active FE "fe"
# and a standby "fe2" with vip6 set. An IPv6 client has the active FE's MAC for vip6
# and a slow IPv6 download streaming from its BE; the active FE's host fails (link
# down, SIGKILL). The standby takes both VIPs over and advertises vip6 (unsolicited
# neighbour advertisement, Override): within 2 s the client's neighbour entry for
# vip6 is the standby's MAC and a new IPv6 request is served, without waiting for the
# client's neighbour unreachability detection (5 s and more); the download, handed
# off before the failure, finishes byte-exact (the standby had its IPv6 flow).
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB_IPV6=1
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3
tb_require_tcpha

tb_init 2
tb_add_fe2
tb_key
for k in 1 2; do tb_docroot "$k"; done
tb_config "$(printf '[[standby]]\nid = "fe2"\naddress = "%s"\ninterface = "eth0"\n' "$TB_FE2_ADDR")"
FE_MAC=$(tb_fe cat /sys/class/net/eth0/address)
FE2_MAC=$(tb_fe2 cat /sys/class/net/eth0/address)
V6="http://[$TB_VIP6]"
state_is() { [[ $(tb_status_json "$1" | jq -er '.standby.state') == "$2" ]]; }
neigh_mac() { tb_c ip -6 neigh show "$TB_VIP6" dev eth0 | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }'; }
neigh_is() { [[ $(neigh_mac) == "$1" ]]; }
vip6_in() { [[ $(ip -n "$1" -o -6 addr show dev eth0) == *" $TB_VIP6/128 "* ]]; }

for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_start_fe2
tb_until 10000 state_is fe active || tb_fail "fe is not the active front-end"
tb_until 10000 state_is fe2 standby || tb_fail "fe2 is not a standby"
tb_wait_ready
vip6_in "$TB_NS_FE" || tb_fail "the active FE does not hold $TB_VIP6"
! vip6_in "$TB_NS_FE2" || tb_fail "the standby holds $TB_VIP6"

echo "== before the failure: IPv6 through the active FE"
out=$(tb_c curl -gsS --noproxy '*' --max-time 10 "$V6/whoami.txt") || tb_fail "IPv6 GET before the failure: $out"
neigh_is "$FE_MAC" || tb_fail "the client's entry for $TB_VIP6 is '$(neigh_mac)', not the active FE's $FE_MAC"
# A download that streams from its BE across the failure: 10 MB at 1 MB/s.
tb_c sysctl -qw net.ipv4.tcp_rmem="4096 65536 131072"
mkdir -p "$TB_DIR/dl"
tb_spawn --log "$TB_DIR/dl/0.out" dl0 "$TB_NS_C" curl -gsS --noproxy '*' --max-time 40 \
  --limit-rate 1000k -o "$TB_DIR/dl/0.body" -w '%{http_code} %{size_download}' "$V6/f10m.bin"
sleep 1
replicated() { (($(tb_status_json fe2 | jq -e '.standby.replicated_flows // 0') >= 1)); }
tb_until 3000 replicated || tb_fail "the standby has no replicated flow: $(tb_status_json fe2 | jq -c .standby)"

echo "== the active FE fails"
ip -n "$TB_NS_FE" link set eth0 down
kill -KILL "${TB_PID[fe]}"
t0=$(tb__now_ms)
tb_until 3000 state_is fe2 active || tb_fail "fe2 did not become active"
served() { tb_c curl -gsS --noproxy '*' --max-time 0.5 "$V6/whoami.txt"; }
tb_until 2000 served || tb_fail "no IPv6 request served within 2 s of the takeover (neighbour entry: $(neigh_mac))"
echo "IPv6 served by the standby $(($(tb__now_ms) - t0)) ms after the failure"
neigh_is "$FE2_MAC" || tb_fail "the client's entry for $TB_VIP6 is '$(neigh_mac)', not the standby's $FE2_MAC"
vip6_in "$TB_NS_FE2" || tb_fail "the standby did not take $TB_VIP6"

tb_downloads_ok 1 f10m.bin "${TB_SIZE[f10m.bin]}"
((TB_DL_OK == 1)) || tb_fail "the IPv6 download across the takeover did not finish byte-exact"
echo "PASS: ipv6_standby"
