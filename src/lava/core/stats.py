"""Statistics for reading modules (METHOD.md section 5): BH adjustment, over-representation, association.

Plain functions on arrays and string collections; no AnnData, no pandas, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse, stats


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), NaN-aware.

    Parameters
    ----------
    pvalues
        p-values of any shape. NaNs stay NaN and do not count as tests.

    Returns
    -------
    Adjusted p-values, float64, same shape: ``min_{j >= i} min(1, p_(j) m / j)`` over the sorted p-values,
    with ``m`` the number of finite p-values.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    flat = p.ravel()
    ok = np.flatnonzero(~np.isnan(flat))
    m = ok.size
    if m == 0:
        return out
    vals = flat[ok]
    if np.any((vals < 0) | (vals > 1)):
        msg = "p-values must lie in [0, 1]."
        raise ValueError(msg)
    order = np.argsort(vals)  # ties get equal adjusted values whatever their order
    scaled = vals[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    res = np.empty(m)
    res[order] = adjusted
    out_flat = out.ravel()
    out_flat[ok] = res
    return out_flat.reshape(p.shape)


@dataclass(frozen=True)
class ORAResult:
    """Over-representation analysis of Q gene lists (queries) against T gene sets (terms).

    Attributes
    ----------
    terms
        (T,) names of the tested gene sets (those whose size within the background is in the size range).
    set_size
        (T,) int, number of each set's genes in the background.
    n_query
        (Q,) int, number of each query's genes in the background.
    n_background
        Number of background genes.
    n_overlap
        (Q, T) int, genes of a query in a set.
    p_value
        (Q, T) float64, hypergeometric upper tail ``P(X >= n_overlap)``.
    p_adjusted
        (Q, T) float64, Benjamini-Hochberg adjusted within each query (row), over all T tested sets.
    odds_ratio
        (Q, T) float64, with the Haldane-Anscombe correction (+0.5 per cell), as gseapy reports it.
    background
        (G,) the background genes, in the order used by ``query_membership`` and ``set_membership``.
    set_membership
        (T, G) CSR, 1 where a background gene is in a set.
    query_membership
        (G, Q) CSC, 1 where a background gene is in a query.
    """

    terms: np.ndarray
    set_size: np.ndarray
    n_query: np.ndarray
    n_background: int
    n_overlap: np.ndarray
    p_value: np.ndarray
    p_adjusted: np.ndarray
    odds_ratio: np.ndarray
    background: np.ndarray
    set_membership: sparse.csr_matrix
    query_membership: sparse.csc_matrix

    def overlap_genes(self, query: int, term: int) -> list[str]:
        """Genes of query ``query`` in set ``term`` (indices into the rows/columns), in background order."""
        in_set = self.set_membership[term].toarray().ravel() > 0
        in_query = self.query_membership[:, query].toarray().ravel() > 0
        return self.background[in_set & in_query].tolist()


def _as_gene_list(genes, what: str) -> list[str]:
    if isinstance(genes, str):
        msg = f"{what} must be a collection of gene names, got the single string {genes!r}; wrap it in a list."
        raise TypeError(msg)
    return [str(g) for g in genes]


def ora(
    module_genes: Sequence[Iterable[str]],
    gene_sets: Mapping[str, Iterable[str]],
    background: Iterable[str],
    *,
    min_size: int = 1,
    max_size: int | None = None,
) -> ORAResult:
    """Over-representation analysis: hypergeometric test of each gene list against each gene set.

    For a background of ``N`` genes, a query of ``n`` background genes, a set of ``K`` background genes and
    ``k`` genes in both, ``p = P(X >= k)`` with ``X ~ Hypergeometric(N, K, n)`` (``scipy.stats.hypergeom.sf(k - 1,
    N, K, n)``), the test of gseapy's offline ``enrich`` and Enrichr. Queries and sets are first restricted to the
    background. Names are matched exactly (case-sensitive); normalise case before calling if needed.

    Parameters
    ----------
    module_genes
        One gene collection per query (e.g. per module); a single list goes in as ``[genes]``.
    gene_sets
        Mapping of set name to its genes.
    background
        The gene universe: every gene that could have been in a query.
    min_size, max_size
        Keep only sets with ``min_size <= K <= max_size`` genes in the background (``max_size=None``: no upper
        bound). Only kept sets are tested and count in the BH adjustment.

    Returns
    -------
    :class:`ORAResult` with (Q, T) arrays of overlaps, p-values, BH-adjusted p-values (per query) and odds ratios.
    """
    if isinstance(module_genes, str) or not isinstance(module_genes, Sequence):
        msg = "module_genes must be a sequence of gene collections, one per query (e.g. [genes_a, genes_b])."
        raise TypeError(msg)
    queries = [_as_gene_list(q, f"module_genes[{i}]") for i, q in enumerate(module_genes)]
    bg = np.asarray(list(dict.fromkeys(_as_gene_list(background, "background"))), dtype=object)
    if bg.size == 0:
        msg = "the background is empty; pass the genes that could have been selected."
        raise ValueError(msg)
    position = {g: i for i, g in enumerate(bg)}
    G = bg.size

    names, rows, cols = [], [], []
    for name, genes in gene_sets.items():
        idx = sorted({position[g] for g in _as_gene_list(genes, f"gene set {name!r}") if g in position})
        size = len(idx)
        if size < max(min_size, 1) or (max_size is not None and size > max_size):
            continue
        rows.extend([len(names)] * size)
        cols.extend(idx)
        names.append(str(name))
    T = len(names)
    S = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(T, G))

    q_rows, q_cols = [], []
    for j, q in enumerate(queries):
        idx = sorted({position[g] for g in q if g in position})
        q_rows.extend(idx)
        q_cols.extend([j] * len(idx))
    Q = len(queries)
    Qm = sparse.csc_matrix((np.ones(len(q_rows)), (q_rows, q_cols)), shape=(G, Q))

    set_size = np.asarray(S.sum(axis=1)).ravel().astype(np.int64)
    n_query = np.asarray(Qm.sum(axis=0)).ravel().astype(np.int64)
    n_overlap = np.asarray((S @ Qm).T.toarray()).astype(np.int64).reshape(Q, T)

    K = set_size[None, :]
    n = n_query[:, None]
    k = n_overlap
    p_value = stats.hypergeom.sf(k - 1, G, K, n) if T and Q else np.empty((Q, T))
    p_value = np.clip(np.asarray(p_value, dtype=np.float64).reshape(Q, T), 0.0, 1.0)
    p_adjusted = np.vstack([benjamini_hochberg(row) for row in p_value]) if Q else np.empty((0, T))
    odds_ratio = ((k + 0.5) * (G - K - n + k + 0.5)) / ((K - k + 0.5) * (n - k + 0.5))
    return ORAResult(
        terms=np.asarray(names, dtype=object),
        set_size=set_size,
        n_query=n_query,
        n_background=int(G),
        n_overlap=n_overlap,
        p_value=p_value,
        p_adjusted=p_adjusted.reshape(Q, T),
        odds_ratio=np.asarray(odds_ratio, dtype=np.float64).reshape(Q, T),
        background=bg,
        set_membership=S,
        query_membership=Qm,
    )


def _rank_columns(values: np.ndarray) -> np.ndarray:
    """Average ranks along axis 0 (ties averaged), as scipy.stats.spearmanr."""
    return stats.rankdata(values, axis=0, method="average")


def _pearson_columns(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson r between ``x`` (n,) and each column of ``Y`` (n, ...); NaN where a side is constant."""
    xc = x - x.mean()
    Yc = Y - Y.mean(axis=0, keepdims=True)
    num = np.tensordot(xc, Yc, axes=(0, 0))
    den = np.sqrt(np.sum(xc**2)) * np.sqrt(np.sum(Yc**2, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    # a side that is constant up to rounding has no defined correlation
    tiny = np.sqrt(np.finfo(np.float64).eps)
    scale_x = max(np.max(np.abs(x)), 1e-300)
    scale_y = np.maximum(np.max(np.abs(Y), axis=0), 1e-300)
    const = (np.sqrt(np.sum(xc**2)) <= tiny * scale_x) | (np.sqrt(np.sum(Yc**2, axis=0)) <= tiny * scale_y)
    r = np.where(const, np.nan, np.clip(r, -1.0, 1.0))
    return r


def correlation_pvalue(r, n: int) -> np.ndarray:
    """Two-sided p-value of a correlation ``r`` over ``n`` pairs (exact under bivariate normality).

    ``r`` follows a Beta(n/2 - 1, n/2 - 1) law on [-1, 1] under independence, as in ``scipy.stats.pearsonr``;
    the same value as the t-test with ``n - 2`` degrees of freedom used by ``scipy.stats.spearmanr``.
    """
    r = np.asarray(r, dtype=np.float64)
    if n < 3:
        return np.full(r.shape, np.nan)
    ab = n / 2 - 1
    with np.errstate(invalid="ignore"):
        p = 2 * stats.beta.sf(np.abs(r), ab, ab, loc=-1, scale=2)
    return np.where(np.isnan(r), np.nan, np.clip(p, 0.0, 1.0))


def association_test(
    presence, values, *, method: Literal["pearson", "spearman"] = "pearson"
) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of a module's presence with each column of ``values`` over the same localities.

    Parameters
    ----------
    presence
        (L,) presence of one module in L localities.
    values
        (L,) or (L, K, ...) per-locality values (e.g. the fraction of a locality's samples in each category);
        every trailing position is tested separately.
    method
        ``"pearson"``, or ``"spearman"`` (Pearson correlation of average ranks).

    Returns
    -------
    ``(r, p)``: correlations and two-sided p-values, shape ``values.shape[1:]``; NaN where either side is constant
    or L < 3.
    """
    x = np.asarray(presence, dtype=np.float64)
    Y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or Y.ndim < 1 or Y.shape[0] != x.shape[0]:
        msg = f"presence must be 1-D with one value per locality and values (L, ...); got {x.shape} and {Y.shape}."
        raise ValueError(msg)
    if method not in ("pearson", "spearman"):
        msg = f"method must be 'pearson' or 'spearman', got {method!r}."
        raise ValueError(msg)
    n = x.shape[0]
    if n < 3:
        nan = np.full(Y.shape[1:], np.nan)
        return nan, nan.copy()
    if method == "spearman":
        x = _rank_columns(x)
        Y = _rank_columns(Y)
    r = _pearson_columns(x, Y)
    return r, correlation_pvalue(r, n)


def empirical_pvalue(observed, null, *, axis: int = -1) -> np.ndarray:
    """Two-sided permutation p-value ``(1 + #{|null| >= |observed|}) / (N + 1)``, in ``[1/(N+1), 1]``.

    ``null`` holds N permutation statistics along ``axis``; ``observed`` has the shape of ``null`` without it.
    NaN null values count as not exceeding; a NaN observed statistic gives NaN.
    """
    obs = np.abs(np.asarray(observed, dtype=np.float64))
    nul = np.moveaxis(np.abs(np.asarray(null, dtype=np.float64)), axis, -1)
    N = nul.shape[-1]
    # a permutation equal to the observed labelling reproduces |r| up to rounding: count it as reaching it
    tol = 1e-12 * np.maximum(obs, 1.0)
    with np.errstate(invalid="ignore"):
        exceed = np.sum(nul >= (obs - tol)[..., None], axis=-1)
    p = (1.0 + exceed) / (N + 1.0)
    return np.where(np.isnan(obs), np.nan, p)


def membership_matrix(indices, n_samples: int) -> sparse.csr_matrix:
    """(l, E) CSR with 1 where sample e is in locality i (``indices``: (l, n) sample positions)."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 2:
        msg = f"indices must be 2-D (localities x samples per locality), got shape {idx.shape}."
        raise ValueError(msg)
    if idx.size and (idx.min() < 0 or idx.max() >= n_samples):
        msg = f"indices must be sample positions in [0, {n_samples}), found {idx.min()}..{idx.max()}."
        raise ValueError(msg)
    n_loc, n = idx.shape
    data = np.ones(idx.size, dtype=np.float64)
    indptr = np.arange(0, n_loc * n + 1, n, dtype=np.int64)
    M = sparse.csr_matrix((data, idx.ravel(), indptr), shape=(n_loc, n_samples))
    M.sum_duplicates()
    return M


def locality_means(indices, values) -> np.ndarray:
    """Mean of per-sample ``values`` ((E,) or (E, K)) over each locality's samples: (l,) or (l, K).

    With one-hot category indicators as ``values`` this is the fraction of each locality's samples per category.
    """
    idx = np.asarray(indices, dtype=np.int64)
    V = np.asarray(values, dtype=np.float64)
    A = membership_matrix(idx, V.shape[0])
    return np.asarray(A @ V) / idx.shape[1]
