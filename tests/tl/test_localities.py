from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

import lava
from lava import _store
from lava.core.placement import n_localities


def small_adata(E: int = 400, d: int = 2, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=E, p=[0.5, 0.3, 0.2])
    centers = np.array([[0.0] * d, [6.0] * d, [-6.0] + [3.0] * (d - 1)])
    Z = centers[labels] + rng.normal(size=(E, d)) * np.array([0.5, 1.0, 2.0])[labels, None]
    X = rng.poisson(2.0, size=(E, 20)).astype(np.float32)
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(E)]))
    adata.obsm["X_umap"] = Z[:, :2] if d >= 2 else Z
    adata.obsm["X_latent"] = Z
    return adata


def snapshot(adata: ad.AnnData) -> dict:
    return {
        "obs": adata.obs.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "uns": repr(adata.uns),
        "uns_keys": sorted(adata.uns.keys()),
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    pd.testing.assert_frame_equal(adata.obs, before["obs"])
    assert sorted(adata.obsm.keys()) == sorted(before["obsm"])
    for k, v in before["obsm"].items():
        np.testing.assert_array_equal(adata.obsm[k], v)
    assert sorted(adata.uns.keys()) == before["uns_keys"]
    assert repr(adata.uns) == before["uns"]


def test_localities_small_stores_contract():
    adata = small_adata()
    assert lava.tl.localities(adata, n_neighbors=25, overlap=3, maxfun=10, rng=1, progress=False) is None
    loc = adata.uns["lava"]["localities"]
    n_loc = n_localities(400, 25, 3)
    assert n_loc == 48
    assert loc["indices"].shape == (n_loc, 25)
    assert loc["indices"].dtype == np.int64
    assert loc["probes"].shape == (n_loc, 2)
    assert loc["probes"].dtype == np.float64
    assert loc["evaluations"].shape[1] == 3
    assert loc["basis"] == "X_umap"
    for name in ("alpha", "beta", "loss", "loss_unoptimized"):
        assert isinstance(loc[name], float)
    assert loc["loss"] <= loc["loss_unoptimized"]
    # localities are the samples nearest to the probes (brute force)
    Z = adata.obsm["X_umap"]
    expected = np.argsort(cdist(loc["probes"], Z), axis=1, kind="stable")[:, :25]
    np.testing.assert_array_equal(np.sort(loc["indices"], axis=1), np.sort(expected, axis=1))
    nc, lc = _store.obs_keys("lava")
    assert adata.obs[nc].mean() == pytest.approx(1.0)
    assert adata.obs[lc].mean() == pytest.approx(1.0)
    params = lava.get.params(adata, "localities") if hasattr(lava.get, "params") else None
    stored = _store.decode_params(adata.uns["lava"]["params"]["localities"])
    for p in (stored, params):
        if p is None:
            continue
        assert p["n_neighbors"] == 25
        assert p["overlap"] == 3.0
        assert p["rng"] == 1
        assert p["maxfun"] == 10
        assert p["basis"] == "X_umap"
        assert p["optimize"] is True


def test_localities_deterministic_and_any_basis():
    a = small_adata(d=4)
    b = a.copy()
    lava.tl.localities(a, basis="latent", n_neighbors=20, overlap=2, maxfun=8, rng=3, progress=False)
    lava.tl.localities(b, basis="X_latent", n_neighbors=20, overlap=2, maxfun=8, rng=3, progress=False)
    np.testing.assert_array_equal(a.uns["lava"]["localities"]["indices"], b.uns["lava"]["localities"]["indices"])
    assert a.uns["lava"]["localities"]["probes"].shape[1] == 4
    assert a.uns["lava"]["localities"]["basis"] == "X_latent"


def test_localities_generator_seed_recorded():
    adata = small_adata()
    lava.tl.localities(adata, n_neighbors=25, maxfun=5, rng=np.random.default_rng(0), progress=False)
    seed = _store.decode_params(adata.uns["lava"]["params"]["localities"])["rng"]
    other = small_adata()
    lava.tl.localities(other, n_neighbors=25, maxfun=5, rng=seed, progress=False)
    np.testing.assert_array_equal(
        adata.uns["lava"]["localities"]["indices"], other.uns["lava"]["localities"]["indices"]
    )


def test_localities_pbmc(pbmc):
    adata = pbmc.copy()
    lava.tl.localities(adata, basis="umap", maxfun=10, optimize=True, progress=False)
    loc = adata.uns["lava"]["localities"]
    n = 35  # default: max(10, 700 // 20)
    assert loc["n_neighbors"] == n
    assert loc["indices"].shape == (n_localities(adata.n_obs, n, 3.0), n)
    assert all(np.unique(row).size == n for row in loc["indices"])


def test_localities_pca_50d(pbmc):
    adata = pbmc.copy()
    lava.tl.localities(adata, basis="X_pca", n_neighbors=50, overlap=2, optimize=False, progress=False)
    loc = adata.uns["lava"]["localities"]
    assert loc["probes"].shape == (n_localities(adata.n_obs, 50, 2), adata.obsm["X_pca"].shape[1])
    assert loc["evaluations"].shape == (1, 3)
    assert (loc["alpha"], loc["beta"]) == (0.0, 0.0)


def test_copy_returns_new_and_leaves_original():
    adata = small_adata()
    before = snapshot(adata)
    out = lava.tl.localities(adata, n_neighbors=25, maxfun=5, copy=True, progress=False)
    assert isinstance(out, ad.AnnData)
    assert out is not adata
    assert "lava" in out.uns
    assert_unchanged(adata, before)


def test_rerun_drops_dependents():
    adata = small_adata()
    lava.tl.localities(adata, n_neighbors=25, maxfun=5, progress=False)
    adata.uns["lava"]["correlations"] = {"values": np.zeros((3, 3), dtype=np.float32)}
    lava.tl.localities(adata, n_neighbors=30, maxfun=5, progress=False)
    assert "correlations" not in adata.uns["lava"]
    assert adata.uns["lava"]["localities"]["indices"].shape[1] == 30


def _bad_embeddings(adata):
    nan = adata.copy()
    nan.obsm["X_umap"][3, 0] = np.nan
    inf = adata.copy()
    inf.obsm["X_umap"][0, 1] = np.inf
    zero_dim = adata.copy()
    zero_dim.obsm["X_umap"] = np.zeros((adata.n_obs, 0))
    return {"nan": nan, "inf": inf, "zero_dim": zero_dim}


@pytest.mark.parametrize("case", ["nan", "inf", "zero_dim"])
def test_bad_embedding_raises_before_change(case):
    adata = _bad_embeddings(small_adata())[case]
    before = snapshot(adata)
    with pytest.raises(ValueError, match="X_umap"):
        lava.tl.localities(adata, n_neighbors=25, progress=False)
    assert_unchanged(adata, before)


def test_zero_samples_raises():
    adata = ad.AnnData(X=np.zeros((0, 3), dtype=np.float32))
    adata.obsm["X_umap"] = np.zeros((0, 2))
    with pytest.raises(ValueError, match="at least one sample"):
        lava.tl.localities(adata, n_neighbors=3, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"basis": "X_tsne"}, KeyError, "available: 'X_umap', 'X_latent'"),
        ({"n_neighbors": 2}, ValueError, "n_neighbors"),
        ({"n_neighbors": 401}, ValueError, "n_neighbors"),
        ({"n_neighbors": 25.0}, TypeError, "n_neighbors"),
        ({"overlap": 0}, ValueError, "overlap"),
        ({"overlap": -1.5}, ValueError, "overlap"),
        ({"overlap": float("nan")}, ValueError, "overlap"),
        ({"n_neighbors": 10, "overlap": 12}, ValueError, "more than"),
        ({"maxfun": 3}, ValueError, "maxfun"),
        ({"rng": -1}, ValueError, "rng"),
        ({"key_added": ""}, TypeError, "key_added"),
    ],
)
def test_bad_arguments_raise_before_change(kwargs, error, match):
    adata = small_adata()
    lava.tl.localities(adata, n_neighbors=25, maxfun=5, progress=False)  # existing results must survive
    adata.uns["lava"]["correlations"] = {"values": np.zeros((2, 2), dtype=np.float32)}
    before = snapshot(adata)
    args = {"n_neighbors": 25, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        lava.tl.localities(adata, **args)
    assert_unchanged(adata, before)


def test_neighborhood_retention_stores_table(pbmc):
    adata = pbmc.copy()
    lava.tl.localities(adata, basis="umap", maxfun=5, progress=False)
    uns_before = repr(adata.uns["lava"]["localities"])
    out = lava.tl.neighborhood_retention(adata, basis="umap", use_rep="X_pca", sizes=[5, 20, 80], n_samples=None)
    assert out is None
    table = adata.uns["lava"]["neighborhood_retention"]
    assert list(table.columns) == ["n_neighbors", "jaccard", "jaccard_std", "jaccard_random"]
    assert table["n_neighbors"].tolist() == [5, 20, 80]
    assert table["jaccard"].between(0, 1).all()
    np.testing.assert_allclose(table["jaccard_random"], [5 / 1395, 20 / 1380, 80 / 1320])  # n / (2 E - n), E 700
    # reference: Jaccard of brute-force sets
    Xp, Z = adata.obsm["X_pca"], adata.obsm["X_umap"]
    a = np.argsort(cdist(Xp, Xp), axis=1, kind="stable")[:, :20]
    b = np.argsort(cdist(Z, Z), axis=1, kind="stable")[:, :20]
    ref = np.mean([len(set(a[i]) & set(b[i])) / len(set(a[i]) | set(b[i])) for i in range(adata.n_obs)])
    assert table["jaccard"].iloc[1] == pytest.approx(ref, abs=0.01)  # float distances: ties may differ slightly
    # not a pipeline step: the localities survive; parameters recorded
    assert repr(adata.uns["lava"]["localities"]) == uns_before
    params = _store.decode_params(adata.uns["lava"]["params"]["neighborhood_retention"])
    assert params["use_rep"] == "X_pca"
    assert params["sizes"] == [5, 20, 80]
    assert "localities" in adata.uns["lava"]["params"]


def test_neighborhood_retention_default_and_copy():
    adata = small_adata()
    before = snapshot(adata)
    out = lava.tl.neighborhood_retention(adata, n_samples=50, copy=True)
    assert_unchanged(adata, before)
    table = out.uns["lava"]["neighborhood_retention"]
    assert table["n_neighbors"].iloc[0] == 10
    assert table["n_neighbors"].iloc[-1] == 200  # half the samples: beyond, random sets overlap by a third or more
    assert table["n_neighbors"].is_monotonic_increasing


def _logged_best(caplog) -> str:
    (line,) = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    return line


def test_neighborhood_retention_best_size_is_not_the_trivial_end(pbmc, caplog):
    """At n = n_obs the Jaccard is 1 for any embedding, and near it random sets overlap almost fully."""
    adata = pbmc.copy()
    E = adata.n_obs
    sizes = [20, 80, 160, 600, E - 1, E]
    with caplog.at_level("INFO", logger="lava"):
        lava.tl.neighborhood_retention(adata, basis="umap", use_rep="X_pca", sizes=sizes, n_samples=None)
    table = adata.uns["lava"]["neighborhood_retention"].set_index("n_neighbors")
    assert table["jaccard"].idxmax() == E  # the raw maximum is the trivial end
    assert table.loc[E, "jaccard"] == pytest.approx(1.0)
    assert table.loc[E - 1, "jaccard"] > 0.99
    line = _logged_best(caplog)
    best = int(line.split("n_neighbors=")[1].split()[0])
    excess = (table["jaccard"] - table["jaccard_random"]).drop(E)
    assert best == excess.idxmax()
    assert best < 600  # the curve's real peak (about 160-200 on this UMAP), not where random sets fill the data
    assert "largest size evaluated" not in line


def test_neighborhood_retention_says_when_the_best_is_the_largest_size(pbmc, caplog):
    adata = pbmc.copy()
    with caplog.at_level("INFO", logger="lava"):
        lava.tl.neighborhood_retention(adata, basis="umap", use_rep="X_pca", sizes=[10, 20, 40], n_samples=None)
    line = _logged_best(caplog)
    assert "n_neighbors=40" in line
    assert "largest size evaluated" in line
    assert "evaluate larger sizes" in line


def test_neighborhood_retention_only_trivial_sizes(caplog):
    adata = small_adata()
    with caplog.at_level("INFO", logger="lava"):
        lava.tl.neighborhood_retention(adata, sizes=[adata.n_obs], n_samples=20)
    assert "pass sizes below it" in _logged_best(caplog)
    assert adata.uns["lava"]["neighborhood_retention"]["jaccard"].iloc[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"use_rep": "X_nope"}, KeyError), ({"sizes": [0, 5]}, ValueError), ({"sizes": [1000]}, ValueError)],
)
def test_neighborhood_retention_errors(kwargs, error):
    adata = small_adata()
    before = snapshot(adata)
    with pytest.raises(error):
        lava.tl.neighborhood_retention(adata, **kwargs)
    assert_unchanged(adata, before)


def test_h5ad_round_trip(tmp_path):
    adata = small_adata()
    lava.tl.localities(adata, n_neighbors=25, maxfun=5, progress=False)
    lava.tl.neighborhood_retention(adata, sizes=[5, 10], n_samples=30)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for k, v in adata.uns["lava"]["localities"].items():
        np.testing.assert_array_equal(back.uns["lava"]["localities"][k], v)
    pd.testing.assert_frame_equal(
        back.uns["lava"]["neighborhood_retention"], adata.uns["lava"]["neighborhood_retention"], check_index_type=False
    )
