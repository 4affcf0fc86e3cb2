"""Plots of stored lava results (matplotlib; scanpy's ``ax``/``show``/``return_fig`` conventions).

Every plot reads what the tools stored under ``adata.uns[key]`` (and ``obsm``/``varm``/``obs``) and never reruns
a step; a plot whose step has not run raises a KeyError naming the tool to call.
"""

from ._biology import association, enrichment, module_genes
from ._embedding import centrality, copresence, modules
from ._modules import locality, module_image, module_network
from ._selection import neighborhood_retention, selection

__all__ = [
    "association",
    "centrality",
    "copresence",
    "enrichment",
    "locality",
    "module_genes",
    "module_image",
    "module_network",
    "modules",
    "neighborhood_retention",
    "selection",
]
