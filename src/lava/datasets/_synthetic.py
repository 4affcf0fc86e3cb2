"""A seeded synthetic dataset with planted, region-specific correlation modules (ground truth for tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .._compat import RngLike, as_seed
from .._docs import doc_params

#: Rows generated at a time; fixed so that results do not depend on the machine.
_CHUNK = 16384
#: Standard deviation of the log-rate in the counts model; large enough that Poisson noise does not drown the signal.
_LOG_SCALE = 2.0


def default_layout(n_modules: int) -> np.ndarray:
    """Region x module layout of :func:`synthetic` with ``layout="default"``.

    One region per module carrying it alone (except the co-located module ``B``), then

    - a region carrying modules ``A`` and ``B`` together (``B = 3, A = 2`` for ``n_modules >= 4``; otherwise
      ``B = n_modules - 1, A = B - 1``): ``B`` occurs ONLY together with ``A``, ``A`` also occurs alone;
    - a region carrying modules 0 and 4 (``n_modules >= 5``; module 0 alone otherwise): module 0 recurs in a distant
      region, and that region carries two modules;
    - a second region carrying module 1 alone (``n_modules >= 3``): module 1 recurs in two distant regions;
    - one empty region (no module).

    Parameters
    ----------
    n_modules
        Number of planted modules (>= 1).

    Returns
    -------
    Boolean array (n_regions, n_modules): ``layout[r, m]`` is True when region ``r`` carries module ``m``.
    For ``n_modules = 6`` the regions are ``{0}, {1}, {2}, {4}, {5}, {2, 3}, {0, 4}, {1}, {}``.
    """
    if isinstance(n_modules, bool) or not isinstance(n_modules, int | np.integer) or n_modules < 1:
        msg = f"n_modules must be an integer >= 1, got {n_modules!r}."
        raise ValueError(msg)
    M = int(n_modules)
    b = 3 if M >= 4 else (M - 1 if M >= 2 else None)
    regions: list[set[int]] = [{m} for m in range(M) if m != b]
    if b is not None:
        regions.append({b - 1, b})
    regions.append({0, 4} if M >= 5 else {0})
    if M >= 2 and b != 1:
        regions.append({1})
    regions.append(set())
    layout = np.zeros((len(regions), M), dtype=bool)
    for r, mods in enumerate(regions):
        layout[r, sorted(mods)] = True
    return layout


def _simple_layout(n_modules: int) -> np.ndarray:
    return np.vstack([np.eye(n_modules, dtype=bool), np.zeros((1, n_modules), dtype=bool)])


def _resolve_layout(layout, n_modules: int, n_regions: int | None) -> tuple[np.ndarray, str]:
    if isinstance(layout, str):
        if layout == "default":
            base, name = default_layout(n_modules), "default"
        elif layout == "simple":
            base, name = _simple_layout(n_modules), "simple"
        else:
            msg = f"layout must be 'default', 'simple' or a boolean (n_regions, n_modules) array, got {layout!r}."
            raise ValueError(msg)
    else:
        base = np.asarray(layout)
        if base.ndim != 2 or base.shape[1] != n_modules or base.shape[0] < 1:
            msg = f"a layout array must have shape (n_regions, n_modules={n_modules}), got {base.shape}."
            raise ValueError(msg)
        if base.dtype != bool and not np.isin(base, (0, 1)).all():
            msg = "a layout array must be boolean (or 0/1): layout[r, m] says whether region r carries module m."
            raise ValueError(msg)
        base, name = base.astype(bool), "custom"
    if n_regions is None:
        return base, name
    if isinstance(n_regions, bool) or not isinstance(n_regions, int | np.integer) or n_regions < base.shape[0]:
        msg = f"n_regions must be an integer >= {base.shape[0]} (the regions of layout {name!r}), got {n_regions!r}."
        raise ValueError(msg)
    # extra regions repeat the layout's non-empty regions in turn, so modules recur in more places
    nonempty = np.flatnonzero(base.any(axis=1))
    if nonempty.size == 0:
        nonempty = np.arange(base.shape[0])
    extra = [base[nonempty[k % nonempty.size]] for k in range(int(n_regions) - base.shape[0])]
    return (np.vstack([base, *extra]) if extra else base), name


def _region_sizes(n_obs: int, n_regions: int, gen: np.random.Generator) -> np.ndarray:
    weights = gen.uniform(0.5, 1.5, n_regions)
    exact = n_obs * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)
    remainder = n_obs - sizes.sum()
    sizes[np.argsort(sizes - exact)[:remainder]] += 1
    return sizes


def _log_rate_offsets(zero_fraction: np.ndarray) -> np.ndarray:
    """Per-feature mean log-rate ``mu`` so that P(Poisson(exp(mu + s * y)) = 0) = zero_fraction for y ~ N(0, 1)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    lo = np.full(zero_fraction.shape, -30.0)
    hi = np.full(zero_fraction.shape, 30.0)
    for _ in range(80):  # bisection: P(0) decreases monotonically in mu
        mu = (lo + hi) / 2
        p0 = (weights * np.exp(-np.exp(np.minimum(mu[:, None] + _LOG_SCALE * nodes, 30.0)))).sum(axis=1)
        too_sparse = p0 > zero_fraction
        lo = np.where(too_sparse, mu, lo)
        hi = np.where(too_sparse, hi, mu)
    return (lo + hi) / 2


@doc_params()
def synthetic(
    n_obs: int = 5000,
    n_vars: int = 200,
    n_modules: int = 6,
    *,
    n_regions: int | None = None,
    module_size: int | None = None,
    sparsity: float = 0.0,
    signal: float = 0.8,
    layout: Literal["default", "simple"] | np.ndarray = "default",
    dense: bool | None = None,
    n_donors: int = 4,
    condition_module: int = 0,
    rng: RngLike = 0,
):
    """Simulate an embedding whose regions differ in feature correlation, with the planted truth.

    The embedding ``obsm["X_umap"]`` is made of well-separated Gaussian blobs ("regions") of varied size and
    density. Each planted module is a block of ``module_size`` features that share a latent factor in the cells of
    the regions carrying that module (feature = ``sqrt(signal) * factor + sqrt(1 - signal) * noise``), so their
    pairwise correlation there is about ``signal``; elsewhere every feature varies independently. Modules are
    disjoint blocks of consecutive features (module 0 = ``g0000`` ... ``g{module_size - 1}``); the remaining
    features never correlate. See :func:`default_layout` and the datasets page of the docs for the layout.

    Parameters
    ----------
    n_obs
        Number of samples (cells).
    n_vars
        Number of features (genes).
    n_modules
        Number of planted modules.
    n_regions
        Number of regions; default: the layout's. More regions than the layout has repeat its non-empty regions
        in turn (so modules recur in more places).
    module_size
        Features per module; default ``max(2, n_vars // (2 * n_modules))`` (half the features are in modules).
    sparsity
        0 (default): Gaussian features (dense float32). Above 0: a counts-like model. Each feature gets a
        Poisson count with rate ``exp(mu_j + 2 * y)`` from the same latent value ``y``, and ``X = log1p(count)``.
        ``mu_j`` is set so that a fraction of about ``sparsity`` of the values are 0; it varies by feature
        (+- 0.1). The counts' noise weakens correlations: at ``signal=0.8`` the within-region
        ``|Spearman|`` of module pairs is about 0.8 (dense), 0.67 (sparsity 0.3), 0.57 (0.5) and 0.45 (0.7). Beyond
        about 0.75 most features fail lava's tie filter (more than 75% zeros in a locality).
    signal
        Share of a module feature's variance that comes from the module's factor, in (0, 1]; the within-region
        Pearson correlation of two features of a module.
    layout
        ``"default"`` (see :func:`default_layout`), ``"simple"`` (region ``m`` carries module ``m`` alone, plus one
        empty region), or a boolean array (n_regions, n_modules).
    dense
        Store ``X`` as a dense ndarray (True) or CSR (False). Default: dense when ``sparsity == 0``, CSR otherwise.
    n_donors
        Number of donors in ``obs["donor"]``; each region draws 70% of its cells from one donor (region ``r`` from
        donor ``r % n_donors``) and the rest uniformly, so donors cluster within regions.
    condition_module
        ``obs["condition"]`` is ``"disease"`` with probability 0.8 in the regions carrying this module and 0.2
        elsewhere ("control" otherwise): a covariate planted to follow one module, for association tests.
    {rng}

    Returns
    -------
    AnnData (n_obs x n_vars), samples shuffled (regions interleaved), with

    ``X``
        float32, dense ndarray or CSR (see ``dense``).
    ``obsm["X_umap"]``
        float32 (n_obs, 2): the embedding.
    ``obs["region"]``, ``obs["donor"]``, ``obs["condition"]``
        categorical: region names ``"R0"`` ..., donor names ``"D0"`` ..., ``"control"`` / ``"disease"``.
    ``var["module"]``
        int64: the module a feature belongs to, -1 for none. ``var_names`` are ``"g0000"``, ``"g0001"``, ...
    ``uns["synthetic"]``
        the ground truth: ``module_features`` (bool, n_modules x n_vars), ``region_modules`` (bool,
        n_regions x n_modules), ``region_names`` (str, n_regions), ``region_centers`` (float, n_regions x 2),
        ``region_sizes`` (int, n_regions), ``params`` (dict: every argument, the seed used, ``layout`` name).
        :func:`planted_modules` and :func:`planted_presence` turn it into LAVA's module and presence shapes.

    Examples
    --------
    >>> import lava
    >>> adata = lava.datasets.synthetic(2000, 60, 3, rng=0)
    >>> adata.uns["synthetic"]["region_modules"].astype(int)  # doctest: +SKIP
    """
    import anndata as ad

    checks = (("n_obs", n_obs, 1), ("n_vars", n_vars, 2), ("n_modules", n_modules, 1), ("n_donors", n_donors, 1))
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            msg = f"{name} must be an integer >= {low}, got {value!r}."
            raise ValueError(msg)
    base_layout, layout_name = _resolve_layout(layout, n_modules, n_regions)
    region_modules = base_layout
    R, M = region_modules.shape
    if module_size is None:
        module_size = max(2, n_vars // (2 * M))
    if isinstance(module_size, bool) or not isinstance(module_size, int | np.integer) or module_size < 2:
        msg = f"module_size must be an integer >= 2, got {module_size!r}."
        raise ValueError(msg)
    if M * module_size > n_vars:
        msg = (
            f"n_modules * module_size = {M * module_size} exceeds n_vars = {n_vars}; "
            "pass a smaller module_size or more n_vars."
        )
        raise ValueError(msg)
    if n_obs < 2 * R:
        msg = f"n_obs = {n_obs} is too small for {R} regions; pass n_obs >= {2 * R}."
        raise ValueError(msg)
    if not isinstance(sparsity, int | float | np.number) or not 0 <= sparsity < 1:
        msg = f"sparsity must be a number in [0, 1), got {sparsity!r}."
        raise ValueError(msg)
    if not isinstance(signal, int | float | np.number) or not 0 < signal <= 1:
        msg = f"signal must be a number in (0, 1], got {signal!r}."
        raise ValueError(msg)
    if isinstance(condition_module, bool) or not isinstance(condition_module, int | np.integer):
        msg = f"condition_module must be an integer module index, got {condition_module!r}."
        raise TypeError(msg)
    if not 0 <= condition_module < M:
        msg = f"condition_module must be in [0, {M - 1}], got {condition_module}."
        raise ValueError(msg)
    if dense is None:
        dense = sparsity == 0
    seed = as_seed(rng)
    # independent streams, so that e.g. changing sparsity leaves the embedding and metadata unchanged
    g_layout, g_embed, g_meta, g_feat = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))

    # regions: sizes, centres on a jittered grid (consecutive regions are neighbours, so region r and r + 6 are far)
    sizes = _region_sizes(n_obs, R, g_layout)
    n_cols = int(np.ceil(np.sqrt(R)))
    spacing = 10.0
    grid = np.column_stack([np.arange(R) % n_cols, np.arange(R) // n_cols]).astype(np.float64) * spacing
    centers = grid + g_layout.uniform(-1.0, 1.0, (R, 2))
    spreads = g_layout.uniform(0.5, 1.5, R)
    region = np.repeat(np.arange(R), sizes)
    order = g_layout.permutation(n_obs)
    region = region[order]

    Z = centers[region] + spreads[region, None] * g_embed.standard_normal((n_obs, 2))

    dominant = region % n_donors
    other = g_meta.integers(0, n_donors, n_obs)
    donor = np.where(g_meta.random(n_obs) < 0.7, dominant, other)
    p_disease = np.where(region_modules[region, condition_module], 0.8, 0.2)
    disease = g_meta.random(n_obs) < p_disease

    module_of = np.full(n_vars, -1, dtype=np.int64)
    module_of[: M * module_size] = np.repeat(np.arange(M), module_size)
    module_features = module_of[None, :] == np.arange(M)[:, None]
    if sparsity > 0:
        target = np.clip(sparsity + g_feat.uniform(-0.1, 0.1, n_vars), 0.01, 0.99)
        mu = _log_rate_offsets(target).astype(np.float32)

    a, b = np.float32(np.sqrt(signal)), np.float32(np.sqrt(1.0 - signal))
    carries = region_modules[region]  # (n_obs, M)
    blocks = []
    X = np.empty((n_obs, n_vars), dtype=np.float32) if dense else None
    for start in range(0, n_obs, _CHUNK):
        stop = min(start + _CHUNK, n_obs)
        if dense and sparsity == 0:  # draw straight into X: no copy
            Y = X[start:stop]
            g_feat.standard_normal(dtype=np.float32, out=Y)
        else:
            Y = g_feat.standard_normal((stop - start, n_vars), dtype=np.float32)
        factors = g_feat.standard_normal((stop - start, M), dtype=np.float32)
        for m in range(M):
            rows = np.flatnonzero(carries[start:stop, m])
            if rows.size == 0:
                continue
            cols = slice(m * module_size, (m + 1) * module_size)
            Y[rows, cols] = a * factors[rows, m, None] + b * Y[rows, cols]
        if sparsity > 0:
            np.multiply(Y, np.float32(_LOG_SCALE), out=Y)
            Y += mu
            np.minimum(Y, np.float32(30.0), out=Y)
            np.exp(Y, out=Y)
            Y = np.log1p(g_feat.poisson(Y).astype(np.float32))
        if dense:
            if Y.base is not X:
                X[start:stop] = Y
        else:
            blocks.append(sparse.csr_matrix(Y))
    if not dense:
        X = blocks[0] if len(blocks) == 1 else sparse.vstack(blocks, format="csr")
        X = X.astype(np.float32, copy=False)
        del blocks

    width = max(4, len(str(n_vars - 1)))
    var_names = [f"g{j:0{width}d}" for j in range(n_vars)]
    obs_width = len(str(n_obs - 1))
    region_names = np.array([f"R{r}" for r in range(R)])
    obs = pd.DataFrame(
        {
            "region": pd.Categorical.from_codes(region, categories=region_names),
            "donor": pd.Categorical.from_codes(donor, categories=[f"D{d}" for d in range(n_donors)]),
            "condition": pd.Categorical.from_codes(disease.astype(np.int8), categories=["control", "disease"]),
        },
        index=pd.Index([f"c{i:0{obs_width}d}" for i in range(n_obs)]),
    )
    var = pd.DataFrame({"module": module_of}, index=pd.Index(var_names))
    params = {
        "n_obs": int(n_obs),
        "n_vars": int(n_vars),
        "n_modules": int(M),
        "n_regions": int(R),
        "module_size": int(module_size),
        "sparsity": float(sparsity),
        "signal": float(signal),
        "layout": layout_name,
        "dense": bool(dense),
        "n_donors": int(n_donors),
        "condition_module": int(condition_module),
        "seed": int(seed),
    }
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["X_umap"] = Z.astype(np.float32)
    adata.uns["synthetic"] = {
        "module_features": module_features,
        "region_modules": region_modules.copy(),
        "region_names": region_names,
        "region_centers": centers,
        "region_sizes": sizes,
        "params": params,
    }
    return adata


def _truth(adata) -> dict:
    truth = adata.uns.get("synthetic")
    if not isinstance(truth, dict) or "module_features" not in truth:
        msg = "adata.uns['synthetic'] is missing; this works on data made by lava.datasets.synthetic()."
        raise KeyError(msg)
    return truth


def planted_modules(adata, features: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """Return the planted modules as LAVA module vectors over feature pairs.

    Parameters
    ----------
    adata
        Data from :func:`synthetic`, possibly subset (module membership is read from ``var["module"]``).
    features
        Feature names in the order of the correlations, e.g. ``adata.uns["lava"]["correlations"]["features"]``;
        or a boolean mask over ``var_names``. Default: all ``var_names``.

    Returns
    -------
    float32 array (n_modules, P), ``P = D'(D'-1)/2`` in the upper-triangle row-major pair order (i < j) of
    ``features``: 1 where both features of a pair belong to the module, 0 elsewhere.
    """
    truth = _truth(adata)
    member = np.asarray(truth["module_features"], dtype=bool)
    if "module" in adata.var.columns:  # follows subsetting of the features (adata[:, mask])
        module_of = adata.var["module"].to_numpy()
        member = module_of[None, :] == np.arange(member.shape[0])[:, None]
    var_names = pd.Index(adata.var_names)
    if features is None:
        idx = np.arange(len(var_names))
    else:
        arr = np.asarray(features)
        if arr.dtype == bool:
            if arr.shape != (len(var_names),):
                msg = f"a boolean features mask must have length n_vars={len(var_names)}, got shape {arr.shape}."
                raise ValueError(msg)
            idx = np.flatnonzero(arr)
        else:
            names = [str(name) for name in arr.ravel().tolist()]  # also numpy's StringDType (zarr)
            idx = var_names.get_indexer(names)
            if (idx < 0).any():
                missing = [name for name, i in zip(names, idx, strict=True) if i < 0][:5]
                msg = f"features not in var_names, e.g. {missing}; pass names from adata.var_names."
                raise KeyError(msg)
    sub = member[:, idx]
    i, j = np.triu_indices(idx.size, k=1)
    return (sub[:, i] & sub[:, j]).astype(np.float32)


def planted_presence(adata, indices: np.ndarray) -> np.ndarray:
    """Return the planted presence of each module in each locality.

    Parameters
    ----------
    adata
        Data from :func:`synthetic`.
    indices
        Integer array (l, n): the samples of each locality, e.g. ``adata.uns["lava"]["localities"]["indices"]``.

    Returns
    -------
    float32 array (l, n_modules): the fraction of a locality's samples that lie in a region carrying the module.
    """
    truth = _truth(adata)
    region_modules = np.asarray(truth["region_modules"], dtype=bool)
    names = pd.Index([str(name) for name in np.asarray(truth["region_names"]).tolist()])
    codes = names.get_indexer(adata.obs["region"].astype(str))
    indices = np.asarray(indices)
    if indices.ndim != 2 or not np.issubdtype(indices.dtype, np.integer):
        msg = f"indices must be a 2-D integer array (localities x samples), got shape {indices.shape}."
        raise ValueError(msg)
    carries = region_modules[codes].astype(np.float32)  # (n_obs, M)
    return carries[indices].mean(axis=1)
