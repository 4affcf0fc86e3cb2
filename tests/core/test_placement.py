from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from lava.core import placement
from lava.core.placement import (
    n_localities,
    neighborhood_centrality,
    neighborhood_retention,
    place_localities,
    sample_weights,
    weighted_lloyd,
)
from references import kmeans_plusplus_numpy


def blobs(E: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian blobs of different spread and size: varied density, no ties."""
    rng = np.random.default_rng(seed)
    k = 4
    centers = rng.uniform(-10, 10, size=(k, d))
    scales = np.array([0.3, 1.0, 2.0, 0.6])
    labels = rng.choice(k, size=E, p=[0.4, 0.3, 0.2, 0.1])
    return centers[labels] + rng.normal(size=(E, d)) * scales[labels, None]


def brute_knn(Q: np.ndarray, Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    D = cdist(Q, Z)
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, idx, axis=1), idx


@pytest.mark.parametrize(
    ("E", "n", "o", "expected"),
    [
        (1000, 50, 3, 60),
        (225_000, 500, 3, 1350),
        (70_000, 3000, 12, 280),
        (10, 4, 1, 3),
        (10, 4, 0.2, 1),
        (5, 2, 50, 5),
    ],
)
def test_n_localities_formula(E, n, o, expected):
    assert n_localities(E, n, o) == expected
    assert n_localities(E, n, o) == min(max(int(E * o / n + 0.5), 1), E)


def test_n_localities_rounds_half_up():
    assert n_localities(10, 4, 1.0) == 3  # 2.5 -> 3 (Python's round would give 2)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_n_localities_rejects_bad_overlap(bad):
    with pytest.raises(ValueError, match="overlap"):
        n_localities(100, 10, bad)


@pytest.fixture(params=["blocks", "tree"])
def centrality_path(request, monkeypatch):
    """Neighbourhoods by candidate blocks (numba; small blocks so that there are many) or by the KD-tree query."""
    if request.param == "blocks":
        monkeypatch.setattr(placement, "BLOCK_MIN_NEIGHBORS", 1)
        monkeypatch.setattr(placement, "CENTRALITY_BLOCK", 8)
    else:
        monkeypatch.setattr(placement, "BLOCK_MIN_NEIGHBORS", 10**9)
    return request.param


@pytest.mark.parametrize("d", [2, 4, 12])
def test_neighborhood_centrality_matches_brute_force(d, centrality_path):
    Z = blobs(400, d, seed=d)
    n = 17
    in_degree, dbar = neighborhood_centrality(Z, n)
    dist, idx = brute_knn(Z, Z, n)
    assert np.all(idx[:, 0] == np.arange(len(Z)))  # a sample is its own nearest neighbour
    expected = np.zeros(len(Z), dtype=np.int64)
    for row in idx:
        for j in row:
            expected[j] += 1
    np.testing.assert_array_equal(in_degree, expected)
    np.testing.assert_allclose(dbar, dist.mean(axis=1), rtol=1e-6)  # brute force: BLAS distances
    assert in_degree.sum() == len(Z) * n


def test_neighborhood_centrality_chunks(monkeypatch):
    Z = blobs(300, 2, seed=5)
    whole = neighborhood_centrality(Z, 9)
    monkeypatch.setattr("lava.core._neighbors.CHUNK_BYTES", 16 * 9 * 7)  # chunks of 7 rows
    chunked = neighborhood_centrality(Z, 9)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], chunked[1])


@pytest.mark.parametrize(("d", "n"), [(2, 40), (3, 120)])
def test_centrality_blocks_match_tree_query(d, n, monkeypatch):
    # default block size, several hundred blocks of varied density and spread, sparse outliers included
    rng = np.random.default_rng(d)
    Z = np.vstack([blobs(4000, d, seed=d), rng.uniform(-40, 40, size=(30, d))])
    blocked = neighborhood_centrality(Z, n)
    monkeypatch.setattr(placement, "BLOCK_MIN_NEIGHBORS", 10**9)
    tree = neighborhood_centrality(Z, n)
    np.testing.assert_array_equal(blocked[0], tree[0])
    np.testing.assert_allclose(blocked[1], tree[1], rtol=1e-12)


def test_centrality_with_many_duplicates_off_the_grid(centrality_path):
    # duplicates at coordinates that are not exact in binary: block centres and distances carry rounding
    rng = np.random.default_rng(11)
    Z = np.vstack([np.tile([0.1, 0.3], (90, 1)), np.tile([0.7, -0.2], (50, 1)), 0.5 * rng.normal(size=(300, 2))])
    n = 40
    in_degree, dbar = neighborhood_centrality(Z, n)
    assert in_degree.sum() == len(Z) * n
    assert np.all(in_degree[:140] >= 1)
    assert np.all(dbar[:90] == 0)
    assert np.all(dbar[90:140] == 0)
    dist, _ = brute_knn(Z[140:], Z, n)
    np.testing.assert_allclose(dbar[140:], dist.mean(axis=1), rtol=1e-6)


def test_own_neighbour_with_many_duplicates(centrality_path):
    Z = np.vstack([np.zeros((30, 2)), blobs(100, 2)])
    in_degree, dbar = neighborhood_centrality(Z, 10)
    assert np.all(in_degree >= 1)
    assert np.all(dbar[:30] == 0)
    assert in_degree.sum() == len(Z) * 10


@pytest.mark.parametrize("d", [2, 50])
def test_weights_finite_at_extreme_exponents_with_duplicates(d, centrality_path):
    Z = np.vstack([np.ones((40, d)), blobs(200, d)])  # 40 duplicates: mean distance 0 for n <= 40
    in_degree, dbar = neighborhood_centrality(Z, 15)
    assert np.any(dbar == 0)
    for alpha in (-2 * d, 0, 2 * d):
        for beta in (-2 * d, 0, 2 * d):
            w = sample_weights(in_degree, dbar, alpha, beta)
            assert np.all(np.isfinite(w))
            assert np.all(w >= 0)
            assert w.max() == pytest.approx(1.0)
    # term by term, where no over/underflow happens
    w = sample_weights(in_degree, dbar, 1.0, 0.5)
    positive = dbar[dbar > 0].min()
    raw = (in_degree / len(Z)) * (1 / np.maximum(dbar, positive)) ** 0.5
    np.testing.assert_allclose(w, raw / raw.max(), rtol=1e-10)


def test_weighted_lloyd_is_a_fixed_point_of_weighted_means():
    rng = np.random.default_rng(1)
    Z = blobs(500, 3)
    w = rng.uniform(0.1, 2.0, size=500)
    C, n_iter = weighted_lloyd(Z, w, Z[:8].copy(), max_iter=500, tol=0.0)
    assert n_iter < 500
    labels = np.argmin(cdist(Z, C), axis=1)
    for c in range(8):
        members = labels == c
        np.testing.assert_allclose(C[c], np.average(Z[members], axis=0, weights=w[members]), rtol=1e-8, atol=1e-10)


def plain_weighted_lloyd(Z, w, C, n_iter):
    """Textbook weighted Lloyd (all distances every iteration), for comparison."""
    for _ in range(n_iter):
        labels = np.argmin(cdist(Z, C), axis=1)
        mass = np.bincount(labels, weights=w, minlength=len(C))
        assert np.all(mass > 0)
        C = np.stack([np.bincount(labels, weights=w * Z[:, j], minlength=len(C)) for j in range(Z.shape[1])], 1)
        C = C / mass[:, None]
    return C


@pytest.mark.parametrize(("k", "d"), [(3, 2), (9, 2), (60, 2), (60, 5)])
def test_weighted_lloyd_bounds_give_plain_lloyd(k, d):
    # the bounds only skip distance computations: every iteration must match plain Lloyd, with few centroids
    # (all near each other) and many (the far bound matters), and weights that make centroids move unevenly
    rng = np.random.default_rng(3)
    Z = blobs(3000, d, seed=2)
    w = rng.uniform(0.0, 1.0, size=len(Z)) ** 4
    start = Z[rng.choice(len(Z), size=k, replace=False)]
    for n_iter in (1, 2, 5, 40):
        C, ran = weighted_lloyd(Z, w, start, max_iter=n_iter, tol=0.0)
        np.testing.assert_allclose(C, plain_weighted_lloyd(Z, w, start, ran), rtol=1e-9, atol=1e-9)


def test_kmeans_plusplus_compiled_matches_numpy():
    rng = np.random.default_rng(4)
    X = blobs(800, 2, seed=5)
    w = rng.uniform(0.0, 1.0, size=len(X)) ** 3
    compiled = placement.kmeans_plusplus(X, 25, w, np.random.default_rng(7))
    plain = kmeans_plusplus_numpy(X, 25, w, np.random.default_rng(7))
    np.testing.assert_allclose(compiled, plain)
    assert len(np.unique(compiled, axis=0)) == 25


@pytest.mark.parametrize("d", [2, 4, 50])
def test_localities_are_nearest_to_probes(d):
    E = 300 if d > 8 else 600
    Z = blobs(E, d, seed=d)
    n, o = 30, 2.0
    result = place_localities(Z, n, o, maxfun=8, rng=3)
    n_loc = n_localities(E, n, o)
    assert result.indices.shape == (n_loc, n)
    assert result.indices.dtype == np.int64
    assert result.probes.shape == (n_loc, d)
    for row in result.indices:
        assert np.unique(row).size == n
    _, expected = brute_knn(result.probes, Z, n)
    np.testing.assert_array_equal(np.sort(result.indices, axis=1), np.sort(expected, axis=1))


def test_centralities_relative_and_loss_consistent():
    Z = blobs(800, 2, seed=4)
    n, o = 40, 3.0
    result = place_localities(Z, n, o, maxfun=10, rng=0)
    E, n_loc = len(Z), result.indices.shape[0]
    # brute-force in-degrees
    _, knn = brute_knn(Z, Z, n)
    in_degree = np.bincount(knn.ravel(), minlength=E)
    in_loc = np.zeros(E)
    for row in result.indices:
        in_loc[row] += 1
    np.testing.assert_allclose(result.neighborhood_centrality, in_degree / E * E / n)
    np.testing.assert_allclose(result.locality_centrality, in_loc / n_loc * E / n)
    assert result.neighborhood_centrality.mean() == pytest.approx(1.0)
    assert result.locality_centrality.mean() == pytest.approx(1.0)
    loss = sum(abs(in_degree[i] / E - in_loc[i] / n_loc) for i in range(E))
    assert result.loss == pytest.approx(loss)
    assert result.loss == pytest.approx(result.evaluations[:, 2].min())
    best = np.argmin(result.evaluations[:, 2])
    assert (result.alpha, result.beta) == tuple(result.evaluations[best, :2])


def test_optimized_loss_not_above_unoptimized():
    Z = blobs(1500, 2, seed=7)
    result = place_localities(Z, 50, 3.0, maxfun=20, rng=0)
    assert tuple(result.evaluations[0, :2]) == (0.0, 0.0)  # DIRECT starts at the centre of the box
    assert result.loss_unoptimized == result.evaluations[0, 2]
    assert result.loss <= result.loss_unoptimized
    assert result.n_evaluations == len(result.evaluations) == len(result.kmeans_iterations)
    assert 20 <= result.n_evaluations <= 30  # DIRECT finishes its last iteration, as scipy's maxfun
    assert np.all(np.abs(result.evaluations[:, :2]) <= 4.0)  # [-2d, 2d]^2
    unopt = place_localities(Z, 50, 3.0, optimize=False, rng=0)
    assert unopt.n_evaluations == 1
    assert (unopt.alpha, unopt.beta) == (0.0, 0.0)
    assert unopt.loss == pytest.approx(result.loss_unoptimized)


def test_deterministic_given_rng():
    Z = blobs(700, 4, seed=2)
    a = place_localities(Z, 25, 2.0, maxfun=8, rng=11)
    b = place_localities(Z, 25, 2.0, maxfun=8, rng=np.random.default_rng(5))
    c = place_localities(Z, 25, 2.0, maxfun=8, rng=11)
    np.testing.assert_array_equal(a.indices, c.indices)
    np.testing.assert_array_equal(a.probes, c.probes)
    np.testing.assert_array_equal(a.evaluations, c.evaluations)
    assert a.seed == 11
    assert isinstance(b.seed, int)


def test_maxfun_is_respected_approximately():
    Z = blobs(400, 2)
    result = place_localities(Z, 20, 2.0, maxfun=7, rng=0)
    assert 7 <= result.n_evaluations <= 12
    np.testing.assert_array_equal(result.evaluation_seeds, 0)


def test_restarts_rerun_best_direct_point_with_other_seeds():
    Z = blobs(600, 2, seed=3)
    result = place_localities(Z, 30, 3.0, maxfun=15, restarts=4, rng=7)
    seeds = result.evaluation_seeds
    n_direct = result.n_evaluations - 4
    assert 11 <= n_direct <= 16
    np.testing.assert_array_equal(seeds[:n_direct], 7)
    np.testing.assert_array_equal(seeds[n_direct:], [8, 9, 10, 11])
    direct = result.evaluations[:n_direct]
    best = direct[np.argmin(direct[:, 2]), :2]
    np.testing.assert_array_equal(result.evaluations[n_direct:, :2], np.tile(best, (4, 1)))
    assert result.loss == result.evaluations[:, 2].min()
    with pytest.raises(ValueError, match="restarts"):
        place_localities(Z, 30, 3.0, maxfun=8, restarts=4)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"Z": np.zeros(10), "n_neighbors": 3, "overlap": 1}, ValueError),
        ({"Z": np.zeros((0, 2)), "n_neighbors": 3, "overlap": 1}, ValueError),
        ({"Z": np.full((10, 2), np.nan), "n_neighbors": 3, "overlap": 1}, ValueError),
        ({"Z": np.zeros((10, 2)), "n_neighbors": 11, "overlap": 1}, ValueError),
        ({"Z": np.zeros((10, 2)), "n_neighbors": 2.5, "overlap": 1}, TypeError),
        ({"Z": np.zeros((10, 2)), "n_neighbors": 3, "overlap": 0}, ValueError),
        ({"Z": np.zeros((10, 2)), "n_neighbors": 3, "overlap": 1, "maxfun": 2}, ValueError),
        ({"Z": np.zeros((10, 2)), "n_neighbors": 3, "overlap": 1, "maxfun": 20.0}, TypeError),
    ],
)
def test_place_localities_rejects_bad_input(kwargs, error):
    with pytest.raises(error):
        place_localities(**kwargs)


def test_sparse_weight_does_not_break_kmeans():
    # weights concentrated on a handful of samples (extreme exponent): still l distinct probes, n distinct samples
    Z = blobs(500, 2, seed=9)
    placer = placement._Placer(Z, 20, 25, 0, max_iter=5, coreset_factor=20)
    loss = placer.evaluate(-4.0, 4.0)
    assert np.isfinite(loss)
    _, probes, idx = placer.best
    assert np.all(np.isfinite(probes))
    assert all(np.unique(row).size == 20 for row in idx)


def jaccard_reference(X, Z, sizes, rows):
    _, a = brute_knn(X[rows], X, max(sizes))
    _, b = brute_knn(Z[rows], Z, max(sizes))
    out = np.empty((len(rows), len(sizes)))
    for i in range(len(rows)):
        for j, s in enumerate(sizes):
            A, B = set(a[i, :s]), set(b[i, :s])
            out[i, j] = len(A & B) / len(A | B)
    return out


def test_neighborhood_retention_matches_sets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10))
    Z = X[:, :2] + 0.3 * rng.normal(size=(300, 2))
    sizes = [5, 1, 20, 60]
    got_sizes, mean, std = neighborhood_retention(X, Z, sizes)
    np.testing.assert_array_equal(got_sizes, [1, 5, 20, 60])
    ref = jaccard_reference(X, Z, [1, 5, 20, 60], np.arange(300))
    np.testing.assert_allclose(mean, ref.mean(axis=0))
    np.testing.assert_allclose(std, ref.std(axis=0))
    assert mean[0] == 1.0  # every sample is its own nearest neighbour in both spaces


def test_neighborhood_retention_subsample_and_sparse():
    from scipy import sparse

    rng = np.random.default_rng(1)
    X = rng.normal(size=(250, 12))
    X[X < -1.0] = 0  # sparse enough to be stored as such, without ties between distances
    Z = rng.normal(size=(250, 2))
    _, mean, _ = neighborhood_retention(sparse.csr_matrix(X), Z, [10, 50], rng=3, n_samples=40)
    rows = np.sort(np.random.default_rng(3).choice(250, size=40, replace=False))
    np.testing.assert_allclose(mean, jaccard_reference(X, Z, [10, 50], rows).mean(axis=0))
    # an unrelated embedding retains about what chance gives: n / (2E - n) for size n
    assert mean[1] < 0.3
    with pytest.raises(ValueError, match="sizes"):
        neighborhood_retention(X, Z, [0, 10])
    with pytest.raises(ValueError, match="sizes"):
        neighborhood_retention(X, Z, [251])
