"""lava.core is pure numerics: importing it must not import anndata or scanpy."""

from __future__ import annotations

import subprocess
import sys


def test_core_does_not_import_anndata_or_scanpy():
    code = "import sys, lava.core; print(','.join(m for m in ('anndata', 'scanpy') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"lava.core imported {proc.stdout.strip()}"


def test_submodules_load_on_use():
    import lava

    assert lava.tl.__name__ == "lava.tl"
    assert lava.core.__name__ == "lava.core"
