#!/usr/bin/env bash
# Scale-out by the cluster file (issue 12, rebalance on join): a back-end appended to
# the file joins the moves of the running ones on SIGHUP, and long-lived idle
# keep-alive connections rebalance onto it.
#   be1, be2 listed and running, 48 idle keep-alive connections on them. be3 appended
#   to the file and started; SIGHUP to the FE, be1 and be2: within 10 s every BE holds
#   its share (16) within 10%, and every connection's next request is answered
#   without reconnecting. With a back-end that reads its file only at start, be1 and
#   be2 never learn of be3 and keep all 48.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd jq python3
tb_require_tcpha
tb_init 3
tb_key
for k in 1 2 3; do tb_docroot "$k"; done
TB_CONFIG_BES=2 tb_config ""
for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

N=48
CLI=$TB_DIR/idle
mkdir -p "$CLI"
be_active() { tb_status_json "be$1" | jq -e .active; }
# A counter, or -1 when the BE does not have it (or does not answer): a number either
# way, so that a condition on it is false rather than an error that ends the script.
be_counter() { tb_status_json "be$1" 2>/dev/null | jq -e ".counters.$2 // -1" 2>/dev/null || echo -1; }

echo "== $N idle keep-alive connections on be1 and be2"
tb_spawn --log "$TB_DIR/idle.log" idle "$TB_NS_C" python3 "$HERE/idle_clients.py" "$TB_VIP" "$N" "$CLI"
tb_until 30000 test -f "$CLI/ready" || tb_fail "the clients did not connect: $(cat "$TB_DIR/idle.log")"
grep -q ERROR "$CLI/round-0" && tb_fail "first requests failed: $(grep ERROR "$CLI/round-0" | head -3)"
echo "be1 $(be_active 1) be2 $(be_active 2)"

echo "== be3 appended to the file and started; SIGHUP to the FE, be1, be2"
TB_CONFIG_BES=3 tb_config ""
tb_start_be 3
kill -HUP "${TB_PID[fe]}" "${TB_PID[be1]}" "${TB_PID[be2]}"
tb_until 5000 eval '(($(be_counter 1 reloads) == 1 && $(be_counter 2 reloads) == 1))' ||
  tb_fail "be1/be2 did not apply the reload: reloads $(be_counter 1 reloads)/$(be_counter 2 reloads), failures $(be_counter 1 reload_failures)/$(be_counter 2 reload_failures)"
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
  tb_fail "not rebalanced 10 s after the reload: be1 $(be_active 1) be2 $(be_active 2) be3 $(be_active 3) (want $share +- $tol each)"
echo "rebalanced ${TB_UNTIL_MS} ms after the reload: be1 $(be_active 1) be2 $(be_active 2) be3 $(be_active 3)"

touch "$CLI/go-1"
tb_until 30000 test -f "$CLI/round-1" || tb_fail "the clients did not answer in 30 s"
if grep -q ERROR "$CLI/round-1"; then
  tb_fail "$(grep -c ERROR "$CLI/round-1") of $N connections failed: $(grep ERROR "$CLI/round-1" | head -3)"
fi
echo "next request on every connection: be1 $(grep -c ' be1$' "$CLI/round-1" || true)" \
  "be2 $(grep -c ' be2$' "$CLI/round-1" || true) be3 $(grep -c ' be3$' "$CLI/round-1" || true)"
(($(grep -c ' be3$' "$CLI/round-1" || true) >= share - tol)) || tb_fail "be3 answered too few"
touch "$CLI/stop"
tb_wait idle 10 || true
echo "PASS: scale_out"
