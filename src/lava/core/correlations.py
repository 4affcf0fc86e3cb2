"""Step 2: locality correlations (METHOD.md section 2). OWNER: correlations helper. Skeleton: replace."""

from __future__ import annotations

import numpy as np


def n_pairs(n_features: int) -> int:
    return n_features * (n_features - 1) // 2


def pair_indices(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle pair order (row-major, i < j), the column order of C."""
    return np.triu_indices(n_features, k=1)


def locality_correlations(X, indices, *, tie_fraction=0.75, batch_size=None, device="auto", progress=False):
    raise NotImplementedError
