"""The storage contract: where each step keeps its results in an AnnData, and what depends on what.

Everything stored here must survive ``write_h5ad``/``read_h5ad`` and ``write_zarr``/``read_zarr``: numpy arrays,
numbers, strings, dicts of those, and DataFrames. Parameters are stored JSON-encoded (one string per argument)
so that ``None``, lists and nested values survive and can be decoded exactly by :func:`lava.get.params`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _logging as logg

#: The steps lava stores under ``adata.uns[key]``, in pipeline order.
STEPS = ("localities", "correlations", "amf", "selection", "module_genes", "enrichment", "association")

#: Which stored steps become stale when a step is (re)run.
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "localities": ("correlations", "amf", "selection", "module_genes", "enrichment", "association"),
    "correlations": ("amf", "selection", "module_genes", "enrichment", "association"),
    "amf": ("module_genes", "enrichment", "association"),
    "selection": (),
    "module_genes": ("enrichment",),
    "enrichment": (),
    "association": (),
}

#: What to call to produce a step, for error messages.
PRODUCER = {
    "localities": "lava.tl.localities(adata)",
    "correlations": "lava.tl.correlations(adata)",
    "amf": "lava.tl.amf(adata)",
    "selection": "lava.tl.select_n_modules(adata)",
    "module_genes": "lava.tl.module_genes(adata)",
    "enrichment": "lava.tl.enrich(adata, gene_sets)",
    "association": "lava.tl.associate(adata, groupby)",
    "neighborhood_retention": "lava.tl.neighborhood_retention(adata)",  # a diagnostic: nothing depends on it
}


def obs_keys(key: str) -> tuple[str, str]:
    """``obs`` columns written by ``localities``."""
    return f"{key}_neighborhood_centrality", f"{key}_locality_centrality"


def presence_key(key: str) -> str:
    """``obsm`` key of per-sample module presence."""
    return f"{key}_presence"


def presence_obs_key(key: str, module: int) -> str:
    """``obs`` column of one module's per-sample presence, written by ``lava.tl.presence_to_obs``."""
    return f"{key}_presence_{module}"


def presence_obs_columns(adata, key: str) -> list[str]:
    """List the ``obs`` columns ``lava.tl.presence_to_obs`` wrote under ``key`` (``f"{key}_presence_<int>"``)."""
    prefix = f"{key}_presence_"
    return [c for c in adata.obs.columns if isinstance(c, str) and c.startswith(prefix) and c[len(prefix) :].isdigit()]


def modules_key(key: str) -> str:
    """``varm`` key of per-feature module scores."""
    return f"{key}_modules"


def get_step(adata, key: str, step: str) -> dict:
    """Return ``adata.uns[key][step]`` or raise a KeyError that names the call that produces it."""
    if key not in adata.uns or not isinstance(adata.uns[key], Mapping):
        available = [k for k, v in adata.uns.items() if _is_lava_entry(v)]
        msg = (
            f"no lava results under adata.uns[{key!r}]"
            + (f" (lava keys present: {', '.join(map(repr, available))}; pass key=...)" if available else "")
            + f"; run {PRODUCER[step]} first."
        )
        raise KeyError(msg)
    if step not in adata.uns[key]:
        msg = (
            f"adata.uns[{key!r}] has no {step!r}; run {PRODUCER[step]}"
            + (f" with key={key!r}" if key != "lava" else "")
            + " first."
        )
        raise KeyError(msg)
    return adata.uns[key][step]


def _is_lava_entry(value) -> bool:
    """Whether an ``uns`` entry holds lava results (other tools, e.g. the synthetic data, also store ``params``)."""
    params = value.get("params") if isinstance(value, Mapping) else None
    return isinstance(params, Mapping) and bool(set(params) & {*STEPS, "neighborhood_retention"})


def has_step(adata, key: str, step: str) -> bool:
    return key in adata.uns and isinstance(adata.uns[key], Mapping) and step in adata.uns[key]


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """JSON-encode every parameter value, so that ``None``, ranges and lists survive h5ad and zarr."""
    out = {}
    for name, value in params.items():
        if isinstance(value, range):
            value = list(value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        try:
            out[name] = json.dumps(value)
        except TypeError:
            out[name] = json.dumps(repr(value))
    return out


def decode_params(stored: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`encode_params`."""
    return {name: json.loads(str(value)) for name, value in stored.items()}


def store_step(
    adata,
    key: str,
    step: str,
    result: Mapping[str, Any] | Any,
    params: Mapping[str, Any],
    *,
    obs: Mapping[str, np.ndarray] | None = None,
    obsm: Mapping[str, np.ndarray] | None = None,
    varm: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Store one step's results and parameters, dropping results of steps that depend on it.

    Call only after every computation has succeeded, so that a failed call leaves ``adata`` unchanged.
    """
    from . import __version__
    from ._validate import check_not_view

    check_not_view(adata)  # a view's nested uns dicts are its parent's: never write there
    uns = adata.uns.setdefault(key, {})
    drop_dependents(adata, key, step)
    uns[step] = result
    all_params = dict(uns.get("params", {}))
    all_params[step] = encode_params({"key": key, **params, "lava_version": __version__})
    uns["params"] = all_params
    for name, values in (obs or {}).items():
        adata.obs[name] = values
    for name, values in (obsm or {}).items():
        adata.obsm[name] = values
    for name, values in (varm or {}).items():
        adata.varm[name] = values
    logg.logger.info("    added %r to adata.uns[%r]", step, key)


def drop_dependents(adata, key: str, step: str) -> None:
    """Remove stored results that depend on ``step`` (they are stale once it is rerun), with a log line."""
    uns = adata.uns.get(key, {})
    stale = [s for s in DEPENDENTS[step] if s in uns]
    for s in stale:
        del uns[s]
        if "params" in uns and s in uns["params"]:
            params = dict(uns["params"])
            del params[s]
            uns["params"] = params
    if "amf" in stale or (step == "amf" and step in uns):
        adata.obsm.pop(presence_key(key), None)
        adata.varm.pop(modules_key(key), None)
        columns = presence_obs_columns(adata, key)  # copies of the old presence (lava.tl.presence_to_obs)
        if columns:
            adata.obs.drop(columns=columns, inplace=True)
            logg.logger.info("    dropped stale %s from adata.obs", ", ".join(map(repr, columns)))
    if stale:
        logg.logger.info("    dropped stale %s under adata.uns[%r] (rerun them)", ", ".join(map(repr, stale)), key)
