#!/usr/bin/env bash
# Dynamic membership (issue 7): the FE's cluster file lists be1..be3; be4 starts with
# a file that also lists itself, registers with the FE over the control port, shows
# up in the FE's status ("dynamic": true) and receives handoffs. On SIGTERM while a
# download from it runs, be4 leaves cleanly: no new handoffs, the download completes
# byte-exact, be4 exits 0 and the FE stops listing it as usable. No request fails.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum
tb_require_tcpha
tb_init 4
tb_key
for k in 1 2 3 4; do tb_docroot "$k"; done
TB_CONFIG_BES=4 tb_config
mv "$TB_CONFIG" "$TB_DIR/be4.toml" # next to cluster.key, which it names relative to itself
TB_CONFIG_BES=3 tb_config
grep -q '"be4"' "$TB_CONFIG" && tb_fail "the FE's file must not list be4"
tb_small_buffers # the download from be4 must still stream when it is told to leave
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

fe_ids() { tb_status_json fe | jq -cr '[.backends[].id]'; }
declare -A COUNT=()
# whoami_counts N [BANNED]: N requests for /whoami.txt, none answered by BANNED.
whoami_counts() {
  local i who
  COUNT=()
  for ((i = 0; i < $1; i++)); do
    who=$(tb_curl whoami.txt -f) || tb_fail "GET /whoami.txt ($i) failed"
    [[ $who != "${2:-}" ]] || tb_fail "request $i answered by $who, which is leaving or gone"
    COUNT[$who]=$((${COUNT[$who]:-0} + 1))
  done
  echo "$1 requests: be1 ${COUNT[be1]:-0}, be2 ${COUNT[be2]:-0}, be3 ${COUNT[be3]:-0}, be4 ${COUNT[be4]:-0}"
}
echo "FE lists $(fe_ids)"
[[ $(fe_ids) == '["be1","be2","be3"]' ]] || tb_fail "before be4 starts the FE must list be1..be3 only"

echo "== be4 joins"
tb_spawn be4 "${TB_NS_BE[4]}" "$TB_TCPHA" be -c "$TB_DIR/be4.toml" --id be4 --socket "$TB_DIR/be4.sock"
tb_until 10000 eval '[[ $(tb_fe_backend be4) == up ]]' ||
  tb_fail "be4 not listed 'up' by the FE 10 s after it started (FE lists $(fe_ids))"
echo "be4 up in the FE's status $TB_UNTIL_MS ms after it started"
tb__alive be4 || tb_fail "be4 exited"
js=$(tb_status_json fe)
jq -e '[.backends[] | select(.id == "be4")] | length == 1 and .[0].dynamic == true and .[0].address == "10.200.0.14"' \
  <<<"$js" >/dev/null || tb_fail "FE status for be4: $(jq -c '.backends[] | select(.id == "be4")' <<<"$js")"
jq -e '[.backends[] | select(.id != "be4") | .dynamic] | all(. == false)' <<<"$js" >/dev/null ||
  tb_fail "back-ends from the file are reported dynamic: $(jq -c '[.backends[] | {id, dynamic}]' <<<"$js")"
"$TB_TCPHA" status --socket "$TB_DIR/fe.sock" >"$TB_DIR/table" || tb_fail "tcpha status (table) failed"
cat "$TB_DIR/table"
grep -q '^be4 .*10\.200\.0\.14' "$TB_DIR/table" || tb_fail "the status table has no row for be4"
whoami_counts 40
((${COUNT[be4]:-0} > 0)) || tb_fail "be4 answered none of 40 requests"

echo "== be4 leaves on SIGTERM while a download from it runs"
mkdir -p "$TB_DIR/dl"
n_dl=0
be4_active() { tb_status_json be4 | jq -e .active; }
while (($(be4_active) < 1)); do
  ((n_dl < 5)) || tb_fail "5 downloads started and none runs on be4"
  tb_spawn --log "$TB_DIR/dl/$n_dl.out" "dl$n_dl" "$TB_NS_C" curl -sS --noproxy '*' --max-time 60 \
    --limit-rate 1500k -o "$TB_DIR/dl/$n_dl.body" -w '%{http_code} %{size_download}' "http://$TB_VIP/f10m.bin"
  n_dl=$((n_dl + 1))
  sleep 0.2
done
# shellcheck disable=SC2034 # read by an eval below
sent_term=$(tb_status_json be4 | jq -e .counters.bytes_sent)
h_term=$(tb_fe_backend be4 handoffs)
echo "$n_dl downloads running, $(be4_active) of them on be4; SIGTERM to be4"
kill -TERM "${TB_PID[be4]}"
t_term=$(tb__now_ms)
tb_until 3000 eval '[[ $(tb_fe_backend be4) != up ]]' || tb_fail "the FE still lists the leaving be4 'up' after 3 s"
echo "FE lists be4 '$(tb_fe_backend be4 2>/dev/null || echo removed)' $TB_UNTIL_MS ms after SIGTERM"
whoami_counts 20 be4
h=$(tb_fe_backend be4 handoffs 2>/dev/null || echo "$h_term")
((h == h_term)) || tb_fail "the FE handed $((h - h_term)) new connections to the leaving be4"
tb__alive be4 || tb_fail "be4 exited $(($(tb__now_ms) - t_term)) ms after SIGTERM, before its download finished"
# be4 takes no new connection after SIGTERM, so bytes it sends now are its download's.
tb_until 8000 eval '(($(tb_status_json be4 | jq -e .counters.bytes_sent) > sent_term))' ||
  tb_fail "be4 sent nothing after SIGTERM (or exited first): its download did not keep running"
echo "be4 still sending $(($(tb__now_ms) - t_term)) ms after SIGTERM"
for ((i = 0; i < n_dl; i++)); do
  rc=0
  tb_wait "dl$i" 40 || rc=$?
  ((rc == 0)) || tb_fail "download $i: curl exit status $rc: $(cat "$TB_DIR/dl/$i.out")"
  out=$(<"$TB_DIR/dl/$i.out")
  [[ ${out%% *} == 200 ]] || tb_fail "download $i: HTTP ${out%% *}"
  sum=$(sha256sum <"$TB_DIR/dl/$i.body")
  [[ ${sum%% *} == "${TB_SHA[f10m.bin]}" ]] || tb_fail "download $i differs (${out##* } bytes)"
done
echo "$n_dl downloads complete and byte-exact, $(($(tb__now_ms) - t_term)) ms after SIGTERM"
rc=0
tb_wait be4 30 || rc=$?
echo "be4 exited with status $rc, $(($(tb__now_ms) - t_term)) ms after SIGTERM"
((rc == 0)) || tb_fail "be4 exited with status $rc after SIGTERM, want 0"
tb_until 3000 eval '[[ $(tb_fe_backend be4 2>/dev/null || echo removed) =~ ^(down|removed)$ ]]' ||
  tb_fail "the FE lists be4 '$(tb_fe_backend be4)' after it exited, want it down or removed"
echo "FE after be4 left: $(tb_status_json fe | jq -c '[.backends[] | {id, state}]')"
whoami_counts 40 be4
for k in 1 2 3; do ((${COUNT[be$k]:-0} > 0)) || tb_fail "be$k answered none of 40 requests"; done
js=$(tb_status_json fe)
echo "handoffs: $(jq -c .handoffs <<<"$js")"
jq -e '.handoffs.failed == 0' <<<"$js" >/dev/null || tb_fail "failed handoffs: $(jq -c .handoffs <<<"$js")"

echo "PASS: membership"
