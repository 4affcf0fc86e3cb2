"""The tutorials stay runnable: each is executed in its quick variant (LAVA_TUTORIAL_QUICK=1) with nbclient.

The committed notebooks are executed at full scale (their outputs are what the docs show); here a small version
of each runs so that an API change that breaks a tutorial fails the suite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data_helpers import skip_without_data
from lava.datasets import _loaders

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))
NAMES = [p.stem for p in TUTORIALS]


def _data_files(path: Path) -> list[str]:
    """The cache files of the real datasets a notebook loads (``lava.datasets.<name>(`` in its code cells)."""
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    names = sorted(set(re.findall(r"lava\.datasets\.(\w+)\(", code)) & set(_loaders.REGISTRY))
    return [_loaders.REGISTRY[name].filename for name in names]


def test_tutorials_name_their_data():
    assert _data_files(ROOT / "tutorials" / "mnist.ipynb") == ["mnist.npz"]
    assert _data_files(ROOT / "tutorials" / "kidney_immune.ipynb") == ["go_bp_human.gmt", "kidneyimmune.h5ad"]


def test_there_are_tutorials():
    assert {"mnist", "kidney_immune"} <= set(NAMES)


@pytest.mark.parametrize("path", TUTORIALS, ids=NAMES)
def test_committed_notebook_is_executed_without_errors(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    for i, cell in enumerate(code):
        assert cell.execution_count is not None, f"code cell {i} was not executed; commit the executed notebook"
        assert not [o for o in cell.outputs if o.output_type == "error"], f"code cell {i} failed"
    quick = [o for c in code for o in c.outputs if "QUICK run" in str(o.get("text", ""))]
    assert not quick, "the committed notebook is the quick variant; execute it at full scale"


@pytest.mark.parametrize("path", TUTORIALS, ids=NAMES)
def test_docs_link_the_notebook(path):
    link = ROOT / "docs" / "tutorials" / path.name
    assert link.exists(), f"docs/tutorials/{path.name} is missing"
    assert link.resolve() == path.resolve()


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=NAMES)
def test_quick_variant_runs(path, tmp_path, monkeypatch):
    skip_without_data(*_data_files(path))  # the kernel would try to download them
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("LAVA_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    texts = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "QUICK run" in texts
