"""tcpha's forwarding variants against tcpha itself (issue 15): tcpha-tunnel (forward =
"tunnel": every client packet encapsulated in IPIP by the FE and decapsulated by the
BE's own tc program) and tcpha-ipv6 (the same cluster, the client over the IPv6 VIP),
each against tcpha (DR, IPv4) in the same rounds; and direct-ipv6 (be1's nginx to the
client over IPv6, no balancer) against direct over IPv4: the kernel's own IPv6 cost on
the same bed, a reference without a goal. Written into docs/BENCHMARKS.md by a full run,
or spliced into it by BENCH_VARIANTS=only (report.py --variants-only)."""
import report_splice

# variant -> (what it is, the system it is compared with, judged against GOAL)
VARIANTS = {
    "tcpha-tunnel": ("forward = \"tunnel\" (IPIP) against DR", "tcpha", True),
    "tcpha-ipv6": ("IPv6 clients (the IPv6 VIP) against IPv4 clients", "tcpha", True),
    "direct-ipv6": ("nginx over IPv6 against nginx over IPv4, no balancer", "direct", False),
}
# name -> (path in a derived run, label, better when)
FIGURES = {
    "requests_per_s": (("requests_per_s",), "requests/s", "higher"),
    "mb_per_s": (("mb_per_s",), "MB/s", "higher"),
    "fe_cpu_s_per_gb": (("fe_cpu_s_per_gb",), "FE CPU per GB", "lower"),
    "bed_cpu_s_per_gb": (("bed_cpu_s_per_gb",), "bed CPU per GB", "lower"),
}
GOAL = 0.9  # issue 15: tunnel >= 0.9x DR, IPv6 >= 0.9x IPv4 (throughput)
BEGIN = "<!-- BEGIN variants (bench/report_variants.py) -->"
END = "<!-- END variants -->"


def results(runs, q, round_ratio):
    out = {}
    for v, (_, ref, judged) in VARIANTS.items():
        for (s, w), a in sorted(runs.items()):
            b = runs.get((ref, w))
            if s != v or not b:
                continue
            e = {"ratios": {}}
            for key, (path, _, _) in FIGURES.items():
                x = round_ratio(a, b, path, q)
                if x:
                    e["ratios"][key] = {"median": x["median"], "min": x["min"], "max": x["max"],
                                        "per_round": [p["ratio"] for p in x["rounds"]],
                                        "disturbed": x["disturbed"]}
            thr = e["ratios"].get("requests_per_s", {}).get("median")
            e["met"] = None if thr is None or not judged else thr >= GOAL
            e["ref"] = ref
            out.setdefault(v, {})[w] = e
    return out or None


def _cell(r):
    if not r:
        return "–"
    rng = f" [{r['min']:.3f}–{r['max']:.3f}]" if len(r.get("per_round") or []) > 1 else ""
    return f"{r['median']:.3f}x{rng}{' †' if r.get('disturbed') else ''}"


def lines(res, wtext):
    if not res:
        return []
    L = [BEGIN, "## Tunnel and IPv6 against DR over IPv4", "",
         "Each variant against tcpha (DR, IPv4 clients) in the same rounds, on the same bed: "
         "the median of the per-round ratios variant / tcpha, with their range; † = a round "
         "other load disturbed. **tcpha-tunnel** is the cluster with `forward = \"tunnel\"`: the FE "
         "encapsulates every client packet in IPIP toward the BE (next hop from bpf_fib_lookup) and "
         "the BE decapsulates it in its own tc program; its VIP listeners advertise an MSS 20 bytes "
         "smaller. On this bed the BEs share the FE's segment, so the tunnel's cost is measured "
         "without a router hop (tests/netns/tunnel_test.sh runs it through one). **tcpha-ipv6** is "
         "the same cluster as tcpha with `vip6`, the client fetching from the IPv6 VIP. Goal (issue "
         f"15): throughput >= {GOAL}x. **direct-ipv6** is the reference for IPv6: be1's nginx "
         "serving the client over IPv6 against the same over IPv4 (the system *direct*), no "
         "balancer: what IPv6 costs the kernel on this bed, without a goal.", "",
         "| variant | against | workload | requests/s | MB/s | FE CPU per GB | bed CPU per GB | goal met |",
         "|---|---|---|---:|---:|---:|---:|---|"]
    for v, per in res.items():
        for w, e in per.items():
            r = e["ratios"]
            met = "–" if e["met"] is None else ("yes" if e["met"] else "**no**")
            L.append(f"| {v} | {e['ref']} | {w} ({wtext.get(w, w)}) | {_cell(r.get('requests_per_s'))} | "
                     f"{_cell(r.get('mb_per_s'))} | {_cell(r.get('fe_cpu_s_per_gb'))} | "
                     f"{_cell(r.get('bed_cpu_s_per_gb'))} | {met} |")
    L.append(END)
    return L


def splice(doc_path, section):
    """The variants section of an existing BENCHMARKS.md, for BENCH_VARIANTS=only."""
    report_splice.splice(doc_path, section, BEGIN, END)
