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


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("furo")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-10000:]
    for page in ("index", "api", "method", "storage"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
