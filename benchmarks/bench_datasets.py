"""Benchmark the synthetic generator: time and peak memory at named sizes, each in its own subprocess.

Sizes (n_obs x n_vars, 6 modules):
  small:  5,000 x 200      (the default)
  kpmp:   225,000 x 1000   (KPMP-like: the paper's cell count, 1000 variable genes)
  large:  1,000,000 x 1000 (only with --sizes large; needs about 4.5 GiB)

Reference measured in the same run: a bare ``rng.standard_normal((n_obs, n_vars), float32)`` (the least any generator
of this size must do) and, for sparse sizes, ``rng.poisson`` on a same-size float32 rate array: the ratio says how far
the generator is from drawing its random numbers.

    python benchmarks/bench_datasets.py [--sizes small kpmp] [--sparsity 0 0.9]

Writes benchmarks/out/datasets.json and datasets.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
SIZES = {"small": (5000, 200), "kpmp": (225_000, 1000), "large": (1_000_000, 1000)}


def _child(kind: str, n_obs: int, n_vars: int, sparsity: float) -> dict:
    import numpy as np

    if kind == "synthetic":
        import anndata  # noqa: F401  (imports are not part of the timing)

        import lava
    start = time.perf_counter()
    if kind == "synthetic":
        adata = lava.datasets.synthetic(n_obs, n_vars, 6, sparsity=sparsity, rng=0)
        X = adata.X
        nbytes = X.nbytes if isinstance(X, np.ndarray) else X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    else:
        rng = np.random.default_rng(0)
        X = np.empty((n_obs, n_vars), np.float32)
        for r0 in range(0, n_obs, 16384):  # block-wise, like the generator
            block = rng.standard_normal((min(16384, n_obs - r0), n_vars), dtype=np.float32)
            if kind == "poisson":
                np.exp(block, out=block)
                block = rng.poisson(block).astype(np.float32)
            X[r0 : r0 + block.shape[0]] = block
        nbytes = X.nbytes
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return {"seconds": elapsed, "peak_rss_mib": peak, "x_mib": nbytes / 2**20}


def _run(kind, n_obs, n_vars, sparsity):
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_datasets as b; "
    code += f"print(json.dumps(b._child({kind!r}, {n_obs}, {n_vars}, {sparsity})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "kpmp"], choices=list(SIZES))
    parser.add_argument("--sparsity", nargs="+", type=float, default=[0.0, 0.9])
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        n_obs, n_vars = SIZES[size]
        for sparsity in args.sparsity:
            gen = _run("synthetic", n_obs, n_vars, sparsity)
            ref = _run("poisson" if sparsity > 0 else "normal", n_obs, n_vars, sparsity)
            row = {"size": size, "n_obs": n_obs, "n_vars": n_vars, "sparsity": sparsity, **gen}
            row["reference"] = "poisson" if sparsity > 0 else "normal"
            row["reference_seconds"] = ref["seconds"]
            row["ratio"] = gen["seconds"] / ref["seconds"]
            rows.append(row)
            print(json.dumps(row))
    OUT.mkdir(exist_ok=True)
    (OUT / "datasets.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| size | sparsity | seconds | peak RSS (MiB) | X (MiB) | reference | ref. seconds | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_obs']:,} x {r['n_vars']} | {r['sparsity']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{r['x_mib']:.0f} | {r['reference']} | {r['reference_seconds']:.1f} | {r['ratio']:.2f} |"
        )
    (OUT / "datasets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
