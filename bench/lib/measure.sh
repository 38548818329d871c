# shellcheck shell=bash
# One measurement: a wrk run against one system, with counters read around it.
# bench/run.sh sources this after scripts/testbed.sh. The raw figures go to
# $BENCH_RAW/<system>.<workload>.json; bench/report.py derives every reported number.

BENCH_CLK_TCK=$(getconf CLK_TCK)
BENCH_REPEATS=0 # disturbed runs repeated so far

# CPU time in ns of every thread of the given pids (schedstat: ns precision, unlike the
# 10 ms ticks of /proc/PID/stat; counts all threads, e.g. the FE's workers).
bench__cpu_ns() {
  local pid sum=0 t
  for pid in "$@"; do
    for t in /proc/"$pid"/task/*/schedstat; do
      [[ -r $t ]] || continue
      read -r t _ <"$t" 2>/dev/null || continue
      sum=$((sum + t))
    done
  done
  echo "$sum"
}

# Every process in the bed's server namespaces (FE and BEs): what the bed itself costs,
# to tell apart CPU used by other work on the machine.
bench__bed_pids() {
  local ns
  for ns in "$TB_NS_FE" "${TB_NS_BE[@]:1}"; do ip netns pids "$ns" 2>/dev/null; done
}

# CPU ns of every process in each BE's namespace, space-separated, BE 1 first (the BE
# agents, or nginx: what serving and moving cost on the BEs).
bench__be_cpu_ns() {
  local k cpu=() pids
  for ((k = 1; k <= TB_N_BE; k++)); do
    mapfile -t pids < <(ip netns pids "${TB_NS_BE[k]}" 2>/dev/null)
    cpu+=("$(bench__cpu_ns "${pids[@]}")")
  done
  echo "${cpu[*]}"
}

# "busy steal softirq" ticks of the whole machine (first line of /proc/stat).
bench__machine_ticks() {
  local _cpu user nice system irq softirq steal
  read -r _cpu user nice system _ _ irq softirq steal _ </proc/stat
  echo "$((user + nice + system + irq + softirq)) $steal $softirq"
}

# The kernel's softirq threads: when packets come faster than softirq processing on
# the way out of a system call keeps up, the bed's network work moves to them.
mapfile -t BENCH_KSOFTIRQD < <(pgrep -x 'ksoftirqd/[0-9]+')

# The FE datapath's tc program id on the FE's eth0, empty when none is attached.
bench__dp_prog_id() {
  tc -n "$TB_NS_FE" -j filter show dev eth0 ingress 2>/dev/null |
    jq -r '[.[] | .options.prog.id? // empty] | first // empty' 2>/dev/null || true
}

# bench__snapshot FE_PID OUT: the counters a run is measured by, as JSON.
bench__snapshot() {
  local fe_pid=$1 out=$2 ticks fe_js=null bes=() k js bpf=null prog fe_ns=null
  ticks=$(bench__machine_ticks)
  [[ -z $fe_pid ]] || fe_ns=$(bench__cpu_ns "$fe_pid")
  if [[ -n ${TB_PID[fe]:-} ]]; then
    fe_js=$(tb_status_json fe) || fe_js=null
    prog=$(bench__dp_prog_id)
    [[ -z $prog ]] || bpf=$(bpftool -j prog show id "$prog" 2>/dev/null |
      jq -c '{run_time_ns: (.run_time_ns // null), run_cnt: (.run_cnt // null)}') || bpf=null
  fi
  for ((k = 1; k <= TB_N_BE; k++)); do
    [[ -n ${TB_PID[be$k]:-} ]] || continue
    js=$(tb_status_json "be$k") || js=null
    bes+=("$js")
  done
  jq -n --arg t "$EPOCHREALTIME" --arg ticks "$ticks" --argjson fe_ns "$fe_ns" \
    --arg bed_ns "$(mapfile -t p < <(bench__bed_pids) && bench__cpu_ns "${p[@]}")" \
    --arg be_ns "$(bench__be_cpu_ns)" \
    --arg ksoftirqd_ns "$(bench__cpu_ns "${BENCH_KSOFTIRQD[@]}")" \
    --arg fe_tx "$(tb_iface_tx_bytes "$TB_NS_FE")" --arg fe_rx "$(tb_iface_rx_bytes "$TB_NS_FE")" \
    --argjson fe "$fe_js" --argjson bpf "$bpf" --jsonargs '{
      t: ($t | tonumber), busy_ticks: ($ticks | split(" ")[0] | tonumber),
      steal_ticks: ($ticks | split(" ")[1] | tonumber),
      softirq_ticks: ($ticks | split(" ")[2] | tonumber), bed_cpu_ns: ($bed_ns | tonumber),
      be_cpu_ns: ($be_ns | split(" ") | map(tonumber)),
      ksoftirqd_cpu_ns: ($ksoftirqd_ns | tonumber),
      fe_cpu_ns: $fe_ns, fe_tx_bytes: ($fe_tx | tonumber), fe_rx_bytes: ($fe_rx | tonumber),
      fe_status: $fe, be_status: $ARGS.positional, bpf: $bpf }' "${bes[@]}" >"$out"
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
  while ((BENCH_QUIET_MAX > 0 && BENCH_QUIET_SPENT < BENCH_QUIET_BUDGET)); do
    bench__snapshot "" "$BENCH_RAW/.q0"
    sleep 1
    bench__snapshot "" "$BENCH_RAW/.q1"
    load=$(bench__foreign_load "$BENCH_RAW/.q0" "$BENCH_RAW/.q1")
    awk -v l="$load" -v m="$BENCH_QUIET_LOAD" 'BEGIN { exit !(l < m) }' && return 0
    BENCH_QUIET_SPENT=$((BENCH_QUIET_SPENT + 1))
    if ((SECONDS - t0 >= BENCH_QUIET_MAX)); then
      tb_log "machine still busy (other work: $load CPUs); measuring anyway"
      return 0
    fi
  done
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
# its CPU time (user+sys) in OUT.time.
bench__wrk() {
  local out=$1 dur=$2 url=$3 conns=$4 close=$5 paths=$6
  tb_c env BENCH_PATHS="$paths" BENCH_CLOSE="$close" BENCH_SEED="$BENCH_SEED" \
    /usr/bin/time -f '%U %S' -o "$out.time" \
    wrk -t "$(bench__threads "$conns" "$paths")" -c "$conns" -d "${dur}s" --timeout 10s \
    -s "$BENCH_HERE/wrk/bench.lua" "$url" >"$out" 2>&1 ||
    tb_fail "wrk failed: $(tail -n 5 "$out")"
}

# bench_measure SYSTEM WORKLOAD URL CONNS CLOSE PATHS FE_PID_VAR PREP...
# Runs PREP (a command that (re)starts what the attempt needs), a warm-up, then the
# measured run between two snapshots. A run during which other work used more than
# BENCH_QUIET_LOAD CPUs is repeated (BENCH_RETRIES times at most, BENCH_RETRY_BUDGET
# repeats over the whole run) and the least disturbed attempt is kept. FE_PID_VAR names the TB_PID entry of the balancer process
# ("fe", "haproxy") or is "-" for none.
bench_measure() {
  local system=$1 workload=$2 url=$3 conns=$4 close=$5 paths=$6 fe_var=$7
  shift 7
  local name=$system.$workload attempt best="" best_load="" load fe_pid wrk_cpu base
  for ((attempt = 1; attempt <= BENCH_RETRIES + 1; attempt++)); do
    "$@"
    fe_pid=""
    [[ $fe_var == - ]] || fe_pid=${TB_PID[$fe_var]}
    bench__wait_quiet
    ((BENCH_WARMUP > 0)) && bench__wrk "$BENCH_RAW/.warm" "$BENCH_WARMUP" "$url" "$conns" "$close" "$paths"
    base=$BENCH_RAW/.$name.$attempt
    bench__snapshot "$fe_pid" "$base.before"
    bench__wrk "$base.wrk" "$BENCH_DURATION" "$url" "$conns" "$close" "$paths"
    bench__snapshot "$fe_pid" "$base.after"
    wrk_cpu=$(awk '{ print $1 + $2 }' "$base.wrk.time")
    load=$(bench__foreign_load "$base.before" "$base.after" "$wrk_cpu")
    grep -q '^BENCH_JSON ' "$base.wrk" || tb_fail "$name: no results from wrk: $(tail -n 5 "$base.wrk")"
    jq -n --arg system "$system" --arg workload "$workload" --arg url "$url" \
      --argjson conns "$conns" --argjson close "$close" --arg paths "$paths" \
      --argjson attempt "$attempt" --argjson load "$load" --argjson wrk_cpu "$wrk_cpu" \
      --argjson threads "$(bench__threads "$conns" "$paths")" --argjson duration "$BENCH_DURATION" \
      --argjson wrk "$(sed -n 's/^BENCH_JSON //p' "$base.wrk")" \
      --slurpfile before "$base.before" --slurpfile after "$base.after" \
      '{system: $system, workload: $workload, url: $url, conns: $conns, close: ($close == 1),
        paths: $paths, wrk_threads: $threads, duration_s: $duration, attempt: $attempt,
        foreign_load: $load, client_cpu_s: $wrk_cpu, wrk: $wrk,
        before: $before[0], after: $after[0]}' >"$base.json"
    tb_log "$name (attempt $attempt): $(jq -r '"\(.wrk.requests / (.wrk.duration_us / 1e6) | floor) req/s, \(.wrk.bytes / (.wrk.duration_us) | . * 1000 | round / 1000) MB/s, errors \(.wrk.errors | add)"' "$base.json"), other load $load CPUs"
    if [[ -z $best ]] || awk -v l="$load" -v b="$best_load" 'BEGIN { exit !(l < b) }'; then
      best=$base.json best_load=$load
    fi
    awk -v l="$load" -v m="$BENCH_QUIET_LOAD" 'BEGIN { exit !(l < m) }' && break
    ((attempt <= BENCH_RETRIES && BENCH_REPEATS < BENCH_RETRY_BUDGET)) || break
    BENCH_REPEATS=$((BENCH_REPEATS + 1))
  done
  cp "$best" "$BENCH_RAW/$name.json"
}
