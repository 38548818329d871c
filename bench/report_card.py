#!/usr/bin/env python3
"""CARD against FE + 3 BEs (bench/card.sh, issue 16): the "CARD against a front-end"
section of docs/BENCHMARKS.md, from card.json.

  report_card.py CARD_JSON BENCHMARKS_MD

Measured: requests/s and the CPU time per request of the tcpha processes (the FE, the
servers) and of the whole machine, median over the rounds; the per-round ratio CARD /
FE (the two systems take turns in each round, so the ratio is taken within a round).
Modelled (and labelled so): throughput against the number of servers, each with one
CPU of its own, from the measured per-request costs:
  FE + N BEs:  X(N) = min(1 / c_fe, N / c_be)   (the one FE saturates at 1 / c_fe)
  CARD, N:     X(N) = N / c_node                (every node distributes and serves)
"""
import json
import statistics
import sys

from report_splice import splice

BEGIN = "<!-- card:begin -->"
END = "<!-- card:end -->"
NODES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]


def per_round(runs):
    out = {}
    for r in runs:
        w = r["wrk"]
        reqs = w["requests"]
        secs = w["duration_us"] / 1e6
        if reqs <= 0 or secs <= 0:
            continue
        # The CPU was read around the whole wrk run (its duration plus process start
        # and exit): scaled to wrk's own duration, per request.
        scale = secs / r["wall_s"] if r["wall_s"] > 0 else 1.0
        out.setdefault(r["system"], {})[r["round"]] = {
            "rps": reqs / secs,
            "errors": sum(w["errors"].values()),
            "fe_us": r["fe_cpu_s"] * scale / reqs * 1e6,
            "srv_us": r["servers_cpu_s"] * scale / reqs * 1e6,
            "machine_us": r["machine_busy_s"] * scale / reqs * 1e6,
            # Over the measured run only (the counters before it are subtracted).
            "moved": sum((s.get("moved_out") or 0) for s in r["servers"])
            - sum((s.get("moved_out") or 0) for s in r.get("servers_before", [])),
            "accepted": [(s.get("accepted") or 0) - (b.get("accepted") or 0)
                         for s, b in zip(r["servers"], r.get("servers_before", [{}] * 3))],
            "reqs": reqs,
        }
    return out


def med(rounds, key):
    return statistics.median(v[key] for v in rounds.values())


def main():
    data = json.load(open(sys.argv[1]))
    rounds = per_round(data["runs"])
    fe, card = rounds.get("fe", {}), rounds.get("card", {})
    lines = [BEGIN, "## CARD against a front-end (issue 16)", ""]
    if not fe or not card:
        lines += ["Not measured: bench/card.sh produced no complete run of both layouts.", END]
        splice(sys.argv[2], lines, BEGIN, END)
        return
    common = sorted(set(fe) & set(card))
    ratios = [card[r]["rps"] / fe[r]["rps"] for r in common]
    lines += [
        f"`bash bench/card.sh` (run by `make bench` after the rest; git {data['git']}): the web-like",
        f"mix with a new connection per request and the images rule, {data['conns']} connections,",
        f"{data['rounds']} rounds of {data['duration_s']} s, the two layouts taking turns. **fe**: `tcpha fe`",
        "plus three `tcpha be`. **card**: three `tcpha node` and no front-end; the FE's",
        "namespace is a router spreading the VIP over the nodes by ECMP (L4 hash). Same",
        "servers, groups, rules and files. Everything shares this machine's 2 CPUs, so",
        "throughput here is what the whole bed manages, not what one more server would add:",
        "the model below is for that.",
        "",
        "| layout | requests/s | errors | FE CPU/request | servers CPU/request | machine CPU/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rs in (("fe: FE + 3 BEs", fe), ("card: 3 nodes", card)):
        lines.append(
            f"| {name} | {med(rs, 'rps'):.0f} | {sum(v['errors'] for v in rs.values())} | "
            f"{med(rs, 'fe_us'):.1f} µs | {med(rs, 'srv_us'):.1f} µs | {med(rs, 'machine_us'):.1f} µs |")
    moved = statistics.median(card[r]["moved"] / card[r]["reqs"] for r in card)
    spread = card[common[-1]]["accepted"] if common else []
    lines += [
        "",
        f"CARD / FE throughput, per round: median **{statistics.median(ratios):.3f}x** "
        f"[{min(ratios):.3f}–{max(ratios):.3f}]. In CARD {moved:.0%} of the connections moved",
        f"from the node they entered at to their owner (the rest were served where they",
        f"entered, with no handoff); connections received per node in the last round's",
        f"measured run: {spread}.",
        "CPU per request: schedstat of the tcpha processes over the run (the kernel's",
        "packet work runs partly in softirq and is then charged to whatever process or",
        "ksoftirqd was running: the machine column has all of it, wrk's own included).",
        "",
        "### Scaling with the number of servers (a model, not a measurement)",
        "",
    ]
    c_fe = med(fe, "fe_us") / 1e6
    c_be = med(fe, "srv_us") / 1e6 / 1.0
    c_node = med(card, "srv_us") / 1e6
    knee = c_be / c_fe if c_fe > 0 else float("inf")
    lines += [
        "Each server (BE or node) and the FE with one CPU of its own, each spending the",
        "per-request CPU measured above (the servers' figure is the sum over the three, so",
        f"it is per request wherever it ran): c_fe = {c_fe * 1e6:.1f} µs, c_be = {c_be * 1e6:.1f} µs,",
        f"c_node = {c_node * 1e6:.1f} µs. FE + N BEs: X(N) = min(1/c_fe, N/c_be); CARD:",
        f"X(N) = N/c_node. The FE saturates at N = c_be/c_fe = **{knee:.1f}** servers",
        "(seed 001's remark that one dispatcher does not scale far beyond four nodes, for",
        "realistic loads); CARD has no such bound until the routers' ECMP or the shared",
        "segment does. Links, the routers and the client side are not in the model.",
        "",
        "| servers N | FE + N BEs, requests/s | CARD, N nodes, requests/s | CARD / FE |",
        "|---:|---:|---:|---:|",
    ]
    for n in NODES:
        x_fe = min(1 / c_fe if c_fe > 0 else float("inf"), n / c_be)
        x_card = n / c_node
        lines.append(f"| {n} | {x_fe:,.0f} | {x_card:,.0f} | {x_card / x_fe:.2f}x |")
    lines.append(END)
    splice(sys.argv[2], lines, BEGIN, END)
    print(f"card: {statistics.median(ratios):.3f}x fe; FE knee at {knee:.1f} servers")


if __name__ == "__main__":
    main()
