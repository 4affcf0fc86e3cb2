"""Fit quality and reading figures (METHOD.md sections 3-5).

Zero conventions (so that an all-zero input never divides by zero):

- a cosine with an all-zero vector is 0 (:func:`locality_similarity`, :func:`placement_stability`);
- :func:`overestimation_ratio` of a perfect reconstruction (``sum |Chat - C| = 0``) is 0;
- :func:`reconstruction_similarity` with all weights 0 (all-zero ``C``) is 0;
- :func:`copresence_entropy` is NaN for localities whose raw presence sum is below ``min_total``;
- :func:`presence_weighted_average` of an all-zero presence matrix is the zero vector.
"""

from __future__ import annotations

import numpy as np

from ._factors import locality_weights, reconstruct

_EPS = 1e-8
_ROW_CHUNK = 64


def _rows_f64(X, r0):
    return np.asarray(X[r0 : r0 + _ROW_CHUNK], dtype=np.float64)


def overestimation_ratio(C: np.ndarray, C_hat: np.ndarray) -> float:
    """``sum(max(Chat - C, 0)) / sum(|Chat - C|)``: the share of the reconstruction error that overestimates.

    0 when ``Chat == C`` everywhere (no error at all). The paper reports < 0.15 with ``nu = 9`` (NMF: ~0.5).
    """
    C, C_hat = _same_shape(C, C_hat)
    over, total = 0.0, 0.0
    for r0 in range(0, C.shape[0], _ROW_CHUNK):
        d = _rows_f64(C_hat, r0) - _rows_f64(C, r0)
        over += float(np.maximum(d, 0).sum())
        total += float(np.abs(d).sum())
    return over / total if total > 0 else 0.0


def locality_similarity(C: np.ndarray, C_hat: np.ndarray) -> np.ndarray:
    """Cosine similarity between ``C_i`` and ``Chat_i`` for every locality (l,) float64; 0 for a zero row."""
    C, C_hat = _same_shape(C, C_hat)
    out = np.empty(C.shape[0], dtype=np.float64)
    for r0 in range(0, C.shape[0], _ROW_CHUNK):
        c, h = _rows_f64(C, r0), _rows_f64(C_hat, r0)
        out[r0 : r0 + _ROW_CHUNK] = _cosine_rows(c, h)
    return out


def _cosine_rows(c, h):
    nc = np.maximum(np.sqrt(np.einsum("ij,ij->i", c, c)), _EPS)
    nh = np.maximum(np.sqrt(np.einsum("ij,ij->i", h, h)), _EPS)
    return np.einsum("ij,ij->i", c, h) / (nc * nh)


def reconstruction_similarity(C: np.ndarray, C_hat: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Return the a-weighted mean cosine similarity ``sum_i a_i cos(C_i, Chat_i) / sum_i a_i`` (no overestimation weight).

    ``weights`` default to ``a_i = ||C_i|| / sum_{k != i} ||C_k||`` (:func:`lava.core.locality_weights`).
    0 when all weights are 0.
    """
    C, C_hat = _same_shape(C, C_hat)
    a = locality_weights(C) if weights is None else np.asarray(weights, dtype=np.float64)
    if a.shape != (C.shape[0],):
        msg = f"weights must have one value per locality ({C.shape[0]}), got shape {a.shape}."
        raise ValueError(msg)
    total = a.sum()
    if total <= 0:
        return 0.0
    return float((a * locality_similarity(C, C_hat)).sum() / total)


def _fit_figures(C, presence, modules, *, weights):
    """(similarity, overestimation ratio, locality similarity) of a fit without forming the full reconstruction."""
    n_loc = C.shape[0]
    loc = np.empty(n_loc, dtype=np.float64)
    over, total = 0.0, 0.0
    for r0 in range(0, n_loc, _ROW_CHUNK):
        c = _rows_f64(C, r0)
        h = reconstruct(presence[r0 : r0 + _ROW_CHUNK], modules).astype(np.float64)
        loc[r0 : r0 + _ROW_CHUNK] = _cosine_rows(c, h)
        d = h - c
        over += float(np.maximum(d, 0).sum())
        total += float(np.abs(d).sum())
    a = np.asarray(weights, dtype=np.float64)
    similarity = float((a * loc).sum() / a.sum()) if a.sum() > 0 else 0.0
    return similarity, (over / total if total > 0 else 0.0), loc


def copresence_entropy(presence: np.ndarray, *, min_total: float = 0.5) -> np.ndarray:
    """Co-presence per locality: Shannon entropy (bits) of its presences scaled to sum 1.

    0 means one module explains the locality, ``log2(M)`` that all modules are equally present. Localities whose
    raw presence sum is below ``min_total`` are ignored: their value is NaN (use ``np.nanmean`` to summarise,
    as the paper's mean +- sd does). Returns (l,) float64.
    """
    presence = np.asarray(presence, dtype=np.float64)
    if presence.ndim != 2:
        msg = f"presence must be 2-D (localities x modules), got shape {presence.shape}."
        raise ValueError(msg)
    if (presence < 0).any():
        msg = "presence must be non-negative."
        raise ValueError(msg)
    totals = presence.sum(1)
    keep = totals >= min_total
    out = np.full(presence.shape[0], np.nan)
    if keep.any():
        p = presence[keep] / totals[keep, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
        out[keep] = -terms.sum(1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return out


def presence_weighted_average(presence: np.ndarray, modules: np.ndarray) -> np.ndarray:
    """``sum_m (sum_i Pres[i, m]) Mod[m] / sum_m sum_i Pres[i, m]`` (P,) float64; zeros if presence is all 0.

    A summary of a whole fit, comparable across runs and placements by cosine (METHOD.md section 4).
    """
    presence = np.asarray(presence, dtype=np.float64)
    modules = np.asarray(modules, dtype=np.float64)
    if presence.ndim != 2 or modules.ndim != 2 or presence.shape[1] != modules.shape[0]:
        msg = f"presence (l, M) and modules (M, P) must share M; got {presence.shape} and {modules.shape}."
        raise ValueError(msg)
    mass = presence.sum(0)
    total = mass.sum()
    if total <= 0:
        return np.zeros(modules.shape[1])
    return mass @ modules / total


def placement_stability(C_a: np.ndarray, C_b: np.ndarray) -> float:
    """Cosine between the column means of two correlation matrices (same pairs, any number of localities).

    Compares two placements (paper: > 0.993 across seeds and overlaps). 0 if either mean is all zero.
    """
    C_a, C_b = np.asarray(C_a), np.asarray(C_b)
    if C_a.ndim != 2 or C_b.ndim != 2 or C_a.shape[1] != C_b.shape[1]:
        msg = f"C_a and C_b must be 2-D with the same pairs (columns); got {C_a.shape} and {C_b.shape}."
        raise ValueError(msg)
    mean_a = _column_mean(C_a)
    mean_b = _column_mean(C_b)
    return float(_cosine_rows(mean_a[None], mean_b[None])[0])


def _column_mean(C):
    total = np.zeros(C.shape[1], dtype=np.float64)
    for r0 in range(0, C.shape[0], _ROW_CHUNK):
        total += _rows_f64(C, r0).sum(0)
    return total / max(C.shape[0], 1)


def feature_scores(modules: np.ndarray, n_features: int) -> np.ndarray:
    """Per feature and module, the sum of the module's correlations over the pairs the feature is in.

    ``modules`` is (M, P) with P = D(D-1)/2 pairs in upper-triangle row-major order of D = ``n_features``.
    Returns (D, M) float64.
    """
    modules = np.asarray(modules, dtype=np.float64)
    n_pairs = n_features * (n_features - 1) // 2
    if modules.ndim != 2 or modules.shape[1] != n_pairs:
        msg = (
            f"modules must be (M, P) with P = n_features (n_features - 1) / 2 = {n_pairs} for {n_features} features;"
            f" got shape {modules.shape}."
        )
        raise ValueError(msg)
    i, j = np.triu_indices(n_features, k=1)
    out = np.empty((n_features, modules.shape[0]), dtype=np.float64)
    for m, row in enumerate(modules):
        out[:, m] = np.bincount(i, weights=row, minlength=n_features) + np.bincount(
            j, weights=row, minlength=n_features
        )
    return out


#: Near-duplicate modules (:func:`duplicate_modules`): module cosine and presence correlation at least these.
DUPLICATE_COSINE = 0.5
DUPLICATE_PRESENCE_R = 0.8


def duplicate_modules(
    modules: np.ndarray,
    presence: np.ndarray,
    *,
    cosine: float = DUPLICATE_COSINE,
    presence_r: float = DUPLICATE_PRESENCE_R,
) -> list[tuple[int, int, float, float]]:
    """Pairs of near-duplicate modules: ``[(a, b, cosine, presence_r), ...]`` with ``a < b``.

    Two modules are near-duplicates when they share their pairs (cosine of the module vectors >= ``cosine``) *and*
    are present in the same localities (Pearson correlation of their presences over the localities >=
    ``presence_r``): together they describe one programme that the fit split in two. Modules that share pairs
    but sit in different localities (one programme in two populations), or that sit in the same localities on other
    pairs (two programmes of one population), are not duplicates. A module whose presence is constant has no
    presence correlation and is never a duplicate.
    """
    modules = np.asarray(modules, dtype=np.float64)
    presence = np.asarray(presence, dtype=np.float64)
    if modules.ndim != 2 or presence.ndim != 2 or presence.shape[1] != modules.shape[0]:
        msg = f"modules must be (M, P) and presence (l, M) with the same M; got {modules.shape}, {presence.shape}."
        raise ValueError(msg)
    norms = np.linalg.norm(modules, axis=1)
    unit = modules / np.maximum(norms, 1e-12)[:, None]
    cos = unit @ unit.T
    centred = presence - presence.mean(0)
    spread = np.linalg.norm(centred, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (centred.T @ centred) / np.outer(spread, spread)
    out = []
    for a in range(modules.shape[0]):
        for b in range(a + 1, modules.shape[0]):
            if norms[a] > 0 and norms[b] > 0 and spread[a] > 0 and spread[b] > 0:
                if cos[a, b] >= cosine and r[a, b] >= presence_r:
                    out.append((a, b, float(cos[a, b]), float(r[a, b])))
    return out


#: :func:`core_features` measures a module's core pairs against its ``CORE_REFERENCE_RANK``-th largest pair value.
CORE_REFERENCE_RANK = 10


def core_features(
    modules: np.ndarray, n_features: int, *, threshold: float = 0.5, reference_rank: int = CORE_REFERENCE_RANK
) -> np.ndarray:
    """Per feature and module, whether the feature is in one of the module's core pairs: (D, M) bool.

    A module's core pairs are its positive pairs whose value is at least ``threshold`` times the module's reference
    value: its ``reference_rank``-th largest pair value (its smallest positive value when fewer pairs are positive;
    ``reference_rank=1``: its largest value). An all-zero module has none. ``modules`` is (M, P) in upper-triangle
    row-major order of D = ``n_features``.

    Why not the largest value: a module's top pair is often a pair of paralogues or of co-transcribed neighbours
    (HLA-DRB1 and HLA-DRB5, HSPA1A and HSPA1B) whose correlation stands above the rest of the module, or a value
    saturated at 1. Measured against it, the bar cuts a module down to its one strongest clique: on pbmc68k_reduced the
    monocyte and dendritic-cell modules kept little but their MHC class II genes (lists with Jaccard 0.52-0.73). The 10th
    largest value, the weakest pair of the module's strongest 5-gene clique, is the strength of a programme rather
    than of one pair (``benchmarks/RESULTS.md``).
    """
    modules = _check_core_args(modules, n_features, reference_rank)
    i, j = np.triu_indices(n_features, k=1)
    out = np.zeros((n_features, modules.shape[0]), dtype=bool)
    for m, row in enumerate(modules):
        reference = _core_reference(row, reference_rank)
        if reference is None:
            continue
        core = (row > 0) & (row >= threshold * reference)
        out[i[core], m] = True
        out[j[core], m] = True
    return out


def gene_groups(
    modules: np.ndarray, n_features: int, *, threshold: float = 0.5, reference_rank: int = CORE_REFERENCE_RANK
) -> np.ndarray:
    """Per feature and module, the group of the module's core features the feature is in: (D, M) int, -1 outside.

    A module's core features (:func:`core_features`, same ``threshold`` and ``reference_rank``) are clustered by the
    module's own pair values: average linkage, two clusters merging while the mean module value over the pairs
    between them is at least the core cut (``threshold`` x the reference value). So a group is a set of genes whose
    pairs are, on average, as strong as a core pair, and two groups of one module are cliques the module holds side
    by side.

    Why: the max-product model cannot tell two programmes that are present in the same localities from one module
    holding both (the reconstruction is the same), so a module can carry several programmes of one population, e.g.
    pbmc68k_reduced's B-cell module held the MHC class II genes, the B-cell receptor genes and an ER-stress programme
    of plasma cells, and its gene list enriched only for the first. Groups are numbered within each module by
    decreasing size (ties: the lowest feature index first); a core feature whose mean value with every group is below
    the cut is a group of one.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    modules = _check_core_args(modules, n_features, reference_rank)
    i, j = np.triu_indices(n_features, k=1)
    out = np.full((n_features, modules.shape[0]), -1, dtype=np.int64)
    for m, row in enumerate(modules):
        reference = _core_reference(row, reference_rank)
        if reference is None:
            continue
        cut = threshold * reference
        core = (row > 0) & (row >= cut)
        genes = np.unique(np.concatenate([i[core], j[core]]))
        a, b = np.triu_indices(genes.size, k=1)  # scipy's condensed order
        a, b = genes[a], genes[b]
        values = row[a * n_features - a * (a + 1) // 2 + (b - a - 1)]
        top = float(row.max())  # distances top - value: a mean distance <= top - cut is a mean value >= cut
        tree = linkage(top - values, method="average")
        labels = fcluster(tree, t=top - cut, criterion="distance")
        ids, first, sizes = np.unique(labels, return_index=True, return_counts=True)
        order = np.lexsort((first, -sizes))  # by decreasing size, then the lowest feature index
        number = np.empty(ids.size, dtype=np.int64)
        number[order] = np.arange(ids.size)
        out[genes, m] = number[np.searchsorted(ids, labels)]
    return out


def _check_core_args(modules, n_features: int, reference_rank) -> np.ndarray:
    modules = np.asarray(modules, dtype=np.float64)
    n_pairs = n_features * (n_features - 1) // 2
    if modules.ndim != 2 or modules.shape[1] != n_pairs:
        msg = f"modules must be (M, P) with P = {n_pairs} for {n_features} features; got shape {modules.shape}."
        raise ValueError(msg)
    if isinstance(reference_rank, bool) or not isinstance(reference_rank, int | np.integer) or reference_rank < 1:
        msg = f"reference_rank must be a positive integer (1: the module's largest value), got {reference_rank!r}."
        raise ValueError(msg)
    return modules


def _core_reference(row: np.ndarray, reference_rank: int) -> float | None:
    """Return a module's reference value (its ``reference_rank``-th largest positive value); None: no positive value."""
    positive = row[row > 0]
    if positive.size == 0:
        return None
    rank = min(int(reference_rank), positive.size)
    return float(np.partition(positive, positive.size - rank)[positive.size - rank])


def _same_shape(C, C_hat):
    C, C_hat = np.asarray(C), np.asarray(C_hat)
    if C.shape != C_hat.shape or C.ndim != 2:
        msg = f"C and C_hat must be 2-D arrays of the same shape, got {C.shape} and {C_hat.shape}."
        raise ValueError(msg)
    return C, C_hat
