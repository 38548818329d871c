#!/usr/bin/env bash
# FE upgrade without loss (issue 14): `tcpha fe -c F --takeover`, started beside the
# running FE with the same cluster file and status socket, takes over its listening
# sockets, its datapath and its status socket; the old FE finishes what it has in
# progress and exits 0 on its own. Checked while a client makes back-to-back new
# connections (one request each, hundreds in all, 3 s timeout each): not one fails;
# 4 slow 12 MB downloads (rate-limited, client receive buffer shrunk) running across
# the takeover finish byte-exact; afterwards the status socket answers from the new
# process and new requests are served; a SIGTERM to the new FE exits 0 and leaves no
# tc filter and no VIP on the FE's eth0.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum tc python3
tb_require_tcpha
N_DL=4
RATE=1600k      # per download: 12 MB in ~7 s
MIN_BEFORE=100  # requests of the loop before the takeover starts
MIN_AFTER=150   # and after the old FE has exited
MIN_TOTAL=300

tb_init 2
tb_key
for k in 1 2; do tb_docroot "$k"; done
head -c 12000000 /dev/urandom >"$TB_DIR/www/.common/f12m.bin"
for k in 1 2; do ln -f "$TB_DIR/www/.common/f12m.bin" "$TB_DIR/www/be$k/f12m.bin"; done
sum=$(sha256sum <"$TB_DIR/www/.common/f12m.bin")
TB_SHA[f12m.bin]=${sum%% *}
tb_config
for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready
tb_small_buffers
# Thousands of connections from one address in a few seconds: room for them all.
tb_c sysctl -qw net.ipv4.ip_local_port_range="10000 65000"

be_active() { tb_status_json "be$1" | jq -e .active; }
active_at_least() {
  local a b
  a=$(be_active 1) && b=$(be_active 2) || return 1
  ((a + b >= $1))
}
has_vip() { [[ $(ip -n "$TB_NS_FE" -o -4 addr show dev eth0) == *" $TB_VIP/"* ]]; }
loop_count() { grep -c . "$TB_DIR/loop.out" 2>/dev/null || true; }
loop_at_least() { (($(loop_count) >= $1)); }

# Back-to-back new connections, one GET /f1k.bin each (checked: status 200, the body's
# sha256). One line per request: "N START_UNIX_MS MS ok" or "N START_UNIX_MS MS FAIL why".
# Ends when STOP_FILE exists, after MAX_N requests or after MAX_S seconds (bounds
# that also keep it within the client's ephemeral ports).
cat >"$TB_DIR/loop.py" <<'EOF'
import hashlib, os, socket, sys, time
vip, want_sha, stop_file = sys.argv[1], sys.argv[2], sys.argv[3]
max_n, max_s = int(sys.argv[4]), float(sys.argv[5])
req = b"GET /f1k.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

def one():
    with socket.create_connection((vip, 80), timeout=3) as s:
        s.settimeout(3)
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise RuntimeError("closed before the response head (%d bytes)" % len(buf))
            buf += d
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200 "):
            raise RuntimeError("status line %r" % lines[0])
        n = [int(l.split(b":", 1)[1]) for l in lines[1:] if l.lower().startswith(b"content-length:")]
        if not n:
            raise RuntimeError("no Content-Length")
        while len(body) < n[0]:
            d = s.recv(65536)
            if not d:
                raise RuntimeError("closed after %d of %d body bytes" % (len(body), n[0]))
            body += d
        if hashlib.sha256(body[: n[0]]).hexdigest() != want_sha:
            raise RuntimeError("body differs")

t_end = time.monotonic() + max_s
i = 0
while i < max_n and time.monotonic() < t_end and not os.path.exists(stop_file):
    i += 1
    start, t0 = time.time(), time.monotonic()
    try:
        one()
        res = "ok"
    except Exception as e:  # every failure is counted and described, none ends the loop
        res = "FAIL %s: %s" % (type(e).__name__, e)
    print("%d %d %.1f %s" % (i, start * 1000, (time.monotonic() - t0) * 1000, res), flush=True)
EOF

echo "== client loop of new connections, $N_DL downloads of 12 MB at $RATE each"
tb_spawn --log "$TB_DIR/loop.out" loop "$TB_NS_C" python3 "$TB_DIR/loop.py" "$TB_VIP" \
  "${TB_SHA[f1k.bin]}" "$TB_DIR/loop.stop" 20000 40
tb_downloads_start "$N_DL" "$RATE" f12m.bin
tb_until 3000 active_at_least "$N_DL" ||
  tb_fail "the downloads did not all reach a BE within 3 s (be1 $(be_active 1), be2 $(be_active 2))"
tb_until 10000 loop_at_least "$MIN_BEFORE" ||
  tb_fail "the client loop made $(loop_count) requests in 10 s, want $MIN_BEFORE before the takeover"
sleep 1
for ((i = 0; i < N_DL; i++)); do
  tb__alive "dl$i" || tb_fail "download $i ended before the takeover (it must span it)"
done
old_pid=${TB_PID[fe]}
echo "before: $(loop_count) requests made; old FE pid $old_pid (status pid $(tb_status_json fe | jq -c .pid))"

echo "== tcpha fe --takeover"
t_take=$(tb__now_ms)
tb_spawn fenew "$TB_NS_FE" "$TB_TCPHA" fe -c "$TB_DIR/cluster.toml" --socket "$TB_DIR/fe.sock" --takeover
new_pid=${TB_PID[fenew]}
# The old FE must exit on its own (status 0) within 10 s; the new one must keep running.
t0=$(tb__now_ms)
while tb__alive fe && (($(tb__now_ms) - t0 < 10000)); do
  if ! tb__alive fenew; then
    rc=0
    tb_wait fenew 1 || rc=$?
    tb_fail "'tcpha fe --takeover' exited with status $rc after $(($(tb__now_ms) - t_take)) ms while" \
      "the old FE still ran (the takeover was not done; its output:" \
      "$(head -c 600 "$TB_DIR/fenew.log" | tr '\n' ' '))"
  fi
  sleep 0.05
done
tb__alive fe && tb_fail "the old FE (pid $old_pid) still runs 10 s after 'tcpha fe --takeover' started" \
  "(it must hand everything over and exit 0 on its own)"
t_exit=$(tb__now_ms)
rc=0
tb_wait fe 1 || rc=$?
((rc == 0)) || tb_fail "the old FE exited with status $rc after the takeover, want 0"
tb__alive fenew || tb_fail "the new FE is gone too after the takeover"
echo "the old FE exited 0 $((t_exit - t_take)) ms after the takeover started; $(loop_count) requests made"

echo "== after the takeover"
js=$(tb_status_json fe) || tb_fail "the status socket does not answer after the takeover"
jq -e '.role == "fe"' <<<"$js" >/dev/null || tb_fail "the status socket answers something else: $js"
st_pid=$(jq -r '.pid // empty' <<<"$js")
if [[ -n $st_pid ]]; then
  [[ $st_pid == "$new_pid" ]] || tb_fail "status answers from pid $st_pid, want the new FE's $new_pid"
  echo "status answers from the new FE (pid $st_pid)"
else
  [[ ! -e /proc/$old_pid ]] || tb_fail "the old FE (pid $old_pid) is still there"
  echo "status has no pid field: the old FE (pid $old_pid) is gone and status answers"
fi
ok_new=0
for ((i = 0; i < 5; i++)); do
  if tb_fetch f10k.bin "$TB_DIR/dl/new$i" >/dev/null; then ok_new=$((ok_new + 1)); fi
done
echo "$ok_new of 5 new requests served by the new FE"
((ok_new == 5)) || tb_problem "$((5 - ok_new)) of 5 new requests failed after the takeover"

# The loop goes on for a while after the old FE's exit, then stops.
n_exit=$(loop_count)
tb_until 15000 loop_at_least $((n_exit + MIN_AFTER)) ||
  echo "the loop made only $(($(loop_count) - n_exit)) requests in 15 s after the old FE's exit"
touch "$TB_DIR/loop.stop"
rc=0
tb_wait loop 10 || rc=$?
((rc == 0)) || tb_fail "the client loop exited with status $rc: $(tail -5 "$TB_DIR/loop.out")"

echo "== the client loop"
read -r total failed worst before during after < <(awk -v a="$t_take" -v b="$t_exit" '
  { n++; if ($4 != "ok") f++; if ($3 > w) w = $3
    if ($2 < a) pre++; else if ($2 <= b) mid++; else post++ }
  END { printf "%d %d %.1f %d %d %d\n", n, f, w, pre, mid, post }' "$TB_DIR/loop.out")
echo "$total requests, $failed failed, slowest $worst ms; started before the takeover $before," \
  "during it $during, after the old FE's exit $after"
during_worst=$(awk -v a="$t_take" -v b="$t_exit" '$2 + $3 >= a && $2 <= b && $3 > w { w = $3 } END { printf "%.1f", w }' \
  "$TB_DIR/loop.out")
echo "slowest request overlapping the takeover (the takeover gap seen by a client): $during_worst ms"
if ((failed)); then
  grep -v ' ok$' "$TB_DIR/loop.out" | head -10 >&2
  tb_problem "$failed of $total new connections failed across the takeover"
fi
((total >= MIN_TOTAL)) || tb_problem "the loop made $total requests, want at least $MIN_TOTAL"
((after >= 1)) || tb_problem "no request of the loop started after the old FE's exit"

echo "== the downloads complete"
tb_downloads_ok "$N_DL" f12m.bin 12000000
ok=$TB_DL_OK
echo "$ok of $N_DL downloads byte-exact across the takeover"
((ok == N_DL)) || tb_problem "$((N_DL - ok)) of $N_DL downloads failed across the takeover"

echo "== SIGTERM the new FE"
rc=0
tb_stop fenew 15 || rc=$?
((rc == 0)) || tb_problem "the new FE exited with status $rc after SIGTERM, want 0"
filters=$(tc -n "$TB_NS_FE" filter show dev eth0 ingress 2>&1 || true)
[[ -z $filters ]] || tb_problem "tc ingress filters left on the FE's eth0 after its stop: $filters"
! has_vip || tb_problem "the VIP is left on the FE's eth0 after its stop"
left=$(ip netns pids "$TB_NS_FE")
[[ -z $left ]] || tb_problem "processes left in the FE's namespace: $left"
tb_problems_fail
echo "PASS: fe_takeover ($total new connections, 0 failed, slowest $worst ms; $N_DL downloads byte-exact; old FE exited 0)"
