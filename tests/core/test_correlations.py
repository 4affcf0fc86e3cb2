from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from scipy import sparse

from lava.core import correlation_support, locality_correlations, n_pairs, pair_indices
from lava.core import correlations as corr_module
from lava.core._correlations_numba import rank_batch
from references import centred_unit_ranks_numpy, correlations_by_torch


def reference(X, indices, tie_fraction=0.75):
    """Per-locality scipy.stats.spearmanr, absolute value, tie filter by a naive loop, NaN -> 0."""
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    X = X.astype(np.float64)
    n_loc, n = indices.shape
    D = X.shape[1]
    out = np.zeros((n_loc, n_pairs(D)))
    for k in range(n_loc):
        B = X[indices[k]]
        r = np.zeros((D, D))
        varying = [j for j in range(D) if np.unique(B[:, j]).size > 1]
        # spearmanr returns a single NaN when any column is constant, so correlate the varying ones
        if len(varying) == 2:
            r[np.ix_(varying, varying)] = abs(scipy.stats.spearmanr(B[:, varying[0]], B[:, varying[1]]).statistic)
        elif len(varying) > 2:
            r[np.ix_(varying, varying)] = np.abs(scipy.stats.spearmanr(B[:, varying]).statistic)
        r = np.nan_to_num(r)
        for j in range(D):
            _, counts = np.unique(B[:, j], return_counts=True)
            if counts.max() / n > tie_fraction:
                r[j, :] = 0
                r[:, j] = 0
        out[k] = r[np.triu_indices(D, k=1)]
    return out


def make_data(rng, n_samples=240, n_features=30):
    """Count-like data: many zeros (sparse), ties among non-zeros, a constant column, a tied non-zero value."""
    X = rng.poisson(rng.gamma(0.6, 1.5, size=n_features), size=(n_samples, n_features)).astype(np.float64)
    X[:, 1] = rng.standard_normal(n_samples)  # no ties
    X[:, 2] = -rng.gamma(1.0, size=n_samples)  # negative values
    X[:, 3] = 4.0  # constant
    X[:, 4] = np.where(rng.random(n_samples) < 0.85, 7.0, X[:, 4])  # a non-zero value repeated in most samples
    X[:, 5] = np.where(X[:, 5] == 0, -0.0, X[:, 5])  # -0.0 and 0.0 are the same value
    return X


def make_indices(rng, n_samples, n_loc=17, n=40):
    return np.stack([rng.choice(n_samples, size=n, replace=False) for _ in range(n_loc)])


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_spearmanr(rng, fmt, dtype):
    X = make_data(rng).astype(dtype)
    idx = make_indices(rng, X.shape[0])
    data = X if fmt == "dense" else getattr(sparse, f"{fmt}_matrix")(X)
    C = locality_correlations(data, idx)
    R = reference(X, idx)
    assert C.dtype == np.float32
    assert C.shape == (idx.shape[0], n_pairs(X.shape[1]))
    np.testing.assert_allclose(C, R, atol=1e-5, rtol=0)
    # the data exercise both kept and filtered features, and non-trivial correlations
    assert 0.05 < np.mean(R > 0) < 0.95
    assert R.max() > 0.3


def test_sparse_formats_equal_dense_exactly(rng):
    X = make_data(rng).astype(np.float32)
    idx = make_indices(rng, X.shape[0])
    dense = locality_correlations(X, idx)
    for fmt in (sparse.csr_matrix, sparse.csc_matrix, sparse.csr_array, sparse.coo_matrix):
        np.testing.assert_array_equal(locality_correlations(fmt(X), idx), dense)
    # duplicate entries (non-canonical CSR) count as their sum, as in toarray()
    coo = sparse.coo_matrix(X)
    half = (coo.data / 2).astype(np.float32)
    doubled = sparse.csr_matrix(
        (np.concatenate([half, coo.data - half]), (np.tile(coo.row, 2), np.tile(coo.col, 2))), shape=X.shape
    )
    doubled.has_canonical_format = False
    np.testing.assert_allclose(locality_correlations(doubled, idx), dense, atol=1e-6)
    # explicitly stored zeros are zeros
    explicit = sparse.csr_matrix(X)
    explicit.data[::3] = 0
    np.testing.assert_array_equal(locality_correlations(explicit, idx), locality_correlations(explicit.toarray(), idx))


def test_integer_and_float16_input(rng):
    X = np.round(make_data(rng) * 4)  # integer-valued, so every dtype below holds it (up to sign for uint8)
    idx = make_indices(rng, X.shape[0])
    R = reference(X, idx)
    for dtype in (np.int64, np.int32, np.uint8, np.float16, bool):
        Xt = X.astype(dtype) if dtype is not np.uint8 else np.abs(X).astype(dtype)
        np.testing.assert_allclose(locality_correlations(Xt, idx), reference(Xt, idx), atol=1e-5, rtol=0)
    np.testing.assert_allclose(locality_correlations(X.astype(np.int64), idx), R, atol=1e-5, rtol=0)


def test_float64_values_that_float32_would_merge(rng):
    # 1 + 1e-12 and 1 are distinct in float64 but equal in float32: ranks must keep them apart
    n = 30
    x = 1.0 + rng.permutation(n) * 1e-12
    y = rng.standard_normal(n)
    X = np.column_stack([x, y, x + y * 1e-13])
    idx = np.arange(n)[None]
    np.testing.assert_allclose(locality_correlations(X, idx), reference(X, idx), atol=1e-5, rtol=0)
    assert locality_correlations(X, idx)[0, 1] > 0.99  # x and x + tiny noise: same ranks


def test_tie_filter_boundary_is_strict(rng):
    n = 20
    base = rng.standard_normal((n, 3))
    exactly = base[:, 0].copy()
    exactly[:15] = 2.5  # 15 / 20 = 75 %: kept
    above = base[:, 1].copy()
    above[:16] = 2.5  # 16 / 20 = 80 % (a non-zero value): filtered
    X = np.column_stack([exactly, above, base[:, 2], np.zeros(n)])
    idx = rng.permutation(n)[None]
    C = locality_correlations(X, idx)
    i, j = pair_indices(4)
    with_exact = (i == 0) & (j == 2)
    assert C[0, with_exact][0] == pytest.approx(abs(scipy.stats.spearmanr(exactly, base[:, 2]).statistic), abs=1e-6)
    assert C[0, with_exact][0] > 0
    assert np.all(C[0, (i == 1) | (j == 1)] == 0)  # tied-out feature
    assert np.all(C[0, (i == 3) | (j == 3)] == 0)  # constant feature
    np.testing.assert_allclose(C, reference(X, idx), atol=1e-6)
    # tie_fraction=1 filters only the constant feature
    C1 = locality_correlations(X, idx, tie_fraction=1.0)
    assert C1[0, (i == 0) & (j == 1)][0] > 0
    assert np.all(C1[0, (i == 3) | (j == 3)] == 0)
    np.testing.assert_allclose(C1, reference(X, idx, tie_fraction=1.0), atol=1e-6)


def test_two_features_and_pair_order(rng):
    X = rng.standard_normal((50, 2))
    X[:, 1] += X[:, 0]
    C = locality_correlations(X, np.arange(50)[None])
    assert C.shape == (1, 1)
    assert C[0, 0] == pytest.approx(abs(scipy.stats.spearmanr(X[:, 0], X[:, 1]).statistic), abs=1e-6)

    D = 7
    X = rng.standard_normal((60, D)) @ rng.standard_normal((D, D))
    C = locality_correlations(X, np.arange(60)[None])
    i, j = pair_indices(D)
    np.testing.assert_array_equal(np.stack([i, j]), np.stack(np.triu_indices(D, k=1)))
    assert n_pairs(D) == len(i) == 21
    for p in range(len(i)):
        expected = abs(scipy.stats.spearmanr(X[:, i[p]], X[:, j[p]]).statistic)
        assert C[0, p] == pytest.approx(expected, abs=1e-6)


def test_invariant_to_sample_order_and_batching(rng):
    X = sparse.csr_matrix(make_data(rng))
    idx = make_indices(rng, X.shape[0], n_loc=11)
    C = locality_correlations(X, idx)
    shuffled = np.stack([rng.permutation(row) for row in idx])
    np.testing.assert_allclose(locality_correlations(X, shuffled), C, atol=1e-6, rtol=0)
    for batch_size in (1, 4, 100):
        np.testing.assert_allclose(locality_correlations(X, idx, batch_size=batch_size), C, atol=1e-6, rtol=0)
    # localities are independent: a subset of rows gives the same rows
    np.testing.assert_allclose(locality_correlations(X, idx[3:5]), C[3:5], atol=1e-6, rtol=0)


def test_no_nan_and_range(rng):
    X = np.zeros((30, 5))
    X[:, 0] = rng.standard_normal(30)
    X[:, 1] = X[:, 0] * -3  # perfectly anti-correlated: |r| = 1 exactly, clamped
    C = locality_correlations(X, np.arange(30)[None])
    assert np.all(np.isfinite(C))
    assert C.min() >= 0
    assert C.max() <= 1
    assert C[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert np.count_nonzero(C) == 1


@pytest.mark.parametrize("fmt", ["dense", "csr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_ranking_path_matches(rng, fmt, dtype):
    # the GPU path ranks with torch (sort + searchsorted); run that code on the CPU against the reference
    X = make_data(rng).astype(dtype)
    idx = make_indices(rng, X.shape[0])
    data = X if fmt == "dense" else sparse.csr_matrix(X)
    np.testing.assert_allclose(correlations_by_torch(data, idx), reference(X, idx), atol=1e-5, rtol=0)
    np.testing.assert_allclose(correlations_by_torch(data, idx, batch_size=5), reference(X, idx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_ranks_match_the_numpy_reference(rng, dtype):
    # rows with ties, zeros, -0.0, negatives and a constant row: the same average ranks and the same tie filter
    n = 50
    rows = rng.integers(-3, 4, size=(40, n)).astype(dtype)
    rows[:10] = rng.standard_normal((10, n))
    rows[10, :45] = 2.0  # one value in 45 of 50 samples: tied out at max_count 37
    rows[11] = 5.0  # constant
    rows[12] = np.where(rows[12] == 0, -0.0, rows[12])
    max_count = corr_module.max_tied_count(n, 0.75)
    ranks, keep = corr_module._centred_unit_ranks(torch.from_numpy(rows.copy()), max_count)
    expected_ranks, expected_keep = centred_unit_ranks_numpy(rows.copy(), max_count)
    np.testing.assert_array_equal(keep.numpy(), expected_keep)
    assert not keep[10]
    assert not keep[11]
    assert keep[:10].all()
    np.testing.assert_allclose(ranks.numpy()[expected_keep], expected_ranks[expected_keep], atol=1e-6, rtol=0)
    for k in np.flatnonzero(expected_keep):
        np.testing.assert_allclose(expected_ranks[k], centred_unit_ranks(rows[k].astype(np.float64)), atol=1e-6)


@pytest.mark.parametrize("path", ["kernels", "torch"])
def test_packed_and_full_products_agree(rng, monkeypatch, path):
    # CPU kernels (strips) or the GPU code path
    correlations = locality_correlations if path == "kernels" else correlations_by_torch
    X = make_data(rng).astype(np.float32)
    idx = make_indices(rng, X.shape[0])
    C = locality_correlations(X, idx)
    monkeypatch.setattr(corr_module, "_PACK_FRACTION", 0.0)  # always the full D x D product
    np.testing.assert_allclose(correlations(X, idx), C, atol=1e-6, rtol=0)
    monkeypatch.setattr(corr_module, "_PACK_FRACTION", 2.0)  # always pack
    np.testing.assert_allclose(correlations(X, idx), C, atol=1e-6, rtol=0)
    # the full product split into feature blocks (upper block pairs only), uneven block sizes
    monkeypatch.setattr(corr_module, "_PACK_FRACTION", 0.0)
    for min_block in (4, 7, 13):
        monkeypatch.setattr(corr_module, "_MIN_BLOCK", min_block)
        np.testing.assert_allclose(correlations(X, idx), C, atol=1e-6, rtol=0)
        np.testing.assert_allclose(correlations(X[:, :9], idx), reference(X[:, :9], idx), atol=1e-5, rtol=0)


def test_max_tied_count():
    assert corr_module.max_tied_count(20, 0.75) == 15
    assert corr_module.max_tied_count(21, 0.75) == 15
    assert corr_module.max_tied_count(10, 0.7) == 7
    assert corr_module.max_tied_count(3, 1.0) == 3


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tie_fraction": 0.0}, ValueError),
        ({"tie_fraction": 1.5}, ValueError),
        ({"tie_fraction": "0.75"}, TypeError),
        ({"batch_size": 0}, ValueError),
        ({"device": "cuda:99"} if not __import__("torch").cuda.is_available() else {"batch_size": -1}, ValueError),
    ],
)
def test_bad_arguments(rng, kwargs, error):
    X = rng.standard_normal((10, 3))
    with pytest.raises(error):
        locality_correlations(X, np.arange(10)[None], **kwargs)


def test_bad_data(rng):
    X = rng.standard_normal((10, 3))
    idx = np.arange(10)[None]
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        locality_correlations(bad, idx)
    with pytest.raises(ValueError, match="NaN"):
        locality_correlations(sparse.csr_matrix(bad), idx)
    with pytest.raises(ValueError, match="2-D"):
        locality_correlations(X[:, 0], idx)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        locality_correlations(X, idx + 1)
    with pytest.raises(TypeError, match="integers"):
        locality_correlations(X, idx.astype(float))
    with pytest.raises(TypeError, match="real numbers"):
        locality_correlations(X.astype(complex), idx)


def test_degenerate_shapes(rng):
    X = rng.standard_normal((10, 4))
    assert locality_correlations(X, np.zeros((0, 5), dtype=int)).shape == (0, 6)
    assert locality_correlations(X[:, :1], np.arange(10)[None]).shape == (1, 0)
    np.testing.assert_array_equal(locality_correlations(X, np.arange(1)[None]), np.zeros((1, 6), np.float32))


@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    X = sparse.csr_matrix(make_data(rng).astype(np.float32))
    idx = make_indices(rng, X.shape[0])
    np.testing.assert_allclose(
        locality_correlations(X, idx, device="cuda"), locality_correlations(X, idx, device="cpu"), atol=1e-5
    )


def centred_unit_ranks(values):
    """Average ranks (scipy), centred and scaled to unit length."""
    r = scipy.stats.rankdata(values)
    r -= r.mean()
    return r / np.linalg.norm(r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("radix_min", [0, 10**9])
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_cpu_kernel_ranks_from_non_zeros(rng, dtype, radix_min, fmt):
    # the CPU kernel sorts only the non-zeros (zeros are one tie group placed between negatives and positives),
    # by radix sort or insertion sort: its rank rows must equal scipy's average ranks of the full columns
    n, D = 64, 9
    X = np.zeros((n, D), dtype=dtype)
    X[:, 0] = rng.standard_normal(n)  # no zeros, no ties
    X[:, 1] = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 4, n))  # zeros and tied positives
    X[:, 2] = np.where(rng.random(n) < 0.4, 0, rng.integers(-3, 4, n))  # negatives, zeros, positives, ties
    X[:, 3] = np.where(rng.random(n) < 0.9, 0, 1.0)  # tied out by zeros
    X[:, 4] = 2.5  # constant (no zeros)
    X[:, 5] = -np.abs(rng.standard_normal(n)) * 1e30  # large negatives, float32 and float64 keys
    X[:, 6] = np.where(rng.random(n) < 0.3, -0.0, 1 + rng.permutation(n) * 1e-3)  # -0.0 counts as zero
    X[:, 7] = np.where(rng.random(n) < 0.85, 7.0, rng.standard_normal(n))  # a non-zero value tied out
    X[:, 8] = rng.standard_normal(n) * 1e-30  # tiny values
    X = X.astype(dtype)
    data = X if fmt == "dense" else sparse.csr_matrix(X)
    Xc, rank_dtype = corr_module._check_data(data)
    inputs = corr_module._cpu_inputs(Xc, rank_dtype)
    idx = np.stack([rng.permutation(n)[: n - 4] for _ in range(2)])
    m = idx.shape[1]
    max_count = corr_module.max_tied_count(m, 0.75)
    packed = np.full((2, D, m), np.nan, dtype=np.float32)
    slot_of = np.empty((2, D), dtype=np.int64)
    n_alive = np.empty(2, dtype=np.int64)
    key_type = np.empty(0, np.uint32 if inputs[2].dtype == np.float32 else np.uint64)
    rank_batch(*inputs, idx, max_count, key_type, radix_min, packed, slot_of, n_alive)
    for k in range(2):
        B = X[idx[k]].astype(np.float64)
        kept = [j for j in range(D) if np.unique(B[:, j], return_counts=True)[1].max() <= max_count]
        assert {0, 2} <= set(kept)
        assert not {3, 4, 7} & set(kept)
        np.testing.assert_array_equal(np.flatnonzero(slot_of[k] >= 0), kept)
        assert n_alive[k] == len(kept)
        np.testing.assert_array_equal(slot_of[k, kept], np.arange(len(kept)))
        for j in kept:
            np.testing.assert_allclose(packed[k, slot_of[k, j]], centred_unit_ranks(B[:, j]), atol=1e-6, rtol=0)


def test_cpu_kernels_match_gpu_code_path(rng):
    # count-like data where most features survive the tie filter (the packed product is nearly D x D)
    X = rng.poisson(rng.gamma(2.0, 1.5, size=60), size=(400, 60)).astype(np.float32)
    X = sparse.csr_matrix(np.log1p(X))
    idx = make_indices(rng, X.shape[0], n_loc=9, n=150)
    C = locality_correlations(X, idx, batch_size=4)
    assert 0.3 < np.mean(C > 0) < 1
    np.testing.assert_allclose(C, correlations_by_torch(X, idx, batch_size=4), atol=2e-6, rtol=0)
    np.testing.assert_allclose(C, reference(X, idx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("block_rows", [1, 4, 64])
def test_correlation_support_matches_a_loop(rng, block_rows):
    X = make_data(rng)
    idx = make_indices(rng, X.shape[0])
    C = locality_correlations(X, idx)
    C[:, 5] = 0  # a pair that is 0 everywhere
    C[2] = 0  # a locality where nothing entered
    D = X.shape[1]
    support = correlation_support(C, D, block_rows=block_rows)
    i, j = pair_indices(D)
    entered = np.zeros((C.shape[0], D), dtype=bool)
    for k in range(C.shape[0]):
        for p in np.flatnonzero(C[k]):
            entered[k, i[p]] = entered[k, j[p]] = True
    np.testing.assert_array_equal(support.entered, entered)
    np.testing.assert_array_equal(support.pair_localities, np.count_nonzero(C, axis=0))
    np.testing.assert_array_equal(support.feature_localities, entered.sum(axis=0))
    np.testing.assert_array_equal(support.locality_features, entered.sum(axis=1))
    assert support.locality_features[2] == 0
    assert support.n_nonzero == np.count_nonzero(C)
    assert support.n_pairs_nonzero == np.count_nonzero(C.any(axis=0)) < C.shape[1]
    assert support.nonzero_fraction == pytest.approx(np.count_nonzero(C) / C.size)
    assert support.feature_localities[3] == 0  # the constant feature never enters


def test_correlation_support_reads_an_on_disk_store(rng, tmp_path):
    C = (rng.random((9, n_pairs(12))) < 0.2).astype(np.float32)
    store = np.lib.format.open_memmap(tmp_path / "C.npy", mode="w+", dtype=np.float32, shape=C.shape)
    store[:] = C
    np.testing.assert_array_equal(
        correlation_support(store, 12, block_rows=2).entered, correlation_support(C, 12).entered
    )


def test_correlation_support_bad_arguments():
    with pytest.raises(ValueError, match="pass the number of features"):
        correlation_support(np.zeros((2, 10), np.float32), 4)
    with pytest.raises(ValueError, match="2-D"):
        correlation_support(np.zeros(10, np.float32), 5)
    with pytest.raises(ValueError, match="block_rows"):
        correlation_support(np.zeros((2, 10), np.float32), 5, block_rows=0)
    empty = correlation_support(np.zeros((0, 10), np.float32), 5)
    assert empty.entered.shape == (0, 5)
    assert empty.nonzero_fraction == 0.0
