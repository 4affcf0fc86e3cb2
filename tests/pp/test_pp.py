from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import lava

MATCHED = [
    "MT-CO1", "MT-ND4L", "mt-Nd1", "RPL3", "RPL3L", "RPS4X", "RPS4Y1", "RPL36AL", "RPLP0", "RPSA", "RPL10A",
    "RPL7L1", "RPL22L1", "Rps27a", "MRPL12", "MRPS18C", "Mrpl3",
]  # fmt: skip
UNMATCHED = ["RPS6KA1", "RPS6KB2", "RPL34-AS1", "RPS19BP1", "CD3E", "MTOR", "MT1A", "RPP30", "MRPL", "XRPL3"]


@pytest.fixture
def logdata(pbmc):
    """pbmc68k_reduced's log-normalised raw data (700 x 765, CSR), with MT-/RP genes among the genes."""
    return pbmc.raw.to_adata()


def test_mito_ribo_mask_matches_gene_families():
    mask = lava.pp.mito_ribo_mask(MATCHED + UNMATCHED)
    np.testing.assert_array_equal(mask, [True] * len(MATCHED) + [False] * len(UNMATCHED))
    assert mask.dtype == bool
    only_mito = lava.pp.mito_ribo_mask(["MT-CO1", "RPL3", "MRPL12"], ribo=False, mito_ribo=False)
    np.testing.assert_array_equal(only_mito, [True, False, False])
    only_ribo = lava.pp.mito_ribo_mask(["MT-CO1", "RPL3", "MRPL12"], mito=False, mito_ribo=False)
    np.testing.assert_array_equal(only_ribo, [False, True, False])
    none = lava.pp.mito_ribo_mask(["MT-CO1"], mito=False, ribo=False, mito_ribo=False)
    np.testing.assert_array_equal(none, [False])


def _toy(names):
    X = np.arange(4 * len(names), dtype=np.float32).reshape(4, len(names))
    return ad.AnnData(X=X, var=pd.DataFrame(index=pd.Index(names)))


def test_filter_mito_ribo_in_place_and_copy():
    names = ["CD3E", "MT-CO1", "RPS6KA1", "RPL3", "MRPS5", "GAPDH"]
    adata = _toy(names)
    out = lava.pp.filter_mito_ribo(adata, copy=True)
    assert list(out.var_names) == ["CD3E", "RPS6KA1", "GAPDH"]
    np.testing.assert_array_equal(out.X, adata.X[:, [0, 2, 5]])
    assert adata.n_vars == 6  # copy=True leaves the input alone
    assert lava.pp.filter_mito_ribo(adata) is None
    assert list(adata.var_names) == ["CD3E", "RPS6KA1", "GAPDH"]
    np.testing.assert_array_equal(adata.X, out.X)
    keep_mito = lava.pp.filter_mito_ribo(_toy(names), mito=False, copy=True)
    assert "MT-CO1" in keep_mito.var_names
    assert "RPL3" not in keep_mito.var_names
    with pytest.raises(ValueError, match="nothing would be left"):
        lava.pp.filter_mito_ribo(_toy(["MT-CO1", "RPL3"]))


def test_drop_genes_prefixes_and_regex():
    names = ["CD3E", "MT-CO1", "mt-Nd1", "RPS6KA1", "RPL3", "MRPS5", "GAPDH"]
    out = lava.pp.drop_genes(_toy(names), copy=True)
    # plain prefixes, as in many tutorials: also drops the RPS6KA1 kinase
    assert list(out.var_names) == ["CD3E", "GAPDH"]
    out = lava.pp.drop_genes(_toy(names), "MT-", case_sensitive=True, copy=True)
    assert list(out.var_names) == ["CD3E", "mt-Nd1", "RPS6KA1", "RPL3", "MRPS5", "GAPDH"]
    out = lava.pp.drop_genes(_toy(names), [r"RP[SL]\d+$"], regex=True, copy=True)
    assert list(out.var_names) == ["CD3E", "MT-CO1", "mt-Nd1", "RPS6KA1", "MRPS5", "GAPDH"]
    adata = _toy(names)
    assert lava.pp.drop_genes(adata, ("GAP",)) is None
    assert "GAPDH" not in adata.var_names
    assert adata.n_vars == 6
    with pytest.raises(ValueError, match="regular expressions"):
        lava.pp.drop_genes(_toy(names), ["("], regex=True)
    with pytest.raises(ValueError, match="non-empty"):
        lava.pp.drop_genes(_toy(names), [])
    with pytest.raises(ValueError, match="every feature"):
        lava.pp.drop_genes(_toy(names), [".*"], regex=True)
    with pytest.raises(ValueError, match="non-empty"):
        lava.pp.drop_genes(_toy(names), [""])


def test_select_features_matches_scanpy_without_mito_ribo(logdata):
    excluded = lava.pp.mito_ribo_mask(logdata.var_names)
    assert excluded.sum() > 5
    # reference: scanpy on the data without those genes
    ref = logdata[:, ~excluded].copy()
    sc.pp.highly_variable_genes(ref, n_top_genes=200, flavor="seurat")
    out = lava.pp.select_features(logdata, 200, copy=True)
    selected = out.var_names[out.var["highly_variable"].to_numpy()]
    assert set(selected) == set(ref.var_names[ref.var["highly_variable"].to_numpy()])
    assert not out.var["highly_variable"].to_numpy()[excluded].any()
    rank = out.var["highly_variable_rank"].to_numpy()
    assert rank.dtype == np.int64
    assert sorted(rank[rank >= 0]) == list(range(len(selected)))
    assert (rank[~out.var["highly_variable"].to_numpy()] == -1).all()
    # rank 0 is the most dispersed selected gene
    disp = ref.var["dispersions_norm"]
    assert out.var_names[rank == 0][0] == disp[ref.var["highly_variable"]].idxmax()
    assert "highly_variable" not in logdata.var  # copy=True


def test_select_features_exclusion_changes_the_choice(logdata):
    # make a ribosomal gene the most variable one: it is selected only without the exclusion
    adata = logdata.copy()
    X = adata.X.toarray()
    j = adata.var_names.get_loc("RPL39")
    X[:, j] = np.where(np.arange(adata.n_obs) % 10 == 0, 3.0, 0.0)  # rare, high values: large dispersion
    adata.X = sparse.csr_matrix(X)
    kept = lava.pp.select_features(adata, 50, exclude_mito_ribo=False, copy=True)
    assert kept.var.loc["RPL39", "highly_variable"]
    dropped = lava.pp.select_features(adata, 50, copy=True)
    assert not dropped.var.loc["RPL39", "highly_variable"]
    assert dropped.var["highly_variable"].sum() == 50


def test_select_features_options(logdata):
    adata = logdata.copy()
    assert lava.pp.select_features(adata, 30, key_added="lava_features") is None
    assert adata.var["lava_features"].sum() == 30
    assert "lava_features_rank" in adata.var
    sub = lava.pp.select_features(logdata, 30, subset=True, copy=True)
    assert sub.n_vars == 30
    assert sub.var["highly_variable"].all()
    # more genes asked for than remain: all remaining genes
    small = logdata[:, :40].copy()
    n_left = int((~lava.pp.mito_ribo_mask(small.var_names)).sum())
    out = lava.pp.select_features(small, 1000, copy=True)
    assert out.var["highly_variable"].sum() == n_left
    # layers and batches are passed through to scanpy
    adata.layers["log"] = adata.X.copy()
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) < 350, "a", "b")
    with_layer = lava.pp.select_features(adata, 30, layer="log", batch_key="batch", copy=True)
    assert with_layer.var["highly_variable"].sum() >= 30


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_top": 0}, ValueError, "n_top"),
        ({"n_top": 2.5}, ValueError, "n_top"),
        ({"layer": "counts"}, KeyError, "layer"),
        ({"batch_key": "nope"}, KeyError, "batch_key"),
        ({"key_added": ""}, TypeError, "key_added"),
    ],
)
def test_select_features_validation(logdata, kwargs, error, match):
    args = {"n_top": 10, **kwargs}
    n_top = args.pop("n_top")
    with pytest.raises(error, match=match):
        lava.pp.select_features(logdata, n_top, **args)
    assert "highly_variable" not in logdata.var


def test_select_features_on_synthetic_counts():
    adata = lava.datasets.synthetic(800, 60, 3, sparsity=0.4, rng=0)
    lava.pp.select_features(adata, 20)
    assert adata.var["highly_variable"].sum() == 20
