#!/usr/bin/env bash
# A back-end that comes back right after its failover (issue 13; docs/failover.md,
# "Detection" and "A back-end back within its failover"). The FE keeps a failed-over
# BE's datapath slot FAILED (its flows go to their backups) and gives it no new
# connection for 3 s after the failover, while the backups take over; a BE that dies
# again in those 3 s is not failed over a second time. So no connection may reach it
# there by a move between back-ends either: the other back-ends, told by the FE's
# TAKEOVER, do not count it as a peer for as long (and a second more). Before that, their rebalance moved
# idle connections onto the restarted, empty BE at once: each moved connection's
# packets went to its backup, which had no socket for it, and when that BE died again
# they were lost.
#
# Three BEs, failover = "ring", 60 idle keep-alive connections. be2's agent is killed
# (SIGKILL) and started again at once; until 2.5 s after its failover it must hold no
# connection, and it is killed again there: every connection must answer its next
# request (before the fix be2 held 18 of them there, and they hung). Started a third
# time, after the window, it gets its share of them by rebalancing, and every
# connection answers again.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd jq python3

TB_CLUSTER_EXTRA='failover = "ring"'
tb_cluster_up 3

N=60
CLI=$TB_DIR/idle
mkdir -p "$CLI"
be_active() { tb_status_json "be$1" | jq -e .active; }

tb_spawn --log "$TB_DIR/idle.log" idle "$TB_NS_C" python3 "$HERE/idle_clients.py" "$TB_VIP" "$N" "$CLI"
tb_until 30000 test -f "$CLI/ready" || tb_fail "the clients did not connect: $(cat "$TB_DIR/idle.log")"
grep -q ERROR "$CLI/round-0" && tb_fail "first requests failed: $(grep ERROR "$CLI/round-0" | head -3)"
echo "first requests: be1 $(grep -c ' be1$' "$CLI/round-0") be2 $(grep -c ' be2$' "$CLI/round-0")" \
  "be3 $(grep -c ' be3$' "$CLI/round-0")"
sleep 1.2 # idle long enough for the rebalance to move them (1 s)

echo "== be2 killed, started again at once"
tb_kill_be 2
tb_until 3000 eval '[[ $(tb_status_json fe | jq -r .failover.last.backend) == be2 ]]' ||
  tb_fail "the FE did not fail be2 over"
t_fail=$(tb_status_json fe | jq -r .failover.last.at_unix_ms)
tb_start_be 2
tb_wait_ready
back=$(($(tb__now_ms) - t_fail))
echo "be2 ready again $back ms after its failover"
((back <= 2000)) || tb_fail "be2 took $back ms to come back: too late to check its window"
most=0 samples=0
while (($(tb__now_ms) < t_fail + 2500)); do
  a=$(be_active 2)
  ((a > most)) && most=$a
  samples=$((samples + 1))
  sleep 0.05
done
((samples >= 5)) || tb_fail "be2's connections counted only $samples times in its window"
echo "connections on be2 until 2.5 s after its failover: at most $most" \
  "(be1 $(be_active 1), be3 $(be_active 3))"
tb_kill_be 2
echo "be2 killed again $(($(tb__now_ms) - t_fail)) ms after its failover"
# Those would now be lost (no second failover); their requests would hang.
((most == 0)) || tb_fail "be2 held $most connections within its failover's 3 s"
res=$(tb_idle_round "$CLI" 1 "$N")
echo "next request on every connection: $res"

echo "== be2 started again, after the 3 s"
tb_start_be 2
tb_wait_ready
share=$((N / 3))
tb_until 10000 eval '(($(be_active 2) >= share - share / 10))' ||
  tb_fail "be2 holds $(be_active 2) connections 10 s after it came back (want $share - 10%)"
echo "be2 holds $(be_active 2) ${TB_UNTIL_MS} ms after it came back"
res=$(tb_idle_round "$CLI" 2 "$N")
echo "next request on every connection: $res"
touch "$CLI/stop"
tb_wait idle 10 || true
echo "PASS: be_failover_rejoin"
