"""From modules to biology (METHOD.md section 5): module genes, over-representation analysis, metadata association."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .. import _logging as logg
from .._compat import as_generator, as_seed
from .._docs import doc_params
from .._store import has_step, read_amf, read_correlations, read_localities, read_table, store_step
from .._validate import check_modules, check_not_view, check_positive
from ..core.correlations import correlation_support
from ..core.stats import (
    association_test,
    benjamini_hochberg,
    empirical_pvalue,
    locality_means,
    membership_matrix,
    ora,
)

MODULE_GENES_COLUMNS = ("module", "feature", "score", "rank")
ENRICHMENT_COLUMNS = (
    "module",
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


# --------------------------------------------------------------------------------------------------------------------
# module genes


@doc_params()
def module_genes(
    adata,
    *,
    rule: Literal["core", "score"] = "core",
    threshold: float | None = None,
    key: str = "lava",
    copy: bool = False,
):
    """Pick each module's genes: the features of its strongest pairs (default) or with a high feature score.

    A feature's score in a module (``adata.varm[f"{key}_modules"]``, written by :func:`lava.tl.amf`) is the sum of
    the module's correlations over the feature pairs the feature is in; genes are ranked by it.

    ``rule="core"`` (default): a module's genes are the features in its core pairs, those whose module value is at
    least ``threshold`` (default 0.5) times the module's largest value (:func:`lava.core.core_features`).
    ``rule="score"`` (the paper's): the features with ``score >= threshold * max_score`` and ``score > 0``
    (default 5%).

    Why the core rule is the default: a module also carries the noise-level correlations every pair has in a
    locality (the mean ``|Spearman|`` of independent features over n samples is about ``sqrt(2 / (pi n))``), and a
    feature's score sums them over all its pairs. With hundreds of genes past the tie filter, the paper's 5% keeps
    most of them (110-250 of 300 genes per module on the kidney immune data, gene lists that share most genes and
    enrich for nothing), while the core pairs give tens of genes per module whose lists overlap less
    (``docs/biology.md``). The score rule warns when most scored features pass.

    Parameters
    ----------
    {adata}
    rule
        ``"core"`` (features in pairs at >= ``threshold`` x the module's top value) or ``"score"`` (features with a
        score >= ``threshold`` x the module's top score).
    threshold
        A fraction in [0, 1]; default 0.5 for ``"core"``, 0.05 for ``"score"``. 0 keeps every feature with a
        positive score.
    {key}
    {copy}

    Returns
    -------
    ``None`` (or a copy with ``copy=True``) and writes ``adata.uns[key]["module_genes"]``: a DataFrame with one row
    per (module, gene), columns ``module`` (int), ``feature`` (str), ``score`` (float), ``rank`` (int, 1 = highest
    score within the module), sorted by module and rank. Read it with :func:`lava.get.module_genes`.
    """
    from ..core.metrics import core_features

    check_not_view(adata, copy)
    if rule not in ("core", "score"):
        msg = f"rule must be 'core' or 'score', got {rule!r}."
        raise ValueError(msg)
    if threshold is None:
        threshold = 0.5 if rule == "core" else 0.05
    check_positive(threshold, "threshold", allow_zero=True)
    if threshold > 1:
        msg = f"threshold is a fraction of the module's top value and must be in [0, 1], got {threshold!r}."
        raise ValueError(msg)
    fit = read_amf(adata, key, require=("feature_scores",) + (("modules",) if rule == "core" else ()))
    scores = np.asarray(fit.feature_scores, dtype=np.float64)
    corr = read_correlations(adata, key, require=()) if has_step(adata, key, "correlations") else None
    start = logg.info(f"selecting module genes ({rule} rule, threshold {threshold:g})")
    frames = []
    names = np.asarray(adata.var_names, dtype=object)
    empty, broad = [], []
    n_tested = corr.features.size if corr is not None and corr.features is not None else adata.n_vars
    in_core = None
    if rule == "core":
        modules = np.asarray(fit.modules, dtype=np.float32)
        in_core = np.zeros(scores.shape, dtype=bool)
        if corr is None:
            corr = read_correlations(adata, key, require=("features", "feature_index"))
        rows = corr.var_rows(adata)
        core = core_features(modules, len(rows), threshold=threshold)
        in_core[rows[rows >= 0]] = core[rows >= 0]
    for m in range(scores.shape[1]):
        s = scores[:, m]
        top = s.max() if s.size else 0.0
        if not top > 0:
            empty.append(m)
            continue
        if rule == "core":
            keep = np.flatnonzero(in_core[:, m] & (s > 0))
        else:
            keep = np.flatnonzero((s >= threshold * top) & (s > 0))
            n_scored = int(np.count_nonzero(s > 0))
            # the noise floor shows as (nearly) every tested feature scoring and passing; on sparse data the tie
            # filter leaves few scored features, and those passing is no sign of it
            if n_scored >= 10 and n_scored > 0.5 * n_tested and keep.size > 0.5 * n_scored:
                broad.append(f"{m} ({keep.size} of {n_scored})")
        keep = keep[np.argsort(-s[keep], kind="stable")]
        frames.append(
            pd.DataFrame(
                {
                    "module": np.full(keep.size, m, dtype=np.int64),
                    "feature": names[keep].astype(str).astype(object),
                    "score": s[keep].astype(np.float64),
                    "rank": np.arange(1, keep.size + 1, dtype=np.int64),
                }
            )
        )
    if empty:
        logg.warning(f"module(s) {', '.join(map(str, empty))} have no positive feature score and get no genes.")
    if broad:
        logg.warning(
            f"module(s) {', '.join(broad)} keep most of their scored features at threshold={threshold}: every pair "
            "has a noise-level |Spearman| (about sqrt(2 / (pi n)) in a locality of n samples), so scores have a floor. "
            "Look at the scores (lava.pl.module_genes), raise threshold (e.g. 0.3-0.5) or use rule='core' for "
            "specific gene lists."
        )
    table = pd.concat(frames, ignore_index=True) if frames else _empty_module_genes()
    if copy:
        adata = adata.copy()
    store_step(adata, key, "module_genes", table, {"rule": rule, "threshold": float(threshold)})
    counts = table.groupby("module").size()
    logg.finished(start, "genes per module: " + ", ".join(f"{m}: {c}" for m, c in counts.items()))
    return adata if copy else None


def _empty_module_genes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "module": np.array([], dtype=np.int64),
            "feature": np.array([], dtype=object),
            "score": np.array([], dtype=np.float64),
            "rank": np.array([], dtype=np.int64),
        }
    )


# --------------------------------------------------------------------------------------------------------------------
# over-representation analysis


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a GMT file (one set per line: name, description, genes, tab-separated) without any network access."""
    sets: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = [p.strip() for p in line.rstrip("\r\n").split("\t")]
            if len(parts) < 3 or not parts[0]:
                continue
            genes = [g for g in parts[2:] if g]
            sets[parts[0]] = list(dict.fromkeys(sets.get(parts[0], []) + genes))
    if not sets:
        msg = f"{path} holds no gene sets; a GMT line is: name <TAB> description <TAB> gene <TAB> gene ..."
        raise ValueError(msg)
    return sets


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
    adata,
    gene_sets,
    *,
    modules: int | Sequence[int] | None = None,
    background: Literal["entered", "tested", "all"] | Sequence[str] = "entered",
    threshold: float = 0.05,
    min_size: int = 5,
    max_size: int | None = None,
    organism: str = "Human",
    key: str = "lava",
    copy: bool = False,
):
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
    (module, gene set) sharing at least one gene, sorted by module then p-value, columns ``module`` (int), ``term``
    (str), ``overlap`` (str ``"k/K"``: module genes in the set / set genes in the background), ``n_overlap`` (int),
    ``set_size`` (int, K), ``p_value`` (float, hypergeometric ``P(X >= k)``), ``p_adjusted`` (float, BH within the
    module over every tested set, including those without overlap), ``odds_ratio`` (float, Haldane-Anscombe
    corrected as in gseapy), ``significant`` (bool, ``p_adjusted < threshold``) and ``genes`` (str, the overlapping
    module genes joined by ``";"``, highest score first). Read it with :func:`lava.get.enrichment`.
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
    queries = {}
    for m in selected:
        rows = table_genes[table_genes["module"].to_numpy() == m].sort_values("rank")
        if rows.empty:
            msg = (
                f"module {m} has no module genes (its feature scores are all 0 or below the threshold); leave it out "
                "with modules=[...] or rerun lava.tl.module_genes with a lower threshold."
            )
            raise ValueError(msg)
        queries[m] = rows["feature"].astype(str).tolist()
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
    for m in selected:
        q = [g.upper() for g in queries[m]]
        outside = [g for g in q if g not in bg_set]
        if outside:
            logg.warning(f"module {m}: {len(outside)} module genes are not in the background and are left out.")
        q = [g for g in q if g in bg_set]
        if not q:
            msg = f"no gene of module {m} is in the background; pass background='entered', 'all' or a larger list."
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

    start = logg.info(f"testing {len(selected)} modules against {len(sets)} gene sets ({source})")
    res = ora(upper_queries, upper_sets, bg_upper, min_size=min_size, max_size=max_size)
    if res.terms.size == 0:
        msg = (
            f"no gene set has between {min_size} and {max_size if max_size is not None else 'any number of'} genes in "
            f"the background of {len(bg_upper)} genes ({n_touching} sets share at least one); lower min_size."
        )
        raise ValueError(msg)

    S = res.set_membership.tocsr()
    frames = []
    for qi, m in enumerate(selected):
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
                    "term": res.terms[hit].astype(str).astype(object),
                    "overlap": np.asarray([f"{a}/{b}" for a, b in zip(k, K, strict=True)], dtype=object),
                    "n_overlap": k.astype(np.int64),
                    "set_size": K.astype(np.int64),
                    "p_value": res.p_value[qi, hit],
                    "p_adjusted": res.p_adjusted[qi, hit],
                    "odds_ratio": res.odds_ratio[qi, hit],
                    "significant": res.p_adjusted[qi, hit] < threshold,
                    "genes": np.asarray(genes_col, dtype=object),
                }
            )
        )
    if frames:
        table = pd.concat(frames, ignore_index=True)
        table = table.sort_values(["module", "p_value", "term"], kind="stable").reset_index(drop=True)
    else:
        logg.warning(
            f"no module gene is in any of the {res.terms.size} tested gene sets: the enrichment table is empty."
        )
        table = pd.DataFrame({c: pd.Series(dtype=_ENRICHMENT_DTYPES[c]) for c in ENRICHMENT_COLUMNS})
    params = {
        "gene_sets": source if not isinstance(gene_sets, str | os.PathLike) else str(gene_sets),
        "gene_sets_sha256": _fingerprint(sets),
        "modules": selected,
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
    n_sig = table.groupby("module")["significant"].sum() if len(table) else pd.Series(dtype=int)
    logg.finished(
        start,
        f"{res.terms.size} sets tested against {res.n_background} background genes ({bg_kind}); terms with "
        f"p_adjusted < {threshold}: " + ", ".join(f"module {m}: {int(n_sig.get(m, 0))}" for m in selected),
    )
    return adata if copy else None


_ENRICHMENT_DTYPES = {
    "module": np.int64,
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


# --------------------------------------------------------------------------------------------------------------------
# metadata association


def _obs_column(adata, name: str, what: str) -> pd.Series:
    if not isinstance(name, str):
        msg = f"{what} must be the name of an adata.obs column, got {type(name).__name__}."
        raise TypeError(msg)
    if name not in adata.obs.columns:
        cols = list(map(str, adata.obs.columns))
        shown = ", ".join(map(repr, cols[:10])) + (", ..." if len(cols) > 10 else "")
        msg = f"no column {name!r} in adata.obs; available: {shown or 'none'}. Pass {what}=... naming one."
        raise KeyError(msg)
    return adata.obs[name]


def _label_matrix(column: pd.Series, groupby: str) -> tuple[np.ndarray, list[str], bool]:
    """Per-sample values (E, K): category indicators, or the numeric column; the category names; whether numeric."""
    is_numeric = (
        not isinstance(column.dtype, pd.CategoricalDtype)
        and pd.api.types.is_numeric_dtype(column.dtype)
        and not pd.api.types.is_bool_dtype(column.dtype)
    )
    if is_numeric:
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable dtypes: <NA> -> NaN
        if not np.all(np.isfinite(values)):
            n_bad = int(np.sum(~np.isfinite(values)))
            msg = f"adata.obs[{groupby!r}] has {n_bad} NaN or infinite values; fill or drop those samples first."
            raise ValueError(msg)
        return values[:, None], [groupby], True
    cat = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category")
    counts = cat.value_counts(sort=False)
    unused = [str(c) for c, n in counts.items() if n == 0]
    if unused:
        msg = (
            f"categories {unused} of adata.obs[{groupby!r}] have no samples; drop them with "
            f"adata.obs[{groupby!r}] = adata.obs[{groupby!r}].cat.remove_unused_categories()."
        )
        raise ValueError(msg)
    codes = cat.cat.codes.to_numpy()
    K = len(cat.cat.categories)
    if K == 0:
        msg = f"adata.obs[{groupby!r}] has no categories (all values missing)."
        raise ValueError(msg)
    onehot = np.zeros((codes.size, K))
    ok = codes >= 0  # missing labels count in no category
    onehot[np.flatnonzero(ok), codes[ok]] = 1.0
    return onehot, [str(c) for c in cat.cat.categories], False


#: A category in fewer localities than this, or than this share of all localities, gets a warning (few localities
#: carry its associations, possibly all from one donor).
FEW_LOCALITIES = 5
FEW_LOCALITIES_FRACTION = 0.1
#: obs column names that usually name the unit cells cluster by in an embedding: candidates for ``groups=``.
GROUP_COLUMN_NAMES = re.compile(r"donor|sample|patient|individual|subject|batch|project|experiment|orig\.?ident", re.I)


def _group_candidates(obs: pd.DataFrame, groupby: str) -> list[tuple[str, int, bool]]:
    """Return the obs columns that look like a donor or sample column for ``groups=``: ``(name, n_groups, nests)``.

    A candidate has 2 < n_groups < n_obs / 10 groups and either a name such as donor, sample, patient or batch
    (:data:`GROUP_COLUMN_NAMES`) or groups that nest ``groupby`` (each group holds one value of it, and there are
    more groups than values: the annotation is a property of the groups, e.g. a disease of donors). Nesting ones
    come first.
    """
    label = obs[groupby]
    n_values = label.nunique(dropna=True)
    found = []
    for name in obs.columns:
        if name == groupby:
            continue
        column = obs[name]
        named = bool(GROUP_COLUMN_NAMES.search(str(name)))
        dtype = column.dtype
        is_label = (
            isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype)
        )
        if not (is_label or (named and pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))):
            continue
        try:  # a hint only: a column pandas cannot group (e.g. of lists) is no candidate
            n_groups = column.nunique(dropna=True)
            if not 2 < n_groups < len(obs) / 10:
                continue
            nests = n_groups > n_values and bool(
                pd.DataFrame({"g": column.to_numpy(), "y": label.to_numpy()})
                .groupby("g", observed=True, dropna=True)["y"]
                .nunique(dropna=True)
                .max()
                <= 1
            )
        except TypeError:
            continue
        if named or nests:
            found.append((str(name), int(n_groups), nests))
    return sorted(found, key=lambda item: not item[2])


def _warn_design(obs: pd.DataFrame, groupby: str, fractions: np.ndarray, categories: list[str], numeric: bool) -> None:
    """Warn when localities are weak evidence for ``groupby`` without ``groups=``, naming the column to pass.

    Two signs: categories whose samples fall in few localities (:data:`FEW_LOCALITIES`,
    :data:`FEW_LOCALITIES_FRACTION`), and an obs column that looks like the donor or sample (:func:`_group_candidates`).
    """
    candidates = _group_candidates(obs, groupby)
    name = candidates[0][0] if candidates else None
    suggestion = f"groups={name!r}, permutations=1000" if name else "groups=<the donor column>, permutations=1000"
    if not numeric:
        n_loc = fractions.shape[0]
        present = np.count_nonzero(fractions > 0, axis=0)
        few = np.flatnonzero((present < FEW_LOCALITIES) | (present < FEW_LOCALITIES_FRACTION * n_loc))
        if few.size:
            listed = ", ".join(f"{categories[k]!r} ({present[k]})" for k in few[:5]) + (", ..." if few.size > 5 else "")
            logg.warning(
                f"{few.size} {'category' if few.size == 1 else 'categories'} of adata.obs[{groupby!r}] "
                f"{'has' if few.size == 1 else 'have'} samples in fewer than {FEW_LOCALITIES} "
                f"localities or {FEW_LOCALITIES_FRACTION:.0%} of the {n_loc}: {listed}. Their associations rest on "
                "those localities alone, which may hold the cells of a single donor or sample; test at that level "
                f"with {suggestion}."
            )
    if name is None:
        return
    _, n_groups, nests = candidates[0]
    why = f"{n_groups} groups, each holding one value of {groupby!r}" if nests else f"by its name, {n_groups} groups"
    others = ", ".join(repr(c[0]) for c in candidates[1:4])
    detail = ""
    if nests and not numeric:
        labels = pd.DataFrame({"g": obs[name].to_numpy(), "y": obs[groupby].to_numpy()}).dropna()
        per_category = labels.groupby(labels["y"].astype(str))["g"].nunique()
        single = [c for c in categories if per_category.get(c, 0) == 1]
        if single:
            detail = (
                f" Categories found in a single {name!r} group ({', '.join(map(repr, single[:5]))}) cannot be told "
                "apart from that group's own state."
            )
    logg.warning(
        f"adata.obs[{name!r}] looks like the donor or sample the cells come from ({why})"
        + (f"; other candidates: {others}" if others else "")
        + ". Cells of one donor sit together in the embedding, so neighbouring localities are not independent "
        f"evidence and the parametric p-values are optimistic.{detail} Pass {suggestion} for p-values at that level."
    )


@doc_params()
def associate(
    adata,
    groupby: str,
    *,
    min_presence: float = 0.01,
    method: Literal["pearson", "spearman"] = "pearson",
    permutations: int = 0,
    groups: str | None = None,
    rng: int | np.random.Generator | None = 0,
    key: str = "lava",
    copy: bool = False,
):
    """Test whether each module's presence follows a sample annotation (categories or a numeric value).

    For each module and each category of ``adata.obs[groupby]``: over the localities where the module's presence
    is above ``min_presence``, the Pearson and Spearman correlations between the presence and the fraction of the
    locality's samples in the category (samples with a missing label count in no category). A numeric ``groupby``
    uses the locality's mean value instead (one row per module, ``category`` = ``groupby``). p-values are two-sided;
    ``p_adjusted`` is the Benjamini-Hochberg adjustment of the ``method`` p-values over all modules x categories.
    A module present in fewer than 3 localities gets NaN statistics (``n_localities`` says how many it had).

    The parametric p-values assume independent localities. They are optimistic when localities overlap (o > 1
    shares samples) and, above all, when the samples of one donor (patient, batch, animal) cluster together in the
    embedding: then a handful of donors, not hundreds of localities, carry the evidence. With ``permutations=N``
    and ``groups="donor"`` the null keeps that structure: each donor's label summary (its fraction of samples per
    category, or its mean for a numeric annotation) is reassigned to another donor by a random permutation of the
    donors, each locality's fraction is recomputed as the sample-count-weighted average of its donors' reassigned
    summaries, and the empirical two-sided p-value is ``(1 + #{|r_perm| >= |r|}) / (N + 1)``. For a label that is
    constant within donors (disease, sex, site) this is exactly a permutation of the labels among donors. For a label
    that varies within donors, whole donor blocks are moved: the null spreads each donor's composition evenly over
    the cells of the donor it lands on, while the observed r uses the cells' own labels. The p-value then asks
    whether the association is stronger than moving whole donors around produces: one carried by cells within
    donors (a cell-type label) stays significant, one carried by a few donors does not. With only a few
    donors the permutations are few and the smallest reachable p-value is large, which is the honest answer.
    Without ``groups``, single samples are permuted (a plain permutation test, no better than the parametric p when
    donors cluster).

    Without ``groups``, two warnings name what to pass: when a category's samples fall in fewer than 5 localities
    (or 10% of them), so that its associations rest on those few; and when ``adata.obs`` has a column that looks like
    the donor or sample of the cells: 2 < n_groups < n_obs / 10 groups and a name such as donor, sample, patient,
    batch, project or experiment, or groups that each hold one value of ``groupby`` (a property of donors, such as
    a disease). ``n_localities`` in the table says how many localities entered each module's test.

    Parameters
    ----------
    {adata}
    groupby
        Column of ``adata.obs``: categorical (or string/bool) for fractions per category, numeric for means.
    min_presence
        A locality enters a module's test when the module's presence there is above this.
    method
        Which correlation's p-value is adjusted into ``p_adjusted`` (and used for permutations): ``"pearson"`` or
        ``"spearman"``. Both are always reported.
    permutations
        Number of permutations for empirical p-values (0: none).
    groups
        Column of ``adata.obs`` naming the donor (or other unit whose samples cluster) to permute at; needs
        ``permutations > 0``. None permutes single samples.
    {rng}
    {key}
    {copy}

    Returns
    -------
    ``None`` (or a copy with ``copy=True``) and writes ``adata.uns[key]["association"]``: a DataFrame with one row
    per (module, category), columns ``module`` (int), ``groupby`` (str), ``category`` (str), ``n_localities`` (int),
    ``pearson_r``, ``pearson_p``, ``spearman_r``, ``spearman_p``, ``p_adjusted`` (float), and with permutations
    ``permutation_p`` and ``permutation_p_adjusted`` (float, BH over all rows). Read it with
    :func:`lava.get.association`.
    """
    check_not_view(adata, copy)
    presence = np.asarray(read_amf(adata, key, require=("presence",)).presence, dtype=np.float64)
    loc = read_localities(adata, key)
    indices = loc.indices
    if presence.shape[0] != indices.shape[0]:
        msg = (
            f"stored presence {presence.shape} and locality indices {indices.shape} disagree; rerun lava.tl.amf "
            f"(key={key!r})."
        )
        raise ValueError(msg)
    loc.check_samples(adata.n_obs)
    column = _obs_column(adata, groupby, "groupby")
    if method not in ("pearson", "spearman"):
        msg = f"method must be 'pearson' or 'spearman', got {method!r}."
        raise ValueError(msg)
    check_positive(min_presence, "min_presence", allow_zero=True)
    check_positive(permutations, "permutations", integer=True, allow_zero=True)
    if groups is not None:
        if permutations == 0:
            msg = "groups is only used by permutation tests; pass permutations=1000 (say) as well, or groups=None."
            raise ValueError(msg)
        group_col = _obs_column(adata, groups, "groups")
        if group_col.isna().any():
            msg = f"adata.obs[{groups!r}] has {int(group_col.isna().sum())} missing values; every sample needs a group."
            raise ValueError(msg)
        codes, uniques = pd.factorize(group_col, sort=True)
        if uniques.size < 2:
            msg = f"adata.obs[{groups!r}] has a single group; permutations need at least 2."
            raise ValueError(msg)
    values, categories, numeric = _label_matrix(column, groupby)
    seed = as_seed(rng)

    start = logg.info(f"associating {presence.shape[1]} modules with {groupby!r}")
    n_loc = indices.shape[1]
    fractions = locality_means(indices, values)  # (l, K)
    if groups is None:
        _warn_design(adata.obs, groupby, fractions, categories, numeric)
    M, K = presence.shape[1], len(categories)
    stats_ = {name: np.full((M, K), np.nan) for name in ("pearson_r", "pearson_p", "spearman_r", "spearman_p")}
    n_used = np.zeros(M, dtype=np.int64)
    selections = []
    for m in range(M):
        sel = np.flatnonzero(presence[:, m] > min_presence)
        selections.append(sel)
        n_used[m] = sel.size
        if sel.size < 3:
            continue
        for meth in ("pearson", "spearman"):
            r, p = association_test(presence[sel, m], fractions[sel], method=meth)
            stats_[f"{meth}_r"][m], stats_[f"{meth}_p"][m] = r, p
    p_adj = benjamini_hochberg(stats_[f"{method}_p"])

    perm_p = None
    if permutations:
        gen = as_generator(seed)
        if groups is None:
            counts = membership_matrix(indices, adata.n_obs)  # (l, E): every sample its own group
            summary = values
        else:
            G = uniques.size
            onehot_g = sparse.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)), shape=(codes.size, G))
            counts = membership_matrix(indices, adata.n_obs) @ onehot_g  # (l, G) samples per donor per locality
            size_g = np.asarray(onehot_g.sum(axis=0)).ravel()
            summary = np.asarray(onehot_g.T @ values) / size_g[:, None]  # (G, K) donor composition / mean
            varies = np.any(np.abs(values - summary[codes]) > 1e-12)
            if varies:
                logg.info(f"    {groupby!r} varies within {groups!r}: permuting whole donor blocks (compositions)")
            if G <= 10 and np.prod(np.arange(1, G + 1, dtype=np.float64)) < permutations:
                logg.warning(f"only {G} groups: at most {int(np.prod(np.arange(1, G + 1)))} distinct permutations.")
        n_units = summary.shape[0]
        # bound the (units x K x b) permuted summaries and the (l x K x b) null fractions to ~2**25 values each
        batch = int(max(1, min(permutations, 2**25 // max(1, max(indices.shape[0], n_units) * K))))
        null = np.full((M, K, permutations), np.nan)
        done = 0
        while done < permutations:
            b = min(batch, permutations - done)
            perms = np.stack([gen.permutation(n_units) for _ in range(b)])  # (b, units)
            stacked = np.transpose(summary[perms], (1, 2, 0)).reshape(n_units, K * b)
            null_frac = np.asarray(counts @ stacked).reshape(-1, K, b) / n_loc  # (l, K, b)
            for m in range(M):
                sel = selections[m]
                if sel.size >= 3:
                    null[m, :, done : done + b] = association_test(presence[sel, m], null_frac[sel], method=method)[0]
            done += b
        perm_p = empirical_pvalue(stats_[f"{method}_r"], null)

    table = pd.DataFrame(
        {
            "module": np.repeat(np.arange(M, dtype=np.int64), K),
            "groupby": np.full(M * K, groupby, dtype=object),
            "category": np.asarray(categories * M, dtype=object),
            "n_localities": np.repeat(n_used, K),
            **{name: arr.ravel() for name, arr in stats_.items()},
            "p_adjusted": p_adj.ravel(),
        }
    )
    if perm_p is not None:
        table["permutation_p"] = perm_p.ravel()
        table["permutation_p_adjusted"] = benjamini_hochberg(perm_p).ravel()
    params = {
        "groupby": groupby,
        "numeric": bool(numeric),
        "min_presence": float(min_presence),
        "method": method,
        "permutations": int(permutations),
        "groups": groups,
        "rng": seed,
    }
    if copy:
        adata = adata.copy()
    store_step(adata, key, "association", table, params)
    best = table.loc[table["p_adjusted"].idxmin()] if table["p_adjusted"].notna().any() else None
    logg.finished(
        start,
        f"strongest: module {best['module']} ~ {best['category']} ({method} r = {best[f'{method}_r']:.2f}, "
        f"p_adjusted = {best['p_adjusted']:.2g})"
        if best is not None
        else "no module is present in 3 or more localities",
    )
    return adata if copy else None
