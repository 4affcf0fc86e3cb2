"""The NMF baseline of the paper's appendix B.8, in AMF's terms: :func:`fit_nmf`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._compat import RngLike, as_seed
from .metrics import overestimation_ratio, reconstruction_similarity


@dataclass(frozen=True)
class NMFResult:
    """Result of :func:`fit_nmf`: the NMF baseline in AMF's terms."""

    #: (M, P) float32, each component divided by its largest entry, so in [0, 1] with max 1 (0 if all zero).
    modules: np.ndarray
    #: (l, M) float32 >= 0, multiplied by the same factors (not bounded by 1: NMF presences are unbounded).
    presence: np.ndarray
    #: NMF's own objective at the end (scikit-learn's ``reconstruction_err_``, the beta divergence).
    loss: float
    #: a-weighted mean cosine similarity of C and the sum reconstruction ``presence @ modules``.
    similarity: float
    #: sum(max(C_hat - C, 0)) / sum(|C_hat - C|) of the sum reconstruction.
    overestimation_ratio: float
    n_iter: int
    converged: bool
    seed: int
    beta_loss: str


def fit_nmf(
    C: np.ndarray,
    n_modules: int,
    *,
    beta_loss: Literal["kullback-leibler", "frobenius"] = "kullback-leibler",
    rng: RngLike = 0,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> NMFResult:
    """Non-negative matrix factorisation of the locality correlations, the baseline AMF is compared with.

    As in the paper's appendix B.8: :class:`sklearn.decomposition.NMF` with random initialisation and the
    Kullback-Leibler divergence (multiplicative updates), ``C ~ W @ H`` with ``W`` (l, M) the presences and ``H``
    (M, P) the components. To compare with AMF modules each component is divided by its largest entry and the
    presences multiplied by it (the product is unchanged). Figures use NMF's own reconstruction, the SUM
    ``presence @ modules``: without an overestimation penalty about half the error is overestimation (paper: ~0.5).

    Parameters
    ----------
    C
        (l, P) locality correlations (non-negative).
    n_modules
        Number of components M.
    beta_loss
        ``"kullback-leibler"`` (the paper's choice) or ``"frobenius"``.
    rng
        Seed (int) or :class:`numpy.random.Generator`; the seed used is in ``result.seed``.
    max_iter
        Maximum number of NMF iterations (reaching it sets ``converged=False``; no warning).
    tol
        scikit-learn's stopping tolerance.

    Returns
    -------
    NMFResult
        Scaled modules and presences, NMF loss, similarity, overestimation ratio, iterations, seed.
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    C = np.asarray(C)
    if C.ndim != 2:
        msg = f"C must be 2-D (localities x pairs), got shape {C.shape}."
        raise ValueError(msg)
    if np.any(C < 0):
        msg = "C must be non-negative for NMF (lava's correlations are absolute values in [0, 1])."
        raise ValueError(msg)
    if isinstance(n_modules, bool) or not isinstance(n_modules, int | np.integer) or n_modules < 1:
        msg = f"n_modules must be an integer >= 1, got {n_modules!r}."
        raise ValueError(msg)
    seed = as_seed(rng)
    model = NMF(
        n_components=int(n_modules),
        init="random",
        solver="mu" if beta_loss != "frobenius" else "cd",
        beta_loss=beta_loss,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
    )
    X = C.astype(np.float32, copy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        W = model.fit_transform(X)
    H = model.components_
    scale = H.max(axis=1)
    safe = np.where(scale > 0, scale, 1.0)
    modules = (H / safe[:, None]).astype(np.float32)
    presence = (W * np.where(scale > 0, scale, 0.0)[None, :]).astype(np.float32)
    C_hat = presence @ modules
    return NMFResult(
        modules=modules,
        presence=presence,
        loss=float(model.reconstruction_err_),
        similarity=float(reconstruction_similarity(C, C_hat)),
        overestimation_ratio=float(overestimation_ratio(C, C_hat)),
        n_iter=int(model.n_iter_),
        converged=bool(model.n_iter_ < max_iter),
        seed=seed,
        beta_loss=beta_loss,
    )
