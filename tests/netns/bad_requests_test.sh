#!/usr/bin/env bash
# Bad requests at the FE (issue 4): malformed, oversized (431 head, 414 request line),
# Content-Length/Transfer-Encoding conflicts, duplicate Content-Length, obsolete line
# folding and a missing Host each get their 4xx followed by a close, and a request
# head that stops half-way gets 408 after [frontend] header_timeout_ms. All are
# counted in the FE's status and none is handed off. Then 300 slow clients holding
# half-sent heads open must not keep 30 normal requests from being served quickly.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq python3 awk
HEADER_TIMEOUT_MS=1000
TB_FE_EXTRA="header_timeout_ms = $HEADER_TIMEOUT_MS"
tb_cluster_up 3

counters() { tb_status_json fe | jq -c '{ok: .handoffs.ok} + (.counters | {accepted, bad_request, too_large, header_timeout, client_gone})'; }
delta() { jq -n --argjson a "$1" --argjson b "$2" --arg k "$3" '$b[$k] - $a[$k]'; }

echo "== raw bad requests (each must be answered, then closed by the FE)"
c0=$(counters)
# Each case: name, expected status, request bytes (Python literal), and whether the
# client then waits for the header timeout instead of finishing the head.
tb_c python3 - "$TB_VIP" "$TB_PORT" "$HEADER_TIMEOUT_MS" <<'EOF' || tb_fail "a bad request was not refused as it should be"
import socket, sys, time
vip, port, timeout_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
H = b"Host: bed.example\r\n"
CASES = [
    ("malformed request line", 400, b"GARBAGE\r\n\r\n"),
    ("missing Host in HTTP/1.1", 400, b"GET /index.html HTTP/1.1\r\nAccept: */*\r\n\r\n"),
    ("20 KB header field", 431, b"GET /index.html HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 20480 + b"\r\n\r\n"),
    ("10 KB request line", 414, b"GET /" + b"a" * 10240 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    ("Content-Length + Transfer-Encoding", 400,
     b"POST /index.html HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"),
    ("duplicate Content-Length (equal)", 400,
     b"POST /index.html HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ("duplicate Content-Length (differ)", 400,
     b"POST /index.html HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello"),
    ("obsolete line folding", 400, b"GET /index.html HTTP/1.1\r\n" + H + b"X-Folded: a\r\n  b\r\n\r\n"),
    ("head stops half-way", 408, b"GET /index.html HTTP/1.1\r\n" + H + b"X-Partial: 1"),
]
failed = 0
for name, want, data in CASES:
    s = socket.create_connection((vip, port), timeout=5)
    t0 = time.monotonic()
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the FE may refuse before the client is done sending; its answer is read below
    got, end = b"", "timeout"
    s.settimeout(timeout_ms / 1000 + 4)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                end = "closed"
                break
            got += chunk
    except ConnectionResetError:
        end = "reset"
    except socket.timeout:
        pass
    secs = time.monotonic() - t0
    s.close()
    line = got.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    code = int(parts[1]) if len(parts) > 1 and parts[0].startswith("HTTP/1.") and parts[1].isdigit() else None
    problems = []
    if code != want:
        problems.append(f"want {want}")
    if end == "timeout":
        problems.append("connection left open")
    if want == 408 and not (timeout_ms * 0.9 <= secs * 1000 <= timeout_ms + 1500):
        problems.append(f"408 after {secs:.2f} s, want about {timeout_ms / 1000:.1f} s")
    if want != 408 and secs > 1:
        problems.append(f"answer took {secs:.2f} s")
    print(f"  {name:36s} -> {line or '(no answer)':48s} {end:7s} {secs * 1000:6.0f} ms"
          + ("  FAIL: " + ", ".join(problems) if problems else ""))
    failed += bool(problems)
sys.exit(1 if failed else 0)
EOF
tb_until 2000 eval '(($(delta "$c0" "$(counters)" header_timeout) >= 1))' || true
c1=$(counters)
echo "FE counters before: $c0"
echo "FE counters after:  $c1"
for want in accepted:9 bad_request:6 too_large:2 header_timeout:1 ok:0; do
  d=$(delta "$c0" "$c1" "${want%%:*}")
  ((d == ${want#*:})) || tb_fail "FE counter ${want%%:*} grew by $d, want ${want#*:}"
done
echo "counters: 6 bad_request, 2 too_large, 1 header_timeout; no handoff"

echo "== the FE still serves normal requests"
for f in index.html f10k.bin f1m.bin; do tb_fetch "$f" >/dev/null || tb_fail "GET /$f after the bad requests failed"; done

echo "== 300 slow clients (half-sent heads) and 30 normal requests"
# A header timeout longer than this part, so the slow clients stay for all of it.
tb_stop_fe || tb_fail "the FE did not stop cleanly (status ${TB_EXIT[fe]})"
TB_FE_EXTRA="header_timeout_ms = 60000"
tb_config
tb_start_fe
tb_wait_ready
SLOW=300
c0=$(counters)
tb_spawn slow "$TB_NS_C" python3 -c '
import os, socket, sys, time
vip, port, n, flag, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
socks = []
for i in range(n):
    s = socket.create_connection((vip, port), timeout=5)
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: slow.example\r\nX-Slow-" + str(i).encode() + b": ")
    socks.append(s)
open(flag, "w").write(f"{len(socks)}\n")
deadline = time.monotonic() + 90
while not os.path.exists(stop) and time.monotonic() < deadline:
    time.sleep(0.05)
early = 0  # connections the FE answered or closed while the clients were slow
for s in socks:
    s.setblocking(False)
    try:
        s.recv(1)  # returns (data or EOF) only when the FE has acted
        early += 1
    except BlockingIOError:
        pass
    except OSError:
        early += 1
    s.close()
print(f"slow clients: {len(socks)} opened, {early} answered or closed by the FE before the end")
' "$TB_VIP" "$TB_PORT" "$SLOW" "$TB_DIR/slow.ready" "$TB_DIR/slow.stop"
tb_until 30000 test -s "$TB_DIR/slow.ready" ||
  tb_fail "the slow clients could not open $SLOW connections in 30 s: $(cat "$TB_DIR/slow.log")"
tb_until 5000 eval '(($(delta "$c0" "$(counters)" accepted) >= SLOW))' ||
  tb_fail "the FE accepted only $(delta "$c0" "$(counters)" accepted) of the $SLOW slow connections"
echo "$SLOW slow connections open and accepted by the FE (in ${TB_UNTIL_MS} ms)"
worst=0
for ((i = 0; i < 30; i++)); do
  f=$([[ $((i % 3)) == 0 ]] && echo f100k.bin || echo index.html)
  out=$(tb_curl "$f" -o "$TB_DIR/body" -w '%{http_code} %{time_total}') || tb_fail "normal request $i (/$f) failed while the slow clients wait"
  read -r code secs <<<"$out"
  [[ $code == 200 ]] || tb_fail "normal request $i (/$f): HTTP $code"
  awk -v s="$secs" 'BEGIN { exit !(s < 2) }' || tb_fail "normal request $i (/$f) took ${secs}s (limit 2 s)"
  worst=$(awk -v a="$worst" -v b="$secs" 'BEGIN { print (b > a ? b : a) }')
done
echo "30 normal requests served, slowest ${worst}s"
tb__alive slow || tb_fail "the slow clients ended early: $(cat "$TB_DIR/slow.log")"
touch "$TB_DIR/slow.stop"
tb_wait slow 20 || tb_fail "slow client process failed: $(cat "$TB_DIR/slow.log")"
cat "$TB_DIR/slow.log"
tb_until 5000 eval '(($(delta "$c0" "$(counters)" client_gone) >= SLOW))' ||
  tb_fail "the FE counted $(delta "$c0" "$(counters)" client_gone) clients gone, want >= $SLOW"
echo "FE counted the $SLOW slow clients as gone; counters: $(counters)"

echo "== the FE is healthy afterwards"
for ((i = 0; i < 10; i++)); do tb_fetch f100k.bin >/dev/null || tb_fail "request $i after the slow clients failed"; done
js=$(tb_status_json fe) || tb_fail "FE status does not answer"
jq -e '.handoffs.failed == 0 and ([.backends[].state] | all(. == "up"))' <<<"$js" >/dev/null ||
  tb_fail "FE unhealthy after the slow clients: $(jq -c '{handoffs, backends: [.backends[] | {id, state}]}' <<<"$js")"

echo "PASS: bad_requests"
