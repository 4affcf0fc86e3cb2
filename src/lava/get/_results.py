"""Tidy pandas DataFrames from stored lava results. Nothing here recomputes anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._store import (
    PRODUCER,
    decode_params,
    get_step,
    read_amf,
    read_correlations,
    read_localities,
    read_selection,
    read_table,
)


def _filter_modules(df: pd.DataFrame, modules: int | Sequence[int] | None) -> pd.DataFrame:
    if modules is None:
        return df
    wanted = [modules] if isinstance(modules, int | np.integer) else list(modules)
    return df[df["module"].isin(wanted)].reset_index(drop=True)


def params(adata: AnnData, step: str, *, key: str = "lava") -> dict[str, Any]:
    """Return the parameters a step was run with (decoded), including ``lava_version``.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    step
        One of ``"localities"``, ``"correlations"``, ``"amf"``, ``"selection"``, ``"module_genes"``,
        ``"enrichment"``, ``"association"``.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A dict of parameter name to value, as passed (JSON round trip: tuples come back as lists).
    """
    if step not in PRODUCER:
        msg = f"unknown step {step!r}; one of {', '.join(map(repr, PRODUCER))}."
        raise ValueError(msg)
    get_step(adata, key, step)
    stored = adata.uns[key].get("params", {})
    if step not in stored:
        msg = f"adata.uns[{key!r}]['params'] has no {step!r}; rerun {PRODUCER[step]}."
        raise KeyError(msg)
    return decode_params(stored[step])


def localities(adata: AnnData, *, tidy: bool = True, key: str = "lava") -> pd.DataFrame | np.ndarray:
    """Return the samples of each locality.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    tidy
        Return a long table; ``False`` returns the (l, n) int64 array of sample positions.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A DataFrame with columns ``locality`` (int), ``sample`` (str, obs_name) and ``position`` (int, row in adata),
    one row per (locality, sample) in stored order; or a copy of ``uns[key]["localities"]["indices"]``.
    """
    idx = read_localities(adata, key).indices
    if not tidy:
        return idx.copy()
    flat = idx.ravel()
    return pd.DataFrame(
        {
            "locality": np.repeat(np.arange(idx.shape[0], dtype=np.int64), idx.shape[1]),
            "sample": np.asarray(adata.obs_names, dtype=object)[flat],
            "position": flat,
        }
    )


def modules(adata: AnnData, *, top: int | None = None, key: str = "lava") -> pd.DataFrame:
    """Return the feature pairs of each module with their weight (the module's correlation for the pair).

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    top
        Keep only each module's ``top`` strongest pairs.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A DataFrame with columns ``module`` (int), ``feature_a``, ``feature_b`` (str, ``feature_a`` before ``feature_b``
    in the correlations' feature order), ``correlation`` (float, in [0, 1]); only non-zero pairs, sorted by module
    then decreasing correlation.
    """
    mods = np.asarray(read_amf(adata, key, require=("modules",)).modules, dtype=np.float64)
    features = read_correlations(adata, key, require=("features",)).features.astype(object)
    D = features.size
    ia, ib = np.triu_indices(D, k=1)  # row-major upper triangle: the stored pair order
    if mods.ndim != 2 or mods.shape[1] != ia.size:
        msg = f"stored modules have shape {mods.shape}, expected (M, {ia.size}) for {D} features; rerun lava.tl.amf."
        raise ValueError(msg)
    if top is not None and (isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1):
        msg = f"top must be a positive int or None, got {top!r}."
        raise ValueError(msg)
    frames = []
    for m in range(mods.shape[0]):
        nz = np.flatnonzero(mods[m])
        nz = nz[np.argsort(-mods[m, nz], kind="stable")]
        if top is not None:
            nz = nz[:top]
        frames.append(
            pd.DataFrame(
                {
                    "module": np.full(nz.size, m, dtype=np.int64),
                    "feature_a": features[ia[nz]],
                    "feature_b": features[ib[nz]],
                    "correlation": mods[m, nz],
                }
            )
        )
    if not frames:
        return pd.DataFrame({"module": [], "feature_a": [], "feature_b": [], "correlation": []})
    return pd.concat(frames, ignore_index=True)


def presence(
    adata: AnnData,
    *,
    level: Literal["sample", "locality"] = "sample",
    groupby: str | None = None,
    key: str = "lava",
) -> pd.DataFrame:
    """Return module presence per sample (default), per group of samples, or per locality (as fitted).

    A sample's presence of a module is the mean of the module's presence over the localities that contain the
    sample (0 for a sample in no locality), ``adata.obsm[f"{key}_presence"]``. The table is indexed by
    ``obs_names``, so it lines up with ``adata.obs``: ``lava.get.presence(adata, groupby="celltype")`` is the mean
    presence per cell type, and :func:`lava.tl.presence_to_obs` puts the columns into ``adata.obs`` for scanpy's
    plots (``sc.pl.umap(adata, color="lava_presence_0")``).

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    level
        ``"sample"``: ``obsm[f"{key}_presence"]``, one row per sample; ``"locality"``: the fitted
        ``uns[key]["amf"]["presence"]``, one row per locality (not aligned with ``obs``).
    groupby
        An ``adata.obs`` column (categorical or not): return the mean per-sample presence of each of its values
        (``level="sample"`` only). Categories without samples are left out.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A DataFrame whose columns are the module numbers 0..M-1 (int, named ``module``), indexed by ``obs_names``
    (``level="sample"``), by the values of ``groupby`` (named after it), or by ``locality`` 0..l-1.
    """
    if level not in ("sample", "locality"):
        msg = f"level must be 'sample' or 'locality', got {level!r}."
        raise ValueError(msg)
    if groupby is not None:
        if level != "sample":
            msg = "groupby averages per-sample presence over obs groups; pass level='sample' (the default)."
            raise ValueError(msg)
        if not isinstance(groupby, str) or groupby not in adata.obs.columns:
            shown = ", ".join(map(repr, list(adata.obs.columns)[:20])) or "none"
            msg = f"groupby must be a column of adata.obs, got {groupby!r}; available: {shown}."
            raise KeyError(msg)
    if level == "locality":
        pres = read_amf(adata, key, require=("presence",)).presence
        df = pd.DataFrame(pres.copy(), columns=pd.RangeIndex(pres.shape[1], name="module"))
        df.index.name = "locality"
        return df
    pres = read_amf(adata, key, require=("sample_presence",)).sample_presence
    df = pd.DataFrame(pres.copy(), index=adata.obs_names.copy(), columns=pd.RangeIndex(pres.shape[1], name="module"))
    if groupby is None:
        return df
    # by position (an array, not the Series): duplicated obs_names cannot misalign; categories keep their order
    groups = adata.obs[groupby]
    keys = groups.array if isinstance(groups.dtype, pd.CategoricalDtype) else groups.to_numpy()
    means = df.groupby(keys, observed=True, sort=True).mean()
    means.index.name = groupby
    means.columns = pd.RangeIndex(pres.shape[1], name="module")
    return means


def feature_scores(adata: AnnData, *, key: str = "lava") -> pd.DataFrame:
    """Return the feature scores of every module (``varm[f"{key}_modules"]``) as a var_names x modules DataFrame.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A DataFrame indexed by var_names with the module numbers 0..M-1 as columns.
    """
    scores = read_amf(adata, key, require=("feature_scores",)).feature_scores
    return pd.DataFrame(
        scores.copy(), index=adata.var_names.copy(), columns=pd.RangeIndex(scores.shape[1], name="module")
    )


def module_genes(adata: AnnData, *, modules: int | Sequence[int] | None = None, key: str = "lava") -> pd.DataFrame:
    """Return the genes of each module, from :func:`lava.tl.module_genes`.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    modules
        Only these module numbers (default: all).
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A DataFrame with columns ``module`` (int), ``feature`` (str), ``score`` (float), ``rank`` (int), ``group`` (int:
    the gene's group within the module, :func:`lava.core.gene_groups`; -1 with ``rule="score"``) and ``n_shared``
    (int: in how many other modules' lists the gene is; 0 for a module's own genes).
    """
    return _filter_modules(read_table(adata, key, "module_genes").copy(), modules)


def enrichment(
    adata: AnnData,
    *,
    modules: int | Sequence[int] | None = None,
    max_p_adjusted: float | None = None,
    key: str = "lava",
) -> pd.DataFrame:
    """Return the over-representation results of :func:`lava.tl.enrich`.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    modules
        Only these module numbers (default: all).
    max_p_adjusted
        Keep rows with ``p_adjusted <= max_p_adjusted``.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A DataFrame with columns ``module``, ``group`` (-1 unless ``lava.tl.enrich(by="group")``), ``term``,
    ``overlap``, ``n_overlap``, ``set_size``, ``p_value``, ``p_adjusted``, ``odds_ratio``, ``significant``, ``genes``
    (";"-joined), sorted by module then p-value.
    """
    df = _filter_modules(read_table(adata, key, "enrichment").copy(), modules)
    if max_p_adjusted is not None:
        df = df[df["p_adjusted"] <= max_p_adjusted].reset_index(drop=True)
    return df


def association(adata: AnnData, *, modules: int | Sequence[int] | None = None, key: str = "lava") -> pd.DataFrame:
    """Return the module-annotation associations of :func:`lava.tl.associate`.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    modules
        Only these module numbers (default: all).
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    A DataFrame with columns ``module``, ``groupby``, ``category``, ``n_localities``, ``pearson_r``, ``pearson_p``,
    ``spearman_r``, ``spearman_p``, ``p_adjusted`` (and ``permutation_p``, ``permutation_p_adjusted`` when run).
    """
    return _filter_modules(read_table(adata, key, "association").copy(), modules)


def selection(adata: AnnData, *, runs: bool = False, key: str = "lava") -> pd.DataFrame:
    """Return the model-selection table of :func:`lava.tl.select_n_modules`.

    Parameters
    ----------
    adata
        Annotated data matrix with lava results.
    runs
        Return the per-run table instead of the per-M summary.
    key
        Where lava's results live (``adata.uns[key]``).

    Returns
    -------
    The summary DataFrame indexed by ``n_modules`` (loss, similarity, overestimation ratio means and standard
    deviations, silhouette), or the runs DataFrame (one row per fit).
    """
    sel = read_selection(adata, key)
    part = "runs" if runs else "summary"
    table = sel.runs if runs else sel.summary
    if table is None:
        msg = f"adata.uns[{key!r}]['selection'] has no {part!r}; rerun lava.tl.select_n_modules(adata)."
        raise KeyError(msg)
    return table.copy()
