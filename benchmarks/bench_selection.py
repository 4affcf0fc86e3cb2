"""Benchmark the model-selection pieces: k-medoids (PAM) against the `kmedoids` package, presence refinement, NMF.

    python benchmarks/bench_selection.py [--quick]

- kmedoids: lava's numpy PAM (BUILD + best-improvement SWAP) vs ``kmedoids.fasterpam(init="build")`` on the
  cosine distances of R*M modules (R noisy runs of M planted modules): time and total-distance ratio (lava / fasterpam;
  <= 1 means lava's clustering is at least as good).
- refine: :func:`lava.core.refine_presence` on planted C: time, peak RSS, and how close the module-weighted fraction
  of overestimated pairs is to tau.
- nmf: overestimation ratio of :func:`lava.core.fit_nmf` (KL) against :func:`lava.core.fit_amf` on the same C.

Writes benchmarks/out/selection.json and selection.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def planted(n_loc, n_features, n_modules, *, density=0.1, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    n_pairs = n_features * (n_features - 1) // 2
    modules = (rng.random((n_modules, n_pairs)) < density) * rng.uniform(0.5, 1.0, (n_modules, n_pairs))
    presence = np.zeros((n_loc, n_modules))
    for i in range(n_loc):
        ks = rng.choice(n_modules, rng.integers(1, 3), replace=False)
        presence[i, ks] = rng.uniform(0.6, 1.0, ks.size)
    clean = np.max(presence[:, :, None] * modules[None], axis=1)
    C = np.clip(clean + rng.normal(0, noise, clean.shape) * (clean > 0), 0, 1)
    return C.astype(np.float32), modules.astype(np.float32), presence.astype(np.float32)


def bench_kmedoids(sizes):
    import kmedoids as kmedoids_pkg

    from lava.core.selection import cosine_distances, kmedoids

    rows = []
    for n_runs, n_modules, n_pairs in sizes:
        rng = np.random.default_rng(0)
        base = (rng.random((n_modules, n_pairs)) < 0.1) * rng.random((n_modules, n_pairs))
        runs = [np.clip(base + rng.normal(0, 0.05, base.shape) * (base > 0), 0, 1) for _ in range(n_runs)]
        D = cosine_distances(np.concatenate(runs))
        t = time.perf_counter()
        medoids, _ = kmedoids(D, n_modules)
        t_lava = time.perf_counter() - t
        cost_lava = D[:, medoids].min(axis=1).sum()
        t = time.perf_counter()
        ref = kmedoids_pkg.fasterpam(D, n_modules, init="build", random_state=0, n_cpu=1)
        t_ref = time.perf_counter() - t
        rows.append(
            {
                "points": n_runs * n_modules,
                "clusters": n_modules,
                "lava_s": t_lava,
                "fasterpam_s": t_ref,
                "time_ratio": t_lava / t_ref,
                "cost_ratio": float(cost_lava / ref.loss),
            }
        )
    return rows


def bench_refine(sizes, taus=(0.1,)):
    import torch

    from lava.core import refine_presence

    rows = []
    for n_loc, n_features, n_modules in sizes:
        C, modules, _ = planted(n_loc, n_features, n_modules)
        start = np.random.default_rng(1).random((n_loc, n_modules)).astype(np.float32)
        for tau in taus:
            t = time.perf_counter()
            out = refine_presence(C, modules, start, tau=tau, device="cpu")
            seconds = time.perf_counter() - t
            pres = torch.as_tensor(out)
            full = pres[:, :, None] * torch.as_tensor(modules)[None]
            chat, arg = full.max(dim=1)
            weight = torch.as_tensor(modules)[arg, torch.arange(modules.shape[1])] * (chat > 0)
            over = (chat.numpy() - C) > 0
            fraction = (weight.numpy() * over).sum(1) / weight.numpy().sum(1)
            rows.append(
                {
                    "l": n_loc,
                    "P": C.shape[1],
                    "M": n_modules,
                    "tau": tau,
                    "seconds": seconds,
                    "mean_abs_fraction_minus_tau": float(np.abs(fraction - tau).mean()),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
    return rows


def bench_nmf(size, seeds):
    from lava.core import fit_amf, fit_nmf

    C, _, _ = planted(*size)
    rows = []
    for seed in seeds:
        t = time.perf_counter()
        nmf = fit_nmf(C, size[2], rng=seed)
        t_nmf = time.perf_counter() - t
        t = time.perf_counter()
        amf = fit_amf(C, size[2], rng=seed, max_epochs=500, device="cpu")
        t_amf = time.perf_counter() - t
        rows.append(
            {
                "seed": seed,
                "nmf_overestimation": nmf.overestimation_ratio,
                "amf_overestimation": amf.overestimation_ratio,
                "nmf_similarity": nmf.similarity,
                "amf_similarity": amf.similarity,
                "nmf_s": t_nmf,
                "amf_s": t_amf,
            }
        )
    return rows


def table(rows):
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    args = parser.parse_args()
    km_sizes = [(10, 9, 5000), (10, 15, 5000)] + ([] if args.quick else [(10, 40, 2000)])
    refine_sizes = [(100, 60, 6)] + ([] if args.quick else [(280, 300, 9)])
    results = {
        "kmedoids": bench_kmedoids(km_sizes),
        "refine": bench_refine(refine_sizes),
        "nmf": bench_nmf((100, 40, 4), seeds=[0] if args.quick else [0, 1, 2]),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "selection.json").write_text(json.dumps(results, indent=1))
    md = "\n\n".join(f"## {name}\n\n{table(rows)}" for name, rows in results.items())
    (OUT / "selection.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
