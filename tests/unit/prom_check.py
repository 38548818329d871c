#!/usr/bin/python3
"""Checks a Prometheus text-format (0.0.4) document read from stdin.

Parses it with the reference Python client's parser (prometheus_client), then applies
the rules that parser leaves out (it is lax: it silently splits a family whose samples
are not grouped, and turns stray samples into untyped singletons). On success prints
the parsed families as JSON on stdout and exits 0; otherwise prints the problems on
stderr and exits 1. Exits 2 when prometheus_client is not installed.

Usage: prom_check.py < metrics.txt
"""
import json
import math
import re
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("prometheus_client is not installed (Debian: python3-prometheus-client)", file=sys.stderr)
    sys.exit(2)

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def value_json(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def check_comments(text, problems):
    """One # HELP and one # TYPE per family, TYPE before the family's samples."""
    seen = {"HELP": set(), "TYPE": set()}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[0] == "#" and parts[1] in seen:
            if parts[2] in seen[parts[1]]:
                problems.append(f"line {n}: second # {parts[1]} for {parts[2]}")
            seen[parts[1]].add(parts[2])
            if parts[1] == "TYPE" and (len(parts) < 4 or parts[3] not in
                                       ("counter", "gauge", "histogram", "summary", "untyped")):
                problems.append(f"line {n}: bad TYPE line: {line!r}")


def check_histogram(f, problems):
    series = {}
    for s in f.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        h = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
        if s.name.endswith("_bucket"):
            h["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            h["count"] = s.value
        elif s.name.endswith("_sum"):
            h["sum"] = s.value
    for key, h in series.items():
        where = f"{f.name}{dict(key)}"
        les = [le for le, _ in h["buckets"]]
        counts = [c for _, c in h["buckets"]]
        if not les or les[-1] != math.inf:
            problems.append(f"{where}: no le=\"+Inf\" bucket last")
        if les != sorted(les) or len(set(les)) != len(les):
            problems.append(f"{where}: le bounds not strictly increasing: {les}")
        if counts != sorted(counts):
            problems.append(f"{where}: bucket counts not cumulative: {counts}")
        if h["count"] is None or h["sum"] is None:
            problems.append(f"{where}: missing _count or _sum")
        elif counts and counts[-1] != h["count"]:
            problems.append(f"{where}: +Inf bucket {counts[-1]} != _count {h['count']}")


def main():
    text = sys.stdin.read()
    problems = []
    check_comments(text, problems)
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends on malformed lines
        print(f"parse error: {e}", file=sys.stderr)
        return 1
    names = set()
    owner = {}  # sample name -> family name
    out = []
    for f in families:
        if f.name in names:
            problems.append(f"{f.name}: family appears twice (samples not grouped)")
        names.add(f.name)
        if f.type in ("untyped", "unknown"):
            problems.append(f"{f.name}: sample without # TYPE of its family")
        series = set()
        for s in f.samples:
            if not METRIC_NAME.match(s.name):
                problems.append(f"{s.name}: invalid metric name")
            for k in s.labels:
                if not LABEL_NAME.match(k) or k.startswith("__"):
                    problems.append(f"{s.name}: invalid label name {k!r}")
            if owner.setdefault(s.name, f.name) != f.name:
                problems.append(f"{s.name}: samples split between families (not grouped)")
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in series:
                problems.append(f"{s.name}{s.labels}: duplicate series")
            series.add(key)
            if f.type == "counter" and not s.value >= 0:
                problems.append(f"{s.name}{s.labels}: counter value {s.value} is not >= 0")
        if f.type == "histogram":
            check_histogram(f, problems)
        out.append({"name": f.name, "type": f.type, "help": f.documentation,
                    "samples": [{"name": s.name, "labels": s.labels, "value": value_json(s.value)}
                                for s in f.samples]})
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
