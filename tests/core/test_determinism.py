"""The same seed gives the same bits whatever the state of numba's on-disk cache.

Freshly compiled and cached numba kernels are different machine code for a ``parallel=True`` function; with
fast-math reassociation their vectorised sums differed in the last bits, and the fit amplified that (``lava demo``:
loss 0.21988 with a cold cache, 0.22001 with a warm one). Here one fit runs in this process (kernels in whatever state
the suite left them), then twice in a fresh interpreter with an empty cache directory: the first compiles the
kernels, the second loads them from that cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lava
from lava.core import fit_amf

FIT = dict(rng=3, max_epochs=25, progress=False, device="cpu")
SCRIPT = """
import sys
import numpy as np
from lava.core import fit_amf

C = np.load(sys.argv[1])
fit = fit_amf(C, 4, **{fit!r})
np.savez(sys.argv[2], modules=fit.modules, presence=fit.presence, loss=fit.loss, history=fit.history["loss"])
"""


def _correlations(seed: int = 0) -> np.ndarray:
    """A sparse (64, 6000) C: three blocks of 2048 pairs for the kernels' threads, a partial block, a tail."""
    rng = np.random.default_rng(seed)
    C = rng.random((64, 6000), dtype=np.float32)
    C[rng.random(C.shape) < 0.6] = 0
    return C


@pytest.mark.slow
def test_fit_is_bitwise_identical_with_cold_and_warm_numba_cache(tmp_path):
    C = _correlations()
    np.save(tmp_path / "C.npy", C)
    here = fit_amf(C, 4, **FIT)
    assert here.kernel == "compiled"  # the numba kernels are what the cache holds
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT.format(fit=FIT))
    cache = tmp_path / "numba_cache"
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(cache),
        "PYTHONPATH": os.pathsep.join([str(Path(lava.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    results = []
    for run in ("cold", "warm"):
        out = tmp_path / f"{run}.npz"
        proc = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "C.npy"), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        if run == "cold":  # the first run filled the cache the second one reads
            assert any(p.suffix == ".nbc" for p in cache.rglob("*")), "numba wrote no cache"
        with np.load(out) as f:
            results.append({k: f[k] for k in f.files})
    for run, result in zip(("cold", "warm"), results, strict=True):
        np.testing.assert_array_equal(result["history"], here.history["loss"], err_msg=run)
        np.testing.assert_array_equal(result["modules"], here.modules, err_msg=run)
        np.testing.assert_array_equal(result["presence"], here.presence, err_msg=run)
        assert float(result["loss"]) == here.loss, run
