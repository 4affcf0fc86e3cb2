"""The fused AMF step on the CPU as two numba kernels (imported on first use).

One minibatch step needs, for every locality ``b`` of the batch and every pair ``j``, the reconstruction
``h = max_m Pres[b, m] Mod[m, j]`` and its argmax, five per-locality sums, and then the gradient with respect
to ``h`` sent to the argmax module only. The torch version of this (``_amf_torch``) runs a dozen elementwise
operations over (batch x chunk) arrays per chunk of pairs, each a pass through memory, and a gather and a
scatter-add per chunk; here each entry is visited once per sweep, in one loop that keeps everything in
registers, with the pairs split into blocks over the threads (``prange``).

Both sweeps serve every loss (``docs/amf_loss.md``) through four constants:

- ``over_cos``: the weight of an overestimated entry inside the cosine's sums (``nu**2`` for the paper's loss,
  1 for the variants, whose cosine is unweighted);
- ``over_sq``, ``over_bg``: the weight of an overestimated entry in the squared error (``nu``, and
  ``nu_background`` where the module at the maximum is the background floor ``bg``; -1 when there is none).

Sweep 1 (:func:`forward_sums`) returns, per locality, ``sum wc C h``, ``sum wc C^2``, ``sum wc h^2``,
``sum |h - C|`` and ``sum ws (h - C)^2`` (``wc``, ``ws`` the weights above, 1 where ``h <= C``) and, when
asked, stores ``h`` and the argmax for sweep 2. Sweep 2 (:func:`backward`) forms

    g = wc (alpha_b C + beta_b h) + q_b ws (h - C) + kappa sign(h - C)

and adds ``g Mod[argmax, j]`` to ``d_presence[b, argmax]`` and ``g Pres[b, argmax]`` to ``d_modules[argmax, j]``.
Blocks own disjoint columns of ``d_modules``; ``d_presence`` is summed over per-block partials, so the result
does not depend on the number of threads.

Outside training, :func:`max_product` is :func:`lava.core.reconstruct`'s kernel and :func:`residual_stats` gives
``init="localities"`` the norms and dot products of the residual ``max(C - Chat, 0)`` without forming it.

No kernel uses fast-math: a fit must give the same bits whether numba compiles the kernels in this process or loads
them from its on-disk cache. For a ``parallel=True`` function these are not the same machine code (numba's cache
holds its own copy of the parallel loop's body, optimised with the caller), and with reassociation allowed the two
vectorised their sums differently: ``backward``'s presence gradients differed in the last bits, which the argmax of
the reconstruction amplified (``lava demo``: loss 0.21988 with a cold cache, 0.22001 with a warm one). Without
fast-math every optimisation must keep IEEE order, so both give the same bits; the sums stay vectorised because
:func:`_sum8` keeps eight independent partial sums, in an order fixed in the source.
"""

from __future__ import annotations

import numba
import numpy as np

#: Pairs per parallel block: 2048 x 4 bytes per row stays in the L1/L2 caches.
BLOCK = 2048


@numba.njit(inline="always")
def _span(blk, n_pairs):  # pragma: no cover
    """Pairs ``j0:j1`` of block ``blk`` (blocks of :data:`BLOCK` pairs, the last one partial)."""
    j0 = blk * BLOCK
    return j0, min(n_pairs, j0 + BLOCK)


@numba.njit(inline="always")
def _sum8(x):  # pragma: no cover
    """``sum(x)`` (float32) as eight interleaved partial sums added pairwise: vectorised, in a fixed order."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    n = x.size
    n8 = n - n % 8
    for u in range(0, n8, 8):
        a0 += x[u]
        a1 += x[u + 1]
        a2 += x[u + 2]
        a3 += x[u + 3]
        a4 += x[u + 4]
        a5 += x[u + 5]
        a6 += x[u + 6]
        a7 += x[u + 7]
    for u in range(n8, n):
        a0 += x[u]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@numba.njit(parallel=True, cache=True, nogil=True)
def forward_sums(pres, mod, C, rows, over_cos, over_sq, over_bg, bg, chat, argmax, store):  # pragma: no cover
    """Per-locality sums (5, B) float64 for ``C[rows]`` and ``Chat = max_m pres[:, m] mod[m]``.

    With ``store``, ``chat`` (B x P float32) and ``argmax`` (B x P uint8) receive ``Chat`` and its argmax (the
    lowest module index on ties, as ``torch.max``); otherwise they are not touched (pass 1 x 1 arrays).
    """
    n_b = pres.shape[0]
    n_pairs = mod.shape[1]
    n_blocks = -(-n_pairs // BLOCK)
    partial = np.zeros((n_blocks, 5, n_b))
    for blk in numba.prange(n_blocks):
        j0, j1 = _span(blk, n_pairs)
        w = j1 - j0
        best = np.empty(w, dtype=np.float32)
        arg = np.empty(w, dtype=np.int32)
        terms = np.empty((5, w), dtype=np.float32)  # the summands, one row per sum (summed by _sum8)
        for b in range(n_b):
            _max_product(pres, mod, b, j0, j1, best, arg)
            c_row = C[rows[b], j0:j1]
            for j in range(w):
                h = best[j]
                c = c_row[j]
                d = h - c
                over = d > 0
                wc = over_cos if over else np.float32(1.0)
                ws = (over_bg if arg[j] == bg else over_sq) if over else np.float32(1.0)
                terms[0, j] = wc * c * h
                terms[1, j] = wc * c * c
                terms[2, j] = wc * h * h
                terms[3, j] = abs(d)
                terms[4, j] = ws * d * d
            for s in range(5):
                partial[blk, s, b] = _sum8(terms[s])
            if store:
                chat[b, j0:j1] = best
                out = argmax[b, j0:j1]
                for j in range(w):
                    out[j] = arg[j]
    return partial.sum(axis=0)


@numba.njit(inline="always")
def _max_product(pres, mod, b, j0, j1, best, arg):  # pragma: no cover
    """``best = max_m pres[b, m] mod[m, j0:j1]`` and ``arg`` its first argmax (written as selects, vectorised)."""
    w = j1 - j0
    p0 = pres[b, 0]
    m0 = mod[0, j0:j1]
    for j in range(w):
        best[j] = p0 * m0[j]
        arg[j] = 0
    for m in range(1, pres.shape[1]):
        pm = pres[b, m]
        mm = mod[m, j0:j1]
        mi = np.int32(m)
        for j in range(w):
            v = pm * mm[j]
            gt = v > best[j]  # strict: ties keep the lower module index
            best[j] = v if gt else best[j]
            arg[j] = mi if gt else arg[j]


@numba.njit(parallel=True, cache=True, nogil=True)
def backward(
    pres, mod, C, rows, chat, argmax, alpha, beta, q, kappa, over_cos, over_sq, over_bg, bg
):  # pragma: no cover
    """Return ``(d_presence (B, M), d_modules (M, P))`` float32 for the gradient ``g`` of the module docstring."""
    n_b, n_mod = pres.shape
    n_pairs = mod.shape[1]
    n_blocks = -(-n_pairs // BLOCK)
    d_mod = np.zeros((n_mod, n_pairs), dtype=np.float32)
    partial = np.zeros((n_blocks, n_b, n_mod))
    for blk in numba.prange(n_blocks):
        j0, j1 = _span(blk, n_pairs)
        w = j1 - j0
        g = np.empty(w, dtype=np.float32)
        arg = np.empty(w, dtype=np.int32)
        prod = np.empty(w, dtype=np.float32)
        for b in range(n_b):
            a_b = alpha[b]
            be_b = beta[b]
            q_b = q[b]
            h_row = chat[b, j0:j1]
            c_row = C[rows[b], j0:j1]
            a_row = argmax[b, j0:j1]
            for j in range(w):
                arg[j] = a_row[j]
            for j in range(w):
                h = h_row[j]
                c = c_row[j]
                d = h - c
                over = d > 0
                wc = over_cos if over else np.float32(1.0)
                ws = (over_bg if arg[j] == bg else over_sq) if over else np.float32(1.0)
                sg = np.float32(1.0) if over else (np.float32(-1.0) if d < 0 else np.float32(0.0))
                g[j] = wc * (a_b * c + be_b * h) + q_b * ws * d + kappa * sg
            # the scatter to the argmax module, as M masked passes (vectorised) instead of an indexed one
            for m in range(n_mod):
                mi = np.int32(m)
                p_bm = pres[b, m]
                mm = mod[m, j0:j1]
                dm = d_mod[m, j0:j1]
                for j in range(w):
                    gm = g[j] if arg[j] == mi else np.float32(0.0)
                    dm[j] += gm * p_bm
                    prod[j] = gm * mm[j]
                partial[blk, b, m] = _sum8(prod)
    return partial.sum(axis=0).astype(np.float32), d_mod


@numba.njit(parallel=True, cache=True, nogil=True)
def max_product(pres, mod, out):  # pragma: no cover
    """``out[i, j] = max_m pres[i, m] mod[m, j]`` (l x P float32), the pairs split into blocks over the threads."""
    n_pairs = mod.shape[1]
    n_blocks = -(-n_pairs // BLOCK)
    for blk in numba.prange(n_blocks):
        j0, j1 = _span(blk, n_pairs)
        arg = np.empty(j1 - j0, dtype=np.int32)
        for i in range(pres.shape[0]):
            _max_product(pres, mod, i, j0, j1, out[i, j0:j1], arg)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def residual_stats(pres, mod, C, row):  # pragma: no cover
    """Per locality ``i``: ``|r_i|`` and ``r_i . row`` (float64) of the residual ``r_i = max(C_i - Chat_i, 0)``.

    ``Chat = max_m pres[:, m] mod[m]`` is formed a block at a time, never as an l x P array; blocks of pairs go to
    the threads (each block's modules stay in cache for all localities). ``row`` (P,) may be all zeros (then the
    dot products are 0).
    """
    n_loc = C.shape[0]
    n_pairs = C.shape[1]
    n_blocks = -(-n_pairs // BLOCK)
    partial = np.zeros((n_blocks, 2, n_loc))
    for blk in numba.prange(n_blocks):
        j0, j1 = _span(blk, n_pairs)
        w = j1 - j0
        best = np.empty(w, dtype=np.float32)
        arg = np.empty(w, dtype=np.int32)
        terms = np.empty((2, w), dtype=np.float32)
        r_ref = row[j0:j1]
        for i in range(n_loc):
            _max_product(pres, mod, i, j0, j1, best, arg)
            c_row = C[i, j0:j1]
            for j in range(w):
                r = max(c_row[j] - best[j], np.float32(0.0))
                terms[0, j] = r * r
                terms[1, j] = r * r_ref[j]
            partial[blk, 0, i] = _sum8(terms[0])
            partial[blk, 1, i] = _sum8(terms[1])
    sums = partial.sum(axis=0)
    return np.sqrt(sums[0]), sums[1]
