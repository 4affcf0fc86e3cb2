"""Gene filters used before lava on single-cell data: drop mitochondrial/ribosomal genes, pick variable genes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._docs import doc_params

#: Mitochondrially encoded genes (human ``MT-``, mouse ``mt-``).
MITO_PATTERN = r"^MT-"
#: Cytosolic ribosomal proteins: RPL3 ... RPL41, RPS2 ... RPS29 with their A/L/X/Y paralogs, RPLP0-2, RPSA.
#: Not RPS6KA1 and friends (kinases that share the prefix).
RIBO_PATTERN = r"^RP[SL]\d+(?:A|AL|L|L\d|X|Y\d)?$|^RPLP\d$|^RPSA$"
#: Mitochondrial ribosomal proteins (MRPL*, MRPS*).
MITO_RIBO_PATTERN = r"^MRP[SL]\d"


def mito_ribo_mask(
    var_names: Iterable[str], *, mito: bool = True, ribo: bool = True, mito_ribo: bool = True
) -> np.ndarray:
    """Which names are mitochondrial, ribosomal or mitochondrial-ribosomal genes (case-insensitive: human and mouse).

    Parameters
    ----------
    var_names
        Gene symbols.
    mito
        Match mitochondrially encoded genes (``MT-CO1``, mouse ``mt-Co1``).
    ribo
        Match cytosolic ribosomal protein genes (``RPL3``, ``RPS4X``, ``RPLP0``, ``RPSA``; not ``RPS6KA1``).
    mito_ribo
        Match mitochondrial ribosomal protein genes (``MRPL12``, ``MRPS5``).

    Returns
    -------
    Boolean array, True for the matched genes.
    """
    patterns = [p for p, use in ((MITO_PATTERN, mito), (RIBO_PATTERN, ribo), (MITO_RIBO_PATTERN, mito_ribo)) if use]
    names = [str(name) for name in var_names]
    if not patterns:
        return np.zeros(len(names), dtype=bool)
    compiled = re.compile("|".join(f"(?:{p})" for p in patterns), flags=re.IGNORECASE)
    return np.array([compiled.search(name) is not None for name in names], dtype=bool)


def _subset_vars(adata, keep: np.ndarray, copy: bool):
    if copy:
        return adata[:, keep].copy()
    adata._inplace_subset_var(keep)
    return None


@doc_params()
def drop_genes(
    adata,
    patterns: str | Iterable[str] = ("MT-", "RPS", "RPL", "MRPS", "MRPL"),
    *,
    regex: bool = False,
    case_sensitive: bool = False,
    copy: bool = False,
):
    """Remove the features whose names start with (or match) any of ``patterns``.

    The default prefixes drop mitochondrial, ribosomal and mitochondrial-ribosomal genes as the LAVA paper did for
    the kidney data. Plain prefixes also catch a few non-ribosomal genes (``RPS6KA1``); :func:`filter_mito_ribo`
    matches the gene families exactly.

    Parameters
    ----------
    {adata}
    patterns
        Name prefixes (or regular expressions when ``regex=True``, matched at the start of the name).
    regex
        Treat ``patterns`` as regular expressions.
    case_sensitive
        Match case exactly; by default ``"MT-"`` also matches mouse ``mt-``.
    {copy}

    Returns
    -------
    With ``copy=True`` a new AnnData without the matched features, else None (``adata`` is subset in place).
    """
    if isinstance(patterns, str):
        patterns = (patterns,)
    patterns = list(patterns)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        msg = f"patterns must be a non-empty string or a list of non-empty strings, got {patterns!r}."
        raise ValueError(msg)
    expr = "|".join(f"(?:{p if regex else re.escape(p)})" for p in patterns)
    try:
        compiled = re.compile(expr, flags=0 if case_sensitive else re.IGNORECASE)
    except re.error as err:
        msg = f"patterns are not valid regular expressions ({err}); pass regex=False for plain prefixes."
        raise ValueError(msg) from err
    drop = np.array([compiled.match(str(name)) is not None for name in adata.var_names], dtype=bool)
    if drop.all():
        msg = f"patterns {patterns!r} match every feature; nothing would be left."
        raise ValueError(msg)
    logg.info(f"dropping {int(drop.sum())} of {adata.n_vars} features matching {patterns}")
    return _subset_vars(adata, ~drop, copy)


@doc_params()
def filter_mito_ribo(adata, *, mito: bool = True, ribo: bool = True, mito_ribo: bool = True, copy: bool = False):
    """Remove mitochondrial, ribosomal and mitochondrial-ribosomal genes (as the LAVA paper did for KPMP).

    Matching is by gene symbol (see :func:`mito_ribo_mask`): ``MT-*``; ``RPL*``/``RPS*`` ribosomal proteins with
    their paralogs (not the ``RPS6K*`` kinases); ``MRPL*``/``MRPS*``. Case-insensitive, so mouse symbols work.

    Parameters
    ----------
    {adata}
    mito
        Drop mitochondrially encoded genes.
    ribo
        Drop ribosomal protein genes.
    mito_ribo
        Drop mitochondrial ribosomal protein genes.
    {copy}

    Returns
    -------
    With ``copy=True`` a new AnnData without those genes, else None (``adata`` is subset in place).
    """
    drop = mito_ribo_mask(adata.var_names, mito=mito, ribo=ribo, mito_ribo=mito_ribo)
    if drop.all():
        msg = "every feature is a mitochondrial or ribosomal gene; nothing would be left."
        raise ValueError(msg)
    logg.info(f"dropping {int(drop.sum())} mitochondrial/ribosomal genes of {adata.n_vars}")
    return _subset_vars(adata, ~drop, copy)


def _rank_genes(df: pd.DataFrame) -> np.ndarray:
    """Rank genes (0 = most variable) by the statistic scanpy's ``n_top_genes`` selection sorts by."""
    if "highly_variable_rank" in df.columns:  # seurat_v3 flavours: lower is better, NaN = not ranked
        keys = [np.nan_to_num(df["highly_variable_rank"].to_numpy(dtype=np.float64), nan=np.inf)]
    else:
        keys = [-np.nan_to_num(df["dispersions_norm"].to_numpy(dtype=np.float64), nan=-np.inf)]
        if "highly_variable_nbatches" in df.columns:  # with batches, scanpy sorts by batch count first
            keys.append(-df["highly_variable_nbatches"].to_numpy(dtype=np.float64))
    order = np.lexsort(keys)  # the last key is the primary one
    rank = np.empty(len(df), dtype=np.int64)
    rank[order] = np.arange(len(df))
    return rank


@doc_params()
def select_features(
    adata,
    n_top: int = 1000,
    *,
    flavor: Literal["seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper"] = "seurat",
    exclude_mito_ribo: bool = True,
    layer: str | None = None,
    batch_key: str | None = None,
    key_added: str = "highly_variable",
    subset: bool = False,
    copy: bool = False,
):
    """Mark the ``n_top`` most variable genes, leaving out mitochondrial and ribosomal genes (the paper's choice).

    Wraps :func:`scanpy.pp.highly_variable_genes` (``n_top_genes=n_top``) run on the genes that remain after the
    exclusion, so excluded genes never take a place among the ``n_top``. Exactly ``n_top`` genes are selected, by
    scanpy's ranking statistic (normalised dispersion; ``highly_variable_rank`` for the seurat_v3 flavours; with
    ``batch_key``, the number of batches first), where scanpy itself may add genes tied at the cut-off. Pass the result to lava as
    ``lava.tl.correlations(adata, features=key_added)``.

    Parameters
    ----------
    {adata}
    n_top
        Number of genes to select (all remaining genes when fewer remain).
    flavor
        scanpy's flavor. ``"seurat"`` and ``"cell_ranger"`` expect log-normalised data (the paper used the 1000 most
        variable genes of normalised, log-transformed data); ``"seurat_v3"`` expects counts (``layer=...``) and
        needs scikit-misc.
    exclude_mito_ribo
        Leave out the genes matched by :func:`mito_ribo_mask`.
    layer
        Use ``adata.layers[layer]`` instead of ``X``.
    batch_key
        ``obs`` column of batches, passed to scanpy.
    key_added
        Name of the boolean ``var`` column written.
    subset
        Keep only the selected genes.
    {copy}

    Returns
    -------
    With ``copy=True`` a new AnnData, else None. Writes ``var[key_added]`` (bool: True for the selected genes, False
    for excluded ones) and ``var[f"{key_added}_rank"]`` (int64: 0 = most variable by scanpy's ranking statistic,
    -1 for genes not selected). With ``subset=True`` only the selected genes are kept.
    """
    import anndata as ad
    import scanpy as sc

    if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1:
        msg = f"n_top must be a positive integer, got {n_top!r}."
        raise ValueError(msg)
    if layer is not None and layer not in adata.layers:
        available = ", ".join(map(repr, adata.layers.keys())) or "none"
        msg = f"no layer {layer!r} in adata.layers; available: {available}. Pass layer=None to use X."
        raise KeyError(msg)
    if batch_key is not None and batch_key not in adata.obs.columns:
        msg = f"no column {batch_key!r} in adata.obs; pass batch_key=None or an existing column."
        raise KeyError(msg)
    if not isinstance(key_added, str) or not key_added:
        msg = f"key_added must be a non-empty string, got {key_added!r}."
        raise TypeError(msg)
    keep = ~mito_ribo_mask(adata.var_names) if exclude_mito_ribo else np.ones(adata.n_vars, dtype=bool)
    if keep.sum() < 2:
        msg = "fewer than 2 genes remain after excluding mitochondrial/ribosomal genes; pass exclude_mito_ribo=False."
        raise ValueError(msg)
    n_select = int(min(n_top, keep.sum()))
    if n_select < n_top:
        logg.warning(f"only {n_select} genes remain to select from; selecting all of them")

    start = logg.info(f"selecting the {n_select} most variable genes (flavor {flavor!r})")
    X = adata.X if layer is None else adata.layers[layer]
    cols = np.flatnonzero(keep)
    obs = adata.obs[[batch_key]].copy() if batch_key is not None else pd.DataFrame(index=adata.obs_names)
    tmp = ad.AnnData(X=X[:, cols], obs=obs, var=pd.DataFrame(index=adata.var_names[cols]))
    if n_select == cols.size:
        selected = np.ones(cols.size, dtype=bool)
        rank = np.arange(cols.size)
    else:
        df = sc.pp.highly_variable_genes(tmp, n_top_genes=n_select, flavor=flavor, batch_key=batch_key, inplace=False)
        rank = _rank_genes(df)
        # exactly n_select genes (scanpy may add genes tied at the cut-off)
        selected = rank < n_select
        rank = np.where(selected, rank, -1)
    hv = np.zeros(adata.n_vars, dtype=bool)
    hv[cols] = selected
    full_rank = np.full(adata.n_vars, -1, dtype=np.int64)
    full_rank[cols] = np.where(selected, rank, -1)

    target = adata.copy() if copy else adata
    target.var[key_added] = hv
    target.var[f"{key_added}_rank"] = full_rank
    if subset:
        target._inplace_subset_var(hv)
    logg.finished(start, f"added {key_added!r} to var")
    return target if copy else None
