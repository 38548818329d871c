#!/usr/bin/env python3
"""Generates the benchmark's file sets, deterministically, and their request lists.

  gen_files.py DIR [--mix-files N] [--loc-files N] [--loc-kb K] [--browse-pages N] [--seed S]

DIR/mix/: a web-like file set in the manner of SURGE (Barford and Crovella, 1998):
sizes from a lognormal body (mu 9.357, sigma 1.318) with a Pareto tail (k 133 KB,
alpha 1.1, 7% of files; capped at 10 MB here to bound the disk and the run time),
popularity Zipf (exponent 1) over a random permutation, so that size and popularity
are independent. About 55% of the files are images (.jpg, .png, .gif), the rest
pages, style sheets and scripts: the rules send the two kinds to different groups.
DIR/loc/: the locality working set, N files of K KiB each, requested uniformly.
DIR/browse/: partitioned web pages (the multi-handoff workload): pages/ (HTML,
16-24 KB), img/ (.jpg/.png/.gif, 5-50 KB) and assets/ (.js/.css, 10-100 KB), sizes
log-uniform; bench/run.sh puts each of the three directories on one BE only. Each page
uses 8 images (mostly its own, some shared) and 3 of the site's assets.

Writes DIR/mix.paths and DIR/loc.paths ("path weight" lines for bench/wrk/bench.lua),
DIR/browse.visits (one page visit a line: the page, its images, its assets, in the
order a browser asks for them) and prints a JSON summary. The same seed gives
byte-identical files.
"""
import argparse
import json
import os
import random

BLOCK = 4096


def body(name, size):
    """Deterministic contents: a 4 KiB block naming the file, repeated."""
    line = f"{name} tcpha bench\n".encode()
    block = (line * (BLOCK // len(line) + 1))[:BLOCK]
    full, rest = divmod(size, BLOCK)
    return block * full + block[:rest]


def surge_size(rng):
    if rng.random() < 0.07:
        # Pareto tail by inversion, capped.
        return min(int(133_000 / (1.0 - rng.random()) ** (1 / 1.1)), 10 * 1024 * 1024)
    return max(64, min(int(rng.lognormvariate(9.357, 1.318)), 133_000))


def write(root, rel, size):
    path = os.path.join(root, rel)
    # Files already there with the right size came from an earlier run with the same
    # seed (contents depend on name and size only).
    if not (os.path.exists(path) and os.path.getsize(path) == size):
        with open(path, "wb") as f:
            f.write(body(rel, size))


def log_uniform(rng, lo, hi):
    return int(lo * (hi / lo) ** rng.random())


def browse(root, n_pages, seed):
    """The partitioned site: files under root/browse/, visits in root/browse.visits.
    A random stream of its own, so the mix and loc sets do not change with it."""
    rng = random.Random(seed * 31 + 12)
    for d in ("pages", "img", "assets"):
        os.makedirs(os.path.join(root, "browse", d), exist_ok=True)
    pages = [(f"browse/pages/p{i:04d}.html", log_uniform(rng, 16_000, 24_000)) for i in range(n_pages)]
    n_img, n_assets = n_pages * 4, max(6, n_pages // 4)
    images = [(f"browse/img/i{i:05d}.{rng.choice(('jpg', 'jpg', 'png', 'gif'))}", log_uniform(rng, 5_000, 50_000))
              for i in range(n_img)]
    assets = [(f"browse/assets/a{i:04d}.{'js' if i % 2 else 'css'}", log_uniform(rng, 10_000, 100_000))
              for i in range(n_assets)]
    for rel, size in pages + images + assets:
        write(root, rel, size)
    size = dict(pages + images + assets)
    visits = []
    with open(os.path.join(root, "browse.visits"), "w") as out:
        for i, (page, _) in enumerate(pages):
            # 4 images of its own, 4 from anywhere (logos, shared pictures); 3 assets.
            own = [images[i * 4 + j][0] for j in range(4)]
            shared = [images[rng.randrange(n_img)][0] for _ in range(4)]
            css_js = [assets[j][0] for j in rng.sample(range(n_assets), 3)]
            visit = [page] + own + shared + css_js
            visits.append(visit)
            out.write(" ".join("/" + rel for rel in visit) + "\n")
    per_visit = [sum(size[rel] for rel in v) for v in visits]
    return {
        "pages": len(pages), "images": len(images), "assets": len(assets),
        "requests_per_visit": len(visits[0]),
        "images_per_visit": 8, "assets_per_visit": 3,
        "bytes": sum(size.values()),
        "mean_visit_bytes": round(sum(per_visit) / len(per_visit)),
        "mean_response_bytes": round(sum(per_visit) / len(per_visit) / len(visits[0])),
        "page_bytes": [min(s for _, s in pages), max(s for _, s in pages)],
        "image_bytes": [min(s for _, s in images), max(s for _, s in images)],
        "asset_bytes": [min(s for _, s in assets), max(s for _, s in assets)],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--mix-files", type=int, default=2000)
    ap.add_argument("--loc-files", type=int, default=256)
    ap.add_argument("--loc-kb", type=int, default=64)
    ap.add_argument("--browse-pages", type=int, default=50)
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.dir, "mix"), exist_ok=True)
    os.makedirs(os.path.join(a.dir, "loc"), exist_ok=True)

    kinds = [("jpg", 0.30), ("png", 0.15), ("gif", 0.10), ("html", 0.25), ("css", 0.10), ("js", 0.10)]
    files = []
    for i in range(a.mix_files):
        u, ext = rng.random(), kinds[-1][0]
        for k, p in kinds:
            if u < p:
                ext = k
                break
            u -= p
        files.append((f"mix/f{i:05d}.{ext}", surge_size(rng)))
    ranks = list(range(1, a.mix_files + 1))
    rng.shuffle(ranks)
    harmonic = sum(1.0 / r for r in ranks)
    images = ("jpg", "png", "gif")
    with open(os.path.join(a.dir, "mix.paths"), "w") as out:
        for (rel, size), rank in zip(files, ranks):
            write(a.dir, rel, size)
            out.write(f"/{rel} {1.0 / rank / harmonic:.9g}\n")

    loc_size = a.loc_kb * 1024
    with open(os.path.join(a.dir, "loc.paths"), "w") as out:
        for i in range(a.loc_files):
            rel = f"loc/l{i:05d}.bin"
            write(a.dir, rel, loc_size)
            out.write(f"/{rel} 1\n")

    sizes = sorted(s for _, s in files)
    weight = {rel: 1.0 / rank / harmonic for (rel, _), rank in zip(files, ranks)}
    print(json.dumps({
        "seed": a.seed,
        "mix": {
            "files": len(files),
            "bytes": sum(sizes),
            "median_bytes": sizes[len(sizes) // 2],
            "max_bytes": sizes[-1],
            "image_files": sum(rel.endswith(images) for rel, _ in files),
            "image_request_share": round(sum(w for r, w in weight.items() if r.endswith(images)), 4),
            # Expected bytes per request under the Zipf popularity.
            "mean_response_bytes": round(sum(weight[rel] * s for rel, s in files)),
        },
        "loc": {"files": a.loc_files, "file_bytes": loc_size, "bytes": a.loc_files * loc_size},
        "browse": browse(a.dir, a.browse_pages, a.seed),
    }))


if __name__ == "__main__":
    main()
