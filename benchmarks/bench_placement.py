"""Benchmark step 1 (probe placement) against the straightforward approach, measured in the same run.

Reference ("straightforward"): the same neighbourhood centrality, then DIRECT over (alpha, beta) in [-2d, 2d]^2 where
every evaluation fits a full scikit-learn ``KMeans(n_clusters=l, n_init=1, random_state=seed)`` with
``sample_weight=w`` (k-means++ on all samples, Lloyd to convergence), with the same budget ``maxfun``.

Data: 2-D mixture of Gaussian blobs of varied size and spread (no dependency on lava.datasets); n = 500, o = 3.
Each measurement runs in a fresh subprocess so that peak memory (max RSS) is its own.

    python benchmarks/bench_placement.py                       # 50k (maxfun 50) and 225k (maxfun 10)
    python benchmarks/bench_placement.py --sizes 50000 --maxfun 50

Writes ``benchmarks/out/placement.json`` and ``benchmarks/out/placement.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def blobs(E: int, d: int = 2, seed: int = 0, n_blobs: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-20, 20, size=(n_blobs, d))
    scales = rng.uniform(0.3, 3.0, size=n_blobs)
    props = rng.dirichlet(np.ones(n_blobs))
    labels = rng.choice(n_blobs, size=E, p=props)
    return centers[labels] + rng.normal(size=(E, d)) * scales[labels, None]


def run_lava(Z, n, o, maxfun, seed) -> dict:
    from lava.core.placement import place_localities

    t0 = time.perf_counter()
    res = place_localities(Z, n, o, maxfun=maxfun, rng=seed)
    total = time.perf_counter() - t0
    return {
        "seconds": total,
        "loss": res.loss,
        "loss_unoptimized": res.loss_unoptimized,
        "alpha": res.alpha,
        "beta": res.beta,
        "n_evaluations": res.n_evaluations,
        "kmeans_iterations_mean": float(res.kmeans_iterations.mean()),
    }


def run_reference(Z, n, o, maxfun, seed) -> dict:
    from scipy.optimize import direct
    from sklearn.cluster import KMeans

    from lava.core._neighbors import NeighborIndex
    from lava.core.placement import _centrality, n_localities, sample_weights

    t0 = time.perf_counter()
    E, d = Z.shape
    n_loc = n_localities(E, n, o)
    index = NeighborIndex(Z)
    in_degree, dbar = _centrality(index, Z, n)
    t_centrality = time.perf_counter() - t0
    evals = []

    def objective(x):
        w = sample_weights(in_degree, dbar, x[0], x[1])
        km = KMeans(n_clusters=n_loc, n_init=1, random_state=seed).fit(Z, sample_weight=w)
        _, idx = index.query(km.cluster_centers_, n)
        in_loc = np.bincount(idx.ravel(), minlength=E)
        loss = float(np.abs(in_degree / E - in_loc / n_loc).sum())
        evals.append((float(x[0]), float(x[1]), loss, int(km.n_iter_)))
        return loss

    direct(objective, [(-2.0 * d, 2.0 * d)] * 2, maxfun=maxfun)
    total = time.perf_counter() - t0
    ev = np.array(evals)
    best = int(np.argmin(ev[:, 2]))
    return {
        "seconds": total,
        "seconds_centrality": t_centrality,
        "loss": float(ev[best, 2]),
        "loss_unoptimized": float(ev[0, 2]),
        "alpha": float(ev[best, 0]),
        "beta": float(ev[best, 1]),
        "n_evaluations": len(ev),
        "kmeans_iterations_mean": float(ev[:, 3].mean()),
    }


def run_centrality(Z, n, o, maxfun, seed) -> dict:
    from lava.core.placement import neighborhood_centrality

    t0 = time.perf_counter()
    neighborhood_centrality(Z, n)
    return {"seconds": time.perf_counter() - t0}


def worker(spec: dict) -> None:
    Z = blobs(spec["E"], seed=spec["data_seed"])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = {"lava": run_lava, "reference": run_reference, "centrality": run_centrality}[spec["method"]]
    out = fn(Z, spec["n"], spec["o"], spec["maxfun"], spec["seed"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(peak_rss_mib=peak / 1024, peak_rss_above_data_mib=(peak - base) / 1024)
    print(json.dumps(out))


def measure(method: str, **spec) -> dict:
    spec = {"method": method, **spec}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, check=True
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {method:>10}: {json.dumps(result)}", flush=True)
    return {**spec, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 225_000])
    parser.add_argument("--maxfun", type=int, default=50, help="budget for sizes below 100k")
    parser.add_argument("--maxfun-large", type=int, default=10, help="budget for sizes of 100k and more")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--overlap", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    rows = []
    for E in args.sizes:
        maxfun = args.maxfun if E < 100_000 else args.maxfun_large
        spec = {"E": E, "n": args.n, "o": args.overlap, "maxfun": maxfun, "seed": args.seed, "data_seed": 0}
        print(f"E={E}, n={args.n}, o={args.overlap}, maxfun={maxfun}", flush=True)
        row = {"E": E, "maxfun": maxfun, "centrality": measure("centrality", **spec), "lava": measure("lava", **spec)}
        if not args.no_reference:
            row["reference"] = measure("reference", **spec)
        rows.append(row)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "placement.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| E | l | maxfun | method | time (s) | speed-up | loss | loss vs ref | loss at alpha=beta=0 | "
        "Lloyd its/eval | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n_loc = round(row["E"] * args.overlap / args.n)
        ref = row.get("reference")
        for method in ("lava", "reference"):
            if method not in row:
                continue
            r = row[method]
            speed = f"{ref['seconds'] / r['seconds']:.1f}x" if ref else "-"
            vs = f"{100 * (r['loss'] / ref['loss'] - 1):+.1f}%" if ref else "-"
            lines.append(
                f"| {row['E']} | {n_loc} | {row['maxfun']} | {method} | {r['seconds']:.1f} | {speed} | "
                f"{r['loss']:.2f} | {vs} | {r['loss_unoptimized']:.2f} | {r['kmeans_iterations_mean']:.1f} | "
                f"{r['peak_rss_mib']:.0f} |"
            )
        lines.append(
            f"| {row['E']} | {n_loc} | | centrality kNN only | {row['centrality']['seconds']:.1f} | | | | | | "
            f"{row['centrality']['peak_rss_mib']:.0f} |"
        )
    (OUT / "placement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
