"""Compiled inner loops of the placement k-means (imported on first use by :mod:`.placement`).

:func:`reassign` is one Lloyd assignment step with Hamerly bounds: a sample whose bounds prove it keeps its
centroid costs a few operations, and one whose bounds do not is compared with the centroids near its own (a
dozen distances); those for which the triangle inequality cannot rule out the others are left to a KD-tree
query. The numpy
version queried a KD-tree over the centroids for every such sample, about 0.5 us each, which was most of the
time of an evaluation. :func:`kmeans_plusplus_pick` is the candidate loop of greedy k-means++ seeding.

Sequential on purpose: the result does not depend on the number of threads, and DIRECT evaluations are many
small k-means.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def reassign(
    Z, C, labels, upper, lower, delta, near_shift, far_old, near, near_dist, has_far, pending
):  # pragma: no cover
    """One assignment step after the centroids moved by ``delta``; updates labels and bounds in place.

    ``upper[i]`` (distance to the centroid, from above) and ``lower[i]`` (to the second nearest, from below)
    are those before the move. ``near_shift[a]``: the largest shift among the centroids near ``a`` before the
    move; ``far_old[a]``: distance from ``a`` to the first centroid not near it minus the largest shift, before
    the move. ``near``, ``near_dist``: the centroids nearest each centroid after the move (with ``has_far``, the
    first ``near.shape[1] - 1`` are the candidates and the last distance bounds all others; otherwise all
    centroids are listed). Samples that a centroid outside the list may be nearest to are written to
    ``pending`` (to be queried in full) and keep their label. Returns the number of changed labels and of
    pending samples.
    """
    E, d = Z.shape
    n_cand = near.shape[1] - 1 if has_far else near.shape[1]
    changed = 0
    n_pending = 0
    for i in range(E):
        a = labels[i]
        u = upper[i] + delta[a]
        low = lower[i] - near_shift[a]
        if has_far:
            low = min(low, far_old[a] - upper[i])
        if u <= low:
            upper[i] = u
            lower[i] = low
            continue
        s = 0.0
        for j in range(d):
            t = Z[i, j] - C[a, j]
            s += t * t
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
            s = 0.0
            for j in range(d):
                t = Z[i, j] - C[c, j]
                s += t * t
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
def kmeans_plusplus_pick(X, weights, closest, candidates):  # pragma: no cover
    """Of the candidate samples, the one whose addition as a centre leaves the least weighted potential.

    Updates ``closest`` (squared distance of every sample to its nearest centre) for the chosen one and returns
    its index and the new potential.
    """
    m, d = X.shape
    best = -1
    best_pot = np.inf
    for t in range(candidates.shape[0]):
        c = candidates[t]
        pot = 0.0
        for i in range(m):
            s = 0.0
            for j in range(d):
                v = X[i, j] - X[c, j]
                s += v * v
            pot += weights[i] * min(s, closest[i])
        if pot < best_pot:
            best_pot = pot
            best = c
    for i in range(m):
        s = 0.0
        for j in range(d):
            v = X[i, j] - X[best, j]
            s += v * v
        if s < closest[i]:
            closest[i] = s
    return best, best_pot
