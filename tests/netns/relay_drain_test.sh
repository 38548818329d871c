#!/usr/bin/env bash
# Drain moves relayed connections too (issue 12, relay mode): three BEs relaying to
# their own nginx (PROXY v2), 24 idle keep-alive connections spread over them.
# `tcpha drain be1`: be1 holds 0 connections within 1.5 s, and the next request on
# every one of the 24 connections (the same TCP connections: the client never
# reconnects) is answered by be2's or be3's nginx; each nginx saw the client's address.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd jq python3
NGINX=${NGINX:-/usr/sbin/nginx}
[[ -x $NGINX ]] || {
  echo "SKIP: no nginx at $NGINX" >&2
  exit 77
}
tb_require_tcpha
tb_init 3
tb_key
for k in 1 2 3; do
  tb_docroot "$k"
  TB_BE_EXTRA[k]=$'upstream = "127.0.0.1:8080"\nproxy_protocol = 2'
done
tb_config

# nginx k: private prefix under TB_DIR, in the foreground (the bed stops it), serving
# be k's docroot (its whoami.txt says "bek").
for k in 1 2 3; do
  dir=$TB_DIR/nginx$k
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  log_format relay '\$proxy_protocol_addr "\$request" \$status';
  access_log $dir/access.log relay;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:8080 proxy_protocol;
    root $TB_DIR/www/be$k;
  }
}
EOF
  tb_spawn "nginx$k" "${TB_NS_BE[k]}" "$NGINX" -e stderr -p "$dir" -c "$dir/nginx.conf"
  up=0
  for ((i = 0; i < 100; i++)); do
    if tb_be "$k" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080' 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.05
  done
  ((up)) || tb_fail "nginx on be$k did not start listening"
  tb_start_be "$k"
done
tb_start_fe
tb_wait_ready

N=24
CLI=$TB_DIR/idle
mkdir -p "$CLI"
be_active() { tb_status_json "be$1" | jq -e .active; }
be_num() { tb_status_json "be$1" | jq -e "$2"; }

echo "== $N idle keep-alive connections"
tb_spawn --log "$TB_DIR/idle.log" idle "$TB_NS_C" python3 "$HERE/idle_clients.py" "$TB_VIP" "$N" "$CLI"
tb_until 30000 test -f "$CLI/ready" || tb_fail "the clients did not connect: $(cat "$TB_DIR/idle.log")"
grep -q ERROR "$CLI/round-0" && tb_fail "first requests failed: $(grep ERROR "$CLI/round-0" | head -3)"
echo "first requests: be1 $(grep -c ' be1$' "$CLI/round-0") be2 $(grep -c ' be2$' "$CLI/round-0")" \
  "be3 $(grep -c ' be3$' "$CLI/round-0")"
on_be1=$(be_active 1)
((on_be1 > 0)) || tb_fail "no connection on be1 to drain"

echo "== drain be1 ($on_be1 relayed connections)"
"$TB_TCPHA" drain be1 --socket "$TB_DIR/fe.sock" >/dev/null || tb_fail "tcpha drain be1 failed"
tb_until 1500 eval '(($(be_active 1) == 0))' ||
  tb_fail "be1 still holds $(be_active 1) connections 1.5 s after the drain (want 0)"
drain_ms=$TB_UNTIL_MS
moved=$(be_num 1 .counters.moved_out)
echo "be1 empty ${drain_ms} ms after the drain; moved_out $moved (relay: moved_away $(be_num 1 .relay.moved_away)," \
  "taken_back $(be_num 1 .relay.taken_back)), move_failed $(be_num 1 .counters.move_failed)"
((moved >= on_be1)) || tb_fail "be1 moved $moved connections, want >= $on_be1"
touch "$CLI/go-1"
tb_until 30000 test -f "$CLI/round-1" || tb_fail "round 1: the clients did not answer in 30 s"
if grep -q ERROR "$CLI/round-1"; then
  grep ERROR "$CLI/round-1" | head -5 >&2
  tb_fail "round 1: $(grep -c ERROR "$CLI/round-1") of $N connections failed"
fi
res="be1 $(grep -c ' be1$' "$CLI/round-1" || true) be2 $(grep -c ' be2$' "$CLI/round-1" || true) be3 $(grep -c ' be3$' "$CLI/round-1" || true)"
echo "next request on every connection: $res"
[[ $res == "be1 0 "* ]] || tb_fail "be1 answered while drained: $res"
for k in 2 3; do
  bad=$(grep -v "^$TB_SUBNET.2 " "$TB_DIR/nginx$k/access.log" || true)
  [[ -z $bad ]] || tb_fail "nginx on be$k saw another address than the client's: $(head -n 2 <<<"$bad")"
done
echo "nginx on be2 and be3: every request with the client's address $TB_SUBNET.2"
touch "$CLI/stop"
echo "PASS: relay_drain"
