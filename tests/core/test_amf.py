"""AMF core: the fused max-product kernel, the loss, the training loop (METHOD.md section 3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from lava.core import _amf_torch as amft
from lava.core import amf_loss, reconstruct
from lava.core import fit_amf as _fit_amf
from lava.core.amf import locality_weights
from references import max_product


def fit_amf(*args, **kwargs):
    """These tests pin the paper's loss (the default is a variant: see test_amf_variants.py)."""
    return _fit_amf(*args, **{"loss": "paper", **kwargs})


@pytest.fixture(autouse=True)
def _one_thread():
    # the test machine's 2 cores are shared; small torch ops are much faster on one thread there
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def planted(n_loc=120, n_features=24, n_modules=3, *, density=0.12, noise=0.03, seed=0, alone=0.5):
    """K random sparse pair sets; a fraction ``alone`` of the localities hold one module, the rest two; sparse noise."""
    rng = np.random.default_rng(seed)
    n_pairs = n_features * (n_features - 1) // 2
    modules = np.zeros((n_modules, n_pairs), np.float32)
    for k in range(n_modules):
        support = rng.random(n_pairs) < density
        modules[k, support] = rng.uniform(0.5, 1.0, support.sum())
    presence = np.zeros((n_loc, n_modules), np.float32)
    for i in range(n_loc):
        ks = [i % n_modules] if rng.random() < alone else rng.choice(n_modules, 2, replace=False)
        presence[i, ks] = rng.uniform(0.6, 1.0, len(ks))
    C = reconstruct(presence, modules)
    C = C + noise * np.abs(rng.normal(size=C.shape)) * (rng.random(C.shape) < 0.2)
    return np.clip(C, 0, 1).astype(np.float32), modules, presence


def loss_reference(C, presence, modules, nu, gamma):
    """The paper's loss written term by term with Python loops (float64)."""
    n_loc, n_pairs = C.shape
    n_mod = modules.shape[0]
    norms = [sum(float(C[i, j]) ** 2 for j in range(n_pairs)) ** 0.5 for i in range(n_loc)]
    total, mae_sum = 0.0, 0.0
    for i in range(n_loc):
        rest = sum(norms) - norms[i]
        a = norms[i] / rest
        dot = uu = vv = mae = 0.0
        for j in range(n_pairs):
            chat = max(float(presence[i, m]) * float(modules[m, j]) for m in range(n_mod))
            c = float(C[i, j])
            w = nu if chat > c else 1.0
            dot += (w * c) * (w * chat)
            uu += (w * c) ** 2
            vv += (w * chat) ** 2
            mae += abs(c - chat) / n_pairs
        total += a * (1 - dot / (uu**0.5 * vv**0.5))
        mae_sum += mae
    return total + gamma * mae_sum / n_loc


def naive_loss(C, a, presence_b, modules, rows, *, nu, gamma, n_loc, n_pairs_total):
    """Minibatch loss with torch autograd on the materialised (batch x M x P) product."""
    h = (presence_b[:, :, None] * modules[None]).max(1).values
    c = C[rows]
    w = torch.where(h > c, nu, 1.0).detach()
    u, v = w * c, w * h
    cos = (u * v).sum(1) / (u.norm(dim=1).clamp_min(1e-8) * v.norm(dim=1).clamp_min(1e-8))
    mae = (c - h).abs().sum(1) / n_pairs_total
    return (n_loc / len(rows)) * ((a[rows] * (1 - cos)).sum() + gamma * mae.sum() / n_loc)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_max_product_forward_matches_loop(chunk):
    rng = np.random.default_rng(1)
    presence = rng.random((5, 4)).astype(np.float32)
    modules = rng.random((4, 23)).astype(np.float32)
    modules[:, 3] = 0.5  # ties: all modules equal where presence is equal
    presence[2] = 0.25
    chat, argmax = amft.max_product_forward(torch.from_numpy(presence), torch.from_numpy(modules), chunk=chunk)
    for i in range(5):
        for j in range(23):
            products = [presence[i, m] * modules[m, j] for m in range(4)]
            assert chat[i, j].item() == pytest.approx(max(products), abs=0)
            assert argmax[i, j].item() == products.index(max(products))  # ties: the first module
    np.testing.assert_array_equal(reconstruct(presence, modules), chat.numpy())


@pytest.mark.parametrize("chunk", [3, 64])
def test_fused_gradient_equals_autograd_on_naive(chunk):
    torch.manual_seed(0)
    presence = torch.rand(9, 5, dtype=torch.float64)
    modules = torch.rand(5, 40, dtype=torch.float64)
    grad = torch.randn(9, 40, dtype=torch.float64)
    p1, m1 = presence.clone().requires_grad_(), modules.clone().requires_grad_()
    (max_product(p1, m1, chunk=chunk) * grad).sum().backward()
    p2, m2 = presence.clone().requires_grad_(), modules.clone().requires_grad_()
    ((p2[:, :, None] * m2[None]).max(1).values * grad).sum().backward()
    # continuous random values: the argmax is unique everywhere
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m1.grad, m2.grad, rtol=1e-12, atol=1e-12)
    assert m1.grad.abs().sum() > 0


def test_training_step_loss_and_gradients_equal_autograd():
    rng = np.random.default_rng(2)
    C = (rng.random((30, 45)) * (rng.random((30, 45)) < 0.5)).astype(np.float32)
    C[4] = 0  # an all-zero locality: weight 0
    a = locality_weights(C)
    n_total = 50  # as if 5 all-zero pairs were dropped
    problem = amft.Problem(torch.from_numpy(C), torch.from_numpy(a), nu=9.0, gamma=0.5, n_pairs_total=n_total, chunk=8)
    presence = torch.rand(30, 3, generator=torch.Generator().manual_seed(0))
    modules = torch.rand(3, 45, generator=torch.Generator().manual_seed(1))
    rows = torch.tensor([4, 3, 17, 29, 0, 11])
    buffers = amft.Buffers(6, 45, 3, torch.device("cpu"))
    loss, d_pres, d_mod = amft.loss_and_grad(problem, rows, presence[rows], modules, buffers)

    p = presence[rows].double().requires_grad_()
    m = modules.double().requires_grad_()
    ref = naive_loss(
        torch.from_numpy(C).double(), torch.from_numpy(a), p, m, rows, nu=9.0, gamma=0.5, n_loc=30, n_pairs_total=50
    )
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(d_pres.double(), p.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(d_mod.double(), m.grad, rtol=1e-4, atol=1e-7)


def test_full_loss_equals_term_by_term_reference():
    rng = np.random.default_rng(3)
    C = (rng.random((7, 12)) * (rng.random((7, 12)) < 0.6)).astype(np.float32)
    presence = rng.random((7, 3)).astype(np.float32)
    modules = rng.random((3, 12)).astype(np.float32)
    ref = loss_reference(C, presence, modules, nu=9.0, gamma=0.7)
    assert amf_loss(C, presence, modules, nu=9.0, gamma=0.7) == pytest.approx(ref, rel=1e-6)
    problem = amft.Problem(
        torch.from_numpy(C), torch.from_numpy(locality_weights(C)), nu=9.0, gamma=0.7, n_pairs_total=12, chunk=5
    )
    loss, _, _ = amft.evaluate(problem, torch.from_numpy(presence), torch.from_numpy(modules), batch=3)
    assert loss == pytest.approx(ref, rel=1e-5)
    # a different nu changes the loss (the mask is really applied)
    assert amf_loss(C, presence, modules, nu=1.0, gamma=0.7) != pytest.approx(ref, rel=1e-3)


def test_fit_result_is_consistent_and_clamped():
    C, _, _ = planted(seed=0)
    res = fit_amf(C, 3, max_epochs=30, rng=0, gamma=0.1)
    assert res.modules.shape == (3, C.shape[1])
    assert res.modules.dtype == np.float32
    assert res.presence.shape == (C.shape[0], 3)
    assert res.presence.dtype == np.float32
    for X in (res.modules, res.presence):
        assert X.min() >= 0
        assert X.max() <= 1
    assert res.n_epochs == 30
    assert not res.converged
    assert not res.interrupted
    assert len(res.history["loss"]) == 31
    assert res.best_epoch == int(np.argmin(res.history["loss"]))
    # the reported loss is the loss of the returned (best epoch's) matrices
    assert res.loss == pytest.approx(res.history["loss"][res.best_epoch])
    assert res.loss == pytest.approx(amf_loss(C, res.presence, res.modules, gamma=0.1), rel=1e-5)
    assert res.history["loss"][-1] < res.history["loss"][0]
    chat = reconstruct(res.presence, res.modules)
    cos = (C * chat).sum(1) / np.linalg.norm(C, axis=1) / np.linalg.norm(chat, axis=1)
    np.testing.assert_allclose(res.locality_similarity, cos, rtol=1e-5)
    a = locality_weights(C)
    assert res.similarity == pytest.approx((a * cos).sum() / a.sum(), rel=1e-6)
    assert res.overestimation_ratio == pytest.approx(np.maximum(chat - C, 0).sum() / np.abs(chat - C).sum(), rel=1e-5)


def test_clamp_after_every_step():
    C, _, _ = planted(seed=1, n_loc=40)
    problem = amft.Problem(
        torch.from_numpy(C),
        torch.from_numpy(locality_weights(C)),
        nu=9.0,
        gamma=1e-4,
        n_pairs_total=C.shape[1],
        chunk=None,
    )
    presence = torch.rand(40, 3, requires_grad=True)
    modules = torch.rand(3, C.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([modules, presence], lr=0.7)  # huge steps leave [0, 1] without the clamp
    buffers = amft.Buffers(8, C.shape[1], 3, torch.device("cpu"))
    for _ in range(3):
        amft.run_epoch(problem, presence, modules, optimizer, torch.randperm(40), 8, buffers)
        for X in (presence, modules):
            assert X.min() >= 0
            assert X.max() <= 1
            assert (X == 0).any() or (X == 1).any()


def test_deterministic_with_fixed_rng():
    C, _, _ = planted(seed=2, n_loc=50)
    r1 = fit_amf(C, 3, max_epochs=5, rng=7)
    r2 = fit_amf(C, 3, max_epochs=5, rng=np.random.default_rng(7))
    r3 = fit_amf(C, 3, max_epochs=5, rng=7)
    np.testing.assert_array_equal(r1.modules, r3.modules)
    np.testing.assert_array_equal(r1.presence, r3.presence)
    np.testing.assert_array_equal(r1.history["loss"], r3.history["loss"])
    assert r1.seed == 7
    assert not np.array_equal(r1.modules, r2.modules)  # a Generator draws a seed of its own


def test_all_zero_pairs_are_dropped_and_return_as_zero():
    C, _, _ = planted(seed=3, n_loc=50)
    zero = np.zeros(C.shape[1], bool)
    zero[[0, 5, 6, C.shape[1] - 1]] = True
    C[:, zero] = 0
    zero |= ~C.any(0)
    res = fit_amf(C, 3, max_epochs=10, rng=0)
    assert res.n_pairs_dropped == zero.sum()
    assert np.all(res.modules[:, zero] == 0)
    assert np.all(res.modules[:, ~zero].max(0) > 0)
    assert res.loss == pytest.approx(amf_loss(C, res.presence, res.modules), rel=1e-5)


def test_warm_start_is_used():
    C, modules, presence = planted(seed=4, n_loc=60)
    res = fit_amf(C, 3, max_epochs=1, rng=0, warm_start=(modules, presence), lr=1e-6)
    # float32 sums: the training path agrees with the float64 reference to ~1e-7 absolute
    assert res.history["loss"][0] == pytest.approx(amf_loss(C, presence, modules), abs=1e-6)
    np.testing.assert_allclose(res.modules, modules, atol=1e-5)


def test_convergence_rule():
    C, _, _ = planted(seed=5, n_loc=40)
    res = fit_amf(C, 3, max_epochs=2000, patience=5, tol=0.05, rng=0)
    assert res.converged
    assert res.n_epochs < 2000
    loss = res.history["loss"]
    ref, ref_epoch, stop = loss[0], 0, None
    for epoch in range(1, len(loss)):
        if loss[epoch] < ref * (1 - 0.05):
            ref, ref_epoch = loss[epoch], epoch
        if epoch - ref_epoch >= 5:
            stop = epoch
            break
    assert stop == res.n_epochs


@pytest.mark.parametrize("kernel", ["compiled", "eager"])
@pytest.mark.parametrize("stops", [True, False], ids=["converged", "max_epochs"])
def test_one_batch_loss_from_the_step_equals_a_separate_evaluation(monkeypatch, kernel, stops):
    # every locality in one batch: each epoch's loss is taken from the next step's computation; the training must be
    # the one a separate evaluation gives, down to the generator's stream (a refine phase and swaps draw from it next)
    C, _, _ = planted(seed=3, n_loc=40)
    rng = np.random.default_rng(1)
    presence0, modules0 = rng.random((40, 3), np.float32), rng.random((3, C.shape[1]), np.float32)
    problem = amft.Problem(
        torch.from_numpy(C), torch.from_numpy(locality_weights(C)), nu=9.0, gamma=1e-4, n_pairs_total=C.shape[1],
        kernel=kernel,
    )  # fmt: skip
    runs = {}
    for shared in (True, False):
        monkeypatch.setattr(amft, "SHARE_ONE_BATCH_LOSS", shared)
        generator = np.random.default_rng(5)
        out = amft.train(
            problem, presence0, modules0, lr=3e-3, batch_size=64, patience=3 if stops else 1000, tol=0.05,
            max_epochs=60, generator=generator, progress=False,
        )  # fmt: skip
        runs[shared] = out, generator.random()
    (a, next_a), (b, next_b) = runs[True], runs[False]
    assert a["converged"] is b["converged"] is stops
    assert a["n_epochs"] == b["n_epochs"]
    assert a["epoch"] == b["epoch"]
    np.testing.assert_allclose(a["history"]["loss"], b["history"]["loss"], rtol=1e-9)
    np.testing.assert_allclose(a["history"]["batch_loss"][1:], b["history"]["batch_loss"][1:], rtol=1e-9)
    np.testing.assert_allclose(a["modules"], b["modules"], atol=1e-6)
    np.testing.assert_allclose(a["presence"], b["presence"], atol=1e-6)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-9)
    assert next_a == next_b  # the permutation of the step not taken went back to the generator


def test_keyboard_interrupt_returns_best_so_far(monkeypatch):
    C, _, _ = planted(seed=6, n_loc=40)
    calls = {"n": 0}
    step = amft._step

    def interrupting(*args, **kwargs):  # one step per epoch: every locality is in one batch
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(amft, "_step", interrupting)
    res = fit_amf(C, 3, max_epochs=50, rng=0)
    assert res.interrupted
    assert not res.converged
    assert res.n_epochs == 3
    assert res.best_epoch == int(np.argmin(res.history["loss"]))
    assert res.loss == pytest.approx(amf_loss(C, res.presence, res.modules), rel=1e-5)


def _match(true, fitted):
    unit = lambda X: X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # noqa: E731
    S = unit(true) @ unit(fitted).T
    r, c = linear_sum_assignment(-S)
    return S[r, c]


@pytest.mark.slow
def test_planted_modules_are_recovered():
    # as the paper does (METHOD.md section 4): several runs, keep the lowest loss. A single run can end with a
    # module that lost every argmax early and receives no gradient any more.
    C, modules, _ = planted(n_loc=160, seed=3, alone=1.0)
    runs = [fit_amf(C, 3, rng=seed) for seed in (1, 2, 3)]
    best = min(runs, key=lambda r: r.loss)
    assert best.converged
    assert _match(modules, best.modules).min() >= 0.95
    assert best.overestimation_ratio < 0.2


def test_invalid_arguments():
    C, _, _ = planted(seed=0, n_loc=20)
    bad = [
        ({"n_modules": 0}, "n_modules"),
        ({"n_modules": 21}, "n_modules"),
        ({"nu": 0}, "nu"),
        ({"gamma": -1}, "gamma"),
        ({"lr": 0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"patience": 0}, "patience"),
        ({"tol": 1.0}, "tol"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"loss": "sum"}, "loss"),
    ]
    for kwargs, word in bad:
        kwargs = {"n_modules": 3, **kwargs}
        with pytest.raises(ValueError, match=word):
            fit_amf(C, **kwargs)
    with pytest.raises(ValueError, match="every correlation"):
        fit_amf(np.zeros((5, 10), np.float32), 2)
    with pytest.raises(ValueError, match="negative"):
        fit_amf(-C, 2)
    C_nan = C.copy()
    C_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_amf(C_nan, 2)
    with pytest.raises(ValueError, match="warm_start"):
        fit_amf(C, 2, warm_start=(np.zeros((3, C.shape[1])), np.zeros((20, 3))))
    with pytest.raises(TypeError, match="warm_start must be a pair"):
        fit_amf(C, 2, warm_start=np.zeros((3, C.shape[1])))
    with pytest.raises(TypeError, match="warm_start"):  # the start of one's own is no longer an init
        fit_amf(C, 2, init=(np.zeros((2, C.shape[1])), np.zeros((C.shape[0], 2))))


def test_flavors_are_the_recipes_of_the_loss():
    from lava.core import AMFConfig

    C, _, _ = planted(seed=4, n_loc=60)
    paper = _fit_amf(C, 3, flavor="paper", max_epochs=30, rng=0)
    old_paper = _fit_amf(C, 3, loss="paper", max_epochs=30, rng=0)
    recipe = {"nu": 9.0, "lr": 3e-3, "init": "random", "stop": "paper", "l1": 0.0, "background": False}
    explicit = _fit_amf(C, 3, loss="paper", **recipe, refine=False, locality_weight="norm", swaps=0, max_epochs=30)
    for other in (old_paper, explicit):
        np.testing.assert_array_equal(paper.modules, other.modules)
        np.testing.assert_array_equal(paper.presence, other.presence)
        assert paper.loss == other.loss
    assert paper.config == AMFConfig.from_flavor("paper", max_epochs=30)
    assert paper.device == "cpu"
    lava_ = _fit_amf(C, 3, max_epochs=30, rng=0, swaps=0)
    via_config = _fit_amf(C, 3, config=AMFConfig(max_epochs=30, swaps=0), rng=0)
    np.testing.assert_array_equal(lava_.modules, via_config.modules)
    assert lava_.config == via_config.config == AMFConfig(max_epochs=30, swaps=0)
    assert (lava_.config.loss, lava_.background is not None) == ("expectile", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lava_.config.nu = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="nu must be"):
        AMFConfig(nu=-1.0)
    with pytest.raises(ValueError, match="nu must be"):
        lava_.config.replace(nu=0.0)


@pytest.mark.parametrize(
    ("loss", "background"), [("paper", False), ("expectile", False), ("expectile", True), ("cosine_expectile", True)]
)
def test_compiled_kernels_equal_eager(loss, background):
    rng = np.random.default_rng(8)
    n_pairs = 5000  # more than one of the numba kernels' blocks of pairs (2048), the last one partial
    C = (rng.random((40, n_pairs)) * (rng.random((40, n_pairs)) < 0.5)).astype(np.float32)
    a = torch.from_numpy(locality_weights(C))
    n_mod = 5 if background else 4
    presence = torch.rand(40, n_mod, generator=torch.Generator().manual_seed(0))
    presence[3] = 0  # ties at 0: the first module takes the gradient in both
    modules = torch.rand(n_mod, n_pairs, generator=torch.Generator().manual_seed(1))
    if background:
        modules[-1] = 1.0
        presence[:, -1] = 0.3
    rows = torch.arange(5, 37)
    out = {}
    for kernel in ("eager", "compiled"):
        problem = amft.Problem(
            torch.from_numpy(C), a, nu=9.0, gamma=0.3, n_pairs_total=n_pairs + 10, chunk=1000, kernel=kernel, loss=loss
        )
        problem.background, problem.bg_index, problem.nu_background = background, n_mod - 1, 2.0
        problem.l1 = 0.01
        buffers = amft.Buffers(32, n_pairs, n_mod, torch.device("cpu"))
        step = amft.loss_and_grad(problem, rows, presence[rows], modules, buffers)
        out[kernel] = (step, amft.evaluate(problem, presence, modules, batch=16))
    (le, dpe, dme), (fe, cos_e, mae_e) = out["eager"]
    (lc, dpc, dmc), (fc, cos_c, mae_c) = out["compiled"]
    assert lc == pytest.approx(le, rel=1e-5)
    assert fc == pytest.approx(fe, rel=1e-5)
    torch.testing.assert_close(cos_c, cos_e, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(mae_c, mae_e, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(dpc, dpe, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dmc, dme, rtol=1e-4, atol=1e-6)
    assert dmc.abs().max() > 0
    assert dpc.abs().max() > 0


def test_compiled_fit_is_the_default_on_the_cpu_and_matches_the_loss():
    rng = np.random.default_rng(8)
    C = (rng.random((40, 300)) * (rng.random((40, 300)) < 0.5)).astype(np.float32)
    res = fit_amf(C, 4, max_epochs=3, rng=0, loss="paper", init="random")
    assert res.kernel == "compiled"
    assert res.loss == pytest.approx(amf_loss(C, res.presence, res.modules), abs=1e-6)
    eager = fit_amf(C, 4, max_epochs=3, rng=0, loss="paper", init="random", kernel="eager")
    np.testing.assert_allclose(res.modules, eager.modules, atol=1e-4)


def test_numba_reconstruction_and_residual_stats_match_numpy_across_blocks():
    from lava.core._amf_numba import BLOCK, residual_stats

    rng = np.random.default_rng(3)
    n_pairs = 2 * BLOCK + 123  # two full blocks of pairs and a partial one
    presence = rng.random((7, 4), dtype=np.float32)
    presence[2] = 0  # all-zero row: ties at 0
    modules = rng.random((4, n_pairs), dtype=np.float32)
    C = rng.random((7, n_pairs), dtype=np.float32)
    row = rng.random(n_pairs, dtype=np.float32)
    chat = np.max(presence[:, :, None].astype(np.float64) * modules[None], axis=1)
    np.testing.assert_allclose(reconstruct(presence, modules), chat, rtol=1e-6)
    residual = np.maximum(C - chat, 0)
    norms, dots = residual_stats(presence, modules, C, row)
    np.testing.assert_allclose(norms, np.linalg.norm(residual, axis=1), rtol=1e-5)
    np.testing.assert_allclose(dots, residual @ row, rtol=1e-5)
