"""Plots of what a module (or a locality) correlates: image-shaped heatmaps, pair graphs, pair matrices."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from .._store import read_amf, read_correlations
from . import _utils as u

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _image_shape(adata, image_shape) -> tuple[int, int]:
    if image_shape is None:
        image_shape = adata.uns.get("image_shape", (28, 28))
    shape = tuple(int(v) for v in np.asarray(image_shape).ravel())
    if len(shape) != 2 or min(shape) < 1:
        msg = f"image_shape must be (height, width) with positive sizes, got {image_shape!r}."
        raise ValueError(msg)
    if shape[0] * shape[1] != adata.n_vars:
        msg = (
            f"image_shape {shape} has {shape[0] * shape[1]} pixels but adata has {adata.n_vars} features; "
            "pass image_shape=(height, width) of the images (features must be pixels in row-major order)."
        )
        raise ValueError(msg)
    return shape


def _check_lines(threshold, power, max_lines) -> None:
    if isinstance(power, bool) or not isinstance(power, int | float | np.number) or power <= 0:
        msg = f"power must be a positive number, got {power!r}."
        raise ValueError(msg)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number) or threshold < 0:
        msg = f"threshold must be a number >= 0, got {threshold!r}."
        raise ValueError(msg)
    if isinstance(max_lines, bool) or not isinstance(max_lines, int | np.integer) or max_lines < 0:
        msg = f"max_lines must be an integer >= 0, got {max_lines!r}."
        raise ValueError(msg)


def draw_image(
    ax,
    values: np.ndarray,
    feature_index: np.ndarray,
    shape: tuple[int, int],
    *,
    threshold: float,
    power: float,
    max_lines: int,
    cmap: str,
    line_color: str,
    linewidth: float,
):
    """Heatmap of per-pixel correlation sums with lines between correlated pixels; returns the LineCollection."""
    from matplotlib.collections import LineCollection

    D = len(feature_index)
    height, width = shape
    heat = np.zeros(height * width)
    heat[feature_index] = u.per_feature_sums(values, D)
    ax.imshow(heat.reshape(shape), cmap=cmap, interpolation="nearest", vmin=0.0)

    strength = np.power(values, power)
    keep = np.flatnonzero(strength >= threshold)
    keep = keep[np.argsort(-strength[keep], kind="stable")][:max_lines]
    i, j = u.pair_indices(D)
    pi, pj = feature_index[i[keep]], feature_index[j[keep]]
    segments = np.stack(
        [np.column_stack([pi % width, pi // width]), np.column_stack([pj % width, pj // width])], axis=1
    ).astype(np.float64)
    lines = LineCollection(segments, linewidths=linewidth * strength[keep], colors=line_color, alpha=0.7)
    ax.add_collection(lines)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    return lines


@doc_params(**u.PLOT_DOCS)
def module_image(
    adata: AnnData,
    module: int | None = None,
    *,
    locality: int | None = None,
    image_shape: tuple[int, int] | None = None,
    threshold: float = 0.1,
    power: float = 3,
    max_lines: int = 2000,
    ncols: int = 3,
    cmap: str = "Reds",
    line_color: str = "tab:blue",
    linewidth: float = 2.0,
    title: str | list[str] | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | list[Axes] | Figure | None:
    """Draw a module (or one locality's correlations) of image-shaped features as the paper does.

    Each pixel's colour is the sum of the correlations it takes part in (relative within the panel). Lines join
    correlated pixels: correlations are raised to ``power`` (3), those below ``threshold`` (0.1) after that are
    dropped, and each line's width is proportional to the raised value. At most ``max_lines`` lines are drawn,
    strongest first. Features must be the pixels of ``image_shape`` in row-major order (``adata.var`` order);
    features left out of the correlations count as 0.

    Parameters
    ----------
    {adata}
    module
        Module to draw; None (and no ``locality``) draws every module in a grid.
    locality
        Draw this locality's stored correlations instead of a module.
    image_shape
        ``(height, width)``; default ``adata.uns["image_shape"]`` if present, else (28, 28).
    threshold
        Lines below this (after raising to ``power``) are not drawn.
    power
        Exponent applied to correlations before thresholding (sharpens the picture).
    max_lines
        Draw at most this many lines per panel (the strongest).
    ncols
        Panels per row when drawing every module.
    cmap
        Colour map of the pixel sums.
    line_color, linewidth
        Colour of the lines and the width of a line of strength 1.
    {title_panels}
    {save}
    {key}
    {show}

    Returns
    -------
    Axes, list of Axes, Figure or None
        The Axes (one panel) or list of Axes (all modules) when ``show=False``; the Figure with ``return_fig=True``;
        else None. Each panel holds one :class:`~matplotlib.collections.LineCollection` with the lines.
    """
    if module is not None and locality is not None:
        msg = "pass module=... or locality=..., not both."
        raise ValueError(msg)
    _check_lines(threshold, power, max_lines)
    corr = read_correlations(adata, key, require=("features",) + (("values",) if locality is not None else ()))
    _, feature_index = u.correlation_features(adata, corr)
    shape = _image_shape(adata, image_shape)
    if locality is not None:
        values_all = corr.values
        i = u.check_locality(locality, len(values_all))
        panels = [(np.asarray(values_all[i], dtype=np.float64), f"locality {i}")]
    else:
        fit = read_amf(adata, key, require=("modules",))
        mods = np.asarray(fit.modules, dtype=np.float64)
        chosen = u.resolve_modules(fit.n_modules, module)
        panels = [(mods[m], f"module {m}") for m in chosen]
    u.check_single_ax(ax, len(panels), "lava.pl.module_image with module=None")
    u.check_title(title, len(panels))
    u.check_save(save)
    if ax is not None:
        fig, axes = ax.figure, [ax]
    elif len(panels) == 1:
        fig, one = u.new_axes(None, figsize=(3.6, 3.6))
        axes = [one]
    else:
        fig, axes = u.grid(len(panels), ncols, panel_size=(3.0, 3.0))
    for panel, (values, _) in zip(axes, panels, strict=True):
        draw_image(
            panel,
            values,
            feature_index,
            shape,
            threshold=threshold,
            power=power,
            max_lines=max_lines,
            cmap=cmap,
            line_color=line_color,
            linewidth=linewidth,
        )
    u.set_titles(fig, axes, title, [text for _, text in panels])
    result = axes[0] if len(axes) == 1 and (module is not None or locality is not None) else axes
    return u.finish(
        fig, result, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="module_image"
    )


def spring_layout(
    n: int, edges: np.ndarray, weights: np.ndarray, *, iterations: int = 200, gravity: float = 1.0
) -> np.ndarray:
    """Deterministic Fruchterman-Reingold layout in the unit square, started from a circle (n x 2)."""
    angle = 2 * np.pi * np.arange(n) / max(n, 1)
    pos = np.column_stack([np.cos(angle), np.sin(angle)]) * 0.5
    if n < 3 or len(edges) == 0:
        return pos
    k = 1.0 / np.sqrt(n)
    w = weights / weights.max()
    temperature = 0.1
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=-1), 1e-3)
        force = (delta / dist[..., None] * (k * k / dist)[..., None]).sum(axis=1)  # repulsion between all nodes
        d_edge = pos[edges[:, 0]] - pos[edges[:, 1]]
        length = np.maximum(np.linalg.norm(d_edge, axis=1), 1e-3)
        pull = d_edge / length[:, None] * (w * length * length / k)[:, None]  # attraction along edges
        np.add.at(force, edges[:, 0], -pull)
        np.add.at(force, edges[:, 1], pull)
        force -= gravity * pos  # keeps disconnected pieces of the graph from drifting apart
        step = np.linalg.norm(force, axis=1)
        pos += force / np.maximum(step, 1e-9)[:, None] * np.minimum(step, temperature)[:, None]
        temperature *= 0.98
    pos -= pos.mean(axis=0)
    return pos / max(np.abs(pos).max(), 1e-9)


@doc_params(**u.PLOT_DOCS)
def module_network(
    adata: AnnData,
    module: int,
    *,
    top: int = 30,
    layout: str = "spring",
    node_color: str = "tab:orange",
    edge_color: str = "tab:blue",
    fontsize: float = 8,
    title: str | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Draw the strongest feature pairs of a module as a graph.

    Nodes are the features of the ``top`` strongest pairs, labelled with their names and sized by their summed
    correlation in the drawn pairs; edges join the pairs, their width proportional to the module's correlation.
    Labels that would overlap are pushed apart (a thin grey line then joins a label to its node).

    Parameters
    ----------
    {adata}
    module
        Module to draw (0..M-1).
    top
        Number of strongest pairs to draw (pairs with correlation 0 are never drawn).
    layout
        ``"spring"`` (force-directed, deterministic) or ``"circle"``.
    node_color, edge_color
        Colours of the nodes and edges.
    fontsize
        Size of the feature labels.
    {title}
    {save}
    {key}
    {show}

    Returns
    -------
    Axes, Figure or None
        The Axes (``show=False``), the Figure (``return_fig=True``) or None. Edges are one
        :class:`~matplotlib.collections.LineCollection`; each node label is an
        :class:`~matplotlib.text.Annotation` whose ``xy`` is its node.
    """
    from matplotlib.collections import LineCollection

    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        msg = f"top must be a positive integer, got {top!r}."
        raise ValueError(msg)
    if layout not in ("spring", "circle"):
        msg = f"layout must be 'spring' or 'circle', got {layout!r}."
        raise ValueError(msg)
    u.check_title(title, 1)
    u.check_save(save)
    mods = np.asarray(read_amf(adata, key, require=("modules",)).modules, dtype=np.float64)
    m = u.check_module(module, len(mods))
    names, _ = u.correlation_features(adata, read_correlations(adata, key, require=("features",)))
    values = mods[m]
    D = u.n_features_from_pairs(len(values))
    order = np.argsort(-values, kind="stable")[:top]
    order = order[values[order] > 0]
    i, j = u.pair_indices(D)
    nodes, inverse = np.unique(np.concatenate([i[order], j[order]]), return_inverse=True)
    edges = inverse.reshape(2, -1).T
    weights = values[order]

    fig, ax_ = u.new_axes(ax, figsize=(5.5, 5.0))
    if len(order):
        pos = spring_layout(len(nodes), edges if layout == "spring" else edges[:0], weights)
        lines = LineCollection(
            pos[edges], linewidths=0.5 + 4.0 * weights / weights.max(), colors=edge_color, alpha=0.6, zorder=1
        )
        ax_.add_collection(lines)
        n = len(nodes)
        strength = np.bincount(edges[:, 0], weights, minlength=n) + np.bincount(edges[:, 1], weights, minlength=n)
        ax_.scatter(
            pos[:, 0], pos[:, 1], s=15 + 85 * strength / strength.max(), c=node_color, edgecolors="black", zorder=2
        )
        labels = [
            ax_.annotate(
                name, (x, y), xytext=(0, 6), textcoords="offset points", fontsize=fontsize, ha="center", zorder=3
            )
            for (x, y), name in zip(pos, names[nodes], strict=True)
        ]
        ax_.set_xlim(-1.25, 1.25)
        ax_.set_ylim(-1.2, 1.25)
    u.set_titles(fig, [ax_], title, [f"module {m}: top {len(order)} pairs"])
    ax_.set_axis_off()
    if len(order):
        separate_labels(ax_, labels)
    return u.finish(
        fig, ax_, show=show, return_fig=return_fig, ax_given=ax is not None, save=save, name="module_network"
    )


def separate_labels(ax, labels, *, pad: float = 1.5, iterations: int = 300) -> None:
    """Move annotation labels (offsets in points from their ``xy``) until no two bounding boxes overlap.

    Each round pushes every overlapping pair apart along the axis where they overlap least, by half the overlap
    each; deterministic. Runs after one draw, so the layout (and the Axes' size) is final; labels are left out of
    the layout so moving them does not change it. A label moved away from its node gets a thin grey line to it.
    """
    fig = ax.figure
    for label in labels:
        label.set_in_layout(False)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    px_to_pt = 72.0 / fig.dpi
    start = np.array([label.xyann for label in labels], dtype=np.float64)
    offsets = start.copy()
    for _ in range(iterations):
        boxes = np.array([label.get_window_extent(renderer).extents for label in labels]) + np.array(
            [-pad, -pad, pad, pad]
        )
        over_x = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0])
        over_y = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1])
        clash = np.triu((over_x > 0) & (over_y > 0), k=1)
        if not clash.any():
            break
        centre = np.column_stack([boxes[:, [0, 2]].mean(axis=1), boxes[:, [1, 3]].mean(axis=1)])
        move = np.zeros_like(offsets)
        for i, j in zip(*np.nonzero(clash), strict=True):
            axis = 0 if over_x[i, j] < over_y[i, j] else 1
            amount = (over_x if axis == 0 else over_y)[i, j] / 2 + 0.5
            side = np.sign(centre[i, axis] - centre[j, axis]) or (1.0 if i < j else -1.0)
            move[i, axis] += side * amount
            move[j, axis] -= side * amount
        offsets += move * px_to_pt
        for label, offset in zip(labels, offsets, strict=True):
            label.xyann = tuple(offset)
    for label, offset, first in zip(labels, offsets, start, strict=True):
        shift = offset - first
        if np.hypot(*shift) > 6.0:  # points: the label left its node's side
            x, y = label.xy
            anchor = ax.transData.inverted().transform(ax.transData.transform((x, y)) + offset / px_to_pt)
            ax.plot([x, anchor[0]], [y, anchor[1]], color="0.6", linewidth=0.5, zorder=2.5)


@doc_params(**u.PLOT_DOCS)
def locality(
    adata: AnnData,
    locality: int,
    *,
    image_shape: tuple[int, int] | None = None,
    max_features: int = 40,
    cmap: str = "viridis",
    threshold: float = 0.1,
    power: float = 3,
    max_lines: int = 2000,
    vmin: float | str | None = None,
    vmax: float | str | None = None,
    title: str | list[str] | None = None,
    save: bool | str | None = None,
    key: str = "lava",
    show: bool | None = None,
    return_fig: bool = False,
) -> list[Axes] | Figure | None:
    """One locality's correlations beside their reconstruction from the stored modules and presence.

    The reconstruction is AMF's: for every pair, the largest presence x module value over modules. A third panel
    shows the locality's presence of each module (its co-present modules). With ``image_shape`` the two matrices are
    drawn as images (see :func:`module_image`); otherwise as symmetric feature x feature heatmaps limited to the
    ``max_features`` features with the largest correlation sums in this locality, on one colour scale.

    Parameters
    ----------
    {adata}
    locality
        Locality number (row of the stored correlations).
    image_shape
        ``(height, width)`` to draw image-shaped features as images; default: heatmaps.
    max_features
        Heatmaps show at most this many features.
    cmap
        Colour map of the heatmaps.
    threshold, power, max_lines
        Line options of the image mode (see :func:`module_image`).
    {vlim}
        The scale the two heatmaps share (percentiles over both); default 0 and their maximum.
    {title_panels}
    {save}
    {key}
    {show_panels}

    Returns
    -------
    list of Axes, Figure or None
        The three Axes (correlations, reconstruction, presence) when ``show=False``; the Figure with
        ``return_fig=True``; else None.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if isinstance(max_features, bool) or not isinstance(max_features, int | np.integer) or max_features < 2:
        msg = f"max_features must be an integer >= 2, got {max_features!r}."
        raise ValueError(msg)
    _check_lines(threshold, power, max_lines)
    u.check_title(title, 3)
    u.check_save(save)
    corr = read_correlations(adata, key)
    amf = read_amf(adata, key)
    values_all = corr.values
    i = u.check_locality(locality, len(values_all))
    names, feature_index = u.correlation_features(adata, corr)
    C = np.asarray(values_all[i], dtype=np.float64)
    presence = np.asarray(amf.presence, dtype=np.float64)
    modules_ = np.asarray(amf.modules, dtype=np.float64)
    C_hat = u.reconstruct_one(presence[i], modules_)
    if amf.locality_similarity is not None:
        similarity = float(amf.locality_similarity[i])
    else:
        denom = np.linalg.norm(C) * np.linalg.norm(C_hat)
        similarity = float(C @ C_hat / denom) if denom > 0 else 0.0
    shape = _image_shape(adata, image_shape) if image_shape is not None else None

    fig, axes = u.grid(3, 3, panel_size=(3.8, 3.6))
    if shape is not None:
        for panel, values in zip(axes[:2], (C, C_hat), strict=True):
            draw_image(
                panel,
                values,
                feature_index,
                shape,
                threshold=threshold,
                power=power,
                max_lines=max_lines,
                cmap="Reds",
                line_color="tab:blue",
                linewidth=2.0,
            )
    else:
        D = len(names)
        sums = u.per_feature_sums(C, D) + u.per_feature_sums(C_hat, D)
        show_idx = np.sort(np.argsort(-sums, kind="stable")[:max_features])
        mats = [u.square(v, D)[np.ix_(show_idx, show_idx)] for v in (C, C_hat)]
        both = np.concatenate([m.ravel() for m in mats])
        lo, hi = u.color_limits(vmin, vmax, both, default_vmin=0.0, default_vmax=float(both.max()) or 1.0)
        norm = Normalize(vmin=lo, vmax=hi)
        for panel, mat in zip(axes[:2], mats, strict=True):
            panel.imshow(mat, cmap=cmap, norm=norm, interpolation="nearest")
            if len(show_idx) <= 40:
                ticks = np.arange(len(show_idx))
                panel.set_xticks(ticks, names[show_idx], rotation=90, fontsize=6)
                panel.set_yticks(ticks, names[show_idx], fontsize=6)
            else:
                panel.set_xticks([])
                panel.set_yticks([])
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[:2], shrink=0.7, label="|Spearman r|")
    bars = axes[2]
    M = presence.shape[1]
    bars.bar(np.arange(M), presence[i], color="0.4")
    bars.set_xticks(np.arange(M))
    bars.set_xlabel("module")
    bars.set_ylabel("presence")
    bars.set_ylim(0, max(1.0, float(presence[i].max())))
    defaults = [f"locality {i}: correlations", f"reconstruction (cosine {similarity:.2f})", "presence of each module"]
    u.set_titles(fig, axes, title, defaults)
    return u.finish(fig, axes, show=show, return_fig=return_fig, ax_given=False, save=save, name="locality")
