#!/usr/bin/env bash
# Tests the test bed (scripts/testbed.sh) itself, without the tcpha daemons: topology,
# reachability, generated docroots and config, an HTTP server in a BE namespace, the
# VIP path of tb_curl/tb_fetch, and that cleanup leaves no namespace or process behind
# after a normal exit, a failure and a SIGINT.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq python3 sha256sum awk

# A child run of the bed (this script again, TB_SELFTEST_CHILD=clean|fail|interrupt):
# builds a bed, starts an HTTP server and an idle client process, records what it
# created in $TB_SELFTEST_STATE, then exits 0, exits 3, or waits for SIGINT.
child_main() {
  local state=$TB_SELFTEST_STATE name i
  tb_init 2
  tb_docroot 1
  tb_spawn web "${TB_NS_BE[1]}" python3 -m http.server 80 --bind "${TB_BE_ADDR[1]}" \
    --directory "$TB_DIR/www/be1"
  tb_spawn idle "$TB_NS_C" sleep 300
  for ((i = 0; i < 100; i++)); do
    tb_c curl -sf --noproxy '*' --max-time 1 -o /dev/null "http://${TB_BE_ADDR[1]}/whoami.txt" && break
    sleep 0.05
  done
  {
    echo "id $TB_ID"
    echo "dir $TB_DIR"
    for name in "${!TB_PID[@]}"; do echo "pid $name ${TB_PID[$name]} ${TB_PID_START[$name]}"; done
  } >"$state.tmp"
  mv "$state.tmp" "$state"
  case $TB_SELFTEST_CHILD in
    clean) exit 0 ;;
    fail) exit 3 ;;
    interrupt)
      for ((i = 0; i < 300; i++)); do sleep 0.1; done
      exit 4 # SIGINT never came
      ;;
  esac
}
if [[ -n ${TB_SELFTEST_CHILD:-} ]]; then
  child_main
  exit 0
fi

# check_child_cleaned STATE: nothing the child created survives it.
check_child_cleaned() {
  local state=$1 id dir kind name pid start s
  id=$(awk '$1 == "id" { print $2 }' "$state")
  dir=$(awk '$1 == "dir" { print $2 }' "$state")
  [[ -n $id ]] || tb_fail "child state file has no run id"
  if grep -q "^tcpha$id-" <<<"$(ip netns list)"; then
    tb_fail "namespaces of child run $id left behind: $(ip netns list | grep "^tcpha$id-" | tr '\n' ' ')"
  fi
  [[ ! -e $dir ]] || tb_fail "child's TB_DIR $dir left behind"
  while read -r kind name pid start; do
    [[ $kind == pid ]] || continue
    if s=$(tb__proc_stat "$pid") && [[ ${s%% *} != Z && ${s#* } == "$start" ]]; then
      tb_fail "child's process $name (pid $pid) still alive"
    fi
  done <"$state"
}

echo "== topology"
host_links_before=$(ip -o link show | awk '{ print $2 }' | sort)
tb_init 3
host_links_after=$(ip -o link show | awk '{ print $2 }' | sort)
[[ $host_links_before == "$host_links_after" ]] || tb_fail "tb_init changed the host's interfaces"
for ns in "$TB_NS_SW" "$TB_NS_C" "$TB_NS_FE" "${TB_NS_BE[@]:1}"; do
  grep -q "^$ns\b" <<<"$(ip netns list)" || tb_fail "namespace $ns missing"
done
check_addr() { # NS ADDR: eth0 up with exactly ADDR, lo up, no VIP anywhere
  local got
  got=$(ip -n "$1" -o -4 addr show dev eth0 | awk '{ print $4 }')
  [[ $got == "$2/24" ]] || tb_fail "$1 eth0 has '$got', want $2/24"
  grep -q 'state UP' <<<"$(ip -n "$1" link show dev eth0)" || tb_fail "$1 eth0 is not up"
  grep -q '<LOOPBACK,UP' <<<"$(ip -n "$1" link show dev lo)" || tb_fail "$1 lo is not up"
  ! grep -q "$TB_VIP/" <<<"$(ip -n "$1" -o addr show)" || tb_fail "$1 has the VIP (the daemons add it)"
}
check_addr "$TB_NS_C" "$TB_C_ADDR"
check_addr "$TB_NS_FE" "$TB_FE_ADDR"
for k in 1 2 3; do check_addr "${TB_NS_BE[k]}" "${TB_BE_ADDR[k]}"; done
[[ $(ip -n "$TB_NS_SW" -o link show master br0 | wc -l) == 5 ]] || tb_fail "br0 should have 5 ports"

echo "== reachability"
for addr in "$TB_FE_ADDR" "${TB_BE_ADDR[@]:1}"; do
  tb_ping "$TB_NS_C" "$addr" || tb_fail "client cannot ping $addr"
done
! tb_ping "$TB_NS_C" "$TB_SUBNET.99" || tb_fail "ping of an unused address succeeded"

echo "== docroots"
for k in 1 2 3; do tb_docroot "$k"; done
for f in index.html "${TB_FILES[@]}"; do
  [[ -n ${TB_SHA[$f]:-} ]] || tb_fail "no expected sha256 for $f"
  for k in 1 2 3; do
    sum=$(sha256sum <"$TB_DIR/www/be$k/$f")
    [[ ${sum%% *} == "${TB_SHA[$f]}" ]] || tb_fail "be$k/$f differs from the expected content"
  done
  [[ $f == index.html || $(stat -c %s "$TB_DIR/www/be1/$f") == "${TB_SIZE[$f]}" ]] ||
    tb_fail "$f has the wrong size"
done
[[ $(<"$TB_DIR/www/be2/whoami.txt") == be2 ]] || tb_fail "whoami.txt of be2 is wrong"
# Deterministic: the same generator gives the same bytes in a later run.
sum=$(tb__gen f1m.bin 1048576 | sha256sum)
[[ ${sum%% *} == "${TB_SHA[f1m.bin]}" ]] || tb_fail "docroot content is not deterministic"

echo "== config"
tb_key
[[ $(stat -c '%s %a' "$TB_DIR/cluster.key") == "32 600" ]] || tb_fail "cluster.key is not 32 bytes, mode 600"
tb_config $'[[rule]]\nname = "images"\npath = \'\\.png$\'\ngroup = "all"\npolicy = "hash"'
python3 - "$TB_DIR/cluster.toml" "$TB_DIR" <<'EOF' || tb_fail "cluster.toml is not what the bed promises"
import sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
d = sys.argv[2]
c, fe, bes, rules = cfg["cluster"], cfg["frontend"], cfg["backend"], cfg["rule"]
assert c == {"vip": "10.200.0.10", "ports": [80], "key_file": "cluster.key", "forward": "dr"}, c
assert fe == {"id": "fe", "address": "10.200.0.1", "interface": "eth0", "stop_timeout_s": 2}, fe
assert [b["id"] for b in bes] == ["be1", "be2", "be3"], bes
for k, b in enumerate(bes, 1):
    assert b["address"] == f"10.200.0.{10 + k}" and b["groups"] == ["all"], b
    assert b["docroot"] == f"{d}/www/be{k}", b
assert [r.get("name") for r in rules] == ["images", "default"], rules
assert rules[1] == {"name": "default", "group": "all", "policy": "round-robin"}, rules
EOF

echo "== HTTP server in a BE namespace"
tb_spawn web "${TB_NS_BE[2]}" python3 -m http.server 80 --bind 0.0.0.0 \
  --directory "$TB_DIR/www/be2"
url=http://${TB_BE_ADDR[2]}
for ((i = 0; i < 100; i++)); do
  tb_c curl -sf --noproxy '*' --max-time 1 -o /dev/null "$url/whoami.txt" && break
  tb__alive web || tb_fail "http.server exited"
  sleep 0.05
done
be_tx0=$(tb_iface_tx_bytes "${TB_NS_BE[2]}")
c_rx0=$(tb_iface_rx_bytes "$TB_NS_C")
total=0
for f in index.html "${TB_FILES[@]}"; do
  sum=$(tb_c curl -sS --noproxy '*' --max-time 10 -f "$url/$f" | sha256sum)
  [[ ${sum%% *} == "${TB_SHA[$f]}" ]] || tb_fail "$f from the BE is not byte-exact"
  total=$((total + $(stat -c %s "$TB_DIR/www/be2/$f")))
done
[[ $(tb_c curl -sS --noproxy '*' --max-time 5 "$url/whoami.txt") == be2 ]] || tb_fail "wrong whoami"
be_tx=$(($(tb_iface_tx_bytes "${TB_NS_BE[2]}") - be_tx0))
c_rx=$(($(tb_iface_rx_bytes "$TB_NS_C") - c_rx0))
echo "downloaded $total bytes; BE eth0 sent $be_tx, client eth0 received $c_rx"
((be_tx >= total && c_rx >= total)) || tb_fail "interface byte counters do not account for the transfer"

echo "== tb_curl / tb_fetch through the VIP (VIP borrowed by be2 for this check)"
ip -n "${TB_NS_BE[2]}" addr add "$TB_VIP/32" dev eth0
n=$(tb_fetch f1m.bin) || tb_fail "tb_fetch f1m.bin"
[[ $n == 1048576 ]] || tb_fail "tb_fetch reported $n bytes"
[[ $(tb_curl whoami.txt) == be2 ]] || tb_fail "tb_curl whoami.txt"
mkdir "$TB_DIR/www/be2/bad"
tb__gen other 1024 >"$TB_DIR/www/be2/bad/f1k.bin"
! tb_fetch bad/f1k.bin 2>/dev/null || tb_fail "tb_fetch accepted corrupted content"
! tb_fetch missing.bin 2>/dev/null || tb_fail "tb_fetch accepted a 404"
ip -n "${TB_NS_BE[2]}" addr del "$TB_VIP/32" dev eth0
web_pid=${TB_PID[web]}
tb_stop web || true
[[ ! -e /proc/$web_pid ]] || [[ $(tb__proc_stat "$web_pid") == Z* ]] || tb_fail "tb_stop left http.server running"

echo "== cleanup of a child bed: normal exit, failure, SIGINT"
for mode in clean fail; do
  state=$TB_DIR/child-$mode.state
  rc=0
  TB_KEEP_LOGS=0 TB_SELFTEST_CHILD=$mode TB_SELFTEST_STATE=$state timeout 60 "$BASH" "$0" \
    >"$TB_DIR/child-$mode.out" 2>&1 || rc=$?
  [[ -f $state ]] || tb_fail "child ($mode) did not get far: $(cat "$TB_DIR/child-$mode.out")"
  want=0
  [[ $mode == fail ]] && want=3
  ((rc == want)) || tb_fail "child ($mode) exited $rc, want $want"
  check_child_cleaned "$state"
  if [[ $mode == fail ]]; then
    grep -q '==== log of web' "$TB_DIR/child-$mode.out" || tb_fail "failed child did not print logs"
  else
    ! grep -q '==== log of' "$TB_DIR/child-$mode.out" || tb_fail "clean child printed logs"
  fi
done

state=$TB_DIR/child-interrupt.state
# Job control gives the child its own process group, where SIGINT is not ignored
# (bash ignores it in background jobs otherwise), as for a Ctrl-C in a terminal.
set -m
TB_KEEP_LOGS=0 TB_SELFTEST_CHILD=interrupt TB_SELFTEST_STATE=$state "$BASH" "$0" >"$TB_DIR/child-int.out" 2>&1 &
child=$!
set +m
tb_track child "$child"
for ((i = 0; i < 400; i++)); do [[ ! -f $state ]] || break; sleep 0.05; done
[[ -f $state ]] || tb_fail "interrupt child did not start: $(cat "$TB_DIR/child-int.out")"
kill -INT "$child"
rc=0
tb_wait child 15 || rc=$?
((rc == 130)) || tb_fail "interrupted child exited $rc, want 130: $(cat "$TB_DIR/child-int.out")"
check_child_cleaned "$state"
grep -q '==== log of web' "$TB_DIR/child-int.out" || tb_fail "interrupted child did not print logs"

echo "PASS: testbed"
