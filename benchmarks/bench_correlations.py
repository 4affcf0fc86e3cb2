"""Benchmark of step 2, locality correlations (``lava.core.locality_correlations``).

Issue target: l = 1350 localities x n = 500 samples x D = 1000 features on sparse single-cell-like data, at most
3x the time of the bare float32 matrix products ``R.T @ R`` of the same shapes and batches, and at least 20x faster
than a per-locality ``scipy.stats.spearmanr`` loop (timed on a few localities and extrapolated). All in one run.

Run: ``python benchmarks/bench_correlations.py`` (``--quick`` for a small smoke run). Writes
``benchmarks/out/bench_correlations.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from scipy import sparse

from lava.core import locality_correlations
from lava.core.correlations import CPU_MEMORY_BUDGET, _auto_batch_size

OUT = Path(__file__).resolve().parent / "out"


def make_data(n_samples: int, n_features: int, kind: str, rng: np.random.Generator):
    """Samples x features float32 data.

    ``sparse``: CSR; each feature has its own zero fraction drawn from Beta(4, 1) (mean 0.8, as in single-cell
    counts), non-zero values log1p of Poisson counts (so non-zero ties occur too). ``dense``: Gaussian values,
    no ties, every feature survives the tie filter (the worst case: the full D x D product in every locality).
    ``counts``: :func:`lava.datasets.synthetic` with sparsity 0.7, as ``benchmarks/run.py`` makes the ``kpmp``
    size: about 70% zeros per feature, so most features survive the tie filter (about 56% of C is non-zero).
    """
    if kind == "dense":
        return rng.standard_normal((n_samples, n_features), dtype=np.float32)
    if kind == "counts":
        import lava

        adata = lava.datasets.synthetic(n_samples, n_features, 9, sparsity=0.7, rng=int(rng.integers(2**31)))
        return sparse.csr_matrix(adata.X, dtype=np.float32)
    zero_fraction = rng.beta(4.0, 1.0, size=n_features)
    cols, rows, vals = [], [], []
    for j, z in enumerate(zero_fraction):
        nnz = rng.binomial(n_samples, 1.0 - z)
        r = rng.choice(n_samples, size=nnz, replace=False)
        rows.append(r)
        cols.append(np.full(nnz, j, dtype=np.int32))
        vals.append(np.log1p(1 + rng.poisson(rng.gamma(1.0, 3.0), size=nnz)).astype(np.float32))
    X = sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_samples, n_features)
    )
    return X.tocsr()


def time_bare_products(n_loc: int, n: int, D: int, batch_size: int, rng) -> float:
    """Time the bare float32 batched products R^T R of the same shapes and batches (reference a)."""
    R = torch.from_numpy(rng.standard_normal((min(batch_size, n_loc), D, n), dtype=np.float32))
    start = time.perf_counter()
    for b0 in range(0, n_loc, batch_size):
        b = min(batch_size, n_loc - b0)
        torch.bmm(R[:b], R[:b].transpose(1, 2))
    return time.perf_counter() - start


def time_interleaved(X, indices, batch_size: int, n_rounds: int, device: str, rng) -> tuple[float, float]:
    """Time lava and the bare products on the same chunks of localities, alternating.

    On a shared machine the load drifts; alternating chunks exposes both timings to the same conditions.
    """
    t_lava = t_bare = 0.0
    n, D = indices.shape[1], X.shape[1]
    for chunk in np.array_split(np.arange(indices.shape[0]), n_rounds):
        start = time.perf_counter()
        C = locality_correlations(X, indices[chunk], device=device)
        t_lava += time.perf_counter() - start
        del C
        t_bare += time_bare_products(chunk.size, n, D, batch_size, rng)
    return t_lava, t_bare


def time_scipy_loop(X, indices, n_timed: int) -> float:
    """Per-locality scipy.stats.spearmanr, abs, tie filter (reference b); seconds per locality."""
    start = time.perf_counter()
    for k in range(n_timed):
        B = X[indices[k]]
        B = B.toarray() if sparse.issparse(B) else B
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = np.abs(scipy.stats.spearmanr(B).statistic)
        counts = [np.unique(B[:, j], return_counts=True)[1].max() for j in range(B.shape[1])]
        bad = np.asarray(counts) / B.shape[0] > 0.75
        r = np.nan_to_num(r)
        r[bad] = 0
        r[:, bad] = 0
        _ = r[np.triu_indices(B.shape[1], 1)]
    return (time.perf_counter() - start) / n_timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-localities", type=int, default=1350)
    parser.add_argument("--n-per-locality", type=int, default=500)
    parser.add_argument("--n-features", type=int, default=1000)
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--kinds", default="sparse,counts,dense")
    parser.add_argument("--scipy-localities", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="alternating chunks of lava and the bare products")
    parser.add_argument(
        "--dense-fraction", type=int, default=5, help="the dense worst case runs on l / this many localities"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.n_localities, args.n_per_locality, args.n_features, args.n_samples = 40, 200, 200, 5000

    n_loc, n, D, E = args.n_localities, args.n_per_locality, args.n_features, args.n_samples
    rng = np.random.default_rng(0)
    indices = np.stack([rng.choice(E, size=n, replace=False) for _ in range(n_loc)])
    dev = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    batch_size = _auto_batch_size(n, D, 4, dev)
    results = []
    for kind in args.kinds.split(","):
        X = make_data(E, D, kind, rng)
        idx = indices if kind != "dense" else indices[: max(1, n_loc // args.dense_fraction)]
        # one full call: its time and the peak memory (the output alone is 4 l P bytes)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        C = locality_correlations(X, idx, device=args.device)
        t_single = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        nonzero = float(np.count_nonzero(C) / C.size)
        output_gib = C.nbytes / 2**30
        del C
        t_lava, t_bare = time_interleaved(X, idx, batch_size, args.rounds, args.device, rng)
        t_scipy = time_scipy_loop(X, idx, args.scipy_localities) * idx.shape[0]
        row = {
            "data": kind,
            "localities": int(idx.shape[0]),
            "n": n,
            "features": D,
            "samples": E,
            "batch_size": batch_size,
            "nonzero_fraction_of_correlations": nonzero,
            "seconds_lava_single_call": t_single,
            "seconds_lava": t_lava,
            "seconds_bare_products": t_bare,
            "seconds_scipy_loop_extrapolated": t_scipy,
            "ratio_to_bare_products": t_lava / t_bare,
            "speedup_vs_scipy": t_scipy / t_lava,
            "output_gib": output_gib,
            "peak_rss_gib": rss1 / 2**20,
            "peak_rss_increase_during_call_gib": (rss1 - rss0) / 2**20,
        }
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
        del X

    meta = {
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "cpu_memory_budget_gib": CPU_MEMORY_BUDGET / 2**30,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_correlations.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [
        "| data | l x n x D | lava (s) | bare R^T R (s) | ratio (target <= 3) | scipy loop (s, extrap.) "
        "| speedup (target >= 20) | nonzero | output (GiB) | peak RSS (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['data']} | {r['localities']} x {r['n']} x {r['features']} | {r['seconds_lava']:.1f} | "
            f"{r['seconds_bare_products']:.1f} | {r['ratio_to_bare_products']:.2f} | "
            f"{r['seconds_scipy_loop_extrapolated']:.0f} | {r['speedup_vs_scipy']:.0f} | "
            f"{r['nonzero_fraction_of_correlations']:.2f} | {r['output_gib']:.2f} | {r['peak_rss_gib']:.2f} |"
        )
    lines.append(f"\n{meta}")
    (OUT / "bench_correlations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
