"""Plots over the embedding: module presence, centralities, co-presence."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .._docs import doc_params
from .._store import get_step, obs_keys
from . import _utils as u


@doc_params()
def modules(
    adata,
    *,
    modules=None,
    basis: str | None = None,
    level: Literal["probe", "sample"] = "probe",
    ncols: int = 4,
    cmap: str = "viridis",
    size: float | None = None,
    vmax: float | None = None,
    key: str = "lava",
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Presence of each module over the embedding, one panel per module.

    Every sample is drawn in light grey; on top, either the probes (``level="probe"``) coloured by the module's
    presence in their locality, or the samples (``level="sample"``) coloured by ``adata.obsm["<key>_presence"]``
    (samples with presence 0, including those in no locality, stay grey). All panels share one colour scale
    ``[0, vmax]`` and one colorbar, so modules can be compared by eye. Each title gives the module's total
    presence (sum over localities).

    Parameters
    ----------
    {adata}
    modules
        Module numbers to draw (int or list); default all.
    basis
        Embedding to draw on (``"umap"`` or ``"X_umap"``); default the one :func:`lava.tl.localities` used. With
        more than two dimensions, the first two are drawn.
    level
        ``"probe"``: one dot per locality at its probe; ``"sample"``: per-sample presence.
    ncols
        Panels per row.
    cmap
        Colour map of presence.
    size
        Marker size of the coloured dots (default depends on their number).
    vmax
        Top of the shared colour scale; default the largest presence drawn.
    {key}
    {show}

    Returns
    -------
    list of Axes, Axes, Figure or None
        The list of panel Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if level not in ("probe", "sample"):
        msg = f"level must be 'probe' or 'sample', got {level!r}."
        raise ValueError(msg)
    chosen = u.resolve_modules(adata, key, modules)
    u.check_single_ax(ax, len(chosen), "lava.pl.modules")
    basis_name, Z, probes = u.embedding_and_probes(adata, key, basis)
    presence = u.presence_matrix(adata, key)
    values = u.sample_presence(adata, key) if level == "sample" else presence
    shown = values[:, chosen]
    top = float(np.max(shown)) if vmax is None else float(vmax)
    norm = Normalize(vmin=0.0, vmax=top if top > 0 else 1.0)
    colormap = plt.get_cmap(cmap)

    if ax is None:
        fig, axes = u.grid(len(chosen), ncols)
    else:
        fig, axes = ax.figure, [ax]
    if size is None:
        size = u.probe_size(len(probes)) if level == "probe" else u.point_size(len(Z)) * 1.5
    for panel, m in zip(axes, chosen, strict=True):
        v = values[:, m]
        # cells drawn in colour need no grey dot underneath (halves the points for big data)
        u.draw_background(panel, Z if level == "probe" else Z[v <= 0], size=u.point_size(len(Z)))
        if level == "probe":
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
        else:
            keep = np.flatnonzero(v > 0)
            keep = keep[np.argsort(v[keep], kind="stable")]
            panel.scatter(
                Z[keep, 0], Z[keep, 1], c=v[keep], cmap=colormap, norm=norm, s=size, linewidths=0, rasterized=True
            )
        panel.set_title(f"module {m} (total presence {presence[:, m].sum():.1f})")
        u.style_embedding(panel, basis_name)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
    fig.colorbar(sm, ax=axes, shrink=0.6 if len(axes) > 1 else 0.9, label="presence")
    return u.finish(fig, axes if ax is None else axes[0], show=show, return_fig=return_fig, ax_given=ax is not None)


@doc_params()
def centrality(
    adata,
    *,
    basis: str | None = None,
    cmap: str = "viridis",
    size: float | None = None,
    key: str = "lava",
    show: bool | None = None,
    return_fig: bool = False,
):
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
    {key}
    {show_panels}

    Returns
    -------
    list of Axes, Figure or None
        The three Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm

    loc = get_step(adata, key, "localities")
    basis_name, Z, probes = u.embedding_and_probes(adata, key, basis)
    names = obs_keys(key)
    for name in names:
        if name not in adata.obs:
            msg = f"no {name!r} in adata.obs; rerun lava.tl.localities(adata, key_added={key!r})."
            raise KeyError(msg)
    neigh, local = (adata.obs[name].to_numpy(dtype=np.float64) for name in names)
    diff = local - neigh
    s = u.point_size(len(Z)) if size is None else size
    top = float(np.nanmax(np.concatenate([neigh, local])))
    shared = Normalize(vmin=0.0, vmax=top if top > 0 else 1.0)
    span = float(np.nanmax(np.abs(diff))) or 1.0
    diverging = TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)

    fig, axes = u.grid(3, 3, panel_size=(4.0, 3.6))
    loss = float(loc["loss"]) if "loss" in loc else float(np.sum(np.abs(diff)))
    panels = [
        (neigh, shared, cmap, "neighbourhood centrality"),
        (local, shared, cmap, "locality centrality"),
        (diff, diverging, "RdBu_r", f"locality − neighbourhood (loss {loss:.3g})"),
    ]
    for panel, (v, norm, cm, title) in zip(axes, panels, strict=True):
        order = np.argsort(np.abs(v - (0.0 if norm is diverging else 1.0)), kind="stable")
        art = panel.scatter(
            Z[order, 0], Z[order, 1], c=v[order], cmap=cm, norm=norm, s=s, linewidths=0, rasterized=True
        )
        panel.scatter(probes[:, 0], probes[:, 1], marker="x", c="black", s=u.probe_size(len(probes)) / 2, linewidths=1)
        panel.set_title(title)
        u.style_embedding(panel, basis_name)
        fig.colorbar(art, ax=panel, shrink=0.7)
    return u.finish(fig, axes, show=show, return_fig=return_fig, ax_given=False)


@doc_params()
def copresence(
    adata,
    *,
    basis: str | None = None,
    min_total: float = 0.5,
    bins: int = 30,
    cmap: str = "magma",
    size: float | None = None,
    key: str = "lava",
    show: bool | None = None,
    return_fig: bool = False,
):
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
    {key}
    {show_panels}

    Returns
    -------
    list of Axes, Figure or None
        The two Axes (``show=False``), the Figure (``return_fig=True``) or None.
    """
    from matplotlib.colors import Normalize

    presence = u.presence_matrix(adata, key)
    basis_name, Z, probes = u.embedding_and_probes(adata, key, basis)
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
    left.set_title("co-presence entropy per locality")
    u.style_embedding(left, basis_name)

    values = entropy[ok]
    right.hist(values, bins=bins, range=(0.0, float(norm.vmax)), color="0.4")
    if values.size:
        mean, sd = float(values.mean()), float(values.std())
        right.axvline(mean, color="tab:orange", linestyle="--", linewidth=1.5)
        right.set_title(f"{mean:.2f} ± {sd:.2f} bits ({values.size} of {len(entropy)} localities)")
    else:
        right.set_title(f"no locality has presence sum ≥ {min_total}")
    right.set_xlabel("co-presence entropy (bits)")
    right.set_ylabel("localities")
    return u.finish(fig, axes, show=show, return_fig=return_fig, ax_given=False)
