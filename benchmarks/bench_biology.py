"""Benchmark of reading modules: ORA (``lava.core.ora``), BH, and association with donor-level permutations.

- ORA: M = 9 modules of 50 genes against the offline GO BP collection (5,233 sets) with a background of 1,000
  tested genes: ``lava.core.ora`` (all modules in one call) against ``gseapy.enrich`` (one offline call per module,
  same background list) measured in the same run; the p-values are checked to agree.
- BH: 10^6 p-values, ``lava.core.benjamini_hochberg`` against ``statsmodels`` ``multipletests(method="fdr_bh")``.
- Association: ``lava.tl.associate`` with 1,000 donor-level permutations on E = 100,000 samples, l = 1,000
  localities of n = 500, M = 9 modules, 20 donors, a 3-category annotation; against the parametric call alone.

Run: ``python benchmarks/bench_biology.py`` (``--quick`` for a small smoke run). Writes
``benchmarks/out/bench_biology.json`` and ``.md``. Needs ``go_bp_human.gmt`` in the lava data cache for the ORA part
(``LAVA_DATA_DIR``); skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(func, *args, **kwargs):
    tracemalloc.start()
    start = time.perf_counter()
    out = func(*args, **kwargs)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, elapsed, peak


def bench_ora(quick: bool, rng) -> dict | None:
    import gseapy

    import lava
    from lava.core import ora

    try:
        sets = lava.datasets.go_bp_human()
    except Exception as err:  # report and skip
        logging.warning("ORA benchmark skipped: %s", err)
        return None
    genes = sorted({g for v in sets.values() for g in v})
    background = list(rng.choice(genes, size=1000, replace=False))
    n_mod = 3 if quick else 9
    modules = [list(rng.choice(background, size=50, replace=False)) for _ in range(n_mod)]
    res, t_lava, mem_lava = timed(ora, modules, sets, background, min_size=5)
    start = time.perf_counter()
    max_diff = 0.0
    for q, query in enumerate(modules):
        # gseapy tests every set with a hit regardless of size; compare on the sets both tested
        enr = gseapy.enrich(gene_list=query, gene_sets=sets, background=background, outdir=None, no_plot=True)
        theirs = enr.results.set_index("Term")["P-value"]
        ours = dict(zip(res.terms, res.p_value[q], strict=True))
        common = [t for t in theirs.index if t in ours]
        max_diff = max(max_diff, float(np.max(np.abs(np.array([ours[t] for t in common]) - theirs[common].to_numpy()))))
    t_gseapy = time.perf_counter() - start
    return {
        "n_modules": n_mod,
        "n_sets": len(sets),
        "n_sets_tested": int(res.terms.size),
        "background": len(background),
        "lava_s": t_lava,
        "lava_peak_mib": mem_lava,
        "gseapy_s": t_gseapy,
        "speedup_vs_gseapy": t_gseapy / t_lava,
        "max_abs_p_difference": max_diff,
    }


def bench_bh(quick: bool, rng) -> dict:
    from lava.core import benjamini_hochberg

    p = rng.uniform(size=10**5 if quick else 10**6) ** 2
    q, t_lava, mem = timed(benjamini_hochberg, p)
    out = {"n": p.size, "lava_s": t_lava, "lava_peak_mib": mem}
    try:
        from statsmodels.stats.multitest import multipletests

        ref, t_ref, _ = timed(multipletests, p, method="fdr_bh")
        out |= {
            "statsmodels_s": t_ref,
            "ratio_vs_statsmodels": t_lava / t_ref,
            "max_abs_diff": float(np.abs(q - ref[1]).max()),
        }
    except ImportError:
        pass
    return out


def bench_associate(quick: bool, rng) -> dict:
    import anndata as ad
    import pandas as pd

    import lava

    E, n_loc, n, M, G, N = (20_000, 300, 200, 4, 10, 200) if quick else (100_000, 1000, 500, 9, 20, 1000)
    adata = ad.AnnData(X=np.zeros((E, 1), dtype=np.float32))
    adata.obs["donor"] = pd.Categorical(rng.integers(0, G, E).astype(str))
    adata.obs["status"] = pd.Categorical(rng.choice(["a", "b", "c"], size=E))
    adata.uns["lava"] = {
        "localities": {"indices": rng.integers(0, E, size=(n_loc, n)).astype(np.int64)},
        "amf": {"presence": rng.uniform(size=(n_loc, M)).astype(np.float32), "modules": np.zeros((M, 1))},
    }
    _, t_param, mem_param = timed(lava.tl.associate, adata, "status")
    _, t_perm, mem_perm = timed(lava.tl.associate, adata, "status", permutations=N, groups="donor")
    return {
        "n_obs": E,
        "n_localities": n_loc,
        "locality_size": n,
        "n_modules": M,
        "n_donors": G,
        "permutations": N,
        "parametric_s": t_param,
        "parametric_peak_mib": mem_param,
        "permutation_s": t_perm,
        "permutation_peak_mib": mem_perm,
        "permutation_over_parametric": t_perm / t_param,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "quick": args.quick,
        "ora": bench_ora(args.quick, rng),
        "bh": bench_bh(args.quick, rng),
        "associate": bench_associate(args.quick, rng),
        "peak_rss_mib": peak_rss_mib(),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_biology.json").write_text(json.dumps(results, indent=2))
    lines = ["# bench_biology", "", f"quick: {args.quick}; peak RSS {results['peak_rss_mib']:.0f} MiB", ""]
    for part in ("ora", "bh", "associate"):
        lines += [f"## {part}", "", "| quantity | value |", "|---|---|"]
        for name, value in (results[part] or {"skipped": "no GO BP file in the data cache"}).items():
            lines.append(f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |")
        lines.append("")
    (OUT / "bench_biology.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
