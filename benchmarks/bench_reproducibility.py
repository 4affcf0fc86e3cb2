"""Does a module's ``module_reproducibility`` say whether another call of ``lava.tl.amf`` finds it again?

``lava.tl.amf`` fits ``n_runs`` runs and keeps the medoid; each module of the kept run gets the share of the other
runs of the same call whose Hungarian-matched module has cosine >= 0.9 (``lava.core.fit_runs``). This benchmark
makes several such calls from different seeds on one placement of ``bench_real.py``'s data (same cache, same C) and
asks, for every module of every call, whether the call of another seed finds it again (matched cosine >= 0.9):
binned by the module's own reproducibility, the share found again should rise with it, or the figure (and its
warning below 0.5) would mean nothing.

    python benchmarks/bench_reproducibility.py --data kidney --n-modules 9 --placement-seed 1 --calls 4
    python benchmarks/bench_reproducibility.py --data mnist --n-modules 9 --calls 6

Writes ``benchmarks/out/bench_reproducibility_<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_real import DATASETS, MATCH_COSINE, placed, seed_data_cache  # noqa: E402

#: Bins of a module's reproducibility within its call: [lo, hi).
BINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 1.01))


def found_by_other_calls(modules: list[np.ndarray], threshold: float = MATCH_COSINE) -> list[np.ndarray]:
    """Per call, per module: the share of the other calls whose one-to-one matched module has cosine >= threshold.

    The calls' modules are matched as ``lava.core.fit_runs`` matches its runs, so this is each call's
    ``module_reproducibility`` against the other calls.
    """
    from lava.core.selection import cosine_distances, matched_run_cosines, module_reproducibility

    stacked = np.concatenate([np.asarray(m, dtype=np.float32) for m in modules])
    matched = matched_run_cosines(cosine_distances(stacked), len(modules), len(modules[0]))
    return [module_reproducibility(matched, k, threshold) for k in range(len(modules))]


def by_bin(reproducibility: list[np.ndarray], found: list[np.ndarray], bins=BINS) -> list[dict]:
    """Modules pooled over calls, binned by their reproducibility: count and mean share found by the other calls."""
    r = np.concatenate([np.asarray(x, dtype=np.float64) for x in reproducibility])
    f = np.concatenate([np.asarray(x, dtype=np.float64) for x in found])
    rows = []
    for lo, hi in bins:
        sel = (r >= lo) & (r < hi)
        rows.append(
            {"low": lo, "high": hi, "n_modules": int(sel.sum()), "found": float(f[sel].mean()) if sel.any() else None}
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="kidney", choices=list(DATASETS))
    parser.add_argument("--n-modules", type=int, default=9)
    parser.add_argument("--placement-seed", type=int, default=0)
    parser.add_argument("--calls", type=int, default=4, help="lava.tl.amf calls from different seeds (>= 2)")
    parser.add_argument("--n-runs", type=int, default=5, help="runs per call (lava.tl.amf's default 5)")
    parser.add_argument("--seed", type=int, default=100, help="the calls use seeds seed, seed + 1, ...")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_real_cache"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="run")
    args = parser.parse_args(argv)
    if args.calls < 2:
        parser.error("--calls must be >= 2")

    import torch

    import lava

    torch.set_num_threads(args.threads)
    seed_data_cache(args.cache)
    spec = DATASETS[args.data]
    adata, meta = placed(args.data, args.placement_seed, spec["localities"], spec["correlations"], args.cache, False)
    C = np.asarray(adata.uns["lava"]["correlations"]["values"], dtype=np.float32)
    calls, seconds = [], []
    for k in range(args.calls):
        t0 = time.perf_counter()
        calls.append(lava.core.fit_runs(C, args.n_modules, n_runs=args.n_runs, rng=args.seed + k))
        seconds.append(time.perf_counter() - t0)
        print(f"call {k}: reproducibility {np.round(calls[-1].module_reproducibility, 2).tolist()}", flush=True)
    reproducibility = [np.asarray(c.module_reproducibility) for c in calls]
    found = found_by_other_calls([c.modules for c in calls])
    rows = by_bin(reproducibility, found)
    result = {
        "tag": args.tag,
        "machine": platform.platform(),
        "lava": lava.__version__,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "placement": {k: v for k, v in meta.items() if k != "spec"},
        "seconds_per_call": seconds,
        "calls": [
            {"seed": int(c.seed), "reproducibility": r.tolist(), "found_by_other_calls": f.tolist()}
            for c, r, f in zip(calls, reproducibility, found, strict=True)
        ],
        "bins": rows,
    }
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / f"bench_reproducibility_{args.tag}.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# bench_reproducibility ({args.tag})",
        "",
        f"{args.data}, placement {args.placement_seed}, M = {args.n_modules}, {args.calls} calls of {args.n_runs} runs",
        "",
        "| reproducibility within the call | modules (all calls) | share found again by another call |",
        "|---|---|---|",
    ]
    for row in rows:
        shown = "-" if row["found"] is None else f"{row['found']:.2f}"
        lines.append(f"| [{row['low']:.2f}, {min(row['high'], 1.0):.2f}{')' if row['high'] <= 1 else ']'} "
                     f"| {row['n_modules']} | {shown} |")  # fmt: skip
    (out / f"bench_reproducibility_{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
