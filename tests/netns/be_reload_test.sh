#!/usr/bin/env bash
# A back-end's SIGHUP (issue 12: back-ends route later requests, so they must follow a
# rule change like the FE): it re-reads the rules and reopens its access log.
#   be1 group "a" (/a/), be2 group "b" (/b/); both have every file, each saying which
#   BE it is on. A kept-alive connection asking /a/x then /b/x moves to be2.
#   1. the file changes /b/ to group "a"; FE and BEs get SIGHUP: on one connection,
#      /a/x then /b/x are both answered by be1 (no move); be1's access log, moved
#      aside before the SIGHUP (log rotation), is written afresh and has the /b/x line.
#   2. a file with an error: the SIGHUP is refused (reload_failures), the rules stay.
#   3. a file whose [[backend]] list changed: refused too (needs a restart).
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq
tb_require_tcpha
tb_init 2
tb_key

WWW=$TB_DIR/www
for k in 1 2; do
  mkdir -p "$WWW/be$k/a" "$WWW/be$k/b"
  echo "be$k" >"$WWW/be$k/a/x"
  echo "be$k" >"$WWW/be$k/b/x"
  TB_BE_EXTRA[k]="access_log = \"$TB_DIR/access-be$k.log\""
done
TB_BE_GROUPS=([1]='"a"' [2]='"b"')
TB_NO_DEFAULT_RULE=1
rules() { # rules GROUP_OF_B
  cat <<EOF
[[rule]]
name = "a"
path = '^/a/'
group = "a"

[[rule]]
name = "b"
path = '^/b/'
group = "$1"
EOF
}
tb_config "$(rules b)"
for k in 1 2; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

URL=http://$TB_VIP:$TB_PORT
# both: GET /a/x and /b/x on one connection; prints "<server of a> <server of b> <connections>"
both() {
  local out
  out=$(tb_c timeout 20 curl -sS --noproxy '*' --max-time 10 -w '%{num_connects}\n' \
    "$URL/a/x" "$URL/b/x") || tb_fail "curl failed: $out"
  # curl prints each body ("beN\n") followed by its -w line
  awk 'NR % 2 == 1 { s = s $0 " " } NR % 2 == 0 { c += $0 } END { print s c }' <<<"$out"
}
# A counter, or -1 when the BE does not have it (or does not answer): a number either
# way, so that a condition on it is false rather than an error that ends the script.
counter() { tb_status_json "be$1" 2>/dev/null | jq -e ".counters.$2 // -1" 2>/dev/null || echo -1; }
# wait_counter K NAME VALUE: until be K's counter reaches VALUE (5 s at most).
wait_counter() {
  local i
  for ((i = 0; i < 50; i++)); do
    (($(counter "$1" "$2") >= $3)) && return 0
    sleep 0.1
  done
  tb_fail "be$1 counter $2 = $(counter "$1" "$2") after 5 s, want $3"
}
hup_all() {
  kill -HUP "${TB_PID[fe]}" "${TB_PID[be1]}" "${TB_PID[be2]}"
  wait_counter 1 reloads "$1"
  wait_counter 2 reloads "$1"
  sleep 0.2 # the FE's reload (its counter is checked by reload_test)
}

read -r a b c <<<"$(both)"
[[ $a == be1 && $b == be2 && $c == 1 ]] || tb_fail "before the reload: /a/x by $a, /b/x by $b over $c connections, want be1 be2 1"
echo "before: /a/x by be1, /b/x moved to be2 on the same connection"

echo "== 1. /b/ becomes group a; SIGHUP to FE and BEs (be1's access log rotated first)"
tb_config "$(rules a)"
mv "$TB_DIR/access-be1.log" "$TB_DIR/access-be1.log.1"
moved_before=$(counter 1 moved_out)
hup_all 1
read -r a b c <<<"$(both)"
[[ $a == be1 && $b == be1 && $c == 1 ]] ||
  tb_fail "after the reload: /a/x by $a, /b/x by $b over $c connections, want be1 be1 1 (be1 still routing by the old rules?)"
(($(counter 1 moved_out) == moved_before)) || tb_fail "be1 moved a connection after the reload"
(($(counter 1 reloads) == 1)) || tb_fail "be1 reloads = $(counter 1 reloads), want 1"
[[ -s $TB_DIR/access-be1.log ]] || tb_fail "be1 did not reopen its access log on SIGHUP"
grep -q '"GET /b/x HTTP/1.1" 200 .* backend=be1' "$TB_DIR/access-be1.log" ||
  tb_fail "be1's new access log lacks the /b/x line: $(cat "$TB_DIR/access-be1.log")"
echo "after: /a/x and /b/x both by be1 on one connection, no move; access log reopened"

echo "== 2. a file with an error is refused; the rules stay"
cp "$TB_DIR/cluster.toml" "$TB_DIR/good.toml"
echo 'this is not toml ]' >>"$TB_DIR/cluster.toml"
kill -HUP "${TB_PID[be1]}"
wait_counter 1 reload_failures 1
read -r a b c <<<"$(both)"
[[ $b == be1 ]] || tb_fail "after a refused reload /b/x went to $b"

echo "== 3. a changed [[backend]] list is refused (restart needed)"
sed 's/^id = "be2"/id = "be9"/' "$TB_DIR/good.toml" >"$TB_DIR/cluster.toml"
grep -q 'id = "be9"' "$TB_DIR/cluster.toml" || tb_fail "test setup: no backend id to rename"
kill -HUP "${TB_PID[be1]}"
wait_counter 1 reload_failures 2
cp "$TB_DIR/good.toml" "$TB_DIR/cluster.toml"
tb__alive be1 && tb__alive be2 || tb_fail "a back-end died"
echo "PASS: be_reload"
