"""Shared plumbing for the plots: stored-result access, figure layout, scanpy's show/return convention."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .._store import Correlations, Localities
from .._validate import get_embedding, resolve_basis

#: Colour of the cells drawn behind probes and presence.
BACKGROUND = "#d9d9d9"

#: Presence colours: light grey (absent, as the background) through reds to dark red (present), so that a
#: presence of 0.001 reads as absent rather than as the dark end of viridis.
PRESENCE_COLORS = ("#e0e0e0", "#fcbba1", "#fb6a4a", "#cb181d", "#67000d")

#: Docstring fragments of the scanpy-style plot arguments (``@doc_params(**PLOT_DOCS)``).
PLOT_DOCS = {
    "save": """\
save
    Save the figure as scanpy does: ``True`` writes ``sc.settings.figdir / "lava_<plot>.<format>"`` (the plot's
    function name, ``sc.settings.file_format_figs``); a str is appended to that name and its ending picks the
    file type, e.g. ``save="_kidney.pdf"`` writes ``lava_<plot>_kidney.pdf``.""",
    "frameon": """\
frameon
    Draw the frame and axis labels of the embedding; default scanpy's setting (``sc.set_figure_params(frameon=...)``,
    frame on).""",
    "title": """\
title
    The plot's title (default: a description of what is drawn).""",
    "title_panels": """\
title
    One title per panel (a list), or one str: the title of a single panel, the figure's title over several.""",
    "vlim": """\
vmin, vmax
    Bounds of the colour scale: a number, or a percentile of the values drawn written ``"p99"`` (``"p1"``,
    ``"p99.5"``), as in scanpy.""",
}

#: File types ``save=`` recognises by the name's ending (as scanpy).
SAVE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "tif", "tiff", "eps", "ps")


def presence_cmap(cmap=None):
    """Return the presence colour map: lava's grey-to-red map when ``cmap`` is None, else matplotlib's ``cmap``."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    if cmap is None:
        return LinearSegmentedColormap.from_list("lava_presence", PRESENCE_COLORS)
    return plt.get_cmap(cmap)


def resolve_limit(value, data: np.ndarray, name: str) -> float | None:
    """Read a colour-scale bound as scanpy does: None, a number, or ``"pNN"`` (the NN-th percentile of ``data``)."""
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"p(\d+(?:\.\d+)?)", value)
        if match is None or float(match.group(1)) > 100:
            msg = f"{name} must be a number or a percentile such as 'p99' (p0..p100), got {value!r}."
            raise ValueError(msg)
        finite = np.asarray(data, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        return float(np.percentile(finite, float(match.group(1)))) if finite.size else None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not np.isfinite(value):
        msg = f"{name} must be a number or a percentile such as 'p99', got {value!r}."
        raise ValueError(msg)
    return float(value)


def color_limits(vmin, vmax, data: np.ndarray, *, default_vmin: float | None, default_vmax: float | None):
    """``(vmin, vmax)`` from scanpy-style bounds with defaults; a degenerate scale is widened so it can be drawn."""
    lo = resolve_limit(vmin, data, "vmin")
    hi = resolve_limit(vmax, data, "vmax")
    lo = default_vmin if lo is None else lo
    hi = default_vmax if hi is None else hi
    if lo is not None and hi is not None and hi <= lo:
        if vmin is not None and vmax is not None:
            msg = f"vmax ({hi:g}) must be above vmin ({lo:g})."
            raise ValueError(msg)
        hi = lo + 1.0
    return lo, hi


def check_save(save) -> None:
    """Validate ``save`` before anything is drawn."""
    if save is None or isinstance(save, bool | str):
        return
    msg = f"save must be True, a file name suffix (str) or None, got {save!r}."
    raise TypeError(msg)


def save_path(name: str, save) -> Path | None:
    """Where ``save=`` writes, as scanpy: ``sc.settings.figdir / f"{name}{suffix}.{ext}"``.

    ``save=True`` uses the plot's name and ``sc.settings.file_format_figs``; a string is appended to the name and
    its ending picks the file type (``"_kidney.pdf"``), else the default type is used.
    """
    import scanpy as sc

    if save is None or save is False:
        return None
    suffix = "" if save is True else str(save)
    ext = str(sc.settings.file_format_figs)
    for fmt in SAVE_FORMATS:
        if suffix.lower().endswith(f".{fmt}"):
            suffix, ext = suffix[: -len(fmt) - 1], fmt
            break
    return Path(sc.settings.figdir) / f"lava_{name}{suffix}.{ext}"


def finish(fig, axes, *, show: bool | None, return_fig: bool, ax_given: bool, save=None, name: str = "plot"):
    """Apply scanpy's convention: save if asked; Figure if ``return_fig``; None after showing; else the Axes."""
    import matplotlib.pyplot as plt

    path = save_path(name, save)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    if return_fig:
        return fig
    if show is None:
        show = not ax_given
    if show:
        plt.show()
        if not ax_given:
            plt.close(fig)  # as scanpy: a saved and shown figure is done with
        return None
    return axes


def set_titles(fig, axes, title, defaults: list[str]) -> None:
    """Title the panels: ``defaults`` unless ``title`` is given (checked by :func:`check_title` before drawing).

    ``title`` is one str (a single panel's title; the figure's title over several panels) or one str per panel.
    """
    if title is None:
        titles = defaults
    elif isinstance(title, str):
        titles = [title] if len(axes) == 1 else defaults
        if len(axes) > 1:
            fig.suptitle(title)
    else:
        titles = list(title)
    for panel, text in zip(axes, titles, strict=True):
        panel.set_title(text)


def check_title(title, n_panels: int) -> None:
    """Validate ``title`` before anything is drawn."""
    if title is None or isinstance(title, str):
        return
    try:
        n = len(title)
    except TypeError:
        n = None
    if n != n_panels or not all(isinstance(t, str) for t in title):
        msg = f"title must be a str or a list of {n_panels} str (one per panel), got {title!r}."
        raise ValueError(msg)


def check_single_ax(ax, n_panels: int, what: str) -> None:
    if ax is not None and n_panels != 1:
        msg = f"{what} draws {n_panels} panels; pass ax=None (ax works for single-panel plots only)."
        raise ValueError(msg)


def new_axes(ax, *, figsize=(4.5, 4.0)):
    """Return ``(fig, ax)``: the given Axes and its figure, or a new single-panel figure."""
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def grid(n_panels: int, ncols: int, *, panel_size=(3.6, 3.2), sharex=False, sharey=False):
    """Make a constrained-layout grid with exactly ``n_panels`` Axes (unused cells removed); returns ``(fig, [Axes])``."""
    import matplotlib.pyplot as plt

    if isinstance(ncols, bool) or not isinstance(ncols, int | np.integer) or ncols < 1:
        msg = f"ncols must be a positive integer, got {ncols!r}."
        raise ValueError(msg)
    ncols = int(min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig, axs = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        squeeze=False,
        layout="constrained",
        sharex=sharex,
        sharey=sharey,
    )
    flat = list(axs.ravel())
    for extra in flat[n_panels:]:
        extra.remove()
    return fig, flat[:n_panels]


# ---------------------------------------------------------------------------------------------------------------------
# stored results


def resolve_modules(n_modules: int, modules) -> list[int]:
    """Return the module numbers to draw: None = all, an int, or a sequence of ints in 0..M-1."""
    if modules is None:
        return list(range(n_modules))
    seq = [modules] if isinstance(modules, int | np.integer) else list(modules)
    out = []
    for m in seq:
        out.append(check_module(m, n_modules))
    if not out:
        msg = "modules is empty; pass None for all modules or a list of module numbers."
        raise ValueError(msg)
    return out


def check_module(module, M: int) -> int:
    if isinstance(module, bool) or not isinstance(module, int | np.integer):
        msg = f"module must be an integer in 0..{M - 1}, got {module!r}."
        raise TypeError(msg)
    if not 0 <= module < M:
        msg = f"module {module} does not exist; the stored fit has modules 0..{M - 1}."
        raise ValueError(msg)
    return int(module)


def check_locality(locality, n_loc: int) -> int:
    if isinstance(locality, bool) or not isinstance(locality, int | np.integer):
        msg = f"locality must be an integer in 0..{n_loc - 1}, got {locality!r}."
        raise TypeError(msg)
    if not 0 <= locality < n_loc:
        msg = f"locality {locality} does not exist; there are {n_loc} localities (0..{n_loc - 1})."
        raise ValueError(msg)
    return int(locality)


def correlation_features(adata, corr: Correlations) -> tuple[np.ndarray, np.ndarray]:
    """``(names, var positions)`` of the features whose pairs were correlated."""
    names = corr.need("features")
    index = corr.feature_index if corr.feature_index is not None else adata.var_names.get_indexer(names)
    return names, index


def embedding_and_probes(adata, loc: Localities, basis: str | None) -> tuple[str, np.ndarray, np.ndarray]:
    """Return the embedding (first two dimensions) and the probes on it; ``basis`` defaults to the one localities used."""
    stored = loc.basis
    if basis is None:
        if stored is None:
            msg = "no basis stored by lava.tl.localities; pass basis=... (e.g. 'umap')."
            raise KeyError(msg)
        basis = stored
    name, Z = get_embedding(adata, basis)
    if Z.shape[1] < 2:
        msg = f"adata.obsm[{name!r}] has {Z.shape[1]} dimension; plots need at least 2."
        raise ValueError(msg)
    probes = loc.probes
    same = False
    if stored is not None:
        try:
            same = resolve_basis(adata, stored) == name
        except KeyError:
            same = False
    if not same or probes is None or probes.ndim != 2 or probes.shape[1] != Z.shape[1]:
        # probes live in the basis localities were placed in; elsewhere, draw them at their samples' mean position
        probes = Z[loc.indices, :2].mean(axis=1)
    return name, Z[:, :2], probes[:, :2]


def point_size(n: int) -> float:
    """Return scanpy's default marker size for n points, capped so small data sets stay readable."""
    return float(min(120000.0 / max(n, 1), 20.0))


def draw_background(ax, Z: np.ndarray, *, size: float | None = None, color: str = BACKGROUND) -> None:
    """Every sample as a small grey dot (rasterised: fast and light for hundreds of thousands of cells)."""
    ax.scatter(
        Z[:, 0],
        Z[:, 1],
        s=point_size(len(Z)) if size is None else size,
        c=color,
        linewidths=0,
        rasterized=True,
        plotnonfinite=False,
    )
    style_embedding(ax)


def style_embedding(ax, basis: str | None = None, *, frameon: bool | None = None) -> None:
    """Give an embedding panel scanpy's look: no ticks, equal aspect, axis labels; ``frameon=False`` drops frame and labels."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if basis:
        label = basis[2:] if basis.startswith("X_") else basis
        ax.set_xlabel(f"{label.upper()}1")
        ax.set_ylabel(f"{label.upper()}2")
    if frameon is None:
        import scanpy as sc

        frameon = bool(getattr(sc.settings, "_frameon", True))
    if not frameon:
        ax.set_frame_on(False)
        ax.set_xlabel("")
        ax.set_ylabel("")


def probe_size(n_probes: int) -> float:
    return float(np.clip(6000.0 / max(n_probes, 1), 8.0, 60.0))


# ---------------------------------------------------------------------------------------------------------------------
# small derived quantities (one locality, one module; never the pipeline)


def pair_indices(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature positions of each pair, upper triangle in row-major order (i < j), as stored by correlations."""
    return np.triu_indices(n_features, k=1)


def n_features_from_pairs(n_pairs: int) -> int:
    D = round(float((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    if D * (D - 1) // 2 != n_pairs:
        msg = f"{n_pairs} is not D(D-1)/2 for any D; the stored correlations are inconsistent, rerun them."
        raise ValueError(msg)
    return D


def per_feature_sums(values: np.ndarray, n_features: int) -> np.ndarray:
    """Sum of a P-vector of pair values over the pairs each feature is in."""
    i, j = pair_indices(n_features)
    return np.bincount(i, values, minlength=n_features) + np.bincount(j, values, minlength=n_features)


def square(values: np.ndarray, n_features: int) -> np.ndarray:
    """Symmetric D x D matrix (zero diagonal) from a P-vector of pair values."""
    i, j = pair_indices(n_features)
    out = np.zeros((n_features, n_features))
    out[i, j] = values
    out[j, i] = values
    return out


def reconstruct_one(presence_row: np.ndarray, modules: np.ndarray) -> np.ndarray:
    """One locality's reconstruction: max over modules of presence x module (AMF's max-product)."""
    from ..core import reconstruct

    return np.asarray(reconstruct(presence_row[None, :], modules)[0], dtype=np.float64)


def copresence(presence: np.ndarray, min_total: float = 0.5) -> np.ndarray:
    """Co-presence entropy (bits) per locality; NaN where the raw presence sum is below ``min_total``."""
    from ..core import copresence_entropy

    return np.asarray(copresence_entropy(presence, min_total=min_total), dtype=np.float64)
