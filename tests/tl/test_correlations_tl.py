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
    for name in ("values", "features", "feature_index", "feature_n_localities", "locality_n_features"):
        np.testing.assert_array_equal(back.uns["lava"]["correlations"][name], out.uns["lava"]["correlations"][name])
    for name in ("feature_n_localities", "locality_n_features"):
        assert back.uns["lava"]["correlations"][name].dtype == np.int64
    for name in ("n_features_entered", "n_pairs_nonzero", "nonzero_fraction"):
        assert back.uns["lava"]["correlations"][name] == out.uns["lava"]["correlations"][name]


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


# ---------------------------------------------------------------------------------------- what the tie filter left


def test_support_counts_are_stored_and_logged(adata, caplog):
    with caplog.at_level(logging.INFO, logger="lava"):
        lava.tl.correlations(adata, features="highly_variable", progress=False)
    res = adata.uns["lava"]["correlations"]
    C = res["values"]
    D = res["features"].size
    # a direct reference: feature f entered locality k when one of its pairs is non-zero there
    i, j = pair_indices(D)
    entered = np.zeros((C.shape[0], D), dtype=bool)
    for k in range(C.shape[0]):
        nonzero = C[k] != 0
        entered[k, i[nonzero]] = True
        entered[k, j[nonzero]] = True
    np.testing.assert_array_equal(res["feature_n_localities"], entered.sum(axis=0))
    np.testing.assert_array_equal(res["locality_n_features"], entered.sum(axis=1))
    assert res["feature_n_localities"].dtype == np.int64
    assert res["n_features_entered"] == np.count_nonzero(entered.any(axis=0))
    assert 0 < res["n_features_entered"] < D  # pbmc's scaled X: some genes are tied out everywhere
    assert res["n_pairs_nonzero"] == np.count_nonzero(C.any(axis=0))
    assert res["nonzero_fraction"] == pytest.approx(np.count_nonzero(C) / C.size)
    assert f"{res['n_features_entered']} of {D} features entered at least one locality" in caplog.text
    assert f"{res['n_pairs_nonzero']} of {C.shape[1]} pairs are non-zero" in caplog.text


def _sparse_layer(adata, n_dense: int):
    """A layer where only the first ``n_dense`` features are detected in most samples; the rest in 2%."""
    gen = np.random.default_rng(1)
    X = gen.gamma(1.0, size=adata.shape).astype(np.float32)
    X[:, n_dense:] *= gen.random((adata.n_obs, adata.n_vars - n_dense)) < 0.02
    adata.layers["sparse"] = X


def test_warns_when_most_features_never_enter(adata, caplog):
    _sparse_layer(adata, n_dense=10)
    names = list(adata.var_names[:40])
    with caplog.at_level(logging.WARNING, logger="lava"):
        lava.tl.correlations(adata, layer="sparse", features=names, progress=False)
    assert adata.uns["lava"]["correlations"]["n_features_entered"] == 10
    assert "30 of the 40 features (75%) never enter any locality" in caplog.text
    # says what to do, and that a higher tie_fraction filters less
    assert "detected in more than 25% of the cells" in caplog.text
    assert "higher tie_fraction" in caplog.text
    assert "filters less" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lava"):  # 30 dense of 40: no warning
        _sparse_layer(adata, n_dense=30)
        lava.tl.correlations(adata, layer="sparse", features=names, progress=False)
    assert "never enter" not in caplog.text
    assert "little of the correlations" not in caplog.text


def test_warns_when_most_of_c_is_zero(adata, caplog):
    """Every feature enters a locality, but each only one of 8: 1.3% of C is non-zero."""
    gen = np.random.default_rng(2)
    D = 40
    blocks = np.arange(adata.n_obs) % 8
    X = gen.gamma(1.0, size=(adata.n_obs, D)).astype(np.float32)
    X *= (np.arange(D) % 8)[None, :] == blocks[:, None]  # feature f is detected only in block f % 8
    adata.layers["blocks"] = np.zeros(adata.shape, dtype=np.float32)
    adata.layers["blocks"][:, :D] = X
    adata.uns["lava"]["localities"]["indices"] = np.stack([np.flatnonzero(blocks == b)[:60] for b in range(8)])
    with caplog.at_level(logging.WARNING, logger="lava"):
        lava.tl.correlations(adata, layer="blocks", features=list(adata.var_names[:D]), progress=False)
    res = adata.uns["lava"]["correlations"]
    assert res["n_features_entered"] == D
    np.testing.assert_array_equal(res["feature_n_localities"], np.ones(D))
    np.testing.assert_array_equal(res["locality_n_features"], np.full(8, 5))
    assert res["nonzero_fraction"] == pytest.approx(n_pairs(5) / n_pairs(D))  # 10 of 780 pairs in each locality
    assert "never enter" not in caplog.text
    assert f"only {res['nonzero_fraction']:.2%} of the correlations are non-zero" in caplog.text
    assert "higher tie_fraction" in caplog.text


def test_amf_reports_dropped_pairs_with_the_same_advice(adata, caplog):
    _sparse_layer(adata, n_dense=3)
    lava.tl.correlations(adata, layer="sparse", features=list(adata.var_names[:40]), tie_fraction=0.8, progress=False)
    kept = adata.uns["lava"]["correlations"]["n_pairs_nonzero"]
    assert kept == 3  # the pairs of the 3 dense features
    with caplog.at_level(logging.INFO, logger="lava"):
        lava.tl.amf(adata, 2, max_epochs=5, progress=False)
    assert f"dropped {n_pairs(40) - 3} of {n_pairs(40)} feature pairs" in caplog.text
    assert f"AMF fitted only 3 of {n_pairs(40)} feature pairs" in caplog.text
    # the advice names the tie_fraction the correlations used, and the right direction
    assert "more than 80% of the samples" in caplog.text
    assert "higher tie_fraction" in caplog.text
    assert "lower tie_fraction" not in caplog.text


def test_amf_nothing_to_fit_advises_a_higher_tie_fraction(adata):
    adata.layers["binary"] = (adata.X > 4).astype(np.float32)  # every feature tied out
    lava.tl.correlations(adata, layer="binary", progress=False)
    with pytest.raises(ValueError, match="nothing to fit") as info:
        lava.tl.amf(adata, 2, progress=False)
    assert "higher tie_fraction" in str(info.value)
    assert "lower" not in str(info.value)


# ---------------------------------------------------------------------------------------- memory refusal


def _no_compute(*args, **kwargs):
    raise AssertionError("the correlations must not be computed (or allocated) when they cannot fit")


def test_refuses_before_allocating_what_does_not_fit(monkeypatch):
    """The reported case: features=None on 19,969 genes, 60 localities: 44.6 GiB."""
    gen = np.random.default_rng(0)
    n_obs, n_vars = 200, 19_969
    X = sparse.random(n_obs, n_vars, density=0.01, format="csr", dtype=np.float32, random_state=0)
    adata = ad.AnnData(X)
    indices = np.stack([gen.choice(n_obs, 50, replace=False) for _ in range(60)])
    adata.uns["lava"] = {"localities": {"indices": indices}, "params": {}}
    monkeypatch.setattr(tl_module, "locality_correlations", _no_compute)
    monkeypatch.delenv("LAVA_MEMORY_LIMIT", raising=False)
    monkeypatch.setattr(lava._compat, "available_memory", lambda: 16 * 2**30)
    with pytest.raises(MemoryError) as info:
        lava.tl.correlations(adata, progress=False)
    assert isinstance(info.value, ValueError)  # a user error: the command line reports it without a traceback
    msg = str(info.value)
    assert "44.6 GiB for the result" in msg
    assert "16.0 GiB are available" in msg
    assert "features='highly_variable'" in msg
    assert "lava.pp.select_features" in msg
    assert "out=" in msg
    assert "LAVA_MEMORY_LIMIT" in msg
    assert set(adata.uns["lava"]) == {"localities", "params"}  # nothing changed


def test_memory_limit_from_the_environment(adata, monkeypatch):
    monkeypatch.setattr(lava._compat, "available_memory", lambda: 2**40)
    monkeypatch.setenv("LAVA_MEMORY_LIMIT", "1M")
    with pytest.raises(MemoryError, match=r"1\.0 MiB are available \(LAVA_MEMORY_LIMIT=1M\)"):
        lava.tl.correlations(adata, progress=False)
    assert "correlations" not in adata.uns["lava"]
    monkeypatch.setenv("LAVA_MEMORY_LIMIT", "none")  # the check off
    monkeypatch.setattr(lava._compat, "available_memory", lambda: 0)
    lava.tl.correlations(adata, features=list(adata.var_names[:5]), progress=False)
    monkeypatch.setenv("LAVA_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="64G"):
        lava.tl.correlations(adata, progress=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("123", 123), ("64G", 64 * 2**30), ("1.5g", int(1.5 * 2**30)), ("2TiB", 2 * 2**40), ("512KB", 512 * 2**10)],
)
def test_memory_limit_parses_sizes(monkeypatch, text, expected):
    monkeypatch.setenv("LAVA_MEMORY_LIMIT", text)
    assert lava._compat.memory_limit() == (expected, f"LAVA_MEMORY_LIMIT={text}")


def test_available_memory_without_psutil(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   1000 kB\n")
    real_read = lava._compat._read_text
    monkeypatch.setattr(builtins, "__import__", no_psutil)
    monkeypatch.setattr(
        lava._compat, "_read_text", lambda path: real_read(meminfo) if path == "/proc/meminfo" else None
    )
    assert lava._compat.available_memory() == 1000 * 1024
