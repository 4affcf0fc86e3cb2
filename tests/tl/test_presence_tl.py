"""lava.tl.presence_to_obs: per-sample presence as obs columns for scanpy, dropped when the fit they copy is stale."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest

import lava
from lava._store import store_step

N_OBS, M = 30, 3


@pytest.fixture
def adata():
    gen = np.random.default_rng(0)
    a = ad.AnnData(X=gen.poisson(1.0, (N_OBS, 5)).astype(np.float32))
    a.obsm["X_umap"] = gen.normal(size=(N_OBS, 2))
    store_step(a, "lava", "localities", {"indices": np.arange(20).reshape(2, 10)}, {"n_neighbors": 10})
    store_step(a, "lava", "correlations", {"values": np.zeros((2, 10), np.float32)}, {})
    store_amf(a, gen.uniform(size=(N_OBS, M)).astype(np.float32))
    return a


def store_amf(a, sample_presence):
    M_ = sample_presence.shape[1]
    result = {"modules": np.ones((M_, 10), np.float32), "presence": np.ones((2, M_), np.float32)}
    store_step(a, "lava", "amf", result, {"n_modules": M_}, obsm={"lava_presence": sample_presence})


def test_writes_one_float_column_per_module(adata):
    assert lava.tl.presence_to_obs(adata) is None
    for m in range(M):
        column = adata.obs[f"lava_presence_{m}"]
        assert column.dtype == np.float32
        np.testing.assert_array_equal(column.to_numpy(), adata.obsm["lava_presence"][:, m])


def test_modules_subset_and_copy(adata):
    out = lava.tl.presence_to_obs(adata, modules=[2], copy=True)
    assert "lava_presence_2" in out.obs
    assert "lava_presence_0" not in out.obs
    assert not any(c.startswith("lava_presence") for c in adata.obs.columns)  # the original is untouched
    lava.tl.presence_to_obs(adata, modules=1)
    assert list(adata.obs.columns) == ["lava_presence_1"]


def test_errors_before_changes(adata):
    with pytest.raises(ValueError, match=r"module 5 does not exist; .* 0\.\.2"):
        lava.tl.presence_to_obs(adata, modules=[0, 5])
    with pytest.raises(TypeError, match="integers"):
        lava.tl.presence_to_obs(adata, modules=["0"])
    with pytest.raises(ValueError, match="view"):
        lava.tl.presence_to_obs(adata[:10])
    with pytest.raises(KeyError, match=r"lava\.tl\.amf"):
        lava.tl.presence_to_obs(adata, key="other")
    del adata.obsm["lava_presence"]
    with pytest.raises(KeyError, match=r"lava_presence.*lava\.tl\.amf"):
        lava.tl.presence_to_obs(adata)
    assert len(adata.obs.columns) == 0


def test_survives_h5ad(adata, tmp_path):
    lava.tl.presence_to_obs(adata)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for m in range(M):
        np.testing.assert_array_equal(back.obs[f"lava_presence_{m}"], adata.obs[f"lava_presence_{m}"])


@pytest.mark.parametrize("rerun", ["amf", "localities"])
def test_rerunning_the_fit_drops_the_columns(adata, rerun):
    lava.tl.presence_to_obs(adata)
    adata.obs["lava_presence_note"] = "kept"  # not a module column
    adata.obs["other_presence_0"] = 1.0  # another key's
    if rerun == "amf":
        store_amf(adata, np.zeros((N_OBS, 2), np.float32))
    else:
        store_step(adata, "lava", "localities", {"indices": np.arange(20).reshape(2, 10)}, {"n_neighbors": 10})
    assert sorted(adata.obs.columns) == ["lava_presence_note", "other_presence_0"]


def test_scanpy_plots_the_columns(adata):
    import scanpy as sc

    lava.tl.presence_to_obs(adata)
    ax = sc.pl.umap(adata, color="lava_presence_0", show=False)
    drawn = ax.collections[0].get_array()
    np.testing.assert_allclose(np.sort(drawn), np.sort(adata.obsm["lava_presence"][:, 0]), rtol=1e-6)
    plt.close("all")
