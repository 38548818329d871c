#!/usr/bin/env bash
# CARD (issue 16, seed 001; docs/card.md): three `tcpha node`s and no front-end. A router
# namespace spreads the VIP over the nodes by ECMP with an L4 hash; the content is
# partitioned (group gK only on node nK). Checks:
#   0. n3 joins at run time (the file appended, SIGHUP to the others);
#   1. 60 new connections, 20 per group: every one byte-exact (only the owner holds its
#      file), every node received some (the router spread them), every node served
#      exactly its 20, and the connections that entered elsewhere were moved;
#   2. one keep-alive connection alternating the three groups twice: one TCP connection,
#      six byte-exact answers, moved between the nodes (the entry repoints it);
#   3. a node SIGKILLed (and withdrawn from the router, as its routing protocol would):
#      the others mark it down, keep serving their groups, and answer its group 503
#      at once.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_tcpha
tb_require_cmd curl jq sha256sum wrk

# CARD_FORWARD=tunnel (card_tunnel_test.sh): the entry wraps the client's packets in
# IPIP toward the owner instead of rewriting the MAC (docs/tunnel.md).
CARD_FORWARD=${CARD_FORWARD:-dr}
tb_init 3 # the "fe" namespace is the router here; be1..3 hold nodes n1..n3
tb_key
RT=$TB_NS_FE
ROUTER=$TB_FE_ADDR

# The router: forwards the VIP to the three nodes (one multipath route, hashed on the
# 4-tuple), never redirects the client to a node (same segment: it would).
for k in net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
  net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0 \
  net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0; do
  ip netns exec "$RT" sysctl -qw "$k"
done
ecmp_route() { # ecmp_route K...: the VIP's route over nodes K...
  local args=() k
  for k in "$@"; do args+=(nexthop via "${TB_BE_ADDR[k]}" dev eth0); done
  ip -n "$RT" route replace "$TB_VIP/32" "${args[@]}"
}
tb_c sysctl -qw net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.eth0.accept_redirects=0
ip -n "$TB_NS_C" route add "$TB_VIP/32" via "$ROUTER"

# Partitioned content: node K's docroot has group gK only.
declare -A SUM
for k in 1 2 3; do
  mkdir -p "$TB_DIR/www/n$k/g$k"
  head -c $((300000 + k * 1000)) /dev/urandom >"$TB_DIR/www/n$k/g$k/f.bin"
  echo "n$k" >"$TB_DIR/www/n$k/g$k/whoami.txt"
  s=$(sha256sum <"$TB_DIR/www/n$k/g$k/f.bin")
  SUM[$k]=${s%% *}
done
write_config() { # N: nodes 1..N and their groups' rules
  local k
  {
    printf '[cluster]\nvip = "%s"\nports = [%s]\nkey_file = "cluster.key"\nforward = "%s"\n\n' \
      "$TB_VIP" "$TB_PORT" "$CARD_FORWARD"
    for ((k = 1; k <= $1; k++)); do
      printf '[[node]]\nid = "n%d"\naddress = "%s"\ninterface = "eth0"\ngroups = ["g%d"]\ndocroot = "%s"\n\n' \
        "$k" "${TB_BE_ADDR[k]}" "$k" "$TB_DIR/www/n$k"
    done
    for ((k = 1; k <= $1; k++)); do
      printf '[[rule]]\nname = "g%d"\npath = "^/g%d/"\ngroup = "g%d"\n\n' "$k" "$k" "$k"
    done
  } >"$TB_DIR/cluster.toml.new"
  mv "$TB_DIR/cluster.toml.new" "$TB_DIR/cluster.toml"
}

node_json() { timeout 5 "$TB_TCPHA" status --socket "$TB_DIR/n$1.sock" --json; }
node_counter() { node_json "$1" | jq -er --arg n "$2" '.counters[$n]'; }
# Every running node answers, and sees the nodes UP (arguments) up.
nodes_ready() {
  local k want=("$@") js
  for k in "${want[@]}"; do
    js=$(node_json "$k" 2>/dev/null) || return 1
    jq -e --argjson n $((${#want[@]} - 1)) '.role == "node" and ([.nodes[] | select(.state == "up")] | length) == $n' \
      <<<"$js" >/dev/null || return 1
  done
}
start_node() { tb_spawn "n$1" "${TB_NS_BE[$1]}" "$TB_TCPHA" node -c "$TB_DIR/cluster.toml" --id "n$1" --socket "$TB_DIR/n$1.sock"; }
# Two nodes first; the third joins at run time: appended to the file, which the others
# reload (SIGHUP), then started and added to the router.
write_config 2
"$TB_TCPHA" check -c "$TB_DIR/cluster.toml" | grep -q "2 nodes" || tb_fail "tcpha check does not accept the CARD file"
ecmp_route 1 2
start_node 1
start_node 2
tb_until 10000 nodes_ready 1 2 || tb_fail "n1 and n2 did not see each other up within 10 s: $(node_json 1)"
write_config 3
for k in 1 2; do kill -HUP "${TB_PID[n$k]}"; done
start_node 3
tb_until 10000 nodes_ready 1 2 3 || tb_fail "n3 did not join within 10 s: $(node_json 1)"
ecmp_route 1 2 3
for k in 1 2; do (($(node_counter "$k" reloads) == 1)) || tb_fail "n$k did not reload the file"; done
echo "n1 and n2 up; n3 joined at run time (reload + start): 3 nodes, each sees the other two"
# sendfile() into a reset connection raises SIGPIPE: a daemon must ignore it.
for k in 1 2 3; do
  ign=$(awk '/^SigIgn:/ { print $2 }' "/proc/${TB_PID[n$k]}/status")
  (((0x$ign >> 12) & 1)) || tb_fail "n$k does not ignore SIGPIPE (SigIgn $ign)"
done

# 1. New connections: 20 per group, each its own connection (its own source port).
mkdir -p "$TB_DIR/dl"
bad=0
for ((i = 0; i < 60; i++)); do
  g=$((i % 3 + 1))
  tb_curl "g$g/f.bin" -o "$TB_DIR/dl/$i" || true
  s=$(sha256sum <"$TB_DIR/dl/$i")
  if [[ ${s%% *} != "${SUM[$g]}" ]]; then
    echo "connection $i (/g$g/f.bin): $(stat -c %s "$TB_DIR/dl/$i") bytes, not the file"
    bad=$((bad + 1))
  fi
done
((bad == 0)) || tb_fail "$bad of 60 downloads were not byte-exact"
accepted=() moved=0
for k in 1 2 3; do
  accepted[k]=$(node_counter "$k" accepted)
  req=$(node_counter "$k" requests)
  moved=$((moved + $(node_counter "$k" moved_out)))
  echo "n$k: received ${accepted[k]} connections, served $req requests"
  ((accepted[k] > 0)) || tb_fail "the router sent n$k no connection: not spread"
  ((req == 20)) || tb_fail "n$k served $req requests, not its group's 20"
done
total=$((accepted[1] + accepted[2] + accepted[3]))
((total == 60)) || tb_fail "the nodes received $total connections, not 60"
# Each connection that entered at a node not owning its group moved once; the others
# were served where they entered (no handoff, no copy).
local_served=$((60 - moved))
echo "60/60 byte-exact from the owning node; $moved moved to their owner, $local_served served where they entered"
((moved > 0 && moved < 60)) || tb_fail "$moved moves for 60 connections spread over 3 nodes"

# 2. One keep-alive connection: g1 g2 g3 g1 g2 g3.
urls=() outs=()
for r in 1 2 3 4 5 6; do
  g=$(((r - 1) % 3 + 1))
  urls+=(-o "$TB_DIR/dl/ka$r" "http://$TB_VIP/g$g/f.bin")
done
conns=$(tb_c curl -sS --noproxy '*' --max-time 20 -w '%{num_connects}\n' "${urls[@]}")
for r in 1 2 3 4 5 6; do
  g=$(((r - 1) % 3 + 1))
  s=$(sha256sum <"$TB_DIR/dl/ka$r")
  [[ ${s%% *} == "${SUM[$g]}" ]] || tb_fail "keep-alive request $r (/g$g/f.bin) was not byte-exact"
done
[[ $(tr '\n' ' ' <<<"$conns") == "1 0 0 0 0 0 " ]] || tb_fail "the keep-alive requests used connections: $conns"
repoints=0 moved2=0
for k in 1 2 3; do
  repoints=$((repoints + $(node_counter "$k" entry_repoints)))
  moved2=$((moved2 + $(node_counter "$k" moved_out)))
done
echo "keep-alive: 6/6 byte-exact on one connection; $((moved2 - moved)) moves, $repoints repoints by entry nodes so far"
((moved2 - moved >= 5)) || tb_fail "the keep-alive connection moved $((moved2 - moved)) times, expected at least 5"

# 3. n3 dies; the router withdraws it (what BFD/BGP would do).
kill -KILL "${TB_PID[n3]}" 2>/dev/null
tb__reap n3 || true
ecmp_route 1 2
t0=$(tb__now_ms)
tb_until 3000 nodes_ready 1 2 || tb_fail "n1 and n2 still see n3 up: $(node_json 1)"
echo "n3 killed: n1 and n2 mark it down $(($(tb__now_ms) - t0)) ms after the kill"
for ((i = 0; i < 20; i++)); do
  g=$((i % 2 + 1))
  tb_curl "g$g/f.bin" -o "$TB_DIR/dl/after$i" || tb_fail "download $i of g$g after n3 died failed"
  s=$(sha256sum <"$TB_DIR/dl/after$i")
  [[ ${s%% *} == "${SUM[$g]}" ]] || tb_fail "download $i of g$g after n3 died was not byte-exact"
done
# Tiny answers on new connections, many at once: an owner's CLOSED can reach the entry
# before the READY of the move that made it the owner (another link); the entry must
# still let the flow go (checked below: no entry flow left).
out=$(tb_c wrk -t2 -c32 -d2s -H "Connection: close" "http://$TB_VIP/g1/whoami.txt" 2>&1) ||
  tb_fail "wrk of tiny answers after n3 died failed: $out"
tiny=$(awk '/requests in/ { print $1 }' <<<"$out")
! grep -q "Non-2xx" <<<"$out" || tb_fail "tiny answers after n3 died were not all 200: $out"
code=$(tb_curl g3/f.bin -o /dev/null -w '%{http_code}' || true)
[[ $code == 503 ]] || tb_fail "n3's group answered $code, expected 503 (no member usable)"
echo "after n3 died: 20/20 downloads of g1 and g2 byte-exact, $tiny tiny ones (wrk, new connections) answered; g3 answers 503"
for k in 1 2; do
  js=$(node_json "$k")
  echo "n$k: $(jq -c '{accepted: .counters.accepted, moved_out: .counters.moved_out, moved_in: .counters.moved_in, entry_repoints: .counters.entry_repoints, entry_refused: .counters.entry_refused, entry_flows, nodes}' <<<"$js")"
  (($(jq '.counters.entry_refused' <<<"$js") == 0)) || tb_fail "n$k refused REPOINTs or CLOSEDs"
done
# Every connection is over: their owners said CLOSED (n3 before it died), so the entry
# flows go after the linger (flow_linger_ms, 5 s by default).
entry_flows() { (($(node_json 1 | jq .entry_flows) + $(node_json 2 | jq .entry_flows) == 0)); }
tb_until 9000 entry_flows || tb_fail "entry flows left after the linger: n1 $(node_json 1 | jq .entry_flows), n2 $(node_json 2 | jq .entry_flows)"
echo "every entry flow removed $TB_UNTIL_MS ms later (CLOSED from the owners, then the linger)"
if [[ $CARD_FORWARD == tunnel ]]; then
  tun=0 decap=0 tdrop=0
  for k in 1 2; do
    js=$(node_json "$k")
    tun=$((tun + $(jq '.datapath.tunnel' <<<"$js")))
    decap=$((decap + $(jq '.datapath.decap' <<<"$js")))
    tdrop=$((tdrop + $(jq '.datapath.tunnel_drop' <<<"$js")))
    # Every member's tunnelled packet is taken (the sender list follows the reloads).
    (($(jq '.datapath.decap_drop' <<<"$js") == 0)) ||
      tb_fail "n$k refused tunnelled packets: $(jq -c .datapath <<<"$js")"
  done
  # tunnel_drop: a few packets per run (4 in the keep-alive step, where the connection
  # moves every request) are refused by the encapsulation and retransmitted by the
  # client: a known limit, docs/card.md. The byte-exact checks above are what count.
  echo "tunnel: n1 and n2 encapsulated $tun client packets toward owners ($tdrop refused by the encapsulation) and decapsulated $decap"
  ((tun > 0 && decap > 0)) || tb_fail "forward = tunnel, yet the entries tunnelled $tun and the owners unwrapped $decap packets"
  ((tdrop * 100 <= tun)) || tb_fail "the encapsulation refused $tdrop of $tun packets"
fi
# SIGTERM: a node with nothing left to finish stops at once, cleanly, and undoes its
# changes (the VIP on lo).
for k in 1 2; do
  t0=$(tb__now_ms)
  tb_stop "n$k" 10 || tb_fail "n$k did not stop cleanly (status ${TB_EXIT[n$k]})"
  echo "n$k stopped in $(($(tb__now_ms) - t0)) ms"
  ! tb_be "$k" ip -4 addr show dev lo | grep -q "$TB_VIP" || tb_fail "n$k left the VIP on lo"
done
echo "PASS: card"
