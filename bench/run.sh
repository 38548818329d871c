#!/usr/bin/env bash
# make bench [QUICK=1]: tcpha against HAProxy and against no balancer at all, in one
# run on one namespace test bed (a client, a FE and 3 BEs; scripts/testbed.sh).
#
#   bash bench/run.sh [path/to/tcpha]      (QUICK=1: the same in under 4 minutes)
#
# Systems, on the same bed, taking turns within each workload (rounds A B C, B C A,
# ...: outside load drifting over minutes falls on all of them alike): tcpha (handoff,
# built-in server), tcpha-relay (handoff, the BE agent relaying to nginx over loopback
# TCP; when the relay is available), tcpha-relay-unix (the same over nginx's unix
# socket), haproxy (HTTP mode on the FE, relaying to nginx on each BE) and direct (the
# client to one BE's nginx: the per-BE bound). Workloads (wrk): keep-alive GETs of 1
# KB..10 MB, 1 KB with a new connection per request, a web-like mix with rules, browsing
# a partitioned site over keep-alive connections (pages, images and assets each on one
# BE only: every request routed, tcpha moving connections between BEs; 16 connections,
# and one connection for the move latency one at a time; browse-all, the same visits
# with every file on every BE, is the baseline without moves), and the locality
# workload (tcpha, LARD against round-robin with a bounded file cache). After the
# measured rounds of close-1k and browse-part-1, one more run of tcpha and of HAProxy
# each under `perf record` gives the per-function CPU profiles (bench/lib/profile.sh).
#
# Writes bench/out/ (results.json, raw/, PNG plots), docs/BENCHMARKS.md and
# docs/bench/*.png. Environment: QUICK, BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP (s,
# per run), BENCH_SYSTEMS, BENCH_WORKLOADS (space-separated names), BENCH_RETRIES (per
# run), BENCH_RETRY_BUDGET (repeats in all), BENCH_QUIET_MAX/BENCH_QUIET_BUDGET (s of
# waiting for a quiet machine, per run / in all), BENCH_QUIET_LOAD (CPUs of other work
# that make a run disturbed), BENCH_PROFILE (0: no profiles), BENCH_PROFILE_WORKLOADS,
# BENCH_PROFILE_SYSTEMS, BENCH_PROFILE_DURATION, BENCH_PROFILE_HZ, BENCH_OUT,
# BENCH_BASE_TCPHA (another tcpha binary: the system tcpha-base runs it exactly like
# tcpha, in the same rounds, for before/after figures; not in the default systems).
#
# BE failover (issue 13): the system tcpha-failover is tcpha with failover = "ring"
# (tcpha itself runs with failover = "off"), measured in the same rounds as tcpha in the
# workloads BENCH_FAILOVER_WORKLOADS only (default close-1k ka-1k ka-1m: the BACKUP
# message and FORGET per connection, the copy of every request packet, and pure ACKs,
# which are not copied): the cost with no failure. The workload failover-timeline then
# runs a keep-alive mix (BENCH_TIMELINE_CONNS connections, BENCH_TIMELINE_S s) twice on
# a ring cluster, once undisturbed and once with be BENCH_FAILOVER_VICTIM killed at
# BENCH_FAILOVER_KILL_AT_S s (BENCH_FAILOVER_KILL: agent = SIGKILL, host = its link down
# and SIGKILL): throughput per 100 ms and the response times, with and without the
# failure. A 5% cost is within this bed's run-to-run spread, so tcpha-failover runs next
# to tcpha in each round's order, and the pair runs alone for more rounds after the
# shared ones, up to BENCH_FAILOVER_ROUNDS (default 5; QUICK 2), alternating which goes
# first (tcpha's figures in those workloads are medians over those rounds too).
# BENCH_FAILOVER=0 leaves all of it out; BENCH_FAILOVER=only runs nothing else
# (no microbenchmarks, profiles or other systems; raw data in $BENCH_OUT/raw-failover,
# the full run's raw/ is kept) and rewrites only the failover sections of
# docs/BENCHMARKS.md and their plots (report.py --failover-only).
#
# Tunnel and IPv6 (issue 15): the system tcpha-tunnel is tcpha with forward = "tunnel"
# (IPIP to every BE, on this bed's one segment), tcpha-ipv6 the cluster with vip6 and
# the client on the IPv6 VIP (the bed gets IPv6 addresses beside its IPv4 ones), both
# measured in the same rounds as tcpha in BENCH_VARIANT_WORKLOADS only (default ka-1k
# ka-1m ka-10m close-1k). direct-ipv6 is direct over IPv6 (be1's nginx on its IPv6
# address), in the same workloads and rounds as direct: the kernel's own IPv6 cost on
# this bed, the reference for tcpha-ipv6. BENCH_VARIANTS=0
# leaves it out; BENCH_VARIANTS=only runs nothing else (raw data in $BENCH_OUT/raw-variants)
# and rewrites only the "Tunnel and IPv6" section of docs/BENCHMARKS.md
# (report.py --variants-only).
#
# CARD (issue 16): bench/card.sh runs last, on a bed of its own: three `tcpha node`
# behind an ECMP router against `tcpha fe` + three `tcpha be`, the web-like mix, and a
# model of both against the number of servers ("CARD against a front-end" section).
# BENCH_CARD=0 leaves it out, BENCH_CARD=only runs nothing else.
set -euo pipefail
shopt -s inherit_errexit
BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# CARD (issue 16): bench/card.sh after everything else; BENCH_CARD=0 leaves it out,
# BENCH_CARD=only runs nothing else.
BENCH_CARD=${BENCH_CARD:-1}
[[ $BENCH_CARD != only ]] || exec bash "$BENCH_HERE/card.sh" "$@"
[[ $BENCH_CARD == 0 ]] || BENCH_CARD=1
BENCH_ROOT=$(cd "$BENCH_HERE/.." && pwd)
# shellcheck source=scripts/testbed.sh
source "$BENCH_ROOT/scripts/testbed.sh"
# shellcheck source=bench/lib/systems.sh
source "$BENCH_HERE/lib/systems.sh"
# shellcheck source=bench/lib/measure.sh
source "$BENCH_HERE/lib/measure.sh"
# shellcheck source=bench/lib/profile.sh
source "$BENCH_HERE/lib/profile.sh"
tb_require_root
tb_require_cmd wrk jq curl tc bpftool "$NGINX" "$HAPROXY" /usr/bin/time python3
tb_require_tcpha
BENCH_MAIN_TCPHA=$TB_TCPHA

# The settings this run was given, for the record (before defaults fill them in).
BENCH_GIVEN=$(env | grep -E '^(QUICK|BENCH_[A-Z_]+|CACHE_MB|LOC_WARMUP|MICRO_FILTER)=' | sort | tr '\n' ' ' || true)
QUICK=${QUICK:-0}
[[ $QUICK == 1 ]] || QUICK=0
# Time budget: QUICK under 4 minutes, the full run about 30 even on a busy machine (the
# waits for a quiet machine and the repeats of disturbed runs have budgets of their own).
# Each system runs every workload BENCH_ROUNDS times (interleaved with the others, see
# below) for BENCH_DURATION s each: the full run measures 3 x 4 s per workload and
# system, QUICK 2 x 1 s. Measured durations are whole seconds (wrk's unit); a warm-up
# may be shorter (bench__wrk).
if ((QUICK)); then
  BENCH_ROUNDS=${BENCH_ROUNDS:-2} BENCH_DURATION=${BENCH_DURATION:-1} BENCH_WARMUP=${BENCH_WARMUP:-0.3}
  LOC_WARMUP=${LOC_WARMUP:-2} BENCH_PROFILE_DURATION=${BENCH_PROFILE_DURATION:-1}
  BENCH_PROFILE_WORKLOADS=${BENCH_PROFILE_WORKLOADS:-close-1k}
  BENCH_QUIET_MAX=${BENCH_QUIET_MAX:-0} BENCH_QUIET_BUDGET=${BENCH_QUIET_BUDGET:-0}
  BENCH_RETRIES=${BENCH_RETRIES:-0} BENCH_RETRY_BUDGET=${BENCH_RETRY_BUDGET:-0} MICRO_MIN_TIME=0.05
  # The flow GC passes run a fixed number of passes over a million flows (~20 s).
  MICRO_FILTER=${MICRO_FILTER:--BM_FlowGcPass}
else
  BENCH_ROUNDS=${BENCH_ROUNDS:-3} BENCH_DURATION=${BENCH_DURATION:-4} BENCH_WARMUP=${BENCH_WARMUP:-2}
  LOC_WARMUP=${LOC_WARMUP:-8} BENCH_PROFILE_DURATION=${BENCH_PROFILE_DURATION:-5}
  BENCH_QUIET_MAX=${BENCH_QUIET_MAX:-10} BENCH_QUIET_BUDGET=${BENCH_QUIET_BUDGET:-120}
  BENCH_RETRIES=${BENCH_RETRIES:-2} BENCH_RETRY_BUDGET=${BENCH_RETRY_BUDGET:-12} MICRO_MIN_TIME=0.5
fi
# CPU profiles (perf record, bench/lib/profile.sh): an extra run per profiled system
# after the measured rounds of each profiled workload; BENCH_PROFILE=0 skips them.
BENCH_PROFILE=${BENCH_PROFILE:-1}
[[ $BENCH_PROFILE == 0 ]] || BENCH_PROFILE=1
BENCH_PROFILE_WORKLOADS=${BENCH_PROFILE_WORKLOADS:-close-1k browse-part-1}
BENCH_PROFILE_SYSTEMS=${BENCH_PROFILE_SYSTEMS:-tcpha haproxy}
BENCH_PROFILE_HZ=${BENCH_PROFILE_HZ:-999}
[[ $BENCH_DURATION =~ ^[1-9][0-9]*$ && $BENCH_PROFILE_DURATION =~ ^[1-9][0-9]*$ ]] ||
  tb_fail "BENCH_DURATION and BENCH_PROFILE_DURATION are whole seconds (wrk's unit)"
BENCH_QUIET_LOAD=${BENCH_QUIET_LOAD:-0.25} # CPUs of other work that make a run "disturbed"
BENCH_WRK_THREADS=${BENCH_WRK_THREADS:-$(nproc)}
BENCH_SEED=${BENCH_SEED:-1}
BENCH_FAILOVER=${BENCH_FAILOVER:-1}
[[ $BENCH_FAILOVER == 0 || $BENCH_FAILOVER == only ]] || BENCH_FAILOVER=1
BENCH_FAILOVER_WORKLOADS=${BENCH_FAILOVER_WORKLOADS:-close-1k ka-1k ka-1m}
if ((QUICK)); then BENCH_FAILOVER_ROUNDS=${BENCH_FAILOVER_ROUNDS:-2}; else BENCH_FAILOVER_ROUNDS=${BENCH_FAILOVER_ROUNDS:-5}; fi
BENCH_TIMELINE_S=${BENCH_TIMELINE_S:-12}
BENCH_TIMELINE_CONNS=${BENCH_TIMELINE_CONNS:-32}
BENCH_FAILOVER_KILL_AT_S=${BENCH_FAILOVER_KILL_AT_S:-5}
BENCH_FAILOVER_KILL=${BENCH_FAILOVER_KILL:-agent}
BENCH_FAILOVER_VICTIM=${BENCH_FAILOVER_VICTIM:-2}
[[ $BENCH_FAILOVER_KILL == agent || $BENCH_FAILOVER_KILL == host ]] ||
  tb_fail "BENCH_FAILOVER_KILL is agent or host"
BENCH_VARIANTS=${BENCH_VARIANTS:-1}
[[ $BENCH_VARIANTS == 0 || $BENCH_VARIANTS == only ]] || BENCH_VARIANTS=1
BENCH_VARIANT_WORKLOADS=${BENCH_VARIANT_WORKLOADS:-ka-1k ka-1m ka-10m close-1k}
if [[ $BENCH_VARIANTS == only ]]; then
  [[ $BENCH_FAILOVER != only ]] || tb_fail "BENCH_VARIANTS=only and BENCH_FAILOVER=only exclude each other"
  BENCH_FAILOVER=0 BENCH_CARD=0
  BENCH_SYSTEMS=${BENCH_SYSTEMS:-tcpha tcpha-tunnel tcpha-ipv6 direct direct-ipv6}
  BENCH_WORKLOADS=${BENCH_WORKLOADS:-$BENCH_VARIANT_WORKLOADS}
  BENCH_PROFILE=0
elif [[ $BENCH_FAILOVER == only ]]; then
  BENCH_VARIANTS=0 BENCH_CARD=0
  BENCH_SYSTEMS=${BENCH_SYSTEMS:-tcpha tcpha-failover}
  BENCH_WORKLOADS=${BENCH_WORKLOADS:-$BENCH_FAILOVER_WORKLOADS failover-timeline}
  BENCH_PROFILE=0
fi
default_systems=tcpha
[[ $BENCH_FAILOVER != 1 ]] || default_systems+=" tcpha-failover" # next to tcpha: see above
[[ $BENCH_VARIANTS != 1 ]] || default_systems+=" tcpha-tunnel tcpha-ipv6"
default_systems+=" tcpha-relay tcpha-relay-unix haproxy direct"
[[ $BENCH_VARIANTS != 1 ]] || default_systems+=" direct-ipv6"
BENCH_SYSTEMS=${BENCH_SYSTEMS:-$default_systems}
CACHE_MB=${CACHE_MB:-8} # per BE in the locality workload; its working set is 2x that
OUT=${BENCH_OUT:-$BENCH_HERE/out}
BENCH_RAW=$OUT/raw
[[ $BENCH_FAILOVER != only ]] || BENCH_RAW=$OUT/raw-failover
[[ $BENCH_VARIANTS != only ]] || BENCH_RAW=$OUT/raw-variants

# name | path, or @list for bench/wrk/bench.lua (@browse: page visits) | connections |
# new connection per request | routing (bench_cluster_config, bench_haproxy_conf)
WORKLOADS=(
  "ka-1k /f1k.bin 16 0 all"
  "ka-10k /f10k.bin 16 0 all"
  "ka-100k /f100k.bin 16 0 all"
  "ka-1m /f1m.bin 16 0 all"
  "ka-10m /f10m.bin 8 0 all"
  "close-1k /f1k.bin 32 1 all"
  "lat-1k /f1k.bin 1 1 all"
  "mix @mix 32 1 split"
  "browse-all @browse-all 16 0 all"
  "browse-part @browse 16 0 part"
  "browse-part-1 @browse 1 0 part1"
)
((QUICK)) && BENCH_WORKLOADS=${BENCH_WORKLOADS:-ka-1k ka-1m ka-10m close-1k lat-1k mix browse-all browse-part browse-part-1 locality failover-timeline}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-ka-1k ka-10k ka-100k ka-1m ka-10m close-1k lat-1k mix browse-all browse-part browse-part-1 locality failover-timeline}
[[ $BENCH_FAILOVER != 0 ]] || BENCH_WORKLOADS=${BENCH_WORKLOADS//failover-timeline/}
wanted() { [[ " $BENCH_WORKLOADS " == *" $1 "* ]]; }
has_system() { [[ " $BENCH_SYSTEMS " == *" $1 "* ]]; }

rm -rf "$BENCH_RAW"
mkdir -p "$BENCH_RAW" "$OUT/files"
started=$(date -u +%FT%TZ)
t_start=$SECONDS

# --- microbenchmarks first, while nothing else of ours runs -------------------------
micro=$(dirname "$TB_TCPHA")/bench/tcpha_micro
if [[ $BENCH_FAILOVER == only || $BENCH_VARIANTS == only ]]; then
  tb_log "BENCH_FAILOVER=only or BENCH_VARIANTS=only: microbenchmarks not run"
elif [[ -x $micro ]]; then
  tb_log "microbenchmarks ($micro)"
  "$micro" --benchmark_min_time="$MICRO_MIN_TIME" ${MICRO_FILTER:+--benchmark_filter="$MICRO_FILTER"} \
    --benchmark_format=json \
    --benchmark_out="$BENCH_RAW/micro.json" --benchmark_out_format=json >/dev/null ||
    tb_fail "microbenchmarks failed"
else
  tb_log "no $micro (build target tcpha_micro): microbenchmarks not run"
fi

# --- the bed ------------------------------------------------------------------------
# IPv6 beside IPv4 (fd00:c8::/64) when tcpha-ipv6 or direct-ipv6 runs; the other
# systems use IPv4 only.
[[ " $BENCH_SYSTEMS " != *" tcpha-ipv6 "* && " $BENCH_SYSTEMS " != *" direct-ipv6 "* ]] || TB_IPV6=1
tb_init 3
tb_key
python3 "$BENCH_HERE/gen_files.py" "$OUT/files" --loc-files $((CACHE_MB * 2 * 16)) \
  --loc-kb 64 >"$BENCH_RAW/files.json"
for ((k = 1; k <= TB_N_BE; k++)); do
  tb_docroot "$k"
  cp -al "$OUT/files/mix" "$OUT/files/loc" "$TB_DIR/www/be$k/" 2>/dev/null ||
    cp -a "$OUT/files/mix" "$OUT/files/loc" "$TB_DIR/www/be$k/"
done
# The partitioned site: each group's directory on its BE only (BENCH_PART_GROUPS), for
# tcpha's built-in server and nginx alike.
for g in "${BENCH_PART_GROUPS[@]}"; do
  read -r _ re k <<<"$g"
  d=${re#^/browse/}
  mkdir -p "$TB_DIR/www/be$k/browse"
  cp -al "$OUT/files/browse/${d%/}" "$TB_DIR/www/be$k/browse/" 2>/dev/null ||
    cp -a "$OUT/files/browse/${d%/}" "$TB_DIR/www/be$k/browse/"
done
# The baseline: the same site in full on every BE under /all/, visited the same way.
for ((k = 1; k <= TB_N_BE; k++)); do
  mkdir -p "$TB_DIR/www/be$k/all"
  cp -al "$OUT/files/browse" "$TB_DIR/www/be$k/all/" 2>/dev/null ||
    cp -a "$OUT/files/browse" "$TB_DIR/www/be$k/all/"
done
sed 's#/browse/#/all/browse/#g' "$OUT/files/browse.visits" >"$OUT/files/browse-all.visits"
# A new connection per request at thousands per second: the client reuses ports in
# TIME_WAIT (it closes last with HAProxy) and gets the whole port range.
for ns in "$TB_NS_C" "$TB_NS_FE"; do
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
done
python3 "$BENCH_HERE/bpf_stats.py" >"$TB_DIR/bpf_stats.log" 2>&1 &
tb_track bpf_stats $!

url_of() { # SYSTEM PATH
  local path=$2
  [[ $path == @* ]] && path=/
  case $1 in
    direct) echo "http://${TB_BE_ADDR[1]}:8080$path" ;;
    direct-ipv6) echo "http://[$TB_SUBNET6:${TB_BE_ADDR[1]##*.}]:8080$path" ;;
    tcpha-ipv6) echo "http://[$TB_VIP6]$path" ;;
    *) echo "http://$TB_VIP$path" ;;
  esac
}
paths_of() {
  if [[ $1 == @browse* ]]; then
    echo "$OUT/files/${1#@}.visits"
  elif [[ $1 == @* ]]; then
    echo "$OUT/files/${1#@}.paths"
  fi
}

unavailable() { # SYSTEM REASON [WORKLOAD]
  tb_log "$1${3:+ $3} not measured: $2"
  jq -n --arg s "$1" --arg r "$2" --arg w "${3:-}" \
    '{system: $s, not_measured: $r} + (if $w == "" then {} else {workload: $w} end)' \
    >"$BENCH_RAW/$1${3:+.$3}.unavailable.json"
}

# The relay is newer than the rest: probe it (config accepted, one byte-exact fetch)
# instead of letting a missing feature end the whole run.
relay_usable() { # MODE
  local i out
  out=$(bench_cluster_config all "$1" 2>&1) || {
    RELAY_WHY="config refused: ${out//$'\n'/ }"
    return 1
  }
  bench_tcpha_start_bes
  BENCH_BE_ROUTING=all
  # shellcheck disable=SC2119 # no extra arguments for tcpha fe
  tb_start_fe
  for ((i = 0; i < 200; i++)); do
    tb__ready && break
    sleep 0.05
  done
  if ! tb__ready; then
    RELAY_WHY="cluster not ready with upstream = nginx"
  elif ! out=$(tb_fetch f100k.bin 2>&1); then
    RELAY_WHY="fetch through the relay failed: $out"
  else
    return 0
  fi
  return 1
}

# --- the systems, taking turns within each workload ----------------------------------
# For each workload every system runs BENCH_ROUNDS times, in rounds (A B C, then B C A,
# then C A B: each system in each position once in three rounds), so that outside load
# drifting over minutes falls on every system alike; report.py pairs the systems' runs
# of the same round into per-round ratios and reports their median and spread. Each run
# starts its system afresh (bench_use), so the histograms the daemons keep cover that
# run (warm-up and measured time) only.
for system in $BENCH_SYSTEMS; do
  case $system in
    tcpha | tcpha-failover | tcpha-tunnel | tcpha-ipv6 | tcpha-relay | tcpha-relay-unix | haproxy | direct | direct-ipv6) ;;
    tcpha-base)
      [[ -x ${BENCH_BASE_TCPHA:-} ]] || tb_fail "system tcpha-base needs BENCH_BASE_TCPHA (another tcpha binary)"
      ;;
    *) tb_fail "unknown system '$system' (tcpha tcpha-failover tcpha-tunnel tcpha-ipv6 tcpha-base tcpha-relay tcpha-relay-unix haproxy direct direct-ipv6)" ;;
  esac
done
# nginx serves the relays, HAProxy and direct: up on every BE for the whole bench (an
# idle nginx takes no CPU; in tcpha's runs it is idle).
if has_system tcpha-relay || has_system tcpha-relay-unix || has_system haproxy || has_system direct ||
  has_system direct-ipv6; then
  for ((k = 1; k <= TB_N_BE; k++)); do bench_nginx_start "$k"; done
fi
USABLE=()
for system in $BENCH_SYSTEMS; do
  if [[ $system == tcpha-relay* ]]; then
    mode=relay
    [[ $system == tcpha-relay-unix ]] && mode=relay-unix
    if ! relay_usable "$mode"; then
      unavailable "$system" "$RELAY_WHY"
      bench_tcpha_stop
      continue
    fi
    bench_tcpha_stop
  fi
  USABLE+=("$system")
done

fe_var_of() {
  case $1 in
    haproxy) echo haproxy ;;
    direct | direct-ipv6) echo - ;;
    *) echo fe ;;
  esac
}

for w in "${WORKLOADS[@]}"; do
  read -r name path conns close routing <<<"$w"
  wanted "$name" || continue
  turn=()
  for system in "${USABLE[@]}"; do
    # The cost of failover with no failure: only where it differs (BENCH_FAILOVER_WORKLOADS).
    [[ $system != tcpha-failover || " $BENCH_FAILOVER_WORKLOADS " == *" $name "* ]] || continue
    # The tunnel's and IPv6's cost: only in BENCH_VARIANT_WORKLOADS.
    [[ ($system != tcpha-tunnel && $system != tcpha-ipv6 && $system != direct-ipv6) ||
      " $BENCH_VARIANT_WORKLOADS " == *" $name "* ]] || continue
    if [[ $routing == part* && $system == direct* ]]; then
      unavailable "$system" "partitioned content: no one BE holds it all" "$name"
      continue
    fi
    turn+=("$system")
  done
  n=${#turn[@]}
  ((n > 0)) || continue
  for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    for ((i = 0; i < n; i++)); do
      system=${turn[(i + round - 1) % n]}
      BENCH_ROUND=$round bench_measure "$system" "$name" "$(url_of "$system" "$path")" "$conns" \
        "$close" "$(paths_of "$path")" "$(fe_var_of "$system")" bench_use "$system" "$routing"
    done
  done
  # Failover's cost: tcpha and tcpha-failover alone for the rest of their rounds.
  if [[ " ${turn[*]} " == *" tcpha-failover "* && " ${turn[*]} " == *" tcpha "* ]]; then
    for ((round = BENCH_ROUNDS + 1; round <= BENCH_FAILOVER_ROUNDS; round++)); do
      pair=(tcpha tcpha-failover)
      ((round % 2)) || pair=(tcpha-failover tcpha)
      for system in "${pair[@]}"; do
        BENCH_ROUND=$round bench_measure "$system" "$name" "$(url_of "$system" "$path")" "$conns" \
          "$close" "$(paths_of "$path")" "$(fe_var_of "$system")" bench_use "$system" "$routing"
      done
    done
  fi
  # The CPU profiles: one extra run per profiled system, after the measured rounds
  # (perf's sampling would disturb a measured one).
  if ((BENCH_PROFILE)) && [[ " $BENCH_PROFILE_WORKLOADS " == *" $name "* ]]; then
    for system in "${turn[@]}"; do
      [[ " $BENCH_PROFILE_SYSTEMS " == *" $system "* ]] || continue
      bench_profile "$system" "$name" "$(url_of "$system" "$path")" "$conns" "$close" \
        "$(paths_of "$path")" "$(fe_var_of "$system")" bench_use "$system" "$routing"
    done
  fi
done
bench_tcpha_stop
bench_haproxy_stop
bench_nginx_stop

# --- failover: a back-end dies under load --------------------------------------------
# A keep-alive mix on a ring cluster (one rule over the 3 BEs, all in the same groups, so
# each backs up the previous one), twice: undisturbed, then with be$BENCH_FAILOVER_VICTIM
# killed BENCH_FAILOVER_KILL_AT_S s into the run. wrk counts the requests it starts per
# 10 ms (bench.lua's timeline) and keeps its latency histogram; the FE's and BEs' status
# around the run give detection, recovery and the takeovers.
timeline_run() { # KIND (nofail | kill)
  local kind=$1 base=$BENCH_RAW/.failover-timeline.$1 t0 t_kill="" wrk_pid rc=0 fe_pid victim=$BENCH_FAILOVER_VICTIM
  local paths=$OUT/files/mix.paths url="http://$TB_VIP/"
  BENCH_FAILOVER_MODE=ring BENCH_FRESH_BES=1 bench_tcpha_fe all
  fe_pid=${TB_PID[fe]}
  bench__run_pids
  bench__warm_up "$url" "$BENCH_TIMELINE_CONNS" 0 "$paths"
  bench__snapshot "$fe_pid" "$base.before" before
  t0=${EPOCHREALTIME/./}
  tb_c env BENCH_PATHS="$paths" BENCH_CLOSE=0 BENCH_SEED="$BENCH_SEED" BENCH_TIMELINE_T0_US="$t0" \
    /usr/bin/time -f '%U %S' -o "$base.wrk.time" \
    wrk -t "$(bench__threads "$BENCH_TIMELINE_CONNS" "$paths")" -c "$BENCH_TIMELINE_CONNS" \
    -d "${BENCH_TIMELINE_S}s" --timeout 10s -s "$BENCH_HERE/wrk/bench.lua" "$url" >"$base.wrk" 2>&1 &
  wrk_pid=$!
  # Until AT s after t0.
  timeline__sleep_to() {
    sleep "$(awk -v t0="$t0" -v now="${EPOCHREALTIME/./}" -v at="$1" \
      'BEGIN { s = at - (now - t0) / 1e6; print (s > 0 ? s : 0) }')"
  }
  # The backups held in the middle of the run, 1 s before the kill (its time in the
  # undisturbed run): the memory a backed-up connection takes (held_bytes / held).
  timeline__sleep_to "$(awk -v at="$BENCH_FAILOVER_KILL_AT_S" 'BEGIN { print (at > 1 ? at - 1 : at / 2) }')"
  local k mid=()
  for ((k = 1; k <= TB_N_BE; k++)); do mid+=("$(tb_status_json "be$k" 2>/dev/null || echo null)"); done
  printf '%s\n' "${mid[@]}" | jq -s '[.[] | select(type == "object") | {id, failover}]' >"$base.mid"
  if [[ $kind == kill ]]; then
    timeline__sleep_to "$BENCH_FAILOVER_KILL_AT_S"
    t_kill=${EPOCHREALTIME/./}
    [[ $BENCH_FAILOVER_KILL == host ]] && ip -n "${TB_NS_BE[victim]}" link set eth0 down
    tb_kill_be "$victim"
  fi
  wait "$wrk_pid" || rc=$?
  sed -i '/^Command exited with non-zero status/d' "$base.wrk.time"
  ((rc == 0)) || tb_fail "failover-timeline $kind: wrk failed (status $rc): $(tail -n 5 "$base.wrk")"
  grep -q '^BENCH_JSON ' "$base.wrk" || tb_fail "failover-timeline $kind: no results from wrk: $(tail -n 5 "$base.wrk")"
  # The FE reports the failover once its backups have answered (or 3 s have passed).
  [[ $kind != kill ]] || sleep 0.5
  bench__snapshot "$fe_pid" "$base.after" after
  local wrk_cpu load
  wrk_cpu=$(awk '{ print $1 + $2 }' "$base.wrk.time")
  load=$(bench__foreign_load "$base.before" "$base.after" "$wrk_cpu")
  jq -n --arg kind "$kind" --arg how "$BENCH_FAILOVER_KILL" --argjson victim "$victim" \
    --argjson t0 "$t0" --arg t_kill "$t_kill" --argjson at "$BENCH_FAILOVER_KILL_AT_S" \
    --argjson conns "$BENCH_TIMELINE_CONNS" --argjson duration "$BENCH_TIMELINE_S" \
    --argjson load "$load" --argjson wrk_cpu "$wrk_cpu" --arg paths "$paths" \
    --argjson wrk "$(sed -n 's/^BENCH_JSON //p' "$base.wrk")" --arg wrk_text "$(grep -v '^BENCH_JSON ' "$base.wrk")" \
    --slurpfile before "$base.before" --slurpfile after "$base.after" --slurpfile mid "$base.mid" \
    '{kind: $kind, how: $how, victim: "be\($victim)", t0_us: $t0,
      kill_us: (if $t_kill == "" then null else ($t_kill | tonumber) end), kill_at_s: $at,
      conns: $conns, duration_s: $duration, paths: $paths, foreign_load: $load,
      client_cpu_s: $wrk_cpu, wrk: $wrk, wrk_text: $wrk_text,
      be_mid: $mid[0], before: $before[0], after: $after[0]}' >"$BENCH_RAW/failover-timeline.$kind.json"
  tb_log "failover-timeline $kind: $(jq -r '"\(.wrk.requests) requests in \(.wrk.duration_us / 1e6) s, errors \(.wrk.errors), max latency \(.wrk.latency_us.max / 1000) ms; FE failover \(.after.fe_status.failover.last // "none" | tostring)"' "$BENCH_RAW/failover-timeline.$kind.json"), other load $load CPUs"
  if [[ $kind == kill && $BENCH_FAILOVER_KILL == host ]]; then
    ip -n "${TB_NS_BE[victim]}" link set eth0 up
  fi
}
if wanted failover-timeline && has_system tcpha; then
  for kind in nofail kill; do timeline_run "$kind"; done
  bench_tcpha_stop
fi

# --- failover's cost again, two beds alive at once ------------------------------------
# The rounds above run each system alone, one after the other, and this bed's rounds
# spread by 10-20%: more than the 5% issue 13 asks to show. bench/failover_interleaved.sh
# runs an off bed and a ring bed at once and alternates short wrk bursts between them
# (A B B A ..., both beds' orders), so that each ratio compares two bursts seconds
# apart. BENCH_FAILOVER_INTERLEAVED=0 skips it; BENCH_IL_PAIRS pairs per workload and
# order (32 of 1 s bursts; QUICK 4); BENCH_IL_WORKLOADS (the failover workloads and
# ka-1k-64c, ka-1k with 64 connections, whose bursts spread less). Then an A/A control
# (both beds off).
if [[ $BENCH_FAILOVER != 0 && ${BENCH_FAILOVER_INTERLEAVED:-1} != 0 ]] && has_system tcpha-failover; then
  bench_tcpha_stop
  il_workloads=${BENCH_IL_WORKLOADS:-$BENCH_FAILOVER_WORKLOADS ka-1k-64c}
  tb_log "failover cost, two beds at once: $il_workloads"
  ((QUICK)) && export BENCH_IL_PAIRS=${BENCH_IL_PAIRS:-4}
  # shellcheck disable=SC2086 # the workloads are words
  if bash "$BENCH_HERE/failover_interleaved.sh" "$TB_TCPHA" "$BENCH_RAW/failover-interleaved.json" \
    $il_workloads >"$BENCH_RAW/failover-interleaved.log" 2>&1; then
    tb_log "$(tail -n 3 "$BENCH_RAW/failover-interleaved.log")"
  else
    tb_log "failover cost, two beds at once: failed: $(tail -n 5 "$BENCH_RAW/failover-interleaved.log")"
  fi
  # The method's own floor: the same with failover off on both beds (an A/A run), for
  # the keep-alive 1 KB workloads, whose ratios spread most. BENCH_IL_CONTROL=0 skips it.
  il_control=${BENCH_IL_CONTROL_WORKLOADS:-ka-1k ka-1k-64c}
  if [[ ${BENCH_IL_CONTROL:-1} != 0 && -n $il_control ]]; then
    tb_log "failover cost, two beds at once, control (off/off): $il_control"
    # shellcheck disable=SC2086 # the workloads are words
    if BENCH_IL_RING_MODE=off bash "$BENCH_HERE/failover_interleaved.sh" "$TB_TCPHA" \
      "$BENCH_RAW/failover-interleaved-control.json" $il_control \
      >"$BENCH_RAW/failover-interleaved-control.log" 2>&1; then
      tb_log "$(tail -n 2 "$BENCH_RAW/failover-interleaved-control.log")"
    else
      tb_log "control: failed: $(tail -n 5 "$BENCH_RAW/failover-interleaved-control.log")"
    fi
  fi
fi

# --- locality: LARD against round-robin, with a bounded file cache on each BE --------
prep_locality() {
  bench_tcpha_stop
  bench_tcpha_fe "$1" builtin "$CACHE_MB"
}
if wanted locality && has_system tcpha; then
  prep_locality locality-round-robin
  if ! tb_status_json be1 | jq -e '[.cache.hits, .cache.misses] | all(type == "number")' >/dev/null; then
    unavailable locality "cache missing: the BE status reports no cache.hits/cache.misses"
  else
    # The two policies take turns like the systems above, each run on fresh agents
    # (an empty cache) warmed for LOC_WARMUP s.
    policies=(round-robin lard)
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
      for ((i = 0; i < 2; i++)); do
        policy=${policies[(i + round - 1) % 2]}
        BENCH_ROUND=$round BENCH_WARMUP=$LOC_WARMUP bench_measure tcpha "locality-$policy" \
          "$(url_of tcpha /)" 16 1 "$OUT/files/loc.paths" fe prep_locality "locality-$policy"
      done
    done
  fi
  bench_tcpha_stop
fi

# --- report -------------------------------------------------------------------------
if [[ -n ${MAKELEVEL:-} ]]; then
  command="${BENCH_GIVEN//QUICK=1 /}make bench"
  ((QUICK)) && command+=" QUICK=1"
else
  command="${BENCH_GIVEN}bash bench/run.sh $*"
fi
jq -n --arg command "$command" --arg started "$started" --argjson quick "$QUICK" \
  --argjson duration "$BENCH_DURATION" --argjson warmup "$BENCH_WARMUP" \
  --argjson loc_warmup "$LOC_WARMUP" --argjson retries "$BENCH_RETRIES" \
  --argjson retry_budget "$BENCH_RETRY_BUDGET" --argjson repeated "$BENCH_REPEATS" \
  --argjson quiet_load "$BENCH_QUIET_LOAD" --argjson cache_mb "$CACHE_MB" \
  --argjson rounds "$BENCH_ROUNDS" --argjson quiet_max "$BENCH_QUIET_MAX" \
  --argjson profile "$BENCH_PROFILE" --argjson profile_s "$BENCH_PROFILE_DURATION" \
  --argjson profile_hz "$BENCH_PROFILE_HZ" --arg micro_filter "${MICRO_FILTER:-}" \
  --argjson elapsed "$((SECONDS - t_start))" --arg image_re "$BENCH_IMAGE_RE" \
  --arg haproxy "$("$HAPROXY" -v | head -n 1)" --arg nginx "$("$NGINX" -v 2>&1)" \
  --arg wrk "$(wrk -v 2>&1 | head -n 1)" --arg tcpha "$("$TB_TCPHA" --version 2>&1 | head -n 1)" \
  --arg git "$(git -C "$BENCH_ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
  '{command: $command, started: $started, quick: ($quick == 1), duration_s: $duration,
    warmup_s: $warmup, locality_warmup_s: $loc_warmup, retries: $retries,
    retry_budget: $retry_budget, repeated_runs: $repeated, rounds: $rounds,
    quiet_wait_max_s: $quiet_max, profile: ($profile == 1), profile_duration_s: $profile_s,
    profile_hz: $profile_hz, micro_filter: $micro_filter,
    quiet_load_cpus: $quiet_load, cache_mb: $cache_mb, elapsed_s: $elapsed,
    image_rule: $image_re, git: $git,
    versions: {haproxy: $haproxy, nginx: $nginx, wrk: $wrk, tcpha: $tcpha}}' >"$BENCH_RAW/meta.json"
jq --arg mode "$BENCH_FAILOVER" --arg workloads "$BENCH_FAILOVER_WORKLOADS" \
  --argjson fo_rounds "$BENCH_FAILOVER_ROUNDS" --argjson rounds "$BENCH_ROUNDS" \
  --argjson timeline_s "$BENCH_TIMELINE_S" --argjson conns "$BENCH_TIMELINE_CONNS" \
  --argjson kill_at "$BENCH_FAILOVER_KILL_AT_S" --arg how "$BENCH_FAILOVER_KILL" \
  --argjson victim "$BENCH_FAILOVER_VICTIM" \
  '. + {failover: {bench: $mode, workloads: ($workloads | split(" ") | map(select(. != ""))),
        timeline_s: $timeline_s, timeline_conns: $conns, kill_at_s: $kill_at, kill: $how,
        victim: "be\($victim)", rounds: ([$rounds, $fo_rounds] | max)}}' "$BENCH_RAW/meta.json" >"$BENCH_RAW/.meta.json"
mv "$BENCH_RAW/.meta.json" "$BENCH_RAW/meta.json"
if [[ $BENCH_VARIANTS == only ]]; then
  python3 "$BENCH_HERE/report.py" --raw "$BENCH_RAW" --out "$OUT" --docs "$BENCH_ROOT/docs" --variants-only
  tb_log "done in $((SECONDS - t_start)) s: $OUT/results-variants.json, docs/BENCHMARKS.md (tunnel/IPv6 section)"
elif [[ $BENCH_FAILOVER == only ]]; then
  python3 "$BENCH_HERE/report.py" --raw "$BENCH_RAW" --out "$OUT" --docs "$BENCH_ROOT/docs" --failover-only
  tb_log "done in $((SECONDS - t_start)) s: $OUT/results-failover.json, docs/BENCHMARKS.md (failover sections)"
else
  python3 "$BENCH_HERE/report.py" --raw "$BENCH_RAW" --out "$OUT" --docs "$BENCH_ROOT/docs"
  tb_log "done in $((SECONDS - t_start)) s: $OUT/results.json, docs/BENCHMARKS.md"
fi

# --- CARD against a front-end (bench/card.sh, a bed of its own) ----------------------
if [[ $BENCH_CARD == 1 ]]; then
  bench_tcpha_stop
  bash "$BENCH_HERE/card.sh" "$TB_TCPHA"
elif [[ -f $OUT/card.json ]]; then
  # The report above rewrote docs/BENCHMARKS.md: the last CARD results go back in.
  python3 "$BENCH_HERE/report_card.py" "$OUT/card.json" "$BENCH_ROOT/docs/BENCHMARKS.md"
fi
