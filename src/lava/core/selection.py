"""Choosing the number of modules (METHOD.md section 4).

:func:`select_n_modules` runs AMF ``n_runs`` times for each number of modules M, measures how stable the modules are
(k-medoids under cosine distance, silhouette width) and how well they reconstruct the correlations, suggests M at the
elbow of the loss curve, and keeps one run of every M (by default the medoid, the run most like the others). Its
checkpoints are in :mod:`._checkpoint`; presence refinement is :mod:`.refine`, the NMF baseline :mod:`.nmf`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._compat import RngLike, as_seed
from . import amf as _amf
from ._checkpoint import _CHECKPOINT_FORMAT, _fingerprint, _jsonable, _load_run, _open_checkpoint, _save_run
from .amf import AMFResult, fit_amf
from .metrics import duplicate_modules, presence_weighted_average

#: Arguments of :func:`~lava.core.fit_amf` that :func:`select_n_modules` passes on to every fit: the flavor, the
#: options (:class:`~lava.core.AMFConfig`'s fields) and the device.
FIT_KWARGS = ("flavor", *_amf.CONFIG_FIELDS, "device")

#: Default near-tie margin of the elbow rule, in units of the normalised loss range (see :func:`elbow`).
ELBOW_TOLERANCE = 0.05
#: Which run of each M :func:`select_n_modules` keeps: ``"medoid"`` (the default: the run whose modules the other runs
#: find again most closely, :func:`medoid_run`) or ``"loss"`` (the lowest loss). Runs of one M end in optima of nearly
#: the same loss, and which of them has the lowest loss is decided by tiny differences; the medoid is the answer most
#: runs agree on. On the real data of ``benchmarks/bench_real.py`` (20 seeds cut into groups of 5), the medoids of
#: different groups shared 85-100% of their modules (matched cosine >= 0.9), the lowest-loss runs 65-100%: better
#: where single fits are already stable, worse where they are not (docs/choosing_m.md).
KEEP = ("medoid", "loss")


@dataclass(frozen=True)
class ModelSelection:
    """Result of :func:`select_n_modules`.

    ``runs`` and ``summary`` are column dictionaries (name -> 1-D array of equal length) so that they convert
    directly to DataFrames: ``pandas.DataFrame(selection.runs)``.
    """

    #: (k,) int64, the numbers of modules tried, ascending.
    n_modules: np.ndarray
    #: One row per run: ``n_modules``, ``run`` (0..R-1), ``seed`` (int64), ``loss``, ``similarity``,
    #: ``overestimation_ratio`` (float64), ``n_epochs``, ``best_epoch`` (int64), ``converged`` (bool),
    #: ``pattern_cosine`` (float64: cosine between the run's presence-weighted module average and that of the
    #: kept run with the same M; 1 for the kept run itself), ``closeness`` (float64: the mean, over the other runs
    #: of its M, of the mean cosine of its modules matched one-to-one to theirs, :func:`run_closeness`; NaN when
    #: R = 1), ``n_duplicates`` (int64: pairs of near-duplicate modules, :func:`~lava.core.duplicate_modules`).
    runs: dict[str, np.ndarray]
    #: One row per M: ``n_modules``, ``loss_mean``, ``loss_std``, ``similarity_mean``, ``similarity_std``,
    #: ``overestimation_ratio_mean``, ``overestimation_ratio_std`` (std over runs, ddof=1; NaN when R = 1),
    #: ``silhouette`` (cosine silhouette width of the k-medoids clustering of all R*M modules; NaN when M = 1 or
    #: R = 1), ``pattern_cosine`` (mean pairwise cosine between the runs' presence-weighted module averages; NaN
    #: when R = 1), ``duplicates_mean`` (mean number of near-duplicate pairs per run), ``elbow_gap`` (the elbow
    #: rule's normalised distance below the chord), ``best_run`` (int64: the run kept, by ``keep``) and
    #: ``lowest_loss_run`` (int64).
    summary: dict[str, np.ndarray]
    #: The suggested number of modules (elbow of ``loss_mean``, near-ties broken by higher silhouette; if the runs
    #: at the elbow have near-duplicate modules, on average half a pair or more, the largest smaller M whose runs
    #: have fewer).
    suggested_n_modules: int
    #: M -> the run kept among the R runs with M modules (``keep``: the medoid or the lowest loss).
    best: dict[int, AMFResult]
    #: M -> (R, M) int64: the k-medoids cluster (0..M-1) of each module of each run.
    module_clusters: dict[int, np.ndarray]
    #: (number of runs, P) float32: each run's presence-weighted module average
    #: (:func:`~lava.core.presence_weighted_average`), rows in the order of ``runs``.
    weighted_averages: np.ndarray
    #: The rule that chose the kept runs (:data:`KEEP`).
    keep: str = "medoid"


# ----------------------------------------------------------------------------------------------------------------
# building blocks: cosine distances, k-medoids, silhouette, elbow


def cosine_distances(X: np.ndarray) -> np.ndarray:
    """Cosine distances ``1 - cos(x_a, x_b)`` between the rows of ``X``, as a (k, k) float64 matrix.

    An all-zero row has no direction: its distance is 1 to every non-zero row and 0 to other all-zero rows.
    The diagonal is exactly 0 and values are clipped to [0, 2] against rounding.
    """
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    zero = norms == 0
    unit = X / np.where(zero, 1.0, norms).astype(np.float32)[:, None]
    S = (unit @ unit.T).astype(np.float64)
    S[zero, :] = 0.0
    S[:, zero] = 0.0
    S[np.ix_(zero, zero)] = 1.0
    D = np.clip(1.0 - S, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    return D


def kmedoids(D: np.ndarray, n_clusters: int, *, max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Partitioning Around Medoids (PAM: BUILD, then best-improvement SWAP) on a precomputed distance matrix.

    Deterministic (ties go to the lowest index), so no seed is needed.

    Parameters
    ----------
    D
        (k, k) symmetric distances with a zero diagonal.
    n_clusters
        Number of medoids, 1 <= n_clusters <= k.
    max_iter
        Maximum number of swaps.

    Returns
    -------
    medoids
        (n_clusters,) int64 row indices of the medoids.
    labels
        (k,) int64 cluster of each row (the nearest medoid; each medoid is in its own cluster).
    """
    D = np.asarray(D, dtype=np.float64)
    n = D.shape[0]
    if D.ndim != 2 or D.shape[1] != n:
        msg = f"D must be a square distance matrix, got shape {D.shape}."
        raise ValueError(msg)
    if not 1 <= n_clusters <= n:
        msg = f"n_clusters must be between 1 and the number of points ({n}), got {n_clusters}."
        raise ValueError(msg)
    rows = np.arange(n)
    # BUILD: start from the most central point, then add the point that lowers the total distance most.
    medoids = [int(np.argmin(D.sum(axis=1)))]
    nearest = D[:, medoids[0]].copy()
    for _ in range(1, n_clusters):
        gain = np.maximum(nearest[:, None] - D, 0.0).sum(axis=0)
        gain[medoids] = -1.0
        c = int(np.argmax(gain))
        medoids.append(c)
        nearest = np.minimum(nearest, D[:, c])
    medoids = np.asarray(medoids, dtype=np.int64)
    scale = max(float(D.max()), 1.0) * n
    # SWAP: the change of total distance for removing medoid i and adding point h, for all (i, h) at once.
    for _ in range(max_iter):
        if n_clusters == n:
            break
        Dm = D[:, medoids]
        order = np.argsort(Dm, axis=1, kind="stable")
        near = order[:, 0]
        d1 = Dm[rows, near]
        d2 = Dm[rows, order[:, 1]] if n_clusters > 1 else np.full(n, np.inf)
        with_h = np.minimum(D, d1[:, None])  # (j, h): distance of j once h is added, nothing removed
        gain_add = (with_h - d1[:, None]).sum(axis=0)
        member = np.zeros((n, n_clusters))
        member[rows, near] = 1.0
        # points whose medoid i is removed fall back to min(d(j, h), second nearest medoid)
        delta = gain_add[None, :] + member.T @ (np.minimum(D, d2[:, None]) - with_h)
        delta[:, medoids] = np.inf
        i, h = np.unravel_index(int(np.argmin(delta)), delta.shape)
        if not delta[i, h] < -1e-12 * scale:
            break
        medoids[i] = h
    labels = np.argmin(D[:, medoids], axis=1).astype(np.int64)
    labels[medoids] = np.arange(n_clusters)
    return medoids, labels


def silhouette(D: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette width (Rousseeuw 1987) for precomputed distances; NaN where it is undefined.

    Uses :func:`sklearn.metrics.silhouette_score` with ``metric="precomputed"``. It is undefined (NaN) with fewer
    than two clusters or when every point is its own cluster (M = 1, or R = 1 run per M). Points alone in their
    cluster count as 0, as in scikit-learn.
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    n_labels = np.unique(labels).size
    if n_labels < 2 or n_labels >= labels.size:
        return float("nan")
    return float(silhouette_score(np.asarray(D, dtype=np.float64), labels, metric="precomputed"))


def elbow(
    n_modules: Iterable[int],
    loss: Iterable[float],
    silhouette: Iterable[float] | None = None,
    *,
    tolerance: float = ELBOW_TOLERANCE,
) -> tuple[int, np.ndarray]:
    """Find the elbow of a loss curve (max distance below the chord), near-ties broken by higher silhouette.

    Both axes are scaled to [0, 1] (``x = (M - M_min) / (M_max - M_min)``, ``y = (L - L_min) / (L_max - L_min)``);
    the gap of a point is how far it lies below the straight line (chord) from the first to the last point,
    ``gap = y_chord(x) - y`` (proportional to its perpendicular distance to the chord, the "kneedle" rule). Every
    M whose gap is within ``tolerance`` of the largest gap is a candidate; among them the highest silhouette wins
    (NaN counts as lowest), then the smallest M. A curve without an elbow (a straight or concave one, or fewer than
    three points) leaves the endpoints, whose gap is 0, among the candidates, so stability decides.

    Parameters
    ----------
    n_modules
        (k,) the M values, strictly increasing.
    loss
        (k,) mean loss at each M.
    silhouette
        (k,) silhouette width at each M, or None (ties then go to the smallest M).
    tolerance
        Near-tie margin, in units of the normalised loss range.

    Returns
    -------
    suggested
        The suggested M.
    gap
        (k,) float64 gap of each point below the chord.
    """
    x = np.asarray(list(n_modules), dtype=np.float64)
    y = np.asarray(list(loss), dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or y.shape != x.shape:
        msg = f"n_modules and loss must be 1-D of the same non-zero length, got {x.shape} and {y.shape}."
        raise ValueError(msg)
    if np.any(np.diff(x) <= 0):
        msg = "n_modules must be strictly increasing."
        raise ValueError(msg)
    sil = np.full(x.size, np.nan) if silhouette is None else np.asarray(list(silhouette), dtype=np.float64)
    if x.size == 1:
        return int(x[0]), np.zeros(1)
    finite = np.isfinite(y)
    xn = (x - x[0]) / (x[-1] - x[0])
    lo, hi = (np.min(y[finite]), np.max(y[finite])) if finite.any() else (0.0, 1.0)
    yn = (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)
    gap = (yn[0] + (yn[-1] - yn[0]) * xn) - yn
    gap = np.where(np.isfinite(gap), gap, -np.inf)
    candidates = np.flatnonzero(gap >= np.max(gap) - tolerance)
    sil_key = np.where(np.isfinite(sil[candidates]), sil[candidates], -np.inf)
    # highest silhouette, then smallest M (candidates are in increasing M, argmax takes the first)
    chosen = candidates[int(np.argmax(sil_key))]
    return int(x[chosen]), gap


# ----------------------------------------------------------------------------------------------------------------
# seeds


def matched_run_cosines(D: np.ndarray, n_runs: int, n_modules: int) -> np.ndarray:
    """(R, R, M) float64: ``out[a, b, i]``, the cosine of run ``a``'s module ``i`` to its match in run ``b``.

    ``D`` is the cosine distance matrix of all R*M modules, run by run (rows ``r*M .. r*M + M - 1`` are run ``r``'s,
    as :func:`select_n_modules` stacks them). The modules of two runs are matched one-to-one by the Hungarian
    algorithm on the cosine ``1 - D``; ``out[a, a]`` is NaN.
    """
    from scipy.optimize import linear_sum_assignment

    D = np.asarray(D, dtype=np.float64)
    M = int(n_modules)
    if D.shape != (n_runs * M, n_runs * M):
        msg = f"D must be ({n_runs * M}, {n_runs * M}) for {n_runs} runs of {M} modules, got {D.shape}."
        raise ValueError(msg)
    out = np.full((n_runs, n_runs, M), np.nan)
    for a in range(n_runs):
        for b in range(a + 1, n_runs):
            cos = 1.0 - D[a * M : (a + 1) * M, b * M : (b + 1) * M]
            rows, cols = linear_sum_assignment(cos, maximize=True)
            out[a, b, rows] = cos[rows, cols]
            out[b, a, cols] = cos[rows, cols]
    return out


def run_closeness(D: np.ndarray, n_runs: int, n_modules: int) -> np.ndarray:
    """Per run, how closely the other runs find its modules again: (R,) float64, NaN when R = 1.

    A pair of runs' similarity is the mean matched module cosine (:func:`matched_run_cosines`, on the cosine
    distance matrix ``D`` of all R*M modules, run by run); a run's closeness is the mean of its similarities to the
    other R - 1 runs.
    """
    return _closeness(matched_run_cosines(D, n_runs, n_modules))


def _closeness(matched: np.ndarray) -> np.ndarray:
    if matched.shape[0] < 2:
        return np.full(matched.shape[0], np.nan)
    return np.nanmean(matched.mean(axis=2), axis=1)


#: A module is found again in another run when its match there has at least this cosine
#: (:func:`module_reproducibility`; the benchmarks' stability threshold).
REPRODUCED_COSINE = 0.9


def module_reproducibility(matched: np.ndarray, run: int, threshold: float = REPRODUCED_COSINE) -> np.ndarray:
    """(M,) float64: for each module of ``run``, the share of the other runs that find it again.

    ``matched`` is :func:`matched_run_cosines`' (R, R, M) array; a module is found again in another run when its
    one-to-one match there has cosine >= ``threshold``. NaN when there is one run.
    """
    matched = np.asarray(matched, dtype=np.float64)
    n_runs = matched.shape[0]
    if n_runs < 2:
        return np.full(matched.shape[2], np.nan)
    others = np.delete(matched[run], run, axis=0)  # (R - 1, M)
    return (others >= threshold).mean(axis=0)


def medoid_run(closeness: np.ndarray, loss: np.ndarray) -> int:
    """Return the run with the largest closeness (:func:`run_closeness`); near-ties (within 1e-9): the lower loss.

    Runs whose loss is not finite are never chosen unless every run's is not; with one run (NaN closeness) it is the
    lowest loss.
    """
    closeness = np.asarray(closeness, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    finite = np.isfinite(loss)
    score = np.where(finite & np.isfinite(closeness), closeness, -np.inf)
    if not np.isfinite(score).any():
        return int(np.argmin(np.where(finite, loss, np.inf)))
    near = np.flatnonzero(score >= score.max() - 1e-9)
    return int(near[np.argmin(loss[near])])


def check_n_runs(n_runs) -> None:
    """Raise ValueError unless ``n_runs`` is an integer >= 1 (not a bool)."""
    if isinstance(n_runs, bool) or not isinstance(n_runs, int | np.integer) or n_runs < 1:
        msg = f"n_runs must be an integer >= 1, got {n_runs!r}."
        raise ValueError(msg)


def check_keep(keep) -> None:
    """Raise ValueError unless ``keep`` is one of :data:`KEEP`."""
    if not isinstance(keep, str) or keep not in KEEP:
        msg = f"keep must be one of {KEEP}, got {keep!r}."
        raise ValueError(msg)


def _run_seed(base: int, n_modules: int, run: int) -> int:
    # Independent of the order and range of n_modules: run r with M modules gets the same seed in every call.
    return int(np.random.SeedSequence([base, n_modules, run]).generate_state(1, dtype=np.uint32)[0] >> 1)


# ----------------------------------------------------------------------------------------------------------------
# model selection


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def _row_cosines(X: np.ndarray, ref: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    denom = np.linalg.norm(X, axis=1) * np.linalg.norm(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, X @ ref / np.where(denom > 0, denom, 1.0), np.nan)


def _validate_n_modules(n_modules) -> np.ndarray:
    values = [n_modules] if isinstance(n_modules, int | np.integer) else list(n_modules)
    if not values:
        msg = "n_modules is empty; pass the numbers of modules to try, e.g. range(2, 16)."
        raise ValueError(msg)
    for m in values:
        if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
            msg = f"n_modules must hold integers >= 1, got {m!r}."
            raise ValueError(msg)
    if len(set(values)) != len(values):
        msg = f"n_modules has repeated values: {values}."
        raise ValueError(msg)
    return np.asarray(sorted(int(m) for m in values), dtype=np.int64)


def _validate_fit_kwargs(fit_kwargs: Mapping[str, Any]) -> None:
    unknown = sorted(set(fit_kwargs) - set(FIT_KWARGS))
    if unknown:
        msg = (
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))} for fitting AMF; valid ones: "
            f"{', '.join(FIT_KWARGS)} (rng and progress are select_n_modules' own; a warm start does not apply here)."
        )
        raise TypeError(msg)
    options = {k: v for k, v in fit_kwargs.items() if k not in ("flavor", "device")}
    _amf.AMFConfig.from_flavor(fit_kwargs.get("flavor", "lava"), **options)  # raise before the first fit


def select_n_modules(
    C: np.ndarray,
    n_modules: Iterable[int] | int = range(2, 16),
    *,
    n_runs: int = 10,
    rng: RngLike = 0,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    elbow_tolerance: float = ELBOW_TOLERANCE,
    client=None,
    keep: str = "medoid",
    **fit_kwargs: Any,
) -> ModelSelection:
    """Run AMF ``n_runs`` times for each number of modules and summarise reconstruction and stability.

    For each M: R = ``n_runs`` fits of :func:`~lava.core.fit_amf` from different seeds; all R*M modules are
    clustered into M clusters by k-medoids (:func:`kmedoids`, PAM) under cosine distance, and the silhouette width
    of that clustering measures stability (high: every run finds the same modules). The suggested M is the elbow of
    the mean loss curve, near-ties broken by higher silhouette (:func:`elbow`). For each M one run is kept, so it can
    be used without refitting: by default the medoid, the run whose modules the other runs find again most closely
    (:func:`run_closeness`, :func:`medoid_run`), or with ``keep="loss"`` the run with the lowest loss.

    Parameters
    ----------
    C
        (l, P) locality correlations.
    n_modules
        Numbers of modules to try (each >= 1, no repeats); sorted ascending.
    n_runs
        Runs per number of modules (R; the paper uses 10).
    rng
        Seed (int) or :class:`numpy.random.Generator`. Run ``r`` with ``M`` modules uses the seed
        ``SeedSequence([seed, M, r])`` draws, so a run is the same whatever else ``n_modules`` holds; every seed
        is recorded in ``runs["seed"]``.
    progress
        One progress bar over all runs (the fits' own bars stay off).
    checkpoint
        A directory. After each run its result is written there (``m{M}_r{r}.npz``, atomically); a later call
        with the same arguments (and the same ``C``) skips finished runs and returns the same result as an
        uninterrupted call. A call with other arguments is refused (ValueError). Each file holds one run's
        modules and presences (M x P and l x M float32), so the directory grows to about
        ``n_runs * sum(n_modules) * (P + l) * 4`` bytes; delete it when done.
    elbow_tolerance
        Near-tie margin of the elbow rule (fraction of the loss range), see :func:`elbow`.
    keep
        Which run of each M to keep (:data:`KEEP`): ``"medoid"`` or ``"loss"``. Runs end in optima of nearly the
        same loss; the lowest of them is decided by tiny differences, the medoid is what most runs agree on, so
        medoids of separate selections agree with each other without the lowest loss's bad cases
        (``docs/choosing_m.md``).
    client
        Run the fits as Dask tasks: a :class:`distributed.Client` connected to any cluster, or ``True`` for a
        temporary local one (threads in this process). ``C`` is scattered to the workers once and every fit not
        already in ``checkpoint`` is submitted at once; results are the same as without a client (each run
        has its own seed). ``device`` in ``fit_kwargs`` is resolved on each worker. Needs ``dask[distributed]``.
    **fit_kwargs
        Passed to :func:`~lava.core.fit_amf`: ``flavor``, ``device`` and the options (:class:`~lava.core.AMFConfig`'s
        fields: ``loss``, ``nu``, ``gamma``, ``lr``, ``batch_size``, ``patience``, ``tol``, ``max_epochs``, ...).

    Returns
    -------
    ModelSelection
        Per-run figures, per-M summary (``silhouette`` NaN where undefined: M = 1 or R = 1), the suggested M, the
        best run of every M, k-medoids cluster labels and each run's presence-weighted module average.

    Raises
    ------
    KeyboardInterrupt
        When a fit was interrupted (its result is not kept); with ``checkpoint`` the finished runs are kept there.
    """
    from ._progress import tqdm

    C = np.asarray(C)
    if C.ndim != 2:
        msg = f"C must be 2-D (localities x pairs), got shape {C.shape}."
        raise ValueError(msg)
    Ms = _validate_n_modules(n_modules)
    check_n_runs(n_runs)
    n_runs = int(n_runs)
    _validate_fit_kwargs(fit_kwargs)
    check_keep(keep)
    base_seed = as_seed(rng)

    directory = None
    if checkpoint is not None:
        spec = {
            "format": _CHECKPOINT_FORMAT,
            "n_modules": Ms.tolist(),
            "n_runs": n_runs,
            "rng": base_seed,
            "fit_kwargs": {k: _jsonable(v) for k, v in sorted(fit_kwargs.items())},
            "C": _fingerprint(C),
        }
        directory = _open_checkpoint(checkpoint, spec)

    runs: dict[str, list] = {
        name: []
        for name in (
            "n_modules",
            "run",
            "seed",
            "loss",
            "similarity",
            "overestimation_ratio",
            "n_epochs",
            "best_epoch",
            "converged",
            "pattern_cosine",
            "closeness",
            "n_duplicates",
        )
    }
    summary: dict[str, list] = {
        name: [] for name in ("n_modules", "silhouette", "pattern_cosine", "best_run", "lowest_loss_run")
    }
    best: dict[int, AMFResult] = {}
    clusters: dict[int, np.ndarray] = {}
    averages: list[np.ndarray] = []

    with (
        _submitted_runs(client, C, Ms, n_runs, base_seed, directory, fit_kwargs) as pending,
        tqdm(total=len(Ms) * n_runs, disable=not progress, desc="AMF runs", unit="run") as bar,
    ):
        for M in Ms.tolist():
            bar.set_postfix(n_modules=M)
            results: list[AMFResult] = []
            seeds = [_run_seed(base_seed, M, r) for r in range(n_runs)]
            for r, seed in enumerate(seeds):
                path = directory / f"m{M}_r{r}.npz" if directory is not None else None
                if path is not None and path.exists():
                    result = _load_run(path)
                    if int(result.seed) != seed:
                        msg = (
                            f"{path} holds a run with seed {result.seed}, expected {seed}; delete the file to refit it."
                        )
                        raise ValueError(msg)
                else:
                    if (M, r) in pending:
                        result = pending.pop((M, r)).result()
                    else:
                        result = fit_amf(C, M, rng=seed, progress=False, **fit_kwargs)
                    if getattr(result, "interrupted", False):
                        msg = f"AMF run {r} with {M} modules was interrupted" + (
                            "; finished runs are in the checkpoint, call again with the same arguments to resume."
                            if directory is not None
                            else "; pass checkpoint=... to keep finished runs across interruptions."
                        )
                        raise KeyboardInterrupt(msg)
                    if path is not None:
                        _save_run(path, result)
                results.append(result)
                bar.update(1)

            best_run, lowest, closeness, D, matched = _keep(results, keep)
            best[M] = results[best_run] = _with_runs(results, seeds, best_run, closeness, matched)
            wavg = np.stack([np.asarray(presence_weighted_average(res.presence, res.modules)) for res in results])
            wavg = wavg.astype(np.float32)
            averages.append(wavg)
            cos_to_best = _row_cosines(wavg, wavg[best_run])

            _, labels = kmedoids(D, M)
            clusters[M] = labels.reshape(n_runs, M)
            summary["n_modules"].append(M)
            summary["silhouette"].append(silhouette(D, labels))
            if n_runs > 1:
                pair = cosine_distances(wavg)
                summary["pattern_cosine"].append(float(1.0 - pair[np.triu_indices(n_runs, 1)].mean()))
            else:
                summary["pattern_cosine"].append(float("nan"))
            summary["best_run"].append(best_run)
            summary["lowest_loss_run"].append(lowest)

            for r, (seed, res) in enumerate(zip(seeds, results, strict=True)):
                runs["n_modules"].append(M)
                runs["run"].append(r)
                runs["seed"].append(seed)
                runs["loss"].append(float(res.loss))
                runs["similarity"].append(float(res.similarity))
                runs["overestimation_ratio"].append(float(res.overestimation_ratio))
                runs["n_epochs"].append(int(res.n_epochs))
                runs["best_epoch"].append(int(res.best_epoch))
                runs["converged"].append(bool(res.converged))
                runs["pattern_cosine"].append(float(cos_to_best[r]))
                runs["closeness"].append(float(closeness[r]))
                runs["n_duplicates"].append(len(duplicate_modules(res.modules, res.presence)))

    dtypes = {"n_modules": np.int64, "run": np.int64, "seed": np.int64, "n_epochs": np.int64, "n_duplicates": np.int64}
    dtypes |= {"best_epoch": np.int64, "converged": bool}
    run_cols = {name: np.asarray(values, dtype=dtypes.get(name, np.float64)) for name, values in runs.items()}

    sum_cols: dict[str, np.ndarray] = {"n_modules": np.asarray(summary["n_modules"], dtype=np.int64)}
    for name in ("loss", "similarity", "overestimation_ratio"):
        per_m = run_cols[name].reshape(len(Ms), n_runs)
        sum_cols[f"{name}_mean"] = per_m.mean(axis=1)
        sum_cols[f"{name}_std"] = np.array([_std(row) for row in per_m])
    sum_cols["silhouette"] = np.asarray(summary["silhouette"], dtype=np.float64)
    sum_cols["pattern_cosine"] = np.asarray(summary["pattern_cosine"], dtype=np.float64)
    # near-duplicate modules (one programme split in two) lower the loss and cluster stably across runs, so neither
    # the elbow nor the silhouette sees them: an M whose runs have them mostly is not suggested (the largest M below
    # the elbow without them is), and the table shows how many the runs had
    sum_cols["duplicates_mean"] = run_cols["n_duplicates"].reshape(len(Ms), n_runs).mean(axis=1)
    suggested, gap = elbow(Ms, sum_cols["loss_mean"], sum_cols["silhouette"], tolerance=elbow_tolerance)
    clean = Ms[(sum_cols["duplicates_mean"] < 0.5) & (Ms <= suggested)]
    if clean.size and suggested not in clean:
        suggested = int(clean.max())
    sum_cols["elbow_gap"] = gap
    sum_cols["best_run"] = np.asarray(summary["best_run"], dtype=np.int64)
    sum_cols["lowest_loss_run"] = np.asarray(summary["lowest_loss_run"], dtype=np.int64)

    return ModelSelection(
        n_modules=Ms,
        runs=run_cols,
        summary=sum_cols,
        suggested_n_modules=suggested,
        best=best,
        module_clusters=clusters,
        weighted_averages=np.concatenate(averages),
        keep=keep,
    )


def _keep(results: list[AMFResult], keep: str) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Return the run kept by ``keep``, the lowest-loss run, the closeness, cosine distances and matched cosines."""
    loss = np.array([res.loss for res in results], dtype=np.float64)
    lowest = int(np.argmin(np.where(np.isfinite(loss), loss, np.inf)))
    D = cosine_distances(np.concatenate([np.asarray(res.modules, dtype=np.float32) for res in results]))
    matched = matched_run_cosines(D, len(results), results[0].modules.shape[0])
    closeness = _closeness(matched)
    return (medoid_run(closeness, loss) if keep == "medoid" else lowest), lowest, closeness, D, matched


def _with_runs(results: list[AMFResult], seeds: list[int], kept: int, closeness: np.ndarray, matched: np.ndarray):
    """Return run ``kept`` with what the others say about it: ``n_runs``, ``module_reproducibility``, ``runs``."""
    return replace(
        results[kept],
        n_runs=len(results),
        module_reproducibility=module_reproducibility(matched, kept),
        runs={
            "seed": np.asarray(seeds, dtype=np.int64),
            "loss": np.array([res.loss for res in results], dtype=np.float64),
            "closeness": np.asarray(closeness, dtype=np.float64),
        },
    )


def fit_runs(
    C: np.ndarray,
    n_modules: int,
    *,
    n_runs: int = 5,
    rng: RngLike = 0,
    keep: str = "medoid",
    progress: bool = False,
    **fit_kwargs: Any,
) -> AMFResult:
    """Fit AMF ``n_runs`` times from different seeds and return the run kept by ``keep`` (default: the medoid).

    One fit ends in one of several optima of nearly the same loss, and which one depends on the seed; the medoid
    (:func:`run_closeness`, :func:`medoid_run`) is the run whose modules the other runs find again most closely, so
    the kept run depends less on the seed than one fit does (``docs/choosing_m.md``). Run ``r`` uses the seed
    that :func:`select_n_modules` gives it (``SeedSequence([seed, n_modules, r])``), so ``fit_runs(C, M, n_runs=R)``
    keeps the run that ``select_n_modules(C, [M], n_runs=R).best[M]`` keeps. With ``n_runs=1`` it is one
    :func:`~lava.core.fit_amf` with that run's seed.

    The result carries ``n_runs``, ``module_reproducibility`` (per module of the kept run, the share of the other
    runs whose matched module has cosine >= :data:`REPRODUCED_COSINE`) and ``runs`` (``seed``, ``loss`` and
    ``closeness`` of every run). When a fit is interrupted (Ctrl-C), no run follows: the run kept is chosen among those
    finished before it (the interrupted run itself is returned when it is the first), with ``interrupted=True``.

    ``progress`` shows one bar over the runs (the fits' own bars stay off); ``fit_kwargs`` go to
    :func:`~lava.core.fit_amf` (``flavor``, ``device`` and :class:`~lava.core.AMFConfig`'s fields).
    """
    from ._progress import tqdm

    check_n_runs(n_runs)
    check_keep(keep)
    _amf.check_n_modules(n_modules, np.shape(C)[0])  # fit_amf's check, before the first run
    M, base_seed = int(n_modules), as_seed(rng)
    seeds = [_run_seed(base_seed, M, r) for r in range(int(n_runs))]
    results: list[AMFResult] = []
    with tqdm(total=len(seeds), disable=not progress, desc="AMF runs", unit="run") as bar:
        for seed in seeds:
            result = fit_amf(C, M, rng=seed, progress=False, **fit_kwargs)
            if result.interrupted:
                break
            results.append(result)
            bar.update(1)
    if not results:  # interrupted in the first run: that run's best matrices, as fit_amf returned them
        return result
    best_run, _, closeness, _, matched = _keep(results, keep)
    kept = _with_runs(results, seeds[: len(results)], best_run, closeness, matched)
    return replace(kept, interrupted=len(results) < len(seeds))


@contextlib.contextmanager
def _submitted_runs(client, C, Ms, n_runs: int, base_seed: int, directory, fit_kwargs):
    """Yield ``{(M, r): Future}`` of the fits submitted to Dask (empty without a client); cancel leftovers on exit.

    ``client=True`` starts a local cluster (threads in this process) for the duration.
    """
    if client is None or client is False:
        yield {}
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - depends on the installation
        msg = "client=... needs dask and distributed: pip install 'lava-sc[dask]' (or 'dask[distributed]')."
        raise ImportError(msg) from err
    cluster = None
    if client is True:
        cluster = LocalCluster(processes=False, dashboard_address=":0")
        client = Client(cluster)
    elif not isinstance(client, Client):
        msg = f"client must be a distributed.Client, True (a local cluster) or None, got {type(client).__name__}."
        raise TypeError(msg)
    pending = {}
    try:
        shared = None
        for M in Ms.tolist():
            for r in range(n_runs):
                if directory is not None and (directory / f"m{M}_r{r}.npz").exists():
                    continue
                if shared is None:
                    shared = client.scatter(C, broadcast=False, hash=False)
                seed = _run_seed(base_seed, M, r)
                pending[M, r] = client.submit(
                    fit_amf,
                    shared,
                    M,
                    rng=seed,
                    progress=False,
                    pure=False,
                    key=f"lava-amf-m{M}-r{r}-{seed}",
                    **fit_kwargs,
                )
        yield pending
    finally:
        for future in pending.values():  # runs not collected (an error or an interruption)
            future.cancel()
        if cluster is not None:
            client.close()
            cluster.close()
