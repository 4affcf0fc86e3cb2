"""Bad input gets a clear error that names the fix, raised before anything changes (one row per case).

Each row takes a fresh AnnData at a pipeline stage, optionally breaks it, snapshots it, makes the failing call, and
compares the AnnData field by field with the snapshot. Valid but unusual input (integer and float16 X, a 1-D
embedding) and degenerate data (all correlations 0, a constant feature, duplicate points) follow the table.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest

import lava
from reliability_helpers import AMF, LOCALITIES, N_OBS, assert_adata_equal, gene_sets, pipeline, synthetic

STAGES = ("raw", "localities", "correlations", "amf", "module_genes")


@pytest.fixture(scope="module")
def stages() -> dict[str, ad.AnnData]:
    """The synthetic data after each step (copy before use)."""
    adata = synthetic()
    out = {"raw": adata.copy()}
    for step in STAGES[1:]:
        pipeline(adata, until=step) if step == "localities" else _run(adata, step)
        out[step] = adata.copy()
    return out


def _run(adata, step):
    if step == "correlations":
        lava.tl.correlations(adata, progress=False)
    elif step == "amf":
        lava.tl.amf(adata, 3, **AMF)
    elif step == "module_genes":
        lava.tl.module_genes(adata, threshold=0.4)


def _set_obsm(value):
    def mutate(a):
        a.obsm["X_umap"] = value(a.obsm["X_umap"].copy())
        return a

    return mutate


def _set_x(value):
    def mutate(a):
        a.X = value(np.asarray(a.X).copy())
        return a

    return mutate


def _duplicate_names(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's own notice about non-unique names
        a.var_names = [*a.var_names[:-1], a.var_names[0]]
    return a


def _string_layer(a):
    a.layers["labels"] = np.asarray(a.X).astype(str)
    return a


def _zero_correlations(a):
    """Every feature is 0 in 90% of the samples: in every locality of 50, a value occurs in > 75% of them."""
    X = np.zeros(a.shape, dtype=np.float32)
    gen = np.random.default_rng(1)
    for j in range(a.n_vars):
        rows = gen.choice(a.n_obs, a.n_obs // 10, replace=False)
        X[rows, j] = gen.uniform(1, 2, rows.size)
    a.X = X
    lava.tl.correlations(a, progress=False)
    return a


def _empty(_):
    return ad.AnnData(np.zeros((0, 5), dtype=np.float32), obsm={"X_umap": np.zeros((0, 2))})


def _one_dim(a):
    a.obsm["X_umap"] = a.obsm["X_umap"][:, 0]  # anndata stores it as (n_obs, 1); lava takes it as a 1-D embedding
    return a


@dataclass(frozen=True)
class Case:
    name: str
    stage: str
    call: Callable
    error: type[Exception]
    match: str
    mutate: Callable | None = None


def _pl(fn, *args, **kwargs):
    def call(a):
        try:
            fn(a, *args, show=False, **kwargs)
        finally:
            plt.close("all")

    return call


loc = lava.tl.localities
CASES = [
    # embedding (lava.tl.localities)
    Case("missing obsm key", "raw", lambda a: loc(a, basis="pca", **LOCALITIES), KeyError, "available: 'X_umap'"),
    Case(
        "embedding NaN",
        "raw",
        lambda a: loc(a, **LOCALITIES),
        ValueError,
        "NaN.*nan_to_num",
        _set_obsm(lambda z: np.where(np.arange(z.shape[0])[:, None] == 3, np.nan, z)),
    ),
    Case(
        "embedding inf",
        "raw",
        lambda a: loc(a, **LOCALITIES),
        ValueError,
        "infinite.*impute",
        _set_obsm(lambda z: np.where(np.arange(z.shape[0])[:, None] == 3, np.inf, z)),
    ),
    Case(
        "embedding of text",
        "raw",
        lambda a: loc(a, **LOCALITIES),
        TypeError,
        "real numbers",
        _set_obsm(lambda z: z.astype(str)),
    ),
    Case("0-sample embedding", "raw", lambda a: loc(a, basis="umap"), ValueError, "at least one sample", _empty),
    Case(
        "n_neighbors < 3",
        "raw",
        lambda a: loc(a, **{**LOCALITIES, "n_neighbors": 2}),
        ValueError,
        "between 3 and n_obs=600",
    ),
    Case(
        "n_neighbors > n_obs",
        "raw",
        lambda a: loc(a, **{**LOCALITIES, "n_neighbors": N_OBS + 1}),
        ValueError,
        "smaller n_neighbors",
    ),
    Case(
        "n_neighbors not an integer",
        "raw",
        lambda a: loc(a, **{**LOCALITIES, "n_neighbors": 50.5}),
        TypeError,
        "integer",
    ),
    Case("overlap 0", "raw", lambda a: loc(a, **{**LOCALITIES, "overlap": 0}), ValueError, "> 0"),
    Case("overlap < 0", "raw", lambda a: loc(a, **{**LOCALITIES, "overlap": -1.0}), ValueError, "> 0"),
    Case("overlap NaN", "raw", lambda a: loc(a, **{**LOCALITIES, "overlap": float("nan")}), ValueError, "finite"),
    Case(
        "l > n_obs",
        "raw",
        lambda a: loc(a, **{**LOCALITIES, "n_neighbors": 3, "overlap": 5.0}),
        ValueError,
        "lower overlap",
    ),
    Case("maxfun < 5", "raw", lambda a: loc(a, **{**LOCALITIES, "maxfun": 2}), ValueError, "maxfun must be >= 5"),
    Case(
        "localities on a view",
        "raw",
        lambda a: loc(a, **LOCALITIES),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[: N_OBS // 2],
    ),
    Case(
        "neighborhood_retention on a view",
        "localities",
        lambda a: lava.tl.neighborhood_retention(a, n_samples=20),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[: N_OBS // 2],
    ),
    # data (lava.tl.correlations)
    Case(
        "data NaN",
        "localities",
        lambda a: lava.tl.correlations(a, progress=False),
        ValueError,
        "nan_to_num",
        _set_x(lambda x: np.where(np.arange(x.shape[0])[:, None] == 5, np.nan, x)),
    ),
    Case(
        "data inf",
        "localities",
        lambda a: lava.tl.correlations(a, progress=False),
        ValueError,
        "infinite",
        _set_x(lambda x: np.where(np.arange(x.shape[0])[:, None] == 5, -np.inf, x)),
    ),
    Case(
        "string layer",
        "localities",
        lambda a: lava.tl.correlations(a, layer="labels"),
        TypeError,
        "not numeric; pass layer=",
        _string_layer,
    ),
    Case("missing layer", "localities", lambda a: lava.tl.correlations(a, layer="counts"), KeyError, "available: none"),
    Case(
        "layer and use_raw",
        "localities",
        lambda a: lava.tl.correlations(a, layer="x", use_raw=True),
        ValueError,
        "not both",
    ),
    Case(
        "use_raw without raw",
        "localities",
        lambda a: lava.tl.correlations(a, use_raw=True),
        ValueError,
        "adata.raw is None",
    ),
    Case(
        "unknown features",
        "localities",
        lambda a: lava.tl.correlations(a, features=["g0001", "CD3E"]),
        KeyError,
        r"not in var_names, e.g. \['CD3E'\]",
    ),
    Case(
        "one feature",
        "localities",
        lambda a: lava.tl.correlations(a, features=["g0001"]),
        ValueError,
        "at least 2 features",
    ),
    Case(
        "no feature in mask",
        "localities",
        lambda a: lava.tl.correlations(a, features=np.zeros(20, bool)),
        ValueError,
        "at least 2 features",
    ),
    Case(
        "features column missing",
        "localities",
        lambda a: lava.tl.correlations(a, features="highly_variable"),
        KeyError,
        "no column 'highly_variable'",
    ),
    Case(
        "duplicate var_names",
        "localities",
        lambda a: lava.tl.correlations(a, progress=False),
        ValueError,
        "var_names_make_unique",
        _duplicate_names,
    ),
    Case("tie_fraction 0", "localities", lambda a: lava.tl.correlations(a, tie_fraction=0), ValueError, r"\(0, 1\]"),
    Case(
        "correlations on a view",
        "localities",
        lambda a: lava.tl.correlations(a),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[:, :10],
    ),
    Case(
        "localities stored for other samples",
        "localities",
        lambda a: lava.tl.correlations(a),
        ValueError,
        "rerun lava.tl.localities",
        lambda a: a[: N_OBS // 2].copy(),
    ),
    # steps out of order, unknown key
    Case(
        "correlations before localities",
        "raw",
        lambda a: lava.tl.correlations(a),
        KeyError,
        r"lava.tl.localities\(adata\)",
    ),
    Case(
        "amf before correlations", "localities", lambda a: lava.tl.amf(a, 3), KeyError, r"lava.tl.correlations\(adata\)"
    ),
    Case(
        "selection before correlations",
        "localities",
        lambda a: lava.tl.select_n_modules(a, [2]),
        KeyError,
        r"lava.tl.correlations\(adata\)",
    ),
    Case(
        "module_genes before amf", "correlations", lambda a: lava.tl.module_genes(a), KeyError, r"lava.tl.amf\(adata\)"
    ),
    Case(
        "enrich before module_genes",
        "amf",
        lambda a: lava.tl.enrich(a, {"s": ["g0001"]}),
        KeyError,
        r"lava.tl.module_genes\(adata\)",
    ),
    Case(
        "associate before amf",
        "correlations",
        lambda a: lava.tl.associate(a, "condition"),
        KeyError,
        r"lava.tl.amf\(adata\)",
    ),
    Case(
        "refine_presence before amf",
        "correlations",
        lambda a: lava.tl.refine_presence(a),
        KeyError,
        r"lava.tl.amf\(adata\)",
    ),
    Case("pl.modules before amf", "correlations", _pl(lava.pl.modules), KeyError, r"lava.tl.amf\(adata\)"),
    Case("pl.module_genes before amf", "correlations", _pl(lava.pl.module_genes, 0), KeyError, "lava.tl.amf"),
    Case("pl.locality before amf", "correlations", _pl(lava.pl.locality, 0), KeyError, "lava.tl.amf"),
    Case(
        "pl.selection before select_n_modules",
        "amf",
        _pl(lava.pl.selection),
        KeyError,
        r"lava.tl.select_n_modules\(adata\)",
    ),
    Case("pl.enrichment before enrich", "module_genes", _pl(lava.pl.enrichment), KeyError, "lava.tl.enrich"),
    Case(
        "key that does not exist",
        "amf",
        lambda a: lava.tl.amf(a, 3, key="other"),
        KeyError,
        r"\(lava keys present: 'lava'; pass key=...\)",
    ),
    Case("key for plots that does not exist", "amf", _pl(lava.pl.modules, key="other"), KeyError, "pass key="),
    Case(
        "from_selection without selection",
        "amf",
        lambda a: lava.tl.amf(a, from_selection=3),
        KeyError,
        "select_n_modules",
    ),
    # AMF arguments
    Case("n_modules 0", "correlations", lambda a: lava.tl.amf(a, 0), ValueError, "n_modules"),
    Case("n_modules > l", "correlations", lambda a: lava.tl.amf(a, 10_000), ValueError, "n_modules"),
    Case("n_modules not an integer", "correlations", lambda a: lava.tl.amf(a, 2.5), ValueError, "must be an integer"),
    Case("n_runs 0", "correlations", lambda a: lava.tl.amf(a, 3, n_runs=0), ValueError, "n_runs"),
    Case("keep unknown", "correlations", lambda a: lava.tl.amf(a, 3, keep="best"), ValueError, "keep must be"),
    Case("nu 0", "correlations", lambda a: lava.tl.amf(a, 3, nu=0), ValueError, "nu"),
    Case("nu < 0", "correlations", lambda a: lava.tl.amf(a, 3, nu=-1.0), ValueError, "nu"),
    Case("gamma < 0", "correlations", lambda a: lava.tl.amf(a, 3, gamma=-1e-4), ValueError, "gamma"),
    Case("lr 0", "correlations", lambda a: lava.tl.amf(a, 3, lr=0), ValueError, "lr"),
    Case("lr < 0", "correlations", lambda a: lava.tl.amf(a, 3, lr=-0.01), ValueError, "lr"),
    Case("batch_size 0", "correlations", lambda a: lava.tl.amf(a, 3, batch_size=0), ValueError, "batch_size"),
    Case(
        "amf on a view",
        "correlations",
        lambda a: lava.tl.amf(a, 3, **AMF),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[:, :],
    ),
    Case(
        "amf after subsetting features",
        "correlations",
        lambda a: lava.tl.amf(a, 3, **AMF),
        ValueError,
        "rerun lava.tl.correlations",
        lambda a: a[:, :10].copy(),
    ),
    Case(
        "amf after subsetting samples",
        "correlations",
        lambda a: lava.tl.amf(a, 3, **AMF),
        ValueError,
        "rerun lava.tl.localities",
        lambda a: a[: N_OBS // 2].copy(),
    ),
    Case(
        "select_n_modules on a view",
        "correlations",
        lambda a: lava.tl.select_n_modules(a, [2], n_runs=1, max_epochs=2, progress=False),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[:, :],
    ),
    Case(
        "refine_presence on a view",
        "amf",
        lambda a: lava.tl.refine_presence(a, max_epochs=2, progress=False),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[:, :],
    ),
    Case(
        "module_genes on a view",
        "amf",
        lambda a: lava.tl.module_genes(a),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[:, :],
    ),
    Case(
        "enrich on a view",
        "module_genes",
        lambda a: lava.tl.enrich(a, gene_sets(a), min_size=2),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[:, :],
    ),
    Case(
        "associate on a view",
        "amf",
        lambda a: lava.tl.associate(a, "condition"),
        ValueError,
        r"adata.copy\(\)",
        lambda a: a[:, :],
    ),
    Case(
        "select_n_modules M > l",
        "correlations",
        lambda a: lava.tl.select_n_modules(a, [2, 10_000]),
        ValueError,
        "between 1 and the number of localities",
    ),
    Case(
        "select_n_modules unknown option",
        "correlations",
        lambda a: lava.tl.select_n_modules(a, [2], alpha=1),
        TypeError,
        "nu, gamma, lr",
    ),
    Case(
        "refine_presence after subsetting samples",
        "amf",
        lambda a: lava.tl.refine_presence(a, max_epochs=2, progress=False),
        ValueError,
        "rerun lava.tl.localities",
        lambda a: a[: N_OBS // 2].copy(),
    ),
    Case("refine_presence tau 0", "amf", lambda a: lava.tl.refine_presence(a, tau=0), ValueError, "tau"),
    Case(
        "all correlations 0: amf",
        "localities",
        lambda a: lava.tl.amf(a, 3),
        ValueError,
        "nothing to fit.*detected in more than 25%.*higher tie_fraction",
        _zero_correlations,
    ),
    # biology
    Case(
        "gene sets with no overlap",
        "module_genes",
        lambda a: lava.tl.enrich(a, {"s": ["CD3E", "MS4A1"]}),
        ValueError,
        "shares a gene with the background.*identifier type",
    ),
    Case("gene sets empty", "module_genes", lambda a: lava.tl.enrich(a, {}), ValueError, "gene"),
    Case("groupby missing", "amf", lambda a: lava.tl.associate(a, "cell_type"), KeyError, "region"),
    Case(
        "groups missing",
        "amf",
        lambda a: lava.tl.associate(a, "condition", permutations=5, groups="batch"),
        KeyError,
        "donor",
    ),
    Case("module_genes threshold < 0", "amf", lambda a: lava.tl.module_genes(a, threshold=-1), ValueError, "threshold"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_raises_before_changing_anything(case, stages):
    adata = stages[case.stage].copy()
    if case.mutate is not None:
        adata = case.mutate(adata)
    was_view = adata.is_view
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Variable names are not unique", UserWarning)  # the duplicate-names row
        before = adata.copy()
    with pytest.raises(case.error, match=case.match):
        case.call(adata)
    assert adata.is_view == was_view
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Variable names are not unique", UserWarning)
        assert_adata_equal(before, adata.copy() if was_view else adata)


def test_errors_list_what_exists(stages):
    """The messages name what is available, so the fix is one edit away."""
    adata = stages["raw"].copy()
    adata.obsm["X_pca"] = np.zeros((adata.n_obs, 3))
    with pytest.raises(KeyError, match=r"available: 'X_umap', 'X_pca'\. Pass basis="):
        lava.tl.localities(adata, basis="X_tsne")
    adata = stages["amf"].copy()
    with pytest.raises(KeyError) as err:
        lava.tl.associate(adata, "cell_type")
    assert all(name in str(err.value) for name in ("region", "donor", "condition"))


# ---- valid but unusual input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "convert"),
    [
        ("int32", lambda x: np.round(x * 4).astype(np.int32)),
        ("int64", lambda x: np.round(x * 4).astype(np.int64)),
        ("uint8", lambda x: np.round(x * 4 - (x * 4).min()).astype(np.uint8)),
        ("float16", lambda x: x.astype(np.float16)),
        ("bool", lambda x: x > np.median(x, axis=0)),
    ],
)
def test_integer_and_float16_x_match_float64(name, convert, stages):
    """Any numeric X gives the correlations of the same numbers in float64."""
    adata = stages["localities"].copy()
    adata.X = convert(np.asarray(adata.X))
    reference = adata.copy()
    reference.X = np.asarray(adata.X, dtype=np.float64)
    lava.tl.correlations(adata, progress=False)
    lava.tl.correlations(reference, progress=False)
    values = adata.uns["lava"]["correlations"]["values"]
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, reference.uns["lava"]["correlations"]["values"], atol=1e-6)
    assert values.any()


def test_one_dimensional_embedding(stages):
    """A 1-D embedding (anndata keeps it as n_obs x 1) is valid: localities are intervals of the line."""
    adata = _one_dim(stages["raw"].copy())
    assert adata.obsm["X_umap"].shape == (N_OBS, 1)
    lava.tl.localities(adata, **LOCALITIES)
    indices = adata.uns["lava"]["localities"]["indices"]
    z = adata.obsm["X_umap"][:, 0]
    for row in indices:  # the n nearest points of a probe on a line lie between the row's extremes
        inside = (z >= z[row].min()) & (z <= z[row].max())
        assert inside.sum() == row.size


def test_view_with_copy_true_works(stages):
    """Views are refused in place (storing would detach them), but copy=True returns a new AnnData."""
    view = stages["raw"].copy()[: N_OBS // 2]
    out = lava.tl.localities(view, **LOCALITIES, copy=True)
    assert view.is_view
    assert "lava" not in view.uns
    assert out.uns["lava"]["localities"]["indices"].max() < N_OBS // 2


# ---- degenerate data that is valid ---------------------------------------------------------------------------


def test_all_correlations_zero_says_so(stages, caplog):
    adata = stages["localities"].copy()
    with caplog.at_level(logging.WARNING, logger="lava"):
        _zero_correlations(adata)
    values = adata.uns["lava"]["correlations"]["values"]
    assert not values.any()
    assert np.isfinite(values).all()
    assert "every locality correlation is 0" in caplog.text
    assert "detected in more than 25%" in caplog.text  # names a fix
    assert "higher tie_fraction" in caplog.text


def test_one_constant_feature(stages):
    """A constant feature's pairs are 0 (not NaN) and the other pairs do not change."""
    adata = stages["localities"].copy()
    X = np.asarray(adata.X).copy()
    X[:, 0] = 2.5
    adata.X = X
    lava.tl.correlations(adata, progress=False)
    values = adata.uns["lava"]["correlations"]["values"]
    assert np.isfinite(values).all()
    i, j = lava.core.pair_indices(adata.n_vars)
    assert not values[:, (i == 0) | (j == 0)].any()
    rest = adata.copy()
    lava.tl.correlations(rest, features=list(adata.var_names[1:]), progress=False)
    np.testing.assert_array_equal(values[:, (i != 0) & (j != 0)], rest.uns["lava"]["correlations"]["values"])


def test_duplicate_points_in_embedding(stages):
    """Every point twice: placement still works, centralities are finite with mean 1, localities are sets."""
    base = stages["raw"].copy()[: N_OBS // 2].copy()
    adata = ad.concat([base, base], index_unique="-")
    assert adata.n_obs == N_OBS
    lava.tl.localities(adata, **LOCALITIES)
    indices = adata.uns["lava"]["localities"]["indices"]
    assert all(np.unique(row).size == row.size for row in indices)
    for name in ("lava_neighborhood_centrality", "lava_locality_centrality"):
        c = adata.obs[name].to_numpy()
        assert np.isfinite(c).all()
        assert c.mean() == pytest.approx(1.0)
    lava.tl.correlations(adata, progress=False)
    assert np.isfinite(adata.uns["lava"]["correlations"]["values"]).all()


def test_use_raw_scores_land_on_the_right_genes(stages):
    """Correlations of adata.raw (more genes than var): feature scores go to the var rows of the same genes."""
    adata = stages["localities"].copy()
    adata.raw = adata
    adata = adata[:, 5:].copy()  # var keeps 15 genes, raw all 20
    lava.tl.correlations(adata, use_raw=True, progress=False)
    lava.tl.amf(adata, 3, **AMF)
    modules = adata.uns["lava"]["amf"]["modules"]
    expected = lava.core.feature_scores(modules, adata.raw.n_vars)[5:]
    np.testing.assert_allclose(adata.varm["lava_modules"], expected, rtol=1e-6)
