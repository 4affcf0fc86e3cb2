"""Shared plumbing for the plots: stored-result access, figure layout, scanpy's show/return convention."""

from __future__ import annotations

import numpy as np

from .._store import get_step, modules_key, presence_key
from .._validate import get_embedding, resolve_basis

#: Colour of the cells drawn behind probes and presence.
BACKGROUND = "#d9d9d9"


def finish(fig, axes, *, show: bool | None, return_fig: bool, ax_given: bool):
    """Apply scanpy's convention: Figure if ``return_fig``; None after showing; else the Axes (or list of Axes)."""
    import matplotlib.pyplot as plt

    if return_fig:
        return fig
    if show is None:
        show = not ax_given
    if show:
        plt.show()
        return None
    return axes


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


def amf_result(adata, key: str) -> dict:
    return get_step(adata, key, "amf")


def n_modules(adata, key: str) -> int:
    return int(np.asarray(amf_result(adata, key)["modules"]).shape[0])


def resolve_modules(adata, key: str, modules) -> list[int]:
    """Return the module numbers to draw: None = all, an int, or a sequence of ints in 0..M-1."""
    M = n_modules(adata, key)
    if modules is None:
        return list(range(M))
    seq = [modules] if isinstance(modules, int | np.integer) else list(modules)
    out = []
    for m in seq:
        out.append(check_module(m, M))
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


def presence_matrix(adata, key: str) -> np.ndarray:
    return np.asarray(amf_result(adata, key)["presence"], dtype=np.float64)


def module_matrix(adata, key: str) -> np.ndarray:
    return np.asarray(amf_result(adata, key)["modules"], dtype=np.float64)


def sample_presence(adata, key: str) -> np.ndarray:
    amf_result(adata, key)  # clear KeyError naming lava.tl.amf when the step has not run
    name = presence_key(key)
    if name not in adata.obsm:
        msg = f"no {name!r} in adata.obsm; rerun lava.tl.amf(adata, key={key!r}) to store per-sample presence."
        raise KeyError(msg)
    return np.asarray(adata.obsm[name], dtype=np.float64)


def feature_scores(adata, key: str) -> np.ndarray:
    amf_result(adata, key)
    name = modules_key(key)
    if name not in adata.varm:
        msg = f"no {name!r} in adata.varm; rerun lava.tl.amf(adata, key={key!r}) to store feature scores."
        raise KeyError(msg)
    return np.asarray(adata.varm[name], dtype=np.float64)


def correlation_features(adata, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(names, var positions)`` of the features whose pairs were correlated."""
    corr = get_step(adata, key, "correlations")
    names = np.asarray(corr["features"], dtype=object).astype(str)  # zarr reads text back as StringDType
    if "feature_index" in corr:
        index = np.asarray(corr["feature_index"], dtype=np.int64)
    else:
        index = adata.var_names.get_indexer(names)
    return names, index


def embedding_and_probes(adata, key: str, basis: str | None) -> tuple[str, np.ndarray, np.ndarray]:
    """Return the embedding (first two dimensions) and the probes on it; ``basis`` defaults to the one localities used."""
    loc = get_step(adata, key, "localities")
    stored = str(loc["basis"]) if "basis" in loc else None
    if basis is None:
        if stored is None:
            msg = "no basis stored by lava.tl.localities; pass basis=... (e.g. 'umap')."
            raise KeyError(msg)
        basis = stored
    name, Z = get_embedding(adata, basis)
    if Z.shape[1] < 2:
        msg = f"adata.obsm[{name!r}] has {Z.shape[1]} dimension; plots need at least 2."
        raise ValueError(msg)
    probes = np.asarray(loc["probes"], dtype=np.float64)
    same = False
    if stored is not None:
        try:
            same = resolve_basis(adata, stored) == name
        except KeyError:
            same = False
    if not same or probes.ndim != 2 or probes.shape[1] != Z.shape[1]:
        # probes live in the basis localities were placed in; elsewhere, draw them at their samples' mean position
        indices = np.asarray(loc["indices"], dtype=np.int64)
        probes = Z[indices, :2].mean(axis=1)
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


def style_embedding(ax, basis: str | None = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if basis:
        label = basis[2:] if basis.startswith("X_") else basis
        ax.set_xlabel(f"{label.upper()}1")
        ax.set_ylabel(f"{label.upper()}2")


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
