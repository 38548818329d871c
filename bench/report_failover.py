"""BE failover (issue 13) in the benchmark: the cost with no failure (tcpha-failover, a
ring cluster, against tcpha with failover off, in the same rounds) and the timeline of a
back-end dying under load (bench/run.sh's failover-timeline). report.py calls
derive_run() per raw run, results() for results.json's "failover" entry, and
report_md.py / splice() write the section of docs/BENCHMARKS.md.
"""
import json
import os
import statistics

import report_splice

BEGIN = "<!-- failover:begin (bench/report_failover.py) -->"
END = "<!-- failover:end -->"
SYSTEM, REF = "tcpha-failover", "tcpha"
# The figures compared, ratio tcpha-failover / tcpha: name -> (path in a derived run,
# text, whether higher is better).
COST = {
    "requests_per_s": (("requests_per_s",), "throughput", True),
    "fe_cpu_us_per_request": (("fe_cpu_us_per_request",), "FE CPU per request", False),
    "be_cpu_us_per_request": (("be_cpu_us_per_request",), "BE CPU per request", False),
    "bed_cpu_us_per_request": (("bed_cpu_us_per_request",), "bed CPU per request (client included)", False),
    "fe_cpu_s_per_gb": (("fe_cpu_s_per_gb",), "FE CPU per GB", False),
    "be_cpu_s_per_gb": (("be_cpu_s_per_gb",), "BE CPU per GB", False),
    "latency_p50": (("latency_us", "p50"), "latency p50", False),
    "latency_p99": (("latency_us", "p99"), "latency p99", False),
    "bpf_ns_per_packet": (("tcpha", "bpf_ns_per_packet"), "tc program ns per packet", False),
}
TARGET = 0.05  # issue 13: within 5%


def _dig(d, path):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _delta(a, b, path):
    x, y = _dig(a, path), _dig(b, path)
    return y - x if _num(x) and _num(y) else None


def _ratio(a, b):
    return a / b if _num(a) and _num(b) and b else None


def derive_run(r, d):
    """Adds the failover figures of one raw bench run to its derived record d."""
    a, b = r["before"], r["after"]
    fo = _dig(b, ("fe_status", "failover"))
    if not isinstance(fo, dict):
        return
    bes = [x for x in b.get("be_status") or [] if isinstance(x, dict)]
    be_counters = {}
    for key in ("backups", "backups_refused", "taken_over", "takeover_lost", "fenced"):
        vals = [_delta(x, y, ("counters", key)) for x, y in zip(a.get("be_status") or [], bes)]
        vals = [v for v in vals if v is not None]
        be_counters[key] = sum(vals) if vals else None
    backups = _delta(a, b, ("fe_status", "failover", "backups"))
    copies = _delta(a, b, ("fe_status", "datapath", "copy"))
    unsent = _delta(a, b, ("fe_status", "counters", "backups_unsent"))
    fin_later = _delta(a, b, ("fe_status", "datapath", "copy_fin_later"))
    d["failover"] = {
        "unsent_per_connection": _ratio(unsent, d.get("client_connections")),
        "fin_later_per_connection": _ratio(fin_later, d.get("client_connections")),
        "mode": fo.get("mode"),
        "backups": backups,
        "backups_per_connection": _ratio(backups, d.get("client_connections")),
        # A failover during a run without failures: a BE the FE found silent (starved).
        "failovers": _delta(a, b, ("fe_status", "failover", "failovers")),
        "copies": copies,
        "copies_per_request": _ratio(copies, d.get("requests")),
        "be": be_counters,
    }


def cost(runs, q, round_ratio, workloads):
    """tcpha-failover / tcpha per workload: the median of the per-round ratios of every
    COST figure, with range and the rounds other load disturbed."""
    out = {}
    for w in workloads:
        a, b = runs.get((SYSTEM, w)), runs.get((REF, w))
        if not a or not b:
            continue
        e = {"ratios": {}, "failover": a.get("failover"), "rounds": a.get("round_count"),
             "round_runs": [{"round": x.get("round"), "failover": x.get("failover")} for x in a.get("rounds") or []]}
        for key, (path, _, _) in COST.items():
            x = round_ratio(a, b, path, q)
            if x:
                e["ratios"][key] = {"median": x["median"], "min": x["min"], "max": x["max"],
                                    "per_round": [p["ratio"] for p in x["rounds"]],
                                    "disturbed": x["disturbed"]}
        # The FE's CPU as a share of one CPU (seed 004 gives its overhead so: a machine's
        # utilization with and without): on keep-alive the FE does nothing per request,
        # and its per-request ratio divides its timers by the requests.
        e["fe_cpu_share"] = {k: (_dig(x, ("fe_cpu_us_per_request",)) or 0) *
                             (_dig(x, ("requests_per_s",)) or 0) / 1e6
                             for k, x in (("off", b), ("ring", a))}
        thr = e["ratios"].get("requests_per_s", {}).get("median")
        cpu = [e["ratios"].get(k, {}).get("median") for k in ("fe_cpu_us_per_request", "be_cpu_us_per_request")]
        e["met"] = (None if thr is None or None in cpu
                    else thr >= 1 - TARGET and all(c <= 1 + TARGET for c in cpu))
        out[w] = e
    return out


def _longest_zero(counts, lo, hi):
    best = cur = 0
    for n in counts[lo:hi]:
        cur = cur + 1 if n == 0 else 0
        best = max(best, cur)
    return best


def timeline_one(t):
    """The figures of one failover-timeline run (raw record t)."""
    w = t["wrk"]
    tl = w.get("timeline") or {}
    bin_ms = tl.get("bin_ms") or 10
    counts = tl.get("counts") or []
    first = tl.get("first_bin") or 0
    # 100 ms buckets (responses per second), from t0 (wrk's launch).
    per = max(1, 100 // bin_ms)
    start = first * bin_ms
    series = []
    for i in range(0, len(counts), per):
        chunk = counts[i:i + per]
        if len(chunk) == per:
            series.append([(start + i * bin_ms) / 1000, sum(chunk) * 1000 / (per * bin_ms)])
    kill_ms = (t["kill_us"] - t["t0_us"]) / 1000 if t.get("kill_us") else t["kill_at_s"] * 1000
    ref_ms = kill_ms  # the no-failure run is cut at the same time
    end_ms = start + len(counts) * bin_ms
    pct = {float(p): us for p, us in w["latency_us"]["percentiles"]}
    before = [y for x, y in series if 1000 <= x * 1000 < ref_ms - 100]
    after = [y for x, y in series if ref_ms <= x * 1000 < ref_ms + 1000]
    late = [y for x, y in series if ref_ms + 1000 <= x * 1000 < end_ms - 200]
    base = statistics.median(before) if before else None
    # The longest stretch in which no response completed (10 ms bins), outside the first
    # and the last half second (wrk's start and stop).
    lo = max(0, (500 - start) // bin_ms)
    hi = max(lo, len(counts) - 500 // bin_ms)
    # The same around the kill only: from 100 ms before to 2 s after it.
    k_lo = max(0, int((ref_ms - 100 - start) // bin_ms))
    k_hi = min(len(counts), int((ref_ms + 2000 - start) // bin_ms))
    # Around the kill at full resolution: from 0.5 s before to 1.5 s after, per bin.
    z_lo = max(0, int((ref_ms - 500 - start) // bin_ms))
    z_hi = min(len(counts), int((ref_ms + 1500 - start) // bin_ms))
    zoom = [[(start + i * bin_ms) / 1000, counts[i] * 1000 / bin_ms] for i in range(z_lo, z_hi)]
    fe = _dig(t, ("after", "fe_status", "failover")) or {}
    last = fe.get("last") or {}
    a, b = t["before"], t["after"]
    be_after = {x.get("id"): x for x in b.get("be_status") or [] if isinstance(x, dict)}
    be_counters = {}
    for x in a.get("be_status") or []:
        if not isinstance(x, dict) or x.get("id") not in be_after:
            continue
        y = be_after[x["id"]]
        be_counters[x["id"]] = {k: _delta(x, y, ("counters", k))
                                for k in ("backups", "taken_over", "takeover_lost", "fenced")}
        be_counters[x["id"]]["recovery_latency_us"] = y.get("recovery_latency_us")
    dp = {k: _delta(a, b, ("fe_status", "datapath", k)) for k in ("copy", "failover", "failover_drop")}
    mid = [x.get("failover") or {} for x in t.get("be_mid") or [] if isinstance(x, dict)]
    held = sum(x.get("held") or 0 for x in mid)
    held_bytes = sum(x.get("held_bytes") or 0 for x in mid)
    # The FE keeps the last failover only: detection and recovery are the victim's when it
    # is the last one failed over (a BE starved silent for dead_after_ms fails over too).
    victim_last = t.get("kill_us") is not None and last.get("backend") == t.get("victim")
    detection = (last.get("at_unix_ms") - t["kill_us"] / 1000
                 if victim_last and _num(last.get("at_unix_ms")) else None)
    last_rel_s = ((last["at_unix_ms"] - t["t0_us"] / 1000) / 1000 if _num(last.get("at_unix_ms")) else None)
    return {
        "kind": t["kind"], "how": t.get("how"), "victim": t.get("victim"), "conns": t["conns"],
        "duration_s": w["duration_us"] / 1e6, "requests": w["requests"], "bytes": w["bytes"],
        "errors": w["errors"], "errors_total": sum(w["errors"].values()),
        "wrk_text": t.get("wrk_text"), "other_load_cpus": t.get("foreign_load"),
        "kill_ms": kill_ms if t.get("kill_us") else None,
        "series_100ms": series,
        "bin_ms": bin_ms,
        "zoom": zoom,
        "rate_before_median": base,
        "rate_min_after_kill": min(after) if after else None,
        "rate_min_after_kill_share": _ratio(min(after), base) if after and base else None,
        "rate_late_median": statistics.median(late) if late else None,
        "rate_late_share": _ratio(statistics.median(late), base) if late and base else None,
        "longest_no_response_ms": _longest_zero(counts, lo, hi) * bin_ms,
        "longest_no_response_near_kill_ms": _longest_zero(counts, k_lo, k_hi) * bin_ms,
        "latency_us": {"p50": pct.get(50.0), "p99": pct.get(99.0), "p99.9": pct.get(99.9),
                       "p99.99": pct.get(99.99), "max": w["latency_us"]["max"],
                       "mean": w["latency_us"]["mean"], "percentiles": w["latency_us"]["percentiles"]},
        "fe_failover": fe, "detection_ms": detection, "last_failover_backend": last.get("backend"),
        "last_failover_at_s": last_rel_s, "last_is_victim": victim_last,
        "silent_ms": last.get("silent_ms") if victim_last else None,
        "recovery_ms": last.get("recovery_ms") if victim_last else None,
        "recovered": last.get("recovered") if victim_last else None,
        "lost": last.get("lost") if victim_last else None,
        "fe_datapath": dp, "be": be_counters,
        "held_mid": held if mid else None, "held_bytes_mid": held_bytes if mid else None,
        "held_bytes_per_connection_mid": _ratio(held_bytes, held),
    }


def timeline(raw):
    out = {}
    for kind in ("nofail", "kill"):
        p = os.path.join(raw, f"failover-timeline.{kind}.json")
        if os.path.exists(p):
            out[kind] = timeline_one(json.load(open(p)))
    return out or None


def interleaved(raw):
    """bench/failover_interleaved.sh's result: ring / off with two beds alive at once."""
    p = os.path.join(raw, "failover-interleaved.json")
    if not os.path.exists(p):
        return None
    r = json.load(open(p))
    for e in (r.get("workloads") or {}).values():
        e["met"] = e.get("geomean", e["median"]) >= 1 - TARGET
    # The A/A control (both beds off), when it ran: what the method gives for no change.
    c = os.path.join(raw, "failover-interleaved-control.json")
    if os.path.exists(c):
        r["control"] = json.load(open(c)).get("workloads") or {}
    return r


def results(runs, q, round_ratio, raw, meta):
    fm = meta.get("failover") or {}
    workloads = fm.get("workloads") or ["close-1k", "ka-1k", "ka-1m"]
    c = cost(runs, q, round_ratio, workloads)
    tl = timeline(raw)
    il = interleaved(raw)
    if not c and not tl and not il:
        return None
    return {"settings": fm, "cost": c, "timeline": tl, "interleaved": il}


# --- docs/BENCHMARKS.md --------------------------------------------------------------
def _x(v):
    return "–" if v is None else f"{v:.3f}x"


def _gm(e):
    """A two-bed result's geometric mean with its 95% interval (older results: the median)."""
    if "geomean" not in e:
        return f"{e['median']:.3f}x (median)"
    lo, hi = e["ci95"]
    return f"{e['geomean']:.3f}x ({lo:.3f}–{hi:.3f})"


def _ms(us):
    return "–" if us is None else f"{us / 1000:.1f}"


def _n(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def _ratio_cell(r):
    if not r:
        return "–"
    rng = f" [{r['min']:.3f}–{r['max']:.3f}]" if len(r.get("per_round") or []) > 1 else ""
    return f"{r['median']:.3f}x{rng}{' †' if r.get('disturbed') else ''}"


def lines(results, meta, wtext):
    fo = results.get("failover")
    if not fo:
        return []
    s = fo.get("settings") or {}
    run = (f"Measured {meta['started']} by `{meta['command']}` (tcpha {meta['git']}"
           f"{', QUICK' if meta.get('quick') else ''}; {s.get('rounds') or meta.get('rounds', 1)} rounds of "
           f"{meta['warmup_s']} s warm-up + {meta['duration_s']} s per system and workload).")
    L = [BEGIN, "## Failover: cost with no failure (issue 13)", "",
         "**tcpha-failover** is tcpha with `failover = \"ring\"` in `[cluster]`: each BE backs up the "
         "connections of the previous one (3 BEs, all in the same groups), the FE sends the backup a "
         "BACKUP message when it is due (10-30 ms after COMMIT; none for a connection over by then) "
         "and a FORGET when a backed-up connection ends, its datapath copies every client packet "
         "with payload, SYN, FIN or RST (never a pure ACK; a FIN without data in the flow's first "
         "10 ms goes with its next packet, if any) into a ring buffer, which FE worker 0 reads every "
         "20 ms, and sooner each time 16 KiB of copies wait, and sends on to the backups over their control links (COPIES), whose agents hold "
         "them; BEs run the egress guard, and heartbeats run every 50 ms (250 ms to declare a BE "
         "dead). "
         "**tcpha** runs with `failover = \"off\"`. Both take turns in the same rounds on the same bed, "
         "next to each other, and alone for the rounds after those the other systems share; "
         "each figure is the median of the per-round ratios tcpha-failover / tcpha, with their range "
         "[min–max] († a round paired in it was disturbed by outside load). *FE CPU* is the FE "
         "process: it reads the copies and sends them on; the tc program's part of a copy runs in "
         "softirq context charged to whichever process sent the packet (mostly the client), so it "
         "shows in *bed CPU* (every process of the bed and the client) and in *tc ns/pkt*. *BE CPU* "
         "is every process in the BE namespaces. *FE CPU, % of one CPU* is the FE process's CPU "
         "time per second of the run, with failover off and on (the way seed 004 gives its "
         "overhead, a machine's utilization): on keep-alive the FE does little per request, so its "
         "per-request ratio divides small figures. "
         f"Target (issue 13): throughput >= {1 - TARGET:.2f}x, FE and BE CPU <= "
         f"{1 + TARGET:.2f}x. {run}", ""]
    c = fo.get("cost") or {}
    if c:
        L += ["| workload | throughput | FE CPU/req | BE CPU/req | bed CPU/req | FE CPU/GB | BE CPU/GB "
              "| p50 | p99 | tc ns/pkt | FE CPU, % of one CPU (off → ring) | within 5% |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for w, e in c.items():
            r = e["ratios"]
            met = {True: "yes", False: "**no**", None: "–"}[e.get("met")]
            sh = e.get("fe_cpu_share") or {}
            share = (f"{100 * sh['off']:.1f} → {100 * sh['ring']:.1f}"
                     if sh.get("off") is not None and sh.get("ring") is not None else "–")
            L.append(f"| {w} | " + " | ".join(_ratio_cell(r.get(k)) for k in COST) + f" | {share} | {met} |")
        L += ["", "What the ring did in tcpha-failover's runs (median over rounds): BACKUP messages per "
              "client connection, connections over before their BACKUP was due (none sent), client "
              "FINs of young flows not copied, client packets copied per request, BACKUPs the BEs "
              "refused, and failovers over all rounds (a BE the FE found silent though nothing failed).", "",
              "| workload | connections backed up / conn | over before due / conn | young FINs not copied / conn "
              "| copies / request | BACKUPs refused | failovers (should be 0) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for w, e in c.items():
            f = e.get("failover") or {}
            L.append(f"| {w} | {_n(f.get('backups_per_connection'), 2)} | {_n(f.get('unsent_per_connection'), 2)} "
                     f"| {_n(f.get('fin_later_per_connection'), 2)} | {_n(f.get('copies_per_request'), 2)} "
                     f"| {_n((f.get('be') or {}).get('backups_refused'))} "
                     f"| {_n(sum((r.get('failover') or {}).get('failovers') or 0 for r in e.get('round_runs') or []))} |")
        L += ["", "Workloads: " + "; ".join(f"{w}: {wtext.get(w, w)}" for w in c) + "."]
    else:
        L += ["Not measured (no tcpha and tcpha-failover runs of the same workloads)."]
    il = fo.get("interleaved")
    if il and il.get("workloads"):
        L += ["", "### Two beds at once", "",
              "The rounds above run each system alone, one after the other; on this bed such "
              "rounds spread by 10-20%, more than the 5% to be shown. `bench/failover_interleaved.sh` "
              "therefore runs a bed with failover off and one with it on at the same time (3 BEs "
              f"each) and alternates wrk bursts of {il.get('burst_s', 2):g} s between them (A B B A "
              f"..., {il.get('pairs', 0)} pairs per workload, then again with the beds' roles "
              "swapped, since the bed created second may differ a little): each ratio compares two "
              "bursts seconds apart on warm systems. Throughput ring / off: the geometric mean of all "
              "pairs' ratios with its 95% interval (resampling the pairs), their median and range, and "
              "the median for each bed created first. ka-1k-64c is ka-1k with "
              "64 connections instead of 16: more requests per second, and one bed's bursts spread "
              "by ~3% instead of ~20%. The control is the same run with failover off on both "
              "beds (an A/A run): the ratio the method gives when nothing differs.", "",
              "| workload | throughput ring / off | median [range] | pairs | off bed first | "
              "ring bed first | control: off / off | within 5% |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
        control = il.get("control") or {}
        for w, e in il["workloads"].items():
            by = e.get("median_by_first_bed") or {}
            ce = control.get(w)
            L.append(f"| {w} | **{_gm(e)}** | {e['median']:.3f}x [{e['min']:.3f}–{e['max']:.3f}] "
                     f"| {e['pairs']} | {_x(by.get('off'))} | {_x(by.get('ring'))} "
                     f"| {_gm(ce) if ce else '–'} | {'yes' if e.get('met') else '**no**'} |")
    tl = fo.get("timeline") or {}
    L += ["", "## Failover: a back-end dies under load", ""]
    k, n = tl.get("kill"), tl.get("nofail")
    if not k or not n:
        L += ["Not measured (workload failover-timeline not run).", END]
        return L
    how = ("its agent killed (SIGKILL: its kernel lives; the egress guard keeps it from ending the "
           "agent's connections)" if k["how"] == "agent" else
           "a host failure (its link down, then its agent killed)")
    L += [f"A ring cluster of 3 BEs (built-in server) under wrk: {k['conns']} keep-alive connections "
          f"requesting the mix's files (sizes and popularity as in *mix*, one rule over all BEs), "
          f"{s.get('timeline_s', k['duration_s']):.0f} s per run. Run **failure**: {k['victim']} dies at "
          f"t = {k['kill_ms'] / 1000:.2f} s, {how}; its connections are taken over by their backup. "
          "Run **no failure**: the same, undisturbed. Throughput: the requests wrk starts per 100 ms "
          "(on a keep-alive connection the next request leaves as the previous response completes; "
          "bench.lua's timeline, 10 ms bins); response times: wrk's latency histogram (every request, "
          "from its first byte sent to its last byte received). Detection and recovery: the FE's "
          "status (`.failover.last`): detection is the FE's failover time minus the kill's, "
          "recovery the time from the detection to the last backup's TAKEN.", "",
          "| | no failure | failure |", "|---|---:|---:|",
          f"| requests | {_n(n['requests'])} | {_n(k['requests'])} |",
          f"| requests failed (wrk errors: connect/read/write/status/timeout) | {n['errors_total']} "
          f"({'/'.join(str(n['errors'].get(x, 0)) for x in ('connect', 'read', 'write', 'status', 'timeout'))}) "
          f"| {k['errors_total']} "
          f"({'/'.join(str(k['errors'].get(x, 0)) for x in ('connect', 'read', 'write', 'status', 'timeout'))}) |",
          f"| throughput before t = {k['kill_ms'] / 1000:.1f} s (median req/s per 100 ms) "
          f"| {_n(n['rate_before_median'])} | {_n(k['rate_before_median'])} |",
          f"| lowest 100 ms within 1 s after it (share of before) | {_n(n['rate_min_after_kill'])} "
          f"({_n((n['rate_min_after_kill_share'] or 0) * 100)}%) | {_n(k['rate_min_after_kill'])} "
          f"({_n((k['rate_min_after_kill_share'] or 0) * 100)}%) |",
          f"| median from 1 s after it to the end (share of before) | {_n(n['rate_late_median'])} "
          f"({_n((n['rate_late_share'] or 0) * 100)}%) | {_n(k['rate_late_median'])} "
          f"({_n((k['rate_late_share'] or 0) * 100)}%) |",
          f"| longest time without a completed response, near t = {k['kill_ms'] / 1000:.1f} s / whole run (ms) "
          f"| {n['longest_no_response_near_kill_ms']} / {n['longest_no_response_ms']} "
          f"| {k['longest_no_response_near_kill_ms']} / {k['longest_no_response_ms']} |"]
    for p in ("p50", "p99", "p99.9", "p99.99", "max"):
        L.append(f"| response time {p} (ms) | {_ms(n['latency_us'][p])} | {_ms(k['latency_us'][p])} |")
    L += [f"| backups held 1 s before the kill (all BEs) / bytes per backed-up connection "
          f"(`failover.held_bytes` / `held`: states, requests, copies) "
          f"| {_n(n['held_mid'])} / {_n(n['held_bytes_per_connection_mid'])} "
          f"| {_n(k['held_mid'])} / {_n(k['held_bytes_per_connection_mid'])} |",
          f"| failovers (FE) | {_n(n['fe_failover'].get('failovers'))} | {_n(k['fe_failover'].get('failovers'))} |",
          f"| detected after the kill (ms) | – | {_n(k['detection_ms'])} |",
          f"| silent before detection, FE's view (ms) | – | {_n(k['silent_ms'])} |",
          f"| recovery after detection (ms) | – | {_n(k['recovery_ms'], 1)} |",
          f"| connections recovered / lost (FE) | – | {_n(k['recovered'])} / {_n(k['lost'])} |",
          f"| FE datapath: copies / packets sent to the backup / dropped | "
          f"{'/'.join(_n(n['fe_datapath'].get(x)) for x in ('copy', 'failover', 'failover_drop'))} | "
          f"{'/'.join(_n(k['fe_datapath'].get(x)) for x in ('copy', 'failover', 'failover_drop'))} |",
          f"| other load during the run (CPUs) | {_n(n['other_load_cpus'], 2)} | {_n(k['other_load_cpus'], 2)} |"]
    spurious = []
    for name, r in (("no failure", n), ("failure", k)):
        fails = (r.get("fe_failover") or {}).get("failovers") or 0
        extra = fails - (1 if r is k else 0)
        if extra > 0:
            spurious.append(f"{name} run: {extra} (the last: {r.get('last_failover_backend')} at "
                            f"t = {r.get('last_failover_at_s') or 0:.2f} s)")
    if spurious:
        L += ["", "**Failovers of back-ends that were alive** (the FE heard nothing from them for "
              "`dead_after_ms`, 250 ms with failover on, and failed them over; the BE is fenced: it "
              "drops its connections silently and its backup takes them over): " + "; ".join(spurious)
              + ". Outside load on these 2 vCPUs starves the agents this long at times. "
              + ("" if k.get("last_is_victim") else
                 f"The FE reports only its last failover, which is not {k['victim']}'s here: "
                 "detection and recovery of the kill are not known from this run (–).")]
    per_be = []
    for be, x in (k.get("be") or {}).items():
        rl = x.get("recovery_latency_us") or {}
        lat = (f", recovery latency p50 {_n(rl.get('p50'))} us / p99 {_n(rl.get('p99'))} us"
               if rl.get("count") else "")
        per_be.append(f"{be}: taken over {_n(x.get('taken_over'))}, lost {_n(x.get('takeover_lost'))}{lat}")
    if per_be:
        L += ["", "The surviving BEs in the failure run (their counters over the run; recovery latency: "
              "TAKEOVER received to the connection served): " + "; ".join(per_be) + "."]
    bad = [(name, r) for name, r in (("no failure", n), ("failure", k)) if r["errors_total"]]
    for name, r in bad:
        text = " ".join(line.strip() for line in (r.get("wrk_text") or "").splitlines()
                        if "error" in line.lower() or "Non-2xx" in line)
        L += ["", f"**wrk reported {r['errors_total']} failed requests in the {name} run** ({text or 'see raw data'}): "
              "connect/read/write are socket errors (a read error is a connection reset or closed "
              "while wrk waited for a response), status a response >= 400, timeout no response within 10 s."]
    L += ["", "![Throughput per 100 ms around a BE failure](bench/failover_timeline.png)", "",
          "![Response-time CDF with and without a BE failure](bench/failover_latency_cdf.png)", "", END]
    return L


def splice(doc_path, section):
    """The failover section of an existing BENCHMARKS.md, for BENCH_FAILOVER=only."""
    report_splice.splice(doc_path, section, BEGIN, END)
