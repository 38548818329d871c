#!/usr/bin/env bash
# The BE's control port before authentication (issue 11, item 3): 2,000 idle TCP
# connections to be1's control port, first from the client's namespace (not the FE's
# address: refused at once), then from the FE's namespace (the allowed address: capped
# and closed at the handshake deadline), while downloads through the VIP go on. be1
# runs with a small descriptor limit, so a BE that keeps the connections runs out of
# descriptors (and a level-triggered listener then spins). Checked: the connections do
# not stay open, be1 holds at most its pre-authentication cap of them, every download
# is byte-exact, no handoff fails, be1 stays up and its CPU time stays low.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3 ss prlimit
tb_require_tcpha

N=2000
PRE_AUTH_CAP=64  # be's kMaxPendingControl
NOFILE=1024      # be1's descriptor limit: fewer than the flood

tb_init 2
tb_key
for k in 1 2; do tb_docroot "$k"; done
tb_config
tb_spawn be1 "${TB_NS_BE[1]}" prlimit --nofile=$NOFILE:$NOFILE "$TB_TCPHA" be -c "$TB_CONFIG" \
  --id be1 --socket "$TB_DIR/be1.sock"
tb_start_be 2
tb_start_fe
tb_wait_ready

BE1=${TB_BE_ADDR[1]}
be1_pid=${TB_PID[be1]}  # ip netns exec and prlimit exec: the agent itself
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Established connections on be1's control port that be1 has accepted (those still in
# the listen backlog have no owner yet).
# Connections from the FE's address only: the other BE's link (multi-handoff) is not part of it.
be1_ctl_conns() { tb_be 1 ss -Htnp state established "( sport = :7400 and dst $TB_FE_ADDR )" | grep -c "pid=$be1_pid," || true; }

# flood NS SECONDS AGE: N connections to be1's control port from namespace NS, held
# for SECONDS; prints "connected C open O old_open P": O = still open at the end (the
# peer neither closed nor reset them), P = those of them whose first bytes from be1
# (its HELLO, sent when it accepts) came at least AGE seconds before the end. (In a
# burst the kernel completes some handshakes seconds late, after retransmissions, and
# the agent sees a connection only when it accepts it.)
flood() {
  ip netns exec "$1" python3 - "$BE1" 7400 "$N" "$2" "$3" <<'EOF'
import resource, select, socket, sys, time
addr, port, n, hold, age = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, n + 64))
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((addr, port))
    socks.append(s)
by_fd = {s.fileno(): i for i, s in enumerate(socks)}
end = time.monotonic() + hold
connected, heard = set(), {}  # heard: index -> when be1's first bytes arrived
p = select.poll()
for s in socks:
    p.register(s, select.POLLOUT)
while time.monotonic() < end:
    for fd, ev in p.poll(50):
        i = by_fd[fd]
        if i not in connected:
            if socks[i].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                p.unregister(fd)
                continue
            connected.add(i)
            p.modify(fd, select.POLLIN)
        elif ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            heard[i] = time.monotonic()
            p.unregister(fd)
now = time.monotonic()
open_ = old_open = 0
for i in connected:
    s = socks[i]
    alive = True
    while True:
        try:
            if not s.recv(65536):
                alive = False
                break
        except BlockingIOError:
            break
        except OSError:
            alive = False
            break
    open_ += alive
    old_open += alive and i in heard and now - heard[i] >= age
print("connected %d open %d old_open %d" % (len(connected), open_, old_open))
EOF
}

# Downloads through the VIP until the file $TB_DIR/stop appears; one line per result.
downloads() {
  local i=0
  while [[ ! -e $TB_DIR/stop ]] && ((i < 400)); do
    if tb_fetch f1m.bin "$TB_DIR/dl/$i" >/dev/null 2>>"$TB_DIR/dl.err"; then echo ok; else echo FAIL; fi
    rm -f "$TB_DIR/dl/$i"
    i=$((i + 1))
  done >"$TB_DIR/dl.results"
}

echo "== $N idle connections to $BE1:7400 from the client's namespace (not the FE's address)"
mkdir -p "$TB_DIR/dl"
downloads &
tb_track downloads $!
cpu0=$(cpu_ticks "$be1_pid")
t0=$(tb__now_ms)
res=$(flood "$TB_NS_C" 4 1)
echo "client namespace: $res after 4 s"
open=${res##* }
((open == 0)) || tb_fail "$open of the client's $N connections to the control port are still open 1 s after be1 took them (want 0: refused by source)"

echo "== $N idle connections from the FE's namespace (the allowed address)"
flood "$TB_NS_FE" 8 4 >"$TB_DIR/fe_flood" &
tb_track fe_flood $!
held_max=0
for _ in $(seq 1 35); do
  sleep 0.2
  c=$(be1_ctl_conns)
  ((c > held_max)) && held_max=$c
done
tb_wait fe_flood 30 || tb_fail "the flood from the FE's namespace failed"
res=$(<"$TB_DIR/fe_flood")
echo "FE namespace: $res after 8 s; be1 held at most $held_max control connections meanwhile"
open=${res##* }
((open == 0)) || tb_fail "$open of the FE namespace's $N idle connections are still open 4 s after be1 took them (want 0: handshake deadline)"
workers=$(tb_status_json fe | jq -e .workers)
((held_max <= PRE_AUTH_CAP + workers)) ||
  tb_fail "be1 held $held_max control connections at once (want <= $PRE_AUTH_CAP unauthenticated + $workers FE workers)"

touch "$TB_DIR/stop"
tb_wait downloads 60 || true
cpu1=$(cpu_ticks "$be1_pid")
t1=$(tb__now_ms)
hz=$(getconf CLK_TCK)
cpu_pct=$(((cpu1 - cpu0) * 1000 * 100 / hz / (t1 - t0)))
oks=$(grep -c '^ok$' "$TB_DIR/dl.results" || true)
fails=$(grep -c '^FAIL$' "$TB_DIR/dl.results" || true)
echo "downloads of f1m.bin through the VIP meanwhile: $oks byte-exact, $fails failed"
echo "be1 CPU: $cpu_pct% of one CPU over $((t1 - t0)) ms"
((fails == 0)) || tb_fail "$fails downloads failed during the floods: $(head -5 "$TB_DIR/dl.err")"
((oks >= 5)) || tb_fail "only $oks downloads completed during the floods"
((cpu_pct < 40)) || tb_fail "be1 used $cpu_pct% CPU during the floods (a spinning loop?)"
tb__alive be1 || tb_fail "be1 exited"
[[ $(tb_fe_backend be1) == up ]] || tb_fail "the FE lists be1 '$(tb_fe_backend be1)' after the floods, want up"
js=$(tb_status_json fe)
jq -e '.handoffs.failed == 0' <<<"$js" >/dev/null || tb_fail "failed handoffs: $(jq -c .handoffs <<<"$js")"
be=$(tb_status_json be1)
echo "be1: control_links $(jq -c .control_links <<<"$be"), counters $(jq -c '.counters | with_entries(select(.key | startswith("ctl_")))' <<<"$be")"
jq -e --argjson w "$workers" '.control_links == $w' <<<"$be" >/dev/null ||
  tb_fail "be1 counts $(jq .control_links <<<"$be") control links, want the FE's $workers"
echo "PASS: control_plane"
