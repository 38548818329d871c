#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into results.json, the plots and
docs/BENCHMARKS.md.

  report.py --raw bench/out/raw --out bench/out --docs docs

Every figure is derived here from the counters read around each wrk run (raw/*.json),
so the raw files are the evidence and this is the arithmetic.
"""
import argparse
import glob
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys

import report_failover
import report_variants
import report_md
from report_md import WORKLOAD_TEXT

SYSTEMS = ["tcpha", "tcpha-failover", "tcpha-tunnel", "tcpha-ipv6", "tcpha-base", "tcpha-relay", "tcpha-relay-unix", "haproxy", "direct", "direct-ipv6"]
BALANCERS = ["tcpha", "tcpha-relay", "tcpha-relay-unix", "haproxy"]
RELAYS = ["tcpha-relay", "tcpha-relay-unix"]
# Response sizes of the keep-alive workloads (throughput against size).
SIZES = {"ka-1k": 1024, "ka-10k": 10240, "ka-100k": 102400, "ka-1m": 1048576, "ka-10m": 10485760}
# The model's assumptions, for a real network rather than this bed's veth pairs (whose
# 64 KB segments make clients acknowledge rarely): the kernel's receive + redirect cost
# per forwarded packet, and one ACK per two 1448-byte segments (delayed ACKs).
R_ASSUMED_NS = 1000
MTU1500_ACKS_PER_MB = 1e6 / (2 * 1448)


def delta(a, b, path):
    """b - a for the number at `path` (a list of keys) in two snapshots, or None."""
    for k in path:
        a = a.get(k) if isinstance(a, dict) else None
        b = b.get(k) if isinstance(b, dict) else None
    return b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def find_number(obj, key):
    """The first number stored under `key` anywhere in a JSON tree."""
    if isinstance(obj, dict):
        if isinstance(obj.get(key), (int, float)) and not isinstance(obj.get(key), bool):
            return obj[key]
        children = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for c in children:
        v = find_number(c, key)
        if v is not None:
            return v
    return None


def be_number(status, key):
    """A counter of a BE status: the cache's as {"cache": {"hits", "misses"}}, the rest by
    name wherever it sits."""
    if key.startswith("cache_") and isinstance(status, dict) and isinstance(status.get("cache"), dict):
        v = status["cache"].get(key[len("cache_"):])
        if isinstance(v, (int, float)):
            return v
    return find_number(status, key)


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def derive(r):
    """The reported figures of one raw run."""
    w, a, b = r["wrk"], r["before"], r["after"]
    dur = w["duration_us"] / 1e6
    nbytes = w["bytes"]
    pct = {float(p): us for p, us in w["latency_us"]["percentiles"]}
    conns = w["requests"] if r["close"] else r["conns"]
    d = {
        "system": r["system"],
        "workload": r["workload"],
        "url": r["url"],
        "connections_param": r["conns"],
        "new_connection_per_request": r["close"],
        "duration_s": round(dur, 3),
        "round": r.get("round", 1),
        "attempt": r["attempt"],
        "attempt_loads": r.get("attempt_loads", [r["foreign_load"]]),
        "other_load_cpus": r["foreign_load"],
        "requests": w["requests"],
        "bytes": nbytes,
        "errors": w["errors"],
        "requests_per_s": w["requests"] / dur,
        "mb_per_s": nbytes / dur / 1e6,
        "latency_us": {"p50": pct.get(50.0), "p99": pct.get(99.0), "mean": w["latency_us"]["mean"],
                       "max": w["latency_us"]["max"], "percentiles": w["latency_us"]["percentiles"]},
        "client_connections": conns,
        "client_cpu_s": r["client_cpu_s"],
    }
    bed = delta(a, b, ["bed_cpu_ns"])
    d["bed_cpu_s"] = bed / 1e9 + r["client_cpu_s"] if bed is not None else None
    d["bed_cpu_s_per_gb"] = ratio(d["bed_cpu_s"], nbytes / 1e9)
    fe_ns = delta(a, b, ["fe_cpu_ns"])
    if fe_ns is not None:
        d["fe_cpu_s"] = fe_ns / 1e9
        d["fe_cpu_s_per_gb"] = d["fe_cpu_s"] / (nbytes / 1e9)
        d["fe_cpu_s_per_1000_conn"] = d["fe_cpu_s"] / conns * 1000 if conns else None
        d["fe_tx_bytes"] = delta(a, b, ["fe_tx_bytes"])
        d["fe_tx_per_response_byte"] = d["fe_tx_bytes"] / nbytes
    fe = b.get("fe_status")
    if isinstance(fe, dict):
        ok = delta(a, b, ["fe_status", "handoffs", "ok"])
        fwd = delta(a, b, ["fe_status", "datapath", "forward"])
        counters = {k: delta(a, b, ["fe_status", "counters", k]) for k in fe.get("counters", {})}
        d["tcpha"] = {
            "handoffs_ok": ok,
            "handoffs_failed": delta(a, b, ["fe_status", "handoffs", "failed"]),
            "fe_counters": {k: v for k, v in counters.items() if v},
            "datapath": {k: delta(a, b, ["fe_status", "datapath", k]) for k in fe.get("datapath", {})},
            # Cumulative since this FE started: the warm-up and the measured run.
            "handoff_latency_us": fe.get("handoff_latency_us"),
            "handoff_breakdown_us": fe.get("handoff_breakdown_us"),
            "forwarded_packets_per_connection": ratio(fwd, ok),
            "forwarded_packets_per_mb": ratio(fwd, nbytes / 1e6),
            "fe_cpu_s_per_handoff": ratio(d.get("fe_cpu_s"), ok),
            "bpf_ns_per_packet": ratio(delta(a, b, ["bpf", "run_time_ns"]), delta(a, b, ["bpf", "run_cnt"])),
            # Per BE, cumulative since the agent started (agents outlive one workload).
            "be_import_latency_us": [x.get("import_latency_us") for x in b.get("be_status") or []
                                     if isinstance(x, dict)],
        }
        # The handoff as the client sees it (issue 17's lease protocol): request complete
        # at the FE (or the moving BE) -> serving at the target, per BE (one host: one
        # clock). The worst BE's p50/p99 is the figure judged.
        tk = [x.get("takeover_latency_us") for x in b.get("be_status") or []
              if isinstance(x, dict) and isinstance(x.get("takeover_latency_us"), dict)
              and x["takeover_latency_us"].get("count")]
        if tk:
            d["tcpha"]["takeover_latency_us"] = {
                "p50": max(t.get("p50") or 0 for t in tk), "p99": max(t.get("p99") or 0 for t in tk),
                "count": sum(t.get("count") or 0 for t in tk), "per_be": tk}
    be_ns = [y - x for x, y in zip(a.get("be_cpu_ns") or [], b.get("be_cpu_ns") or [])]
    if be_ns:
        # Everything in the BE namespaces: the tcpha agents, or nginx behind HAProxy.
        d["be_cpu_s"] = sum(be_ns) / 1e9
        d["be_cpu_s_each"] = [x / 1e9 for x in be_ns]
        d["be_cpu_us_per_request"] = ratio(d["be_cpu_s"] * 1e6, w["requests"])
        d["be_cpu_s_per_gb"] = ratio(d["be_cpu_s"], nbytes / 1e9)
    d["bed_cpu_us_per_request"] = ratio(d["bed_cpu_s"] * 1e6 if d["bed_cpu_s"] is not None else None,
                                        w["requests"])
    if d.get("fe_cpu_s") is not None:
        d["fe_cpu_us_per_request"] = ratio(d["fe_cpu_s"] * 1e6, w["requests"])
        d["fe_cpu_us_per_connection"] = ratio(d["fe_cpu_s"] * 1e6, conns)
    if d.get("be_cpu_s") is not None:
        d["be_cpu_us_per_connection"] = ratio(d["be_cpu_s"] * 1e6, conns)
    bes = list(zip(a.get("be_status") or [], b.get("be_status") or []))
    if bes:
        sums = {}
        for key in ("requests", "imported", "bytes_sent", "cache_hits", "cache_misses",
                    "moved_out", "moved_in", "move_failed", "routed_elsewhere", "no_rule", "no_backend"):
            vals = [(be_number(x, key), be_number(y, key)) for x, y in bes if isinstance(y, dict)]
            vals = [y - x for x, y in vals if x is not None and y is not None]
            sums[key] = sum(vals) if vals else None
        d["backends"] = sums
        if sums["moved_out"] is not None:
            # Multi-handoff (issue 12). Latencies: per BE, cumulative since the agent
            # started (bench_tcpha_fe gives each routing fresh agents).
            fe_c = (d.get("tcpha") or {}).get("fe_counters") or {}
            d["moves"] = {
                "moved_out": sums["moved_out"], "moved_in": sums["moved_in"],
                "move_failed": sums["move_failed"], "routed_elsewhere": sums["routed_elsewhere"],
                "no_rule": sums["no_rule"], "no_backend": sums["no_backend"],
                "fe_repoints": fe_c.get("repoints", 0),
                "fe_repoint_refused": fe_c.get("repoint_refused", 0),
                "moves_per_request": ratio(sums["moved_out"], w["requests"]),
                "move_latency_us": [dict(x.get("move_latency_us") or {}, id=x.get("id"))
                                    for x in b.get("be_status") or [] if isinstance(x, dict)],
                "be_import_latency_us": [dict(x.get("import_latency_us") or {}, id=x.get("id"))
                                         for x in b.get("be_status") or [] if isinstance(x, dict)],
                # The parts of a move (each BE's own histograms): HOLD + export + HANDOFF,
                # HANDOFF -> READY (the target's import and the round trip), READY -> COMMIT.
                "move_parts_us": [{"id": x.get("id"),
                                   "send": x.get("move_send_latency_us") or {},
                                   "ready": x.get("move_ready_latency_us") or {},
                                   "commit": x.get("move_commit_latency_us") or {}}
                                  for x in b.get("be_status") or [] if isinstance(x, dict)],
            }
            lat = [x for x in d["moves"]["move_latency_us"] if x.get("count")]
            # The BEs' histograms are separate: the worst BE's percentile, not a merged one.
            d["moves"]["move_latency_p50_us_max"] = max((x["p50"] for x in lat), default=None)
            d["moves"]["move_latency_p99_us_max"] = max((x["p99"] for x in lat), default=None)
        if sums["cache_hits"] is not None and sums["cache_misses"] is not None:
            total = sums["cache_hits"] + sums["cache_misses"]
            d["cache_hit_rate"] = sums["cache_hits"] / total if total else None
    report_failover.derive_run(r, d)
    return d


def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def combine(vals):
    """The median over rounds of one figure, key by key through dicts and item by item
    through lists of the same length (histograms, per-BE lists, wrk's percentiles);
    anything else (names, flags) is the first round's."""
    present = [v for v in vals if v is not None]
    if not present:
        return None
    if all(is_num(v) for v in present):
        m = statistics.median(present)
        # Counts stay integers where the median is one (an even number of rounds averages
        # the middle two).
        return int(m) if all(isinstance(v, int) for v in present) and m == int(m) else m
    if all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: combine([v.get(k) for v in present]) for k in keys}
    if all(isinstance(v, list) for v in present) and len({len(v) for v in present}) == 1:
        return [combine(list(items)) for items in zip(*present)]
    return present[0]


def dig(d, path):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


# Figures whose spread over rounds results.json records (min, max) next to the median.
SPREAD = {
    "requests_per_s": ("requests_per_s",),
    "mb_per_s": ("mb_per_s",),
    "latency_p50_us": ("latency_us", "p50"),
    "latency_p99_us": ("latency_us", "p99"),
    "fe_cpu_s_per_gb": ("fe_cpu_s_per_gb",),
    "fe_cpu_us_per_connection": ("fe_cpu_us_per_connection",),
    "be_cpu_us_per_request": ("be_cpu_us_per_request",),
    "handoff_p50_us": ("tcpha", "handoff_latency_us", "p50"),
    "takeover_p50_us": ("tcpha", "takeover_latency_us", "p50"),
    "fe_cpu_us_per_handoff": ("tcpha", "fe_cpu_s_per_handoff"),
}


def combine_rounds(rounds, quiet_load):
    """One (system, workload)'s rounds -> its reported figures: every figure the median
    over rounds, errors summed, and the rounds themselves kept (rounds[])."""
    rounds = sorted(rounds, key=lambda d: d["round"])
    d = combine(rounds)
    d["errors"] = {k: sum((r["errors"].get(k) or 0) for r in rounds)
                   for k in dict.fromkeys(k for r in rounds for k in r["errors"])}
    d["round_count"] = len(rounds)
    d["round"] = None
    d["attempt"] = None
    d["attempts"] = [r["attempt"] for r in rounds]
    d["attempt_loads"] = [r.get("attempt_loads") for r in rounds]
    d["other_load_rounds"] = [r["other_load_cpus"] for r in rounds]
    # The worst round's load (the column consumers read); per round in other_load_rounds.
    d["other_load_cpus"] = max(d["other_load_rounds"])
    d["disturbed_rounds"] = [r["round"] for r in rounds if r["other_load_cpus"] > quiet_load]
    d["spread"] = {}
    for key, path in SPREAD.items():
        xs = [x if key != "fe_cpu_us_per_handoff" or x is None else x * 1e6
              for x in (dig(r, path) for r in rounds)]
        xs = [x for x in xs if is_num(x)]
        if xs:
            d["spread"][key] = [min(xs), max(xs)]
    d["rounds"] = rounds
    return d


def round_ratio(a, b, path, quiet_load):
    """a/b of the figure at `path`, round by round (a system's run against the other's
    run of the same round): median, min, max, and which rounds other load disturbed."""
    if not a or not b:
        return None
    rb = {r["round"]: r for r in b["rounds"]}
    per = []
    for ra in a["rounds"]:
        mb = rb.get(ra["round"])
        x = ratio(dig(ra, path), dig(mb, path)) if mb else None
        if x is not None:
            per.append({"round": ra["round"], "ratio": x,
                        "disturbed": ra["other_load_cpus"] > quiet_load or mb["other_load_cpus"] > quiet_load})
    if not per:
        return None
    xs = [p["ratio"] for p in per]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "rounds": per,
            "disturbed": any(p["disturbed"] for p in per)}



def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
    except (OSError, StopIteration):
        mem = "0"
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu_model": model,
            "memory_gb": round(int(mem) / 1024 / 1024, 1), "machine": platform.machine()}


def micro_results(path):
    if not os.path.exists(path):
        return []
    out = []
    for bm in json.load(open(path)).get("benchmarks", []):
        scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[bm.get("time_unit", "ns")]
        item = {"name": bm["name"].replace("/manual_time", ""), "iterations": bm.get("iterations")}
        if bm.get("error_occurred"):
            item["skipped"] = bm.get("error_message")
        else:
            item["ns_per_op"] = bm.get("ns_per_op", bm["real_time"] * scale)
            item["cpu_ns_per_op"] = bm.get("ns_per_op", bm["cpu_time"] * scale)
        out.append(item)
    return out


def get(runs, system, workload):
    return runs.get((system, workload))


def targets(runs, locality_missing, q):
    """Every target judged on the median over rounds: a ratio on the median of the
    per-round ratios (each system's run against the other's of the same round)."""
    t = []

    def rr(s, ref, w, path, text, goal, ok, issue=None):
        x = round_ratio(get(runs, s, w), get(runs, ref, w), path, q)
        row = {"target": text + (f" (issue {issue})" if issue else ""), "goal": goal,
               "ratio": x["median"] if x else None, "met": None if x is None else ok(x["median"])}
        if x:
            row.update(range=[x["min"], x["max"]], rounds=len(x["rounds"]), disturbed=x["disturbed"])
        t.append(row)

    def value(s, w, path, text, goal, ok, scale=1.0, issue=None):
        r = get(runs, s, w)
        per = [dig(x, path) for x in (r or {}).get("rounds", [])]
        per = [x * scale for x in per if is_num(x)]
        v = statistics.median(per) if per else None
        row = {"target": text + (f" (issue {issue})" if issue else ""), "goal": goal, "value_us": v,
               "met": None if v is None else ok(v)}
        if per:
            row.update(range=[min(per), max(per)], rounds=len(per), disturbed=bool(r.get("disturbed_rounds")))
        t.append(row)

    for w in ("ka-1m", "ka-10m"):
        rr("tcpha", "haproxy", w, ("mb_per_s",),
           f"large files ({WORKLOAD_TEXT[w]}): tcpha throughput >= HAProxy's", ">= 1.0", lambda x: x >= 1.0, 6)
        rr("tcpha", "haproxy", w, ("fe_cpu_s_per_gb",),
           f"large files ({WORKLOAD_TEXT[w]}): tcpha FE CPU per GB <= 1/10 of HAProxy's", "<= 0.1",
           lambda x: x <= 0.1, 6)
    # The relay's throughput (bytes per second of large responses) against the same
    # nginx serving the client directly (issue 5: 0.8x; issue 17: 0.9x).
    for s in RELAYS:
        how = "unix socket" if s.endswith("unix") else "loopback TCP"
        for w in ("ka-1m", "ka-10m"):
            rr(s, "direct", w, ("mb_per_s",),
               f"relay to nginx over {how} ({WORKLOAD_TEXT[w]}): throughput >= 0.9x nginx serving the client directly",
               ">= 0.9", lambda x: x >= 0.9, 17)
    # Issue 13: BE failover costs at most 5% with no failure (tcpha-failover: a ring cluster).
    for w in ("close-1k", "ka-1k", "ka-1m"):
        rr("tcpha-failover", "tcpha", w, ("requests_per_s",),
           f"failover = \"ring\" with no failure ({w}): throughput >= 0.95x failover off", ">= 0.95",
           lambda x: x >= 0.95, 13)
    # Issue 15: the tunnel and IPv6 cost at most 10% of the throughput.
    for s, what in (("tcpha-tunnel", "forward = \"tunnel\""), ("tcpha-ipv6", "IPv6 clients")):
        for w in ("ka-1k", "ka-1m", "ka-10m", "close-1k"):
            if get(runs, s, w):
                rr(s, "tcpha", w, ("requests_per_s",), f"{what} ({w}): throughput >= 0.9x tcpha (DR, IPv4)",
                   ">= 0.9", lambda x: x >= 0.9, 15)
    rr("tcpha", "haproxy", "close-1k", ("requests_per_s",),
       "new connection per small request (close-1k): tcpha rate >= 1.2x HAProxy's", ">= 1.2",
       lambda x: x >= 1.2, 17)
    value("tcpha", "close-1k", ("tcpha", "fe_cpu_s_per_handoff"),
          "FE CPU per new connection <= 25 us (close-1k: FE CPU time / handoffs)", "<= 25 us",
          lambda v: v <= 25, 1e6, 17)
    # The BE serves from its import on (lease protocol): the handoff ends there, not at
    # COMMIT, which the FE sends after READY's trip back (the FE's handoff_latency).
    value("tcpha", "lat-1k", ("tcpha", "takeover_latency_us", "p50"),
          "handoff p50 <= 40 us, one connection at a time (lat-1k; request complete at the FE -> "
          "the BE serving, worst BE)", "<= 40 us", lambda v: v <= 40, issue=17)
    value("tcpha", "lat-1k", ("tcpha", "takeover_latency_us", "p99"),
          "handoff p99 <= 150 us, one connection at a time (lat-1k; the same, worst BE)", "<= 150 us",
          lambda v: v <= 150, issue=17)
    rr("tcpha", "haproxy", "lat-1k", ("latency_us", "p50"),
       "one connection at a time (lat-1k): client-side p50 at most HAProxy's", "<= 1.0", lambda x: x <= 1.0, 17)
    value("tcpha", "close-1k", ("tcpha", "handoff_latency_us", "p50"),
          "handoff p50 < 100 us under load (close-1k, 32 connections)", "< 100 us", lambda v: v < 100, issue=6)
    # Issue 12: browsing partitioned content over keep-alive connections, every request
    # routed (tcpha moves the connection between BEs, HAProxy relays per request).
    rr("tcpha", "haproxy", "browse-part", ("requests_per_s",),
       f"partitioned content, keep-alive ({WORKLOAD_TEXT['browse-part']}): tcpha throughput >= 1.5x HAProxy's",
       ">= 1.5", lambda x: x >= 1.5, 12)
    # As for the handoff above: the target serves from its import on, so a move ends when
    # the target serves the request (its takeover latency; for a move it starts when the
    # holding BE's router said move). The move to COMMIT, which also holds the target's
    # first response (READY leaves after it), is in the multi-handoff section.
    value("tcpha", "browse-part-1", ("tcpha", "takeover_latency_us", "p50"),
          "move latency p50 <= 100 us, one connection at a time (browse-part-1; the holding BE's "
          "router said move -> the target serving, worst BE)", "<= 100 us",
          lambda v: v <= 100, issue=12)
    rrun, lard = get(runs, "tcpha", "locality-round-robin"), get(runs, "tcpha", "locality-lard")
    if rrun and lard and rrun.get("cache_hit_rate") is not None and lard.get("cache_hit_rate") is not None:
        gain = lard["cache_hit_rate"] - rrun["cache_hit_rate"]
        t.append({"target": "LARD hit rate clearly above round-robin's (>= 10 points)",
                  "lard_hit_rate": lard["cache_hit_rate"], "rr_hit_rate": rrun["cache_hit_rate"],
                  "goal": ">= +0.10", "met": gain >= 0.10})
    else:
        t.append({"target": "LARD hit rate clearly above round-robin's (>= 10 points)",
                  "goal": ">= +0.10", "met": None,
                  "not_measured": locality_missing or "locality runs missing"})
    return t


def ratios(runs, q):
    """Every balancer against HAProxy and against direct serving, per workload: the
    median of the per-round ratios (the existing keys), with min/max and the rounds."""
    out = {}
    paths = {"requests_per_s": ("requests_per_s",), "mb_per_s": ("mb_per_s",),
             "latency_p99": ("latency_us", "p99"), "latency_p50": ("latency_us", "p50"),
             "fe_cpu_s_per_gb": ("fe_cpu_s_per_gb",)}
    for (system, w), r in runs.items():
        if system not in ("tcpha", "tcpha-base", *RELAYS):
            continue
        for ref in ("haproxy", "direct", "tcpha-base") if system == "tcpha" else ("haproxy", "direct"):
            b = runs.get((ref, w))
            if not b:
                continue
            e = {"range": {}, "per_round": {}, "disturbed_rounds": []}
            for key, path in paths.items():
                x = round_ratio(r, b, path, q)
                e[key] = x["median"] if x else None
                if x:
                    e["range"][key] = [x["min"], x["max"]]
                    e["per_round"][key] = [p["ratio"] for p in x["rounds"]]
                    e["disturbed_rounds"] = sorted(set(e["disturbed_rounds"])
                                                   | {p["round"] for p in x["rounds"] if p["disturbed"]})
            out.setdefault(w, {})[f"{system}/{ref}"] = e
    return out


def model(runs, micro):
    """FE capacity per core from the measured per-connection and per-packet costs."""
    small, large = get(runs, "tcpha", "close-1k"), get(runs, "tcpha", "ka-10m")
    if not (small and small.get("tcpha") and large and large.get("tcpha")):
        return None
    c_conn = small["tcpha"]["fe_cpu_s_per_handoff"]
    p_small = small["tcpha"]["forwarded_packets_per_connection"]
    p_mb = large["tcpha"]["forwarded_packets_per_mb"]
    bpf = large["tcpha"]["bpf_ns_per_packet"]
    bpf_src = "in situ (BPF run-time statistics, 10 MB run)"
    if bpf is None:
        bpf = next((m.get("ns_per_op") for m in micro if m["name"] == "BM_DatapathForwardAck"), None)
        bpf_src = "BPF_PROG_RUN microbenchmark"
    if None in (c_conn, p_small, p_mb, bpf):
        return None
    mix = get(runs, "tcpha", "mix")
    mix_bytes = mix["bytes"] / mix["requests"] if mix and mix["requests"] else 60000
    rows = []
    for label, size, be_run in (("1 KB", 1024, "close-1k"), (f"mix mean ({mix_bytes / 1e3:.0f} KB)", mix_bytes, "mix"),
                                ("1 MB", 1 << 20, "ka-1m"), ("10 MB", 10 << 20, "ka-10m")):
        row = {"response": label, "bytes": size}
        # "bed": packet counts and costs as measured here; "mtu1500": a delayed-ACK client
        # on a 1500-byte MTU link and the assumed kernel cost per packet.
        for name, per_mb, r_ns in (("bed", p_mb, 0), ("mtu1500", MTU1500_ACKS_PER_MB, R_ASSUMED_NS)):
            pkts = p_small + size / 1e6 * per_mb
            per_conn_s = c_conn + pkts * (bpf + r_ns) * 1e-9
            row[f"packets_per_connection_{name}"] = pkts
            row[f"conn_per_s_{name}"] = 1 / per_conn_s
            row[f"gbit_per_s_{name}"] = size * 8 / per_conn_s / 1e9
        be = get(runs, "direct", be_run)
        if be and be["requests_per_s"]:
            row["be_responses_per_s"] = be["requests_per_s"]
            for name in ("bed", "mtu1500"):
                row[f"bes_per_fe_core_{name}"] = row[f"conn_per_s_{name}"] / be["requests_per_s"]
        rows.append(row)
    hp = get(runs, "haproxy", "ka-1m")
    return {
        "fe_cpu_s_per_connection": c_conn,
        "forwarded_packets_per_small_connection": p_small,
        "forwarded_packets_per_response_mb": p_mb,
        "bpf_ns_per_packet": bpf,
        "bpf_ns_source": bpf_src,
        "assumed_kernel_ns_per_packet_mtu1500": R_ASSUMED_NS,
        "assumed_acks_per_mb_mtu1500": MTU1500_ACKS_PER_MB,
        "rows": rows,
        "haproxy_gbit_per_s_per_core_1m": 8 / hp["fe_cpu_s_per_gb"] if hp and hp.get("fe_cpu_s_per_gb") else None,
    }


# --- CPU profiles (bench/lib/profile.sh) -------------------------------------------
HEADER = re.compile(r"^(.*?)\s+(\d+)/(\d+)\s*$")
FRAME = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
SYSCALL_PREFIXES = ("__x64_sys_", "__ia32_sys_", "__se_sys_", "__do_sys_", "__sys_", "ksys_")
TOP_N = 15


def perf_samples(path):
    """(pid, comm, [(symbol, dso, kernel)] leaf first) per sample of `perf script -F
    pid,tid,comm,ip,sym,dso` output."""
    pid, comm, frames = None, None, []
    with gzip.open(path, "rt", errors="replace") as f:
        for line in f:
            if not line.strip():
                if pid is not None:
                    yield pid, comm, frames
                pid, comm, frames = None, None, []
                continue
            if line[0].isspace():
                m = FRAME.match(line)
                if m and pid is not None:
                    ip, sym, dso = m.groups()
                    kernel = dso.startswith("[kernel") or len(ip) >= 16 and ip.startswith("ffff")
                    frames.append((sym, dso, kernel))
                continue
            m = HEADER.match(line)
            if m:
                if pid is not None:
                    yield pid, comm, frames
                comm, pid, frames = m.group(1).strip(), int(m.group(2)), []
    if pid is not None:
        yield pid, comm, frames


# The points where the kernel enables interrupts again. This VM samples with cpu-clock
# (a timer interrupt: no hardware PMU), which cannot fire while interrupts are off, so
# the time of an interrupts-off section is sampled where it ends; such a sample is
# charged to the function that turned them back on (marked *), not to these helpers.
IRQ_ON = {"pvm_irq_enable", "__raw_callee_save_pvm_irq_enable", "native_irq_enable",
          "_raw_spin_unlock_irqrestore", "_raw_spin_unlock_irq", "finish_task_switch",
          "finish_task_switch.isra.0", "__raw_callee_save___native_irq_enable"}


def symbol_name(sym, dso, kernel):
    if kernel:
        return re.sub(r"\+0x[0-9a-f]+$", "", sym)
    base = os.path.basename(dso)
    if sym == "[unknown]" or not sym:
        return f"[{base}]"
    # C++: the qualified name without its parameter list (long, and the name says enough).
    depth, out = 0, []
    for c in sym.replace("(anonymous namespace)", "{anon}"):
        if c == "(" and depth == 0 and out:
            break
        depth += c in "<"
        depth -= c in ">"
        out.append(c)
    name = "".join(out)
    return (name if len(name) <= 70 else name[:67] + "...") + f" ({base})"


def self_frame(frames):
    """The function a sample's time belongs to: the leaf, or, when the leaf is where
    interrupts came back on, the first caller that is not such a helper (marked *)."""
    i = 0
    while i < len(frames) - 1 and frames[i][2] and frames[i][0] in IRQ_ON:
        i += 1
    sym, dso, kernel = frames[i]
    return symbol_name(sym, dso, kernel) + (" *" if i else "")


def syscall_of(frames):
    """The system call a sample is in: the kernel's handler just above do_syscall_64
    (__x64_sys_sendto -> sendto), or, when the sample is in the entry or exit path
    itself, the C library wrapper that made the call."""
    for i, (sym, _, _) in enumerate(frames):
        if not sym.startswith("do_syscall_64"):
            continue
        handler = next((frames[j][0] for j in range(i - 1, -1, -1)
                        if not frames[j][0].startswith("x64_sys_call")), "")
        for p in SYSCALL_PREFIXES:
            if handler.startswith(p):
                return re.sub(r"64$", "", handler[len(p):])
        k = i + 1
        while k < len(frames) and frames[k][2]:
            k += 1
        wrapper = frames[k][0] if k < len(frames) else "[unknown]"
        if wrapper not in ("[unknown]", "syscall", ""):
            name = wrapper
            while True:
                bare = re.sub(r"^(__GI_+|_*libc_|_+)", "", name)
                if bare == name:
                    break
                name = bare
            name = re.sub(r"64$", "", name)
            # The C library's send() and recv() are the sendto and recvfrom calls.
            return {"send": "sendto", "recv": "recvfrom"}.get(name, name)
        return "(system call entry or exit)" if handler in IRQ_ON or not handler else handler
    if frames and frames[0][2]:
        return "(kernel, outside a system call: interrupts, softirq, faults)"
    return "(user space)"


def profile_summary(raw, p, runs):
    """One profile run: per group (the FE namespace's processes, the BE namespaces'),
    the top functions by self time and the system calls by inclusive time, each as CPU
    microseconds per connection (per request for keep-alive workloads): the share of
    the group's samples times the group's CPU per connection in the measured rounds
    (their median; the profile run's own figure, under perf, is given alongside)."""
    path = os.path.join(raw, p["script"])
    fe_pids, be_pids = set(p["fe_pids"]), set(p["be_pids"])
    groups = {g: {"samples": 0, "kernel": 0, "self": {}, "syscalls": {}, "comms": {}}
              for g in ("fe", "be", "client", "softirq", "idle", "other")}
    for pid, comm, frames in perf_samples(path):
        if pid in fe_pids:
            g = "fe"
        elif pid in be_pids:
            g = "be"
        elif comm == "wrk":
            g = "client"
        elif comm.startswith("ksoftirqd"):
            g = "softirq"
        elif pid == 0:
            g = "idle"
        else:
            g = "other"
        G = groups[g]
        G["samples"] += 1
        G["comms"][comm] = G["comms"].get(comm, 0) + 1
        if not frames:
            continue
        G["kernel"] += frames[0][2]
        name = self_frame(frames)
        G["self"][name] = G["self"].get(name, 0) + 1
        sc = syscall_of(frames)
        G["syscalls"][sc] = G["syscalls"].get(sc, 0) + 1
    total = sum(G["samples"] for G in groups.values())
    w = p["wrk"]
    unit = "connection" if p["close"] else "request"
    a, b = p["before"], p["after"]
    run = runs.get((p["system"], p["workload"])) or {}
    per_unit = {"fe": run.get("fe_cpu_us_per_request"), "be": run.get("be_cpu_us_per_request")}
    fe_ns, be_ns = delta(a, b, ["fe_cpu_ns"]), [y - x for x, y in zip(a.get("be_cpu_ns") or [],
                                                                    b.get("be_cpu_ns") or [])]
    own = {"fe": ratio(fe_ns / 1e3 if fe_ns is not None else None, w["requests"]),
           "be": ratio(sum(be_ns) / 1e3 if be_ns else None, w["requests"])}
    out = {"system": p["system"], "workload": p["workload"], "per": unit, "hz": p["hz"],
           "duration_s": p["duration_s"], "requests": w["requests"], "samples": total,
           "other_load_cpus": p.get("foreign_load"), "perf": p.get("perf"), "groups": {}}
    for g, G in groups.items():
        n = G["samples"]
        e = {"samples": n, "share_of_all": ratio(n, total),
             "comms": dict(sorted(G["comms"].items(), key=lambda kv: -kv[1])[:5])}
        if g in ("fe", "be"):
            us = per_unit[g]
            e.update(cpu_us_per_unit=us, cpu_us_per_unit_profile_run=own[g],
                     kernel_share=ratio(G["kernel"], n))
            e["top"] = [{"function": k, "samples": c, "share": c / n, "us": us * c / n if us is not None else None}
                        for k, c in sorted(G["self"].items(), key=lambda kv: -kv[1])[:TOP_N]]
            e["syscalls"] = [{"syscall": k, "samples": c, "share": c / n,
                              "us": us * c / n if us is not None else None}
                             for k, c in sorted(G["syscalls"].items(), key=lambda kv: -kv[1])[:TOP_N]]
        out["groups"][g] = e
    return out


def profiles(raw, runs):
    """Every profile run's summary, in the report's order of workloads and systems."""
    out = []
    for p in sorted(glob.glob(os.path.join(raw, "profile.*.json"))):
        if p.endswith(".unavailable.json"):
            continue
        try:
            out.append(profile_summary(raw, json.load(open(p)), runs))
        except (OSError, ValueError, KeyError) as e:
            print(f"report: profile {os.path.basename(p)} skipped: {e}", file=sys.stderr)
    order = report_md.ORDER
    return sorted(out, key=lambda x: (order.index(x["workload"]) if x["workload"] in order else 99,
                                      SYSTEMS.index(x["system"]) if x["system"] in SYSTEMS else 99))



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", required=True)
    ap.add_argument("--failover-only", action="store_true",
                    help="BENCH_FAILOVER=only: results-failover.json, and only the failover "
                         "sections of BENCHMARKS.md and their plots")
    ap.add_argument("--variants-only", action="store_true",
                    help="BENCH_VARIANTS=only: results-variants.json, and only the tunnel/IPv6 "
                         "section of BENCHMARKS.md")
    a = ap.parse_args()
    meta = json.load(open(os.path.join(a.raw, "meta.json")))
    files = json.load(open(os.path.join(a.raw, "files.json")))
    q = meta.get("quiet_load_cpus", 0.25)
    rounds, unavailable = {}, []
    for p in sorted(glob.glob(os.path.join(a.raw, "*.json"))):
        base = os.path.basename(p)
        if base in ("meta.json", "files.json", "micro.json"):
            continue
        r = json.load(open(p))
        if "not_measured" in r:
            unavailable.append(r)
        elif not base.startswith(("profile.", "failover-timeline.", "failover-interleaved")):  # those: see their readers
            d = derive(r)
            rounds.setdefault((d["system"], d["workload"]), []).append(d)
    runs = {k: combine_rounds(v, q) for k, v in rounds.items()}
    failover = report_failover.results(runs, q, round_ratio, a.raw, meta)
    variants = report_variants.results(runs, q, round_ratio)
    if a.variants_only:
        with open(os.path.join(a.out, "results-variants.json"), "w") as f:
            json.dump({"meta": meta, "machine": machine(), "runs": list(runs.values()), "variants": variants}, f,
                      indent=1)
        report_variants.splice(os.path.join(a.docs, "BENCHMARKS.md"),
                               report_variants.lines(variants, WORKLOAD_TEXT))
        return
    if a.failover_only:
        failover_only(a, meta, runs, failover)
        return
    micro = micro_results(os.path.join(a.raw, "micro.json"))
    loc_missing = next((u["not_measured"] for u in unavailable if u["system"] == "locality"), None)
    results = {
        "meta": meta,
        "machine": machine(),
        "files": files,
        "runs": list(runs.values()),
        "not_measured": unavailable,
        "targets": targets(runs, loc_missing, q),
        "ratios": ratios(runs, q),
        "micro": micro,
        "model": model(runs, micro),
        "profiles": profiles(a.raw, runs),
        "failover": failover,
        "variants": variants,
    }
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    plots = plot(a.out)
    os.makedirs(os.path.join(a.docs, "bench"), exist_ok=True)
    for p in plots:
        shutil.copy(p, os.path.join(a.docs, "bench", os.path.basename(p)))
    with open(os.path.join(a.docs, "BENCHMARKS.md"), "w") as f:
        f.write(report_md.render(results, runs, [os.path.basename(p) for p in plots]))


def failover_only(a, meta, runs, failover):
    """BENCH_FAILOVER=only: the failover figures to results-failover.json, their plots to
    docs/bench/, their sections into the existing BENCHMARKS.md (the rest of the page,
    from the last full run, stays)."""
    results = {"meta": meta, "machine": machine(), "runs": list(runs.values()), "failover": failover}
    path = os.path.join(a.out, "results-failover.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    os.makedirs(os.path.join(a.docs, "bench"), exist_ok=True)
    for p in plot(a.out, path, ["--only", "failover"]):
        shutil.copy(p, os.path.join(a.docs, "bench", os.path.basename(p)))
    report_failover.splice(os.path.join(a.docs, "BENCHMARKS.md"),
                           report_failover.lines(results, meta, WORKLOAD_TEXT))


def plot(out, results_path=None, extra=()):
    """Runs plot.py with an interpreter that has matplotlib (Debian's python3-matplotlib
    lives in /usr/bin/python3, which a pyenv or venv python on PATH may not see)."""
    here = os.path.dirname(os.path.abspath(__file__))
    results_path = results_path or os.path.join(out, "results.json")
    for py in ("/usr/bin/python3", sys.executable):
        if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            res = subprocess.run([py, os.path.join(here, "plot.py"), results_path, out, *extra],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                print(f"report: plot.py failed: {res.stderr.strip()}", file=sys.stderr)
                return []
            return [os.path.join(out, n) for n in res.stdout.split()]
    print("report: no python3 with matplotlib: plots skipped", file=sys.stderr)
    return []


if __name__ == "__main__":
    main()
