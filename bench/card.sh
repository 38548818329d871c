#!/usr/bin/env bash
# CARD against FE + 3 BEs (issue 16; docs/card.md), on one namespace bed:
#
#   bash bench/card.sh [path/to/tcpha]     (make bench runs it after the main bench)
#
# The web-like mix (bench/gen_files.py's mix: SURGE-like sizes, Zipf popularity), a new
# connection per request, the "images" rule (images on server 1, the rest round-robin
# over servers 2 and 3; every file on every server), 32 connections. Two systems take
# turns round by round:
#   fe    tcpha fe in the bed's FE namespace + tcpha be on the three BE namespaces;
#   card  tcpha node on the three BE namespaces, no front-end: the FE namespace is a
#         router spreading the VIP over the nodes by ECMP (L4 hash), as in card_test.
# Per run: wrk's requests/s, and the CPU time of each tcpha process (schedstat) and of
# the whole machine (/proc/stat), per request. From the per-request costs, a model
# (labelled as one) of throughput against the number of servers for both layouts.
# Writes $BENCH_OUT/card.json (default bench/out) and the "CARD against a front-end"
# section of docs/BENCHMARKS.md. Environment: BENCH_ROUNDS (3), BENCH_DURATION (s, 4),
# BENCH_WARMUP (s, 2), QUICK=1 (2 rounds of 2 s).
set -euo pipefail
shopt -s inherit_errexit
BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_ROOT=$(cd "$BENCH_HERE/.." && pwd)
# shellcheck source=scripts/testbed.sh
source "$BENCH_ROOT/scripts/testbed.sh"
tb_require_root
tb_require_tcpha
tb_require_cmd wrk jq python3
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  ROUNDS=${BENCH_ROUNDS:-2} DUR=${BENCH_DURATION:-2} WARM=${BENCH_WARMUP:-1}
else
  ROUNDS=${BENCH_ROUNDS:-3} DUR=${BENCH_DURATION:-4} WARM=${BENCH_WARMUP:-2}
fi
CONNS=32
IMAGE_RE='\.(png|jpe?g|gif|webp)$'
OUT=${BENCH_OUT:-$BENCH_HERE/out}
RAW=$OUT/raw-card
rm -rf "$RAW"
mkdir -p "$RAW" "$OUT/files"

tb_init 3
tb_key
[[ -f $OUT/files/mix.paths ]] || python3 "$BENCH_HERE/gen_files.py" "$OUT/files" >/dev/null
for k in 1 2 3; do
  mkdir -p "$TB_DIR/www/be$k"
  cp -al "$OUT/files/mix" "$TB_DIR/www/be$k/" 2>/dev/null || cp -a "$OUT/files/mix" "$TB_DIR/www/be$k/"
done
for ns in "$TB_NS_C" "$TB_NS_FE"; do
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
done
for k in 1 2 3; do tb_be "$k" sysctl -qw net.ipv4.tcp_tw_reuse=1; done

# The two files: the same servers, groups and rules; [[backend]] + [frontend] or [[node]].
write_config() { # fe|card
  local k groups
  {
    printf '[cluster]\nvip = "%s"\nports = [%s]\nkey_file = "cluster.key"\n\n' "$TB_VIP" "$TB_PORT"
    [[ $1 == card ]] || printf '[frontend]\nid = "fe"\naddress = "%s"\ninterface = "eth0"\nstop_timeout_s = 2\n\n' "$TB_FE_ADDR"
    for k in 1 2 3; do
      groups='"pages"'
      ((k == 1)) && groups='"images"'
      if [[ $1 == card ]]; then
        printf '[[node]]\nid = "be%d"\naddress = "%s"\ninterface = "eth0"\n' "$k" "${TB_BE_ADDR[k]}"
      else
        printf '[[backend]]\nid = "be%d"\naddress = "%s"\n' "$k" "${TB_BE_ADDR[k]}"
      fi
      printf 'groups = [%s]\ndocroot = "%s"\n\n' "$groups" "$TB_DIR/www/be$k"
    done
    printf "[[rule]]\nname = \"images\"\npath = '%s'\ngroup = \"images\"\n\n" "$IMAGE_RE"
    printf '[[rule]]\nname = "pages"\ngroup = "pages"\npolicy = "round-robin"\n'
  } >"$TB_DIR/$1.toml"
}
write_config fe
write_config card

# The router for CARD (the FE namespace when no FE runs there).
for s in net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 net.ipv4.conf.all.send_redirects=0 \
  net.ipv4.conf.eth0.send_redirects=0; do
  tb_fe sysctl -qw "$s"
done
tb_c sysctl -qw net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.eth0.accept_redirects=0

stop_all() {
  local n
  for n in fe be1 be2 be3; do [[ -z ${TB_PID[$n]:-} ]] || tb_stop "$n" 10 || true; done
  ip -n "$TB_NS_FE" route del "$TB_VIP/32" 2>/dev/null || true
  ip -n "$TB_NS_C" route del "$TB_VIP/32" 2>/dev/null || true
}

ready() { # fe|card
  local k
  for k in 1 2 3; do
    tb_status_json "be$k" 2>/dev/null | jq -e '.id' >/dev/null 2>&1 || return 1
  done
  if [[ $1 == fe ]]; then
    tb_status_json fe 2>/dev/null | jq -e '[.backends[] | select(.state == "up")] | length == 3' >/dev/null 2>&1
  else
    for k in 1 2 3; do
      tb_status_json "be$k" | jq -e '[.nodes[] | select(.state == "up")] | length == 2' >/dev/null 2>&1 || return 1
    done
  fi
}

start() { # fe|card
  local k cmd=be
  [[ $1 == card ]] && cmd=node
  for k in 1 2 3; do
    tb_spawn "be$k" "${TB_NS_BE[k]}" "$TB_TCPHA" "$cmd" -c "$TB_DIR/$1.toml" --id "be$k" --socket "$TB_DIR/be$k.sock"
  done
  if [[ $1 == fe ]]; then
    tb_spawn fe "$TB_NS_FE" "$TB_TCPHA" fe -c "$TB_DIR/fe.toml" --socket "$TB_DIR/fe.sock"
  else
    ip -n "$TB_NS_FE" route replace "$TB_VIP/32" nexthop via "${TB_BE_ADDR[1]}" dev eth0 \
      nexthop via "${TB_BE_ADDR[2]}" dev eth0 nexthop via "${TB_BE_ADDR[3]}" dev eth0
    ip -n "$TB_NS_C" route replace "$TB_VIP/32" via "$TB_FE_ADDR"
  fi
  tb_until 15000 ready "$1" || tb_fail "$1: not ready in 15 s"
}

cpu_ns() { # PID...: CPU time of every thread, ns
  local pid t v sum=0
  for pid in "$@"; do
    for t in /proc/"$pid"/task/*/schedstat; do
      [[ -r $t ]] || continue
      read -r v _ <"$t" 2>/dev/null || continue
      sum=$((sum + v))
    done
  done
  echo "$sum"
}
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }

wrk_run() { # OUT DURATION
  tb_c env BENCH_PATHS="$OUT/files/mix.paths" BENCH_CLOSE=1 BENCH_SEED=1 \
    wrk -t 2 -c "$CONNS" -d "$2s" --timeout 10s -s "$BENCH_HERE/wrk/bench.lua" "http://$TB_VIP/" >"$1" 2>&1 ||
    tb_fail "wrk failed: $(tail -n 5 "$1")"
}

hz=$(getconf CLK_TCK)
systems=(${BENCH_CARD_ORDER:-fe card})
for ((round = 1; round <= ROUNDS; round++)); do
  for ((i = 0; i < 2; i++)); do
    sys=${systems[(i + round - 1) % 2]}
    start "$sys"
    wrk_run "$RAW/$sys.$round.warm" "$WARM"
    fe_pid=${TB_PID[fe]:-}
    srv=("${TB_PID[be1]}" "${TB_PID[be2]}" "${TB_PID[be3]}")
    # The counters before the measured run (the warm-up's moves are not its own).
    before=()
    for k in 1 2 3; do before+=("$(tb_status_json "be$k")"); done
    printf '%s\n' "${before[@]}" | jq -s . >"$RAW/$sys.$round.before"
    c0_fe=0
    [[ -z $fe_pid ]] || c0_fe=$(cpu_ns "$fe_pid")
    c0_srv=$(cpu_ns "${srv[@]}")
    b0=$(busy_ticks)
    t0=${EPOCHREALTIME/./}
    wrk_run "$RAW/$sys.$round.wrk" "$DUR"
    t1=${EPOCHREALTIME/./}
    b1=$(busy_ticks)
    c1_srv=$(cpu_ns "${srv[@]}")
    c1_fe=0
    [[ -z $fe_pid ]] || c1_fe=$(cpu_ns "$fe_pid")
    statuses=()
    for k in 1 2 3; do statuses+=("$(tb_status_json "be$k")"); done
    fe_status=null
    [[ -z $fe_pid ]] || fe_status=$(tb_status_json fe)
    printf '%s\n' "${statuses[@]}" | jq -s . >"$RAW/$sys.$round.servers"
    jq -n --arg sys "$sys" --argjson round "$round" \
      --argjson wrk "$(sed -n 's/^BENCH_JSON //p' "$RAW/$sys.$round.wrk")" \
      --argjson fe_ns "$((c1_fe - c0_fe))" --argjson srv_ns "$((c1_srv - c0_srv))" \
      --argjson busy_s "$(awk -v a="$b0" -v b="$b1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')" \
      --argjson wall_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e6 }')" \
      --slurpfile servers "$RAW/$sys.$round.servers" --slurpfile before "$RAW/$sys.$round.before" \
      --argjson fe "$fe_status" \
      '{system: $sys, round: $round, wrk: $wrk, fe_cpu_s: ($fe_ns / 1e9), servers_cpu_s: ($srv_ns / 1e9),
        machine_busy_s: $busy_s, wall_s: $wall_s,
        servers: [$servers[0][] | {id, accepted: .counters.accepted, requests: .counters.requests,
                                   moved_out: .counters.moved_out, imported: .counters.imported}],
        servers_before: [$before[0][] | {id, accepted: .counters.accepted, requests: .counters.requests,
                                   moved_out: .counters.moved_out, imported: .counters.imported}],
        fe_handoffs: (if $fe == null then null else $fe.handoffs end)}' >"$RAW/$sys.$round.json"
    tb_log "$sys round $round: $(jq -r '"\(.wrk.requests / (.wrk.duration_us / 1e6) | floor) req/s, errors \(.wrk.errors | add), fe \(.fe_cpu_s) s, servers \(.servers_cpu_s) s CPU"' "$RAW/$sys.$round.json")"
    stop_all
  done
done

jq -s --argjson rounds "$ROUNDS" --argjson dur "$DUR" --argjson conns "$CONNS" \
  --arg git "$(git -C "$BENCH_ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
  '{rounds: $rounds, duration_s: $dur, conns: $conns, git: $git, runs: .}' "$RAW"/*.json >"$OUT/card.json"
python3 "$BENCH_HERE/report_card.py" "$OUT/card.json" "$BENCH_ROOT/docs/BENCHMARKS.md"
tb_log "done: $OUT/card.json, docs/BENCHMARKS.md (CARD section)"
