"""Step 2: the locality representation, absolute Spearman correlations of feature pairs (METHOD.md section 2).

For every locality (a set of ``n`` samples) and every pair of features ``i < j``, the absolute Spearman
correlation over the locality's samples: ranks per feature with ties averaged, Pearson correlation of the
ranks, absolute value. A feature that takes one value (any value, typically 0) in more than ``tie_fraction``
of the locality's samples contributes 0 to every pair in that locality; so does a constant feature (never NaN).

How it is computed, for a batch of localities at a time. On the CPU, numba kernels (compiled on first use and
cached on disk, :mod:`._correlations_numba`) work one locality per thread straight from the stored values (only non-zeros when ``X`` is
sparse): count each feature's non-zeros, drop the features tied out by zeros, sort the others' non-zeros only
(zeros are one tie group; radix sort of order-preserving integer keys), and write the centred unit-length average
ranks of the surviving features into consecutive rows; one batched product per strip of rows (rows ``s:e``
against ``s:d``, about 5/8 of the full product) gives every Pearson correlation of ranks, and a second kernel
writes ``min(|r|, 1)`` of the upper triangle straight into the preallocated ``(l, P)`` output. On a GPU, the
batch's rows are densified, ranked with ``torch.sort`` and two ``searchsorted`` calls, and multiplied either
in feature blocks (most features survive) or after packing the surviving rank vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse

#: Memory, in bytes, that one batch of localities may use for its intermediate arrays when ``batch_size=None``:
#: on the CPU a fixed 1 GiB; on a GPU a quarter of the free device memory (at most 16 GiB).
CPU_MEMORY_BUDGET = 2**30
GPU_MEMORY_FRACTION = 0.25
GPU_MEMORY_CAP = 16 * 2**30

#: Below this fraction of surviving features, a batch's rank vectors are packed before the matrix product.
_PACK_FRACTION = 0.85
#: The full product is computed in at most this many feature blocks of at least this size (upper block pairs only).
_MAX_BLOCKS = 4
_MIN_BLOCK = 192


def n_pairs(n_features: int) -> int:
    """Return the number of feature pairs ``P = D (D - 1) / 2``, the number of columns of the correlations."""
    return n_features * (n_features - 1) // 2


def pair_indices(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature indices ``(i, j)`` of each column of the correlation matrix.

    The order is the upper triangle, row-major, ``i < j`` (as :func:`numpy.triu_indices` with ``k=1``):
    ``(0, 1), (0, 2), ..., (0, D-1), (1, 2), ...``.
    """
    return np.triu_indices(n_features, k=1)


def max_tied_count(n_samples: int, tie_fraction: float) -> int:
    """Largest number of equal values a feature may have in a locality of ``n_samples`` and still count.

    A feature whose most frequent value occurs in ``count`` samples with ``count / n_samples > tie_fraction``
    is filtered out (strictly more than ``tie_fraction``; exactly ``tie_fraction`` is kept).
    """
    c = min(n_samples, max(0, math.floor(tie_fraction * n_samples)))
    while c + 1 <= n_samples and (c + 1) / n_samples <= tie_fraction:
        c += 1
    while c > 0 and c / n_samples > tie_fraction:
        c -= 1
    return c


def locality_correlations(
    X,
    indices,
    *,
    tie_fraction: float = 0.75,
    batch_size: int | None = None,
    device: Literal["auto", "cpu", "cuda"] | str = "auto",
    progress: bool = False,
    client=None,
    out=None,
) -> np.ndarray:
    """Absolute Spearman correlation of every feature pair within every locality.

    Parameters
    ----------
    X
        Data, samples x features (E x D): a dense :class:`numpy.ndarray` of any real dtype (integers and
        float16 included) or a scipy sparse matrix or array. Sparse data are never densified as a whole: only
        the rows of one batch of localities at a time (CSC and other formats are converted to CSR once).
        A :class:`dask.array.Array` (dense or scipy-sparse chunks, e.g. from :func:`anndata.experimental.read_lazy`)
        is read one batch of localities' rows at a time and never loaded whole.
    indices
        Integer array (l x n): row ``k`` lists the ``n`` samples (rows of ``X``) of locality ``k``.
    tie_fraction
        In ``(0, 1]``. If one value (any value, typically 0) occurs in more than this fraction of a locality's
        samples for a feature, every pair with that feature is 0 in that locality. Constant features give 0.
    batch_size
        Localities per batch. ``None`` picks the largest batch whose intermediates fit a memory budget:
        1 GiB on the CPU, a quarter of the free GPU memory (at most 16 GiB) on CUDA; a locality needs at most
        about ``12 D^2 + n D (s + 40)`` bytes, where ``s`` is 4 (8 for float64 values that float32 cannot hold).
        The output itself, ``4 l P`` bytes, comes on top.
    device
        ``"auto"`` uses CUDA when torch finds it and the CPU otherwise; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    progress
        Show a progress bar (tqdm) over batches.
    client
        Run the batches as Dask tasks: a :class:`distributed.Client` (connected to any cluster), or ``True`` for
        a temporary local one (:class:`distributed.LocalCluster` with threads in this process, closed afterwards).
        Each task gets one batch's localities and only the rows of ``X`` they use (an in-memory ``X`` is
        scattered to the workers once; a dask ``X`` is read by the workers themselves), and returns its
        ``(b, P)`` rows; on the CPU the result is identical to ``client=None`` (same batches, same arithmetic).
        ``device`` is resolved on each worker, so ``"auto"`` uses the workers' GPUs where they have one; with
        ``batch_size=None`` the tasks hold the CPU path's batches. Needs ``dask[distributed]``.
    out
        Where to write the result instead of a new ndarray: any ``(l, P)`` float32 array that takes row-block
        assignment ``out[start:stop] = block`` (every row is written), e.g. a zarr array (``zarr.create_array``,
        chunks of whole rows) or a :class:`numpy.memmap`, so that ``C`` never has to fit in memory; it is returned.

    Returns
    -------
    (l, P) float32 array, ``P = D (D - 1) / 2``, values in ``[0, 1]``; column order as :func:`pair_indices`
    (``out`` when given).
    """
    from .._compat import resolve_device

    x_shape = tuple(getattr(X, "shape", None) or np.shape(X))
    if out is not None and len(x_shape) == 2 and np.ndim(indices) == 2:
        _check_out(out, np.shape(indices)[0], n_pairs(x_shape[1]))
    if client is not None and client is not False:
        return _distributed_correlations(X, indices, tie_fraction, batch_size, device, progress, client, out)
    if _is_dask(X):
        return _dask_local_correlations(X, indices, tie_fraction, batch_size, device, progress, out)
    X, dense_dtype = _check_data(X)
    idx = _check_indices(indices, X.shape[0])
    if not isinstance(tie_fraction, int | float | np.number) or isinstance(tie_fraction, bool):
        msg = f"tie_fraction must be a number in (0, 1], got {tie_fraction!r}."
        raise TypeError(msg)
    if not (0 < tie_fraction <= 1):
        msg = f"tie_fraction must be in (0, 1] (the paper uses 0.75), got {tie_fraction!r}."
        raise ValueError(msg)
    dev = resolve_device(device)

    n_loc, n = idx.shape
    D = X.shape[1]
    P = n_pairs(D)
    if n_loc == 0 or P == 0 or n < 2:
        return np.zeros((n_loc, P), dtype=np.float32) if out is None else out

    value_bytes = 8 if dense_dtype == np.float64 else 4
    if batch_size is None:
        batch_size = _auto_batch_size(n, D, value_bytes, dev)
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        msg = f"batch_size must be a positive integer or None, got {batch_size!r}."
        raise ValueError(msg)
    batch_size = int(min(batch_size, n_loc))

    max_count = max_tied_count(n, tie_fraction)
    plan = _BatchPlan(D, dev)
    run = _cpu_batches if dev.type == "cpu" else _torch_batches
    return run(X, idx, dense_dtype, max_count, plan, batch_size, progress, out)


def _cpu_batches(X, idx, dense_dtype, max_count: int, plan: _BatchPlan, batch_size: int, progress: bool, given):
    """Run every batch through the numba kernels (:func:`_batch_cpu`; the CPU path), into a new array or ``given``."""
    from ._progress import tqdm

    n_loc, P = idx.shape[0], n_pairs(plan.D)
    inputs = _cpu_inputs(X, dense_dtype)
    out = np.zeros((n_loc, P), dtype=np.float32) if given is None else given
    block = out if given is None else np.zeros((batch_size, P), dtype=np.float32)
    for start in tqdm(range(0, n_loc, batch_size), disable=not progress, desc="locality correlations", unit="batch"):
        stop = min(start + batch_size, n_loc)
        here = block[start:stop] if given is None else block[: stop - start]
        _batch_cpu(inputs, idx[start:stop], max_count, plan, here)  # writes every entry
        if given is not None:
            given[start:stop] = here
    return out


def _torch_batches(X, idx, dense_dtype, max_count: int, plan: _BatchPlan, batch_size: int, progress: bool, given):
    """Rank and multiply every batch with torch on ``plan.dev`` (the GPU path), into a new array or ``given``."""
    import torch

    from ._progress import tqdm

    n_loc, P = idx.shape[0], n_pairs(plan.D)
    out = np.zeros((n_loc, P), dtype=np.float32) if given is None else given
    # into the output directly, or through one reused (batch, P) block when writing to a given store
    out_t = torch.from_numpy(out if given is None else np.zeros((batch_size, P), dtype=np.float32))
    for start in tqdm(range(0, n_loc, batch_size), disable=not progress, desc="locality correlations", unit="batch"):
        stop = min(start + batch_size, n_loc)
        # the (locality, feature) rows not tied out by zeros, as a (K, n) tensor on the device
        rows, candidate = _gather_rows(X, idx[start:stop], dense_dtype, max_count, plan)
        here = out_t[start:stop] if given is None else out_t[: stop - start]
        target = torch.zeros((stop - start, P), dtype=torch.float32, device=plan.dev)
        _batch_correlations(rows, candidate, stop - start, max_count, plan, target)
        here.copy_(target)
        del target, rows, candidate
        if given is not None:
            given[start:stop] = here.numpy()
    return out


@dataclass(frozen=True)
class CorrelationSupport:
    """Where the correlations are non-zero: which features entered which localities (see :func:`correlation_support`).

    Attributes
    ----------
    entered
        (l, D) bool: feature ``i`` entered locality ``k``, i.e. at least one of its pairs is non-zero there.
    pair_localities
        (P,) int64: in how many localities each pair is non-zero (0: the pair is 0 everywhere).
    n_nonzero
        Number of non-zero entries of ``C``.
    """

    entered: np.ndarray
    pair_localities: np.ndarray
    n_nonzero: int

    @property
    def feature_localities(self) -> np.ndarray:
        """(D,) int64: in how many localities each feature entered."""
        return self.entered.sum(axis=0, dtype=np.int64)

    @property
    def locality_features(self) -> np.ndarray:
        """(l,) int64: how many features entered each locality."""
        return self.entered.sum(axis=1, dtype=np.int64)

    @property
    def n_pairs_nonzero(self) -> int:
        """Number of pairs non-zero in at least one locality."""
        return int(np.count_nonzero(self.pair_localities))

    @property
    def nonzero_fraction(self) -> float:
        """Share of the entries of ``C`` that are non-zero (0 for an empty ``C``)."""
        size = self.entered.shape[0] * self.pair_localities.size
        return self.n_nonzero / size if size else 0.0


def correlation_support(C, n_features: int, *, block_rows: int = 64) -> CorrelationSupport:
    """Which features entered which localities of the correlations ``C``, and which pairs are non-zero anywhere.

    A feature enters a locality when at least one of its pairs is non-zero there: it passed the tie filter of
    :func:`locality_correlations` (no value in more than ``tie_fraction`` of the locality's samples), and so did at
    least one other feature. Features that never enter any locality cannot be part of a module (and cannot become
    module genes); pairs that are 0 in every locality are dropped by :func:`fit_amf`.

    Parameters
    ----------
    C
        (l, P) correlations, as returned by :func:`locality_correlations`: an ndarray or an on-disk array (zarr,
        h5py, memmap), read ``block_rows`` rows at a time.
    n_features
        Number of features ``D`` with ``P = D (D - 1) / 2``.
    block_rows
        Rows of ``C`` read at a time.

    Returns
    -------
    :class:`CorrelationSupport` with ``entered`` (l, D) bool, ``pair_localities`` (P,) int64 and ``n_nonzero``;
    its properties give the per-feature and per-locality counts.
    """
    shape = tuple(getattr(C, "shape", ()))
    if len(shape) != 2:
        msg = f"C must be 2-D (localities x feature pairs), got shape {shape}."
        raise ValueError(msg)
    if isinstance(n_features, bool) or not isinstance(n_features, int | np.integer) or n_features < 0:
        msg = f"n_features must be a non-negative integer, got {n_features!r}."
        raise TypeError(msg)
    if shape[1] != n_pairs(int(n_features)):
        msg = (
            f"C has {shape[1]} columns but {n_features} features give {n_pairs(int(n_features))} pairs; pass the "
            "number of features C was computed from."
        )
        raise ValueError(msg)
    if isinstance(block_rows, bool) or not isinstance(block_rows, int | np.integer) or block_rows < 1:
        msg = f"block_rows must be a positive integer, got {block_rows!r}."
        raise ValueError(msg)
    n_loc, P = shape
    D = int(n_features)
    entered = np.zeros((n_loc, D), dtype=bool)
    pair_localities = np.zeros(P, dtype=np.int64)
    n_nonzero = 0
    from ._correlations_numba import support

    for start in range(0, n_loc, block_rows):
        block = np.asarray(C[start : start + block_rows])
        nonzero = block != 0
        pair_localities += np.count_nonzero(nonzero, axis=0)
        n_nonzero += int(np.count_nonzero(nonzero))
        support(nonzero, D, entered[start : start + block.shape[0]])
    return CorrelationSupport(entered=entered, pair_localities=pair_localities, n_nonzero=n_nonzero)


def _check_out(out, n_loc: int, P: int) -> None:
    shape = tuple(getattr(out, "shape", ()))
    if shape != (n_loc, P) or np.dtype(getattr(out, "dtype", None)) != np.float32:
        msg = (
            f"out must be a ({n_loc}, {P}) float32 array (localities x pairs), got shape {shape} and dtype "
            f"{getattr(out, 'dtype', None)}."
        )
        raise ValueError(msg)
    if not hasattr(out, "__setitem__"):
        msg = f"out must take assignment of row blocks (out[start:stop] = block); {type(out).__name__} does not."
        raise TypeError(msg)


def _is_dask(X) -> bool:
    """Whether ``X`` is a dask array (checked without importing dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "__dask_graph__")


def _check_arguments(X, indices, tie_fraction, batch_size, device):
    """Validate the arguments of a Dask run without reading ``X``; return ``(idx, batch_size)``."""
    from .._compat import resolve_device

    if getattr(X, "ndim", None) != 2:
        msg = f"X must be 2-D (samples x features), got shape {getattr(X, 'shape', None)}."
        raise ValueError(msg)
    dtype = np.dtype(X.dtype)
    if dtype.kind not in "biuf":
        msg = f"X must hold real numbers, got dtype {dtype}."
        raise TypeError(msg)
    idx = _check_indices(indices, X.shape[0])
    if isinstance(tie_fraction, bool) or not isinstance(tie_fraction, int | float | np.number):
        msg = f"tie_fraction must be a number in (0, 1], got {tie_fraction!r}."
        raise TypeError(msg)
    if not (0 < tie_fraction <= 1):
        msg = f"tie_fraction must be in (0, 1] (the paper uses 0.75), got {tie_fraction!r}."
        raise ValueError(msg)
    dev = resolve_device(device)
    if batch_size is None:
        exact32 = dtype.kind == "b" or dtype.itemsize <= 2 or dtype == np.float32
        # the CPU path's batches (a GPU worker would take larger ones, but the tasks are cut here, on the client)
        batch_size = _auto_batch_size(idx.shape[1], X.shape[1], 4 if exact32 else 8, type(dev)("cpu"))
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        msg = f"batch_size must be a positive integer or None, got {batch_size!r}."
        raise ValueError(msg)
    return idx, int(batch_size)


def _batch_rows(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, local)``: the sorted distinct samples of a batch and its indices into them."""
    rows = np.unique(idx)
    return rows, np.searchsorted(rows, idx)


def _rows_task(block, local, tie_fraction, batch_size, device):
    """One Dask task: the correlations of a batch of localities from the rows ``block`` they use."""
    if not (sparse.issparse(block) or isinstance(block, np.ndarray)):
        block = np.asarray(block)
    return locality_correlations(block, local, tie_fraction=tie_fraction, batch_size=batch_size, device=device)


def _take_task(X, idx, tie_fraction, batch_size, device):
    """One Dask task on a scattered in-memory ``X``: take the batch's rows, then :func:`_rows_task`."""
    rows, local = _batch_rows(idx)
    return _rows_task(X[rows], local, tie_fraction, batch_size, device)


def _dask_local_correlations(X, indices, tie_fraction, batch_size, device, progress, out=None) -> np.ndarray:
    """Compute for a dask ``X`` without a client: the batches one after the other, each reading only its rows."""
    from ._progress import tqdm

    idx, batch_size = _check_arguments(X, indices, tie_fraction, batch_size, device)
    n_loc = idx.shape[0]
    out = np.zeros((n_loc, n_pairs(X.shape[1])), dtype=np.float32) if out is None else out
    if n_loc == 0 or out.shape[1] == 0 or idx.shape[1] < 2:
        return out
    for start in tqdm(range(0, n_loc, batch_size), disable=not progress, desc="locality correlations", unit="batch"):
        stop = min(start + batch_size, n_loc)
        rows, local = _batch_rows(idx[start:stop])
        out[start:stop] = _rows_task(X[rows].compute(), local, tie_fraction, stop - start, device)
    return out


def _distributed_correlations(X, indices, tie_fraction, batch_size, device, progress, client, out=None) -> np.ndarray:
    """Run every batch of localities as one Dask task; write the results into the output as they arrive."""
    from ._progress import tqdm

    try:
        import dask
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:  # pragma: no cover - depends on the installation
        msg = "client=... needs dask and distributed: pip install 'lava-sc[dask]' (or 'dask[distributed]')."
        raise ImportError(msg) from err
    if client is not True and not isinstance(client, Client):
        msg = f"client must be a distributed.Client, True (a local cluster) or None, got {type(client).__name__}."
        raise TypeError(msg)
    dask_X = _is_dask(X)
    if not dask_X:
        X, _ = _check_data(X)
    idx, batch_size = _check_arguments(X, indices, tie_fraction, batch_size, device)
    n_loc = idx.shape[0]
    out = np.zeros((n_loc, n_pairs(X.shape[1])), dtype=np.float32) if out is None else out
    if n_loc == 0 or out.shape[1] == 0 or idx.shape[1] < 2:
        return out

    own = client is True
    if own:
        cluster = LocalCluster(processes=False, dashboard_address=":0")
        client = Client(cluster)
    try:
        starts = list(range(0, n_loc, batch_size))
        where = {}
        if dask_X:
            tasks = []
            for start in starts:
                stop = min(start + batch_size, n_loc)
                rows, local = _batch_rows(idx[start:stop])
                tasks.append(dask.delayed(_rows_task)(X[rows], local, tie_fraction, stop - start, device))
            futures = client.compute(tasks)
        else:
            shared = client.scatter(X, broadcast=False, hash=False)
            futures = [
                client.submit(
                    _take_task,
                    shared,
                    idx[s : s + batch_size],
                    tie_fraction,
                    min(batch_size, n_loc - s),
                    device,
                    pure=False,
                )
                for s in starts
            ]
        for start, future in zip(starts, futures, strict=True):
            where[future.key] = start
        with tqdm(total=len(futures), disable=not progress, desc="locality correlations", unit="batch") as bar:
            for future, block in as_completed(futures, with_results=True):
                start = where[future.key]
                out[start : start + block.shape[0]] = block
                future.release()
                bar.update(1)
    finally:
        if own:
            client.close()
            cluster.close()
    return out


class _BatchPlan:
    """Per-call state: where each product entry goes in the ``(b, P)`` output, and buffers reused by every batch.

    Reusing buffers matters: touching freshly allocated memory costs as much as sorting it.

    Full layout: features are split into ``k`` contiguous blocks and only the block pairs ``p <= q`` are
    multiplied (about ``(k + 1) / 2k`` of the work of the full ``D x D`` product); ``blocks`` lists, for each
    pair, the feature slices, which entries of the product are upper-triangle pairs and their output columns.
    Packed layout: products are scattered into ``(D + 1, D + 1)`` matrices (a reused workspace), whose upper
    triangle ``padded`` selects.
    """

    def __init__(self, D: int, dev):
        import torch

        self.D = D
        self.dev = dev
        k = max(1, min(_MAX_BLOCKS, D // _MIN_BLOCK))
        edges = np.linspace(0, D, k + 1).astype(np.int64)
        row_start = np.concatenate([[0], np.cumsum(np.arange(D - 1, 0, -1))])  # output column of pair (i, i + 1)
        self.blocks = []
        for p in range(k):
            for q in range(p, k):
                i = np.arange(edges[p], edges[p + 1])[:, None]
                j = np.arange(edges[q], edges[q + 1])[None, :]
                upper = np.broadcast_to(j > i, (i.size, j.size))
                source = np.flatnonzero(upper)
                ii, jj = np.nonzero(upper)
                dest = row_start[i[ii, 0]] + (j[0, jj] - i[ii, 0] - 1)
                self.blocks.append(
                    (
                        slice(int(edges[p]), int(edges[p + 1])),
                        slice(int(edges[q]), int(edges[q + 1])),
                        torch.from_numpy(source).to(dev),
                        torch.from_numpy(dest).to(dev),
                    )
                )
        self._padded = None
        self._workspace = None
        self._buffers = {}

    @property
    def padded(self):
        """Flat positions of the upper triangle in a ``(D + 1, D + 1)`` matrix."""
        import torch

        if self._padded is None:
            flat = np.ravel_multi_index(pair_indices(self.D), (self.D + 1, self.D + 1))
            self._padded = torch.from_numpy(flat).to(self.dev)
        return self._padded

    def buffer(self, name: str, shape: tuple[int, ...], dtype):
        """Return a reused buffer (numpy for numpy dtypes, a tensor on the device for torch dtypes), not zeroed."""
        import torch

        size = math.prod(shape)
        current = self._buffers.get(name)
        if current is None or current.dtype != dtype or current.shape[0] < size:
            if isinstance(dtype, torch.dtype):
                current = torch.empty(size, dtype=dtype, device=self.dev)
            else:
                current = np.empty(size, dtype=dtype)
            self._buffers[name] = current
        return current[:size].reshape(shape)

    def workspace(self, b: int):
        """Return a zeroed ``(b, (D + 1)^2)`` float32 buffer, reused across batches (fresh memory is slow to touch)."""
        import torch

        size = (self.D + 1) ** 2
        if self._workspace is None or self._workspace.shape[0] < b:
            self._workspace = torch.zeros((b, size), dtype=torch.float32, device=self.dev)
        else:
            self._workspace[:b].zero_()
        return self._workspace[:b]


def _batch_correlations(rows, candidate, b: int, max_count: int, plan: _BatchPlan, target) -> None:
    """Write the absolute Spearman correlations of a batch of ``b`` localities into ``target`` ``(b, P)``.

    ``rows`` ``(K, n)`` holds the values of the (locality, feature) pairs ``candidate`` (flat indices into
    ``b x D``; the others are tied out by zeros). ``target`` must hold zeros. Rows whose most frequent value
    occurs more than ``max_count`` times, and constant rows, give zeros.
    """
    import torch

    D = plan.D
    n = rows.shape[1]
    dev = rows.device
    everything = candidate.numel() == b * D
    ranks, keep = _centred_unit_ranks(rows, max_count)
    del rows
    alive = torch.zeros(b * D, dtype=torch.bool, device=dev)
    alive[candidate[keep]] = True
    alive = alive.reshape(b, D)
    d_max = int(alive.sum(dim=1).max().item()) if b else 0
    if d_max < 2:
        return
    if d_max >= _PACK_FRACTION * D:
        # Most features survive: keep the full layout, filtered rows are zero vectors.
        ranks[~keep] = 0
        if everything:
            full = ranks.reshape(b, D, n)
        else:
            full = torch.zeros((b * D, n), dtype=torch.float32, device=dev)
            full[candidate] = ranks
            full = full.reshape(b, D, n)
        del ranks
        for rows_p, rows_q, source, dest in plan.blocks:
            gram = torch.bmm(full[:, rows_p], full[:, rows_q].transpose(1, 2))
            gram = gram.reshape(b, -1).index_select(1, source)
            target.index_copy_(1, dest, gram.abs_().clamp_(max=1.0))
            del gram
        return
    # Few features survive: pack each locality's surviving rows into its first slots (in feature order), one
    # smaller product, then scatter it back to feature positions and take the upper triangle.
    candidate = candidate[keep]
    ranks = ranks[keep]
    slot = (torch.cumsum(alive, dim=1) - 1).reshape(-1)[candidate]
    loc = torch.div(candidate, D, rounding_mode="floor")
    feat = candidate - loc * D
    packed = torch.zeros((b, d_max, n), dtype=torch.float32, device=dev)
    packed[loc, slot] = ranks
    del ranks
    small = torch.bmm(packed, packed.transpose(1, 2))  # (b, d_max, d_max)
    del packed
    small.abs_().clamp_(max=1.0)
    feat_of = torch.full((b, d_max), D, dtype=torch.int64, device=dev)  # D marks an empty slot
    feat_of[loc, slot] = feat
    # scatter into (D + 1, D + 1) matrices whose last row and column collect the empty slots' zeros
    position = (feat_of[:, :, None] * (D + 1) + feat_of[:, None, :]).reshape(b, -1)
    gram = plan.workspace(b)
    gram.scatter_(1, position, small.reshape(b, -1))
    del small, position
    torch.index_select(gram, 1, plan.padded, out=target)


# ---------------------------------------------------------------------------------------------------------------
# CPU path: the numba kernels of :mod:`._correlations_numba` (compiled on first use, cached on disk)

#: Cells with fewer non-zeros than this are sorted by insertion, the others by radix sort.
_RADIX_MIN = 48


def _cpu_inputs(X, dtype: np.dtype):
    """Return ``(indptr, indices, data, dense)`` for :func:`._correlations_numba.rank_batch` from a CSR matrix or a dense ndarray.

    Values keep their order in ``dtype`` (float32 when that is exact, else float64), so ranks are exact.
    """
    if sparse.issparse(X):
        data = X.data if X.data.dtype == dtype else X.data.astype(dtype)
        return X.indptr.astype(np.int64, copy=False), X.indices, data, False
    E, D = X.shape
    data = np.ascontiguousarray(X, dtype=dtype).reshape(-1)
    return np.arange(0, (E + 1) * D, D, dtype=np.int64), np.zeros(1, np.int32), data, True


def _strips(d: int) -> np.ndarray:
    """Row bounds of the strips of the packed product: only rows ``s:e`` against columns ``s:d`` are computed."""
    k = max(1, min(_MAX_BLOCKS, d // _MIN_BLOCK))
    return np.linspace(0, d, k + 1).astype(np.int64)


def _batch_cpu(inputs, idx: np.ndarray, max_count: int, plan: _BatchPlan, target: np.ndarray) -> None:
    """Write the absolute Spearman correlations of a batch of localities into ``target`` (b, P) on the CPU."""
    import torch

    from ._correlations_numba import rank_batch, unpack

    b, n = idx.shape
    D = plan.D
    packed = plan.buffer("packed", (b, D, n), np.float32)
    slot_of = plan.buffer("slot_of", (b, D), np.int64)
    n_alive = plan.buffer("n_alive", (b,), np.int64)
    indptr, indices, data, dense = inputs
    key_type = np.empty(0, np.uint32 if data.dtype == np.float32 else np.uint64)
    rank_batch(indptr, indices, data, dense, idx, max_count, key_type, _RADIX_MIN, packed, slot_of, n_alive)
    d = int(n_alive.max())
    for k in range(b):  # unused rows of the product's input: zeros, not stale values
        packed[k, n_alive[k] : d] = 0
    edges = _strips(d)
    sizes = b * np.diff(edges) * (d - edges[:-1])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    gram = plan.buffer("gram", (max(1, int(offsets[-1])),), torch.float32)
    ranks = torch.from_numpy(packed)
    for t in range(edges.size - 1):
        s, e = int(edges[t]), int(edges[t + 1])
        if e > s:
            out = gram[int(offsets[t]) : int(offsets[t + 1])].view(b, e - s, d - s)
            torch.bmm(ranks[:, s:e, :], ranks[:, s:d, :].transpose(1, 2), out=out)
    strip_of = np.repeat(np.arange(edges.size - 1, dtype=np.int64), np.diff(edges))
    unpack(gram.numpy(), strip_of, edges, offsets[:-1].astype(np.int64), d, slot_of, target)


def _centred_unit_ranks(rows, max_count: int):
    """Average ranks of each row of ``rows`` (K, n), centred and scaled to unit length, as float32 (the GPU path).

    Returns ``(ranks, keep)``: ``keep`` is False for rows whose most frequent value occurs more than
    ``max_count`` times or that are constant. Sort, then the tie groups from two ``searchsorted`` calls.
    """
    import torch

    K, n = rows.shape
    if K == 0:
        return torch.zeros((0, n), dtype=torch.float32, device=rows.device), torch.zeros(
            0, dtype=torch.bool, device=rows.device
        )
    sorted_values, order = torch.sort(rows, dim=1)
    first = torch.searchsorted(sorted_values, sorted_values, right=False)
    after_last = torch.searchsorted(sorted_values, sorted_values, right=True)
    del sorted_values
    longest = (after_last - first).amax(dim=1)
    keep = (longest <= max_count) & (longest < n)
    # 0-based average rank of a tie group = (first + last) / 2; centred by subtracting (n - 1) / 2
    first += after_last
    del after_last
    centred_sorted = first.to(torch.float32).sub_(float(n)).mul_(0.5)
    del first
    ranks = torch.empty_like(centred_sorted).scatter_(1, order, centred_sorted)
    del order, centred_sorted
    norm = torch.linalg.vector_norm(ranks, dim=1, keepdim=True)
    ranks.div_(norm.clamp_(min=1e-30))
    return ranks, keep


def _host_memory(n_loc: int, n: int, D: int, value_bytes: int, batch_size: int | None) -> tuple[int, int]:
    """Bytes of host memory the CPU path allocates: ``(output, batch)``, the ``(l, P)`` result and one batch's work.

    The batch is ``batch_size`` localities, or what ``batch_size=None`` picks on the CPU (at least one locality,
    however large); each needs at most ``12 D^2 + n D (s + 40)`` bytes (see :func:`locality_correlations`).
    """
    import torch

    if batch_size is None:
        batch_size = _auto_batch_size(n, D, value_bytes, torch.device("cpu"))
    per_locality = 12 * D * D + n * D * (value_bytes + 40)
    return 4 * n_loc * n_pairs(D), min(batch_size, max(n_loc, 1)) * per_locality


def _auto_batch_size(n: int, D: int, value_bytes: int, dev) -> int:
    # correlation matrix and, when packing, its scatter indices; sorted keys, positions, ranks, copies of values
    per_locality = 12 * D * D + n * D * (value_bytes + 40)
    if dev.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(dev)
        budget = min(GPU_MEMORY_FRACTION * free, GPU_MEMORY_CAP)
    else:
        budget = CPU_MEMORY_BUDGET
    return max(1, int(budget // per_locality))


def _check_data(X):
    """Return ``(X, dtype)``: X as a 2-D ndarray or CSR matrix, and the float dtype its values are ranked in."""
    if sparse.issparse(X):
        if X.ndim != 2:
            msg = f"X must be 2-D (samples x features), got shape {X.shape}."
            raise ValueError(msg)
        X = X.tocsr() if X.format != "csr" else X
        if not X.has_canonical_format:  # duplicate entries are summed, as toarray() would
            X = X.copy()
            X.sum_duplicates()
        dtype = np.dtype(X.dtype)
    else:
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.ndim != 2:
            msg = f"X must be 2-D (samples x features), got shape {X.shape}."
            raise ValueError(msg)
        dtype = X.dtype
    if dtype.kind not in "biuf":
        msg = f"X must hold real numbers, got dtype {dtype}."
        raise TypeError(msg)
    values = X.data if sparse.issparse(X) else X
    if dtype.kind == "f" and not np.all(np.isfinite(values)):
        msg = "X contains NaN or infinite values; remove or impute them first."
        raise ValueError(msg)
    # float32 ranks exactly what float16, bool and small integers hold; wider types are checked per batch.
    exact32 = dtype.kind == "b" or dtype.itemsize <= 2 or dtype == np.float32
    return X, np.dtype(np.float32) if exact32 else np.dtype(np.float64)


def _check_indices(indices, n_samples: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 2:
        msg = f"indices must be a 2-D integer array (localities x samples per locality), got shape {idx.shape}."
        raise ValueError(msg)
    if idx.dtype.kind not in "iu":
        msg = f"indices must be integers (row positions in X), got dtype {idx.dtype}."
        raise TypeError(msg)
    if idx.size and (idx.min() < 0 or idx.max() >= n_samples):
        msg = f"indices must lie in [0, {n_samples}) (rows of X), got values in [{idx.min()}, {idx.max()}]."
        raise ValueError(msg)
    return idx.astype(np.int64, copy=False)


def _gather_rows(X, idx: np.ndarray, dtype: np.dtype, max_count: int, plan: _BatchPlan):
    """Return ``(rows, candidate)``: the (locality, feature) rows of a batch not tied out by zeros.

    ``rows`` holds the values of each (locality, feature) pair with at most ``max_count`` zeros, as a
    ``(K, n)`` float32 (float64 if needed) tensor on the device; ``candidate`` their flat indices
    ``locality * D + feature`` (``K``,) int64.

    Dense data are gathered into a reused ``(b, D, n)`` buffer (each feature's values within a locality
    contiguous, ready to be ranked). Sparse data are never densified beyond the candidate rows: zero counts
    come from the stored entries, which are then written straight into their rows.
    """
    import torch

    b, n = idx.shape
    D = X.shape[1]
    dev = plan.dev
    if sparse.issparse(X):
        sub = X[idx.reshape(-1)]
        data, columns, per_sample = _as_rank_dtype(sub.data, dtype), sub.indices, np.diff(sub.indptr)
        # each stored entry's locality and sample within it (its row of sub is locality * n + sample)
        locality = np.repeat(np.arange(b, dtype=np.int64), np.add.reduceat(per_sample, np.arange(0, b * n, n)))
        sample = np.repeat(np.tile(np.arange(n, dtype=np.int64), b), per_sample)
        if not data.all():  # explicit zeros are zeros
            stored = np.flatnonzero(data)
            data, columns, locality, sample = data[stored], columns[stored], locality[stored], sample[stored]
        cell = locality * D + columns
        n_zero = n - np.bincount(cell, minlength=b * D)
        candidate = np.flatnonzero(n_zero <= max_count)
        slot = np.full(b * D, -1, dtype=np.int64)
        slot[candidate] = np.arange(candidate.size)
        row = slot[cell]
        inside = np.flatnonzero(row >= 0)
        rows = plan.buffer("rows", (candidate.size, n), data.dtype if data.dtype == np.float64 else np.float32)
        rows.fill(0)
        rows.reshape(-1)[row[inside] * n + sample[inside]] = data[inside]
        return torch.from_numpy(rows).to(dev), torch.from_numpy(candidate).to(dev)
    gathered = plan.buffer("gathered", (b * n, D), X.dtype)
    np.take(X, idx.reshape(-1), axis=0, out=gathered)
    dense = _as_rank_dtype(gathered, dtype)
    values = plan.buffer("values", (b, D, n), torch.float64 if dense.dtype == np.float64 else torch.float32)
    values.copy_(torch.from_numpy(dense).to(dev).view(b, n, D).transpose(1, 2))
    flat = values.reshape(b * D, n)
    # Cheap pre-filter on zeros (the usual tied value): rows tied out by zeros are never sorted.
    n_zero = n - torch.count_nonzero(flat, dim=1)
    candidate = torch.nonzero(n_zero <= max_count).squeeze(1)
    rows = flat if candidate.numel() == b * D else flat.index_select(0, candidate)
    return rows, candidate


def _as_rank_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Return ``values`` (any real dtype) as float32 when that is exact (same ranks), else as float64.

    With ``dtype`` float32 the caller knows float32 is exact and the values are returned as they are; the
    conversion then happens in the copy to the rank buffer.
    """
    if dtype == np.float64:
        # float32 is exact (and faster) whenever every value of the batch round-trips through it
        as32 = values.astype(np.float32)
        if np.array_equal(as32, values):
            return as32
        return values.astype(np.float64, copy=False)
    return values
