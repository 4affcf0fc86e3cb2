"""Step 3: Association Matrix Factorisation, AMF (METHOD.md section 3).

The locality correlation matrix ``C`` (l x P, values in [0, 1]) is approximated by a module matrix ``Mod``
(M x P) and a presence matrix ``Pres`` (l x M), every entry in [0, 1], with the reconstruction taken as a
maximum, not a sum::

    Chat[i, j] = max_m Pres[i, m] * Mod[m, j]

and the loss

    L = sum_i a_i (1 - cos(W_i * C_i, W_i * Chat_i)) + gamma * mean_i MAE(C_i, Chat_i),
    W[i, j] = nu if Chat[i, j] > C[i, j] else 1   (a constant in the gradient),
    a_i = ||C_i|| / sum_{k != i} ||C_k||           (over all localities, precomputed; the paper's weights).

``locality_weight="balanced"`` (the default of the variant losses) replaces the paper's weights by weights that do
not grow with the number of pairs past the tie filter (:func:`locality_weights`): on single-cell data the norm does
(densely expressing cell types weigh several times more than sparse immune cells), so the paper's weights spend the
modules on a few dense populations (``docs/amf_loss.md``, "Real data").

Conventions where the method leaves a choice (documented in ``docs/amf.md`` too):

- A cosine with a zero vector is 0: norms are floored at ``1e-8`` (so an all-zero locality, whose weight is 0,
  adds nothing, and an all-zero reconstruction still receives a gradient towards ``C``).
- If only one locality has non-zero correlations, its weight (``||C_i|| / 0``) is set to 1.
- The MAE is a mean over all P pairs, including the pairs dropped before fitting because they are 0 in every
  locality (their error is exactly 0: such a pair can only add overestimation, so its module entries are 0).
  The loss of a fit is therefore the loss of the returned full-width matrices, :func:`amf_loss`.
- The full loss is evaluated after every epoch on all localities (with every locality in one batch, by the next
  step's loss computation, which is that figure; otherwise separately, without gradient); the history, the
  convergence rule and the returned "best epoch" all use this exact figure, so the returned matrices have
  exactly the reported loss. ``history["loss"][0]`` is the loss of the initial matrices (epoch 0).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._compat import Device, RngLike, as_generator, as_seed
from ._factors import (
    LOCALITY_WEIGHTS,
    STRENGTH_QUANTILE,  # noqa: F401 - public here too (lava.core.amf.STRENGTH_QUANTILE)
    _balanced_weights,
    _check_factor_shapes,
    _strengths,
    locality_strength,
    locality_weights,
    reconstruct,
)
from .metrics import _fit_figures

#: Default learning rate of Adam (evidence in ``docs/amf.md``): on planted data 1e-3 and 3e-3 find better optima
#: than 1e-2 (3e-2 fails), 3e-3 in half the epochs of 1e-3; on MNIST 1e-3 was seen to stall on the initial plateau.
DEFAULT_LR = 3e-3
#: Default cap on epochs (one epoch = one pass over the localities).
DEFAULT_MAX_EPOCHS = 5000

_EPS = 1e-8
_ROW_CHUNK = 64

#: The losses :func:`fit_amf` can minimise (docs/amf_loss.md).
LOSSES = ("paper", "expectile")
#: The losses :func:`amf_loss` evaluates: also ``"cosine_expectile"`` (an unweighted cosine plus the expectile term,
#: measured in docs/amf_loss.md and not better; ``benchmarks/bench_amf_variants.py`` still fits it).
_EVAL_LOSSES = (*LOSSES, "cosine_expectile")
#: The default loss (evidence in docs/amf_loss.md; with ``refine=True``, its default): better than the paper's on
#: planted co-located modules on every criterion, in 3.4-9x fewer epochs, and no worse on MNIST. A C stored on disk
#: (streamed) defaults to "paper".
DEFAULT_LOSS = "expectile"
#: The recipes of :func:`fit_amf` (scanpy-style ``flavor``): ``"lava"`` (the default loss with its options) and
#: ``"paper"`` (the paper's loss, random start, stopping rule and weights). A flavor sets the default ``loss``,
#: whose :data:`LOSS_DEFAULTS` fill the options not given.
FLAVORS = {"lava": DEFAULT_LOSS, "paper": "paper"}
#: With ``background=True`` and a variant loss: the overestimation weight where the floor is the maximum (the floor
#: stays low, so that the reconstruction with it overestimates little, while ``nu`` sets the modules' asymmetry).
NU_BACKGROUND = 9.0
#: ``nu`` of the paper's loss in the second phase of ``refine=True`` (docs/amf_loss.md).
REFINE_NU = 5.0
#: The starts: "random" (the paper: uniform [0, 1]) and "localities" (modules from representative localities).
INITS = ("random", "localities")
#: The stopping rules: "paper" (1% in ``patience`` epochs) and "learned" (the same, not on the initial plateau).
STOPS = ("paper", "learned")


def _is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def check_n_modules(n_modules, n_localities: int) -> None:
    """Raise ValueError unless ``n_modules`` is an integer in [1, ``n_localities``] (not a bool)."""
    if not _is_int(n_modules) or not 1 <= n_modules <= n_localities:
        msg = f"n_modules must be an integer in [1, {n_localities}] (the number of localities), got {n_modules!r}."
        raise ValueError(msg)


def _is_real(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) and bool(np.isfinite(x))


@dataclass(frozen=True)
class AMFConfig:
    """Every option of an AMF fit, resolved and validated (:func:`fit_amf`, ``lava.tl.amf``).

    Build one with :meth:`from_flavor` (a recipe plus overrides, the way :func:`fit_amf` does); constructing or
    :func:`dataclasses.replace`-ing one validates it too. The attributes are :func:`fit_amf`'s options (see there):
    ``flavor`` (the recipe it came from), ``loss``, ``nu``, ``gamma``, ``lr``, ``batch_size``, ``patience``, ``tol``,
    ``max_epochs``, ``init``, ``stop``, ``l1``, ``background``, ``refine``, ``refine_nu``, ``locality_weight``,
    ``swaps`` and ``kernel``. The defaults are the ``"lava"`` flavor's.
    """

    flavor: str = "lava"
    loss: str = DEFAULT_LOSS
    nu: float = 12.0
    gamma: float = 1e-4
    lr: float = 1e-2
    batch_size: int = 64
    patience: int = 100
    tol: float = 0.01
    max_epochs: int = DEFAULT_MAX_EPOCHS
    init: str = "localities"
    stop: str = "learned"
    l1: float = 0.003
    background: bool = True
    refine: bool = True
    refine_nu: float = REFINE_NU
    locality_weight: str = "balanced"
    swaps: int = 4
    kernel: str = "auto"

    @classmethod
    def from_flavor(cls, flavor: str = "lava", *, in_memory: bool = True, **options: Any) -> AMFConfig:
        """Resolve ``flavor``'s recipe with ``options`` (AMFConfig field names) overriding it; validated.

        The flavor sets the default ``loss`` (``"lava"``: ``"expectile"``, ``"paper"``: ``"paper"``), and the loss's
        :data:`LOSS_DEFAULTS` fill ``nu``, ``lr``, ``init``, ``stop``, ``l1``, ``background``, ``refine``,
        ``locality_weight`` and ``swaps``; the other fields default as in the class. An option passed as None takes
        its default. ``in_memory=False`` (a C streamed from disk): without an explicit ``loss`` the recipe is the
        paper's, and a variant's in-memory defaults fall back (``init="random"``, no floor, no swaps) unless given.
        An unknown option raises TypeError.
        """
        _check_option_names(options, " (and flavor)")
        if not isinstance(flavor, str) or flavor not in FLAVORS:
            msg = f"flavor must be one of {tuple(FLAVORS)}, got {flavor!r}."
            raise ValueError(msg)
        options = {k: v for k, v in options.items() if v is not None}
        loss = options.get("loss", FLAVORS[flavor] if in_memory else "paper")
        if not isinstance(loss, str) or loss not in LOSSES:
            msg = f"loss must be one of {LOSSES}, got {loss!r}."
            raise ValueError(msg)
        values = {**LOSS_DEFAULTS[loss], **options, "loss": loss, "flavor": flavor}
        if not in_memory:  # the localities start, the floor and the swaps need C in memory
            for name, fallback in (("init", "random"), ("background", False), ("swaps", 0)):
                if name not in options:
                    values[name] = fallback
        return cls(**values)

    def __post_init__(self):
        check = _check_config(self)
        for name, value in check.items():  # numbers and flags as plain Python types (JSON-safe params)
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> AMFConfig:
        """Return a copy with ``changes`` (field names; None keeps a field), validated."""
        _check_option_names(changes)
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a dict of plain Python values (as ``lava.tl.amf`` stores them in its params)."""
        return dataclasses.asdict(self)


def _check_option_names(options, also: str = "") -> None:
    """Raise TypeError naming the options that are not AMFConfig fields."""
    unknown = sorted(set(options) - set(CONFIG_FIELDS))
    if unknown:
        listed = ", ".join(map(repr, unknown))
        msg = f"unexpected AMF option(s) {listed}; the options are {', '.join(CONFIG_FIELDS)}{also}."
        raise TypeError(msg)


def _check_config(config: AMFConfig) -> dict[str, Any]:
    """Validate ``config``'s fields (raise naming the fix); return the numbers and flags as plain Python types."""
    c = config
    if not isinstance(c.flavor, str) or c.flavor not in FLAVORS:
        msg = f"flavor must be one of {tuple(FLAVORS)}, got {c.flavor!r}."
        raise ValueError(msg)
    if isinstance(c.swaps, bool) or not isinstance(c.swaps, int | np.integer) or c.swaps < 0:
        msg = f"swaps must be a non-negative integer, got {c.swaps!r}."
        raise ValueError(msg)
    if not isinstance(c.locality_weight, str) or c.locality_weight not in LOCALITY_WEIGHTS:
        msg = f"locality_weight must be one of {LOCALITY_WEIGHTS}, got {c.locality_weight!r}."
        raise ValueError(msg)
    if not _is_real(c.nu) or c.nu <= 0:
        msg = f"nu must be a positive number (9 in the paper), got {c.nu!r}."
        raise ValueError(msg)
    if not _is_real(c.gamma) or c.gamma < 0:
        msg = f"gamma must be a non-negative number (1e-4 by default), got {c.gamma!r}."
        raise ValueError(msg)
    if not _is_real(c.lr) or c.lr <= 0:
        msg = f"lr must be a positive number ({DEFAULT_LR} by default), got {c.lr!r}."
        raise ValueError(msg)
    for name in ("batch_size", "patience", "max_epochs"):
        value = getattr(c, name)
        if not _is_int(value) or value < 1:
            msg = f"{name} must be a positive integer, got {value!r}."
            raise ValueError(msg)
    if not _is_real(c.tol) or not 0 <= c.tol < 1:
        msg = f"tol must be a number in [0, 1) (a relative improvement), got {c.tol!r}."
        raise ValueError(msg)
    if not isinstance(c.loss, str) or c.loss not in LOSSES:
        msg = f"loss must be one of {LOSSES}, got {c.loss!r}."
        raise ValueError(msg)
    if not isinstance(c.init, str):
        msg = (
            f"init must be one of {INITS}, got {type(c.init).__name__}; pass a start (modules, presence) as warm_start."
        )
        raise TypeError(msg)
    if c.init not in INITS:
        msg = f"init must be one of {INITS}, got {c.init!r}."
        raise ValueError(msg)
    if not isinstance(c.stop, str) or c.stop not in STOPS:
        msg = f"stop must be one of {STOPS}, got {c.stop!r}."
        raise ValueError(msg)
    if not isinstance(c.refine, bool | np.bool_):
        msg = f"refine must be True or False (None: the loss's default), got {c.refine!r}."
        raise TypeError(msg)
    if not _is_real(c.refine_nu) or c.refine_nu <= 0:
        msg = f"refine_nu must be a positive number ({REFINE_NU} by default), got {c.refine_nu!r}."
        raise ValueError(msg)
    if c.refine and c.loss == "paper":
        msg = "refine=True continues a variant's fit with the paper's loss; with loss='paper' pass refine=False."
        raise ValueError(msg)
    if not _is_real(c.l1) or c.l1 < 0:
        msg = f"l1 must be a non-negative number, got {c.l1!r}."
        raise ValueError(msg)
    if not isinstance(c.background, bool | np.bool_):
        msg = f"background must be True or False (None: the loss's default), got {c.background!r}."
        raise TypeError(msg)
    if c.kernel not in ("auto", "compiled", "eager"):
        msg = f"kernel must be 'auto', 'compiled' or 'eager', got {c.kernel!r}."
        raise ValueError(msg)
    return {
        "nu": float(c.nu), "gamma": float(c.gamma), "lr": float(c.lr), "batch_size": int(c.batch_size),
        "patience": int(c.patience), "tol": float(c.tol), "max_epochs": int(c.max_epochs), "l1": float(c.l1),
        "background": bool(c.background), "refine": bool(c.refine), "refine_nu": float(c.refine_nu),
        "swaps": int(c.swaps),
    }  # fmt: skip


#: The options of :func:`fit_amf` (the fields of :class:`AMFConfig` but ``flavor``).
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(AMFConfig) if f.name != "flavor")


@dataclass(frozen=True)
class AMFResult:
    """The outcome of :func:`fit_amf`.

    Attributes
    ----------
    modules
        (M, P) float32 in [0, 1]: module ``m``'s correlation on every feature pair.
    presence
        (l, M) float32 in [0, 1]: each module's presence in each locality.
    loss
        The minimised loss (the paper's, see the module docstring, or the variant's) of the best epoch; after a
        ``refine`` phase, the paper's loss at ``refine_nu``.
    similarity
        Reconstruction similarity: the a-weighted mean cosine between ``C_i`` and ``Chat_i`` (no ``nu``).
    overestimation_ratio
        ``sum(max(Chat - C, 0)) / sum(|Chat - C|)``.
    locality_similarity
        (l,) float64: cosine between ``C_i`` and ``Chat_i`` per locality.
    history
        Per epoch (index 0 = the initial matrices): ``"loss"`` (full loss), ``"batch_loss"`` (mean minibatch
        estimate during the epoch; NaN at 0), ``"seconds"`` (wall time since the start of training).
    n_epochs
        Epochs run.
    best_epoch
        Epoch of the returned matrices (0 = the initial ones).
    converged
        Whether the 1%-in-``patience`` rule stopped the fit (False when ``max_epochs`` or an interrupt did).
    interrupted
        Whether a KeyboardInterrupt stopped the fit (the best matrices so far are returned).
    seed
        The seed actually used.
    n_pairs_dropped
        Pairs that were 0 in every locality (their module entries are 0).
    kernel
        ``"compiled"`` or ``"eager"``: which implementation of the training step ran.
    background
        (l,) float32 per-locality background floor when fitted with ``background=True`` (else None); ``loss``
        then includes it (on the pairs that are not 0 everywhere), the quality figures do not.
    locality_weight
        The locality weights ``a_i`` of the loss and of ``similarity``: ``"norm"`` (the paper's) or ``"balanced"``.
    n_swaps
        Module swaps accepted after the first fit (``swaps``; 0 without): the returned matrices are those of the
        last accepted swap's fit, and ``history``, ``n_epochs`` and ``best_epoch`` are that fit's.
    swap_epochs
        Epochs of every fit but the returned one (the first fit and every swap tried, kept or not, the refused one
        that ends the search included): the whole fit ran ``n_epochs + swap_epochs`` epochs.
    config
        The resolved options of the fit (:class:`AMFConfig`; None for a result rebuilt from an old store).
    device
        The device the fit ran on (``"cpu"``, ``"cuda"``, ...).
    n_runs
        Fits made from different seeds, this one kept (:func:`~lava.core.selection.fit_runs`,
        :func:`~lava.core.select_n_modules`); 1 for a single :func:`fit_amf`.
    module_reproducibility
        (M,) float64 for a run kept from several (:func:`~lava.core.selection.fit_runs`,
        :func:`~lava.core.select_n_modules`; None from :func:`fit_amf`): per module, the share of the other runs whose
        one-to-one matched module has cosine >= 0.9 (:func:`~lava.core.selection.module_reproducibility`); NaN when
        only one run was made.
    runs
        For a run kept from several (else None): every run's ``seed`` (int64), ``loss`` and ``closeness`` (float64:
        the mean matched module cosine to the other runs, NaN with one run), in run order.
    """

    modules: np.ndarray
    presence: np.ndarray
    loss: float
    similarity: float
    overestimation_ratio: float
    locality_similarity: np.ndarray
    history: dict = field(repr=False)
    n_epochs: int
    best_epoch: int
    converged: bool
    interrupted: bool
    seed: int
    n_pairs_dropped: int = 0
    kernel: str = "eager"
    background: np.ndarray | None = field(default=None, repr=False)
    locality_weight: str = "norm"
    n_swaps: int = 0
    swap_epochs: int = 0
    config: AMFConfig | None = field(default=None, repr=False)
    device: str = "cpu"
    n_runs: int = 1
    module_reproducibility: np.ndarray | None = field(default=None, repr=False)
    runs: dict | None = field(default=None, repr=False)


def amf_loss(
    C: np.ndarray,
    presence: np.ndarray,
    modules: np.ndarray,
    *,
    nu: float = 9.0,
    gamma: float = 1e-4,
    weights: np.ndarray | None = None,
    loss: str = "paper",
) -> float:
    """Return the AMF loss of ``presence`` and ``modules`` on ``C`` (numpy, float64 accumulation).

    ``loss="paper"``: ``sum_i a_i (1 - cos(W_i C_i, W_i Chat_i)) + gamma * mean_i mean_j |C_ij - Chat_ij|`` with
    ``W = nu`` where ``Chat > C`` and 1 elsewhere; ``weights`` default to :func:`locality_weights` of ``C`` (the
    paper's; pass ``locality_weights(C, "balanced")`` for a fit with balanced weights).
    Norms are floored at 1e-8 (a cosine with a zero vector is 0).

    ``loss="expectile"``: ``sum_i a_i sum_j w_ij (Chat_ij - C_ij)^2 / ||C_i||^2 + gamma * MAE`` with ``w = nu``
    where ``Chat > C`` and 1 elsewhere (``||C_i||^2`` floored at 1e-8). ``loss="cosine_expectile"``: that plus
    the unweighted cosine term ``sum_i a_i (1 - cos(C_i, Chat_i))``. See ``docs/amf_loss.md``.
    """
    if loss not in _EVAL_LOSSES:
        msg = f"loss must be one of {_EVAL_LOSSES}, got {loss!r}."
        raise ValueError(msg)
    C = np.asarray(C)
    presence = np.asarray(presence, dtype=np.float32)
    modules = np.asarray(modules, dtype=np.float32)
    _check_factor_shapes(presence, modules)
    if C.shape != (presence.shape[0], modules.shape[1]):
        msg = f"C has shape {C.shape}; expected (l, P) = {(presence.shape[0], modules.shape[1])}."
        raise ValueError(msg)
    a = locality_weights(C) if weights is None else np.asarray(weights, dtype=np.float64)
    main, mae = 0.0, 0.0
    for r0 in range(0, C.shape[0], _ROW_CHUNK):
        c = np.asarray(C[r0 : r0 + _ROW_CHUNK], dtype=np.float64)
        h = reconstruct(presence[r0 : r0 + _ROW_CHUNK], modules).astype(np.float64)
        w = np.where(h > c, nu, 1.0)
        u, v = (w * c, w * h) if loss == "paper" else (c, h)
        nu_ = np.maximum(np.sqrt((u * u).sum(1)), _EPS)
        nv_ = np.maximum(np.sqrt((v * v).sum(1)), _EPS)
        cos = (u * v).sum(1) / (nu_ * nv_)
        term = np.zeros_like(cos) if loss == "expectile" else 1.0 - cos
        if loss != "paper":
            term = term + (w * (h - c) ** 2).sum(1) / np.maximum((c * c).sum(1), _EPS)
        main += float((a[r0 : r0 + _ROW_CHUNK] * term).sum())
        mae += float(np.abs(c - h).mean(1).sum())
    return main + gamma * mae / C.shape[0]


def _check_C(C) -> np.ndarray:
    from ._streamed import is_store

    if not is_store(C):  # a store on disk (zarr, h5py, memmap) is streamed, never loaded whole
        C = np.asarray(C)
    if C.ndim != 2 or C.shape[0] == 0 or C.shape[1] == 0:
        msg = f"C must be a non-empty 2-D array (localities x feature pairs), got shape {C.shape}."
        raise ValueError(msg)
    if not np.issubdtype(C.dtype, np.floating) and not np.issubdtype(C.dtype, np.integer):
        msg = f"C must hold real numbers, got dtype {C.dtype}."
        raise TypeError(msg)
    return C


def fit_amf(
    C: np.ndarray,
    n_modules: int,
    *,
    flavor: Literal["lava", "paper"] = "lava",
    config: AMFConfig | None = None,
    rng: RngLike = 0,
    device: Device = "auto",
    progress: bool = False,
    warm_start: tuple[np.ndarray, np.ndarray] | None = None,
    **options: Any,
) -> AMFResult:
    """Fit modules and presences to locality correlations by Association Matrix Factorisation.

    Adam (default betas) over minibatches of ``batch_size`` localities, shuffled every epoch; both matrices are
    clamped to [0, 1] after every step. After every epoch the full loss is evaluated on all localities; the fit
    stops when the best loss has not improved by more than ``tol`` (relative) in ``patience`` epochs, or after
    ``max_epochs``, and returns the matrices of the best epoch. Pairs that are 0 in every locality are dropped
    before fitting and come back as 0 in ``modules``. A KeyboardInterrupt stops the fit and returns the best
    matrices so far with ``interrupted=True``.

    The options are resolved once into an :class:`AMFConfig` (``AMFConfig.from_flavor(flavor, **options)``,
    returned as ``AMFResult.config``). ``flavor="lava"`` (default) minimises the ``"expectile"`` loss,
    ``flavor="paper"`` reproduces the paper (``loss="paper"``). The flavor sets the default ``loss``, whose
    :data:`LOSS_DEFAULTS` fill the options not given (or given as None): for ``"paper"`` nu 9, lr 3e-3, random
    start, the paper's stopping rule, norm weights, no floor, no swaps; for ``"expectile"`` nu 12, lr 1e-2,
    ``init="localities"``, ``stop="learned"``, ``l1=0.003``, ``background=True``, ``refine=True`` (a second phase
    with the paper's loss on the modules' pairs), balanced weights and 4 swaps (evidence in ``docs/amf_loss.md``).

    Parameters
    ----------
    C
        (l, P) locality correlations, finite and non-negative (absolute Spearman correlations in [0, 1]). An
        on-disk store (a zarr array with chunks of whole rows, an h5py dataset or a :class:`numpy.memmap`, e.g.
        written by ``locality_correlations(..., out=store)``) is streamed: minibatches and evaluation blocks are
        read as needed and ``C`` is never loaded whole (same result; not with ``init="localities"``,
        ``background=True`` or swaps, which need ``C`` in memory: for a store the flavors' recipe is the paper's
        unless ``loss`` is given, and a variant's in-memory defaults fall back to a random start, no floor and no
        swaps).
    n_modules
        M, the number of modules (1 <= M <= l).
    flavor
        ``"lava"`` or ``"paper"``: the recipe whose options the ``options`` override.
    config
        A resolved :class:`AMFConfig` to fit with instead of ``flavor`` (``options`` then override its fields).
    rng
        Seed (int) or :class:`numpy.random.Generator` for the initial matrices (the random start; with
        ``init="localities"`` only a tiny jitter) and the minibatch order.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...; the one used is ``AMFResult.device``.
    progress
        Show a tqdm progress bar per phase (``AMF (expectile)``, then ``AMF (refine)``): epochs towards the first
        one at which the stopping rule may end the phase (the total grows with each improvement), with the
        loss, the best loss and ``patience=k/p``, the epochs since the last improvement by more than ``tol``.
        The fit of a swap shows its own bars (``AMF swap 1 (expectile)``, ...).
    warm_start
        ``(modules, presence)`` to start from instead of ``init``, shapes (M, P) and (l, M); values are clipped to
        [0, 1] (a floor, with ``background=True``, starts at each locality's median correlation).
    **options
        The fields of :class:`AMFConfig`, below.

    Other Parameters
    ----------------
    loss
        ``"expectile"`` (the ``"lava"`` flavor's: an asymmetric squared error normalised per locality,
        overestimates weighted ``nu``, followed by the ``refine`` phase) or ``"paper"`` (the module docstring's
        loss, the paper's). See ``docs/amf_loss.md`` for why and the evidence.
    nu
        Weight of overestimated entries (``Chat > C``): in the cosine term for ``"paper"`` (9 in the paper), in the
        squared error for the variants (12 by default; 2-3 cover noisy modules more fully but overestimate more).
    gamma
        Weight of the mean absolute error term; 1e-4 by default (the paper used 10 on sparse single-cell data).
    lr
        Adam's learning rate. Variants: 1e-2 by default. Paper's loss: default 3e-3: on planted data 1e-3 and 3e-3
        recover more modules than 1e-2 (3e-2 fails), 3e-3 in about half the epochs of 1e-3; on MNIST 1e-3 was seen
        to stop on the initial plateau under the 1%-in-100-epochs rule. If a fit stops early with a flat loss
        history, raise it to 1e-2 (``docs/amf.md``).
    batch_size
        Localities per minibatch step (64).
    patience, tol
        Convergence: stop when the best full loss has not improved by more than ``tol`` (relative, 0.01) in
        ``patience`` (100) epochs.
    max_epochs
        Cap on epochs (default 5000; fits on the paper's data converge in a few hundred to ~1000), both phases
        together with ``refine`` (a first phase that uses them all leaves the second out).
    init
        ``"random"`` (the paper: uniform [0, 1] entries) or ``"localities"`` (modules taken from
        representative localities: greedy picks of the locality with the largest unexplained correlation, parts
        of a picked union that another module covers removed; the same start for every seed). A start of your
        own is ``warm_start``.
    stop
        ``"paper"``: the patience rule above; ``"learned"``: the same rule, but it may fire only once the loss
        has improved by more than ``tol`` at least once (or after ``10 * patience`` epochs), so that it cannot stop
        a fit on the initial plateau.
    l1
        Weight of a parsimony penalty ``l1 * sum(modules) / mean_i ||C_i||^2`` (a module keeps only
        the pairs it needs; without it a module can carry a copy of another module's pairs where both are present).
    background
        Fit a per-locality background floor ``b_i`` as well, ``Chat_ij = max(max_m Pres_im Mod_mj,
        b_i)`` (a fixed all-ones module), so that the low correlations every pair has are not spread over the
        modules. ``modules`` and ``presence`` exclude it; it is returned as ``AMFResult.background``, and the
        quality figures are those of the modules' reconstruction without it.
    refine
        With a variant loss: once its fit has converged, continue from its best matrices with the paper's loss at
        ``refine_nu``, every module entry that is 0 frozen at 0 (the modules keep their pairs and cannot spread;
        their values and the presences move). Before, each module takes the pairs that behave like its own but on
        which it is 0 (:func:`~lava.core.complete_modules`; not for a ``C`` on disk), and a module nested in
        another (present only where the other is) loses its entries on the other's pairs
        (:func:`~lava.core.prune_nested_modules`). The variant finds
        the structure (which pairs belong to which module, the floor), the paper's cosine then scales the values on
        those pairs, which covers noisy modules more fully than the variant alone without its overestimation at a
        low ``nu`` (``docs/amf_loss.md``). The second phase starts converged, so it stops by the paper's rule with
        a patience of ``0.2 * patience``. ``history``,
        ``n_epochs`` and ``best_epoch`` cover both phases (the loss switches at the first phase's last epoch);
        ``loss`` is the paper's loss of the returned matrices at ``refine_nu``. Default: the loss's
        (:data:`LOSS_DEFAULTS`: True for the variants).
    refine_nu
        ``nu`` of the paper's loss in the ``refine`` phase (5).
    locality_weight
        The weights ``a_i`` of the localities in the loss (:func:`locality_weights`): ``"norm"`` (the paper's,
        ``||C_i|| / sum_{k != i} ||C_k||``) or ``"balanced"`` (every locality the same, those with weaker
        correlations than typical less). Default: the loss's (:data:`LOSS_DEFAULTS`: ``"norm"`` for
        ``"paper"``, ``"balanced"`` for the variants). With ``"balanced"`` the localities start picks the
        locality whose unexplained correlation is strongest relative to its own strength, times its weight
        (:func:`init_from_localities`), so that sparse localities get modules too.
    swaps
        After the fit, up to this many module swaps (:func:`swap_module`): while some locality has no module with
        presence >= 0.5, the module whose loss the reconstruction misses least is replaced by one started from the
        worst explained such locality, and the fit is run again from there; a swap is kept when it lowers the loss,
        and the first that does not ends the search. The greedy start can spend several modules on one population
        and none on another; on the kidney data (M = 9, one placement) two swaps lowered the loss from 0.27 to 0.16
        and gave the one population without a module its module (``docs/amf_loss.md``). Each swap costs about one
        fit. Default: the loss's (:data:`LOSS_DEFAULTS`: 0 for ``"paper"``, 4 for the variants; 0 for a
        ``C`` on disk).
    kernel
        ``"eager"``: chunked torch operations (any device); ``"compiled"``: the same computation as two numba
        kernels that visit each entry once per sweep, on the CPU (several times faster; compiled on first use
        and cached on disk, about 15 s once; eager on CUDA); ``"auto"``:
        compiled on the CPU, eager on CUDA.

    Returns
    -------
    AMFResult
        The best epoch's ``modules`` (M, P) and ``presence`` (l, M), float32, with the loss, quality figures and
        the per-epoch history.
    """
    from . import _streamed

    C = _check_C(C)
    streamed = _streamed.is_store(C)
    if config is None:
        config = AMFConfig.from_flavor(flavor, in_memory=not streamed, **options)
    elif not isinstance(config, AMFConfig):
        msg = f"config must be an AMFConfig (AMFConfig.from_flavor(...)), got {type(config).__name__}."
        raise TypeError(msg)
    elif options:
        config = config.replace(**options)
    check_n_modules(n_modules, C.shape[0])
    if streamed and (config.init == "localities" or config.background or config.swaps):
        msg = "init='localities', background=True and swaps need C in memory; pass np.asarray(C) (or another init)."
        raise ValueError(msg)
    return _fit(C, n_modules, config, rng=rng, device=device, progress=progress, warm_start=warm_start)


def _fit(C, n_modules: int, config: AMFConfig, *, rng, device, progress, warm_start, label: str = "") -> AMFResult:
    """:func:`fit_amf` on a checked ``C`` with a resolved ``config``; ``label`` names a swap's progress bars."""
    from . import _amf_torch as amft
    from . import _streamed

    loss, nu, gamma, lr, init, stop, l1 = (
        getattr(config, k) for k in ("loss", "nu", "gamma", "lr", "init", "stop", "l1")
    )
    batch_size, patience, tol, max_epochs = config.batch_size, config.patience, config.tol, config.max_epochs
    background, refine, refine_nu = config.background, config.refine, config.refine_nu
    locality_weight, swaps, kernel = config.locality_weight, config.swaps, config.kernel
    n_loc, n_pairs = C.shape
    kept = _nonzero_columns(C)
    if not kept.any():
        msg = "every correlation in C is 0, so there is nothing to factorise; check the localities and features."
        raise ValueError(msg)
    seed = as_seed(rng)
    generator = as_generator(seed)
    modules0 = generator.random((n_modules, n_pairs), dtype=np.float32)
    presence0 = generator.random((n_loc, n_modules), dtype=np.float32)
    if not _streamed.is_store(C):  # C without the all-zero pairs (a copy only if some are dropped)
        Ck = np.ascontiguousarray(C if kept.all() else C[:, kept], dtype=np.float32)
    if warm_start is not None:
        modules0, presence0 = _check_warm_start(warm_start, n_modules, n_loc, n_pairs)
    elif init == "localities":
        modules0 = np.zeros((n_modules, n_pairs), dtype=np.float32)
        modules0[:, kept], presence0 = init_from_localities(
            Ck, n_modules, rng=generator, locality_weight=locality_weight
        )

    torch = amft.torch
    device = torch.device(_resolve(device))
    if _streamed.is_store(C):  # C stays on disk; minibatches and evaluation blocks are read as they are needed
        C_t = _streamed.StreamedC(C, kept, device)
        weights = locality_weights(C_t.numpy_rows(), locality_weight)
    else:
        weights = locality_weights(Ck, locality_weight)
        C_t = torch.from_numpy(Ck).to(device)
    problem = amft.Problem(
        C_t,
        torch.from_numpy(weights).to(device),
        nu=nu,
        gamma=gamma,
        n_pairs_total=n_pairs,
        kernel=amft.resolve_kernel(kernel, device),
        loss=loss,
    )
    problem.l1 = float(l1)
    problem.background = bool(background)
    problem.nu_background = NU_BACKGROUND
    problem.bg_index = n_modules
    modules0 = modules0[:, kept]
    if background:  # the fixed all-ones module; its presence starts at each locality's median correlation
        modules0 = np.vstack([modules0, np.ones((1, modules0.shape[1]), np.float32)])
        # (median by blocks of rows: np.median partitions a copy of its input, here a copy of C)
        medians = [np.median(Ck[r0 : r0 + _ROW_CHUNK], axis=1) for r0 in range(0, n_loc, _ROW_CHUNK)]
        presence0 = np.hstack([presence0, np.concatenate(medians)[:, None].astype(np.float32)])
    out = amft.train(
        problem,
        np.ascontiguousarray(presence0, dtype=np.float32),
        np.ascontiguousarray(modules0, dtype=np.float32),
        lr=lr,
        batch_size=batch_size,
        patience=patience,
        tol=tol,
        max_epochs=max_epochs,
        generator=generator,
        progress=progress,
        stop=stop,
        desc=f"AMF{label} ({loss})",
    )
    # a second phase, in the epochs that the first left (max_epochs caps both together)
    phase = {"lr": lr, "batch_size": batch_size, "tol": tol, "max_epochs": max_epochs - out["n_epochs"],
             "generator": generator, "progress": progress, "stop": "paper"}  # fmt: skip
    if phase["max_epochs"] > 0 and not out["interrupted"]:
        if refine:  # the paper's loss on the modules' support, completed and pruned (not the floor's row)
            settled, presence = out["modules"][:n_modules], out["presence"][:, :n_modules]
            if not _streamed.is_store(C):  # completion indexes C by rows and columns: C in memory only
                settled = complete_modules(Ck, settled, presence)
            settled = prune_nested_modules(settled, presence)
            out = {**out, "modules": np.vstack([settled, out["modules"][n_modules:]])}
            problem.use_paper_loss(refine_nu)
            problem.module_mask = torch.from_numpy((out["modules"] > 0).astype(np.float32)).to(device)
            out = _second_phase(
                amft, problem, out, patience=refine_patience(patience), desc=f"AMF{label} (refine)", **phase
            )
    del C_t
    modules = np.zeros((n_modules, n_pairs), dtype=np.float32)
    modules[:, kept] = out["modules"][:n_modules]
    presence = np.ascontiguousarray(out["presence"][:, :n_modules], dtype=np.float32)
    floor = np.ascontiguousarray(out["presence"][:, n_modules], dtype=np.float32) if background else None
    similarity, over_ratio, loc_sim = _fit_figures(C, presence, modules, weights=weights)
    result = AMFResult(
        modules=modules,
        presence=presence,
        loss=float(out["loss"]),
        similarity=similarity,
        overestimation_ratio=over_ratio,
        locality_similarity=loc_sim,
        history=out["history"],
        n_epochs=int(out["n_epochs"]),
        best_epoch=int(out["epoch"]),
        converged=bool(out["converged"]),
        interrupted=bool(out["interrupted"]),
        seed=seed,
        n_pairs_dropped=int(n_pairs - kept.sum()),
        kernel=problem.kernel,
        background=floor,
        locality_weight=locality_weight,
        config=config,
        device=str(device),
    )
    if not swaps or result.interrupted:
        return result

    def refit(start):
        once = _fit(C, n_modules, config.replace(swaps=0), rng=generator, device=device, progress=progress,
                    warm_start=start, label=f" swap {n_swaps + 1}")  # fmt: skip
        return dataclasses.replace(once, config=config)

    spent, n_swaps = 0, 0
    for _ in range(swaps):
        start = swap_module(C, result.modules, result.presence, weights=weights, rng=generator)
        if start is None:  # every locality has a module
            break
        tried = refit(start)
        if tried.loss >= result.loss or tried.interrupted:
            spent += tried.n_epochs
            break
        spent += result.n_epochs
        result, n_swaps = tried, n_swaps + 1
    return dataclasses.replace(result, seed=seed, n_swaps=n_swaps, swap_epochs=spent)


#: A locality is explained when some module's presence there is at least this (swap targets; lava.tl.amf's
#: ``n_unexplained``).
EXPLAINED_PRESENCE = 0.5
#: swap_module: only localities of at least this share of the largest weight are targets.
_SWAP_WEIGHT = 0.5


def swap_module(
    C: np.ndarray, modules: np.ndarray, presence: np.ndarray, *, weights: np.ndarray | None = None, rng: RngLike = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return a start for another fit: the least needed module replaced by one from the worst explained locality.

    The target is the locality, among those where no module has presence >= 0.5 and whose weight is at least half
    the largest, with the largest ``a_i (1 - cos(C_i, Chat_i))`` (``weights`` ``a``, default uniform; with balanced
    weights, noise-level localities, weaker than half the median, are never targets). The
    module replaced is the one whose removal adds the least to ``sum_i a_i ||max(C_i - Chat_i, 0)||^2`` (where it is
    the maximum, the second largest product takes over). The new module is the target's residual ``max(C - Chat,
    0)`` without the replaced module, averaged with up to 4 residuals of cosine >= 0.8 to it, entries below half its
    maximum set to 0, and its presence the 0.2-quantile of ``C / module`` over its pairs, as in
    :func:`init_from_localities`; the other modules and presences are kept. Returns ``(modules, presence)`` with a
    tiny jitter on exact zeros (from ``rng``), or None when every locality is explained. ``C`` (l, P) in memory,
    ``modules`` (M, P), ``presence`` (l, M).
    """
    C = np.ascontiguousarray(C, dtype=np.float32)
    modules = np.asarray(modules, dtype=np.float32)
    presence = np.asarray(presence, dtype=np.float32)
    _check_factor_shapes(presence, modules)
    n_loc, n_modules = presence.shape
    weights = np.ones(n_loc) if weights is None else np.asarray(weights, dtype=np.float64)
    # unexplained localities of at least half the largest weight: with balanced weights, not the noise-level ones
    # (strength below half the median), which a module would fit only by overestimating elsewhere
    poor = np.flatnonzero(
        (presence.max(axis=1, initial=0) < EXPLAINED_PRESENCE) & (weights >= _SWAP_WEIGHT * weights.max())
    )
    if poor.size == 0 or n_modules == 0:
        return None
    # per entry the largest product, its module and the second largest (the maximum without that module)
    loss_without = np.zeros(n_modules)
    similarity = np.zeros(n_loc)
    step = max(1, _SWAP_ELEMENTS // max(1, n_modules * C.shape[1]))  # rows per block of (rows, M, P) products
    for r0 in range(0, n_loc, step):
        rows = slice(r0, min(n_loc, r0 + step))
        products = presence[rows, :, None] * modules[None]  # (b, M, P)
        top = np.argmax(products, axis=1)
        first = np.take_along_axis(products, top[:, None], axis=1)[:, 0]
        if n_modules > 1:
            second = np.partition(products, n_modules - 2, axis=1)[:, n_modules - 2]
        else:
            second = np.zeros_like(first)
        block = C[rows]
        short = np.maximum(block - first, 0) ** 2
        extra = np.maximum(block - second, 0) ** 2 - short  # what removing the top module adds, per entry
        for m in range(n_modules):
            loss_without[m] += weights[rows] @ np.where(top == m, extra, 0).sum(axis=1)
        norms = np.linalg.norm(block, axis=1) * np.linalg.norm(first, axis=1)
        similarity[rows] = np.einsum("ij,ij->i", block, first) / np.maximum(norms, _EPS)
    target = poor[np.argmax(weights[poor] * (1 - similarity[poor]))]
    drop = int(np.argmin(loss_without))
    keep = [m for m in range(n_modules) if m != drop]
    if keep:
        residual = np.maximum(C - reconstruct(presence[:, keep], modules[keep]), 0)
    else:
        residual = C.copy()
    row = residual[target]
    cos = residual @ row / np.maximum(np.linalg.norm(residual, axis=1) * np.linalg.norm(row), _EPS)
    similar = np.argsort(-cos)[:_INIT_NEIGHBOURS]
    similar = np.sort(similar[cos[similar] >= 0.8])
    row = residual[similar].mean(0) if similar.size else row
    if not row.max() > 0:
        return None
    new = np.where(row >= _INIT_THRESHOLD * row.max(), row, 0).astype(np.float32)
    support = new > 0
    new_presence = np.clip(np.quantile(C[:, support] / new[support], _INIT_QUANTILE, axis=1), 0, 1)
    modules, presence = modules.copy(), presence.copy()
    modules[drop], presence[:, drop] = new, new_presence
    gen = as_generator(rng)
    modules += np.where(modules == 0, gen.uniform(0, _INIT_JITTER, modules.shape), 0).astype(np.float32)
    presence += np.where(presence == 0, gen.uniform(0, _INIT_JITTER, presence.shape), 0).astype(np.float32)
    return np.clip(modules, 0, 1), np.clip(presence, 0, 1)


#: swap_module: elements per block of the (rows, M, P) products (64 MiB of float32)
_SWAP_ELEMENTS = 2**24


def refine_patience(patience: int) -> int:
    """Patience of the ``refine`` phase: 20% of the first phase's (it starts from converged matrices)."""
    return max(1, round(0.2 * patience))


def _second_phase(amft, problem, first, **kwargs):
    """Train on from ``first``'s best matrices (``refine``); histories joined, epochs counted on.

    A second phase stops by the paper's rule (``kwargs["stop"]``): it starts from converged matrices, so "learned"
    (which waits for a first improvement by more than ``tol``, up to ``10 * patience`` epochs) would only add
    epochs there. Adam starts afresh.
    """
    second = amft.train(problem, first["presence"], first["modules"], **kwargs)
    n_first = first["n_epochs"]
    h1, h2 = first["history"], second["history"]
    history = {k: np.concatenate([h1[k], h2[k][1:] + (h1[k][-1] if k == "seconds" else 0)]) for k in h1}
    return {
        **second,
        "history": history,
        "epoch": n_first + second["epoch"],
        "n_epochs": n_first + second["n_epochs"],
    }


def _resolve(device):
    from .._compat import resolve_device

    return resolve_device(device)


def _nonzero_columns(C) -> np.ndarray:
    """Boolean (P,): pairs with a non-zero value in some locality; also checks finiteness and sign."""
    kept = np.zeros(C.shape[1], dtype=bool)
    for r0 in range(0, C.shape[0], _ROW_CHUNK):
        block = C[r0 : r0 + _ROW_CHUNK]
        if not np.all(np.isfinite(block)):
            msg = "C contains NaN or infinite values; recompute the correlations or replace them (np.nan_to_num)."
            raise ValueError(msg)
        if (block < 0).any():
            msg = "C has negative values; AMF factorises absolute correlations in [0, 1] (pass np.abs(C))."
            raise ValueError(msg)
        kept |= (block != 0).any(0)
    return kept


def _check_warm_start(warm_start, n_modules, n_loc, n_pairs):
    try:
        modules0, presence0 = warm_start
    except (TypeError, ValueError):
        msg = "warm_start must be a pair (modules, presence) of arrays with shapes (M, P) and (l, M)."
        raise TypeError(msg) from None
    modules0 = np.asarray(modules0, dtype=np.float32)
    presence0 = np.asarray(presence0, dtype=np.float32)
    if modules0.shape != (n_modules, n_pairs) or presence0.shape != (n_loc, n_modules):
        msg = (
            f"warm_start shapes {modules0.shape}, {presence0.shape} do not match modules (M, P) = {(n_modules, n_pairs)}"
            f" and presence (l, M) = {(n_loc, n_modules)}."
        )
        raise ValueError(msg)
    if not (np.all(np.isfinite(modules0)) and np.all(np.isfinite(presence0))):
        msg = "warm_start contains NaN or infinite values."
        raise ValueError(msg)
    return np.clip(modules0, 0, 1), np.clip(presence0, 0, 1)


#: Defaults of the options that depend on the loss (:meth:`AMFConfig.from_flavor` fills the options not given).
LOSS_DEFAULTS = {
    "paper": {
        "nu": 9.0,
        "lr": DEFAULT_LR,
        "init": "random",
        "stop": "paper",
        "l1": 0.0,
        "background": False,
        "refine": False,
        "locality_weight": "norm",
        "swaps": 0,
    },
    "expectile": {
        "nu": 12.0,
        "lr": 1e-2,
        "init": "localities",
        "stop": "learned",
        "l1": 0.003,
        "background": True,
        "refine": True,
        "locality_weight": "balanced",
        "swaps": 4,
    },
}
#: init="localities": entries of a picked locality's unexplained correlation below this share of its maximum are
#: treated as background (0); presences are this quantile of C / module over the module's pairs.
_INIT_THRESHOLD = 0.5
_INIT_QUANTILE = 0.2
_INIT_JITTER = 1e-3
_INIT_NEIGHBOURS = 5


def init_from_localities(
    C: np.ndarray, n_modules: int, *, rng: RngLike = 0, locality_weight: Literal["norm", "balanced"] = "norm"
) -> tuple[np.ndarray, np.ndarray]:
    """Start modules from representative localities: ``(modules (M, P), presence (l, M))`` float32 in [0, 1].

    Greedy: pick the locality with the largest unexplained correlation ``max(C_i - Chat_i, 0)`` (the largest norm;
    a tie goes to the first locality), take that residual, averaged with up to 4 more residuals of cosine
    >= 0.8 to it, as a module (entries below half its maximum set to 0: background), give every locality a presence (the 0.2-quantile of ``C / module`` over the module's pairs,
    clipped to [0, 1]) and update ``Chat``. A picked locality can hold several modules; so once all M are picked,
    a module whose pairs mostly (70%) contain a smaller module's loses those pairs, and modules left (nearly)
    empty are picked again from the residual. ``C`` is (l, P) dense. With ``locality_weight="balanced"`` the pick
    goes by the strength of the unexplained correlation (the 99th percentile of the positive residual) relative to
    the locality's own strength (:func:`locality_strength`), times the locality's weight (:func:`locality_weights`):
    localities with few features past the tie filter (small norms) are picked as readily as dense ones, noise-level
    localities rarely, and a locality whose strongest pairs are explained while weaker ones are not is not picked
    for its leftovers. The picks do not depend on ``rng`` (only a tiny jitter, at most 1e-3, added at the end so that
    no entry is exactly 0): the start is a function of ``C``. A pick drawn at random among near-ties (the earlier
    rule) made fits of different seeds differ (kidney, M = 9: 11% of modules matched at cosine >= 0.9 across seeds,
    98% with the deterministic pick, at a lower loss; ``docs/amf_loss.md``).
    """
    from ._amf_numba import residual_stats

    gen = as_generator(rng)
    C = np.ascontiguousarray(C, dtype=np.float32)
    n_loc, n_pairs = C.shape
    modules = np.zeros((n_modules, n_pairs), dtype=np.float32)
    presence = np.zeros((n_loc, n_modules), dtype=np.float32)
    relative = locality_weight != "norm"
    strength = locality_strength(C) if relative else None
    weight = _balanced_weights(strength) if relative else None

    def fit_presence(m):
        support = modules[m] > 0
        if not support.any():
            presence[:, m] = 0
            return
        for r0 in range(0, n_loc, _ROW_CHUNK):  # a block of rows at a time: C[:, support] can be most of C
            ratios = C[r0 : r0 + _ROW_CHUNK, support] / modules[m, support]
            presence[r0 : r0 + _ROW_CHUNK, m] = np.clip(np.quantile(ratios, _INIT_QUANTILE, axis=1), 0, 1)

    def others(m):
        """Presence and modules of the modules picked so far other than ``m`` (one all-zero module if none)."""
        ks = [k for k in range(n_modules) if k != m and modules[k].any()]
        if not ks:
            return np.zeros((n_loc, 1), np.float32), np.zeros((1, n_pairs), np.float32)
        return np.ascontiguousarray(presence[:, ks]), np.ascontiguousarray(modules[ks])

    def residual(rows, pres, mods):
        return np.maximum(C[rows] - reconstruct(pres[rows], mods), 0)

    def pick(m):
        # the residual max(C - Chat, 0) by the other modules: its norms and dot products in one fused pass each
        # (numba), never an l x P array besides C
        pres, mods = others(m)
        norms, _ = residual_stats(pres, mods, C, np.zeros(n_pairs, np.float32))
        if relative:  # the strength of what is left unexplained, relative to the locality's own, times its weight
            left = np.zeros(n_loc)
            for r0 in range(0, n_loc, _ROW_CHUNK):
                rows = np.arange(r0, min(n_loc, r0 + _ROW_CHUNK))
                left[rows] = _strengths(residual(rows, pres, mods))
            score = weight * left / np.maximum(strength, _EPS)
        else:
            score = norms
        row = residual([int(np.argmax(score))], pres, mods)[0]  # ties: the first locality
        # average with the most similar residuals (up to 5, cosine >= 0.8): less noise than one locality
        cos = residual_stats(pres, mods, C, row)[1] / np.maximum(norms * np.linalg.norm(row), _EPS)
        similar = np.argsort(-cos)[:_INIT_NEIGHBOURS]
        similar = np.sort(similar[cos[similar] >= 0.8])
        row = residual(similar, pres, mods).mean(0) if similar.size else row
        modules[m] = np.where(row >= _INIT_THRESHOLD * row.max(), row, 0)
        fit_presence(m)

    for m in range(n_modules):
        pick(m)
    # a module picked from a locality that holds several: remove the pairs of the smaller modules it contains;
    # a duplicate (same pairs as an earlier module) is picked again. "Pairs" are a module's strong entries (at
    # least 0.7 x its 90th percentile), so that background entries above the threshold do not count.
    support = strong_pairs(modules)
    sizes = support.sum(1)
    redo = set()
    for a in np.argsort(-sizes, kind="stable"):
        for b in range(n_modules):
            if b == a or sizes[b] == 0 or b in redo:
                continue
            common = (support[a] & support[b]).sum()
            if sizes[b] < 0.8 * sizes[a] and common >= 0.7 * sizes[b]:
                modules[a, support[b]] = 0
            elif b > a and common >= 0.7 * max(sizes[a], sizes[b]):
                redo.add(b)
    for m in range(n_modules):
        if m in redo or (modules[m] > 0).sum() < 0.25 * max(sizes[m], 1):
            modules[m] = 0
    for m in range(n_modules):
        if modules[m].any():
            fit_presence(m)
        else:
            presence[:, m] = 0
    for m in range(n_modules):
        if not modules[m].any():
            pick(m)
    # no exact zeros: where every product is 0 the maximum's gradient would all go to module 0 (ties go to the
    # first module), which then absorbs the background; tiny random values spread it instead
    modules += gen.uniform(0, _INIT_JITTER, modules.shape).astype(np.float32)
    presence += gen.uniform(0, _INIT_JITTER, presence.shape).astype(np.float32)
    return np.clip(modules, 0, 1), np.clip(presence, 0, 1)


def strong_pairs(modules: np.ndarray) -> np.ndarray:
    """Boolean (M, P): a module's strong entries, at least 0.7 x the 90th percentile of its non-zero entries.

    A module's "pairs" without the low entries that background correlation leaves on it.
    """
    modules = np.asarray(modules)
    strong = np.zeros(modules.shape, dtype=bool)
    for m in range(modules.shape[0]):
        nonzero = modules[m][modules[m] > 0]
        if nonzero.size:
            strong[m] = modules[m] >= 0.7 * np.quantile(nonzero, 0.9)
    return strong


#: A module is "present" in a locality where its presence is at least this share of its largest presence.
_ON_SHARE = 0.5
#: prune_nested_modules: nested in another when at least this share of a module's localities are the other's.
_NESTED = 0.9
#: complete_modules: a pair behaves like a module's own pairs when, in 80% of the module's localities, it correlates
#: at least ``_COMPLETE_ON`` times the median of the module's strong pairs there, and in 80% of the others at most
#: ``_COMPLETE_OFF`` times that level.
_COMPLETE_ON = 0.6
_COMPLETE_OFF = 0.3


def _present(presence: np.ndarray) -> np.ndarray:
    """Boolean (l, M): where each module is present (presence > 0 and at least half its largest presence)."""
    presence = np.asarray(presence)
    return (presence >= _ON_SHARE * np.maximum(presence.max(0, keepdims=True), _EPS)) & (presence > 0)


def prune_nested_modules(modules: np.ndarray, presence: np.ndarray) -> np.ndarray:
    """Remove from each module nested in another the entries on the other module's strong pairs.

    Module ``m`` is nested in ``k`` when ``m`` is present (presence >= half its maximum) only where ``k`` is too
    (in at least 90% of ``m``'s localities) and ``k`` is present in more localities than ``m``. Then ``m``'s
    entries on ``k``'s strong pairs (``strong_pairs``) only adjust ``k``'s pattern where both occur, a copy
    that the fit is slow to give up once it has grown (a local optimum: on planted data, refitting without it
    reaches a lower loss, docs/amf_loss.md); they are set to 0. Modules present in the same localities, or
    overlapping without nesting, keep their shared pairs. ``modules`` (M, P) and ``presence`` (l, M); returns
    a pruned copy of ``modules``.
    """
    modules = np.array(modules, dtype=np.float32)
    presence = np.asarray(presence)
    if presence.ndim != 2 or presence.shape[1] != modules.shape[0]:
        msg = f"presence must be (l, M) with M = {modules.shape[0]}, got shape {presence.shape}."
        raise ValueError(msg)
    on = _present(presence)
    n_on = on.sum(0)
    strong = strong_pairs(modules)
    for m in range(modules.shape[0]):
        for k in range(modules.shape[0]):
            if k != m and n_on[m] and n_on[k] > n_on[m] and (on[:, m] & on[:, k]).sum() >= _NESTED * n_on[m]:
                modules[m, strong[k]] = 0
    return modules


def complete_modules(C: np.ndarray, modules: np.ndarray, presence: np.ndarray) -> np.ndarray:
    """Give each module the pairs that behave like its own but on which it is 0.

    A pair behaves like module ``k``'s own pairs when ``C`` on it is high wherever ``k`` is present (in 80% of
    those localities at least 0.6 times the median of ``C`` on ``k``'s strong pairs there) and low elsewhere (in
    80% of the other localities at most 0.3 times the median level of ``k``'s pairs). Such a pair is often held by a
    fragment (a second module present where ``k`` is, with a few of ``k``'s pairs) or by no module, while ``k``'s
    own entry decayed to 0: under the maximum only the largest product gets a gradient. ``k``'s entry is set to
    the median of ``C / presence`` over its localities (the fragment then loses the pair to
    :func:`prune_nested_modules`). A pair high in only some of ``k``'s localities (the pairs of a module that
    occurs only together with ``k``) or also high elsewhere is left alone. ``C`` (l, P) in memory, ``modules``
    (M, P), ``presence`` (l, M); returns a completed copy of ``modules``.
    """
    C = np.asarray(C)
    modules = np.array(modules, dtype=np.float32)
    presence = np.asarray(presence, dtype=np.float32)
    if C.ndim != 2 or presence.shape != (C.shape[0], modules.shape[0]) or modules.shape[1] != C.shape[1]:
        msg = f"C (l, P), modules (M, P) and presence (l, M) do not fit: {C.shape}, {modules.shape}, {presence.shape}."
        raise ValueError(msg)
    on = _present(presence)
    strong = strong_pairs(modules)
    for k in range(modules.shape[0]):
        rows, others = np.flatnonzero(on[:, k]), np.flatnonzero(~on[:, k])
        if rows.size == 0 or others.size == 0 or not strong[k].any():
            continue
        level = np.maximum(np.median(C[np.ix_(rows, np.flatnonzero(strong[k]))], axis=1), _EPS)  # (n_on,)
        # candidates: 0 in module k, and a mean ratio to the level that the 20% quantile test can pass (at least
        # 80% of the ratios >= _COMPLETE_ON implies a mean >= 0.8 * _COMPLETE_ON); a block of rows at a time
        mean_ratio = np.zeros(C.shape[1], dtype=np.float64)
        for r0 in range(0, rows.size, _ROW_CHUNK):
            block = rows[r0 : r0 + _ROW_CHUNK]
            mean_ratio += (1.0 / level[r0 : r0 + _ROW_CHUNK]) @ np.asarray(C[block], dtype=np.float64)
        mean_ratio /= rows.size
        candidates = np.flatnonzero((modules[k] == 0) & (mean_ratio >= 0.7 * _COMPLETE_ON))
        if candidates.size == 0:
            continue
        ratio = C[np.ix_(rows, candidates)] / level[:, None]
        high = np.quantile(ratio, 0.2, axis=0) >= _COMPLETE_ON
        low = np.quantile(C[np.ix_(others, candidates)], 0.8, axis=0) <= _COMPLETE_OFF * np.median(level)
        take = candidates[high & low]
        if take.size:
            values = np.median(C[np.ix_(rows, take)] / np.maximum(presence[rows, k], _EPS)[:, None], axis=0)
            modules[k, take] = np.clip(values, 0, 1)
    return modules
