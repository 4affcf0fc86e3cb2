"""``lava.tl.correlations``: step 2, absolute Spearman correlations of feature pairs within each locality."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .. import _logging as logg
from .._compat import resolve_device
from .._docs import doc_params
from .._store import get_step, store_step
from .._validate import check_finite, get_data, select_features
from ..core.correlations import _is_dask, locality_correlations, n_pairs

#: Above this many feature pairs, a log line warns about the size of the result.
LARGE_N_PAIRS = 2_000_000


@doc_params()
def correlations(
    adata,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    features=None,
    tie_fraction: float = 0.75,
    batch_size: int | None = None,
    device: Literal["auto", "cpu", "cuda"] | str = "auto",
    key: str = "lava",
    copy: bool = False,
    progress: bool = True,
    client=None,
):
    """Absolute Spearman correlation of every pair of features within every locality (LAVA step 2).

    For each locality stored by :func:`lava.tl.localities` and each pair of selected features ``i < j``,
    the absolute Spearman correlation over the locality's samples: ranks with ties averaged, Pearson
    correlation of the ranks, absolute value. If one value (any value, typically 0) of a feature occurs in
    more than ``tie_fraction`` of a locality's samples, every pair with that feature is 0 in that locality;
    a constant feature gives 0, never NaN. See :func:`lava.core.locality_correlations` for the computation.

    The result has ``l x P`` entries, ``P = D (D - 1) / 2`` for ``D`` features (``4 l P`` bytes): select
    features (e.g. ``features="highly_variable"``); 1000 features give ~0.5 million pairs.

    Parameters
    ----------
    {adata}
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_raw
        Use ``adata.raw.X`` (and ``adata.raw.var_names``).
    features
        Which features to correlate: ``None`` (all), a boolean mask over ``var_names``, the name of a
        boolean ``var`` column such as ``"highly_variable"``, or a list of feature names (in the order given).
    tie_fraction
        In ``(0, 1]``; the tie filter described above (the paper uses 0.75). ``1`` drops only constant features.
    batch_size
        Localities per batch; ``None`` chooses from a memory budget (1 GiB on the CPU, a quarter of the free
        GPU memory on CUDA).
    {device}
    {key}
    {copy}
    {progress}
    client
        Run the batches of localities as Dask tasks: a :class:`distributed.Client` connected to any cluster, or
        ``True`` for a temporary local one. The result is identical to ``client=None``. A dask ``X`` (e.g. from
        :func:`anndata.experimental.read_lazy`) stays lazy: each task reads only the rows of its localities. See
        :func:`lava.core.locality_correlations` and the scaling page of the documentation.

    Returns
    -------
    Returns ``None``, or a copy of ``adata`` if ``copy=True``, and stores

    ``adata.uns[key]["correlations"]["values"]`` : :class:`numpy.ndarray` (l, P), float32
        Absolute Spearman correlations in ``[0, 1]``; row ``k`` is locality ``k``, column ``p`` the pair
        ``(i, j) = lava.core.pair_indices(D)[:, p]``: the upper triangle, row-major, ``i < j``.
    ``adata.uns[key]["correlations"]["features"]`` : :class:`numpy.ndarray` (D,), str
        Names of the features, in the order that defines the pairs.
    ``adata.uns[key]["correlations"]["feature_index"]`` : :class:`numpy.ndarray` (D,), int64
        Their positions in ``var_names`` (``raw.var_names`` with ``use_raw=True``).
    ``adata.uns[key]["params"]["correlations"]``
        The parameters of this call. Results of later steps (``amf`` and after) are dropped as stale.

    Notes
    -----
    ``adata`` must not be a view (e.g. ``adata[mask]``): storing into a view would silently make it a copy,
    detached from the object it was taken from. Call ``adata = adata[mask].copy()`` first, or pass ``copy=True``.
    """
    if getattr(adata, "is_view", False) and not copy:
        msg = (
            "adata is a view (e.g. adata[mask]); lava cannot store results into it. "
            "Call adata = adata.copy() first, or pass copy=True to get a new AnnData back."
        )
        raise ValueError(msg)
    localities = get_step(adata, key, "localities")
    indices = np.asarray(localities["indices"])
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        msg = f"adata.uns[{key!r}]['localities']['indices'] must be a 2-D integer array; rerun lava.tl.localities."
        raise ValueError(msg)
    if indices.size and (indices.min() < 0 or indices.max() >= adata.n_obs):
        msg = (
            f"the stored localities refer to samples beyond adata.n_obs={adata.n_obs} (was adata subset after "
            "lava.tl.localities?); rerun lava.tl.localities on this AnnData."
        )
        raise ValueError(msg)
    X, var_names, where = get_data(adata, layer=layer, use_raw=use_raw)
    feature_index = select_features(adata, var_names, features, use_raw=use_raw)
    if isinstance(tie_fraction, bool) or not isinstance(tie_fraction, int | float | np.number):
        msg = f"tie_fraction must be a number in (0, 1], got {tie_fraction!r}."
        raise TypeError(msg)
    if not 0 < tie_fraction <= 1:
        msg = f"tie_fraction must be in (0, 1] (the paper uses 0.75), got {tie_fraction!r}."
        raise ValueError(msg)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1
    ):
        msg = f"batch_size must be a positive integer or None, got {batch_size!r}."
        raise ValueError(msg)
    resolve_device(device)
    if client is not None and client is not True:
        try:
            from distributed import Client
        except ImportError as err:
            msg = "client=... needs dask and distributed: pip install 'lava-sc[dask]'."
            raise ImportError(msg) from err
        if not isinstance(client, Client):
            msg = f"client must be a distributed.Client, True (a local cluster) or None, got {type(client).__name__}."
            raise TypeError(msg)
    X = _select_columns(X, feature_index, where)
    if not _is_dask(X):  # a dask X is checked batch by batch as it is read
        check_finite(X, f"{where} (selected features)")

    n_features = feature_index.size
    P = n_pairs(n_features)
    size_gib = indices.shape[0] * P * 4 / 2**30
    if P > LARGE_N_PAIRS:
        logg.warning(
            f"{n_features} features give {P} pairs; the result takes {size_gib:.1f} GiB "
            f"({indices.shape[0]} localities x {P} pairs x 4 bytes). Select fewer features (e.g. "
            "features='highly_variable') if this does not fit in memory."
        )
    start = logg.info(
        f"computing correlations of {P} feature pairs in {indices.shape[0]} localities of {indices.shape[1]} samples"
    )
    values = locality_correlations(
        X,
        indices,
        tie_fraction=tie_fraction,
        batch_size=batch_size,
        device=device,
        progress=progress,
        client=None if client is False else client,
    )
    if not values.any():
        logg.warning(
            "every locality correlation is 0: in every locality each feature takes one value in more than "
            f"{tie_fraction:.0%} of the samples (or is constant). Use larger localities (n_neighbors in "
            "lava.tl.localities), other features (e.g. fewer, more highly expressed ones) or a higher tie_fraction."
        )

    adata = adata.copy() if copy else adata
    names = np.asarray(var_names[feature_index].astype(str), dtype=str)
    params = {
        "layer": layer,
        "use_raw": use_raw,
        "features": _describe_features(features),
        "tie_fraction": float(tie_fraction),
        "batch_size": batch_size,
        "device": str(device),
        "dask": client is not None and client is not False,
    }
    result = {"values": values, "features": names, "feature_index": feature_index.astype(np.int64)}
    store_step(adata, key, "correlations", result, params)
    logg.finished(start, f"{n_features} features, {P} pairs, {values.nbytes / 2**20:.1f} MiB")
    return adata if copy else None


def _select_columns(X, feature_index: np.ndarray, where: str):
    """Return the selected columns of ``X`` as a dense ndarray or a CSR/CSC matrix; rows stay untouched."""
    all_columns = feature_index.size == X.shape[1] and np.array_equal(feature_index, np.arange(X.shape[1]))
    if isinstance(X, np.ndarray) or sparse.issparse(X):
        return X if all_columns else X[:, feature_index]
    if _is_dask(X):  # stays lazy: the batches read their rows
        return X if all_columns else X[:, feature_index]
    # backed (h5py / anndata sparse dataset) or dask arrays: read the selected columns once
    try:
        order = np.argsort(feature_index)
        sub = X[:, feature_index[order]]
        if hasattr(sub, "compute"):
            sub = sub.compute()
        if not sparse.issparse(sub):
            sub = np.asarray(sub)
        return sub[:, np.argsort(order)]
    except (TypeError, IndexError, ValueError) as err:
        msg = f"cannot read columns of {where} ({type(X).__name__}); load it into memory (adata.to_memory()) first."
        raise TypeError(msg) from err


def _describe_features(features):
    """Return a JSON-friendly record of the ``features`` argument."""
    if features is None or isinstance(features, str):
        return features
    arr = np.asarray(features)
    if arr.dtype == bool:
        return [bool(v) for v in arr]
    if isinstance(features, pd.Index | np.ndarray | list | tuple):
        return [str(v) for v in arr]
    return repr(features)
