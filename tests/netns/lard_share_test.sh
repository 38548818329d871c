#!/usr/bin/env bash
# LARD tables shared between the FE and the back-ends (issue 12): every node that routes
# sends the LARD assignments it makes to the others (LARD control message), so a
# target goes to the same member whoever routes it.
#   be1, be2: group "lard" (policy lard), the same paths on both, each file saying
#   which BE it is on; be3: group "other". A kept-alive connection on be3 that asks
#   for a LARD path is routed by be3 and moved to the member be3 picks.
#   A. the FE assigns 8 targets (one new connection each); then one connection
#      alternating /o/x (be3) and those targets: be3 sends each to the FE's member.
#   B. be3 assigns 8 new targets (later requests on one connection); then one new
#      connection per target: the FE sends each to be3's member.
#   Each side asks in the reverse order of the other's assignments.
# Fails without sharing: the FE's and be3's tables then choose independently (the
# least loaded member, ties taken in turn), and 8 of 8 agreeing is rare.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq python3
tb_require_tcpha
tb_init 3
tb_key

WWW=$TB_DIR/www
mkdir -p "$WWW/be1/lard" "$WWW/be2/lard" "$WWW/be3/o"
for p in p1 p2 p3 p4 p5 p6 p7 p8 q1 q2 q3 q4 q5 q6 q7 q8; do
  echo be1 >"$WWW/be1/lard/$p"
  echo be2 >"$WWW/be2/lard/$p"
done
echo other >"$WWW/be3/o/x"

TB_BE_GROUPS=([1]='"lard"' [2]='"lard"' [3]='"other"')
TB_NO_DEFAULT_RULE=1
tb_config "$(
  cat <<'EOF'
[[rule]]
name = "lard"
path = '^/lard/'
group = "lard"
policy = "lard"

[[rule]]
name = "other"
path = '^/o/'
group = "other"
policy = "round-robin"
EOF
)"
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

URL=http://$TB_VIP:$TB_PORT
# one_conn PATH...: GETs them on one connection; prints each body (one word), then
# the number of TCP connections curl opened.
one_conn() {
  local args=() i=0 out rc=0
  mkdir -p "$TB_DIR/dl"
  rm -f "$TB_DIR"/dl/*
  for p in "$@"; do
    args+=(-o "$TB_DIR/dl/$i" "$URL$p")
    i=$((i + 1))
  done
  out=$(tb_c timeout 30 curl -sS --noproxy '*' --max-time 20 -w '%{http_code} %{num_connects}\n' \
    "${args[@]}" 2>"$TB_DIR/curl.err") || rc=$?
  ((rc == 0)) || tb_fail "curl exit status $rc: $(head -c 300 "$TB_DIR/curl.err")"
  local connects=0 code nc
  i=0
  while read -r code nc; do
    [[ $code == 200 ]] || tb_fail "request $((i + 1)) (${!i}) answered HTTP $code, want 200"
    connects=$((connects + nc))
    cat "$TB_DIR/dl/$i"
    i=$((i + 1))
  done <<<"$out"
  echo "connections $connects"
}

echo "== A. the FE assigns 8 targets; be3 routes them on a kept-alive connection"
declare -A FE_PICK=()
for n in 1 2 3 4 5 6 7 8; do
  FE_PICK[p$n]=$(tb_c timeout 10 curl -sS --noproxy '*' --max-time 5 "$URL/lard/p$n")
done
sleep 1 # the FE shares its assignments at its next tick (20 ms)
# In the reverse order: a table of its own would hand out members in turn again.
ORDER=(8 7 6 5 4 3 2 1)
paths=()
for n in "${ORDER[@]}"; do paths+=(/o/x "/lard/p$n"); done
mapfile -t got < <(one_conn "${paths[@]}")
[[ ${got[16]} == "connections 1" ]] || tb_fail "A: ${got[16]} for 16 requests, want 1"
agree=0
for i in 1 2 3 4 5 6 7 8; do
  n=${ORDER[i - 1]}
  b=${got[$((2 * i - 1))]}
  [[ ${got[$((2 * i - 2))]} == other ]] || tb_fail "A: /o/x answered '${got[$((2 * i - 2))]}'"
  [[ $b == "${FE_PICK[p$n]}" ]] && agree=$((agree + 1))
  echo "/lard/p$n: FE chose ${FE_PICK[p$n]}, be3 moved it to $b"
done
((agree == 8)) || tb_fail "A: be3 routed $agree of 8 targets to the FE's LARD choice, want 8"

echo "== B. be3 assigns 8 new targets; the FE routes them on new connections"
paths=()
for n in 1 2 3 4 5 6 7 8; do paths+=(/o/x "/lard/q$n"); done
mapfile -t got < <(one_conn "${paths[@]}")
[[ ${got[16]} == "connections 1" ]] || tb_fail "B: ${got[16]} for 16 requests, want 1"
sleep 1 # be3 shares at its next moves tick (100 ms)
agree=0
for n in "${ORDER[@]}"; do
  b=${got[$((2 * n - 1))]}
  fe=$(tb_c timeout 10 curl -sS --noproxy '*' --max-time 5 "$URL/lard/q$n")
  [[ $fe == "$b" ]] && agree=$((agree + 1))
  echo "/lard/q$n: be3 chose $b, the FE sent a new connection to $fe"
done
((agree == 8)) || tb_fail "B: the FE routed $agree of 8 targets to be3's LARD choice, want 8"
moved=$(tb_status_json be3 | jq -er '.counters.moved_out')
((moved >= 16)) || tb_fail "be3 moved $moved connections, want >= 16"
echo "PASS: LARD assignments shared: 8 of 8 FE -> BE, 8 of 8 BE -> FE ($moved moves from be3)"
