"""Tidy pandas DataFrames (and arrays) from stored lava results; nothing is recomputed."""

from ._results import (
    association,
    enrichment,
    feature_scores,
    localities,
    module_genes,
    modules,
    params,
    presence,
    selection,
)
from ._summary import summary

__all__ = [
    "association",
    "enrichment",
    "feature_scores",
    "localities",
    "module_genes",
    "modules",
    "params",
    "presence",
    "selection",
    "summary",
]
