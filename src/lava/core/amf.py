"""Step 3: Association Matrix Factorisation (METHOD.md section 3). OWNER: AMF helper. Skeleton: replace."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AMFResult:
    modules: np.ndarray  # (M, P) float32 in [0, 1]
    presence: np.ndarray  # (l, M) float32 in [0, 1]
    loss: float
    similarity: float
    overestimation_ratio: float
    history: dict  # {"loss": (epochs,), ...} numpy arrays
    n_epochs: int
    best_epoch: int
    converged: bool
    interrupted: bool
    seed: int


def reconstruct(presence, modules):
    raise NotImplementedError


def amf_loss(C, presence, modules, *, nu=9.0, gamma=1e-4, weights=None):
    raise NotImplementedError


def fit_amf(C, n_modules, *, nu=9.0, gamma=1e-4, lr=1e-2, batch_size=64, patience=100, tol=0.01,
            max_epochs=5000, rng=0, device="auto", progress=False, init=None):
    raise NotImplementedError
