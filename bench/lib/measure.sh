# shellcheck shell=bash
# One measurement: a wrk run against one system, with counters read around it.
# bench/run.sh sources this after scripts/testbed.sh. The raw figures go to
# $BENCH_RAW/<system>.<workload>.json; bench/report.py derives every reported number.

BENCH_CLK_TCK=$(getconf CLK_TCK)
BENCH_REPEATS=0 # disturbed runs repeated so far

# CPU time in ns of every thread of the given pids (schedstat: ns precision, unlike the
# 10 ms ticks of /proc/PID/stat; counts all threads, e.g. the FE's workers), into
# BENCH_SUM: no subshell (the bench reads these around every run, on a busy machine).
bench__cpu_sum() {
  local pid sum=0 t v
  for pid in "$@"; do
    for t in /proc/"$pid"/task/*/schedstat; do
      [[ -r $t ]] || continue
      read -r v _ <"$t" 2>/dev/null || continue
      sum=$((sum + v))
    done
  done
  BENCH_SUM=$sum
}

# bench__probe: the machine's and the bed's CPU counters now, into BENCH_PROBE ("µs
# busy-ticks steal-ticks bed-ns ksoftirqd-ns"), without a subshell; bench__probe_load A
# B CLIENT_CPU_S prints the CPUs other work used between two probes (as
# bench__foreign_load does for snapshots).
bench__probe() {
  local _cpu user nice system irq softirq steal bed
  read -r _cpu user nice system _ _ irq softirq steal _ </proc/stat
  bench__cpu_sum "${BENCH_PIDS_BED[@]}"
  bed=$BENCH_SUM
  bench__cpu_sum "${BENCH_KSOFTIRQD[@]}"
  BENCH_PROBE="${EPOCHREALTIME/./} $((user + nice + system + irq + softirq)) $steal $bed $BENCH_SUM"
}

bench__probe_load() {
  awk -v a="$1" -v b="$2" -v c="${3:-0}" -v hz="$BENCH_CLK_TCK" 'BEGIN {
    split(a, x); split(b, y); dt = (y[1] - x[1]) / 1e6
    l = ((y[2] - x[2] + y[3] - x[3]) / hz - (y[4] - x[4] + y[5] - x[5]) / 1e9 - c) / dt
    printf "%.3f\n", (l < 0 ? 0 : l) }'
}

# Every process in the bed's server namespaces (FE and BEs): what the bed itself costs,
# to tell apart CPU used by other work on the machine.
bench__bed_pids() {
  local ns
  for ns in "$TB_NS_FE" "${TB_NS_BE[@]:1}"; do ip netns pids "$ns" 2>/dev/null; done
}

# The pids and the datapath program a run's snapshots read, found once per run after
# its PREP (`ip netns pids` walks all of /proc: too slow to repeat around every run).
bench__run_pids() {
  local k
  mapfile -t BENCH_PIDS_BED < <(bench__bed_pids)
  BENCH_PIDS_BE=()
  for ((k = 1; k <= TB_N_BE; k++)); do
    BENCH_PIDS_BE[k]=$(ip netns pids "${TB_NS_BE[k]}" 2>/dev/null | tr '\n' ' ')
  done
  BENCH_DP_PROG=""
  [[ -z ${TB_PID[fe]:-} ]] || BENCH_DP_PROG=$(bench__dp_prog_id)
}

# The kernel's softirq threads: when packets come faster than softirq processing on
# the way out of a system call keeps up, the bed's network work moves to them.
mapfile -t BENCH_KSOFTIRQD < <(pgrep -x 'ksoftirqd/[0-9]+')

# The FE datapath's tc program id on the FE's eth0, empty when none is attached.
bench__dp_prog_id() {
  tc -n "$TB_NS_FE" -j filter show dev eth0 ingress 2>/dev/null |
    jq -r '[.[] | .options.prog.id? // empty] | first // empty' 2>/dev/null || true
}

# The daemons' status (their sockets, the datapath program's statistics), read in
# parallel into $BENCH_RAW/.snap.*.
bench__status_files() {
  local tmp=$BENCH_RAW/.snap k jobs=()
  rm -f "$tmp".*
  if [[ -n ${TB_PID[fe]:-} ]]; then
    tb_status_json fe >"$tmp.fe" 2>/dev/null &
    jobs+=($!)
    if [[ -n ${BENCH_DP_PROG:-} ]]; then
      bpftool -j prog show id "$BENCH_DP_PROG" >"$tmp.bpf" 2>/dev/null &
      jobs+=($!)
    fi
  fi
  for ((k = 1; k <= TB_N_BE; k++)); do
    [[ -n ${TB_PID[be$k]:-} ]] || continue
    tb_status_json "be$k" >"$tmp.be$k" 2>/dev/null &
    jobs+=($!)
  done
  for k in "${jobs[@]}"; do wait "$k" || true; done
}

# bench__snapshot FE_PID OUT before|after: the counters a run is measured by, as JSON
# (bench__run_pids first). The status files are read before the CPU counters in a
# "before" snapshot and after them in an "after" one, so that the CPU counters lie
# closest to the measured run.
bench__snapshot() {
  local fe_pid=$1 out=$2 kind=${3:-before} tmp=$BENCH_RAW/.snap t ticks fe_ns=null bed_ns be_ns
  local ksoft k bes=()
  [[ $kind != before ]] || bench__status_files
  local _cpu user nice system irq softirq steal pids
  t=$EPOCHREALTIME
  read -r _cpu user nice system _ _ irq softirq steal _ </proc/stat
  ticks="$((user + nice + system + irq + softirq)) $steal $softirq"
  if [[ -n $fe_pid ]]; then
    bench__cpu_sum "$fe_pid"
    fe_ns=$BENCH_SUM
  fi
  bench__cpu_sum "${BENCH_PIDS_BED[@]}"
  bed_ns=$BENCH_SUM
  be_ns=""
  for ((k = 1; k <= TB_N_BE; k++)); do
    read -ra pids <<<"${BENCH_PIDS_BE[k]:-}"
    bench__cpu_sum "${pids[@]}"
    be_ns+="${be_ns:+ }$BENCH_SUM"
  done
  bench__cpu_sum "${BENCH_KSOFTIRQD[@]}"
  ksoft=$BENCH_SUM
  # The FE's eth0 counters, from the balancer's own view of its namespace (no process
  # to start); none for direct, which has no balancer.
  local fe_tx="" fe_rx="" line f
  if [[ -n $fe_pid && -r /proc/$fe_pid/net/dev ]]; then
    while read -r line; do
      [[ $line == eth0:* ]] || continue
      read -ra f <<<"${line#eth0:}"
      fe_rx=${f[0]} fe_tx=${f[8]}
    done <"/proc/$fe_pid/net/dev"
  fi
  [[ $kind != after ]] || bench__status_files
  for ((k = 1; k <= TB_N_BE; k++)); do [[ ! -e $tmp.be$k ]] || bes+=("$(<"$tmp.be$k")"); done
  jq -n --arg t "$t" --arg ticks "$ticks" --argjson fe_ns "$fe_ns" --arg bed_ns "$bed_ns" \
    --arg be_ns "$be_ns" --arg ksoftirqd_ns "$ksoft" \
    --arg fe_tx "$fe_tx" --arg fe_rx "$fe_rx" \
    --arg fe_js "$(cat "$tmp.fe" 2>/dev/null)" --arg bpf_js "$(cat "$tmp.bpf" 2>/dev/null)" \
    --args '
      def parse: if . == "" then null else (try fromjson catch null) end;
      def num: if . == "" then null else tonumber end;
      { t: ($t | tonumber), busy_ticks: ($ticks | split(" ")[0] | tonumber),
        steal_ticks: ($ticks | split(" ")[1] | tonumber),
        softirq_ticks: ($ticks | split(" ")[2] | tonumber), bed_cpu_ns: ($bed_ns | tonumber),
        be_cpu_ns: ($be_ns | split(" ") | map(tonumber)),
        ksoftirqd_cpu_ns: ($ksoftirqd_ns | tonumber),
        fe_cpu_ns: $fe_ns, fe_tx_bytes: ($fe_tx | num), fe_rx_bytes: ($fe_rx | num),
        fe_status: ($fe_js | parse),
        be_status: [$ARGS.positional[] | parse],
        bpf: ($bpf_js | parse | if . == null then null
          else {run_time_ns: (.run_time_ns // null), run_cnt: (.run_cnt // null)} end) }' \
    "${bes[@]}" >"$out"
}

# CPU seconds per second used by other work between two snapshots: the machine's busy
# and stolen time minus the bed's processes, the client's CPU time (argument 3) and the
# kernel's softirq threads (the bed's own network work, mostly).
bench__foreign_load() {
  jq -r --argjson hz "$BENCH_CLK_TCK" --argjson client "${3:-0}" -n \
    --slurpfile a "$1" --slurpfile b "$2" '$a[0] as $a | $b[0] as $b |
      (($b.busy_ticks - $a.busy_ticks + $b.steal_ticks - $a.steal_ticks) / $hz
        - ($b.bed_cpu_ns - $a.bed_cpu_ns + $b.ksoftirqd_cpu_ns - $a.ksoftirqd_cpu_ns) / 1e9
        - $client) / ($b.t - $a.t) |
      if . < 0 then 0 else . end | . * 1000 | round / 1000'
}

# Waits (at most BENCH_QUIET_MAX s, and BENCH_QUIET_BUDGET s over the whole run) for a
# second in which other work on the machine uses less than BENCH_QUIET_LOAD CPUs: other
# engineers' compiles share the 2 vCPUs.
BENCH_QUIET_SPENT=0
bench__wait_quiet() {
  local t0=$SECONDS load
  local p0
  while ((BENCH_QUIET_MAX > 0 && BENCH_QUIET_SPENT < BENCH_QUIET_BUDGET)); do
    bench__probe
    p0=$BENCH_PROBE
    sleep 1
    bench__probe
    load=$(bench__probe_load "$p0" "$BENCH_PROBE")
    awk -v l="$load" -v m="$BENCH_QUIET_LOAD" 'BEGIN { exit !(l < m) }' && return 0
    BENCH_QUIET_SPENT=$((BENCH_QUIET_SPENT + 1))
    if ((SECONDS - t0 >= BENCH_QUIET_MAX)); then
      tb_log "machine still busy (other work: $load CPUs); measuring anyway"
      return 0
    fi
  done
}

# bench__warm_up URL CONNS CLOSE PATHS: BENCH_WARMUP s of the run's workload, during
# which the machine's other load is measured as well: only when it was not quiet does
# bench__wait_quiet wait for a quiet second (a separate 1 s check on every run would
# cost minutes over the whole bench).
bench__warm_up() {
  local load p0 cpu
  if ! bench__positive "$BENCH_WARMUP"; then
    bench__wait_quiet
    return
  fi
  bench__probe
  p0=$BENCH_PROBE
  bench__wrk "$BENCH_RAW/.warm" "$BENCH_WARMUP" "$@"
  bench__probe
  read -r cpu <"$BENCH_RAW/.warm.time"
  load=$(bench__probe_load "$p0" "$BENCH_PROBE" "$(awk '{ print $1 + $2 }' <<<"$cpu")")
  awk -v l="$load" -v m="$BENCH_QUIET_LOAD" 'BEGIN { exit !(l < m) }' || bench__wait_quiet
}

# Threads for wrk: one per CPU, but wrk wants at least one connection per thread.
# Page visits (PATHS *.visits) get one thread per connection: bench.lua's request()
# cannot tell a thread's connections apart, and each connection must walk its own visit.
bench__threads() { # CONNS [PATHS]
  if [[ ${2:-} == *.visits ]]; then
    echo "$1"
  else
    echo $(($1 < BENCH_WRK_THREADS ? $1 : BENCH_WRK_THREADS))
  fi
}

# bench__wrk OUT DURATION URL CONNS CLOSE PATHS: one wrk run from the client namespace,
# its CPU time (user+sys) in OUT.time. wrk takes whole seconds. A fractional DURATION
# (QUICK's short warm-ups) kills wrk after that time instead: its report is lost, which
# only a warm-up can afford (stopping it with SIGINT is not reliable: a signal that
# lands on one of its worker threads stops the workers, but the main thread sleeps out
# the whole -d and reports that time as the run's duration).
bench__wrk() {
  local out=$1 dur=$2 url=$3 conns=$4 close=$5 paths=$6 stop=() rc=0
  if [[ ! $dur =~ ^[0-9]+$ ]]; then
    stop=(timeout -s KILL "$dur")
    dur=$((${dur%.*} + 2))
  fi
  tb_c env BENCH_PATHS="$paths" BENCH_CLOSE="$close" BENCH_SEED="$BENCH_SEED" \
    /usr/bin/time -f '%U %S' -o "$out.time" "${stop[@]}" \
    wrk -t "$(bench__threads "$conns" "$paths")" -c "$conns" -d "${dur}s" --timeout 10s \
    -s "$BENCH_HERE/wrk/bench.lua" "$url" >"$out" 2>&1 || rc=$?
  # /usr/bin/time notes a non-zero status on the first line of OUT.time.
  sed -i '/^Command exited with non-zero status/d' "$out.time"
  ((rc == 0 || (rc == 137 && ${#stop[@]} > 0))) || tb_fail "wrk failed (status $rc): $(tail -n 5 "$out")"
}

# bench__spans T0 T1 ...: the differences of µs stamps, as "prep 1.2 quiet 0.0 ..."
# (the stamps bench_measure takes).
bench__spans() {
  local names=(prep warm-up measured record) i out=""
  for ((i = 1; i < $#; i++)); do
    local a=${*:i:1} b=${*:i+1:1}
    out+="${names[i - 1]:-?} $(((b - a) / 1000000)).$(printf '%01d' $((((b - a) % 1000000) / 100000))) "
  done
  echo "${out% }"
}

bench__positive() { awk -v x="$1" 'BEGIN { exit !(x > 0) }'; }

# bench_measure SYSTEM WORKLOAD URL CONNS CLOSE PATHS FE_PID_VAR PREP...
# Runs PREP (a command that (re)starts what the attempt needs), a warm-up, then the
# measured run between two snapshots. A run during which other work used more than
# BENCH_QUIET_LOAD CPUs is repeated (BENCH_RETRIES times at most, BENCH_RETRY_BUDGET
# repeats over the whole run) and the least disturbed attempt is kept; the other
# attempts' loads are kept in its record (attempt_loads). FE_PID_VAR names the TB_PID
# entry of the balancer process ("fe", "haproxy") or is "-" for none. BENCH_ROUND (1 if
# unset) numbers the round: the kept run is $BENCH_RAW/SYSTEM.WORKLOAD.rROUND.json.
bench_measure() {
  local system=$1 workload=$2 url=$3 conns=$4 close=$5 paths=$6 fe_var=$7
  shift 7
  local round=${BENCH_ROUND:-1}
  local name=$system.$workload.r$round attempt best="" best_load="" load fe_pid wrk_cpu base
  local loads=() t
  for ((attempt = 1; attempt <= BENCH_RETRIES + 1; attempt++)); do
    # Where a run's time goes (µs stamps): prep, warm-up (and waiting for a quiet
    # machine), measured, record.
    t=("${EPOCHREALTIME/./}")
    "$@"
    fe_pid=""
    [[ $fe_var == - ]] || fe_pid=${TB_PID[$fe_var]}
    bench__run_pids
    t+=("${EPOCHREALTIME/./}")
    bench__warm_up "$url" "$conns" "$close" "$paths"
    t+=("${EPOCHREALTIME/./}")
    base=$BENCH_RAW/.$name.$attempt
    bench__snapshot "$fe_pid" "$base.before" before
    bench__wrk "$base.wrk" "$BENCH_DURATION" "$url" "$conns" "$close" "$paths"
    bench__snapshot "$fe_pid" "$base.after" after
    t+=("${EPOCHREALTIME/./}")
    wrk_cpu=$(awk '{ print $1 + $2 }' "$base.wrk.time")
    load=$(bench__foreign_load "$base.before" "$base.after" "$wrk_cpu")
    grep -q '^BENCH_JSON ' "$base.wrk" || tb_fail "$name: no results from wrk: $(tail -n 5 "$base.wrk")"
    jq -n --arg system "$system" --arg workload "$workload" --arg url "$url" \
      --argjson conns "$conns" --argjson close "$close" --arg paths "$paths" \
      --argjson attempt "$attempt" --argjson round "$round" --argjson load "$load" \
      --argjson wrk_cpu "$wrk_cpu" \
      --argjson threads "$(bench__threads "$conns" "$paths")" --argjson duration "$BENCH_DURATION" \
      --argjson wrk "$(sed -n 's/^BENCH_JSON //p' "$base.wrk")" \
      --slurpfile before "$base.before" --slurpfile after "$base.after" \
      '{system: $system, workload: $workload, url: $url, conns: $conns, close: ($close == 1),
        paths: $paths, wrk_threads: $threads, duration_s: $duration, round: $round,
        attempt: $attempt,
        foreign_load: $load, client_cpu_s: $wrk_cpu, wrk: $wrk,
        before: $before[0], after: $after[0]}' >"$base.json"
    t+=("${EPOCHREALTIME/./}")
    tb_log "$name (attempt $attempt): $(jq -r '"\(.wrk.requests / (.wrk.duration_us / 1e6) | floor) req/s, \(.wrk.bytes / (.wrk.duration_us) | . * 1000 | round / 1000) MB/s, errors \(.wrk.errors | add)"' "$base.json"), other load $load CPUs; s: $(bench__spans "${t[@]}")"
    loads+=("$load")
    if [[ -z $best ]] || awk -v l="$load" -v b="$best_load" 'BEGIN { exit !(l < b) }'; then
      best=$base.json best_load=$load
    fi
    awk -v l="$load" -v m="$BENCH_QUIET_LOAD" 'BEGIN { exit !(l < m) }' && break
    ((attempt <= BENCH_RETRIES && BENCH_REPEATS < BENCH_RETRY_BUDGET)) || break
    BENCH_REPEATS=$((BENCH_REPEATS + 1))
  done
  jq --argjson loads "[$(IFS=,; echo "${loads[*]}")]" '. + {attempt_loads: $loads}' "$best" \
    >"$BENCH_RAW/$name.json"
}
