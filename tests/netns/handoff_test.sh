#!/usr/bin/env bash
# Acceptance test of the TCP handoff (FE + 3 BEs in the test bed): byte-exact
# responses for 1 KB..10 MB sequentially and concurrently, spread over every BE,
# responses bypassing the FE (its eth0 sends < 5% of the response bytes), the FE's
# handoff counters and latency, and two requests on one kept-alive connection.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum awk
tb_cluster_up 3

conns=0 # TCP connections through the VIP: each one is a handoff
bytes=0 # response bytes received while the FE's transmissions are measured
mix=(f1k.bin f10k.bin f100k.bin f1m.bin index.html f1k.bin f10k.bin f100k.bin f1m.bin f10m.bin)
fe_tx0=$(tb_iface_tx_bytes "$TB_NS_FE")

echo "== 200 sequential requests"
for ((i = 0; i < 200; i++)); do
  f=${mix[i % ${#mix[@]}]}
  n=$(tb_fetch "$f") || tb_fail "sequential request $i (/$f) failed"
  bytes=$((bytes + n))
  conns=$((conns + 1))
done

echo "== 50 concurrent requests"
mkdir -p "$TB_DIR/par"
for ((i = 0; i < 50; i++)); do
  f=${mix[i % ${#mix[@]}]}
  tb_spawn --log "$TB_DIR/par/$i.out" "par$i" "$TB_NS_C" curl -sS --noproxy '*' --max-time 30 \
    -o "$TB_DIR/par/$i.body" -w '%{http_code} %{size_download}' "http://$TB_VIP/$f"
done
for ((i = 0; i < 50; i++)); do
  f=${mix[i % ${#mix[@]}]}
  rc=0
  tb_wait "par$i" 40 || rc=$?
  ((rc == 0)) || tb_fail "concurrent request $i (/$f): curl exit status $rc: $(cat "$TB_DIR/par/$i.out")"
  out=$(<"$TB_DIR/par/$i.out")
  code=${out%% *} n=${out##* }
  [[ $code == 200 ]] || tb_fail "concurrent request $i (/$f): HTTP $code"
  sum=$(sha256sum <"$TB_DIR/par/$i.body")
  [[ ${sum%% *} == "${TB_SHA[$f]}" ]] || tb_fail "concurrent request $i (/$f): content differs ($n bytes)"
  bytes=$((bytes + n))
  conns=$((conns + 1))
done

fe_tx=$(($(tb_iface_tx_bytes "$TB_NS_FE") - fe_tx0))
pct=$(awk -v a="$fe_tx" -v b="$bytes" 'BEGIN { printf "%.3f", 100 * a / b }')
echo "responses: $bytes bytes to the client; FE eth0 transmitted $fe_tx bytes ($pct%)"
((fe_tx * 20 < bytes)) || tb_fail "the FE transmitted $pct% of the response bytes (limit 5%): responses do not bypass it"

echo "== every BE answers"
declare -A seen=()
for ((i = 0; i < 30; i++)); do
  who=$(tb_curl whoami.txt -f) || tb_fail "GET /whoami.txt failed"
  seen[$who]=1
  conns=$((conns + 1))
done
for k in 1 2 3; do
  [[ -n ${seen[be$k]:-} ]] || tb_fail "be$k never answered /whoami.txt (answers: ${!seen[*]})"
done

echo "== keep-alive: two requests on one connection"
out=$(tb_c curl -sS --noproxy '*' --max-time 20 -w '%{http_code} %{num_connects}\n' \
  -o "$TB_DIR/ka1" "http://$TB_VIP/f100k.bin" -o "$TB_DIR/ka2" "http://$TB_VIP/f1m.bin") ||
  tb_fail "keep-alive pair failed: $out"
conns=$((conns + 1))
[[ $out == $'200 1\n200 0' ]] ||
  tb_fail "keep-alive pair: want '200 1' then '200 0' (HTTP status, new connections), got: $(tr '\n' ' ' <<<"$out")"
for pair in ka1:f100k.bin ka2:f1m.bin; do
  sum=$(sha256sum <"$TB_DIR/${pair%%:*}")
  [[ ${sum%% *} == "${TB_SHA[${pair#*:}]}" ]] || tb_fail "keep-alive: /${pair#*:} content differs"
done

echo "== status"
js=$(tb_status_json fe) || tb_fail "tcpha status on the FE failed"
jq -e '.flows | type == "number"' <<<"$js" >/dev/null || tb_fail "FE status has no flows count: $js"
for k in 1 2 3; do
  h=$(jq -e --arg id "be$k" '.backends[] | select(.id == $id) | .handoffs' <<<"$js") ||
    tb_fail "FE status has no handoffs for be$k: $js"
  echo "be$k: $h handoffs"
  ((h > 0)) || tb_fail "no handoffs to be$k"
done
ok=$(jq -e '.handoffs.ok' <<<"$js") || tb_fail "FE status has no handoffs.ok: $js"
failed=$(jq -e '.handoffs.failed' <<<"$js") || tb_fail "FE status has no handoffs.failed: $js"
echo "handoffs: ok $ok, failed $failed, connections made $conns"
((ok >= conns)) || tb_fail "handoffs.ok = $ok < $conns connections"
((failed == 0)) || tb_fail "handoffs.failed = $failed"
lat=$(jq -er '.handoff_latency_us | "\(.p50) \(.p99)"' <<<"$js") ||
  tb_fail "FE status has no handoff_latency_us: $js"
read -r p50 p99 <<<"$lat"
echo "handoff latency: p50 ${p50} us, p99 ${p99} us"
jq -e '.handoff_latency_us | (.p50 | type == "number") and .p50 > 0 and .p99 >= .p50' <<<"$js" \
  >/dev/null || tb_fail "implausible handoff latency: p50 $p50 us, p99 $p99 us"
imported=0
for k in 1 2 3; do
  n=$(tb_status_json "be$k" | jq -e '.imported') || tb_fail "be$k status has no imported count"
  imported=$((imported + n))
done
((imported >= conns)) || tb_fail "the BEs imported $imported connections, want >= $conns"

echo "PASS: handoff"
