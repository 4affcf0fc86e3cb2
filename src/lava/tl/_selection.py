"""Choosing the number of modules (``select_n_modules``) and presence refinement (``refine_presence``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._compat import Device, RngLike, as_seed
from .._docs import doc_params
from .._store import read_amf, read_correlations, read_localities, store_step
from .._validate import check_not_view
from ..core.amf import AMFConfig
from ..core.selection import (
    FIT_KWARGS,  # what select_n_modules passes on to every fit, checked before C is read
    check_n_runs,
)


def _check_amf_kwargs(amf_kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(amf_kwargs) - set(FIT_KWARGS))
    if unknown:
        msg = (
            f"select_n_modules() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; the AMF "
            f"options it passes on are {', '.join(FIT_KWARGS)}."
        )
        raise TypeError(msg)


def _check_n_modules(n_modules, n_localities: int) -> list[int]:
    values = [n_modules] if isinstance(n_modules, int | np.integer) else list(n_modules)
    if not values:
        msg = "n_modules is empty; pass the numbers of modules to try, e.g. range(2, 16)."
        raise ValueError(msg)
    for m in values:
        if isinstance(m, bool) or not isinstance(m, int | np.integer):
            msg = f"n_modules must hold integers, got {m!r}."
            raise TypeError(msg)
        if not 1 <= m <= n_localities:
            msg = (
                f"each n_modules must be between 1 and the number of localities ({n_localities}), got {m}; "
                "pass a smaller range."
            )
            raise ValueError(msg)
    if len(set(values)) != len(values):
        msg = f"n_modules has repeated values: {values}."
        raise ValueError(msg)
    return sorted(int(m) for m in values)


def _best_entry(result) -> dict[str, Any]:
    """One run in the stored ``best`` format (h5ad/zarr-safe: arrays, numbers, bools, dicts of arrays)."""
    entry = {
        "modules": np.asarray(result.modules, dtype=np.float32),
        "presence": np.asarray(result.presence, dtype=np.float32),
        "loss": float(result.loss),
        "similarity": float(result.similarity),
        "overestimation_ratio": float(result.overestimation_ratio),
        "seed": int(result.seed),
        "history": {name: np.asarray(values) for name, values in result.history.items()},
        "n_epochs": int(result.n_epochs),
        "best_epoch": int(result.best_epoch),
        "n_swaps": int(result.n_swaps),
        "swap_epochs": int(result.swap_epochs),
        "converged": bool(result.converged),
        "interrupted": bool(result.interrupted),
    }
    if getattr(result, "background", None) is not None:  # the fitted floor; None is not storable
        entry["background"] = np.asarray(result.background, dtype=np.float32)
    if result.n_runs >= 2:  # one run: nothing was compared
        entry["n_runs"] = int(result.n_runs)
        entry["module_reproducibility"] = np.asarray(result.module_reproducibility, dtype=np.float64)
    return entry


@doc_params()
def select_n_modules(
    adata: AnnData,
    n_modules: Iterable[int] | int = range(2, 16),
    *,
    n_runs: int = 10,
    rng: RngLike = 0,
    checkpoint: str | os.PathLike | None = None,
    elbow_tolerance: float = 0.05,
    key: str = "lava",
    copy: bool = False,
    progress: bool = True,
    client=None,
    keep: Literal["medoid", "loss"] = "medoid",
    **amf_kwargs: Any,
) -> AnnData | None:
    """Choose the number of modules M: AMF ``n_runs`` times per M, reconstruction and stability per M.

    For each M, ``n_runs`` AMF fits from different seeds (METHOD.md section 4). Reconstruction: the loss of each
    run. Stability: all ``n_runs * M`` modules are clustered into M clusters by k-medoids under cosine distance;
    the silhouette width (cosine) is high when every run finds the same modules. The suggested M is the elbow of
    the mean loss curve (the point farthest below the chord from the first to the last M, both axes scaled to
    [0, 1]); M values whose distance is within ``elbow_tolerance`` of the largest are near-ties, broken by the
    higher silhouette, then the smaller M; an elbow whose runs have near-duplicate modules (on average half a pair or
    more, :func:`lava.core.duplicate_modules`) gives way to the largest smaller M whose runs have fewer. One run of each
    M is kept (``keep``: by default the medoid, the run whose modules the other runs find again most closely): adopt
    it with ``lava.tl.amf(adata, from_selection=M)`` without refitting. Plot with :func:`lava.pl.selection`.

    This is the expensive step (``n_runs * len(n_modules)`` AMF fits); use ``checkpoint`` to survive interruptions.

    Parameters
    ----------
    {adata}
    n_modules
        Numbers of modules to try, each between 1 and the number of localities. With M = 1 the silhouette is
        undefined (NaN), as it is for every M when ``n_runs=1``.
    n_runs
        AMF runs per M (the paper uses 10).
    {rng}
        Run ``r`` with M modules uses a seed derived from (seed, M, r); each is in ``runs["seed"]``.
    checkpoint
        A directory where each finished run is saved; calling again with the same arguments resumes there and
        returns the same result as an uninterrupted call. Other arguments are refused (ValueError).
    elbow_tolerance
        Near-tie margin of the elbow rule, as a fraction of the loss range.
    {key}
    {copy}
    {progress}
        One bar over all runs.
    client
        Run the AMF fits as Dask tasks: a :class:`distributed.Client` connected to any cluster, or ``True`` for a
        temporary local one. Every run keeps its own seed, so the result is the same as without a client.
    keep
        Which run of each M to keep: ``"medoid"`` (default), the run with the largest ``closeness`` (the mean
        cosine of its modules matched one-to-one to another run's, averaged over the other runs; near-ties to the
        lower loss), or ``"loss"``, the run with the lowest loss. Runs end in optima of nearly the same loss, and
        which one is lowest is decided by tiny differences between runs; the medoid is what most runs agree on.
        On the real data benchmarked (20 seeds in groups of 5 runs), 85-100% of the medoids' modules were found
        again by the medoid of another group at cosine >= 0.9, against 65-100% for the lowest-loss runs, which
        did better only where single fits were already stable (``docs/choosing_m.md``).
    **amf_kwargs
        AMF options for every run, as in :func:`lava.tl.amf`: ``flavor``, ``device`` and the options (``loss``,
        ``nu``, ``gamma``, ``lr``, ``batch_size``, ``patience``, ``tol``, ``max_epochs``, ``init``, ``stop``, ``l1``,
        ``background``, ``refine``, ``refine_nu``, ``locality_weight``, ``swaps``, ``kernel``). The start is the
        flavor's: with ``flavor="lava"`` every run starts from the same representative localities (the start does not
        depend on the seed) with seeded jitter, its own minibatch order and its own module swaps, so the silhouette
        measures stability against those; ``flavor="paper"`` gives the paper's independent random starts.

    Returns
    -------
    Returns None, or a copy of ``adata`` with ``copy=True``, and sets

    ``adata.uns[key]["selection"]["runs"]``
        :class:`pandas.DataFrame`, one row per run: ``n_modules``, ``run``, ``seed``, ``n_epochs``,
        ``best_epoch`` (int64), ``loss``, ``similarity``, ``overestimation_ratio``, ``pattern_cosine``
        (float64: cosine between the run's presence-weighted module average and the kept run's at that M),
        ``closeness`` (float64: the mean matched module cosine to the other runs of its M, NaN with one run),
        ``converged`` (bool), ``n_duplicates`` (int64: pairs of near-duplicate modules in the run).
    ``adata.uns[key]["selection"]["summary"]``
        :class:`pandas.DataFrame` indexed by ``n_modules`` (int64): ``loss_mean``, ``loss_std``,
        ``similarity_mean``, ``similarity_std``, ``overestimation_ratio_mean``, ``overestimation_ratio_std``
        (std over runs, ddof=1, NaN with one run), ``silhouette``, ``pattern_cosine`` (mean pairwise cosine of
        the runs' presence-weighted module averages), ``duplicates_mean`` (mean ``n_duplicates``), ``elbow_gap``
        (float64), ``best_run`` (int64: the run kept, by ``keep``), ``lowest_loss_run`` (int64).
    ``adata.uns[key]["selection"]["suggested_n_modules"]``
        int, the suggested M.
    ``adata.uns[key]["selection"]["best"]``
        dict keyed by ``str(M)``: the kept run (``keep``), ``modules`` (M x P float32), ``presence`` (l x M float32),
        ``loss``, ``similarity``, ``overestimation_ratio`` (float), ``seed``, ``n_epochs``, ``best_epoch``, ``n_swaps``,
        ``swap_epochs`` (int),
        ``converged``, ``interrupted`` (bool), ``history`` (dict of 1-D arrays); with 2 or more runs also ``n_runs``
        (int) and ``module_reproducibility`` (M float64: per module, the share of the other runs of its M whose
        matched module has cosine >= 0.9), which :func:`lava.tl.amf` ``from_selection`` stores with the fit.
    ``adata.uns[key]["params"]["selection"]``
        The arguments, with the seed used and the resolved AMF options (the fields of :class:`lava.core.AMFConfig`).
    """
    from ..core.selection import select_n_modules as core_select

    check_not_view(adata, copy)
    _check_amf_kwargs(amf_kwargs)
    C = read_correlations(adata, key, require=("values",)).values
    Ms = _check_n_modules(n_modules, C.shape[0])
    check_n_runs(n_runs)
    if not elbow_tolerance >= 0:
        msg = f"elbow_tolerance must be >= 0, got {elbow_tolerance!r}."
        raise ValueError(msg)
    seed = as_seed(rng)

    start = logg.info(f"choosing the number of modules: M in {Ms}, {n_runs} AMF runs each")
    sel = core_select(
        C,
        Ms,
        n_runs=int(n_runs),
        rng=seed,
        progress=progress,
        checkpoint=checkpoint,
        elbow_tolerance=float(elbow_tolerance),
        client=client,
        keep=keep,
        **amf_kwargs,
    )
    summary = pd.DataFrame(sel.summary).set_index("n_modules")
    result = {
        "runs": pd.DataFrame(sel.runs),
        "summary": summary,
        "suggested_n_modules": int(sel.suggested_n_modules),
        "best": {str(m): _best_entry(run) for m, run in sel.best.items()},
    }
    config = next(iter(sel.best.values())).config  # every run's: resolved once by lava.core.fit_amf
    params = {
        "n_modules": Ms,
        "n_runs": int(n_runs),
        "rng": seed,
        "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
        "elbow_tolerance": float(elbow_tolerance),
        "keep": keep,
        **amf_kwargs,
        **(config.to_dict() if isinstance(config, AMFConfig) else {}),
    }
    if copy:
        adata = adata.copy()
    store_step(adata, key, "selection", result, params)
    sil = summary.loc[sel.suggested_n_modules, "silhouette"]
    logg.finished(
        start,
        f"suggested n_modules = {sel.suggested_n_modules} (elbow of the loss; silhouette {sil:.3f}); adopt it with "
        f"lava.tl.amf(adata, from_selection={sel.suggested_n_modules}"
        + (f", key={key!r}" if key != "lava" else "")
        + ")",
    )
    return adata if copy else None


@doc_params()
def refine_presence(
    adata: AnnData,
    *,
    tau: float = 0.1,
    lr: float = 5e-2,
    batch_size: int = 64,
    max_epochs: int = 500,
    patience: int = 30,
    tol: float = 1e-4,
    device: Device = "auto",
    key: str = "lava",
    copy: bool = False,
    progress: bool = True,
) -> AnnData | None:
    """Re-fit the presences with the modules fixed, under a pinball (quantile) loss with quantile ``tau``.

    Optional fine-tuning after :func:`lava.tl.amf` (METHOD.md section 3): each locality's presences are re-fitted
    so that overestimating a correlation costs ``(1 - tau) / tau`` times more than underestimating it (tau = 0.1
    matches the paper's nu = 9), bringing each locality's overestimation ratio to about ``tau`` (usually a little
    below). See :func:`lava.core.refine_presence`.

    The refined fit replaces ``adata.uns[key]["amf"]`` (same modules, new presences and figures) and
    ``adata.obsm[key + "_presence"]``. Like any new AMF result it drops ``module_genes``, ``enrichment`` and
    ``association`` under ``key`` (module genes do not depend on presences, but are dropped with the rest; rerun
    them).

    Parameters
    ----------
    {adata}
    tau
        Quantile in (0, 1).
    lr
        Adam learning rate.
    batch_size
        Localities optimised together.
    max_epochs
        Maximum Adam steps per batch of localities.
    patience
        Stop a batch after this many steps without a relative improvement above ``tol``.
    tol
        Relative improvement that counts.
    {device}
    {key}
    {copy}
    {progress}

    Returns
    -------
    Returns None, or a copy of ``adata`` with ``copy=True``, and updates

    ``adata.uns[key]["amf"]``
        As written by :func:`lava.tl.amf`, with ``presence`` (l x M float32, refined), ``loss`` (the AMF loss of
        the refined fit with the stored ``nu`` and ``gamma``), ``similarity``, ``overestimation_ratio`` (float),
        ``locality_similarity`` (l,) recomputed; ``modules`` and ``history`` unchanged; plus ``refined_tau``
        (float).
    ``adata.obsm[key + "_presence"]``
        n_obs x M float32, mean refined presence over the localities containing each sample.
    ``adata.varm[key + "_modules"]``
        n_vars x M float32 feature scores (unchanged values, rewritten).
    ``adata.uns[key]["params"]["amf"]``
        The AMF parameters, plus ``refine_presence`` (a dict of this call's arguments).
    """
    from ..core.amf import amf_loss, locality_weights
    from ..core.refine import refine_presence as core_refine
    from ._amf import _stored_config, check_stored_inputs, store_amf, stored_result

    check_not_view(adata, copy)
    amf = read_amf(adata, key)
    correlations = read_correlations(adata, key, require=("values", "features", "feature_index"))
    localities = read_localities(adata, key)
    check_stored_inputs(adata, localities, correlations)
    C = correlations.values
    modules = np.asarray(amf.modules, dtype=np.float32)
    presence = np.asarray(amf.presence, dtype=np.float32)
    amf_params = {name: value for name, value in amf.params.items() if name != "lava_version"}
    nu = float(amf_params.get("nu", 9.0))
    gamma = float(amf_params.get("gamma", 1e-4))
    weight_kind = str(amf_params.get("locality_weight", "norm"))  # fits stored before the option were "norm"

    start = logg.info(f"refining presences (pinball loss, tau = {tau})")
    refined = core_refine(
        C,
        modules,
        presence,
        tau=tau,
        lr=lr,
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        tol=tol,
        device=device,
        progress=progress,
    )
    weights = locality_weights(C, weight_kind)
    result = stored_result(
        C,
        {**amf.stored, "seed": amf.seed if amf.seed is not None else int(amf_params.get("rng", 0))},
        modules=modules,
        presence=refined,
        config=_stored_config(amf_params),
        locality_weight=weight_kind,
        loss=float(amf_loss(C, refined, modules, nu=nu, gamma=gamma, weights=weights)),
        device=str(amf_params.get("device", "cpu")),
    )
    params = {
        **amf_params,
        "refine_presence": {
            "tau": float(tau),
            "lr": float(lr),
            "batch_size": int(batch_size),
            "max_epochs": int(max_epochs),
            "patience": int(patience),
            "tol": float(tol),
            "device": str(device),
        },
    }
    if copy:
        adata = adata.copy()
    store_amf(adata, result, key=key, params=params, localities=localities, correlations=correlations)
    adata.uns[key]["amf"]["refined_tau"] = float(tau)
    logg.finished(start, f"overestimation ratio {result.overestimation_ratio:.3f} (tau = {tau})")
    return adata if copy else None
