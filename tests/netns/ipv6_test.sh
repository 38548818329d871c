#!/usr/bin/env bash
# IPv6 clients on the IPv6 VIP (issue 15): FE + 3 BEs with vip6 set, be3 relaying to
# nginx. Checked, in order:
#   - IPv6 downloads of 1 KB..12 MB byte-exact, sequential, then concurrent with IPv4
#     downloads beside them; the responses bypass the FE (its eth0 sends < 5% of the
#     response bytes); every connection is handed off;
#   - a kept-alive IPv6 connection carries two requests, and one whose requests change
#     group moves between BEs (multi-handoff);
#   - the FE's access log and status (JSON and text) show the IPv6 client, served by
#     every BE; nginx behind be3's relay gets it in PROXY v2 and X-Forwarded-For;
#   - only the FE answers neighbour discovery for vip6 (the client's neighbour entry,
#     and every advertisement explicit solicitations draw);
#   - the BEs' guard drops IPv6 segments to vip6 that have no socket (no RST);
#   - an FE killed and restarted during an IPv6 download learns it from its BE (OWNED)
#     and the download finishes byte-exact;
#   - `tcpha fe --takeover` gets the IPv6 listeners handed over and keeps vip6.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB_IPV6=1
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum awk python3
NGINX=${NGINX:-/usr/sbin/nginx}
[[ -x $NGINX ]] || {
  echo "SKIP: no nginx at $NGINX (scripts/deps.sh installs it)" >&2
  exit 77
}
tb_require_tcpha
tb_init 3
tb_key
for k in 1 2 3; do tb_docroot "$k"; done
# A 12 MB file, for this test only (the bed's largest is 10 MB).
tb__gen f12m.bin 12582912 >"$TB_DIR/www/.common/f12m.bin"
for k in 1 2 3; do ln -f "$TB_DIR/www/.common/f12m.bin" "$TB_DIR/www/be$k/f12m.bin"; done
sum=$(sha256sum <"$TB_DIR/www/.common/f12m.bin")
TB_SHA[f12m.bin]=${sum%% *}
TB_SIZE[f12m.bin]=12582912
# /whoami.txt is served by be1 only, /index.html by be2 only (moves); the rest by all.
TB_BE_GROUPS=([1]='"all", "one"' [2]='"all", "two"' [3]='"all"')
# be3 relays to nginx on 127.0.0.1:8080 (PROXY v2 and X-Forwarded-For), which serves
# the same files and logs the client address both carry.
TB_BE_EXTRA[3]=$'upstream = "127.0.0.1:8080"\nproxy_protocol = 2\nx_forwarded_for = true'
mkdir -p "$TB_DIR/nginx"
cat >"$TB_DIR/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $TB_DIR/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  log_format relay '\$proxy_protocol_addr "\$request" \$status "\$http_x_forwarded_for"';
  access_log $TB_DIR/nginx/access.log relay;
  client_body_temp_path $TB_DIR/nginx/body;
  proxy_temp_path $TB_DIR/nginx/proxy;
  fastcgi_temp_path $TB_DIR/nginx/fastcgi;
  uwsgi_temp_path $TB_DIR/nginx/uwsgi;
  scgi_temp_path $TB_DIR/nginx/scgi;
  default_type application/octet-stream;
  sendfile on;
  server {
    listen 127.0.0.1:8080 proxy_protocol;
    root $TB_DIR/www/be3;
  }
}
EOF
TB_FE_EXTRA="access_log = \"$TB_DIR/access.log\"" tb_config "$(
  cat <<'EOF'
[[rule]]
name = "one"
path = '^/whoami\.txt$'
group = "one"
policy = "round-robin"

[[rule]]
name = "two"
path = '^/index\.html$'
group = "two"
policy = "round-robin"
EOF
)"
tb_spawn nginx "${TB_NS_BE[3]}" "$NGINX" -e stderr -p "$TB_DIR/nginx" -c "$TB_DIR/nginx/nginx.conf"
tb_until 5000 tb_be 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080' || tb_fail "nginx on be3 did not start"
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

V6="http://[$TB_VIP6]"
FE_MAC=02:00:0a:c8:00:01
curl6() { tb_c curl -gsS --noproxy '*' --max-time 30 "$@"; }
fetch6() { # fetch6 FILE: byte-exact over IPv6, prints the size
  local f=$1 out=$TB_DIR/dl6/last res s
  mkdir -p "$TB_DIR/dl6"
  res=$(curl6 -o "$out" -w '%{http_code} %{size_download}' "$V6/$f") || { echo "curl failed" >&2; return 1; }
  [[ ${res%% *} == 200 ]] || { echo "HTTP ${res%% *}" >&2; return 1; }
  s=$(sha256sum <"$out")
  [[ ${s%% *} == "${TB_SHA[$f]}" ]] || { echo "content differs (${res##* } bytes)" >&2; return 1; }
  echo "${res##* }"
}

for who in fe be1 be2 be3; do
  ns=$TB_NS_FE
  [[ $who == fe ]] || ns=${TB_NS_BE[${who#be}]}
  dev=lo
  [[ $who != fe ]] || dev=eth0
  addrs=$(ip -n "$ns" -6 addr show dev "$dev")
  [[ $addrs == *"inet6 $TB_VIP6/128"* ]] || tb_fail "$who does not hold $TB_VIP6 on $dev: $addrs"
done

ok0=$(tb_fe_counter handoff_ok)
fe_tx0=$(tb_iface_tx_bytes "$TB_NS_FE")
bytes=0
files=(f1k.bin f10k.bin f100k.bin f1m.bin f10m.bin f12m.bin)

echo "== IPv6: 1 KB..12 MB, sequential"
for f in "${files[@]}" "${files[@]}"; do
  n=$(fetch6 "$f") || tb_fail "IPv6 GET /$f failed"
  bytes=$((bytes + n))
done

echo "== IPv6 and IPv4 concurrently: 6 + 6 downloads"
mkdir -p "$TB_DIR/dl"
for ((i = 0; i < 12; i++)); do
  f=${files[i % 6]}
  url="http://$TB_VIP/$f"
  ((i % 2)) || url="$V6/$f"
  tb_spawn --log "$TB_DIR/dl/$i.out" "dl$i" "$TB_NS_C" curl -gsS --noproxy '*' --max-time 40 \
    -o "$TB_DIR/dl/$i.body" -w '%{http_code} %{size_download}' "$url"
done
for ((i = 0; i < 12; i++)); do
  f=${files[i % 6]}
  rc=0
  tb_wait "dl$i" 45 || rc=$?
  out=$(<"$TB_DIR/dl/$i.out")
  s=$(sha256sum <"$TB_DIR/dl/$i.body")
  ((rc == 0)) && [[ ${out%% *} == 200 && ${s%% *} == "${TB_SHA[$f]}" ]] ||
    tb_fail "download $i ($( ((i % 2)) && echo IPv4 || echo IPv6) /$f): curl exit $rc, '$out', $([[ ${s%% *} == "${TB_SHA[$f]}" ]] && echo same || echo differs)"
  bytes=$((bytes + ${out##* }))
done

fe_tx=$(($(tb_iface_tx_bytes "$TB_NS_FE") - fe_tx0))
pct=$(awk -v a="$fe_tx" -v b="$bytes" 'BEGIN { printf "%.3f", 100 * a / b }')
echo "responses: $bytes bytes to the client; FE eth0 transmitted $fe_tx bytes ($pct%)"
((fe_tx * 20 < bytes)) || tb_fail "the FE transmitted $pct% of the response bytes (limit 5%)"
ok=$(($(tb_fe_counter handoff_ok) - ok0))
((ok >= 24)) || tb_fail "only $ok handoffs for 24 connections: not every one was handed off"

echo "== IPv6 keep-alive: two requests on one connection"
out=$(curl6 -w '%{http_code} %{num_connects}\n' -o "$TB_DIR/ka1" "$V6/f100k.bin" \
  -o "$TB_DIR/ka2" "$V6/f1m.bin") || tb_fail "keep-alive pair failed: $out"
[[ $out == $'200 1\n200 0' ]] ||
  tb_fail "keep-alive pair: want '200 1' then '200 0', got: $(tr '\n' ' ' <<<"$out")"
for pair in ka1:f100k.bin ka2:f1m.bin; do
  s=$(sha256sum <"$TB_DIR/${pair%%:*}")
  [[ ${s%% *} == "${TB_SHA[${pair#*:}]}" ]] || tb_fail "keep-alive: /${pair#*:} content differs"
done

echo "== IPv6 multi-handoff: one connection, its requests alternating be1 / be2 / any"
moved_out() { echo $(($(tb_status_json be1 | jq .counters.moved_out) + $(tb_status_json be2 | jq .counters.moved_out) + $(tb_status_json be3 | jq .counters.moved_out))); }
moved0=$(moved_out)
args=()
for ((i = 0; i < 9; i++)); do
  case $((i % 3)) in
    0) u=whoami.txt ;;
    1) u=index.html ;;
    2) u=f1m.bin ;;
  esac
  args+=(-o "$TB_DIR/mv$i" "$V6/$u")
done
out=$(curl6 -w '%{http_code} %{num_connects}\n' "${args[@]}") || tb_fail "IPv6 moves: curl failed: $out"
[[ $(tr '\n' ' ' <<<"$out") == "200 1 $(printf '200 0 %.0s' 1 2 3 4 5 6 7 8)" ]] ||
  tb_fail "IPv6 moves: want 9 x 200 on one connection, got: $(tr '\n' ' ' <<<"$out")"
for i in 0 3 6; do [[ $(<"$TB_DIR/mv$i") == be1 ]] || tb_fail "IPv6 moves: /whoami.txt answered by '$(<"$TB_DIR/mv$i")', not be1"; done
for i in 2 5 8; do
  s=$(sha256sum <"$TB_DIR/mv$i")
  [[ ${s%% *} == "${TB_SHA[f1m.bin]}" ]] || tb_fail "IPv6 moves: /f1m.bin (request $i) differs"
done
moves_ge() { (($(moved_out) - moved0 >= $1)); }
tb_until 3000 moves_ge 4 || true
moved=$(($(moved_out) - moved0))
((moved >= 4)) || tb_fail "IPv6 moves: the BEs count $moved moves out, want >= 4"

echo "== access log and status"
tb_until 3000 grep -q " \[$TB_SUBNET6:2\]:[0-9]* \"GET /f12m.bin HTTP/1.1\" rule=default backend=be" \
  "$TB_DIR/access.log" || tb_fail "no IPv6 client in the access log: $(tail -3 "$TB_DIR/access.log")"
grep -q " $TB_C_ADDR:[0-9]* \"GET /f12m.bin" "$TB_DIR/access.log" ||
  tb_fail "no IPv4 client in the access log"
for k in 1 2 3; do
  grep -q " \[$TB_SUBNET6:2\]:[0-9]* \"GET [^\"]*\" rule=default backend=be$k " "$TB_DIR/access.log" ||
    tb_fail "the access log shows no IPv6 client served by be$k"
done
# The relay's PROXY v2 header and X-Forwarded-For carry the IPv6 client, bare.
# Which BE the concurrent downloads above reached is up to the FE workers' round-robin:
# more requests of each family (at most 9, sequential: every BE's turn comes) until one
# reaches be3.
relay_saw() { grep -q "^$1 \"GET [^\"]*\" 200 \"$1\"$" "$TB_DIR/nginx/access.log"; }
for ((i = 0; i < 9; i++)); do
  tb_until 500 relay_saw "$TB_SUBNET6:2" && break
  fetch6 f1k.bin >/dev/null || tb_fail "IPv6 GET /f1k.bin failed"
done
relay_saw "$TB_SUBNET6:2" ||
  tb_fail "nginx (behind be3's relay) logged no IPv6 client: $(tail -3 "$TB_DIR/nginx/access.log")"
for ((i = 0; i < 9; i++)); do
  tb_until 500 relay_saw "$TB_C_ADDR" && break
  tb_curl f1k.bin -o /dev/null || tb_fail "IPv4 GET /f1k.bin failed"
done
relay_saw "$TB_C_ADDR" ||
  tb_fail "nginx (behind be3's relay) logged no IPv4 client: $(tail -3 "$TB_DIR/nginx/access.log")"
js=$(tb_status_json fe)
[[ $(jq -r .vip6 <<<"$js") == "$TB_VIP6" ]] || tb_fail "FE status: vip6 is $(jq -c .vip6 <<<"$js")"
text=$(timeout 5 "$TB_TCPHA" status --socket "$TB_DIR/fe.sock")
[[ $text == *"VIP $TB_VIP $TB_VIP6 "* ]] || tb_fail "tcpha status does not show both VIPs: $(head -1 <<<"$text")"

echo "== neighbour discovery: only the FE answers for $TB_VIP6"
lladdr=$(tb_c ip -6 neigh show "$TB_VIP6" dev eth0 | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')
[[ $lladdr == "$FE_MAC" ]] || tb_fail "the client's neighbour entry for $TB_VIP6 is '$lladdr', not the FE's $FE_MAC"
# Solicitations to the VIP's solicited-node group and to all nodes: every BE has the
# address (on lo); every advertisement must come from the FE.
macs=$(tb_c python3 - "$TB_VIP6" <<'EOF'
import socket, struct, sys, time
target = socket.inet_pton(socket.AF_INET6, sys.argv[1])
ifindex = socket.if_nametoindex("eth0")
mac = open("/sys/class/net/eth0/address").read().strip()
tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
tap.bind(("eth0", 0))
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
ns = struct.pack("!BBHI", 135, 0, 0, 0) + target + bytes([1, 1]) + bytes.fromhex(mac.replace(":", ""))
snode = "ff02::1:ff" + target[13:14].hex() + ":" + target[14:16].hex()
for dst in (snode, "ff02::1", snode):
    s.sendto(ns, (dst, 0, 0, ifindex))
    time.sleep(0.05)
seen = set()
deadline = time.monotonic() + 1.0
while (left := deadline - time.monotonic()) > 0:
    tap.settimeout(left)
    try:
        f = tap.recv(2048)
    except socket.timeout:
        break
    # Ethernet 14 + IPv6 40: next header 58 (ICMPv6), type 136 (NA) for our target.
    if len(f) >= 14 + 40 + 24 and f[14 + 6] == 58 and f[54] == 136 and f[62:78] == target:
        seen.add(f[6:12].hex(":"))
print(" ".join(sorted(seen)))
EOF
)
[[ $macs == "$FE_MAC" ]] || tb_fail "neighbour advertisements for $TB_VIP6 came from '$macs', want only the FE ($FE_MAC)"

echo "== the BEs' guard covers vip6: segments without a socket are dropped, not reset"
be1_mac=$(tb_be 1 cat /sys/class/net/eth0/address)
nosock() { tb_status_json be1 | jq -er '.datapath.guard_nosock'; }
# send6 FLAGS COUNT: TCP segments from the client's IPv6 address to [vip6]:80, straight
# to be1's MAC; prints the RSTs from vip6 the client's interface sees within 1 s.
send6() {
  tb_c python3 - "$TB_SUBNET6:2" "$TB_VIP6" "$be1_mac" "$1" "$2" <<'EOF'
import random, socket, struct, sys, time
src, dst, mac, flags, count = sys.argv[1:6]
s_a, d_a = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
fl = {"ACK": 0x10, "SYN": 0x02}[flags]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
tap.bind(("eth0", 0))
own = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
for i in range(int(count)):
    tcp = struct.pack("!HHIIBBHHH", 41000 + i, 80, random.getrandbits(32),
                      random.getrandbits(32) if fl & 0x10 else 0, 5 << 4, fl, 64240, 0, 0)
    pseudo = s_a + d_a + struct.pack("!I3xB", len(tcp), 6)
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + s_a + d_a
    tap.send(bytes.fromhex(mac.replace(":", "")) + own + b"\x86\xdd" + ip + tcp)
    time.sleep(0.01)
rst = 0
end = time.monotonic() + 1.0
while (left := end - time.monotonic()) > 0:
    tap.settimeout(left)
    try:
        f = tap.recv(2048)
    except socket.timeout:
        break
    if f[12:14] == b"\x86\xdd" and f[20] == 6 and f[22:38] == d_a and f[54 + 13] & 0x04:
        rst += 1
print(rst)
EOF
}
n0=$(nosock)
rsts=$(send6 ACK 10)
n1=$(nosock)
echo "guard_nosock $n0 -> $n1; RSTs: $rsts"
((rsts == 0)) || tb_fail "be1 answered $rsts of 10 IPv6 segments without a socket with an RST"
((n1 - n0 >= 10)) || tb_fail "be1's guard dropped $((n1 - n0)) of 10 IPv6 segments without a socket"
# The control: SYNs pass the guard and be1's stack resets them (nothing listens on
# [vip6]:80 there), so the RST watch above sees what it must not.
rsts=$(send6 SYN 3)
((rsts >= 1)) || tb_fail "no RST for 3 IPv6 SYNs to be1: the RST watch sees nothing"

echo "== the FE killed and restarted during an IPv6 download: the new one learns it (OWNED)"
tb_c sysctl -qw net.ipv4.tcp_rmem="4096 65536 131072" # IPv6 TCP too: the download streams
t_dl=$(tb__now_ms)
# A steady 1 MB/s reader (10 s for the file): curl's --limit-rate lets bursts through, and
# once finished the whole file before the restart.
tb_spawn --log "$TB_DIR/dl/0.out" dl0 "$TB_NS_C" python3 "$HERE/slow_get.py" "$TB_VIP6" 80 \
  /f10m.bin "$TB_DIR/dl/0.body" 1000000
sleep 0.5
kill -KILL "${TB_PID[fe]}"
tb__reap fe || true
cp "$TB_DIR/fe.log" "$TB_DIR/fe-killed.log"
TB_LOGS+=("fe-killed=$TB_DIR/fe-killed.log")
sleep 0.5
tb__alive dl0 || tb_fail "the IPv6 download ended before the restart, $(($(tb__now_ms) - t_dl)) ms after it started: $(cat "$TB_DIR/dl/0.out")"
tb_start_fe
tb_wait_ready 10
# resynced counts what the restarted FE learned from a BE (it starts from 0).
learned() { (($(tb_fe_counter resynced) >= 1)); }
tb_until 3000 learned || tb_fail "the restarted FE learned no connection from the BEs (resynced $(tb_fe_counter resynced))"
tb_downloads_ok 1 f10m.bin "${TB_SIZE[f10m.bin]}"
((TB_DL_OK == 1)) || tb_fail "the IPv6 download across the FE's restart did not finish byte-exact"
echo "restart: the IPv6 download finished byte-exact ($(cut -d" " -f3 "$TB_DIR/dl/0.out") s); the new FE learned $(tb_fe_counter resynced) connection(s)"
n=$(fetch6 f100k.bin) || tb_fail "IPv6 GET after the restart failed"

echo "== tcpha fe --takeover hands the IPv6 listeners and vip6 over"
workers=$(tb_status_json fe | jq -er .workers)
tb_spawn fenew "$TB_NS_FE" "$TB_TCPHA" fe -c "$TB_DIR/cluster.toml" --socket "$TB_DIR/fe.sock" --takeover
tb_wait fe 10 || tb_fail "the old FE did not exit 0 within 10 s of the takeover"
tb__alive fenew || tb_fail "the new FE is gone after the takeover"
# One listener per worker and VIP (IPv4 and IPv6), and the registration socket.
tb_until 3000 grep -q "takeover: $((2 * workers + 1)) sockets handed over" "$TB_DIR/fenew.log" ||
  tb_fail "the new FE did not get $((2 * workers + 1)) sockets: $(grep -h 'sockets handed' "$TB_DIR/fenew.log")"
addrs=$(ip -n "$TB_NS_FE" -6 addr show dev eth0)
[[ $addrs == *"inet6 $TB_VIP6/128"* ]] || tb_fail "$TB_VIP6 left the FE's interface with the old FE"
n=$(fetch6 f1m.bin) || tb_fail "IPv6 GET after the takeover failed"
[[ $(tb_c curl -sS --noproxy '*' --max-time 10 "http://$TB_VIP/whoami.txt") == be1 ]] ||
  tb_fail "IPv4 GET after the takeover failed"

echo "IPv6: $ok handoffs, $moved moves, FE tx $pct% of the response bytes, NA only from $macs"
echo "PASS: ipv6"
