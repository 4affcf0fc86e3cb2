"""Step 1: probe placement and localities (METHOD.md section 1).

The n-nearest neighbourhood of every sample is computed once (in-degree centrality and mean neighbour distance);
DIRECT then searches the two exponents of the k-means sample weights so that the probe-centred localities
reproduce the samples' neighbourhood in-degree centrality.

Speed. A straightforward implementation fits a full scikit-learn ``KMeans`` (k-means++ seeding on all samples,
Lloyd to convergence) in every DIRECT evaluation; k-means++ alone costs ``O(E l log l)`` distance evaluations
(33 s for 225k samples and l = 1350 on 2 cores). Here each evaluation draws ``coreset_factor * l`` samples with
probability proportional to their weight (the same seed every time), seeds (greedy k-means++) and converges
Lloyd on that sample, then converges weighted Lloyd on all samples from there. In low dimension Lloyd keeps
Hamerly's bounds (only samples near a boundary are looked at again, and then only against the centroids near
their own, in a numba loop: :mod:`._placement_numba`); above, it uses blocked BLAS distances. Centroids are
updated in one compiled pass over the samples in low dimension (weighted bincounts above). The neighbourhoods
behind the centrality are found for blocks of nearby samples at once (one candidate list per block, bounds that
settle most candidates; :func:`_centrality_blocks`). The loss is thus a deterministic function of ``alpha, beta``
and the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from .._compat import RngLike, as_seed
from ._neighbors import MAX_TREE_DIM, NeighborIndex, _workers, nearest_centroid

#: Default budget of centrality-loss evaluations: 40 for DIRECT (about eight DIRECT iterations in two dimensions),
#: 10 restarts at the best exponents. Beyond that the best loss improves by a few percent at most.
DEFAULT_MAXFUN = 50
#: Lloyd iterations on all samples after the k-means on the weight-proportional sample has converged: as many as
#: scikit-learn's KMeans allows (converging matters: 10 iterations leave the loss about 4% higher).
MAX_ITER = 300
#: Size of the weight-proportional sample, in multiples of the number of localities.
CORESET_FACTOR = 20
#: Lloyd iterations on the weight-proportional sample (as scikit-learn's KMeans).
COLD_MAX_ITER = 300
#: Centroids whose shifts bound the decrease of a sample's distance to its second nearest centroid in Lloyd: the
#: ones nearest its own (Hamerly's bound with the largest shift of all centroids queries most samples again).
NEAR_CENTROIDS = 8
#: Samples per block of the blocked neighbourhood computation (see ``_centrality_blocks``).
CENTRALITY_BLOCK = 32
#: Below this neighbourhood size the KD-tree's own query is as fast.
BLOCK_MIN_NEIGHBORS = 32
#: Relative tolerance on the total squared centroid shift (as scikit-learn's KMeans: times the mean variance).
TOL = 1e-4


@dataclass(frozen=True)
class LocalityPlacement:
    """Result of :func:`place_localities`.

    Attributes
    ----------
    indices
        ``(l, n)`` int64: row ``i`` holds the ``n`` distinct samples nearest to probe ``i``, nearest first.
    probes
        ``(l, d)`` float64: the probes (weighted k-means centroids of the best evaluation).
    alpha, beta
        Exponents of the best evaluation: ``w_i = (in_i / E)^alpha * (1 / dbar_i)^beta``.
    loss
        Centrality loss ``sum_i |in_i / E - in_loc_i / l|`` of the returned localities (between 0 and ``2 n``).
    loss_unoptimized
        The loss at ``alpha = beta = 0`` (unweighted k-means, same seed): DIRECT's first evaluation.
    neighborhood_centrality
        ``(E,)`` float64, ``in_i / n``: relative neighbourhood in-degree centrality (mean 1).
    locality_centrality
        ``(E,)`` float64, ``in_loc_i * E / (l n)``: relative locality in-degree centrality (mean 1).
    n_evaluations
        Number of loss evaluations.
    evaluations
        ``(n_evaluations, 3)`` float64: ``alpha, beta, loss`` of each evaluation, in order.
    kmeans_iterations
        ``(n_evaluations,)`` int64: Lloyd iterations on all samples each evaluation ran.
    evaluation_seeds
        ``(n_evaluations,)`` int64: k-means seed of each evaluation (``seed`` for DIRECT's, then restarts).
    seed
        The integer seed used.
    """

    indices: np.ndarray
    probes: np.ndarray
    alpha: float
    beta: float
    loss: float
    loss_unoptimized: float
    neighborhood_centrality: np.ndarray
    locality_centrality: np.ndarray
    n_evaluations: int
    evaluations: np.ndarray
    kmeans_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    evaluation_seeds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    seed: int = 0

    @property
    def n_localities(self) -> int:
        return int(self.indices.shape[0])

    @property
    def n_neighbors(self) -> int:
        return int(self.indices.shape[1])


def n_localities(n_samples: int, n_neighbors: int, overlap: float) -> int:
    """Return the number of localities ``l = round(E * o / n)``, clipped to ``[1, E]``.

    Rounding is half up (``2.5 -> 3``), as "rounding to the nearest integer" in the paper.

    Parameters
    ----------
    n_samples
        Number of samples ``E``.
    n_neighbors
        Locality size ``n``.
    overlap
        Overlap factor ``o``: with uniform centrality, every sample lies in about ``o`` localities.

    Returns
    -------
    The number of localities ``l``.
    """
    if n_samples < 1 or n_neighbors < 1:
        msg = f"n_samples and n_neighbors must be >= 1, got {n_samples} and {n_neighbors}."
        raise ValueError(msg)
    if not overlap > 0 or not math.isfinite(overlap):
        msg = f"overlap must be a finite number > 0, got {overlap!r}."
        raise ValueError(msg)
    return int(min(max(math.floor(n_samples * overlap / n_neighbors + 0.5), 1), n_samples))


def _check_embedding(Z) -> np.ndarray:
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[0] < 1 or Z.shape[1] < 1:
        msg = f"Z must be a 2-D array (samples x dimensions) with at least one of each, got shape {Z.shape}."
        raise ValueError(msg)
    if not np.all(np.isfinite(Z)):
        msg = "Z contains NaN or infinite values; remove or impute them first."
        raise ValueError(msg)
    return Z


def _check_n(n_neighbors, n_samples: int) -> int:
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer):
        msg = f"n_neighbors must be an integer, got {n_neighbors!r}."
        raise TypeError(msg)
    if not 1 <= n_neighbors <= n_samples:
        msg = f"n_neighbors must be between 1 and the number of samples ({n_samples}), got {n_neighbors}."
        raise ValueError(msg)
    return int(n_neighbors)


def _centrality(index: NeighborIndex, Z: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    E = Z.shape[0]
    if index.tree and n >= BLOCK_MIN_NEIGHBORS and E > 2 * n:
        return _centrality_blocks(index._index, Z, n)
    in_degree = np.zeros(E, dtype=np.int64)
    dbar = np.empty(E)
    for rows, dist, idx in index.query_chunks(Z, n):
        # a sample is its own neighbour; with more than n exact duplicates the query may list the others instead
        own = np.arange(rows.start, rows.stop)
        missing = ~(idx == own[:, None]).any(axis=1)
        idx[missing, -1] = own[missing]
        in_degree += np.bincount(idx.ravel(), minlength=E)
        dbar[rows] = dist.mean(axis=1)
    return in_degree, dbar


def _tree_blocks(tree: cKDTree, size: int) -> np.ndarray:
    """Start offsets (into ``tree.indices``) of the largest subtrees with at most ``size`` samples, in order."""
    starts = []
    stack = [tree.tree]
    while stack:
        node = stack.pop()
        if node.children <= size or node.lesser is None:
            starts.append(node.start_idx)
        else:
            stack.append(node.greater)
            stack.append(node.lesser)
    return np.asarray(starts, dtype=np.int64)


def _centrality_blocks(tree: cKDTree, Z: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_centrality` by blocks of nearby samples: candidates from one ball query per block, then a selection.

    A block is a KD-tree subtree of at most ``CENTRALITY_BLOCK`` samples, with centre ``c`` and radius ``rho``;
    every neighbour of a member lies within ``2 rho + dn(c)`` of ``c`` (``dn``: the ``n``-th neighbour
    distance), by the triangle inequality. Selecting ``n`` of those candidates is cheaper than the KD-tree's
    ``n``-nearest query with its heap, and the sets are the same (up to ties).
    """
    from ._placement_numba import block_neighbourhoods

    E = Z.shape[0]
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    order = np.asarray(tree.indices, dtype=np.int64)
    in_degree = np.zeros(E, dtype=np.int64)
    dbar = np.empty(E)
    starts = _tree_blocks(tree, CENTRALITY_BLOCK)
    sizes = np.diff(np.append(starts, E))
    members = Z[order]
    centres = np.add.reduceat(members, starts, axis=0) / sizes[:, None]
    radius = np.sqrt(np.maximum.reduceat(((members - np.repeat(centres, sizes, axis=0)) ** 2).sum(axis=1), starts))
    reach, _ = tree.query(centres, k=[n], workers=_workers(len(centres) * n))
    reach = reach[:, 0]
    ball = (2.0 * radius + reach) * (1.0 + 1e-9) + 1e-300
    bad = np.zeros(1, dtype=np.int64)
    # a few hundred blocks at a time, so that the candidate lists stay small
    step = max(1, (2**22) // (8 * n))
    for b0 in range(0, len(starts), step):
        b1 = min(b0 + step, len(starts))
        lists = tree.query_ball_point(centres[b0:b1], ball[b0:b1], workers=_workers((b1 - b0) * n))
        c_ptr = np.zeros(b1 - b0 + 1, dtype=np.int64)
        c_ptr[1:] = np.cumsum([len(x) for x in lists])
        cands = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
        q_ptr = np.append(starts[b0:b1], starts[b1] if b1 < len(starts) else E) - starts[b0]
        queries = order[starts[b0] : starts[b0] + q_ptr[-1]]
        block_neighbourhoods(Z, queries, q_ptr, centres[b0:b1], reach[b0:b1], cands, c_ptr, n, in_degree, dbar, bad)
    if bad[0]:
        # samples whose bounds rounding left undecided (many duplicates): the KD-tree query for them
        rows = np.flatnonzero(dbar < 0)
        dist, idx = tree.query(Z[rows], k=n)
        missing = ~(idx == rows[:, None]).any(axis=1)
        idx[missing, -1] = rows[missing]
        in_degree += np.bincount(idx.ravel(), minlength=E)
        dbar[rows] = dist.mean(axis=1)
    return in_degree, dbar


def neighborhood_centrality(Z, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Neighbourhood in-degree and mean neighbour distance of every sample (exact Euclidean kNN, computed once).

    Parameters
    ----------
    Z
        ``(E, d)`` latent coordinates.
    n_neighbors
        Neighbourhood size ``n``; a sample is its own (nearest) neighbour.

    Returns
    -------
    in_degree
        ``(E,)`` int64: number of samples whose ``n``-nearest set contains the sample (sums to ``E n``).
    mean_distance
        ``(E,)`` float64: mean distance from the sample to its ``n`` nearest neighbours (itself included, at 0).
    """
    Z = _check_embedding(Z)
    n = _check_n(n_neighbors, Z.shape[0])
    return _centrality(NeighborIndex(Z), Z, n)


def sample_weights(in_degree: np.ndarray, mean_distance: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """K-means sample weights ``w_i = (in_i / E)^alpha (1 / dbar_i)^beta``, divided by their maximum.

    Computed in log space, so exponents of any size neither overflow nor give NaN (tiny weights may underflow
    to 0). A mean distance of 0 (more than ``n`` duplicates of a point) is replaced by the smallest positive one
    (1 if there is none), and an in-degree of 0 by 1.
    """
    E = in_degree.shape[0]
    log_in = np.log(np.maximum(in_degree, 1) / E)
    positive = mean_distance[mean_distance > 0]
    floor = positive.min() if positive.size else 1.0
    log_w = alpha * log_in - beta * np.log(np.maximum(mean_distance, floor))
    return np.exp(log_w - log_w.max())


class _Placer:
    """State shared by the loss evaluations: the kNN index over Z, log centralities, the best placement so far."""

    def __init__(self, Z: np.ndarray, n: int, n_loc: int, seed: int, *, max_iter: int, coreset_factor: int) -> None:
        self.Z, self.n, self.n_loc, self.seed = Z, n, n_loc, seed
        self.E, self.d = Z.shape
        self.index = NeighborIndex(Z)
        self.in_degree, self.dbar = _centrality(self.index, Z, n)
        self.target = self.in_degree / self.E
        self.tol = TOL * float(np.mean(np.var(Z, axis=0)))
        self.max_iter = max_iter
        self.coreset_size = coreset_factor * n_loc
        self.evaluations: list[tuple[float, float, float]] = []
        self.iterations: list[int] = []
        self.seeds: list[int] = []
        self.best: tuple[float, np.ndarray, np.ndarray] | None = None  # loss, probes, locality indices

    def localities(self, probes: np.ndarray) -> np.ndarray:
        _, idx = self.index.query(probes, self.n)
        return idx

    def loss_of(self, idx: np.ndarray) -> tuple[float, np.ndarray]:
        in_loc = np.bincount(idx.ravel(), minlength=self.E)
        return float(np.abs(self.target - in_loc / self.n_loc).sum()), in_loc

    def kmeans(self, w: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
        """Weighted k-means: seed and converge on a weight-proportional sample, then refine on all samples."""
        # the same seed in every DIRECT evaluation (common random numbers): the loss is a function of alpha, beta
        rng = np.random.default_rng(seed)
        if self.coreset_size < self.E:
            # sampling proportional to w, each draw weighing 1, concentrates the sample where the centroids go
            draws = rng.choice(self.E, size=self.coreset_size, p=w / w.sum())
            points, counts = np.unique(draws, return_counts=True)
            mass = counts.astype(np.float64)
            if points.size < self.n_loc:
                # weight concentrated on fewer than l samples: add others with a negligible weight
                rest = np.setdiff1d(np.arange(self.E), points)
                extra = np.sort(rng.choice(rest, size=min(rest.size, 2 * self.n_loc), replace=False))
                points = np.concatenate([points, extra])
                mass = np.concatenate([mass, np.full(extra.size, 1e-9)])
        else:
            points, mass = np.arange(self.E), np.maximum(w, 1e-300)
        sub = self.Z[points]
        centers = kmeans_plusplus(sub, self.n_loc, mass, rng)
        centers, n_coarse = weighted_lloyd(
            sub, mass, np.asarray(centers, np.float64), max_iter=COLD_MAX_ITER, tol=self.tol
        )
        if self.coreset_size >= self.E:
            return centers, n_coarse
        return weighted_lloyd(self.Z, w, centers, max_iter=self.max_iter, tol=self.tol)

    def evaluate(self, alpha: float, beta: float, seed: int | None = None) -> float:
        if seed is None:
            seed = self.seed
        w = sample_weights(self.in_degree, self.dbar, alpha, beta)
        probes, n_iter = self.kmeans(w, seed)
        idx = self.localities(probes)
        loss, _ = self.loss_of(idx)
        self.evaluations.append((float(alpha), float(beta), loss))
        self.iterations.append(n_iter)
        self.seeds.append(seed)
        if self.best is None or loss < self.best[0]:
            self.best = (loss, probes, idx)
        return loss


def kmeans_plusplus(X: np.ndarray, k: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Greedy weighted k-means++ seeding (as scikit-learn's: ``2 + log k`` candidates per centre, keep the best).

    A lean version (compiled, :mod:`._placement_numba`): scikit-learn's spends most of its time in per-call input
    checks at these sizes.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    m = X.shape[0]
    n_trials = 2 + int(np.log(k))
    first = rng.choice(m, p=weights / weights.sum())
    uniforms = rng.uniform(size=(k - 1, n_trials))
    from ._placement_numba import kmeans_plusplus as compiled

    return compiled(X, weights, k, first, uniforms)


def weighted_lloyd(
    Z: np.ndarray, w: np.ndarray, centers: np.ndarray, *, max_iter: int = COLD_MAX_ITER, tol: float = 0.0
) -> tuple[np.ndarray, int]:
    """Weighted Lloyd iterations from ``centers``; returns the centroids and the number of iterations run.

    Stops when no assignment changes, when the total squared centroid shift is at most ``tol``, or after
    ``max_iter`` iterations. A cluster left without weight moves to the sample that adds most to the weighted
    inertia (as in scikit-learn), so that probes are not wasted where no weight is.

    In low dimension, samples are assigned with a KD-tree over the centroids and Hamerly's bounds: a sample
    keeps its centroid without a query while the distance to it (an upper bound, grown by the centroid's shift)
    stays below the distance to the second nearest (a lower bound, shrunk by the largest shift of the centroids
    near its own, ``NEAR_CENTROIDS``, and its distance to the farther ones, or by the largest shift of all when
    that is less). The assignments are exact, as in
    plain Lloyd; late iterations query only the few samples near a boundary.
    """
    E, d = Z.shape
    k = centers.shape[0]
    C = np.array(centers, dtype=np.float64)
    bounded = d <= MAX_TREE_DIM and k >= 2
    if bounded:
        from . import _placement_numba as kernels

        Z = np.ascontiguousarray(Z, dtype=np.float64)
        w = np.ascontiguousarray(w, dtype=np.float64)
        tree = cKDTree(C)
        dist, idx = tree.query(Z, k=2, workers=_workers(E))
        labels, upper, lower = idx[:, 0].astype(np.int64), dist[:, 0].copy(), dist[:, 1].copy()
        # the NEAR_CENTROIDS + 1 centroids nearest each centroid (itself first unless duplicated), and the distance
        # to the next one, which bounds the distance to all the others
        near_dist, near = tree.query(C, k=min(NEAR_CENTROIDS + 2, k))
        has_far = k > NEAR_CENTROIDS + 1
        pending = np.empty(E, dtype=np.int64)
    else:
        labels, d2 = nearest_centroid(Z, C)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        if bounded:
            mass, sums = kernels.accumulate(Z, w, labels, k)
        else:
            mass = np.bincount(labels, weights=w, minlength=k)
            if d <= 4:
                sums = np.column_stack([np.bincount(labels, weights=w * Z[:, j], minlength=k) for j in range(d)])
            else:
                sums = np.asarray(sparse.csr_matrix((w, (labels, np.arange(E))), shape=(k, E)) @ Z)
        new = C.copy()
        full = mass > 0
        new[full] = sums[full] / mass[full, None]
        empty = np.flatnonzero(~full)
        if empty.size:
            cost = w * (upper**2 if bounded else d2)
            far = np.argsort(-cost, kind="stable")[: empty.size]
            far = far[cost[far] > 0]
            new[empty[: far.size]] = Z[far]
        delta = np.sqrt(((new - C) ** 2).sum(axis=1))
        if float((delta**2).sum()) <= tol:
            C = new
            break
        if bounded:
            # a sample's nearest other centroid moved closer by at most the largest shift among the centroids
            # near its own, or, if it is farther, the sample is at least (distance from its centroid to the
            # first centroid not near it) - (largest shift) - (its upper bound) from it; and in any case by at
            # most the largest shift (samples far from their centroid, where the second bound is useless)
            near_shift = delta[near[:, : NEAR_CENTROIDS + 1]].max(axis=1)
            largest = float(delta.max())
            far_old = near_dist[:, -1] - largest
            C = new
            tree = cKDTree(C)
            near_dist, near = tree.query(C, k=min(NEAR_CENTROIDS + 2, k))
            n_changed, n_pending = kernels.reassign(
                Z, C, labels, upper, lower, delta, near_shift, far_old, largest, near, near_dist, has_far, pending
            )
            if n_pending:
                stale = pending[:n_pending]
                dist, idx = tree.query(Z[stale], k=2, workers=_workers(n_pending))
                n_changed += int(np.count_nonzero(labels[stale] != idx[:, 0]))
                labels[stale], upper[stale], lower[stale] = idx[:, 0], dist[:, 0], dist[:, 1]
        else:
            C = new
            labels_new, d2 = nearest_centroid(Z, C)
            n_changed = int(np.count_nonzero(labels_new != labels))
            labels = labels_new
        if n_changed == 0 and empty.size == 0:
            # assignments unchanged: the next update would give the same centroids
            break
    return C, n_iter


def place_localities(
    Z,
    n_neighbors: int,
    overlap: float,
    *,
    optimize: bool = True,
    maxfun: int | None = None,
    rng: RngLike = 0,
    progress: bool = False,
    restarts: int | None = None,
    max_iter: int = MAX_ITER,
    coreset_factor: int = CORESET_FACTOR,
) -> LocalityPlacement:
    """Place ``l = round(E o / n)`` probes and form their localities (the ``n`` samples nearest each probe).

    Probes are the centroids of a k-means (k = l) with sample weights ``w_i = (in_i / E)^alpha (1 / dbar_i)^beta``
    (``in_i``: neighbourhood in-degree, ``dbar_i``: mean distance to the ``n`` nearest samples). DIRECT
    (:func:`scipy.optimize.direct`) searches ``alpha, beta`` in ``[-2d, 2d]^2`` to minimise the centrality loss
    ``sum_i |in_i / E - in_loc_i / l|``, where ``in_loc_i`` counts the localities containing sample ``i``.

    The k-means of every DIRECT evaluation uses the same seed, so DIRECT sees a deterministic function of
    ``alpha, beta``. K-means local optima, however, make the loss vary by about 5% between seeds at the same
    ``alpha, beta``; the last ``restarts`` evaluations of the budget therefore rerun the best ``alpha, beta``
    with other seeds (``seed + 1, seed + 2, ...``), and the best placement of all evaluations is returned.

    Parameters
    ----------
    Z
        ``(E, d)`` latent coordinates (any ``d``).
    n_neighbors
        Locality size ``n``.
    overlap
        Overlap factor ``o`` (paper: 2-20).
    optimize
        Search ``alpha, beta`` with DIRECT; if ``False``, one unweighted k-means (``alpha = beta = 0``).
    maxfun
        Budget of loss evaluations (default 50), restarts included; DIRECT gets ``maxfun - restarts``, at least 5.
        As in :func:`scipy.optimize.direct` the budget is approximate: DIRECT finishes its last iteration.
        Each evaluation is one weighted k-means plus one neighbour query of the probes.
    restarts
        Evaluations at the best ``alpha, beta`` with other k-means seeds, after DIRECT. Default ``maxfun // 5``
        (0 below a budget of 10).
    rng
        Seed (int) or :class:`numpy.random.Generator` for the k-means++ seeding.
    progress
        Show a progress bar over the evaluations. DIRECT finishes the iteration in which it reaches its budget, so
        it may run a few more than ``maxfun - restarts``: the bar's total then grows to what has been run plus
        the restarts still to come.
    max_iter
        Maximum weighted Lloyd iterations on all samples in an evaluation, after k-means has converged on a
        weight-proportional sample of ``coreset_factor * l`` samples (all samples when that is more than ``E``).
    coreset_factor
        Size of that sample in multiples of ``l``.

    Returns
    -------
    A :class:`LocalityPlacement` with the localities, probes, exponents, losses and centralities.
    """
    Z = _check_embedding(Z)
    E, d = Z.shape
    n = _check_n(n_neighbors, E)
    n_loc = n_localities(E, n, overlap)
    if maxfun is None:
        maxfun = DEFAULT_MAXFUN
    if isinstance(maxfun, bool) or not isinstance(maxfun, int | np.integer):
        msg = f"maxfun must be an integer, got {maxfun!r}."
        raise TypeError(msg)
    if restarts is None:
        restarts = maxfun // 5 if maxfun >= 10 else 0
    if isinstance(restarts, bool) or not isinstance(restarts, int | np.integer) or restarts < 0:
        msg = f"restarts must be an integer >= 0, got {restarts!r}."
        raise ValueError(msg)
    budget = int(maxfun) - int(restarts)
    if optimize and budget < 5:
        msg = (
            f"maxfun - restarts = {budget} leaves DIRECT fewer than the 5 evaluations of its first iteration; "
            "raise maxfun or lower restarts."
        )
        raise ValueError(msg)
    seed = as_seed(rng)
    placer = _Placer(Z, n, n_loc, seed, max_iter=int(max_iter), coreset_factor=int(coreset_factor))

    if optimize:
        from scipy.optimize import direct

        from ._progress import tqdm

        bar = tqdm(total=int(maxfun), desc="placing probes", unit="eval", disable=not progress)

        def tick(still_to_come: int) -> None:
            # the bar's total is the budget until DIRECT passes it, then what has been run plus what must follow
            bar.total = max(bar.total, bar.n + 1 + still_to_come)
            bar.set_postfix(best=f"{placer.best[0]:.4g}", refresh=False)
            bar.update(1)

        def objective(x: np.ndarray) -> float:
            # like scipy, the budget is approximate: DIRECT finishes the iteration in which it runs out (cutting
            # an iteration short leaves its new rectangles unevaluated and costs far more loss than it saves)
            loss = placer.evaluate(float(x[0]), float(x[1]))
            tick(int(restarts))
            return loss

        try:
            direct(objective, [(-2.0 * d, 2.0 * d)] * 2, maxfun=budget)
            bar.total = bar.n + int(restarts)  # DIRECT's overrun (or shortfall) is known now
            bar.refresh()
            evaluations = np.asarray(placer.evaluations)
            alpha, beta, _ = evaluations[np.argmin(evaluations[:, 2])]
            for k in range(1, int(restarts) + 1):
                placer.evaluate(float(alpha), float(beta), seed=seed + k)
                tick(int(restarts) - k)
        finally:
            bar.close()
    else:
        placer.evaluate(0.0, 0.0)

    evaluations = np.asarray(placer.evaluations, dtype=np.float64).reshape(-1, 3)
    best = int(np.argmin(evaluations[:, 2]))
    loss, probes, idx = placer.best
    _, in_loc = placer.loss_of(idx)
    return LocalityPlacement(
        indices=idx.astype(np.int64, copy=False),
        probes=probes,
        alpha=float(evaluations[best, 0]),
        beta=float(evaluations[best, 1]),
        loss=float(loss),
        loss_unoptimized=float(evaluations[0, 2]),
        neighborhood_centrality=placer.in_degree / n,
        locality_centrality=in_loc * (E / (n_loc * n)),
        n_evaluations=len(evaluations),
        evaluations=evaluations,
        kmeans_iterations=np.asarray(placer.iterations, dtype=np.int64),
        evaluation_seeds=np.asarray(placer.seeds, dtype=np.int64),
        seed=seed,
    )


def neighborhood_retention(
    X, Z, sizes, *, rng: RngLike = 0, n_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean Jaccard similarity between each sample's ``n``-nearest neighbours in ``X`` and in ``Z``, per ``n``.

    The ``n`` at which it peaks is a data-driven locality size (paper, appendix A.2). Neighbours (exact,
    Euclidean, a sample is its own) are computed once at ``max(sizes)``, in chunks.

    Parameters
    ----------
    X
        ``(E, D)`` original features (dense or scipy sparse).
    Z
        ``(E, d)`` latent coordinates.
    sizes
        Neighbourhood sizes ``n`` to evaluate (each between 1 and ``E``).
    rng
        Seed or Generator for the query subsample.
    n_samples
        Evaluate on this many randomly chosen query samples (all when ``None`` or ``>= E``).

    Returns
    -------
    sizes
        ``(k,)`` int64, sorted, unique.
    jaccard
        ``(k,)`` float64: mean Jaccard similarity over the query samples.
    jaccard_std
        ``(k,)`` float64: its standard deviation over the query samples.
    """
    Z = _check_embedding(Z)
    E = Z.shape[0]
    if X.shape[0] != E:
        msg = f"X and Z must have the same number of samples, got {X.shape[0]} and {E}."
        raise ValueError(msg)
    if not sparse.issparse(X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            msg = f"X must be 2-D (samples x features), got shape {X.shape}."
            raise ValueError(msg)
    sizes = np.unique(np.asarray(sizes, dtype=np.int64).ravel())
    if sizes.size == 0 or sizes[0] < 1 or sizes[-1] > E:
        msg = f"sizes must be non-empty integers between 1 and the number of samples ({E}), got {sizes.tolist()}."
        raise ValueError(msg)
    K = int(sizes[-1])
    if n_samples is None or n_samples >= E:
        rows = np.arange(E)
    else:
        if n_samples < 1:
            msg = f"n_samples must be >= 1, got {n_samples}."
            raise ValueError(msg)
        rows = np.sort(np.random.default_rng(as_seed(rng)).choice(E, size=int(n_samples), replace=False))
    index_x, index_z = NeighborIndex(X), NeighborIndex(Z)
    jac = np.empty((rows.size, sizes.size))
    chunk = max(1, (2**27) // (16 * K))
    for start in range(0, rows.size, chunk):
        part = rows[start : start + chunk]
        _, a = index_x.query(X[part], K)
        _, b = index_z.query(Z[part], K)
        jac[start : start + chunk] = _jaccard_curve(a, b, sizes, E)
    return sizes, jac.mean(axis=0), jac.std(axis=0)


def _jaccard_curve(a: np.ndarray, b: np.ndarray, sizes: np.ndarray, E: int) -> np.ndarray:
    """Jaccard of the first ``n`` entries of rows of ``a`` and ``b`` (neighbour lists), for each ``n`` in sizes.

    A sample at position ``p`` in ``b`` and ``r`` in ``a`` is in both ``n``-sets iff ``max(p, r) < n``.
    """
    m, K = a.shape
    offset = (np.arange(m, dtype=np.int64) * E)[:, None]
    order = np.argsort(a, axis=1, kind="stable")
    a_sorted = (np.take_along_axis(a, order, axis=1) + offset).ravel()
    pos = np.searchsorted(a_sorted, (b + offset).ravel())
    pos = np.minimum(pos, a_sorted.size - 1)
    found = a_sorted[pos] == (b + offset).ravel()
    rank_a = np.where(found, order.ravel()[pos], K).reshape(m, K)
    both = np.maximum(rank_a, np.arange(K)[None, :])
    inter = np.stack([(both < s).sum(axis=1) for s in sizes], axis=1)
    return inter / (2 * sizes[None, :] - inter)
