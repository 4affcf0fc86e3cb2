from __future__ import annotations

import json
import logging

import anndata as ad
import numpy as np
import pytest
import scipy.stats
from scipy import sparse

import lava
from lava.core import n_pairs, pair_indices
from lava.tl import _correlations as tl_module


@pytest.fixture
def adata(pbmc, rng):
    """pbmc68k_reduced with fabricated localities (the contract's shapes) and a stale amf result."""
    a = pbmc.copy()
    indices = np.stack([rng.choice(a.n_obs, size=60, replace=False) for _ in range(8)])
    a.uns["lava"] = {
        "localities": {"indices": indices, "probes": np.zeros((8, 2)), "alpha": 0.0, "beta": 0.0, "loss": 0.0},
        "amf": {"modules": np.zeros((2, 3), np.float32)},
        "params": {"amf": {"n_modules": "2"}},
    }
    return a


def spearman_abs(B, i, j, tie_fraction=0.75):
    n = B.shape[0]
    for col in (B[:, i], B[:, j]):
        if np.unique(col, return_counts=True)[1].max() / n > tie_fraction:
            return 0.0
    return abs(scipy.stats.spearmanr(B[:, i], B[:, j]).statistic)


def test_highly_variable_matches_spearmanr(adata, rng):
    assert lava.tl.correlations(adata, features="highly_variable", progress=False) is None
    res = adata.uns["lava"]["correlations"]
    hv = np.flatnonzero(adata.var["highly_variable"].to_numpy())
    D = hv.size
    assert res["values"].shape == (8, n_pairs(D))
    assert res["values"].dtype == np.float32
    np.testing.assert_array_equal(res["features"], adata.var_names[hv].to_numpy().astype(str))
    np.testing.assert_array_equal(res["feature_index"], hv)
    # pbmc's X is scaled: a gene's zeros become one repeated non-zero value, which the tie filter must catch
    assert np.mean(res["values"] == 0) > 0.1
    X = adata.X[:, hv]
    i, j = pair_indices(D)
    indices = adata.uns["lava"]["localities"]["indices"]
    for k in (0, 3, 7):
        B = X[indices[k]].astype(np.float64)
        for p in rng.choice(len(i), size=40, replace=False):
            assert res["values"][k, p] == pytest.approx(spearman_abs(B, i[p], j[p]), abs=1e-5)
    # a full locality against spearmanr on the whole block
    B = X[indices[2]].astype(np.float64)
    varying = np.array([np.unique(B[:, c], return_counts=True)[1].max() / B.shape[0] <= 0.75 for c in range(D)])
    full = np.zeros((D, D))
    full[np.ix_(varying, varying)] = np.abs(scipy.stats.spearmanr(B[:, varying]).statistic)
    np.testing.assert_allclose(res["values"][2], full[i, j], atol=1e-5)
    # stale dependent results dropped, parameters recorded
    assert "amf" not in adata.uns["lava"]
    params = {k: json.loads(v) for k, v in adata.uns["lava"]["params"]["correlations"].items()}
    assert params["features"] == "highly_variable"
    assert params["tie_fraction"] == 0.75
    assert "amf" not in adata.uns["lava"]["params"]


def test_feature_names_order_sparse_layer_and_raw(adata):
    names = list(adata.var_names[[10, 3, 50]])
    adata.layers["counts"] = sparse.csr_matrix(adata.X)
    lava.tl.correlations(adata, features=names, progress=False)
    dense = adata.uns["lava"]["correlations"]["values"].copy()
    np.testing.assert_array_equal(adata.uns["lava"]["correlations"]["features"], names)
    np.testing.assert_array_equal(adata.uns["lava"]["correlations"]["feature_index"], [10, 3, 50])
    B = adata.X[adata.uns["lava"]["localities"]["indices"][0]][:, [10, 3, 50]]
    # pair 0 is (names[0], names[1]), in the order given
    assert dense[0, 0] == pytest.approx(spearman_abs(B.astype(float), 0, 1), abs=1e-5)
    lava.tl.correlations(adata, layer="counts", features=names, progress=False)
    np.testing.assert_array_equal(adata.uns["lava"]["correlations"]["values"], dense)
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[[3, 10, 50]] = True
    lava.tl.correlations(adata, features=mask, progress=False)
    np.testing.assert_array_equal(adata.uns["lava"]["correlations"]["feature_index"], [3, 10, 50])
    raw_names = list(adata.raw.var_names[:5])
    lava.tl.correlations(adata, use_raw=True, features=raw_names, progress=False)
    raw_X = adata.raw.X[:, :5].toarray()
    B = raw_X[adata.uns["lava"]["localities"]["indices"][1]].astype(float)
    assert adata.uns["lava"]["correlations"]["values"][1, 0] == pytest.approx(spearman_abs(B, 0, 1), abs=1e-5)


def test_copy_and_h5ad_roundtrip(adata, tmp_path):
    before = set(adata.uns["lava"])
    out = lava.tl.correlations(adata, features="highly_variable", copy=True, progress=False)
    assert isinstance(out, ad.AnnData)
    assert set(adata.uns["lava"]) == before
    out.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for name in ("values", "features", "feature_index"):
        np.testing.assert_array_equal(back.uns["lava"]["correlations"][name], out.uns["lava"]["correlations"][name])


def test_view_raises_and_copy_of_view_works(adata):
    view = adata[:, :20]
    with pytest.raises(ValueError, match=r"\.copy\(\)"):
        lava.tl.correlations(view, progress=False)
    out = lava.tl.correlations(view, copy=True, progress=False)
    assert out.uns["lava"]["correlations"]["values"].shape == (8, n_pairs(20))
    assert not out.is_view


def test_missing_localities(pbmc):
    a = pbmc.copy()
    with pytest.raises(KeyError, match=r"lava\.tl\.localities"):
        lava.tl.correlations(a, progress=False)
    a.uns["lava"] = {"params": {}}
    with pytest.raises(KeyError, match=r"lava\.tl\.localities"):
        lava.tl.correlations(a, progress=False)


def _bad_nan(a):
    a.layers["bad"] = a.X.copy()
    a.layers["bad"][5, 2] = np.nan
    return {"layer": "bad"}


def _bad_nan_sparse(a):
    X = sparse.csr_matrix(a.X)
    X.data[7] = np.inf
    a.layers["bad"] = X
    return {"layer": "bad"}


def _bad_dtype(a):
    a.layers["bad"] = np.full(a.shape, "x", dtype=object)
    return {"layer": "bad"}


def _dup_names(a):
    a.var_names = ["g"] * a.n_vars
    return {}


@pytest.mark.parametrize(
    ("prepare", "error", "match"),
    [
        (_bad_nan, ValueError, "NaN"),
        (_bad_nan_sparse, ValueError, "NaN"),
        (_bad_dtype, TypeError, "numeric"),
        (_dup_names, ValueError, "var_names_make_unique"),
        (
            lambda a: {"features": ["CD3D"]} if "CD3D" in a.var_names else {"features": [a.var_names[0]]},
            ValueError,
            "2 features",
        ),
        (lambda a: {"features": "no_such_column"}, KeyError, "no_such_column"),
        (lambda a: {"features": ["not_a_gene", a.var_names[0]]}, KeyError, "not in var_names"),
        (lambda a: {"tie_fraction": 0.0}, ValueError, "tie_fraction"),
        (lambda a: {"tie_fraction": 2}, ValueError, "tie_fraction"),
        (lambda a: {"batch_size": 0}, ValueError, "batch_size"),
        (lambda a: {"layer": "missing"}, KeyError, "missing"),
    ],
)
def test_errors_leave_adata_unchanged(adata, prepare, error, match):
    kwargs = prepare(adata)
    before = {k: (v.copy() if isinstance(v, dict) else v) for k, v in adata.uns["lava"].items()}
    with pytest.raises(error, match=match):
        lava.tl.correlations(adata, progress=False, **kwargs)
    assert set(adata.uns["lava"]) == set(before)
    assert "amf" in adata.uns["lava"]
    assert "correlations" not in adata.uns["lava"]


def test_subset_after_localities(adata):
    a = adata[:50].copy()
    with pytest.raises(ValueError, match=r"rerun lava\.tl\.localities"):
        lava.tl.correlations(a, progress=False)


def test_all_zero_warns(adata, caplog):
    adata.layers["binary"] = (adata.X > 4).astype(np.float32)  # mostly zeros: every feature tied out
    with caplog.at_level(logging.WARNING, logger="lava"):
        lava.tl.correlations(adata, layer="binary", progress=False)
    assert not adata.uns["lava"]["correlations"]["values"].any()
    assert "every locality correlation is 0" in caplog.text
    assert "tie_fraction" in caplog.text


def test_large_pair_count_warns(adata, caplog, monkeypatch):
    monkeypatch.setattr(tl_module, "LARGE_N_PAIRS", 100)
    with caplog.at_level(logging.WARNING, logger="lava"):
        lava.tl.correlations(adata, features=list(adata.var_names[:20]), progress=False)
    assert "190 pairs" in caplog.text
    assert "GiB" in caplog.text
