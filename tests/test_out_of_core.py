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


def _planted_C(seed=0, n_loc=50, P=120, M=3):
    g = np.random.default_rng(seed)
    modules = (g.random((M, P)) < 0.3) * g.uniform(0.5, 1, (M, P))
    presence = g.uniform(0.5, 1, (n_loc, M)) * (g.random((n_loc, M)) < 0.6)
    C = np.clip((presence[:, :, None] * modules[None]).max(1) + 0.02 * g.random((n_loc, P)), 0, 1)
    C[:, ::7] = 0  # pairs that are 0 everywhere are dropped
    return C.astype(np.float32)


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
def test_fit_amf_streams_from_zarr_and_memmap_exactly(tmp_path, kernel):
    from lava.core import fit_amf

    C = _planted_C()
    kwargs = {
        "rng": 4,
        "max_epochs": 4,
        "lr": 1e-2,
        "batch_size": 16,
        "device": "cpu",
        "kernel": kernel,
        "loss": "paper",
    }
    ref = fit_amf(C, 3, **kwargs)
    store = zarr.create_array(tmp_path / "C.zarr", shape=C.shape, chunks=(1, C.shape[1]), dtype="float32")
    store[:] = C
    mm = np.lib.format.open_memmap(tmp_path / "C.npy", mode="w+", dtype=np.float32, shape=C.shape)
    mm[:] = C
    for source in (zarr.open_array(tmp_path / "C.zarr", mode="r"), np.load(tmp_path / "C.npy", mmap_mode="r")):
        got = fit_amf(source, 3, **kwargs)
        np.testing.assert_array_equal(got.modules, ref.modules)
        np.testing.assert_array_equal(got.presence, ref.presence)
        np.testing.assert_array_equal(got.history["loss"], ref.history["loss"])
        assert got.loss == ref.loss
        assert got.n_pairs_dropped == ref.n_pairs_dropped > 0
        assert got.similarity == pytest.approx(ref.similarity, rel=1e-12)


def test_fit_amf_streamed_reads_only_minibatches(tmp_path, monkeypatch):
    """The store is never read whole: every read is a block of at most the evaluation block's rows."""
    from lava.core import _streamed, fit_amf

    C = _planted_C(n_loc=300)
    store = zarr.create_array(tmp_path / "C.zarr", shape=C.shape, chunks=(1, C.shape[1]), dtype="float32")
    store[:] = C
    largest = []
    original = _streamed.StreamedC._load

    def spy(self, rows):
        block = original(self, rows)
        largest.append(block.shape[0])
        return block

    monkeypatch.setattr(_streamed.StreamedC, "_load", spy)
    fit_amf(zarr.open_array(tmp_path / "C.zarr", mode="r"), 3, max_epochs=2, batch_size=32, rng=0, device="cpu")
    assert largest
    assert max(largest) < C.shape[0]
