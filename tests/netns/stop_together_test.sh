#!/usr/bin/env bash
# The FE and every BE stopped together (SIGTERM to all at once) right after a load of
# new connections, as an operator stopping a whole cluster does and as the benchmark
# does between runs. A BE's drain waits for its connections to finish, but once the FE
# is gone no client packet can reach them (the datapath went with the FE): the drain
# must not wait for them to its 30 s bound. With the lease protocol a BE serves the
# handoffs that were in flight when the FE stopped, and 2 of 4 such stops took 30 s
# before the drain learned to stop waiting without an FE. Checked: 4 rounds, each stop
# of the whole cluster within 5 s.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd wrk curl jq
tb_require_tcpha
tb_init 3
tb_key
for k in 1 2 3; do tb_docroot "$k"; done
tb_config
worst=0
for round in 1 2 3 4; do
  for k in 1 2 3; do tb_start_be "$k"; done
  tb_start_fe
  tb_wait_ready
  # The load is killed mid-flight (its connections' last packets race the FE's stop).
  tb_c timeout -s KILL 1.5 wrk -t2 -c32 -d3s -H "Connection: close" "http://$TB_VIP/f1k.bin" \
    >/dev/null 2>&1 || true
  t0=$(tb__now_ms)
  for n in fe be1 be2 be3; do kill -TERM "${TB_PID[$n]}"; done
  for n in fe be1 be2 be3; do tb_wait "$n" 40 || tb_fail "round $round: $n did not stop within 40 s"; done
  ms=$(($(tb__now_ms) - t0))
  for n in fe be1 be2 be3; do
    ((${TB_EXIT[$n]:-1} == 0)) || tb_fail "round $round: $n exited with status ${TB_EXIT[$n]:-?}"
  done
  echo "round $round: the cluster stopped in $ms ms"
  ((ms > worst)) && worst=$ms
  ((ms <= 5000)) || tb_fail "round $round: stopping took $ms ms (a BE's drain waited for connections no packet can reach)"
done
echo "PASS: stop_together (slowest stop $worst ms)"
