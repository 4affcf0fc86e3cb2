"""Choosing the number of modules: fit quality and stability against M."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._docs import doc_params
from .._store import get_step
from . import _utils as u


def _summary_by_m(summary) -> pd.DataFrame:
    summary = pd.DataFrame(summary)
    if "n_modules" in summary.columns:
        summary = summary.set_index("n_modules")
    summary.index = summary.index.astype(int)
    return summary.sort_index()


@doc_params()
def selection(
    adata,
    *,
    show_runs: bool = True,
    key: str = "lava",
    show: bool | None = None,
    return_fig: bool = False,
):
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
    {key}
    {show_panels}

    Returns
    -------
    list of Axes, Figure or None
        The three Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    sel = get_step(adata, key, "selection")
    runs = pd.DataFrame(sel["runs"])
    for column in ("n_modules", "similarity", "overestimation_ratio"):
        if column not in runs.columns:
            msg = f"adata.uns[{key!r}]['selection']['runs'] has no {column!r} column; rerun lava.tl.select_n_modules."
            raise KeyError(msg)
    summary = _summary_by_m(sel["summary"]) if "summary" in sel else pd.DataFrame()
    suggested = int(sel["suggested_n_modules"]) if "suggested_n_modules" in sel else None
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
    if suggested is not None:
        axes[0].set_title(f"suggested number of modules: {suggested}")
    axes[-1].set_xlabel("number of modules M")
    axes[-1].set_xticks(ms)
    axes[-1].set_xlim(ms.min() - 0.5, ms.max() + 0.5)
    return u.finish(fig, axes, show=show, return_fig=return_fig, ax_given=False)
