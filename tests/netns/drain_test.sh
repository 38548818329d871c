#!/usr/bin/env bash
# Drain (issue 7): with rate-limited 10 MB downloads running on be1 (and others),
# `tcpha drain be1` stops new handoffs to be1 while its running downloads complete
# byte-exact; `tcpha undrain be1` brings it back into rotation.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum
tb_cluster_up 3
tb_small_buffers # the downloads must stream from their BE while it is drained

be_active() { tb_status_json "be$1" | jq -e .active; }
be_sent() { tb_status_json "be$1" | jq -e .counters.bytes_sent; }
total_active() { echo $(($(be_active 1) + $(be_active 2) + $(be_active 3))); }
# whoami_counts N: N requests for /whoami.txt; sets COUNT[beK].
declare -A COUNT=()
whoami_counts() {
  local i who
  COUNT=()
  for ((i = 0; i < $1; i++)); do
    who=$(tb_curl whoami.txt -f) || tb_fail "GET /whoami.txt ($i) failed"
    COUNT[$who]=$((${COUNT[$who]:-0} + 1))
  done
  echo "$1 requests: be1 ${COUNT[be1]:-0}, be2 ${COUNT[be2]:-0}, be3 ${COUNT[be3]:-0}"
}

echo "== rate-limited 10 MB downloads until at least one runs on be1"
mkdir -p "$TB_DIR/dl"
n_dl=0
while ((n_dl < 3)) || (($(be_active 1) < 1)); do
  ((n_dl < 6)) || tb_fail "6 downloads started and none runs on be1"
  tb_spawn --log "$TB_DIR/dl/$n_dl.out" "dl$n_dl" "$TB_NS_C" curl -sS --noproxy '*' --max-time 60 \
    --limit-rate 1000k -o "$TB_DIR/dl/$n_dl.body" -w '%{http_code} %{size_download}' "http://$TB_VIP/f10m.bin"
  n_dl=$((n_dl + 1))
  tb_until 3000 eval '(($(total_active) >= n_dl))' || tb_fail "download $((n_dl - 1)) did not start on any BE"
done
on_be1=$(be_active 1)
echo "$n_dl downloads running: be1 $on_be1, be2 $(be_active 2), be3 $(be_active 3)"

echo "== drain be1"
out=$("$TB_TCPHA" drain be1 --socket "$TB_DIR/fe.sock") || tb_fail "tcpha drain be1 failed: $out"
echo "tcpha drain be1: $out"
jq -e '.ok == true' <<<"$out" >/dev/null || tb_fail "tcpha drain be1 did not answer ok: $out"
state=$(tb_fe_backend be1) || tb_fail "FE status lists no be1"
[[ $state == drained ]] || tb_fail "be1 is '$state' after drain, want 'drained'"
rc=0
out=$("$TB_TCPHA" drain nosuch --socket "$TB_DIR/fe.sock" 2>&1) || rc=$?
((rc != 0)) && jq -e '.ok == false' <<<"$out" >/dev/null ||
  tb_fail "tcpha drain of an unknown backend: exit $rc, '$out' (want ok false and a failure exit)"
h_drain=$(tb_fe_backend be1 handoffs)
sent_drain=$(be_sent 1)
# 15 requests: round-robin would give be1 five; under heavy load each `ip netns exec
# curl` can take a second, and the downloads (~10 s) must span them all.
whoami_counts 15
((${COUNT[be1]:-0} == 0)) || tb_fail "be1 answered ${COUNT[be1]} requests while drained"
h=$(tb_fe_backend be1 handoffs)
((h == h_drain)) || tb_fail "the FE handed $((h - h_drain)) connections to the drained be1"
active=$(be_active 1)
((active >= on_be1)) || tb_fail "be1's downloads went from $on_be1 to $active before they could finish"
for ((i = 0; i < n_dl; i++)); do
  tb__alive "dl$i" || tb_fail "download $i ended before the drained-state checks were done (it must span them)"
done
echo "be1 drained: no new handoffs ($h in all), its $active downloads still running"

echo "== the running downloads complete"
for ((i = 0; i < n_dl; i++)); do
  rc=0
  tb_wait "dl$i" 40 || rc=$?
  ((rc == 0)) || tb_fail "download $i: curl exit status $rc: $(cat "$TB_DIR/dl/$i.out")"
  out=$(<"$TB_DIR/dl/$i.out")
  [[ ${out%% *} == 200 ]] || tb_fail "download $i: HTTP ${out%% *}"
  sum=$(sha256sum <"$TB_DIR/dl/$i.body")
  [[ ${sum%% *} == "${TB_SHA[f10m.bin]}" ]] || tb_fail "download $i differs (${out##* } bytes)"
done
# No new connection went to be1 since the drain, so what it sent since then is the
# rest of its downloads: they really ran while it was drained.
sent=$(($(be_sent 1) - sent_drain))
echo "$n_dl downloads complete and byte-exact; be1 sent $sent bytes of its $on_be1 download(s) after the drain"
((sent > 0)) || tb_fail "be1 sent nothing after the drain: its downloads were not running"
tb_until 3000 eval '(($(be_active 1) == 0 && $(tb_fe_backend be1 active) == 0))' ||
  tb_fail "be1 still has $(be_active 1) active connections (FE view: $(tb_fe_backend be1 active))"
[[ $(tb_fe_backend be1) == drained ]] || tb_fail "be1 is '$(tb_fe_backend be1)' after its downloads, want 'drained'"

echo "== undrain be1"
out=$("$TB_TCPHA" undrain be1 --socket "$TB_DIR/fe.sock") || tb_fail "tcpha undrain be1 failed: $out"
echo "tcpha undrain be1: $out"
jq -e '.ok == true' <<<"$out" >/dev/null || tb_fail "tcpha undrain be1 did not answer ok: $out"
state=$(tb_fe_backend be1)
[[ $state == up ]] || tb_fail "be1 is '$state' after undrain, want 'up'"
whoami_counts 30
((${COUNT[be1]:-0} > 0)) || tb_fail "be1 answered no request after undrain"
jq -e '.handoffs.failed == 0' <<<"$(tb_status_json fe)" >/dev/null || tb_fail "failed handoffs"

echo "PASS: drain"
