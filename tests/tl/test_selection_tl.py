"""lava.tl.select_n_modules and lava.tl.refine_presence: storage contract, round trips, validation."""

from __future__ import annotations

import copy as copymod

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import lava
from lava._store import decode_params

FAST = {"max_epochs": 25, "patience": 10, "device": "cpu"}
RUN_COLUMNS = ["n_modules", "run", "seed", "loss", "similarity", "overestimation_ratio", "n_epochs", "closeness"]
SUMMARY_COLUMNS = [
    "loss_mean",
    "loss_std",
    "similarity_mean",
    "similarity_std",
    "overestimation_ratio_mean",
    "overestimation_ratio_std",
    "silhouette",
    "best_run",
    "lowest_loss_run",
]
BEST_KEYS = {"modules", "presence", "loss", "similarity", "overestimation_ratio", "seed", "history", "n_epochs"}
BEST_KEYS |= {"best_epoch"}


def make_adata(n_loc=30, n_features=12, n_obs=90, n_neighbors=15, seed=0):
    """AnnData with fabricated localities and correlations (planted max-product structure)."""
    g = np.random.default_rng(seed)
    P = n_features * (n_features - 1) // 2
    modules = (g.random((3, P)) < 0.4) * g.uniform(0.5, 1, (3, P))
    presence = (g.random((n_loc, 3)) < 0.6) * g.uniform(0.6, 1, (n_loc, 3))
    C = np.clip((presence[:, :, None] * modules[None]).max(axis=1) + g.normal(0, 0.03, (n_loc, P)), 0, 1)
    adata = ad.AnnData(g.random((n_obs, n_features + 3)).astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(n_features + 3)]
    adata.obsm["X_umap"] = g.random((n_obs, 2))
    indices = np.stack([g.choice(n_obs, n_neighbors, replace=False) for _ in range(n_loc)]).astype(np.int64)
    adata.uns["lava"] = {
        "localities": {"indices": indices, "probes": g.random((n_loc, 2)), "alpha": 0.0, "beta": 0.0, "loss": 0.1},
        "correlations": {
            "values": C.astype(np.float32),
            "features": np.array(adata.var_names[:n_features]),
            "feature_index": np.arange(n_features),
        },
        "params": {},
    }
    return adata


def snapshot(adata):
    return (
        copymod.deepcopy(dict(adata.uns)),
        list(adata.obsm.keys()),
        list(adata.varm.keys()),
        list(adata.obs.columns),
    )


def assert_unchanged(adata, snap):
    uns, obsm, varm, obs = snap
    assert list(adata.obsm.keys()) == obsm
    assert list(adata.varm.keys()) == varm
    assert list(adata.obs.columns) == obs
    assert adata.uns["lava"].keys() == uns["lava"].keys()
    assert adata.uns["lava"]["params"].keys() == uns["lava"]["params"].keys()
    for step in uns["lava"]:
        if isinstance(uns["lava"][step], dict) and "presence" in uns["lava"][step]:
            np.testing.assert_array_equal(adata.uns["lava"][step]["presence"], uns["lava"][step]["presence"])


@pytest.fixture(scope="module")
def selected():
    adata = make_adata()
    lava.tl.select_n_modules(adata, [1, 2, 3], n_runs=2, rng=3, progress=False, **FAST)
    return adata


def test_select_n_modules_stores_the_contract(selected):
    sel = selected.uns["lava"]["selection"]
    runs, summary = sel["runs"], sel["summary"]
    assert isinstance(runs, pd.DataFrame)
    assert isinstance(summary, pd.DataFrame)
    assert set(RUN_COLUMNS) <= set(runs.columns)
    assert len(runs) == 6
    assert set(SUMMARY_COLUMNS) <= set(summary.columns)
    assert summary.index.name == "n_modules"
    assert summary.index.tolist() == [1, 2, 3]
    assert summary.index.dtype == np.int64
    for column, dtype in runs.dtypes.items():
        assert dtype.kind in "ifb", column  # plain dtypes only
    assert np.isnan(summary.loc[1, "silhouette"])
    assert np.isfinite(summary.loc[2, "silhouette"])
    assert isinstance(sel["suggested_n_modules"], int)
    assert sel["suggested_n_modules"] in (1, 2, 3)
    assert set(sel["best"]) == {"1", "2", "3"}
    n_loc, P = selected.uns["lava"]["correlations"]["values"].shape
    for M in (1, 2, 3):
        best = sel["best"][str(M)]
        assert BEST_KEYS <= set(best)
        assert best["modules"].shape == (M, P)
        assert best["modules"].dtype == np.float32
        assert best["presence"].shape == (n_loc, M)
        assert best["presence"].dtype == np.float32
        rows = runs[runs["n_modules"] == M]
        kept = rows.iloc[summary.loc[M, "best_run"]]
        assert best["loss"] == kept["loss"]
        assert best["seed"] == kept["seed"]
        if M > 1:  # two runs have the same closeness: the tie goes to the lower loss
            assert kept["closeness"] == pytest.approx(rows["closeness"].max())
            assert best["loss"] == rows["loss"].min()
        assert isinstance(best["history"]["loss"], np.ndarray)
        assert summary.loc[M, "loss_mean"] == pytest.approx(rows["loss"].mean())
    params = decode_params(selected.uns["lava"]["params"]["selection"])
    assert params["n_modules"] == [1, 2, 3]
    assert params["n_runs"] == 2
    assert params["rng"] == 3
    assert params["max_epochs"] == 25
    assert params["checkpoint"] is None
    assert params["keep"] == "medoid"
    # earlier steps are kept
    assert "correlations" in selected.uns["lava"]
    assert "localities" in selected.uns["lava"]


def assert_selection_equal(a, b):
    pd.testing.assert_frame_equal(a["runs"], b["runs"])
    pd.testing.assert_frame_equal(a["summary"], b["summary"])
    assert int(a["suggested_n_modules"]) == int(b["suggested_n_modules"])
    assert set(a["best"]) == set(b["best"])
    for M, entry in a["best"].items():
        for name, value in entry.items():
            if isinstance(value, dict):
                for k in value:
                    np.testing.assert_array_equal(value[k], b["best"][M][name][k])
            else:
                np.testing.assert_array_equal(value, b["best"][M][name])


def test_selection_survives_h5ad(selected, tmp_path):
    selected.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert_selection_equal(selected.uns["lava"]["selection"], back.uns["lava"]["selection"])
    assert back.uns["lava"]["selection"]["summary"].index.name == "n_modules"
    assert decode_params(back.uns["lava"]["params"]["selection"])["n_modules"] == [1, 2, 3]


@pytest.mark.filterwarnings("ignore:.*zarr v2.*:UserWarning")
def test_selection_survives_zarr(selected, tmp_path):
    selected.write_zarr(tmp_path / "a.zarr")
    back = ad.read_zarr(tmp_path / "a.zarr")
    assert_selection_equal(selected.uns["lava"]["selection"], back.uns["lava"]["selection"])


def test_select_n_modules_copy_and_key():
    adata = make_adata(n_loc=20)
    adata.uns["other"] = adata.uns.pop("lava")
    out = lava.tl.select_n_modules(adata, [2], n_runs=1, key="other", copy=True, progress=False, **FAST)
    assert "selection" not in adata.uns["other"]
    assert "selection" in out.uns["other"]
    assert np.isnan(out.uns["other"]["selection"]["summary"].loc[2, "silhouette"])  # one run: undefined


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_modules": [2], "alpha": 1}, TypeError, "nu, gamma, lr, batch_size"),
        ({"n_modules": [2, 31]}, ValueError, "between 1 and the number of localities"),
        ({"n_modules": [0]}, ValueError, "between 1"),
        ({"n_modules": [2, 2]}, ValueError, "repeated"),
        ({"n_modules": [2.5]}, TypeError, "integers"),
        ({"n_modules": []}, ValueError, "empty"),
        ({"n_modules": [2], "n_runs": 0}, ValueError, "n_runs"),
        ({"n_modules": [2], "keep": "lowest"}, ValueError, "keep must be one of"),
        ({"n_modules": [2], "key": "nope"}, KeyError, "lava.tl"),
    ],
)
def test_select_n_modules_errors_leave_adata_unchanged(kwargs, error, match):
    adata = make_adata()
    snap = snapshot(adata)
    with pytest.raises(error, match=match):
        lava.tl.select_n_modules(adata, progress=False, **kwargs)
    assert_unchanged(adata, snap)


def test_select_n_modules_needs_correlations():
    adata = make_adata()
    del adata.uns["lava"]["correlations"]
    with pytest.raises(KeyError, match=r"lava.tl.correlations"):
        lava.tl.select_n_modules(adata, [2], progress=False)


def test_refine_presence_updates_amf(tmp_path):
    adata = make_adata()
    lava.tl.amf(adata, 3, rng=0, **FAST)
    before = copymod.deepcopy(dict(adata.uns["lava"]["amf"]))
    obsm_before = adata.obsm["lava_presence"].copy()
    lava.tl.refine_presence(adata, tau=0.1, max_epochs=200, device="cpu", progress=False)
    amf = adata.uns["lava"]["amf"]
    np.testing.assert_array_equal(amf["modules"], before["modules"])
    assert amf["presence"].shape == before["presence"].shape
    assert amf["presence"].dtype == np.float32
    assert amf["presence"].min() >= 0
    assert amf["presence"].max() <= 1
    assert not np.array_equal(amf["presence"], before["presence"])
    assert amf["refined_tau"] == 0.1
    C = adata.uns["lava"]["correlations"]["values"]
    C_hat = (amf["presence"][:, :, None] * amf["modules"][None]).max(axis=1)
    expected = np.maximum(C_hat - C, 0).sum() / np.abs(C_hat - C).sum()
    assert amf["overestimation_ratio"] == pytest.approx(expected, rel=1e-4)
    assert amf["overestimation_ratio"] < 0.2
    assert not np.array_equal(adata.obsm["lava_presence"], obsm_before)
    # obsm presence: mean over the localities containing each sample
    idx = adata.uns["lava"]["localities"]["indices"]
    sample = int(idx[0, 0])
    rows = np.flatnonzero((idx == sample).any(axis=1))
    np.testing.assert_allclose(adata.obsm["lava_presence"][sample], amf["presence"][rows].mean(axis=0), rtol=1e-5)
    params = lava.get.params(adata, "amf")
    assert params["refine_presence"]["tau"] == 0.1
    assert params["n_modules"] == 3
    adata.write_h5ad(tmp_path / "r.h5ad")
    back = ad.read_h5ad(tmp_path / "r.h5ad")
    assert back.uns["lava"]["amf"]["refined_tau"] == 0.1
    np.testing.assert_array_equal(back.uns["lava"]["amf"]["presence"], amf["presence"])


def test_refine_presence_errors_leave_adata_unchanged():
    adata = make_adata()
    with pytest.raises(KeyError, match=r"lava.tl.amf"):
        lava.tl.refine_presence(adata, progress=False)
    lava.tl.amf(adata, 2, rng=0, **FAST)
    snap = snapshot(adata)
    with pytest.raises(ValueError, match="tau"):
        lava.tl.refine_presence(adata, tau=1.5, progress=False)
    with pytest.raises(ValueError, match="max_epochs"):
        lava.tl.refine_presence(adata, max_epochs=0, progress=False)
    assert_unchanged(adata, snap)
    out = lava.tl.refine_presence(adata, tau=0.2, max_epochs=20, device="cpu", copy=True, progress=False)
    assert "refined_tau" in out.uns["lava"]["amf"]
    assert "refined_tau" not in adata.uns["lava"]["amf"]


def test_adopting_a_selected_run(selected):
    adata = selected.copy()
    lava.tl.amf(adata, from_selection=2, progress=False)
    best = selected.uns["lava"]["selection"]["best"]["2"]
    np.testing.assert_array_equal(adata.uns["lava"]["amf"]["modules"], best["modules"])
    np.testing.assert_array_equal(adata.uns["lava"]["amf"]["presence"], best["presence"])
    assert adata.uns["lava"]["amf"]["loss"] == best["loss"]
    assert "selection" in adata.uns["lava"]  # adopting keeps the table


def test_keep_loss_keeps_the_lowest_loss_and_amf_adopts_it():
    adata = make_adata()
    lava.tl.select_n_modules(adata, [2], n_runs=3, rng=4, keep="loss", progress=False, **FAST)
    sel = adata.uns["lava"]["selection"]
    runs, summary = sel["runs"], sel["summary"]
    assert summary.loc[2, "best_run"] == summary.loc[2, "lowest_loss_run"] == runs["loss"].to_numpy().argmin()
    assert sel["best"]["2"]["loss"] == runs["loss"].min()
    assert decode_params(adata.uns["lava"]["params"]["selection"])["keep"] == "loss"
    lava.tl.amf(adata, from_selection=2, progress=False)
    np.testing.assert_array_equal(adata.uns["lava"]["amf"]["modules"], sel["best"]["2"]["modules"])


def test_loss_options_reach_every_run():
    # the loss and its options pass through to each fit: the paper's loss gives no background floor
    adata = make_adata()
    lava.tl.select_n_modules(adata, [2, 3], n_runs=2, loss="paper", progress=False, **FAST)
    assert decode_params(adata.uns["lava"]["params"]["selection"])["loss"] == "paper"
    lava.tl.amf(adata, from_selection=2)
    assert "background" not in adata.uns["lava"]["amf"]
    lava.tl.select_n_modules(adata, [2], n_runs=2, loss="expectile", background=True, progress=False, **FAST)
    lava.tl.amf(adata, from_selection=2)
    assert adata.uns["lava"]["amf"]["background"].shape == (30,)
