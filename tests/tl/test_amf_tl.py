"""lava.tl.amf: validation before change, the storage contract, adoption of a selection run, interrupts."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import torch

import lava
from lava import _store
from lava.core import amf_loss, reconstruct
from lava.tl._amf import store_amf
from reliability_helpers import interrupt_step


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


N_OBS, N_VARS, N_LOC, N_NEIGH = 60, 12, 20, 10
FEATURE_INDEX = np.array([0, 2, 3, 5, 6, 8, 9, 11])


def make_adata(seed=0):
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(rng.random((N_OBS, N_VARS)).astype(np.float32))
    adata.obs_names = [f"c{i}" for i in range(N_OBS)]
    adata.var_names = [f"g{i}" for i in range(N_VARS)]
    indices = np.stack([rng.choice(N_OBS - 5, N_NEIGH, replace=False) for _ in range(N_LOC)]).astype(np.int64)
    D = len(FEATURE_INDEX)
    P = D * (D - 1) // 2
    modules = (rng.random((2, P)) < 0.3) * rng.uniform(0.5, 1, (2, P))
    presence = rng.uniform(0, 1, (N_LOC, 2)) * (rng.random((N_LOC, 2)) < 0.7)
    presence[0] = [1, 0]
    presence[1] = [0, 1]
    C = reconstruct(presence, modules) + 0.02 * rng.random((N_LOC, P)).astype(np.float32)
    adata.uns["lava"] = {
        "localities": {"indices": indices, "probes": rng.random((N_LOC, 2)), "alpha": 0.0, "beta": 0.0},
        "correlations": {
            "values": np.clip(C, 0, 1).astype(np.float32),
            "features": np.asarray(adata.var_names[FEATURE_INDEX]),
            "feature_index": FEATURE_INDEX,
        },
        "params": {},
    }
    return adata


def test_stores_every_field():
    adata = make_adata()
    # one fit (n_runs=1: the seed is rng), the paper's loss (amf_loss below)
    lava.tl.amf(adata, 2, n_runs=1, max_epochs=20, rng=3, progress=False, loss="paper")
    res = adata.uns["lava"]["amf"]
    P = adata.uns["lava"]["correlations"]["values"].shape[1]
    assert res["modules"].shape == (2, P)
    assert res["modules"].dtype == np.float32
    assert res["presence"].shape == (N_LOC, 2)
    assert res["presence"].dtype == np.float32
    assert res["locality_similarity"].shape == (N_LOC,)
    assert res["locality_similarity"].dtype == np.float64
    for name in ("loss", "similarity", "overestimation_ratio"):
        assert isinstance(res[name], float)
    for name in ("n_epochs", "best_epoch", "seed", "n_pairs_dropped"):
        assert isinstance(res[name], int)
    assert res["converged"] is False
    assert res["interrupted"] is False
    assert res["n_epochs"] == 20
    assert res["seed"] == 3
    assert set(res["history"]) >= {"loss"}
    assert res["history"]["loss"].shape == (21,)
    C = adata.uns["lava"]["correlations"]["values"]
    assert res["loss"] == pytest.approx(amf_loss(C, res["presence"], res["modules"]), abs=1e-6)

    # varm: brute-force feature scores at the correlation features' rows, 0 elsewhere
    scores = adata.varm["lava_modules"]
    assert scores.shape == (N_VARS, 2)
    assert scores.dtype == np.float32
    D = len(FEATURE_INDEX)
    expected = np.zeros((N_VARS, 2))
    k = 0
    for i in range(D):
        for j in range(i + 1, D):
            expected[FEATURE_INDEX[i]] += res["modules"][:, k]
            expected[FEATURE_INDEX[j]] += res["modules"][:, k]
            k += 1
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert np.all(scores[np.setdiff1d(np.arange(N_VARS), FEATURE_INDEX)] == 0)

    # obsm: per-sample mean presence over the localities containing it, brute force
    presence = adata.obsm["lava_presence"]
    assert presence.shape == (N_OBS, 2)
    assert presence.dtype == np.float32
    indices = adata.uns["lava"]["localities"]["indices"]
    for s in range(N_OBS):
        containing = [i for i in range(N_LOC) if s in indices[i]]
        want = res["presence"][containing].mean(0) if containing else np.zeros(2)
        np.testing.assert_allclose(presence[s], want, rtol=1e-5, atol=1e-7)
    assert np.all(presence[N_OBS - 5 :] == 0)  # never in a locality

    params = (
        lava.get.params(adata, "amf")
        if hasattr(lava.get, "params")
        else _store.decode_params(adata.uns["lava"]["params"]["amf"])
    )
    assert params["rng"] == 3
    assert params["n_modules"] == 2
    assert params["from_selection"] is None
    assert params["device"] == "cpu"  # the device used, not "auto"


def test_params_are_the_config_resolved_once_by_core():
    adata = make_adata()
    lava.tl.amf(adata, 2, flavor="paper", nu=5.0, max_epochs=5, rng=1, progress=False)
    params = lava.get.params(adata, "amf")
    C = adata.uns["lava"]["correlations"]["values"]
    result = lava.core.fit_amf(C, 2, flavor="paper", nu=5.0, max_epochs=5, rng=1)
    assert {k: params[k] for k in result.config.to_dict()} == result.config.to_dict()
    assert (params["flavor"], params["loss"], params["nu"], params["lr"]) == ("paper", "paper", 5.0, 3e-3)
    assert params["device"] == result.device
    np.testing.assert_array_equal(adata.uns["lava"]["amf"]["modules"], result.modules)
    with pytest.raises(TypeError, match="unexpected AMF option"):
        lava.tl.amf(adata, 2, polish=True, progress=False)


def test_copy_and_stale_dependents():
    adata = make_adata()
    adata.uns["lava"]["module_genes"] = {"x": 1}
    out = lava.tl.amf(adata, 2, max_epochs=2, progress=False, copy=True)
    assert "amf" not in adata.uns["lava"]
    assert "module_genes" in adata.uns["lava"]
    assert "amf" in out.uns["lava"]
    assert "module_genes" not in out.uns["lava"]
    assert "lava_presence" not in adata.obsm


def test_survives_h5ad(tmp_path):
    adata = make_adata()
    lava.tl.amf(adata, 2, max_epochs=3, progress=False)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for name in ("modules", "presence", "locality_similarity"):
        np.testing.assert_array_equal(back.uns["lava"]["amf"][name], adata.uns["lava"]["amf"][name])
    np.testing.assert_array_equal(
        back.uns["lava"]["amf"]["history"]["loss"], adata.uns["lava"]["amf"]["history"]["loss"]
    )
    assert bool(back.uns["lava"]["amf"]["converged"]) is False
    for name in ("module_reproducibility", "n_runs"):
        np.testing.assert_array_equal(back.uns["lava"]["amf"][name], adata.uns["lava"]["amf"][name])
    for name in ("seed", "loss", "closeness"):
        np.testing.assert_array_equal(back.uns["lava"]["amf"]["runs"][name], adata.uns["lava"]["amf"]["runs"][name])
    np.testing.assert_array_equal(
        _store.read_amf(back).module_reproducibility, adata.uns["lava"]["amf"]["module_reproducibility"]
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"n_modules": 0}, ValueError, "n_modules"),
        ({"n_modules": N_LOC + 1}, ValueError, "n_modules"),
        ({"nu": -1.0}, ValueError, "nu"),
        ({"gamma": -1.0}, ValueError, "gamma"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"patience": 0}, ValueError, "patience"),
        ({"tol": 1.5}, ValueError, "tol"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"from_selection": 2}, KeyError, "select_n_modules"),
        ({"n_runs": 0}, ValueError, "n_runs"),
        ({"n_runs": 2.5}, ValueError, "n_runs"),
        ({"keep": "best"}, ValueError, "keep"),
    ],
)
def test_errors_before_change(kwargs, error, word):
    adata = make_adata()
    before = {k: dict(v) if isinstance(v, dict) else v for k, v in adata.uns["lava"].items()}
    with pytest.raises(error, match=word):
        lava.tl.amf(adata, **{"n_modules": 2, "max_epochs": 2, "progress": False, **kwargs})
    assert set(adata.uns["lava"]) == set(before)
    assert "amf" not in adata.uns["lava"]
    assert "lava_presence" not in adata.obsm
    assert "lava_modules" not in adata.varm


def test_missing_correlations_and_all_zero():
    adata = make_adata()
    del adata.uns["lava"]["correlations"]
    with pytest.raises(KeyError, match=r"lava\.tl\.correlations"):
        lava.tl.amf(adata, 2, progress=False)
    adata = make_adata()
    adata.uns["lava"]["correlations"]["values"][:] = 0
    with pytest.raises(ValueError, match="every correlation"):
        lava.tl.amf(adata, 2, progress=False)
    assert "amf" not in adata.uns["lava"]


def test_from_selection_adopts_without_fitting(monkeypatch):
    adata = make_adata()
    C = adata.uns["lava"]["correlations"]["values"]
    rng = np.random.default_rng(5)
    modules = rng.random((2, C.shape[1])).astype(np.float32)
    presence = rng.random((N_LOC, 2)).astype(np.float32)
    adata.uns["lava"]["selection"] = {
        "best": {
            "2": {
                "modules": modules,
                "presence": presence,
                "loss": 0.5,
                "similarity": 0.4,
                "overestimation_ratio": 0.3,
                "seed": 11,
                "history": {"loss": np.array([1.0, 0.5])},
                "n_epochs": 1,
                "best_epoch": 1,
            }
        }
    }

    def no_fit(*args, **kwargs):
        raise AssertionError("from_selection must not refit")

    monkeypatch.setattr(lava.core.amf, "fit_amf", no_fit)
    with pytest.raises(KeyError, match="available: 2"):
        lava.tl.amf(adata, from_selection=3, progress=False)
    lava.tl.amf(adata, from_selection=2, progress=False)
    res = adata.uns["lava"]["amf"]
    np.testing.assert_array_equal(res["modules"], modules)
    np.testing.assert_array_equal(res["presence"], presence)
    assert res["loss"] == 0.5
    assert res["seed"] == 11
    assert res["n_epochs"] == 1
    chat = reconstruct(presence, modules)
    assert res["overestimation_ratio"] == pytest.approx(np.maximum(chat - C, 0).sum() / np.abs(chat - C).sum())
    assert adata.varm["lava_modules"].shape == (N_VARS, 2)
    params = _store.decode_params(adata.uns["lava"]["params"]["amf"])
    assert params["from_selection"] == 2
    assert "selection" in adata.uns["lava"]  # adopting keeps the selection table


def test_keyboard_interrupt_stores_best_so_far(monkeypatch):
    adata = make_adata()
    interrupt_step(monkeypatch, at=3)  # one step per epoch: every locality is in one batch
    with pytest.warns(UserWarning, match="interrupted"):
        lava.tl.amf(adata, 2, max_epochs=50, progress=False)
    res = adata.uns["lava"]["amf"]
    assert res["interrupted"] is True
    assert res["converged"] is False
    assert res["n_epochs"] == 2
    assert adata.obsm["lava_presence"].shape == (N_OBS, 2)


def test_store_amf_is_reusable():
    adata = make_adata()
    lava.tl.amf(adata, 2, max_epochs=2, progress=False)
    result = lava.core.fit_amf(adata.uns["lava"]["correlations"]["values"], 2, max_epochs=2, rng=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store_amf(adata, result, key="lava", params={"n_modules": 2, "refined": True})
    np.testing.assert_array_equal(adata.uns["lava"]["amf"]["modules"], result.modules)


def test_stores_and_reports_what_the_fit_leaves_out(caplog):
    adata = make_adata()
    lava.tl.amf(adata, 2, max_epochs=20, rng=3, progress=False)
    res = adata.uns["lava"]["amf"]
    assert lava.get.params(adata, "amf")["locality_weight"] == "balanced"
    pres = res["presence"]
    assert res["n_unexplained"] == int((pres.max(1) < 0.5).sum())
    assert res["duplicates"].shape[1] == 2
    assert res["duplicates"].dtype == np.int64
    # a stored fit with a split programme and most localities unexplained: both are reported
    fit = adata.uns["lava"]["amf"]
    fit["duplicates"] = np.array([[0, 1]], dtype=np.int64)
    fit["n_unexplained"] = N_LOC - 2
    from lava.tl._amf import report_fit

    with caplog.at_level("WARNING", logger="lava"):
        report_fit(adata, "lava")
    assert f"{N_LOC - 2} of {N_LOC} localities have no module with presence >= 0.5" in caplog.text
    assert "modules 0 and 1 are near-duplicates" in caplog.text
    caplog.clear()
    fit["duplicates"] = np.zeros((0, 2), dtype=np.int64)
    fit["n_unexplained"] = 1
    with caplog.at_level("WARNING", logger="lava"):
        report_fit(adata, "lava")
    assert caplog.text == ""


def test_one_module_for_two_programmes_warns_about_unexplained_localities(caplog):
    adata = make_adata()
    C = adata.uns["lava"]["correlations"]["values"]
    C[:] = 0.01
    C[: N_LOC // 2, :5] = 0.8  # two programmes on other pairs in the two halves of the localities
    C[N_LOC // 2 :, 10:15] = 0.8
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.amf(adata, 1, max_epochs=200, rng=0, progress=False)
    assert adata.uns["lava"]["amf"]["n_unexplained"] >= N_LOC // 2 - 1
    assert "localities have no module with presence >= 0.5" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.amf(adata, 2, max_epochs=200, rng=0, progress=False)
    assert adata.uns["lava"]["amf"]["n_unexplained"] == 0
    assert "localities have no module" not in caplog.text


def test_several_runs_by_default_the_medoid_kept_with_each_modules_reproducibility():
    from lava.core import fit_runs

    adata = make_adata()
    lava.tl.amf(adata, 2, max_epochs=20, rng=3, progress=False)
    res = adata.uns["lava"]["amf"]
    C = adata.uns["lava"]["correlations"]["values"]
    core = fit_runs(C, 2, n_runs=5, rng=3, max_epochs=20)  # the same runs, the same one kept
    np.testing.assert_array_equal(res["modules"], core.modules)
    assert res["seed"] == core.seed
    assert res["n_runs"] == 5
    np.testing.assert_array_equal(res["module_reproducibility"], core.module_reproducibility)
    assert res["module_reproducibility"].shape == (2,)
    assert res["runs"]["seed"].dtype == np.int64
    np.testing.assert_array_equal(res["runs"]["seed"], core.runs["seed"])
    np.testing.assert_allclose(res["runs"]["closeness"], core.runs["closeness"])
    params = lava.get.params(adata, "amf")
    assert (params["n_runs"], params["keep"], params["rng"]) == (5, "medoid", 3)  # rng: what the runs drew from
    summary = lava.get.summary(adata)
    assert summary["n_runs"] == 5
    np.testing.assert_array_equal(summary["module_reproducibility"], res["module_reproducibility"])
    from lava.get._summary import summary_text

    assert "runs                5, the medoid kept" in summary_text(summary)
    # the paper's flavor fits once, with the seed rng, as it did before runs existed
    lava.tl.amf(adata, 2, flavor="paper", max_epochs=5, rng=3, progress=False)
    res = adata.uns["lava"]["amf"]
    assert (res["n_runs"], res["seed"]) == (1, 3)
    assert "module_reproducibility" not in res
    np.testing.assert_array_equal(res["modules"], lava.core.fit_amf(C, 2, flavor="paper", max_epochs=5, rng=3).modules)
    lava.tl.amf(adata, 2, n_runs=3, keep="loss", max_epochs=20, rng=3, progress=False)
    res = adata.uns["lava"]["amf"]
    assert res["loss"] == res["runs"]["loss"].min()
    assert lava.get.params(adata, "amf")["keep"] == "loss"


def test_interrupted_runs_keep_the_finished_ones(monkeypatch):
    adata = make_adata()
    interrupt_step(monkeypatch, at=15)  # one step per epoch; 10 epochs per run, so step 15 is in the second run
    with pytest.warns(UserWarning, match="interrupted after 1 of 5"):
        lava.tl.amf(adata, 2, max_epochs=10, swaps=0, refine=False, progress=False)
    res = adata.uns["lava"]["amf"]
    assert res["interrupted"] is True
    assert res["n_runs"] == 1
    assert np.isnan(res["module_reproducibility"]).all()  # one finished run: nothing to compare with


def test_warns_about_modules_few_runs_find_again(caplog):
    from lava.tl._amf import report_fit

    adata = make_adata()
    lava.tl.amf(adata, 2, n_runs=2, max_epochs=5, progress=False)
    adata.uns["lava"]["amf"]["module_reproducibility"] = np.array([1.0, 0.25])
    with caplog.at_level("WARNING", logger="lava"):
        report_fit(adata, "lava")
    assert "module 1 of the run kept of 2 was found again" in caplog.text
    caplog.clear()
    adata.uns["lava"]["amf"]["module_reproducibility"] = np.array([1.0, 0.5])
    with caplog.at_level("WARNING", logger="lava"):
        report_fit(adata, "lava")
    assert "found again" not in caplog.text


def test_from_selection_stores_the_kept_runs_reproducibility():
    adata = make_adata()
    lava.tl.select_n_modules(adata, [2], n_runs=3, max_epochs=10, progress=False)
    lava.tl.amf(adata, from_selection=2, progress=False)
    res = adata.uns["lava"]["amf"]
    best = adata.uns["lava"]["selection"]["best"]["2"]
    assert res["n_runs"] == 3
    np.testing.assert_array_equal(res["module_reproducibility"], best["module_reproducibility"])
    lava.tl.amf(adata, 2, n_runs=3, max_epochs=10, progress=False)  # the same runs as the selection's
    np.testing.assert_array_equal(adata.uns["lava"]["amf"]["modules"], best["modules"])
