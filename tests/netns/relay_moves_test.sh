#!/usr/bin/env bash
# Multi-handoff in relay mode (issue 12, "Relay mode"): every BE relays to its own
# stock nginx (PROXY protocol v2 and X-Forwarded-For), the content is partitioned
# (pages only on be1's nginx, images on be2's, assets on be3's), and a BE moves a
# live keep-alive connection to the BE of each later request's group:
#   1. one curl run, 30 URLs alternating groups (the .css ones gzip'd by nginx, so
#      chunked): one TCP connection, every body byte-exact, the BEs' relays count
#      the moves;
#   2. a request no rule matches, on a moved connection: 404 from the relay, the
#      connection carries on;
#   3. 5 requests pipelined in one write across groups (one 4 MB): in order, exact;
#      an upgrade request nginx does not grant, with requests for the other BEs
#      pipelined after it: still routed and moved; 10 concurrent keep-alive clients
#      for 5 s over a mixed URL list, every body checked;
#   4. every nginx saw the client's address (PROXY header and X-Forwarded-For) for
#      the requests of moved connections, never the FE's or a BE's;
#   5. counters: moves out = moves in, none failed or refused;
#   6. a move whose target BE is stopped (SIGSTOP) fails: the relay takes the
#      connection back (a new upstream connection), answers 503 on it, serves its own
#      group's next request, and moves again once the target resumes;
#   7. a response that ends only when nginx closes (gzip'd, not chunked): the request
#      for another BE pipelined after it is not moved (relay.moves_refused); the
#      response arrives whole, then the connection closes, as before multi-handoff.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3
NGINX=${NGINX:-/usr/sbin/nginx}
[[ -x $NGINX ]] || {
  echo "SKIP: no nginx at $NGINX" >&2
  exit 77
}
tb_require_tcpha
tb_init 3
tb_key

WWW=$TB_DIR/www
MANIFEST=$TB_DIR/manifest # "PATH SHA256 SIZE" per file, read by keepalive_client.py
CLIENT=$HERE/keepalive_client.py
CLIENT_ADDR=$TB_SUBNET.2
declare -A SHA=() SIZE=()
mkdir -p "$WWW/be1/pages" "$WWW/be2/img" "$WWW/be2/misc" "$WWW/be3/assets"

# put K PATH SIZE: SIZE random bytes at PATH in be K's nginx root only.
put() {
  local file=$WWW/be$1$2 sum
  head -c "$3" /dev/urandom >"$file"
  sum=$(sha256sum <"$file")
  SHA[$2]=${sum%% *}
  SIZE[$2]=$3
  echo "$2 ${SHA[$2]} $3" >>"$MANIFEST"
}

MB=1048576
URLS=()
for ((n = 1; n <= 10; n++)); do
  small=$((1000 + RANDOM % 60000))
  put 1 "/pages/p$n.html" $((n == 4 ? MB : small))
  put 2 "/img/i$n.png" $((n == 7 ? MB : small / 2 + 300))
  ext=js
  ((n % 2 == 0)) || ext=css
  put 3 "/assets/a$n.$ext" $((n == 10 ? MB : small / 3 + 100))
  URLS+=("/pages/p$n.html" "/img/i$n.png" "/assets/a$n.$ext")
done
put 3 /assets/big.js $((4 * MB))
mkdir -p "$WWW/be1/pages/legacy"
put 1 /pages/legacy/l1.html 20000
echo "no rule routes here" >"$WWW/be2/misc/note.txt"

TB_BE_GROUPS=([1]='"pages"' [2]='"images"' [3]='"assets"')
for k in 1 2 3; do
  TB_BE_EXTRA[k]=$'upstream = "127.0.0.1:8080"\nproxy_protocol = 2\nx_forwarded_for = true'
done
TB_NO_DEFAULT_RULE=1
TB_CLUSTER_EXTRA='dead_after_ms = 3000'
tb_config "$(
  cat <<'EOF'
[[rule]]
name = "pages"
path = '^/pages/.*\.html$'
group = "pages"
policy = "round-robin"

[[rule]]
name = "images"
path = '^/img/.*\.png$'
group = "images"
policy = "least-conn"

[[rule]]
name = "assets"
path = '^/assets/.*\.(js|css)$'
group = "assets"
policy = "hash"
EOF
)"

# nginx k: private prefix under TB_DIR, in the foreground (the bed stops it). Its log
# line: the PROXY header's address, the X-Forwarded-For header, the request.
nginx_conf() {
  local k=$1 dir=$TB_DIR/nginx$1
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;  # the root lies in the bed's private (0700) directory
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  log_format relay 'pp=\$proxy_protocol_addr xff=\$http_x_forwarded_for "\$request" \$status \$body_bytes_sent';
  access_log $dir/access.log relay;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  types { text/html html; image/png png; application/javascript js; text/css css; }
  default_type application/octet-stream;
  # gzip'd responses have no length: chunked.
  gzip on;
  gzip_types text/css;
  gzip_min_length 20;
  sendfile on;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:8080 proxy_protocol;
    root $WWW/be$k;
    # gzip'd without chunking: no length, so the response ends when nginx closes.
    location /pages/legacy/ { chunked_transfer_encoding off; }
  }
}
EOF
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

for k in 1 2 3; do
  nginx_conf "$k"
  nginx_start "$k"
  tb_start_be "$k"
done
tb_start_fe
tb_wait_ready

be_num() {
  local v
  v=$(tb_status_json "be$1" | jq -er "$2 | numbers") ||
    tb_fail "be$1 status has no number at $2: $(tb_status_json "be$1" | head -c 600)"
  echo "$v"
}
sum_be() { echo $(($(be_num 1 "$1") + $(be_num 2 "$1") + $(be_num 3 "$1"))); }

echo "== 1. one curl run, ${#URLS[@]} URLs alternating pages / img / assets, one connection"
args=()
mkdir -p "$TB_DIR/dl"
for ((i = 0; i < ${#URLS[@]}; i++)); do args+=(-o "$TB_DIR/dl/$i" "http://$TB_VIP:$TB_PORT${URLS[i]}"); done
rc=0
out=$(tb_c timeout 60 curl -sS --noproxy '*' --max-time 20 --compressed \
  -w '%{http_code} %{num_connects} %{size_download}\n' "${args[@]}" 2>"$TB_DIR/curl.err") || rc=$?
mapfile -t lines <<<"$out"
codes=$(awk '{ printf "%s ", $1 }' <<<"$out")
((rc == 0)) || tb_fail "step 1: curl exit status $rc ($(head -c 300 "$TB_DIR/curl.err")); HTTP codes: $codes"
((${#lines[@]} == ${#URLS[@]})) || tb_fail "step 1: curl reported ${#lines[@]} transfers, want ${#URLS[@]}"
connects=0
for ((i = 0; i < ${#URLS[@]}; i++)); do
  read -r code nc _ <<<"${lines[i]}"
  u=${URLS[i]}
  [[ $code == 200 ]] ||
    tb_fail "step 1: request $((i + 1)) of ${#URLS[@]} ($u) answered HTTP $code on the kept-alive connection, want 200; all codes: $codes"
  sum=$(sha256sum <"$TB_DIR/dl/$i")
  [[ ${sum%% *} == "${SHA[$u]}" ]] ||
    tb_fail "step 1: request $((i + 1)) ($u): $(stat -c %s "$TB_DIR/dl/$i") bytes that differ from the file (${SIZE[$u]} bytes)"
  connects=$((connects + nc))
done
((connects == 1)) || tb_fail "step 1: curl opened $connects TCP connections for ${#URLS[@]} URLs, want 1"
# The .css responses went gzip'd (a length nginx cannot know in advance: chunked).
chunked=0
while read -r path sent; do
  ((sent != SIZE[$path])) || tb_fail "step 1: nginx sent $path as is ($sent bytes), not gzip'd (chunked)"
  chunked=$((chunked + 1))
done < <(sed -n 's|.*"GET \(/assets/a[0-9]*\.css\) HTTP/1.1" 200 \([0-9]*\)$|\1 \2|p' "$TB_DIR/nginx3/access.log")
((chunked == 5)) || tb_fail "step 1: nginx on be3 logged $chunked .css responses, want 5"
echo "30 x 200 byte-exact over 1 connection ($chunked of them gzip'd, chunked)"
moves_out_ge() { (($(sum_be .counters.moved_out) >= $1)); }
tb_until 3000 moves_out_ge 29 || true
moved=$(sum_be .counters.moved_out)
away=$(sum_be .relay.moved_away)
((moved >= 29)) || tb_fail "step 1: the BEs count $moved moves out, want >= 29 (one per change of group)"
((away >= 29)) || tb_fail "step 1: the relays count $away connections handed over (relay.moved_away), want >= 29"
echo "moves out: $moved (relays handed over $away)"

echo "== 2. a request no rule matches, on a moved connection: 404, connection kept"
out=$(tb_c timeout 30 curl -sS --noproxy '*' --max-time 10 -w '%{http_code} %{num_connects}\n' \
  -o "$TB_DIR/dl/nr1" "http://$TB_VIP/pages/p1.html" -o "$TB_DIR/dl/nr2" "http://$TB_VIP/img/i1.png" \
  -o "$TB_DIR/dl/nr3" "http://$TB_VIP/misc/note.txt" -o "$TB_DIR/dl/nr4" "http://$TB_VIP/assets/a2.js") ||
  tb_fail "step 2: curl failed: $(tr '\n' ' ' <<<"$out")"
[[ $out == $'200 1\n200 0\n404 0\n200 0' ]] ||
  tb_fail "step 2: want '200 1', '200 0', '404 0', '200 0' (HTTP status, new connections) for pages, img, /misc/note.txt (no rule), assets; got: $(tr '\n' ' ' <<<"$out")"
for p in nr2:/img/i1.png nr4:/assets/a2.js; do
  sum=$(sha256sum <"$TB_DIR/dl/${p%%:*}")
  [[ ${sum%% *} == "${SHA[${p#*:}]}" ]] || tb_fail "step 2: ${p#*:} differs from the file"
done
(($(sum_be .relay.answered_here) >= 1)) || tb_fail "step 2: no relay counts the 404 it answered (relay.answered_here)"
echo "no-rule request answered 404 by the relay, the connection carried on"

echo "== 3. 5 requests pipelined in one write across groups (one 4 MB body)"
PIPE=(/pages/p2.html /img/i3.png /assets/big.js /pages/p4.html /img/i7.png)
out=$(tb_c timeout 60 python3 "$CLIENT" "$MANIFEST" "$TB_VIP" pipeline "${PIPE[@]}" 2>&1) ||
  tb_fail "step 3: $out"
echo "$out: in order, byte-exact, then EOF (Connection: close)"

echo "== 3b. an upgrade request nginx does not grant, then requests for other BEs, pipelined"
# The relay holds what follows an upgrade request until the server's answer is framed:
# 200 (no switch), so the bytes after it are still requests, routed and moved.
out=$(tb_c timeout 30 python3 - "$HERE" "$MANIFEST" "$TB_VIP" <<'PY' 2>&1
import sys
sys.path.insert(0, sys.argv[1])
import keepalive_client as kc
want = kc.load_manifest(sys.argv[2])
conn = kc.Conn(sys.argv[3])
up = kc.request("/pages/p3.html").replace(b"\r\n\r\n", b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
paths = ["/pages/p3.html", "/img/i4.png", "/assets/a4.js"]
conn.sock.sendall(up + kc.request(paths[1]) + kc.request(paths[2], close=True))
try:
    for i, p in enumerate(paths):
        status, _, body = conn.response("response %d (%s)" % (i + 1, p))
        kc.check(want, p, status, body, "after the upgrade request")
    conn.expect_eof("after Connection: close")
except kc.Failure as e:
    sys.exit(str(e))
print("3 of 3")
PY
) || tb_fail "step 3b: $out"
(($(be_num 1 .relay.upgrades_declined) >= 1)) || tb_fail "step 3b: be1's relay counts no declined upgrade"
echo "$out in order and byte-exact: the requests after the declined upgrade moved to be2 and be3"

echo "== 3c. 10 concurrent keep-alive clients for 5 s, mixed URLs"
out=$(tb_c timeout 60 python3 "$CLIENT" "$MANIFEST" "$TB_VIP" load 5 10 "${URLS[@]}" /assets/big.js 2>&1) ||
  tb_fail "step 3c: $out"
read -r _ load_requests _ load_bytes _ <<<"$out"
echo "$load_requests requests ($load_bytes bytes), 0 errors"

echo "== 4. the client's address at every nginx the connections visited"
for k in 1 2 3; do
  log=$TB_DIR/nginx$k/access.log
  n=$(wc -l <"$log")
  ((n > 0)) || tb_fail "step 4: nginx on be$k logged no request"
  bad=$(grep -v "^pp=$CLIENT_ADDR xff=$CLIENT_ADDR \"" "$log" || true)
  [[ -z $bad ]] || tb_fail "step 4: nginx on be$k logged requests without the client's address $CLIENT_ADDR in the PROXY header and X-Forwarded-For: $(head -n 3 <<<"$bad")"
  echo "be$k: $n requests, each with pp=$CLIENT_ADDR xff=$CLIENT_ADDR"
done
# be2 and be3 only ever get connections moved to them after the first request (all
# first requests of steps 1-3 are pages): the address they saw came with the move.
grep -q '"GET /img/i3.png HTTP/1.1" 200' "$TB_DIR/nginx2/access.log" ||
  tb_fail "step 4: be2's nginx did not serve the pipelined /img/i3.png"

echo "== 5. move counters"
moves_balanced() { (($(sum_be .counters.moved_out) == $(sum_be .counters.moved_in))); }
tb_until 3000 moves_balanced || true
for k in 1 2 3; do
  echo "be$k: moved_out $(be_num "$k" .counters.moved_out), moved_in $(be_num "$k" .counters.moved_in)," \
    "move_failed $(be_num "$k" .counters.move_failed), relay: moved_away $(be_num "$k" .relay.moved_away)," \
    "taken_back $(be_num "$k" .relay.taken_back), moves_refused $(be_num "$k" .relay.moves_refused)," \
    "move latency p50 $(be_num "$k" .move_latency_us.p50) us"
done
out_sum=$(sum_be .counters.moved_out)
in_sum=$(sum_be .counters.moved_in)
((out_sum == in_sum)) || tb_fail "step 5: $out_sum moves out, $in_sum in"
(($(sum_be .counters.move_failed) == 0)) || tb_fail "step 5: failed moves"
(($(sum_be .relay.taken_back) == 0)) || tb_fail "step 5: relays took connections back"
(($(sum_be .relay.moves_refused) == 0)) || tb_fail "step 5: relays refused moves (every nginx response here has a length or is chunked)"
((out_sum == $(sum_be .relay.moved_away))) ||
  tb_fail "step 5: $out_sum moves committed but the relays handed over $(sum_be .relay.moved_away)"

echo "== 6. the target BE stops during a move: the relay takes the connection back"
be2_pid=${TB_PID[be2]}
[[ $(cat "/proc/$be2_pid/comm") == tcpha ]] || tb_fail "step 6: pid $be2_pid of be2 is not tcpha"
rc=0
out=$(tb_c timeout 60 python3 "$CLIENT" "$MANIFEST" "$TB_VIP" fallback "$be2_pid" \
  /pages/p1.html /img/i2.png /assets/a2.js 5 2>&1) || rc=$?
kill -CONT "$be2_pid" 2>/dev/null || true
((rc == 0)) || tb_fail "step 6: $out"
read -r _ fb_status fb_secs <<<"$out"
back=$(be_num 1 .relay.taken_back)
((back >= 1)) || tb_fail "step 6: be1's relay took no connection back (relay.taken_back $back)"
echo "HTTP $fb_status after $fb_secs s with be2 stopped (be1's relay took the connection back $back time(s));"
echo "the same connection then served be1's file, and after be2 resumed, assets, images, pages"

echo "== 7. a close-delimited response: the request pipelined after it cannot move"
refused0=$(be_num 1 .relay.moves_refused)
out=$(tb_c timeout 30 python3 - "$HERE" "$MANIFEST" "$TB_VIP" <<'PY' 2>&1
import gzip, hashlib, sys
sys.path.insert(0, sys.argv[1])
import keepalive_client as kc
want = kc.load_manifest(sys.argv[2])
conn = kc.Conn(sys.argv[3])
legacy = kc.request("/pages/legacy/l1.html").replace(b"\r\n\r\n", b"\r\nAccept-Encoding: gzip\r\n\r\n")
conn.sock.sendall(legacy + kc.request("/img/i1.png"))
data = bytearray()
while True:
    try:
        chunk = conn.sock.recv(1 << 16)
    except OSError as e:
        sys.exit("reading the close-delimited response: %s" % e)
    if not chunk:
        break
    data += chunk
head, _, body = bytes(data).partition(b"\r\n\r\n")
lines = head.decode("latin-1").split("\r\n")
hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
if not lines[0].startswith("HTTP/1.1 200") or "content-length" in hdrs or "transfer-encoding" in hdrs:
    sys.exit("want a 200 without length or chunking, got %r %r" % (lines[0], hdrs))
sha, size = want["/pages/legacy/l1.html"]
plain = gzip.decompress(body)
if len(plain) != size or hashlib.sha256(plain).hexdigest() != sha:
    sys.exit("the close-delimited body differs from the file")
print("200 close-delimited, %d bytes gzip'd, exact; then EOF" % len(body))
PY
) || tb_fail "step 7: $out"
refused_ge() { (($(be_num 1 .relay.moves_refused) > refused0)); }
tb_until 2000 refused_ge || tb_fail "step 7: be1's relay counts no refused move (relay.moves_refused $(be_num 1 .relay.moves_refused))"
echo "$out; be1's relay refused the move of the request after it (moves_refused $(be_num 1 .relay.moves_refused))"
echo "PASS: relay_moves"
