#!/usr/bin/env bash
# Hot reload (issue 4): the FE starts routing everything to be1; a 10 MB download
# from be1 is running (rate-limited to last about 4 s) when the cluster file is
# changed to route everything to be2 and the FE gets SIGHUP. New requests must go to
# be2 while the download completes byte-exact, and a connection the client opened
# before the reload must still be served. Then broken files (a bad regex, an unknown
# group) are refused with FILE:LINE in the log: counters.reload_failures grows,
# generation and routing stay. A good file after that is applied again.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq sha256sum python3
TB_BE_GROUPS=([1]='"one"' [2]='"two"' [3]='"three"')
TB_NO_DEFAULT_RULE=1
rule_to() { printf '[[rule]]\nname = "to-%s"\ngroup = "%s"\npolicy = "round-robin"\n' "$1" "$1"; }
tb_cluster_up 3 "$(rule_to one)"
tb_small_buffers # the download must stream from be1 across the reload

fe_field() { tb_status_json fe | jq -er "$1"; }
# answers N WANT: N requests for /whoami.txt, each answered by WANT.
answers() {
  local i who
  for ((i = 0; i < $1; i++)); do
    who=$(tb_curl whoami.txt -f) || tb_fail "GET /whoami.txt failed (want $2)"
    [[ $who == "$2" ]] || tb_fail "GET /whoami.txt answered by '$who', want $2"
  done
  echo "$1 requests for /whoami.txt, all answered by $2"
}
# hup: SIGHUP to the FE, then waits (bounded) until COUNTER has grown by one.
hup() {
  local counter=$1 before
  before=$(fe_field ".counters.$counter")
  kill -HUP "${TB_PID[fe]}"
  tb_until 3000 eval '(($(fe_field ".counters.$counter") > before))' ||
    tb_fail "counters.$counter did not grow within 3 s of SIGHUP"
  echo "SIGHUP: counters.$counter $before -> $(fe_field ".counters.$counter") after ${TB_UNTIL_MS} ms"
}

echo "== rule A: everything to be1"
answers 6 be1
gen0=$(fe_field .generation)
reloads0=$(fe_field .counters.reloads)
echo "generation $gen0, reloads $reloads0"

echo "== a 10 MB download from be1, rate-limited to ~8 s (it must span the reload on a loaded machine)"
t_dl=$(tb__now_ms)
tb_spawn --log "$TB_DIR/dl.out" dl "$TB_NS_C" curl -sS --noproxy '*' --max-time 60 --limit-rate 1250k \
  -o "$TB_DIR/dl.body" -w '%{http_code} %{size_download}' "http://$TB_VIP/f10m.bin"
tb_until 3000 eval '(($(tb_status_json be1 | jq -e .active) >= 1))' ||
  tb_fail "the download did not start on be1"
# A client connection opened before the reload whose request is sent after it.
tb_spawn early "$TB_NS_C" python3 -c '
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=10)
open(sys.argv[2], "w").write("connected\n")
for _ in range(200):
    if os.path.exists(sys.argv[3]): break
    time.sleep(0.05)
s.sendall(b"GET /whoami.txt HTTP/1.1\r\nHost: bed\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(65536): data += chunk
head, _, body = data.partition(b"\r\n\r\n")
print(head.split(b" ")[1].decode(), body.decode().strip())
' "$TB_VIP" "$TB_DIR/early.connected" "$TB_DIR/early.go"
tb_until 3000 test -s "$TB_DIR/early.connected" || tb_fail "the early client could not connect"

echo "== reload to rule B: everything to be2"
tb_config "$(rule_to two)"
sent_reload=$(tb_status_json be1 | jq -e .counters.bytes_sent)
hup reloads
gen=$(fe_field .generation)
((gen == gen0 + 1)) || tb_fail "generation $gen after one reload, want $((gen0 + 1))"
tb__alive dl || tb_fail "the download ended before the reload took effect (it must span it)"
answers 6 be2
tb__alive dl || tb_fail "the download ended before the new rule was checked (it must span it)"
echo "download still running $(($(tb__now_ms) - t_dl)) ms after it started"
touch "$TB_DIR/early.go"
tb_wait early 15 || tb_fail "the connection opened before the reload failed: $(cat "$TB_DIR/early.log")"
read -r code who <"$TB_DIR/early.log"
[[ $code == 200 && $who =~ ^be[12]$ ]] ||
  tb_fail "the connection opened before the reload got: $(cat "$TB_DIR/early.log")"
echo "connection opened before the reload, request sent after it: HTTP $code from $who"

rc=0
tb_wait dl 40 || rc=$?
dl_ms=$(($(tb__now_ms) - t_dl))
((rc == 0)) || tb_fail "the download across the reload failed: curl exit status $rc: $(cat "$TB_DIR/dl.out")"
out=$(<"$TB_DIR/dl.out")
code=${out%% *} size=${out##* }
[[ $code == 200 ]] || tb_fail "the download across the reload: HTTP $code"
sum=$(sha256sum <"$TB_DIR/dl.body")
[[ ${sum%% *} == "${TB_SHA[f10m.bin]}" ]] || tb_fail "the download across the reload differs ($size bytes)"
# be1 got no new connection after the reload: what it sent since is the download's rest.
sent=$(($(tb_status_json be1 | jq -e .counters.bytes_sent) - sent_reload))
echo "download across the reload: $size bytes in $dl_ms ms, byte-exact; be1 sent $sent of them after the SIGHUP"
((sent > 0)) || tb_fail "be1 sent nothing after the reload: the download did not span it"

echo "== broken files are refused; the old configuration stays"
gen1=$(fe_field .generation)
reloads1=$(fe_field .counters.reloads)
for broken in regex group; do
  if [[ $broken == regex ]]; then
    bad=$(printf '[[rule]]\nname = "broken"\npath = %s  # BROKEN\ngroup = "one"\n' "'^/(unclosed'")
  else
    bad=$(printf '[[rule]]\nname = "broken"\ngroup = "nobody"  # BROKEN\n')
  fi
  tb_config "$bad"$'\n\n'"$(rule_to one)"
  line=$(grep -n '# BROKEN' "$TB_CONFIG" | cut -d: -f1)
  if "$TB_TCPHA" check -c "$TB_CONFIG" >/dev/null 2>&1; then tb_fail "tcpha check accepts the file with a bad $broken"; fi
  log0=$(wc -l <"$TB_DIR/fe.log")
  hup reload_failures
  msg=$(tail -n +$((log0 + 1)) "$TB_DIR/fe.log" | grep -F "cluster.toml:$line:") ||
    tb_fail "the FE log does not name cluster.toml:$line (the bad $broken): $(tail -n +$((log0 + 1)) "$TB_DIR/fe.log")"
  echo "bad $broken refused; FE log: $(head -1 <<<"$msg" | cut -d' ' -f3- | cut -c1-150)"
  gen=$(fe_field .generation)
  reloads=$(fe_field .counters.reloads)
  ((gen == gen1 && reloads == reloads1)) ||
    tb_fail "after the refused file: generation $gen (want $gen1), reloads $reloads (want $reloads1)"
  answers 6 be2
done

echo "== a good file after the refused ones is applied"
tb_config "$(rule_to three)"
hup reloads
gen=$(fe_field .generation)
((gen == gen1 + 1)) || tb_fail "generation $gen, want $((gen1 + 1))"
answers 6 be3
js=$(tb_status_json fe)
echo "generation $(jq .generation <<<"$js"), counters: $(jq -c '.counters | {reloads, reload_failures}' <<<"$js"), handoffs: $(jq -c .handoffs <<<"$js")"
jq -e '.handoffs.failed == 0' <<<"$js" >/dev/null || tb_fail "failed handoffs: $(jq -c .handoffs <<<"$js")"

echo "== SIGHUP reopens the access log (rotation)"
LOG=$TB_DIR/access.log
TB_FE_EXTRA="access_log = \"$LOG\""
tb_config "$(rule_to three)"
hup reloads
answers 2 be3
[[ $(wc -l <"$LOG") -ge 2 ]] || tb_fail "access log $LOG has $(wc -l <"$LOG") lines after 2 requests"
mv "$LOG" "$LOG.1"
lines_old=$(wc -l <"$LOG.1")
hup reloads
answers 3 be3
[[ -f $LOG ]] || tb_fail "SIGHUP did not reopen $LOG after it was moved away"
[[ $(wc -l <"$LOG") -ge 3 && $(wc -l <"$LOG.1") -eq $lines_old ]] ||
  tb_fail "after rotation: $(wc -l <"$LOG") new lines (want 3), old file $(wc -l <"$LOG.1") (want $lines_old)"
grep -q 'rule=to-three backend=be3 outcome=handoff' "$LOG" ||
  tb_fail "access log line not as expected: $(head -1 "$LOG")"
echo "access log rotated: $lines_old lines in the old file, $(wc -l <"$LOG") in the new one"

echo "PASS: reload"
