"""Compiled inner loops of the placement k-means (imported on first use by :mod:`.placement`).

:func:`reassign` is one Lloyd assignment step with Hamerly bounds: a sample whose bounds prove it keeps its
centroid costs a few operations, and one whose bounds do not is compared with the centroids near its own (a
dozen distances); those for which the triangle inequality cannot rule out the others are left to a KD-tree
query. The numpy version queried a KD-tree over the centroids for every such sample, about 0.5 us each, which
was most of the time of an evaluation. :func:`kmeans_plusplus` is greedy k-means++ seeding, :func:`accumulate` the
weighted centroid sums, :func:`block_neighbourhoods` the neighbourhoods behind the centrality.

Sequential on purpose: the result does not depend on the number of threads, and DIRECT evaluations are many
small k-means. As the other kernels (``_amf_numba``, ``_correlations_numba``): compiled on first use and cached on
disk (``cache=True``), the GIL released, and no fast-math.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def _sq_dist(A, i, B, k):  # pragma: no cover
    """Squared Euclidean distance between rows ``A[i]`` and ``B[k]``."""
    s = 0.0
    for j in range(A.shape[1]):
        t = A[i, j] - B[k, j]
        s += t * t
    return s


@numba.njit(cache=True, nogil=True)
def reassign(
    Z, C, labels, upper, lower, delta, near_shift, far_old, largest, near, near_dist, has_far, pending
):  # pragma: no cover
    """One assignment step after the centroids moved by ``delta``; updates labels and bounds in place.

    ``upper[i]`` (distance to the centroid, from above) and ``lower[i]`` (to the second nearest, from below)
    are those before the move. ``near_shift[a]``: the largest shift among the centroids near ``a`` before the
    move; ``far_old[a]``: distance from ``a`` to the first centroid not near it minus the largest shift
    (``largest``), before the move. ``near``, ``near_dist``: the centroids nearest each centroid after the move
    (with ``has_far``, the first ``near.shape[1] - 1`` are the candidates and the last distance bounds all
    others; otherwise all centroids are listed). Samples that a centroid outside the list may be nearest to are
    written to ``pending`` (to be queried in full) and keep their label. Returns the number of changed labels
    and of pending samples.
    """
    E = Z.shape[0]
    n_cand = near.shape[1] - 1 if has_far else near.shape[1]
    changed = 0
    n_pending = 0
    for i in range(E):
        a = labels[i]
        u = upper[i] + delta[a]
        low = lower[i] - near_shift[a]
        if has_far:
            # the far centroids' bound, unless the largest shift of all (Hamerly's own bound) is tighter
            low = max(min(low, far_old[a] - upper[i]), lower[i] - largest)
        if u <= low:
            upper[i] = u
            lower[i] = low
            continue
        s = _sq_dist(Z, i, C, a)
        u = np.sqrt(s)
        if u <= low:
            upper[i] = u
            lower[i] = low
            continue
        best = a
        d1 = np.inf
        d2 = np.inf
        for q in range(n_cand):
            c = near[a, q]
            s = _sq_dist(Z, i, C, c)
            if s < d1:
                d2 = d1
                d1 = s
                best = c
            elif s < d2:
                d2 = s
        d1 = np.sqrt(d1)
        d2 = np.sqrt(d2)
        if has_far:
            far = near_dist[a, near.shape[1] - 1] - u
            if d1 > far:
                pending[n_pending] = i
                n_pending += 1
                continue
            d2 = min(d2, far)
        if best != a:
            changed += 1
        labels[i] = best
        upper[i] = d1
        lower[i] = d2
    return changed, n_pending


@numba.njit(cache=True, nogil=True)
def kmeans_plusplus(X, weights, k, first, uniforms):  # pragma: no cover
    """Greedy weighted k-means++ seeding, as ``placement.kmeans_plusplus`` (which draws ``first`` and ``uniforms``).

    Centre ``c`` (from 1) is the best of the candidates drawn by ``uniforms[c - 1]`` with probability
    proportional to weight times squared distance to the nearest centre so far: the one that leaves the least
    weighted potential.
    """
    m, d = X.shape
    n_trials = uniforms.shape[1]
    centers = np.empty((k, d))
    closest = np.empty(m)
    cumulative = np.empty(m)
    candidates = np.empty(n_trials, dtype=np.int64)
    potential = 0.0
    for i in range(m):
        s = _sq_dist(X, i, X, first)
        closest[i] = s
        potential += weights[i] * s
    centers[0] = X[first]
    for c in range(1, k):
        if potential <= 0:  # every sample with weight is a centre already: take the farthest others
            best = np.argmax(closest)
        else:
            acc = 0.0
            for i in range(m):
                acc += weights[i] * closest[i]
                cumulative[i] = acc
            for t in range(n_trials):
                candidates[t] = min(np.searchsorted(cumulative, uniforms[c - 1, t] * acc), m - 1)
            best = -1
            best_pot = np.inf
            for t in range(n_trials):
                cand = candidates[t]
                pot = 0.0
                for i in range(m):
                    s = _sq_dist(X, i, X, cand)
                    pot += weights[i] * min(s, closest[i])
                if pot < best_pot:
                    best_pot = pot
                    best = cand
            potential = best_pot
        for i in range(m):
            s = _sq_dist(X, i, X, best)
            if s < closest[i]:
                closest[i] = s
        centers[c] = X[best]
    return centers


@numba.njit(cache=True, nogil=True)
def block_neighbourhoods(
    Z, queries, q_ptr, centres, reach, cands, c_ptr, n, in_degree, mean_dist, bad
):  # pragma: no cover
    """In-degree and mean distance of the ``n``-nearest neighbourhoods, block by block, from candidate lists.

    Block ``b`` holds the samples ``queries[q_ptr[b]:q_ptr[b + 1]]``, near ``centres[b]`` whose ``n``-th
    neighbour is at ``reach[b]``; ``cands[c_ptr[b]:c_ptr[b + 1]]`` must contain every sample within the
    ``n``-nearest distance of any query of the block. A query ``r`` from the centre has its ``n``-th neighbour
    between ``reach - r`` and ``reach + r``: candidates nearer than that are in, farther ones out, and only
    those between are selected by distance. For each query the ``n`` nearest (ties at the ``n``-th distance
    broken by candidate order, the query itself always in) add 1 to ``in_degree``; ``mean_dist`` receives the
    mean distance to them. A query that rounding leaves undecided gets ``mean_dist`` -1 and no counts, and
    ``bad[0]`` counts it.
    """
    d = Z.shape[1]
    for b in range(q_ptr.shape[0] - 1):
        c0 = c_ptr[b]
        m = c_ptr[b + 1] - c0
        band = np.empty(m)
        band_idx = np.empty(m, dtype=np.int64)
        dist = np.empty(m)
        # the candidates' coordinates, contiguous by dimension: the distance loop streams through them
        points = np.empty((d, m))
        for t in range(m):
            for j in range(d):
                points[j, t] = Z[cands[c0 + t], j]
        for qi in range(q_ptr[b], q_ptr[b + 1]):
            q = queries[qi]
            r = 0.0
            for j in range(d):
                v = Z[q, j] - centres[b, j]
                r += v * v
            r = np.sqrt(r)
            # margins relative to the distances themselves, not their difference, for rounding
            slack = 1e-9 * (reach[b] + r)
            inner = max(reach[b] - r - slack, 0.0)
            inner *= inner
            outer = reach[b] + r + slack + 1e-300
            outer *= outer
            dist[:] = 0.0
            for j in range(d):
                zj = Z[q, j]
                for t in range(m):
                    v = zj - points[j, t]
                    dist[t] += v * v
            total = 0.0
            n_in = 0
            n_band = 0
            own = False
            for t in range(m):
                s = dist[t]
                if s >= inner and s > outer:
                    continue
                p = cands[c0 + t]
                if s < inner:
                    in_degree[p] += 1
                    total += np.sqrt(s)
                    n_in += 1
                    if p == q:
                        own = True
                elif s <= outer:
                    band[n_band] = s
                    band_idx[n_band] = p
                    n_band += 1
            need = n - n_in
            if need < 1 or need > n_band:  # cannot happen but by rounding: leave the sample to the caller
                bad[0] += 1
                for t in range(m):
                    s = dist[t]
                    if s < inner:
                        in_degree[cands[c0 + t]] -= 1
                mean_dist[q] = -1.0
                continue
            kth = np.partition(band[:n_band], need - 1)[need - 1]
            ties = need
            for t in range(n_band):
                if band[t] < kth:
                    ties -= 1
            last_tie = -1
            for t in range(n_band):
                s = band[t]
                if s < kth or (s == kth and ties > 0):
                    p = band_idx[t]
                    if s == kth:
                        ties -= 1
                        last_tie = p
                    in_degree[p] += 1
                    total += np.sqrt(s)
                    if p == q:
                        own = True
            if not own:  # more than n samples at distance 0: the query takes the place of one of the others
                in_degree[last_tie] -= 1
                in_degree[q] += 1
            mean_dist[q] = total / n


@numba.njit(cache=True, nogil=True)
def accumulate(Z, w, labels, k):  # pragma: no cover
    """Per-cluster weight and weighted coordinate sums, in sample order (as ``np.bincount``)."""
    E, d = Z.shape
    mass = np.zeros(k)
    sums = np.zeros((k, d))
    for i in range(E):
        a = labels[i]
        mass[a] += w[i]
        for j in range(d):
            sums[a, j] += w[i] * Z[i, j]
    return mass, sums
