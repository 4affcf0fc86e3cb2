"""Property-based tests (hypothesis) of lava.core: invariants that must hold for every input, not just examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from lava.core import amf_loss, locality_correlations, pair_indices, reconstruct

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def data_and_localities(draw, *, ties: bool = True):
    """Small integer-valued data (ties happen) and localities: ``(X (E x D) float64, indices (l x n) int64)``."""
    E = draw(st.integers(8, 30))
    D = draw(st.integers(2, 5))
    high = draw(st.sampled_from([3, 20, 1000])) if ties else 10**6
    X = draw(hnp.arrays(np.int64, (E, D), elements=st.integers(0, high))).astype(np.float64)
    n = draw(st.integers(4, E))
    n_loc = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    gen = np.random.default_rng(seed)
    indices = np.stack([gen.choice(E, n, replace=False) for _ in range(n_loc)]).astype(np.int64)
    return X, indices, gen


def _corr(X, indices, **kwargs):
    return locality_correlations(X, indices, device="cpu", **kwargs)


@SETTINGS
@given(data_and_localities(), st.sampled_from([0.5, 0.75, 1.0]))
def test_correlations_lie_in_0_1(case, tie_fraction):
    X, indices, _ = case
    C = _corr(X, indices, tie_fraction=tie_fraction)
    assert C.shape == (indices.shape[0], X.shape[1] * (X.shape[1] - 1) // 2)
    assert np.isfinite(C).all()
    assert C.min() >= 0
    assert C.max() <= 1


@SETTINGS
@given(data_and_localities(ties=False))
def test_correlations_are_absolute_spearman_without_ties(case):
    """Without ties (values drawn from a million) and without the filter, the definition: |scipy spearmanr|."""
    X, indices, _ = case
    C = _corr(X, indices, tie_fraction=1.0)
    i, j = pair_indices(X.shape[1])
    for k, rows in enumerate(indices):
        for p in range(i.size):
            a, b = X[rows, i[p]], X[rows, j[p]]
            expected = 0.0 if np.ptp(a) == 0 or np.ptp(b) == 0 else abs(stats.spearmanr(a, b).statistic)
            assert C[k, p] == pytest.approx(expected, abs=1e-5)


@SETTINGS
@given(data_and_localities())
def test_correlations_are_symmetric_in_pair_order(case):
    """Any order of the features gives the same value for every unordered pair."""
    X, indices, gen = case
    D = X.shape[1]
    perm = gen.permutation(D)
    C, Cp = _corr(X, indices), _corr(X[:, perm], indices)
    where = {frozenset((a, b)): p for p, (a, b) in enumerate(zip(*pair_indices(D), strict=True))}
    for p, (a, b) in enumerate(zip(*pair_indices(D), strict=True)):
        np.testing.assert_allclose(Cp[:, p], C[:, where[frozenset((perm[a], perm[b]))]], atol=1e-6)


@SETTINGS
@given(data_and_localities(), st.sampled_from(["exp", "cube", "affine", "decreasing"]))
def test_correlations_invariant_to_monotone_transforms(case, transform):
    """Ranks (and the tie filter) only see order: a strictly monotone map of a feature changes nothing."""
    X, indices, gen = case
    column = int(gen.integers(X.shape[1]))
    f = {
        "exp": lambda x: np.exp(x / 50.0),
        "cube": lambda x: (x - 7.0) ** 3,
        "affine": lambda x: 3.0 * x + 11.0,
        "decreasing": lambda x: -2.0 * x,  # reverses the order: |Spearman| is unchanged
    }[transform]
    Y = X.copy()
    Y[:, column] = f(X[:, column])
    np.testing.assert_allclose(_corr(Y, indices), _corr(X, indices), atol=1e-6)


@SETTINGS
@given(data_and_localities())
def test_correlations_invariant_to_sample_order_within_a_locality(case):
    X, indices, gen = case
    shuffled = np.stack([gen.permutation(row) for row in indices])
    np.testing.assert_allclose(_corr(X, shuffled), _corr(X, indices), atol=1e-6)


@st.composite
def factors(draw):
    """``(presence (l x M), modules (M x P))`` with entries in [0, 1]."""
    n_loc, M, P = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 12))
    unit = st.floats(0, 1, width=32)
    presence = draw(hnp.arrays(np.float32, (n_loc, M), elements=unit))
    modules = draw(hnp.arrays(np.float32, (M, P), elements=unit))
    return presence, modules


@SETTINGS
@given(factors())
def test_reconstruction_is_the_max_product_in_0_1(fm):
    presence, modules = fm
    Chat = np.asarray(reconstruct(presence, modules))
    expected = np.max(presence[:, :, None].astype(np.float64) * modules[None, :, :], axis=1)
    np.testing.assert_allclose(Chat, expected, rtol=1e-6, atol=1e-7)
    assert Chat.min() >= 0
    assert Chat.max() <= 1


@SETTINGS
@given(factors(), st.data())
def test_reconstruction_is_monotone_in_each_presence(fm, data):
    """Raising one presence never lowers any reconstructed entry (and only touches its own locality)."""
    presence, modules = fm
    i = data.draw(st.integers(0, presence.shape[0] - 1))
    m = data.draw(st.integers(0, presence.shape[1] - 1))
    raised = presence.copy()
    raised[i, m] = data.draw(st.floats(float(presence[i, m]), 1, width=32))
    before, after = np.asarray(reconstruct(presence, modules)), np.asarray(reconstruct(raised, modules))
    assert (after >= before).all()
    others = np.arange(presence.shape[0]) != i
    np.testing.assert_array_equal(after[others], before[others])


@SETTINGS
@given(factors(), st.data(), st.sampled_from([1.0, 9.0]), st.sampled_from([0.0, 1e-4, 10.0]))
def test_loss_invariant_to_the_order_of_localities(fm, data, nu, gamma):
    presence, modules = fm
    C = data.draw(hnp.arrays(np.float32, (presence.shape[0], modules.shape[1]), elements=st.floats(0, 1, width=32)))
    perm = data.draw(st.permutations(range(presence.shape[0])))
    loss = amf_loss(C, presence, modules, nu=nu, gamma=gamma)
    permuted = amf_loss(C[perm], presence[perm], modules, nu=nu, gamma=gamma)
    assert np.isfinite(loss)
    assert permuted == pytest.approx(loss, rel=1e-9, abs=1e-12)
