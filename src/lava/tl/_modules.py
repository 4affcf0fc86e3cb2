"""From modules to genes (METHOD.md section 5): each module's genes; gene set files for :func:`lava.tl.enrich`.

Over-representation analysis is in ``_enrich.py``, the association with sample annotations in ``_associate.py``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._docs import doc_params
from .._store import has_step, read_amf, read_correlations, store_step
from .._validate import check_not_view, check_positive
from ..datasets._loaders import read_gmt  # noqa: F401  the one GMT reader (tl.enrich, the CLI and tests import it here)

#: Two modules' gene lists "overlap" (a warning, ``params["overlaps"]``) at this Jaccard index or above.
GENE_OVERLAP = 0.5
#: the overlap warning names at most this many module pairs (the largest Jaccard first)
_OVERLAPS_LISTED = 5


# --------------------------------------------------------------------------------------------------------------------
# module genes


@doc_params()
def module_genes(
    adata: AnnData,
    *,
    rule: Literal["core", "score"] = "core",
    threshold: float | None = None,
    reference_rank: int | None = None,
    key: str = "lava",
    copy: bool = False,
) -> AnnData | None:
    """Pick each module's genes: the features of its strongest pairs (default) or with a high feature score.

    A feature's score in a module (``adata.varm[f"{key}_modules"]``, written by :func:`lava.tl.amf`) is the sum of
    the module's correlations over the feature pairs the feature is in; genes are ranked by it.

    ``rule="core"`` (default): a module's genes are the features in its core pairs, those whose module value is at
    least ``threshold`` (default 0.5) times the module's reference value, its 10th largest pair value
    (``reference_rank``; :func:`lava.core.core_features`). The 10th rather than the largest, because a module's top
    pair is often a pair of paralogues (HLA-DRB1 and HLA-DRB5) that stands above the rest of its programme: measured
    against the top pair, the monocyte and dendritic-cell modules of pbmc68k_reduced kept little but their MHC class II
    genes, and the lists of modules whose pairs and localities differ overlapped (Jaccard 0.52-0.73).
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
        ``"core"`` (features in pairs at >= ``threshold`` x the module's reference value) or ``"score"`` (features
        with a score >= ``threshold`` x the module's top score).
    threshold
        A fraction in [0, 1]; default 0.5 for ``"core"``, 0.05 for ``"score"``. 0 keeps every feature with a
        positive score.
    reference_rank
        ``rule="core"`` only: the module's reference value is its ``reference_rank``-th largest pair value (default
        10, :data:`lava.core.metrics.CORE_REFERENCE_RANK`); 1 measures against the largest value, lava's rule
        before 2026-12-08.
    {key}
    {copy}

    Returns
    -------
    ``None`` (or a copy with ``copy=True``) and writes ``adata.uns[key]["module_genes"]``: a DataFrame with one row
    per (module, gene), columns ``module`` (int), ``feature`` (str), ``score`` (float), ``rank`` (int, 1 = highest
    score within the module), ``group`` (int, the gene's group within the module, 0 the largest; -1 with
    ``rule="score"``), ``n_shared`` (int, the number of other modules whose list holds the gene; 0: the module's
    own), sorted by module and rank. Read it with :func:`lava.get.module_genes`.

    Gene groups (``rule="core"``, :func:`lava.core.gene_groups`): a module's genes clustered by the module's own pair
    values (average linkage, merging while the mean value between two clusters reaches the core cut). The max-product
    model cannot tell programmes present in the same localities from one module holding both, so one module can hold
    several: on pbmc68k_reduced (M = 8) the B-cell module's genes fall into its MHC class II and B-cell receptor
    genes, a plasma-cell secretory programme (MZB1, TNFRSF17, CALR, SDF2L1, SSR3/4) and a few T-cell genes. The list
    as a whole enriches for MHC class II only; ``lava.tl.enrich(..., by="group")`` tests each group.

    Two modules can carry the same genes with different pairs or in different localities (on pbmc68k_reduced the
    monocyte and dendritic-cell modules both hold the MHC class II genes). When two lists have a Jaccard index >=
    0.5 (:data:`GENE_OVERLAP`) a warning names the pair and its common genes, and ``params["overlaps"]`` (a list of
    ``[a, b]`` module pairs) with ``params["overlap_jaccard"]`` record them; such lists enrich for the same terms.
    """
    from ..core.metrics import CORE_REFERENCE_RANK, gene_groups

    check_not_view(adata, copy)
    if rule not in ("core", "score"):
        msg = f"rule must be 'core' or 'score', got {rule!r}."
        raise ValueError(msg)
    if threshold is None:
        threshold = 0.5 if rule == "core" else 0.05
    check_positive(threshold, "threshold", allow_zero=True)
    if threshold > 1:
        msg = (
            f"threshold is a fraction of the module's reference or top value and must be in [0, 1], got {threshold!r}."
        )
        raise ValueError(msg)
    if reference_rank is not None and rule != "core":
        msg = "reference_rank applies to rule='core' only; leave it out with rule='score'."
        raise ValueError(msg)
    if reference_rank is None:
        reference_rank = CORE_REFERENCE_RANK  # checked by core_features, before anything is stored
    fit = read_amf(adata, key, require=("feature_scores",) + (("modules",) if rule == "core" else ()))
    scores = np.asarray(fit.feature_scores, dtype=np.float64)
    corr = read_correlations(adata, key, require=()) if has_step(adata, key, "correlations") else None
    start = logg.info(f"selecting module genes ({rule} rule, threshold {threshold:g})")
    frames = []
    names = np.asarray(adata.var_names, dtype=object)
    empty, broad = [], []
    n_tested = corr.features.size if corr is not None and corr.features is not None else adata.n_vars
    groups = np.full(scores.shape, -1, dtype=np.int64)  # per var and module; -1: not a core feature
    if rule == "core":
        modules = np.asarray(fit.modules, dtype=np.float32)
        if corr is None:
            corr = read_correlations(adata, key, require=("features", "feature_index"))
        rows = corr.var_rows(adata)
        grouped = gene_groups(modules, len(rows), threshold=threshold, reference_rank=reference_rank)
        groups[rows[rows >= 0]] = grouped[rows >= 0]
    for m in range(scores.shape[1]):
        s = scores[:, m]
        top = s.max() if s.size else 0.0
        if not top > 0:
            empty.append(m)
            continue
        if rule == "core":
            keep = np.flatnonzero((groups[:, m] >= 0) & (s > 0))
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
                    "group": groups[keep, m],
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
    table["n_shared"], overlaps = _shared_genes(table)
    if overlaps:
        ranked = sorted(overlaps, key=lambda o: -o[2])
        listed = "; ".join(
            f"{a} and {b} share {len(common)} genes (Jaccard {jac:.2f}: {', '.join(common[:5])}"
            f"{', ...' if len(common) > 5 else ''})"
            for a, b, jac, common in ranked[:_OVERLAPS_LISTED]
        )
        more = len(ranked) - _OVERLAPS_LISTED
        tail = f"; {more} more in params['overlaps']" if more > 0 else ""
        logg.warning(
            f"modules {listed}{tail}. Read as gene lists such modules "
            "are one programme, although their pairs or presences differ (lava.pl.modules shows where each is "
            "present); each module's own genes are the rows with n_shared == 0 in lava.get.module_genes."
        )
    if copy:
        adata = adata.copy()
    params = {"rule": rule, "threshold": float(threshold)}
    if rule == "core":
        params["reference_rank"] = int(reference_rank)
    params["overlaps"] = [[a, b] for a, b, _, _ in overlaps]
    params["overlap_jaccard"] = [round(jac, 4) for _, _, jac, _ in overlaps]
    store_step(adata, key, "module_genes", table, params)
    counts = table.groupby("module").size()
    n_groups = table[table["group"] >= 0].groupby("module")["group"].nunique()
    logg.finished(
        start,
        "genes per module: "
        + ", ".join(f"{m}: {c}" + (f" in {n_groups[m]} groups" if m in n_groups else "") for m, c in counts.items()),
    )
    return adata if copy else None


def _empty_module_genes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "module": np.array([], dtype=np.int64),
            "feature": np.array([], dtype=object),
            "score": np.array([], dtype=np.float64),
            "rank": np.array([], dtype=np.int64),
            "group": np.array([], dtype=np.int64),
        }
    )


def _shared_genes(table: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, int, float, list[str]]]]:
    """Per row, in how many other modules' lists the gene is; the module pairs whose lists overlap.

    Returns ``n_shared`` (int64, one per row of ``table``) and ``(a, b, jaccard, common genes by summed rank)`` for
    every pair ``a < b`` with a gene-list Jaccard index >= :data:`GENE_OVERLAP`.
    """
    counts = table.groupby("feature", sort=False)["module"].transform("size").to_numpy(dtype=np.int64)
    lists = {int(m): rows for m, rows in table.groupby("module", sort=True)}
    overlaps = []
    ms = sorted(lists)
    for i, a in enumerate(ms):
        genes_a = dict(zip(lists[a]["feature"], lists[a]["rank"], strict=True))
        for b in ms[i + 1 :]:
            genes_b = dict(zip(lists[b]["feature"], lists[b]["rank"], strict=True))
            common = genes_a.keys() & genes_b.keys()
            jac = len(common) / len(genes_a.keys() | genes_b.keys())
            if common and jac >= GENE_OVERLAP:
                order = sorted(common, key=lambda g: (genes_a[g] + genes_b[g], g))
                overlaps.append((a, b, float(jac), [str(g) for g in order]))
    return counts - 1, overlaps
