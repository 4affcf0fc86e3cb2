"""Benchmark AMF's loss variants, starts and stopping rules on planted co-located modules and on MNIST.

Planted data (:func:`lava.datasets.synthetic`, 3000 cells, 48 features, modules of 6 features, 90 localities of
100 cells, M = K + 1 modules fitted), two layouts, dense and sparse (``sparsity=0.5``):

- ``default``: regions {0}, {1}, {2}, {4}, {5}, {2, 3}, {0, 4}, {1}, {}: module 3 occurs only with module 2;
- ``colocated``: regions {0}, {1}, {2}, {2, 3}, {4, 5}, {0, 1}, {4, 5}, {}: 3 only with 2, 0 and 1 together and
  apart, 4 and 5 ALWAYS together (not identifiable apart: scored as their union).

Criteria per fit (docs/amf_loss.md): coverage (per region carrying modules, over its localities: sum over the pairs
of its planted modules of min(Chat, C) / sum of C there; the lowest region is reported), recovery (cosine of
each identifiable planted module, or union of modules that never occur apart, with its matched fitted module,
optimal one-to-one matching; the lowest is reported), overestimation ratio, epochs run. A fit succeeds when
coverage >= 0.9, recovery >= 0.95 and ratio <= 0.15.

MNIST (reduced to fit the 2-core machine): 5000 digits, pixels mean-pooled 2 x 2 (14 x 14), UMAP, localities of
250 digits, M = 9: similarity and overestimation ratio per configuration.

    python benchmarks/bench_amf_variants.py planted [--seeds 10] [--configs ...] [--data default-dense ...]
    python benchmarks/bench_amf_variants.py mnist [--seeds 3] [--full --threads 2]   # --full: the paper's scale
    python benchmarks/bench_amf_variants.py table        # merge the JSON files into the markdown table
    python benchmarks/bench_amf_variants.py copies       # is a co-located module's copy a local optimum?

Writes benchmarks/out/amf_variants_<what>.json and .md. One torch thread per process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"

_VARIANT = {
    "loss": "expectile",
    "nu": 3.0,
    "init": "localities",
    "stop": "learned",
    "lr": 1e-2,
    "background": True,
    "l1": 0.003,
    "refine": False,
}
#: name -> fit_amf options. "paper" is the paper's setting with lava's previous defaults. Options that lava no longer
#: has are the benchmark's own and run through :func:`fit` (``"loss": "cosine_expectile"``, ``"polish"``,
#: ``"phase2"``).
CONFIGS = {
    "paper": {"loss": "paper", "init": "random", "stop": "paper", "lr": 3e-3},
    "paper_loc": {"loss": "paper", "init": "localities", "stop": "learned", "lr": 1e-2},
    "expectile_rand": {**_VARIANT, "init": "random"},
    "expectile_loc": _VARIANT,
    "expectile_loc_nu2": {**_VARIANT, "nu": 2.0},
    "expectile_loc_nu5": {**_VARIANT, "nu": 5.0},
    "expectile_loc_nu9": {**_VARIANT, "nu": 9.0},
    "paper_loc_floor": {"loss": "paper", "init": "localities", "stop": "learned", "lr": 1e-2, "background": True},
    "expectile_loc_nobg": {**_VARIANT, "background": False, "l1": 0.0},
    "cos_expectile_loc": {**_VARIANT, "loss": "cosine_expectile"},
    "expectile_loc_polish": {**_VARIANT, "l1": 0.03, "polish": True},
    # the default (nu 9), then a second phase at a lower nu from its matrices ("phase2", see two_phase_fit):
    # "support" freezes every module entry that is 0 (values rise on the modules' pairs, modules cannot spread),
    # "presence" freezes the modules (only presences and the floor move), "none" freezes nothing; "paper" in the
    # name: the second phase minimises the paper's loss (nu-weighted cosine, at nu 9 or 5) instead
    "nu9_then_nu3_support": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 3.0, "freeze": "support"}},
    "nu9_then_nu2_support": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 2.0, "freeze": "support"}},
    "nu9_then_nu5_support": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 5.0, "freeze": "support"}},
    "nu9_then_nu3_presence": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 3.0, "freeze": "presence"}},
    "nu9_then_nu5_presence": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 5.0, "freeze": "presence"}},
    "nu9_then_nu3_free": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 3.0, "freeze": "none"}},
    "nu9_then_paper_support": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 9.0, "loss": "paper", "freeze": "support"}},
    "nu9_then_paper_presence": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 9.0, "loss": "paper", "freeze": "presence"}},
    "nu9_then_paper5_support": {**_VARIANT, "nu": 9.0, "phase2": {"nu": 5.0, "loss": "paper", "freeze": "support"}},
    # the same with a shorter patience in the second phase (it starts from a converged fit)
    "nu9_then_paper5_support_p30": {
        **_VARIANT,
        "nu": 9.0,
        "phase2": {"nu": 5.0, "loss": "paper", "freeze": "support", "patience": 30},
    },
    # the default's second phase with a patience of 20 epochs (the library's refine_patience(100)) as an experiment
    "nu12_refine_p20": {
        **_VARIANT,
        "nu": 12.0,
        "phase2": {"nu": 5.0, "loss": "paper", "freeze": "support", "patience": 20},
    },
    "expectile_loc_nu12": {**_VARIANT, "nu": 12.0},
    "expectile_loc_nu9_polish": {**_VARIANT, "nu": 9.0, "polish": True},
    # lava's defaults (fit_amf with no options: expectile at nu 12, then refine=True); the same fit as nu12_refine_p20
    "default": {},
}


#: The options of a config that lava.core.fit_amf does not have: the benchmark runs them itself (see fit).
RESIDUE = ("polish", "phase2")


def engine_phase(C, start, *, loss, nu, l1, background, lr, patience, tol, max_epochs, stop, locality_weight,
                 rng, freeze="none", gamma=1e-4, batch_size=64):  # fmt: skip
    """Train from ``start`` (an AMFResult: modules, presence and floor) with lava's training engine.

    The benchmark's own phase for the options lava.core.fit_amf does not have (``docs/amf_loss.md`` measured them
    and they did not help): another loss (``"cosine_expectile"``), a continuation without the l1 penalty
    (``polish``) or at another ``nu`` with frozen entries (``phase2``: ``freeze="support"`` trains only the
    module entries that are not 0, ``"presence"`` none of them, ``"none"`` all; a frozen entry gets no gradient,
    so Adam leaves it where it is). It uses ``lava.core._amf_torch`` (Problem, train) as ``fit_amf`` does,
    without patching it. Returns the engine's dict (``modules`` and ``presence`` with the floor as the last
    module, ``loss``, ``n_epochs``, ...), with ``modules`` on the pairs not 0 everywhere (``kept``).
    """
    import torch

    from lava.core import _amf_torch as amft
    from lava.core.amf import NU_BACKGROUND, locality_weights

    kept = np.asarray(C != 0).any(0)
    Ck = np.ascontiguousarray(C[:, kept], dtype=np.float32)
    M = start.modules.shape[0]
    modules0, presence0 = start.modules[:, kept], start.presence
    if background:  # the fixed all-ones module and its presence, the floor
        floor = start.background if start.background is not None else np.median(Ck, axis=1)
        modules0 = np.vstack([modules0, np.ones((1, modules0.shape[1]), np.float32)])
        presence0 = np.hstack([presence0, np.asarray(floor, np.float32)[:, None]])
    weights = locality_weights(Ck, locality_weight)
    device = torch.device("cpu")
    problem = amft.Problem(torch.from_numpy(Ck), torch.from_numpy(weights), nu=nu, gamma=gamma,
                           n_pairs_total=C.shape[1], kernel=amft.resolve_kernel("auto", device), loss=loss)  # fmt: skip
    problem.l1, problem.background, problem.nu_background, problem.bg_index = float(l1), background, NU_BACKGROUND, M
    if loss == "paper":
        problem.use_paper_loss(nu)
    if freeze == "support":
        problem.module_mask = torch.from_numpy((modules0 > 0).astype(np.float32))
    elif freeze == "presence":
        problem.module_mask = torch.zeros(modules0.shape)
    out = amft.train(problem, np.ascontiguousarray(presence0, np.float32), np.ascontiguousarray(modules0, np.float32),
                     lr=lr, batch_size=batch_size, patience=patience, tol=tol, max_epochs=max_epochs,
                     generator=np.random.default_rng(rng), progress=False, stop=stop)  # fmt: skip
    modules = np.zeros((M, C.shape[1]), np.float32)
    modules[:, kept] = out["modules"][:M]
    return {**out, "modules": modules, "presence": out["presence"][:, :M],
            "background": out["presence"][:, M] if background else None}  # fmt: skip


def fit(C, n_modules, seed, max_epochs, config):
    """Fit ``config``: lava.core.fit_amf's options, composed with :func:`engine_phase` for the residue ones.

    ``"loss": "cosine_expectile"``: the localities start (:func:`lava.core.amf.init_from_localities`, with the floor
    at each locality's median), then one engine phase with that loss. ``polish`` / ``phase2``: ``fit_amf`` with
    the other options (``refine=False``), then an engine phase from its matrices: ``polish`` without the l1 penalty
    (same loss and ``nu``, the paper's stopping rule), ``phase2`` at ``phase2["nu"]`` (``"loss": "paper"``: the
    paper's weighted cosine) with ``phase2["freeze"]`` and ``phase2.get("patience")``, in the epochs the first
    left. Returns an object with lava's AMFResult's fields that the scores read.
    """
    from types import SimpleNamespace

    from lava.core import AMFConfig, AMFResult, fit_amf
    from lava.core.amf import _fit_figures, init_from_localities, locality_weights

    options = dict(CONFIGS[config])
    residue = {k: options.pop(k) for k in RESIDUE if k in options}
    if options.get("loss") == "cosine_expectile":  # the whole fit through the engine, from the localities start
        cfg = AMFConfig.from_flavor(**{**options, "loss": "expectile"})
        kept = np.asarray(C != 0).any(0)
        mods = np.zeros((n_modules, C.shape[1]), np.float32)
        mods[:, kept], pres = init_from_localities(np.ascontiguousarray(C[:, kept]), n_modules, rng=seed,
                                                   locality_weight=cfg.locality_weight)  # fmt: skip
        first = SimpleNamespace(modules=mods, presence=pres, background=None, n_epochs=0, seed=seed, config=cfg)
        out = engine_phase(C, first, loss="cosine_expectile", nu=cfg.nu, l1=cfg.l1, background=cfg.background,
                           lr=cfg.lr, patience=cfg.patience, tol=cfg.tol, max_epochs=max_epochs, stop=cfg.stop,
                           locality_weight=cfg.locality_weight, rng=seed)  # fmt: skip
    elif residue:
        first = fit_amf(C, n_modules, rng=seed, max_epochs=max_epochs, **{**options, "refine": False})
        cfg = first.config
        if first.n_epochs >= max_epochs:
            return first
        if "phase2" in residue:
            p2 = residue["phase2"]
            out = engine_phase(C, first, loss=p2.get("loss", cfg.loss), nu=p2["nu"], l1=cfg.l1,
                               background=cfg.background, lr=p2.get("lr", cfg.lr),
                               patience=p2.get("patience", cfg.patience), tol=cfg.tol,
                               max_epochs=max_epochs - first.n_epochs, stop="paper",
                               locality_weight=cfg.locality_weight, rng=seed, freeze=p2["freeze"])  # fmt: skip
        else:  # polish: the same loss without the l1 penalty
            out = engine_phase(C, first, loss=cfg.loss, nu=cfg.nu, l1=0.0, background=cfg.background, lr=cfg.lr,
                               patience=cfg.patience, tol=cfg.tol, max_epochs=max_epochs - first.n_epochs,
                               stop="paper", locality_weight=cfg.locality_weight, rng=seed)  # fmt: skip
    else:
        return fit_amf(C, n_modules, rng=seed, max_epochs=max_epochs, **options)
    similarity, ratio, loc_sim = _fit_figures(C, out["presence"], out["modules"],
                                              weights=locality_weights(C, cfg.locality_weight))  # fmt: skip
    return AMFResult(
        modules=out["modules"], presence=np.ascontiguousarray(out["presence"]), loss=float(out["loss"]),
        similarity=similarity, overestimation_ratio=ratio, locality_similarity=loc_sim, history=out["history"],
        n_epochs=first.n_epochs + out["n_epochs"], best_epoch=first.n_epochs + out["epoch"],
        converged=bool(out["converged"]), interrupted=bool(out["interrupted"]), seed=int(first.seed),
        background=out["background"], locality_weight=cfg.locality_weight, config=cfg,
    )  # fmt: skip


LAYOUTS = {
    "default": None,
    "colocated": [{0}, {1}, {2}, {2, 3}, {4, 5}, {0, 1}, {4, 5}, set()],
}


def layout_array(name):
    from lava.datasets._synthetic import default_layout

    if LAYOUTS[name] is None:
        return default_layout(6)
    layout = np.zeros((len(LAYOUTS[name]), 6), dtype=bool)
    for r, mods in enumerate(LAYOUTS[name]):
        layout[r, sorted(mods)] = True
    return layout


def planted_data(name: str, seed: int = 0):
    """C (l, P), planted modules (K, P), locality regions (l,) (-1: mixed) and the region x module layout."""
    cache = OUT / f"amf_variants_data_{name}_{seed}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["C"], z["truth"], z["region"], z["layout"]
    import lava

    layout_name, density = name.split("-")
    layout = layout_array(layout_name)
    adata = lava.datasets.synthetic(
        n_obs=3000,
        n_vars=48,
        n_modules=6,
        module_size=6,
        sparsity=0.5 if density == "sparse" else 0.0,
        layout=layout,
        rng=seed,
    )
    lava.tl.localities(adata, n_neighbors=100, progress=False, rng=seed)
    lava.tl.correlations(adata, progress=False)
    C = np.asarray(adata.uns["lava"]["correlations"]["values"], dtype=np.float32)
    truth = lava.datasets.planted_modules(adata, adata.uns["lava"]["correlations"]["features"])
    names = list(adata.uns["synthetic"]["region_names"])
    codes = np.array([names.index(r) for r in adata.obs["region"].astype(str)])
    region = []
    for idx in adata.uns["lava"]["localities"]["indices"]:
        counts = np.bincount(codes[idx], minlength=len(names))
        region.append(int(counts.argmax()) if counts.max() >= 0.8 * len(idx) else -1)
    region = np.asarray(region)
    layout = np.asarray(adata.uns["synthetic"]["region_modules"], dtype=bool)
    OUT.mkdir(exist_ok=True)
    np.savez(cache, C=C, truth=truth, region=region, layout=layout)
    return C, truth, region, layout


def units(layout: np.ndarray) -> list[list[int]]:
    """Identifiable units: modules grouped when they occur in exactly the same regions (recoverable only together)."""
    groups: dict[bytes, list[int]] = {}
    for m in range(layout.shape[1]):
        if layout[:, m].any():
            groups.setdefault(layout[:, m].tobytes(), []).append(m)
    return list(groups.values())


def score(C, truth, region, layout, modules, presence):
    """Coverage (lowest region), recovery (lowest unit cosine), per-unit cosines, per-region coverage."""
    from scipy.optimize import linear_sum_assignment

    from lava.core import reconstruct

    chat = reconstruct(presence, modules)
    coverage = {}
    for r in range(layout.shape[0]):
        mods = np.flatnonzero(layout[r])
        rows = region == r
        if mods.size == 0 or not rows.any():
            continue
        pairs = truth[mods].max(0) > 0
        c, h = C[rows][:, pairs], chat[rows][:, pairs]
        coverage[r] = float(np.minimum(c, h).sum() / max(c.sum(), 1e-12))
    targets = np.stack([truth[g].max(0) for g in units(layout)])

    def unit_rows(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    cos = unit_rows(targets) @ unit_rows(modules).T
    ri, ci = linear_sum_assignment(-cos)
    unit_cos = np.zeros(len(targets))
    unit_cos[ri] = cos[ri, ci]
    return min(coverage.values()), float(unit_cos.min()), unit_cos.tolist(), coverage


def run_planted(args):
    import torch

    from lava.core import overestimation_ratio, reconstruct

    torch.set_num_threads(1)
    results = []
    path = OUT / f"amf_variants_planted_{args.tag}.json"
    for data in args.data:
        C, truth, region, layout = planted_data(data, args.data_seed)
        n_modules = truth.shape[0] + 1
        for name in args.configs:
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                res = fit(C, n_modules, seed, args.max_epochs, name)
                seconds = time.perf_counter() - t0
                cov, rec, unit_cos, _ = score(C, truth, region, layout, res.modules, res.presence)
                ratio_bg = res.overestimation_ratio
                if res.background is not None:  # the ratio of the reconstruction with the background floor
                    chat = np.maximum(reconstruct(res.presence, res.modules), res.background[:, None])
                    ratio_bg = overestimation_ratio(C, chat)
                row = {
                    "data": data,
                    "data_seed": args.data_seed,
                    "config": name,
                    "seed": seed,
                    "coverage": cov,
                    "recovery": rec,
                    "unit_cosines": unit_cos,
                    "ratio": res.overestimation_ratio,
                    "ratio_with_background": ratio_bg,
                    "similarity": res.similarity,
                    "n_epochs": res.n_epochs,
                    "best_epoch": res.best_epoch,
                    "converged": res.converged,
                    "seconds": seconds,
                }
                row["success"] = bool(cov >= 0.9 and rec >= 0.95 and row["ratio"] <= 0.15)
                results.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "unit_cosines"}), flush=True)
                OUT.mkdir(exist_ok=True)
                path.write_text(json.dumps(results, indent=1))


def mnist_data():
    cache = OUT / "amf_variants_mnist_C.npy"
    if cache.exists():
        return np.load(cache)
    import anndata as ad

    import lava

    full = lava.datasets.mnist(n_obs=5000, rng=0)
    X = np.asarray(full.X, dtype=np.float32).reshape(-1, 28, 28)
    X = X.reshape(-1, 14, 2, 14, 2).mean((2, 4)).reshape(-1, 196)
    adata = ad.AnnData(X)
    import umap

    adata.obsm["X_umap"] = umap.UMAP(random_state=0, n_jobs=1).fit_transform(X).astype(np.float32)
    lava.tl.localities(adata, n_neighbors=250, progress=False, rng=0)
    lava.tl.correlations(adata, progress=False)
    C = np.asarray(adata.uns["lava"]["correlations"]["values"], dtype=np.float32)
    OUT.mkdir(exist_ok=True)
    np.save(cache, C)
    return C


def run_mnist(args):
    import torch

    torch.set_num_threads(args.threads)
    if args.full:  # the paper's scale: the C of `benchmarks/run.py --sizes mnist --steps data placement correlations`
        path = OUT / "run" / "mnist" / "C.npy"
        if not path.exists():
            msg = (
                f"{path} is missing; run `python benchmarks/run.py --sizes mnist --steps data placement correlations`."
            )
            raise SystemExit(msg)
        C = np.load(path)
    else:
        C = mnist_data()
    print("MNIST C", C.shape, flush=True)
    results = []
    for name in args.configs:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            res = fit(C, 9, seed, args.max_epochs, name)
            row = {
                "config": name,
                "seed": seed,
                "similarity": res.similarity,
                "ratio": res.overestimation_ratio,
                "n_epochs": res.n_epochs,
                "converged": res.converged,
                "seconds": time.perf_counter() - t0,
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            name_ = "fullmnist" if args.full else "mnist"
            (OUT / f"amf_variants_{name_}_{args.tag}.json").write_text(json.dumps(results, indent=1))


def copies(args):
    """Is a co-located module's copy of the other module's pairs what the loss prefers? (docs/amf_loss.md)

    For fits (the default's first phase, ``refine=False``) on ``colocated-sparse`` where the module matched to
    module 3 holds entries on module 2's pairs: fit on from the matrices as they are, and from the same matrices
    with those entries set to 0; compare the losses and the module's cosine with module 3.
    """
    import torch
    from scipy.optimize import linear_sum_assignment

    from lava.core import fit_amf
    from lava.core.amf import LOSS_DEFAULTS

    torch.set_num_threads(1)
    C, truth, region, layout = planted_data("colocated-sparse", args.data_seed)
    options = {**LOSS_DEFAULTS["expectile"], "refine": False}
    targets = np.stack([truth[g].max(0) for g in units(layout)])
    unit = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    rows = []
    for seed in args.fit_seeds:
        first = fit_amf(C, truth.shape[0] + 1, rng=seed, **options)
        norms = np.maximum(np.linalg.norm(first.modules, axis=1, keepdims=True), 1e-12)
        ri, ci = linear_sum_assignment(-(unit @ (first.modules / norms).T))
        m3 = ci[list(ri).index(3)]  # units: [0], [1], [2], [3], [4, 5]
        cleaned = first.modules.copy()
        cleaned[m3, truth[2] > 0] = 0
        row = {"seed": seed, "copied_mass": float(first.modules[m3, truth[2] > 0].sum())}
        for name, start in (("as_fitted", first.modules), ("cleaned", cleaned)):
            res = fit_amf(C, truth.shape[0] + 1, rng=seed, warm_start=(start, first.presence), **options)
            _, _, unit_cos, _ = score(C, truth, region, layout, res.modules, res.presence)
            row[name] = {"loss": res.loss, "module3_cosine": unit_cos[3],
                         "copied_mass": float(res.modules[m3, truth[2] > 0].sum())}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "amf_variants_copies.json").write_text(json.dumps(rows, indent=1))


def table(_args):
    def unique(rows, *keys):  # a fit measured in two files (the same seeds again) counts once
        return list({tuple(r.get(k, 0) for k in keys): r for r in rows}.values())

    rows = []
    for path in sorted(OUT.glob("amf_variants_planted_*.json")):
        rows += json.loads(path.read_text())
    rows = unique(rows, "data", "data_seed", "config", "seed")
    lines = [
        "| data | config | fits | succeed | coverage min (median) | recovery min (median) | ratio max (median) "
        "| ratio with floor max | epochs median | s / fit median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:  # other draws of the planted data than the table's (seed 0) are rows of their own
        if r.get("data_seed", 0):
            r["data"] = f"{r['data']} (data seed {r['data_seed']})"
    keys = sorted({(r["data"], r["config"]) for r in rows}, key=lambda k: (k[0], list(CONFIGS).index(k[1])))
    for data, config in keys:
        sel = [r for r in rows if r["data"] == data and r["config"] == config]
        cov = np.array([r["coverage"] for r in sel])
        rec = np.array([r["recovery"] for r in sel])
        rat = np.array([r["ratio"] for r in sel])
        lines.append(
            f"| {data} | {config} | {len(sel)} | {sum(r['success'] for r in sel)} "
            f"| {cov.min():.2f} ({np.median(cov):.2f}) | {rec.min():.2f} ({np.median(rec):.2f}) "
            f"| {rat.max():.2f} ({np.median(rat):.2f}) | {max(r.get('ratio_with_background', 0) for r in sel):.2f} "
            f"| {np.median([r['n_epochs'] for r in sel]):.0f} "
            f"| {np.median([r['seconds'] for r in sel]):.1f} |"
        )
    mrows = []
    for mpath in sorted(OUT.glob("amf_variants_mnist*.json")):
        mrows += json.loads(mpath.read_text())
    mrows = unique(mrows, "config", "seed")
    if mrows:
        lines += [
            "",
            "| MNIST config | fits | similarity median | ratio median | epochs median |",
            "|---|---|---|---|---|",
        ]
        for config in [c for c in CONFIGS if any(r["config"] == c for r in mrows)]:
            sel = [r for r in mrows if r["config"] == config]
            lines.append(
                f"| {config} | {len(sel)} | {np.median([r['similarity'] for r in sel]):.3f} "
                f"| {np.median([r['ratio'] for r in sel]):.3f} | {np.median([r['n_epochs'] for r in sel]):.0f} |"
            )
    frows = []
    for fpath in sorted(OUT.glob("amf_variants_fullmnist_*.json")):
        frows += json.loads(fpath.read_text())
    if frows:
        lines += [
            "",
            "| MNIST at the paper's scale: config | seed | similarity | ratio | epochs | s |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(unique(frows, "config", "seed"), key=lambda r: (list(CONFIGS).index(r["config"]), r["seed"])):
            lines.append(
                f"| {r['config']} | {r['seed']} | {r['similarity']:.3f} | {r['ratio']:.3f} | {r['n_epochs']} "
                f"| {r['seconds']:.0f} |"
            )
    text = "\n".join(lines) + "\n"
    OUT.mkdir(exist_ok=True)
    (OUT / "amf_variants.md").write_text(text)
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["planted", "mnist", "table", "copies"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--data",
        nargs="+",
        default=["default-dense", "default-sparse", "colocated-dense", "colocated-sparse"],
    )
    parser.add_argument("--max-epochs", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1, help="torch (and numba) threads per fit")
    parser.add_argument(
        "--full", action="store_true", help="mnist: the paper's scale (70k digits, l = 280), C from benchmarks/run.py"
    )
    parser.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the planted data (the table's figures: 0; --seeds are the fits')",
    )
    parser.add_argument("--tag", default="all", help="suffix of the planted JSON file (to run parts in parallel)")
    parser.add_argument("--fit-seeds", type=int, nargs="+", default=[3, 8, 0], help="fits examined by 'copies'")
    args = parser.parse_args(argv)
    {"planted": run_planted, "mnist": run_mnist, "table": table, "copies": copies}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
