"""Presence refinement: presences re-fitted with the modules fixed, under a pinball loss (METHOD.md section 3).

:func:`refine_presence` re-fits each locality's presences by Adam under a pinball (quantile) loss of the residual
``C - C_hat``, the modules held fixed.
"""

from __future__ import annotations

import numpy as np

from .._compat import Device, resolve_device


def _max_product(presence, modules, top_module=None, *, chunk_elements: int = 2**24):
    """Take the max over modules of ``presence[:, m, None] * modules[m]``, with the winning module's entry.

    Returns ``(C_hat, argmax, modules[argmax])``, each (b, P). The (b, M, P) product is formed a block of pairs at a
    time (at most ``chunk_elements`` entries). Where every product is 0 the argmax is the module with the largest
    entry (``top_module``, default ``modules.argmax(0)``), so a zero presence still gets a gradient.
    """
    import torch

    b, n_mod = presence.shape
    n_pairs = modules.shape[1]
    chat = torch.empty((b, n_pairs), dtype=modules.dtype, device=modules.device)
    arg = torch.empty((b, n_pairs), dtype=torch.long, device=modules.device)
    step = max(1, chunk_elements // max(1, b * n_mod))
    for s in range(0, n_pairs, step):
        values, index = (presence[:, :, None] * modules[None, :, s : s + step]).max(dim=1)
        chat[:, s : s + step] = values
        arg[:, s : s + step] = index
    if top_module is None:
        top_module = modules.argmax(dim=0)
    arg = torch.where(chat == 0, top_module.expand_as(arg), arg)
    return chat, arg, modules.gather(0, arg)


def pinball(residual, tau: float):
    """Pinball (quantile) loss of ``residual = C - C_hat``: ``tau * r`` if r >= 0 else ``(tau - 1) * r``."""
    return residual * (tau - (residual < 0).to(residual.dtype))


def refine_presence(
    C: np.ndarray,
    modules: np.ndarray,
    presence: np.ndarray,
    *,
    tau: float = 0.1,
    lr: float = 5e-2,
    batch_size: int = 64,
    max_epochs: int = 500,
    patience: int = 30,
    tol: float = 1e-4,
    device: Device = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Re-fit presences with the modules fixed under a pinball (quantile) loss (METHOD.md section 3, optional step).

    With ``C_hat[i, j] = max_m presence[i, m] * modules[m, j]`` and the residual ``r = C - C_hat``, each locality's
    loss is the mean over pairs of ``tau * r`` (r >= 0, underestimation) or ``(tau - 1) * r`` (r < 0,
    overestimation), i.e. overestimation costs ``nu = (1 - tau) / tau`` times more (tau = 0.1 matches nu = 9).
    With the modules fixed the localities are independent; each is optimised from the given presences by Adam
    with presences clamped to [0, 1] after every step, keeping each locality's best presences. At the optimum about
    a fraction tau of the (module-weighted) pairs is overestimated; the overestimation *ratio* (a ratio of error
    magnitudes) then lies near tau, typically a little below it, since overestimated pairs are the small residuals.

    Parameters
    ----------
    C
        (l, P) locality correlations.
    modules
        (M, P) modules in [0, 1], kept fixed.
    presence
        (l, M) starting presences (e.g. AMF's), clipped to [0, 1].
    tau
        Quantile in (0, 1); smaller penalises overestimation more.
    lr
        Adam learning rate (presences live in [0, 1]; 0.05 converges to the same optimum as 0.01 in a fraction of the steps).
    batch_size
        Localities optimised together (memory: a few ``batch_size x P`` tensors).
    max_epochs
        Maximum number of Adam steps per batch.
    patience
        Stop a batch when its loss has not improved by more than ``tol`` (relative) for this many steps.
    tol
        Relative improvement that resets ``patience``.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    progress
        Show a progress bar over locality batches.

    Returns
    -------
    np.ndarray
        (l, M) float32 refined presences in [0, 1].
    """
    import torch

    from ._progress import tqdm

    C = np.asarray(C)
    modules = np.asarray(modules)
    presence = np.asarray(presence)
    if C.ndim != 2 or modules.ndim != 2 or presence.ndim != 2:
        msg = "C, modules and presence must be 2-D: (l, P), (M, P) and (l, M)."
        raise ValueError(msg)
    if modules.shape[1] != C.shape[1] or presence.shape != (C.shape[0], modules.shape[0]):
        msg = (
            f"shapes do not fit: C {C.shape}, modules {modules.shape}, presence {presence.shape}; expected "
            "(l, P), (M, P), (l, M)."
        )
        raise ValueError(msg)
    if not 0 < tau < 1:
        msg = f"tau must be in (0, 1), got {tau}."
        raise ValueError(msg)
    for name, value in (("batch_size", batch_size), ("max_epochs", max_epochs), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            msg = f"{name} must be an integer >= 1, got {value!r}."
            raise ValueError(msg)
    dev = resolve_device(device)
    mods = torch.as_tensor(np.ascontiguousarray(modules, dtype=np.float32), device=dev)
    top_module = mods.argmax(dim=0)
    out = np.clip(presence, 0.0, 1.0).astype(np.float32)
    n_loc = C.shape[0]
    starts = range(0, n_loc, batch_size)
    for start in tqdm(starts, disable=not progress, desc="refining presence", unit="batch"):
        stop = min(start + batch_size, n_loc)
        Cb = torch.as_tensor(np.ascontiguousarray(C[start:stop], dtype=np.float32), device=dev)
        pres = torch.tensor(out[start:stop], device=dev, requires_grad=True)
        optimizer = torch.optim.Adam([pres], lr=lr)
        best_rows = pres.detach().clone()
        best_row_loss = torch.full((stop - start,), float("inf"), device=dev)
        best_total, since = float("inf"), 0
        for _ in range(max_epochs):
            with torch.no_grad():
                _, arg, mod_at = _max_product(pres, mods, top_module)
            chat = pres.gather(1, arg) * mod_at
            row_loss = pinball(Cb - chat, tau).mean(dim=1)
            with torch.no_grad():
                improved = row_loss < best_row_loss
                best_row_loss = torch.where(improved, row_loss, best_row_loss)
                best_rows = torch.where(improved[:, None], pres.detach(), best_rows)
                total = float(row_loss.sum())
            if total < best_total * (1 - tol):
                best_total, since = total, 0
            else:
                since += 1
                if since >= patience:
                    break
            optimizer.zero_grad(set_to_none=True)
            row_loss.sum().backward()
            optimizer.step()
            with torch.no_grad():
                pres.clamp_(0.0, 1.0)
        out[start:stop] = best_rows.cpu().numpy()
    return out
