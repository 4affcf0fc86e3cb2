"""Step 1 on AnnData: probe placement and localities; the neighbourhood-retention curve for choosing their size."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .. import _store
from .._compat import RngLike, as_seed
from .._docs import doc_params
from .._validate import check_not_view, get_data, get_embedding
from ..core import placement

#: Default overlap: the paper's single-cell setting (KPMP, o = 3); it recommends 2-20.
DEFAULT_OVERLAP = 3.0
#: Default locality size cap: the paper's single-cell setting (KPMP, n = 500).
MAX_DEFAULT_NEIGHBORS = 500
#: Default query samples of the neighbourhood-retention curve.
DEFAULT_RETENTION_SAMPLES = 2000


def default_n_neighbors(n_obs: int) -> int:
    """Return the default locality size: ``min(500, max(10, n_obs // 20))``, at most ``n_obs``.

    500 is what the paper used for 225k kidney cells; on small data sets a locality stays at 5% of the samples,
    so that localities can differ from each other, with at least 10 samples for a meaningful rank correlation.
    """
    return int(min(n_obs, MAX_DEFAULT_NEIGHBORS, max(10, n_obs // 20)))


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name} must be an integer, got {value!r}."
        raise TypeError(msg)
    return int(value)


@doc_params()
def localities(
    adata: AnnData,
    *,
    basis: str = "X_umap",
    n_neighbors: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    optimize: bool = True,
    maxfun: int | None = None,
    rng: RngLike = 0,
    key_added: str = "lava",
    copy: bool = False,
    progress: bool = True,
) -> AnnData | None:
    """Place probes over an embedding and define localities: the ``n_neighbors`` samples nearest each probe.

    LAVA step 1. The number of localities is ``l = round(n_obs * overlap / n_neighbors)``. Probes are the
    centroids of a weighted k-means (k = l) whose sample weights ``(in_i / E)^alpha (1 / dbar_i)^beta`` are tuned
    by DIRECT so that each sample lies in about as many localities as sample neighbourhoods contain it
    (see :func:`lava.core.place_localities`). Works on any ``obsm`` embedding of any dimension.

    Parameters
    ----------
    {adata}
    basis
        ``obsm`` key of the embedding (``"umap"`` and ``"X_umap"`` both work): UMAP, PCA, a model's latent space.
    n_neighbors
        Locality size ``n`` (between 3 and ``n_obs``). Default ``min(500, max(10, n_obs // 20))``: the paper's
        single-cell value, or 5% of the samples on small data. Choose it from
        :func:`lava.tl.neighborhood_retention` or from the size of the smallest population of interest.
    overlap
        ``o``: with uniform density every sample lies in about ``o`` localities. Default 3 (the paper's
        single-cell setting; it recommends 2-20 and ``l`` at most a few thousand).
    optimize
        Tune the k-means weights with DIRECT; ``False`` places probes by unweighted k-means (one evaluation).
    maxfun
        Budget of centrality-loss evaluations (default 50, at least 5): DIRECT gets ``maxfun - maxfun // 5``
        (all of it below 10), then the best exponents are rerun with ``maxfun // 5`` other k-means seeds and
        the best placement is kept.
    {rng}
    {key_added}
    {copy}
    {progress}

    Returns
    -------
    Returns ``None`` (or a copy when ``copy=True``) and sets:

    ``adata.uns[key_added]["localities"]``
        ``indices`` (l x n int64, samples of each locality, nearest to the probe first), ``probes``
        (l x d float64), ``alpha``, ``beta``, ``loss``, ``loss_unoptimized`` (the loss at alpha = beta = 0)
        (float), ``evaluations`` (k x 3 float64: alpha, beta, loss of each evaluation), ``kmeans_iterations``
        (k int64), ``basis`` (str, the obsm key), ``n_neighbors`` (int), ``overlap`` (float).
    ``adata.obs[key_added + "_neighborhood_centrality"]``
        float64, relative neighbourhood in-degree centrality ``in_i / n`` (mean 1).
    ``adata.obs[key_added + "_locality_centrality"]``
        float64, relative locality in-degree centrality ``in_loc_i E / (l n)`` (mean 1).
    ``adata.uns[key_added]["params"]["localities"]``
        Every argument, JSON-encoded, with the seed used as ``rng``.

    Re-running drops results that depend on the localities (correlations, modules, ...).
    """
    if not isinstance(adata, AnnData):
        msg = f"adata must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if not isinstance(key_added, str) or not key_added:
        msg = f"key_added must be a non-empty string, got {key_added!r}."
        raise TypeError(msg)
    check_not_view(adata, copy)
    name, Z = get_embedding(adata, basis)
    E = Z.shape[0]
    n = default_n_neighbors(E) if n_neighbors is None else _check_int(n_neighbors, "n_neighbors")
    if not 3 <= n <= E:
        msg = f"n_neighbors must be between 3 and n_obs={E}, got {n}; pass a smaller n_neighbors or more samples."
        raise ValueError(msg)
    if isinstance(overlap, bool) or not isinstance(overlap, int | float | np.number):
        msg = f"overlap must be a number, got {overlap!r}."
        raise TypeError(msg)
    if not (math.isfinite(overlap) and overlap > 0):
        msg = f"overlap must be a finite number > 0, got {overlap!r} (the paper uses 2-20)."
        raise ValueError(msg)
    n_loc = math.floor(E * overlap / n + 0.5)
    if n_loc > E:
        msg = (
            f"n_obs * overlap / n_neighbors = {E} * {overlap} / {n} gives {n_loc} localities, more than the "
            f"{E} samples; lower overlap (below n_neighbors) or raise n_neighbors."
        )
        raise ValueError(msg)
    if not isinstance(optimize, bool | np.bool_):
        msg = f"optimize must be True or False, got {optimize!r}."
        raise TypeError(msg)
    maxfun = placement.DEFAULT_MAXFUN if maxfun is None else _check_int(maxfun, "maxfun")
    if maxfun < 5:
        msg = f"maxfun must be >= 5 (DIRECT's first iteration takes 5 evaluations), got {maxfun}."
        raise ValueError(msg)
    seed = as_seed(rng)

    n_loc = placement.n_localities(E, n, overlap)
    start = logg.info(f"placing {n_loc} localities of {n} samples on {name!r} ({Z.shape[1]}-D)")
    result = placement.place_localities(
        Z, n, float(overlap), optimize=bool(optimize), maxfun=maxfun, rng=seed, progress=progress
    )

    adata = adata.copy() if copy else adata
    stored = {
        "indices": result.indices,
        "probes": result.probes,
        "alpha": result.alpha,
        "beta": result.beta,
        "loss": result.loss,
        "loss_unoptimized": result.loss_unoptimized,
        "evaluations": result.evaluations,
        "kmeans_iterations": result.kmeans_iterations,
        "basis": name,
        "n_neighbors": n,
        "overlap": float(overlap),
    }
    params = {
        "basis": basis,
        "n_neighbors": n,
        "overlap": float(overlap),
        "optimize": bool(optimize),
        "maxfun": maxfun,
        "rng": seed,
        "key_added": key_added,
        "copy": bool(copy),
        "progress": bool(progress),
    }
    centrality_key, locality_key = _store.obs_keys(key_added)
    _store.store_step(
        adata,
        key_added,
        "localities",
        stored,
        params,
        obs={centrality_key: result.neighborhood_centrality, locality_key: result.locality_centrality},
    )
    logg.finished(
        start,
        f"centrality loss {result.loss:.4g} (unweighted k-means: {result.loss_unoptimized:.4g}) "
        f"at alpha={result.alpha:.3g}, beta={result.beta:.3g} after {result.n_evaluations} evaluations",
    )
    return adata if copy else None


def _retention_summary(table: pd.DataFrame, n_obs: int) -> str:
    """Say which size rises most above the random baseline, among those below ``n_obs`` (the log line)."""
    candidates = table[table["n_neighbors"] < n_obs]
    if candidates.empty:
        return f"every size is n_obs = {n_obs} (Jaccard 1 for any embedding): pass sizes below it to choose n"
    excess = candidates["jaccard"] - candidates["jaccard_random"]
    best = candidates.loc[excess.idxmax()]
    n = int(best["n_neighbors"])
    text = (
        f"mean Jaccard highest above random sets at n_neighbors={n} ({best['jaccard']:.3f}; random sets "
        f"{best['jaccard_random']:.3f})"
    )
    if n == int(candidates["n_neighbors"].max()) and len(candidates) > 1:
        text += "; that is the largest size evaluated: the curve may still rise, evaluate larger sizes"
    return text


@doc_params()
def neighborhood_retention(
    adata: AnnData,
    *,
    basis: str = "X_umap",
    use_rep: str | None = None,
    sizes=None,
    n_samples: int | None = DEFAULT_RETENTION_SAMPLES,
    rng: RngLike = 0,
    key_added: str = "lava",
    copy: bool = False,
) -> AnnData | None:
    """Neighbourhood retention of an embedding: Jaccard similarity of n-nearest sets, original vs embedding.

    For each size ``n``, the mean over samples of the Jaccard similarity between the sample's ``n`` nearest
    neighbours in the original space (``use_rep``) and in the embedding (``basis``). The ``n`` where it peaks
    is a data-driven locality size for :func:`lava.tl.localities` (the paper found about 3000 for a default
    UMAP of MNIST, although UMAP used 15 neighbours). This is a diagnostic, not a pipeline step: it does not
    drop other results.

    Two random sets of ``n`` of the ``n_obs`` samples already have a Jaccard similarity of about
    ``n / (2 n_obs - n)``, which reaches 1 at ``n = n_obs`` for any embedding. The size logged as the best is
    therefore the one where the curve rises most above that baseline, among the sizes below ``n_obs`` (at
    ``n_obs`` the similarity is 1 trivially); where the paper's peak lies at ``n`` far below ``n_obs`` (MNIST) the
    baseline is near 0 and both choices agree. The log says when that size is the largest evaluated (the curve
    may still rise: evaluate larger sizes).

    Parameters
    ----------
    {adata}
    basis
        ``obsm`` key of the embedding.
    use_rep
        The original space: ``None`` for ``adata.X`` (dense or sparse), or an ``obsm`` key such as ``"X_pca"``.
    sizes
        Neighbourhood sizes to evaluate (integers between 1 and ``n_obs``). Default: 12 sizes spaced
        geometrically from 10 to ``min(5000, n_obs // 2)`` (beyond half the samples, random sets overlap by a
        third or more, and a locality that large leaves only a few localities).
    n_samples
        Average over this many randomly chosen samples (all when ``None``); 2000 gives a standard error of the
        mean below 0.01.
    {rng}
    {key_added}
    {copy}

    Returns
    -------
    Returns ``None`` (or a copy when ``copy=True``) and sets:

    ``adata.uns[key_added]["neighborhood_retention"]``
        DataFrame with columns ``n_neighbors`` (int64), ``jaccard`` and ``jaccard_std`` (float64; mean and
        standard deviation over the query samples) and ``jaccard_random`` (float64, ``n / (2 n_obs - n)``: the
        Jaccard similarity of two random sets of that size, the baseline to compare with).
    ``adata.uns[key_added]["params"]["neighborhood_retention"]``
        Every argument, JSON-encoded, with the seed used as ``rng``.
    """
    if not isinstance(adata, AnnData):
        msg = f"adata must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if not isinstance(key_added, str) or not key_added:
        msg = f"key_added must be a non-empty string, got {key_added!r}."
        raise TypeError(msg)
    check_not_view(adata, copy)
    name, Z = get_embedding(adata, basis)
    E = Z.shape[0]
    if use_rep is None:
        X, _, where = get_data(adata)
        if not hasattr(X, "tocsr") and not isinstance(X, np.ndarray):
            X = np.asarray(X)
        from .._validate import check_finite

        check_finite(X, where)
    else:
        where, X = get_embedding(adata, use_rep)
        where = f"adata.obsm[{where!r}]"
    if sizes is None:
        top = max(1, min(5000, E // 2))
        sizes = np.unique(np.round(np.geomspace(min(10, top), top, 12)).astype(np.int64))
    else:
        sizes = np.asarray(sizes)
        if sizes.size == 0 or sizes.dtype.kind not in "iu":
            msg = f"sizes must be a non-empty sequence of integers, got {sizes!r}."
            raise TypeError(msg)
        if sizes.min() < 1 or sizes.max() > E:
            msg = f"sizes must lie between 1 and n_obs={E}, got {sizes.tolist()}."
            raise ValueError(msg)
    if n_samples is not None:
        n_samples = _check_int(n_samples, "n_samples")
        if n_samples < 1:
            msg = f"n_samples must be >= 1 (or None for all samples), got {n_samples}."
            raise ValueError(msg)
    seed = as_seed(rng)

    start = logg.info(f"computing neighbourhood retention of {name!r} against {where}")
    sizes_out, jaccard, jaccard_std = placement.neighborhood_retention(X, Z, sizes, rng=seed, n_samples=n_samples)
    n = sizes_out.astype(np.int64)
    table = pd.DataFrame(
        {"n_neighbors": n, "jaccard": jaccard, "jaccard_std": jaccard_std, "jaccard_random": n / (2.0 * E - n)}
    )

    adata = adata.copy() if copy else adata
    uns = adata.uns.setdefault(key_added, {})
    uns["neighborhood_retention"] = table
    params = {
        "basis": basis,
        "use_rep": use_rep,
        "sizes": sizes_out.tolist(),
        "n_samples": n_samples,
        "rng": seed,
        "key_added": key_added,
        "copy": bool(copy),
    }
    from .. import __version__

    all_params = dict(uns.get("params", {}))
    all_params["neighborhood_retention"] = _store.encode_params({**params, "lava_version": __version__})
    uns["params"] = all_params
    logg.finished(start, _retention_summary(table, E))
    logg.logger.info("    added 'neighborhood_retention' to adata.uns[%r]", key_added)
    return adata if copy else None
