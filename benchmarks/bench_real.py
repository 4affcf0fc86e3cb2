"""Real-data benchmark: do lava's defaults explain every population, with distinct, enriched, stable modules?

Data sets, each run through the pipeline a user follows from the docs (``lava.tl.localities`` ->
``lava.tl.correlations`` -> ``lava.tl.amf`` -> ``lava.tl.module_genes`` -> ``lava.tl.enrich``), lava's defaults
unless an option below overrides a step:

- ``kidney``: ``lava.datasets.kidney_immune()`` (1,000 cells; ``obs["celltype"]``), the kidney tutorial's recipe:
  ``lava.pp.filter_mito_ribo``, genes detected in >= 20% of the cells, ``lava.pp.select_features(n_top=300)``,
  localities of n = 100 at overlap 5 over ``X_umap``, M = 6.
- ``pbmc``: scanpy's ``pbmc68k_reduced`` (700 cells; ``obs["bulk_labels"]``), the README's recipe: its
  ``highly_variable`` genes, n = 100, overlap 5, M = 7 (select_n_modules' suggestion over M = 3-12; M = 5 before 2026-12-07).
- ``mnist``: the reduced MNIST of ``bench_amf_variants.py mnist`` (5,000 digits, seed 0, pixels mean-pooled 2 x 2,
  UMAP ``random_state=0``; ``obs["label"]`` the digit), localities of n = 250 (default overlap), M = 9, no GO.

Metrics per data set and fit (every threshold is a module-level constant; ``benchmarks/RESULTS.md`` explains them):

- ``coverage``: the share of cells in at least one locality whose largest module presence is >= 0.5; cells in no
  locality count as not covered. ``locality_coverage``: the share of localities with a module at >= 0.5.
- Per population (the label column; populations with >= 5% of the cells): ``cell_coverage`` (the share of its cells
  covered, as above), its localities (those where it is the most frequent label), ``has_module``: some module has
  presence >= 0.5 in at least one of its localities (False when it is the most frequent label of none), and
  ``locality_coverage`` (the share of its localities with a module at >= 0.5).
- Distinct modules: the modules' gene sets (``lava.tl.module_genes``), visited in decreasing total presence; a module
  is kept when its gene-set Jaccard with every kept one is < 0.5. ``max_jaccard``: the largest pairwise Jaccard.
- GO: ORA with ``lava.tl.enrich`` against GO BP (``lava.datasets.go_bp_human``), background = the features that are
  non-zero in at least one locality of C (the only ones that can become module genes); a module is GO-significant
  with at least one term at BH-adjusted p < 0.05; ``distinct_go``: the distinct rule over the GO-significant ones.
  ``go_programmes``: the GO-significant modules counted as programmes, by the genes that carry their enrichment: a
  module's *leading genes* are its genes in its most significant term (lowest p, then most genes), and a module is a
  new programme when its leading genes share less than half of the smaller set with every kept programme's (the
  overlap coefficient, so that five of the MHC class II genes are the programme of all ten). Two modules whose lists
  differ but which are both enriched through the MHC class II genes are two distinct GO-significant modules and one
  programme. ``go_group_programmes`` (column "enriched programmes (gene groups)"): the same count over the modules'
  gene groups (``lava.tl.enrich(by="group")``, BH over each module's groups together; a module without a group of
  >= 5 genes is its whole list): the significant (module, group) units, modules in decreasing total presence and
  groups in order, made distinct by their leading genes as above; ``go_group_significant_modules``: modules with a
  significant unit.
- Stability over AMF seeds (the same C): for every pair of seeds, modules are matched one-to-one by the Hungarian
  algorithm on the cosine of their pair vectors (rows of ``modules``); ``amf_seed_share_mean``: the share of modules
  whose matched cosine is >= 0.9, the mean over seed pairs (``_min``: the smallest; ``amf_seed_median_cosine``: the
  median over seed pairs of the median matched cosine, for a finer view than the 0.9 cut).
- Stability over placement seeds (another C of the same features and pairs): the fits of the same AMF seed on two
  placements are matched the same way, on the module pair vectors (they live on the same feature pairs; when the
  feature lists differ, on the feature scores ``varm["lava_modules"]`` over the shared features): ``placement_*``.
- One fit kept of R (``--group-best``, from the fits made, no extra fit): per placement the AMF seeds are cut into
  consecutive groups of R; each group keeps its lowest-loss fit and, separately, its medoid (the fit most like the
  others of the group: largest mean matched cosine), the two rules of ``select_n_modules(keep=...)``; the kept fits
  are matched as above (``best_of``: per rule the mean and smallest share over kept pairs);
  ``amf_seed_share_by_placement``: the seed share per placement. Pass 20 or more seeds for a figure that 3 seeds only
  hint at.
- Wall time of every step (placement and correlations are cached: their time is the time they took when computed;
  the first call in a process includes numba's compilation unless its on-disk cache is warm).
- MNIST: the paper's findings, judged as the MNIST tutorial does: a locality's digit is its majority digit; a module
  belongs to the digits where its mean presence (over their localities) is >= half its largest; a module shared by
  3/5/8 (4/7/9) belongs to all three and to at most 5 digits; and the overestimation ratio < 0.15.

Reference rows for kidney and pbmc, on the same features and scored with the same GO test, background and distinct
rule as lava (never test dependencies; each is skipped with a message when its package is not importable):

- Hotspot (``pip install hotspotsc``; ``--no-hotspot`` leaves it out): log-normalised values (``model="normal"``),
  its kNN graph on the same embedding (``X_umap``, Hotspot's default 30 neighbours), genes with autocorrelation FDR
  < 0.05, modules of >= 10 genes.
- cNMF (``pip install cnmf``; ``--no-cnmf`` leaves it out): K = lava's M programmes from 100 NMF replicates
  (consensus at cNMF's tutorial density threshold 0.5), each programme's 30 top genes by cNMF's spectra score as its
  gene list (cNMF ranks genes and cuts no list; 30 is about a tenth of the features, near Hotspot's median module
  size). cNMF factorises counts, and neither data set ships them (kidney: log-normalised ``X`` and ``logcounts``;
  pbmc68k_reduced: scaled ``X``, log-normalised ``raw``), so it gets the de-logged normalised values (``expm1``) as
  its counts and TPM, and scales each gene to unit variance itself.

Their per-population figures use per-cell scores (Hotspot's module scores, cNMF's usages), z-scored over cells: a
cell is covered when some programme scores z >= 1, and a population has a programme when some programme's median z
over its cells is >= 1. The z threshold is a convention (neither has a presence scale), so compare those figures
with lava's as an indication only.

    python benchmarks/bench_real.py                                    # kidney, pbmc, mnist; AMF seeds 0 1 2
    python benchmarks/bench_real.py --data kidney pbmc --tag default
    python benchmarks/bench_real.py --data kidney --amf '{"loss": "paper", "gamma": 10}' --tag paper
    python benchmarks/bench_real.py --data kidney --n-modules 9 --placement-seeds 0 1
    python benchmarks/bench_real.py --data pbmc --seeds $(seq 0 19) --placement-seeds 0 1 --no-hotspot  # one kept of R
    python benchmarks/bench_real.py --data pbmc --select-n-modules --select-range 2 10 --select-runs 3
    python benchmarks/bench_real.py --data kidney --localities '{"n_neighbors": 50}' --correlations '{"tie_fraction": 0.9}'

Placement and correlations are cached per (data set, placement seed, options, lava's placement/correlation source) in
``--cache`` (default ``/tmp/bench_real_cache``), so rerunning AMF variants costs only the fits. Writes
``benchmarks/out/bench_real_<tag>.json`` and ``.md``. Needs the data in the lava data cache: when ``LAVA_DATA_DIR`` is
not set, ``<cache>/data`` is seeded with links to ``../shared/data`` (as ``tests/conftest.py`` does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
SHARED_DATA = ROOT.parent / "shared" / "data"

#: a module is "present" in a locality at this presence
PRESENCE_THRESHOLD = 0.5
#: populations with at least this share of the cells are scored
MIN_POPULATION_SHARE = 0.05
#: two modules are duplicates at this gene-set Jaccard or above
MAX_JACCARD = 0.5
#: matched module cosine counted as "the same module"
MATCH_COSINE = 0.9
#: BH-adjusted p-value of a GO-significant term
GO_P_ADJUSTED = 0.05
#: Hotspot: a cell is covered by a module scoring this many SDs above the mean over cells
HOTSPOT_Z = 1.0

DATASETS = {
    "kidney": {
        "label": "celltype",
        "localities": {"basis": "X_umap", "n_neighbors": 100, "overlap": 5},
        "correlations": {"features": "highly_variable"},
        "n_modules": 6,
        "go": True,
    },
    "pbmc": {
        "label": "bulk_labels",
        "localities": {"basis": "X_umap", "n_neighbors": 100, "overlap": 5},
        "correlations": {"features": "highly_variable"},
        "n_modules": 7,
        "go": True,
    },
    "mnist": {
        "label": "label",
        "localities": {"basis": "X_umap", "n_neighbors": 250},
        "correlations": {},
        "n_modules": 9,
        "go": False,
    },
}
#: the kidney tutorial's feature recipe
KIDNEY_MIN_DETECTED = 0.2
KIDNEY_N_TOP = 300
#: the reduced MNIST of bench_amf_variants.py (same digits, pooling and UMAP, so the same C)
MNIST_N_OBS = 5000


# --------------------------------------------------------------------------------------------------------------------
# metrics (plain arrays; tests/test_bench_real.py checks them on hand-made inputs)


def covered_cells(indices: np.ndarray, presence: np.ndarray, n_obs: int, threshold: float = PRESENCE_THRESHOLD):
    """(n_obs,) bool: the cell is in at least one locality whose largest presence is >= ``threshold``.

    ``indices`` (l, n) are the localities' cells, ``presence`` (l, M) the modules' presence per locality.
    """
    good = np.asarray(presence).max(axis=1) >= threshold if np.size(presence) else np.zeros(len(indices), bool)
    covered = np.zeros(n_obs, dtype=bool)
    covered[np.unique(np.asarray(indices)[good])] = True
    return covered


def majority_labels(indices: np.ndarray, codes: np.ndarray, n_labels: int) -> np.ndarray:
    """(l,) int: the most frequent label code of each locality's cells (ties: the lower code)."""
    return np.array([np.bincount(codes[row], minlength=n_labels).argmax() for row in np.asarray(indices)], dtype=int)


def population_coverage(
    indices: np.ndarray,
    presence: np.ndarray,
    labels,
    *,
    threshold: float = PRESENCE_THRESHOLD,
    min_share: float = MIN_POPULATION_SHARE,
) -> list[dict]:
    """Per population with >= ``min_share`` of the cells: cell coverage and whether it has a module.

    A population's localities are those where it is the most frequent label; it ``has_module`` when some module's
    presence is >= ``threshold`` in at least one of them (False when it is the most frequent label of none).
    ``modules``: the modules reaching ``threshold`` in its localities.
    """
    labels = np.asarray(labels).astype(str)
    names, codes = np.unique(labels, return_inverse=True)
    presence = np.asarray(presence)
    covered = covered_cells(indices, presence, labels.size, threshold)
    majority = majority_labels(indices, codes, names.size)
    rows = []
    for k, name in enumerate(names):
        cells = codes == k
        share = float(cells.mean())
        if share < min_share:
            continue
        own = presence[majority == k]
        hits = own >= threshold
        rows.append(
            {
                "population": str(name),
                "share_of_cells": share,
                "cell_coverage": float(covered[cells].mean()),
                "n_localities": int(own.shape[0]),
                "locality_coverage": float(hits.any(axis=1).mean()) if own.shape[0] else 0.0,
                "has_module": bool(hits.any()),
                "modules": [int(m) for m in np.flatnonzero(hits.any(axis=0))],
            }
        )
    return rows


def jaccard(a, b) -> float:
    """Jaccard index of two sets (0 when both are empty)."""
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def distinct_modules(gene_sets: list, order=None, max_jaccard: float = MAX_JACCARD) -> tuple[list[int], float]:
    """Greedy distinct modules and the largest pairwise Jaccard.

    Modules are visited in ``order`` (default: as given); one is kept when its gene set has a Jaccard < ``max_jaccard``
    with every kept one. Empty gene sets are never kept. Returns the kept module numbers (in visiting order) and the
    largest Jaccard over all pairs of non-empty sets (0 with fewer than two).
    """
    order = list(range(len(gene_sets))) if order is None else [int(m) for m in order]
    kept: list[int] = []
    for m in order:
        if gene_sets[m] and all(jaccard(gene_sets[m], gene_sets[k]) < max_jaccard for k in kept):
            kept.append(m)
    nonempty = [m for m in range(len(gene_sets)) if gene_sets[m]]
    pairs = [jaccard(gene_sets[a], gene_sets[b]) for i, a in enumerate(nonempty) for b in nonempty[i + 1 :]]
    return kept, float(max(pairs)) if pairs else 0.0


def distinct_programmes(leads: list, order=None, max_overlap: float = MAX_JACCARD) -> list[int]:
    """Greedy distinct programmes by their leading genes, visited in ``order`` (default: as given).

    One is kept when it shares less than ``max_overlap`` of the smaller leading-gene set with every kept one (the
    overlap coefficient ``|A & B| / min(|A|, |B|)``, not the Jaccard index): leading genes that are mostly part of a
    kept programme's are that programme, e.g. five of the MHC class II genes beside all ten. Empty sets are never
    kept.
    """
    order = list(range(len(leads))) if order is None else [int(m) for m in order]
    kept: list[int] = []
    for m in order:
        a = set(leads[m])
        if a and all(len(a & set(leads[k])) / min(len(a), len(leads[k])) < max_overlap for k in kept):
            kept.append(m)
    return kept


def leading_genes(table, module: int, group: int | None = None) -> set[str]:
    """A module's genes in its most significant term (lowest p-value, then most genes, then name) of an enrichment
    table with lava.get.enrichment's columns; empty when the module has no row. ``group``: of that gene group's rows
    only (``lava.tl.enrich(by="group")``)."""
    rows = table.loc[table["module"] == module]
    if group is not None:
        rows = rows.loc[rows["group"] == group]
    if rows.empty:
        return set()
    top = rows.sort_values(["p_value", "n_overlap", "term"], ascending=[True, False, True], kind="stable").iloc[0]
    return {g for g in str(top["genes"]).split(";") if g}


def _unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)


def matched_cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosines of the optimal one-to-one matching of the rows of A with those of B (Hungarian, maximal total).

    Returns min(len(A), len(B)) cosines, in the order of A's matched rows; an all-zero row has cosine 0 with any row.
    """
    from scipy.optimize import linear_sum_assignment

    cos = _unit_rows(A) @ _unit_rows(B).T
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols]


def matched_share(A: np.ndarray, B: np.ndarray, threshold: float = MATCH_COSINE) -> float:
    """Share of modules (of the larger of the two fits) whose matched cosine is >= ``threshold``."""
    return _share(matched_cosines(A, B), max(len(A), len(B)), threshold)


def _share(cos: np.ndarray, n: int, threshold: float = MATCH_COSINE) -> float:
    return float(np.count_nonzero(cos >= threshold) / n) if n else 0.0


def background_features(C: np.ndarray, features) -> list[str]:
    """The features in at least one pair that is non-zero in at least one locality (pair order: upper triangle)."""
    features = np.asarray(features).astype(str)
    i, j = np.triu_indices(features.size, k=1)
    nonzero = np.asarray(C != 0).any(axis=0)
    keep = np.zeros(features.size, dtype=bool)
    keep[i[nonzero]] = True
    keep[j[nonzero]] = True
    return features[keep].tolist()


def mnist_findings(indices: np.ndarray, presence: np.ndarray, digits) -> dict:
    """The MNIST tutorial's reading of the paper's findings: which digits share a module.

    A locality's digit is its majority digit; a module belongs to the digits whose localities' mean presence is >= half
    of its largest such mean; a module "shared by 3/5/8" belongs to all of 3, 5, 8 and to at most 5 digits.
    """
    codes = np.asarray(digits).astype(int)
    majority = majority_labels(indices, codes, 10)
    presence = np.asarray(presence)
    by_digit = np.full((presence.shape[1], 10), np.nan)
    for d in range(10):
        if np.any(majority == d):
            by_digit[:, d] = presence[majority == d].mean(axis=0)
    module_digits = {}
    for m in range(presence.shape[1]):
        top = np.nanmax(by_digit[m]) if np.isfinite(by_digit[m]).any() else 0.0
        module_digits[m] = [int(d) for d in range(10) if top > 0 and by_digit[m, d] >= 0.5 * top]

    def shared(ds):
        return [m for m, own in module_digits.items() if set(ds) <= set(own) and len(own) <= 5]

    return {"module_digits": module_digits, "shared_358": shared({3, 5, 8}), "shared_479": shared({4, 7, 9})}


# --------------------------------------------------------------------------------------------------------------------
# data and the cached placement + correlations


def seed_data_cache(cache: Path) -> None:
    """Point lava's data cache at links to ../shared/data unless LAVA_DATA_DIR is set (as tests/conftest.py does)."""
    if "LAVA_DATA_DIR" in os.environ or not SHARED_DATA.is_dir():
        return
    data = cache / "data"
    data.mkdir(parents=True, exist_ok=True)
    for f in SHARED_DATA.iterdir():
        if f.suffix in {".npz", ".h5ad", ".gmt"} and not (data / f.name).exists():
            (data / f.name).symlink_to(f)
    os.environ["LAVA_DATA_DIR"] = str(data)


def _source_hash() -> str:
    """Fingerprint of lava's placement and correlation code: a cached C is recomputed when it changes."""
    digest = hashlib.sha256()
    for rel in ("core/placement.py", "core/_placement_numba.py", "core/_neighbors.py", "core/correlations.py",
                "core/_correlations_numba.py", "tl/_localities.py", "tl/_correlations.py"):  # fmt: skip
        path = ROOT / "src" / "lava" / rel
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_prepared(name: str, cache: Path):
    """The data set as the recipe prepares it (features marked), before any lava step."""
    import anndata as ad
    import scanpy as sc

    import lava

    if name == "kidney":
        adata = lava.datasets.kidney_immune()
        lava.pp.filter_mito_ribo(adata)
        sc.pp.filter_genes(adata, min_cells=int(KIDNEY_MIN_DETECTED * adata.n_obs))
        lava.pp.select_features(adata, n_top=KIDNEY_N_TOP)
        return adata
    if name == "pbmc":
        return lava.datasets.pbmc68k_reduced()
    if name == "mnist":
        path = cache / f"mnist_{MNIST_N_OBS}_pooled.h5ad"
        if path.exists():
            return ad.read_h5ad(path)
        import umap

        full = lava.datasets.mnist(n_obs=MNIST_N_OBS, rng=0)
        X = np.asarray(full.X, dtype=np.float32).reshape(-1, 14, 2, 14, 2).mean((2, 4)).reshape(-1, 196)
        adata = ad.AnnData(X, obs=full.obs[["label"]].copy())
        adata.obsm["X_umap"] = umap.UMAP(random_state=0, n_jobs=1).fit_transform(X).astype(np.float32)
        cache.mkdir(parents=True, exist_ok=True)
        adata.write_h5ad(path)
        return adata
    msg = f"unknown data set {name!r}; choose from {sorted(DATASETS)}"
    raise ValueError(msg)


def placed(name: str, seed: int, loc_kwargs: dict, corr_kwargs: dict, cache: Path, refresh: bool):
    """The prepared AnnData with localities and correlations, from the cache or computed (and cached)."""
    import anndata as ad

    import lava

    spec = {"data": name, "placement_seed": seed, "localities": loc_kwargs, "correlations": corr_kwargs}
    spec |= {"kidney": [KIDNEY_MIN_DETECTED, KIDNEY_N_TOP], "mnist": MNIST_N_OBS, "source": _source_hash()}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path, meta_path = cache / f"{name}_p{seed}_{digest}.h5ad", cache / f"{name}_p{seed}_{digest}.json"
    if path.exists() and meta_path.exists() and not refresh:
        return ad.read_h5ad(path), json.loads(meta_path.read_text()) | {"cached": True, "cache_key": digest}
    adata = load_prepared(name, cache)
    t0 = time.perf_counter()
    lava.tl.localities(adata, rng=seed, progress=False, **loc_kwargs)
    t1 = time.perf_counter()
    lava.tl.correlations(adata, progress=False, **corr_kwargs)
    t2 = time.perf_counter()
    C = np.asarray(adata.uns["lava"]["correlations"]["values"])
    meta = {
        "spec": spec,
        "cache_key": digest,
        "localities_s": t1 - t0,
        "correlations_s": t2 - t1,
        "n_localities": int(C.shape[0]),
        "n_features": len(adata.uns["lava"]["correlations"]["features"]),
        "n_pairs": int(C.shape[1]),
        "nonzero_pairs": int(np.count_nonzero(C.any(axis=0))),
        "nonzero_share_of_C": float(np.count_nonzero(C) / C.size),
    }
    cache.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    meta_path.write_text(json.dumps(meta, indent=1))
    return adata, meta | {"cached": False}


# --------------------------------------------------------------------------------------------------------------------
# one fit and its figures


def fit_and_score(adata, name: str, n_modules: int, seed: int, placement_seed: int, args, go_sets, background):
    """AMF (+ module genes, + GO) on a copy of ``adata``; returns the run's row and its arrays (modules, scores)."""
    import lava

    spec = DATASETS[name]
    work = adata.copy()
    t0 = time.perf_counter()
    if args.best_of > 1:  # the documented path: select_n_modules' runs at this M, the kept run (medoid) adopted
        lava.tl.select_n_modules(work, [n_modules], n_runs=args.best_of, rng=seed, progress=False, **args.amf)
        lava.tl.amf(work, from_selection=n_modules, progress=False)
    else:
        lava.tl.amf(work, n_modules, rng=seed, progress=False, **args.amf)
    t1 = time.perf_counter()
    lava.tl.module_genes(work, **args.module_genes)
    t2 = time.perf_counter()
    fit = work.uns["lava"]["amf"]
    indices = np.asarray(work.uns["lava"]["localities"]["indices"])
    presence = np.asarray(fit["presence"])
    modules = np.asarray(fit["modules"])
    table = lava.get.module_genes(work)
    gene_sets = [table.loc[table["module"] == m, "feature"].astype(str).tolist() for m in range(modules.shape[0])]
    order = np.argsort(-presence.sum(axis=0), kind="stable")
    kept, max_jac = distinct_modules(gene_sets, order)
    labels = work.obs[spec["label"]].to_numpy()
    populations = population_coverage(indices, presence, labels)
    row = {
        "data": name,
        "placement_seed": int(placement_seed),
        "seed": int(seed),
        "n_modules": int(n_modules),
        "amf_s": t1 - t0,
        "module_genes_s": t2 - t1,
        "loss": float(fit["loss"]),
        "similarity": float(fit["similarity"]),
        "overestimation_ratio": float(fit["overestimation_ratio"]),
        "n_epochs": int(fit["n_epochs"]),
        "converged": bool(fit["converged"]),
        "coverage": float(covered_cells(indices, presence, work.n_obs).mean()),
        "locality_coverage": float((presence.max(axis=1) >= PRESENCE_THRESHOLD).mean()),
        "populations": populations,
        "populations_with_module": int(sum(p["has_module"] for p in populations)),
        "n_populations": len(populations),
        "module_sizes": [len(g) for g in gene_sets],
        "distinct_modules": len(kept),
        "max_jaccard": max_jac,
    }
    if spec["go"] and go_sets is not None:
        testable = [m for m in range(modules.shape[0]) if gene_sets[m]]
        t3 = time.perf_counter()
        lava.tl.enrich(work, go_sets, modules=testable, background=background)
        row["enrich_s"] = time.perf_counter() - t3
        enr = lava.get.enrichment(work)
        significant = sorted({int(m) for m in enr.loc[enr["p_adjusted"] < GO_P_ADJUSTED, "module"]})
        go_kept, _ = distinct_modules(gene_sets, [m for m in order if m in significant])
        leads = [leading_genes(enr, m) if m in significant else set() for m in range(modules.shape[0])]
        programmes = distinct_programmes(leads, [m for m in order if m in significant])
        row |= {
            "go_programmes": len(programmes),
            "go_leading_genes": {int(m): sorted(leads[m]) for m in significant},
            "go_background": len(background),
            "go_significant": len(significant),
            "go_significant_modules": significant,
            "distinct_go": len(go_kept),
            "go_top_terms": {
                int(m): enr.loc[enr["module"] == m].nsmallest(3, "p_adjusted")["term"].tolist() for m in significant
            },
        }
        if (table["group"] >= 0).any():  # the core rule's gene groups, each tested (BH over the module's groups)
            lava.tl.enrich(work, go_sets, modules=testable, by="group", background=background)
            enr = lava.get.enrichment(work)
            units = enr.loc[enr["p_adjusted"] < GO_P_ADJUSTED, ["module", "group"]].drop_duplicates()
            visit = {int(m): r for r, m in enumerate(order)}  # modules by decreasing total presence
            units = sorted(
                ((int(m), int(g)) for m, g in units.itertuples(index=False)), key=lambda u: (visit[u[0]], u[1])
            )
            unit_leads = [leading_genes(enr, m, g) for m, g in units]
            unit_programmes = distinct_programmes(unit_leads)
            row |= {
                "go_group_programmes": len(unit_programmes),
                "go_group_significant_modules": len({m for m, _ in units}),
                "go_group_top_terms": {
                    f"{m}.{g}": enr.loc[(enr["module"] == m) & (enr["group"] == g)].iloc[0]["term"] for m, g in units
                },
                "go_group_leading_genes": {
                    f"{m}.{g}": sorted(lead) for (m, g), lead in zip(units, unit_leads, strict=True)
                },
            }
    if name == "mnist":
        found = mnist_findings(indices, presence, labels)
        ratio = row["overestimation_ratio"]
        row["mnist"] = found | {
            "ratio_below_0.15": ratio < 0.15,
            "paper_findings": bool(found["shared_358"] and found["shared_479"] and ratio < 0.15),
        }
    features = np.asarray(work.uns["lava"]["correlations"]["features"]).astype(str)
    scores = np.asarray(work.varm["lava_modules"])
    return row, {"modules": modules, "features": features, "scores": scores, "var_names": np.asarray(work.var_names)}


def compare_fits(a: dict, b: dict) -> dict:
    """Two fits matched: on module pair vectors when they share the features, else on feature scores (shared vars).

    Returns the share of modules matched at cosine >= 0.9, the median and mean matched cosine and what was compared.
    """
    if a["features"].size == b["features"].size and np.array_equal(a["features"], b["features"]):
        A, B, on = a["modules"], b["modules"], "pairs"
    else:
        _, ia, ib = np.intersect1d(a["var_names"], b["var_names"], return_indices=True)
        A, B, on = a["scores"][ia].T, b["scores"][ib].T, "feature scores"
    cos = matched_cosines(A, B)
    return {
        "share": _share(cos, max(len(A), len(B))),
        "median_cosine": float(np.median(cos)) if cos.size else 0.0,
        "mean_cosine": float(np.mean(cos)) if cos.size else 0.0,
        "on": on,
    }


def best_of_groups(seed_pairs: list, runs: list, args) -> dict:
    """Stability of a run kept from R fits, from the fits already made and compared (``seed_pairs``): no fit more.

    Per placement, the AMF seeds (in the order given) are cut into consecutive groups of R. Each group keeps one fit
    by each rule of ``lava.core.select_n_modules(keep=...)``: ``"loss"``, the lowest loss; ``"medoid"``, the fit with
    the largest mean matched module cosine to the others of its group (``lava.core.selection.medoid_run``; near-ties:
    the lower loss). The kept fits are compared as the seeds are: their pair's entry of ``seed_pairs``. For every R of
    ``--group-best`` that leaves at least 2 groups: per rule, the mean and smallest share matched at 0.9 over the kept
    pairs of all placements, and the number of groups per placement. R = 1 is the plain seed comparison.
    """
    from lava.core.selection import medoid_run

    loss = {(r["placement_seed"], r["seed"]): r["loss"] for r in runs}
    pairs = {}
    for r in seed_pairs:
        a, b = r["seeds"]
        pairs[r["placement_seed"], a, b] = pairs[r["placement_seed"], b, a] = r
    out = {}
    for R in args.group_best:
        n_groups = len(args.seeds) // R
        if R < 1 or n_groups < 2:
            continue
        shares = {"loss": [], "medoid": []}
        chosen_seeds = {"loss": {}, "medoid": {}}
        for p in args.placement_seeds:
            kept = {"loss": [], "medoid": []}
            for g in range(n_groups):
                group = args.seeds[g * R : (g + 1) * R]
                losses = np.array([loss[p, s] for s in group])
                others = [[pairs[p, s, t]["mean_cosine"] for t in group if t != s] for s in group]
                closeness = np.array([np.mean(c) for c in others]) if R > 1 else np.full(R, np.nan)
                kept["loss"].append(group[int(np.argmin(losses))])
                kept["medoid"].append(group[medoid_run(closeness, losses)])
            for rule, chosen in kept.items():
                chosen_seeds[rule][str(p)] = chosen
                shares[rule] += [pairs[p, a, b]["share"] for i, a in enumerate(chosen) for b in chosen[i + 1 :]]
        out[str(R)] = {"n_groups": n_groups, "kept_seeds": chosen_seeds} | {
            f"{rule}_share_{stat}": float(fn(values))
            for rule, values in shares.items()
            for stat, fn in (("mean", np.mean), ("min", np.min))
        }
    return out


# --------------------------------------------------------------------------------------------------------------------
# the reference rows: Hotspot and cNMF on the same genes


def _reference_values(adata, name: str):
    """The log-normalised values of lava's features (pbmc's X is scaled: its raw), an AnnData with the label column."""
    import anndata as ad
    from scipy import sparse

    spec = DATASETS[name]
    features = np.asarray(adata.uns["lava"]["correlations"]["features"]).astype(str)
    source = adata.raw.to_adata() if adata.raw is not None else adata
    X = source[:, features].X
    X = sparse.csc_matrix(X, dtype=np.float64) if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    out = ad.AnnData(X, obs=adata.obs[[spec["label"]]].copy())
    out.var_names = features
    return out


def score_reference(
    name: str, method: str, gene_sets: list, scores: np.ndarray, labels, go_sets, background, ids=None
) -> dict:
    """A peer's programmes (gene lists and per-cell scores, cells x programmes) scored as lava's modules are.

    ``ids``: the programmes' names in the peer's output (default 0, 1, ...), used in ``populations``' ``modules``,
    ``go_leading_genes`` and ``go_top_terms``.

    Distinct programmes (gene-set Jaccard < 0.5, visited largest first); per population, covered cells (some programme
    scores z >= ``HOTSPOT_Z`` over cells) and whether some programme's median z over its cells is >= ``HOTSPOT_Z``;
    GO with lava's background and test, GO-significant and distinct GO-significant programmes, and enriched
    programmes (:func:`distinct_programmes` on their :func:`leading_genes`).
    """
    import pandas as pd

    from lava.core import ora

    n = len(gene_sets)
    ids = list(range(n)) if ids is None else [int(i) for i in ids]
    order = np.argsort([-len(g) for g in gene_sets], kind="stable")
    kept, max_jac = distinct_modules(gene_sets, order)
    z = np.asarray(scores, dtype=np.float64).reshape(len(labels), n)
    sd = z.std(axis=0)
    z = (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    names, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    populations = []
    for k, pop in enumerate(names):
        cells = codes == k
        if cells.mean() < MIN_POPULATION_SHARE:
            continue
        med = np.median(z[cells], axis=0) if n else np.zeros(0)
        populations.append(
            {
                "population": str(pop),
                "share_of_cells": float(cells.mean()),
                "cell_coverage": float((z[cells] >= HOTSPOT_Z).any(axis=1).mean()) if n else 0.0,
                "has_module": bool((med >= HOTSPOT_Z).any()),
                "modules": [ids[i] for i in range(n) if med[i] >= HOTSPOT_Z],
            }
        )
    row = {
        "method": method,
        "n_modules": n,
        "module_sizes": [len(g) for g in gene_sets],
        "distinct_modules": len(kept),
        "max_jaccard": max_jac,
        "coverage": float((z >= HOTSPOT_Z).any(axis=1).mean()) if n else 0.0,
        "populations": populations,
        "populations_with_module": int(sum(p["has_module"] for p in populations)),
        "n_populations": len(populations),
    }
    if DATASETS[name]["go"] and go_sets is not None and n:
        bg = {g.upper() for g in background}
        queries = [[g.upper() for g in genes_ if g.upper() in bg] for genes_ in gene_sets]
        sets = {t: [g.upper() for g in gs] for t, gs in go_sets.items()}
        tested = [i for i in range(n) if queries[i]]  # a programme with no background gene cannot be tested
        res = ora([queries[i] for i in tested], sets, sorted(bg), min_size=5)
        significant = [i for r, i in enumerate(tested) if (res.p_adjusted[r] < GO_P_ADJUSTED).any()]
        go_kept, _ = distinct_modules(gene_sets, [m for m in order if m in significant])
        table = pd.DataFrame(  # lava.get.enrichment's columns that leading_genes reads, for the significant ones
            [
                {
                    "module": i,
                    "term": str(term),
                    "p_value": res.p_value[r, t],
                    "n_overlap": res.n_overlap[r, t],
                    "genes": ";".join(sorted(set(queries[i]) & set(sets[str(term)]))),
                }
                for r, i in enumerate(tested)
                if i in significant
                for t, term in enumerate(res.terms)
                if res.n_overlap[r, t] > 0
            ],
            columns=["module", "term", "p_value", "n_overlap", "genes"],
        )
        leads = [leading_genes(table, i) for i in range(n)]
        programmes = distinct_programmes(leads, [m for m in order if m in significant])
        row |= {
            "go_programmes": len(programmes),
            "go_leading_genes": {ids[i]: sorted(leads[i]) for i in significant},
            "go_background": len(bg),
            "genes_outside_background": int(sum(len(g) for g in gene_sets) - sum(len(q) for q in queries)),
            "go_significant": len(significant),
            "distinct_go": len(go_kept),
            "go_top_terms": {
                ids[i]: res.terms[np.argsort(res.p_adjusted[r], kind="stable")[:3]].astype(str).tolist()
                for r, i in enumerate(tested)
                if i in significant
            },
        }
    return row


def run_hotspot(adata, name: str, basis: str, options: dict, go_sets, background) -> dict:
    """Hotspot on lava's features and embedding: modules -> GO with the same background and distinct rule."""
    try:
        import hotspot
    except ImportError:
        return {"skipped": "hotspot is not importable (pip install hotspotsc)"}

    hs_data = _reference_values(adata, name)
    basis = basis if basis in adata.obsm else f"X_{basis}"  # "umap" or "X_umap", as lava.tl.localities takes it
    hs_data.obsm["X_umap"] = np.asarray(adata.obsm[basis], dtype=np.float64)
    opts = {"n_neighbors": 30, "min_gene_threshold": 10, "fdr": 0.05} | options
    t0 = time.perf_counter()
    hs = hotspot.Hotspot(hs_data, model="normal", latent_obsm_key="X_umap")
    hs.create_knn_graph(weighted_graph=False, n_neighbors=opts["n_neighbors"])
    auto = hs.compute_autocorrelations(jobs=1)
    genes = auto.index[auto["FDR"] < opts["fdr"]]
    hs.compute_local_correlations(genes, jobs=1)
    assignment = hs.create_modules(min_gene_threshold=opts["min_gene_threshold"], core_only=True, fdr_threshold=0.05)
    scores = hs.calculate_module_scores()
    seconds = time.perf_counter() - t0
    ids = sorted(int(m) for m in assignment.unique() if m != -1)
    gene_sets = [assignment.index[assignment == m].astype(str).tolist() for m in ids]
    z = np.asarray(scores[ids], dtype=np.float64) if ids else np.zeros((hs_data.n_obs, 0))
    labels = hs_data.obs[DATASETS[name]["label"]]
    row = score_reference(name, "hotspot", gene_sets, z, labels, go_sets, background, ids=ids)
    return {"method": "hotspot", "options": opts, "seconds": seconds, "n_autocorrelated_genes": len(genes)} | row


def run_cnmf(adata, name: str, n_programmes: int, options: dict, go_sets, background, workdir: Path) -> dict:
    """cNMF (``pip install cnmf``) on lava's features: K programmes, each one's top genes by spectra score -> GO.

    Neither data set ships raw counts, so cNMF gets the de-logged normalised values (``expm1`` of the log-normalised
    values) as both its counts and its TPM; it scales each gene to unit variance itself. ``options``: ``k`` (default
    lava's M), ``n_iter`` (100 NMF replicates), ``density_threshold`` (0.5, cNMF's tutorial value), ``top_genes`` (30
    genes per programme, about a tenth of the features: cNMF ranks genes, it does not cut lists) and ``seed`` (0).
    """
    try:
        import cnmf
    except ImportError:
        return {"skipped": "cnmf is not importable (pip install cnmf)"}
    import contextlib
    import io
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    from scipy import sparse

    opts = {"k": n_programmes, "n_iter": 100, "density_threshold": 0.5, "top_genes": 30, "seed": 0} | options
    data = _reference_values(adata, name)
    X = data.X.toarray() if sparse.issparse(data.X) else np.asarray(data.X)
    data.X = np.expm1(X)
    keep = data.X.sum(axis=1) > 0  # cNMF refuses cells without any count of its genes
    data = data[keep].copy()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    counts = workdir / "values.h5ad"
    data.write_h5ad(counts)
    (workdir / "genes.txt").write_text("\n".join(data.var_names))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run = cnmf.cNMF(output_dir=str(workdir), name="bench")
        run.prepare(
            counts_fn=str(counts),
            components=[opts["k"]],
            n_iter=opts["n_iter"],
            tpm_fn=str(counts),
            seed=opts["seed"],
            genes_file=str(workdir / "genes.txt"),
        )
        run.factorize(worker_i=0, total_workers=1)
        run.combine()
        run.consensus(k=opts["k"], density_threshold=opts["density_threshold"], show_clustering=False, build_ref=False)
        usage, spectra_scores, _, _ = run.load_results(K=opts["k"], density_threshold=opts["density_threshold"])
    seconds = time.perf_counter() - t0
    gene_sets = [  # spectra_scores: genes x programmes
        spectra_scores[p].sort_values(ascending=False, kind="stable").index[: opts["top_genes"]].astype(str).tolist()
        for p in spectra_scores.columns
    ]
    scores = np.zeros((adata.n_obs, len(gene_sets)))
    scores[keep] = np.asarray(usage, dtype=np.float64)
    row = score_reference(name, "cnmf", gene_sets, scores, adata.obs[DATASETS[name]["label"]], go_sets, background)
    return {"method": "cnmf", "options": opts, "seconds": seconds, "cells_without_counts": int((~keep).sum())} | row


def cached_reference(
    method: str, adata, name: str, cache_key: str, args, go_sets, background, *, basis: str, n_programmes: int
) -> dict:
    """:func:`run_hotspot` or :func:`run_cnmf`, cached beside the placement whose features and background it shares.

    ``basis`` is Hotspot's embedding, ``n_programmes`` cNMF's K (part of its cache key)."""
    options = args.hotspot_options if method == "hotspot" else {"k": n_programmes} | args.cnmf_options
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    path = args.cache / f"{name}_{method}_{cache_key}_{digest}.json"
    if path.exists() and not args.refresh_cache:
        return json.loads(path.read_text()) | {"cached": True}
    if method == "hotspot":
        row = run_hotspot(adata, name, basis, args.hotspot_options, go_sets, background)
    else:
        workdir = args.cache / f"{name}_cnmf_{cache_key}_{digest}"
        row = run_cnmf(adata, name, n_programmes, args.cnmf_options, go_sets, background, workdir)
    if "skipped" not in row:
        path.write_text(json.dumps(row, indent=1))
    return row


# --------------------------------------------------------------------------------------------------------------------
# the run


def _json_arg(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        msg = f"expected a JSON object of keyword arguments, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _n_modules_arg(tokens: list[str] | None, name: str) -> int:
    """``--n-modules 9`` for every data set, or ``--n-modules kidney=8 pbmc=6``; default: the recipe's."""
    for token in tokens or []:
        if "=" not in token:
            return int(token)
        data, value = token.split("=", 1)
        if data == name:
            return int(value)
    return DATASETS[name]["n_modules"]


def select_m(adata, args) -> tuple[int, dict]:
    """``lava.tl.select_n_modules`` over ``--select-range`` with ``--select-runs`` runs: the suggested M."""
    import lava

    work = adata.copy()
    lo, hi = args.select_range
    t0 = time.perf_counter()
    lava.tl.select_n_modules(work, range(lo, hi + 1), n_runs=args.select_runs, progress=False, **args.amf)
    sel = work.uns["lava"]["selection"]
    summary = sel["summary"]
    info = {
        "seconds": time.perf_counter() - t0,
        "range": [lo, hi],
        "n_runs": args.select_runs,
        "suggested": int(sel["suggested_n_modules"]),
        "summary": json.loads(summary.reset_index().to_json(orient="records")),
    }
    return info["suggested"], info


def run_dataset(name: str, args, go_sets) -> dict:
    spec = DATASETS[name]
    loc_kwargs = spec["localities"] | args.localities
    corr_kwargs = spec["correlations"] | args.correlations
    placements, fits, runs = {}, {}, []
    for p in args.placement_seeds:
        adata, meta = placed(name, p, loc_kwargs, corr_kwargs, args.cache, args.refresh_cache)
        C = np.asarray(adata.uns["lava"]["correlations"]["values"])
        background = background_features(C, adata.uns["lava"]["correlations"]["features"])
        meta["background_features"] = len(background)
        n_modules = _n_modules_arg(args.n_modules, name)
        if args.select_n_modules:
            n_modules, meta["selection"] = select_m(adata, args)
        meta["n_modules"] = n_modules
        placements[p] = meta
        print(f"[{name}] placement {p}: {json.dumps({k: v for k, v in meta.items() if k != 'spec'})}", flush=True)
        for s in args.seeds:
            row, arrays = fit_and_score(adata, name, n_modules, s, p, args, go_sets, background)
            runs.append(row)
            fits[p, s] = arrays
            brief = {
                k: v
                for k, v in row.items()
                if k not in ("populations", "go_top_terms", "module_sizes", "go_leading_genes")
            }
            print(f"[{name}] {json.dumps(brief)}", flush=True)
        for method in ("hotspot", "cnmf"):
            if p != args.placement_seeds[0] or not getattr(args, method) or name == "mnist":
                continue
            ref = cached_reference(
                method, adata, name, meta["cache_key"], args, go_sets, background,
                basis=loc_kwargs["basis"], n_programmes=n_modules,
            )  # fmt: skip
            placements[p][method] = ref
            print(f"[{name}] {method}: {json.dumps({k: v for k, v in ref.items() if k != 'populations'})}", flush=True)
    stability = {"amf_seed_pairs": [], "placement_pairs": []}
    for p in args.placement_seeds:
        for i, a in enumerate(args.seeds):
            for b in args.seeds[i + 1 :]:
                stability["amf_seed_pairs"].append(
                    {"placement_seed": p, "seeds": [a, b]} | compare_fits(fits[p, a], fits[p, b])
                )
    for i, p in enumerate(args.placement_seeds):
        for q in args.placement_seeds[i + 1 :]:
            for s in args.seeds:
                stability["placement_pairs"].append(
                    {"placement_seeds": [p, q], "seed": s} | compare_fits(fits[p, s], fits[q, s])
                )
    for p in args.placement_seeds:  # per placement too: one placement can be far less stable than another
        shares = [r["share"] for r in stability["amf_seed_pairs"] if r["placement_seed"] == p]
        stability.setdefault("amf_seed_share_by_placement", {})[str(p)] = float(np.mean(shares)) if shares else None
    stability["best_of"] = best_of_groups(stability["amf_seed_pairs"], runs, args)
    for part in ("amf_seed_pairs", "placement_pairs"):
        shares = [r["share"] for r in stability[part]]
        stability[part.replace("pairs", "share_mean")] = float(np.mean(shares)) if shares else None
        stability[part.replace("pairs", "share_min")] = float(np.min(shares)) if shares else None
        cosines = [r["median_cosine"] for r in stability[part]]
        stability[part.replace("pairs", "median_cosine")] = float(np.median(cosines)) if cosines else None
    return {
        "localities": loc_kwargs,
        "correlations": corr_kwargs,
        "placements": {str(p): m for p, m in placements.items()},
        "runs": runs,
        "stability": stability,
    }


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def markdown(results: dict) -> str:
    best_of = results["options"].get("best_of", 1)
    each = f" (each the run select_n_modules kept of {best_of})" if best_of > 1 else ""
    lines = [
        f"# bench_real ({results['tag']})",
        "",
        f"amf options: `{json.dumps(results['options']['amf'])}`; AMF seeds {results['options']['seeds']}{each}, "
        f"placement seeds {results['options']['placement_seeds']}; {results['machine']['platform']}",
        "",
        "| data | method | M | coverage | populations with a module | distinct modules | max Jaccard "
        "| GO-significant | distinct GO-significant | enriched programmes | enriched programmes (gene groups) "
        "| matched >= 0.9 over AMF seeds (min; median cosine) "
        "| over placements (median cosine) "
        "| ratio | s / fit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pops, notes = [], []
    for name, res in results["datasets"].items():
        runs = res["runs"]

        def med(key, runs=runs):
            vals = [r[key] for r in runs if r.get(key) is not None]
            return float(np.median(vals)) if vals else None

        def span(key, runs=runs, spec=".2f"):
            vals = [r[key] for r in runs if r.get(key) is not None]
            if not vals:
                return "-"
            lo, hi = min(vals), max(vals)
            return format(lo, spec) if lo == hi else f"{format(lo, spec)}-{format(hi, spec)}"

        st = res["stability"]
        lines.append(
            f"| {name} | lava | {span('n_modules', spec='d')} | {span('coverage')} "
            f"| {span('populations_with_module', spec='d')} of {runs[0]['n_populations']} "
            f"| {span('distinct_modules', spec='d')} | {span('max_jaccard')} | {span('go_significant', spec='d')} "
            f"| {span('distinct_go', spec='d')} | {span('go_programmes', spec='d')} "
            f"| {span('go_group_programmes', spec='d')} "
            f"| {_fmt(st['amf_seed_share_mean'])} ({_fmt(st['amf_seed_share_min'])}; "
            f"{_fmt(st['amf_seed_median_cosine'])}) | {_fmt(st['placement_share_mean'])} "
            f"({_fmt(st['placement_median_cosine'])}) | {span('overestimation_ratio')} | {_fmt(med('amf_s'), '.1f')} |"
        )
        if st.get("best_of"):
            by = ", ".join(f"{p}: {_fmt(v)}" for p, v in st["amf_seed_share_by_placement"].items())
            groups = "; ".join(
                f"R = {R} ({v['n_groups']} groups): lowest loss {_fmt(v['loss_share_mean'])} (min "
                f"{_fmt(v['loss_share_min'])}), medoid {_fmt(v['medoid_share_mean'])} (min {_fmt(v['medoid_share_min'])})"
                for R, v in st["best_of"].items()
            )
            notes.append(f"- {name}: matched >= 0.9 over AMF seeds per placement {by}; one fit kept of R: {groups}")
            R, v = list(st["best_of"].items())[-1]
            for rule, per_p in v["kept_seeds"].items():
                kept = [r for r in runs if r["seed"] in per_p.get(str(r["placement_seed"]), [])]
                line = (
                    f"- {name}, the fits kept by {rule} of R = {R}: populations with a module "
                    f"{sorted({r['populations_with_module'] for r in kept})}, coverage "
                    f"{min(r['coverage'] for r in kept):.2f}-{max(r['coverage'] for r in kept):.2f}, loss "
                    f"{min(r['loss'] for r in kept):.4f}-{max(r['loss'] for r in kept):.4f}"
                )
                if all("mnist" in r for r in kept):
                    line += (
                        f", all of MNIST's findings in {sum(r['mnist']['paper_findings'] for r in kept)} of {len(kept)}"
                    )
                elif all(r.get("go_significant") is not None for r in kept):
                    line += f", distinct GO-significant {sorted({r['distinct_go'] for r in kept})}"
                notes.append(line)
        first = res["placements"][str(results["options"]["placement_seeds"][0])]
        references = [(method, first[method]) for method in ("hotspot", "cnmf") if first.get(method)]
        for method, hs in references:
            if "skipped" in hs:
                lines.append(f"| {name} | {method} | skipped: {hs['skipped']} |" + " |" * 11)
                continue
            lines.append(
                f"| {name} | {method} | {hs['n_modules']} | {hs['coverage']:.2f} (z >= {HOTSPOT_Z:g}) "
                f"| {hs['populations_with_module']} of {hs['n_populations']} | {hs['distinct_modules']} "
                f"| {hs['max_jaccard']:.2f} | {hs.get('go_significant', '-')} | {hs.get('distinct_go', '-')} "
                f"| {hs.get('go_programmes', '-')} | - | - | - | - "
                f"| {hs['seconds']:.1f} |"
            )
        for r in runs:
            for p in r["populations"]:
                pops.append(
                    f"| {name} | {r['placement_seed']} | {r['seed']} | {p['population']} | {p['share_of_cells']:.2f} "
                    f"| {p['n_localities']} | {p['cell_coverage']:.2f} | {p['locality_coverage']:.2f} "
                    f"| {'yes' if p['has_module'] else 'no'} | {p['modules']} |"
                )
        for method, hs in references:
            for p in hs.get("populations", []):
                pops.append(
                    f"| {name} | {method} | - | {p['population']} | {p['share_of_cells']:.2f} | - "
                    f"| {p['cell_coverage']:.2f} | - | {'yes' if p['has_module'] else 'no'} | {p['modules']} |"
                )
        for r in runs:
            if "mnist" in r:
                found = r["mnist"]
                notes.append(
                    f"- MNIST placement {r['placement_seed']} seed {r['seed']}: modules shared by 3/5/8 "
                    f"{found['shared_358']}, by 4/7/9 {found['shared_479']}, ratio {r['overestimation_ratio']:.3f}: "
                    + ("the paper's findings" if found["paper_findings"] else "not all of the paper's findings")
                )
        found = [r["mnist"] for r in runs if "mnist" in r]
        if found:
            notes.append(
                f"- MNIST, {len(found)} fits: a 3/5/8 module in {sum(bool(f['shared_358']) for f in found)}, a 4/7/9 "
                f"module in {sum(bool(f['shared_479']) for f in found)}, all of the paper's findings in "
                f"{sum(f['paper_findings'] for f in found)}"
            )
    times = [
        "",
        "| data | placement seed | localities s | correlations s | l | features | non-zero pairs | background |",
    ]
    times.append("|---|---|---|---|---|---|---|---|")
    for name, res in results["datasets"].items():
        for p, m in res["placements"].items():
            times.append(
                f"| {name} | {p} | {m['localities_s']:.1f} | {m['correlations_s']:.1f} | {m['n_localities']} "
                f"| {m['n_features']} | {m['nonzero_pairs']} of {m['n_pairs']} | {m['background_features']} |"
            )
    head = [
        "",
        "Per population (populations with >= 5% of the cells; lava: presence >= 0.5; Hotspot: module score z >= 1; "
        "cNMF: usage z >= 1):",
        "",
        "| data | placement seed | AMF seed | population | share | localities (majority) | cells covered "
        "| its localities covered | has a module | modules |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + (["", *notes] if notes else []) + times + head + pops) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="AMF seeds (rng of lava.tl.amf)")
    parser.add_argument("--placement-seeds", type=int, nargs="+", default=[0], help="rng of lava.tl.localities")
    parser.add_argument("--n-modules", nargs="+", help="M for every data set, or per data set: kidney=8 pbmc=6")
    parser.add_argument("--select-n-modules", action="store_true", help="M from lava.tl.select_n_modules instead")
    parser.add_argument("--select-range", type=int, nargs=2, default=[2, 12], metavar=("LO", "HI"))
    parser.add_argument("--select-runs", type=int, default=3, help="n_runs of select_n_modules (default 3, not 10)")
    parser.add_argument(
        "--group-best",
        type=int,
        nargs="+",
        default=[1, 2, 5, 10],
        metavar="R",
        help="stability of one fit kept of R of the fits made, by lowest loss and by medoid (needs >= 2R seeds)",
    )
    parser.add_argument("--best-of", type=int, default=1, metavar="R",
                        help="each AMF seed: select_n_modules' R runs at M, the kept run adopted (from_selection)")  # fmt: skip
    parser.add_argument("--localities", type=_json_arg, default={}, help="JSON kwargs of lava.tl.localities")
    parser.add_argument("--correlations", type=_json_arg, default={}, help="JSON kwargs of lava.tl.correlations")
    parser.add_argument(
        "--amf", type=_json_arg, default={}, help='JSON kwargs of lava.tl.amf, e.g. \'{"loss": "paper"}\''
    )
    parser.add_argument("--module-genes", type=_json_arg, default={}, help="JSON kwargs of lava.tl.module_genes")
    parser.add_argument("--no-hotspot", dest="hotspot", action="store_false", help="skip the Hotspot reference row")
    parser.add_argument("--hotspot-options", type=_json_arg, default={},
                        help='JSON: n_neighbors (30), min_gene_threshold (10), fdr (0.05)')  # fmt: skip
    parser.add_argument("--no-cnmf", dest="cnmf", action="store_false", help="skip the cNMF reference row")
    parser.add_argument("--cnmf-options", type=_json_arg, default={},
                        help="JSON: k (lava's M), n_iter (100), density_threshold (0.5), top_genes (30), seed (0)")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_real_cache"))
    parser.add_argument("--refresh-cache", action="store_true", help="recompute placement and correlations")
    parser.add_argument("--threads", type=int, default=1, help="torch and numba threads")
    parser.add_argument("--tag", default="run", help="suffix of the output files")
    args = parser.parse_args(argv)

    os.environ.setdefault("TQDM_DISABLE", "1")  # Hotspot's progress bars (read when tqdm is imported)
    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    warnings.filterwarnings("ignore", message=".*IProgress not found.*")
    seed_data_cache(args.cache)

    import lava

    go_sets = lava.datasets.go_bp_human() if any(DATASETS[d]["go"] for d in args.data) else None
    results = {
        "tag": args.tag,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "threads": args.threads},
        "lava": lava.__version__,
        "options": {
            "data": args.data,
            "seeds": args.seeds,
            "placement_seeds": args.placement_seeds,
            "n_modules": args.n_modules,
            "select_n_modules": args.select_n_modules,
            "best_of": args.best_of,
            "amf": args.amf,
            "localities": args.localities,
            "correlations": args.correlations,
            "module_genes": args.module_genes,
        },
        "datasets": {},
    }
    OUT.mkdir(exist_ok=True)
    for name in args.data:
        results["datasets"][name] = run_dataset(name, args, go_sets)
        results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (OUT / f"bench_real_{args.tag}.json").write_text(json.dumps(results, indent=1, default=str))
        text = markdown(results)
        (OUT / f"bench_real_{args.tag}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
