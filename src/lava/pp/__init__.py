"""Small preprocessing helpers: drop mitochondrial/ribosomal genes, select variable genes for lava."""

from __future__ import annotations

from ._genes import drop_genes, filter_mito_ribo, mito_ribo_mask, select_features

__all__ = ["drop_genes", "filter_mito_ribo", "mito_ribo_mask", "select_features"]
