"""lava.get: tidy tables from fabricated stored results (storage contract), nothing recomputed."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import lava
from lava._store import encode_params
from reliability_helpers import N_MODULES, N_OBS, pipeline

D, L, N, M = 6, 5, 4, 2


@pytest.fixture
def adata():
    gen = np.random.default_rng(0)
    a = ad.AnnData(X=np.zeros((20, 8), dtype=np.float32))
    a.obs_names = [f"s{i}" for i in range(20)]
    a.var_names = [f"f{i}" for i in range(8)]
    P = D * (D - 1) // 2
    modules = np.zeros((M, P), dtype=np.float32)
    modules[0, [0, 3, 7]] = [0.9, 0.2, 0.5]  # pairs (f1,f2), (f1,f5), (f2,f5) of the tested features f1..f6
    modules[1, [14]] = 1.0
    a.uns["lava"] = {
        "localities": {"indices": gen.integers(0, 20, size=(L, N)).astype(np.int64)},
        "correlations": {
            "values": gen.uniform(size=(L, P)).astype(np.float32),
            "features": np.array([f"f{i}" for i in range(1, D + 1)], dtype=object),
            "feature_index": np.arange(1, D + 1),
        },
        "amf": {"modules": modules, "presence": gen.uniform(size=(L, M)).astype(np.float32)},
        "selection": {
            "summary": pd.DataFrame({"loss_mean": [0.3, 0.2]}, index=pd.Index([2, 3], name="n_modules")),
            "runs": pd.DataFrame({"n_modules": [2, 2, 3], "run": [0, 1, 0], "loss": [0.3, 0.31, 0.2]}),
        },
        "params": {
            "localities": encode_params({"n_neighbors": N, "overlap": 1.0, "basis": "X_umap", "maxfun": None}),
            "amf": encode_params({"n_modules": M, "lava_version": "0.1"}),
        },
    }
    a.varm["lava_modules"] = gen.uniform(size=(8, M)).astype(np.float32)
    a.obsm["lava_presence"] = gen.uniform(size=(20, M)).astype(np.float32)
    return a


def test_params_decoded(adata):
    p = lava.get.params(adata, "localities")
    assert p == {"n_neighbors": N, "overlap": 1.0, "basis": "X_umap", "maxfun": None}
    with pytest.raises(ValueError, match="unknown step"):
        lava.get.params(adata, "placement")
    with pytest.raises(KeyError, match=r"lava\.tl\.enrich"):
        lava.get.params(adata, "enrichment")
    with pytest.raises(KeyError, match=r"adata\.uns\['lava'\]\['params'\] has no 'correlations'"):
        lava.get.params(adata, "correlations")


def test_localities(adata):
    idx = adata.uns["lava"]["localities"]["indices"]
    arr = lava.get.localities(adata, tidy=False)
    np.testing.assert_array_equal(arr, idx)
    arr[0, 0] = -1
    assert idx[0, 0] != -1  # a copy
    df = lava.get.localities(adata)
    assert len(df) == L * N
    for i in range(L):
        rows = df[df["locality"] == i]
        assert list(rows["sample"]) == [adata.obs_names[j] for j in idx[i]]
        assert list(rows["position"]) == list(idx[i])


def test_modules_long_table_matches_pair_order(adata):
    features = adata.uns["lava"]["correlations"]["features"]
    pairs = [(features[i], features[j]) for i in range(D) for j in range(i + 1, D)]  # upper triangle, row-major
    mods = adata.uns["lava"]["amf"]["modules"]
    df = lava.get.modules(adata)
    expected = []
    for m in range(M):
        nz = [(p, mods[m, p]) for p in range(len(pairs)) if mods[m, p] != 0]
        nz.sort(key=lambda t: -t[1])
        expected += [(m, *pairs[p], pytest.approx(v)) for p, v in nz]
    assert [tuple(r) for r in df.itertuples(index=False)] == expected
    top = lava.get.modules(adata, top=1)
    assert list(top["correlation"]) == pytest.approx([0.9, 1.0])
    with pytest.raises(ValueError, match="top"):
        lava.get.modules(adata, top=0)


def test_presence_and_scores(adata):
    smp = lava.get.presence(adata)  # per sample by default: aligned with obs
    assert list(smp.index) == list(adata.obs_names)
    assert list(smp.columns) == list(range(M))
    np.testing.assert_array_equal(smp.to_numpy(), adata.obsm["lava_presence"])
    loc = lava.get.presence(adata, level="locality")
    np.testing.assert_array_equal(loc.to_numpy(), adata.uns["lava"]["amf"]["presence"])
    assert loc.index.name == "locality"
    sc = lava.get.feature_scores(adata)
    np.testing.assert_array_equal(sc.to_numpy(), adata.varm["lava_modules"])
    with pytest.raises(ValueError, match="level"):
        lava.get.presence(adata, level="cell")
    del adata.obsm["lava_presence"]
    with pytest.raises(KeyError, match="lava_presence"):
        lava.get.presence(adata)


def test_presence_per_sample_lines_up_with_obs(adata):
    # the tutorial's "presence per cell type": a groupby on obs must align (the locality table aligned nothing)
    adata.obs["celltype"] = pd.Categorical(["T"] * 8 + ["B"] * 12, categories=["T", "B", "NK"])
    table = lava.get.presence(adata).groupby(adata.obs["celltype"], observed=True).mean()
    assert table.notna().all().all()
    assert list(table.index) == ["T", "B"]


@pytest.mark.parametrize("categorical", [True, False])
def test_presence_groupby_is_the_mean_per_group(adata, categorical):
    labels = np.array(["T"] * 8 + ["B"] * 12)
    adata.obs["celltype"] = pd.Categorical(labels, categories=["T", "B", "NK"]) if categorical else labels
    means = lava.get.presence(adata, groupby="celltype")
    pres = adata.obsm["lava_presence"]
    expected = {c: pres[labels == c].mean(axis=0) for c in ("T", "B")}
    assert means.index.name == "celltype"
    assert list(means.index) == (["T", "B"] if categorical else ["B", "T"])  # category order, else sorted; no NK
    assert list(means.columns) == list(range(M))
    for c, row in expected.items():
        np.testing.assert_allclose(means.loc[c].to_numpy(), row, rtol=1e-6)


def test_presence_groupby_errors(adata):
    with pytest.raises(KeyError, match=r"available: .*pass|adata\.obs"):
        lava.get.presence(adata, groupby="celltype")
    adata.obs["celltype"] = "T"
    with pytest.raises(ValueError, match="level='sample'"):
        lava.get.presence(adata, level="locality", groupby="celltype")


def test_selection(adata):
    pd.testing.assert_frame_equal(lava.get.selection(adata), adata.uns["lava"]["selection"]["summary"])
    assert len(lava.get.selection(adata, runs=True)) == 3


def test_missing_steps_name_the_tool(adata):
    for getter, tool in [
        (lava.get.module_genes, r"lava\.tl\.module_genes"),
        (lava.get.enrichment, r"lava\.tl\.enrich"),
        (lava.get.association, r"lava\.tl\.associate"),
    ]:
        with pytest.raises(KeyError, match=tool):
            getter(adata)
    with pytest.raises(KeyError, match=r"key=\.\.\."):
        lava.get.presence(adata, key="other")
    del adata.uns["lava"]["selection"]
    with pytest.raises(KeyError, match=r"lava\.tl\.select_n_modules"):
        lava.get.selection(adata)


def test_filters_on_stored_tables(adata):
    lava.tl.module_genes(adata, rule="score", threshold=0.0)
    genes = lava.get.module_genes(adata, modules=1)
    assert set(genes["module"]) == {1}
    assert len(genes) == 8  # every var has a positive score here
    lava.tl.enrich(adata, {"a": ["f1", "f2", "f3"], "b": ["f4", "F5"]}, min_size=1)
    enr = lava.get.enrichment(adata)
    assert len(lava.get.enrichment(adata, max_p_adjusted=-1)) == 0
    assert len(lava.get.enrichment(adata, max_p_adjusted=1.0)) == len(enr)
    enr.loc[0, "term"] = "changed"
    assert lava.get.enrichment(adata).loc[0, "term"] != "changed"  # a copy


def test_summary_of_a_pipeline_run():
    adata = pipeline()
    info = lava.get.summary(adata, top=2)
    assert (info["n_obs"], info["n_modules"], info["basis"]) == (N_OBS, N_MODULES, "X_umap")
    assert info["n_localities"] == len(adata.uns["lava"]["localities"]["indices"])
    assert info["n_pairs"] == info["n_features"] * (info["n_features"] - 1) // 2
    assert info["loss"] == adata.uns["lava"]["amf"]["loss"]
    genes = lava.get.module_genes(adata)
    assert info["n_module_features"] == len(genes)
    top = info["top_features"]
    assert list(top.columns[:4]) == ["module", "feature", "score", "rank"]
    assert (top.groupby("module").size() <= 2).all()
    assert set(top["feature"]) <= set(genes[genes["rank"] <= 2]["feature"])
    assert len(info["top_associations"]) == 3
    assert info["association_p_column"] == "p_adjusted"
    assert info["top_associations"]["p_adjusted"].is_monotonic_increasing
    terms = info["top_terms"]
    enr = lava.get.enrichment(adata)
    assert list(terms["module"]) == sorted(enr["module"].unique())
    for row in terms.itertuples():
        assert row.p_adjusted == enr[enr["module"] == row.module]["p_adjusted"].min()
    assert info["n_significant_terms"] == int((enr["p_adjusted"] < 0.05).sum())
    # a table of lava.tl.enrich(by="group"): a term significant in two groups of a module counts once
    twice = enr.assign(group=0)
    adata.uns["lava"]["enrichment"] = pd.concat([twice, twice.assign(group=1)], ignore_index=True)
    assert lava.get.summary(adata)["n_significant_terms"] == info["n_significant_terms"]
    with pytest.raises(ValueError, match="top"):
        lava.get.summary(adata, top=0)
    del adata.uns["lava"]["amf"]
    with pytest.raises(KeyError, match=r"lava\.tl\.amf"):
        lava.get.summary(adata)
