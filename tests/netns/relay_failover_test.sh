#!/usr/bin/env bash
# BE failover in relay mode (issue 13; docs/relay.md "Failover"): three BEs relay to
# their own stock nginx, which serve the same static files. Concurrent rate-limited
# 12 MB downloads (client buffers shrunk so that they really run on their BEs) and a
# few slow POSTs (nginx answers them with the big file); the BE serving one of the
# POSTs dies mid-way (SIGKILL of its agent: its kernel lives and would FIN/RST the
# dead agent's sockets). Every download must finish byte-exact (the backups resume
# them with Range + If-Range from their own nginx), and a POST on the dead BE must get
# a reset, never a second execution: the nginx access logs show each POST once.
# FAILOVER_HOW=host (relay_failover_host_test.sh): the BE's host fails instead (its
# link goes down, then the agent is killed): nothing of it reaches anyone any more,
# and the FE detects it by the heartbeats' silence alone.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3 ss
NGINX=${NGINX:-/usr/sbin/nginx}
[[ -x $NGINX ]] || {
  echo "SKIP: no nginx at $NGINX" >&2
  exit 77
}
tb_require_tcpha
N=3
N_DL=${FAILOVER_DOWNLOADS:-100}
N_POST=6
RATE=800k # per download: 12 MB in ~15 s
HOW=${FAILOVER_HOW:-agent}
[[ $HOW == agent || $HOW == host ]] || tb_fail "FAILOVER_HOW=$HOW: agent or host"

tb_init $N
tb_key
for ((k = 1; k <= N; k++)); do
  tb_docroot "$k"
  TB_BE_EXTRA[k]=$(printf 'upstream = "127.0.0.1:8080"\nproxy_protocol = 2\nx_forwarded_for = true')
done
head -c 12000000 /dev/urandom >"$TB_DIR/www/.common/f12m.bin"
# Hard links: the same inode, so the same mtime, length and ETag on every nginx. Six
# names, so that content-aware placement spreads the downloads over the BEs.
for ((k = 1; k <= N; k++)); do
  mkdir -p "$TB_DIR/www/be$k/post"
  for ((j = 0; j < 6; j++)); do
    ln -f "$TB_DIR/www/.common/f12m.bin" "$TB_DIR/www/be$k/f12m.$j.bin"
    ln -f "$TB_DIR/www/.common/f12m.bin" "$TB_DIR/www/be$k/post/f12m.$j.bin"
  done
done
SHA12=$(sha256sum <"$TB_DIR/www/.common/f12m.bin")
SHA12=${SHA12%% *}
# An agent crash is detected at once (its kernel closes the control links); a longer
# dead_after_ms than failover's 250 ms default keeps a loaded machine's late heartbeat
# from failing a live BE over (be_failover measures detection).
TB_CLUSTER_EXTRA=$'failover = "ring"\nheartbeat_ms = 100\ndead_after_ms = 2000'
# A host failure is detected by that silence alone: failover's defaults (50/250 ms),
# which the issue's 300 ms bound is about (the test runs alone).
[[ $HOW == host ]] && TB_CLUSTER_EXTRA='failover = "ring"'
tb_config

nginx_conf() {
  local k=$1 dir=$TB_DIR/nginx$1
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<NGX
daemon off;
master_process on;
worker_processes 1;
user root;
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
    listen 127.0.0.1:8080 proxy_protocol;
    root $TB_DIR/www/be$k;
    # A POST here is answered with the static file (nginx says 405 to a POST for a
    # static file; error_page turns that into the file): a long response, so that the
    # POST is in flight when its BE dies.
    location /post/ { error_page 405 =200 \$uri; }
  }
}
NGX
}
nginx_start() {
  local k=$1 i
  tb_spawn "nginx$k" "${TB_NS_BE[k]}" "$NGINX" -e stderr -p "$TB_DIR/nginx$k" \
    -c "$TB_DIR/nginx$k/nginx.conf"
  for ((i = 0; i < 100; i++)); do
    tb_be "$k" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080' 2>/dev/null && return 0
    tb__alive "nginx$k" || break
    sleep 0.05
  done
  tb_fail "nginx on be$k did not start listening"
}
for ((k = 1; k <= N; k++)); do
  nginx_conf "$k"
  nginx_start "$k"
  tb_start_be "$k"
done
tb_start_fe
tb_wait_ready
tb_small_buffers

# A slow POST: prints its local port, then reads the response at ~1.2 MB/s and prints
# how it ended: "ok" (the whole file), "reset", or "short N" (a FIN after N bytes).
cat >"$TB_DIR/post.py" <<'PY'
import hashlib, socket, sys, time
vip, sha = sys.argv[1:3]  # argv[3]: which of the six names
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(30)
s.connect((vip, 80))
print(s.getsockname()[1], flush=True)
s.sendall(f"POST /post/f12m.{sys.argv[3]}.bin HTTP/1.1\r\nHost: {vip}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".encode())
buf = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
        time.sleep(0.08)
except ConnectionResetError:
    print("reset", flush=True)
    sys.exit(0)
except socket.timeout:
    print("timeout", len(buf), flush=True)
    sys.exit(0)
head, _, body = buf.partition(b"\r\n\r\n")
ok = head.startswith(b"HTTP/1.1 200") and hashlib.sha256(body).hexdigest() == sha
print("ok" if ok else f"short {len(buf)}", flush=True)
PY

mkdir -p "$TB_DIR/dl" "$TB_DIR/post"
pids=()
for ((i = 0; i < N_POST; i++)); do
  tb_c python3 "$TB_DIR/post.py" "$TB_VIP" "$SHA12" "$i" >"$TB_DIR/post/$i" 2>&1 &
  pids+=($!)
done
# Every POST connected (python starts slowly on a loaded machine), then the downloads.
for ((t = 0; t < 100; t++)); do
  n=0
  for ((i = 0; i < N_POST; i++)); do [[ -s $TB_DIR/post/$i ]] && n=$((n + 1)); done
  ((n == N_POST)) && break
  sleep 0.1
done
args=()
for ((i = 0; i < N_DL; i++)); do args+=(-o "$TB_DIR/dl/$i" "http://$TB_VIP/f12m.$((i % 6)).bin"); done
tb_c curl -sS --noproxy '*' --parallel --parallel-immediate --parallel-max "$N_DL" --max-time 60 \
  --limit-rate "$RATE" "${args[@]}" >"$TB_DIR/dl/curl.out" 2>&1 &
pids+=($!)
# ... and every download is on a BE (curl opens 100 connections slowly next to them).
for ((t = 0; t < 100; t++)); do
  n=0
  for ((k = 1; k <= N; k++)); do n=$((n + $(tb_status_json "be$k" | jq -r .active))); done
  ((n >= N_DL + N_POST)) && break
  sleep 0.1
done
echo "$n connections on the BEs:$(for ((k = 1; k <= N; k++)); do echo -n " be$k $(tb_status_json "be$k" | jq -r .active)"; done)"
sleep 3
# The victim: the BE that holds POST 0's connection (its client port in that BE's ss).
port=$(head -n 1 "$TB_DIR/post/0")
[[ $port =~ ^[0-9]+$ ]] || tb_fail "POST 0 did not connect: $(cat "$TB_DIR/post/0")"
v=0
for ((k = 1; k <= N; k++)); do
  if tb_be "$k" ss -Htn state established "( sport = :80 and dport = :$port )" | grep -q .; then v=$k; fi
done
((v > 0)) || tb_fail "no BE holds POST 0's connection (client port $port)"
post_ports_on_v=0
for ((i = 0; i < N_POST; i++)); do
  p=$(head -n 1 "$TB_DIR/post/$i")
  tb_be "$v" ss -Htn state established "( sport = :80 and dport = :$p )" | grep -q . &&
    post_ports_on_v=$((post_ports_on_v + 1))
done
before=$(tb_status_json "be$v" | jq -r '.active')
echo "be$v serves $before connections ($post_ports_on_v POSTs) when its $HOW dies"
((before > post_ports_on_v)) || tb_fail "be$v serves no download: nothing to resume (placement)"
[[ $HOW == host ]] && ip -n "${TB_NS_BE[v]}" link set eth0 down
tb_kill_be "$v"
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
ok=0
for ((i = 0; i < N_DL; i++)); do
  sum=$(sha256sum <"$TB_DIR/dl/$i" 2>/dev/null) || sum=missing
  if [[ ${sum%% *} == "$SHA12" ]]; then
    ok=$((ok + 1))
  else
    echo "download $i: $(stat -c %s "$TB_DIR/dl/$i" 2>/dev/null || echo no) bytes, not the file"
  fi
done
((ok == N_DL)) || echo "curl: $(head -c 2000 "$TB_DIR/dl/curl.out")"
resets=0 posts_ok=0
for ((i = 0; i < N_POST; i++)); do
  r=$(sed -n 2p "$TB_DIR/post/$i")
  case $r in
    reset) resets=$((resets + 1)) ;;
    ok) posts_ok=$((posts_ok + 1)) ;;
    *) echo "POST $i: $r" ;;
  esac
done
# nginx logs a request when it ends (the dead agent's upstream connections were closed).
sleep 1
posts_logged=$(cat "$TB_DIR"/nginx*/access.log | grep -c '"POST /post/f12m' || true)
js=$(tb_status_json fe)
echo "FE failover: $(jq -c .failover <<<"$js")"
resumed=0
for ((k = 1; k <= N; k++)); do
  [[ $k == "$v" ]] && continue
  echo "be$k relay: $(tb_status_json "be$k" | jq -c '{resumed: .relay.resumed, resume_failed: .relay.resume_failed}')"
  resumed=$((resumed + $(tb_status_json "be$k" | jq -r .relay.resumed)))
done
echo "relay_failover ($HOW): $ok/$N_DL downloads byte-exact; POSTs: $posts_ok complete, $resets reset" \
  "($post_ports_on_v were on be$v), $posts_logged in the nginx logs; $resumed responses resumed" \
  "by the backups; detection $(jq -r .failover.last.silent_ms <<<"$js") ms, recovery" \
  "$(jq -r .failover.last.recovery_ms <<<"$js") ms after it"
((ok == N_DL)) || tb_fail "$((N_DL - ok)) of $N_DL downloads failed"
((resets == post_ports_on_v)) || tb_fail "$resets POSTs were reset, $post_ports_on_v were on be$v"
((posts_ok + resets == N_POST)) || tb_fail "a POST neither completed nor was reset"
# Every download of the dead BE was taken over (a few had no response byte yet: asked
# again from the start), every POST on it reset and counted lost.
recovered=$(jq -r .failover.last.recovered <<<"$js")
lost=$(jq -r .failover.last.lost <<<"$js")
((recovered == before - post_ports_on_v)) || tb_fail "$recovered recovered, be$v served $((before - post_ports_on_v)) downloads"
((lost == post_ports_on_v)) || tb_fail "$lost lost, be$v served $post_ports_on_v POSTs"
((resumed > 0)) || tb_fail "no response was resumed"
((posts_logged == N_POST)) || tb_fail "nginx logged $posts_logged POSTs for $N_POST sent (a second execution?)"
[[ $(jq -r '.failover.last.backend' <<<"$js") == "be$v" ]] || tb_fail "the FE did not fail be$v over"
echo "PASS: relay_failover ($HOW failure)"
