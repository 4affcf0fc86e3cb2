"""lava.core.stats against naive references: BH by formula, scipy's hypergeom, pearsonr/spearmanr, loops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lava.core import association_test, benjamini_hochberg, ora
from lava.core.stats import correlation_pvalue, empirical_pvalue, locality_means, membership_matrix


def _bh_direct(p):
    """BH written from its definition: q_(i) = min_{j >= i} p_(j) m / j, capped at 1."""
    p = np.asarray(p, dtype=float)
    m = p.size
    order = np.argsort(p)
    q_sorted = [min(1.0, min(p[order[j]] * m / (j + 1) for j in range(i, m))) for i in range(m)]
    q = np.empty(m)
    q[order] = q_sorted
    return q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bh_matches_definition(seed):
    gen = np.random.default_rng(seed)
    p = np.concatenate([gen.uniform(size=30), gen.uniform(0, 1e-3, size=5), [0.5, 0.5, 1.0, 0.0]])
    np.testing.assert_allclose(benjamini_hochberg(p), _bh_direct(p), rtol=1e-12)


def test_bh_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(4).uniform(size=200) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), multitest.multipletests(p, method="fdr_bh")[1], rtol=1e-12)


def test_bh_ignores_nan_and_keeps_shape():
    p = np.array([[0.01, np.nan], [0.04, 0.03]])
    q = benjamini_hochberg(p)
    assert q.shape == p.shape
    assert np.isnan(q[0, 1])
    np.testing.assert_allclose(q[~np.isnan(p)], _bh_direct([0.01, 0.04, 0.03]))
    assert np.isnan(benjamini_hochberg([np.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.1, 1.5])


def _sets():
    return {
        "s1": ["a", "b", "c", "d", "x1"],
        "s2": ["c", "d", "e", "f", "g", "h"],
        "s3": ["i", "j", "k"],
        "s4": ["a", "zzz"],
        "none": ["q1", "q2"],
    }


def test_ora_matches_direct_hypergeom():
    background = list("abcdefghijklmnopqrst")  # 20 genes
    queries = [["a", "b", "c", "x1"], ["c", "d", "e", "f", "g"]]
    res = ora(queries, _sets(), background)
    assert list(res.terms) == ["s1", "s2", "s3", "s4"]  # 'none' has no background gene
    np.testing.assert_array_equal(res.set_size, [4, 6, 3, 1])
    np.testing.assert_array_equal(res.n_query, [3, 5])  # x1 is outside the background
    for q, genes in enumerate(queries):
        g = set(genes) & set(background)
        for t, term in enumerate(res.terms):
            s = set(_sets()[term]) & set(background)
            k, K, n, N = len(g & s), len(s), len(g), 20
            assert res.n_overlap[q, t] == k
            assert res.p_value[q, t] == pytest.approx(stats.hypergeom.sf(k - 1, N, K, n), rel=1e-12)
            # the same tail written as a sum over the pmf
            tail = sum(stats.hypergeom.pmf(x, N, K, n) for x in range(k, min(K, n) + 1))
            assert res.p_value[q, t] == pytest.approx(tail, rel=1e-9)
            assert sorted(res.overlap_genes(q, t)) == sorted(g & s)
        np.testing.assert_allclose(res.p_adjusted[q], _bh_direct(res.p_value[q]))


def test_ora_matches_gseapy_calc_pvalues():
    gseapy_stats = pytest.importorskip("gseapy.stats")
    background = set("abcdefghijklmnopqrst")
    query = ["c", "d", "e", "f", "g", "a"]
    res = ora([query], _sets(), sorted(background))
    terms, pvals, oddr, olsz, gsetsz, _ = gseapy_stats.calc_pvalues(
        query=query, gene_sets=_sets(), background=background
    )
    for term, p, o, k, K in zip(terms, pvals, oddr, olsz, gsetsz, strict=True):
        t = list(res.terms).index(term)
        assert res.p_value[0, t] == pytest.approx(p, rel=1e-12)
        assert res.odds_ratio[0, t] == pytest.approx(o, rel=1e-12)
        assert (res.n_overlap[0, t], res.set_size[t]) == (k, K)


def test_ora_size_filter_and_errors():
    background = list("abcdefghijklmnopqrst")
    res = ora([["a", "c"]], _sets(), background, min_size=3, max_size=5)
    assert list(res.terms) == ["s1", "s3"]
    with pytest.raises(TypeError, match="sequence of gene collections"):
        ora("abc", _sets(), background)
    with pytest.raises(TypeError, match="single string"):
        ora(["abc"], _sets(), background)
    with pytest.raises(ValueError, match="background is empty"):
        ora([["a"]], _sets(), [])


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_association_matches_scipy(method):
    gen = np.random.default_rng(0)
    n = 25
    presence = gen.uniform(size=n)
    values = np.column_stack([presence + gen.normal(0, 0.3, n), gen.normal(size=n), np.round(gen.uniform(size=n), 1)])
    r, p = association_test(presence, values, method=method)
    ref = stats.pearsonr if method == "pearson" else stats.spearmanr
    for k in range(values.shape[1]):
        res = ref(presence, values[:, k])
        assert r[k] == pytest.approx(res.statistic, abs=1e-12)
        assert p[k] == pytest.approx(res.pvalue, rel=1e-8)


def test_association_batched_equals_columns_and_constant_is_nan():
    gen = np.random.default_rng(1)
    presence = gen.uniform(size=12)
    values = gen.uniform(size=(12, 3, 4))
    values[:, 1, 2] = 0.25
    r, p = association_test(presence, values, method="spearman")
    assert r.shape == (3, 4)
    assert np.isnan(r[1, 2])
    assert np.isnan(p[1, 2])
    assert r[0, 3] == pytest.approx(stats.spearmanr(presence, values[:, 0, 3]).statistic)
    r2, p2 = association_test(presence[:2], values[:2])
    assert np.isnan(r2).all()
    assert np.isnan(p2).all()
    with pytest.raises(ValueError, match="method"):
        association_test(presence, values, method="kendall")
    with pytest.raises(ValueError, match="one value per locality"):
        association_test(presence, values[:5])


def test_correlation_pvalue_is_the_t_test():
    for n in (5, 30, 300):
        for r in (-0.9, -0.2, 0.0, 0.1, 0.6, 0.99):
            t = r * np.sqrt((n - 2) / (1 - r**2))
            assert correlation_pvalue(r, n) == pytest.approx(2 * stats.t.sf(abs(t), n - 2), rel=1e-8, abs=1e-300)
    assert correlation_pvalue(1.0, 10) == 0.0


def test_empirical_pvalue():
    obs = np.array([0.5, -0.1, np.nan])
    null = np.array([[0.1, 0.6, -0.7, 0.2], [0.05, -0.2, 0.0, 0.1], [0.1, 0.2, 0.3, 0.4]])
    p = empirical_pvalue(obs, null)
    np.testing.assert_allclose(p[:2], [(1 + 2) / 5, (1 + 2) / 5])
    assert np.isnan(p[2])
    p_min = empirical_pvalue(np.array([10.0]), np.zeros((1, 99)))
    assert p_min[0] == pytest.approx(1 / 100)
    assert empirical_pvalue(np.array([0.0]), np.ones((1, 9)))[0] == 1.0


def test_locality_means_and_membership():
    gen = np.random.default_rng(2)
    idx = gen.integers(0, 50, size=(7, 9))
    values = gen.uniform(size=(50, 3))
    expected = np.stack([values[row].mean(axis=0) for row in idx])
    np.testing.assert_allclose(locality_means(idx, values), expected)
    np.testing.assert_allclose(locality_means(idx, values[:, 0]), expected[:, 0])
    A = membership_matrix(idx, 50)
    assert A.shape == (7, 50)
    np.testing.assert_allclose(A.sum(axis=1), 9)
    with pytest.raises(ValueError, match="sample positions"):
        membership_matrix(idx, 10)
    with pytest.raises(ValueError, match="2-D"):
        membership_matrix(idx.ravel(), 50)
