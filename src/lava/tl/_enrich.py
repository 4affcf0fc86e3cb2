"""Over-representation analysis of module genes in gene sets (METHOD.md section 5): :func:`lava.tl.enrich`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._docs import doc_params
from .._store import read_amf, read_correlations, read_table, store_step
from .._validate import check_modules, check_not_view, check_positive
from ..core.correlations import correlation_support
from ..core.stats import benjamini_hochberg, ora
from ._modules import read_gmt

#: ``lava.tl.enrich(by="group")`` tests the gene groups of at least this many genes (the default ``min_size`` of a set)
MIN_GROUP_GENES = 5

ENRICHMENT_COLUMNS = (
    "module",
    "group",
    "term",
    "overlap",
    "n_overlap",
    "set_size",
    "p_value",
    "p_adjusted",
    "odds_ratio",
    "significant",
    "genes",
)


def _fingerprint(sets: Mapping[str, list[str]]) -> str:
    """sha256 of the gene sets as tested (names sorted, genes in order).

    Tells whether a rerun used the same sets, which a dict (stored as ``"dict"``) or an Enrichr library (updated
    over time) cannot tell by name.
    """
    text = json.dumps(sorted((name, list(genes)) for name, genes in sets.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_gene_sets(gene_sets, *, organism: str = "Human") -> tuple[dict[str, list[str]], str]:
    """Return ``(dict of set name -> genes, description)`` from a dict, a ``.gmt`` path or a gseapy library name."""
    if isinstance(gene_sets, Mapping):
        out = {}
        for name, genes in gene_sets.items():
            if isinstance(genes, str) or not isinstance(genes, Iterable):
                msg = f"gene_sets[{name!r}] must be a list of gene names, got {type(genes).__name__}."
                raise TypeError(msg)
            out[str(name)] = [str(g) for g in genes]
        if not out:
            msg = "gene_sets is an empty dict; pass at least one gene set."
            raise ValueError(msg)
        return out, "dict"
    if isinstance(gene_sets, str | os.PathLike):
        path = Path(gene_sets).expanduser()
        if path.is_file():
            return read_gmt(path), f"file {path.name}"
        if str(gene_sets).lower().endswith(".gmt") or isinstance(gene_sets, os.PathLike) or os.sep in str(gene_sets):
            msg = f"gene set file {str(gene_sets)!r} does not exist; pass the path to a .gmt file or a dict."
            raise FileNotFoundError(msg)
        import gseapy

        try:
            sets = gseapy.get_library(str(gene_sets), organism=organism)
        except Exception as err:
            msg = (
                f"could not load the gene set library {gene_sets!r} through gseapy (Enrichr download: it needs "
                f"internet access and an exact library name, see gseapy.get_library_name()): {err}. Offline, pass a "
                "dict {set name: genes} or the path to a .gmt file (e.g. lava.datasets.go_bp_human())."
            )
            raise ValueError(msg) from err
        if not sets:
            msg = f"gseapy returned no gene sets for {gene_sets!r}; check the library name (gseapy.get_library_name())."
            raise ValueError(msg)
        return {str(k): [str(g) for g in v] for k, v in sets.items()}, f"library {gene_sets}"
    msg = (
        "gene_sets must be a dict {set name: genes}, the path to a .gmt file or a gseapy/Enrichr library name, "
        f"got {type(gene_sets).__name__}."
    )
    raise TypeError(msg)


def entered_features(adata, key: str = "lava") -> list[str]:
    """Return the correlated features that entered at least one locality (have a non-zero pair in ``C``).

    Read from ``uns[key]["correlations"]["feature_n_localities"]``, or computed from the stored values for results
    written before lava stored the counts.
    """
    corr = read_correlations(adata, key, require=("features",))
    if corr.feature_n_localities is not None:
        counts = corr.feature_n_localities
    elif corr.values is not None:
        counts = correlation_support(corr.values, corr.features.size).feature_localities
    else:
        msg = f"adata.uns[{key!r}]['correlations'] has neither counts nor values; rerun lava.tl.correlations."
        raise KeyError(msg)
    return corr.features[counts > 0].tolist()


def _resolve_background(adata, background, key: str) -> tuple[list[str], str]:
    if isinstance(background, str):
        if background == "entered":
            genes = entered_features(adata, key)
            if not genes:
                msg = (
                    "no feature entered any locality (every stored correlation is 0), so the 'entered' background "
                    "is empty; rerun lava.tl.correlations with other features or a higher tie_fraction."
                )
                raise ValueError(msg)
            return genes, "entered"
        if background == "tested":
            return read_correlations(adata, key, require=("features",)).features.tolist(), "tested"
        if background == "all":
            return [str(g) for g in adata.var_names], "all"
        msg = (
            f"background must be 'entered', 'tested', 'all' or a list of gene names, got the string {background!r} "
            "(lava never downloads a background; pass the genes themselves)."
        )
        raise ValueError(msg)
    if isinstance(background, Iterable):
        genes = [str(g) for g in background]
        if not genes:
            msg = (
                "background is empty; pass 'entered', 'tested', 'all' or the genes that could have become module genes."
            )
            raise ValueError(msg)
        return genes, "list"
    msg = f"background must be 'entered', 'tested', 'all' or a list of gene names, got {type(background).__name__}."
    raise TypeError(msg)


@doc_params()
def enrich(
    adata: AnnData,
    gene_sets,
    *,
    modules: int | Sequence[int] | None = None,
    by: Literal["module", "group"] = "module",
    background: Literal["entered", "tested", "all"] | Sequence[str] = "entered",
    threshold: float = 0.05,
    min_size: int = 5,
    max_size: int | None = None,
    organism: str = "Human",
    key: str = "lava",
    copy: bool = False,
) -> AnnData | None:
    """Over-representation analysis (ORA) of each module's genes in a collection of gene sets.

    For every module, a hypergeometric test of its genes (from :func:`lava.tl.module_genes`) against each gene set,
    with Benjamini-Hochberg adjustment over the tested sets, within the module. This is the test of gseapy's offline
    ``enrich`` (same p-values and odds ratios), computed here with scipy so that nothing is downloaded; gseapy is only
    used to fetch a named Enrichr library. Gene sets are restricted to the background before testing, and genes are
    matched case-insensitively (both sides upper-cased); ``genes`` reports the names as spelled in ``adata``.

    Parameters
    ----------
    {adata}
    gene_sets
        A dict ``{set name: genes}``, the path to a ``.gmt`` file (read offline), or the name of a gseapy/Enrichr
        library (e.g. ``"GO_Biological_Process_2023"``; downloaded, so it needs internet access).
    modules
        Module numbers to test (default: all).
    by
        ``"module"`` (default): one test per module, of its whole gene list. ``"group"``: one test per gene group of
        a module (the ``group`` column of :func:`lava.get.module_genes`, ``rule="core"``) with at least
        :data:`MIN_GROUP_GENES` (5, the default ``min_size``) genes; the Benjamini-Hochberg adjustment is then over
        every group and set of the module together, so a module split into groups is not tested more leniently. A
        module can hold several programmes of the localities it is present in (the max-product model cannot separate
        programmes that are always present together), and its whole list then enriches for the strongest only: on
        pbmc68k_reduced (M = 8) the B-cell module's list enriches for MHC class II, its groups for MHC class II and,
        separately, for protein folding (its plasma-cell group); the NK module's list for nothing, its largest group
        for cytolysis. A module without a group of that size is tested as its whole list (``group`` -1, logged).
    background
        The gene universe of the test. ``"entered"`` (default): the correlated features that entered at least one
        locality, i.e. have a non-zero correlation somewhere in ``C``
        (``adata.uns[key]["correlations"]["feature_n_localities"] > 0``). Only those genes could have become module
        genes: a feature that the tie filter removed from every locality (on sparse data, a gene detected in fewer
        than ``1 - tie_fraction`` of the cells of every locality) scores 0 in every module. So they are the right
        null; counting genes that were never candidates inflates the enrichment of whatever sets the candidates
        happen to favour. ``"tested"``: every feature passed to :func:`lava.tl.correlations`
        (``adata.uns[key]["correlations"]["features"]``, e.g. the highly variable genes), including those that
        never entered a locality. ``"all"``: every gene in ``adata.var_names``, as the paper did. Or an explicit list
        of genes; module genes outside it are dropped (logged).
    threshold
        Adjusted p-value below which a term is flagged ``significant`` (and counted in the log).
    min_size, max_size
        Test only gene sets with ``min_size <= K <= max_size`` genes in the background (``max_size=None``: no bound).
    organism
        Organism of a named Enrichr library (``"Human"``, ``"Mouse"``, ...); unused for dicts and files.
    {key}
    {copy}

    Returns
    -------
    ``None`` (or a copy with ``copy=True``) and writes ``adata.uns[key]["enrichment"]``: a DataFrame with one row per
    (module, gene set) sharing at least one gene (``by="group"``: per (module, group, gene set)), sorted by module then
    p-value, columns ``module`` (int), ``group`` (int; -1: the module's whole list, as with ``by="module"``), ``term``
    (str), ``overlap`` (str ``"k/K"``: module genes in the set / set genes in the background), ``n_overlap`` (int),
    ``set_size`` (int, K), ``p_value`` (float, hypergeometric ``P(X >= k)``), ``p_adjusted`` (float, BH within the
    module over every tested set, including those without overlap, and with ``by="group"`` over all its groups),
    ``odds_ratio`` (float, Haldane-Anscombe corrected as in gseapy), ``significant`` (bool,
    ``p_adjusted < threshold``) and ``genes`` (str, the overlapping module genes joined by ``";"``, highest score
    first). Read it with :func:`lava.get.enrichment`.
    """
    check_not_view(adata, copy)
    table_genes = read_table(adata, key, "module_genes")
    n_mod = read_amf(adata, key, require=()).n_modules
    selected = check_modules(modules, n_mod)
    check_positive(threshold, "threshold")
    check_positive(min_size, "min_size", integer=True, allow_zero=True)
    if max_size is not None:
        check_positive(max_size, "max_size", integer=True)
        if max_size < min_size:
            msg = f"max_size ({max_size}) must be >= min_size ({min_size})."
            raise ValueError(msg)
    if by not in ("module", "group"):
        msg = f"by must be 'module' or 'group', got {by!r}."
        raise ValueError(msg)
    if by == "group" and ("group" not in table_genes.columns or not (table_genes["group"].to_numpy() >= 0).any()):
        msg = (
            "by='group' needs the gene groups of lava.tl.module_genes(adata, rule='core') (the default); the stored "
            "module genes have none (picked with rule='score', or by a lava before gene groups): rerun "
            "lava.tl.module_genes(adata)."
        )
        raise ValueError(msg)
    queries: dict[tuple[int, int], list[str]] = {}  # (module, group) -> genes by rank; group -1: the whole list
    whole = []  # by="group": modules without a group large enough, tested as one list
    for m in selected:
        rows = table_genes[table_genes["module"].to_numpy() == m].sort_values("rank")
        if rows.empty:
            msg = (
                f"module {m} has no module genes (its feature scores are all 0 or below the threshold); leave it out "
                "with modules=[...] or rerun lava.tl.module_genes with a lower threshold."
            )
            raise ValueError(msg)
        if by == "module":
            queries[m, -1] = rows["feature"].astype(str).tolist()
            continue
        sizes = rows.loc[rows["group"] >= 0, "group"].value_counts()
        tested = sorted(int(g) for g, n in sizes.items() if n >= MIN_GROUP_GENES)
        if not tested:
            whole.append(m)
            queries[m, -1] = rows["feature"].astype(str).tolist()
        for g in tested:
            queries[m, g] = rows.loc[rows["group"] == g, "feature"].astype(str).tolist()
    if whole:
        logg.info(
            f"module(s) {', '.join(map(str, whole))}: no gene group of >= {MIN_GROUP_GENES} genes; tested as whole "
            "lists (group -1)."
        )
    bg_genes, bg_kind = _resolve_background(adata, background, key)
    sets, source = load_gene_sets(gene_sets, organism=organism)

    # case-insensitive matching; report adata's spelling (then the background list's)
    spelling: dict[str, str] = {}
    for g in bg_genes:
        spelling.setdefault(g.upper(), g)
    for g in adata.var_names:
        if g.upper() in spelling:
            spelling[g.upper()] = str(g)
    bg_upper = list(spelling)
    bg_set = set(bg_upper)
    upper_queries = []
    for (m, g), genes in queries.items():
        what = f"module {m}" if g < 0 else f"module {m}, group {g}"
        q = [x.upper() for x in genes]
        outside = [x for x in q if x not in bg_set]
        if outside:
            logg.warning(f"{what}: {len(outside)} module genes are not in the background and are left out.")
        q = [x for x in q if x in bg_set]
        if not q:
            msg = f"no gene of {what} is in the background; pass background='entered', 'all' or a larger list."
            raise ValueError(msg)
        upper_queries.append(q)
    upper_sets = {name: [g.upper() for g in genes] for name, genes in sets.items()}
    n_touching = sum(1 for genes in upper_sets.values() if any(g in bg_set for g in genes))
    if n_touching == 0:
        some_set = next(iter(sets.values()))[:3]
        msg = (
            f"none of the {len(sets)} gene sets ({source}) shares a gene with the background of {len(bg_upper)} genes "
            f"(e.g. set genes {some_set} vs background {bg_genes[:3]}); check the organism and the identifier type "
            "(gene symbols vs Ensembl IDs)."
        )
        raise ValueError(msg)

    what = f"{len(selected)} modules" if by == "module" else f"{len(queries)} gene groups of {len(selected)} modules"
    start = logg.info(f"testing {what} against {len(sets)} gene sets ({source})")
    res = ora(upper_queries, upper_sets, bg_upper, min_size=min_size, max_size=max_size)
    if res.terms.size == 0:
        msg = (
            f"no gene set has between {min_size} and {max_size if max_size is not None else 'any number of'} genes in "
            f"the background of {len(bg_upper)} genes ({n_touching} sets share at least one); lower min_size."
        )
        raise ValueError(msg)

    keys = list(queries)
    p_adjusted = res.p_adjusted
    if by == "group":  # BH over every group and set of a module together
        p_adjusted = np.empty_like(res.p_value)
        for m in selected:
            mine = [qi for qi, (mm, _) in enumerate(keys) if mm == m]
            if mine:
                p_adjusted[mine] = benjamini_hochberg(res.p_value[mine])
    S = res.set_membership.tocsr()
    frames = []
    for qi, (m, g) in enumerate(keys):
        hit = np.flatnonzero(res.n_overlap[qi] > 0)
        if hit.size == 0:
            continue
        rank = {g: r for r, g in enumerate(upper_queries[qi])}
        in_query = np.asarray(res.query_membership[:, qi].toarray()).ravel() > 0
        genes_col = []
        for t in hit:
            cols = S.indices[S.indptr[t] : S.indptr[t + 1]]
            shared = [res.background[c] for c in cols if in_query[c]]
            shared.sort(key=rank.__getitem__)
            genes_col.append(";".join(spelling[g] for g in shared))
        k = res.n_overlap[qi, hit]
        K = res.set_size[hit]
        frames.append(
            pd.DataFrame(
                {
                    "module": np.full(hit.size, m, dtype=np.int64),
                    "group": np.full(hit.size, g, dtype=np.int64),
                    "term": res.terms[hit].astype(str).astype(object),
                    "overlap": np.asarray([f"{a}/{b}" for a, b in zip(k, K, strict=True)], dtype=object),
                    "n_overlap": k.astype(np.int64),
                    "set_size": K.astype(np.int64),
                    "p_value": res.p_value[qi, hit],
                    "p_adjusted": p_adjusted[qi, hit],
                    "odds_ratio": res.odds_ratio[qi, hit],
                    "significant": p_adjusted[qi, hit] < threshold,
                    "genes": np.asarray(genes_col, dtype=object),
                }
            )
        )
    if frames:
        table = pd.concat(frames, ignore_index=True)
        table = table.sort_values(["module", "p_value", "group", "term"], kind="stable").reset_index(drop=True)
    else:
        logg.warning(
            f"no module gene is in any of the {res.terms.size} tested gene sets: the enrichment table is empty."
        )
        table = pd.DataFrame({c: pd.Series(dtype=_ENRICHMENT_DTYPES[c]) for c in ENRICHMENT_COLUMNS})
    params = {
        "gene_sets": source if not isinstance(gene_sets, str | os.PathLike) else str(gene_sets),
        "gene_sets_sha256": _fingerprint(sets),
        "modules": selected,
        "by": by,
        "background": bg_kind if bg_kind != "list" else bg_genes,
        "n_background": res.n_background,
        "n_gene_sets_tested": int(res.terms.size),
        "threshold": float(threshold),
        "min_size": int(min_size),
        "max_size": max_size,
        "organism": organism,
    }
    if copy:
        adata = adata.copy()
    store_step(adata, key, "enrichment", table, params)
    sig = table[table["significant"]]
    n_sig = sig.groupby("module")["term"].nunique() if len(sig) else pd.Series(dtype=int)
    logg.finished(
        start,
        f"{res.terms.size} sets tested against {res.n_background} background genes ({bg_kind}); terms with "
        f"p_adjusted < {threshold}: " + ", ".join(f"module {m}: {int(n_sig.get(m, 0))}" for m in selected),
    )
    return adata if copy else None


_ENRICHMENT_DTYPES = {
    "module": np.int64,
    "group": np.int64,
    "term": object,
    "overlap": object,
    "n_overlap": np.int64,
    "set_size": np.int64,
    "p_value": np.float64,
    "p_adjusted": np.float64,
    "odds_ratio": np.float64,
    "significant": bool,
    "genes": object,
}
