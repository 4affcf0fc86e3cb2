"""A summary of stored lava results: the figures of each step and the top findings, as data and as text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._store import has_step, read_amf, read_correlations, read_localities, read_table, stored_params

#: Adjusted p-value below which the summary counts a term as significant.
SIGNIFICANT = 0.05
#: Strongest associations listed.
N_ASSOCIATIONS = 3


def summary(adata: AnnData, *, top: int = 8, key: str = "lava") -> dict[str, Any]:
    """Return the figures and top findings of the stored results, as ``lava run`` prints them.

    Needs :func:`lava.tl.localities`, :func:`lava.tl.correlations` and :func:`lava.tl.amf`; the tables of
    :func:`lava.tl.module_genes`, :func:`lava.tl.associate` and :func:`lava.tl.enrich` are included when they ran.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    top
        Number of top features per module in ``top_features``.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A dict with

    ``n_obs``, ``n_vars`` (int), ``basis`` (str or None)
        The data and the embedding the localities were placed in.
    ``n_localities``, ``n_neighbors`` (int), ``placement_loss``, ``placement_loss_unoptimized`` (float or None)
        The localities and their placement loss (and that of plain k-means).
    ``n_features``, ``n_pairs`` (int)
        The correlated features and their pairs.
    ``n_modules``, ``loss``, ``similarity``, ``overestimation_ratio``, ``n_epochs``, ``best_epoch``, ``converged``
        The AMF fit: M (int), the fit figures (float), the epochs run and the best epoch (int), whether it
        converged (bool); None for a figure that is not stored.
    ``n_runs`` (int), ``module_reproducibility`` ((M,) float64 or None), ``keep`` (str or None)
        The fits made from different seeds (1 when not stored), with two or more per module the share of the
        other runs that find it again (matched cosine >= 0.9), and the rule that kept the run (``"medoid"`` or
        ``"loss"``).
    ``copresence_entropy_mean``, ``copresence_entropy_std`` (float or None)
        Co-presence entropy in bits over the localities with a presence sum of at least 0.5 (None when there are
        none).
    ``top_features`` (DataFrame or None), ``n_module_features`` (int or None)
        The ``top`` highest-ranked rows per module of :func:`lava.get.module_genes` (columns ``module``,
        ``feature``, ``score``, ``rank``) and the number of module features in all.
    ``top_associations`` (DataFrame or None), ``association_p_column``, ``association_method`` (str or None)
        The 3 rows of :func:`lava.get.association` with the lowest p-values, the column ranked (``p_adjusted``,
        else the method's raw p-values) and the correlation those p-values belong to (``"spearman"`` or
        ``"pearson"``, as :func:`lava.tl.associate` was run).
    ``top_terms`` (DataFrame or None), ``n_significant_terms`` (int or None), ``gene_sets`` (str or None)
        One row per tested module (columns ``module``, ``term``, ``overlap``, ``p_value``, ``p_adjusted``; the term
        columns are missing values where no gene set shares a module gene): its most significant term from
        :func:`lava.get.enrichment`; the number of (module, term) pairs with ``p_adjusted < 0.05`` (a term of two gene
        groups counts once); the gene sets tested (a file by
        its name).
    """
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        msg = f"top must be a positive integer, got {top!r}."
        raise ValueError(msg)
    from ..core import copresence_entropy

    loc = read_localities(adata, key)
    corr = read_correlations(adata, key, require=("values", "features"))
    fit = read_amf(adata, key, require=("presence",))
    presence = fit.presence
    M = presence.shape[1]
    out: dict[str, Any] = {
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "basis": loc.basis,
        "n_localities": loc.n_localities,
        "n_neighbors": int(loc.indices.shape[1]),
        "placement_loss": loc.loss,
        "placement_loss_unoptimized": loc.loss_unoptimized,
        "n_features": int(corr.features.size),
        "n_pairs": corr.n_pairs,
        "n_modules": M,
        "loss": fit.loss,
        "similarity": fit.similarity,
        "overestimation_ratio": fit.overestimation_ratio,
        "n_epochs": fit.n_epochs,
        "best_epoch": fit.best_epoch,
        "converged": bool(fit.converged),
        "n_runs": int(fit.n_runs or 1),
        "module_reproducibility": fit.module_reproducibility,
        "keep": fit.params.get("keep") if isinstance(fit.params, Mapping) else None,
        "copresence_entropy_mean": None,
        "copresence_entropy_std": None,
    }
    if np.any(presence.sum(axis=1) >= 0.5):
        entropy = np.asarray(copresence_entropy(presence), dtype=float)
        entropy = entropy[np.isfinite(entropy)]
        if entropy.size:
            out["copresence_entropy_mean"] = float(entropy.mean())
            out["copresence_entropy_std"] = float(entropy.std())

    out["top_features"] = out["n_module_features"] = None
    if has_step(adata, key, "module_genes"):
        table = read_table(adata, key, "module_genes", columns=("module", "feature", "rank"))
        rows = [table[table["module"] == m].sort_values("rank").head(top) for m in range(M)]
        out["top_features"] = pd.concat(rows, ignore_index=True)
        out["n_module_features"] = len(table)

    out["top_associations"] = out["association_p_column"] = out["association_method"] = None
    if has_step(adata, key, "association"):
        assoc = read_table(adata, key, "association")
        method = str(stored_params(adata, key, "association").get("method", "pearson"))  # older files: Pearson
        p_col = "p_adjusted" if "p_adjusted" in assoc.columns else f"{method}_p"
        out["top_associations"] = assoc.sort_values(p_col).head(N_ASSOCIATIONS).reset_index(drop=True)
        out["association_p_column"] = p_col
        out["association_method"] = method

    out["top_terms"] = out["n_significant_terms"] = out["gene_sets"] = None
    if has_step(adata, key, "enrichment"):
        enr = read_table(adata, key, "enrichment")
        params = _enrichment_params(adata, key)
        tested = sorted(int(m) for m in params.get("modules", range(M)))
        source = params.get("gene_sets")
        if isinstance(source, str):  # a file by its name, a library by its name as spelled in the library
            source = Path(source).name if source.lower().endswith(".gmt") else source
        else:
            source = None
        columns = ["term", "overlap", "p_value", "p_adjusted"]
        best = []
        for m in tested:
            rows = enr[enr["module"] == m].sort_values(["p_adjusted", "p_value"], kind="stable").head(1)
            row = rows.iloc[0] if len(rows) else pd.Series({c: None for c in columns})
            best.append({"module": m, **{c: row[c] for c in columns}})
        out["top_terms"] = pd.DataFrame(best, columns=["module", *columns])
        significant = enr.loc[enr["p_adjusted"] < SIGNIFICANT, ["module", "term"]]
        out["n_significant_terms"] = len(significant.drop_duplicates())  # by="group": a term once per module
        out["gene_sets"] = source
    return out


def _enrichment_params(adata, key: str) -> dict:
    """Return the stored parameters of lava.tl.enrich (empty when they cannot be read)."""
    try:
        params = stored_params(adata, key, "enrichment")
    except (KeyError, TypeError, ValueError):
        return {}
    return params if isinstance(params, dict) else {}


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _fmt(value, spec: str) -> str:
    return "?" if value is None else format(value, spec)


def summary_text(
    info: Mapping[str, Any], *, timings: Mapping[str, float] | None = None, files: Sequence[str] = ()
) -> str:
    """Write :func:`summary` as the plain text ``lava run`` prints, with the files written and the step times."""
    M = info["n_modules"]
    lines = [
        f"lava summary ({info['n_obs']} samples x {info['n_vars']} features, basis {info['basis'] or '?'!s})",
        f"  localities          {info['n_localities']} of {info['n_neighbors']} samples each; placement loss "
        f"{_fmt(info['placement_loss'], '.4f')}"
        + (
            f" (unoptimised {info['placement_loss_unoptimized']:.4f})"
            if info["placement_loss_unoptimized"] is not None
            else ""
        ),
        f"  feature pairs       {info['n_pairs']:,} ({info['n_features']} features)",
        f"  modules             {M}",
        f"  fit                 loss {_fmt(info['loss'], '.4f')}, similarity {_fmt(info['similarity'], '.3f')}, "
        f"overestimation ratio {_fmt(info['overestimation_ratio'], '.3f')}, "
        f"{_fmt(info['n_epochs'], 'd')} epochs (best {_fmt(info['best_epoch'], 'd')}"
        + (", converged" if info["converged"] else ", not converged")
        + ")",
    ]
    repro = info.get("module_reproducibility")
    if repro is not None and info.get("n_runs", 1) >= 2:
        n_runs = info.get("n_runs", 1)
        shares = ", ".join(f"{m}: {r:.2f}" for m, r in enumerate(np.asarray(repro).tolist()))
        rule = "the lowest loss" if info.get("keep") == "loss" else "the medoid"
        lines.append(f"  runs                {n_runs}, {rule} kept; modules found again by the others: {shares}")
    if info["copresence_entropy_mean"] is not None:
        lines.append(
            f"  co-presence entropy {info['copresence_entropy_mean']:.2f} ± {info['copresence_entropy_std']:.2f} bits "
            f"(0 = one module, {np.log2(M):.2f} = all equal)"
        )
    features = info["top_features"]
    if features is not None:
        lines.append(f"  top features per module (of {info['n_module_features']} module features)")
        for m in range(M):
            names = ", ".join(features.loc[features["module"] == m, "feature"].astype(str))
            lines.append(f"    module {m}: {names if names else '(none above threshold)'}")
    best = info["top_associations"]
    if best is not None:
        p_col, method = info["association_p_column"], info["association_method"]
        lines.append(f"  strongest associations ({best['groupby'].iloc[0] if len(best) else ''})")
        for _, row in best.iterrows():
            lines.append(
                f"    module {int(row['module'])} ~ {row['category']}: {method} r = {float(row[f'{method}_r']):+.2f}, "
                f"{p_col} = {float(row[p_col]):.2g}"
            )
    terms = info["top_terms"]
    if terms is not None:
        source = f"; gene sets {info['gene_sets']}" if info["gene_sets"] is not None else ""
        lines.append(
            f"  top term per module ({info['n_significant_terms']} terms at adjusted p < {SIGNIFICANT}{source})"
        )
        for row in terms.itertuples(index=False):
            if pd.isna(row.term):
                lines.append(f"    module {row.module}: (no gene set shares a module gene)")
                continue
            p_adj = float(row.p_adjusted)
            mark = "" if p_adj < SIGNIFICANT else ", not significant"
            lines.append(f"    module {row.module}: {row.term} ({row.overlap} genes, adjusted p {p_adj:.2g}{mark})")
    if files:
        lines.append("  files")
        lines.extend(f"    {f}" for f in files)
    if timings:
        total = sum(timings.values())
        lines.append(
            "  step times          "
            + ", ".join(f"{name} {_fmt_seconds(t)}" for name, t in timings.items())
            + f"; total {_fmt_seconds(total)}"
        )
    return "\n".join(lines)
