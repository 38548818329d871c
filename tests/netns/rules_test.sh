#!/usr/bin/env bash
# Content-aware routing end to end (issue 4), on partitioned content: images live only
# on be1, /api/ only on be2, /dl/ only on be3, the default group is the FE itself
# (local node), so a request answered 200 with the right bytes was routed right.
# Header, cookie and host rules and first-match order are covered the same way; every
# request's access-log line must name its rule and back-end. Then, with the FE
# restarted on a LARD rule over all three BEs (each BE's copy of /pN.txt names it):
# one path stays on one BE, 30 distinct paths spread over all BEs, and a request no
# rule matches gets 404.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum cmp
tb_require_tcpha
tb_init 3
tb_key

WWW=$TB_DIR/www
ACCESS=$TB_DIR/access.log
mkdir -p "$WWW"/be1/img "$WWW"/be1/api "$WWW"/be2/api/v1 "$WWW"/be2/gold "$WWW"/be3/dl \
  "$WWW"/be3/vip "$WWW"/fe
head -c 7000 /dev/urandom >"$WWW/be1/img/logo.png"
head -c 30000 /dev/urandom >"$WWW/be1/img/photo.jpeg"
head -c 3000 /dev/urandom >"$WWW/be1/api/chart.png" # /api/ but an image: first match wins
echo "served by the host rule" >"$WWW/be1/host-only.txt"
echo '{"users":["ada","grace"]}' >"$WWW/be2/api/users.json"
echo '{"status":"ok"}' >"$WWW/be2/api/v1/status"
echo "gold tenant offer" >"$WWW/be2/gold/offer.txt"
head -c 1048576 /dev/urandom >"$WWW/be3/dl/pkg.tar.gz"
echo "read me" >"$WWW/be3/dl/readme.txt"
echo "vip lounge" >"$WWW/be3/vip/lounge.txt"
printf '<!doctype html>\n<title>front-end local node</title>\n' >"$WWW/fe/index.html"
echo "other content, served by the front-end itself" >"$WWW/fe/other.txt"
# For the LARD part: every BE has /p1.txt../p30.txt, each naming the BE that holds it.
for k in 1 2 3; do
  for ((n = 1; n <= 30; n++)); do echo "be$k p$n" >"$WWW/be$k/p$n.txt"; done
done

TB_BE_GROUPS=([1]='"img"' [2]='"api"' [3]='"dl"')
TB_FE_EXTRA=$(printf 'groups = ["local"]\ndocroot = "%s"\naccess_log = "%s"' "$WWW/fe" "$ACCESS")
TB_NO_DEFAULT_RULE=1
tb_config "$(
  cat <<'EOF'
[[rule]]
name = "tenant-gold"
header = { "X-Tenant" = '^gold$' }
group = "api"

[[rule]]
name = "vip-session"
cookie = { session = '^vip' }
group = "dl"

[[rule]]
name = "img-host"
host = '^img\.example\.com(:[0-9]+)?$'
group = "img"

[[rule]]
name = "images"
path = '\.(png|jpe?g|gif)$'
group = "img"
policy = "lard"

[[rule]]
name = "api"
path = '^/api/'
group = "api"
policy = "least-conn"

[[rule]]
name = "downloads"
path = '^/dl/'
group = "dl"
policy = "hash"

[[rule]]
name = "default"
group = "local"
EOF
)"
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

declare -a LOG_WANT=() # access-log fragments, one per request, in request order
log_start=0            # access-log lines written before the current part
local_want=0           # requests the FE should have served itself

# get PATH CODE FILE RULE BACKEND OUTCOME [CURL ARGS...]: one request; the answer must
# have status CODE and, with FILE, exactly FILE's bytes.
get() {
  local path=$1 code=$2 file=$3 rule=$4 be=$5 outcome=$6 out
  shift 6
  out=$(tb_curl "$path" -o "$TB_DIR/body" -w '%{http_code}' "$@") || tb_fail "GET $path $*: curl failed"
  [[ $out == "$code" ]] || tb_fail "GET $path $*: HTTP $out, want $code (rule $rule -> $be)"
  if [[ -n $file ]]; then
    cmp -s "$file" "$TB_DIR/body" || tb_fail "GET $path $*: body differs from ${file#"$WWW"/}"
  fi
  printf '  %-18s %-40s -> %s %s (%s)\n' "$path" "$*" "$code" "$be" "$rule"
  [[ $be != local ]] || local_want=$((local_want + 1))
  LOG_WANT+=("\"GET $path HTTP/1.1\" rule=$rule backend=$be outcome=$outcome ")
}

# check_access_log: line i of this part of the access log carries LOG_WANT[i].
check_access_log() {
  local -a lines
  local i line us
  tb_until 2000 eval '(($(wc -l <"$ACCESS") >= log_start + ${#LOG_WANT[@]}))' ||
    tb_fail "access log has $(($(wc -l <"$ACCESS") - log_start)) new lines, want ${#LOG_WANT[@]}"
  mapfile -t lines < <(tail -n +$((log_start + 1)) "$ACCESS")
  ((${#lines[@]} == ${#LOG_WANT[@]})) ||
    tb_fail "access log has ${#lines[@]} new lines for ${#LOG_WANT[@]} requests"
  for ((i = 0; i < ${#LOG_WANT[@]}; i++)); do
    line=${lines[i]}
    [[ $line == *" $TB_C_ADDR:"[0-9]*" ${LOG_WANT[i]}"* ]] ||
      tb_fail "access log line $((log_start + i + 1)): '$line', want client $TB_C_ADDR:PORT and '${LOG_WANT[i]}'"
    us=${line##*handoff_us=}
    [[ $us =~ ^[0-9]+$ ]] || tb_fail "access log line $((log_start + i + 1)) has no handoff_us=N: '$line'"
    if [[ ${LOG_WANT[i]} == *outcome=handoff* ]]; then
      ((us > 0)) || tb_fail "access log line $((log_start + i + 1)): a handoff that took 0 us: '$line'"
    fi
  done
  echo "access log: ${#lines[@]} lines, each with the expected rule, backend and outcome"
  log_start=$((log_start + ${#lines[@]}))
  LOG_WANT=()
}

echo "== partitioned content: every request routed to the only node that has the file"
local0=$(tb_fe_counter served_locally)
get /img/logo.png 200 "$WWW/be1/img/logo.png" images be1 handoff
get /img/photo.jpeg 200 "$WWW/be1/img/photo.jpeg" images be1 handoff
get /api/chart.png 200 "$WWW/be1/api/chart.png" images be1 handoff
get /api/users.json 200 "$WWW/be2/api/users.json" api be2 handoff
get /api/v1/status 200 "$WWW/be2/api/v1/status" api be2 handoff
get /dl/pkg.tar.gz 200 "$WWW/be3/dl/pkg.tar.gz" downloads be3 handoff
get /dl/readme.txt 200 "$WWW/be3/dl/readme.txt" downloads be3 handoff
get / 200 "$WWW/fe/index.html" default local local
get /other.txt 200 "$WWW/fe/other.txt" default local local
get /dl/missing.bin 404 "" downloads be3 handoff
get /img/missing.gif 404 "" images be1 handoff

echo "== header, cookie and host rules (the same paths without them fall to the FE: 404)"
get /gold/offer.txt 200 "$WWW/be2/gold/offer.txt" tenant-gold be2 handoff -H 'X-Tenant: gold'
get /gold/offer.txt 404 "" default local local -H 'X-Tenant: golden'
get /gold/offer.txt 404 "" default local local
get /vip/lounge.txt 200 "$WWW/be3/vip/lounge.txt" vip-session be3 handoff -H 'Cookie: theme=dark; session=vip-42'
get /vip/lounge.txt 404 "" default local local -H 'Cookie: session=novip; other=vip'
get /vip/lounge.txt 404 "" default local local
get /host-only.txt 200 "$WWW/be1/host-only.txt" img-host be1 handoff -H 'Host: img.example.com'
get /host-only.txt 404 "" default local local -H 'Host: www.example.com'
# First match wins: the header rule comes before the path rules.
get /api/users.json 200 "$WWW/be2/api/users.json" tenant-gold be2 handoff -H 'X-Tenant: gold'
get /dl/readme.txt 200 "$WWW/be3/dl/readme.txt" vip-session be3 handoff -H 'Cookie: session=vip'

echo "== repeated: 10 rounds over the partitioned paths"
for ((r = 0; r < 10; r++)); do
  get /img/logo.png 200 "$WWW/be1/img/logo.png" images be1 handoff >/dev/null
  get /api/users.json 200 "$WWW/be2/api/users.json" api be2 handoff >/dev/null
  get /dl/readme.txt 200 "$WWW/be3/dl/readme.txt" downloads be3 handoff >/dev/null
  get /other.txt 200 "$WWW/fe/other.txt" default local local >/dev/null
done
served_local=$(($(tb_fe_counter served_locally) - local0))
echo "FE served $served_local requests itself (local node)"
((served_local == local_want)) ||
  tb_fail "counters.served_locally grew by $served_local, want $local_want"
check_access_log
js=$(tb_status_json fe)
for k in 1 2 3; do
  echo "be$k: $(jq -r --arg id "be$k" '.backends[] | select(.id == $id) | "\(.handoffs) handoffs, \(.failures) failures"' <<<"$js")"
done
jq -e '.handoffs.failed == 0' <<<"$js" >/dev/null || tb_fail "failed handoffs: $(jq -c .handoffs <<<"$js")"

echo "== LARD over be1..be3 (FE restarted with a new file; no default rule)"
tb_stop_fe || tb_fail "the FE did not stop cleanly (status ${TB_EXIT[fe]})"
TB_BE_GROUPS=()
TB_FE_EXTRA="access_log = \"$ACCESS\""
tb_config "$(
  cat <<'EOF'
[[rule]]
name = "pages"
path = '^/p[0-9]+\.txt$'
group = "all"
policy = "lard"
EOF
)"
tb_start_fe
tb_wait_ready
log_start=$(wc -l <"$ACCESS")

# page N: sets WHO to the BE that answered /pN.txt (its copy names it).
page() {
  local body
  body=$(tb_curl "p$1.txt" -f) || tb_fail "GET /p$1.txt failed"
  WHO=${body%% *}
  [[ $body == "$WHO p$1" && $WHO =~ ^be[123]$ ]] || tb_fail "GET /p$1.txt: unexpected body '$body'"
  LOG_WANT+=("\"GET /p$1.txt HTTP/1.1\" rule=pages backend=$WHO outcome=handoff ")
}

declare -A first=() per_be=()
for ((i = 0; i < 20; i++)); do
  page 1
  first[1]=${first[1]:-$WHO}
  [[ $WHO == "${first[1]}" ]] || tb_fail "LARD moved /p1.txt from ${first[1]} to $WHO at low load (request $i)"
done
echo "/p1.txt: 20 sequential requests, all answered by ${first[1]}"
for ((n = 2; n <= 30; n++)); do
  page "$n"
  first[$n]=$WHO
done
for ((n = 1; n <= 30; n++)); do per_be[${first[$n]}]=$((${per_be[${first[$n]}]:-0} + 1)); done
echo "30 distinct paths: be1 ${per_be[be1]:-0}, be2 ${per_be[be2]:-0}, be3 ${per_be[be3]:-0}"
for k in 1 2 3; do
  ((${per_be[be$k]:-0} >= 3)) || tb_fail "LARD gave be$k ${per_be[be$k]:-0} of 30 distinct paths, want >= 3"
done
for ((n = 1; n <= 30; n++)); do
  page "$n"
  [[ $WHO == "${first[$n]}" ]] || tb_fail "LARD moved /p$n.txt from ${first[$n]} to $WHO at low load"
done
echo "second pass: every path answered by the same BE as the first time"

echo "== no rule matches: 404"
norule0=$(tb_fe_counter no_rule)
get /whoami.txt 404 "" - - no-rule
get /p1.txt.bak 404 "" - - no-rule
((norule0 + 2 == $(tb_fe_counter no_rule))) || tb_fail "counters.no_rule did not grow by 2"
check_access_log
jq -e '.handoffs.failed == 0' <<<"$(tb_status_json fe)" >/dev/null || tb_fail "failed handoffs in the LARD part"

echo "PASS: rules"
