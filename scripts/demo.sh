#!/usr/bin/env bash
# `make demo`: a client, a front-end and 3 back-ends in network namespaces; shows
# who answers, loads the cluster with wrk, and proves from interface counters that the
# responses bypass the front-end. Usage: scripts/demo.sh BUILD/tcpha
set -euo pipefail
shopt -s inherit_errexit
if (($# != 1)); then
  echo "usage: $0 BUILD/tcpha" >&2
  exit 1
fi
# shellcheck source=scripts/testbed.sh
source "$(dirname "${BASH_SOURCE[0]}")/testbed.sh" "$1"
if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root (network namespaces, BPF, TCP_REPAIR); try: sudo make demo" >&2
  exit 1
fi
for c in curl wrk jq; do command -v "$c" >/dev/null || tb_fail "demo needs $c (make deps)"; done

say() { printf '\n== %s\n' "$*"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

say "Starting the cluster (namespaces, bridge, tcpha fe + 3 x tcpha be)"
tb_cluster_up 3
cat <<EOF
  client  $TB_C_ADDR   ns $TB_NS_C
  FE      $TB_FE_ADDR   ns $TB_NS_FE   owns the VIP $TB_VIP on eth0, tc ingress datapath
  be1     ${TB_BE_ADDR[1]}  ns ${TB_NS_BE[1]}  VIP on lo, serves $TB_DIR/www/be1
  be2     ${TB_BE_ADDR[2]}  ns ${TB_NS_BE[2]}  VIP on lo, serves $TB_DIR/www/be2
  be3     ${TB_BE_ADDR[3]}  ns ${TB_NS_BE[3]}  VIP on lo, serves $TB_DIR/www/be3
  All five hang off one bridge; rule: every request -> group "all", round-robin.
EOF

say "Who answers? GET http://$TB_VIP/whoami.txt six times"
for i in 1 2 3 4 5 6; do
  who=$(tb_curl whoami.txt -f) || tb_fail "request $i failed"
  echo "  request $i -> $who"
done
n=$(tb_fetch f10m.bin) || tb_fail "GET /f10m.bin failed"
echo "  GET /f10m.bin: $(mib "$n"), sha256 matches the generated file"

say "Load: wrk -t2 -c20 -d5s, a 100 KB file, then a 1 MB file"
c_rx0=$(tb_iface_rx_bytes "$TB_NS_C")
fe_tx0=$(tb_iface_tx_bytes "$TB_NS_FE")
requests=0
for f in f100k.bin f1m.bin; do
  out=$(tb_c timeout 30 wrk -t2 -c20 -d5s "http://$TB_VIP/$f") || tb_fail "wrk on /$f failed: $out"
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  requests=$((requests + n))
  echo "  /$f: $n requests, $(awk '/^Requests\/sec/ { r = $2 } /^Transfer\/sec/ { t = $2 }
    END { printf "%s requests/s, %s/s", r, t }' <<<"$out")"
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$out" >&2
    tb_fail "wrk saw errors on /$f"
  fi
done
c_rx=$(($(tb_iface_rx_bytes "$TB_NS_C") - c_rx0))
fe_tx=$(($(tb_iface_tx_bytes "$TB_NS_FE") - fe_tx0))

say "Front-end status"
js=$(tb_status_json fe) || tb_fail "tcpha status failed"
jq -r '.backends[] | "  \(.id): \(.state), \(.handoffs) handoffs"' <<<"$js"
jq -r '"  handoffs ok \(.handoffs.ok), failed \(.handoffs.failed); latency p50 \(.handoff_latency_us.p50) us, p99 \(.handoff_latency_us.p99) us"' <<<"$js"
echo "  (one handoff per connection: wrk's 2 x 20 kept-alive connections carried its $requests requests)"

say "Do the responses bypass the FE? (interface counters during the wrk runs)"
pct=$(awk -v a="$fe_tx" -v b="$c_rx" 'BEGIN { printf "%.2f", b ? 100 * a / b : 100 }')
echo "  client eth0 received    $(mib "$c_rx")"
echo "  FE eth0 transmitted     $(mib "$fe_tx")  ($pct% of it: client ACKs forwarded to the BEs, handshakes, handoff messages)"
((c_rx > 0 && fe_tx * 20 < c_rx)) || tb_fail "the FE transmitted $pct% of the client's bytes: responses do not bypass it"
echo "  the rest came straight from the back-ends, with the VIP as source address."

say "Done; cleaning up"
