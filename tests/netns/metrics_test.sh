#!/usr/bin/env bash
# Prometheus endpoints (issue 7): [frontend] metrics and one [[backend]] metrics serve
# text at http://ADDR:PORT/metrics inside their node's namespace. After some traffic,
# both must parse with the reference parser (prometheus_client, plus the format rules
# it leaves out: tests/unit/prom_check.py), the FE must have a handoff counter and a
# handoff-latency histogram agreeing with `tcpha status`, the BE an imports counter
# agreeing with its status; other paths get 404; a back-end without the key serves
# no metrics.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/testbed.sh
source "$HERE/../../scripts/testbed.sh"
tb_require_root
tb_require_cmd curl jq ss
# Debian's python3 first: one earlier in PATH (e.g. pyenv) may not see Debian's packages.
PY=""
for p in /usr/bin/python3 python3; do
  if "$p" -c 'import prometheus_client' >/dev/null 2>&1; then
    PY=$p
    break
  fi
done
if [[ -z $PY ]]; then
  echo "SKIP: no python3 with prometheus_client (make deps installs python3-prometheus-client)" >&2
  exit 77
fi
CHECKER=$HERE/../unit/prom_check.py
FE_METRICS=127.0.0.1:9180
BE_METRICS=127.0.0.1:9181
TB_FE_EXTRA="metrics = \"$FE_METRICS\""
TB_BE_EXTRA[1]="metrics = \"$BE_METRICS\""
tb_cluster_up 3

# parse FILE: the families as JSON ([{name, type, samples: [{name, labels, value}]}]),
# or failure with the parser's complaint.
parse() {
  if [[ -f $CHECKER ]]; then
    "$PY" "$CHECKER" <"$1"
  else
    "$PY" -c '
import json, sys
from prometheus_client.parser import text_string_to_metric_families
fams = [{"name": f.name, "type": f.type, "samples": [{"name": s.name, "labels": s.labels, "value": s.value}
         for s in f.samples]} for f in text_string_to_metric_families(sys.stdin.read())]
json.dump(fams, sys.stdout)' <"$1"
  fi
}
# scrape NODE NS ADDR: fetches /metrics into $TB_DIR/NODE.prom and parses it into
# $TB_DIR/NODE.json.
scrape() {
  local out
  out=$(ip netns exec "$2" curl -sS --noproxy '*' --max-time 5 -o "$TB_DIR/$1.prom" \
    -w '%{http_code} %{content_type}' "http://$3/metrics") || tb_fail "$1: GET http://$3/metrics failed (no endpoint listening there?)"
  [[ ${out%% *} == 200 ]] || tb_fail "$1: GET http://$3/metrics: HTTP ${out%% *}"
  [[ ${out#* } == text/plain* ]] || tb_fail "$1: /metrics Content-Type '${out#* }', want text/plain"
  parse "$TB_DIR/$1.prom" >"$TB_DIR/$1.json" 2>"$TB_DIR/$1.err" ||
    tb_fail "$1: /metrics does not parse as Prometheus text: $(head -5 "$TB_DIR/$1.err")"
}
# families NODE [JQ_FILTER]: names of the parsed families passing the filter.
families() { jq -r ".[] | select(${2:-true}) | .name" "$TB_DIR/$1.json"; }

echo "== traffic"
for ((i = 0; i < 30; i++)); do tb_fetch "$([[ $((i % 2)) == 0 ]] && echo f10k.bin || echo index.html)" >/dev/null ||
  tb_fail "request $i failed"; done

echo "== FE endpoint ($FE_METRICS in the FE namespace)"
scrape fe "$TB_NS_FE" "$FE_METRICS"
fe_js=$(tb_status_json fe)
echo "$(wc -l <"$TB_DIR/fe.prom") lines, $(jq length "$TB_DIR/fe.json") families:"
families fe | tr '\n' ' ' | fold -s -w 100 | sed 's/^/  /'
echo
ok=$(jq -e .handoffs.ok <<<"$fe_js")
lat_count=$(jq -e .handoff_latency_us.count <<<"$fe_js")
((ok >= 30)) || tb_fail "FE status: handoffs.ok $ok after 30 requests"
handoff_counters=$(families fe '.type == "counter" and (.name | ascii_downcase | contains("handoff"))')
[[ -n $handoff_counters ]] || tb_fail "FE metrics: no counter family whose name contains 'handoff'"
match=$(jq -r --argjson v "$ok" '.[] | select(.type == "counter" and (.name | ascii_downcase | contains("handoff")))
  | select(any(.samples[]; .value == $v)) | .name' "$TB_DIR/fe.json")
[[ -n $match ]] || tb_fail "FE metrics: no handoff counter equals status handoffs.ok = $ok (have: $(tr '\n' ' ' <<<"$handoff_counters"))"
echo "handoff counter(s) equal to status handoffs.ok ($ok): $(tr '\n' ' ' <<<"$match")"
hist=$(jq -r --argjson v "$lat_count" '.[] | select(.type == "histogram")
  | select(any(.samples[]; (.name | endswith("_count")) and .value == $v)) | .name' "$TB_DIR/fe.json")
[[ -n $hist ]] || tb_fail "FE metrics: no histogram whose _count equals status handoff_latency_us.count = $lat_count (histograms: $(families fe '.type == "histogram"' | tr '\n' ' '))"
echo "histogram(s) counting the $lat_count handoff latencies: $(tr '\n' ' ' <<<"$hist")"
per_be=$(jq -r '[.[] | .samples[] | .labels | to_entries[] | select(.value | test("^be[123]$")) | .value] | unique | join(" ")' "$TB_DIR/fe.json")
echo "back-end labels in the FE's metrics: ${per_be:-none}"

echo "== the counters move with the traffic (one declaration behind status and metrics)"
first=$(head -1 <<<"$match")
for ((i = 0; i < 10; i++)); do tb_fetch f1k.bin >/dev/null || tb_fail "request $i failed"; done
scrape fe "$TB_NS_FE" "$FE_METRICS"
want=$((ok + 10))
jq -e --arg n "$first" --argjson v "$want" 'any(.[] | select(.name == $n) | .samples[]; .value == $v)' \
  "$TB_DIR/fe.json" >/dev/null ||
  tb_fail "$first: $(jq -c --arg n "$first" '[.[] | select(.name == $n) | .samples[].value]' "$TB_DIR/fe.json") after 10 more handoffs, want $want"
echo "$first: $ok -> $want after 10 more requests"

echo "== BE endpoint ($BE_METRICS in be1's namespace)"
scrape be1 "${TB_NS_BE[1]}" "$BE_METRICS"
imported=$(tb_status_json be1 | jq -e .imported)
echo "$(wc -l <"$TB_DIR/be1.prom") lines, $(jq length "$TB_DIR/be1.json") families:"
families be1 | tr '\n' ' ' | fold -s -w 100 | sed 's/^/  /'
echo
import_fams=$(families be1 '.name | ascii_downcase | contains("import")')
[[ -n $import_fams ]] || tb_fail "be1 metrics: no family whose name contains 'import'"
match=$(jq -r --argjson v "$imported" '.[] | select(.name | ascii_downcase | contains("import"))
  | select(any(.samples[]; .value == $v)) | .name' "$TB_DIR/be1.json")
[[ -n $match ]] || tb_fail "be1 metrics: no import family equals status imported = $imported (have: $(tr '\n' ' ' <<<"$import_fams"))"
echo "import family equal to be1's status imported ($imported): $(tr '\n' ' ' <<<"$match")"

echo "== other paths: 404"
for where in "fe $TB_NS_FE $FE_METRICS" "be1 ${TB_NS_BE[1]} $BE_METRICS"; do
  read -r node ns addr <<<"$where"
  for path in / /metricsx /other; do
    code=$(ip netns exec "$ns" curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "http://$addr$path") ||
      tb_fail "$node: GET $path failed"
    [[ $code == 404 ]] || tb_fail "$node: GET http://$addr$path: HTTP $code, want 404"
  done
  echo "$node: /, /metricsx, /other -> 404"
done

echo "== off by default: be2 has no metrics key"
listen=$(tb_be 2 ss -Hltn | awk '{ print $4 }' | sort -u | tr '\n' ' ')
echo "be2 listens on: $listen"
for a in $listen; do
  [[ $a == *:7400 || $a == *:80 ]] || tb_fail "be2 listens on $a although it has no metrics key"
done

echo "PASS: metrics"
