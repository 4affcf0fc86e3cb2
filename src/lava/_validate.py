"""Input checks shared by the tools. Each raises a clear error that names the fix, before anything changes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse


def resolve_basis(adata, basis: str) -> str:
    """Return the ``obsm`` key for ``basis``; ``"umap"`` and ``"X_umap"`` both work."""
    for candidate in (basis, f"X_{basis}"):
        if candidate in adata.obsm:
            return candidate
    available = ", ".join(map(repr, adata.obsm.keys())) or "none"
    msg = f"no {basis!r} in adata.obsm; available: {available}. Pass basis=... or compute the embedding first."
    raise KeyError(msg)


def get_embedding(adata, basis: str) -> tuple[str, np.ndarray]:
    """Return ``(obsm_key, Z)`` as a finite float64 (E, d) array with E >= 1 and d >= 1."""
    name = resolve_basis(adata, basis)
    Z = adata.obsm[name]
    if isinstance(Z, pd.DataFrame):
        Z = Z.to_numpy()
    if sparse.issparse(Z):
        Z = Z.toarray()
    Z = np.asarray(Z)
    if Z.ndim != 2:
        msg = f"adata.obsm[{name!r}] must be 2-D (samples x dimensions), got shape {Z.shape}."
        raise ValueError(msg)
    if Z.shape[0] == 0 or Z.shape[1] == 0:
        msg = f"adata.obsm[{name!r}] has shape {Z.shape}; lava needs at least one sample and one dimension."
        raise ValueError(msg)
    if not np.issubdtype(Z.dtype, np.number) or np.issubdtype(Z.dtype, np.complexfloating):
        msg = f"adata.obsm[{name!r}] must be real numbers, got dtype {Z.dtype}."
        raise TypeError(msg)
    Z = Z.astype(np.float64, copy=False)
    check_finite(Z, f"adata.obsm[{name!r}]")
    return name, Z


def check_finite(X, what: str) -> None:
    """Raise if ``X`` (dense or sparse) has NaN or inf."""
    data = X.data if sparse.issparse(X) else X
    if np.issubdtype(np.asarray(data).dtype, np.floating) and not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        msg = f"{what} contains {n_bad} NaN or infinite values; remove or impute them (e.g. np.nan_to_num) first."
        raise ValueError(msg)


def get_data(adata, *, layer: str | None = None, use_raw: bool = False):
    """Return ``(X, var_names, where)``: the data matrix (dense ndarray or CSR/CSC), its feature names, a label."""
    if layer is not None and use_raw:
        msg = "pass either layer=... or use_raw=True, not both."
        raise ValueError(msg)
    if use_raw:
        if adata.raw is None:
            msg = "use_raw=True but adata.raw is None; pass use_raw=False or set adata.raw."
            raise ValueError(msg)
        X, var_names, where = adata.raw.X, adata.raw.var_names, "adata.raw.X"
    elif layer is not None:
        if layer not in adata.layers:
            available = ", ".join(map(repr, adata.layers.keys())) or "none"
            msg = f"no layer {layer!r} in adata.layers; available: {available}. Pass layer=... or layer=None for X."
            raise KeyError(msg)
        X, var_names, where = adata.layers[layer], adata.var_names, f"adata.layers[{layer!r}]"
    else:
        X, var_names, where = adata.X, adata.var_names, "adata.X"
    if X is None:
        msg = f"{where} is None; pass layer=... naming a data matrix."
        raise ValueError(msg)
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    if not (sparse.issparse(X) or isinstance(X, np.ndarray)):
        # backed or dask arrays are read lazily by the caller per locality; anything else: numpy
        if not hasattr(X, "shape") or not hasattr(X, "__getitem__"):
            X = np.asarray(X)
    dtype = np.dtype(X.dtype)
    if dtype.kind not in "biuf":
        msg = f"{where} has dtype {dtype}, which is not numeric; pass layer=... naming a numeric matrix."
        raise TypeError(msg)
    if var_names.has_duplicates:
        dups = var_names[var_names.duplicated()].unique()[:5].tolist()
        msg = f"feature names must be unique, found duplicates such as {dups}; call adata.var_names_make_unique()."
        raise ValueError(msg)
    return X, pd.Index(var_names), where


def select_features(adata, var_names: pd.Index, features, *, use_raw: bool = False) -> np.ndarray:
    """Return integer positions of the selected features, in ``var_names`` order unless names were given."""
    n = len(var_names)
    if features is None:
        idx = np.arange(n)
    elif isinstance(features, str):
        var = adata.raw.var if use_raw else adata.var
        if features not in var.columns:
            msg = f"no column {features!r} in adata.var; pass a boolean mask, a list of names or another column."
            raise KeyError(msg)
        mask = var[features].to_numpy()
        if mask.dtype != bool:
            msg = f"adata.var[{features!r}] must be boolean (e.g. 'highly_variable'), got dtype {mask.dtype}."
            raise TypeError(msg)
        idx = np.flatnonzero(mask)
    else:
        arr = np.asarray(features)
        if arr.dtype == bool:
            if arr.shape != (n,):
                msg = f"a boolean features mask must have length n_vars={n}, got shape {arr.shape}."
                raise ValueError(msg)
            idx = np.flatnonzero(arr)
        elif isinstance(features, Sequence | np.ndarray | pd.Index) and arr.dtype.kind in "OUS":
            names = pd.Index(arr.astype(str))
            if names.has_duplicates:
                msg = "features lists some names twice; pass each feature once."
                raise ValueError(msg)
            missing = names[~names.isin(var_names)]
            if len(missing):
                msg = (
                    f"{len(missing)} of the features are not in var_names, e.g. {missing[:5].tolist()}; "
                    "check the spelling (names are case-sensitive) or use_raw."
                )
                raise KeyError(msg)
            idx = var_names.get_indexer(names)
        else:
            msg = "features must be None, a boolean mask, the name of a boolean var column, or a list of feature names."
            raise TypeError(msg)
    if idx.size < 2:
        msg = f"correlations need at least 2 features, {idx.size} selected; select more features."
        raise ValueError(msg)
    return idx.astype(np.int64)


def check_positive(value, name: str, *, integer: bool = False, allow_zero: bool = False) -> None:
    ok_type = isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        msg = f"{name} must be {kind}, got {value!r}."
        raise TypeError(msg)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be {bound}, got {value!r}."
        raise ValueError(msg)


def check_not_view(adata, copy: bool = False) -> None:
    """Refuse an AnnData view unless ``copy=True``.

    Storing into a view either detaches it from its parent or (for nested ``uns`` dicts) silently writes into the
    parent's results.
    """
    if getattr(adata, "is_view", False) and not copy:
        msg = (
            "adata is a view (e.g. adata[mask]); lava cannot store results into it. "
            "Call adata = adata.copy() first, or pass copy=True to get a new AnnData back."
        )
        raise ValueError(msg)


def check_modules(modules, n_modules: int) -> list[int]:
    """Return the module numbers in ``modules`` (None: all; an int; a sequence), each once, in the order given."""
    if modules is None:
        return list(range(n_modules))
    items = [modules] if isinstance(modules, int | np.integer) else list(modules)
    out = []
    for m in items:
        if isinstance(m, bool) or not isinstance(m, int | np.integer):
            msg = f"modules must be integers (module numbers 0..{n_modules - 1}), got {m!r}."
            raise TypeError(msg)
        if not 0 <= m < n_modules:
            msg = f"unknown module {m}: module {m} does not exist; the stored fit has modules 0..{n_modules - 1}."
            raise ValueError(msg)
        if int(m) not in out:
            out.append(int(m))
    if not out:
        msg = "modules is empty; pass None for all modules or a list of module numbers."
        raise ValueError(msg)
    return out
