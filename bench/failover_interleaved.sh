#!/usr/bin/env bash
# Failover's cost with no failure, measured with two beds alive at once (issue 13):
#   bench/failover_interleaved.sh TCPHA OUT.json [WORKLOAD...]
# One bed runs tcpha with failover = "off", the other with "ring" (3 BEs each, the
# files of scripts/testbed.sh). wrk runs against them in turn, in bursts of
# BENCH_IL_BURST_S seconds (default 1), in the order A B B A A B ... for
# BENCH_IL_PAIRS pairs (default 32), and again with the beds' roles swapped (a bed
# created second may be a little slower: its veths, its place in the bridge). Each pair's
# ratio ring / off compares bursts a few seconds apart on warm systems, which the
# machine's drift (other tenants of its CPUs) cannot tell apart: sequential rounds of
# a whole system each (bench/run.sh) spread by 10-20% here, more than the 5% to be
# shown. The result is the geometric mean of the pairs' ratios over both orders, per
# workload, with a 95% interval (and their median). BENCH_IL_RING_MODE=off makes the
# "ring" bed a second off bed: an A/A control of the method itself.
#
# Workloads (default close-1k ka-1k ka-1m): as bench/run.sh's, by name, and ka-1k-64c:
# ka-1k with 64 connections instead of 16 (a higher request rate, and bursts of one bed
# that spread by ~3% here instead of ~20%). The beds are this script's own
# (scripts/testbed.sh), removed at its end.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

# --- one bed, driven through files in a directory ------------------------------------
if [[ ${1:-} == --bed ]]; then
  # --bed TCPHA MODE DIR NAME: a bed with failover MODE; runs a burst of wrk when
  # $DIR/$NAME.go.N appears (its arguments in that file), writes req/s to $DIR/$NAME.N;
  # ends when $DIR/stop appears.
  # shellcheck disable=SC2034 # read by scripts/testbed.sh
  TB_TCPHA=$2
  mode=$3 dir=$4 name=$5
  # shellcheck source=../scripts/testbed.sh
  source "$root/scripts/testbed.sh"
  tb_init 3
  tb_key
  for k in 1 2 3; do tb_docroot "$k"; done
  TB_CLUSTER_EXTRA="failover = \"$mode\"" tb_config
  for k in 1 2 3; do tb_start_be "$k"; done
  tb_start_fe
  tb_wait_ready
  touch "$dir/$name.ready"
  n=0
  for ((i = 0; i < 200000; i++)); do
    [[ ! -e $dir/stop ]] || break
    if [[ -e $dir/$name.go.$n ]]; then
      read -r secs conns close file <"$dir/$name.go.$n"
      hdr=()
      ((close)) && hdr=(-H "Connection: close")
      tb_c wrk -t2 -c"$conns" -d"${secs}s" "${hdr[@]}" "http://$TB_VIP/$file" |
        awk '/Requests\/sec/{print $2}' >"$dir/$name.$n.tmp"
      mv "$dir/$name.$n.tmp" "$dir/$name.$n"
      n=$((n + 1))
    fi
    sleep 0.01
  done
  exit 0
fi

tcpha=${1:?usage: failover_interleaved.sh TCPHA OUT.json [WORKLOAD...]}
out=${2:?usage: failover_interleaved.sh TCPHA OUT.json [WORKLOAD...]}
shift 2
workloads=("$@")
((${#workloads[@]})) || workloads=(close-1k ka-1k ka-1m)
pairs=${BENCH_IL_PAIRS:-32} burst=${BENCH_IL_BURST_S:-1}
# The second bed's failover mode: "ring"; "off" makes an A/A control (what the method
# itself measures between two identical beds).
ring_mode=${BENCH_IL_RING_MODE:-ring}
mode_of() { if [[ $1 == ring ]]; then echo "$ring_mode"; else echo off; fi; }
# name -> "connections close file" (bench/run.sh's WORKLOADS)
declare -A spec=([close-1k]="32 1 f1k.bin" [ka-1k]="16 0 f1k.bin" [ka-1m]="16 0 f1m.bin"
  [ka-1k-64c]="64 0 f1k.bin" [ka-10k]="16 0 f10k.bin" [ka-100k]="16 0 f100k.bin" [ka-10m]="8 0 f10m.bin")
for w in "${workloads[@]}"; do
  [[ -n ${spec[$w]:-} ]] || { echo "failover_interleaved: unknown workload $w" >&2; exit 2; }
done

dir=$(mktemp -d)
pids=()
cleanup() {
  touch "$dir/stop"
  local p
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

# session ORDER: two beds (ORDER "off ring": the off bed is created first), PAIRS pairs of
# bursts per workload; appends "workload ratio" lines to $dir/ratios.
session() {
  local first=$1 second=$2 s=$dir/s.$1 w n_off=0 n_ring=0 p i j
  mkdir -p "$s"
  local -A bed_pid
  bash "$0" --bed "$tcpha" "$(mode_of "$first")" "$s" "$first" >"$s/$first.log" 2>&1 &
  pids+=($!)
  bed_pid[$first]=$!
  sleep 1
  bash "$0" --bed "$tcpha" "$(mode_of "$second")" "$s" "$second" >"$s/$second.log" 2>&1 &
  pids+=($!)
  bed_pid[$second]=$!
  for ((i = 0; i < 1200; i++)); do
    [[ -e $s/off.ready && -e $s/ring.ready ]] && break
    sleep 0.05
  done
  if [[ ! -e $s/off.ready || ! -e $s/ring.ready ]]; then
    tail -n 20 "$s"/*.log >&2
    return 1
  fi
  burst() { # BED WORKLOAD SECONDS: req/s in $rps (not a subshell: it counts the bursts)
    local bed=$1 n
    if [[ $bed == off ]]; then n=$n_off; n_off=$((n_off + 1)); else n=$n_ring; n_ring=$((n_ring + 1)); fi
    # Written whole, then renamed: the bed polls for the name and reads it at once (a
    # bed that read the file half-written failed, and its bursts were waited for).
    echo "$3 ${spec[$2]}" >"$s/$bed.go.$n.tmp"
    mv "$s/$bed.go.$n.tmp" "$s/$bed.go.$n"
    for ((j = 0; j < 6000; j++)); do
      [[ -e $s/$bed.$n ]] && break
      if ! kill -0 "${bed_pid[$bed]}" 2>/dev/null; then
        echo "failover_interleaved: the $bed bed ended:" >&2
        tail -n 20 "$s/$bed.log" >&2
        return 1
      fi
      sleep 0.02
    done
    rps=$(cat "$s/$bed.$n")
  }
  local rps a b bed_pids=("${pids[@]: -2}")
  for w in "${workloads[@]}"; do
    burst off "$w" 1  # warm-up of both
    burst ring "$w" 1
    for ((p = 0; p < pairs; p++)); do
      if ((p % 2)); then
        burst ring "$w" "$burst"
        b=$rps
        burst off "$w" "$burst"
        a=$rps
      else
        burst off "$w" "$burst"
        a=$rps
        burst ring "$w" "$burst"
        b=$rps
      fi
      echo "$w $first $a $b" >>"$dir/ratios"
    done
  done
  touch "$s/stop"
  wait "${bed_pids[@]}" || true
}

session off ring
session ring off
python3 - "$dir/ratios" "$out" "$pairs" "$burst" "$ring_mode" <<'PY'
import json, math, random, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
out = {"method": "two beds alive at once, wrk bursts alternating", "pairs": int(sys.argv[3]),
       "burst_s": float(sys.argv[4]), "ring_bed_mode": sys.argv[5], "workloads": {}}


def geomean(xs):
    return math.exp(statistics.fmean(math.log(x) for x in xs))


for w in dict.fromkeys(r[0] for r in rows):
    mine = [r for r in rows if r[0] == w]
    ratios = [float(r[3]) / float(r[2]) for r in mine if float(r[2]) > 0 and float(r[3]) > 0]
    by_order = {o: statistics.median([float(r[3]) / float(r[2]) for r in mine if r[1] == o])
                for o in ("off", "ring") if any(r[1] == o for r in mine)}
    # The geometric mean of the ratios is the headline: an A/A run's median of ratios
    # came out 0.979 and 0.962 (its geometric mean 0.992 and 0.986), as a ratio's
    # distribution is skewed. Its 95% interval by resampling the pairs (fixed seed).
    rnd = random.Random(13)
    boot = sorted(geomean(rnd.choices(ratios, k=len(ratios))) for _ in range(2000))
    out["workloads"][w] = {"geomean": geomean(ratios), "ci95": [boot[50], boot[1949]],
                           "median": statistics.median(ratios), "min": min(ratios),
                           "max": max(ratios), "pairs": len(ratios),
                           "median_by_first_bed": by_order,
                           "off_rps": [float(r[2]) for r in mine],
                           "ring_rps": [float(r[3]) for r in mine]}
json.dump(out, open(sys.argv[2], "w"), indent=1)
for w, e in out["workloads"].items():
    print(f"{w}: ring/off geometric mean {e['geomean']:.3f} (95% {e['ci95'][0]:.3f}-{e['ci95'][1]:.3f}), "
          f"median {e['median']:.3f} [{e['min']:.3f}-{e['max']:.3f}] over {e['pairs']} pairs; "
          f"by the bed created first: {', '.join(f'{k} {v:.3f}' for k, v in e['median_by_first_bed'].items())}")
PY
