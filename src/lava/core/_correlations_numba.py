"""The CPU kernels of the locality correlations (imported on first use by :mod:`.correlations`).

:func:`rank_batch` ranks every feature of every locality of a batch straight from the stored values (only the
non-zeros of sparse data; one locality a thread): it counts each feature's non-zeros, drops the features tied out
by zeros, sorts the others' non-zeros only (zeros are one tie group; :func:`_sort_cell`, a radix sort of
order-preserving integer keys, insertion sort for short cells) and writes the centred unit-length average ranks of
the surviving features into consecutive rows. :func:`unpack` writes ``min(|r|, 1)`` of the upper triangle of the
batched products of those rows into the ``(b, P)`` output. :func:`support` marks which features entered which
localities (:func:`lava.core.correlation_support`).

As the other kernels (``_amf_numba``, ``_placement_numba``): compiled on first use and cached on disk
(``cache=True``), the GIL released, and no fast-math, so that a result has the same bits whether numba compiles
the kernels in this process or loads them from its cache.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _sort_cell(keys, samples, a_k, a_p, b_k, b_p, count, radix_min):  # pragma: no cover
    """Sort unsigned ``keys`` with their ``samples``; return the sorted ``(keys, samples)`` (views of the buffers).

    Below ``radix_min`` keys an insertion sort, else an LSD radix sort by bytes that skips the bytes every key
    shares (count data: most high bytes are equal). ``a_*``, ``b_*`` are buffers of at least ``keys.size``.
    """
    m = keys.size
    if m < radix_min:
        for t in range(m):
            key = keys[t]
            u = t
            while u > 0 and a_k[u - 1] > key:
                a_k[u] = a_k[u - 1]
                a_p[u] = a_p[u - 1]
                u -= 1
            a_k[u] = key
            a_p[u] = samples[t]
        return a_k[:m], a_p[:m]
    a_k[:m] = keys
    a_p[:m] = samples
    for shift in range(0, 8 * keys.itemsize, 8):
        count[:] = 0
        for t in range(m):
            count[(np.uint64(a_k[t]) >> np.uint64(shift)) & np.uint64(255)] += 1
        if count.max() == m:  # the same byte everywhere: nothing to do
            continue
        total = 0
        for h in range(256):
            c = count[h]
            count[h] = total
            total += c
        for t in range(m):
            h = (np.uint64(a_k[t]) >> np.uint64(shift)) & np.uint64(255)
            b_k[count[h]] = a_k[t]
            b_p[count[h]] = a_p[t]
            count[h] += 1
        a_k, b_k = b_k, a_k
        a_p, b_p = b_p, a_p
    return a_k[:m], a_p[:m]


@numba.njit(parallel=True, cache=True, nogil=True)
def rank_batch(
    indptr, indices, data, dense, idx, max_count, key_type, radix_min, packed, slot_of, n_alive
):  # pragma: no cover
    """Rank every feature of every locality of a batch straight from the stored non-zeros (one locality a thread).

    ``X`` comes as CSR arrays ``indptr``, ``indices``, ``data`` (float32 or float64; or, with ``dense``, ``data``
    is the dense ``X`` raveled row-major, ``indptr[r] = r D`` and ``indices`` is unused). Per locality ``k``:
    count each feature's non-zeros over the samples ``idx[k]``; features with more than ``max_count`` zeros are
    dropped at once; the others' non-zeros are gathered feature by feature as order-preserving unsigned integer
    keys (``key_type``: an empty uint32 array for float32 data, uint64 for float64) and sorted. Zeros are one
    tie group, so only the non-zeros are sorted: the sorted position of a non-zero is its position among the
    non-zeros, plus the number of zeros when it is positive. A kept feature's centred, unit-length average ranks
    go to the next free row of ``packed[k]`` (features in order); ``slot_of[k, j]`` is that row (-1 when dropped
    by the tie filter or constant) and ``n_alive[k]`` the number of rows used.
    """
    b, n = idx.shape
    D = slot_of.shape[1]
    sign = np.full(1, -0.0, data.dtype).view(key_type.dtype)[0]  # the sign bit; also the key of +0.0
    for k in numba.prange(b):
        count = np.zeros(D, np.int64)
        for s in range(n):
            r = idx[k, s]
            for e in range(indptr[r], indptr[r + 1]):
                if data[e] != 0:
                    count[(e - indptr[r]) if dense else indices[e]] += 1
        start = np.empty(D, np.int64)
        total = 0
        for j in range(D):
            start[j] = total
            if n - count[j] <= max_count:
                total += count[j]
        values = np.empty(total, data.dtype)
        samples = np.empty(total, np.int64)
        fill = start.copy()
        for s in range(n):
            r = idx[k, s]
            for e in range(indptr[r], indptr[r + 1]):
                v = data[e]
                if v != 0:
                    j = (e - indptr[r]) if dense else indices[e]
                    if n - count[j] <= max_count:
                        values[fill[j]] = v
                        samples[fill[j]] = s
                        fill[j] += 1
        # order-preserving keys: flip every bit of a negative float, only the sign bit of a positive one
        keys = values.view(key_type.dtype)
        for t in range(total):
            keys[t] = ~keys[t] if keys[t] & sign else keys[t] | sign
        a_k = np.empty(n, key_type.dtype)
        b_k = np.empty(n, key_type.dtype)
        a_p = np.empty(n, np.int64)
        b_p = np.empty(n, np.int64)
        histogram = np.empty(256, np.int64)
        p = 0
        for j in range(D):
            slot_of[k, j] = -1
            m = count[j]
            z = n - m
            if z > max_count:
                continue
            sk, sp = _sort_cell(
                keys[start[j] : start[j] + m],
                samples[start[j] : start[j] + m],
                a_k,
                a_p,
                b_k,
                b_p,
                histogram,
                radix_min,
            )
            n_neg = 0
            while n_neg < m and sk[n_neg] < sign:
                n_neg += 1
            # one pass over the tie groups: centred ranks into the row (unscaled), their sum of squares and the
            # longest group; centred rank of a group starting at sorted position g with c members:
            # g + (c - 1) / 2 - (n - 1) / 2 = (2 g + c - n) / 2 (a half-integer: exact in float32). A feature that
            # the tie filter rejects leaves its row unused (rows from n_alive on are zeroed by the caller).
            row = packed[k, p]
            c0 = (2 * n_neg + z - n) * 0.5
            if z > 0:
                row[:] = c0
            sumsq = z * c0 * c0
            longest = z
            t = 0
            while t < m:
                u = t + 1
                while u < m and sk[u] == sk[t]:
                    u += 1
                g = t if t < n_neg else t + z
                c = (2 * g + (u - t) - n) * 0.5
                sumsq += (u - t) * c * c
                longest = max(longest, u - t)
                for w in range(t, u):
                    row[sp[w]] = c
                t = u
            if longest > max_count or longest >= n:
                continue
            scale = 1.0 / np.sqrt(sumsq)
            for w in range(n):
                row[w] *= scale
            slot_of[k, j] = p
            p += 1
        n_alive[k] = p


@numba.njit(parallel=True, cache=True, nogil=True)
def unpack(gram, strip_of, strip_start, strip_offset, d, slot_of, target):  # pragma: no cover
    """Write ``min(|r|, 1)`` of every feature pair ``i < j`` into ``target`` (b, P), 0 where a feature is dropped.

    The products of packed rows ``p < q`` are in strips: rows ``strip_start[t]:strip_start[t + 1]`` of the
    packed ranks against rows ``strip_start[t]:d``, strip ``t`` stored row-major from ``gram[strip_offset[t]]``
    with shape ``(b, rows, d - strip_start[t])``.
    """
    b, D = slot_of.shape
    for kk in numba.prange(b * D):
        k = kk // D
        i = kk - k * D
        col = i * (2 * D - i - 1) // 2 - i - 1  # column of pair (i, j) is col + j
        out = target[k]
        p = slot_of[k, i]
        if p < 0:
            for j in range(i + 1, D):
                out[col + j] = 0
            continue
        t = strip_of[p]
        s = strip_start[t]
        base = strip_offset[t] + (k * (strip_start[t + 1] - s) + p - s) * (d - s) - s
        for j in range(i + 1, D):
            q = slot_of[k, j]
            out[col + j] = min(abs(gram[base + q]), 1.0) if q >= 0 else 0


@numba.njit(parallel=True, cache=True, nogil=True)
def support(nonzero, D, entered):  # pragma: no cover
    """``entered[k, i]``: whether feature ``i`` has a pair marked in row ``k`` of ``nonzero`` (b, P) bool."""
    b = nonzero.shape[0]
    for k in numba.prange(b):
        row = nonzero[k]
        hit = entered[k]
        col = 0
        for i in range(D - 1):
            first = False
            for j in range(i + 1, D):  # branch-free: the marks are random, a branch would mispredict
                mark = row[col]
                first |= mark
                hit[j] |= mark
                col += 1
            hit[i] |= first
