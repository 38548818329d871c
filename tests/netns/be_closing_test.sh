#!/usr/bin/env bash
# How the built-in server's connections end (issue 11, items 1, 5 and 11):
#  - a slow `Connection: close` download outlives flow_linger_ms: the BE reports the
#    connection CLOSED only when it is over, not when the last byte is queued (the FE
#    then removed the flow while the client was still reading: reset);
#  - a 405 after a large POST body arrives intact (lingering close, not RST);
#  - slowloris after the first request: a request head must complete within
#    header_timeout_ms of its first byte, however slowly bytes trickle in;
#  - a client that stops reading is cut after send_timeout_ms without acknowledgements.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3 awk
tb_require_tcpha

HEADER_TIMEOUT_MS=2000
SEND_TIMEOUT_MS=3000
SIZE=$((12 * 1024 * 1024)) # read at 1 MB/s: ~12 s, over twice flow_linger_ms (5 s)

tb_init 1
tb_key
tb_docroot 1
tb__gen f12m.bin "$SIZE" >"$TB_DIR/www/be1/f12m.bin"
SHA12=$(sha256sum <"$TB_DIR/www/be1/f12m.bin")
SHA12=${SHA12%% *}
TB_FE_EXTRA="header_timeout_ms = $HEADER_TIMEOUT_MS"
TB_CLUSTER_EXTRA="send_timeout_ms = $SEND_TIMEOUT_MS"
tb_config
tb_start_be 1
tb_start_fe
tb_wait_ready

be_json() { tb_status_json be1; }
be_counter() { be_json | jq -e --arg n "$1" '.counters[$n]'; }
be_active() { be_json | jq -e .active; }

# A slow reader: the client's receive buffer is small (Linux would otherwise autotune
# it to 32 MB and take the whole file at once), and the BE's send buffer is large, so
# the BE queues the whole file at once (the old code then reported it CLOSED) and the
# client takes ~12 s to read it.
tb_c sysctl -qw net.ipv4.tcp_rmem="4096 131072 262144"
tb_be 1 sysctl -qw net.ipv4.tcp_wmem="4096 16777216 16777216"

echo "== slow Connection: close download of 12 MB at 1 MB/s"
# A reader of its own: curl --limit-rate buffers ahead in user space and then stops
# reading for seconds, which is a stalled client (send_timeout_ms), not a slow one.
t0=$(tb__now_ms)
rc=0
out=$(tb_c python3 - "$TB_VIP" <<'PY' 2>&1
import hashlib, socket, sys, time
RATE = 1 << 20  # bytes per second
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(b"GET /f12m.bin HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n")
data = bytearray()
t0 = time.monotonic()
try:
    while chunk := s.recv(65536):
        data += chunk
        ahead = len(data) / RATE - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
except OSError as e:
    print("error", e.strerror, len(data))
    sys.exit(1)
head, _, body = bytes(data).partition(b"\r\n\r\n")
print(head.split(b" ")[1].decode(), len(body), hashlib.sha256(body).hexdigest())
PY
) || rc=$?
ms=$(($(tb__now_ms) - t0))
echo "client: '$out' after $ms ms"
((rc == 0)) || tb_fail "slow download cut: '$out' after $ms ms; be1: $(be_json | jq -c .counters)"
[[ $out == "200 $SIZE $SHA12" ]] || tb_fail "slow download: got '$out'"
((ms > 5000)) || tb_fail "the download took $ms ms: not longer than flow_linger_ms, proves nothing"
tb_until 3000 eval '(($(be_active) == 0))' || tb_fail "be1 still counts $(be_active) connections"
n=$(be_counter lingered)
((n >= 1)) || tb_fail "lingered = $n after a Connection: close download"

echo "== 405 after a 4 MB POST body, sent whole before the response is read"
# A client that sends its body before reading (curl stops sending when an early
# response arrives): the BE answers 405 after the first 64 KB; the rest must be read
# away, or closing the socket with unread bytes resets the connection and the 405
# is lost.
rc=0
out=$(tb_c python3 - "$TB_VIP" <<'PY' 2>&1
import socket, sys
body = b"x" * (4 << 20)
s = socket.create_connection((sys.argv[1], 80), timeout=10)
try:
    s.sendall(b"POST /index.html HTTP/1.1\r\nHost: v\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
except OSError as e:
    print("error:", e.strerror)
    sys.exit(1)
print(data.split(b"\r\n")[0].decode())
PY
) || rc=$?
echo "client: $out"
((rc == 0)) && [[ $out == "HTTP/1.1 405 Method Not Allowed" ]] ||
  tb_fail "POST with a body: want the 405, got '$out'"
n=$(be_counter discarded_bytes)
((n > 0)) || tb_fail "discarded_bytes = $n: the body was not read away"

echo "== slowloris after the first request: header timeout ${HEADER_TIMEOUT_MS} ms from the first byte"
h0=$(be_counter header_timeouts)
ms=$(tb_c python3 - "$TB_VIP" <<'PY'
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=20)
s.sendall(b"GET /index.html HTTP/1.1\r\nHost: v\r\n\r\n")
data = b""
while b"</html>" not in data:
    data += s.recv(65536)
# The next request, one byte every 300 ms: each byte used to refresh the idle timer.
req = b"GET /index.html HTTP/1.1\r\nHost: v\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
t0 = time.monotonic()
s.setblocking(False)
for b in req:
    try:
        s.send(bytes([b]))
        if s.recv(1) == b"":
            break
    except BlockingIOError:
        pass
    except OSError:
        break
    if time.monotonic() - t0 > 12:
        break
    time.sleep(0.3)
print(int((time.monotonic() - t0) * 1000))
PY
)
echo "the BE closed the trickling connection after $ms ms"
((ms < HEADER_TIMEOUT_MS + 2000)) || tb_fail "a trickled request head was kept $ms ms (header timeout $HEADER_TIMEOUT_MS ms)"
h=$(be_counter header_timeouts)
((h == h0 + 1)) || tb_fail "header_timeouts went from $h0 to $h, want one more"

echo "== a client that stops reading: reset after send_timeout_ms (${SEND_TIMEOUT_MS} ms)"
tb_be 1 sysctl -qw net.ipv4.tcp_wmem="4096 16384 131072"
s0=$(be_counter send_timeouts)
tb_spawn --log "$TB_DIR/stall.out" stall "$TB_NS_C" python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((sys.argv[1], 80))
s.sendall(b"GET /f12m.bin HTTP/1.1\r\nHost: v\r\n\r\n")
print("requested", flush=True)
time.sleep(30)
' "$TB_VIP"
tb_until 3000 eval '(($(be_active) >= 1))' || tb_fail "the stalled download did not start on be1: $(cat "$TB_DIR/stall.out"); be1: $(be_json)"
t0=$(tb__now_ms)
tb_until $((SEND_TIMEOUT_MS + 4000)) eval '(($(be_active) == 0))' ||
  tb_fail "be1 still serves a client that has read nothing for $(($(tb__now_ms) - t0)) ms"
echo "be1 gave up on the stalled client after $(($(tb__now_ms) - t0)) ms"
s=$(be_counter send_timeouts)
((s == s0 + 1)) || tb_fail "send_timeouts went from $s0 to $s, want one more"
kill "${TB_PID[stall]}" 2>/dev/null || true
tb_wait stall 5 || true

echo "== the BE still serves"
tb_fetch f1m.bin >/dev/null || tb_fail "request after the timeouts failed"
echo "PASS: be_closing"
