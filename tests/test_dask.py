"""Dask: locality correlations and select_n_modules runs as tasks on a LocalCluster; results equal the in-memory path.

The cluster is one worker with threads in this process (processes=False) to keep the suite light.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import anndata as ad  # noqa: E402

import lava  # noqa: E402
from lava.core import locality_correlations, select_n_modules  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _data(rng, kind, E=1500, D=40):
    if kind == "dense":
        X = rng.standard_normal((E, D)).astype(np.float32)
        X[:, :5] = np.round(X[:, :5])  # ties
        return X
    X = sparse.random(E, D, density=0.3, format="csr", random_state=1, dtype=np.float32)
    X.data = np.round(X.data * 4)  # non-zero ties, explicit zeros
    return X


def _indices(rng, E=1500, n=80, n_loc=23):
    return np.stack([rng.choice(E, n, replace=False) for _ in range(n_loc)])


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_correlations_client_equal_in_memory(client, rng, kind):
    X, idx = _data(rng, kind), _indices(rng)
    ref = locality_correlations(X, idx, batch_size=5)
    assert ref.any()
    np.testing.assert_array_equal(locality_correlations(X, idx, batch_size=5, client=client), ref)
    # batch_size=None: the same automatic batches on both paths
    np.testing.assert_array_equal(locality_correlations(X, idx, client=client), locality_correlations(X, idx))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_correlations_dask_array_equal_in_memory(client, rng, kind):
    X, idx = _data(rng, kind), _indices(rng)
    lazy = da.from_array(X, chunks=(400, X.shape[1]))
    ref = locality_correlations(X, idx, batch_size=4)
    np.testing.assert_array_equal(locality_correlations(lazy, idx, batch_size=4, client=client), ref)
    # without a client, batch by batch from the dask array
    np.testing.assert_array_equal(locality_correlations(lazy, idx, batch_size=4), ref)


def test_correlations_dask_errors(client, rng):
    X, idx = _data(rng, "dense"), _indices(rng)
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        locality_correlations(X, idx, client="tcp://nowhere:8786")
    bad = X.copy()
    bad[idx[3, 0], 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        locality_correlations(da.from_array(bad, chunks=(400, 40)), idx, client=client)
    with pytest.raises(ValueError, match="indices must lie"):
        locality_correlations(da.from_array(X, chunks=(400, 40)), idx + 10_000, client=client)


def _adata_with_localities(rng, X):
    adata = ad.AnnData(X=X)
    adata.var_names = [f"g{j}" for j in range(X.shape[1])]
    idx = _indices(rng, E=X.shape[0])
    adata.uns["lava"] = {"localities": {"indices": idx}}
    return adata


def test_tl_correlations_lazy_h5ad_with_client(client, rng, tmp_path):
    """AnnData read lazily (a dask X whose chunks come from the file) gives exactly the in-memory result."""
    h5py = pytest.importorskip("h5py")
    from anndata.experimental import read_elem_lazy

    X = _data(rng, "sparse")
    adata = _adata_with_localities(rng, X)
    adata.write_h5ad(tmp_path / "a.h5ad")
    features = [f"g{j}" for j in (3, 1, 7, 20, 33, 12, 5)]
    lava.tl.correlations(adata, features=features, progress=False)
    with h5py.File(tmp_path / "a.h5ad") as f:
        lazy = ad.AnnData(X=read_elem_lazy(f["X"]), var=adata.var.copy(), uns={"lava": dict(adata.uns["lava"])})
        assert isinstance(lazy.X, da.Array)
        lava.tl.correlations(lazy, features=features, progress=False, client=client)
        assert isinstance(lazy.X, da.Array)  # never loaded into memory
    got, ref = lazy.uns["lava"]["correlations"], adata.uns["lava"]["correlations"]
    np.testing.assert_array_equal(got["values"], ref["values"])
    np.testing.assert_array_equal(got["features"], ref["features"])
    assert lava.get.params(lazy, "correlations")["dask"] is True
    assert lava.get.params(adata, "correlations")["dask"] is False


def test_tl_correlations_rejects_bad_client_before_touching_adata(rng):
    adata = _adata_with_localities(rng, _data(rng, "dense"))
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        lava.tl.correlations(adata, client=object(), progress=False)
    assert "correlations" not in adata.uns["lava"]


def _planted_C(seed=0, n_loc=40, P=45):
    g = np.random.default_rng(seed)
    modules = (g.random((3, P)) < 0.3) * g.uniform(0.5, 1, (3, P))
    presence = g.uniform(0, 1, (n_loc, 3)) * (g.random((n_loc, 3)) < 0.6)
    return np.clip((presence[:, :, None] * modules[None]).max(1) + 0.02 * g.random((n_loc, P)), 0, 1).astype(np.float32)


def test_select_n_modules_client_equal_serial(client, tmp_path):
    C = _planted_C()
    kwargs = {"n_runs": 2, "rng": 3, "max_epochs": 15, "lr": 1e-2, "device": "cpu"}
    ref = select_n_modules(C, [2, 3], **kwargs)
    got = select_n_modules(C, [2, 3], client=client, **kwargs)
    for name, values in ref.runs.items():
        np.testing.assert_array_equal(got.runs[name], values, err_msg=name)
    for M in (2, 3):
        np.testing.assert_array_equal(got.best[M].modules, ref.best[M].modules)
        np.testing.assert_array_equal(got.best[M].presence, ref.best[M].presence)
    assert got.suggested_n_modules == ref.suggested_n_modules
    # with a checkpoint: finished runs are loaded, the missing one is fitted as a task, the result is the same
    select_n_modules(C, [2, 3], checkpoint=tmp_path / "ck", client=client, **kwargs)
    (tmp_path / "ck" / "m3_r1.npz").unlink()
    resumed = select_n_modules(C, [2, 3], checkpoint=tmp_path / "ck", client=client, **kwargs)
    assert (tmp_path / "ck" / "m3_r1.npz").exists()
    np.testing.assert_array_equal(resumed.runs["loss"], ref.runs["loss"])


def test_select_n_modules_embedded_local_cluster_and_tl(rng):
    C = _planted_C(seed=1)
    kwargs = {"n_runs": 2, "rng": 0, "max_epochs": 10, "device": "cpu"}
    ref = select_n_modules(C, [2], **kwargs)
    got = select_n_modules(C, [2], client=True, **kwargs)
    np.testing.assert_array_equal(got.runs["loss"], ref.runs["loss"])
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        select_n_modules(C, [2], client="local", **kwargs)

    adata = ad.AnnData(X=np.zeros((5, 10), np.float32))
    adata.uns["lava"] = {"correlations": {"values": C, "features": np.array([f"g{j}" for j in range(10)])}}
    lava.tl.select_n_modules(adata, [2], n_runs=2, rng=0, max_epochs=10, device="cpu", client=True, progress=False)
    np.testing.assert_array_equal(adata.uns["lava"]["selection"]["runs"]["loss"].to_numpy(), ref.runs["loss"])


def test_correlations_embedded_local_cluster(rng):
    X, idx = _data(rng, "sparse"), _indices(rng, n_loc=6)
    np.testing.assert_array_equal(locality_correlations(X, idx, client=True), locality_correlations(X, idx))
