#!/usr/bin/env bash
# Drain moves, rebalance on join (issue 12): idle keep-alive connections are moved to
# other back-ends instead of being closed or left where they are.
# 1. Three BEs, 165 idle keep-alive connections spread over them (round-robin: 55 on
#    each). `tcpha drain be1`: be1 holds 0 connections within 1 s, and the next request
#    on every one of the 165 connections (the same TCP connections: the client never
#    reconnects) is answered, by be2 or be3 (issue 12: "drain with 50 idle keep-alive
#    connections on the BE ... 0 connections within 1 s"). Before the drain no BE has
#    moved any: the rebalance leaves alone what the FE has just spread.
# 2. be3 stopped and started again (a BE joining): the idle connections rebalance
#    until every BE in rotation holds its weighted share within 10%, and every
#    connection still answers.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd jq python3
tb_cluster_up 3

N=165
CLI=$TB_DIR/idle
mkdir -p "$CLI"
be_active() { tb_status_json "be$1" | jq -e .active; }
be_counter() { tb_status_json "be$1" | jq -e ".counters.$2"; }

echo "== $N idle keep-alive connections"
tb_spawn --log "$TB_DIR/idle.log" idle "$TB_NS_C" python3 "$HERE/idle_clients.py" "$TB_VIP" "$N" "$CLI"
tb_until 30000 test -f "$CLI/ready" || tb_fail "the clients did not connect: $(cat "$TB_DIR/idle.log")"
grep -q ERROR "$CLI/round-0" && tb_fail "first requests failed: $(grep ERROR "$CLI/round-0" | head -3)"
echo "first requests: be1 $(grep -c ' be1$' "$CLI/round-0") be2 $(grep -c ' be2$' "$CLI/round-0")" \
  "be3 $(grep -c ' be3$' "$CLI/round-0")"
on_be1=$(be_active 1)
# The FE spread them; the rebalance must not move what it just placed (the counts in
# the heartbeats lag while connections open: it waits until they have been idle 1 s).
for k in 1 2 3; do
  ((($(be_counter "$k" moved_out)) == 0)) ||
    tb_fail "be$k moved $(be_counter "$k" moved_out) connections while they were opening" \
      "(be1 $on_be1 be2 $(be_active 2) be3 $(be_active 3))"
done
((on_be1 >= 50)) || tb_fail "only $on_be1 connections on be1 to drain (want 50)"

echo "== drain be1 ($on_be1 connections)"
"$TB_TCPHA" drain be1 --socket "$TB_DIR/fe.sock" >/dev/null || tb_fail "tcpha drain be1 failed"
tb_until 1000 eval '(($(be_active 1) == 0))' ||
  tb_fail "be1 still holds $(be_active 1) connections 1 s after the drain (want 0)"
drain_ms=$TB_UNTIL_MS
moved=$(be_counter 1 moved_out)
echo "be1 empty ${drain_ms} ms after the drain; moved_out $moved, move_failed $(be_counter 1 move_failed)"
((moved >= on_be1)) || tb_fail "be1 moved $moved connections, want >= $on_be1"
res=$(tb_idle_round "$CLI" 1 "$N")
echo "next request on every connection: $res"
[[ $res == "be1 0 "* ]] || tb_fail "be1 answered while drained: $res"
"$TB_TCPHA" undrain be1 --socket "$TB_DIR/fe.sock" >/dev/null || tb_fail "tcpha undrain be1 failed"

echo "== be3 leaves (SIGTERM drain moves its connections away), then joins again"
tb_stop_be 3 || tb_fail "be3 did not stop cleanly (status ${TB_EXIT[be3]})"
echo "be3 stopped: be1 $(be_active 1), be2 $(be_active 2)"
tb_start_be 3
tb_wait_ready
# Shares within 10% of the weights (equal here): N/3 each, +-10% of it (at least 1).
share=$((N / 3))
tol=$(((share + 9) / 10))
balanced() {
  local k a
  for k in 1 2 3; do
    a=$(be_active "$k") || return 1
    ((a >= share - tol && a <= share + tol)) || return 1
  done
}
tb_until 10000 balanced ||
  tb_fail "not rebalanced 10 s after be3 joined: be1 $(be_active 1) be2 $(be_active 2) be3 $(be_active 3) (want $share +- $tol each)"
echo "rebalanced ${TB_UNTIL_MS} ms after be3 was ready: be1 $(be_active 1) be2 $(be_active 2) be3 $(be_active 3)"
res=$(tb_idle_round "$CLI" 2 "$N")
echo "next request on every connection: $res"
touch "$CLI/stop"
tb_wait idle 10 || true
echo "PASS: drain_moves"
