from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _seed_data_cache(tmp_path_factory):
    """Seed lava's dataset cache from ../shared/data (offline copies), so no test needs the internet."""
    if "LAVA_DATA_DIR" in os.environ and os.environ.get("LAVA_TEST_KEEP_DATA_DIR"):
        yield
        return
    cache = tmp_path_factory.mktemp("lava_data")
    if SHARED_DATA.is_dir():
        for f in SHARED_DATA.iterdir():
            if f.suffix in {".npz", ".h5ad", ".gmt"}:
                try:
                    (cache / f.name).symlink_to(f)
                except OSError:
                    shutil.copy(f, cache / f.name)
    old = os.environ.get("LAVA_DATA_DIR")
    os.environ["LAVA_DATA_DIR"] = str(cache)
    yield
    if old is None:
        os.environ.pop("LAVA_DATA_DIR", None)
    else:
        os.environ["LAVA_DATA_DIR"] = old


def has_shared_data(name: str) -> bool:
    return (SHARED_DATA / name).is_file()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def pbmc():
    """scanpy's shipped pbmc68k_reduced (700 cells x 765 genes, offline). Copy before modifying."""
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()
