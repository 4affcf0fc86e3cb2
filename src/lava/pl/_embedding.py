"""Plots over the embedding: module presence, centralities, co-presence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from .._store import obs_keys, read_amf, read_localities
from . import _utils as u

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _reproduced(fit, m: int) -> str:
    """``"; reproduced 0.75"`` for module ``m`` of a fit of several runs, else ``""``."""
    repro = fit.module_reproducibility
    if repro is None or (fit.n_runs or 1) < 2:
        return ""
    return f"; reproduced {float(repro[m]):.2f}"


@doc_params(**u.PLOT_DOCS)
def modules(
    adata: AnnData,
    *,
    modules=None,
    basis: str | None = None,
    level: Literal["sample", "probe"] = "sample",
    ncols: int = 4,
    cmap=None,
    size: float | None = None,
    vmin: float | str | None = None,
    vmax: float | str | None = None,
    title: str | list[str] | None = None,
    frameon: bool | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | list[Axes] | Figure | None:
    """Presence of each module over the embedding, one panel per module.

    ``level="sample"`` (default) colours every sample by ``adata.obsm["<key>_presence"]`` (the mean presence
    over the localities that contain it; 0 for samples in no locality), drawn with :func:`scanpy.pl.embedding`,
    so the panels look and behave like ``sc.pl.umap``. ``level="probe"`` draws every sample in light grey and, on
    top, one dot per locality at its probe, coloured by the module's presence in that locality (what AMF
    fitted). All panels share one colour scale, so modules can be compared by eye; the default map runs from
    light grey (absent) to dark red. Each default title gives the module's total presence (sum over
    localities) and, for a fit of several runs, its reproducibility (the share of the other runs that find it
    again, ``module_reproducibility``). To colour scanpy's own plots, see :func:`lava.tl.presence_to_obs`.

    Parameters
    ----------
    {adata}
    modules
        Module numbers to draw (int or list); default all.
    basis
        Embedding to draw on (``"umap"`` or ``"X_umap"``); default the one :func:`lava.tl.localities` used. With
        more than two dimensions, the first two are drawn.
    level
        ``"sample"``: per-sample presence through :func:`scanpy.pl.embedding`; ``"probe"``: one dot per locality
        at its probe.
    ncols
        Panels per row.
    cmap
        Colour map of presence (a name or a :class:`~matplotlib.colors.Colormap`); default light grey to red.
    size
        Marker size of the coloured dots (default depends on their number, as in scanpy).
    {vlim}
        One scale for all panels (percentiles over every panel's presence); default 0 and the largest presence
        drawn.
    {title_panels}
    {frameon}
    {save}
    {key}
    {show}

    Returns
    -------
    list of Axes, Axes, Figure or None
        The list of panel Axes (``show=False``; the Axes with ``ax=``), the Figure (``return_fig=True``) or None.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if level not in ("probe", "sample"):
        msg = f"level must be 'sample' or 'probe', got {level!r}."
        raise ValueError(msg)
    fit = read_amf(adata, key)
    chosen = u.resolve_modules(fit.n_modules, modules)
    u.check_single_ax(ax, len(chosen), "lava.pl.modules")
    u.check_title(title, len(chosen))
    u.check_save(save)
    basis_name, Z, probes = u.embedding_and_probes(adata, read_localities(adata, key), basis)
    presence = np.asarray(fit.presence, dtype=np.float64)
    values = np.asarray(fit.need("sample_presence"), dtype=np.float64) if level == "sample" else presence
    shown = values[:, chosen]
    lo, hi = u.color_limits(vmin, vmax, shown, default_vmin=0.0, default_vmax=float(np.max(shown)))
    colormap = u.presence_cmap(cmap)
    defaults = [f"module {m} (total presence {presence[:, m].sum():.1f}{_reproduced(fit, m)})" for m in chosen]

    if level == "sample":
        fig, axes = _sample_presence_panels(
            adata,
            Z,
            basis_name,
            shown,
            chosen,
            ncols=ncols,
            cmap=colormap,
            size=size,
            vmin=lo,
            vmax=hi,
            frameon=frameon,
            ax=ax,
        )
        u.set_titles(fig, axes, title, defaults)
        result = axes if ax is None else axes[0]
        return u.finish(
            fig, result, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="modules"
        )

    norm = Normalize(vmin=lo, vmax=hi)
    if ax is None:
        fig, axes = u.grid(len(chosen), ncols)
    else:
        fig, axes = ax.figure, [ax]
    if size is None:
        size = u.probe_size(len(probes))
    for panel, m in zip(axes, chosen, strict=True):
        v = values[:, m]
        u.draw_background(panel, Z, size=u.point_size(len(Z)))
        order = np.argsort(v, kind="stable")
        panel.scatter(
            probes[order, 0],
            probes[order, 1],
            c=v[order],
            cmap=colormap,
            norm=norm,
            s=size,
            edgecolors="black",
            linewidths=0.3,
        )
        u.style_embedding(panel, basis_name, frameon=frameon)
    u.set_titles(fig, axes, title, defaults)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
    fig.colorbar(sm, ax=axes, shrink=0.6 if len(axes) > 1 else 0.9, label="presence")
    result = axes if ax is None else axes[0]
    return u.finish(fig, result, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="modules")


def _sample_presence_panels(adata, Z, basis_name, shown, chosen, *, ncols, cmap, size, vmin, vmax, frameon, ax):
    """Per-sample presence through :func:`scanpy.pl.embedding`, on a light AnnData holding only what is drawn.

    The user's AnnData is not touched (no obs columns are added); the colour bounds are scalars, so every panel
    has the same scale.
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    columns = [f"module {m}" for m in chosen]
    obs = pd.DataFrame(np.asarray(shown, dtype=np.float32), index=adata.obs_names.copy(), columns=columns)
    light = ad.AnnData(obs=obs, obsm={basis_name: np.ascontiguousarray(Z, dtype=np.float64)})
    label = basis_name[2:] if basis_name.startswith("X_") else basis_name  # scanpy labels axes "UMAP1" for "umap"
    drawn = sc.pl.embedding(
        light,
        label,
        color=columns,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        size=size,
        frameon=frameon,
        ncols=ncols,
        ax=ax,
        show=False,
    )
    axes = list(drawn) if isinstance(drawn, list | tuple) else [drawn]
    for panel in axes:
        for collection in panel.collections:
            collection.set_rasterized(True)  # light files for hundreds of thousands of cells, as the probe level
    return axes[0].figure, axes


@doc_params(**u.PLOT_DOCS)
def centrality(
    adata: AnnData,
    *,
    basis: str | None = None,
    cmap: str = "viridis",
    size: float | None = None,
    vmin: float | str | None = None,
    vmax: float | str | None = None,
    title: str | list[str] | None = None,
    frameon: bool | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    show: bool | None = None,
    return_fig: bool = False,
) -> list[Axes] | Figure | None:
    """How well the localities cover the embedding: sample neighbourhood centrality beside locality centrality.

    Three panels over the embedding: the relative neighbourhood in-degree centrality (how often a sample is among
    others' nearest neighbours), the relative locality centrality (how often it is in a locality; both have mean 1
    and share one colour scale), and their difference, locality minus neighbourhood (red: over-covered, blue:
    under-covered). Probes are drawn as black crosses. The placement optimises the sum of absolute differences,
    shown in the third title.

    Parameters
    ----------
    {adata}
    basis
        Embedding to draw on; default the one :func:`lava.tl.localities` used.
    cmap
        Colour map of the two centralities.
    size
        Marker size of the samples.
    {vlim}
        The two centralities share the scale (percentiles over both); default 0 and their maximum. The difference
        panel stays centred at 0.
    {title_panels}
    {frameon}
    {save}
    {key}
    {show_panels}

    Returns
    -------
    list of Axes, Figure or None
        The three Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm

    u.check_title(title, 3)
    u.check_save(save)
    loc = read_localities(adata, key)
    basis_name, Z, probes = u.embedding_and_probes(adata, loc, basis)
    names = obs_keys(key)
    for name in names:
        if name not in adata.obs:
            msg = f"no {name!r} in adata.obs; rerun lava.tl.localities(adata, key_added={key!r})."
            raise KeyError(msg)
    neigh, local = (adata.obs[name].to_numpy(dtype=np.float64) for name in names)
    diff = local - neigh
    s = u.point_size(len(Z)) if size is None else size
    both = np.concatenate([neigh, local])
    lo, hi = u.color_limits(vmin, vmax, both, default_vmin=0.0, default_vmax=float(np.nanmax(both)))
    shared = Normalize(vmin=lo, vmax=hi)
    span = float(np.nanmax(np.abs(diff))) or 1.0
    diverging = TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)

    fig, axes = u.grid(3, 3, panel_size=(4.0, 3.6))
    loss = loc.loss if loc.loss is not None else float(np.sum(np.abs(diff)))
    panels = [(neigh, shared, cmap), (local, shared, cmap), (diff, diverging, "RdBu_r")]
    defaults = ["neighbourhood centrality", "locality centrality", f"locality − neighbourhood (loss {loss:.3g})"]
    for panel, (v, norm, cm) in zip(axes, panels, strict=True):
        order = np.argsort(np.abs(v - (0.0 if norm is diverging else 1.0)), kind="stable")
        art = panel.scatter(
            Z[order, 0], Z[order, 1], c=v[order], cmap=cm, norm=norm, s=s, linewidths=0, rasterized=True
        )
        panel.scatter(probes[:, 0], probes[:, 1], marker="x", c="black", s=u.probe_size(len(probes)) / 2, linewidths=1)
        u.style_embedding(panel, basis_name, frameon=frameon)
        fig.colorbar(art, ax=panel, shrink=0.7)
    u.set_titles(fig, axes, title, defaults)
    return u.finish(fig, axes, show=show, return_fig=return_fig, ax_given=False, save=save, name="centrality")


@doc_params(**u.PLOT_DOCS)
def copresence(
    adata: AnnData,
    *,
    basis: str | None = None,
    min_total: float = 0.5,
    bins: int = 30,
    cmap: str = "magma",
    size: float | None = None,
    title: str | list[str] | None = None,
    frameon: bool | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    show: bool | None = None,
    return_fig: bool = False,
) -> list[Axes] | Figure | None:
    """Co-presence of modules per locality: Shannon entropy (bits) of its presences scaled to sum 1.

    0 means one module explains the locality; ``log2(M)`` means all modules are equally present. Left: the
    entropy at each probe over the embedding (probes whose raw presence sum is below ``min_total`` are left
    hollow, as their entropy would be inflated by scaling). Right: the distribution, with its mean.

    Parameters
    ----------
    {adata}
    basis
        Embedding to draw on; default the one :func:`lava.tl.localities` used.
    min_total
        Localities whose presence sum is below this are ignored (paper: 0.5).
    bins
        Histogram bins.
    cmap
        Colour map of the entropy.
    size
        Marker size of the probes.
    {title_panels}
    {frameon}
    {save}
    {key}
    {show_panels}

    Returns
    -------
    list of Axes, Figure or None
        The two Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    from matplotlib.colors import Normalize

    u.check_title(title, 2)
    u.check_save(save)
    presence = np.asarray(read_amf(adata, key, require=("presence",)).presence, dtype=np.float64)
    basis_name, Z, probes = u.embedding_and_probes(adata, read_localities(adata, key), basis)
    if len(probes) != len(presence):
        msg = f"{len(probes)} probes but presence for {len(presence)} localities; rerun lava.tl.amf(adata)."
        raise ValueError(msg)
    entropy = u.copresence(presence, min_total=min_total)
    ok = np.isfinite(entropy)
    M = presence.shape[1]
    norm = Normalize(vmin=0.0, vmax=max(np.log2(M), 1e-9))
    s = u.probe_size(len(probes)) if size is None else size

    fig, axes = u.grid(2, 2, panel_size=(4.2, 3.6))
    left, right = axes
    u.draw_background(left, Z)
    left.scatter(probes[~ok, 0], probes[~ok, 1], s=s, facecolors="none", edgecolors="grey", linewidths=0.6)
    order = np.flatnonzero(ok)[np.argsort(entropy[ok], kind="stable")]
    art = left.scatter(
        probes[order, 0],
        probes[order, 1],
        c=entropy[order],
        cmap=cmap,
        norm=norm,
        s=s,
        edgecolors="black",
        linewidths=0.3,
    )
    fig.colorbar(art, ax=left, shrink=0.7, label="entropy (bits)")
    u.style_embedding(left, basis_name, frameon=frameon)

    values = entropy[ok]
    right.hist(values, bins=bins, range=(0.0, float(norm.vmax)), color="0.4")
    if values.size:
        mean, sd = float(values.mean()), float(values.std())
        right.axvline(mean, color="tab:orange", linestyle="--", linewidth=1.5)
        summary = f"{mean:.2f} ± {sd:.2f} bits ({values.size} of {len(entropy)} localities)"
    else:
        summary = f"no locality has presence sum ≥ {min_total}"
    right.set_xlabel("co-presence entropy (bits)")
    right.set_ylabel("localities")
    u.set_titles(fig, axes, title, ["co-presence entropy per locality", summary])
    return u.finish(fig, axes, show=show, return_fig=return_fig, ax_given=False, save=save, name="copresence")
