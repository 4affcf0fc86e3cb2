"""Reading modules biologically: top features, enrichment dot plot, association with sample annotations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_params
from .._store import check_columns, has_step, read_amf, read_table, stored_params
from . import _utils as u

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@doc_params(**u.PLOT_DOCS)
def module_genes(
    adata: AnnData,
    module: int | Sequence[int] | None = None,
    *,
    n_genes: int = 20,
    threshold: float | None = None,
    ncols: int = 3,
    color: str = "tab:blue",
    title: str | list[str] | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | list[Axes] | Figure | None:
    """Plot a module's top features by score, its module genes marked; or every module's, one panel each.

    A feature's score is the sum of the module's correlations over the pairs it is in
    (``adata.varm["<key>_modules"]``). When :func:`lava.tl.module_genes` ran with its default ``rule="core"`` and no
    ``threshold`` is passed here, the module's genes (the features of its core pairs, the stored list) are drawn in
    ``color`` and the others in grey: the core rule has no cut-off on the score. Otherwise the orange line is the
    cut-off ``threshold`` x the largest score (``rule="score"``; named in the axis label) and features below it are
    grey.

    Parameters
    ----------
    {adata}
    module
        Module to draw (0..M-1); a list of modules, or None (every module), draws one panel per module in a grid.
    n_genes
        Number of top features.
    threshold
        Cut-off as a fraction of the largest score; default the one :func:`lava.tl.module_genes` used with
        ``rule="score"``, else 0.05. Passing it draws the cut-off even when the stored genes come from the core rule.
    ncols
        Panels per row when drawing several modules.
    color
        Colour of the module's genes (or of the bars above the cut-off).
    {title_panels}
    {save}
    {key}
    {show}

    Returns
    -------
    Axes, list of Axes, Figure or None
        The Axes (one ``module``) or list of Axes (several) when ``show=False``; the Figure with
        ``return_fig=True``; else None.
    """
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        msg = f"n_genes must be a positive integer, got {n_genes!r}."
        raise ValueError(msg)
    single = isinstance(module, int | np.integer)
    if single:
        u.check_title(title, 1)
    u.check_save(save)
    scores = np.asarray(read_amf(adata, key, require=("feature_scores",)).feature_scores, dtype=np.float64)
    chosen = [u.check_module(module, scores.shape[1])] if single else u.resolve_modules(scores.shape[1], module)
    u.check_single_ax(ax, len(chosen), "lava.pl.module_genes with several modules")
    u.check_title(title, len(chosen))
    members = None
    if threshold is None and _stored_param(adata, key, "module_genes", "rule", "score") == "core":
        table = read_table(adata, key, "module_genes")
        rows = {str(f): i for i, f in enumerate(adata.var_names)}
        members = {
            int(m): {rows[str(f)] for f in group["feature"] if str(f) in rows} for m, group in table.groupby("module")
        }
    elif threshold is None:
        threshold = float(_stored_param(adata, key, "module_genes", "threshold", 0.05))
    elif isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number) or not 0 <= threshold <= 1:
        msg = f"threshold must be a fraction in [0, 1], got {threshold!r}."
        raise ValueError(msg)

    n_shown = min(n_genes, scores.shape[0])
    if single or ax is not None:
        fig, one = u.new_axes(ax, figsize=(4.5, 1.0 + 0.22 * n_shown))
        axes = [one]
    else:
        fig, axes = u.grid(len(chosen), ncols, panel_size=(4.2, 1.2 + 0.22 * n_genes))
    defaults = []
    for panel, m in zip(axes, chosen, strict=True):
        genes = None if members is None else members.get(int(m), set())
        defaults.append(_draw_module_genes(panel, adata, scores[:, m], m, n_genes, threshold, color, genes))
    u.set_titles(fig, axes, title, defaults)
    result = axes[0] if single else axes
    return u.finish(
        fig, result, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="module_genes"
    )


def _draw_module_genes(
    ax, adata, s: np.ndarray, m: int, n_genes: int, threshold: float | None, color: str, genes: set | None = None
) -> str:
    """Draw one module's top features as horizontal bars; return the panel's default title.

    ``genes`` (var rows of the module's stored core-rule genes) colours by membership; else ``threshold`` is a score
    cut-off, drawn as a line.
    """
    top = np.argsort(-s, kind="stable")[:n_genes]
    y = np.arange(len(top))[::-1]
    if genes is not None:
        colors = [color if t in genes else "0.75" for t in top]
    else:
        cut = float(threshold) * float(s.max())
        colors = [color if s[t] >= cut else "0.75" for t in top]
    ax.barh(y, s[top], color=colors)
    ax.set_yticks(y, np.asarray(adata.var_names)[top])
    ax.set_ylim(-0.6, len(top) - 0.4)
    # the rule is named in the axis label, not a legend: bars may reach any part of the Axes (alike top scores),
    # and a legend outside it would run into a neighbouring panel
    if genes is not None:
        ax.set_xlabel("score (sum of correlations)\ncoloured: module genes (core pairs)")
    else:
        ax.axvline(cut, color="tab:orange", linewidth=1.5)
        ax.set_xlabel(f"score (sum of correlations)\norange: cut-off {threshold:g} × max")
    return f"module {m}: top {len(top)} features"


def _overlap_count(overlap: pd.Series) -> np.ndarray:
    """Genes in the overlap, from a count or gseapy's ``"k/K"`` string."""
    if overlap.dtype.kind in "iuf":
        return overlap.to_numpy(dtype=np.float64)
    return overlap.astype(str).str.split("/").str[0].astype(float).to_numpy()


@doc_params(**u.PLOT_DOCS)
def enrichment(
    adata: AnnData,
    *,
    modules=None,
    n_terms: int = 5,
    cmap: str = "Reds",
    max_size: float = 200.0,
    vmin: float | str | None = None,
    vmax: float | str | None = None,
    title: str | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Dot plot of gene-set enrichment of the module genes (from :func:`lava.tl.enrich`).

    Columns are modules; rows are the union of each module's ``n_terms`` most significant terms. A dot's size is the
    number of module genes in the term, its colour ``-log10`` of the adjusted p-value. After
    ``lava.tl.enrich(by="group")`` a module's dot for a term is that of its most significant group.

    Parameters
    ----------
    {adata}
    modules
        Modules to show (int or list); default all with results.
    n_terms
        Most significant terms taken from each module.
    cmap
        Colour map of ``-log10(p_adjusted)``.
    max_size
        Marker area of the largest overlap.
    {vlim}
        Of ``-log10(p_adjusted)``; default 0 and the largest value drawn, at least ``-log10(0.05)``.
    {title}
    {save}
    {key}
    {show}

    Returns
    -------
    Axes, Figure or None
        The Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    if isinstance(n_terms, bool) or not isinstance(n_terms, int | np.integer) or n_terms < 1:
        msg = f"n_terms must be a positive integer, got {n_terms!r}."
        raise ValueError(msg)
    u.check_title(title, 1)
    u.check_save(save)
    df = read_table(adata, key, "enrichment", columns=("module", "term", "overlap", "p_adjusted"))
    if modules is None:
        chosen = sorted(df["module"].astype(int).unique())
    else:
        chosen = u.resolve_modules(read_amf(adata, key, require=()).n_modules, modules)
    df = df[df["module"].astype(int).isin(chosen)]
    # lava.tl.enrich(by="group") tests a term once per group: a module's dot is its best group's
    df = df.sort_values("p_adjusted", kind="stable").drop_duplicates(["module", "term"])
    terms: list[str] = []
    for m in chosen:
        best = df[df["module"].astype(int) == m].sort_values("p_adjusted", kind="stable")["term"].head(n_terms)
        terms.extend(t for t in best.astype(str) if t not in terms)
    dots = df[df["term"].astype(str).isin(terms)]

    # the term labels sit left of the dots: leave room for the longest (GO names run to 80 characters)
    longest = max((len(t) for t in terms), default=0)
    width = 0.065 * longest + 0.5 * max(len(chosen), 3) + 2.0
    fig, ax_ = u.new_axes(ax, figsize=(width, max(3.2, 1.6 + 0.28 * len(terms))))
    if len(dots):
        x = pd.Index(chosen).get_indexer(dots["module"].astype(int))
        y = len(terms) - 1 - pd.Index(terms).get_indexer(dots["term"].astype(str))
        size = _overlap_count(dots["n_overlap"] if "n_overlap" in dots.columns else dots["overlap"])
        score = -np.log10(np.clip(dots["p_adjusted"].to_numpy(dtype=np.float64), 1e-300, 1.0))
        # the default scale always reaches p = 0.05
        lo, hi = u.color_limits(
            vmin, vmax, score, default_vmin=0.0, default_vmax=max(float(score.max()), -np.log10(0.05))
        )
        art = ax_.scatter(
            x,
            y,
            s=max_size * size / size.max(),
            c=score,
            cmap=cmap,
            vmin=lo,
            vmax=hi,
            edgecolors="black",
            linewidths=0.4,
        )
        # colourbar below, size legend on the right: side by side they overlapped
        fig.colorbar(art, ax=ax_, location="bottom", shrink=0.6, aspect=25, label="-log10 p_adjusted")
        for n in np.unique(np.quantile(size, [0.0, 0.5, 1.0]).round()):
            ax_.scatter([], [], s=max_size * n / size.max(), c="0.5", label=f"{n:g}")
        ax_.legend(title="overlap", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, labelspacing=1.2)
    else:
        ax_.text(0.5, 0.5, "no enrichment results", transform=ax_.transAxes, ha="center", va="center")
    ax_.set_xticks(np.arange(len(chosen)), [str(m) for m in chosen])
    ax_.set_yticks(np.arange(len(terms)), terms[::-1])
    ax_.set_xlim(-0.6, len(chosen) - 0.4)
    ax_.set_ylim(-0.6, max(len(terms), 1) - 0.4)
    ax_.set_xlabel("module")
    u.set_titles(fig, [ax_], title, ["enrichment of module genes"])
    return u.finish(fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="enrichment")


def _stored_param(adata, key: str, step: str, name: str, default):
    if not has_step(adata, key, step):
        return default
    return stored_params(adata, key, step).get(name, default)


def _p_column(df: pd.DataFrame, method: str, stored_method: str) -> str:
    """Pick the p-values behind the stars: permutation-based if stored, else BH-adjusted, else raw for ``method``."""
    candidates = ["permutation_p_adjusted"] if "permutation_p_adjusted" in df.columns else []
    # ``p_adjusted`` adjusts the p-values of the method lava.tl.associate was run with
    candidates += ["p_adjusted"] if method == stored_method else []
    candidates += [f"{method}_p_adjusted", f"{method}_p"]
    for column in candidates:
        if column in df.columns:
            return column
    msg = f"the association table has no p-value column for {method!r}; rerun lava.tl.associate."
    raise KeyError(msg)


@doc_params(**u.PLOT_DOCS)
def association(
    adata: AnnData,
    *,
    groupby: str | None = None,
    method: Literal["pearson", "spearman"] | None = None,
    alpha: float = 0.05,
    cmap: str = "RdBu_r",
    vmin: float | str | None = None,
    vmax: float | str | None = None,
    title: str | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Plot a module x category heatmap of how presence correlates with category fractions over localities.

    From :func:`lava.tl.associate`: for each module and category, the correlation ``r`` between the module's presence
    and the fraction of the locality's samples in that category, over the localities where the module is present
    (``n_localities``, given beside each module). A star marks p-values below ``alpha``. Every module of the table
    is drawn: a module present in too few localities for a correlation (NaN statistics) keeps its row, greyed and
    labelled "not tested"; a single NaN cell (a category whose fraction does not vary) is grey.

    Parameters
    ----------
    {adata}
    groupby
        Annotation to show; default all stored (columns labelled ``groupby: category`` when there are several).
    method
        ``"pearson"`` or ``"spearman"``; default the method :func:`lava.tl.associate` adjusted p-values for.
    alpha
        Significance level of the stars. They use, in this order of preference, the BH-adjusted permutation
        p-values (if :func:`lava.tl.associate` ran permutations), the BH-adjusted p-values (when ``method`` is the
        one they were computed for), else the raw p-values of ``method``; the title names the column used.
    cmap
        Diverging colour map, centred at 0.
    {vlim}
        Of ``r``; default symmetric, ``-max|r|`` to ``max|r|``. One bound given sets the other to its negative.
    {title}
    {save}
    {key}
    {show}

    Returns
    -------
    Axes, Figure or None
        The Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    import matplotlib.pyplot as plt

    u.check_title(title, 1)
    u.check_save(save)
    df = read_table(adata, key, "association")
    stored_method = str(_stored_param(adata, key, "association", "method", "pearson"))
    method = stored_method if method is None else method
    if method not in ("pearson", "spearman"):
        msg = f"method must be 'pearson' or 'spearman', got {method!r}."
        raise ValueError(msg)
    r_col = f"{method}_r"
    check_columns(df, key, "association", ("module", "groupby", "category", r_col))
    p_col = _p_column(df, method, stored_method)
    if groupby is not None:
        stored = sorted(df["groupby"].astype(str).unique())
        if groupby not in stored:
            msg = f"no association with {groupby!r} stored (have: {stored}); run lava.tl.associate(adata, {groupby!r})."
            raise KeyError(msg)
        df = df[df["groupby"].astype(str) == groupby]
    several = df["groupby"].nunique() > 1
    labels = (df["groupby"].astype(str) + ": " + df["category"].astype(str)) if several else df["category"].astype(str)
    df = df.assign(_label=labels.to_numpy(), module=df["module"].astype(int))
    # dropna=False: a module with NaN statistics (present in too few localities) keeps its row
    r = df.pivot_table(index="module", columns="_label", values=r_col, aggfunc="first", sort=False, dropna=False)
    p = df.pivot_table(index="module", columns="_label", values=p_col, aggfunc="first", sort=False, dropna=False)
    r = r.sort_index()
    p = p.reindex(index=r.index, columns=r.columns)
    if "n_localities" in df.columns:
        n_loc = df.groupby("module")["n_localities"].max().reindex(r.index)
        row_labels = [f"{m} (n={int(k)})" if np.isfinite(k) else str(m) for m, k in n_loc.items()]
    else:
        row_labels = [str(m) for m in r.index]

    # rotated category labels hang below the heatmap: leave room for the longest, or constrained layout collapses
    longest = max((len(str(c)) for c in r.columns), default=0)
    height = 1.6 + 0.4 * max(r.shape[0], 2) + 0.09 * longest
    fig, ax_ = u.new_axes(ax, figsize=(max(3.4 + 0.5 * r.shape[1], 4.9), height))
    values = r.to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    span = float(np.max(np.abs(finite))) if finite.size else 1.0
    span = span if span > 0 else 1.0
    lo = u.resolve_limit(vmin, finite, "vmin")
    hi = u.resolve_limit(vmax, finite, "vmax")
    lo, hi = (-span if lo is None else lo), (span if hi is None else hi)
    if vmin is None and vmax is not None:
        lo = -hi
    elif vmax is None and vmin is not None:
        hi = -lo
    if hi <= lo:
        msg = f"vmax ({hi:g}) must be above vmin ({lo:g})."
        raise ValueError(msg)
    colormap = plt.get_cmap(cmap).with_extremes(bad="0.85")  # NaN cells: grey
    image = ax_.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=lo, vmax=hi, aspect="auto")
    fig.colorbar(image, ax=ax_, shrink=0.7, label=f"{method} r")
    rows, cols = np.nonzero(p.to_numpy(dtype=np.float64) < alpha)
    for row, col in zip(rows, cols, strict=True):
        dark = abs(values[row, col]) > 0.6 * max(abs(lo), abs(hi))
        ax_.text(col, row, "*", ha="center", va="center", fontsize=14, color="white" if dark else "black")
    for row in np.flatnonzero(~np.isfinite(values).any(axis=1)):
        ax_.text(
            (r.shape[1] - 1) / 2,
            row,
            "not tested: too few localities",
            ha="center",
            va="center",
            fontsize=8,
            color="0.3",
        )
    ax_.set_xticks(np.arange(r.shape[1]), list(r.columns), rotation=90)
    ax_.set_yticks(np.arange(r.shape[0]), row_labels)
    ax_.set_ylabel("module (localities where present)")
    default = f"presence vs category fraction\n(* {p_col} < {alpha:g})"
    u.set_titles(fig, [ax_], title, [default])
    ax_.title.set_fontsize(10)
    return u.finish(fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="association")
