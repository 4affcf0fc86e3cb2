"""Execute tutorial notebooks in place (the committed notebooks carry their outputs; the docs do not run them).

Usage::

    LAVA_DATA_DIR=/path/to/cache python tutorials/execute.py [mnist.ipynb kidney_immune.ipynb ...]

With no arguments every notebook in ``tutorials/`` is executed. Set ``LAVA_TUTORIAL_QUICK=1`` for the small variant
(what the test suite runs); leave it unset for the full-scale outputs that get committed. ``MPLBACKEND`` is removed
from the kernel's environment so that figures are embedded inline.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(path: Path, *, timeout: int | None = None) -> float:
    """Execute ``path`` in place with a python3 kernel; return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str]) -> int:
    os.environ.pop("MPLBACKEND", None)
    paths = [HERE / a if not Path(a).exists() else Path(a) for a in argv] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        print(f"executing {path.name} ...", flush=True)
        print(f"  done in {execute(path):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
