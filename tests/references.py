"""Reference implementations the tests compare lava's production code with (kept out of the package).

Each was once a second path in ``src/lava`` (a numpy version beside a numba kernel, an autograd wrapper nothing
used); production now has one path, and the tests check it against these.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from lava.core import _amf_torch as amft
from lava.core import correlations as corr

# ---------------------------------------------------------------------------------------------------------------
# correlations: the GPU code path run on the CPU, numpy ranks


def correlations_by_torch(X, indices, *, tie_fraction: float = 0.75, batch_size: int | None = None) -> np.ndarray:
    """:func:`lava.core.locality_correlations` through the GPU code path (torch ranks and products), on the CPU."""
    X, dtype = corr._check_data(X)
    idx = corr._check_indices(indices, X.shape[0])
    max_count = corr.max_tied_count(idx.shape[1], tie_fraction)
    plan = corr._BatchPlan(X.shape[1], torch.device("cpu"))
    return corr._torch_batches(X, idx, dtype, max_count, plan, batch_size or idx.shape[0], False, None)


def centred_unit_ranks_numpy(rows: np.ndarray, max_count: int) -> tuple[np.ndarray, np.ndarray]:
    """``lava.core.correlations._centred_unit_ranks`` in numpy: ``(ranks, keep)`` of ``rows`` (K, n).

    ``rows`` (float32 or float64) may be overwritten. The float32 rows are sorted as packed (value, position)
    integer keys, the float64 rows by argsort; ties get average ranks per tie group.
    """

    def buffer(name, shape, dtype):
        return np.empty(shape, dtype=dtype)

    K, n = rows.shape
    if K == 0:
        return np.zeros((0, n), dtype=np.float32), np.zeros(0, dtype=bool)
    if rows.dtype == np.float32:
        # Sort (value, position) pairs packed into one uint64 (SIMD sort, no argsort): the high 32 bits are an
        # order-preserving integer image of the float (-0.0 made +0.0 first so both tie), the low bits the position.
        rows += np.float32(0)
        bits = rows.view(np.uint32)
        # flip every bit of negative floats, only the sign bit of the others
        flip = np.right_shift(bits, np.uint32(31))
        np.negative(flip, out=flip)
        flip |= np.uint32(0x80000000)
        key = buffer("key", (K, n), np.uint64)
        if sys.byteorder == "little":
            halves = key.view(np.uint32).reshape(K, n, 2)  # [..., 0] low (position), [..., 1] high (value) bits
            np.bitwise_xor(bits, flip, out=halves[:, :, 1])
            halves[:, :, 0] = np.arange(n, dtype=np.uint32)
            del bits, flip
            key.sort(axis=1)
            order = buffer("order", (K, n), np.intp)
            order[:] = halves[:, :, 0]
            sorted_values = halves[:, :, 1]
        else:
            key[:] = np.bitwise_xor(bits, flip)
            key <<= np.uint64(32)
            key |= np.arange(n, dtype=np.uint64)
            del bits, flip
            key.sort(axis=1)
            order = (key & np.uint64(0xFFFFFFFF)).astype(np.intp)
            key >>= np.uint64(32)
            sorted_values = key
    else:
        rows += 0.0
        order = np.argsort(rows, axis=1)
        sorted_values = np.take_along_axis(rows, order, axis=1)
    new_group = sorted_values[:, 1:] != sorted_values[:, :-1]
    del sorted_values
    tied = np.flatnonzero(~new_group.all(axis=1))
    # Rows without ties rank 0..n-1 in sorted order; rows with ties get average ranks per tie group.
    centred_sorted = buffer("centred", (K, n), np.float32)
    centred_sorted[:] = np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2)
    longest = np.ones(K, dtype=np.intp)
    if tied.size:
        starts_mask = np.empty((tied.size, n), dtype=bool)
        starts_mask[:, 0] = True
        starts_mask[:, 1:] = new_group[tied]
        starts = np.flatnonzero(starts_mask)
        lengths = np.diff(starts, append=starts_mask.size)
        first_group = np.zeros(tied.size, dtype=np.intp)
        np.cumsum(np.count_nonzero(starts_mask, axis=1)[:-1], out=first_group[1:])
        del starts_mask
        longest[tied] = np.maximum.reduceat(lengths, first_group)
        position = starts % n
        centred = ((2 * position + lengths - n) * 0.5).astype(np.float32)
        centred_sorted[tied] = np.repeat(centred, lengths).reshape(tied.size, n)
        del starts, lengths, position, centred
    del new_group
    keep = (longest <= max_count) & (longest < n)
    order += (np.arange(K, dtype=np.intp) * n)[:, None]
    ranks = buffer("ranks", (K, n), np.float32)
    ranks.ravel()[order.ravel()] = centred_sorted.ravel()
    del order, centred_sorted
    norm = np.sqrt(np.einsum("ij,ij->i", ranks, ranks))
    ranks /= np.maximum(norm, np.float32(1e-30))[:, None]
    return ranks, keep


# ---------------------------------------------------------------------------------------------------------------
# placement: k-means++ seeding in numpy


def kmeans_plusplus_numpy(X: np.ndarray, k: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`lava.core.placement.kmeans_plusplus` in numpy: the same draws from ``rng``, the same centres."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    m = X.shape[0]
    n_trials = 2 + int(np.log(k))
    first = rng.choice(m, p=weights / weights.sum())
    uniforms = rng.uniform(size=(k - 1, n_trials))
    centers = np.empty((k, X.shape[1]))
    sq = np.einsum("ij,ij->i", X, X)
    centers[0] = X[first]
    closest = ((X - X[first]) ** 2).sum(axis=1)
    potential = float(weights @ closest)
    for c in range(1, k):
        if potential <= 0:  # every sample with weight is a centre already: take the farthest others
            centers[c] = X[np.argmax(closest)]
            closest = np.minimum(closest, ((X - centers[c]) ** 2).sum(axis=1))
            continue
        cumulative = np.cumsum(weights * closest)
        candidates = np.searchsorted(cumulative, uniforms[c - 1] * cumulative[-1])
        candidates = np.minimum(candidates, m - 1)
        dist = sq[candidates, None] - 2.0 * (X[candidates] @ X.T) + sq[None, :]
        np.clip(dist, 0.0, closest[None, :], out=dist)
        potentials = dist @ weights
        best = int(np.argmin(potentials))
        centers[c] = X[candidates[best]]
        closest, potential = dist[best], float(potentials[best])
    return centers


# ---------------------------------------------------------------------------------------------------------------
# AMF: the fused max-product (lava's forward and its gradient scatter) as an autograd function


def max_product_backward(grad, argmax, presence, modules, *, chunk: int | None = None):
    """Gradients of ``sum(grad * Chat)`` with respect to ``presence`` and ``modules``, through the training step's
    scatter (``_amf_torch._scatter_chunk``) one chunk of pairs at a time."""
    chunk = chunk or amft.default_chunk(presence.device)
    d_presence = torch.zeros_like(presence)
    d_modules = torch.zeros_like(modules)
    for j0 in range(0, modules.shape[1], chunk):
        j1 = min(modules.shape[1], j0 + chunk)
        amft._scatter_chunk(
            grad[:, j0:j1].contiguous(), argmax[:, j0:j1], presence, modules[:, j0:j1], d_presence, d_modules[:, j0:j1]
        )
    return d_presence, d_modules


class MaxProduct(torch.autograd.Function):
    """``Chat = max_m presence[:, m, None] * modules[m]`` with the gradient sent to the argmax module only."""

    @staticmethod
    def forward(ctx, presence, modules, chunk=None):
        chat, argmax = amft.max_product_forward(presence.detach(), modules.detach(), chunk=chunk)
        ctx.save_for_backward(presence, modules, argmax)
        ctx.chunk = chunk
        return chat

    @staticmethod
    def backward(ctx, grad):
        presence, modules, argmax = ctx.saved_tensors
        d_presence, d_modules = max_product_backward(
            grad.contiguous(), argmax, presence.detach(), modules.detach(), chunk=ctx.chunk
        )
        return d_presence, d_modules, None


def max_product(presence: torch.Tensor, modules: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """Differentiable fused max-product (see :class:`MaxProduct`): lava's forward and scatter under autograd."""
    return MaxProduct.apply(presence, modules, chunk)


def numba_kernels():
    """Return the module of the numba kernels (:mod:`._amf_numba`), or None if numba cannot compile them here."""
    if "numba" not in _COMPILED:
        try:
            from . import _amf_numba

            # compile (or load from numba's cache) now on a tiny problem, so a failure falls back to eager here
            f32 = np.float32
            p, m, c = np.ones((2, 2), f32), np.ones((2, 3), f32), np.ones((2, 3), f32)
            rows = np.arange(2, dtype=np.int64)
            chat, arg = np.empty((2, 3), f32), np.empty((2, 3), np.uint8)
            one, v = f32(1.0), np.ones(2, f32)
            _amf_numba.forward_sums(p, m, c, rows, one, one, one, -1, chat, arg, True)
            _amf_numba.backward(p, m, c, rows, chat, arg, v, v, v, one, one, one, one, -1)
            _COMPILED["numba"] = _amf_numba
        except Exception:
            _COMPILED["numba"] = None
    return _COMPILED["numba"]


_COMPILED: dict = {}
