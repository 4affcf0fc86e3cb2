from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: LAVA_TEST_NO_DATA=1 runs the suite with an empty data cache, as on a fresh clone without ../shared: every test
#: that needs a real dataset must skip (and none may try to download it).
NO_DATA = bool(os.environ.get("LAVA_TEST_NO_DATA"))


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """No test reaches the network: a test that needs a dataset the cache lacks skips (tests of the download
    code replace ``urlopen`` themselves)."""

    def refuse(url, *args, **kwargs):
        msg = f"a test tried to download {url}; tests read lava's data cache only (see skip_without_data)"
        raise AssertionError(msg)

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="session", autouse=True)
def _seed_data_cache(tmp_path_factory):
    """Give the suite its own dataset cache, seeded from ../shared/data and the user's cache (links, no downloads).

    The user's cache is ``LAVA_DATA_DIR`` or the platform's default (``lava.datasets.data_dir()``), so datasets
    a user already has are used and nothing is written there. With ``LAVA_DATA_DIR`` and
    ``LAVA_TEST_KEEP_DATA_DIR`` set, the suite reads and writes that cache itself.
    """
    if "LAVA_DATA_DIR" in os.environ and os.environ.get("LAVA_TEST_KEEP_DATA_DIR"):
        yield
        return
    from lava.datasets import data_dir

    cache = tmp_path_factory.mktemp("lava_data")
    for source in [] if NO_DATA else [SHARED_DATA, data_dir()]:
        if not source.is_dir():
            continue
        for f in source.iterdir():
            if f.suffix in {".npz", ".h5ad", ".gmt"} and f.is_file() and not (cache / f.name).exists():
                try:
                    (cache / f.name).symlink_to(f.resolve())
                except OSError:
                    shutil.copy(f, cache / f.name)
    old = os.environ.get("LAVA_DATA_DIR")
    os.environ["LAVA_DATA_DIR"] = str(cache)
    yield
    if old is None:
        os.environ.pop("LAVA_DATA_DIR", None)
    else:
        os.environ["LAVA_DATA_DIR"] = old


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def pbmc():
    """scanpy's shipped pbmc68k_reduced (700 cells x 765 genes, offline). Copy before modifying."""
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()
