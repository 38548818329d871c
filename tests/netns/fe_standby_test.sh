#!/usr/bin/env bash
# Hot-standby front-end (issue 14): the active FE ([frontend] "fe", 10.200.0.1) and a
# standby ([[standby]] "fe2", 10.200.0.3, `tcpha fe --id fe2`) in their own namespaces
# on the bed's bridge, both with the same cluster file; the standby receives the flow
# table and does not hold the VIP. During 10 slow 12 MB downloads (rate-limited, client
# receive buffer shrunk, so that they really stream from their BEs) the active FE's
# host fails: its link goes down, then the process is SIGKILLed. The standby must take
# the VIP and serve a new request within 1 s of the failure (measured and printed),
# and all 10 downloads finish byte-exact (it had their flows). The old FE then comes
# back as after a reboot (no VIP, no tc filter, link up, same command line): it must
# stay standby and leave the VIP alone while the other keeps serving. Exactly one MAC
# (the active FE's) answers ARP for the VIP before the failure, after it and after the
# return. A SIGTERM to each FE exits 0 and leaves no tc filter and no VIP behind.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum tc python3
tb_require_tcpha
N_DL=10
RATE=1200k        # per download: 12 MB in ~10 s
TAKEOVER_MS=1000  # failure -> first new request served by the standby

tb_init 2
tb_add_fe2
tb_key
for k in 1 2; do tb_docroot "$k"; done
head -c 12000000 /dev/urandom >"$TB_DIR/www/.common/f12m.bin"
for k in 1 2; do ln -f "$TB_DIR/www/.common/f12m.bin" "$TB_DIR/www/be$k/f12m.bin"; done
sum=$(sha256sum <"$TB_DIR/www/.common/f12m.bin")
TB_SHA[f12m.bin]=${sum%% *}
tb_config "$(printf '[[standby]]\nid = "fe2"\naddress = "%s"\ninterface = "eth0"\n' "$TB_FE2_ADDR")"
# A clear message when the cluster file itself is refused (before the standby exists).
if ! out=$("$TB_TCPHA" check -c "$TB_CONFIG" 2>&1); then
  echo "$out" >&2
  tb_fail "tcpha check refuses the cluster file with a [[standby]] table (above); $TB_CONFIG:"$'\n'"$(cat "$TB_CONFIG")"
fi
FE_MAC=$(tb_fe cat /sys/class/net/eth0/address)
FE2_MAC=$(tb_fe2 cat /sys/class/net/eth0/address)

be_active() { tb_status_json "be$1" | jq -e .active; }
active_at_least() {
  local a b
  a=$(be_active 1) && b=$(be_active 2) || return 1
  ((a + b >= $1))
}
# Conditions for tb_until: a status that does not answer (or lacks the field) is
# false, never an arithmetic error.
sb_state() { tb_status_json "$1" | jq -er '.standby.state'; }
state_is() { [[ $(sb_state "$1") == "$2" ]]; }
replicated_at_least() {
  local v
  v=$(tb_status_json fe2 | jq -e '.standby.replicated_flows // 0') || return 1
  ((v >= $1))
}
# The whole .standby object of NAME's status, for the log.
sb_show() { tb_status_json "$1" 2>&1 | jq -c '{role, standby}' 2>&1 || true; }
# VIP_IN NS [DEV]: the VIP is on DEV (default: any interface) in NS.
vip_in() { [[ $(ip -n "$1" -o -4 addr show ${2:+dev "$2"}) == *" $TB_VIP/"* ]]; }
filters_in() { tc -n "$1" filter show dev eth0 ingress 2>/dev/null || true; }
# wait_states TIMEOUT_MS NAME=STATE...: until every NAME reports STATE; fails the run
# when one of the FEs exits meanwhile.
wait_states() {
  local limit=$1 t0 pair name ok
  shift
  t0=$(tb__now_ms)
  while :; do
    ok=1
    for pair in "$@"; do
      name=${pair%%=*}
      if ! tb__alive "$name"; then
        tb_wait "$name" 1 || true
        tb_fail "$name exited with status ${TB_EXIT[$name]} while waiting for .standby.state ($*): ${TB_CMD[$name]}"
      fi
      state_is "$name" "${pair#*=}" 2>/dev/null || ok=0
    done
    ((ok)) && return 0
    (($(tb__now_ms) - t0 < limit)) || return 1
    sleep 0.05
  done
}

# ARP responders for the VIP seen from the client: 3 broadcast who-has VIP (100 ms
# apart), replies addressed to the client collected for 1 s after the last one. One
# line per distinct responder: "MAC COUNT". (A python3 raw socket: iputils-arping is
# not among the dependencies.)
cat >"$TB_DIR/arp_probe.py" <<'EOF'
import socket, struct, sys, time
ifname, vip, me = sys.argv[1], socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
ETH_P_ARP = 0x0806
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
s.bind((ifname, ETH_P_ARP))
mac = s.getsockname()[4]
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, me, b"\0" * 6, vip)
frame = (b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + arp).ljust(60, b"\0")
seen = {}
def collect(until):
    while (left := until - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            return
        if addr[2] == socket.PACKET_OUTGOING or len(data) < 42:
            continue
        _, _, _, _, op, sha, spa, _, tpa = struct.unpack("!HHBBH6s4s6s4s", data[14:42])
        if op == 2 and spa == vip and tpa == me:  # not gratuitous ones (tpa == vip)
            m = ":".join("%02x" % b for b in sha)
            seen[m] = seen.get(m, 0) + 1
for i in range(3):
    s.send(frame)
    collect(time.monotonic() + (0.1 if i < 2 else 1.0))
for m, n in sorted(seen.items()):
    print(m, n)
EOF
# check_arp WHEN WANT_MAC: exactly one responder, WANT_MAC.
check_arp() {
  local out macs
  out=$(tb_c python3 "$TB_DIR/arp_probe.py" eth0 "$TB_VIP" "$TB_C_ADDR" 2>&1) || {
    tb_problem "$1: the ARP probe failed: $out"
    return 0
  }
  macs=$(awk '{print $1}' <<<"$out" | paste -sd' ')
  echo "$1: ARP replies for $TB_VIP from: ${out//$'\n'/, } (FE $FE_MAC, standby $FE2_MAC)"
  [[ $macs == "$2" ]] || tb_problem "$1: ARP for the VIP answered by [${macs}], want exactly [$2]"
}

# New requests from the client once a go-file exists: a new connection (GET /f1k.bin,
# status and sha256 checked, 1 s allowed, like curl --max-time 1) every 50 ms, up to
# 5 s, in parallel so that one lost SYN (retried by TCP only after 1 s) does not hide
# the moment the VIP works again. Prints "ok START_UNIX_MS END_UNIX_MS ATTEMPTS" for
# the first success, or "none ATTEMPTS LAST_ERROR".
cat >"$TB_DIR/probe.py" <<'EOF'
import hashlib, os, socket, sys, threading, time
vip, want_sha, go = sys.argv[1], sys.argv[2], sys.argv[3]
req = b"GET /f1k.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
open(go + ".ready", "w").close()  # started: the test fails the FE only now
t_wait = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < t_wait:
    time.sleep(0.002)
lock, done, errors = threading.Lock(), [], []
def one():
    start = time.time()
    deadline = time.monotonic() + 1.0
    def left():
        r = deadline - time.monotonic()
        if r <= 0:
            raise TimeoutError("1 s passed")
        return r
    try:
        with socket.create_connection((vip, 80), timeout=left()) as s:
            s.settimeout(left())
            s.sendall(req)
            buf = b""
            while True:
                s.settimeout(left())
                d = s.recv(65536)
                if not d:
                    break
                buf += d
        head, _, body = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError("status %r" % head[:40])
        if hashlib.sha256(body).hexdigest() != want_sha:
            raise RuntimeError("body differs (%d bytes)" % len(body))
        with lock:
            done.append((start, time.time()))
    except Exception as e:
        with lock:
            errors.append("%s: %s" % (type(e).__name__, e))
threads = []
t_end = time.monotonic() + 5.0
while time.monotonic() < t_end:
    with lock:
        if done:
            break
    t = threading.Thread(target=one)
    t.start()
    threads.append(t)
    time.sleep(0.05)
for t in threads:
    t.join()
if done:
    start, end = min(done, key=lambda d: d[1])
    print("ok %d %d %d" % (start * 1000, end * 1000, len(threads)))
else:
    print("none %d %s" % (len(threads), errors[-1] if errors else "-"))
EOF

echo "== BEs, the active FE, then the standby"
for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready
tb_start_fe2
if ! wait_states 10000 fe=active fe2=standby; then
  echo "fe: $(sb_show fe)" >&2
  echo "fe2: $(sb_show fe2)" >&2
  tb_fail "within 10 s the FE did not report .standby.state \"active\" and the standby \"standby\""
fi
echo "fe:  $(sb_show fe)"
echo "fe2: $(sb_show fe2)"
! vip_in "$TB_NS_FE2" || tb_problem "the standby holds the VIP while the FE is active"
check_arp "before the failure" "$FE_MAC"
tb_small_buffers

echo "== $N_DL downloads of 12 MB at $RATE each"
tb_downloads_start "$N_DL" "$RATE" f12m.bin
tb_until 3000 active_at_least "$N_DL" ||
  tb_fail "the downloads did not all reach a BE within 3 s (be1 $(be_active 1), be2 $(be_active 2))"
if tb_until 3000 replicated_at_least "$N_DL"; then
  echo "the standby has >= $N_DL replicated flows ${TB_UNTIL_MS} ms after the downloads reached their BEs"
else
  tb_problem "the standby's .standby.replicated_flows is $(tb_status_json fe2 | jq -c .standby.replicated_flows) 3 s after $N_DL downloads reached their BEs, want >= $N_DL"
fi
echo "fe2: $(sb_show fe2)"
for ((i = 0; i < N_DL; i++)); do
  tb__alive "dl$i" || tb_fail "download $i ended before the FE failed (it must span the failure)"
done

echo "== the active FE's host fails: link down, SIGKILL (pid ${TB_PID[fe]})"
rm -f "$TB_DIR/probe.go" "$TB_DIR/probe.go.ready"
tb_spawn --log "$TB_DIR/probe.out" probe "$TB_NS_C" python3 "$TB_DIR/probe.py" "$TB_VIP" \
  "${TB_SHA[f1k.bin]}" "$TB_DIR/probe.go"
# The prober is up and waiting for the go-file: on a loaded machine python can take
# over a second to start, which would count against the takeover otherwise.
for ((t = 0; t < 200; t++)); do
  [[ -e $TB_DIR/probe.go.ready ]] && break
  sleep 0.05
done
[[ -e $TB_DIR/probe.go.ready ]] || tb_fail "the request prober did not start within 10 s"
t_down0=$(tb__now_ms)
ip -n "$TB_NS_FE" link set eth0 down
t_fail=$(tb__now_ms) # the link is down from here at the latest
kill -KILL "${TB_PID[fe]}"
touch "$TB_DIR/probe.go"
tb__reap fe || true
# Keep the killed FE's log: its return rewrites fe.log.
cp "$TB_DIR/fe.log" "$TB_DIR/fe-killed.log"
TB_LOGS+=("fe-killed=$TB_DIR/fe-killed.log")
tb_wait probe 15 || true
res=$(tail -n 1 "$TB_DIR/probe.out")
read -r verdict a b c <<<"$res"
if [[ $verdict == ok ]]; then
  gap=$((b - t_fail))
  echo "first new request served $gap ms after the link went down (started $((a - t_fail)) ms after," \
    "$c attempts in all; \`ip link set down\` took $((t_fail - t_down0)) ms)"
  ((gap <= TAKEOVER_MS)) || tb_problem "the first new request was served $gap ms after the failure, want <= $TAKEOVER_MS"
else
  tb_problem "no new request was served within 5 s of the failure ($res)"
fi
if tb_until 2000 state_is fe2 active; then
  echo "fe2: $(sb_show fe2)"
else
  tb_problem "the standby's .standby.state is $(sb_state fe2 2>&1 || true) after the failure, want \"active\""
fi
echo "addresses in the standby's namespace: $(ip -n "$TB_NS_FE2" -o -4 addr show | awk '{print $2, $4}' | paste -sd' ')"
check_arp "after the failure" "$FE2_MAC"

echo "== the downloads complete"
tb_downloads_ok "$N_DL" f12m.bin 12000000
ok=$TB_DL_OK
echo "$ok of $N_DL downloads byte-exact across the active FE's host failure"
((ok == N_DL)) || tb_problem "$((N_DL - ok)) of $N_DL downloads failed across the failover"

echo "== the old FE returns (as after a reboot) and must stay standby"
# The VIP as the killed FE left it, whatever its prefix length.
while read -r _ _ _ addr _; do
  if [[ ${addr%/*} == "$TB_VIP" ]]; then ip -n "$TB_NS_FE" addr del "$addr" dev eth0 2>/dev/null || true; fi
done < <(ip -n "$TB_NS_FE" -o -4 addr show dev eth0)
tc -n "$TB_NS_FE" filter del dev eth0 ingress 2>/dev/null || true
tc -n "$TB_NS_FE" qdisc del dev eth0 clsact 2>/dev/null || true
! vip_in "$TB_NS_FE" eth0 || tb_fail "could not remove the VIP from the old FE's eth0"
ip -n "$TB_NS_FE" link set eth0 up
tb_start_fe # the same command line as before
# Sampled all along: the returning FE must never hold the VIP.
vip_seen=0
t0=$(tb__now_ms)
back=0
while (($(tb__now_ms) - t0 < 5000)); do
  vip_in "$TB_NS_FE" eth0 && vip_seen=1
  tb__alive fe || break
  if state_is fe standby 2>/dev/null; then
    back=1
    break
  fi
  sleep 0.05
done
if ! tb__alive fe; then
  tb_wait fe 1 || true
  tb_problem "the returning FE exited with status ${TB_EXIT[fe]}"
elif ((back)); then
  echo "the returning FE reports standby after $(($(tb__now_ms) - t0)) ms: $(sb_show fe)"
else
  tb_problem "the returning FE's .standby.state is $(sb_state fe 2>&1 || true) 5 s after its start, want \"standby\""
fi
for ((i = 0; i < 20; i++)); do # 1 s more of samples
  vip_in "$TB_NS_FE" eth0 && vip_seen=1
  sleep 0.05
done
((vip_seen == 0)) || tb_problem "the returning FE put the VIP on its eth0 while the standby was active"
state_is fe2 active 2>/dev/null ||
  tb_problem "after the old FE's return the standby-turned-active reports .standby.state $(sb_state fe2 2>&1 || true), want \"active\""
echo "fe2: $(sb_show fe2)"
ok_new=0
for ((i = 0; i < 5; i++)); do
  if tb_fetch f10k.bin "$TB_DIR/dl/new$i" >/dev/null; then
    ok_new=$((ok_new + 1))
  else
    echo "new request $i failed"
  fi
done
echo "$ok_new of 5 new requests served after the old FE's return"
((ok_new == 5)) || tb_problem "$((5 - ok_new)) of 5 new requests after the old FE's return failed"
check_arp "after the old FE's return" "$FE2_MAC"

echo "== clean stop: the standby (the old FE), then the active one (fe2)"
for name in fe fe2; do
  [[ -n ${TB_PID[$name]:-} ]] || continue
  rc=0
  tb_stop "$name" 10 || rc=$?
  ((rc == 0)) || tb_problem "$name exited with status $rc after SIGTERM, want 0"
done
for ns in "$TB_NS_FE" "$TB_NS_FE2"; do
  f=$(filters_in "$ns")
  [[ -z $f ]] || tb_problem "tc ingress filters left on eth0 in $ns after the clean stop: $f"
  ! vip_in "$ns" || tb_problem "the VIP is left in $ns after the clean stop"
  left=$(ip netns pids "$ns")
  [[ -z $left ]] || tb_problem "processes left in $ns: $left"
done

tb_problems_fail
echo "PASS: fe_standby ($N_DL of $N_DL downloads byte-exact across the active FE's host failure; first new request ${gap} ms after it)"
