#!/usr/bin/env bash
# Front-end edge cases from the hardening issue (issue 11), each of which failed before:
#  - item 7: a request followed at once by the client's FIN (a legal half-close, as
#    `printf ... | nc` does) is answered, byte-exact, by a BE and by the local node
#    (it used to get 503: export refused CLOSE_WAIT);
#  - item 5: connections the FE serves itself (local node) time out: idle between
#    requests (keepalive_timeout_ms), a reader that stopped reading (send_timeout_ms),
#    a request head trickled in a byte at a time after a first answer (slowloris:
#    header_timeout_ms counts from the last answer, bytes do not refresh it);
#  - item 6: SIGHUPs that swap between three rules and one, with the access log on,
#    while connections are handed off (a rule index from the old snapshot used to be
#    looked up in the new one: std::out_of_range killed the FE).
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3

tb_init 2
tb_key
tb_docroot 1
tb_docroot 2
# The FE's own docroot: /l/<file> served by the local node.
mkdir -p "$TB_DIR/www/fe/l"
for f in "${TB_FILES[@]}"; do ln -f "$TB_DIR/www/.common/$f" "$TB_DIR/www/fe/l/$f"; done
LOG=$TB_DIR/access.log
TB_CLUSTER_EXTRA=$'keepalive_timeout_ms = 600\nsend_timeout_ms = 1500'
TB_FE_EXTRA=$(printf 'groups = ["local"]\ndocroot = "%s"\nheader_timeout_ms = 1000\naccess_log = "%s"' \
  "$TB_DIR/www/fe" "$LOG")
THREE_RULES=$(printf '[[rule]]\nname = "local"\npath = %s\ngroup = "local"\n\n[[rule]]\nname = "small"\npath = %s\ngroup = "all"\npolicy = "least-conn"\n' \
  "'^/l/'" "'^/f1k'")
tb_config "$THREE_RULES"
cp "$TB_CONFIG" "$TB_DIR/three.toml"
TB_NO_DEFAULT_RULE=0 tb_config "" # the catch-all rule alone
cp "$TB_CONFIG" "$TB_DIR/one.toml"
cp "$TB_DIR/three.toml" "$TB_CONFIG"
tb_start_be 1
tb_start_be 2
tb_start_fe
tb_wait_ready

# half_close PATH: sends one request, shuts its sending side at once, reads to EOF.
# Prints "STATUS SHA256 SECONDS".
half_close() {
  tb_c python3 - "$TB_VIP" "$1" <<'EOF'
import hashlib, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=10)
t0 = time.monotonic()
# Corked: the request and the FIN leave in one segment, so the FE's socket is in
# CLOSE_WAIT before its worker reads the request (what `printf ... | nc` often does).
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
s.sendall(f"GET {sys.argv[2]} HTTP/1.1\r\nHost: bed\r\n\r\n".encode())
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
status = head.split(b" ")[1].decode() if head else "none"
print(status, hashlib.sha256(body).hexdigest(), f"{time.monotonic() - t0:.2f}")
EOF
}

echo "== item 7: request + FIN at once (half-close) is answered"
for path in /f100k.bin /f1m.bin /l/f100k.bin; do
  read -r code sum secs < <(half_close "$path") || tb_fail "half-close $path: client failed"
  f=${path##*/}
  [[ $code == 200 ]] || tb_fail "half-close $path: HTTP $code (before the fix: 503)"
  [[ $sum == "${TB_SHA[$f]}" ]] || tb_fail "half-close $path: body differs"
  # The server closes after answering: it must not wait for another request.
  awk -v s="$secs" 'BEGIN { exit !(s < 3) }' || tb_fail "half-close $path: EOF only after $secs s"
  echo "half-close GET $path: HTTP $code, byte-exact, EOF after $secs s"
done

echo "== item 5: local-node connections time out"
# answered.py: a kept-alive connection to the local node whose first request was
# answered (module attribute `s`), for the checks below.
cat >"$TB_DIR/answered.py" <<'EOF'
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(b"GET /l/f1k.bin HTTP/1.1\r\nHost: bed\r\n\r\n")
got = b""
while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 1024:
    got += s.recv(65536)
EOF
# idle: one answered request, then nothing; the FE must close within ~keepalive_timeout.
read -r what secs < <(tb_c python3 - "$TB_VIP" "$TB_DIR" <<'EOF'
import socket, sys, time
sys.path.insert(0, sys.argv[2])
from answered import s
t0 = time.monotonic()
s.settimeout(8)
try:
    rest = s.recv(1)
    print("eof" if rest == b"" else "data", f"{time.monotonic() - t0:.2f}")
except socket.timeout:
    print("open", f"{time.monotonic() - t0:.2f}")
EOF
)
[[ $what == eof ]] || tb_fail "idle keep-alive connection to the local node: $what after $secs s (keepalive_timeout_ms = 600)"
awk -v s="$secs" 'BEGIN { exit !(s >= 0.5 && s < 2.5) }' || tb_fail "idle connection closed after $secs s, want ~0.6 s"
echo "idle keep-alive connection closed by the local node after $secs s"

# slowloris: after a first answer, a byte every 150 ms; closed within ~header_timeout.
read -r what secs < <(tb_c python3 - "$TB_VIP" "$TB_DIR" <<'EOF'
import socket, sys, time
sys.path.insert(0, sys.argv[2])
from answered import s
t0 = time.monotonic()
s.settimeout(0.15)
head = b"GET /l/f1k.bin HTTP/1.1\r\nX-Slow: " + b"a" * 200
for i in range(len(head)):
    try:
        s.send(head[i:i + 1])
        if s.recv(1) == b"":
            print("eof", f"{time.monotonic() - t0:.2f}")
            sys.exit(0)
    except socket.timeout:
        pass
    except OSError:
        print("reset", f"{time.monotonic() - t0:.2f}")
        sys.exit(0)
    if time.monotonic() - t0 > 8:
        break
print("open", f"{time.monotonic() - t0:.2f}")
EOF
)
[[ $what != open ]] || tb_fail "slowloris on the local node still open after $secs s (header_timeout_ms = 1000)"
awk -v s="$secs" 'BEGIN { exit !(s < 3) }' || tb_fail "slowloris closed only after $secs s"
echo "slowloris (a byte every 150 ms after a first answer): $what after $secs s"

# a reader that stopped: small receive buffer, never reads; closed after send_timeout.
tb_c sysctl -qw net.ipv4.tcp_rmem="4096 16384 32768"
t0=$(tb__now_ms)
before=$(tb_fe_counter local_timeouts)
tb_spawn stalled "$TB_NS_C" python3 -c '
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(b"GET /l/f10m.bin HTTP/1.1\r\nHost: bed\r\n\r\n")
time.sleep(12)
' "$TB_VIP"
tb_until 6000 eval '(($(tb_fe_counter local_timeouts) > before))' ||
  tb_fail "a client that stopped reading was not closed by the local node within 6 s (send_timeout_ms = 1500); local_timeouts $(tb_fe_counter local_timeouts)"
echo "stalled reader closed by the local node after $(($(tb__now_ms) - t0)) ms; local_timeouts $before -> $(tb_fe_counter local_timeouts)"
tb_stop stalled || true # it is killed: status 143
tb_c sysctl -qw net.ipv4.tcp_rmem="4096 131072 6291456"
tb_until 3000 eval '(($(tb_status_json fe | jq -e .local_active) == 0))' ||
  tb_fail "local_active did not return to 0: $(tb_status_json fe | jq -c .local_active)"

echo "== item 6: reloads that remove rules while connections are handed off (access log on)"
tb_spawn load "$TB_NS_C" python3 -c '
import socket, sys, time
ok = bad = 0
end = time.monotonic() + 6
while time.monotonic() < end:
    try:
        s = socket.create_connection((sys.argv[1], 80), timeout=5)
        s.sendall(b"GET /f1k.bin HTTP/1.1\r\nHost: bed\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        if data.startswith(b"HTTP/1.1 200") and len(data.partition(b"\r\n\r\n")[2]) == 1024:
            ok += 1
        else:
            bad += 1
    except OSError:
        bad += 1
print(ok, bad)
' "$TB_VIP"
hups=0
for ((i = 0; i < 40; i++)); do
  if ((i % 2)); then cp "$TB_DIR/three.toml" "$TB_CONFIG"; else cp "$TB_DIR/one.toml" "$TB_CONFIG"; fi
  tb__alive fe || tb_fail "the FE died during the reloads (after $hups SIGHUPs)"
  kill -HUP "${TB_PID[fe]}"
  hups=$((hups + 1))
  sleep 0.1
done
tb_wait load 20 || tb_fail "the load generator failed: $(cat "$TB_DIR/load.log")"
tb__alive fe || tb_fail "the FE died during the reloads"
read -r ok bad <"$TB_DIR/load.log"
echo "$hups SIGHUPs alternating 3 and 1 rules under load: $ok requests answered, $bad failed; FE alive"
((ok > 50)) || tb_fail "only $ok requests answered during the reloads"
((bad == 0)) || tb_fail "$bad requests failed during the reloads"
grep -q 'outcome=handoff' "$LOG" || tb_fail "no handoff in the access log"

echo "PASS: fe_edges"
