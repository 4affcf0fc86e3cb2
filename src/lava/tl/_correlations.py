"""``lava.tl.correlations``: step 2, absolute Spearman correlations of feature pairs within each locality."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._compat import MEMORY_LIMIT_ENV, MemoryLimitError, memory_limit, resolve_device
from .._docs import doc_params
from .._store import read_localities, store_step
from .._validate import check_finite, get_data, select_features
from ..core.correlations import _host_memory, _is_dask, correlation_support, locality_correlations, n_pairs

#: Above this many feature pairs, a log line warns about the size of the result.
LARGE_N_PAIRS = 2_000_000
#: Warn when more than this share of the entries of C is 0 (the tie filter removed most of the data).
MOSTLY_ZERO_FRACTION = 0.9
#: Warn when more than this share of the selected features never enters any locality.
NEVER_ENTERED_FRACTION = 0.5


def sparsity_advice(tie_fraction: float) -> str:
    """Return what to do when the tie filter leaves little of C (every step that notices gives the same advice)."""
    return (
        f"The tie filter zeroes a feature in a locality where one value (typically 0) takes more than "
        f"{tie_fraction:.0%} of the samples: choose features detected in more than {1 - tie_fraction:.0%} of the "
        "cells of the localities (features=[...], e.g. the highly variable genes among those detected in many "
        "cells), or a higher tie_fraction in lava.tl.correlations, which filters less (1 keeps every feature that "
        "is not constant)."
    )


@doc_params()
def correlations(
    adata: AnnData,
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
) -> AnnData | None:
    """Absolute Spearman correlation of every pair of features within every locality (LAVA step 2).

    For each locality stored by :func:`lava.tl.localities` and each pair of selected features ``i < j``,
    the absolute Spearman correlation over the locality's samples: ranks with ties averaged, Pearson
    correlation of the ranks, absolute value. If one value (any value, typically 0) of a feature occurs in
    more than ``tie_fraction`` of a locality's samples, every pair with that feature is 0 in that locality;
    a constant feature gives 0, never NaN. See :func:`lava.core.locality_correlations` for the computation.

    The result has ``l x P`` entries, ``P = D (D - 1) / 2`` for ``D`` features (``4 l P`` bytes): select
    features (e.g. ``features="highly_variable"``); 1000 features give ~0.5 million pairs. A result that does not
    fit in the available memory is refused before anything is read or allocated (see Raises).

    The log says how much the tie filter left: how many features entered at least one locality (a feature enters a
    locality when one of its pairs is non-zero there, see :func:`lava.core.correlation_support`), how many pairs are
    non-zero in at least one locality and the share of non-zero entries. A warning says what to do when more than
    half of the features never enter any locality or more than 90% of the entries are 0: on sparse single-cell
    data, genes detected in fewer than ``1 - tie_fraction`` of a locality's cells are 0 there, so choose genes
    detected in many cells, or raise ``tie_fraction`` (which filters less).

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
    ``adata.uns[key]["correlations"]["feature_n_localities"]`` : :class:`numpy.ndarray` (D,), int64
        In how many localities each feature (in the order of ``features``) entered: had a non-zero pair. 0 for a
        feature the tie filter removed everywhere; such a feature can never be a module gene.
    ``adata.uns[key]["correlations"]["locality_n_features"]`` : :class:`numpy.ndarray` (l,), int64
        How many features entered each locality.
    ``adata.uns[key]["correlations"]["n_features_entered"]`` : int
        Features that entered at least one locality (the default background of :func:`lava.tl.enrich`).
    ``adata.uns[key]["correlations"]["n_pairs_nonzero"]`` : int
        Pairs non-zero in at least one locality (the pairs :func:`lava.tl.amf` keeps).
    ``adata.uns[key]["correlations"]["nonzero_fraction"]`` : float
        Share of the ``l x P`` entries that are non-zero.
    ``adata.uns[key]["params"]["correlations"]``
        The parameters of this call. Results of later steps (``amf`` and after) are dropped as stale.

    Raises
    ------
    MemoryError
        A :class:`MemoryError` that is also a :class:`ValueError`, when the result and one batch of localities need
        more memory than is available (psutil's or ``/proc/meminfo``'s available memory, capped by a container's
        limit), before anything is allocated: select fewer features, or compute ``C`` on disk with
        :func:`lava.core.locality_correlations` and ``out=``. The environment variable ``LAVA_MEMORY_LIMIT``
        (e.g. ``64G``, or ``none`` to turn the check off) overrides the available memory.

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
    localities = read_localities(adata, key)
    localities.check_samples(adata.n_obs)
    indices = localities.indices
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
    # before reading any data: the result must fit
    _check_memory(np.dtype(X.dtype), indices, feature_index.size, batch_size)
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
    support = correlation_support(values, n_features)
    _report_support(support, n_features, P, tie_fraction)

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
    result = {
        "values": values,
        "features": names,
        "feature_index": feature_index.astype(np.int64),
        "feature_n_localities": support.feature_localities,
        "locality_n_features": support.locality_features,
        "n_features_entered": int(np.count_nonzero(support.feature_localities)),
        "n_pairs_nonzero": support.n_pairs_nonzero,
        "nonzero_fraction": float(support.nonzero_fraction),
    }
    store_step(adata, key, "correlations", result, params)
    logg.finished(start, f"{n_features} features, {P} pairs, {values.nbytes / 2**20:.1f} MiB")
    return adata if copy else None


def report_dropped_pairs(n_dropped: int, P: int, tie_fraction: float) -> None:
    """Log the pairs AMF dropped (0 in every locality); warn, with the advice of :func:`correlations`, if it kept few."""
    if n_dropped == 0:
        return
    logg.logger.info(
        "    dropped %d of %d feature pairs (%.1f%%) that are 0 in every locality: no module can use them",
        n_dropped,
        P,
        100 * n_dropped / P,
    )
    if n_dropped > MOSTLY_ZERO_FRACTION * P:
        logg.warning(
            f"AMF fitted only {P - n_dropped} of {P} feature pairs: the others are 0 in every locality. "
            + sparsity_advice(tie_fraction)
        )


def _check_memory(dtype: np.dtype, indices: np.ndarray, n_features: int, batch_size: int | None) -> None:
    """Refuse, before anything is read or allocated, a result that does not fit in the memory available."""
    limit, source = memory_limit()
    if limit is None:
        return
    n_loc, n = indices.shape
    exact32 = dtype.kind == "b" or dtype.itemsize <= 2 or dtype == np.float32  # as the ranking decides
    output, batch = _host_memory(n_loc, n, n_features, 4 if exact32 else 8, batch_size)
    if output + batch <= limit:
        return
    fewer = f" (1000 features: {_size(4 * n_loc * n_pairs(1000))} here)" if n_features > 1000 else ""
    msg = (
        f"lava.tl.correlations would need {_size(output + batch)} of memory for {n_features} features "
        f"({n_loc} localities x {n_pairs(n_features)} pairs x 4 bytes = {_size(output)} for the result, plus "
        f"{_size(batch)} for a batch of localities), but only {_size(limit)} are available ({source}). Select fewer "
        f"features: features='highly_variable' after lava.pp.select_features(adata){fewer}, or a list of names; or "
        "keep C on disk with lava.core.locality_correlations(X, indices, out=<a zarr array>) (see the scaling page "
        f"of the documentation). Set the environment variable {MEMORY_LIMIT_ENV}=<size, e.g. 64G> to override the "
        "available memory."
    )
    raise MemoryLimitError(msg)


def _size(n_bytes: float) -> str:
    """``n_bytes`` in GiB, or in MiB below 1 GiB."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _report_support(support, n_features: int, P: int, tie_fraction: float) -> None:
    """Log how much of C the tie filter left, and warn (with what to do) when it left little."""
    entered = support.feature_localities
    n_entered = int(np.count_nonzero(entered))
    logg.logger.info(
        "    %d of %d features entered at least one locality (passed the tie filter there); %d of %d pairs are "
        "non-zero in at least one locality; %.2g%% of the entries are non-zero",
        n_entered,
        n_features,
        support.n_pairs_nonzero,
        P,
        100 * support.nonzero_fraction,
    )
    if support.n_nonzero == 0:
        logg.warning(
            "every locality correlation is 0: in every locality at most one feature passes the tie filter (the "
            f"others take one value in more than {tie_fraction:.0%} of the samples, or are constant), so AMF has "
            "nothing to fit. " + sparsity_advice(tie_fraction)
        )
        return
    problems = []
    if n_features - n_entered > NEVER_ENTERED_FRACTION * n_features:
        problems.append(
            f"{n_features - n_entered} of the {n_features} features ({(n_features - n_entered) / n_features:.0%}) "
            "never enter any locality (they cannot be part of a module)"
        )
    if 1 - support.nonzero_fraction > MOSTLY_ZERO_FRACTION:
        problems.append(
            f"only {support.nonzero_fraction:.2%} of the correlations are non-zero ({P - support.n_pairs_nonzero} of "
            f"the {P} pairs are 0 in every locality and are dropped by AMF)"
        )
    if problems:
        logg.warning(
            "the tie filter left little of the correlations: "
            + "; ".join(problems)
            + ". "
            + sparsity_advice(tie_fraction)
        )


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
