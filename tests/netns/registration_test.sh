#!/usr/bin/env bash
# The registration link (issue 11, item 11). 1. An operator's `tcpha drain be1`
# survives be1 restarting: its new registration (JOIN) undoes only be1's own LEAVE,
# never the operator's drain. 2. A registered BE that stops talking (SIGSTOP: its
# kernel still acknowledges, so the link is half-open for the FE) loses its slot after
# the registration link's idle limit and, being dynamic, leaves the FE's list; once it
# runs again it joins again by itself.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq
tb_require_tcpha
tb_init 3
tb_key
for k in 1 2 3; do tb_docroot "$k"; done
TB_CONFIG_BES=3 tb_config
cp "$TB_CONFIG" "$TB_DIR/be3.toml" # be3 runs from a file that lists it; the FE's does not
TB_CONFIG_BES=2 tb_config
for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready
tb_spawn be3 "${TB_NS_BE[3]}" "$TB_TCPHA" be -c "$TB_DIR/be3.toml" --id be3 --socket "$TB_DIR/be3.sock"
tb_until 10000 eval '[[ $(tb_fe_backend be3) == up ]]' || tb_fail "dynamic be3 not up 10 s after it started"

whoami_all() {
  local i seen=""
  for ((i = 0; i < $1; i++)); do seen+="$(tb_curl whoami.txt -f) " || tb_fail "GET /whoami.txt failed"; done
  echo "$seen"
}

echo "== the operator drains be1; be1 restarts and registers again"
out=$("$TB_TCPHA" drain be1 --socket "$TB_DIR/fe.sock") || tb_fail "tcpha drain be1: $out"
[[ $(tb_fe_backend be1) == drained ]] || tb_fail "be1 is '$(tb_fe_backend be1)' after tcpha drain"
tb_stop_be 1 10 || tb_fail "be1 did not stop cleanly"
tb_start_be 1
tb_until 10000 eval 'tb_status_json be1 | jq -e ".control_links >= 1"' || tb_fail "be1 not back 10 s after its restart"
sleep 1.5 # its registration link is up well within this (JOIN right after the handshake)
state=$(tb_fe_backend be1)
echo "be1 after its restart and JOIN: $state"
[[ $state == drained ]] || tb_fail "be1's JOIN undid the operator's drain: be1 is '$state', want drained"
seen=$(whoami_all 12)
[[ $seen != *be1* ]] || tb_fail "a drained be1 answered requests: $seen"
out=$("$TB_TCPHA" undrain be1 --socket "$TB_DIR/fe.sock") || tb_fail "tcpha undrain be1: $out"
tb_until 3000 eval '[[ $(tb_fe_backend be1) == up ]]' || tb_fail "be1 not up after undrain"
echo "undrained: be1 $(tb_fe_backend be1)"

echo "== be3 (dynamic) stops talking: SIGSTOP"
kill -STOP "${TB_PID[be3]}"
t0=$(tb__now_ms)
gone() { ! tb_status_json fe | jq -e '.backends[] | select(.id == "be3")' >/dev/null; }
tb_until 12000 gone || {
  kill -CONT "${TB_PID[be3]}"
  tb_fail "the FE still lists be3 $(($(tb__now_ms) - t0)) ms after it stopped talking (its registration slot is never reaped)"
}
echo "be3 left the FE's list $(($(tb__now_ms) - t0)) ms after SIGSTOP (registration idle limit)"
kill -CONT "${TB_PID[be3]}"
t0=$(tb__now_ms)
tb_until 10000 eval '[[ $(tb_fe_backend be3) == up ]]' ||
  tb_fail "be3 did not join again within 10 s after SIGCONT"
echo "be3 joined again and is up $(($(tb__now_ms) - t0)) ms after SIGCONT"
seen=$(whoami_all 12)
[[ $seen == *be3* ]] || tb_fail "be3 answered none of 12 requests after joining again: $seen"
echo "PASS: registration"
