"""Tests that need a real dataset (MNIST, kidney immune, GO) skip when lava's data cache lacks it.

The suite's cache is seeded from ../shared/data when it exists (conftest.py); on a fresh clone it is empty and
these tests skip, saying which file is missing. No test downloads a dataset (conftest.py refuses ``urlopen``).
"""

from __future__ import annotations

import pytest


def missing_data(*filenames: str) -> list[str]:
    """Return the files among ``filenames`` that lava's data cache lacks."""
    from lava.datasets import data_dir

    return [name for name in filenames if not (data_dir() / name).is_file()]


def skip_without_data(*filenames: str) -> None:
    """Skip the calling test when lava's data cache lacks any of ``filenames``, naming them and the fix."""
    missing = missing_data(*filenames)
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not in lava's data cache; set LAVA_DATA_DIR to a folder that holds "
            "them (docs/datasets.md): tests do not download datasets"
        )
