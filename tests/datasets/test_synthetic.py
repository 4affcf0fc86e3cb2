from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats

import lava
from lava.datasets import _synthetic


@pytest.fixture(scope="module")
def syn():
    return lava.datasets.synthetic(3000, 120, 6, rng=0)


def _region_locality(adata, region: int, n: int = 300) -> np.ndarray:
    """The n samples of a region nearest to its centre (all of them when it has fewer)."""
    Z = adata.obsm["X_umap"]
    centre = adata.uns["synthetic"]["region_centers"][region]
    inside = np.flatnonzero(adata.obs["region"].cat.codes.to_numpy() == region)
    return inside[np.argsort(((Z[inside] - centre) ** 2).sum(axis=1))[:n]]


def _module_strength(X, module_features, locality) -> tuple[np.ndarray, float]:
    """Mean |Spearman| over each module's pairs, and over pairs of features in no module (scipy reference)."""
    Xl = X[locality]
    Xl = Xl.toarray() if sparse.issparse(Xl) else Xl
    rho = np.abs(stats.spearmanr(Xl).statistic)
    per_module = []
    for member in module_features:
        idx = np.flatnonzero(member)
        per_module.append(rho[np.ix_(idx, idx)][np.triu_indices(idx.size, 1)].mean())
    free = np.flatnonzero(~module_features.any(axis=0))
    background = rho[np.ix_(free, free)][np.triu_indices(free.size, 1)].mean()
    return np.array(per_module), background


def test_shapes_and_annotations(syn):
    assert syn.shape == (3000, 120)
    assert isinstance(syn.X, np.ndarray)
    assert syn.X.dtype == np.float32
    assert syn.obsm["X_umap"].shape == (3000, 2)
    assert syn.obsm["X_umap"].dtype == np.float32
    assert list(syn.var_names[:3]) == ["g0000", "g0001", "g0002"]
    assert syn.obs_names.is_unique
    for col in ("region", "donor", "condition"):
        assert isinstance(syn.obs[col].dtype, pd.CategoricalDtype)
    assert list(syn.obs["condition"].cat.categories) == ["control", "disease"]
    truth = syn.uns["synthetic"]
    assert truth["module_features"].shape == (6, 120)
    assert truth["module_features"].dtype == bool
    np.testing.assert_array_equal(truth["region_modules"], lava.datasets.default_layout(6))
    assert list(truth["region_names"]) == list(syn.obs["region"].cat.categories)
    assert truth["region_sizes"].sum() == 3000
    np.testing.assert_array_equal(syn.obs["region"].value_counts(sort=False).to_numpy(), truth["region_sizes"])
    # var["module"] agrees with module_features; modules are disjoint blocks of module_size features
    module = syn.var["module"].to_numpy()
    assert module.dtype == np.int64
    size = truth["params"]["module_size"]
    assert size == 120 // 12
    for m in range(6):
        np.testing.assert_array_equal(truth["module_features"][m], module == m)
        assert (module == m).sum() == size
    assert truth["module_features"].sum(axis=0).max() == 1
    assert truth["params"]["seed"] == 0


def test_default_layout_properties():
    layout = lava.datasets.default_layout(6)
    sets = [set(np.flatnonzero(r)) for r in layout]
    assert sets == [{0}, {1}, {2}, {4}, {5}, {2, 3}, {0, 4}, {1}, set()]
    assert sum(len(s) == 0 for s in sets) == 1
    assert any(len(s) == 2 for s in sets)
    assert (layout.sum(axis=0) >= 2).sum() >= 2  # modules that recur in several regions
    # module 3 only ever occurs with module 2, and module 2 also occurs alone
    assert all(2 in s for s in sets if 3 in s)
    assert {2} in sets
    assert layout.any(axis=0).all()  # every module is planted somewhere
    for m in range(1, 9):
        lay = lava.datasets.default_layout(m)
        assert lay.shape[1] == m
        assert lay.any(axis=0).all()
        assert (~lay.any(axis=1)).sum() == 1
    with pytest.raises(ValueError, match="n_modules"):
        lava.datasets.default_layout(0)


def test_regions_are_separated_blobs(syn):
    truth = syn.uns["synthetic"]
    Z = syn.obsm["X_umap"].astype(np.float64)
    centers = truth["region_centers"]
    codes = syn.obs["region"].cat.codes.to_numpy()
    nearest = np.argmin(((Z[:, None, :] - centers[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == codes).mean() > 0.995
    spreads = np.array([Z[codes == r].std(axis=0).mean() for r in range(len(centers))])
    assert spreads.max() / spreads.min() > 1.3  # densities vary
    assert truth["region_sizes"].max() / truth["region_sizes"].min() > 1.3  # sizes vary


@pytest.mark.parametrize(("sparsity", "low"), [(0.0, 0.65), (0.5, 0.4)])
def test_module_signal_in_localities(sparsity, low):
    adata = lava.datasets.synthetic(3000, 96, 6, sparsity=sparsity, rng=1)
    truth = adata.uns["synthetic"]
    for r, carried in enumerate(truth["region_modules"]):
        strength, background = _module_strength(adata.X, truth["module_features"], _region_locality(adata, r))
        assert (strength[carried] > low).all(), (r, strength)
        assert (strength[carried] < 0.95).all()
        assert (strength[~carried] < 0.12).all(), (r, strength)
        assert background < 0.12


def test_sparsity_is_counts_like():
    adata = lava.datasets.synthetic(2000, 80, 4, sparsity=0.6, rng=3)
    assert sparse.isspmatrix_csr(adata.X) or isinstance(adata.X, sparse.csr_array)
    assert adata.X.dtype == np.float32
    dense = adata.X.toarray()
    assert abs((dense == 0).mean() - 0.6) < 0.05
    counts = np.expm1(dense.astype(np.float64))
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3 * counts.max())
    assert (dense >= 0).all()
    as_dense = lava.datasets.synthetic(2000, 80, 4, sparsity=0.6, rng=3, dense=True)
    assert isinstance(as_dense.X, np.ndarray)
    np.testing.assert_array_equal(as_dense.X, dense)


def test_dense_flag():
    dense = lava.datasets.synthetic(400, 30, 2, rng=0)
    csr = lava.datasets.synthetic(400, 30, 2, dense=False, rng=0)
    assert sparse.issparse(csr.X)
    assert csr.X.format == "csr"
    np.testing.assert_array_equal(csr.X.toarray(), dense.X)
    assert csr.uns["synthetic"]["params"]["dense"] is False


def test_deterministic_given_rng():
    a = lava.datasets.synthetic(600, 40, 2, sparsity=0.3, rng=7)
    b = lava.datasets.synthetic(600, 40, 2, sparsity=0.3, rng=7)
    c = lava.datasets.synthetic(600, 40, 2, sparsity=0.3, rng=8)
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obsm["X_umap"], b.obsm["X_umap"])
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert (a.X != c.X).nnz > 0
    # a Generator works, and the seed drawn from it is recorded
    d = lava.datasets.synthetic(600, 40, 2, rng=np.random.default_rng(5))
    e = lava.datasets.synthetic(600, 40, 2, rng=d.uns["synthetic"]["params"]["seed"])
    np.testing.assert_array_equal(d.X, e.X)
    # the embedding does not depend on the feature model
    f = lava.datasets.synthetic(600, 40, 2, sparsity=0.0, rng=7)
    np.testing.assert_array_equal(a.obsm["X_umap"], f.obsm["X_umap"])


def test_chunked_generation(monkeypatch):
    monkeypatch.setattr(_synthetic, "_CHUNK", 250)
    for sparsity in (0.0, 0.4):
        adata = lava.datasets.synthetic(1800, 48, 3, sparsity=sparsity, rng=2)
        assert adata.shape == (1800, 48)
        truth = adata.uns["synthetic"]
        strength, _ = _module_strength(adata.X, truth["module_features"], _region_locality(adata, 0, 200))
        assert strength[0] > 0.4
        assert strength[1:].max() < 0.15


def test_condition_and_donor(syn):
    truth = syn.uns["synthetic"]
    codes = syn.obs["region"].cat.codes.to_numpy()
    disease = (syn.obs["condition"] == "disease").to_numpy()
    with_module0 = truth["region_modules"][codes, 0]
    assert disease[with_module0].mean() > 0.7
    assert disease[~with_module0].mean() < 0.3
    donor = syn.obs["donor"].cat.codes.to_numpy()
    for r in range(len(truth["region_names"])):
        share = np.bincount(donor[codes == r], minlength=4).max() / (codes == r).sum()
        assert share > 0.65
    other = lava.datasets.synthetic(3000, 120, 6, condition_module=1, n_donors=2, rng=0)
    assert set(other.obs["donor"].cat.categories) == {"D0", "D1"}
    disease = (other.obs["condition"] == "disease").to_numpy()
    assert disease[truth["region_modules"][codes, 1]].mean() > 0.7


def test_planted_modules_against_loop(syn):
    member = syn.uns["synthetic"]["module_features"]
    features = ["g0015", "g0003", "g0100", "g0011", "g0012", "g0001"]
    got = lava.datasets.planted_modules(syn, features)
    pos = [syn.var_names.get_loc(f) for f in features]
    expected = []
    for m in range(member.shape[0]):
        row = []
        for i in range(len(features)):
            for j in range(i + 1, len(features)):
                row.append(float(member[m, pos[i]] and member[m, pos[j]]))
        expected.append(row)
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float32))
    assert got.dtype == np.float32
    full = lava.datasets.planted_modules(syn)
    D = syn.n_vars
    assert full.shape == (6, D * (D - 1) // 2)
    size = syn.uns["synthetic"]["params"]["module_size"]
    np.testing.assert_array_equal(full.sum(axis=1), size * (size - 1) // 2)
    mask = np.zeros(D, dtype=bool)
    mask[pos] = True
    np.testing.assert_array_equal(
        lava.datasets.planted_modules(syn, mask), lava.datasets.planted_modules(syn, sorted(features))
    )
    # after subsetting the features, the truth follows var["module"]
    sub = syn[:, features].copy()
    np.testing.assert_array_equal(lava.datasets.planted_modules(sub), got)
    with pytest.raises(KeyError, match="not in var_names"):
        lava.datasets.planted_modules(syn, ["g0001", "nope"])
    with pytest.raises(KeyError, match="synthetic"):
        lava.datasets.planted_modules(ad.AnnData(np.zeros((3, 3), dtype=np.float32)))


def test_planted_presence_against_loop(syn):
    rng = np.random.default_rng(0)
    indices = rng.integers(0, syn.n_obs, size=(7, 40))
    got = lava.datasets.planted_presence(syn, indices)
    layout = syn.uns["synthetic"]["region_modules"]
    regions = list(syn.uns["synthetic"]["region_names"])
    expected = np.zeros((7, 6))
    for i, row in enumerate(indices):
        for s in row:
            r = regions.index(syn.obs["region"].iloc[s])
            expected[i] += layout[r]
    np.testing.assert_allclose(got, expected / 40, rtol=1e-6)
    # a locality inside one region has that region's modules exactly
    loc = _region_locality(syn, 5, 50)[None, :]
    np.testing.assert_array_equal(lava.datasets.planted_presence(syn, loc)[0], layout[5].astype(np.float32))


@pytest.mark.filterwarnings("ignore:.*next minor release:UserWarning")  # anndata's zarr format notices
@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_roundtrip(tmp_path, fmt):
    small = lava.datasets.synthetic(300, 30, 3, sparsity=0.3, rng=4)
    if fmt == "h5ad":
        small.write_h5ad(tmp_path / "s.h5ad")
        back = ad.read_h5ad(tmp_path / "s.h5ad")
    else:
        small.write_zarr(tmp_path / "s.zarr")
        back = ad.read_zarr(tmp_path / "s.zarr")
    for name in ("module_features", "region_modules", "region_names", "region_centers", "region_sizes"):
        np.testing.assert_array_equal(np.asarray(back.uns["synthetic"][name]), small.uns["synthetic"][name])
    assert back.uns["synthetic"]["params"] == small.uns["synthetic"]["params"]
    np.testing.assert_array_equal(lava.datasets.planted_modules(back), lava.datasets.planted_modules(small))
    np.testing.assert_array_equal(
        lava.datasets.planted_presence(back, np.arange(20).reshape(2, 10)),
        lava.datasets.planted_presence(small, np.arange(20).reshape(2, 10)),
    )


def test_layouts_and_regions():
    simple = lava.datasets.synthetic(500, 20, 3, layout="simple", rng=0)
    np.testing.assert_array_equal(
        simple.uns["synthetic"]["region_modules"], np.vstack([np.eye(3, dtype=bool), np.zeros((1, 3), dtype=bool)])
    )
    custom = np.array([[1, 1], [0, 1], [1, 0]], dtype=bool)
    adata = lava.datasets.synthetic(500, 20, 2, layout=custom, rng=0)
    np.testing.assert_array_equal(adata.uns["synthetic"]["region_modules"], custom)
    assert adata.uns["synthetic"]["params"]["layout"] == "custom"
    more = lava.datasets.synthetic(900, 20, 3, n_regions=9, rng=0)
    layout = more.uns["synthetic"]["region_modules"]
    base = lava.datasets.default_layout(3)
    assert layout.shape == (9, 3)
    np.testing.assert_array_equal(layout[: len(base)], base)
    assert layout[len(base) :].any(axis=1).all()  # the extra regions carry modules
    assert more.obs["region"].cat.categories.size == 9


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"module_size": 50}, ValueError, "module_size"),
        ({"module_size": 1}, ValueError, "module_size"),
        ({"sparsity": 1.0}, ValueError, "sparsity"),
        ({"sparsity": -0.1}, ValueError, "sparsity"),
        ({"signal": 0.0}, ValueError, "signal"),
        ({"layout": "nope"}, ValueError, "layout"),
        ({"layout": np.ones((3, 2), dtype=bool)}, ValueError, "shape"),
        ({"n_regions": 2}, ValueError, "n_regions"),
        ({"condition_module": 6}, ValueError, "condition_module"),
        ({"condition_module": 1.5}, TypeError, "condition_module"),
        ({"n_obs": 10}, ValueError, "n_obs"),
        ({"n_vars": 1}, ValueError, "n_vars"),
        ({"n_modules": 0, "layout": "simple"}, ValueError, "n_modules"),
        ({"rng": "seed"}, TypeError, "rng"),
    ],
)
def test_validation(kwargs, error, match):
    args = {"n_obs": 500, "n_vars": 100, "n_modules": 6, **kwargs}
    with pytest.raises(error, match=match):
        lava.datasets.synthetic(**args)
