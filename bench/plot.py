#!/usr/bin/env python3
"""The benchmark's plots from results.json (bench/report.py runs this).

  plot.py results.json OUTDIR    -> prints the names of the PNGs it wrote

throughput_vs_size.png  MB/s and requests/s against response size (keep-alive), per system
                        (medians over rounds, bars: the rounds' range)
fe_cpu_per_gb.png       FE CPU seconds per GB served, per balancer and workload
latency_cdf.png         latency CDF from wrk's percentiles, per system: one connection,
                        32 connections (1 KB, new connection per request), mix, 1 MB
failover_timeline.png   BE failover (issue 13): requests per second in 100 ms buckets, with a
                        BE killed and without, the kill, detection and recovery marked
failover_latency_cdf.png  response-time CDF and its tail, with and without the failure

  plot.py results.json OUTDIR --only failover   -> the failover plots only
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

SIZES = [("ka-1k", 1024), ("ka-10k", 10240), ("ka-100k", 102400), ("ka-1m", 1 << 20), ("ka-10m", 10 << 20)]
STYLE = {"tcpha": ("tab:blue", "o"), "tcpha-relay": ("tab:cyan", "s"), "tcpha-relay-unix": ("tab:green", "v"),
         "haproxy": ("tab:red", "^"), "direct": ("tab:gray", "D")}
DPI = 90


def by_key(results):
    return {(r["system"], r["workload"]): r for r in results["runs"]}


def spread(pts, key, ys):
    """The min-max range over rounds as error bars (results.json's spread), or None."""
    lo, hi = [], []
    for (_, r), y in zip(pts, ys):
        a, b = (r.get("spread") or {}).get(key) or (y, y)
        lo.append(max(y - a, 0))
        hi.append(max(b - y, 0))
    return [lo, hi] if any(lo) or any(hi) else None


def throughput_vs_size(runs, out):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for system, (color, marker) in STYLE.items():
        pts = [(size, runs[(system, w)]) for w, size in SIZES if (system, w) in runs]
        if not pts:
            continue
        xs = [s for s, _ in pts]
        label = system + (" (1 BE)" if system == "direct" else "")
        for ax, key in ((ax1, "mb_per_s"), (ax2, "requests_per_s")):
            ys = [r[key] for _, r in pts]
            ax.errorbar(xs, ys, yerr=spread(pts, key, ys), color=color, marker=marker, label=label, capsize=2)
    for ax, title in ((ax1, "MB/s"), (ax2, "requests/s")):
        ax.set_xscale("log")
        ax.set_xticks([s for _, s in SIZES], ["1K", "10K", "100K", "1M", "10M"])
        ax.set_xlabel("response size (keep-alive)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, "throughput_vs_size.png")


def fe_cpu_per_gb(runs, out):
    workloads = [w for w in ("ka-100k", "ka-1m", "ka-10m", "mix", "close-1k")
                 if any((s, w) in runs for s in ("tcpha", "haproxy"))]
    systems = [s for s in ("tcpha", "tcpha-relay", "tcpha-relay-unix", "haproxy")
               if any((s, w) in runs for w in workloads)]
    if not workloads or not systems:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(systems)
    for i, s in enumerate(systems):
        xs = [j + i * width for j in range(len(workloads))]
        ys = [runs[(s, w)].get("fe_cpu_s_per_gb") if (s, w) in runs else None for w in workloads]
        bars = ax.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None],
                      width, color=STYLE[s][0], label=s)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(workloads))], workloads)
    ax.set_yscale("log")
    ax.set_ylabel("FE CPU s per GB (log)")
    ax.set_title("Balancer CPU per GB of responses")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, "fe_cpu_per_gb.png")


def latency_cdf(runs, out):
    panels = [w for w in ("lat-1k", "close-1k", "mix", "ka-1m") if any((s, w) in runs for s in STYLE)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.3), squeeze=False)
    for ax, w in zip(axes[0], panels):
        for system, (color, marker) in STYLE.items():
            r = runs.get((system, w))
            if not r:
                continue
            pts = sorted((us / 1000, p) for p, us in r["latency_us"]["percentiles"])
            ax.plot([x for x, _ in pts], [p for _, p in pts], color=color, label=system)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("percentile")
        ax.set_title(w)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, "latency_cdf.png")


def failover_timeline(results, out):
    tl = (results.get("failover") or {}).get("timeline") or {}
    k, n = tl.get("kill"), tl.get("nofail")
    if not k or not n:
        return None
    fig, (ax, az) = plt.subplots(1, 2, figsize=(11, 3.7), gridspec_kw={"width_ratios": [3, 2]})
    t = k["kill_ms"] / 1000
    det = k.get("detection_ms")
    rec = k.get("recovery_ms") or 0
    for axis, key, width in ((ax, "series_100ms", 0.1), (az, "zoom", (k.get("bin_ms") or 10) / 1000)):
        for r, color, label in ((n, "tab:gray", "no failure"), (k, "tab:blue", f"{k['victim']} killed ({k['how']})")):
            pts = r.get(key) or []
            axis.plot([x + width / 2 for x, _ in pts], [y for _, y in pts], color=color, label=label,
                      lw=1.2 if key == "zoom" else 1.4, drawstyle="steps-mid")
        axis.axvline(t, color="tab:red", ls="--", lw=1, label=f"kill (t = {t:.2f} s)")
        if det is not None:
            d = t + det / 1000
            axis.axvspan(d, d + max(rec / 1000, 0.003), color="tab:orange", alpha=0.35,
                         label=f"detected +{det:.0f} ms, all taken over {rec:.0f} ms later")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.set_xlabel("time since the load started (s)")
    ax.set_ylabel("responses per s")
    ax.set_title(f"Per 100 ms ({k['conns']} keep-alive connections, mix)")
    az.set_title(f"Around the kill, per {k.get('bin_ms') or 10} ms")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save(fig, out, "failover_timeline.png")


def failover_latency_cdf(results, out):
    tl = (results.get("failover") or {}).get("timeline") or {}
    k, n = tl.get("kill"), tl.get("nofail")
    if not k or not n:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for r, color, label in ((n, "tab:gray", "no failure"), (k, "tab:blue", f"{k['victim']} killed")):
        pts = sorted((us / 1000, p) for p, us in r["latency_us"]["percentiles"])
        mx = r["latency_us"]["max"] / 1000
        xs, ps = [x for x, _ in pts] + [mx], [p for _, p in pts] + [100.0]
        ax1.plot(xs, ps, color=color, label=label)
        # The maximum at one request's share (nothing is slower than it).
        floor = 100 / max(r["requests"], 1)
        ax2.plot(xs, [max(100 - p, floor) for p in ps], color=color, label=label, marker=".", ms=3)
    ax1.set_xscale("log")
    ax1.set_xlabel("response time (ms, log)")
    ax1.set_ylabel("percentile")
    ax1.set_title("Response-time CDF")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("response time (ms, log)")
    ax2.set_ylabel("% of requests slower (log)")
    ax2.set_title("Tail (last point: the maximum)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out, "failover_latency_cdf.png")


def save(fig, out, name):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return name


def main():
    results = json.load(open(sys.argv[1]))
    runs = by_key(results)
    only = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--only" else None
    if only is None:
        for make in (throughput_vs_size, fe_cpu_per_gb, latency_cdf):
            name = make(runs, sys.argv[2])
            if name:
                print(name)
    for make in (failover_timeline, failover_latency_cdf):
        name = make(results, sys.argv[2])
        if name:
            print(name)


if __name__ == "__main__":
    main()
