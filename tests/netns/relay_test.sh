#!/usr/bin/env bash
# Acceptance test of the upstream relay (issue 5): stock nginx on every BE, listening
# on 127.0.0.1:8080 with PROXY protocol, behind `upstream = "127.0.0.1:8080"` and
# `proxy_protocol = 2`. Checks byte-exact transfers (1 KB..10 MB, sequential and 20
# concurrent), keep-alive, the client address in nginx's access log, responses
# bypassing the FE, half-close, a client reset, a stalled reader not growing the
# agents' memory, and 502/504 when the upstream is down or unreachable, after which
# the agents still serve.
#
# RELAY_UPSTREAM=unix runs the same checks with nginx listening on a unix socket
# (`upstream = "unix:/..."`; tests/netns/relay_unix_test.sh), except the unreachable
# upstream: a unix connect is refused or accepted at once, it never times out.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum awk python3 nft
NGINX=${NGINX:-/usr/sbin/nginx}
[[ -x $NGINX ]] || {
  echo "SKIP: no nginx at $NGINX" >&2
  exit 77
}
tb_require_tcpha
RELAY_UPSTREAM=${RELAY_UPSTREAM:-tcp}
[[ $RELAY_UPSTREAM == tcp || $RELAY_UPSTREAM == unix ]] ||
  tb_fail "RELAY_UPSTREAM: tcp or unix, not '$RELAY_UPSTREAM'"

N=3
TIMEOUT_MS=1000   # upstream_timeout_ms: connect timeout -> 504
STALLED=12        # clients that stop reading a 10 MB download
RSS_BOUND_KB=1024 # allowed growth of an agent's VmRSS meanwhile (a relay buffering
                  # the responses would need up to STALLED x 10 MB)

tb_init $N
tb_key
for ((k = 1; k <= N; k++)); do
  tb_docroot "$k"
  upstream=127.0.0.1:8080
  [[ $RELAY_UPSTREAM == unix ]] && upstream=unix:$TB_DIR/nginx$k/nginx.sock
  TB_BE_EXTRA[k]=$(printf 'upstream = "%s"\nproxy_protocol = 2\nx_forwarded_for = true\nupstream_timeout_ms = %d\nmetrics = "127.0.0.1:9181"' \
    "$upstream" "$TIMEOUT_MS")
done
tb_config

# nginx k: private prefix, config, logs and temp dirs under TB_DIR; in the
# foreground (daemon off) so the bed tracks and stops the master by its pid.
nginx_conf() {
  local k=$1 dir=$TB_DIR/nginx$1 listen=127.0.0.1:8080
  [[ $RELAY_UPSTREAM == unix ]] && listen=unix:$dir/nginx.sock
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;  # the docroot lies in the bed's private (0700) directory
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  log_format relay '\$proxy_protocol_addr \$remote_addr "\$request" \$status \$body_bytes_sent "\$http_x_forwarded_for"';
  access_log $dir/access.log relay;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_timeout 75s;
  server {
    listen $listen proxy_protocol;
    root $TB_DIR/www/be$k;
  }
}
EOF
}

nginx_start() {
  local k=$1 i
  tb_spawn "nginx$k" "${TB_NS_BE[k]}" "$NGINX" -e stderr -p "$TB_DIR/nginx$k" \
    -c "$TB_DIR/nginx$k/nginx.conf"
  for ((i = 0; i < 100; i++)); do
    if [[ $RELAY_UPSTREAM == unix ]]; then
      [[ -S $TB_DIR/nginx$k/nginx.sock ]] && return 0
    else
      tb_be "$k" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080' 2>/dev/null && return 0
    fi
    tb__alive "nginx$k" || break
    sleep 0.05
  done
  tb_fail "nginx on be$k did not start listening ($RELAY_UPSTREAM)"
}

agent_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/${TB_PID[be$1]}/status"; }

# CPU time (utime + stime, clock ticks) of agent k; fields counted after the
# parenthesised command name.
agent_cpu_ticks() {
  local stat
  stat=$(<"/proc/${TB_PID[be$1]}/stat")
  read -r -a f <<<"${stat##*) }"
  echo $((f[11] + f[12]))
}

# Sum of one number of the agents' status JSON (a jq path) over every agent.
status_sum() {
  local k sum=0 v
  for ((k = 1; k <= N; k++)); do
    v=$(tb_status_json "be$k" | jq -e "$1") || tb_fail "be$k status has no $1"
    sum=$((sum + v))
  done
  echo "$sum"
}
relay_counter() { status_sum ".relay.$1"; }
active_total() { status_sum .active; }

# Waits for every relayed connection to end (each agent alive throughout).
wait_no_active() {
  local i k n
  for ((i = 0; i < 100; i++)); do
    for ((k = 1; k <= N; k++)); do
      tb__alive "be$k" || tb_fail "the be$k agent died: $(tail -n 3 "$TB_DIR/be$k.log")"
    done
    n=$(active_total)
    ((n == 0)) && return 0
    sleep 0.1
  done
  tb_fail "relayed connections still active after 10 s: $n"
}

for ((k = 1; k <= N; k++)); do
  nginx_conf "$k"
  nginx_start "$k"
  tb_start_be "$k"
done
tb_start_fe
tb_wait_ready

# A raw client for what curl cannot do: half-close, reset, stop reading. Each reads
# the first 100 KB of the response, then acts.
cat >"$TB_DIR/client.py" <<'EOF'
import hashlib, socket, struct, sys, time
mode, vip, path = sys.argv[1:4]
s = socket.socket()
# A small receive buffer makes a stalled reader push back on the BE at once.
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(30)
s.connect((vip, 80))
s.sendall(f"GET /{path} HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode())
# Bytes to read before acting: 100 KB, or argv[4] for halfclose.
first = int(sys.argv[4]) if mode == "halfclose" and len(sys.argv) > 4 else 100 * 1024
data = bytearray()
while len(data) < first and mode in ("halfclose", "stall", "reset", "rst"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
if mode == "halfclose":
    # FIN mid-response (the FE hands off established connections only, so not
    # before the answer starts); the rest must still arrive.
    s.shutdown(socket.SHUT_WR)
if mode == "rst":
    # RST at once, the response half read.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    sys.exit(0)
if mode == "reset":
    # FIN, then RST with the response half read: the BE's socket goes CLOSE_WAIT,
    # then its next write fails with EPIPE (a signal, if the agent let it).
    s.shutdown(socket.SHUT_WR)
    s.recv(65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    sys.exit(0)
if mode == "stall":
    print("stalled", flush=True)
    time.sleep(float(sys.argv[4]))
while chunk := s.recv(1 << 20):
    data += chunk
head, _, body = bytes(data).partition(b"\r\n\r\n")
print(head.split(b" ")[1].decode(), len(body), hashlib.sha256(body).hexdigest())
EOF

requests=0 # HTTP requests through the VIP (each must appear in an access log)
bytes=0    # response bytes received while the FE's transmissions are measured
fe_tx0=$(tb_iface_tx_bytes "$TB_NS_FE")

echo "== sequential: 1 KB .. 10 MB, three rounds"
for ((r = 0; r < 3; r++)); do
  for f in index.html "${TB_FILES[@]}"; do
    n=$(tb_fetch "$f") || tb_fail "sequential /$f (round $r) failed"
    bytes=$((bytes + n))
    requests=$((requests + 1))
  done
done

echo "== 20 concurrent"
mix=(f1k.bin f10k.bin f100k.bin f1m.bin f10m.bin)
mkdir -p "$TB_DIR/par"
for ((i = 0; i < 20; i++)); do
  f=${mix[i % ${#mix[@]}]}
  tb_spawn --log "$TB_DIR/par/$i.out" "par$i" "$TB_NS_C" curl -sS --noproxy '*' --max-time 30 \
    -o "$TB_DIR/par/$i.body" -w '%{http_code} %{size_download}' "http://$TB_VIP/$f"
done
for ((i = 0; i < 20; i++)); do
  f=${mix[i % ${#mix[@]}]}
  rc=0
  tb_wait "par$i" 40 || rc=$?
  ((rc == 0)) || tb_fail "concurrent request $i (/$f): curl exit status $rc: $(cat "$TB_DIR/par/$i.out")"
  out=$(<"$TB_DIR/par/$i.out")
  [[ ${out%% *} == 200 ]] || tb_fail "concurrent request $i (/$f): HTTP ${out%% *}"
  sum=$(sha256sum <"$TB_DIR/par/$i.body")
  [[ ${sum%% *} == "${TB_SHA[$f]}" ]] || tb_fail "concurrent request $i (/$f): content differs"
  bytes=$((bytes + ${out##* }))
  requests=$((requests + 1))
done

fe_tx=$(($(tb_iface_tx_bytes "$TB_NS_FE") - fe_tx0))
pct=$(awk -v a="$fe_tx" -v b="$bytes" 'BEGIN { printf "%.3f", 100 * a / b }')
echo "responses: $bytes bytes; FE eth0 transmitted $fe_tx bytes ($pct%)"
((fe_tx * 20 < bytes)) || tb_fail "the FE transmitted $pct% of the response bytes (limit 5%)"

echo "== keep-alive: two requests on one relayed connection"
out=$(tb_c curl -sS --noproxy '*' --max-time 20 -w '%{http_code} %{num_connects}\n' \
  -o "$TB_DIR/ka1" "http://$TB_VIP/f100k.bin" -o "$TB_DIR/ka2" "http://$TB_VIP/f1m.bin") ||
  tb_fail "keep-alive pair failed: $out"
requests=$((requests + 2))
[[ $out == $'200 1\n200 0' ]] ||
  tb_fail "keep-alive pair: want '200 1' then '200 0', got: $(tr '\n' ' ' <<<"$out")"
for pair in ka1:f100k.bin ka2:f1m.bin; do
  sum=$(sha256sum <"$TB_DIR/${pair%%:*}")
  [[ ${sum%% *} == "${TB_SHA[${pair#*:}]}" ]] || tb_fail "keep-alive: /${pair#*:} content differs"
done

echo "== half-close: the client sends FIN while the response flows"
# nginx takes a client's FIN (EPOLLRDHUP) as an abort while it still has bytes to
# write, whoever the client is. Over loopback TCP the whole 1 MB sits in socket
# buffers early, so the FIN goes after 100 KB; a unix socket buffers ~200 KB, so
# there it goes when the last 200 KB are still to come.
at=$((100 * 1024))
[[ $RELAY_UPSTREAM == unix ]] && at=$((1048576 - 200 * 1024))
out=$(tb_c timeout 30 python3 "$TB_DIR/client.py" halfclose "$TB_VIP" f1m.bin "$at") ||
  tb_fail "half-closed client failed: $out"
requests=$((requests + 1))
[[ $out == "200 ${TB_SIZE[f1m.bin]} ${TB_SHA[f1m.bin]}" ]] || tb_fail "half-closed client got: $out"

echo "== pipelined requests, one with a body that looks like a request"
# Three requests in one write: the relay must find each head (the POST's body is a
# request line, which must stay body) and add X-Forwarded-For to each, after the
# client's own.
out=$(tb_c timeout 30 python3 - "$TB_VIP" <<'PY'
import socket, sys
vip = sys.argv[1]
body = b"GET /f1k.bin?p=evil HTTP/1.1\r\nHost: x\r\n\r\n"
reqs = (b"GET /f1k.bin?p=1 HTTP/1.1\r\nHost: v\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n"
        b"POST /f1k.bin?p=2 HTTP/1.1\r\nHost: v\r\nContent-Length: %d\r\n\r\n" % len(body) + body +
        b"GET /f1k.bin?p=3 HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n")
s = socket.create_connection((vip, 80), timeout=20)
s.sendall(reqs)
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.count(b"HTTP/1.1 200 OK"), data.count(b"HTTP/1.1 405"))
PY
) || tb_fail "pipelined client failed: $out"
# nginx answers a POST to a static file with 405 and reads its body away.
[[ $out == "2 1" ]] || tb_fail "pipelined: want 2 x 200 and 1 x 405, got: $out"
requests=$((requests + 3))

echo "== access logs: every request, each with the client's address (PROXY and X-Forwarded-For)"
wait_no_active # nginx logs a request when its response is done
total=0
for ((k = 1; k <= N; k++)); do
  log=$TB_DIR/nginx$k/access.log
  n=$(wc -l <"$log")
  ((n > 0)) || tb_fail "nginx on be$k logged no request"
  bad=$(awk -v c="$TB_C_ADDR" '$1 != c' "$log" | head -3)
  [[ -z $bad ]] || tb_fail "be$k: access log lines without the client address $TB_C_ADDR: $bad"
  # X-Forwarded-For ends with the client's address on every line: the relay's entry.
  bad=$(awk -v c="$TB_C_ADDR" '$NF != "\"" c "\"" && $NF != c "\""' "$log" | head -3)
  [[ -z $bad ]] || tb_fail "be$k: X-Forwarded-For not ending with $TB_C_ADDR: $bad"
  echo "be$k: $n requests from $TB_C_ADDR"
  total=$((total + n))
done
((total == requests)) || tb_fail "access logs hold $total requests, $requests were made"
logs=$(cat "$TB_DIR"/nginx*/access.log)
grep -q 'p=evil' <<<"$logs" && tb_fail "a request body was taken for a request: $(grep 'p=evil' <<<"$logs")"
n=$(grep -c '"GET /f1k.bin?p=1 HTTP/1.1" 200 1024 "192.0.2.7, '"$TB_C_ADDR"'"$' <<<"$logs" || true)
((n == 1)) || tb_fail "pipelined request 1: the client's X-Forwarded-For is not followed by the relay's"
n=$(grep -cE '"(POST /f1k.bin\?p=2|GET /f1k.bin\?p=3) HTTP/1.1" [0-9]+ [0-9]+ "'"$TB_C_ADDR"'"$' <<<"$logs" || true)
((n == 2)) || tb_fail "pipelined requests 2 and 3: want the relay's X-Forwarded-For on both, found $n"
v=$(relay_counter forwarded_for)
((v >= requests)) || tb_fail "relay.forwarded_for = $v, want >= $requests"

echo "== client reset mid-download"
# Over TCP: FIN, then RST (the relay's next splice into the closed socket must fail
# with EPIPE, not SIGPIPE). Over a unix socket nginx answers the FIN by aborting at
# once, which can end the relay before the RST comes: there the RST comes alone.
how=reset
[[ $RELAY_UPSTREAM == unix ]] && how=rst
resets0=$(relay_counter client_resets)
tb_c timeout 30 python3 "$TB_DIR/client.py" "$how" "$TB_VIP" f10m.bin ||
  tb_fail "resetting client failed"
wait_no_active
resets=$(relay_counter client_resets)
((resets > resets0)) || tb_fail "the relay did not see the client's reset (client_resets $resets)"

echo "== 20 concurrent clients give up mid-download"
for ((i = 0; i < 20; i++)); do
  tb_spawn --log /dev/null "abort$i" "$TB_NS_C" curl -sS --noproxy '*' --max-time 0.$((3 + i % 5)) \
    -o /dev/null "http://$TB_VIP/f10m.bin"
done
for ((i = 0; i < 20; i++)); do tb_wait "abort$i" 10 || true; done
wait_no_active
n=$(tb_fetch f1m.bin) || tb_fail "request after the aborted downloads failed"
requests=$((requests + 1))

echo "== $STALLED clients stop reading 10 MB downloads: agent memory stays bounded"
declare -A rss0=() rss_max=() cpu0=()
for ((k = 1; k <= N; k++)); do
  rss0[$k]=$(agent_rss_kb "$k") rss_max[$k]=${rss0[$k]} cpu0[$k]=$(agent_cpu_ticks "$k")
done
sent0=$(relay_counter bytes_to_client)
mkdir -p "$TB_DIR/stall"
for ((i = 0; i < STALLED; i++)); do
  tb_spawn --log "$TB_DIR/stall/$i.out" "stall$i" "$TB_NS_C" python3 "$TB_DIR/client.py" stall \
    "$TB_VIP" f10m.bin 8
done
# Twelve Python clients started at once through `ip netns exec` take seconds to start
# on 2 shared vCPUs: wait (bounded) until every one has its first 100 KB and stalls,
# then watch the agents for 3 s of the 8 s the clients sleep.
n_stalled() { cat "$TB_DIR"/stall/*.out 2>/dev/null | grep -c stalled || true; }
tb_until 15000 eval '(($(n_stalled) == STALLED))' ||
  tb_fail "only $(n_stalled) of $STALLED clients got their first 100 KB within 15 s"
echo "all $STALLED clients stalled after their first 100 KB (${TB_UNTIL_MS} ms after they were started)"
for ((k = 1; k <= N; k++)); do cpu0[$k]=$(agent_cpu_ticks "$k"); done
t0=$(tb__now_ms)
while (($(tb__now_ms) - t0 < 3000)); do
  for ((k = 1; k <= N; k++)); do
    v=$(agent_rss_kb "$k")
    ((v > rss_max[$k])) && rss_max[$k]=$v
  done
  sleep 0.1
done
# Backpressure, not polling: a relay spinning on a full pipe would burn the 3 s.
hz=$(getconf CLK_TCK)
for ((k = 1; k <= N; k++)); do
  cpu=$(($(agent_cpu_ticks "$k") - cpu0[$k]))
  echo "be$k agent CPU while its clients stall: $((cpu * 1000 / hz)) ms in 3 s"
  ((cpu * 1000 / hz < 500)) || tb_fail "be$k agent used $((cpu * 1000 / hz)) ms of CPU while stalled"
done
# Each stalled download has at most its client's window, the BE's socket send buffer
# (tcp_wmem max 4 MiB) and its pipe in flight: under half of its 10 MB.
spliced=$(($(relay_counter bytes_to_client) - sent0))
want=$((STALLED * ${TB_SIZE[f10m.bin]}))
echo "spliced to the stalled clients so far: $spliced of $want bytes"
((spliced * 2 < want)) ||
  tb_fail "the stalled downloads did not push back on the upstream ($spliced bytes spliced)"
# While they stall, the agents keep serving others.
n=$(tb_fetch f1m.bin) || tb_fail "a request during the stall failed"
requests=$((requests + 1))
for ((i = 0; i < STALLED; i++)); do
  rc=0
  tb_wait "stall$i" 40 || rc=$?
  ((rc == 0)) || tb_fail "stalled client $i: exit status $rc: $(cat "$TB_DIR/stall/$i.out")"
  out=$(tail -n 1 "$TB_DIR/stall/$i.out")
  [[ $out == "200 ${TB_SIZE[f10m.bin]} ${TB_SHA[f10m.bin]}" ]] ||
    tb_fail "stalled client $i, after resuming, got: $out"
  requests=$((requests + 1))
done
for ((k = 1; k <= N; k++)); do
  grow=$((rss_max[$k] - rss0[$k]))
  echo "be$k agent VmRSS: ${rss0[$k]} kB before, ${rss_max[$k]} kB at most while stalled (+$grow kB)"
  ((grow <= RSS_BOUND_KB)) || tb_fail "be$k agent grew by $grow kB (bound $RSS_BOUND_KB kB)"
done

echo "== upstream down: 502 within ${TIMEOUT_MS} ms, agents stay healthy"
for ((k = 1; k <= N; k++)); do tb_stop "nginx$k" || tb_fail "nginx on be$k did not stop cleanly"; done
for ((i = 0; i < N; i++)); do # round robin: one request per BE
  out=$(tb_curl f1k.bin -o /dev/null -w '%{http_code} %{time_total}') || tb_fail "request to a downed upstream: $out"
  ms=$(awk -v t="${out#* }" 'BEGIN { printf "%d", t * 1000 }')
  [[ ${out%% *} == 502 ]] || tb_fail "upstream down: want HTTP 502, got ${out%% *}"
  ((ms < TIMEOUT_MS)) || tb_fail "upstream down: 502 after $ms ms (timeout ${TIMEOUT_MS} ms)"
done
echo "502 in ${ms} ms"
v=$(relay_counter upstream_refused)
((v >= N)) || tb_fail "upstream_refused = $v: the 502s are not counted"
tb_wait_ready 5
for ((k = 1; k <= N; k++)); do nginx_start "$k"; done
for ((i = 0; i < N; i++)); do
  n=$(tb_fetch f100k.bin) || tb_fail "request after nginx restarted failed"
done

unreachable() {
  echo "== upstream unreachable (SYNs dropped): 504 after ${TIMEOUT_MS} ms"
  for ((k = 1; k <= N; k++)); do
    tb_be "$k" nft -f - <<'EOF'
table inet relaytest {
  chain out { type filter hook output priority 0; tcp dport 8080 drop; }
}
EOF
  done
  for ((i = 0; i < N; i++)); do
    out=$(tb_curl f1k.bin -o /dev/null -w '%{http_code} %{time_total}') || tb_fail "request to an unreachable upstream: $out"
    ms=$(awk -v t="${out#* }" 'BEGIN { printf "%d", t * 1000 }')
    [[ ${out%% *} == 504 ]] || tb_fail "upstream unreachable: want HTTP 504, got ${out%% *}"
    # The agents check timeouts every 100 ms.
    ((ms >= TIMEOUT_MS - 50 && ms < TIMEOUT_MS + 500)) ||
      tb_fail "upstream unreachable: 504 after $ms ms (timeout ${TIMEOUT_MS} ms)"
  done
  echo "504 in ${ms} ms"
  v=$(relay_counter upstream_timeouts)
  ((v >= N)) || tb_fail "upstream_timeouts = $v: the 504s are not counted"
  for ((k = 1; k <= N; k++)); do tb_be "$k" nft delete table inet relaytest; done
  for ((i = 0; i < N; i++)); do
    n=$(tb_fetch f1m.bin) || tb_fail "request after the upstream became reachable again failed"
  done
}
extra_conns=$((2 * N)) # the N 502s and the N fetches after nginx restarted
if [[ $RELAY_UPSTREAM == tcp ]]; then
  unreachable
  extra_conns=$((extra_conns + 2 * N)) # N 504s, N fetches after the path reopened
else
  echo "== (unix socket: no unreachable case; connect is refused or accepted at once)"
fi
wait_no_active

echo "== status"
js=$(tb_status_json fe) || tb_fail "tcpha status on the FE failed"
failed=$(jq -e '.handoffs.failed' <<<"$js") || tb_fail "FE status has no handoffs.failed: $js"
((failed == 0)) || tb_fail "handoffs.failed = $failed"
relayed=$(relay_counter relayed)
echo "relayed $relayed connections, $(relay_counter bytes_to_client) bytes to clients"
# The same counters on each agent's Prometheus endpoint.
for ((k = 1; k <= N; k++)); do
  prom=$(tb_be "$k" curl -sS --noproxy '*' --max-time 5 http://127.0.0.1:9181/metrics) ||
    tb_fail "be$k metrics endpoint: $prom"
  js=$(tb_status_json "be$k")
  for c in relayed forwarded_for upstream_refused bytes_to_client; do
    want=$(jq -e ".relay.$c" <<<"$js") || tb_fail "be$k status has no relay.$c"
    got=$(awk -v m="tcpha_be_relay_${c}_total" '$1 == m { print $2 }' <<<"$prom")
    [[ $got == "$want" ]] || tb_fail "be$k: tcpha_be_relay_${c}_total = '$got', status says $want"
  done
done
# One connection per request, but the keep-alive pair shares one and the three
# pipelined requests share one; plus the reset client, the 20 aborted ones and the
# connections after the upstream went away.
conns=$((requests - 1 - 2 + 1 + 20 + extra_conns))
((relayed >= conns)) || tb_fail "relayed $relayed connections, want >= $conns"

echo "PASS: relay ($RELAY_UPSTREAM upstream)"
