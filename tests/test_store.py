"""The typed readers of lava._store: one validated read of each stored step, used by tl, pl, get and the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lava
from lava import _store
from reliability_helpers import AMF, N_MODULES, N_OBS, pipeline


@pytest.fixture(scope="module")
def fitted():
    """The synthetic data after lava.tl.amf (copy before changing it)."""
    return pipeline(until="amf")


def test_readers_return_the_stored_fields(fitted):
    uns = fitted.uns["lava"]
    loc = _store.read_localities(fitted)
    assert loc.indices.dtype == np.int64
    assert loc.indices.shape == uns["localities"]["indices"].shape
    assert loc.n_localities == loc.indices.shape[0]
    assert loc.basis == "X_umap"
    assert loc.n_neighbors == 50
    assert loc.params["n_neighbors"] == 50
    assert isinstance(loc.loss, float)

    corr = _store.read_correlations(fitted)
    assert corr.values is uns["correlations"]["values"]  # never copied
    assert corr.features.dtype.kind == "U"
    assert corr.n_pairs == corr.features.size * (corr.features.size - 1) // 2
    assert corr.tie_fraction == 0.75
    assert not corr.use_raw
    np.testing.assert_array_equal(corr.var_rows(fitted), uns["correlations"]["feature_index"])

    fit = _store.read_amf(fitted, require=("modules", "presence", "sample_presence", "feature_scores"))
    assert fit.n_modules == N_MODULES
    assert fit.modules is uns["amf"]["modules"]
    assert fit.sample_presence.shape == (N_OBS, N_MODULES)
    assert fit.feature_scores.shape == (fitted.n_vars, N_MODULES)
    assert isinstance(fit.converged, bool)
    assert isinstance(fit.n_epochs, int)
    assert fit.params["n_modules"] == N_MODULES
    assert set(fit.history) >= {"loss"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.modules = None


def test_missing_steps_and_parts_name_the_producer(fitted):
    adata = fitted.copy()
    del adata.uns["lava"]["amf"]
    with pytest.raises(KeyError, match=r"lava\.tl\.amf\(adata\)"):
        _store.read_amf(adata)
    adata = fitted.copy()
    del adata.obsm["lava_presence"]
    fit = _store.read_amf(adata)  # the per-sample presence is only needed when asked for
    assert fit.sample_presence is None
    with pytest.raises(KeyError, match=r"adata\.obsm has no 'lava_presence'; rerun lava\.tl\.amf"):
        fit.need("sample_presence")
    with pytest.raises(KeyError, match=r"adata\.obsm has no 'lava_presence'"):
        _store.read_amf(adata, require=("sample_presence",))
    del adata.uns["lava"]["correlations"]["feature_index"]
    with pytest.raises(KeyError, match=r"\['correlations'\] has no 'feature_index'; rerun lava\.tl\.correlations"):
        _store.read_correlations(adata, require=("values", "feature_index"))
    with pytest.raises(ValueError, match="unknown part"):
        _store.read_correlations(adata, require=("value",))
    adata.uns["other"] = adata.uns.pop("lava")
    with pytest.raises(KeyError, match=r"key=\.\.\."):
        _store.read_localities(adata)
    sel = _store.read_selection(adata, "other")  # the pipeline ran lava.tl.select_n_modules over M = 2, 3
    assert sorted(sel.best) == [2, 3]
    assert sel.suggested_n_modules in (2, 3)
    assert list(sel.summary.index) == [2, 3]
    del adata.uns["other"]["selection"]
    with pytest.raises(KeyError, match=r"lava\.tl\.select_n_modules\(adata\) with key='other'"):
        _store.read_selection(adata, "other")


@pytest.mark.parametrize(
    ("step", "name", "value", "match"),
    [
        ("localities", "indices", np.zeros((4, 3)), "2-D integer array"),
        ("correlations", "values", np.zeros((4, 7), np.float32), "holds 7 pairs for"),
        ("correlations", "feature_n_localities", np.zeros(3, np.int64), "holds 3 feature_n_localities"),
        ("amf", "presence", np.zeros((4, N_MODULES + 1), np.float32), "has 3 modules but its presence"),
        ("amf", "modules", np.zeros(5, np.float32), "must be 2-D"),
    ],
)
def test_inconsistent_stored_results_are_refused_on_reading(fitted, step, name, value, match):
    adata = fitted.copy()
    adata.uns["lava"][step][name] = value
    reader = {"localities": _store.read_localities, "correlations": _store.read_correlations, "amf": _store.read_amf}
    with pytest.raises(ValueError, match=match):
        reader[step](adata)


def test_values_on_disk_stay_on_disk(fitted, tmp_path):
    adata = fitted.copy()
    C = adata.uns["lava"]["correlations"]["values"]
    mm = np.lib.format.open_memmap(tmp_path / "C.npy", mode="w+", dtype=np.float32, shape=C.shape)
    mm[:] = C
    adata.uns["lava"]["correlations"]["values"] = mm
    assert _store.read_correlations(adata).values is mm


def test_amf_reads_each_stored_step_once(fitted, monkeypatch):
    adata = fitted.copy()
    calls = []
    get_step = _store.get_step

    def counting(adata, key, step):
        calls.append(step)
        return get_step(adata, key, step)

    monkeypatch.setattr(_store, "get_step", counting)
    lava.tl.amf(adata, N_MODULES, **AMF)
    assert calls.count("correlations") == 1
    assert calls.count("localities") == 1


def test_tables(fitted):
    adata = fitted.copy()
    lava.tl.module_genes(adata, threshold=0.4)
    table = _store.read_table(adata, "lava", "module_genes", columns=("module", "feature"))
    assert list(table.columns[:2]) == ["module", "feature"]
    with pytest.raises(KeyError, match=r"lacks columns \['p_value'\]; rerun lava\.tl\.module_genes"):
        _store.read_table(adata, "lava", "module_genes", columns=("p_value",))
    with pytest.raises(KeyError, match=r"lava\.tl\.enrich"):
        _store.read_table(adata, "lava", "enrichment")
