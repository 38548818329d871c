#!/usr/bin/env bash
# A back-end dies: with 3 BEs, be2 is SIGKILLed during a run of sequential requests.
# Requests starting more than 1 s after the kill must all succeed on be1/be3, none
# may hang, and the FE must report be2 "down". With every BE dead, the FE answers 503
# at once (no hang, no reset).
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum awk
tb_cluster_up 3
TB_CURL_MAX_TIME=3 # a request caught by the failure may fail, but not hang
WINDOW_MS=1000     # time the FE may take to notice a dead BE

# fe_state ID: the FE's view of a backend.
fe_state() { tb_status_json fe | jq -er --arg id "$1" '.backends[] | select(.id == $id) | .state'; }

echo "== SIGKILL be2 during sequential requests"
kill_at=20 t_kill=0 after=0 lost=0 t_start=$(tb__now_ms)
for ((i = 0; i < 300 && after < 60; i++)); do
  (($(tb__now_ms) - t_start < 60000)) || break
  if ((i == kill_at)); then
    tb_kill_be 2
    t_kill=$(tb__now_ms)
    echo "be2 killed before request $i"
  fi
  t0=$(tb__now_ms)
  err="" who=""
  if ((i % 2)); then
    tb_fetch f100k.bin >/dev/null 2>"$TB_DIR/err" || err=$(<"$TB_DIR/err")
  else
    who=$(tb_curl whoami.txt -f 2>"$TB_DIR/err") || err="GET /whoami.txt: $(<"$TB_DIR/err")"
  fi
  if ((t_kill == 0 || t0 - t_kill < WINDOW_MS)); then
    if [[ -n $err ]]; then
      ((t_kill)) || tb_fail "request $i failed before any BE died: $err"
      lost=$((lost + 1))
      echo "request $i, $((t0 - t_kill)) ms after the kill, failed (allowed): $err"
    fi
    continue
  fi
  [[ -z $err ]] || tb_fail "request $i, $((t0 - t_kill)) ms after be2 died, failed: $err"
  [[ -z $who || $who == be1 || $who == be3 ]] || tb_fail "request $i answered by '$who' after be2 died"
  after=$((after + 1))
done
((after >= 60)) || tb_fail "only $after requests completed after the failure window"
echo "$after requests after the window succeeded; $lost failed inside it"
state=$(fe_state be2) || tb_fail "FE status lists no be2"
[[ $state == down ]] || tb_fail "FE reports be2 '$state', want 'down'"
for k in 1 3; do
  state=$(fe_state "be$k") || tb_fail "FE status lists no be$k"
  [[ $state == up ]] || tb_fail "FE reports be$k '$state', want 'up'"
done

echo "== every BE dead: 503"
tb_kill_be 1
tb_kill_be 3
t_kill=$(tb__now_ms)
while (($(tb__now_ms) - t_kill < WINDOW_MS)); do
  [[ $(tb_status_json fe | jq -r '[.backends[].state] | unique | join(",")') == down ]] && break
  sleep 0.05
done
for ((i = 0; i < 5; i++)); do
  out=$(tb_curl f1k.bin -o /dev/null -w '%{http_code} %{time_total}') ||
    tb_fail "request $i with no BE left: curl exit status $? (want an HTTP 503)"
  read -r code secs <<<"$out"
  echo "no BE left: HTTP $code in ${secs}s"
  [[ $code == 503 ]] || tb_fail "request $i with no BE left: HTTP $code, want 503"
  awk -v s="$secs" 'BEGIN { exit !(s < 1) }' || tb_fail "the 503 took ${secs}s"
done
for k in 1 2 3; do
  state=$(fe_state "be$k") || tb_fail "FE status lists no be$k"
  [[ $state == down ]] || tb_fail "FE reports be$k '$state' after it died"
done

echo "PASS: be_failure"
