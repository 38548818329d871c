#!/usr/bin/env bash
# Health by heartbeats (issue 7): be2 is hung with SIGSTOP while its TCP connections
# stay open. The FE must mark it "down" within [cluster] dead_after_ms (plus a
# margin), 100 sequential requests made meanwhile must all succeed on be1/be3 (a
# handoff attempted before the mark times out and is retried elsewhere), and no
# handoff may be attempted to be2 once it is down. After SIGCONT be2 must be "up"
# again within 2 s and receive handoffs again.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum awk
HEARTBEAT_MS=100
DEAD_MS=500
MARGIN_MS=500 # the FE's timer granularity and scheduling
HANDOFF_TIMEOUT_MS=500
# An attempt in flight at the mark ends with its lease: the handoff timeout plus the
# age of be2's last heartbeat then, at most twice the timeout (handoff/sender.hpp).
SETTLE_S=$(awk -v ms=$((2 * HANDOFF_TIMEOUT_MS + 200)) 'BEGIN { print ms / 1000 }')
TB_CLUSTER_EXTRA=$(printf 'heartbeat_ms = %d\ndead_after_ms = %d' "$HEARTBEAT_MS" "$DEAD_MS")
TB_FE_EXTRA="handoff_timeout_ms = $HANDOFF_TIMEOUT_MS"
tb_cluster_up 3
TB_CURL_MAX_TIME=5 # a request may be retried once (handoff_timeout_ms 500), never hang

# be2_view: "STATE HANDOFFS FAILURES HEARTBEAT_AGE_MS" from one FE status.
be2_view() {
  tb_status_json fe | jq -er '.backends[] | select(.id == "be2") |
    "\(.state) \(.handoffs) \(.failures) \(.heartbeat_age_ms)"'
}
declare -A seen=()
for ((i = 0; i < 30; i++)); do
  who=$(tb_curl whoami.txt -f) || tb_fail "warm-up request $i failed"
  seen[$who]=1
done
[[ -n ${seen[be2]:-} ]] || tb_fail "be2 answered none of 30 warm-up requests (answers: ${!seen[*]})"
imported0=$(tb_status_json be2 | jq -e .imported) || tb_fail "be2 status has no imported count"
read -r state h0 f0 age <<<"$(be2_view)"
echo "before: be2 $state, $h0 handoffs, $f0 failures, heartbeat age $age ms; be2 imported $imported0"
retried0=$(tb_fe_counter handoff_retried)

echo "== SIGSTOP be2"
kill -STOP "${TB_PID[be2]}"
t_stop=$(tb__now_ms)
# Watches the FE's view of be2 while the requests below run. Writes the line
# "MS_AFTER_STOP STATE HANDOFFS FAILURES AGE" to down when it first reads "down", and
# to settled once an attempt begun before the mark has had its lease.
(
  set +e
  trap - ERR EXIT
  while (($(tb__now_ms) - t_stop < 5000)); do
    v=$(be2_view 2>/dev/null)
    if [[ $v == down* ]]; then
      t_down=$(tb__now_ms)
      echo "$((t_down - t_stop)) $v" >"$TB_DIR/down"
      sleep "$SETTLE_S"
      echo "$(($(tb__now_ms) - t_stop)) $(be2_view)" >"$TB_DIR/settled"
      exit 0
    fi
    sleep 0.01
  done
  exit 1
) &
tb_track watch $!

# Sequential requests: at least 100, and on for 2 s after the watcher is done, so
# that many of them come after be2 was marked down.
n=0 slow=0 worst=0 t_end=0
while ((n < 100 || t_end == 0 || $(tb__now_ms) < t_end)); do
  ((n < 1000 && $(tb__now_ms) - t_stop < 20000)) || tb_fail "requests loop: watcher never finished ($n requests)"
  if ((t_end == 0)) && [[ -s $TB_DIR/settled ]]; then t_end=$(($(tb__now_ms) + 2000)); fi
  t0=$(tb__now_ms)
  if ((n % 2)); then
    tb_fetch f100k.bin >/dev/null || tb_fail "request $n, $((t0 - t_stop)) ms after SIGSTOP, failed"
  else
    who=$(tb_curl whoami.txt -f) || tb_fail "request $n, $((t0 - t_stop)) ms after SIGSTOP, failed"
    [[ $who == be1 || $who == be3 ]] || tb_fail "request $n answered by '$who' while be2 is stopped"
  fi
  ms=$(($(tb__now_ms) - t0))
  ((ms > worst)) && worst=$ms
  ((ms < 300)) || slow=$((slow + 1))
  n=$((n + 1))
done
echo "$n sequential requests succeeded while be2 was stopped; $slow took >= 300 ms (a retried handoff), slowest $worst ms"
tb_wait watch 6 || tb_fail "the FE did not mark the stopped be2 down within 5 s (now: $(be2_view))"
read -r down_ms _ h_down f_down age <"$TB_DIR/down"
read -r _ _ h_set f_set _ <"$TB_DIR/settled"
echo "be2 marked down $down_ms ms after SIGSTOP (dead_after_ms $DEAD_MS); heartbeat age then $age ms"
((down_ms <= DEAD_MS + MARGIN_MS)) || tb_fail "be2 marked down after $down_ms ms, want <= $((DEAD_MS + MARGIN_MS))"
read -r state h f age <<<"$(be2_view)"
[[ $state == down ]] || tb_fail "be2 is '$state' while still stopped"
((age > DEAD_MS)) || tb_fail "be2 is down but its heartbeat age is only $age ms"
# The client is sequential: at most one attempt was in flight at the mark, and it
# ends (fails) within its lease. Nothing may change after that.
((h_set == h_down && f_set - f_down <= 1)) ||
  tb_fail "be2 after the mark: handoffs $h_down -> $h_set, failures $f_down -> $f_set (at most 1 attempt in flight)"
((h == h_set && f == f_set)) ||
  tb_fail "handoffs were attempted to be2 after it was marked down: handoffs $h_set -> $h, failures $f_set -> $f"
retried=$(($(tb_fe_counter handoff_retried) - retried0))
echo "while stopped: be2 handoffs $h0 -> $h, failures $f0 -> $f (attempts before the mark), retried elsewhere $retried"
((h == h0)) || tb_fail "be2 took $((h - h0)) handoffs while stopped"
((retried == f - f0)) || tb_fail "$((f - f0)) failed attempts to be2 but $retried retries"

echo "== SIGCONT be2"
kill -CONT "${TB_PID[be2]}"
t_cont=$(tb__now_ms)
tb_until 2000 eval '[[ $(be2_view) == up* ]]' || tb_fail "be2 not up 2 s after SIGCONT (now: $(be2_view))"
echo "be2 up again $(($(tb__now_ms) - t_cont)) ms after SIGCONT"
imported=$(tb_status_json be2 | jq -e .imported) || tb_fail "be2 status does not answer after SIGCONT"
((imported == imported0)) || tb_fail "be2 imported $((imported - imported0)) connections while it was stopped"
echo "be2 imported count unchanged while stopped: $imported"
declare -A count=()
for ((i = 0; i < 30; i++)); do
  who=$(tb_curl whoami.txt -f) || tb_fail "request $i after SIGCONT failed"
  count[$who]=$((${count[$who]:-0} + 1))
done
echo "30 requests after SIGCONT: be1 ${count[be1]:-0}, be2 ${count[be2]:-0}, be3 ${count[be3]:-0}"
((${count[be2]:-0} > 0)) || tb_fail "be2 received no handoffs after it came back"
js=$(tb_status_json fe)
echo "handoffs: $(jq -c .handoffs <<<"$js"); counters: $(jq -c '.counters | {handoff_timeout, handoff_retried, ctl_stale}' <<<"$js")"

echo "PASS: health"
