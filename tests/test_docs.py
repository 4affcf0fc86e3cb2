"""The documentation: it builds without warnings, and api.md lists every public function."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_MODULES = ("tl", "pl", "get", "core", "datasets", "pp")


def _public_names(module: str) -> list[str]:
    mod = importlib.import_module(f"lava.{module}")
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
    return sorted(names)


@pytest.mark.parametrize("module", API_MODULES)
def test_api_page_lists_every_public_name(module):
    text = (DOCS / "api.md").read_text()
    # the autosummary block under ".. currentmodule:: lava.<module>" (MyST: ```{eval-rst} ... or {autosummary})
    listed = set(re.findall(rf"^\s+(?:lava\.{module}\.)?(\w+)\s*$", _section(text, module), flags=re.M))
    missing = [n for n in _public_names(module) if n not in listed]
    assert not missing, f"docs/api.md does not list lava.{module}.{missing}"


def _section(text: str, module: str) -> str:
    match = re.search(rf"currentmodule:: lava\.{module}\n(.*?)(?=currentmodule:: |\Z)", text, flags=re.S)
    assert match, f"docs/api.md has no section for lava.{module}"
    return match.group(1)


def test_storage_page_names_every_step():
    from lava._store import STEPS

    text = (DOCS / "storage.md").read_text()
    for step in STEPS:
        assert f'["{step}"]' in text or f"`{step}`" in text, step


def test_toctree_entries_exist():
    text = (DOCS / "index.md").read_text()
    for block in re.findall(r"```\{toctree\}\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            entry = line.strip()
            if not entry or entry.startswith(":"):
                continue
            assert any((DOCS / f"{entry}{ext}").exists() for ext in (".md", ".ipynb", ".rst")), entry


def test_plotting_page_shows_every_plot():
    text = (DOCS / "plotting.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\((_static/plots/[\w.-]+\.png)\)", text)
    for path in images:
        assert (DOCS / path).is_file(), f"{path} is missing: run python docs/make_plot_images.py"
    shown = {Path(path).stem for path in images}
    missing = [name for name in _public_names("pl") if name not in shown]
    assert not missing, f"docs/plotting.md has no figure of lava.pl.{missing}"
    total = sum(f.stat().st_size for f in (DOCS / "_static" / "plots").glob("*.png"))
    assert total < 1.5 * 2**20, f"the plot images take {total / 2**20:.2f} MiB; keep them under 1.5 MiB"


def test_offline_inventories_cover_every_intersphinx_project():
    """Each intersphinx project falls back to a committed inventory, so an offline build has no warning."""
    sphinx = pytest.importorskip("sphinx")
    from sphinx.util.inventory import InventoryFile

    namespace: dict = {"__file__": str(DOCS / "conf.py")}
    exec(compile((DOCS / "conf.py").read_text(), str(DOCS / "conf.py"), "exec"), namespace)
    mapping = namespace["intersphinx_mapping"]
    assert {"anndata", "scanpy", "numpy", "pandas"} <= set(mapping)
    for name, (url, locations) in mapping.items():
        local = [loc for loc in locations if loc is not None]
        assert local, name
        inventory = InventoryFile.loads(Path(local[0]).read_bytes(), uri=url)
        data = getattr(inventory, "data", inventory)
        names = {obj for role in data.values() for obj in role}
        assert any(obj.startswith(f"{name}.") for obj in names), (name, sphinx.__version__)


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("furo")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-10000:]
    html = tmp_path / "html"
    for page in ("index", "api", "method", "storage", "plotting"):
        assert (html / f"{page}.html").is_file(), page
    # every link and image of every page resolves (the index links each page; the plotting page shows its figures)
    broken = []
    for page in html.rglob("*.html"):
        for target in re.findall(r'(?:href|src)="([^"#?]+)', page.read_text(errors="replace")):
            if "://" in target or target.startswith(("mailto:", "data:", "javascript:")):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(html)} -> {target}")
    assert not broken, broken[:20]
    plotting = (html / "plotting.html").read_text()
    assert plotting.count("<img") >= len(_public_names("pl"))
    # intersphinx turns references to the scverse and numpy/pandas docs into links (offline: the committed inventories)
    assert "scanpy.readthedocs.io" in (html / "generated" / "lava.pl.modules.html").read_text()
    assert "anndata.readthedocs.io" in (html / "generated" / "lava.tl.amf.html").read_text()
