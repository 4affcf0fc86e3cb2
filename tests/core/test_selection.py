"""Choosing M (k-medoids, silhouette, elbow, checkpoints), pinball presence refinement, NMF baseline."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import lava.core.selection as sel_mod
from lava.core import AMFResult, fit_amf, fit_nmf, overestimation_ratio, refine_presence, select_n_modules
from lava.core._checkpoint import _load_run, _save_run
from lava.core.refine import _max_product, pinball
from lava.core.selection import cosine_distances, elbow, kmedoids, silhouette


def planted(n_loc=60, n_features=20, n_modules=3, noise=0.05, seed=0):
    """Localities built as the max-product of planted sparse modules and presences, plus symmetric noise."""
    g = np.random.default_rng(seed)
    P = n_features * (n_features - 1) // 2
    modules = np.zeros((n_modules, P))
    blocks = np.array_split(g.permutation(P), n_modules)
    for m, block in enumerate(blocks):
        modules[m, block[: len(block) // 2]] = g.uniform(0.5, 1.0, len(block) // 2)
    presence = np.zeros((n_loc, n_modules))
    for i in range(n_loc):
        present = g.choice(n_modules, size=g.integers(1, 3), replace=False)
        presence[i, present] = g.uniform(0.6, 1.0, present.size)
    clean = (presence[:, :, None] * modules[None]).max(axis=1)
    C = np.clip(clean + g.normal(0, noise, clean.shape) * (clean > 0), 0, 1)
    return C.astype(np.float32), modules.astype(np.float32), presence.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# building blocks


def test_cosine_distances_match_scipy_and_handle_zero_rows(rng):
    X = rng.random((7, 30))
    np.testing.assert_allclose(cosine_distances(X), cdist(X, X, metric="cosine"), atol=1e-6)
    X[2] = 0
    X[5] = 0
    D = cosine_distances(X)
    assert D[2, 5] == 0
    assert D[5, 2] == 0
    assert np.all(D[2, [0, 1, 3, 4, 6]] == 1)
    assert np.all(np.diag(D) == 0)


def test_kmedoids_recovers_planted_clusters(rng):
    centers = rng.random((4, 50)) ** 4  # four distinct non-negative directions
    truth = np.repeat(np.arange(4), 10)
    X = centers[truth] + rng.normal(0, 0.01, (40, 50)) ** 2
    order = rng.permutation(40)
    X, truth = X[order], truth[order]
    medoids, labels = kmedoids(cosine_distances(X), 4)
    assert len(set(medoids.tolist())) == 4
    # same partition up to relabelling
    pairs = {(t, label) for t, label in zip(truth, labels, strict=True)}
    assert len(pairs) == 4
    assert all(labels[m] == k for k, m in enumerate(medoids))


def test_kmedoids_reaches_the_optimal_cost_on_small_data(rng):
    X = rng.random((9, 5))
    D = cosine_distances(X)
    medoids, labels = kmedoids(D, 3)
    cost = D[np.arange(9), medoids[labels]].sum()
    brute = min(D[:, list(c)].min(axis=1).sum() for c in itertools.combinations(range(9), 3))
    assert cost == pytest.approx(brute, abs=1e-9)
    # labels are the nearest medoid
    np.testing.assert_array_equal(medoids[labels], medoids[np.argmin(D[:, medoids], axis=1)])


def test_kmedoids_is_deterministic_and_validates(rng):
    D = cosine_distances(rng.random((20, 6)))
    a, b = kmedoids(D, 4), kmedoids(D, 4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="n_clusters"):
        kmedoids(D, 21)


def naive_silhouette(D, labels):
    values = []
    for i in range(len(labels)):
        same = (labels == labels[i]) & (np.arange(len(labels)) != i)
        if not same.any():
            values.append(0.0)
            continue
        a = D[i, same].mean()
        b = min(D[i, labels == k].mean() for k in np.unique(labels) if k != labels[i])
        values.append((b - a) / max(a, b))
    return float(np.mean(values))


def test_silhouette_matches_direct_computation(rng):
    X = rng.random((15, 8))
    D = cosine_distances(X)
    _, labels = kmedoids(D, 3)
    assert silhouette(D, labels) == pytest.approx(naive_silhouette(D, labels), abs=1e-12)
    labels = np.array([0] * 5 + [1] * 9 + [2])  # a singleton cluster counts as 0
    assert silhouette(D, labels) == pytest.approx(naive_silhouette(D, labels), abs=1e-12)


def test_silhouette_undefined_is_nan(rng):
    D = cosine_distances(rng.random((4, 3)))
    assert np.isnan(silhouette(D, np.zeros(4, int)))  # M = 1
    assert np.isnan(silhouette(D, np.arange(4)))  # one run: every module its own cluster


def test_elbow_finds_a_clear_elbow():
    Ms = np.arange(2, 9)
    loss = [10.0, 6.0, 3.0, 2.6, 2.3, 2.1, 2.0]
    suggested, gap = elbow(Ms, loss)
    assert suggested == 4
    assert gap[0] == pytest.approx(0)
    assert gap[-1] == pytest.approx(0)
    # gap written out for M = 4: chord at x = 2/6 minus the normalised loss
    y = (np.array(loss) - 2.0) / 8.0
    assert gap[2] == pytest.approx(y[0] + (y[-1] - y[0]) * 2 / 6 - y[2])


def test_elbow_ties_go_to_higher_silhouette():
    Ms = [1, 2, 3, 4, 5]
    loss = [1.0, 0.4, 0.15, 0.05, 0.0]  # gaps 0, .35, .35, .2, 0
    assert elbow(Ms, loss)[0] == 2  # without silhouette: smaller M
    assert elbow(Ms, loss, [np.nan, 0.2, 0.6, 0.9, 0.9])[0] == 3
    near = [1.0, 0.42, 0.15, 0.05, 0.0]  # gap .33 at M = 2 is a near-tie with .35 at M = 3
    assert elbow(Ms, near, [np.nan, 0.7, 0.2, 0.9, 0.9])[0] == 2
    assert elbow(Ms, near, [np.nan, 0.7, 0.2, 0.9, 0.9], tolerance=0.0)[0] == 3
    # no elbow (a straight line): stability decides among the endpoints and near-ties
    assert elbow(Ms, [5, 4, 3, 2, 1], [0.1, 0.2, 0.3, 0.4, 0.5])[0] == 5
    assert elbow([3], [1.0])[0] == 3
    with pytest.raises(ValueError, match="increasing"):
        elbow([3, 2], [1.0, 2.0])


# ---------------------------------------------------------------------------------------------------------------
# presence refinement


@pytest.mark.parametrize("chunk_elements", [7, 2**24])
def test_max_product_matches_materialised_max(rng, chunk_elements):
    import torch

    pres = torch.as_tensor(rng.random((6, 4)), dtype=torch.float32)
    pres[0] = 0  # every product 0: the argmax goes to the module with the largest entry
    mods = torch.as_tensor(rng.random((4, 30)), dtype=torch.float32)
    chat, arg, mod_at = _max_product(pres, mods, chunk_elements=chunk_elements)
    full = pres[:, :, None] * mods[None]
    np.testing.assert_allclose(chat.numpy(), full.max(dim=1).values.numpy(), rtol=1e-6)
    np.testing.assert_allclose(torch.gather(full, 1, arg[:, None, :])[:, 0].numpy(), chat.numpy(), rtol=1e-6)
    np.testing.assert_allclose(mod_at.numpy(), mods.numpy()[arg.numpy(), np.arange(30)])
    np.testing.assert_array_equal(arg[0].numpy(), mods.numpy().argmax(axis=0))


def test_pinball_term_by_term():
    import torch

    r = torch.tensor([0.5, -0.5, 0.0, -0.2])
    expected = [0.1 * 0.5, 0.9 * 0.5, 0.0, 0.9 * 0.2]
    np.testing.assert_allclose(pinball(r, 0.1).numpy(), expected, rtol=1e-6)


def overestimation_by_locality(C, presence, modules):
    """Per locality: the overestimation ratio, and the module-weighted fraction of overestimated pairs."""
    full = presence[:, :, None] * modules[None]
    C_hat = full.max(axis=1)
    weight = np.take_along_axis(modules[None], full.argmax(axis=1)[:, None], axis=1)[:, 0] * (C_hat > 0)
    err = C_hat - C
    ratio = np.maximum(err, 0).sum(axis=1) / np.abs(err).sum(axis=1)
    fraction = (weight * (err > 0)).sum(axis=1) / weight.sum(axis=1)
    return ratio, fraction


def test_refine_presence_brings_overestimation_near_tau():
    C, modules, _ = planted(noise=0.1)
    start = np.random.default_rng(1).random((C.shape[0], modules.shape[0])).astype(np.float32)
    ratio_before, _ = overestimation_by_locality(C, start, modules)
    assert ratio_before.mean() > 0.4
    refined = {}
    for tau in (0.1, 0.3):
        refined[tau] = refine_presence(C, modules, start, tau=tau, device="cpu")
        assert refined[tau].shape == start.shape
        assert refined[tau].dtype == np.float32
        assert refined[tau].min() >= 0
        assert refined[tau].max() <= 1
        ratio, fraction = overestimation_by_locality(C, refined[tau], modules)
        # the quantile property the pinball loss optimises: a fraction tau of the (module-weighted) pairs is over
        assert np.abs(fraction - tau).max() < 0.05
        # the overestimation ratio of magnitudes lies near tau and at or below it (over-estimates are the small ones)
        assert np.abs(ratio - tau).mean() < 0.1
        assert ratio.mean() <= tau + 0.02
    assert overestimation_by_locality(C, refined[0.3], modules)[0].mean() > 0.15


def test_refine_presence_validates():
    C, modules, truth = planted(n_loc=10)
    with pytest.raises(ValueError, match="tau"):
        refine_presence(C, modules, truth, tau=1.0)
    with pytest.raises(ValueError, match="shapes"):
        refine_presence(C, modules, truth[:, :2])


# ---------------------------------------------------------------------------------------------------------------
# NMF baseline


def test_fit_nmf_scaling_and_figures():
    from sklearn.decomposition import NMF

    C, _, _ = planted()
    res = fit_nmf(C, 3, rng=4, max_iter=300)
    assert res.modules.shape == (3, C.shape[1])
    assert res.presence.shape == (C.shape[0], 3)
    np.testing.assert_allclose(res.modules.max(axis=1), 1.0, rtol=1e-6)
    assert res.modules.min() >= 0
    assert res.presence.min() >= 0
    ref = NMF(3, init="random", solver="mu", beta_loss="kullback-leibler", max_iter=300, random_state=4)
    W = ref.fit_transform(C)
    np.testing.assert_allclose(res.presence @ res.modules, W @ ref.components_, rtol=1e-4, atol=1e-5)
    C_hat = res.presence @ res.modules
    expected = np.maximum(C_hat - C, 0).sum() / np.abs(C_hat - C).sum()
    assert res.overestimation_ratio == pytest.approx(expected, rel=1e-5)
    assert res.seed == 4


def test_nmf_overestimates_more_than_amf():
    C, _, _ = planted(noise=0.05)
    nmf = fit_nmf(C, 3, rng=0, max_iter=300)
    amf = fit_amf(C, 3, rng=1, max_epochs=500, patience=100, batch_size=16, device="cpu")
    # KL-NMF keeps the total of C at its fixed points, so over- and underestimation balance (paper: ~0.5)
    assert nmf.overestimation_ratio == pytest.approx(0.5, abs=0.02)
    assert amf.overestimation_ratio < nmf.overestimation_ratio - 0.1
    assert amf.overestimation_ratio == pytest.approx(overestimation_ratio(C, _recon(amf)), rel=1e-4)


def _recon(result):
    return (result.presence[:, :, None] * result.modules[None]).max(axis=1)


# ---------------------------------------------------------------------------------------------------------------
# select_n_modules


FAST = {"max_epochs": 30, "patience": 10, "device": "cpu"}


def test_select_n_modules_figures_and_best_run():
    C, _, _ = planted(n_loc=40)
    res = select_n_modules(C, [1, 3, 2], n_runs=3, rng=5, keep="loss", **FAST)
    assert res.keep == "loss"
    np.testing.assert_array_equal(res.summary["best_run"], res.summary["lowest_loss_run"])
    np.testing.assert_array_equal(res.n_modules, [1, 2, 3])
    runs, summary = res.runs, res.summary
    assert len(runs["loss"]) == 9
    assert len(summary["loss_mean"]) == 3
    np.testing.assert_array_equal(runs["n_modules"], np.repeat([1, 2, 3], 3))
    np.testing.assert_array_equal(runs["run"], np.tile([0, 1, 2], 3))
    assert len(set(runs["seed"].tolist())) == 9
    assert np.isnan(summary["silhouette"][0])
    assert np.isfinite(summary["silhouette"][1:]).all()
    assert res.suggested_n_modules in (1, 2, 3)
    for k, M in enumerate([1, 2, 3]):
        rows = runs["n_modules"] == M
        assert summary["loss_mean"][k] == pytest.approx(runs["loss"][rows].mean())
        assert summary["loss_std"][k] == pytest.approx(np.std(runs["loss"][rows], ddof=1))
        best_row = np.flatnonzero(rows)[np.argmin(runs["loss"][rows])]
        assert res.best[M].loss == runs["loss"][best_row]
        assert res.best[M].seed == runs["seed"][best_row]
        # the recorded seed reproduces the run
        again = fit_amf(C, M, rng=int(runs["seed"][best_row]), **FAST)
        np.testing.assert_array_equal(again.modules, res.best[M].modules)
        assert res.module_clusters[M].shape == (3, M)
    assert res.weighted_averages.shape == (9, C.shape[1])
    assert runs["pattern_cosine"][np.flatnonzero(runs["n_modules"] == 2)[summary["best_run"][1]]] == pytest.approx(1)


def _unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def test_select_n_modules_keeps_the_medoid_by_default():
    # the naive reference: refit every run from its recorded seed, match modules pair by pair with the Hungarian
    # algorithm on their cosines, average; the kept run has the largest mean (ties: the lower loss)
    from scipy.optimize import linear_sum_assignment

    C, _, _ = planted(n_loc=40, seed=2)
    opts = {**FAST, "flavor": "paper"}  # random starts: runs that differ clearly
    res = select_n_modules(C, [3], n_runs=4, rng=7, **opts)
    assert res.keep == "medoid"
    runs = res.runs
    mods = [_unit(fit_amf(C, 3, rng=int(seed), **opts).modules) for seed in runs["seed"]]
    close = np.zeros(4)
    for a in range(4):
        sims = []
        for b in range(4):
            if b != a:
                cos = mods[a] @ mods[b].T
                r, c = linear_sum_assignment(-cos)
                sims.append(cos[r, c].mean())
        close[a] = np.mean(sims)
    np.testing.assert_allclose(runs["closeness"], close, atol=1e-5)
    order = np.argsort(-close)
    assert close[order[0]] - close[order[1]] > 1e-3  # a clear medoid, so the check below means something
    kept = order[0]
    assert kept != np.argmin(runs["loss"])  # ... and one that is not the lowest loss
    assert res.summary["best_run"][0] == kept
    assert res.summary["lowest_loss_run"][0] == np.argmin(runs["loss"])
    assert res.best[3].seed == runs["seed"][kept]
    assert runs["pattern_cosine"][kept] == pytest.approx(1)


def test_medoid_run_rules():
    from lava.core.selection import medoid_run, run_closeness

    assert medoid_run([0.5, 0.9, 0.7], [1.0, 3.0, 2.0]) == 1  # the closest, whatever its loss
    assert medoid_run([0.9, 0.9, 0.7], [3.0, 2.0, 1.0]) == 1  # a tie goes to the lower loss
    assert medoid_run([0.5, 0.9, 0.7], [1.0, np.nan, 2.0]) == 2  # a run without a finite loss is never kept
    assert medoid_run([np.nan], [4.0]) == 0
    assert medoid_run([np.nan, np.nan], [4.0, 3.0]) == 1  # no closeness: the lowest loss
    # two runs of 2 modules: identical up to order -> matched cosine 1 for both
    X = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    D = 1 - _unit(X) @ _unit(X).T
    np.testing.assert_allclose(run_closeness(D, 2, 2), [1.0, 1.0])
    assert np.isnan(run_closeness(np.zeros((2, 2)), 1, 2)).all()  # one run: nothing to compare with
    with pytest.raises(ValueError, match="D must be"):
        run_closeness(D, 3, 2)


def test_select_n_modules_seeds_do_not_depend_on_the_range():
    C, _, _ = planted(n_loc=30)
    a = select_n_modules(C, [2, 3], n_runs=2, rng=1, **FAST)
    b = select_n_modules(C, [3], n_runs=2, rng=1, **FAST)
    np.testing.assert_array_equal(a.runs["seed"][2:], b.runs["seed"])
    np.testing.assert_array_equal(a.best[3].modules, b.best[3].modules)


def test_select_n_modules_validates():
    C, _, _ = planted(n_loc=20)
    with pytest.raises(TypeError, match="valid ones"):
        select_n_modules(C, [2], n_runs=1, nu_=3)
    with pytest.raises(TypeError, match="valid ones"):
        select_n_modules(C, [2], n_runs=1, warm_start=None)
    with pytest.raises(TypeError, match="valid ones"):
        select_n_modules(C, [2], n_runs=1, polish=True)
    with pytest.raises(ValueError, match="nu must be"):  # the options are resolved before the first fit
        select_n_modules(C, [2], n_runs=1, nu=-1.0)
    with pytest.raises(ValueError, match="n_runs"):
        select_n_modules(C, [2], n_runs=0)
    with pytest.raises(ValueError, match="keep must be one of"):
        select_n_modules(C, [2], n_runs=1, keep="best")
    with pytest.raises(ValueError, match="repeated"):
        select_n_modules(C, [2, 2])
    with pytest.raises(ValueError, match=">= 1"):
        select_n_modules(C, [0, 2])


def fake_fit(C, n_modules, *, rng, progress=False, **kwargs):
    """A deterministic stand-in for fit_amf: results depend only on the seed and M."""
    g = np.random.default_rng(rng)
    modules = g.random((n_modules, C.shape[1])).astype(np.float32)
    presence = g.random((C.shape[0], n_modules)).astype(np.float32)
    values = {
        "modules": modules,
        "presence": presence,
        "loss": float(g.random()) / n_modules,
        "similarity": float(g.random()),
        "overestimation_ratio": float(g.random()),
        "history": {"loss": g.random(5)},
        "n_epochs": 5,
        "best_epoch": 3,
        "converged": True,
        "interrupted": False,
        "seed": int(rng),
    }
    for field in dataclasses.fields(AMFResult):  # fields the AMF helper may add
        if field.name not in values:
            values[field.name] = g.random(C.shape[0]).astype(np.float32)
    return AMFResult(**{f.name: values[f.name] for f in dataclasses.fields(AMFResult)})


def assert_same_selection(a, b):
    np.testing.assert_array_equal(a.n_modules, b.n_modules)
    assert a.suggested_n_modules == b.suggested_n_modules
    for name in a.runs:
        np.testing.assert_array_equal(a.runs[name], b.runs[name])
    for name in a.summary:
        np.testing.assert_array_equal(a.summary[name], b.summary[name])
    np.testing.assert_array_equal(a.weighted_averages, b.weighted_averages)
    assert a.best.keys() == b.best.keys()
    for M in a.best:
        np.testing.assert_array_equal(a.module_clusters[M], b.module_clusters[M])
        for field in dataclasses.fields(AMFResult):
            x, y = getattr(a.best[M], field.name), getattr(b.best[M], field.name)
            if isinstance(x, dict):
                assert x.keys() == y.keys()
                for k in x:
                    np.testing.assert_array_equal(x[k], y[k])
            else:
                np.testing.assert_array_equal(x, y)
                assert type(np.asarray(x).item() if np.ndim(x) == 0 else x) is type(
                    np.asarray(y).item() if np.ndim(y) == 0 else y
                )


def test_run_file_round_trip(tmp_path):
    C, _, _ = planted(n_loc=10)
    result = fake_fit(C, 3, rng=7)
    _save_run(tmp_path / "r.npz", result)
    loaded = _load_run(tmp_path / "r.npz")
    for field in dataclasses.fields(AMFResult):
        x, y = getattr(result, field.name), getattr(loaded, field.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys()
        else:
            np.testing.assert_array_equal(x, y)
            if np.ndim(x) == 0:
                assert type(x) is type(y)


def test_checkpoint_resume_equals_uninterrupted(tmp_path, monkeypatch):
    C, _, _ = planted(n_loc=20)
    calls = []

    def interrupted_at_five(C, n_modules, **kwargs):
        calls.append(n_modules)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return fake_fit(C, n_modules, **kwargs)

    monkeypatch.setattr(sel_mod, "fit_amf", fake_fit)
    reference = select_n_modules(C, [2, 3, 4], n_runs=3, rng=11, max_epochs=7)

    monkeypatch.setattr(sel_mod, "fit_amf", interrupted_at_five)
    with pytest.raises(KeyboardInterrupt):
        select_n_modules(C, [2, 3, 4], n_runs=3, rng=11, checkpoint=tmp_path / "ck", max_epochs=7)
    assert len(list((tmp_path / "ck").glob("m*_r*.npz"))) == 4

    calls.clear()
    monkeypatch.setattr(sel_mod, "fit_amf", lambda C, M, **kw: (calls.append(M), fake_fit(C, M, **kw))[1])
    resumed = select_n_modules(C, [2, 3, 4], n_runs=3, rng=11, checkpoint=tmp_path / "ck", max_epochs=7)
    assert len(calls) == 5  # only the unfinished runs were fitted
    assert_same_selection(resumed, reference)

    calls.clear()  # everything finished: nothing is refitted
    again = select_n_modules(C, [2, 3, 4], n_runs=3, rng=11, checkpoint=tmp_path / "ck", max_epochs=7)
    assert calls == []
    assert_same_selection(again, reference)


def test_checkpoint_refuses_other_arguments(tmp_path, monkeypatch):
    monkeypatch.setattr(sel_mod, "fit_amf", fake_fit)
    C, _, _ = planted(n_loc=20)
    select_n_modules(C, [2], n_runs=2, rng=1, checkpoint=tmp_path, max_epochs=7)
    with pytest.raises(ValueError, match="differing: n_runs") as err:
        select_n_modules(C, [2], n_runs=3, rng=1, checkpoint=tmp_path, max_epochs=7)
    assert "another checkpoint directory" in str(err.value)
    with pytest.raises(ValueError, match="differing: fit_kwargs"):
        select_n_modules(C, [2], n_runs=2, rng=1, checkpoint=tmp_path, max_epochs=8)
    with pytest.raises(ValueError, match="differing: C"):
        select_n_modules(C + 0.01, [2], n_runs=2, rng=1, checkpoint=tmp_path, max_epochs=7)
    with pytest.raises(ValueError, match="differing: rng"):
        select_n_modules(C, [2], n_runs=2, rng=2, checkpoint=tmp_path, max_epochs=7)


def test_interrupted_fit_is_not_kept(tmp_path, monkeypatch):
    C, _, _ = planted(n_loc=20)

    def fit_then_interrupt(C, n_modules, **kwargs):
        return dataclasses.replace(fake_fit(C, n_modules, **kwargs), interrupted=True)

    monkeypatch.setattr(sel_mod, "fit_amf", fit_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="resume"):
        select_n_modules(C, [2], n_runs=2, checkpoint=tmp_path)
    assert not list(tmp_path.glob("m*_r*.npz"))


def test_select_n_modules_does_not_suggest_an_m_with_near_duplicates(monkeypatch):
    C, _, _ = planted(n_loc=40)
    clean = select_n_modules(C, [1, 2, 3], n_runs=2, rng=5, **FAST)
    assert (clean.runs["n_duplicates"] == 0).all()  # planted modules are distinct: nothing to count
    assert clean.summary["duplicates_mean"].tolist() == [0.0, 0.0, 0.0]
    # the same fits, with every fit of 3 modules reported to hold a duplicate pair: 3 is never suggested, and the
    # largest M below the elbow without duplicates is
    monkeypatch.setattr(
        sel_mod, "duplicate_modules", lambda modules, presence: [(0, 1, 0.9, 0.9)] if len(modules) == 3 else []
    )
    dup = select_n_modules(C, [1, 2, 3], n_runs=2, rng=5, **FAST)
    np.testing.assert_array_equal(dup.summary["duplicates_mean"], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(dup.summary["loss_mean"], clean.summary["loss_mean"])
    if clean.suggested_n_modules == 3:
        assert dup.suggested_n_modules == 2
    else:
        assert dup.suggested_n_modules == clean.suggested_n_modules
    # a duplicate at M = 3 is the largest M: the elbow is at most 3, the fallback is 2 whenever the elbow is 3
    assert dup.suggested_n_modules != 3


# ---------------------------------------------------------------------------------------------------------------
# several runs of one M: fit_runs, matched cosines, module reproducibility


def test_matched_run_cosines_are_the_best_one_to_one_matching():
    # naive reference: every permutation of run b's modules, the one with the largest total cosine
    from lava.core.selection import matched_run_cosines

    g = np.random.default_rng(4)
    R, M = 3, 4
    X = g.random((R * M, 10))
    cos = _unit(X) @ _unit(X).T
    out = matched_run_cosines(1 - cos, R, M)
    assert out.shape == (R, R, M)
    for a, b in itertools.product(range(R), range(R)):
        if a == b:
            assert np.isnan(out[a, a]).all()
            continue
        block = cos[a * M : (a + 1) * M, b * M : (b + 1) * M]
        best = max(itertools.permutations(range(M)), key=lambda p: sum(block[i, p[i]] for i in range(M)))
        np.testing.assert_allclose(out[a, b], [block[i, best[i]] for i in range(M)], atol=1e-12)


def test_module_reproducibility_counts_the_runs_that_find_a_module_again():
    from lava.core.selection import module_reproducibility

    matched = np.full((3, 3, 2), np.nan)
    matched[0, 1], matched[0, 2] = [0.95, 0.5], [0.92, 0.91]
    np.testing.assert_allclose(module_reproducibility(matched, 0), [1.0, 0.5])
    np.testing.assert_allclose(module_reproducibility(matched, 0, threshold=0.93), [0.5, 0.0])
    assert np.isnan(module_reproducibility(np.full((1, 1, 2), np.nan), 0)).all()  # one run


def test_fit_runs_keeps_what_select_n_modules_keeps_with_its_figures():
    from scipy.optimize import linear_sum_assignment

    from lava.core import fit_runs

    C, _, _ = planted(n_loc=40, seed=2)
    opts = {**FAST, "flavor": "paper"}  # random starts: runs that differ
    res = fit_runs(C, 3, n_runs=4, rng=7, **opts)
    sel = select_n_modules(C, [3], n_runs=4, rng=7, **opts)
    np.testing.assert_array_equal(res.modules, sel.best[3].modules)
    assert res.seed == sel.best[3].seed
    np.testing.assert_array_equal(res.runs["seed"], sel.runs["seed"])
    np.testing.assert_allclose(res.runs["closeness"], sel.runs["closeness"])
    np.testing.assert_array_equal(res.module_reproducibility, sel.best[3].module_reproducibility)
    assert res.n_runs == 4
    # reproducibility by hand: refit every run from its seed, match it to the kept one, count cosines >= 0.9; the
    # paper's random starts at 30 epochs find nothing again, the localities start everything (both must hold)
    for options, expected in ((opts, 0.0), (FAST, 1.0)):
        kept = fit_runs(C, 3, n_runs=4, rng=7, **options)
        index = int(np.flatnonzero(kept.runs["seed"] == kept.seed)[0])
        mods = [_unit(fit_amf(C, 3, rng=int(s), **options).modules) for s in kept.runs["seed"]]
        found = np.zeros(3)
        for b in range(4):
            if b != index:
                cos = mods[index] @ mods[b].T
                r, c = linear_sum_assignment(-cos)
                found[r] += cos[r, c] >= 0.9
        np.testing.assert_allclose(kept.module_reproducibility, found / 3)
        np.testing.assert_allclose(kept.module_reproducibility, expected)
    # one run: fit_amf with that run's seed, nothing to compare with
    one = fit_runs(C, 3, n_runs=1, rng=7, **opts)
    np.testing.assert_array_equal(one.modules, fit_amf(C, 3, rng=int(sel_mod._run_seed(7, 3, 0)), **opts).modules)
    assert np.isnan(one.module_reproducibility).all()


def test_fit_runs_keeps_from_the_finished_runs_when_interrupted(monkeypatch):
    from lava.core import fit_runs

    C, _, _ = planted(n_loc=30)
    real, calls = sel_mod.fit_amf, []

    def interrupted_third(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        return dataclasses.replace(result, interrupted=True) if len(calls) == 3 else result

    monkeypatch.setattr(sel_mod, "fit_amf", interrupted_third)
    res = fit_runs(C, 2, n_runs=5, rng=0, **FAST)
    assert len(calls) == 3  # no run after the interrupt
    assert res.interrupted
    assert res.n_runs == 2
    assert res.runs["seed"].tolist() == [sel_mod._run_seed(0, 2, r) for r in range(2)]
    calls.clear()
    monkeypatch.setattr(sel_mod, "fit_amf", lambda *a, **k: dataclasses.replace(real(*a, **k), interrupted=True))
    first = fit_runs(C, 2, n_runs=5, rng=0, **FAST)  # interrupted in the first run: that run, as fit_amf left it
    assert first.interrupted
    assert first.n_runs == 1
    assert first.runs is None


def test_fit_runs_validates_before_fitting(monkeypatch):
    from lava.core import fit_runs

    C, _, _ = planted(n_loc=20)
    monkeypatch.setattr(sel_mod, "fit_amf", lambda *a, **k: pytest.fail("fitted"))
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="n_runs must be an integer"):
            fit_runs(C, 2, n_runs=bad)
    with pytest.raises(ValueError, match="keep must be one of"):
        fit_runs(C, 2, keep="best")
    for bad in (0, 21, 2.5):
        with pytest.raises(ValueError, match="n_modules must be an integer"):
            fit_runs(C, bad)
