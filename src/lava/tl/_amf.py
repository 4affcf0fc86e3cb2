"""Step 3 on AnnData: Association Matrix Factorisation of the stored locality correlations."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .. import _store
from .._compat import Device, RngLike, as_seed
from .._docs import doc_params
from .._validate import check_not_view
from ..core import amf as core_amf
from ..core.amf import EXPLAINED_PRESENCE  # a locality is explained at this presence (the swaps' rule)
from ..core.metrics import DUPLICATE_COSINE, DUPLICATE_PRESENCE_R, _fit_figures, duplicate_modules, feature_scores
from ..core.selection import REPRODUCED_COSINE, check_keep, check_n_runs, fit_runs
from ._correlations import report_dropped_pairs, sparsity_advice

#: Warn when more than this share of the localities is not explained.
UNEXPLAINED_SHARE = 0.25
#: Runs per fit by default (flavor "lava"; "paper": 1). On the benchmarks' real data a call of another seed found
#: 85-98% of the medoid's modules again, against 75-94% for one fit (docs/choosing_m.md).
DEFAULT_N_RUNS = 5
#: Warn about modules that fewer than this share of the other runs find again.
MOSTLY_REPRODUCED = 0.5


def report_fit(adata: AnnData, key: str) -> None:
    """Warn about what a stored fit leaves out: localities no module explains, and near-duplicate modules."""
    fit = _store.read_amf(adata, key, require=("presence",))
    n_loc = int(fit.presence.shape[0])
    n_un = fit.n_unexplained or 0
    if n_un > UNEXPLAINED_SHARE * n_loc:
        logg.warning(
            f"{n_un} of {n_loc} localities have no module with presence >= {EXPLAINED_PRESENCE}: the fit does not "
            "explain those parts of the embedding (see lava.pl.modules). Fit more modules (n_modules, or "
            "lava.tl.select_n_modules), or check whether those localities have strong pairs at all "
            f"(adata.uns[{key!r}]['correlations'])."
        )
    repro = fit.module_reproducibility
    if repro is not None and np.any(repro < MOSTLY_REPRODUCED):
        weak = np.flatnonzero(repro < MOSTLY_REPRODUCED)
        one = weak.size == 1
        logg.warning(
            f"{'module' if one else 'modules'} {', '.join(map(str, weak.tolist()))} of the run kept of {fit.n_runs} "
            f"{'was' if one else 'were'} found again (matched cosine >= {REPRODUCED_COSINE}) by fewer than half of "
            f"the other runs: {'it depends' if one else 'they depend'} on the seed "
            f"(adata.uns[{key!r}]['amf']['module_reproducibility']). Read {'it' if one else 'them'} with care, or "
            "try another n_modules."
        )
    dups = fit.duplicates if fit.duplicates is not None else np.zeros((0, 2), np.int64)
    if dups.size:
        listed = ", ".join(f"{a} and {b}" for a, b in dups.tolist())
        logg.warning(
            f"modules {listed} are near-duplicates (shared pairs, cosine >= {DUPLICATE_COSINE}, and presence "
            f"correlated >= {DUPLICATE_PRESENCE_R} over the localities): one programme split in two. Read them "
            "together, or fit fewer modules."
        )


@doc_params()
def amf(
    adata: AnnData,
    n_modules: int = 9,
    *,
    flavor: str = "lava",
    rng: RngLike = 0,
    device: Device = "auto",
    n_runs: int | None = None,
    keep: str = "medoid",
    from_selection: int | None = None,
    key: str = "lava",
    copy: bool = False,
    progress: bool = True,
    **options: Any,
) -> AnnData | None:
    """Find modules of feature-pair correlation that recur across localities (Association Matrix Factorisation).

    LAVA step 3. The locality correlations ``C`` (l x P) from :func:`lava.tl.correlations` are approximated by
    ``Chat[i, j] = max_m presence[i, m] * modules[m, j]`` with both matrices in [0, 1]. With ``flavor="lava"`` (the
    default) the loss is a squared error normalised per locality in which overestimated entries weigh ``nu`` times
    more, with a fitted per-locality background floor, modules started from representative localities, and
    *balanced* locality weights: every locality counts the same unless its correlations are weaker than typical, so
    that sparse populations (few genes past the tie filter) get modules as dense ones do (``flavor="paper"``: the
    paper's cosine weighted by ``||C_i||``, from a random start; see :func:`lava.core.fit_amf`,
    :func:`lava.core.locality_weights` and the AMF loss docs page). Adam over minibatches of localities; the fit
    stops when the best loss has not improved by more than ``tol`` in ``patience`` epochs and keeps the best epoch.
    Interrupting it (Ctrl-C) stores the best matrices so far with ``interrupted=True`` and a warning.

    One fit can end in one of several optima of nearly the same loss, and which one depends on the seed (on the
    real data of the benchmarks, two single fits share 75-94% of their modules at matched cosine >= 0.9; MNIST at
    M = 9 the least). So by default (``flavor="lava"``) it fits ``n_runs = 5`` times from different seeds and keeps
    the medoid, the run whose modules the other runs find again most closely (:func:`lava.core.fit_runs`): kept
    runs of different seeds share 85-98% of their modules (kidney, MNIST, pbmc68k_reduced). Each module's reproducibility (the share of the other
    runs that find it again, ``module_reproducibility``) is stored and reported, with a warning for modules that
    fewer than half of them find. Keeping the lowest-loss run instead (``keep="loss"``) helps only where single fits are already stable:
    which near-equal optimum is lowest is itself decided by tiny differences (figures on the choosing-M docs page).
    ``n_runs=1`` is one fit, in a fifth of the time or less.

    Parameters
    ----------
    {adata}
    n_modules
        Number of modules M (1 <= M <= number of localities); ignored with ``from_selection``.
        Choose it with :func:`lava.tl.select_n_modules`.
    flavor
        ``"lava"`` (the ``"expectile"`` loss with its floor, localities start, ``refine`` phase and swaps) or
        ``"paper"`` (the paper's nu-weighted cosine, random start and stopping rule); see the AMF loss docs page.
    {rng}
    {device}
    n_runs
        Fits from different seeds, one kept (default: 5 with ``flavor="lava"``, 1 with ``"paper"``, the paper's
        single fit). Run ``r`` uses the seed ``SeedSequence([rng, n_modules, r])`` draws, as in
        :func:`lava.tl.select_n_modules`, which with ``[n_modules]`` and the same ``n_runs`` keeps the same run.
        ``n_runs=1`` fits once with the seed ``rng``. Ignored with ``from_selection``.
    keep
        Which run to keep when ``n_runs`` > 1: ``"medoid"`` (default) or ``"loss"`` (the lowest loss); ignored with
        ``from_selection``.
    from_selection
        Adopt the run that :func:`lava.tl.select_n_modules` kept with this many modules (its ``keep``: the
        medoid by default; ``adata.uns[key]["selection"]["best"]``) instead of fitting.
    {key}
    {copy}
    {progress}
    **options
        The AMF options, overriding the flavor's: ``loss`` (``"expectile"`` or ``"paper"``), ``nu``, ``gamma``,
        ``lr``, ``batch_size``, ``patience``, ``tol``, ``max_epochs``, ``init`` (``"random"`` or ``"localities"``),
        ``stop``, ``l1``, ``background``, ``refine``, ``refine_nu``, ``locality_weight``, ``swaps`` and ``kernel``;
        see :func:`lava.core.fit_amf` (they are the fields of :class:`lava.core.AMFConfig`). ``swaps``: up to this
        many module swaps after the fit (while some locality has no module with presence >= 0.5, the module the
        reconstruction needs least is replaced by one started from the worst explained such locality and the fit
        is rerun; each costs about one fit).

    Returns
    -------
    Returns ``None`` (or a copy when ``copy=True``) and sets:

    ``adata.uns[key]["amf"]``
        ``modules`` (M x P float32 in [0, 1], pairs in the order of ``uns[key]["correlations"]``),
        ``presence`` (l x M float32 in [0, 1]), ``loss``, ``similarity`` (a-weighted mean cosine),
        ``overestimation_ratio`` (float), ``locality_similarity`` (l float64, cosine per locality),
        ``history`` (dict of 1-D float64 arrays per epoch, index 0 = the initial matrices: ``loss``,
        ``batch_loss``, ``seconds``), ``n_epochs``, ``best_epoch``, ``seed``, ``n_pairs_dropped`` (int),
        ``converged``, ``interrupted`` (bool), ``duplicates`` (k x 2 int64: pairs of near-duplicate modules,
        :func:`lava.core.duplicate_modules`; logged as a warning), ``n_unexplained`` (int: localities where no
        module's presence reaches 0.5; a warning when more than a quarter), ``n_swaps`` and ``swap_epochs`` (int:
        module swaps kept, epochs of every other fit tried, the first and each swap; ``history`` and ``n_epochs``
        are the stored fit's), ``n_runs`` (int: fits made, this one kept); with ``background=True`` also
        ``background`` (l float32); with ``n_runs`` >= 2 also ``module_reproducibility`` (M float64: per module,
        the share of the other runs whose one-to-one matched module has cosine >= 0.9) and ``runs`` (dict of
        1-D arrays over the runs: ``seed`` int64, ``loss`` and ``closeness`` float64, the mean matched module
        cosine to the other runs).
    ``adata.varm[key + "_modules"]``
        n_vars x M float32 feature scores: the sum of the module's correlations over the pairs a feature is in
        (0 for features that did not enter the correlations).
    ``adata.obsm[key + "_presence"]``
        n_obs x M float32: a sample's mean presence over the localities that contain it (0 where none does).
    ``adata.uns[key]["params"]["amf"]``
        The resolved options (every field of :class:`lava.core.AMFConfig`, ``flavor`` included), JSON-encoded,
        with ``n_modules``, ``n_runs``, ``keep``, the seed used as ``rng`` (with several runs, the one their seeds
        are drawn from; ``uns[key]["amf"]["seed"]`` is the kept run's), the device the fit ran on as ``device``,
        ``from_selection``, ``key``, ``copy`` and ``progress``.

    Re-running drops results that depend on the modules (module genes, enrichment, association).
    """
    if not isinstance(adata, AnnData):
        msg = f"adata must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if not isinstance(key, str) or not key:
        msg = f"key must be a non-empty string, got {key!r}."
        raise TypeError(msg)
    check_not_view(adata, copy)
    corr = _store.read_correlations(adata, key, require=("values", "features", "feature_index"))
    C = np.asarray(corr.values)
    localities = _store.read_localities(adata, key)
    check_stored_inputs(adata, localities, corr)
    if from_selection is not None:
        return _adopt_selection(adata, _as_n_modules(from_selection), C, corr, localities, key=key, copy=copy)

    if not np.any(C):
        msg = (
            f"every correlation in adata.uns[{key!r}]['correlations']['values'] is 0, so AMF has nothing to fit. "
            + sparsity_advice(corr.tie_fraction)
        )
        raise ValueError(msg)
    n_runs = _check_n_runs(n_runs, flavor)
    check_keep(keep)
    seed = as_seed(rng)
    start = logg.info(
        f"fitting {n_modules} modules to {C.shape[0]} localities x {C.shape[1]} feature pairs"
        + (f", {n_runs} runs" if n_runs > 1 else "")
    )
    if n_runs == 1:
        result = core_amf.fit_amf(C, n_modules, flavor=flavor, rng=seed, device=device, progress=progress, **options)
    else:
        result = fit_runs(
            C, n_modules, n_runs=n_runs, rng=seed, keep=keep, progress=progress, flavor=flavor, device=device, **options
        )
    report_dropped_pairs(result.n_pairs_dropped, C.shape[1], corr.tie_fraction)
    if result.interrupted and result.runs is not None:
        warnings.warn(
            f"the AMF runs were interrupted after {result.n_runs} of {n_runs}; storing the run kept of those "
            f"(keep={keep!r}, loss {result.loss:.4g}) with interrupted=True.",
            UserWarning,
            stacklevel=2,
        )
    elif result.interrupted:
        warnings.warn(
            f"the AMF fit was interrupted after {result.n_epochs} epochs; storing the best matrices so far "
            f"(epoch {result.best_epoch}, loss {result.loss:.4g}) with interrupted=True.",
            UserWarning,
            stacklevel=2,
        )
    # with several runs, rng is the seed their seeds are drawn from and n_runs the runs asked for
    params = amf_params(
        result,
        n_modules=n_modules,
        n_runs=n_runs,
        keep=keep,
        rng=seed,
        from_selection=None,
        key=key,
        copy=copy,
        progress=progress,
    )
    adata = adata.copy() if copy else adata
    store_amf(adata, result, key=key, params=params, localities=localities, correlations=corr)
    report_fit(adata, key)
    logg.finished(
        start,
        f"loss {result.loss:.4g}, similarity {result.similarity:.3f}, overestimation ratio "
        f"{result.overestimation_ratio:.3f} after {result.n_epochs} epochs (best {result.best_epoch}"
        + (", converged)" if result.converged else ", not converged)")
        + (f"; {result.n_swaps} module swap(s) kept, {result.swap_epochs} epochs before" if result.n_swaps else "")
        + (_runs_line(result) if result.runs is not None else ""),
    )
    return adata if copy else None


def _check_n_runs(n_runs, flavor: str) -> int:
    if n_runs is None:
        return DEFAULT_N_RUNS if flavor != "paper" else 1
    check_n_runs(n_runs)
    return int(n_runs)


def _runs_line(result: core_amf.AMFResult) -> str:
    """Return the log's account of several runs: the run kept and how many modules the others find again."""
    seeds = np.asarray(result.runs["seed"])
    kept = int(np.flatnonzero(seeds == result.seed)[0])
    found = int(np.count_nonzero(np.asarray(result.module_reproducibility) >= MOSTLY_REPRODUCED))
    return (
        f"; run {kept} of {result.n_runs} kept (closeness {float(result.runs['closeness'][kept]):.3f}), "
        f"{found} of {result.modules.shape[0]} modules found again by at least half of the other runs"
    )


def amf_params(result: core_amf.AMFResult, **call: Any) -> dict[str, Any]:
    """Return the params ``lava.tl.amf`` stores: ``result``'s resolved config, seed and device, and ``call``.

    ``call`` holds the call's own arguments (``n_modules``, ``from_selection``, ``key``, ``copy``, ``progress``).
    A result without a config (rebuilt from a store written before it) stores its ``locality_weight`` only.
    """
    config = result.config.to_dict() if isinstance(result.config, core_amf.AMFConfig) else {}
    return {
        "n_modules": int(result.modules.shape[0]),
        **config,
        "locality_weight": result.locality_weight,
        "rng": int(result.seed),
        "n_runs": int(result.n_runs),
        "device": str(result.device),
        **call,
    }


def stored_result(
    C: np.ndarray,
    entry: Mapping[str, Any],
    *,
    modules: np.ndarray | None = None,
    presence: np.ndarray | None = None,
    config: core_amf.AMFConfig | None = None,
    locality_weight: str = "norm",
    loss: float | None = None,
    device: str = "cpu",
) -> core_amf.AMFResult:
    """Rebuild an :class:`~lava.core.AMFResult` from a stored fit or selection run (a mapping of its fields).

    ``entry`` is ``adata.uns[key]["amf"]`` or a run of ``["selection"]["best"]``: the fields it lacks take their
    defaults, and the quality figures are recomputed on ``C`` with ``locality_weight``'s weights for ``presence``
    and ``modules`` (default: the stored ones; ``lava.tl.refine_presence`` passes refined presences and their
    ``loss``). The fitted floor (``background``) is kept. Shared by ``from_selection`` adoption and
    :func:`lava.tl.refine_presence`.
    """
    modules = np.asarray(entry["modules"] if modules is None else modules, dtype=np.float32)
    presence = np.asarray(entry["presence"] if presence is None else presence, dtype=np.float32)
    weights = core_amf.locality_weights(C, locality_weight)
    similarity, over_ratio, loc_sim = _fit_figures(C, presence, modules, weights=weights)
    history = entry.get("history", {})
    if not isinstance(history, Mapping):
        history = {"loss": np.asarray(history, dtype=np.float64)}
    n_epochs = int(entry.get("n_epochs", 0) or 0)

    def get(name, default):
        value = entry.get(name)
        return default if value is None else value

    background = entry.get("background")
    return core_amf.AMFResult(
        modules=modules,
        presence=presence,
        loss=float(entry["loss"] if loss is None else loss),
        similarity=similarity,
        overestimation_ratio=over_ratio,
        locality_similarity=loc_sim,
        history={name: np.asarray(values) for name, values in history.items()},
        n_epochs=n_epochs,
        best_epoch=int(get("best_epoch", n_epochs)),
        converged=bool(get("converged", True)),
        interrupted=bool(get("interrupted", False)),
        seed=int(get("seed", 0)),
        n_pairs_dropped=int(np.count_nonzero(~np.any(C, axis=0))),
        background=None if background is None else np.asarray(background, dtype=np.float32),
        locality_weight=locality_weight,
        n_swaps=int(get("n_swaps", 0)),
        swap_epochs=int(get("swap_epochs", 0)),
        config=config,
        device=device,
        n_runs=int(get("n_runs", 1)),
        module_reproducibility=_optional_array(entry.get("module_reproducibility"), np.float64),
        runs=_stored_runs(entry.get("runs")),
    )


def _optional_array(value, dtype) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=dtype)


def _stored_runs(runs) -> dict[str, np.ndarray] | None:
    if not isinstance(runs, Mapping):
        return None
    return {name: np.asarray(runs[name]) for name in ("seed", "loss", "closeness") if name in runs}


def _as_n_modules(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"from_selection must be an integer number of modules, got {value!r}."
        raise TypeError(msg)
    return int(value)


def _adopt_selection(adata, n_modules: int, C, corr, localities, *, key: str, copy: bool):
    if not _store.has_step(adata, key, "selection"):
        msg = (
            f"from_selection={n_modules} but adata.uns[{key!r}] has no 'selection'; run "
            f"lava.tl.select_n_modules(adata, key={key!r}) first, or pass from_selection=None to fit."
        )
        raise KeyError(msg)
    selection = _store.read_selection(adata, key)
    if n_modules not in selection.best:
        msg = (
            f"lava.tl.select_n_modules kept no run with {n_modules} modules; available: "
            f"{', '.join(map(str, sorted(selection.best))) or 'none'}. Pass one of these, or rerun "
            "lava.tl.select_n_modules."
        )
        raise KeyError(msg)
    entry = selection.best[n_modules]
    modules = np.asarray(entry["modules"], dtype=np.float32)
    presence = np.asarray(entry["presence"], dtype=np.float32)
    if modules.shape != (n_modules, C.shape[1]) or presence.shape != (C.shape[0], n_modules):
        msg = (
            f"the stored selection run with {n_modules} modules has shapes {modules.shape}, {presence.shape}, which "
            f"do not match the correlations {C.shape}; rerun lava.tl.select_n_modules."
        )
        raise ValueError(msg)
    config = _stored_config(selection.params)
    weight_kind = config.locality_weight if config is not None else selection.params.get("locality_weight", "norm")
    result = stored_result(
        C,
        entry,
        modules=modules,
        presence=presence,
        config=config,
        locality_weight=weight_kind,
        device=str(selection.params.get("device", "cpu")),
    )
    rule = selection.params.get("keep", "loss")  # files written before keep= kept the lowest loss
    params = amf_params(result, keep=rule, from_selection=n_modules, key=key, copy=copy)
    adata = adata.copy() if copy else adata
    store_amf(adata, result, key=key, params=params, localities=localities, correlations=corr)
    report_fit(adata, key)
    logg.logger.info(
        "    adopted the selection run kept (keep=%r) with %d modules (loss %.4g)", rule, n_modules, result.loss
    )
    return adata if copy else None


def _stored_config(params: Mapping[str, Any]) -> core_amf.AMFConfig | None:
    """Return the resolved config of stored params (``lava.tl.select_n_modules``' or ``lava.tl.amf``'s), or None."""
    fields = {name: params[name] for name in core_amf.CONFIG_FIELDS if params.get(name) is not None}
    try:
        return core_amf.AMFConfig.from_flavor(params.get("flavor") or "lava", **fields)
    except (TypeError, ValueError):
        return None


def check_stored_inputs(adata: AnnData, localities: _store.Localities, correlations: _store.Correlations) -> None:
    """Raise if the stored localities and correlations do not describe this AnnData (e.g. it was subset since).

    Feature scores go to ``varm`` rows ``feature_index`` and presences to the samples in the localities' ``indices``,
    so both must still point at the same samples and features; checked before fitting so nothing is lost.
    """
    C, indices = correlations.values, localities.indices
    if C.shape[0] != indices.shape[0]:
        msg = (
            f"adata.uns[{correlations.key!r}] holds correlations of shape {C.shape} for localities of shape "
            f"{indices.shape}; rerun lava.tl.correlations(adata, key={correlations.key!r})."
        )
        raise ValueError(msg)
    localities.check_samples(adata.n_obs, rerun="lava.tl.localities and lava.tl.correlations")
    correlations.var_rows(adata)


def store_amf(
    adata: AnnData,
    result: core_amf.AMFResult,
    *,
    key: str,
    params: Mapping[str, Any],
    localities: _store.Localities | None = None,
    correlations: _store.Correlations | None = None,
) -> None:
    """Write an :class:`~lava.core.AMFResult` per the storage contract (uns, varm scores, obsm presence).

    Needs ``adata.uns[key]["correlations"]`` (``feature_index``) and ``["localities"]`` (``indices``), read here
    unless the caller passes what it read. Shared by :func:`lava.tl.amf`, :func:`lava.tl.select_n_modules`
    (adoption) and :func:`lava.tl.refine_presence`.
    """
    if correlations is None:
        correlations = _store.read_correlations(adata, key, require=("features", "feature_index"))
    if localities is None:
        localities = _store.read_localities(adata, key)
    indices = localities.indices
    modules = np.asarray(result.modules, dtype=np.float32)
    presence = np.asarray(result.presence, dtype=np.float32)
    n_modules = modules.shape[0]

    rows = correlations.var_rows(adata)
    scores = np.zeros((adata.n_vars, n_modules), dtype=np.float32)
    in_var = rows >= 0
    scores[rows[in_var]] = feature_scores(modules, len(correlations.feature_index))[in_var]
    if not in_var.all():
        logg.warning(
            f"{int((~in_var).sum())} of the {in_var.size} features correlated from adata.raw are not in "
            f"adata.var_names, so adata.varm[{_store.modules_key(key)!r}] has no row for their scores; compute them "
            "with lava.core.feature_scores(modules, n_features)."
        )
    sample_presence = sample_mean_presence(indices, presence, adata.n_obs)

    stored = {
        "modules": modules,
        "presence": presence,
        "loss": float(result.loss),
        "similarity": float(result.similarity),
        "overestimation_ratio": float(result.overestimation_ratio),
        "locality_similarity": np.asarray(result.locality_similarity, dtype=np.float64),
        "history": {name: np.asarray(values, dtype=np.float64) for name, values in result.history.items()},
        "n_epochs": int(result.n_epochs),
        "best_epoch": int(result.best_epoch),
        "converged": bool(result.converged),
        "interrupted": bool(result.interrupted),
        "seed": int(result.seed),
        "n_pairs_dropped": int(result.n_pairs_dropped),
        "duplicates": np.asarray(
            [(a, b) for a, b, _, _ in duplicate_modules(modules, presence)], dtype=np.int64
        ).reshape(-1, 2),
        "n_unexplained": int(np.count_nonzero(presence.max(axis=1, initial=0) < EXPLAINED_PRESENCE)),
        "n_swaps": int(result.n_swaps),
        "swap_epochs": int(result.swap_epochs),
        "n_runs": int(result.n_runs),
    }
    if getattr(result, "background", None) is not None:  # never store None in uns
        stored["background"] = np.asarray(result.background, dtype=np.float32)
    if result.module_reproducibility is not None:
        stored["module_reproducibility"] = np.asarray(result.module_reproducibility, dtype=np.float64)
    if result.runs is not None:
        stored["runs"] = {
            "seed": np.asarray(result.runs["seed"], dtype=np.int64),
            "loss": np.asarray(result.runs["loss"], dtype=np.float64),
            "closeness": np.asarray(result.runs["closeness"], dtype=np.float64),
        }
    _store.store_step(
        adata,
        key,
        "amf",
        stored,
        params,
        obsm={_store.presence_key(key): sample_presence},
        varm={_store.modules_key(key): scores},
    )


def sample_mean_presence(indices: np.ndarray, presence: np.ndarray, n_obs: int) -> np.ndarray:
    """(n_obs, M) float32: each sample's mean presence over the localities that contain it; 0 where none does."""
    indices = np.asarray(indices, dtype=np.int64)
    flat = indices.ravel()
    counts = np.bincount(flat, minlength=n_obs).astype(np.float64)
    out = np.zeros((n_obs, presence.shape[1]), dtype=np.float64)
    for m in range(presence.shape[1]):
        out[:, m] = np.bincount(
            flat, weights=np.repeat(presence[:, m].astype(np.float64), indices.shape[1]), minlength=n_obs
        )
    np.divide(out, counts[:, None], out=out, where=counts[:, None] > 0)
    return out.astype(np.float32)
