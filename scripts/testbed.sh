# shellcheck shell=bash
# tcpha test bed: a client, a front-end and N back-ends in network namespaces joined
# by a bridge that lives in its own namespace, so the host's network is never touched.
# Sourced by tests/netns/*_test.sh, scripts/demo.sh and the benchmarks; works under
# `set -euo pipefail`.
#
#   source scripts/testbed.sh          # TB_TCPHA from $TB_TCPHA, else the caller's $1,
#   tb_require_root                    # else $TCPHA, else build/tcpha
#   tb_cluster_up 3                    # = tb_init 3; tb_key; tb_docroot 1..3; tb_config;
#   tb_fetch f1m.bin >/dev/null        #   tb_start_be 1..3; tb_start_fe; tb_wait_ready
#
# Layout (one /24): FE 10.200.0.1, client 10.200.0.2, VIP 10.200.0.10 (added by the
# daemons, not by the bed), BE k 10.200.0.(10+k), a second FE 10.200.0.3 if the test
# adds one (tb_add_fe2). Every node's interface is eth0; its peer is a port of br0 in
# the switch namespace. TB_IPV6=1 (set before tb_init) adds IPv6 beside it (one /64,
# nodad): every node fd00:c8::<the same last number> (routed back-ends and the router's
# second leg fd00:c9::<number>, their default route the router), and the cluster file gets
# vip6 = TB_VIP6 (fd00:c8::10), which the daemons add like the IPv4 VIP.
#
# Cleanup runs on EXIT, INT, TERM and HUP: it stops what the bed started (TERM, then
# KILL after 5 s), prints the daemons' logs when the run failed or TB_KEEP_LOGS=1,
# deletes the namespaces and TB_DIR (kept when TB_KEEP_DIR=1).

TB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TB_TCPHA=${TB_TCPHA:-${1:-${TCPHA:-$TB_ROOT/build/tcpha}}}
TB_SUBNET=10.200.0
TB_VIP=$TB_SUBNET.10
TB_FE_ADDR=$TB_SUBNET.1
TB_C_ADDR=$TB_SUBNET.2
TB_PORT=80
TB_IPV6=${TB_IPV6:-0}
TB_SUBNET6=fd00:c8:
TB_RT_SUBNET6=fd00:c9:
TB_VIP6=$TB_SUBNET6:10
TB_CURL_MAX_TIME=${TB_CURL_MAX_TIME:-10}
# Generated in every docroot: name -> size in bytes (index.html and whoami.txt aside).
TB_FILES=(f1k.bin f10k.bin f100k.bin f1m.bin f10m.bin)
declare -gA TB_SIZE=([f1k.bin]=1024 [f10k.bin]=10240 [f100k.bin]=102400
  [f1m.bin]=1048576 [f10m.bin]=10485760)
declare -gA TB_SHA=()       # file name -> expected sha256 (files common to all BEs)
declare -gA TB_PID=()       # name -> pid of a process the bed started and not yet reaped
declare -gA TB_PID_START=() # name -> its start time (guards against pid reuse)
declare -gA TB_EXIT=()      # name -> exit status once reaped
declare -gA TB_CMD=()       # name -> command line, for messages
declare -ga TB_LOGS=()      # "name=file" of the daemon logs shown on failure
declare -ga TB_NETNS=()     # namespaces this run creates
declare -ga TB_NS_BE=() TB_BE_ADDR=() TB_BE_EXTRA=() TB_BE_GROUPS=()
TB_CLEANED=0

tb_fail() {
  echo "FAIL: $*" >&2
  exit 1
}

tb_log() { echo "[testbed $(date +%T.%3N)] $*" >&2; }

tb_require_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: needs root (network namespaces, BPF, TCP_REPAIR)" >&2
    exit 77
  fi
}

tb_require_cmd() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  if ((${#missing[@]})); then
    echo "SKIP: missing commands: ${missing[*]} (make deps installs them)" >&2
    exit 77
  fi
}

# The daemons' tests fail (not skip) without the binary: a missing build is a bug.
tb_require_tcpha() {
  [[ -x $TB_TCPHA ]] || tb_fail "tcpha binary not found at '$TB_TCPHA' (pass it as \$1 or set TCPHA)"
}

tb__now_ms() {
  local t=${EPOCHREALTIME//[!0-9]/}
  echo $((10#$t / 1000))
}

# Prints "STATE STARTTIME" of a pid from /proc/PID/stat (the command name may hold
# spaces and parentheses, so fields are counted after its closing parenthesis).
tb__proc_stat() {
  local stat rest
  local -a f
  { stat=$(</proc/"$1"/stat); } 2>/dev/null || return 1
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  echo "${f[0]} ${f[19]}"
}

tb__alive() {
  local name=$1 pid=${TB_PID[$1]:-} s
  [[ -n $pid ]] || return 1
  s=$(tb__proc_stat "$pid") || return 1
  [[ ${s%% *} != Z && ${s#* } == "${TB_PID_START[$name]:-}" ]]
}

# tb_spawn [--log FILE] NAME NS CMD...: runs CMD in namespace NS in the background,
# output to FILE (default $TB_DIR/NAME.log, which is shown when the run fails).
tb_spawn() {
  local log=""
  if [[ ${1:-} == --log ]]; then
    log=$2
    shift 2
  fi
  local name=$1 ns=$2
  shift 2
  [[ -z ${TB_PID[$name]:-} ]] || tb_fail "tb_spawn: '$name' is already running"
  if [[ -z $log ]]; then
    log=$TB_DIR/$name.log
    # A daemon restarted under the same name keeps one entry (its log is rewritten).
    [[ " ${TB_LOGS[*]} " == *" $name=$log "* ]] || TB_LOGS+=("$name=$log")
  fi
  TB_CMD[$name]="ip netns exec $ns $*"
  ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
  tb_track "$name" "$!"
}

# tb_track NAME PID: a child this shell started without tb_spawn, stopped on cleanup.
tb_track() {
  local s
  TB_PID[$1]=$2
  s=$(tb__proc_stat "$2") || s="gone -"
  TB_PID_START[$1]=${s#* }
  unset "TB_EXIT[$1]"
}

# tb_wait NAME [TIMEOUT_S]: waits for a spawned process to end (SIGKILL after the
# timeout, default 30 s) and returns its exit status.
tb_wait() {
  local name=$1 limit_ms=$((${2:-30} * 1000)) pid=${TB_PID[$1]:-} t0
  [[ -n $pid ]] || return "${TB_EXIT[$name]:-127}"
  t0=$(tb__now_ms)
  while tb__alive "$name" && (($(tb__now_ms) - t0 < limit_ms)); do sleep 0.05; done
  if tb__alive "$name"; then
    tb_log "$name (pid $pid) still running after ${2:-30}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  tb__reap "$name"
}

# tb__reap NAME: collects the exit status of a process that has ended or was just sent
# SIGKILL. Reaping at once, with stderr closed, keeps bash from reporting "Killed".
tb__reap() {
  local st=0
  wait "${TB_PID[$1]}" 2>/dev/null || st=$?
  unset "TB_PID[$1]" "TB_PID_START[$1]"
  TB_EXIT[$1]=$st
  return "$st"
}

# tb_stop NAME [TIMEOUT_S]: SIGTERM, wait (default 5 s, then SIGKILL); returns the
# process's exit status (0 = it stopped cleanly).
tb_stop() {
  tb__alive "$1" && kill -TERM "${TB_PID[$1]}" 2>/dev/null
  tb_wait "$1" "${2:-5}"
}

tb_stop_fe() { tb_stop fe "$@"; }
tb_stop_be() { tb_stop "be$1" "${@:2}"; }
tb_kill_be() {
  [[ -n ${TB_PID[be$1]:-} ]] || return 0
  tb__alive "be$1" && kill -KILL "${TB_PID[be$1]}" 2>/dev/null
  tb__reap "be$1" || true
}

tb_cleanup() {
  local rc=${1:-$?}
  ((TB_CLEANED)) && return 0
  TB_CLEANED=1
  trap - ERR
  set +e
  local name ns pid t0 entry
  for name in "${!TB_PID[@]}"; do
    tb__alive "$name" || continue
    kill -TERM "${TB_PID[$name]}" 2>/dev/null
    kill -CONT "${TB_PID[$name]}" 2>/dev/null # a test may have left it stopped (SIGSTOP)
  done
  t0=$(tb__now_ms)
  while (($(tb__now_ms) - t0 < 5000)); do
    local any=0
    for name in "${!TB_PID[@]}"; do tb__alive "$name" && any=1; done
    ((any)) || break
    sleep 0.05
  done
  for name in "${!TB_PID[@]}"; do
    if tb__alive "$name"; then
      tb_log "cleanup: $name (pid ${TB_PID[$name]}) ignored SIGTERM for 5s: SIGKILL"
      kill -KILL "${TB_PID[$name]}" 2>/dev/null
    fi
    wait "${TB_PID[$name]}" 2>/dev/null
  done
  TB_PID=()
  if ((rc != 0)) || [[ ${TB_KEEP_LOGS:-0} == 1 ]]; then
    for entry in "${TB_LOGS[@]}"; do
      echo "======== log of ${entry%%=*} (last 200 lines) ========" >&2
      if [[ -s ${entry#*=} ]]; then tail -n 200 "${entry#*=}" >&2; else echo "(empty)" >&2; fi
    done
    ((${#TB_LOGS[@]})) && echo "======== end of logs ========" >&2
  fi
  # Anything still inside this run's namespaces was started through the bed (e.g. a
  # client tb_c put in the background); the unique run id makes them ours alone.
  for ns in "${TB_NETNS[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      tb_log "cleanup: stray pid $pid ($(cat /proc/"$pid"/comm 2>/dev/null)) in $ns: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    done
  done
  for ns in "${TB_NETNS[@]}"; do
    [[ -e /run/netns/$ns ]] && ip netns del "$ns" 2>/dev/null
  done
  for ns in "${TB_NETNS[@]}"; do
    [[ -e /run/netns/$ns ]] && tb_log "cleanup: could not delete namespace $ns"
  done
  if [[ -n ${TB_DIR:-} && -d $TB_DIR ]]; then
    if [[ ${TB_KEEP_DIR:-0} == 1 ]]; then
      tb_log "kept $TB_DIR"
    else
      rm -rf -- "$TB_DIR"
    fi
  fi
  return 0
}

# Under `set -e`, names the command that ended the run (else it ends silently).
tb__on_err() {
  [[ $BASHPID == "$$" && $- == *e* ]] || return 0
  echo "FAIL: '$2' returned $1 at $3" >&2
}

tb__on_exit() {
  local rc=$?
  tb_cleanup "$rc"
  exit "$rc"
}

# tb__link NODE_NS PORT ADDR MAC: the node's eth0, its peer PORT enslaved to br0.
# tb__link NS PORT ADDR MAC [BRIDGE=br0] [IFNAME=eth0]
tb__link() {
  local ns=$1 port=$2 addr=$3 mac=$4 br=${5:-br0} ifname=${6:-eth0} sw=$TB_NS_SW
  ip -n "$ns" link add "$ifname" address "$mac" type veth peer name "$port" netns "$sw"
  ip -n "$sw" link set "$port" master "$br" up
  ip -n "$ns" addr add "$addr/24" dev "$ifname"
  # TB_IPV6: fd00:c8::/64 on br0, fd00:c9::/64 on the routed segment (br1).
  if [[ $TB_IPV6 == 1 ]]; then
    local net6=$TB_SUBNET6
    [[ $br == br0 ]] || net6=$TB_RT_SUBNET6
    ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$ifname.disable_ipv6=0"
    ip -n "$ns" -6 addr add "$net6:${addr##*.}/64" dev "$ifname" nodad
  fi
  ip -n "$ns" link set "$ifname" up
}

# Routed back-ends (TB_ROUTED_BES="1 2", before tb_init): those back-ends sit on a second
# segment, $TB_RT_SUBNET.0/24 on bridge br1, behind a router namespace (10.200.0.254 and
# $TB_RT_SUBNET.254) and share no L2 with the front-end: the tunnel's bed
# (docs/tunnel.md). Every other node routes that subnet through the router; the routed
# back-ends' default route is the router, which is how their answers reach the
# client. The router does not check source addresses (rp_filter 0): the back-ends
# answer from the VIP, which lives on the other side.
TB_RT_SUBNET=10.201.0
tb__router() {
  TB_NS_RT=tcpha$TB_ID-rt
  tb__netns_add "$TB_NS_RT"
  tb__link "$TB_NS_RT" p-rt0 "$TB_SUBNET.254" 02:00:0a:c8:00:fe br0 eth0
  tb__link "$TB_NS_RT" p-rt1 "$TB_RT_SUBNET.254" 02:00:0a:c9:00:fe br1 eth1
  local k
  for k in net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.eth1.rp_filter=0; do
    ip netns exec "$TB_NS_RT" sysctl -qw "$k"
  done
  [[ $TB_IPV6 != 1 ]] || ip netns exec "$TB_NS_RT" sysctl -qw net.ipv6.conf.all.forwarding=1
}
tb__routed() { [[ " ${TB_ROUTED_BES:-} " == *" $1 "* ]]; }
tb_rt() { ip netns exec "$TB_NS_RT" "$@"; }

tb__netns_add() {
  TB_NETNS+=("$1") # first: an interrupt right after `ip netns add` must still clean it
  ip netns add "$1"
  ip -n "$1" link set lo up
}

# tb_init [N_BACKENDS=3]
tb_init() {
  local n=${1:-3} k
  ((n >= 1 && n <= 200)) || tb_fail "tb_init: bad number of back-ends '$n'"
  trap tb__on_exit EXIT
  trap 'tb__on_err $? "$BASH_COMMAND" "${BASH_SOURCE[0]##*/}:$LINENO"' ERR
  set -E # the ERR trap also inside functions
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  TB_TCPHA=$(realpath -m -- "$TB_TCPHA")
  TB_ID=$(printf '%d%04x' $$ $((RANDOM)))
  TB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tcpha-bed.$TB_ID.XXXXXX")
  TB_N_BE=$n
  TB_NS_SW=tcpha$TB_ID-sw
  TB_NS_C=tcpha$TB_ID-c
  TB_NS_FE=tcpha$TB_ID-fe
  for ((k = 1; k <= n; k++)); do
    TB_NS_BE[k]=tcpha$TB_ID-be$k
    TB_BE_ADDR[k]=$TB_SUBNET.$((10 + k))
    if tb__routed "$k"; then TB_BE_ADDR[k]=$TB_RT_SUBNET.$((10 + k)); fi
  done
  export TB_ID TB_DIR TB_N_BE TB_NS_SW TB_NS_C TB_NS_FE TB_VIP TB_FE_ADDR TB_C_ADDR TB_TCPHA
  export TB_IPV6 TB_VIP6

  tb__netns_add "$TB_NS_SW"
  ip -n "$TB_NS_SW" link add br0 type bridge
  ip -n "$TB_NS_SW" link set br0 up
  if [[ -n ${TB_ROUTED_BES:-} ]]; then
    ip -n "$TB_NS_SW" link add br1 type bridge
    ip -n "$TB_NS_SW" link set br1 up
  fi
  # Locally administered MACs ending in the address's last byte: readable in tcpdump.
  tb__netns_add "$TB_NS_C"
  tb__link "$TB_NS_C" p-c "$TB_C_ADDR" 02:00:0a:c8:00:02
  tb__netns_add "$TB_NS_FE"
  tb__link "$TB_NS_FE" p-fe "$TB_FE_ADDR" 02:00:0a:c8:00:01
  for ((k = 1; k <= n; k++)); do
    tb__netns_add "${TB_NS_BE[k]}"
    if tb__routed "$k"; then
      tb__link "${TB_NS_BE[k]}" "p-be$k" "${TB_BE_ADDR[k]}" "$(printf '02:00:0a:c9:00:%02x' $((10 + k)))" br1
    else
      tb__link "${TB_NS_BE[k]}" "p-be$k" "${TB_BE_ADDR[k]}" "$(printf '02:00:0a:c8:00:%02x' $((10 + k)))"
    fi
  done
  if [[ -n ${TB_ROUTED_BES:-} ]]; then
    tb__router
    ip -n "$TB_NS_FE" route add "$TB_RT_SUBNET.0/24" via "$TB_SUBNET.254"
    ip -n "$TB_NS_C" route add "$TB_RT_SUBNET.0/24" via "$TB_SUBNET.254"
    for ((k = 1; k <= n; k++)); do
      if tb__routed "$k"; then
        ip -n "${TB_NS_BE[k]}" route add default via "$TB_RT_SUBNET.254"
        [[ $TB_IPV6 != 1 ]] || ip -n "${TB_NS_BE[k]}" -6 route add default via "$TB_RT_SUBNET6:254"
      else
        ip -n "${TB_NS_BE[k]}" route add "$TB_RT_SUBNET.0/24" via "$TB_SUBNET.254"
      fi
    done
    tb_log "routed back-ends ${TB_ROUTED_BES} on $TB_RT_SUBNET.0/24 behind router $TB_NS_RT"
  fi
  tb_log "bed $TB_ID: client $TB_C_ADDR, FE $TB_FE_ADDR, VIP $TB_VIP, $n BEs ${TB_BE_ADDR[*]}; dir $TB_DIR"
}

tb_c() { ip netns exec "$TB_NS_C" "$@"; }
tb_fe() { ip netns exec "$TB_NS_FE" "$@"; }
tb_be() { ip netns exec "${TB_NS_BE[$1]}" "${@:2}"; }

tb_key() {
  (umask 077 && head -c 32 /dev/urandom >"$TB_DIR/cluster.key")
}

# tb__gen NAME SIZE: deterministic bytes in which every line carries its own index,
# so a shifted, duplicated or dropped chunk changes the checksum.
tb__gen() {
  awk -v tag="$1" -v n="$2" 'BEGIN {
    for (i = 0; out < n; i++) {
      line = sprintf("%s %012d\n", tag, i)
      if (out + length(line) > n) line = substr(line, 1, n - out)
      printf "%s", line
      out += length(line)
    }
  }'
}

# tb_docroot K: $TB_DIR/www/beK with the common files (generated once, hard-linked)
# and whoami.txt = "beK"; fills TB_SHA.
tb_docroot() {
  local k=$1 common=$TB_DIR/www/.common dir=$TB_DIR/www/be$1 f sum
  if [[ ! -d $common ]]; then
    mkdir -p "$common"
    printf '<!doctype html>\n<html><head><title>tcpha test bed</title></head>\n<body><p>tcpha test bed</p></body></html>\n' >"$common/index.html"
    for f in "${TB_FILES[@]}"; do tb__gen "$f" "${TB_SIZE[$f]}" >"$common/$f"; done
    (cd "$common" && sha256sum index.html "${TB_FILES[@]}" >"$TB_DIR/www/SHA256SUMS")
  fi
  while read -r sum f; do TB_SHA[$f]=$sum; done <"$TB_DIR/www/SHA256SUMS"
  mkdir -p "$dir"
  for f in index.html "${TB_FILES[@]}"; do ln -f "$common/$f" "$dir/$f"; done
  echo "be$k" >"$dir/whoami.txt"
}

# tb_config [EXTRA_TOML]: $TB_DIR/cluster.toml. EXTRA_TOML goes before the default
# catch-all rule (first match wins); TB_FE_EXTRA adds [frontend] keys, TB_BE_EXTRA[k]
# keys of backend k (when they set upstream, the backend gets no docroot: a backend
# has exactly one of them); TB_NO_DEFAULT_RULE=1 leaves the catch-all rule out.
# TB_CLUSTER_EXTRA adds [cluster] keys, TB_FORWARD sets its forward (default dr); TB_BE_GROUPS[k] replaces backend k's groups
# (the inside of a TOML array, default '"all"'); TB_CONFIG_BES=M lists back-ends 1..M
# only (default all TB_N_BE: a smaller file leaves the others to join at run time).
tb_config() {
  local k root cfg=$TB_DIR/cluster.toml
  [[ -f $TB_DIR/cluster.key ]] || tb_key
  {
    echo "# Generated by scripts/testbed.sh for bed $TB_ID."
    printf '[cluster]\nvip = "%s"\nports = [%s]\nkey_file = "cluster.key"\nforward = "%s"\n%s\n' \
      "$TB_VIP" "$TB_PORT" "${TB_FORWARD:-dr}" "${TB_CLUSTER_EXTRA:-}"
    [[ $TB_IPV6 != 1 ]] || printf 'vip6 = "%s"\n' "$TB_VIP6"
    # A stop waits for open connections for stop_timeout_s (default 30): shorter than
    # tb_stop's patience here, unless the test sets it.
    local stop="stop_timeout_s = 2"
    [[ ${TB_FE_EXTRA:-} == *stop_timeout_s* ]] && stop=""
    printf '[frontend]\nid = "fe"\naddress = "%s"\ninterface = "eth0"\n%s\n%s\n' \
      "$TB_FE_ADDR" "$stop" "${TB_FE_EXTRA:-}"
    for ((k = 1; k <= ${TB_CONFIG_BES:-$TB_N_BE}; k++)); do
      root="docroot = \"$TB_DIR/www/be$k\""
      [[ ${TB_BE_EXTRA[k]:-} =~ (^|$'\n')[[:space:]]*upstream[[:space:]]*= ]] && root=""
      printf '[[backend]]\nid = "be%d"\naddress = "%s"\ngroups = [%s]\n%s\n%s\n' \
        "$k" "${TB_BE_ADDR[k]}" "${TB_BE_GROUPS[k]:-\"all\"}" "$root" "${TB_BE_EXTRA[k]:-}"
    done
    [[ -z ${1:-} ]] || printf '%s\n\n' "$1"
    [[ ${TB_NO_DEFAULT_RULE:-0} == 1 ]] ||
      printf '[[rule]]\nname = "default"\ngroup = "all"\npolicy = "round-robin"\n'
  } >"$cfg"
  TB_CONFIG=$cfg
  export TB_CONFIG
}

tb_start_fe() {
  tb_spawn fe "$TB_NS_FE" "$TB_TCPHA" fe -c "$TB_DIR/cluster.toml" --socket "$TB_DIR/fe.sock" "$@"
}

# tb_add_fe2: a second front-end node on the bridge, for a hot standby (issue 14): its
# namespace TB_NS_FE2, eth0 TB_FE2_ADDR (.3), MAC 02:00:0a:c8:00:03. Call after tb_init;
# the cleanup deletes it like the others. The cluster file lists it only when the test
# passes a [[standby]] table to tb_config.
tb_add_fe2() {
  TB_NS_FE2=tcpha$TB_ID-fe2
  TB_FE2_ADDR=$TB_SUBNET.3
  export TB_NS_FE2 TB_FE2_ADDR
  tb__netns_add "$TB_NS_FE2"
  tb__link "$TB_NS_FE2" p-fe2 "$TB_FE2_ADDR" 02:00:0a:c8:00:03
  tb_log "second FE node $TB_FE2_ADDR in $TB_NS_FE2"
}

tb_fe2() { ip netns exec "$TB_NS_FE2" "$@"; }

# tb_start_fe2 [ARGS...]: `tcpha fe --id fe2` in tb_add_fe2's namespace; status socket
# $TB_DIR/fe2.sock (tb_status_json fe2).
tb_start_fe2() {
  tb_spawn fe2 "$TB_NS_FE2" "$TB_TCPHA" fe -c "$TB_DIR/cluster.toml" --id fe2 \
    --socket "$TB_DIR/fe2.sock" "$@"
}

# tb_downloads_start N RATE FILE: N rate-limited downloads of FILE from the VIP at once,
# as the processes dl0..dl(N-1) (body $TB_DIR/dl/I.body, curl's status line
# $TB_DIR/dl/I.out), for the checks of tb_downloads_ok.
tb_downloads_start() {
  local n=$1 rate=$2 file=$3 i
  mkdir -p "$TB_DIR/dl"
  for ((i = 0; i < n; i++)); do
    tb_spawn --log "$TB_DIR/dl/$i.out" "dl$i" "$TB_NS_C" curl -sS --noproxy '*' --max-time 45 \
      --limit-rate "$rate" -o "$TB_DIR/dl/$i.body" -w '%{http_code} %{size_download}' \
      "http://$TB_VIP/$file"
  done
}

# tb_problem TEXT: a failed check that does not end the test, so that one run reports
# every check; tb_problems_fail ends it (FAIL with each of them) if there was one.
declare -ga TB_PROBLEMS=()
tb_problem() {
  echo "PROBLEM: $*" >&2
  TB_PROBLEMS+=("$*")
}
tb_problems_fail() {
  ((${#TB_PROBLEMS[@]} == 0)) && return 0
  printf 'FAIL: %s\n' "${TB_PROBLEMS[@]}" >&2
  exit 1
}

# tb_downloads_ok N FILE SIZE: waits (45 s each) for the downloads dl0..dl(N-1) a test
# spawned as `tb_spawn --log $TB_DIR/dl/I.out dlI NS curl -o $TB_DIR/dl/I.body -w
# '%{http_code} %{size_download}' ...`, prints each one that is not FILE (SIZE bytes,
# TB_SHA[FILE]) byte-exact with curl's status, and sets TB_DL_OK to how many are.
tb_downloads_ok() {
  local n=$1 file=$2 want=$3 i rc out sum size
  TB_DL_OK=0
  for ((i = 0; i < n; i++)); do
    rc=0
    tb_wait "dl$i" 45 || rc=$?
    out=$(<"$TB_DIR/dl/$i.out")
    sum=$(sha256sum <"$TB_DIR/dl/$i.body" 2>/dev/null) || sum=missing
    size=$(stat -c %s "$TB_DIR/dl/$i.body" 2>/dev/null) || size=0
    if ((rc == 0)) && [[ ${out%% *} == 200 && $size == "$want" && ${sum%% *} == "${TB_SHA[$file]}" ]]; then
      TB_DL_OK=$((TB_DL_OK + 1))
    else
      echo "download $i: curl exit $rc, '$out', $size bytes, $([[ ${sum%% *} == "${TB_SHA[$file]}" ]] && echo same || echo differs)"
    fi
  done
}

tb_start_be() {
  local k=$1
  shift
  tb_spawn "be$k" "${TB_NS_BE[k]}" "$TB_TCPHA" be -c "$TB_DIR/cluster.toml" --id "be$k" \
    --socket "$TB_DIR/be$k.sock" "$@"
}

# tb_status_json [fe|beK]
tb_status_json() {
  timeout 5 "$TB_TCPHA" status --socket "$TB_DIR/${1:-fe}.sock" --json
}

# tb_fe_backend ID [FIELD=state]: one field of back-end ID in the FE's status.
tb_fe_backend() {
  tb_status_json fe | jq -er --arg id "$1" --arg f "${2:-state}" '.backends[] | select(.id == $id) | .[$f]'
}

# tb_fe_counter NAME: one of the FE's status counters.
tb_fe_counter() { tb_status_json fe | jq -er --arg n "$1" '.counters[$n]'; }

# tb_until TIMEOUT_MS CMD...: runs CMD (output discarded) every 20 ms until it
# succeeds or TIMEOUT_MS have passed; returns 0 or 1 and sets TB_UNTIL_MS to the
# milliseconds it waited.
# tb_idle_round DIR K N: round K of tests/netns/idle_clients.py (started with DIR and N
# connections): every connection asks once more on the same connection. Prints
# "be1 A be2 B be3 C" (who answered); fails when the clients do not answer within 30 s
# or a connection failed.
tb_idle_round() {
  local dir=$1 k=$2 n=$3
  touch "$dir/go-$k"
  tb_until 30000 test -f "$dir/round-$k" || tb_fail "round $k: the clients did not answer in 30 s"
  if grep -q ERROR "$dir/round-$k"; then
    grep ERROR "$dir/round-$k" | head -5 >&2
    tb_fail "round $k: $(grep -c ERROR "$dir/round-$k") of $n connections failed"
  fi
  echo "be1 $(grep -c ' be1$' "$dir/round-$k" || true) be2 $(grep -c ' be2$' "$dir/round-$k" || true)" \
    "be3 $(grep -c ' be3$' "$dir/round-$k" || true)"
}

tb_until() {
  local limit=$1 t0
  shift
  t0=$(tb__now_ms)
  while :; do
    if "$@" >/dev/null 2>&1; then
      TB_UNTIL_MS=$(($(tb__now_ms) - t0))
      return 0
    fi
    TB_UNTIL_MS=$(($(tb__now_ms) - t0))
    ((TB_UNTIL_MS < limit)) || return 1
    sleep 0.02
  done
}

# True when the FE reports every running BE "up" and every running BE's socket answers.
tb__ready() {
  local ids=() k js
  for ((k = 1; k <= TB_N_BE; k++)); do
    [[ -n ${TB_PID[be$k]:-} ]] || continue
    ids+=("be$k")
    js=$(tb_status_json "be$k" 2>/dev/null) || return 1
    jq -e --arg id "be$k" '.role == "be" and .id == $id' <<<"$js" >/dev/null 2>&1 || return 1
  done
  [[ -n ${TB_PID[fe]:-} ]] || return 0
  js=$(tb_status_json fe 2>/dev/null) || return 1
  jq -e --args '.role == "fe" and
      ([$ARGS.positional[] as $id | any(.backends[]; .id == $id and .state == "up")] | all)' \
    "${ids[@]}" <<<"$js" >/dev/null 2>&1
}

# tb_wait_ready [TIMEOUT_S=10]: fails (with the logs) when a daemon exits or the
# cluster is not ready in time.
tb_wait_ready() {
  local limit_ms=$((${1:-10} * 1000)) t0 name i
  t0=$(tb__now_ms)
  for ((i = 0; i < limit_ms / 50 + 1; i++)); do
    for name in "${!TB_PID[@]}"; do
      [[ $name == fe || $name =~ ^be[0-9]+$ ]] || continue
      if ! tb__alive "$name"; then
        tb_wait "$name" 1 || true
        tb_fail "$name exited with status ${TB_EXIT[$name]} before the cluster was ready: ${TB_CMD[$name]}"
      fi
    done
    tb__ready && return 0
    (($(tb__now_ms) - t0 < limit_ms)) || break
    sleep 0.05
  done
  echo "last FE status: $(tb_status_json fe 2>&1 | head -c 2000)" >&2
  tb_fail "cluster not ready within ${1:-10}s (FE must report every BE \"up\", each BE socket must answer)"
}

# tb_cluster_up [N=3] [EXTRA_TOML]: the whole bed with running daemons.
tb_cluster_up() {
  local n=${1:-3} k
  tb_require_tcpha
  tb_init "$n"
  tb_key
  for ((k = 1; k <= n; k++)); do tb_docroot "$k"; done
  tb_config "${2:-}"
  for ((k = 1; k <= n; k++)); do tb_start_be "$k"; done
  tb_start_fe
  tb_wait_ready
}

# tb_curl PATH [CURL ARGS...]: from the client to http://VIP/PATH, bounded in time.
tb_curl() {
  local path=${1#/}
  shift
  tb_c curl -sS --noproxy '*' --max-time "$TB_CURL_MAX_TIME" "$@" "http://$TB_VIP:$TB_PORT/$path"
}

# tb_fetch PATH [OUT]: downloads PATH via the VIP into OUT (default $TB_DIR/dl/last),
# checks curl's exit status, HTTP 200 and, for generated files, the sha256; prints the
# byte count. Returns 1 with the reason on stderr otherwise.
tb_fetch() {
  local path=${1#/} out=${2:-$TB_DIR/dl/last} res rc=0 sum name
  mkdir -p "$(dirname "$out")"
  res=$(tb_curl "$path" -o "$out" -w '%{http_code} %{size_download}') || rc=$?
  if ((rc)); then
    echo "tb_fetch /$path: curl exit status $rc" >&2
    return 1
  fi
  [[ ${res%% *} == 200 ]] || {
    echo "tb_fetch /$path: HTTP ${res%% *}" >&2
    return 1
  }
  name=${path##*/}
  if [[ -n ${TB_SHA[$name]:-} ]]; then
    sum=$(sha256sum <"$out")
    [[ ${sum%% *} == "${TB_SHA[$name]}" ]] || {
      echo "tb_fetch /$path: sha256 mismatch (${res##* } bytes received)" >&2
      return 1
    }
  fi
  echo "${res##* }"
}

# tb_small_buffers: small TCP buffers on the client (receive) and the BEs (send). With
# the defaults a 10 MB response sits in socket buffers a fraction of a second after
# it starts, even for a rate-limited client (curl --limit-rate); with these the BE
# keeps sending until the client has read nearly everything, so a "running download"
# really runs on its BE.
tb_small_buffers() {
  local k
  tb_c sysctl -qw net.ipv4.tcp_rmem="4096 65536 131072"
  for ((k = 1; k <= TB_N_BE; k++)); do tb_be "$k" sysctl -qw net.ipv4.tcp_wmem="4096 16384 131072"; done
}

tb_iface_tx_bytes() { ip netns exec "$1" cat /sys/class/net/eth0/statistics/tx_bytes; }
tb_iface_rx_bytes() { ip netns exec "$1" cat /sys/class/net/eth0/statistics/rx_bytes; }

# tb_ping NS ADDR: three ICMP echo requests, success on the first reply (python3 raw
# socket, since iputils-ping is not among the dependencies).
tb_ping() {
  ip netns exec "$1" python3 - "$2" <<'EOF'
import os, socket, struct, sys, time
addr = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF

def checksum(b):
    total = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

for seq in range(3):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"tcpha-testbed..."
    s.sendto(body[:2] + struct.pack("!H", checksum(body)) + body[4:], (addr, 0))
    deadline = time.monotonic() + 1.0
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, src = s.recvfrom(2048)
        except socket.timeout:
            break
        ihl = (data[0] & 15) * 4
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if src[0] == addr and kind == 0 and rid == ident and rseq == seq:
            sys.exit(0)
sys.exit(1)
EOF
}
