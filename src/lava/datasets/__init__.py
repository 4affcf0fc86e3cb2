"""Datasets: a seeded synthetic generator with ground truth, and loaders with a cache and pinned sha256."""

from __future__ import annotations

from ._loaders import data_dir, go_bp_human, kidney_immune, mnist, pbmc68k_reduced, read_gmt
from ._synthetic import default_layout, planted_modules, planted_presence, synthetic

__all__ = [
    "data_dir",
    "default_layout",
    "go_bp_human",
    "kidney_immune",
    "mnist",
    "pbmc68k_reduced",
    "planted_modules",
    "planted_presence",
    "read_gmt",
    "synthetic",
]
