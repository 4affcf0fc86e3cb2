"""Tools: AnnData in, results stored in ``adata`` (scanpy conventions)."""

from ._amf import amf
from ._associate import associate
from ._correlations import correlations
from ._enrich import enrich
from ._localities import localities, neighborhood_retention
from ._modules import module_genes
from ._presence import presence_to_obs
from ._selection import refine_presence, select_n_modules

__all__ = [
    "amf",
    "associate",
    "correlations",
    "enrich",
    "localities",
    "module_genes",
    "neighborhood_retention",
    "presence_to_obs",
    "refine_presence",
    "select_n_modules",
]
