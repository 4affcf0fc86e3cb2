"""Fit-quality and reading metrics against direct formulas (METHOD.md sections 3-5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lava.core import (
    copresence_entropy,
    feature_scores,
    locality_similarity,
    overestimation_ratio,
    placement_stability,
    presence_weighted_average,
    reconstruction_similarity,
)
from lava.core.amf import locality_weights


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    C = (rng.random((70, 15)) * (rng.random((70, 15)) < 0.6)).astype(np.float32)
    C_hat = (rng.random((70, 15)) * (rng.random((70, 15)) < 0.6)).astype(np.float32)
    return C, C_hat


def test_overestimation_ratio(pair):
    C, C_hat = pair
    over = sum(max(float(h) - float(c), 0.0) for h, c in zip(C_hat.ravel(), C.ravel(), strict=True))
    total = sum(abs(float(h) - float(c)) for h, c in zip(C_hat.ravel(), C.ravel(), strict=True))
    assert overestimation_ratio(C, C_hat) == pytest.approx(over / total, rel=1e-9)
    assert overestimation_ratio(C, C + 0.1) == pytest.approx(1.0)
    assert overestimation_ratio(C, C * 0.5) == 0.0
    assert overestimation_ratio(C, C) == 0.0  # no error at all: 0, not 0/0


def test_locality_and_reconstruction_similarity(pair):
    C, C_hat = pair
    C[3] = 0
    C_hat[5] = 0
    expected = []
    for c, h in zip(C.astype(float), C_hat.astype(float), strict=True):
        nc, nh = math.sqrt((c * c).sum()), math.sqrt((h * h).sum())
        expected.append(0.0 if nc == 0 or nh == 0 else float((c * h).sum()) / (nc * nh))
    np.testing.assert_allclose(locality_similarity(C, C_hat), expected, rtol=1e-9)
    norms = np.sqrt((C.astype(float) ** 2).sum(1))
    a = np.array([norms[i] / (norms.sum() - norms[i]) for i in range(len(norms))])
    np.testing.assert_allclose(locality_weights(C), a, rtol=1e-12)
    assert reconstruction_similarity(C, C_hat) == pytest.approx((a * expected).sum() / a.sum(), rel=1e-9)
    w = np.arange(70, dtype=float)
    assert reconstruction_similarity(C, C_hat, weights=w) == pytest.approx((w * expected).sum() / w.sum(), rel=1e-9)
    assert reconstruction_similarity(C, C) == pytest.approx(1.0)


def test_all_zero_inputs_do_not_divide_by_zero():
    Z = np.zeros((4, 6), np.float32)
    with np.errstate(all="raise"):
        assert overestimation_ratio(Z, Z) == 0.0
        np.testing.assert_array_equal(locality_similarity(Z, Z), np.zeros(4))
        assert reconstruction_similarity(Z, Z) == 0.0
        assert placement_stability(Z, Z) == 0.0
        np.testing.assert_array_equal(locality_weights(Z), np.zeros(4))
        np.testing.assert_array_equal(presence_weighted_average(np.zeros((4, 2)), np.ones((2, 6))), np.zeros(6))
        assert np.isnan(copresence_entropy(np.zeros((4, 2)))).all()
    one = np.zeros((3, 2))
    one[1] = 0.5
    np.testing.assert_array_equal(locality_weights(one), [0.0, 1.0, 0.0])  # a lone non-zero locality weighs 1


def test_copresence_entropy():
    presence = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.3, 0.3, 0.3], [0.2, 0.1, 0.1], [0.6, 0.2, 0.1]])
    out = copresence_entropy(presence)
    assert out[0] == 0.0
    assert out[1] == pytest.approx(1.0)
    assert out[2] == pytest.approx(math.log2(3))
    assert np.isnan(out[3])  # raw sum 0.4 < 0.5: ignored
    p = presence[4] / presence[4].sum()
    assert out[4] == pytest.approx(-sum(x * math.log2(x) for x in p))
    assert not np.isnan(copresence_entropy(presence, min_total=0.3)[3])


def test_presence_weighted_average():
    rng = np.random.default_rng(1)
    presence, modules = rng.random((9, 3)), rng.random((3, 11))
    num = np.zeros(11)
    for m in range(3):
        num += presence[:, m].sum() * modules[m]
    np.testing.assert_allclose(presence_weighted_average(presence, modules), num / presence.sum(), rtol=1e-12)


def test_placement_stability():
    rng = np.random.default_rng(2)
    A, B = rng.random((10, 8)), rng.random((14, 8))
    ma, mb = A.mean(0), B.mean(0)
    expected = (ma @ mb) / np.linalg.norm(ma) / np.linalg.norm(mb)
    assert placement_stability(A, B) == pytest.approx(expected, rel=1e-12)
    assert placement_stability(A, A[::-1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same pairs"):
        placement_stability(A, B[:, :5])


def test_feature_scores_brute_force():
    rng = np.random.default_rng(3)
    D = 7
    modules = rng.random((2, D * (D - 1) // 2))
    expected = np.zeros((D, 2))
    k = 0
    for i in range(D):
        for j in range(i + 1, D):
            expected[i] += modules[:, k]
            expected[j] += modules[:, k]
            k += 1
    np.testing.assert_allclose(feature_scores(modules, D), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="n_features"):
        feature_scores(modules, D + 1)


def _random_modules(seed: int, D: int, density: float, n_modules: int = 4) -> np.ndarray:
    """(n_modules, P) module values uniform in [0, 1), each pair positive with probability ``density``."""
    rng = np.random.default_rng(seed)
    P = D * (D - 1) // 2
    return rng.uniform(0, 1, (n_modules, P)) * (rng.random((n_modules, P)) < density)


def _direct_core(modules, D, threshold, reference_rank):
    """core_features written as loops: the reference is the reference_rank-th largest positive value."""
    ref = np.zeros((D, modules.shape[0]), bool)
    for m in range(modules.shape[0]):
        positive = sorted((v for v in modules[m] if v > 0), reverse=True)
        if not positive:
            continue
        reference = positive[min(reference_rank, len(positive)) - 1]
        k = 0
        for i in range(D):
            for j in range(i + 1, D):
                if modules[m, k] > 0 and modules[m, k] >= threshold * reference:
                    ref[i, m] = ref[j, m] = True
                k += 1
    return ref


def test_core_features_match_a_direct_loop():
    from lava.core.metrics import CORE_REFERENCE_RANK, core_features

    D = 9
    modules = _random_modules(3, D, 0.4)
    modules[2] = 0  # no core pairs
    modules[3, :] = 0
    modules[3, :4] = [0.9, 0.5, 0.3, 0.1]  # fewer positive pairs than the reference rank
    for threshold in (0.0, 0.5, 0.9):
        for rank in (1, 3, CORE_REFERENCE_RANK):
            got = core_features(modules, D, threshold=threshold, reference_rank=rank)
            np.testing.assert_array_equal(got, _direct_core(modules, D, threshold, rank))
    np.testing.assert_array_equal(core_features(modules, D), _direct_core(modules, D, 0.5, CORE_REFERENCE_RANK))
    assert not core_features(modules, D)[:, 2].any()
    # four positive pairs and rank 10: the reference is the smallest positive value, so all four pairs are core
    assert core_features(modules, D)[:, 3].sum() == 5  # pairs (0,1) (0,2) (0,3) (0,4)
    # the largest value as reference drops the pairs below half of 0.9
    assert core_features(modules, D, reference_rank=1)[:, 3].sum() == 3
    with pytest.raises(ValueError, match="modules must be"):
        core_features(modules[:, :-1], D)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="reference_rank must be a positive integer"):
            core_features(modules, D, reference_rank=bad)


def test_core_features_reference_resists_one_outlying_pair():
    """A module whose top pair stands far above the rest keeps the rest: the bar is half its 10th value."""
    from lava.core.metrics import core_features

    D = 12
    P = D * (D - 1) // 2
    modules = np.zeros((1, P))
    modules[0, 0] = 1.0  # pair (0, 1): the outlier, e.g. two paralogues
    modules[0, 1:15] = 0.45  # pairs (0, 2) ... (0, 11), (1, 2) ... (1, 5): the programme
    assert core_features(modules, D).sum() == D  # every feature of the programme
    assert core_features(modules, D, reference_rank=1).sum() == 2  # the old bar: only the outlying pair's two


def _direct_groups(modules, D, threshold, rank):
    """Average-linkage groups by a direct loop: merge the two clusters with the largest mean pair value while that
    mean is >= the core cut; then number by size (ties: lowest feature)."""
    out = np.full((D, modules.shape[0]), -1)
    core = _direct_core(modules, D, threshold, rank)
    for m, row in enumerate(modules):
        positive = np.sort(row[row > 0])[::-1]
        if positive.size == 0:
            continue
        cut = threshold * positive[min(rank, positive.size) - 1]
        value = {}
        k = 0
        for a in range(D):
            for b in range(a + 1, D):
                value[a, b] = value[b, a] = row[k]
                k += 1
        clusters = [[g] for g in np.flatnonzero(core[:, m])]
        while len(clusters) > 1:
            best, pair = -1.0, None
            for x in range(len(clusters)):
                for y in range(x + 1, len(clusters)):
                    mean = np.mean([value[a, b] for a in clusters[x] for b in clusters[y]])
                    if mean > best:
                        best, pair = mean, (x, y)
            if best < cut:
                break
            x, y = pair
            clusters[x] = clusters[x] + clusters[y]
            del clusters[y]
        clusters.sort(key=lambda c: (-len(c), min(c)))
        for number, members in enumerate(clusters):
            out[members, m] = number
    return out


def test_gene_groups_match_a_direct_average_linkage_loop():
    from lava.core.metrics import core_features, gene_groups

    D = 11
    modules = _random_modules(7, D, 0.5)
    modules[1] = 0  # no core features: no groups
    for threshold in (0.3, 0.5, 0.8):
        for rank in (1, 3, 10):
            got = gene_groups(modules, D, threshold=threshold, reference_rank=rank)
            np.testing.assert_array_equal(got, _direct_groups(modules, D, threshold, rank))
            # grouped features are the core features
            np.testing.assert_array_equal(got >= 0, core_features(modules, D, threshold=threshold, reference_rank=rank))
    assert (gene_groups(modules, D)[:, 1] == -1).all()
    with pytest.raises(ValueError, match="reference_rank must be a positive integer"):
        gene_groups(modules, D, reference_rank=0)


def test_gene_groups_split_a_module_into_its_cliques():
    """Two cliques held by one module, weakly linked to each other, are two groups; a gene linked to one member of a
    clique only joins no group (its mean with the clique is below the cut)."""
    from lava.core.metrics import gene_groups

    D = 10
    modules = np.zeros((1, D * (D - 1) // 2))

    def put(a, b, v):
        a, b = min(a, b), max(a, b)
        modules[0, a * D - a * (a + 1) // 2 + (b - a - 1)] = v

    for clique, v in (([0, 1, 2, 3, 4], 0.8), ([5, 6, 7], 0.7)):
        for x in clique:
            for y in clique:
                if x < y:
                    put(x, y, v)
    put(0, 5, 0.5)  # one strong link between the cliques: a core pair, but the cliques' mean link is 1/15 of it
    put(8, 0, 0.6)  # gene 8: a core pair with gene 0 only
    groups = gene_groups(modules, D)[:, 0]
    # reference: the 10th largest value, 0.8; cut 0.4
    np.testing.assert_array_equal(groups, [0, 0, 0, 0, 0, 1, 1, 1, 2, -1])
    # at threshold 0.1 the cliques' mean link (0.5 / 15) is still below the cut (0.08): two groups, gene 8 alone
    assert len(set(gene_groups(modules, D, threshold=0.1)[:8, 0])) == 2
    # at threshold 0 everything core merges
    assert set(gene_groups(modules, D, threshold=0.0)[:9, 0]) == {0}


def test_duplicate_modules_need_shared_pairs_and_shared_localities():
    from lava.core.metrics import duplicate_modules

    rng = np.random.default_rng(0)
    P, n_loc = 40, 30
    base = np.zeros(P)
    base[:10] = 0.8
    here = (np.arange(n_loc) < 10).astype(float)
    there = (np.arange(n_loc) >= 20).astype(float)
    other = np.zeros(P)
    other[20:30] = 0.7
    modules = np.stack([base, base * 0.9 + 0.01 * rng.random(P), base, other])
    # 0 and 1: same pairs, same localities (a split programme); 2: the same pairs elsewhere (another population);
    # 3: other pairs in the same localities as 0 (a second programme of that population)
    presence = np.stack([here, here * 0.8 + 0.05 * rng.random(n_loc), there, here], axis=1)
    found = duplicate_modules(modules, presence)
    assert [(a, b) for a, b, _, _ in found] == [(0, 1)]
    _, _, cos, r = found[0]
    assert cos == pytest.approx(modules[0] @ modules[1] / np.linalg.norm(modules[0]) / np.linalg.norm(modules[1]))
    assert r == pytest.approx(np.corrcoef(presence[:, 0], presence[:, 1])[0, 1])
    # constant presence and all-zero modules never count
    flat = presence.copy()
    flat[:, 1] = 0.5
    assert duplicate_modules(modules, flat) == []
    assert duplicate_modules(np.zeros((2, P)), presence[:, :2]) == []
    with pytest.raises(ValueError, match="same M"):
        duplicate_modules(modules, presence[:, :2])
