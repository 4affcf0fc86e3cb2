"""Out-of-core C: locality correlations written batch by batch into a zarr store or a memmap equal the in-memory result."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from lava.core import locality_correlations

zarr = pytest.importorskip("zarr")


def _data(rng, E=1200, D=35):
    X = sparse.random(E, D, density=0.35, format="csr", random_state=2, dtype=np.float32)
    X.data = np.round(X.data * 5)
    idx = np.stack([rng.choice(E, 90, replace=False) for _ in range(17)])
    return X, idx


def test_correlations_into_zarr_and_memmap(rng, tmp_path):
    X, idx = _data(rng)
    ref = locality_correlations(X, idx, batch_size=4)
    assert ref.any()
    store = zarr.create_array(tmp_path / "C.zarr", shape=ref.shape, chunks=(1, ref.shape[1]), dtype="float32")
    got = locality_correlations(X, idx, batch_size=4, out=store)
    assert got is store
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "C.zarr", mode="r")[:], ref)
    mm = np.lib.format.open_memmap(tmp_path / "C.npy", mode="w+", dtype=np.float32, shape=ref.shape)
    mm[:] = 0.5  # every row is overwritten
    locality_correlations(X, idx, batch_size=4, out=mm)
    np.testing.assert_array_equal(np.load(tmp_path / "C.npy"), ref)


def test_correlations_out_is_validated(rng):
    X, idx = _data(rng)
    P = X.shape[1] * (X.shape[1] - 1) // 2
    with pytest.raises(ValueError, match=r"out must be a \(17, 595\) float32"):
        locality_correlations(X, idx, out=np.zeros((17, P + 1), np.float32))
    with pytest.raises(ValueError, match="float32"):
        locality_correlations(X, idx, out=np.zeros((17, P), np.float64))


def test_correlations_into_zarr_with_dask(rng, tmp_path):
    da = pytest.importorskip("dask.array")
    X, idx = _data(rng)
    ref = locality_correlations(X, idx, batch_size=5)
    store = zarr.create_array(tmp_path / "C.zarr", shape=ref.shape, chunks=(1, ref.shape[1]), dtype="float32")
    locality_correlations(da.from_array(X, chunks=(300, X.shape[1])), idx, batch_size=5, out=store)
    np.testing.assert_array_equal(store[:], ref)
