#!/usr/bin/env bash
# Per-client flow cap (issue 11, item 5): the flow table is shared by every client,
# so one address may hold at most [frontend] max_flows_per_client connections that
# are being handed off or handed off and still open; beyond that it gets 503
# (counter client_flow_cap), while another address is served. Closing connections
# gives the slots back.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq python3
TB_FE_EXTRA='max_flows_per_client = 3'
tb_cluster_up 2

# Three kept-alive connections, each answered once and then left open (idle).
tb_spawn holders "$TB_NS_C" python3 -c '
import os, socket, sys, time
conns = []
for i in range(3):
    s = socket.create_connection((sys.argv[1], 80), timeout=10)
    s.sendall(b"GET /f1k.bin HTTP/1.1\r\nHost: bed\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 1024:
        got += s.recv(65536)
    conns.append(s)
open(sys.argv[2], "w").write("held\n")
for _ in range(300):
    if os.path.exists(sys.argv[3]): break
    time.sleep(0.05)
for s in conns: s.close()
' "$TB_VIP" "$TB_DIR/held" "$TB_DIR/release"
tb_until 5000 test -s "$TB_DIR/held" || tb_fail "the three connections were not answered"

code=$(tb_c curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "http://$TB_VIP/f1k.bin")
[[ $code == 503 ]] || tb_fail "a 4th connection of a client holding 3 (max_flows_per_client = 3): HTTP $code, want 503"
((($(tb_fe_counter client_flow_cap)) == 1)) || tb_fail "client_flow_cap is $(tb_fe_counter client_flow_cap), want 1"
tb_c ip addr add "$TB_SUBNET.3/24" dev eth0
code=$(tb_c curl -sS --noproxy '*' --max-time 5 --interface "$TB_SUBNET.3" -o /dev/null -w '%{http_code}' "http://$TB_VIP/f1k.bin")
[[ $code == 200 ]] || tb_fail "another client address while the first is at its cap: HTTP $code, want 200"
echo "client holding 3 connections: 4th refused with 503; another address served (200)"

touch "$TB_DIR/release"
tb_wait holders 10 || tb_fail "the holder exited with an error: $(cat "$TB_DIR/holders.log")"
tb_until 3000 eval '[[ $(tb_c curl -sS --noproxy "*" --max-time 5 -o /dev/null -w "%{http_code}" "http://$TB_VIP/f1k.bin") == 200 ]]' ||
  tb_fail "the client is still refused after closing its connections"
echo "after closing them the client is served again (${TB_UNTIL_MS} ms)"
echo "PASS: client_cap"
