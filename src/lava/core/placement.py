"""Step 1: probe placement and localities (METHOD.md section 1). OWNER: placement helper. Skeleton: replace."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LocalityPlacement:
    """Result of :func:`place_localities`."""

    indices: np.ndarray  # (l, n) int64, the n samples nearest each probe
    probes: np.ndarray  # (l, d) float64
    alpha: float
    beta: float
    loss: float
    loss_unoptimized: float  # loss at alpha = beta = 0 (same k-means seed)
    neighborhood_centrality: np.ndarray  # (E,) in_i / E * E / n  -> relative, mean 1
    locality_centrality: np.ndarray  # (E,) in_loc_i / l * E / n -> relative, mean 1
    n_evaluations: int
    evaluations: np.ndarray  # (n_evaluations, 3): alpha, beta, loss


def n_localities(n_samples: int, n_neighbors: int, overlap: float) -> int:
    raise NotImplementedError


def neighborhood_centrality(Z: np.ndarray, n_neighbors: int):
    raise NotImplementedError


def place_localities(Z, n_neighbors, overlap, *, optimize=True, maxfun=None, rng=0, progress=False):
    raise NotImplementedError


def neighborhood_retention(X, Z, sizes, *, rng=0, n_samples=None):
    raise NotImplementedError
