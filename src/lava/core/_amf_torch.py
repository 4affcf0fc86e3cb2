"""The torch side of AMF: the fused max-product kernel and the training loop (imported on first fit).

Kept apart from :mod:`lava.core.amf` so that ``import lava.core`` does not import torch.

The reconstruction ``Chat[i, j] = max_m Pres[i, m] * Mod[m, j]`` is computed over column chunks of
``chunk`` pairs with a loop over the modules that keeps the running maximum and its argmax; the (batch x M x P)
product is never formed. Its gradient reaches the argmax module only, so the backward pass is two
gather/scatter-adds per chunk. A training step does not go through autograd at all: the gradient of the paper's
loss with respect to ``Chat`` has the closed form

    dL/dChat[b, j] = s * ( W2[b, j] * (alpha_b C[b, j] + beta_b Chat[b, j]) + kappa * sign(Chat[b, j] - C[b, j]) )

with ``W2 = W**2``, ``alpha_b = -a_b / (|u_b| |v_b|)``, ``beta_b = a_b cos_b / |v_b|**2`` (``u = W C``,
``v = W Chat``), ``kappa = gamma / (l P)`` and ``s = l / batch`` the minibatch scale. The per-locality sums that
``alpha_b``/``beta_b`` need are gathered in a first sweep over the chunks (which also stores ``Chat`` and the
argmax), the gradient is formed and scattered in a second sweep. Working on column chunks keeps each
elementwise operation in cache. These are the "eager" kernels (any device); on the CPU the same two sweeps run
as numba kernels (``_amf_numba``, ``kernel="compiled"``), which visit each entry once per sweep.
"""

from __future__ import annotations

import math
from time import perf_counter

import numpy as np
import torch

EPS = 1e-8

#: Columns per chunk: 64 localities x 8192 pairs x 4 bytes = 2 MiB per (batch x chunk) array, which stays in
#: the CPU caches; on CUDA larger chunks only cut kernel launches.
CPU_CHUNK = 8192
CUDA_CHUNK = 1 << 20


def default_chunk(device: torch.device) -> int:
    return CUDA_CHUNK if device.type == "cuda" else CPU_CHUNK


def _index_dtype(n_modules: int) -> torch.dtype:
    return torch.uint8 if n_modules <= 255 else torch.int64


def max_product_forward(
    presence: torch.Tensor, modules: torch.Tensor, *, chunk: int | None = None, out=None, argmax=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(Chat, argmax)`` with ``Chat[i, j] = max_m presence[i, m] * modules[m, j]``.

    Ties go to the lowest module index (as ``torch.max``). ``argmax`` is uint8 for up to 255 modules.
    """
    n, n_mod = presence.shape
    n_pairs = modules.shape[1]
    chunk = chunk or default_chunk(presence.device)
    if out is None:
        out = torch.empty((n, n_pairs), dtype=presence.dtype, device=presence.device)
    if argmax is None:
        argmax = torch.empty((n, n_pairs), dtype=_index_dtype(n_mod), device=presence.device)
    width = min(chunk, n_pairs)
    cand = torch.empty((n, width), dtype=presence.dtype, device=presence.device)
    larger = torch.empty((n, width), dtype=torch.bool, device=presence.device)
    for j0 in range(0, n_pairs, chunk):
        j1 = min(n_pairs, j0 + chunk)
        w = j1 - j0
        o, ix, c, g = out[:, j0:j1], argmax[:, j0:j1], cand[:, :w], larger[:, :w]
        torch.mul(presence[:, :1], modules[0, j0:j1], out=o)
        ix.zero_()
        for m in range(1, n_mod):
            torch.mul(presence[:, m : m + 1], modules[m, j0:j1], out=c)
            torch.gt(c, o, out=g)  # strict: ties keep the lower module index
            ix.masked_fill_(g, m)
            torch.maximum(o, c, out=o)
    return out, argmax


def _scatter_chunk(grad, argmax, presence, modules_chunk, d_presence, d_modules_chunk) -> None:
    """Add one column chunk's gradient to its argmax modules: into ``d_presence`` and ``d_modules_chunk``."""
    ix = argmax.long()
    # d Chat[b, j] / d Pres[b, m] = Mod[m, j] and / d Mod[m, j] = Pres[b, m], only for m = argmax[b, j]
    d_presence.scatter_add_(1, ix, grad * modules_chunk.gather(0, ix))
    d_modules_chunk.scatter_add_(0, ix, grad * presence.gather(1, ix))


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """``"compiled"`` or ``"eager"`` for ``kernel`` in {"auto", "compiled", "eager"}.

    The compiled (numba) kernels run on the CPU only; on CUDA the eager torch kernels run.
    """
    return "eager" if kernel == "eager" or device.type != "cpu" else "compiled"


def _chunks(n_pairs: int, chunk: int):
    return [(j0, min(n_pairs, j0 + chunk)) for j0 in range(0, n_pairs, chunk)]


def _row_sq_norms(C: torch.Tensor, block: int = 64) -> torch.Tensor:
    """``||C_i||^2`` per row in float64, a block of rows at a time."""
    return torch.cat([(C[r0 : r0 + block].double() ** 2).sum(1) for r0 in range(0, C.shape[0], block)])


class Problem:
    """The data of one fit on the device: C (l x P'), weights a, sizes, constants."""

    def __init__(
        self,
        C: torch.Tensor,
        weights: torch.Tensor,
        *,
        nu: float,
        gamma: float,
        n_pairs_total: int,
        chunk=None,
        kernel: str = "eager",
        loss: str = "paper",
    ):
        self.C = C
        self.loss = loss
        self.kernel = kernel
        self.weights = weights
        self.n_loc, self.n_pairs = C.shape
        self.nu = float(nu)
        self.nu2 = float(nu) ** 2
        # variants: weight of the unweighted cosine term and of the asymmetric squared error term
        self.cos_weight = 0.0 if loss == "expectile" else 1.0
        self.sq_weight = 0.0 if loss == "paper" else 1.0
        # ||C_i||^2 (float64), the per-locality normaliser of the squared error term, floored
        # (C may be a StreamedC: a store on disk read a block of rows at a time, see _streamed.py)
        # (in blocks of rows: C.double() ** 2 at once held two float64 copies of C, 10 GB at 1350 x 500k)
        self.sq_norms = (C.row_sq_norms() if hasattr(C, "row_sq_norms") else _row_sq_norms(C)).clamp_min(EPS)
        # parsimony (variants): l1 * sum(Mod) / mean_i ||C_i||^2 added to the loss
        self.l1 = 0.0
        self.l1_unit = float(self.sq_norms.mean())
        # background=True: the last module is fixed to 1 on every pair (its presence is a per-locality floor);
        # where the floor is the maximum and overestimates, the weight is nu_background instead of nu
        self.background = False
        self.nu_background = self.nu
        self.bg_index = -1  # the background row's index in the modules when there is one
        self.gamma = float(gamma)
        self.n_pairs_total = int(n_pairs_total)  # the MAE's denominator: dropped all-zero pairs count (exactly 0)
        self.chunk = chunk or default_chunk(C.device)
        self.spans = _chunks(self.n_pairs, self.chunk)
        # (M', P') float mask of the module entries that train (1) or stay where they are (0); None: all train
        self.module_mask: torch.Tensor | None = None

    def use_paper_loss(self, nu: float) -> None:
        """Switch to the paper's loss at ``nu`` (no squared error, no l1): the second phase of ``refine=True``."""
        self.loss, self.nu, self.nu2 = "paper", float(nu), float(nu) ** 2
        self.cos_weight, self.sq_weight, self.l1 = 1.0, 0.0, 0.0

    def rows(self, rows: torch.Tensor | None, j0: int, j1: int) -> torch.Tensor:
        if rows is not None and not isinstance(self.C, torch.Tensor):  # streamed: read the minibatch's rows once
            return self.C.index_select(0, rows)[:, j0:j1]
        block = self.C[:, j0:j1]
        return block if rows is None else block.index_select(0, rows)


def _row_terms(dot, uu, vv):
    """Cosine of ``u = W C`` and ``v = W Chat`` per locality from the three sums, norms floored at EPS."""
    nu_ = torch.sqrt(uu).clamp_min(EPS)
    nv_ = torch.sqrt(vv).clamp_min(EPS)
    return dot / (nu_ * nv_), nu_, nv_


def evaluate(problem: Problem, presence: torch.Tensor, modules: torch.Tensor, *, batch: int = 256):
    """Full loss (float) and per-locality terms: cosine (l,) and MAE (l,), float64, no gradient."""
    with torch.no_grad():
        sums = torch.cat(
            [
                _sums(problem, presence, modules, r0, min(problem.n_loc, r0 + batch))
                for r0 in range(0, problem.n_loc, batch)
            ],
            dim=1,
        )
        if problem.loss == "paper":
            cos, _, _ = _row_terms(sums[0], sums[1], sums[2])
            terms = 1 - cos
        else:
            terms, cos, _, _, _ = _variant_terms(problem, None, sums)
        mae = sums[3] / problem.n_pairs_total
        loss = (problem.weights * terms).sum() + problem.gamma * mae.mean()
        loss = loss + problem.l1 * float(_free(problem, modules).sum()) / problem.l1_unit
    return float(loss), cos, mae


def _sums(problem: Problem, presence, modules, r0: int, r1: int) -> torch.Tensor:
    """Return the five per-locality sums (5, r1 - r0) float64 of localities ``r0:r1`` (see ``_sweep_sums``)."""
    if problem.kernel == "compiled":
        from ._amf_numba import forward_sums

        if isinstance(problem.C, torch.Tensor):
            c, rows = problem.C.numpy(), np.arange(r0, r1, dtype=np.int64)
        else:  # streamed: read the block of rows once
            c, rows = problem.C[r0:r1].numpy(), np.arange(r1 - r0, dtype=np.int64)
        out = forward_sums(
            presence[r0:r1].numpy(), modules.numpy(), c, rows, *_numba_weights(problem), _NO_STORE, _NO_ARGMAX, False
        )
        return torch.from_numpy(out)
    sums = torch.zeros((5, r1 - r0), dtype=torch.float64, device=presence.device)
    for j0, j1 in problem.spans:
        h, argmax = max_product_forward(presence[r0:r1], modules[:, j0:j1], chunk=j1 - j0)
        _sweep_sums(problem, problem.C[r0:r1, j0:j1], h, sums, argmax)
    return sums


_NO_STORE = np.empty((1, 1), np.float32)
_NO_ARGMAX = np.empty((1, 1), np.uint8)


def _numba_weights(problem: Problem) -> tuple:
    """``(over_cos, over_sq, over_bg, bg)`` of the numba kernels for ``problem``'s loss (see ``_amf_numba``)."""
    f32 = np.float32
    if problem.loss == "paper":
        return f32(problem.nu2), f32(problem.nu), f32(problem.nu), -1
    if problem.background:
        return f32(1.0), f32(problem.nu), f32(problem.nu_background), int(problem.bg_index)
    return f32(1.0), f32(problem.nu), f32(problem.nu), -1


class Buffers:
    def __init__(self, batch: int, n_pairs: int, n_modules: int, device, dtype=torch.float32):
        self.chat = torch.empty((batch, n_pairs), dtype=dtype, device=device)
        self.argmax = torch.empty((batch, n_pairs), dtype=_index_dtype(n_modules), device=device)


def loss_and_grad(problem: Problem, rows: torch.Tensor, presence_b: torch.Tensor, modules: torch.Tensor, buffers):
    """Minibatch loss estimate (float) and its gradients ``(d_presence_b, d_modules)`` for localities ``rows``.

    The estimate is ``(l / batch) * sum_b [a_b terms_b + gamma MAE_b / l]``, unbiased for the full loss.
    """
    nb = rows.numel()
    if problem.kernel == "compiled":
        return _loss_and_grad_numba(problem, rows, presence_b, modules, buffers)
    chat = buffers.chat[:nb]
    argmax = buffers.argmax[:nb]
    sums = torch.zeros((5, nb), dtype=torch.float64, device=presence_b.device)
    # sweep 1: reconstruction, argmax and the per-locality sums
    for j0, j1 in problem.spans:
        h, _ = max_product_forward(
            presence_b, modules[:, j0:j1], chunk=j1 - j0, out=chat[:, j0:j1], argmax=argmax[:, j0:j1]
        )
        _sweep_sums(problem, problem.rows(rows, j0, j1), h, sums, argmax[:, j0:j1])
    loss, alpha, beta, q, kappa = _coefficients(problem, rows, sums, presence_b.dtype)
    d_presence = torch.zeros_like(presence_b)
    d_modules = torch.zeros_like(modules)
    # sweep 2: the gradient with respect to Chat, scattered to the argmax modules
    for j0, j1 in problem.spans:
        c = problem.rows(rows, j0, j1)
        h = chat[:, j0:j1]
        ix = argmax[:, j0:j1]
        d = h - c
        g = c * alpha
        g.addcmul_(h, beta)
        if problem.loss == "paper":
            g.mul_(torch.where(d > 0, problem.nu2, 1.0))
        else:
            g.addcmul_(_over_weight(problem, d, ix) * d, q)
        if kappa:
            g.add_(torch.sign(d), alpha=kappa)
        _scatter_chunk(g, ix, presence_b, modules[:, j0:j1], d_presence, d_modules[:, j0:j1])
    return _add_l1(problem, loss, modules, d_modules), d_presence, d_modules


def _loss_and_grad_numba(problem, rows, presence_b, modules, buffers):
    """:func:`loss_and_grad` through the numba kernels (CPU)."""
    from . import _amf_numba as kernels

    nb = rows.numel()
    if isinstance(problem.C, torch.Tensor):
        c, c_rows = problem.C.numpy(), rows.numpy().astype(np.int64, copy=False)
    else:  # streamed: read the minibatch's rows once
        c, c_rows = problem.C.index_select(0, rows).numpy(), np.arange(nb, dtype=np.int64)
    pres, mod = presence_b.numpy(), modules.numpy()
    chat, argmax = buffers.chat[:nb].numpy(), buffers.argmax[:nb].numpy()
    weights = _numba_weights(problem)
    sums = torch.from_numpy(kernels.forward_sums(pres, mod, c, c_rows, *weights, chat, argmax, True))
    loss, alpha, beta, q, kappa = _coefficients(problem, rows, sums, torch.float32)
    d_pres, d_mod = kernels.backward(
        pres, mod, c, c_rows, chat, argmax, alpha.numpy().ravel(), beta.numpy().ravel(), q.numpy().ravel(),
        np.float32(kappa), *weights,
    )  # fmt: skip
    d_modules = torch.from_numpy(d_mod)
    return _add_l1(problem, loss, modules, d_modules), torch.from_numpy(d_pres), d_modules


def _coefficients(problem, rows, sums, dtype):
    """Minibatch loss (float) and the gradient's per-locality coefficients ``alpha, beta, q`` (B, 1) and ``kappa``.

    ``dL/dChat = wc (alpha C + beta Chat) + q ws (Chat - C) + kappa sign(Chat - C)`` (see ``_amf_numba``);
    the paper's loss has ``q = 0``, the variants ``wc = 1``.
    """
    nb = rows.numel()
    a = problem.weights[rows]
    scale = problem.n_loc / nb
    mae = sums[3] / problem.n_pairs_total
    if problem.loss == "paper":
        cos, nu_, nv_ = _row_terms(sums[0], sums[1], sums[2])
        terms, cw, q = 1 - cos, 1.0, torch.zeros_like(cos)
    else:
        terms, cos, nu_, nv_, sq = _variant_terms(problem, rows, sums)
        cw = problem.cos_weight
        q = scale * problem.sq_weight * 2 * a / sq
    loss = scale * float((a * terms).sum() + problem.gamma * mae.sum() / problem.n_loc)
    alpha = (-scale * cw * a / (nu_ * nv_)).to(dtype)[:, None]
    # beta is 0 where |v| was floored
    beta = torch.where(torch.sqrt(sums[2]) > EPS, scale * cw * a * cos / nv_**2, 0.0).to(dtype)[:, None]
    kappa = scale * problem.gamma / (problem.n_loc * problem.n_pairs_total)
    return loss, alpha, beta, q.to(dtype)[:, None], kappa


# ---- the loss variants (docs/amf_loss.md) ---------------------------------------------------------------------
#
#   L = sum_i a_i [ c_w (1 - cos(C_i, Chat_i)) + q_w sum_j w_ij (Chat_ij - C_ij)^2 / ||C_i||^2 ] + gamma mean_i MAE_i
#
# with an UNWEIGHTED cosine, w = nu where Chat > C and 1 elsewhere (an expectile / pinball-weighted squared error,
# normalised per locality), "expectile": c_w = 0, q_w = 1; "cosine_expectile": c_w = q_w = 1. Its gradient:
#
#   dL/dChat = s ( c_w (alpha_b C + beta_b Chat) + q_w a_b 2 w d / ||C_b||^2 + kappa sign(d) ),  d = Chat - C,
#
# alpha_b = -a_b / (|C_b| |Chat_b|), beta_b = a_b cos_b / |Chat_b|^2 (as the paper's with W = 1).


def _over_weight(problem, d, argmax):
    """``w``: ``nu`` where ``Chat > C`` (``nu_background`` where the background floor is the maximum), else 1."""
    over = torch.full_like(d, problem.nu)
    if problem.background and problem.nu_background != problem.nu:
        over = torch.where(argmax == problem.bg_index, problem.nu_background, over)
    return torch.where(d > 0, over, 1.0)


def _sweep_sums(problem, c, h, sums, argmax) -> None:
    """Add one chunk's per-locality sums to ``sums`` (5, B).

    ``sum wc C Chat, sum wc C^2, sum wc Chat^2, sum |d|, sum ws d^2`` with ``d = Chat - C``: ``wc`` is ``nu**2``
    where ``d > 0`` for the paper's (weighted) cosine and 1 for the variants', ``ws`` the variants' asymmetric weight.
    """
    d = h - c
    if problem.loss == "paper":
        w2 = torch.where(d > 0, problem.nu2, 1.0)
        wc = w2 * c
        sums[0] += (wc * h).sum(1)
        sums[1] += (wc * c).sum(1)
        sums[2] += (w2 * h * h).sum(1)
    else:
        sums[0] += (c * h).sum(1)
        sums[1] += (c * c).sum(1)
        sums[2] += (h * h).sum(1)
        sums[4] += (_over_weight(problem, d, argmax) * d * d).sum(1)
    sums[3] += d.abs().sum(1)


def _variant_terms(problem, rows, sums):
    """Per-locality loss terms (B,) float64 (without gamma's MAE) and the cosine pieces."""
    cos, nc, nh = _row_terms(sums[0], sums[1], sums[2])
    sq = problem.sq_norms if rows is None else problem.sq_norms[rows]
    terms = problem.cos_weight * (1 - cos) + problem.sq_weight * sums[4] / sq
    return terms, cos, nc, nh, sq


def _add_l1(problem, loss, modules, d_modules):
    """Add the l1 penalty to a minibatch loss (returned) and its gradient to ``d_modules`` (in place)."""
    if problem.l1:
        loss += problem.l1 * float(_free(problem, modules).sum()) / problem.l1_unit
        _free(problem, d_modules).add_(problem.l1 / problem.l1_unit)
    return loss


def _free(problem, modules):
    """Return the trained modules (all but the fixed background row when there is one)."""
    return modules[:-1] if problem.background else modules


def run_epoch(problem, presence, modules, optimizer, order, batch_size, buffers) -> float:
    """One pass over the localities in ``order`` (a permutation); returns the mean minibatch loss estimate."""
    total, n_steps = 0.0, 0
    for start in range(0, problem.n_loc, batch_size):
        rows = order[start : start + batch_size]
        loss, d_pres_b, d_mod = loss_and_grad(problem, rows, presence.detach()[rows], modules.detach(), buffers)
        _step(problem, presence, modules, optimizer, rows, d_pres_b, d_mod)
        total += loss
        n_steps += 1
    return total / n_steps


def _step(problem, presence, modules, optimizer, rows, d_pres_b, d_mod) -> None:
    """One Adam step with the gradients of localities ``rows``; both matrices clamped to [0, 1] after it.

    The presence gradient is zero outside ``rows``; its buffer is allocated on the first step and reused.
    """
    if problem.module_mask is not None:  # frozen entries get no gradient: a fresh Adam leaves them in place
        d_mod.mul_(problem.module_mask)
    if presence.grad is None:
        presence.grad = torch.zeros_like(presence)
    presence.grad.zero_()
    presence.grad.index_copy_(0, rows, d_pres_b)
    modules.grad = d_mod
    optimizer.step()
    with torch.no_grad():
        presence.clamp_(0.0, 1.0)
        modules.clamp_(0.0, 1.0)
        if problem.background:
            modules[-1] = 1.0


#: With every locality in one batch, take each epoch's full loss from the next step's loss computation instead of a
#: separate evaluation (the same figure, in a different order of summation; False: a separate evaluation).
SHARE_ONE_BATCH_LOSS = True

#: stop="learned": without a first improvement by more than ``tol``, the patience rule waits this many windows.
LEARNED_MAX_WINDOWS = 10


def _may_stop(stop: str, ref_epoch: int, epoch: int, patience: int) -> bool:
    """Return whether the patience rule may stop the fit now.

    Always for "paper"; for "learned" only once the loss has improved by more than ``tol`` at least once (not on
    the initial plateau), or after ``10 * patience`` epochs.
    """
    if stop == "paper":
        return True
    return ref_epoch > 0 or epoch >= LEARNED_MAX_WINDOWS * patience


def _earliest_stop(stop: str, ref_epoch: int, patience: int, max_epochs: int) -> int:
    """Return the first epoch at which the fit may stop if the loss does not improve again (the bar's total)."""
    if stop == "paper" or ref_epoch > 0:
        return min(max_epochs, ref_epoch + patience)
    return min(max_epochs, LEARNED_MAX_WINDOWS * patience)


def _match_threads() -> None:
    """Let the numba kernels use as many threads as torch (``torch.set_num_threads`` governs both)."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def train(
    problem: Problem,
    presence0: np.ndarray,
    modules0: np.ndarray,
    *,
    lr: float,
    batch_size: int,
    patience: int,
    tol: float,
    max_epochs: int,
    generator: np.random.Generator,
    progress: bool,
    stop: str = "paper",
    desc: str = "AMF",
) -> dict:
    """Adam over minibatches until the best full loss stalls; returns the best epoch's matrices and the history.

    The progress bar (labelled ``desc``) counts epochs towards the first one at which the stopping rule may end
    the fit if the loss does not improve again, so its total grows with every improvement and never passes
    ``max_epochs``; ``patience=k/p`` says how many of the ``patience`` epochs have passed without one.
    """
    dev = problem.C.device
    presence = torch.tensor(presence0, dtype=torch.float32, device=dev, requires_grad=True)
    modules = torch.tensor(modules0, dtype=torch.float32, device=dev, requires_grad=True)
    # fused: one kernel per step, 4x the default implementation on the CPU
    optimizer = torch.optim.Adam([modules, presence], lr=lr, fused=True)
    buffers = Buffers(min(batch_size, problem.n_loc), problem.n_pairs, modules.shape[0], dev)
    if problem.kernel == "compiled":
        _match_threads()

    # One step per epoch (every locality in one batch): the step's loss at the current matrices is their full loss,
    # so the loss and the gradients of the next step come from one computation, at half the cost of a separate
    # evaluation. Its permutation is drawn from ``generator`` as the step would draw it, and handed back (the
    # generator's state restored) when the fit stops before taking that step, so the stream is that of a separate
    # evaluation.
    one_batch = SHARE_ONE_BATCH_LOSS and problem.n_loc <= batch_size
    ahead = None  # (generator state before the draw, order, gradients) of the next step, with one_batch

    def current_loss(epoch: int) -> float:
        nonlocal ahead
        if not (one_batch and epoch < max_epochs):
            return evaluate(problem, presence.detach(), modules.detach())[0]
        state = generator.bit_generator.state
        order = torch.as_tensor(generator.permutation(problem.n_loc), device=dev)
        loss, d_pres, d_mod = loss_and_grad(problem, order, presence.detach()[order], modules.detach(), buffers)
        ahead = (state, order, d_pres, d_mod)
        return loss

    loss0 = current_loss(0)
    losses, batch_losses, seconds = [loss0], [math.nan], [0.0]
    best = {"loss": loss0, "epoch": 0, "presence": presence0.astype(np.float32), "modules": modules0}
    ref_loss, ref_epoch = loss0, 0  # the convergence rule's reference: last improvement by more than tol
    converged = interrupted = False
    bar = None
    if progress:
        from ._progress import tqdm

        bar = tqdm(total=_earliest_stop(stop, ref_epoch, patience, max_epochs), desc=desc, unit="epoch")
    t0 = perf_counter()
    try:
        for epoch in range(1, max_epochs + 1):
            if ahead is None:
                order = torch.as_tensor(generator.permutation(problem.n_loc), device=dev)
                batch_loss = run_epoch(problem, presence, modules, optimizer, order, batch_size, buffers)
            else:  # the step whose loss is the previous epoch's
                _, order, d_pres, d_mod = ahead
                ahead = None
                _step(problem, presence, modules, optimizer, order, d_pres, d_mod)
                batch_loss = losses[-1]
            loss = current_loss(epoch)
            losses.append(loss)
            batch_losses.append(batch_loss)
            seconds.append(perf_counter() - t0)
            if loss < best["loss"]:
                best = {
                    "loss": loss,
                    "epoch": epoch,
                    "presence": presence.detach().cpu().numpy().copy(),
                    "modules": modules.detach().cpu().numpy().copy(),
                }
            if loss < ref_loss * (1 - tol):
                ref_loss, ref_epoch = loss, epoch
            if bar is not None:
                bar.total = _earliest_stop(stop, ref_epoch, patience, max_epochs)
                patience_used = f"{epoch - ref_epoch}/{patience}"
                bar.set_postfix(loss=f"{loss:.4g}", best=f"{best['loss']:.4g}", patience=patience_used, refresh=False)
                bar.update(1)
            if not math.isfinite(loss):
                msg = f"the AMF loss became {loss} at epoch {epoch}; lower lr=... (now {lr})."
                raise FloatingPointError(msg)
            if epoch - ref_epoch >= patience and _may_stop(stop, ref_epoch, epoch, patience):
                converged = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        if ahead is not None:  # the step not taken: its permutation back to the generator
            generator.bit_generator.state = ahead[0]
    return {
        **best,
        "history": {
            "loss": np.asarray(losses, dtype=np.float64),
            "batch_loss": np.asarray(batch_losses, dtype=np.float64),
            "seconds": np.asarray(seconds, dtype=np.float64),
        },
        "n_epochs": len(losses) - 1,
        "converged": converged,
        "interrupted": interrupted,
    }
