#!/usr/bin/env bash
# The FE is no single point of failure (issue 14): SIGKILL the FE during 10 slow 12 MB
# downloads (rate-limited, client receive buffer shrunk so that they really stream
# from their BEs) and start it again 2 s later with the same command line. The
# datapath outlives the process (its tc filter holds program and maps; pins die with
# `ip netns exec`'s mount namespace) and the new FE adopts its flows, so all 10
# downloads finish byte-exact; new requests are served; the restarted FE reports what
# it adopted (.adoption) and reaps the adopted flows once their connections end (the
# BEs report connections the new FE did not know: .counters.resynced). A clean stop
# afterwards exits 0 and leaves no tc filter and no VIP on the FE's eth0. Before the
# fix, 9 or 10 of the 10 downloads were reset.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum tc
tb_require_tcpha
N_DL=10
RATE=1600k # per download: 12 MB in ~7 s

tb_init 2
tb_key
for k in 1 2; do tb_docroot "$k"; done
head -c 12000000 /dev/urandom >"$TB_DIR/www/.common/f12m.bin"
for k in 1 2; do ln -f "$TB_DIR/www/.common/f12m.bin" "$TB_DIR/www/be$k/f12m.bin"; done
sum=$(sha256sum <"$TB_DIR/www/.common/f12m.bin")
TB_SHA[f12m.bin]=${sum%% *}
# A short linger, so that the reaped flows leave the table soon after their end.
TB_FE_EXTRA='flow_linger_ms = 500'
tb_config
for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready
tb_small_buffers

be_active() { tb_status_json "be$1" | jq -e .active; }
# Conditions for tb_until: a status that does not answer (or lacks the field) is
# false, never an arithmetic error (which would end the run inside tb_until, silently).
fe_num() { tb_status_json fe | jq -e "($1) // 0"; }
active_at_least() {
  local a b
  a=$(be_active 1) && b=$(be_active 2) || return 1
  ((a + b >= $1))
}
resynced_at_least() {
  local v
  v=$(fe_num .counters.resynced) || return 1
  ((v >= $1))
}
flows_at_most() {
  local v
  v=$(fe_num .flows) || return 1
  ((v <= $1))
}
has_vip() { [[ $(ip -n "$TB_NS_FE" -o -4 addr show dev eth0) == *" $TB_VIP/"* ]]; }

echo "== $N_DL downloads of 12 MB at $RATE each"
tb_downloads_start "$N_DL" "$RATE" f12m.bin
# They must run on their BEs (handed off) when the FE dies.
tb_until 3000 active_at_least "$N_DL" ||
  tb_fail "the downloads did not all reach a BE within 3 s (be1 $(be_active 1), be2 $(be_active 2))"
sleep 1.5
for ((i = 0; i < N_DL; i++)); do
  tb__alive "dl$i" || tb_fail "download $i ended before the FE was killed (it must span the restart)"
done
echo "downloads running: be1 $(be_active 1), be2 $(be_active 2); FE flows $(tb_status_json fe | jq .flows)"

echo "== SIGKILL the FE (pid ${TB_PID[fe]}), start it again 2 s later"
kill -KILL "${TB_PID[fe]}"
tb__reap fe || true
# Keep the killed FE's log: the restart rewrites fe.log.
cp "$TB_DIR/fe.log" "$TB_DIR/fe-killed.log"
TB_LOGS+=("fe-killed=$TB_DIR/fe-killed.log")
sleep 2
for ((i = 0; i < N_DL; i++)); do
  tb__alive "dl$i" || echo "download $i ended while no FE ran: $(cat "$TB_DIR/dl/$i.out")"
done
tb_start_fe # the same command line
tb_wait_ready 10
js=$(tb_status_json fe)
echo "restarted FE: adoption $(jq -c '.adoption' <<<"$js"), flows $(jq -c '.flows' <<<"$js")"
jq -e --argjson n "$N_DL" '.adoption.flows >= $n' <<<"$js" >/dev/null ||
  tb_problem "the restarted FE adopted $(jq -c '.adoption.flows' <<<"$js") flows, want >= $N_DL"
jq -e '.adoption.source == "pinned" or .adoption.source == "attached"' <<<"$js" >/dev/null ||
  tb_problem "the restarted FE's .adoption.source is $(jq -c '.adoption.source' <<<"$js"), want \"pinned\" or \"attached\""
jq -e --argjson n "$N_DL" '.flows >= $n' <<<"$js" >/dev/null ||
  tb_problem "the restarted FE's table holds $(jq -c '.flows' <<<"$js") flows while $N_DL downloads run"

echo "== new requests through the restarted FE"
ok_new=0
for ((i = 0; i < 5; i++)); do
  if n=$(tb_fetch f10k.bin "$TB_DIR/dl/new$i"); then
    ok_new=$((ok_new + 1))
  else
    echo "new request $i failed"
  fi
done
echo "$ok_new of 5 new requests served"
((ok_new == 5)) || tb_problem "$((5 - ok_new)) of 5 new requests after the restart failed"

echo "== the downloads complete"
tb_downloads_ok "$N_DL" f12m.bin 12000000
ok=$TB_DL_OK
echo "$ok of $N_DL downloads byte-exact across the FE's SIGKILL and restart"
((ok == N_DL)) || tb_problem "$((N_DL - ok)) of $N_DL downloads failed across the FE's restart"

echo "== the adopted flows are reaped"
# Connections that ended are reported by their BEs; those the new FE did not know
# (all adopted ones) count as resynced.
if tb_until 10000 resynced_at_least "$N_DL"; then
  echo "counters.resynced $(fe_num .counters.resynced) after ${TB_UNTIL_MS} ms"
else
  tb_problem "counters.resynced is $(tb_status_json fe | jq -c .counters.resynced) 10 s after the downloads, want >= $N_DL"
fi
if tb_until 10000 flows_at_most 2; then
  echo "flows down to $(tb_status_json fe | jq .flows) within ${TB_UNTIL_MS} ms"
else
  tb_problem "the FE still holds $(tb_status_json fe | jq -c .flows) flows 10 s after the downloads (linger 500 ms), want <= 2"
fi
echo "FE status: $(tb_status_json fe | jq -c '{adoption, flows, counters: {resynced: .counters.resynced}, handoffs}')"

echo "== clean stop"
rc=0
tb_stop_fe 15 || rc=$?
((rc == 0)) || tb_problem "the restarted FE exited with status $rc after SIGTERM, want 0"
filters=$(tc -n "$TB_NS_FE" filter show dev eth0 ingress 2>&1 || true)
[[ -z $filters ]] || tb_problem "tc ingress filters left on the FE's eth0 after the clean stop: $filters"
! has_vip || tb_problem "the VIP is left on the FE's eth0 after the clean stop"
left=$(ip netns pids "$TB_NS_FE")
[[ -z $left ]] || tb_problem "processes left in the FE's namespace: $left"

tb_problems_fail
echo "PASS: fe_restart ($N_DL of $N_DL downloads byte-exact across a SIGKILL and restart of the FE)"
