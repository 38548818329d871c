#!/usr/bin/env bash
# Edges of the relay (issue 11):
#  - with x_forwarded_for (item 7), an `Upgrade` request switches the connection to
#    pass-through only when the upstream answers 101. Here nginx serves a static file
#    and ignores the upgrade (200), so the request pipelined after it is still HTTP
#    and must get the relay's X-Forwarded-For; before the fix it went to the server
#    untouched, so any client could send requests without the header by asking for
#    an upgrade first;
#  - a client that stops reading is reset after send_timeout_ms without
#    acknowledgements (item 5), not held for the 300 s idle reaper.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq python3
NGINX=${NGINX:-/usr/sbin/nginx}
[[ -x $NGINX ]] || {
  echo "SKIP: no nginx at $NGINX" >&2
  exit 77
}
tb_require_tcpha

SEND_TIMEOUT_MS=3000
tb_init 1
tb_key
tb_docroot 1
TB_BE_EXTRA[1]='upstream = "127.0.0.1:8080"
x_forwarded_for = true'
TB_CLUSTER_EXTRA="send_timeout_ms = $SEND_TIMEOUT_MS"
tb_config

dir=$TB_DIR/nginx1
mkdir -p "$dir"
cat >"$dir/nginx.conf" <<EOF2
daemon off;
master_process on;
worker_processes 1;
user root;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
  log_format xff '"\$request" \$status "\$http_x_forwarded_for"';
  access_log $dir/access.log xff;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:8080;
    root $TB_DIR/www/be1;
  }
}
EOF2
tb_spawn nginx1 "${TB_NS_BE[1]}" "$NGINX" -e stderr -p "$dir" -c "$dir/nginx.conf"
tb_until 5000 tb_be 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080' || tb_fail "nginx did not start"
tb_start_be 1
tb_start_fe
tb_wait_ready

relay_counter() { tb_status_json be1 | jq -e --arg n "$1" '.relay[$n]'; }

echo "== an upgrade request nginx does not grant, and a request pipelined after it"
out=$(tb_c python3 - "$TB_VIP" <<'PY'
import socket, sys
reqs = (b"GET /f1k.bin?u=1 HTTP/1.1\r\nHost: v\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"GET /f1k.bin?u=2 HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n")
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(reqs)  # one write: both requests reach the relay in one read
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.count(b"HTTP/1.1 200 OK"))
PY
) || tb_fail "client failed: $out"
[[ $out == 2 ]] || tb_fail "want two 200 responses, got $out"
tb_until 3000 grep -q 'u=2' "$dir/access.log" || tb_fail "nginx did not log the second request"
cat "$dir/access.log"
line=$(grep 'u=2' "$dir/access.log")
[[ $line == *"\"$TB_C_ADDR\"" ]] || tb_fail "the request after a declined upgrade lacks X-Forwarded-For: $line"
line=$(grep 'u=1' "$dir/access.log")
[[ $line == *"\"$TB_C_ADDR\"" ]] || tb_fail "the upgrade request lacks X-Forwarded-For: $line"
n=$(relay_counter upgrades_declined)
((n == 1)) || tb_fail "upgrades_declined = $n, want 1"

echo "== a client that stops reading: reset after send_timeout_ms (${SEND_TIMEOUT_MS} ms)"
be_active() { tb_status_json be1 | jq -e .active; }
tb_spawn --log "$TB_DIR/stall.out" stall "$TB_NS_C" python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((sys.argv[1], 80))
s.sendall(b"GET /f10m.bin HTTP/1.1\r\nHost: v\r\n\r\n")
time.sleep(30)
' "$TB_VIP"
tb_until 3000 eval '(($(be_active) >= 1))' || tb_fail "the stalled download did not start on be1"
t0=$(tb__now_ms)
tb_until $((SEND_TIMEOUT_MS + 4000)) eval '(($(be_active) == 0))' ||
  tb_fail "be1 still relays to a client that has read nothing for $(($(tb__now_ms) - t0)) ms"
echo "be1 gave up on the stalled client after $(($(tb__now_ms) - t0)) ms"
n=$(relay_counter send_timeouts)
((n == 1)) || tb_fail "send_timeouts = $n, want 1"
echo "PASS: relay_edges"
