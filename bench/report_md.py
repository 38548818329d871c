"""docs/BENCHMARKS.md from results.json's contents (bench/report.py calls render())."""
import report_failover
import report_variants

ORDER = ["ka-1k", "ka-10k", "ka-100k", "ka-1m", "ka-10m", "close-1k", "lat-1k", "mix", "browse-all",
         "browse-part", "browse-part-1"]
SYSTEMS = ["tcpha", "tcpha-failover", "tcpha-tunnel", "tcpha-ipv6", "tcpha-base", "tcpha-relay", "tcpha-relay-unix", "haproxy", "direct", "direct-ipv6"]
WORKLOAD_TEXT = {
    "ka-1k": "1 KB, keep-alive",
    "ka-10k": "10 KB, keep-alive",
    "ka-100k": "100 KB, keep-alive",
    "ka-1m": "1 MB, keep-alive",
    "ka-10m": "10 MB, keep-alive",
    "close-1k": "1 KB, new connection per request",
    "lat-1k": "1 KB, new connection per request, one client connection (latency at light load)",
    "mix": "web-like mix (SURGE-like sizes, Zipf popularity), new connection per request, images rule",
    "browse-all": "browsing, every file on every BE (the baseline of browse-part: no moves), "
                  "16 keep-alive connections",
    "browse-part": "browsing partitioned content (page, 8 images, 3 assets per visit, each kind on one BE), "
                   "16 keep-alive connections",
    "browse-part-1": "browsing partitioned content, one keep-alive connection (moves one at a time)",
    "locality-round-robin": "locality working set, round-robin",
    "locality-lard": "locality working set, LARD",
}
MICRO_TEXT = {
    "BM_HttpParseRequest": "http::parse_request, a 9-header browser request",
    "BM_RouterRoute": "sched::Router::route, 4 RE2 rules, third matches (LARD)",
    "BM_ProtoHandoffFrame": "proto::Session send + feed of one HANDOFF frame (MAC both ways)",
    "BM_HandoffExport": "handoff::export_state + leave_repair (loopback, private netns)",
    "BM_HandoffExportImport": "export_state, silent close, import_state, activate (loopback)",
    "BM_DatapathForwardAck": "tc program on a forwarded client ACK (BPF_PROG_RUN)",
    "BM_DatapathForwardData/0": "tc program on a forwarded 200-byte request, no backup",
    "BM_DatapathForwardData/1": "the same with failover's copy into the ring (its backup's)",
}


def f(x, digits=0, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float) and digits == 0 and abs(x) < 10:
        digits = 2 if abs(x) < 1 else 1
    return f"{x:,.{digits}f}{unit}"


def ms(us):
    return "–" if us is None else f"{us / 1000:.2f}"


def sig(x):
    """Three significant digits, for costs spanning orders of magnitude."""
    return "–" if x is None else f"{x:.3g}"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def span(lo, hi, fmt):
    """" [lo–hi]" over rounds, or nothing when there is one round or no figure."""
    if lo is None or hi is None:
        return ""
    return f" [{fmt(lo)}–{fmt(hi)}]"


def x3(v):
    return f"{v:.3g}x"


def x2(v):
    return f"{v:.2f}x"


def loads(r, q):
    """The other load of each round, those above the quiet threshold in bold."""
    per = r.get("other_load_rounds") or [r["other_load_cpus"]]
    return " / ".join(f"**{x:.2f}**" if x > q else f"{x:.2f}" for x in per)


def ratio_text(e, key, fmt=x2):
    """A ratio entry of results.json: the median of the per-round ratios, their range,
    and a dagger when outside load disturbed one of the rounds paired."""
    if e.get(key) is None:
        return None
    lo, hi = (e.get("range") or {}).get(key, (None, None))
    n = len((e.get("per_round") or {}).get(key) or [])
    rng = span(lo, hi, fmt) if n > 1 else ""
    return f"{fmt(e[key])}{rng}{' †' if e.get('disturbed_rounds') else ''}"


def lines_targets(results):
    out = ["| target | measured (median over rounds [min–max]) | goal | met |", "|---|---|---|---|"]
    for t in results["targets"]:
        rng = t.get("range") if (t.get("rounds") or 0) > 1 else None
        dist = " †" if t.get("disturbed") else ""
        if "not_measured" in t:
            meas = f"not measured: {t['not_measured']}"
        elif "value_us" in t:
            meas = (f"{f(t['value_us'])} us{span(*rng, f) if rng else ''}{dist}"
                    if t["value_us"] is not None else "not measured")
        elif "lard_hit_rate" in t:
            meas = f"LARD {t['lard_hit_rate']:.1%} vs round-robin {t['rr_hit_rate']:.1%}"
        else:
            meas = (f"{t['ratio']:.3g}x{span(*rng, x3) if rng else ''}{dist}"
                    if t["ratio"] is not None else "not measured")
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        out.append(f"| {t['target']} | {meas} | {t['goal']} | {met} |")
    return out


def lines_workload(results, runs, w):
    q = results["meta"]["quiet_load_cpus"]
    rows = [(s, runs[(s, w)]) for s in SYSTEMS if (s, w) in runs]
    if not rows:
        return []
    out = ["| system | req/s [min–max] | MB/s | latency p50 (ms) | p99 (ms) | FE CPU s/GB | FE CPU s/1000 conn "
           "| FE tx / response byte | bed CPU s/GB | errors | other load per round (CPUs) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, r in rows:
        errs = sum(r["errors"].values())
        rng = (r.get("spread") or {}).get("requests_per_s")
        rng_s = span(*rng, lambda v: f(v)) if rng and r.get("round_count", 1) > 1 else ""
        out.append(f"| {s} | {f(r['requests_per_s'])}{rng_s} | {f(r['mb_per_s'], 1)} | {ms(r['latency_us']['p50'])} "
                   f"| {ms(r['latency_us']['p99'])} | {sig(r.get('fe_cpu_s_per_gb'))} "
                   f"| {sig(r.get('fe_cpu_s_per_1000_conn'))} | {sig(r.get('fe_tx_per_response_byte'))} "
                   f"| {sig(r.get('bed_cpu_s_per_gb'))} | {errs} | {loads(r, q)} |")
    ratios = []
    rw = (results.get("ratios") or {}).get(w) or {}
    for s in ("tcpha", "tcpha-base", "tcpha-relay", "tcpha-relay-unix"):
        for ref in ("haproxy", "direct", "tcpha-base"):
            t = ratio_text(rw.get(f"{s}/{ref}") or {}, "requests_per_s")
            if t:
                ratios.append(f"{s}/{ref} {t}")
        t = ratio_text(rw.get(f"{s}/tcpha-base") or {}, "latency_p50", lambda v: f"{v:.2f}x")
        if t:
            ratios.append(f"{s}/tcpha-base client latency p50 {t}")
        t = ratio_text(rw.get(f"{s}/haproxy") or {}, "fe_cpu_s_per_gb", lambda v: f"{v:.3f}x")
        if t:
            ratios.append(f"{s}/haproxy FE CPU per GB {t}")
    if ratios:
        out += ["", "Ratios (throughput unless said; median of the per-round ratios [min–max]; † a round "
                "paired in it was disturbed): " + "; ".join(ratios) + "."]
    return out


def lines_handoff(runs):
    out = ["| workload | handoffs | failed | to the BE serving p50/p99 (us) | to COMMIT p50 (us) | p99 (us) "
           "| FORWARD+export+send p50/p99 | send→READY p50/p99 | READY→COMMIT p50/p99 | BE import p50/p99 "
           "| forwarded pkts/conn | BPF ns/pkt | FE CPU us/handoff |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in ("tcpha", "tcpha-failover", "tcpha-tunnel", "tcpha-ipv6", "tcpha-base", "tcpha-relay", "tcpha-relay-unix"):
        for w in ORDER + ["locality-round-robin", "locality-lard"]:
            r = runs.get((s, w))
            if not r or not r.get("tcpha"):
                continue
            t = r["tcpha"]
            lat, br = t.get("handoff_latency_us") or {}, t.get("handoff_breakdown_us") or {}

            def pp(d):
                return f"{f(d.get('p50'))} / {f(d.get('p99'))}" if d else "–"

            imp = [x for x in t.get("be_import_latency_us") or [] if x]
            imp_s = (f"{f(max(x['p50'] for x in imp))} / {f(max(x['p99'] for x in imp))}" if imp else "–")
            per = t.get("fe_cpu_s_per_handoff")
            out.append(f"| {s} {w} | {f(t['handoffs_ok'])} | {f(t['handoffs_failed'])} "
                       f"| {pp(t.get('takeover_latency_us'))} | {f(lat.get('p50'))} "
                       f"| {f(lat.get('p99'))} | {pp(br.get('hold_export_send'))} | {pp(br.get('send_to_ready'))} "
                       f"| {pp(br.get('ready_to_commit'))} | {imp_s} "
                       f"| {sig(t.get('forwarded_packets_per_connection'))} | {f(t.get('bpf_ns_per_packet'))} "
                       f"| {f(per * 1e6 if per else None, 1)} |")
    return out


def lines_moves(runs):
    """Multi-handoff (issue 12): the moves the BEs made in the browse runs, and what the
    BEs and the balancer cost per request there."""
    out = ["| system workload | req/s | moves out | in | failed | moves/request | FE repoints | refused "
           "| move latency p50 / p99 (us) per BE | BE CPU us/req | FE CPU us/req | bed CPU us/req | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    n = 0
    for w in ("browse-all", "browse-part", "browse-part-1"):
        for s in SYSTEMS:
            r = runs.get((s, w))
            if not r:
                continue
            n += 1
            m = r.get("moves") or {}
            lat = "; ".join(f"{x.get('id')} {f(x.get('p50'))} / {f(x.get('p99'))}"
                            for x in m.get("move_latency_us") or [] if x.get("count")) or "–"
            out.append(f"| {s} {w} | {f(r['requests_per_s'])} | {f(m.get('moved_out'))} | {f(m.get('moved_in'))} "
                       f"| {f(m.get('move_failed'))} | {sig(m.get('moves_per_request'))} | {f(m.get('fe_repoints'))} "
                       f"| {f(m.get('fe_repoint_refused'))} | {lat} | {f(r.get('be_cpu_us_per_request'), 1)} "
                       f"| {f(r.get('fe_cpu_us_per_request'), 1)} "
                       f"| {f(ratio(r.get('bed_cpu_s'), r['requests'] / 1e6), 1)} | {sum(r['errors'].values())} |")
    if not n:
        return []
    part, base = runs.get(("tcpha", "browse-part")), runs.get(("tcpha", "browse-all"))
    per = (part.get("moves") or {}).get("moves_per_request") if part else None
    if part and base and per and part.get("be_cpu_us_per_request") and base.get("be_cpu_us_per_request"):
        cost = (part["be_cpu_us_per_request"] - base["be_cpu_us_per_request"]) / per
        out += ["", f"tcpha's BE CPU per move, both ends (browse-part minus browse-all BE CPU per request, "
                f"divided by moves per request): **{cost:.0f} us**."]
    parts = []
    for w in ("browse-part-1", "browse-part"):
        r = runs.get(("tcpha", w))
        for x in ((r or {}).get("moves") or {}).get("move_parts_us") or []:
            if (x.get("send") or {}).get("count"):
                parts.append(f"| {w} | {x.get('id')} | "
                             + " | ".join(f"{f(x[k].get('p50'))} / {f(x[k].get('p99'))}"
                                          for k in ("send", "ready", "commit")) + " |")
    if parts:
        out += ["", "Where a move's time goes, per BE (its own histograms, p50 / p99 in us): FORWARD + "
                "TCP_REPAIR export + HANDOFF queued; HANDOFF queued -> READY received (the rest of the "
                "round, the target's wake-up, import and first response, which it sends before READY "
                "leaves, two trips over the bridge); READY -> COMMIT queued. The client waits only for "
                "the first part and the target's import (the lease protocol, docs/design.md). "
                "Control frames leave at the end of the agent's event-loop round (proto::WriteBatch).", "",
                "| workload | BE | FORWARD+export+HANDOFF queued | to READY | READY->COMMIT queued |",
                "|---|---|---:|---:|---:|"] + parts
    return out


def lines_locality(results, runs):
    miss = next((u["not_measured"] for u in results["not_measured"] if u["system"] == "locality"), None)
    if miss:
        return [f"**Not measured: {miss}.** The workload is in place (bench/run.sh, `locality`): "
                "it runs as soon as the BE status reports `cache.hits` and `cache.misses`."]
    out = ["| policy | cache hit rate | req/s | MB/s | p50 (ms) | p99 (ms) | other load per round |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for p in ("round-robin", "lard"):
        r = runs.get(("tcpha", f"locality-{p}"))
        if r:
            hr = r.get("cache_hit_rate")
            out.append(f"| {p} | {'–' if hr is None else f'{hr:.1%}'} | {f(r['requests_per_s'])} "
                       f"| {f(r['mb_per_s'], 1)} | {ms(r['latency_us']['p50'])} | {ms(r['latency_us']['p99'])} "
                       f"| {loads(r, results['meta']['quiet_load_cpus'])} |")
    return out


def lines_rounds(meta):
    q, n = meta["quiet_load_cpus"], meta.get("rounds", 1)
    if "rounds" not in meta:  # raw data from before the rounds (one block per system)
        return [f"- **Each run**: {meta['warmup_s']} s warm-up, then {meta['duration_s']} s measured with wrk "
                "(threads = vCPUs), one run per system and workload, each system's workloads in one block; "
                f"a run during which other work used more than {q} CPUs was repeated (at most "
                f"{meta['retries']} times) and the least disturbed attempt kept."]
    return [
        f"- **Runs**: for each workload the systems take turns, in {n} round{'s' if n != 1 else ''} "
        "(A B C, then B C A, then C A B, ...: outside load drifting over minutes falls on every "
        f"system alike); each run is {meta['warmup_s']} s of warm-up, then {meta['duration_s']} s "
        "measured with wrk (threads = vCPUs), on daemons started afresh for it. Each figure below is "
        "the median over the rounds (errors: the total), each ratio the median of the per-round "
        "ratios (a system's run against the other's run of the same round), with its range.",
        "- **Outside load**: other engineers compile on this machine at times. The bench measures "
        "how much CPU other work takes during each run (the bed's processes and the client subtracted "
        "from the machine's busy time). "
        + (f"When other work took more than {q} CPUs during a run's warm-up, the bench waits (at most "
           f"{meta.get('quiet_wait_max_s', '–')} s per run) for a second in which it takes less; a run during which "
           f"other work used more was repeated (at most {meta['retries']} times, {meta['retry_budget']} "
           f"repeats in all; {meta['repeated_runs']} this time) and the least disturbed attempt kept."
           if meta.get("quiet_wait_max_s") or meta["retries"] else
           "This run (QUICK) neither waited for a quiet machine nor repeated a disturbed run.")
        + f" The *other load* column gives each round's kept run, in bold above {q} CPUs.",
    ]


def lines_disturbed(results, runs):
    q = results["meta"]["quiet_load_cpus"]
    bad, n_all, n_bad = [], 0, 0
    for w in ORDER + ["locality-round-robin", "locality-lard"]:
        items, loads_w, n_w = [], [], 0
        for s in SYSTEMS:
            r = runs.get((s, w))
            for x in (r or {}).get("rounds") or []:
                n_w += 1
                if x["other_load_cpus"] > q:
                    items.append(f"{s} round {x['round']} ({x['other_load_cpus']:.2f})")
                    loads_w.append(x["other_load_cpus"])
        n_all, n_bad = n_all + n_w, n_bad + len(items)
        if items and len(items) == n_w and n_w > 2:
            bad.append(f"{w}: all {n_w} runs ({min(loads_w):.2f}–{max(loads_w):.2f})")
        elif items:
            bad.append(f"{w}: " + ", ".join(items))
    if not bad:
        worst = max((x["other_load_cpus"] for r in runs.values() for x in r.get("rounds") or []), default=0)
        return [f"No measured run was disturbed: other work used at most {worst:.2f} CPUs during any "
                f"kept run (threshold {q}).", ""]
    head = (f"**{n_bad} of {n_all} measured runs were disturbed by outside load**" if n_bad * 2 > n_all
            else f"**Runs that outside load disturbed** ({n_bad} of {n_all})")
    return [head + f" (other work above {q} CPUs during the kept attempt, in CPUs; their figures, and the "
            "ratios pairing them (†), are less reliable"
            + ("; with most runs disturbed, treat the whole page as indicative" if n_bad * 2 > n_all else "")
            + "): " + "; ".join(bad) + ".", ""]


def lines_profiles(results):
    profs = results.get("profiles") or []
    miss = next((u["not_measured"] for u in results["not_measured"] if u["system"] == "profile"), None)
    meta = results["meta"]
    if not profs:
        why = miss or ("BENCH_PROFILE=0" if meta.get("profile") is False else
                       "no profiled workload ran (close-1k, browse-part-1) or perf failed")
        return [f"Not profiled: {why}."]
    hz, dur = profs[0]["hz"], profs[0]["duration_s"]
    out = [
        "One extra run per system after the measured rounds of the workload (not a measured run: "
        f"sampling costs CPU), under `perf record -a -g -F {hz}` for {dur} s "
        "(bench/lib/profile.sh). Samples are grouped by process: **FE** is the FE namespace (tcpha fe, "
        "or HAProxy), **BEs** the BE namespaces (tcpha be agents, or nginx). A function's figure is its "
        "share of its group's samples (self time: the sampled frame, kernel and user alike) times "
        "the group's CPU time per connection (per request for keep-alive workloads) in the measured "
        "rounds (their median; the profiled run's own figure, under perf, is given alongside). The "
        "system calls are inclusive: all kernel time under a call, its entry and exit. Debian's "
        "HAProxy and nginx carry no symbols for their own code, which shows as [haproxy], [nginx]. "
        "**\\***: this VM has no hardware PMU, so perf samples on a timer interrupt, which cannot fire "
        "while interrupts are off: an interrupts-off section's time is charged to the function that "
        "turns them back on (`do_syscall_64 *`: a system call's entry and exit; `__schedule *`: "
        "the switch to another task).",
        "",
        "| workload | system | FE us | FE kernel | BEs us | BEs kernel | samples FE / BEs / client / other work |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for p in profs:
        g = p["groups"]
        fe, be = g["fe"], g["be"]
        oth = g["other"]["samples"]
        out.append(f"| {p['workload']} (per {p['per']}) | {p['system']} | {f(fe.get('cpu_us_per_unit'), 1)} "
                   f"| {pct(fe.get('kernel_share'))} | {f(be.get('cpu_us_per_unit'), 1)} "
                   f"| {pct(be.get('kernel_share'))} "
                   f"| {fe['samples']} / {be['samples']} / {g['client']['samples']} / {oth} |")
    for p in profs:
        g = p["groups"]
        fe, be = g["fe"], g["be"]
        unit = "conn" if p["per"] == "connection" else "req"
        load = "–" if p.get("other_load_cpus") is None else f"{p['other_load_cpus']:.2f}"
        out += ["", f"### {p['workload']}: {p['system']}", "",
                f"FE ({', '.join(fe['comms']) or '–'}): **{f(fe.get('cpu_us_per_unit'), 1)} us** CPU per "
                f"{p['per']} in the measured rounds ({f(fe.get('cpu_us_per_unit_profile_run'), 1)} us in the "
                f"profiled run), {pct(fe.get('kernel_share'))} in the kernel. BEs "
                f"({', '.join(be['comms']) or '–'}): **{f(be.get('cpu_us_per_unit'), 1)} us** "
                f"({f(be.get('cpu_us_per_unit_profile_run'), 1)} us profiled), {pct(be.get('kernel_share'))} in "
                f"the kernel. {f(p['requests'])} requests in the profiled run; other work on the machine "
                f"took {pct(g['other']['share_of_all'])} of all samples "
                f"({load} CPUs).",
                "",
                f"| # | FE function | us/{unit} | % | BEs function | us/{unit} | % |",
                "|---:|---|---:|---:|---|---:|---:|"]
        ft, bt = fe.get("top") or [], be.get("top") or []
        for i in range(max(len(ft), len(bt))):
            a = ft[i] if i < len(ft) else None
            b = bt[i] if i < len(bt) else None
            cells = []
            for x in (a, b):
                cells += ([f"`{x['function']}`", f(x["us"], 1), pct(x["share"])] if x else ["", "", ""])
            out.append(f"| {i + 1} | " + " | ".join(cells) + " |")
        for name, G in (("FE", fe), ("BEs", be)):
            sc = G.get("syscalls") or []
            if sc:
                out += ["", f"{name} by system call (us/{unit}, inclusive): " + "; ".join(
                    f"{x['syscall']} {f(x['us'], 1)} ({pct(x['share'])})" for x in sc[:12]) + "."]
    return out


def pct(x):
    return "–" if x is None else f"{x:.0%}"


def lines_micro(results):
    if not results["micro"]:
        return ["Not run (build target `tcpha_micro` missing)."]
    out = ["| benchmark | what | ns/op | CPU ns/op |", "|---|---|---:|---:|"]
    for m in results["micro"]:
        what = MICRO_TEXT.get(m["name"], "")
        if "skipped" in m:
            out.append(f"| {m['name']} | {what} | skipped: {m['skipped']} | |")
        else:
            out.append(f"| {m['name']} | {what} | {f(m['ns_per_op'])} | {f(m['cpu_ns_per_op'])} |")
    return out


def lines_model(results):
    m = results["model"]
    if not m:
        return ["Not computed: it needs the tcpha close-1k and ka-10m runs."]
    out = [
        "**This is a model, not a measurement.** It extrapolates from costs measured above to one FE",
        "CPU core doing nothing but steering, with BEs on hosts of their own:",
        "",
        f"- FE process CPU per connection (accept, read, parse, route, export, HANDOFF/READY/COMMIT,",
        f"  map updates, close), from the 1 KB new-connection run: **{m['fe_cpu_s_per_connection'] * 1e6:.1f} us**;",
        f"- client packets the datapath forwards per connection after the handoff: "
        f"{m['forwarded_packets_per_small_connection']:.2f} for a 1 KB response, plus "
        f"{m['forwarded_packets_per_response_mb']:.0f} per MB of response (ACKs; 10 MB run);",
        f"- per forwarded packet: the tc program, {m['bpf_ns_per_packet']:.0f} ns ({m['bpf_ns_source']}), plus",
        "  the kernel's receive and redirect work around it, which on this bed runs in softirq",
        "  context charged to whichever process sent the packet (the client) and cannot be",
        "  isolated.",
        "",
        "Two scenarios: **bed** takes the packet counts as measured here and nothing for the",
        "kernel's share (an upper bound on capacity; veth carries 64 KB segments, so clients",
        "acknowledge far less often than on a real link); **MTU 1500** *assumes* a delayed-ACK",
        f"client on a 1500-byte link ({m['assumed_acks_per_mb_mtu1500']:.0f} ACKs per MB) and "
        f"{m['assumed_kernel_ns_per_packet_mtu1500'] / 1000:.0f} us of kernel work per forwarded packet.",
        "",
        "FE conn/s per core = 1 / (CPU per connection + packets per connection x per-packet cost);",
        "BEs per FE core = that / the responses per second one BE served in the direct run of the",
        "same size (one nginx worker on this machine; each response counted as one connection,",
        "the FE's worst case).",
        "",
        "| response | fwd pkts/conn bed / MTU 1500 | FE conn/s per core bed | MTU 1500 | Gbit/s steered bed "
        "| MTU 1500 | BE responses/s (direct) | BEs per FE core bed | MTU 1500 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in m["rows"]:
        out.append(f"| {r['response']} | {r['packets_per_connection_bed']:.1f} / {r['packets_per_connection_mtu1500']:.1f} "
                   f"| {f(r['conn_per_s_bed'])} | {f(r['conn_per_s_mtu1500'])} | {f(r['gbit_per_s_bed'], 1)} "
                   f"| {f(r['gbit_per_s_mtu1500'], 1)} | {f(r.get('be_responses_per_s'))} "
                   f"| {f(r.get('bes_per_fe_core_bed'), 1)} | {f(r.get('bes_per_fe_core_mtu1500'), 1)} |")
    if m.get("haproxy_gbit_per_s_per_core_1m"):
        out += ["", f"For comparison, HAProxy's measured FE CPU per GB in the 1 MB run means one HAProxy core "
                f"relays at most about {m['haproxy_gbit_per_s_per_core_1m']:.1f} Gbit/s on this bed, whatever the number of BEs: "
                "a relaying proxy's capacity is bytes, tcpha's is connections."]
    return out


def lines_browse_setup(files):
    b = files.get("browse")
    if not b:
        return []
    return [
        f"- **Partitioned site** (browse-part, browse-part-1; bench/gen_files.py `browse/`): {b['pages']} "
        f"pages of {b['page_bytes'][0] / 1e3:.0f}-{b['page_bytes'][1] / 1e3:.0f} KB only on be1, "
        f"{b['images']} images of {b['image_bytes'][0] / 1e3:.0f}-{b['image_bytes'][1] / 1e3:.0f} KB only on be2, "
        f"{b['assets']} scripts and style sheets of {b['asset_bytes'][0] / 1e3:.0f}-{b['asset_bytes'][1] / 1e3:.0f} KB "
        f"only on be3 (the same docroots for tcpha's built-in server and nginx). Each wrk connection "
        f"walks page visits in order: the page, its {b['images_per_visit']} images, its {b['assets_per_visit']} "
        f"assets ({b['requests_per_visit']} requests, {b['mean_visit_bytes'] / 1e3:.0f} KB on average), "
        "then another visit at random, on the same keep-alive connection (one wrk thread per "
        "connection, so that each connection walks its own visits). Routing: three path rules, one "
        "group per BE, no catch-all (tcpha rules; HAProxy `path_reg` ACLs -> `use_backend` per group, "
        "one server each, `http-reuse always`, keep-alive on both sides). **browse-all** visits the same "
        "site copied in full to every BE (under /all/), with the one round-robin rule: nothing is "
        "routed elsewhere, so tcpha never moves a connection (the baseline that prices a move).",
    ]


def render(results, runs, plots):
    meta, mach, files = results["meta"], results["machine"], results["files"]
    mix = files["mix"]
    L = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/run.sh measures, bench/report.py writes this page, "
        "bench/out/results.json holds every figure). Do not edit by hand: re-run.",
        "",
        f"- **Date**: {meta['started']} (UTC), {meta['elapsed_s']} s; "
        f"{'QUICK run (short durations)' if meta['quick'] else 'full run'}.",
        f"- **Command**: `{meta['command']}` (tcpha {meta['git']}).",
        f"- **Machine**: {mach['nproc']} vCPUs ({mach['cpu_model']}), Linux {mach['kernel']}, "
        f"{mach['memory_gb']} GB. **The client, the FE and the 3 BEs share these {mach['nproc']} vCPUs**: "
        "they are network namespaces on one virtual machine, joined by veth pairs and a bridge "
        "(scripts/testbed.sh). Figures are comparisons on the same CPUs, not the capacity of "
        "separate hosts.",
        f"- **Software**: {meta['versions']['haproxy'].split(' - ')[0]}, {meta['versions']['nginx']}, "
        f"{meta['versions']['wrk'].split(' Copyright')[0]}.",
        *lines_rounds(meta),
        "",
        *lines_disturbed(results, runs),
        "## Targets (issues 6, 12, 13 and 17)",
        "",
        "Judged on medians over rounds; a ratio is the median of the per-round ratios (each system's "
        "run against the other's run of the same round), with their range. † marks a figure with a "
        "round that outside load disturbed. *FE CPU per new connection* is the FE process's CPU time "
        "(all threads, schedstat) during the close-1k run divided by the handoffs it completed in it "
        "(every connection is handed off), per round; close-1k keeps both vCPUs busy with client, "
        "FE and BEs together, so it is the FE's cost per connection at a high rate, not the rate "
        "one FE core alone would reach (that would be 1 / this cost; see the model below).",
        "",
        *lines_targets(results),
        "",
        "## What runs",
        "",
        "- **tcpha**: `tcpha fe` (one worker per vCPU) on the FE, `tcpha be` with the built-in static "
        "server (no cache: bodies over 64 KiB sent from the file mapped, smaller ones with sendfile) on each BE; a fresh FE and fresh BE agents for every run, so "
        "their latency histograms cover that run (warm-up included).",
        "- **tcpha-relay**: the same, with each BE agent relaying to the BE's nginx over loopback "
        "TCP (`upstream = \"127.0.0.1:8081\"`, PROXY protocol v2).",
        "- **tcpha-relay-unix**: the same relay to the same nginx over its unix socket "
        "(`upstream = \"unix:/...\"`, PROXY protocol v2).",
        "- **haproxy**: Debian's HAProxy in `mode http` in the FE namespace, one thread per vCPU, "
        f"listening on the VIP {'10.200.0.10'} (the bench adds it to the FE's eth0 while no tcpha FE "
        "runs, so the client uses the same address for every balancer), balancing round-robin over "
        "nginx on each BE (port 8080), with the same routing as tcpha's rules. Defaults otherwise "
        "(keep-alive and connection reuse on the server side).",
        "- **direct**: the client to be1's nginx, no balancer: the bound one BE sets.",
        "- nginx (every BE): one worker (as the single-threaded BE agent), sendfile on, "
        "keep-alive, no access log.",
        f"- **Routing**: one rule, round-robin over the 3 BEs, except in *mix*: paths matching "
        f"`{meta['image_rule']}` go to be1, the rest round-robin to be2 and be3 (tcpha rules, HAProxy "
        "`path_reg` ACL).",
        f"- **Mix file set** (bench/gen_files.py, deterministic): {mix['files']} files, "
        f"{mix['bytes'] / 1e6:.0f} MB, median {mix['median_bytes'] / 1e3:.1f} KB, largest "
        f"{mix['max_bytes'] / 1e6:.1f} MB (SURGE-like lognormal body and Pareto tail); Zipf popularity; "
        f"{mix['image_request_share']:.0%} of requests are images; mean response "
        f"{mix['mean_response_bytes'] / 1e3:.0f} KB. wrk picks paths by popularity (bench/wrk/bench.lua).",
        *lines_browse_setup(files),
        "",
        "Columns: *FE CPU* is the CPU time of the balancer process (all threads, from "
        "/proc/PID/task/*/schedstat: utime+stime at ns resolution) per GB of responses and per 1000 "
        "client connections (= ms per connection); *FE tx / response byte* is what the FE's eth0 "
        "sent per response byte the client received; *bed CPU* is the CPU time of every process in "
        "the FE and BE namespaces plus the client's, per GB. Latency is wrk's, per request.",
        "",
        "## Results",
    ]
    for w in ORDER:
        block = lines_workload(results, runs, w)
        if block:
            L += ["", f"### {w}: {WORKLOAD_TEXT.get(w, w)}", "", *block]
    for u in results["not_measured"]:
        if u["system"] not in ("locality", "profile"):
            what = f"{u['system']} {u['workload']}" if u.get("workload") else u["system"]
            L += ["", f"**{what}: not measured: {u['not_measured']}.**"]
    moves = lines_moves(runs)
    if moves:
        L += ["", "## Multi-handoff: every request routed on partitioned content (issue 12)", "",
              "The browse workloads. tcpha: the BE holding a keep-alive connection routes each later "
              "request with the cluster's rules and, when the request's group is on another BE, moves "
              "the live connection there (BE -> BE handoff, then REPOINT to the FE). HAProxy relays "
              "each request to the nginx of its group's BE. *Move latency* is each BE's own "
              "measurement, from the router saying move to COMMIT queued (it includes waiting for the "
              "previous response to be acknowledged; control frames are written at the end of the "
              "agent's event-loop round, proto::WriteBatch), over warm-up and measured run on BE "
              "agents started for that run (the median over rounds); **browse-part-1 is the move latency one at a time** "
              "(one connection: one move in flight in the whole bed), browse-part the latency under "
              "load. *BE CPU* is every process in the BE namespaces (tcpha agents, or nginx), per "
              "request; *FE CPU* the balancer process's; *bed CPU* everything, the client (wrk) included: "
              "with every process on the same vCPUs, throughput goes as its inverse. *Refused*: REPOINTs the "
              "FE refused. browse-all is the baseline: the same visits with every file on every BE "
              "(one rule over all BEs), so no request is routed elsewhere.", "",
              *moves]
    fo = report_failover.lines(results, meta, WORKLOAD_TEXT)
    if fo:
        L += ["", *fo]
    va = report_variants.lines(results.get("variants"), WORKLOAD_TEXT)
    if va:
        L += ["", *va]
    L += ["", "## Handoff latency (tcpha)", "",
          "*To the BE serving*: request complete at the FE to the BE serving it (the BE's "
          "takeover_latency: the FE's timestamp travels in HANDOFF; one host, one clock; worst BE). "
          "With the lease protocol the BE serves from its import on, so that is the client's wait; "
          "tcpha-base (an older binary, when measured) serves only at COMMIT and has no such "
          "histogram. *To COMMIT*: request complete to COMMIT queued, on the FE, and its parts: "
          "FORWARD map update + TCP_REPAIR export + HANDOFF queued; the control round trip "
          "(frames are written at the end of the worker's event-loop round, proto::WriteBatch) "
          "to READY, which the BE sends after its import and first response; COMMIT. BE import "
          "is the BE's own measurement (max over BEs). Every daemon starts afresh for each run, so a histogram "
          "covers one run (warm-up and measured time); each figure is the median over rounds. "
          "*BPF ns/pkt* is the tc program's mean run time per packet in situ (kernel BPF statistics).", "",
          *lines_handoff(runs),
          "", "## Where a connection's CPU goes", "",
          *lines_profiles(results),
          "", "## Locality: LARD against round-robin", "",
          f"Each BE has `cache_mb = {meta['cache_mb']}`; the working set is "
          f"{files['loc']['files']} files of {files['loc']['file_bytes'] // 1024} KB "
          f"({files['loc']['bytes'] / 2**20:.0f} MB: twice one BE's cache, two thirds of all three), "
          f"requested uniformly, new connection per request, after {meta['locality_warmup_s']} s "
          "of warm-up on fresh agents (the two policies take turns, like the systems). The files stay in the kernel's page cache either way "
          f"({mach['memory_gb']} GB of RAM), so a miss costs a read() into the agent's cache, not a "
          "disk access: the hit rate is what carries over to BEs whose content does not fit in "
          "memory; the throughput difference here is small.", "",
          *lines_locality(results, runs),
          "", "## Microbenchmarks", "",
          "Google Benchmark (bench/micro/), run first, before the daemons start. Debian's "
          "libbenchmark is built without optimisation (it says so); the code measured is ours, "
          "built as the project builds."
          + (f" This run's filter: `{meta['micro_filter']}`." if meta.get("micro_filter") else ""), "",
          *lines_micro(results),
          "", "## Scaling beyond this machine (a model)", "",
          *lines_model(results),
          "", "## Plots", ""]
    captions = {"throughput_vs_size.png": "Throughput against response size (keep-alive)",
                "fe_cpu_per_gb.png": "FE CPU seconds per GB served",
                "latency_cdf.png": "Latency CDF (wrk percentiles)"}
    for p in plots:
        if p.startswith("failover_"):  # shown in the failover section
            continue
        L.append(f"![{captions.get(p, p)}](bench/{p})")
        L.append("")
    if not plots:
        L += ["No plots (matplotlib missing).", ""]
    L += ["## Caveats", "",
          "- One VM, 2 vCPUs: the client and every server compete for the same CPUs, and a "
          "cross-vCPU wakeup costs tens of microseconds here (docs/design.md). Absolute numbers "
          "say little about separate hosts; the ratios and the FE costs are the point.",
          "- The kernel's per-packet receive work (softirq) runs in the context of whichever "
          "process sent the packet, so the FE CPU column does not include the datapath's "
          "forwarding of client ACKs (the BPF column and the model account for it) and HAProxy's "
          "column includes some receive work for its peers' packets.",
          "- Handoff and move latency histograms cover one run each (warm-up and measured "
          "time): the daemons start afresh for every attempt of every round.",
          "- The BE agents run with SIGPIPE ignored: the built-in server's sendfile() into a "
          "connection the client has closed raised SIGPIPE and ended the agent when wrk stopped "
          "mid-transfer. With the agent ignoring SIGPIPE itself this is a no-op.",
          "- With a new connection per request, HAProxy passes the client's `Connection: close` "
          "on to nginx, so its server-side connections are reused only in part (its default "
          "behaviour, left as it is).",
          ""]
    return "\n".join(L)

