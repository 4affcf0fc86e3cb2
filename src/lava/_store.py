"""The storage contract: where each step keeps its results in an AnnData, what depends on what, and typed readers.

Everything stored here must survive ``write_h5ad``/``read_h5ad`` and ``write_zarr``/``read_zarr``: numpy arrays,
numbers, strings, dicts of those, and DataFrames. Parameters are stored JSON-encoded (one string per argument)
so that ``None``, lists and nested values survive and can be decoded exactly by :func:`lava.get.params`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

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


# ---------------------------------------------------------------------------------------------------------------------
# typed readers: each step's stored results, fetched, checked for presence and shape once, and decoded
#
# Every tool, plot and table reads stored results through these, so that a missing step raises the error that names
# its producer, an inconsistent one raises before anything is computed, and no caller re-reads ``adata.uns``.
# Optional parts are None when not stored; ``require=`` names the parts a caller cannot do without (a clear KeyError
# when one is missing). Arrays are the stored ones (not copied): callers must not write into them.


def _missing(key: str, step: str, name: str) -> KeyError:
    return KeyError(f"adata.uns[{key!r}][{step!r}] has no {name!r}; rerun {_producer_call(step, key)}.")


def _producer_call(step: str, key: str) -> str:
    """``PRODUCER[step]`` with ``key=`` added for a key other than the default."""
    call = PRODUCER[step]
    return call if key == "lava" else f"{call[:-1]}, key={key!r})"


def _check_require(
    stored: Mapping[str, Any], key: str, step: str, require: Iterable[str], known: tuple[str, ...]
) -> list[str]:
    """Raise for a required part of ``uns[key][step]`` that is not stored; return the required names."""
    require = [require] if isinstance(require, str) else list(require)
    for name in require:
        if name not in known:
            msg = f"unknown part {name!r} of {step!r}; one of {', '.join(map(repr, known))}."
            raise ValueError(msg)
        if name in stored or name in ("sample_presence", "feature_scores"):  # those two live in obsm / varm
            continue
        raise _missing(key, step, name)
    return require


def stored_params(adata, key: str, step: str) -> dict[str, Any]:
    """Return the decoded parameters ``step`` was stored with (empty when none are recorded)."""
    uns = adata.uns.get(key, {})
    params = uns.get("params", {}) if isinstance(uns, Mapping) else {}
    return decode_params(params.get(step, {}) if isinstance(params, Mapping) else {})


def _scalar(stored: Mapping[str, Any], name: str, kind: type):
    return kind(np.asarray(stored[name]).item()) if name in stored else None


def _lazy(values):
    """Return stored correlation values: an on-disk store (zarr, h5py, memmap) as it is, else an ndarray."""
    from .core._streamed import is_store

    return values if is_store(values) else np.asarray(values)


@dataclass(frozen=True)
class Localities:
    """Step 1 as stored by :func:`lava.tl.localities` (``uns[key]["localities"]``), from :func:`read_localities`."""

    key: str
    #: (l, n) int64: row positions (in ``adata.obs``) of each locality's samples.
    indices: np.ndarray
    #: (l, d) float64 probe coordinates in the embedding the localities were placed in, or None.
    probes: np.ndarray | None
    #: The ``obsm`` key of that embedding, or None.
    basis: str | None
    #: Placement loss of the chosen probes, and of plain k-means (alpha = beta = 0); None when not stored.
    loss: float | None
    loss_unoptimized: float | None
    #: The ``n`` used: stored with the localities, else from the parameters; None when neither says.
    n_neighbors: int | None
    #: The decoded parameters of the step (``lava.get.params``).
    params: dict[str, Any]
    stored: Mapping[str, Any] = field(repr=False)

    @property
    def n_localities(self) -> int:
        return int(self.indices.shape[0])

    def check_samples(self, n_obs: int, *, rerun: str = "lava.tl.localities") -> None:
        """Raise when the localities point at samples an AnnData of ``n_obs`` samples lacks (it was subset since)."""
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n_obs):
            msg = (
                f"the stored localities refer to samples beyond adata.n_obs={n_obs} (was adata subset after "
                f"lava.tl.localities?); rerun {rerun} on this AnnData."
            )
            raise ValueError(msg)


def read_localities(adata, key: str = "lava") -> Localities:
    """Read ``adata.uns[key]["localities"]``: a KeyError naming :func:`lava.tl.localities` if it is not there."""
    stored = get_step(adata, key, "localities")
    _check_require(stored, key, "localities", ("indices",), ("indices",))
    indices = np.asarray(stored["indices"])
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        msg = f"adata.uns[{key!r}]['localities']['indices'] must be a 2-D integer array; rerun lava.tl.localities."
        raise ValueError(msg)
    params = stored_params(adata, key, "localities")
    probes = np.asarray(stored["probes"], dtype=np.float64) if "probes" in stored else None
    if "n_neighbors" in stored:
        n_neighbors = int(np.asarray(stored["n_neighbors"]))
    else:
        n_neighbors = None if params.get("n_neighbors") is None else int(params["n_neighbors"])
    return Localities(
        key=key,
        indices=indices.astype(np.int64, copy=False),
        probes=probes,
        basis=str(stored["basis"]) if "basis" in stored else None,
        loss=_scalar(stored, "loss", float),
        loss_unoptimized=_scalar(stored, "loss_unoptimized", float),
        n_neighbors=n_neighbors,
        params=params,
        stored=stored,
    )


CORRELATION_PARTS = ("values", "features", "feature_index", "feature_n_localities", "locality_n_features")


@dataclass(frozen=True)
class Correlations:
    """Step 2 as stored by :func:`lava.tl.correlations`, from :func:`read_correlations`."""

    key: str
    #: (l, P) float32 absolute Spearman correlations: the stored ndarray, or an on-disk store (zarr, h5py, memmap)
    #: left unread (index it, or pass it on to :func:`lava.core.fit_amf`, which streams it); None when not stored.
    values: Any
    #: (D,) str: the features in the order that defines the pairs; None when not stored.
    features: np.ndarray | None
    #: (D,) int64 positions of ``features`` in ``var_names`` (``raw.var_names`` with ``use_raw``), or None.
    feature_index: np.ndarray | None
    #: (D,) int64: in how many localities each feature has a non-zero pair, or None (results of older versions).
    feature_n_localities: np.ndarray | None
    #: (l,) int64: how many features entered each locality, or None.
    locality_n_features: np.ndarray | None
    params: dict[str, Any]
    stored: Mapping[str, Any] = field(repr=False)

    @property
    def n_localities(self) -> int | None:
        return None if self.values is None else int(self.values.shape[0])

    @property
    def n_pairs(self) -> int | None:
        if self.values is not None:
            return int(self.values.shape[1])
        return None if self.features is None else self.features.size * (self.features.size - 1) // 2

    @property
    def use_raw(self) -> bool:
        return bool(self.params.get("use_raw", False))

    def need(self, name: str):
        """Return the part ``name`` (of :data:`CORRELATION_PARTS`); a KeyError naming the producer if not stored."""
        if name not in CORRELATION_PARTS:
            msg = f"unknown part {name!r} of 'correlations'; one of {', '.join(map(repr, CORRELATION_PARTS))}."
            raise ValueError(msg)
        value = getattr(self, name)
        if value is None:
            raise _missing(self.key, "correlations", name)
        return value

    @property
    def tie_fraction(self) -> float:
        """The tie_fraction the correlations were computed with (the default 0.75 if not recorded)."""
        value = self.params.get("tie_fraction")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.75

    def var_rows(self, adata) -> np.ndarray:
        """``var`` rows of the correlated features (-1 for a ``use_raw`` feature that ``var`` lacks).

        Raises when ``feature_index`` no longer points at ``features`` (``var_names``, or ``raw.var_names`` after
        ``use_raw=True``): the AnnData was subset or reordered after the correlations.
        """
        key, use_raw = self.key, self.use_raw
        names, feature_index = self.need("features"), self.need("feature_index")
        var_names = adata.raw.var_names if use_raw and adata.raw is not None else adata.var_names
        ok = not use_raw or adata.raw is not None
        if ok and feature_index.size:
            ok = feature_index.min() >= 0 and feature_index.max() < len(var_names)
            ok = ok and np.array_equal(np.asarray(var_names[feature_index], dtype=object).astype(str), names)
        if not ok:
            msg = (
                f"the stored correlations refer to features that are not at the same positions in adata."
                f"{'raw.' if use_raw else ''}var_names any more (was adata subset after lava.tl.correlations?); "
                "rerun lava.tl.correlations(adata" + (f", key={key!r}" if key != "lava" else "") + ") on this AnnData."
            )
            raise ValueError(msg)
        return adata.var_names.get_indexer(names) if use_raw else feature_index


def read_correlations(adata, key: str = "lava", *, require=("values", "features")) -> Correlations:
    """Read ``adata.uns[key]["correlations"]``, checking that its parts agree in shape.

    ``require`` names the parts (of :data:`CORRELATION_PARTS`) the caller needs; a missing one is a KeyError that
    names :func:`lava.tl.correlations`. The values are never loaded or copied (an on-disk store stays on disk).
    """
    stored = get_step(adata, key, "correlations")
    _check_require(stored, key, "correlations", require, CORRELATION_PARTS)
    rerun = f"rerun {_producer_call('correlations', key)}"
    values = _lazy(stored["values"]) if "values" in stored else None
    if values is not None and len(values.shape) != 2:
        msg = f"adata.uns[{key!r}]['correlations']['values'] must be 2-D, got shape {values.shape}; {rerun}."
        raise ValueError(msg)
    features = np.asarray(stored["features"], dtype=object).astype(str) if "features" in stored else None
    if features is not None and values is not None and values.shape[1] != features.size * (features.size - 1) // 2:
        msg = (
            f"adata.uns[{key!r}]['correlations'] holds {values.shape[1]} pairs for {features.size} features "
            f"(expected {features.size * (features.size - 1) // 2}); {rerun}."
        )
        raise ValueError(msg)
    arrays = {}
    for name, length, what in (
        ("feature_index", None if features is None else features.size, "features"),
        ("feature_n_localities", None if features is None else features.size, "features"),
        ("locality_n_features", None if values is None else values.shape[0], "localities"),
    ):
        arrays[name] = np.asarray(stored[name], dtype=np.int64) if name in stored else None
        if arrays[name] is not None and length is not None and arrays[name].shape != (length,):
            msg = f"adata.uns[{key!r}]['correlations'] holds {arrays[name].size} {name} for {length} {what}; {rerun}."
            raise ValueError(msg)
    return Correlations(
        key=key,
        values=values,
        features=features,
        params=stored_params(adata, key, "correlations"),
        stored=stored,
        **arrays,
    )


AMF_PARTS = ("modules", "presence", "sample_presence", "feature_scores")


@dataclass(frozen=True)
class AMF:
    """Step 3 as stored by :func:`lava.tl.amf` (``uns[key]["amf"]``, ``obsm``, ``varm``), from :func:`read_amf`."""

    key: str
    #: (M, P) module matrix in [0, 1] (stored float32), or None.
    modules: np.ndarray | None
    #: (l, M) presence of each module in each locality, or None.
    presence: np.ndarray | None
    #: (l,) fitted background floor (``background=True``), or None.
    background: np.ndarray | None
    #: Fit figures; None when not stored.
    loss: float | None
    similarity: float | None
    overestimation_ratio: float | None
    #: (l,) cosine between each locality and its reconstruction, or None.
    locality_similarity: np.ndarray | None
    #: Per-epoch arrays (``loss``, ``batch_loss``, ``seconds``); empty when not stored.
    history: dict[str, np.ndarray]
    n_epochs: int | None
    best_epoch: int | None
    converged: bool | None
    interrupted: bool | None
    seed: int | None
    n_pairs_dropped: int | None
    #: (k, 2) int64 pairs of near-duplicate modules, or None.
    duplicates: np.ndarray | None
    n_unexplained: int | None
    #: Module swaps kept after the first fit and the epochs of every other fit tried (None if not stored).
    n_swaps: int | None
    swap_epochs: int | None
    #: Fits made from different seeds, this one kept (None if not stored: one fit).
    n_runs: int | None
    #: (M,) share of the other runs that find each module again (matched cosine >= 0.9), or None (one run).
    module_reproducibility: np.ndarray | None
    #: The ``tau`` of :func:`lava.tl.refine_presence` when the presences were refined, else None.
    refined_tau: float | None
    #: (n_obs, M) per-sample presence (``adata.obsm[f"{key}_presence"]``), or None.
    sample_presence: np.ndarray | None
    #: (n_vars, M) feature scores (``adata.varm[f"{key}_modules"]``), or None.
    feature_scores: np.ndarray | None
    params: dict[str, Any]
    stored: Mapping[str, Any] = field(repr=False)

    @property
    def n_modules(self) -> int:
        for matrix, axis in ((self.modules, 0), (self.presence, 1), (self.feature_scores, 1)):
            if matrix is not None:
                return int(matrix.shape[axis])
        raise _missing(self.key, "amf", "modules")

    def need(self, name: str) -> np.ndarray:
        """Return the part ``name`` (of :data:`AMF_PARTS`); a KeyError naming :func:`lava.tl.amf` if not stored."""
        if name not in AMF_PARTS:
            msg = f"unknown part {name!r} of 'amf'; one of {', '.join(map(repr, AMF_PARTS))}."
            raise ValueError(msg)
        value = getattr(self, name)
        if value is None:
            raise _missing_amf_part(self.key, name)
        return value


def _missing_amf_part(key: str, name: str) -> KeyError:
    if name == "sample_presence":
        return KeyError(f"adata.obsm has no {presence_key(key)!r}; rerun lava.tl.amf(adata, key={key!r}).")
    if name == "feature_scores":
        return KeyError(
            f"adata.varm has no {modules_key(key)!r} (feature scores of the modules); rerun "
            f"lava.tl.amf(adata, key={key!r})."
        )
    return _missing(key, "amf", name)


def read_amf(adata, key: str = "lava", *, require=("modules", "presence")) -> AMF:
    """Read the stored AMF fit: ``adata.uns[key]["amf"]`` with the per-sample presence and the feature scores.

    ``require`` names the parts (of :data:`AMF_PARTS`) the caller needs: ``"modules"``, ``"presence"``,
    ``"sample_presence"`` (``adata.obsm[f"{key}_presence"]``), ``"feature_scores"`` (``adata.varm[f"{key}_modules"]``);
    a missing one is a KeyError naming :func:`lava.tl.amf`. Shapes are checked against each other.
    """
    stored = get_step(adata, key, "amf")
    require = _check_require(stored, key, "amf", require, AMF_PARTS)
    rerun = f"rerun {_producer_call('amf', key)}"
    extra = {}
    for name, where, mapping in (
        ("sample_presence", "obsm", adata.obsm),
        ("feature_scores", "varm", adata.varm),
    ):
        slot = presence_key(key) if name == "sample_presence" else modules_key(key)
        if slot not in mapping:
            if name in require:
                raise _missing_amf_part(key, name)
            extra[name] = None
            continue
        extra[name] = np.asarray(mapping[slot])
        if extra[name].ndim != 2:
            msg = f"adata.{where}[{slot!r}] must be 2-D, got shape {extra[name].shape}; {rerun}."
            raise ValueError(msg)
    modules = np.asarray(stored["modules"]) if "modules" in stored else None
    presence = np.asarray(stored["presence"]) if "presence" in stored else None
    if modules is not None and modules.ndim != 2:
        msg = f"adata.uns[{key!r}]['amf']['modules'] must be 2-D, got shape {modules.shape}; {rerun}."
        raise ValueError(msg)
    if presence is not None and presence.ndim != 2:
        msg = f"adata.uns[{key!r}]['amf']['presence'] must be 2-D, got shape {presence.shape}; {rerun}."
        raise ValueError(msg)
    M = None if modules is None else modules.shape[0]
    for name, matrix in (
        ("presence", presence),
        ("sample_presence", extra["sample_presence"]),
        ("feature_scores", extra["feature_scores"]),
    ):
        if matrix is not None and M is not None and matrix.shape[1] != M:
            msg = f"the stored fit has {M} modules but its {name} has shape {matrix.shape}; {rerun}."
            raise ValueError(msg)
    background = np.asarray(stored["background"]) if "background" in stored else None
    if background is not None and presence is not None and background.shape != (presence.shape[0],):
        msg = f"the stored background has shape {background.shape} for {presence.shape[0]} localities; {rerun}."
        raise ValueError(msg)
    history = stored.get("history", {})
    return AMF(
        key=key,
        modules=modules,
        presence=presence,
        background=background,
        loss=_scalar(stored, "loss", float),
        similarity=_scalar(stored, "similarity", float),
        overestimation_ratio=_scalar(stored, "overestimation_ratio", float),
        locality_similarity=np.asarray(stored["locality_similarity"]) if "locality_similarity" in stored else None,
        history={name: np.asarray(v) for name, v in history.items()} if isinstance(history, Mapping) else {},
        n_epochs=_scalar(stored, "n_epochs", int),
        best_epoch=_scalar(stored, "best_epoch", int),
        converged=_scalar(stored, "converged", bool),
        interrupted=_scalar(stored, "interrupted", bool),
        seed=_scalar(stored, "seed", int),
        n_pairs_dropped=_scalar(stored, "n_pairs_dropped", int),
        duplicates=np.asarray(stored["duplicates"], dtype=np.int64).reshape(-1, 2) if "duplicates" in stored else None,
        n_unexplained=_scalar(stored, "n_unexplained", int),
        n_swaps=_scalar(stored, "n_swaps", int),
        swap_epochs=_scalar(stored, "swap_epochs", int),
        n_runs=_scalar(stored, "n_runs", int),
        module_reproducibility=(
            np.asarray(stored["module_reproducibility"], dtype=np.float64)
            if "module_reproducibility" in stored
            else None
        ),
        refined_tau=_scalar(stored, "refined_tau", float),
        params=stored_params(adata, key, "amf"),
        stored=stored,
        **extra,
    )


@dataclass(frozen=True)
class Selection:
    """Model selection as stored by :func:`lava.tl.select_n_modules`, from :func:`read_selection`."""

    key: str
    #: One row per fit (``n_modules``, ``run``, ``seed``, ``loss``, ...), or None.
    runs: pd.DataFrame | None
    #: Per-M means and standard deviations, indexed by ``n_modules``, or None.
    summary: pd.DataFrame | None
    suggested_n_modules: int | None
    #: The lowest-loss run per M, keyed by M (int): ``modules``, ``presence``, ``loss``, ``seed``, ``history``, ...
    best: dict[int, Mapping[str, Any]]
    params: dict[str, Any]
    stored: Mapping[str, Any] = field(repr=False)


def read_selection(adata, key: str = "lava") -> Selection:
    """Read ``adata.uns[key]["selection"]``: a KeyError naming :func:`lava.tl.select_n_modules` if it is not there."""
    stored = get_step(adata, key, "selection")
    best = stored.get("best", {})
    return Selection(
        key=key,
        runs=pd.DataFrame(stored["runs"]) if "runs" in stored else None,
        summary=pd.DataFrame(stored["summary"]) if "summary" in stored else None,
        suggested_n_modules=_scalar(stored, "suggested_n_modules", int),
        best={int(m): entry for m, entry in best.items()} if isinstance(best, Mapping) else {},
        params=stored_params(adata, key, "selection"),
        stored=stored,
    )


def read_table(adata, key: str, step: str, *, columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a step stored as a table (``module_genes``, ``enrichment``, ``association``, ``neighborhood_retention``).

    Raises a KeyError naming the producer when the step has not run or the table lacks one of ``columns``. The frame
    shares the stored data: copy it before changing it.
    """
    table = pd.DataFrame(get_step(adata, key, step))
    check_columns(table, key, step, columns)
    return table


def check_columns(table: pd.DataFrame, key: str, step: str, columns: Iterable[str]) -> None:
    """Raise a KeyError naming the producer when the stored table of ``step`` lacks one of ``columns``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        msg = f"adata.uns[{key!r}][{step!r}] lacks columns {missing}; rerun {_producer_call(step, key)}."
        raise KeyError(msg)
