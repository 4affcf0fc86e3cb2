"""lava's log lines show where and when scanpy's do (sc.settings.verbosity), unless standard logging is configured."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import lava
from lava import _logging


def _small() -> ad.AnnData:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.normal(size=(120, 6)).astype(np.float32))
    adata.obsm["X_umap"] = rng.normal(size=(120, 2)).astype(np.float32)
    return adata


@pytest.fixture
def notebook_like(monkeypatch):
    """As in a fresh Jupyter kernel: no handler takes lava's records, lava's level unset; scanpy's to a buffer."""
    lava_logger = logging.getLogger("lava")
    monkeypatch.setattr(lava_logger, "propagate", False)  # away from pytest's capture handlers on the root logger
    monkeypatch.setattr(lava_logger, "handlers", [])
    monkeypatch.setattr(lava_logger, "level", logging.NOTSET)
    old_verbosity, old_file = sc.settings.verbosity, sc.settings.logfile
    buffer = io.StringIO()
    sc.settings.logfile = buffer
    yield buffer
    sc.settings.verbosity = old_verbosity
    sc.settings.logfile = old_file


def test_lines_follow_scanpys_verbosity(notebook_like):
    sc.settings.verbosity = "info"
    lava.tl.neighborhood_retention(_small(), sizes=[5, 10], n_samples=20)
    text = notebook_like.getvalue()
    assert "computing neighbourhood retention of 'X_umap'" in text
    assert "    finished (0:00:" in text
    assert "added 'neighborhood_retention' to adata.uns['lava']" in text  # logger.info called directly

    notebook_like.truncate(0)
    notebook_like.seek(0)
    sc.settings.verbosity = "warning"  # scanpy's default: no info lines, from scanpy or lava
    lava.tl.neighborhood_retention(_small(), sizes=[5, 10], n_samples=20)
    assert notebook_like.getvalue() == ""


def test_warnings_show_at_scanpys_default_verbosity(notebook_like):
    sc.settings.verbosity = "warning"
    _logging.warning("a lava warning")
    assert notebook_like.getvalue() == "WARNING: a lava warning\n"  # scanpy's format
    notebook_like.truncate(0)
    notebook_like.seek(0)
    sc.settings.verbosity = "error"
    _logging.warning("a lava warning")
    assert notebook_like.getvalue() == ""


def test_standard_logging_configuration_wins(notebook_like):
    """A level or handler set on 'lava' (the CLI, pytest's caplog, a user) takes the lines, and scanpy does not."""
    sc.settings.verbosity = "info"
    lava_logger = logging.getLogger("lava")
    mine = io.StringIO()
    handler = logging.StreamHandler(mine)
    lava_logger.addHandler(handler)
    try:
        lava_logger.setLevel(logging.INFO)
        _logging.info("computing something")
        lava_logger.setLevel(logging.WARNING)
        _logging.info("hidden by lava's own level")
    finally:
        lava_logger.removeHandler(handler)
    assert mine.getvalue() == "computing something\n"
    assert notebook_like.getvalue() == ""  # no duplicate through scanpy


def test_basicconfig_at_info_takes_lavas_lines(notebook_like, monkeypatch):
    monkeypatch.setattr(logging.getLogger("lava"), "propagate", True)
    sc.settings.verbosity = "warning"
    mine = io.StringIO()
    root_handler = logging.StreamHandler(mine)
    logging.root.addHandler(root_handler)
    old_level = logging.root.level
    logging.root.setLevel(logging.INFO)
    try:
        _logging.info("computing through root")
    finally:
        logging.root.setLevel(old_level)
        logging.root.removeHandler(root_handler)
    assert mine.getvalue() == "computing through root\n"
    assert notebook_like.getvalue() == ""


# a fresh interpreter, as a notebook's kernel: lava's line shows exactly when scanpy's own "computing PCA" does
SESSION = """
import sys
import numpy as np
import anndata as ad
import scanpy as sc
import lava

if sys.argv[1] != "default":
    sc.settings.verbosity = sys.argv[1]
rng = np.random.default_rng(0)
adata = ad.AnnData(rng.normal(size=(120, 6)).astype(np.float32))
adata.obsm["X_umap"] = rng.normal(size=(120, 2)).astype(np.float32)
sc.pp.pca(adata, n_comps=3)
lava.tl.neighborhood_retention(adata, sizes=[5, 10], n_samples=20)
"""


@pytest.mark.parametrize(("verbosity", "shown"), [("default", False), ("info", True), ("hint", True)])
def test_fresh_session_shows_lines_with_scanpys(tmp_path, verbosity, shown):
    script = tmp_path / "session.py"
    script.write_text(SESSION)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(lava.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", str(script), verbosity], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("computing PCA" in proc.stderr) is shown  # scanpy's own line
    assert ("computing neighbourhood retention" in proc.stderr) is shown
    assert ("finished (0:00:" in proc.stderr) is shown


def test_import_configures_nothing(tmp_path):
    code = (
        "import logging\n"
        "logging.getLogger('lava').setLevel(logging.DEBUG)\n"  # made before lava is imported
        "import lava, lava.tl\n"
        "log = logging.getLogger('lava')\n"
        "assert logging.root.handlers == [], logging.root.handlers\n"
        "assert log.handlers == [] and log.level == logging.DEBUG and log.propagate\n"
        "assert type(log).__name__ == '_LavaLogger'\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(lava.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
