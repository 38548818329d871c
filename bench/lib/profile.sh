# shellcheck shell=bash
# Per-function CPU profiles: one extra run of a system under `perf record` (system-wide,
# with call chains), after the measured rounds of a workload, so that the sampling's
# cost never lands in a measured figure. bench/run.sh sources this after measure.sh.
# Writes $BENCH_RAW/profile.SYSTEM.WORKLOAD.json (the counters around the run, the pids
# of the FE and BE namespaces) and .script.gz (`perf script`: one sample per block, the
# leaf frame first); bench/report.py turns them into CPU per connection per function.

BENCH_PERF=${BENCH_PERF:-/usr/bin/perf}
BENCH_PERF_OK="" # 1 or 0 once probed

# Whether perf can sample every CPU with call chains here (it may be missing, or the
# kernel may refuse: perf_event_paranoid, no permission in a container). Probed once.
bench__perf_usable() {
  if [[ -z $BENCH_PERF_OK ]]; then
    BENCH_PERF_OK=0
    if [[ ! -x $BENCH_PERF ]]; then
      bench__profile_skip "no $BENCH_PERF"
    elif ! "$BENCH_PERF" record -a -g -F "$BENCH_PROFILE_HZ" -o "$BENCH_RAW/.perf-probe.data" \
      -- sleep 0.1 >/dev/null 2>"$BENCH_RAW/.perf-probe.err"; then
      bench__profile_skip "perf record failed: $(tail -n 2 "$BENCH_RAW/.perf-probe.err" | tr '\n' ' ')"
    else
      BENCH_PERF_OK=1
    fi
    rm -f "$BENCH_RAW/.perf-probe.data"
  fi
  ((BENCH_PERF_OK))
}

bench__profile_skip() { # REASON
  tb_log "CPU profiles not taken: $1"
  jq -n --arg r "$1" '{system: "profile", not_measured: $r}' >"$BENCH_RAW/profile.unavailable.json"
}

# bench_profile SYSTEM WORKLOAD URL CONNS CLOSE PATHS FE_PID_VAR PREP...: PREP, the
# warm-up, then BENCH_PROFILE_DURATION s of wrk with perf sampling every CPU at
# BENCH_PROFILE_HZ. Never fails the bench: a profile that cannot be taken is left out.
bench_profile() {
  local system=$1 workload=$2 url=$3 conns=$4 close=$5 paths=$6 fe_var=$7
  shift 7
  bench__perf_usable || return 0
  local base=$BENCH_RAW/profile.$system.$workload fe_pid="" perf_pid rc=0 wrk_cpu k
  local fe_pids be_pids
  tb_log "$system $workload: CPU profile (perf record -a -g -F $BENCH_PROFILE_HZ, ${BENCH_PROFILE_DURATION} s)"
  "$@"
  [[ $fe_var == - ]] || fe_pid=${TB_PID[$fe_var]}
  bench__run_pids
  bench__warm_up "$url" "$conns" "$close" "$paths"
  fe_pids=$(ip netns pids "$TB_NS_FE" 2>/dev/null | jq -R 'tonumber' | jq -sc .)
  be_pids=$(for ((k = 1; k <= TB_N_BE; k++)); do ip netns pids "${TB_NS_BE[k]}" 2>/dev/null; done |
    jq -R 'tonumber' | jq -sc .)
  bench__snapshot "$fe_pid" "$base.before" before
  "$BENCH_PERF" record -a -g -F "$BENCH_PROFILE_HZ" -o "$base.data" -- sleep "$BENCH_PROFILE_DURATION" \
    >"$base.record.log" 2>&1 &
  perf_pid=$!
  bench__wrk "$base.wrk" "$BENCH_PROFILE_DURATION" "$url" "$conns" "$close" "$paths"
  wait "$perf_pid" || rc=$?
  bench__snapshot "$fe_pid" "$base.after" after
  if ((rc != 0)) || [[ ! -s $base.data ]]; then
    tb_log "$system $workload: perf record failed (status $rc): $(tail -n 2 "$base.record.log" | tr '\n' ' ')"
    rm -f "$base.data" "$base.before" "$base.after"
    return 0
  fi
  # Symbols are resolved now, while the binaries are the ones that ran.
  if ! "$BENCH_PERF" script -i "$base.data" -F pid,tid,comm,ip,sym,dso 2>"$base.script.log" |
    gzip -1 >"$base.script.gz"; then
    tb_log "$system $workload: perf script failed: $(tail -n 2 "$base.script.log" | tr '\n' ' ')"
    rm -f "$base.data" "$base.script.gz" "$base.before" "$base.after"
    return 0
  fi
  rm -f "$base.data"
  wrk_cpu=$(awk '{ print $1 + $2 }' "$base.wrk.time")
  jq -n --arg system "$system" --arg workload "$workload" --argjson conns "$conns" \
    --argjson close "$close" --argjson duration "$BENCH_PROFILE_DURATION" \
    --argjson hz "$BENCH_PROFILE_HZ" --argjson fe_pids "$fe_pids" --argjson be_pids "$be_pids" \
    --argjson wrk_cpu "$wrk_cpu" --arg perf "$("$BENCH_PERF" --version 2>&1 | head -n 1)" \
    --argjson load "$(bench__foreign_load "$base.before" "$base.after" "$wrk_cpu")" \
    --argjson wrk "$(sed -n 's/^BENCH_JSON //p' "$base.wrk")" \
    --slurpfile before "$base.before" --slurpfile after "$base.after" \
    '{system: $system, workload: $workload, conns: $conns, close: ($close == 1),
      duration_s: $duration, hz: $hz, perf: $perf, fe_pids: $fe_pids, be_pids: $be_pids,
      client_cpu_s: $wrk_cpu, foreign_load: $load, wrk: $wrk, before: $before[0],
      after: $after[0], script: "profile.\($system).\($workload).script.gz"}' >"$base.json"
  rm -f "$base.before" "$base.after"
  tb_log "$system $workload: profile $(du -h "$base.script.gz" | cut -f1), other load $(jq .foreign_load "$base.json") CPUs"
}
