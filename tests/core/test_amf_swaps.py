"""Module swaps after the fit (``fit_amf(..., swaps=)``, :func:`lava.core.amf.swap_module`)."""

from __future__ import annotations

import numpy as np
import pytest

from lava.core import fit_amf
from lava.core.amf import LOSS_DEFAULTS, reconstruct, swap_module


def three_programmes():
    """40 localities x 45 pairs: A on pairs 0-9 (localities 0-19), B on 10-19 (20-29), C on 20-29 (30-39)."""
    rng = np.random.default_rng(0)
    C = rng.uniform(0, 0.05, (40, 45)).astype(np.float32)
    C[:20, :10] = 0.8
    C[20:30, 10:20] = 0.7
    C[30:, 20:30] = 0.6
    return C


def naive_removal_cost(C, modules, presence, weights):
    """sum_i a_i ||max(C_i - Chat_i, 0)||^2 without each module, minus with all: one reconstruction per module."""
    base = (weights * (np.maximum(C - reconstruct(presence, modules), 0) ** 2).sum(1)).sum()
    out = []
    for m in range(modules.shape[0]):
        keep = [k for k in range(modules.shape[0]) if k != m]
        short = np.maximum(C - reconstruct(presence[:, keep], modules[keep]), 0) ** 2
        out.append((weights * short.sum(1)).sum() - base)
    return np.array(out)


def test_swap_replaces_the_least_needed_module_by_the_unexplained_programme():
    C = three_programmes()
    modules = np.zeros((3, 45), np.float32)
    modules[0, :10] = 0.8
    modules[1, 10:20] = 0.7
    modules[2, :10] = 0.5  # a weaker copy of A: needed nowhere
    presence = np.zeros((40, 3), np.float32)
    presence[:20, 0] = 1
    presence[20:30, 1] = 1
    presence[:20, 2] = 1
    weights = np.linspace(1, 2, 40)
    cost = naive_removal_cost(C, modules, presence, weights)
    assert int(np.argmin(cost)) == 2
    new_modules, new_presence = swap_module(C, modules, presence, weights=weights, rng=0)
    # modules 0 and 1 kept (up to the jitter on exact zeros), module 2 now holds C's pairs, present in 30-39
    np.testing.assert_allclose(new_modules[:2], modules[:2], atol=1e-3)
    assert new_modules[2, 20:30].min() > 0.5
    assert new_modules[2, :20].max() <= 1e-3
    assert new_presence[30:, 2].min() > 0.9
    assert new_presence[:30, 2].max() < 0.2
    np.testing.assert_allclose(new_presence[:, :2], presence[:, :2], atol=1e-3)
    assert modules[2, 0] == 0.5  # inputs not changed


def test_swap_drops_the_module_a_direct_loop_finds_cheapest():
    rng = np.random.default_rng(3)
    C = rng.uniform(0, 1, (25, 30)).astype(np.float32)
    modules = rng.uniform(0, 1, (4, 30)).astype(np.float32)
    presence = rng.uniform(0, 0.45, (25, 4)).astype(np.float32)  # nothing explained: a swap is due
    weights = rng.uniform(0.5, 1, 25)
    cost = naive_removal_cost(C, modules, presence, weights)
    new_modules, _ = swap_module(C, modules, presence, weights=weights)
    changed = np.flatnonzero(np.abs(new_modules - modules).max(1) > 1e-6)
    np.testing.assert_array_equal(changed, [int(np.argmin(cost))])


def test_no_swap_when_every_locality_is_explained():
    C = three_programmes()
    modules = np.zeros((3, 45), np.float32)
    presence = np.zeros((40, 3), np.float32)
    for m, (rows, cols, v) in enumerate([(slice(0, 20), slice(0, 10), 0.8), (slice(20, 30), slice(10, 20), 0.7),
                                         (slice(30, 40), slice(20, 30), 0.6)]):  # fmt: skip
        modules[m, cols] = v
        presence[rows, m] = 1
    assert swap_module(C, modules, presence) is None
    with pytest.raises(ValueError, match="with the same M"):
        swap_module(C, modules, presence[:, :2])


def test_fit_tries_a_swap_where_localities_are_unexplained_and_keeps_the_better_fit():
    C = three_programmes()
    # two modules for three programmes: 10 localities stay unexplained, so a swap is tried; trading one programme
    # for another does not lower the loss, so it is refused and the first fit is returned as it was
    first = fit_amf(C, 2, rng=0, swaps=0)
    assert first.n_swaps == 0
    assert first.swap_epochs == 0
    assert (first.presence.max(1) < 0.5).sum() == 10
    res = fit_amf(C, 2, rng=0, swaps=3)
    assert res.loss <= first.loss
    assert res.n_swaps == 0
    assert res.swap_epochs > 0  # the refused swap's fit ran
    np.testing.assert_array_equal(res.modules, first.modules)
    np.testing.assert_array_equal(res.presence, first.presence)
    assert LOSS_DEFAULTS["expectile"]["swaps"] > 0
    assert LOSS_DEFAULTS["paper"]["swaps"] == 0
    assert fit_amf(C, 2, loss="paper", max_epochs=5).n_swaps == 0


def test_a_swap_that_does_not_lower_the_loss_is_not_kept(monkeypatch):
    from lava.core import amf

    C = three_programmes()
    bad = (np.full((2, 45), 1e-3, np.float32), np.full((40, 2), 1e-3, np.float32))
    calls = []

    def worse_start(*args, **kwargs):
        calls.append(1)
        return bad

    monkeypatch.setattr(amf, "swap_module", worse_start)
    res = fit_amf(C, 2, rng=0, swaps=3, max_epochs=3)  # 3 epochs from a flat start cannot beat the first fit
    first3 = fit_amf(C, 2, rng=0, swaps=0, max_epochs=3)
    assert len(calls) == 1  # the first rejected swap ends the search
    assert res.n_swaps == 0
    assert res.swap_epochs > 0
    np.testing.assert_array_equal(res.modules, first3.modules)


@pytest.mark.parametrize("swaps", [-1, 1.5, True, "2"])
def test_swaps_must_be_a_non_negative_integer(swaps):
    with pytest.raises(ValueError, match="swaps must be a non-negative integer"):
        fit_amf(three_programmes(), 2, swaps=swaps)
