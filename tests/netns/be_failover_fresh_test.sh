#!/usr/bin/env bash
# BE failover for connections handed off just before the failure (issue 13;
# docs/failover.md, "BACKUP when due"). The FE sends a connection's BACKUP 10-30 ms after
# its COMMIT, not at once, so that short connections cost their backup nothing. A
# primary that dies within that delay must still have its new connections taken over:
# the worker that fails it over sends their BACKUPs ahead of its TAKEOVERs, and another
# worker sends its own with a TAKEOVER behind them.
#
# A client opens a keep-alive connection every few milliseconds, each answering one
# request (who owns it), across the moment a BE agent is killed (SIGKILL: detected in
# milliseconds, well inside the delay). A second later every connection asks again on
# the same connection: all must answer, those that were on the dead BE included, and the
# FE must count none lost.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq python3

# The path under test needs a connection committed to the victim within its BACKUP's
# delay (10-30 ms) of the failover's detection. How long the kernel takes to end the
# SIGKILLed agent decides that: 2-12 ms here, 25 ms once on a loaded CI machine, which
# left none. Such a run checks everything else but not the path: it exits 3, and the
# test runs again on a fresh bed, at most 3 times. Any other failure fails at once.
if [[ -z ${FRESH_ATTEMPT:-} ]]; then
  for attempt in 1 2 3; do
    rc=0
    FRESH_ATTEMPT=$attempt bash "${BASH_SOURCE[0]}" "$TB_TCPHA" || rc=$?
    ((rc == 3)) || exit "$rc"
    echo "attempt $attempt: no BACKUP was still due at the failover; again on a fresh bed"
  done
  tb_fail "in 3 attempts no BACKUP was still due when the victim failed over: the path was not tested"
fi

tb_init 3
tb_key
for k in 1 2 3; do tb_docroot "$k"; done
TB_CLUSTER_EXTRA='failover = "ring"'
tb_config
for k in 1 2 3; do tb_start_be "$k"; done
tb_start_fe
tb_wait_ready

mkfifo "$TB_DIR/go"
# Opens connections for OPEN_S seconds (one every GAP_S), each with one GET; then waits
# for a line on stdin, asks each again and prints a JSON summary.
tb_c python3 -c '
import json, socket, sys, time
vip, open_s, gap_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def get(s):
    s.sendall(b"GET /whoami.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d: raise OSError("closed before a response")
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        d = s.recv(4096)
        if not d: raise OSError("closed in a response")
        body += d
    if not head.startswith(b"HTTP/1.1 200"): raise OSError(head.split(b"\r\n")[0].decode())
    return body.decode().strip()
conns, first_failed, t0 = [], [], time.monotonic()
print("opening", flush=True)
while time.monotonic() - t0 < open_s:
    t = time.monotonic() - t0
    try:
        s = socket.create_connection((vip, 80), timeout=10)
        conns.append((t, s, get(s)))
        print("answered", conns[-1][2], flush=True)
    except OSError as e:
        first_failed.append("%.3f %s" % (t, e))
    time.sleep(gap_s)
sys.stdin.readline()
by_be, second_failed = {}, []
for t, s, who in conns:
    by_be[who] = by_be.get(who, 0) + 1
    try:
        get(s)
    except OSError as e:
        second_failed.append("%.3f %s (first answer from %s)" % (t, e, who))
print(json.dumps({"opened": len(conns), "first_by_be": by_be, "first_failed": first_failed,
                  "second_failed": second_failed}), flush=True)
' "$TB_VIP" 1.5 0.002 <"$TB_DIR/go" >"$TB_DIR/client.out" 2>&1 &
client=$!
exec {go}>"$TB_DIR/go"
tb_until 5000 grep -q opening "$TB_DIR/client.out" || tb_fail "the client did not start"
sleep 0.7
# The victim: the back-end that answered the latest connection, killed at once, so that
# its BACKUP is still due when the failover comes (the FE spreads connections unevenly
# under load: a fixed victim could have had none for 30 ms).
VICTIM=$(grep '^answered be' "$TB_DIR/client.out" | tail -1 | sed 's/^answered be//')
[[ $VICTIM =~ ^[123]$ ]] || tb_fail "no connection answered yet"
t_kill=$(tb__now_ms)
tb_kill_be "$VICTIM"
echo "killed be$VICTIM, which answered the latest connection"
sleep 1.8 # the client stops opening at 1.5 s; the takeover is over well before
echo go >&"$go"
exec {go}>&-
wait "$client" || tb_fail "the client failed: $(tail -5 "$TB_DIR/client.out")"
summary=$(tail -1 "$TB_DIR/client.out")
js=$(tb_status_json fe)
echo "client: $(jq -c '{opened, first_by_be, first_failed: (.first_failed | length), second_failed: (.second_failed | length)}' <<<"$summary")"
echo "FE failover: $(jq -c .failover <<<"$js")"
echo "FE: backups sent $(jq '.counters.backups' <<<"$js"), ended before theirs was due $(jq '.counters.backups_unsent' <<<"$js")"
echo "failover detected $(($(jq -r '.failover.last.at_unix_ms' <<<"$js") - t_kill)) ms after the kill"
jq -e '.second_failed == [] and .first_failed == []' <<<"$summary" >/dev/null ||
  tb_fail "connections failed: $(jq -c '{first_failed, second_failed}' <<<"$summary" | head -c 3000)"
on_victim=$(jq --arg v "be$VICTIM" '.first_by_be[$v] // 0' <<<"$summary")
((on_victim >= 20)) || tb_fail "only $on_victim connections were on be$VICTIM"
[[ $(jq -r '.failover.last.backend' <<<"$js") == "be$VICTIM" ]] || tb_fail "the FE did not fail be$VICTIM over"
(($(jq -r '.failover.last.lost' <<<"$js") == 0)) || tb_fail "the FE counts lost connections"
recovered=$(jq -r '.failover.last.recovered' <<<"$js")
# Not all of them were still there: the BEs' rebalance may have moved some away.
echo "$on_victim connections first answered by be$VICTIM; $recovered taken over by their backups"
((recovered >= on_victim * 3 / 4)) || tb_fail "only $recovered taken over of $on_victim on be$VICTIM"
# The path under test ran: BACKUPs still due when be2 failed over, sent then.
late=$( (grep -o '[0-9]* BACKUP(s) of connections whose back-end failed over before they were due' \
  "$TB_DIR/fe.log" || true) | awk '{n += $1} END {print n + 0}')
echo "BACKUPs still due at the failover, sent then: $late"
if ((late == 0)); then
  echo "no BACKUP was still due when be$VICTIM failed over: the path was not tested (attempt $FRESH_ATTEMPT)"
  exit 3
fi
echo "PASS: be_failover_fresh"
