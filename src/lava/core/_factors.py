"""The factor pieces AMF and its quality figures share: the max-product reconstruction and the locality weights.

A leaf module (numpy and the numba reconstruction kernel only): :mod:`.amf` and :mod:`.metrics` both import it,
so neither imports the other's internals. The names are public through :mod:`lava.core` and :mod:`lava.core.amf`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

_ROW_CHUNK = 64


def reconstruct(presence: np.ndarray, modules: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Reconstruction ``Chat[i, j] = max_m presence[i, m] * modules[m, j]`` (l x P, float32).

    One fused loop (numba, multi-threaded) that keeps the running maximum per entry (never l x M x P); ``out``
    (l x P float32, C-contiguous) receives it if given.
    """
    from ._amf_numba import max_product

    presence = np.ascontiguousarray(presence, dtype=np.float32)
    modules = np.ascontiguousarray(modules, dtype=np.float32)
    _check_factor_shapes(presence, modules)
    shape = (presence.shape[0], modules.shape[1])
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        msg = f"out must be a C-contiguous float32 array of shape {shape}."
        raise ValueError(msg)
    if presence.shape[1] == 0:
        out[:] = 0
        return out
    return max_product(presence, modules, out)


def _check_factor_shapes(presence, modules):
    if presence.ndim != 2 or modules.ndim != 2 or presence.shape[1] != modules.shape[0]:
        msg = f"presence must be (l, M) and modules (M, P) with the same M; got {presence.shape} and {modules.shape}."
        raise ValueError(msg)


#: The locality weights of the loss: "norm" (the paper's ``||C_i|| / sum_{k != i} ||C_k||``) and "balanced".
LOCALITY_WEIGHTS = ("norm", "balanced")
#: ``locality_weight="balanced"``: a locality's strength is this quantile of its non-zero correlations.
STRENGTH_QUANTILE = 0.99


def locality_weights(C: np.ndarray, kind: Literal["norm", "balanced"] = "norm") -> np.ndarray:
    """Weights ``a_i`` of the localities in the loss (float64, l).

    ``kind="norm"`` (the paper's): ``a_i = ||C_i|| / sum_{k != i} ||C_k||``; 1 for a lone non-zero locality, 0 if C
    is all 0. ``kind="balanced"``: every locality counts the same, except those whose correlations are weaker than
    typical: ``a_i ∝ min(1, s_i / median_k s_k)`` with the strength ``s_i`` the 99th percentile of the locality's
    non-zero correlations (0 for an all-zero locality), scaled to sum 1. The norm grows with the number of pairs a
    locality has past the tie filter, the strength does not: a sparse population's few strong pairs weigh as much as
    a dense one's many, while a locality of noise-level correlations (no structure) still weighs little.
    """
    if kind not in LOCALITY_WEIGHTS:
        msg = f"locality_weight must be one of {LOCALITY_WEIGHTS}, got {kind!r}."
        raise ValueError(msg)
    if kind == "balanced":
        return _balanced_weights(locality_strength(C))
    norms = _row_norms(C)
    rest = norms.sum() - norms
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(rest > 0, norms / np.where(rest > 0, rest, 1.0), np.where(norms > 0, 1.0, 0.0))
    return a


def _balanced_weights(strength: np.ndarray) -> np.ndarray:
    if not strength.any():
        return strength
    a = np.minimum(strength / np.median(strength[strength > 0]), 1.0)
    return a / a.sum()


def locality_strength(C: np.ndarray) -> np.ndarray:
    """(l,) float64: the 99th percentile of each locality's non-zero correlations (0 where all are 0)."""
    return np.concatenate([_strengths(np.asarray(C[r0 : r0 + _ROW_CHUNK])) for r0 in range(0, C.shape[0], _ROW_CHUNK)])


def _strengths(rows: np.ndarray) -> np.ndarray:
    out = np.zeros(rows.shape[0])
    for i, row in enumerate(rows):
        row = row[row > 0]
        if row.size:
            out[i] = np.quantile(row, STRENGTH_QUANTILE)
    return out


def _row_norms(C) -> np.ndarray:
    norms = np.empty(C.shape[0], dtype=np.float64)
    for r0 in range(0, C.shape[0], _ROW_CHUNK):
        block = np.asarray(C[r0 : r0 + _ROW_CHUNK], dtype=np.float64)
        norms[r0 : r0 + _ROW_CHUNK] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return norms
