#!/usr/bin/env bash
# The back-end's datapath guard (issue 17). The FE points a client's flow at a back-end
# from the moment it sends the HANDOFF, before the back-end has imported the socket;
# a segment that arrives in between must be dropped (the client retransmits it), not
# answered with an RST by the back-end's kernel, which would kill the connection.
# Here a host on the bed (the namespace of a third BE that is not started) sends
# what such a segment looks like to be1's MAC: an ACK from the client's address to the
# VIP with no socket behind it. Checked: be1's datapath counts it (guard_nosock) and
# no RST comes back to the client's address; a SYN to the VIP is not the guard's
# business (passed); and handoffs to be1 still work (its imported sockets pass).
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq python3
tb_require_tcpha

TB_CONFIG_BES=2 # be3's namespace is the sender's host
tb_init 3
tb_key
for k in 1 2; do tb_docroot "$k"; done
tb_config
for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

guard() { tb_status_json be1 | jq -er --arg n "$1" '.datapath[$n] // -1'; }
be1_mac=$(tb_be 1 cat /sys/class/net/eth0/address)
n0=$(guard guard_nosock)

# send FLAGS COUNT: segments from the client's address to the VIP, straight to be1's
# MAC (AF_PACKET), while the client's namespace listens for an RST from the VIP.
send() {
  tb_c python3 - "$TB_VIP" "$TB_PORT" 2 <<'EOF' &
import socket, sys, time
vip, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.settimeout(0.2)
rst = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        pkt = s.recv(2048)
    except socket.timeout:
        continue
    ihl = (pkt[0] & 0x0F) * 4
    if socket.inet_ntoa(pkt[12:16]) == vip and int.from_bytes(pkt[ihl:ihl + 2], "big") == port \
            and pkt[ihl + 13] & 0x04:
        rst += 1
print(rst)
EOF
  local listener=$!
  sleep 0.3
  tb_be 3 python3 - "$TB_C_ADDR" "$TB_VIP" "$TB_PORT" "$be1_mac" "$1" "$2" <<'EOF'
import random, socket, struct, sys, time
src, dst, dport, mac, flags, count = sys.argv[1:7]
dport, count = int(dport), int(count)
fl = {"ACK": 0x10, "SYN": 0x02}[flags]

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

s_a, d_a = socket.inet_aton(src), socket.inet_aton(dst)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(("eth0", 0))
own = sock.getsockname()[4]
dst_mac = bytes.fromhex(mac.replace(":", ""))
for i in range(count):
    sport = 40000 + i
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32),
                      random.getrandbits(32) if fl & 0x10 else 0, 5 << 4, fl, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(s_a + d_a + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0x4000, 64, 6,
                     0, s_a, d_a)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    sock.send(dst_mac + own + b"\x08\x00" + ip + tcp)
    time.sleep(0.02)
EOF
  wait "$listener"
}

echo "== 20 ACKs without a connection, to be1's MAC"
rsts=$(send ACK 20)
n1=$(guard guard_nosock)
echo "guard_nosock $n0 -> $n1; RSTs seen by the client: $rsts"
((rsts == 0)) || tb_fail "be1 answered $rsts of 20 segments without a socket with an RST"
((n0 >= 0)) || tb_fail "be1's status has no datapath.guard_nosock (no guard on the back-end)"
((n1 - n0 >= 20)) || tb_fail "be1 dropped $((n1 - n0)) of 20 segments without a socket (guard_nosock)"

echo "== SYNs pass the guard (the back-end's stack answers them as before)"
rsts=$(send SYN 5)
n2=$(guard guard_nosock)
((n2 == n1)) || tb_fail "the guard dropped $((n2 - n1)) SYNs"
echo "SYNs: guard_nosock unchanged ($n2), RSTs seen by the client: $rsts"
# The control: be1's stack does answer what the guard passes, and the client's
# namespace sees those answers, so the 0 RSTs above mean something.
((rsts >= 1)) || tb_fail "no RST for 5 SYNs to a port nothing listens on: the RST watch sees nothing"

echo "== handoffs to be1 still work"
for ((i = 0; i < 20; i++)); do tb_fetch f100k.bin >/dev/null || tb_fail "request $i failed"; done
ok=$(tb_status_json fe | jq -er '.handoffs.ok')
((ok >= 20)) || tb_fail "only $ok handoffs"
imported=$(tb_status_json be1 | jq -er '.counters.imported')
((imported > 0)) || tb_fail "be1 imported nothing"
echo "20 fetches, byte-exact; be1 imported $imported"
echo "PASS: be_guard"
