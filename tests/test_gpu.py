"""CUDA: ``device="auto"`` uses the GPU for correlations and AMF, and the results equal the CPU path (float32 tolerance).

Every test here is marked ``gpu`` and skipped without a CUDA device (run them with ``pytest -m gpu`` on a GPU machine).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

torch = pytest.importorskip("torch")

import anndata as ad  # noqa: E402

import lava  # noqa: E402
from lava._compat import resolve_device  # noqa: E402
from lava.core import fit_amf, locality_correlations  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _data(rng, E=2000, D=70, kind="sparse"):
    X = rng.standard_normal((E, D)).astype(np.float32)
    X[:, :10] = np.round(X[:, :10])  # ties
    if kind == "sparse":
        X[rng.random(X.shape) < 0.6] = 0  # many features tied out by zeros in some localities, not in others
        return sparse.csr_matrix(X)
    return X


def _indices(rng, E=2000, n=150, n_loc=40):
    return np.stack([rng.choice(E, n, replace=False) for _ in range(n_loc)])


def test_auto_resolves_to_cuda():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("batch_size", [None, 7])
def test_correlations_cuda_equal_cpu(rng, kind, batch_size):
    X, idx = _data(rng, kind=kind), _indices(rng)
    cpu = locality_correlations(X, idx, device="cpu", batch_size=batch_size)
    gpu = locality_correlations(X, idx, device="auto", batch_size=batch_size)
    assert gpu.dtype == np.float32
    assert cpu.any()
    np.testing.assert_allclose(gpu, cpu, atol=1e-5, rtol=0)
    # the tie filter decides exactly the same zeros on both devices
    np.testing.assert_array_equal(gpu == 0, cpu == 0)


def test_correlations_float64_data_cuda_equal_cpu(rng):
    X = (rng.standard_normal((500, 30)) * 1e-9 + 1.0).astype(np.float64)  # values float32 cannot tell apart
    idx = _indices(rng, E=500, n=60, n_loc=12)
    np.testing.assert_allclose(
        locality_correlations(X, idx, device="cuda"), locality_correlations(X, idx, device="cpu"), atol=1e-5
    )


def test_tl_correlations_auto_uses_cuda_and_matches(rng):
    X = _data(rng, E=600, D=25)
    adata = ad.AnnData(X=X)
    adata.uns["lava"] = {"localities": {"indices": _indices(rng, E=600, n=80, n_loc=10)}}
    gpu = lava.tl.correlations(adata, device="auto", copy=True, progress=False)
    cpu = lava.tl.correlations(adata, device="cpu", copy=True, progress=False)
    np.testing.assert_allclose(
        gpu.uns["lava"]["correlations"]["values"], cpu.uns["lava"]["correlations"]["values"], atol=1e-5
    )


def _planted_C(seed=0, n_loc=80, P=300, M=4):
    g = np.random.default_rng(seed)
    modules = (g.random((M, P)) < 0.2) * g.uniform(0.5, 1, (M, P))
    presence = g.uniform(0.5, 1, (n_loc, M)) * (g.random((n_loc, M)) < 0.5)
    C = (presence[:, :, None] * modules[None]).max(1) + 0.03 * g.random((n_loc, P))
    return np.clip(C, 0, 1).astype(np.float32)


@pytest.mark.parametrize("kernel", ["eager", "auto"])
def test_fit_amf_cuda_equal_cpu(kernel):
    """Same seed: same initial matrices and minibatch order; a few epochs agree within float32 tolerance."""
    C = _planted_C()
    kwargs = {"rng": 3, "max_epochs": 5, "lr": 1e-2, "batch_size": 16}
    cpu = fit_amf(C, 4, device="cpu", kernel="eager", **kwargs)
    gpu = fit_amf(C, 4, device="auto", kernel=kernel, **kwargs)
    assert gpu.n_epochs == cpu.n_epochs
    np.testing.assert_allclose(gpu.history["loss"], cpu.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(gpu.modules, cpu.modules, atol=1e-4)
    np.testing.assert_allclose(gpu.presence, cpu.presence, atol=1e-4)
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-4)
    assert isinstance(gpu.modules, np.ndarray)  # results come back to the host


def test_tl_amf_auto_uses_cuda_and_matches():
    C = _planted_C(n_loc=40, P=45)
    adata = ad.AnnData(X=np.zeros((5, 10), np.float32))
    adata.var_names = [f"g{j}" for j in range(10)]
    adata.uns["lava"] = {
        "localities": {"indices": np.random.default_rng(0).integers(0, 5, (40, 3))},
        "correlations": {"values": C, "features": adata.var_names.to_numpy(), "feature_index": np.arange(10)},
    }
    gpu = lava.tl.amf(adata, 3, max_epochs=5, rng=0, device="auto", copy=True, progress=False)
    cpu = lava.tl.amf(adata, 3, max_epochs=5, rng=0, device="cpu", copy=True, progress=False)
    for name in ("modules", "presence"):
        np.testing.assert_allclose(gpu.uns["lava"]["amf"][name], cpu.uns["lava"]["amf"][name], atol=1e-4)
