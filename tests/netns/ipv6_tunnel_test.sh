#!/usr/bin/env bash
# IPv6 clients through the tunnel (issue 15): as tunnel_test.sh, with vip6 set and the
# client on IPv6. be1 and be2 sit on another subnet behind a router (forward =
# "tunnel": the FE sends them the client's IPv6 packets inside IPv4, each decapsulates
# in its own tc program and answers from vip6 through its IPv6 default route, the
# router); be3 is on the FE's segment (forward = "dr", MAC rewrite). Checked:
#   1. IPv6 downloads of 1 KB .. 12 MB, two of each at once beside as many IPv4 ones,
#      byte-exact, served by all three BEs; the FE transmits < 5% of the response bytes;
#   2. kept-alive IPv6 connections whose requests carry 6 KB of headers (full-size
#      client segments through the tunnel: the FE's IPv6 MSS leaves room for the outer
#      header), moved between tunnel and DR back-ends by the rules: every body exact;
#   3. the FE encapsulated, the routed BEs decapsulated, nothing dropped.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB_IPV6=1
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum
tb_require_tcpha
TB_ROUTED_BES="1 2"
tb_init 3
tb_key
for k in 1 2 3; do tb_docroot "$k"; done
tb__gen f12m.bin 12582912 >"$TB_DIR/www/.common/f12m.bin"
for k in 1 2 3; do ln -f "$TB_DIR/www/.common/f12m.bin" "$TB_DIR/www/be$k/f12m.bin"; done
TB_SHA[f12m.bin]=$(sha256sum <"$TB_DIR/www/.common/f12m.bin" | cut -d' ' -f1)
TB_SIZE[f12m.bin]=12582912

TB_FORWARD=tunnel
TB_BE_EXTRA[3]='forward = "dr"'
TB_BE_GROUPS=([1]='"all"' [2]='"all", "who"' [3]='"all"')
tb_config "$(
  cat <<'TOML'
[[rule]]
name = "who"
path = '^/whoami'
group = "who"
policy = "round-robin"
TOML
)"
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready
V6="http://[$TB_VIP6]"

# 1. Downloads: two IPv6 and one IPv4 of each size at once.
files=(f1k.bin f10k.bin f100k.bin f1m.bin f10m.bin f12m.bin)
imported0=()
for k in 1 2 3; do imported0[k]=$(tb_status_json "be$k" | jq -e .imported); done
tx0=$(tb_iface_tx_bytes "$TB_NS_FE")
total=0
pids=()
for f in "${files[@]}"; do
  for i in 1 2 3; do
    url="$V6/$f"
    ((i < 3)) || url="http://$TB_VIP/$f"
    tb_c curl -gsS --noproxy '*' --max-time 60 -o "$TB_DIR/dl-$f-$i" "$url" &
    pids+=($!)
    total=$((total + TB_SIZE[$f]))
  done
done
for p in "${pids[@]}"; do wait "$p" || tb_fail "a download failed (curl $?)"; done
tx1=$(tb_iface_tx_bytes "$TB_NS_FE")
for f in "${files[@]}"; do
  for i in 1 2 3; do
    sum=$(sha256sum <"$TB_DIR/dl-$f-$i" | cut -d' ' -f1)
    [[ $sum == "${TB_SHA[$f]}" ]] ||
      tb_fail "$f (#$i, $( ((i < 3)) && echo IPv6 || echo IPv4)) differs ($(stat -c %s "$TB_DIR/dl-$f-$i") of ${TB_SIZE[$f]} bytes)"
  done
done
fe_tx=$((tx1 - tx0))
echo "downloads: 12 IPv6 + 6 IPv4 byte-exact, $total response bytes; FE transmitted $fe_tx ($((fe_tx * 1000 / total))/1000)"
((fe_tx * 20 < total)) || tb_fail "the FE transmitted $fe_tx bytes, not < 5% of $total"
for k in 1 2 3; do
  n=$(($(tb_status_json "be$k" | jq -e '.imported') - imported0[k]))
  echo "be$k imported $n"
  ((n > 0)) || tb_fail "be$k served nothing"
done

# 2. Kept-alive IPv6 connections with 6 KB request heads, moved by the rules.
pad=$(head -c 4500 /dev/urandom | base64 -w0 | head -c 6000)
for c in 1 2 3 4; do
  out=$TB_DIR/ka-$c
  tb_c curl -gsS --noproxy '*' --max-time 20 -H "X-Pad: $pad" -w '%{num_connects} %{http_code}\n' \
    -o "$out-1" "$V6/f100k.bin" -o "$out-2" "$V6/whoami.txt" \
    -o "$out-3" "$V6/f10k.bin" -o "$out-4" "$V6/whoami.txt" >"$out.w" ||
    tb_fail "keep-alive IPv6 connection $c failed (curl $?)"
  [[ $(awk '{c += $1} END {print c}' "$out.w") == 1 ]] || tb_fail "connection $c: not one connection: $(tr '\n' ' ' <"$out.w")"
  [[ $(awk '$2 == 200' "$out.w" | wc -l) == 4 ]] || tb_fail "connection $c: $(tr '\n' ' ' <"$out.w")"
  [[ $(sha256sum <"$out-1" | cut -d' ' -f1) == "${TB_SHA[f100k.bin]}" ]] || tb_fail "connection $c: f100k differs"
  [[ $(sha256sum <"$out-3" | cut -d' ' -f1) == "${TB_SHA[f10k.bin]}" ]] || tb_fail "connection $c: f10k differs"
  [[ $(cat "$out-2") == be2 && $(cat "$out-4") == be2 ]] || tb_fail "connection $c: whoami not from be2"
done
echo "keep-alive: 4 IPv6 connections x 4 requests with 6000-byte headers, exact"

# 3. Counters.
fe=$(tb_status_json fe)
tun=$(jq -e '.datapath.tunnel' <<<"$fe")
tdrop=$(jq -e '.datapath.tunnel_drop' <<<"$fe")
echo "FE datapath: tunnel $tun, tunnel_drop $tdrop"
((tun > 0)) || tb_fail "the FE encapsulated nothing"
((tdrop == 0)) || tb_fail "the FE dropped $tdrop packets to tunnel back-ends"
for k in 1 2; do
  d=$(tb_status_json "be$k" | jq -e '.datapath.decap')
  dd=$(tb_status_json "be$k" | jq -e '.datapath.decap_drop')
  echo "be$k datapath: decap $d, decap_drop $dd"
  ((d > 0)) || tb_fail "be$k decapsulated nothing"
  ((dd == 0)) || tb_fail "be$k dropped $dd tunnelled packets"
done
echo "PASS: ipv6_tunnel"
