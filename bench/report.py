#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into results.json, the plots and
docs/BENCHMARKS.md.

  report.py --raw bench/out/raw --out bench/out --docs docs

Every figure is derived here from the counters read around each wrk run (raw/*.json),
so the raw files are the evidence and this is the arithmetic.
"""
import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys

import report_md
from report_md import WORKLOAD_TEXT

SYSTEMS = ["tcpha", "tcpha-relay", "tcpha-relay-unix", "haproxy", "direct"]
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
        "attempt": r["attempt"],
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
    be_ns = [y - x for x, y in zip(a.get("be_cpu_ns") or [], b.get("be_cpu_ns") or [])]
    if be_ns:
        # Everything in the BE namespaces: the tcpha agents, or nginx behind HAProxy.
        d["be_cpu_s"] = sum(be_ns) / 1e9
        d["be_cpu_s_each"] = [x / 1e9 for x in be_ns]
        d["be_cpu_us_per_request"] = ratio(d["be_cpu_s"] * 1e6, w["requests"])
    if d.get("fe_cpu_s") is not None:
        d["fe_cpu_us_per_request"] = ratio(d["fe_cpu_s"] * 1e6, w["requests"])
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
    return d


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


def targets(runs, locality_missing):
    t = []

    def val(s, w, key):
        r = get(runs, s, w)
        return r.get(key) if r else None

    for w in ("ka-1m", "ka-10m"):
        x = ratio(val("tcpha", w, "mb_per_s"), val("haproxy", w, "mb_per_s"))
        t.append({"target": f"large files ({WORKLOAD_TEXT[w]}): tcpha throughput >= HAProxy's",
                  "ratio": x, "goal": ">= 1.0", "met": None if x is None else x >= 1.0})
        x = ratio(val("tcpha", w, "fe_cpu_s_per_gb"), val("haproxy", w, "fe_cpu_s_per_gb"))
        t.append({"target": f"large files ({WORKLOAD_TEXT[w]}): tcpha FE CPU per GB <= 1/10 of HAProxy's",
                  "ratio": x, "goal": "<= 0.1", "met": None if x is None else x <= 0.1})
    # Issue 5: the relay's throughput (bytes per second of large responses) against the
    # same nginx serving the client directly.
    for s in RELAYS:
        how = "unix socket" if s.endswith("unix") else "loopback TCP"
        for w in ("ka-1m", "ka-10m"):
            x = ratio(val(s, w, "mb_per_s"), val("direct", w, "mb_per_s"))
            t.append({"target": f"relay to nginx over {how} ({WORKLOAD_TEXT[w]}): throughput >= 0.8x "
                                "nginx serving the client directly",
                      "ratio": x, "goal": ">= 0.8", "met": None if x is None else x >= 0.8})
    x = ratio(val("tcpha", "close-1k", "requests_per_s"), val("haproxy", "close-1k", "requests_per_s"))
    t.append({"target": "new connection per small request: tcpha rate >= 0.8x HAProxy's",
              "ratio": x, "goal": ">= 0.8", "met": None if x is None else x >= 0.8})
    for w, label in (("lat-1k", "one connection at a time"), ("close-1k", "under load, 32 connections")):
        r = get(runs, "tcpha", w)
        p50 = r["tcpha"]["handoff_latency_us"]["p50"] if r and r.get("tcpha") else None
        t.append({"target": f"handoff p50 < 100 us ({label})", "value_us": p50, "goal": "< 100 us",
                  "met": None if p50 is None else p50 < 100})
    # Issue 12: browsing partitioned content over keep-alive connections, every request
    # routed (tcpha moves the connection between BEs, HAProxy relays per request).
    x = ratio(val("tcpha", "browse-part", "requests_per_s"), val("haproxy", "browse-part", "requests_per_s"))
    t.append({"target": f"partitioned content, keep-alive ({WORKLOAD_TEXT['browse-part']}): "
                        "tcpha throughput >= 1.5x HAProxy's (issue 12)",
              "ratio": x, "goal": ">= 1.5", "met": None if x is None else x >= 1.5})
    r = get(runs, "tcpha", "browse-part-1")
    p50 = ((r or {}).get("moves") or {}).get("move_latency_p50_us_max")
    t.append({"target": "move latency p50 <= 100 us, one connection at a time (browse-part-1, worst BE; "
                        "issue 12)", "value_us": p50, "goal": "<= 100 us",
              "met": None if p50 is None else p50 <= 100})
    rr, lard = get(runs, "tcpha", "locality-round-robin"), get(runs, "tcpha", "locality-lard")
    if rr and lard and rr.get("cache_hit_rate") is not None and lard.get("cache_hit_rate") is not None:
        gain = lard["cache_hit_rate"] - rr["cache_hit_rate"]
        t.append({"target": "LARD hit rate clearly above round-robin's (>= 10 points)",
                  "lard_hit_rate": lard["cache_hit_rate"], "rr_hit_rate": rr["cache_hit_rate"],
                  "goal": ">= +0.10", "met": gain >= 0.10})
    else:
        t.append({"target": "LARD hit rate clearly above round-robin's (>= 10 points)",
                  "goal": ">= +0.10", "met": None,
                  "not_measured": locality_missing or "locality runs missing"})
    return t


def ratios(runs):
    """Every balancer against HAProxy and against direct serving, per workload."""
    out = {}
    for (system, w), r in runs.items():
        if system not in ("tcpha", *RELAYS):
            continue
        for ref in ("haproxy", "direct"):
            b = runs.get((ref, w))
            if not b:
                continue
            out.setdefault(w, {})[f"{system}/{ref}"] = {
                "requests_per_s": ratio(r["requests_per_s"], b["requests_per_s"]),
                "mb_per_s": ratio(r["mb_per_s"], b["mb_per_s"]),
                "latency_p99": ratio(r["latency_us"]["p99"], b["latency_us"]["p99"]),
                "fe_cpu_s_per_gb": ratio(r.get("fe_cpu_s_per_gb"), b.get("fe_cpu_s_per_gb")),
            }
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", required=True)
    a = ap.parse_args()
    meta = json.load(open(os.path.join(a.raw, "meta.json")))
    files = json.load(open(os.path.join(a.raw, "files.json")))
    runs, unavailable = {}, []
    for p in sorted(glob.glob(os.path.join(a.raw, "*.json"))):
        base = os.path.basename(p)
        if base in ("meta.json", "files.json", "micro.json"):
            continue
        r = json.load(open(p))
        if "not_measured" in r:
            unavailable.append(r)
        else:
            d = derive(r)
            runs[(d["system"], d["workload"])] = d
    micro = micro_results(os.path.join(a.raw, "micro.json"))
    loc_missing = next((u["not_measured"] for u in unavailable if u["system"] == "locality"), None)
    results = {
        "meta": meta,
        "machine": machine(),
        "files": files,
        "runs": list(runs.values()),
        "not_measured": unavailable,
        "targets": targets(runs, loc_missing),
        "ratios": ratios(runs),
        "micro": micro,
        "model": model(runs, micro),
    }
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    plots = plot(a.out)
    os.makedirs(os.path.join(a.docs, "bench"), exist_ok=True)
    for p in plots:
        shutil.copy(p, os.path.join(a.docs, "bench", os.path.basename(p)))
    with open(os.path.join(a.docs, "BENCHMARKS.md"), "w") as f:
        f.write(report_md.render(results, runs, [os.path.basename(p) for p in plots]))


def plot(out):
    """Runs plot.py with an interpreter that has matplotlib (Debian's python3-matplotlib
    lives in /usr/bin/python3, which a pyenv or venv python on PATH may not see)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for py in ("/usr/bin/python3", sys.executable):
        if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            res = subprocess.run([py, os.path.join(here, "plot.py"), os.path.join(out, "results.json"), out],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                print(f"report: plot.py failed: {res.stderr.strip()}", file=sys.stderr)
                return []
            return [os.path.join(out, n) for n in res.stdout.split()]
    print("report: no python3 with matplotlib: plots skipped", file=sys.stderr)
    return []


if __name__ == "__main__":
    main()
