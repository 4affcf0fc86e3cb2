"""lava.tl.module_genes / enrich / associate on fabricated stored results that follow the storage contract."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lava
from lava._store import encode_params
from lava.tl._modules import read_gmt

N_OBS, N_VARS, N_TESTED, N_LOC, N_PER_LOC, N_MOD = 240, 40, 30, 40, 24, 3


def _scores(modules: np.ndarray, n_features: int) -> np.ndarray:
    """Feature scores written term by term: sum of a module's weights over the pairs a feature is in."""
    out = np.zeros((n_features, modules.shape[0]))
    p = 0
    for i in range(n_features):
        for j in range(i + 1, n_features):
            out[i] += modules[:, p]
            out[j] += modules[:, p]
            p += 1
    return out


def fabricate(seed: int = 0) -> ad.AnnData:
    """A small AnnData with localities, correlations and AMF results stored as the contract says.

    Module m has its strongest pairs among tested genes 8m..8m+5 (planted), weak noise elsewhere. Localities are
    contiguous runs of samples; obs 'disease' follows module 0's presence, 'donor' blocks the samples.
    """
    gen = np.random.default_rng(seed)
    var_names = [f"Gene{i}" for i in range(N_VARS)]
    X = gen.poisson(1.0, size=(N_OBS, N_VARS)).astype(np.float32)
    adata = ad.AnnData(
        X=X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(N_OBS)]), var=pd.DataFrame(index=var_names)
    )
    starts = np.linspace(0, N_OBS - N_PER_LOC, N_LOC).astype(int)
    indices = np.stack([np.arange(s, s + N_PER_LOC) for s in starts]).astype(np.int64)
    feature_index = np.arange(5, 5 + N_TESTED)  # tested features: Gene5..Gene34
    features = np.asarray(var_names, dtype=object)[feature_index]
    iu, ju = np.triu_indices(N_TESTED, 1)
    P = iu.size
    modules = (gen.uniform(0, 0.05, size=(N_MOD, P)) * (gen.uniform(size=(N_MOD, P)) < 0.3)).astype(np.float32)
    for m in range(N_MOD):
        planted = np.arange(8 * m, 8 * m + 6)
        mask = np.isin(iu, planted) & np.isin(ju, planted)
        modules[m, mask] = gen.uniform(0.6, 1.0, size=mask.sum())
    pos = starts / starts.max()
    presence = np.stack([pos, 1 - pos, gen.uniform(size=N_LOC) * 0.5], axis=1).astype(np.float32)
    presence[presence < 0.05] = 0.0
    values = gen.uniform(size=(N_LOC, P)).astype(np.float32)
    adata.uns["lava"] = {
        "localities": {"indices": indices, "probes": gen.normal(size=(N_LOC, 2)), "alpha": 0.0, "beta": 0.0},
        "correlations": {"values": values, "features": features, "feature_index": feature_index},
        "amf": {"modules": modules, "presence": presence, "loss": 0.1, "similarity": 0.9},
        "params": {"localities": encode_params({"n_neighbors": N_PER_LOC}), "amf": encode_params({"n_modules": 3})},
    }
    scores = np.zeros((N_VARS, N_MOD), dtype=np.float32)
    scores[feature_index] = _scores(modules.astype(np.float64), N_TESTED)
    adata.varm["lava_modules"] = scores
    adata.obsm["lava_presence"] = gen.uniform(size=(N_OBS, N_MOD)).astype(np.float32)
    # sample annotations
    disease_prob = np.interp(np.arange(N_OBS), [0, N_OBS - 1], [0.05, 0.95])
    adata.obs["disease"] = pd.Categorical(np.where(gen.uniform(size=N_OBS) < disease_prob, "ckd", "healthy"))
    adata.obs["donor"] = pd.Categorical([f"d{i // 20}" for i in range(N_OBS)])
    adata.obs["age"] = np.arange(N_OBS, dtype=np.float64) + gen.normal(size=N_OBS)
    return adata


@pytest.fixture
def adata():
    return fabricate()


def _snapshot(adata):
    return (set(adata.uns["lava"]), set(adata.varm), set(adata.obs.columns), dict(adata.uns["lava"]["params"]))


# ---------------------------------------------------------------------------------------------------------- module genes


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.5, 1.0])
def test_module_genes_matches_direct_threshold(adata, threshold):
    lava.tl.module_genes(adata, rule="score", threshold=threshold)
    got = lava.get.module_genes(adata)
    scores = adata.varm["lava_modules"].astype(np.float64)
    for m in range(N_MOD):
        expected = {
            adata.var_names[i]
            for i in range(N_VARS)
            if scores[i, m] > 0 and scores[i, m] >= threshold * scores[:, m].max()
        }
        rows = got[got["module"] == m]
        assert set(rows["feature"]) == expected
        assert list(rows["rank"]) == list(range(1, len(rows) + 1))
        assert np.all(np.diff(rows["score"].to_numpy()) <= 0)
        np.testing.assert_allclose(rows["score"], scores[adata.var_names.get_indexer(rows["feature"]), m])
    assert got["module"].dtype == np.int64
    assert lava.get.params(adata, "module_genes")["threshold"] == threshold


def test_module_genes_planted_genes_rank_first(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    got = lava.get.module_genes(adata)
    for m in range(N_MOD):
        planted = {f"Gene{5 + i}" for i in range(8 * m, 8 * m + 6)}
        assert set(got[got["module"] == m]["feature"]) == planted


def test_module_genes_warns_when_most_features_pass(adata, caplog):
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.module_genes(adata, rule="score", threshold=0.5)
    assert "keep most" not in caplog.text
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.module_genes(adata, rule="score", threshold=0.0)
    assert "keep most of their scored features" in caplog.text
    # sparse data: the tie filter leaves few scored features; all of them passing is no noise floor
    caplog.clear()
    scores = adata.varm["lava_modules"]
    scores[scores < 0.5 * scores.max(axis=0)] = 0
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.module_genes(adata, rule="score", threshold=0.0)
    assert "keep most" not in caplog.text


def test_module_genes_errors_leave_adata_unchanged(adata):
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lava.tl.module_genes(adata, threshold=1.5)
    del adata.uns["lava"]["amf"]
    with pytest.raises(KeyError, match=r"lava.tl.amf"):
        lava.tl.module_genes(adata)
    assert _snapshot(adata)[2:] == before[2:]
    assert "module_genes" not in adata.uns["lava"]


def test_module_genes_copy(adata):
    out = lava.tl.module_genes(adata, copy=True)
    assert "module_genes" in out.uns["lava"]
    assert "module_genes" not in adata.uns["lava"]


def test_module_genes_empty_module_gets_no_genes(adata):
    adata.varm["lava_modules"][:, 2] = 0
    lava.tl.module_genes(adata)
    assert set(lava.get.module_genes(adata)["module"]) == {0, 1}
    with pytest.raises(ValueError, match="module 2 has no module genes"):
        lava.tl.enrich(adata, {"a": ["Gene5", "Gene6"]}, min_size=1)


# ---------------------------------------------------------------------------------------------------------------- ORA


def _gene_sets():
    planted = {f"planted_{m}": [f"Gene{5 + i}" for i in range(8 * m, 8 * m + 6)] for m in range(N_MOD)}
    decoys = {
        "decoy_a": ["Gene0", "Gene1", "Gene9", "Gene20", "Gene30", "Gene31", "Gene33"],
        "decoy_b": [f"Gene{i}" for i in range(26, 40)],
        "outside": ["NOPE1", "NOPE2", "NOPE3"],
    }
    return {**planted, **decoys}


def test_enrich_pvalues_match_direct_hypergeom(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    sets = _gene_sets()
    lava.tl.enrich(adata, sets, min_size=1)
    res = lava.get.enrichment(adata)
    bg = set(adata.uns["lava"]["correlations"]["features"])
    N = len(bg)
    genes = lava.get.module_genes(adata)
    for _, row in res.iterrows():
        query = set(genes[genes["module"] == row["module"]]["feature"]) & bg
        gs = set(sets[row["term"]]) & bg
        k, K, n = len(query & gs), len(gs), len(query)
        assert (row["n_overlap"], row["set_size"]) == (k, K)
        assert row["overlap"] == f"{k}/{K}"
        assert row["p_value"] == pytest.approx(stats.hypergeom.sf(k - 1, N, K, n), rel=1e-10)
        expected_or = ((k + 0.5) * (N - K - n + k + 0.5)) / ((K - k + 0.5) * (n - k + 0.5))
        assert row["odds_ratio"] == pytest.approx(expected_or)
        assert set(row["genes"].split(";")) == query & gs
    # each module's top term is its planted set, and significant
    for m in range(N_MOD):
        top = res[res["module"] == m].iloc[0]
        assert top["term"] == f"planted_{m}"
        assert top["significant"]
    assert "outside" not in set(res["term"])  # no gene in the background: never tested
    assert res.groupby("module")["p_value"].apply(lambda s: s.is_monotonic_increasing).all()


def _two_programmes(adata):
    """Module 0 holds a second clique (tested genes 24-28: Gene29..Gene33) beside its planted one, as a module
    present in one population holds that population's programmes side by side."""
    modules = adata.uns["lava"]["amf"]["modules"]
    iu, ju = np.triu_indices(N_TESTED, 1)
    second = np.arange(24, 29)
    mask = np.isin(iu, second) & np.isin(ju, second)
    modules[0, mask] = np.linspace(0.6, 0.9, mask.sum())
    index = adata.uns["lava"]["correlations"]["feature_index"]
    adata.varm["lava_modules"][index] = _scores(modules.astype(np.float64), N_TESTED)
    return {f"Gene{5 + i}" for i in range(6)}, {f"Gene{29 + i}" for i in range(5)}


def _bh(p):
    """Benjamini-Hochberg written out: p_(i) m / i, then the running minimum from the largest p down."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 1.0
    for rank in range(p.size, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * p.size / rank)
        adjusted[i] = running
    return adjusted


def test_module_genes_groups_split_a_module_holding_two_programmes(adata):
    planted, second = _two_programmes(adata)
    lava.tl.module_genes(adata)
    table = lava.get.module_genes(adata)
    assert table["group"].dtype == np.int64
    zero = table[table["module"] == 0]
    assert set(zero.loc[zero["group"] == 0, "feature"]) == planted  # the larger group first
    assert set(zero.loc[zero["group"] == 1, "feature"]) == second
    for m in (1, 2):  # one clique each: one group
        assert (table.loc[table["module"] == m, "group"] == 0).all()
    lava.tl.module_genes(adata, rule="score")
    assert (lava.get.module_genes(adata)["group"] == -1).all()


def test_enrich_by_group_tests_each_group_with_bh_over_the_module(adata):
    from lava.tl._enrich import MIN_GROUP_GENES

    _, second = _two_programmes(adata)
    lava.tl.module_genes(adata)
    sets = _gene_sets() | {"second": sorted(second)}
    lava.tl.enrich(adata, sets, min_size=1)
    whole = lava.get.enrichment(adata)
    assert (whole["group"] == -1).all()
    lava.tl.enrich(adata, sets, by="group", min_size=1)
    res = lava.get.enrichment(adata)
    assert lava.get.params(adata, "enrichment")["by"] == "group"
    bg = set(adata.uns["lava"]["correlations"]["features"])
    N = len(bg)
    tested = {t: set(g) & bg for t, g in sets.items() if set(g) & bg}
    genes = lava.get.module_genes(adata)
    for m in range(N_MOD):
        rows = genes[genes["module"] == m]
        groups = sorted(g for g, n in rows["group"].value_counts().items() if n >= MIN_GROUP_GENES)
        # every (group, set) of the module in one BH family
        keys, pvals = [], []
        for g in groups:
            query = set(rows.loc[rows["group"] == g, "feature"]) & bg
            for t, gs in tested.items():
                k = len(query & gs)
                keys.append((g, t, k))
                pvals.append(stats.hypergeom.sf(k - 1, N, len(gs), len(query)))
        adjusted = _bh(pvals)
        got = res[res["module"] == m].set_index(["group", "term"])
        for (g, t, k), p, q in zip(keys, pvals, adjusted, strict=True):
            if k == 0:
                assert (g, t) not in got.index  # no shared gene: no row, but counted in the adjustment
                continue
            assert got.loc[(g, t), "p_value"] == pytest.approx(p, rel=1e-10)
            assert got.loc[(g, t), "p_adjusted"] == pytest.approx(q, rel=1e-10)
    top = res.sort_values("p_value").groupby(["module", "group"]).head(1).set_index(["module", "group"])["term"]
    assert (top[0, 0], top[0, 1], top[1, 0], top[2, 0]) == ("planted_0", "second", "planted_1", "planted_2")
    # the module's whole list holds both programmes; its top term is the larger one only
    assert whole[whole["module"] == 0].iloc[0]["term"] == "planted_0"


def test_enrich_by_group_tests_a_module_without_a_large_group_as_its_list(adata, monkeypatch, caplog):
    import lava.tl._enrich as enrich_module

    _two_programmes(adata)
    lava.tl.module_genes(adata)
    sets = _gene_sets()
    lava.tl.enrich(adata, sets, min_size=1)
    whole = lava.get.enrichment(adata)
    monkeypatch.setattr(enrich_module, "MIN_GROUP_GENES", 7)  # every group has 5 or 6 genes
    with caplog.at_level("INFO", logger="lava"):
        lava.tl.enrich(adata, sets, by="group", min_size=1)
    assert "tested as whole lists" in caplog.text
    pd.testing.assert_frame_equal(lava.get.enrichment(adata), whole)
    monkeypatch.setattr(enrich_module, "MIN_GROUP_GENES", 6)  # module 0: its 6-gene group only; 1 and 2: their group
    lava.tl.enrich(adata, sets, by="group", min_size=1)
    res = lava.get.enrichment(adata)
    assert set(map(tuple, res[["module", "group"]].drop_duplicates().to_numpy())) == {(0, 0), (1, 0), (2, 0)}


def test_enrich_by_group_needs_groups(adata):
    lava.tl.module_genes(adata, rule="score")
    before = _snapshot(adata)
    with pytest.raises(ValueError, match="by='group' needs the gene groups"):
        lava.tl.enrich(adata, _gene_sets(), by="group", min_size=1)
    with pytest.raises(ValueError, match="by must be 'module' or 'group'"):
        lava.tl.enrich(adata, _gene_sets(), by="modules", min_size=1)
    assert _snapshot(adata) == before
    # module genes stored by a lava before gene groups (no column) get the same error
    lava.tl.module_genes(adata)
    adata.uns["lava"]["module_genes"] = adata.uns["lava"]["module_genes"].drop(columns="group")
    with pytest.raises(ValueError, match=r"rerun lava\.tl\.module_genes"):
        lava.tl.enrich(adata, _gene_sets(), by="group", min_size=1)


def test_enrich_agrees_with_gseapy(adata):
    gseapy = pytest.importorskip("gseapy")
    lava.tl.module_genes(adata, threshold=0.5)
    sets = {k: v for k, v in _gene_sets().items() if k != "outside"}
    bg = [str(g) for g in adata.uns["lava"]["correlations"]["features"]]
    lava.tl.enrich(adata, sets, min_size=1)
    ours = lava.get.enrichment(adata, modules=1).set_index("term")
    query = lava.get.module_genes(adata, modules=1)["feature"].tolist()
    enr = gseapy.enrich(gene_list=query, gene_sets=sets, background=bg, outdir=None, no_plot=True)
    theirs = enr.results.set_index("Term")
    assert set(theirs.index) == set(ours.index)
    np.testing.assert_allclose(ours.loc[theirs.index, "p_value"], theirs["P-value"], rtol=1e-10)
    np.testing.assert_allclose(ours.loc[theirs.index, "odds_ratio"], theirs["Odds Ratio"], rtol=1e-10)
    assert list(ours.loc[theirs.index, "overlap"]) == list(theirs["Overlap"])
    # gseapy adjusts over terms with a hit only; ours over every tested term, so ours is never smaller
    assert np.all(ours.loc[theirs.index, "p_adjusted"].to_numpy() >= theirs["Adjusted P-value"].to_numpy() - 1e-12)


def test_enrich_background_choice_changes_the_null(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    sets = _gene_sets()
    lava.tl.enrich(adata, sets, min_size=1, background="all")
    p_all = lava.get.enrichment(adata, modules=0).set_index("term")["p_value"]
    lava.tl.enrich(adata, sets, min_size=1)
    p_tested = lava.get.enrichment(adata, modules=0).set_index("term")["p_value"]
    # planted_0 lies entirely within the tested genes: a larger background makes it look more surprising
    assert p_all["planted_0"] < p_tested["planted_0"]
    assert lava.get.params(adata, "enrichment")["n_background"] == N_TESTED
    explicit = [f"Gene{i}" for i in range(N_VARS)]
    lava.tl.enrich(adata, sets, min_size=1, background=explicit)
    np.testing.assert_allclose(lava.get.enrichment(adata, modules=0).set_index("term")["p_value"], p_all)


def test_enrich_case_insensitive_reports_adata_spelling(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    upper = {k: [g.upper() for g in v] for k, v in _gene_sets().items()}
    lava.tl.enrich(adata, upper, min_size=1)
    res = lava.get.enrichment(adata)
    top = res[res["module"] == 0].iloc[0]
    assert top["term"] == "planted_0"
    assert all(g.startswith("Gene") for g in top["genes"].split(";"))


def test_enrich_reads_gmt_offline(adata, tmp_path):
    lava.tl.module_genes(adata, threshold=0.5)
    path = tmp_path / "sets.gmt"
    path.write_text("".join(f"{k}\tdescription\t" + "\t".join(v) + "\n" for k, v in _gene_sets().items()))
    lava.tl.enrich(adata, str(path), min_size=1)
    from_file = lava.get.enrichment(adata)
    lava.tl.enrich(adata, _gene_sets(), min_size=1)
    pd.testing.assert_frame_equal(from_file, lava.get.enrichment(adata))


def test_enrich_min_size_and_bh(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    sets = _gene_sets()
    lava.tl.enrich(adata, sets, min_size=7)
    res = lava.get.enrichment(adata)
    assert res["set_size"].min() >= 7
    assert not res["term"].str.startswith("planted").any()  # 6 genes: too small
    assert lava.get.params(adata, "enrichment")["n_gene_sets_tested"] == 1  # decoy_b: 9 tested genes
    np.testing.assert_allclose(res["p_adjusted"], res["p_value"])  # a single test needs no adjustment


def test_enrich_errors_leave_adata_unchanged(adata, tmp_path):
    with pytest.raises(KeyError, match=r"lava.tl.module_genes"):
        lava.tl.enrich(adata, _gene_sets())
    lava.tl.module_genes(adata, threshold=0.5)
    before = _snapshot(adata)
    with pytest.raises(ValueError, match="unknown module 7"):
        lava.tl.enrich(adata, _gene_sets(), modules=[0, 7])
    with pytest.raises(ValueError, match="shares a gene with the background"):
        lava.tl.enrich(adata, {"x": ["ENSG0001", "ENSG0002"]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lava.tl.enrich(adata, str(tmp_path / "missing.gmt"))
    with pytest.raises(ValueError, match="'tested', 'all' or a list"):
        lava.tl.enrich(adata, _gene_sets(), background="hsapiens_gene_ensembl")
    with pytest.raises(ValueError, match="lower min_size"):
        lava.tl.enrich(adata, _gene_sets(), min_size=100)
    with pytest.raises(TypeError, match="gene_sets must be"):
        lava.tl.enrich(adata, 3)
    assert _snapshot(adata) == before
    assert "enrichment" not in adata.uns["lava"]


def test_enrich_no_hits_warns_and_stores_empty_table(adata, caplog):
    lava.tl.module_genes(adata, threshold=0.5)
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.enrich(adata, {"far": ["Gene30", "Gene31", "Gene32", "Gene33"]}, modules=0, min_size=1)
    assert "empty" in caplog.text
    assert lava.get.enrichment(adata).empty


# -------------------------------------------------------------------------------------------------------- association


def _direct_fraction(adata, category):
    idx = adata.uns["lava"]["localities"]["indices"]
    labels = adata.obs["disease"].to_numpy()
    return np.array([np.mean(labels[row] == category) for row in idx])


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_associate_matches_scipy(adata, method):
    lava.tl.associate(adata, "disease", method=method, min_presence=0.01)
    res = lava.get.association(adata)
    pres = adata.uns["lava"]["amf"]["presence"].astype(np.float64)
    assert len(res) == N_MOD * 2
    for _, row in res.iterrows():
        sel = pres[:, row["module"]] > 0.01
        frac = _direct_fraction(adata, row["category"])
        assert row["n_localities"] == sel.sum()
        pr = stats.pearsonr(pres[sel, row["module"]], frac[sel])
        sr = stats.spearmanr(pres[sel, row["module"]], frac[sel])
        assert row["pearson_r"] == pytest.approx(pr.statistic, abs=1e-10)
        assert row["pearson_p"] == pytest.approx(pr.pvalue, rel=1e-6, abs=1e-300)
        assert row["spearman_r"] == pytest.approx(sr.statistic, abs=1e-10)
        assert row["spearman_p"] == pytest.approx(sr.pvalue, rel=1e-6, abs=1e-300)
    from lava.core import benjamini_hochberg

    np.testing.assert_allclose(res["p_adjusted"], benjamini_hochberg(res[f"{method}_p"].to_numpy()))
    # disease follows module 0's regions
    m0 = res[(res["module"] == 0) & (res["category"] == "ckd")].iloc[0]
    assert m0["pearson_r"] > 0.8
    assert m0["p_adjusted"] < 1e-6


def test_associate_adjusts_spearman_by_default_so_one_locality_cannot_carry_it(adata):
    """pbmc68k_reduced's case: a module present in 5 localities, 4 saturated at 1 and one barely present, and a
    category found only in that one. Pearson is about -1 with a tiny p; the default (Spearman) is not significant."""
    presence = adata.uns["lava"]["amf"]["presence"]
    presence[:, 2] = 0.0
    presence[[0, 10, 20, 30], 2] = [0.996, 0.997, 0.998, 0.995]
    presence[35, 2] = 0.011
    idx = adata.uns["lava"]["localities"]["indices"]
    rare = np.zeros(N_OBS, dtype=bool)
    rare[idx[35][:2]] = True  # two cells of locality 35, which no other of the five holds
    assert not np.isin(idx[35][:2], idx[[0, 10, 20, 30]]).any()
    adata.obs["kind"] = pd.Categorical(np.where(rare, "rare", "common"))
    lava.tl.associate(adata, "kind")
    row = lava.get.association(adata).query("module == 2 and category == 'rare'").iloc[0]
    assert row["n_localities"] == 5
    assert row["pearson_r"] < -0.99
    assert row["pearson_p"] < 1e-4
    assert row["p_adjusted"] > 0.05  # the Spearman p-value, adjusted
    assert lava.get.params(adata, "association")["method"] == "spearman"
    lava.tl.associate(adata, "kind", method="pearson")
    assert lava.get.association(adata).query("module == 2 and category == 'rare'").iloc[0]["p_adjusted"] < 1e-3


def test_associate_numeric_uses_locality_mean(adata):
    lava.tl.associate(adata, "age")
    res = lava.get.association(adata)
    assert list(res["category"]) == ["age"] * N_MOD
    idx = adata.uns["lava"]["localities"]["indices"]
    mean_age = adata.obs["age"].to_numpy()[idx].mean(axis=1)
    pres = adata.uns["lava"]["amf"]["presence"].astype(np.float64)
    sel = pres[:, 1] > 0.01
    assert res.loc[1, "pearson_r"] == pytest.approx(stats.pearsonr(pres[sel, 1], mean_age[sel]).statistic)


def test_associate_bool_and_missing_labels(adata):
    adata.obs["is_ckd"] = (adata.obs["disease"] == "ckd").to_numpy()
    lava.tl.associate(adata, "is_ckd")
    as_bool = lava.get.association(adata)
    assert sorted(set(as_bool["category"])) == ["False", "True"]
    lava.tl.associate(adata, "disease")
    ref = lava.get.association(adata)
    np.testing.assert_allclose(
        as_bool[as_bool["category"] == "True"]["pearson_r"], ref[ref["category"] == "ckd"]["pearson_r"]
    )
    # missing labels count in no category: the fraction is over all the locality's samples
    labels = adata.obs["disease"].astype(object).to_numpy()
    labels[::3] = np.nan
    adata.obs["partial"] = pd.Categorical(labels, categories=["ckd", "healthy"])
    lava.tl.associate(adata, "partial")
    got = lava.get.association(adata, modules=0).set_index("category")
    idx = adata.uns["lava"]["localities"]["indices"]
    frac = np.array([np.mean(labels[row] == "ckd") for row in idx])
    pres = adata.uns["lava"]["amf"]["presence"][:, 0].astype(np.float64)
    sel = pres > 0.01
    assert got.loc["ckd", "pearson_r"] == pytest.approx(stats.pearsonr(pres[sel], frac[sel]).statistic)


def test_associate_few_localities_gives_nan(adata):
    adata.uns["lava"]["amf"]["presence"][:, 2] = 0
    adata.uns["lava"]["amf"]["presence"][:2, 2] = 0.5
    lava.tl.associate(adata, "disease")
    rows = lava.get.association(adata, modules=2)
    assert (rows["n_localities"] == 2).all()
    assert rows[["pearson_r", "pearson_p", "spearman_r", "spearman_p", "p_adjusted"]].isna().all().all()


def test_associate_permutations(adata):
    n_perm = 199
    lava.tl.associate(adata, "disease", permutations=n_perm, rng=1)
    res = lava.get.association(adata)
    p = res["permutation_p"].to_numpy()
    assert np.all((p >= 1 / (n_perm + 1)) & (p <= 1))
    m0 = res[(res["module"] == 0) & (res["category"] == "ckd")].iloc[0]
    assert m0["permutation_p"] == pytest.approx(1 / (n_perm + 1))  # no shuffled labelling comes close
    lava.tl.associate(adata, "disease", permutations=n_perm, rng=1)
    np.testing.assert_array_equal(lava.get.association(adata)["permutation_p"], p)  # seeded
    assert lava.get.params(adata, "association")["rng"] == 1


def test_donor_permutation_is_conservative_when_donors_cluster():
    """One patient's cells form a region where a module lives: parametric p is tiny, donor-level p is not."""
    gen = np.random.default_rng(3)
    n_donors, per_donor, n = 6, 60, 30
    E = n_donors * per_donor
    adata = ad.AnnData(X=np.zeros((E, 2), dtype=np.float32))
    adata.obs_names = [f"c{i}" for i in range(E)]
    adata.obs["donor"] = pd.Categorical([f"d{i // per_donor}" for i in range(E)])
    disease = np.array(["ckd", "ctrl", "ctrl", "ctrl", "ctrl", "ctrl"])
    adata.obs["disease"] = pd.Categorical(disease[np.arange(E) // per_donor])
    # cells of a donor are contiguous in the "embedding"; localities are windows over it
    starts = np.arange(0, E - n + 1, 6)
    indices = np.stack([np.arange(s, s + n) for s in starts]).astype(np.int64)
    donor_of = np.arange(E) // per_donor
    frac_d0 = np.array([np.mean(donor_of[row] == 0) for row in indices])
    presence = np.clip(0.1 + frac_d0 + gen.normal(0, 0.05, size=frac_d0.size), 0, 1)[:, None].astype(np.float32)
    presence = np.hstack([presence, gen.uniform(size=presence.shape).astype(np.float32)])
    adata.uns["lava"] = {
        "localities": {"indices": indices},
        "amf": {"modules": np.ones((2, 1), dtype=np.float32), "presence": presence},
    }
    lava.tl.associate(adata, "disease", permutations=500, groups="donor", rng=0)
    res = lava.get.association(adata)
    row = res[(res["module"] == 0) & (res["category"] == "ckd")].iloc[0]
    assert row["pearson_p"] < 1e-6
    # 6 donors, one with disease: 6 distinct labellings, so about 1 in 6 permutations reproduce the observed r
    assert 0.1 < row["permutation_p"] < 0.25
    assert (res["permutation_p"] >= res["pearson_p"]).all()
    assert lava.get.params(adata, "association")["groups"] == "donor"


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_donor_permutation_equals_label_permutation_among_donors(method):
    """For a per-donor label, the donor-level null is exactly: shuffle the donors' labels, recompute fractions."""
    correlation = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}[method]
    gen = np.random.default_rng(5)
    adata = fabricate(1)
    donors = adata.obs["donor"].cat.categories
    donor_label = dict(zip(donors, gen.choice(["a", "b"], size=len(donors)), strict=True))
    adata.obs["status"] = pd.Categorical(adata.obs["donor"].map(donor_label).astype(str))
    lava.tl.associate(adata, "status", method=method, permutations=50, groups="donor", rng=7)
    got = lava.get.association(adata)
    # reference: the same permutations drawn by hand
    from lava._compat import as_generator

    g = as_generator(7)
    perms = [g.permutation(len(donors)) for _ in range(50)]
    idx = adata.uns["lava"]["localities"]["indices"]
    codes = adata.obs["donor"].cat.codes.to_numpy()
    labels = np.array([donor_label[d] for d in donors])
    pres = adata.uns["lava"]["amf"]["presence"].astype(np.float64)
    for m in range(N_MOD):
        sel = pres[:, m] > 0.01
        obs = correlation(pres[sel, m], np.mean(labels[codes][idx] == "a", axis=1)[sel]).statistic
        null = [
            correlation(pres[sel, m], np.mean(labels[perm][codes][idx] == "a", axis=1)[sel]).statistic for perm in perms
        ]
        expected = (1 + np.sum(np.abs(null) >= abs(obs) - 1e-12)) / 51
        row = got[(got["module"] == m) & (got["category"] == "a")].iloc[0]
        assert row["permutation_p"] == pytest.approx(expected)


def test_donor_blocks_keep_a_within_donor_association(adata, caplog):
    """A label that varies within donors and follows the module inside every donor stays significant."""
    adata.obs["donor_mixed"] = pd.Categorical([f"d{i % 6}" for i in range(N_OBS)])  # donors spread everywhere
    with caplog.at_level("INFO", logger="lava"):
        lava.tl.associate(adata, "disease", permutations=99, groups="donor_mixed", rng=0)
    assert "permuting whole donor blocks" in caplog.text
    res = lava.get.association(adata)
    row = res[(res["module"] == 0) & (res["category"] == "ckd")].iloc[0]
    assert row["pearson_r"] > 0.8
    assert row["permutation_p"] == pytest.approx(1 / 100)


def test_associate_errors_leave_adata_unchanged(adata):
    before = _snapshot(adata)
    with pytest.raises(KeyError, match=r"available: .*'disease'"):
        lava.tl.associate(adata, "diseaze")
    with pytest.raises(KeyError, match="no column 'patient'"):
        lava.tl.associate(adata, "disease", permutations=10, groups="patient")
    with pytest.raises(ValueError, match="only used by permutation"):
        lava.tl.associate(adata, "disease", groups="donor")
    with pytest.raises(ValueError, match="method"):
        lava.tl.associate(adata, "disease", method="kendall")
    adata.obs["disease"] = adata.obs["disease"].cat.add_categories(["aki"])
    with pytest.raises(ValueError, match=r"remove_unused_categories"):
        lava.tl.associate(adata, "disease")
    adata.obs["bad"] = np.where(np.arange(N_OBS) < 3, np.nan, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        lava.tl.associate(adata, "bad")
    adata.obs["bad_int"] = pd.array([None] + [1] * (N_OBS - 1), dtype="Int64")
    with pytest.raises(ValueError, match="NaN"):
        lava.tl.associate(adata, "bad_int")
    after = _snapshot(adata)
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert after[3] == before[3]
    assert "association" not in adata.uns["lava"]


# ------------------------------------------------------------------------------------------------------------- storage


def test_results_survive_h5ad(adata, tmp_path):
    lava.tl.module_genes(adata, threshold=0.5)
    lava.tl.enrich(adata, _gene_sets(), min_size=1)
    lava.tl.associate(adata, "disease", permutations=20, groups="donor")
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    for getter in (lava.get.module_genes, lava.get.enrichment, lava.get.association):
        pd.testing.assert_frame_equal(getter(back), getter(adata), check_dtype=False)
    assert lava.get.params(back, "enrichment") == lava.get.params(adata, "enrichment")
    assert back.uns["lava"]["module_genes"]["module"].dtype == np.int64


@pytest.mark.filterwarnings("ignore:.*next minor release:UserWarning")  # anndata's zarr format notice
def test_results_survive_zarr(adata, tmp_path):
    lava.tl.module_genes(adata, threshold=0.5)
    lava.tl.enrich(adata, _gene_sets(), min_size=1)
    lava.tl.associate(adata, "age")
    adata.write_zarr(tmp_path / "a.zarr")
    back = ad.read_zarr(tmp_path / "a.zarr")
    for getter in (lava.get.module_genes, lava.get.enrichment, lava.get.association):
        pd.testing.assert_frame_equal(getter(back), getter(adata), check_dtype=False)


def test_enrich_library_name_offline_error(adata, monkeypatch):
    import gseapy

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(gseapy, "get_library", offline)
    lava.tl.module_genes(adata, threshold=0.5)
    with pytest.raises(ValueError, match=r"internet access.*\.gmt file"):
        lava.tl.enrich(adata, "GO_Biological_Process_2023")
    monkeypatch.setattr(gseapy, "get_library", lambda name, organism: _gene_sets())
    lava.tl.enrich(adata, "Fake_Library", min_size=1)
    assert lava.get.params(adata, "enrichment")["gene_sets"] == "Fake_Library"


def test_enrich_and_associate_copy(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    out = lava.tl.enrich(adata, _gene_sets(), min_size=1, copy=True)
    assert "enrichment" in out.uns["lava"]
    assert "enrichment" not in adata.uns["lava"]
    out = lava.tl.associate(adata, "disease", copy=True)
    assert "association" in out.uns["lava"]
    assert "association" not in adata.uns["lava"]


def test_rerunning_module_genes_drops_stale_enrichment(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    lava.tl.enrich(adata, _gene_sets(), min_size=1)
    lava.tl.module_genes(adata, threshold=0.2)
    with pytest.raises(KeyError, match=r"lava\.tl\.enrich"):
        lava.get.enrichment(adata)


# ------------------------------------------------------------------------------------------------------------- GO BP


def _go_bp_path():
    path = Path(os.environ.get("LAVA_DATA_DIR", ".")) / "go_bp_human.gmt"
    return path if path.is_file() else None


def _go_bp():
    """GO BP gene sets offline: lava.datasets.go_bp_human() from the cache conftest seeds (or the file itself)."""
    loader = getattr(lava.datasets, "go_bp_human", None)
    try:
        if loader is not None:
            return loader()
    except (FileNotFoundError, OSError, ValueError):
        pass
    path = _go_bp_path()
    return read_gmt(path) if path is not None else None


def test_enrich_go_bp_offline(tmp_path):
    go = _go_bp()
    if go is None:
        pytest.skip("go_bp_human.gmt is not in the data cache")
    gen = np.random.default_rng(0)
    planted_term = next(t for t, g in go.items() if "mitochondrial genome maintenance" in t)
    planted = list(dict.fromkeys(go[planted_term]))
    universe = sorted({g for genes in go.values() for g in genes} - set(planted))
    others = list(gen.choice(universe, size=1500, replace=False))
    var_names = list(gen.permutation(planted + others))
    a = ad.AnnData(X=np.zeros((3, len(var_names)), dtype=np.float32))
    a.var_names = var_names
    tested = np.arange(len(var_names))
    scores = gen.uniform(0, 0.01, size=(len(var_names), 2)).astype(np.float32)  # below 5% of the top
    scores[a.var_names.get_indexer(planted), 0] = gen.uniform(0.5, 1.0, size=len(planted))
    scores[a.var_names.get_indexer(others[:40]), 1] = gen.uniform(0.5, 1.0, size=40)  # a random gene list
    a.varm["lava_modules"] = scores
    a.uns["lava"] = {
        "correlations": {
            "features": np.asarray(var_names, dtype=object),
            "feature_index": tested,
            "feature_n_localities": np.ones(len(var_names), dtype=np.int64),  # every gene entered a locality
        },
        "amf": {"modules": np.zeros((2, 1), dtype=np.float32)},
    }
    lava.tl.module_genes(a, rule="score")
    lava.tl.enrich(a, go, min_size=10)
    res = lava.get.enrichment(a)
    top = res[res["module"] == 0].iloc[0]
    assert top["term"] == planted_term
    assert top["p_adjusted"] < 1e-3
    assert set(top["genes"].split(";")) == set(planted) & set(var_names)
    # a random gene list is not enriched for anything after adjustment (most of the time; seeded here)
    assert res[res["module"] == 1]["p_adjusted"].min() > 0.05
    if _go_bp_path() is not None:  # the GMT file itself, read offline, gives the same table
        lava.tl.enrich(a, str(_go_bp_path()), min_size=10)
        pd.testing.assert_frame_equal(lava.get.enrichment(a), res)


# ---------------------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_synthetic_modules_to_biology():
    """Synthetic data with planted modules named as genes: localities -> correlations -> AMF -> biology.

    Region m of the "simple" layout carries module m alone; obs["condition"] is "disease" with probability 0.8 in
    module 0's region; region r draws 70% of its cells from donor r % 4, so donors cluster.
    """
    from lava.datasets import planted_modules, synthetic

    adata = synthetic(1500, 40, 3, layout="simple", n_donors=4, condition_module=0, rng=0)
    adata.var_names = [f"GENE{i}" for i in range(adata.n_vars)]
    lava.tl.localities(adata, n_neighbors=100, overlap=3, optimize=False, rng=0, progress=False)
    lava.tl.correlations(adata, device="cpu", progress=False)
    lava.tl.amf(adata, 3, lr=1e-2, rng=0, device="cpu", progress=False)  # few localities: one step per epoch

    features = adata.uns["lava"]["correlations"]["features"]
    planted = planted_modules(adata, features)
    fitted = adata.uns["lava"]["amf"]["modules"].astype(np.float64)
    cos = fitted @ planted.T / np.outer(np.linalg.norm(fitted, axis=1), np.linalg.norm(planted, axis=1))
    recovered = {m: int(np.argmax(cos[m])) for m in range(3) if cos[m].max() > 0.8}
    assert len(recovered) >= 2, np.round(cos, 2)

    truth = adata.uns["synthetic"]["module_features"]
    sets = {f"planted_{k}": adata.var_names[truth[k]].tolist() for k in range(3)}
    free = adata.var_names[~truth.any(axis=0)].tolist()
    gen = np.random.default_rng(1)
    decoys = {f"decoy_{d}": gen.choice(free, 8, replace=False).tolist() for d in range(4)}
    decoys["decoy_mixed"] = [adata.var_names[truth[k]][0] for k in range(3)] + free[:5]
    # dense data: every pair has a noise-level correlation, so the 5% default keeps every gene (see module_genes)
    lava.tl.module_genes(adata, threshold=0.5)
    lava.tl.enrich(adata, {**sets, **decoys}, min_size=3)
    enr = lava.get.enrichment(adata)
    for m, k in recovered.items():
        top = enr[enr["module"] == m].iloc[0]
        assert top["term"] == f"planted_{k}"
        assert top["p_adjusted"] < 1e-3
    assert not enr[enr["term"].str.startswith("decoy")]["significant"].any()

    lava.tl.associate(adata, "condition")
    assoc = lava.get.association(adata)
    disease = assoc[assoc["category"] == "disease"].set_index("module")
    assert 0 in recovered.values(), np.round(cos, 2)  # the covariate's module
    m0 = next(m for m, k in recovered.items() if k == 0)
    # p_adjusted adjusts the Spearman p-values (the default method)
    assert disease.loc[m0, "spearman_r"] > 0.7
    assert disease.loc[m0, "pearson_r"] > 0.7
    assert disease.loc[m0, "p_adjusted"] < 1e-4
    for m in disease.index.drop(m0):
        # the other modules live where disease is rare: never a significant positive association
        assert not (disease.loc[m, "spearman_r"] > 0 and disease.loc[m, "p_adjusted"] < 0.05)

    # a donor-level label: the donor that dominates module 0's region is the only "case"; its cells cluster
    adata.obs["status"] = pd.Categorical(np.where(adata.obs["donor"] == "D0", "case", "ctrl"))
    lava.tl.associate(adata, "status", permutations=200, groups="donor", rng=0)
    case = lava.get.association(adata).query("category == 'case'").set_index("module")
    assert case.loc[m0, "pearson_p"] < 1e-6
    assert case.loc[m0, "permutation_p"] > 0.1  # 4 donors: about 1 in 4 labellings matches as well
    assert (case["permutation_p"] > case["pearson_p"]).loc[[m0]].all()


# ------------------------------------------------------------------------------- ORA background: entered features

NEVER_ENTERED = [f"Gene{i}" for i in range(30, 35)]  # tested features 25..29


def _tie_out(adata):
    """Zero every pair of the last 5 tested features in every locality, as the tie filter would."""
    i, j = np.triu_indices(N_TESTED, 1)
    corr = adata.uns["lava"]["correlations"]
    corr["values"][:, (i >= N_TESTED - 5) | (j >= N_TESTED - 5)] = 0


@pytest.mark.parametrize("stored_counts", [True, False])
def test_enrich_default_background_is_the_features_that_entered(adata, stored_counts):
    _tie_out(adata)
    corr = adata.uns["lava"]["correlations"]
    if stored_counts:  # as lava.tl.correlations stores them; else computed from the values (older results)
        corr["feature_n_localities"] = np.r_[np.full(N_TESTED - 5, N_LOC), np.zeros(5)].astype(np.int64)
    lava.tl.module_genes(adata, threshold=0.5)
    sets = {**_gene_sets(), "never_entered": [*NEVER_ENTERED, "Gene5"]}
    lava.tl.enrich(adata, sets, min_size=1)
    params = lava.get.params(adata, "enrichment")
    assert params["background"] == "entered"
    assert params["n_background"] == N_TESTED - 5
    res = lava.get.enrichment(adata)
    # a feature that never entered a locality is not in the background: the set shrinks to its one entered gene
    row = res[(res["module"] == 0) & (res["term"] == "never_entered")].iloc[0]
    assert row["set_size"] == 1
    genes = set(lava.get.module_genes(adata, modules=0)["feature"])
    n = len(genes - set(NEVER_ENTERED))
    assert row["p_value"] == pytest.approx(stats.hypergeom.sf(0, N_TESTED - 5, 1, n), rel=1e-10)
    # "tested" keeps them (and the set), "all" every gene
    lava.tl.enrich(adata, sets, min_size=1, background="tested")
    assert lava.get.params(adata, "enrichment")["n_background"] == N_TESTED
    tested = lava.get.enrichment(adata)
    assert tested[(tested["module"] == 0) & (tested["term"] == "never_entered")].iloc[0]["set_size"] == 6


def test_enrich_entered_background_empty_is_an_error(adata):
    lava.tl.module_genes(adata, threshold=0.5)
    adata.uns["lava"]["correlations"]["values"][:] = 0
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=r"'entered' background is empty.*higher tie_fraction"):
        lava.tl.enrich(adata, _gene_sets(), min_size=1)
    assert _snapshot(adata) == before


# ------------------------------------------------------------------------ association: warnings naming groups=


def _without_donor(adata):
    del adata.obs["donor"]
    return adata


def test_associate_names_a_donor_column_by_its_name(adata, caplog):
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.associate(adata, "disease")
    assert "adata.obs['donor'] looks like the donor or sample" in caplog.text
    assert "by its name, 12 groups" in caplog.text
    assert "groups='donor', permutations=1000" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lava"):  # passed: nothing to say
        lava.tl.associate(adata, "disease", permutations=9, groups="donor")
    assert caplog.text == ""


def test_associate_names_a_column_whose_groups_nest_the_annotation(adata, caplog):
    _without_donor(adata)
    adata.obs["tag"] = pd.Categorical([f"t{i // 20}" for i in range(N_OBS)])  # 12 groups, no telling name
    status = np.where(np.arange(N_OBS) // 20 == 0, "rare", np.where(np.arange(N_OBS) // 20 % 2, "a", "b"))
    adata.obs["status"] = pd.Categorical(status)  # one status per tag group: a property of the groups
    adata.obs["cluster"] = pd.Categorical([f"k{i % 4}" for i in range(N_OBS)])  # does not nest status: not named
    adata.obs["sample_id"] = pd.Categorical([f"s{i // 2}" for i in range(N_OBS)])  # 120 groups: too many
    adata.obs["batch_lists"] = pd.Series([[i % 3] for i in range(N_OBS)], index=adata.obs_names)  # not groupable
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.associate(adata, "status")
    assert "adata.obs['tag'] looks like the donor or sample" in caplog.text
    assert "12 groups, each holding one value of 'status'" in caplog.text
    assert "Categories found in a single 'tag' group ('rare')" in caplog.text
    assert "groups='tag', permutations=1000" in caplog.text
    assert "'cluster'" not in caplog.text
    assert "'sample_id'" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lava"):  # a per-cell label: no column nests it, none is named
        lava.tl.associate(adata, "cluster")
    assert "looks like the donor" not in caplog.text


def test_associate_warns_about_categories_in_few_localities(adata, caplog):
    _without_donor(adata)
    state = np.full(N_OBS, "common", dtype=object)
    state[:6] = "rare"  # in the first 2 localities only (contiguous runs of 24 samples)
    adata.obs["state"] = pd.Categorical(state)
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.associate(adata, "state")
    idx = adata.uns["lava"]["localities"]["indices"]
    n_rare = int(np.sum(np.isin(idx, np.arange(6)).any(axis=1)))
    assert n_rare < 5
    assert f"1 category of adata.obs['state'] has samples in fewer than 5 localities or 10% of the {N_LOC}" in (
        caplog.text
    )
    assert f"'rare' ({n_rare})" in caplog.text
    assert "'common'" not in caplog.text
    assert "groups=<the donor column>, permutations=1000" in caplog.text  # no candidate column to name
    assert "looks like the donor" not in caplog.text


def test_module_genes_core_rule_takes_the_features_of_the_strong_pairs(adata):
    lava.tl.module_genes(adata)  # the default: rule="core", threshold 0.5
    table = lava.get.module_genes(adata)
    modules = adata.uns["lava"]["amf"]["modules"]
    features = [str(f) for f in adata.uns["lava"]["correlations"]["features"]]
    D = len(features)
    scores = adata.varm["lava_modules"]
    for m in range(modules.shape[0]):
        positive = sorted((v for v in modules[m] if v > 0), reverse=True)
        reference = positive[min(10, len(positive)) - 1]  # the module's 10th largest value
        want, k = set(), 0
        for i in range(D):
            for j in range(i + 1, D):
                if modules[m, k] > 0 and modules[m, k] >= 0.5 * reference:
                    want |= {features[i], features[j]}
                k += 1
        got = table[table["module"] == m]
        assert set(got["feature"]) == want
        # ranked by the feature score, highest first
        ranked = scores[adata.var_names.get_indexer(got["feature"]), m]
        assert np.all(np.diff(ranked) <= 0)
        np.testing.assert_array_equal(got["rank"], np.arange(1, len(got) + 1))
    assert lava.get.params(adata, "module_genes")["rule"] == "core"
    assert lava.get.params(adata, "module_genes")["reference_rank"] == 10
    with pytest.raises(ValueError, match="rule must be"):
        lava.tl.module_genes(adata, rule="top")


def test_module_genes_reference_rank(adata):
    from lava.core.metrics import core_features

    modules = np.asarray(adata.uns["lava"]["amf"]["modules"])
    features = np.asarray(adata.uns["lava"]["correlations"]["features"]).astype(str)
    for rank in (1, 4):
        lava.tl.module_genes(adata, reference_rank=rank)
        table = lava.get.module_genes(adata)
        core = core_features(modules, features.size, reference_rank=rank)
        scores = adata.varm["lava_modules"][adata.var_names.get_indexer(features)]
        for m in range(modules.shape[0]):
            want = set(features[core[:, m] & (scores[:, m] > 0)])
            assert set(table.loc[table["module"] == m, "feature"]) == want
        assert lava.get.params(adata, "module_genes")["reference_rank"] == rank
    before = lava.get.module_genes(adata).copy()
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="reference_rank must be a positive integer"):
            lava.tl.module_genes(adata, reference_rank=bad)
    with pytest.raises(ValueError, match="rule='core' only"):
        lava.tl.module_genes(adata, rule="score", reference_rank=3)
    pd.testing.assert_frame_equal(lava.get.module_genes(adata), before)  # errors change nothing
    lava.tl.module_genes(adata, rule="score")
    assert "reference_rank" not in lava.get.params(adata, "module_genes")


def test_module_genes_counts_and_reports_shared_genes(adata, caplog):
    # module 1 gets module 0's planted clique as well: their lists share six genes of eleven or twelve
    modules = adata.uns["lava"]["amf"]["modules"]
    modules[1] = np.maximum(modules[1], modules[0])
    adata.varm["lava_modules"][adata.uns["lava"]["correlations"]["feature_index"]] = _scores(
        modules.astype(np.float64), N_TESTED
    )
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.module_genes(adata)
    table = lava.get.module_genes(adata)
    lists = {m: set(table.loc[table["module"] == m, "feature"]) for m in range(N_MOD)}
    for row in table.itertuples():  # n_shared, counted directly
        assert row.n_shared == sum(row.feature in lists[k] for k in range(N_MOD) if k != row.module)
    planted0 = {f"Gene{5 + i}" for i in range(6)}
    assert set(table.loc[(table["module"] == 1) & (table["n_shared"] == 0), "feature"]) == lists[1] - planted0
    assert table["n_shared"].dtype == np.int64
    jac = len(lists[0] & lists[1]) / len(lists[0] | lists[1])
    assert jac >= 0.5
    assert "modules 0 and 1 share 6 genes (Jaccard" in caplog.text
    assert caplog.text.count(" share ") == 1
    assert "modules 0 and 2" not in caplog.text
    assert "modules 1 and 2" not in caplog.text
    params = lava.get.params(adata, "module_genes")
    assert params["overlaps"] == [[0, 1]]
    np.testing.assert_allclose(params["overlap_jaccard"], [jac], atol=1e-4)


def test_module_genes_without_shared_genes_warns_nothing(adata, caplog):
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.module_genes(adata)
    assert " share " not in caplog.text
    assert (lava.get.module_genes(adata)["n_shared"] == 0).all()
    assert lava.get.params(adata, "module_genes")["overlaps"] == []


def test_module_genes_names_at_most_five_overlapping_pairs_in_one_warning(adata, caplog):
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.module_genes(adata, rule="score", threshold=0.0)  # every module keeps every scored feature
    assert lava.get.params(adata, "module_genes")["overlaps"] == [[0, 1], [0, 2], [1, 2]]
    overlap_lines = [r.getMessage() for r in caplog.records if "n_shared == 0" in r.getMessage()]
    assert len(overlap_lines) == 1
    assert overlap_lines[0].count(" share ") == 3
    assert "more in params" not in overlap_lines[0]
    assert (lava.get.module_genes(adata)["n_shared"] == 2).all()


def test_module_genes_overlap_warning_refers_the_rest_to_params(adata, caplog, monkeypatch):
    from lava.tl import _modules

    monkeypatch.setattr(_modules, "_OVERLAPS_LISTED", 2)
    with caplog.at_level("WARNING", logger="lava"):
        lava.tl.module_genes(adata, rule="score", threshold=0.0)
    line = next(r.getMessage() for r in caplog.records if "n_shared == 0" in r.getMessage())
    assert line.count(" share ") == 2
    assert "; 1 more in params['overlaps']" in line
