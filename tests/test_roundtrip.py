"""Results never get lost: file round trips, reruns, new keys, reproduction from params, determinism."""

from __future__ import annotations

import inspect
import logging

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import sparse

import lava
from lava._store import DEPENDENTS, STEPS
from reliability_helpers import LOCALITIES, assert_adata_equal, assert_equal_value, gene_sets, pipeline, synthetic

#: Functions that produce each stored step, and the arguments that cannot be kept in params (with the reason).
PRODUCERS = {
    "localities": lava.tl.localities,
    "correlations": lava.tl.correlations,
    "selection": lava.tl.select_n_modules,
    "amf": lava.tl.amf,
    "module_genes": lava.tl.module_genes,
    "enrichment": lava.tl.enrich,
    "association": lava.tl.associate,
    "neighborhood_retention": lava.tl.neighborhood_retention,
}
#: Arguments that do not change results (where they go, whether to show bars) or are not data (a Dask client).
NOT_RESULT_ARGUMENTS = {"adata", "key", "key_added", "copy", "progress", "client", "amf_kwargs", "options"}


@pytest.fixture(scope="module")
def full() -> ad.AnnData:
    """Every step that stores something, on the small synthetic data (about 10 s)."""
    adata = pipeline()
    lava.tl.neighborhood_retention(adata, n_samples=50)
    return adata


def _without_timings(uns: dict) -> dict:
    """A copy of ``uns[key]`` without the per-epoch wall-clock seconds (the only stored value that is not seeded)."""
    out = {}
    for name, value in uns.items():
        if isinstance(value, dict):
            out[name] = _without_timings(value)
        elif name != "seconds":
            out[name] = value
    return out


@pytest.mark.filterwarnings("ignore:.*next minor release:UserWarning")  # anndata's zarr format notice
@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_everything_survives_write_and_read(full, fmt, tmp_path):
    path = tmp_path / f"a.{fmt}"
    getattr(full, f"write_{fmt}")(path)
    back = getattr(ad, f"read_{fmt}")(path)
    assert set(back.uns["lava"]) == {*STEPS, "params", "neighborhood_retention"}
    assert_adata_equal(full, back)  # every key of uns, obs, obsm, varm, ...: same values and dtypes (text as text)
    # and what was read back is usable: accessors give the same tables, plots draw, later steps rerun
    for name in ("modules", "presence", "feature_scores", "module_genes", "enrichment", "association", "selection"):
        assert_equal_value(getattr(lava.get, name)(full), getattr(lava.get, name)(back), f"lava.get.{name}")
    for step in PRODUCERS:
        assert lava.get.params(back, step) == lava.get.params(full, step)
    for plot, args in [
        (lava.pl.modules, ()),
        (lava.pl.module_network, (0,)),
        (lava.pl.locality, (0,)),
        (lava.pl.module_genes, (0,)),
        (lava.pl.selection, ()),
        (lava.pl.enrichment, ()),
        (lava.pl.association, ()),
    ]:
        plot(back, *args, show=False)
        plt.close("all")
    lava.tl.amf(back, from_selection=3)
    lava.tl.module_genes(back, threshold=0.4)
    assert_equal_value(full.uns["lava"]["selection"], back.uns["lava"]["selection"], "selection")


def test_rerunning_a_step_drops_what_depends_on_it(full, caplog):
    for step, rerun in [
        ("amf", lambda a: lava.tl.amf(a, 2, max_epochs=3, progress=False)),
        ("correlations", lambda a: lava.tl.correlations(a, features=list(a.var_names[:15]), progress=False)),
        ("localities", lambda a: lava.tl.localities(a, **{**LOCALITIES, "rng": 1})),
    ]:
        adata = full.copy()
        before = full.uns["lava"]
        with caplog.at_level(logging.INFO, logger="lava"):
            caplog.clear()
            rerun(adata)
        uns = adata.uns["lava"]
        stale = [s for s in DEPENDENTS[step] if s in before]
        assert stale
        assert all(s not in uns and s not in uns["params"] for s in stale)
        assert f"dropped stale {', '.join(map(repr, stale))}" in caplog.text  # and says so
        kept = [s for s in STEPS if s not in stale and s != step]
        for s in kept:  # what does not depend on the step is left as it was
            assert_equal_value(before[s], uns[s], s)
        assert uns["params"][step] != before["params"][step]  # the step itself holds the new run
        if step in ("correlations", "localities"):  # no modules: no per-sample presence or feature scores either
            assert "lava_presence" not in adata.obsm
            assert "lava_modules" not in adata.varm
        else:
            assert adata.obsm["lava_presence"].shape[1] == 2
            assert adata.varm["lava_modules"].shape[1] == 2


def test_new_key_added_leaves_old_results_intact(full):
    adata = full.copy()
    pipeline(adata, until="association", key="second")
    for field in ("obsm", "varm"):
        for name in ("lava_presence", "lava_modules"):
            if name in getattr(full, field):
                assert_equal_value(getattr(full, field)[name], getattr(adata, field)[name], name)
    assert_equal_value(dict(full.uns["lava"]), dict(adata.uns["lava"]), "uns['lava']")
    for name in ("lava_neighborhood_centrality", "lava_locality_centrality"):
        np.testing.assert_array_equal(full.obs[name], adata.obs[name])
    assert {"second_presence"} <= set(adata.obsm)
    assert {"second_modules"} <= set(adata.varm)
    assert "second_locality_centrality" in adata.obs
    assert set(adata.uns["second"]) >= set(STEPS) - {"neighborhood_retention"}


def _rerun_arguments(adata, step: str) -> dict:
    """The stored params of ``step`` restricted to its function's arguments; checks none that matters is missing."""
    fn = PRODUCERS[step]
    params = lava.get.params(adata, step)
    assert isinstance(params.pop("lava_version"), str)
    accepted = set(inspect.signature(fn).parameters)
    missing = accepted - set(params) - NOT_RESULT_ARGUMENTS - {"gene_sets"}
    assert not missing, f"{step}: params do not record {sorted(missing)}"
    if "rng" in accepted:
        assert isinstance(params["rng"], int)  # the seed actually used
    args = {name: value for name, value in params.items() if name in accepted}
    if step in ("selection", "amf"):  # the AMF options they pass on (the resolved AMFConfig's fields)
        args.update({name: value for name, value in params.items() if name in lava.core.selection.FIT_KWARGS})
    return args


def test_params_reproduce_every_step(full):
    """Rerun every step on fresh data from what params recorded alone: the same results, bit for bit."""
    again = synthetic()
    for step in ("localities", "correlations", "selection", "amf", "module_genes", "enrichment", "association"):
        args = _rerun_arguments(full, step)
        if step == "enrichment":  # a dict of gene sets is not stored (a GMT path or library name is)
            assert lava.get.params(full, step)["gene_sets"] == "dict"
            args["gene_sets"] = gene_sets(again)  # ... but its fingerprint is, and is compared below with the rest
        positional = {"amf": "n_modules", "selection": "n_modules", "association": "groupby"}.get(step)
        first = [args.pop(positional)] if positional else []
        PRODUCERS[step](again, *first, **args)
    lava.tl.neighborhood_retention(again, **_rerun_arguments(full, "neighborhood_retention"))
    assert_equal_value(_without_timings(full.uns["lava"]), _without_timings(again.uns["lava"]), "uns['lava']")
    for name in ("lava_presence",):
        np.testing.assert_array_equal(full.obsm[name], again.obsm[name])
    np.testing.assert_array_equal(full.varm["lava_modules"], again.varm["lava_modules"])


def test_same_rng_same_results_other_rng_other_results():
    results = []
    for rng in (np.random.default_rng(3), np.random.default_rng(3), np.random.default_rng(4)):
        adata = synthetic()
        lava.tl.localities(adata, **{**LOCALITIES, "rng": rng})
        lava.tl.correlations(adata, progress=False)
        lava.tl.amf(adata, 3, max_epochs=10, progress=False, rng=rng)
        results.append(adata)
    a, b, c = (r.uns["lava"] for r in results)
    for step in ("localities", "amf"):
        assert_equal_value(_without_timings(a[step]), _without_timings(b[step]), step)
    assert lava.get.params(results[0], "amf")["rng"] == lava.get.params(results[1], "amf")["rng"]
    assert not np.array_equal(a["amf"]["modules"], c["amf"]["modules"])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("sparsity", [0.0, 0.6])
def test_dense_and_sparse_give_the_same_correlations(fmt, sparsity):
    adata = synthetic(sparsity=sparsity)
    dense = np.asarray(adata.X.toarray() if sparse.issparse(adata.X) else adata.X)
    lava.tl.localities(adata, **LOCALITIES)
    results = {}
    for name, X in (("dense", dense), (fmt, getattr(sparse, f"{fmt}_matrix")(dense))):
        adata.X = X
        lava.tl.correlations(adata, progress=False)
        results[name] = adata.uns["lava"]["correlations"]["values"]
    np.testing.assert_array_equal(results["dense"], results[fmt])
    assert results["dense"].any()


def test_gene_sets_fingerprint_tells_other_sets(full):
    """A dict of gene sets is recorded by its sha256: the same sets give the same, one gene more another."""
    adata = full.copy()
    sets = gene_sets(adata)
    lava.tl.enrich(adata, dict(reversed(sets.items())), min_size=2)  # order of the sets does not matter
    assert (
        lava.get.params(adata, "enrichment")["gene_sets_sha256"]
        == lava.get.params(full, "enrichment")["gene_sets_sha256"]
    )
    sets["planted0"] = [*sets["planted0"], "g0019"]
    lava.tl.enrich(adata, sets, min_size=2)
    assert (
        lava.get.params(adata, "enrichment")["gene_sets_sha256"]
        != lava.get.params(full, "enrichment")["gene_sets_sha256"]
    )


def test_params_record_where_the_results_live(full):
    # the key is part of every step's record (the store adds it), so a rerun from params writes to the same place
    for step in ("localities", "correlations", "selection", "amf", "module_genes", "enrichment", "association"):
        assert lava.get.params(full, step)["key"] == "lava", step
