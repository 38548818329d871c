#!/usr/bin/env bash
# Multi-handoff end to end (issue 12): every request on a kept-alive connection is
# routed, and a BE moves the live connection to the BE of the request's group.
#   1. partitioned content, each file on one BE only (random bytes, sha256 known):
#      be1 group "pages"  /pages/pN.html     be2 group "images" /img/iN.png
#      be3 group "assets" /assets/aN.js|css  (and /assets/big.js, 4 MB)
#      rules route by path, no default rule. Checked:
#   2. one curl run, 30 URLs alternating groups: one TCP connection, every body exact
#      (and a request no rule matches gets 404 on a moved connection, which stays);
#   3. 5 requests pipelined in one write across groups (one 4 MB): in order, exact;
#   4. 20 concurrent keep-alive clients for 10 s over a mixed URL list: 0 errors;
#   5. counters: moves out >= moves in > 0, no failed move, the FE repointed the flow
#      once per move (none refused);
#   6. a move whose target BE is stopped (SIGSTOP) falls back: 503/504 on the same
#      connection, which then still serves its BE's files; once the target resumes
#      (and catches up on the failed move), moves to every BE work on it again;
#   7. a move whose target BE dies (SIGSTOP, the request sent, SIGKILL) falls back the
#      same way: 503/504 on the same connection, which then still serves its BE's files.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3
tb_require_tcpha
tb_init 3
tb_key

WWW=$TB_DIR/www
MANIFEST=$TB_DIR/manifest # "PATH SHA256 SIZE" per file, read by keepalive_client.py
CLIENT=$HERE/keepalive_client.py
declare -A SHA=() SIZE=()
mkdir -p "$WWW/be1/pages" "$WWW/be2/img" "$WWW/be2/misc" "$WWW/be3/assets"

# put K PATH SIZE: SIZE random bytes at PATH in be K's docroot only.
put() {
  local file=$WWW/be$1$2 sum
  head -c "$3" /dev/urandom >"$file"
  sum=$(sha256sum <"$file")
  SHA[$2]=${sum%% *}
  SIZE[$2]=$3
  echo "$2 ${SHA[$2]} $3" >>"$MANIFEST"
}

MB=1048576
URLS=() # the 30 URLs of the curl run: pages, img, assets, pages, ...
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
# On be2, but no rule matches /misc/: a later request for it gets 404 wherever it lands.
echo "no rule routes here" >"$WWW/be2/misc/note.txt"

TB_BE_GROUPS=([1]='"pages"' [2]='"images"' [3]='"assets"')
# Each BE logs the requests it answers: the log says which BE served each request.
for k in 1 2 3; do TB_BE_EXTRA[k]="access_log = \"$TB_DIR/access-be$k.log\""; done
TB_NO_DEFAULT_RULE=1
# A stopped BE must stay "up" in everybody's view for the whole fallback check (a move
# has to be under way when it hangs), and a CPU-starved CI runner must not flap BEs.
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
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

# be_num K FIELD: a number from be K's status (a jq path), or FAIL naming it.
be_num() {
  local v
  v=$(tb_status_json "be$1" | jq -er "$2 | numbers") ||
    tb_fail "be$1 status has no number at $2: $(tb_status_json "be$1" | head -c 600)"
  echo "$v"
}
fe_num() {
  local v
  v=$(tb_status_json fe | jq -er "$1 | numbers") ||
    tb_fail "FE status has no number at $1: $(tb_status_json fe | head -c 600)"
  echo "$v"
}
sum_be() { echo $(($(be_num 1 "$1") + $(be_num 2 "$1") + $(be_num 3 "$1"))); }
group_of() {
  case $1 in
    /pages/*) echo "pages (be1)" ;;
    /img/*) echo "images (be2)" ;;
    *) echo "assets (be3)" ;;
  esac
}

t_start=$(tb__now_ms)

echo "== 2. one curl run, ${#URLS[@]} URLs alternating pages / img / assets, one connection"
args=()
mkdir -p "$TB_DIR/dl"
for ((i = 0; i < ${#URLS[@]}; i++)); do args+=(-o "$TB_DIR/dl/$i" "http://$TB_VIP:$TB_PORT${URLS[i]}"); done
rc=0
out=$(tb_c timeout 60 curl -sS --noproxy '*' --max-time 20 \
  -w '%{http_code} %{num_connects} %{size_download}\n' "${args[@]}" 2>"$TB_DIR/curl.err") || rc=$?
mapfile -t lines <<<"$out"
codes=$(awk '{ printf "%s ", $1 }' <<<"$out")
((rc == 0)) || tb_fail "step 2: curl exit status $rc ($(head -c 300 "$TB_DIR/curl.err")); HTTP codes: $codes"
((${#lines[@]} == ${#URLS[@]})) || tb_fail "step 2: curl reported ${#lines[@]} transfers, want ${#URLS[@]}"
connects=0
for ((i = 0; i < ${#URLS[@]}; i++)); do
  read -r code nc n <<<"${lines[i]}"
  u=${URLS[i]}
  [[ $code == 200 ]] ||
    tb_fail "step 2: request $((i + 1)) of ${#URLS[@]} ($u, group $(group_of "$u")) answered HTTP $code on the kept-alive connection, want 200 (not routed to its group?); all codes: $codes"
  sum=$(sha256sum <"$TB_DIR/dl/$i")
  [[ ${sum%% *} == "${SHA[$u]}" ]] ||
    tb_fail "step 2: request $((i + 1)) ($u): $n bytes that differ from the file (${SIZE[$u]} bytes)"
  connects=$((connects + nc))
done
((connects == 1)) || tb_fail "step 2: curl opened $connects TCP connections for ${#URLS[@]} URLs, want 1 (the connection was not kept across groups)"
echo "30 x 200 byte-exact over 1 connection ($(awk '{ s += $3 } END { print s }' <<<"$out") bytes)"
# 29 changes of group in that run: each one is a move (counted a moment after, maybe).
moves_out_ge() { (($(sum_be .counters.moved_out) >= $1)); }
tb_until 3000 moves_out_ge 29 || true
moves_step2=$(sum_be .counters.moved_out)
((moves_step2 >= 29)) || tb_fail "step 2: the BEs count $moves_step2 moves out, want >= 29 (one per change of group)"
# The BEs' access logs: each of the 30 requests answered once, by its group's BE.
for ((i = 0; i < ${#URLS[@]}; i++)); do
  u=${URLS[i]}
  want=$(group_of "$u")
  want=${want#*(}
  want=${want%)}
  n=$(cat "$TB_DIR"/access-be*.log | grep -c "\"GET $u HTTP/1.1\" 200 .* backend=$want " || true)
  ((n >= 1)) || tb_fail "step 2: no access log line says $want answered $u 200"
done
echo "access logs: every URL answered 200 by its group's BE; moved connections: $(cat "$TB_DIR"/access-be*.log | grep -vc ' move=0$' || true) lines"
echo "moves out so far: $moves_step2; FE repoints $(fe_num .counters.repoints), refused $(fe_num .counters.repoint_refused)"

echo "== 2b. a request no rule matches, on a moved connection: 404, connection kept"
out=$(tb_c timeout 30 curl -sS --noproxy '*' --max-time 10 -w '%{http_code} %{num_connects}\n' \
  -o "$TB_DIR/dl/nr1" "http://$TB_VIP/pages/p1.html" -o "$TB_DIR/dl/nr2" "http://$TB_VIP/img/i1.png" \
  -o "$TB_DIR/dl/nr3" "http://$TB_VIP/misc/note.txt" -o "$TB_DIR/dl/nr4" "http://$TB_VIP/assets/a1.css") ||
  tb_fail "step 2b: curl failed: $(tr '\n' ' ' <<<"$out")"
[[ $out == $'200 1\n200 0\n404 0\n200 0' ]] ||
  tb_fail "step 2b: want '200 1', '200 0', '404 0', '200 0' (HTTP status, new connections) for pages, img, /misc/note.txt (no rule; the file is on be2 where the connection is), assets; got: $(tr '\n' ' ' <<<"$out")"
for p in nr2:/img/i1.png nr4:/assets/a1.css; do
  sum=$(sha256sum <"$TB_DIR/dl/${p%%:*}")
  [[ ${sum%% *} == "${SHA[${p#*:}]}" ]] || tb_fail "step 2b: ${p#*:} differs from the file"
done
echo "no-rule request answered 404, the connection carried on"

echo "== 3. 5 requests pipelined in one write across groups (one 4 MB body)"
PIPE=(/pages/p2.html /img/i3.png /assets/big.js /pages/p4.html /img/i7.png)
out=$(tb_c timeout 60 python3 "$CLIENT" "$MANIFEST" "$TB_VIP" pipeline "${PIPE[@]}" 2>&1) ||
  tb_fail "step 3: $out"
echo "$out: in order, byte-exact, then EOF (Connection: close)"

echo "== 4. 20 concurrent keep-alive clients for 10 s, mixed URLs"
out=$(tb_c timeout 120 python3 "$CLIENT" "$MANIFEST" "$TB_VIP" load 10 20 "${URLS[@]}" /assets/big.js 2>&1) ||
  tb_fail "step 4: $out"
read -r _ load_requests _ load_bytes _ load_min <<<"$out"
echo "$load_requests requests ($load_bytes bytes, at least $load_min per client), 0 errors"

echo "== 5. move counters"
# A move's counters may land a moment after its response: wait (bounded) for them to agree.
moves_balanced() { (($(sum_be .counters.moved_out) == $(sum_be .counters.moved_in))); }
tb_until 3000 moves_balanced || true
out_sum=0 in_sum=0
declare -a MOVED_OUT=()
for k in 1 2 3; do
  mo=$(be_num "$k" .counters.moved_out)
  mi=$(be_num "$k" .counters.moved_in)
  mf=$(be_num "$k" .counters.move_failed)
  p50=$(be_num "$k" .move_latency_us.p50)
  echo "be$k: moved_out $mo, moved_in $mi, move_failed $mf, move latency p50 ${p50} us"
  ((mf == 0)) || tb_fail "step 5: be$k counts $mf failed moves, want 0"
  out_sum=$((out_sum + mo))
  in_sum=$((in_sum + mi))
  MOVED_OUT[k]=$mo
done
# Every committed move is followed by one REPOINT, which the FE must accept: a refused
# one leaves the FE's flow on a BE that no longer holds the connection.
# Every move's REPOINT is answered: applied, or stale (a later move of the same
# connection overtook it on another link; the FE keeps the latest).
answered() { echo $(($(fe_num .counters.repoints) + $(fe_num .counters.repoint_stale))); }
repoints_ge() { (($(answered) >= $1)); }
tb_until 3000 repoints_ge "$out_sum" || true
repoints=$(fe_num .counters.repoints)
stale=$(fe_num .counters.repoint_stale)
refused=$(fe_num .counters.repoint_refused)
echo "moves: out $out_sum, in $in_sum; FE repoints $repoints, stale $stale, refused $refused"
((out_sum > 0)) || tb_fail "step 5: no BE counts a move out"
((in_sum > 0)) || tb_fail "step 5: no BE counts a move in"
((out_sum >= in_sum)) || tb_fail "step 5: the BEs count $in_sum moves in but only $out_sum moves out"
((repoints > 0)) || tb_fail "step 5: the FE counts no repoint"
((refused == 0)) || tb_fail "step 5: the FE refused $refused REPOINTs (counters.repoint_refused; its log says why)"
((repoints + stale == out_sum)) ||
  tb_fail "step 5: the FE answered $((repoints + stale)) REPOINTs ($repoints applied, $stale stale) for $out_sum moves, want one per move"
for k in 1 2 3; do
  ((MOVED_OUT[k] > 0)) || tb_fail "step 5: be$k never moved a connection out"
done

# be2_pid STEP: be2's agent's pid (the client signals it), checked to be tcpha's.
be2_pid() {
  local pid=${TB_PID[be2]}
  [[ $(cat "/proc/$pid/comm") == tcpha ]] || tb_fail "step $1: pid $pid of be2 is not tcpha"
  echo "$pid"
}
# move_failed_rose STEP FROM WHY: be1's move_failed counter rises above FROM (bounded wait).
move_failed_gt() { (($(be_num 1 .counters.move_failed) > $1)); }
move_failed_rose() {
  tb_until 2000 move_failed_gt "$2" || true
  local now
  now=$(be_num 1 .counters.move_failed)
  echo "be1 move_failed: $2 -> $now"
  ((now > $2)) || tb_fail "step $1: be1's move_failed stayed $2 after its move to $3 fell back"
}

echo "== 6. the target BE stops during a move: fallback on the same connection"
be2_pid=$(be2_pid 6)
failed0=$(be_num 1 .counters.move_failed)
rc=0
out=$(tb_c timeout 60 python3 "$CLIENT" "$MANIFEST" "$TB_VIP" fallback "$be2_pid" \
  /pages/p1.html /img/i2.png /assets/a2.js 5 2>&1) || rc=$?
kill -CONT "$be2_pid" 2>/dev/null || true
((rc == 0)) || tb_fail "step 6: $out"
read -r _ fb_status fb_secs <<<"$out"
echo "HTTP $fb_status after $fb_secs s with be2 stopped; the same connection then served be1's file, and"
echo "once be2 was resumed, be3's, be2's and be1's files (moves work again)"
move_failed_rose 6 "$failed0" "the stopped be2"
tb_wait_ready 10

echo "== 7. the target BE dies during a move: fallback on the same connection"
be2_pid=$(be2_pid 7)
failed0=$(be_num 1 .counters.move_failed)
rc=0
out=$(tb_c timeout 60 python3 "$CLIENT" "$MANIFEST" "$TB_VIP" dies "$be2_pid" \
  /pages/p1.html /img/i3.png 5 2>&1) || rc=$?
tb_kill_be 2  # killed by the client (or now, if it failed before): reaped here
((rc == 0)) || tb_fail "step 7: $out"
read -r _ dies_status dies_secs <<<"$out"
echo "HTTP $dies_status after $dies_secs s with be2 killed during the move; the same connection then served be1's file twice"
move_failed_rose 7 "$failed0" "the killed be2"

echo "== summary"
echo "curl run: 30 URLs over 1 connection; pipelined: 5 of 5; load: $load_requests requests by 20 clients in 10 s, 0 errors"
echo "moves: out $out_sum, in $in_sum (>= 29 in the curl run: $moves_step2); FE repoints $repoints"
echo "fallback: HTTP $fb_status in $fb_secs s, connection kept; target killed: HTTP $dies_status in $dies_secs s, connection kept"
echo "time: $((($(tb__now_ms) - t_start) / 1000)) s after the bed was up"
echo "PASS: multi_handoff"
