"""lava: Locality-Aware Variable Associations.

Explain what in the data shapes an embedding: localities over the embedding, feature-pair correlations inside
each locality, and modules of correlation that recur across localities (Association Matrix Factorisation).

Submodules load on first use, so ``import lava.core`` stays free of anndata and scanpy.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("lava-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0.0.0"

_SUBMODULES = ("core", "datasets", "get", "pl", "pp", "tl")
__all__ = ["__version__", "core", "datasets", "get", "pl", "pp", "tl"]

if TYPE_CHECKING:
    from . import core, datasets, get, pl, pp, tl


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    msg = f"module 'lava' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__():
    return sorted(__all__)
