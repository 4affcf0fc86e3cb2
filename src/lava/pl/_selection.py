"""Choosing the number of modules: fit quality and stability against M."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import doc_params
from .._store import has_step, read_localities, read_selection, read_table
from . import _utils as u

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _summary_by_m(summary) -> pd.DataFrame:
    summary = pd.DataFrame(summary)
    if "n_modules" in summary.columns:
        summary = summary.set_index("n_modules")
    summary.index = summary.index.astype(int)
    return summary.sort_index()


@doc_params(**u.PLOT_DOCS)
def selection(
    adata: AnnData,
    *,
    show_runs: bool = True,
    title: str | list[str] | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    show: bool | None = None,
    return_fig: bool = False,
) -> list[Axes] | Figure | None:
    """Fit quality and stability against the number of modules M, from :func:`lava.tl.select_n_modules`.

    Three panels sharing the x axis: reconstruction similarity (the loss's main term as a similarity; higher is
    better), the silhouette width of the modules clustered across runs (stability; higher is better), and the
    overestimation ratio (lower is better). Points are means over runs with standard deviations as error bars;
    single runs are drawn as faint dots. A dashed line marks the suggested M (the elbow of the loss curve).

    Parameters
    ----------
    {adata}
    show_runs
        Draw each run as a faint dot behind the means.
    {title_panels}
    {save}
    {key}
    {show_panels}

    Returns
    -------
    list of Axes, Figure or None
        The three Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    u.check_title(title, 3)
    u.check_save(save)
    sel = read_selection(adata, key)
    if sel.runs is None:
        msg = f"adata.uns[{key!r}]['selection'] has no 'runs'; rerun lava.tl.select_n_modules."
        raise KeyError(msg)
    runs = sel.runs
    for column in ("n_modules", "similarity", "overestimation_ratio"):
        if column not in runs.columns:
            msg = f"adata.uns[{key!r}]['selection']['runs'] has no {column!r} column; rerun lava.tl.select_n_modules."
            raise KeyError(msg)
    summary = _summary_by_m(sel.summary) if sel.summary is not None else pd.DataFrame()
    suggested = sel.suggested_n_modules
    grouped = runs.groupby("n_modules")
    ms = np.asarray(sorted(grouped.groups), dtype=int)

    fig, axes = u.grid(3, 1, panel_size=(5.0, 2.2), sharex=True)
    panels = [
        ("similarity", "reconstruction\nsimilarity", "tab:blue"),
        ("silhouette", "silhouette\nwidth", "tab:green"),
        ("overestimation_ratio", "overestimation\nratio", "tab:red"),
    ]
    for panel, (column, label, color) in zip(axes, panels, strict=True):
        if column in runs.columns:
            mean = grouped[column].mean().reindex(ms).to_numpy(dtype=np.float64)
            sd = np.nan_to_num(grouped[column].std().reindex(ms).to_numpy(dtype=np.float64))  # ddof=1, as stored
            if show_runs:
                panel.scatter(runs["n_modules"], runs[column], s=8, color=color, alpha=0.25, linewidths=0)
            panel.errorbar(ms, mean, yerr=sd, color=color, marker="o", markersize=4, capsize=3)
        elif column in summary.columns:
            values = summary[column].reindex(ms).to_numpy(dtype=np.float64)
            std_col = f"{column}_std"
            sd = summary[std_col].reindex(ms).to_numpy(dtype=np.float64) if std_col in summary.columns else None
            panel.errorbar(ms, values, yerr=sd, color=color, marker="o", markersize=4, capsize=3)
        else:
            panel.text(0.5, 0.5, f"no {column} stored", transform=panel.transAxes, ha="center", va="center")
        panel.set_ylabel(label)
        if suggested is not None:
            panel.axvline(suggested, color="0.3", linestyle="--", linewidth=1)
    defaults = [f"suggested number of modules: {suggested}" if suggested is not None else "", "", ""]
    u.set_titles(fig, axes, title, defaults)
    axes[-1].set_xlabel("number of modules M")
    axes[-1].set_xticks(ms)
    axes[-1].set_xlim(ms.min() - 0.5, ms.max() + 0.5)
    return u.finish(fig, axes, show=show, return_fig=return_fig, ax_given=False, save=save, name="selection")


def retention_peak(table: pd.DataFrame, n_obs: int) -> int | None:
    """Return the size with the highest mean Jaccard, leaving out sizes >= ``n_obs`` (any embedding scores 1 there)."""
    candidates = table[table["n_neighbors"] < n_obs]
    if candidates.empty:
        return None
    return int(candidates.loc[candidates["jaccard"].idxmax(), "n_neighbors"])


@doc_params(**u.PLOT_DOCS)
def neighborhood_retention(
    adata: AnnData,
    *,
    logx: bool = True,
    baseline: bool = True,
    color: str = "tab:blue",
    title: str | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Neighbourhood retention against the neighbourhood size, from :func:`lava.tl.neighborhood_retention`.

    The mean Jaccard similarity between each sample's ``n`` nearest neighbours in the original space and in the
    embedding, with a band of one standard deviation over samples (a spread, not an error bar). A dashed line
    marks the peak, the data-driven locality size: sizes of ``n_obs`` and more are left out of the peak, as any
    embedding retains the whole data set (Jaccard 1). A dotted line marks the ``n_neighbors`` that
    :func:`lava.tl.localities` used, when it has run. The grey curve is the Jaccard of two random ``n``-sets,
    ``n / (2 n_obs - n)``, the level to compare against at large ``n``.

    Parameters
    ----------
    {adata}
    logx
        Logarithmic size axis (the default sizes are spaced geometrically).
    baseline
        Draw the random-sets baseline.
    color
        Colour of the curve and its band.
    {title}
    {save}
    {key}
    {show}

    Returns
    -------
    Axes, Figure or None
        The Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    u.check_title(title, 1)
    u.check_save(save)
    table = read_table(adata, key, "neighborhood_retention", columns=("n_neighbors", "jaccard"))
    table = table.sort_values("n_neighbors", kind="stable")
    n = table["n_neighbors"].to_numpy(dtype=np.float64)
    jaccard = table["jaccard"].to_numpy(dtype=np.float64)
    E = adata.n_obs

    fig, ax_ = u.new_axes(ax, figsize=(6.4, 3.6))
    if "jaccard_std" in table.columns:
        sd = table["jaccard_std"].to_numpy(dtype=np.float64)
        ax_.fill_between(n, np.clip(jaccard - sd, 0, 1), np.clip(jaccard + sd, 0, 1), color=color, alpha=0.15, lw=0)
    ax_.plot(n, jaccard, color=color, marker="o", markersize=4, label="mean Jaccard")
    if baseline:
        grid_n = np.geomspace(n.min(), n.max(), 200) if logx else np.linspace(n.min(), n.max(), 200)
        ax_.plot(grid_n, grid_n / (2 * E - grid_n), color="0.6", linewidth=1, label="random sets")
    peak = retention_peak(table, E)
    if peak is not None:
        best = float(table.loc[table["n_neighbors"] == peak, "jaccard"].iloc[0])
        ax_.axvline(peak, color="tab:orange", linestyle="--", linewidth=1.5, label=f"peak: n = {peak} ({best:.2f})")
    used = _localities_n(adata, key)
    if used is not None:
        ax_.axvline(used, color="0.2", linestyle=":", linewidth=1.5, label=f"localities: n = {used}")
    if logx:
        ax_.set_xscale("log")
    ax_.set_ylim(0, min(1.05, max(float(np.nanmax(jaccard)) * 1.15, 0.1)))
    ax_.set_xlabel("neighbourhood size n")
    ax_.set_ylabel("mean Jaccard similarity")
    ax_.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)  # clear of curve and band
    u.set_titles(fig, [ax_], title, ["neighbourhood retention"])
    return u.finish(
        fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="neighborhood_retention"
    )


def _localities_n(adata, key: str) -> int | None:
    """Return the ``n_neighbors`` lava.tl.localities used under ``key`` (None if it has not run)."""
    if not has_step(adata, key, "localities"):
        return None
    return read_localities(adata, key).n_neighbors
