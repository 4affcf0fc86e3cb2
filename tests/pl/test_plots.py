"""Plots on fabricated stored results that follow the storage contract (Agg backend)."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

import lava
from lava._store import store_step

N_OBS, SIDE, N_LOC, N_NEIGH, M = 300, 5, 15, 40, 3
N_VARS = SIDE * SIDE
FEATURES = np.array([i for i in range(N_VARS) if i not in (0, 4, 12, 20, 24)])  # 20 of the 25 pixels
D = len(FEATURES)
P = D * (D - 1) // 2


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def pair_list(d):
    return [(i, j) for i in range(d) for j in range(i + 1, d)]


def fabricate(seed: int = 0) -> ad.AnnData:
    """A small AnnData holding every step's results with the contract's names, shapes and dtypes."""
    rng = np.random.default_rng(seed)
    Z = np.concatenate([rng.normal(0, 1, (N_OBS // 2, 2)), rng.normal(5, 1, (N_OBS - N_OBS // 2, 2))])
    X = rng.poisson(1.0, (N_OBS, N_VARS)).astype(np.float32)
    adata = ad.AnnData(X)
    adata.var_names = [f"px{i:02d}" for i in range(N_VARS)]
    adata.obs["disease"] = pd.Categorical(rng.choice(["healthy", "CKD", "AKI"], N_OBS))
    adata.obsm["X_umap"] = Z
    adata.uns["image_shape"] = np.array([SIDE, SIDE])

    indices = np.stack([rng.choice(N_OBS, N_NEIGH, replace=False) for _ in range(N_LOC)]).astype(np.int64)
    probes = Z[indices].mean(axis=1)
    in_loc = np.bincount(indices.ravel(), minlength=N_OBS).astype(np.float64)
    neigh = rng.gamma(4.0, 0.25, N_OBS)
    store_step(
        adata,
        "lava",
        "localities",
        {
            "indices": indices,
            "probes": probes,
            "alpha": 0.5,
            "beta": -0.25,
            "loss": 0.4,
            "loss_unoptimized": 0.6,
            "evaluations": rng.random((5, 3)),
            "basis": "X_umap",
        },
        {"basis": "X_umap", "n_neighbors": N_NEIGH, "overlap": 2},
        obs={
            "lava_neighborhood_centrality": neigh / neigh.mean(),
            "lava_locality_centrality": in_loc / in_loc.mean(),
        },
    )
    C = (rng.random((N_LOC, P)) ** 2).astype(np.float32)
    store_step(
        adata,
        "lava",
        "correlations",
        {"values": C, "features": adata.var_names[FEATURES].to_numpy().astype(str), "feature_index": FEATURES},
        {"tie_fraction": 0.75},
    )
    modules = (rng.random((M, P)) ** 3).astype(np.float32)
    presence = rng.random((N_LOC, M)).astype(np.float32)
    presence[0] = [0.1, 0.05, 0.0]  # sum < 0.5: ignored by co-presence
    scores = np.zeros((N_VARS, M), np.float32)
    for m in range(M):
        for p, (i, j) in enumerate(pair_list(D)):
            scores[FEATURES[i], m] += modules[m, p]
            scores[FEATURES[j], m] += modules[m, p]
    sample = np.zeros((N_OBS, M))
    for e in range(N_OBS):
        rows = [i for i in range(N_LOC) if e in indices[i]]
        if rows:
            sample[e] = presence[rows].mean(axis=0)
    store_step(
        adata,
        "lava",
        "amf",
        {
            "modules": modules,
            "presence": presence,
            "loss": 0.3,
            "similarity": 0.7,
            "overestimation_ratio": 0.12,
            "locality_similarity": rng.random(N_LOC),
            "history": {"loss": np.linspace(1, 0.3, 20)},
            "n_epochs": 20,
            "best_epoch": 19,
            "converged": True,
            "interrupted": False,
        },
        {"n_modules": M, "rng": 0},
        obsm={"lava_presence": sample.astype(np.float32)},
        varm={"lava_modules": scores},
    )
    runs = pd.DataFrame(
        [
            {
                "n_modules": m,
                "run": r,
                "seed": 10 * m + r,
                "loss": 0.5 - 0.05 * m + 0.01 * r,
                "similarity": 0.5 + 0.05 * m - 0.01 * r,
                "overestimation_ratio": 0.1 + 0.01 * r,
                "n_epochs": 100,
            }
            for m in range(2, 6)
            for r in range(3)
        ]
    )
    summary = runs.groupby("n_modules").agg(
        loss_mean=("loss", "mean"),
        loss_std=("loss", "std"),
        similarity_mean=("similarity", "mean"),
        similarity_std=("similarity", "std"),
        overestimation_ratio_mean=("overestimation_ratio", "mean"),
        overestimation_ratio_std=("overestimation_ratio", "std"),
    )
    summary["silhouette"] = [0.9, 0.8, 0.6, 0.5]
    store_step(
        adata,
        "lava",
        "selection",
        {"runs": runs, "summary": summary, "suggested_n_modules": 3, "best": {}},
        {"n_modules": [2, 3, 4, 5], "n_runs": 3},
    )
    genes = []
    for m in range(M):
        s = scores[:, m]
        keep = np.flatnonzero(s >= 0.05 * s.max())
        keep = keep[np.argsort(-s[keep])]
        genes += [(m, adata.var_names[k], float(s[k]), r) for r, k in enumerate(keep)]
    store_step(
        adata,
        "lava",
        "module_genes",
        pd.DataFrame(genes, columns=["module", "feature", "score", "rank"]),
        {"threshold": 0.2},
    )
    terms = [f"TERM_{t}" for t in range(8)]
    enrich = pd.DataFrame(
        [
            {
                "module": m,
                "term": t,
                "overlap": f"{(k := int(rng.integers(1, 10)))}/40",
                "n_overlap": k,
                "set_size": 40,
                "p_value": float(rng.random() * 0.01),
                "p_adjusted": float(rng.random() * 0.05),
                "odds_ratio": 2.0,
                "genes": "px01;px02",
            }
            for m in range(M)
            for t in rng.choice(terms, 6, replace=False)
        ]
    )
    store_step(adata, "lava", "enrichment", enrich, {"gene_sets": "toy"})
    assoc = pd.DataFrame(
        [
            {
                "module": m,
                "groupby": "disease",
                "category": c,
                "n_localities": N_LOC,
                "pearson_r": float(rng.uniform(-1, 1)),
                "pearson_p": float(rng.random()),
                "spearman_r": float(rng.uniform(-1, 1)),
                "spearman_p": float(rng.random()),
                "p_adjusted": float(rng.random() * 0.2),
            }
            for m in range(M)
            for c in ["healthy", "CKD", "AKI"]
        ]
    )
    store_step(adata, "lava", "association", assoc, {"groupby": "disease", "method": "pearson"})
    # n = n_obs retains everything (Jaccard 1) in any embedding: the peak must leave it out
    adata.uns["lava"]["neighborhood_retention"] = pd.DataFrame(
        {
            "n_neighbors": np.array([10, 20, 40, 80, 160, N_OBS], dtype=np.int64),
            "jaccard": [0.2, 0.35, 0.5, 0.45, 0.6, 1.0],
            "jaccard_std": [0.05, 0.05, 0.04, 0.04, 0.03, 0.0],
        }
    )
    return adata


@pytest.fixture(scope="module")
def stored():
    return fabricate()


@pytest.fixture
def adata(stored):
    return stored.copy()


def scatter_arrays(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection) and c.get_array() is not None]


# ---------------------------------------------------------------------------------------------------------------------
# show / return conventions (shared by every plot)

PLOTS = {
    "modules": lambda a, **kw: lava.pl.modules(a, **kw),
    "module_image": lambda a, **kw: lava.pl.module_image(a, 0, **kw),
    "module_network": lambda a, **kw: lava.pl.module_network(a, 1, **kw),
    "module_genes": lambda a, **kw: lava.pl.module_genes(a, 2, **kw),
    "selection": lambda a, **kw: lava.pl.selection(a, **kw),
    "centrality": lambda a, **kw: lava.pl.centrality(a, **kw),
    "copresence": lambda a, **kw: lava.pl.copresence(a, **kw),
    "locality": lambda a, **kw: lava.pl.locality(a, 3, **kw),
    "enrichment": lambda a, **kw: lava.pl.enrichment(a, **kw),
    "association": lambda a, **kw: lava.pl.association(a, **kw),
    "neighborhood_retention": lambda a, **kw: lava.pl.neighborhood_retention(a, **kw),
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_return_fig_gives_figure(adata, name):
    assert isinstance(PLOTS[name](adata, return_fig=True), Figure)


@pytest.mark.parametrize("name", list(PLOTS))
def test_show_none_shows_and_returns_none(adata, name, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    assert PLOTS[name](adata) is None
    assert shown == [1]


@pytest.mark.parametrize(
    "name", ["module_image", "module_network", "module_genes", "enrichment", "association", "neighborhood_retention"]
)
def test_single_panel_plots_draw_into_given_ax(adata, name, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("must not show when ax is given"))
    _, ax = plt.subplots()
    assert PLOTS[name](adata, ax=ax) is ax
    assert ax.has_data() or ax.images or ax.texts


MISSING = [
    ("amf", "modules", "lava.tl.amf"),
    ("amf", "module_image", "lava.tl.amf"),
    ("amf", "module_network", "lava.tl.amf"),
    ("amf", "module_genes", "lava.tl.amf"),
    ("amf", "copresence", "lava.tl.amf"),
    ("amf", "locality", "lava.tl.amf"),
    ("correlations", "module_image", "lava.tl.correlations"),
    ("correlations", "locality", "lava.tl.correlations"),
    ("localities", "centrality", "lava.tl.localities"),
    ("localities", "modules", "lava.tl.localities"),
    ("selection", "selection", "lava.tl.select_n_modules"),
    ("enrichment", "enrichment", "lava.tl.enrich"),
    ("association", "association", "lava.tl.associate"),
    ("neighborhood_retention", "neighborhood_retention", "lava.tl.neighborhood_retention"),
]


@pytest.mark.parametrize(("step", "name", "tool"), MISSING)
def test_missing_step_names_the_tool(adata, step, name, tool):
    del adata.uns["lava"][step]
    with pytest.raises(KeyError, match=tool.replace(".", r"\.")):
        PLOTS[name](adata, show=False)


def test_missing_key_names_the_tool(adata):
    adata.uns["other"] = adata.uns.pop("lava")
    with pytest.raises(KeyError, match=r"lava\.tl\.amf") as info:
        lava.pl.modules(adata, show=False)
    assert "'other'" in str(info.value)
    assert len(lava.pl.modules(adata, key="other", level="probe", show=False)) == M  # obsm stays under "lava_"


# ---------------------------------------------------------------------------------------------------------------------
# modules


def test_modules_titles_give_the_reproducibility_of_a_fit_of_several_runs(adata):
    repro = np.linspace(0, 1, M)
    adata.uns["lava"]["amf"] |= {"n_runs": 5, "module_reproducibility": repro}
    presence = adata.uns["lava"]["amf"]["presence"]
    for m, ax in enumerate(lava.pl.modules(adata, level="probe", show=False)):
        assert ax.get_title() == f"module {m} (total presence {presence[:, m].sum():.1f}; reproduced {repro[m]:.2f})"
    adata.uns["lava"]["amf"]["n_runs"] = 1  # one run: nothing was compared
    assert "reproduced" not in lava.pl.modules(adata, level="probe", show=False)[0].get_title()


@pytest.mark.parametrize("level", ["probe", "sample"])
def test_modules_panels_titles_and_shared_scale(adata, level):
    axes = lava.pl.modules(adata, level=level, ncols=2, show=False)
    assert len(axes) == M
    # probes: one shared colorbar (unused grid cell removed); samples: scanpy's embedding, a colorbar per panel
    assert len(axes[0].figure.axes) == (M + 1 if level == "probe" else 2 * M)
    presence = adata.uns["lava"]["amf"]["presence"]
    values = presence if level == "probe" else adata.obsm["lava_presence"]
    for m, ax in enumerate(axes):
        assert ax.get_title() == f"module {m} (total presence {presence[:, m].sum():.1f})"
        (colored,) = scatter_arrays(ax)
        drawn = np.sort(np.asarray(colored.get_array()))
        np.testing.assert_allclose(drawn, np.sort(values[:, m]), rtol=1e-6)
        assert colored.norm.vmin == 0
        assert colored.norm.vmax == pytest.approx(values.max())
    if level == "probe":
        np.testing.assert_allclose(
            scatter_arrays(axes[1])[0].get_offsets().mean(axis=0),
            np.mean(adata.uns["lava"]["localities"]["probes"], axis=0),
        )


def test_modules_samples_are_drawn_by_scanpy_without_touching_adata(adata, monkeypatch):
    import scanpy as sc

    calls = []
    embedding = sc.pl.embedding
    monkeypatch.setattr(sc.pl, "embedding", lambda *a, **kw: calls.append(kw) or embedding(*a, **kw))
    before = (list(adata.obs.columns), set(adata.obsm))
    axes = lava.pl.modules(adata, modules=[0, 2], vmax="p99", frameon=False, show=False)
    assert len(calls) == 1
    assert calls[0]["color"] == ["module 0", "module 2"]
    assert calls[0]["vmax"] == pytest.approx(np.percentile(adata.obsm["lava_presence"][:, [0, 2]], 99))
    assert calls[0]["frameon"] is False
    assert not axes[0].axison or not axes[0].get_frame_on()
    assert (list(adata.obs.columns), set(adata.obsm)) == before
    offsets = scatter_arrays(axes[0])[0].get_offsets()
    assert sorted(map(tuple, np.round(offsets, 6))) == sorted(map(tuple, np.round(adata.obsm["X_umap"], 6)))


@pytest.mark.parametrize("level", ["probe", "sample"])
def test_presence_colour_map_is_light_where_absent(adata, level):
    axes = lava.pl.modules(adata, level=level, show=False)
    colored = scatter_arrays(axes[0])[0]

    def luminance(value):
        r, g, b, _ = colored.cmap(colored.norm(value))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    top = colored.norm.vmax
    assert luminance(0.0) > 0.8  # absent reads as the light background, not as viridis' dark purple
    assert luminance(0.001 * top) > 0.8
    assert luminance(top) < 0.3
    assert luminance(0.0) > luminance(0.5 * top) > luminance(top)


def test_modules_subset_vmax_and_errors(adata):
    axes = lava.pl.modules(adata, modules=[2, 0], vmax=2.0, level="probe", show=False)
    assert [ax.get_title().split(" (")[0] for ax in axes] == ["module 2", "module 0"]
    assert scatter_arrays(axes[0])[0].norm.vmax == 2.0
    _, ax = plt.subplots()
    assert lava.pl.modules(adata, modules=1, ax=ax) is ax
    with pytest.raises(ValueError, match="single-panel"):
        lava.pl.modules(adata, ax=ax)
    with pytest.raises(ValueError, match=r"modules 0\.\.2"):
        lava.pl.modules(adata, modules=[5], show=False)
    with pytest.raises(ValueError, match="level"):
        lava.pl.modules(adata, level="cell", show=False)
    with pytest.raises(ValueError, match="percentile"):
        lava.pl.modules(adata, vmax="q99", show=False)
    with pytest.raises(ValueError, match=r"list of 3 str"):
        lava.pl.modules(adata, title=["a", "b"], show=False)
    with pytest.raises(KeyError, match="tsne"):
        lava.pl.modules(adata, basis="tsne", show=False)


def test_modules_other_basis_puts_probes_at_locality_means(adata):
    adata.obsm["X_pca"] = np.asarray(adata.obsm["X_umap"]) * 10 + 3
    axes = lava.pl.modules(adata, basis="pca", level="probe", show=False)
    idx = adata.uns["lava"]["localities"]["indices"]
    expected = adata.obsm["X_pca"][idx].mean(axis=1)
    got = scatter_arrays(axes[0])[0].get_offsets()
    assert sorted(map(tuple, np.round(got, 6))) == sorted(map(tuple, np.round(expected, 6)))


# ---------------------------------------------------------------------------------------------------------------------
# module_image


def direct_pixel_sums(values):
    heat = np.zeros(N_VARS)
    for p, (i, j) in enumerate(pair_list(D)):
        heat[FEATURES[i]] += values[p]
        heat[FEATURES[j]] += values[p]
    return heat.reshape(SIDE, SIDE)


def test_module_image_heat_and_lines_match_direct_count(adata):
    mods = adata.uns["lava"]["amf"]["modules"].astype(np.float64)
    axes = lava.pl.module_image(adata, show=False)
    assert len(axes) == M
    for m, ax in enumerate(axes):
        assert ax.get_title() == f"module {m}"
        (image,) = [a for a in ax.images if isinstance(a, AxesImage)]
        np.testing.assert_allclose(image.get_array(), direct_pixel_sums(mods[m]), rtol=1e-6)
        (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        cubed = [v**3 for v in mods[m] if v**3 >= 0.1]
        assert len(lines.get_segments()) == len(cubed) > 0
        np.testing.assert_allclose(np.sort(lines.get_linewidths()), np.sort(2.0 * np.array(cubed)), rtol=1e-6)


def test_module_image_segments_join_the_right_pixels(adata):
    mods = adata.uns["lava"]["amf"]["modules"].astype(np.float64)
    ax = lava.pl.module_image(adata, 1, max_lines=1, show=False)
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    (segment,) = lines.get_segments()
    best = int(np.argmax(mods[1]))
    i, j = pair_list(D)[best]
    expected = [[FEATURES[i] % SIDE, FEATURES[i] // SIDE], [FEATURES[j] % SIDE, FEATURES[j] // SIDE]]
    np.testing.assert_array_equal(segment, expected)


def test_module_image_locality_and_options(adata):
    C = adata.uns["lava"]["correlations"]["values"][4].astype(np.float64)
    ax = lava.pl.module_image(adata, locality=4, threshold=0.5, power=2, show=False)
    assert ax.get_title() == "locality 4"
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines.get_segments()) == int(np.sum(C**2 >= 0.5))
    np.testing.assert_allclose(ax.images[0].get_array(), direct_pixel_sums(C), rtol=1e-6)
    with pytest.raises(ValueError, match="pixels"):
        lava.pl.module_image(adata, 0, image_shape=(28, 28), show=False)
    with pytest.raises(ValueError, match="not both"):
        lava.pl.module_image(adata, 0, locality=1, show=False)
    with pytest.raises(ValueError, match="locality 99"):
        lava.pl.module_image(adata, locality=99, show=False)


# ---------------------------------------------------------------------------------------------------------------------
# module_network, module_genes


@pytest.mark.parametrize("layout", ["spring", "circle"])
def test_module_network_draws_top_pairs(adata, layout):
    values = adata.uns["lava"]["amf"]["modules"][1].astype(np.float64)
    ax = lava.pl.module_network(adata, 1, top=12, layout=layout, show=False)
    (edges,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(edges.get_segments()) == 12
    top_pairs = [pair_list(D)[p] for p in np.argsort(-values)[:12]]
    names = adata.var_names[FEATURES]
    expected = {names[k] for pair in top_pairs for k in pair}
    assert {t.get_text() for t in ax.texts} == expected
    widths = np.asarray(edges.get_linewidths())
    assert widths.max() == pytest.approx(4.5)
    assert np.all(np.diff(widths) <= 1e-12)  # strongest first, width grows with correlation
    pos = np.array([t.xy for t in ax.texts])
    assert np.all(np.isfinite(pos))
    assert np.abs(pos).max() <= 1.0 + 1e-9


def test_module_genes_bars_and_cutoff(adata):
    scores = adata.varm["lava_modules"][:, 2].astype(np.float64)
    ax = lava.pl.module_genes(adata, 2, n_genes=7, show=False)
    assert len(ax.patches) == 7
    expected = adata.var_names[np.argsort(-scores)[:7]].tolist()
    assert [t.get_text() for t in ax.get_yticklabels()] == expected
    np.testing.assert_allclose(sorted(p.get_width() for p in ax.patches), np.sort(scores)[-7:], rtol=1e-6)
    (cut,) = ax.get_lines()
    assert cut.get_xdata()[0] == pytest.approx(0.2 * scores.max())  # threshold from params["module_genes"]
    ax = lava.pl.module_genes(adata, 2, threshold=0.5, show=False)
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(0.5 * scores.max())
    del adata.uns["lava"]["module_genes"]
    ax = lava.pl.module_genes(adata, 2, show=False)
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(0.05 * scores.max())
    with pytest.raises(ValueError, match="n_genes"):
        lava.pl.module_genes(adata, 0, n_genes=0, show=False)


def test_module_genes_colours_the_core_rule_genes_without_a_cutoff(adata):
    from matplotlib.colors import to_rgba

    lava.tl.module_genes(adata, threshold=0.9)  # rule="core": membership, not a score cut-off
    table = lava.get.module_genes(adata)
    scores = adata.varm["lava_modules"][:, 2].astype(np.float64)
    ax = lava.pl.module_genes(adata, 2, n_genes=adata.n_vars, show=False)
    assert not ax.get_lines()  # no cut-off line
    assert "module genes (core pairs)" in ax.get_xlabel()
    members = set(table.loc[table["module"] == 2, "feature"])
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == adata.var_names[np.argsort(-scores, kind="stable")].tolist()
    blue = to_rgba("tab:blue")
    drawn = {name: patch.get_facecolor() == blue for name, patch in zip(names, ax.patches, strict=True)}
    assert drawn == {name: name in members for name in names}
    assert any(drawn.values())
    assert not all(drawn.values())
    # an explicit threshold draws the score cut-off instead
    ax = lava.pl.module_genes(adata, 2, threshold=0.5, show=False)
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(0.5 * scores.max())


def test_module_genes_of_every_module_in_a_grid(adata):
    axes = lava.pl.module_genes(adata, n_genes=5, ncols=2, show=False)
    assert len(axes) == M
    assert len(axes[0].figure.axes) == M  # the unused grid cell is removed
    for m, ax in enumerate(axes):
        single = lava.pl.module_genes(adata, m, n_genes=5, show=False)
        assert ax.get_title() == single.get_title() == f"module {m}: top 5 features"
        assert [t.get_text() for t in ax.get_yticklabels()] == [t.get_text() for t in single.get_yticklabels()]
    assert len(lava.pl.module_genes(adata, [2, 0], show=False)) == 2
    with pytest.raises(ValueError, match="single-panel"):
        lava.pl.module_genes(adata, ax=axes[0], show=False)
    with pytest.raises(ValueError, match=r"list of 3 str"):
        lava.pl.module_genes(adata, title=["a", "b"], show=False)


# ---------------------------------------------------------------------------------------------------------------------
# selection, centrality, copresence, locality


def test_selection_three_panels_with_means_and_suggestion(adata):
    axes = lava.pl.selection(adata, show=False)
    assert len(axes) == 3
    runs = adata.uns["lava"]["selection"]["runs"]
    mean = runs.groupby("n_modules")["similarity"].mean().to_numpy()
    data_lines = [ln for ln in axes[0].get_lines() if len(ln.get_xdata()) > 2]
    np.testing.assert_allclose(data_lines[0].get_ydata(), mean)
    sil = [ln for ln in axes[1].get_lines() if len(ln.get_xdata()) > 2]
    np.testing.assert_allclose(sil[0].get_ydata(), [0.9, 0.8, 0.6, 0.5])
    for ax in axes:
        assert any(np.all(np.asarray(ln.get_xdata()) == 3) for ln in ax.get_lines())
    assert "3" in axes[0].get_title()
    assert axes[0].get_shared_x_axes().joined(axes[0], axes[2])


def test_centrality_panels_and_difference(adata):
    axes = lava.pl.centrality(adata, show=False)
    assert len(axes) == 3
    assert len(axes[0].figure.axes) == 6  # three panels, three colorbars
    neigh = adata.obs["lava_neighborhood_centrality"].to_numpy()
    local = adata.obs["lava_locality_centrality"].to_numpy()
    for ax, expected in zip(axes, [neigh, local, local - neigh], strict=True):
        drawn = scatter_arrays(ax)[0].get_array()
        np.testing.assert_allclose(np.sort(drawn), np.sort(expected))
    assert scatter_arrays(axes[0])[0].norm.vmax == scatter_arrays(axes[1])[0].norm.vmax
    assert "0.4" in axes[2].get_title()  # stored placement loss


def test_copresence_entropy_and_histogram(adata):
    presence = adata.uns["lava"]["amf"]["presence"].astype(np.float64)
    expected = []
    for row in presence:
        if row.sum() < 0.5:
            continue
        p = row / row.sum()
        expected.append(-sum(x * np.log2(x) for x in p if x > 0))
    axes = lava.pl.copresence(adata, show=False)
    assert len(axes) == 2
    colored = [c for c in scatter_arrays(axes[0]) if len(c.get_array())]
    np.testing.assert_allclose(np.sort(colored[0].get_array()), np.sort(expected), rtol=1e-6)
    assert sum(p.get_height() for p in axes[1].patches) == len(expected) == N_LOC - 1
    assert f"{np.mean(expected):.2f}" in axes[1].get_title()


def test_locality_heatmaps_match_reconstruction(adata):
    amf = adata.uns["lava"]["amf"]
    C = adata.uns["lava"]["correlations"]["values"][3].astype(np.float64)
    pres, mods = amf["presence"][3].astype(np.float64), amf["modules"].astype(np.float64)
    C_hat = np.array([max(pres[m] * mods[m, p] for m in range(M)) for p in range(P)])
    axes = lava.pl.locality(adata, 3, max_features=D, show=False)
    assert len(axes) == 3
    for ax, values in zip(axes[:2], [C, C_hat], strict=True):
        mat = np.zeros((D, D))
        for p, (i, j) in enumerate(pair_list(D)):
            mat[i, j] = mat[j, i] = values[p]
        np.testing.assert_allclose(ax.images[0].get_array(), mat, rtol=1e-6)
    assert axes[0].images[0].norm.vmax == axes[1].images[0].norm.vmax
    np.testing.assert_allclose([p.get_height() for p in axes[2].patches], pres)
    assert f"{amf['locality_similarity'][3]:.2f}" in axes[1].get_title()
    small = lava.pl.locality(adata, 3, max_features=5, show=False)
    assert small[0].images[0].get_array().shape == (5, 5)


def test_locality_image_mode(adata):
    axes = lava.pl.locality(adata, 2, image_shape=(SIDE, SIDE), show=False)
    C = adata.uns["lava"]["correlations"]["values"][2].astype(np.float64)
    np.testing.assert_allclose(axes[0].images[0].get_array(), direct_pixel_sums(C), rtol=1e-6)
    assert sum(isinstance(c, LineCollection) for c in axes[1].collections) == 1


# ---------------------------------------------------------------------------------------------------------------------
# enrichment, association


def test_enrichment_dots(adata):
    df = adata.uns["lava"]["enrichment"]
    ax = lava.pl.enrichment(adata, n_terms=2, show=False)
    terms = []
    for m in range(M):
        for t in df[df.module == m].sort_values("p_adjusted")["term"].head(2):
            if t not in terms:
                terms.append(t)
    dots = df[df.term.isin(terms)]
    (colored,) = scatter_arrays(ax)
    assert len(colored.get_offsets()) == len(dots)
    np.testing.assert_allclose(np.sort(colored.get_array()), np.sort(-np.log10(dots.p_adjusted)), rtol=1e-6)
    assert {t.get_text() for t in ax.get_yticklabels()} == set(terms)
    sub = lava.pl.enrichment(adata, modules=[1], n_terms=3, show=False)
    assert len(sub.get_yticklabels()) == 3
    assert [t.get_text() for t in sub.get_xticklabels()] == ["1"]


def test_enrichment_by_group_draws_a_modules_best_group(adata):
    # a table of lava.tl.enrich(by="group"): module 0 tests its terms in two groups
    df = adata.uns["lava"]["enrichment"].copy()
    df["group"] = 0
    again = df[df.module == 0].copy()
    again["group"] = 1
    again["p_adjusted"] = np.minimum(again["p_adjusted"] * 10, 1.0)  # the second group: weaker
    adata.uns["lava"]["enrichment"] = pd.concat([df, again], ignore_index=True)
    ax = lava.pl.enrichment(adata, n_terms=8, show=False)
    (colored,) = scatter_arrays(ax)
    assert len(colored.get_offsets()) == len(df)  # one dot per (module, term)
    np.testing.assert_allclose(np.sort(colored.get_array()), np.sort(-np.log10(df.p_adjusted)), rtol=1e-6)


@pytest.mark.parametrize("column", ["overlap", "n_overlap"])
def test_enrichment_dot_size_is_overlap(adata, column):
    df = adata.uns["lava"]["enrichment"]
    if column == "overlap":  # a table with only gseapy's "k/K" strings
        adata.uns["lava"]["enrichment"] = df.drop(columns="n_overlap")
    ax = lava.pl.enrichment(adata, n_terms=8, show=False)
    sizes = scatter_arrays(ax)[0].get_sizes()
    np.testing.assert_allclose(np.sort(sizes), np.sort(200.0 * df.n_overlap / df.n_overlap.max()))


def test_association_heatmap_and_stars(adata):
    df = adata.uns["lava"]["association"]
    ax = lava.pl.association(adata, show=False)
    values = ax.images[0].get_array()
    assert values.shape == (M, 3)
    cats = [t.get_text() for t in ax.get_xticklabels()]
    for m in range(M):
        for c, cat in enumerate(cats):
            row = df[(df.module == m) & (df.category == cat)]
            assert values[m, c] == pytest.approx(row.pearson_r.item())
    assert sum(t.get_text() == "*" for t in ax.texts) == int((df.p_adjusted < 0.05).sum()) > 0
    assert "p_adjusted" in ax.get_title()
    # p_adjusted belongs to pearson (the stored method): spearman stars use its raw p-values
    ax = lava.pl.association(adata, method="spearman", alpha=0.5, show=False)
    assert sum(t.get_text() == "*" for t in ax.texts) == int((df.spearman_p < 0.5).sum())
    assert "spearman_p" in ax.get_title()
    with pytest.raises(KeyError, match="associate"):
        lava.pl.association(adata, groupby="batch", show=False)
    with pytest.raises(ValueError, match="method"):
        lava.pl.association(adata, method="kendall", show=False)


def test_association_prefers_permutation_p_and_labels_several_groupings(adata):
    df = adata.uns["lava"]["association"]
    perm = df.assign(permutation_p=0.5, permutation_p_adjusted=np.linspace(0, 0.1, len(df)))
    other = perm.assign(groupby="sex", category=np.where(np.arange(len(df)) % 3, "F", "M"))
    other = other.drop_duplicates(["module", "category"])
    adata.uns["lava"]["association"] = pd.concat([perm, other], ignore_index=True)
    ax = lava.pl.association(adata, show=False)
    assert "permutation_p_adjusted" in ax.get_title()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert set(labels) == {"disease: healthy", "disease: CKD", "disease: AKI", "sex: F", "sex: M"}
    ax = lava.pl.association(adata, groupby="disease", show=False)
    assert sum(t.get_text() == "*" for t in ax.texts) == int((perm.permutation_p_adjusted < 0.05).sum())


def test_association_leaves_room_for_long_category_names(adata):
    # two modules and long rotated labels once collapsed the constrained layout (a warning, an error in tests)
    df = adata.uns["lava"]["association"]
    df = df[df.module < 2].assign(category=lambda d: d.category.astype(str) + " (a rather long category name)")
    adata.uns["lava"]["association"] = df.reset_index(drop=True)
    fig = lava.pl.association(adata, return_fig=True, show=False)
    fig.canvas.draw()  # constrained layout runs here; warnings are errors in the suite
    assert fig.get_figheight() > 1.6 + 0.4 * 2 + 0.09 * 20


def test_plots_after_h5ad_round_trip(adata, tmp_path):
    path = tmp_path / "stored.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    for name, plot in PLOTS.items():
        assert plot(back, show=False) is not None, name


def test_spring_layout_separates_nodes_and_keeps_pairs_close():
    from lava.pl._modules import spring_layout

    edges = np.array([[0, 1], [2, 3], [4, 5], [5, 6], [6, 4]])  # three separate pieces
    pos = spring_layout(7, edges, np.ones(len(edges)))
    assert pos.shape == (7, 2)
    assert np.abs(pos).max() == pytest.approx(1.0)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    linked = dist[edges[:, 0], edges[:, 1]]
    unlinked = dist[np.triu_indices(7, 1)][
        ~np.isin(np.ravel_multi_index(np.triu_indices(7, 1), (7, 7)), np.ravel_multi_index(edges.T, (7, 7)))
    ]
    assert dist[np.triu_indices(7, 1)].min() > 0.05  # no two nodes on top of each other
    assert linked.mean() < unlinked.mean()
    np.testing.assert_array_equal(pos, spring_layout(7, edges, np.ones(len(edges))))  # deterministic


def test_every_plot_on_the_real_pipeline():
    """A tiny end-to-end run through every tool, then every plot on what the tools actually stored."""
    a = lava.datasets.synthetic(n_obs=400, n_vars=16, n_modules=2, rng=0)
    lava.tl.localities(a, n_neighbors=50, overlap=2, maxfun=10, rng=0, progress=False)
    lava.tl.correlations(a, device="cpu", progress=False)
    lava.tl.select_n_modules(a, [2, 3], n_runs=2, max_epochs=30, device="cpu", progress=False)
    lava.tl.amf(a, from_selection=2)
    lava.tl.module_genes(a, threshold=0.3)
    genes = list(a.var_names)
    lava.tl.enrich(a, {"first": genes[:6], "second": genes[6:12], "third": genes[10:]}, min_size=2)
    lava.tl.associate(a, "condition")
    n_loc = len(a.uns["lava"]["localities"]["indices"])

    assert len(lava.pl.modules(a, show=False)) == 2
    assert len(lava.pl.modules(a, level="sample", show=False)) == 2
    assert len(lava.pl.selection(a, show=False)) == 3
    assert len(lava.pl.centrality(a, show=False)) == 3
    left, _ = lava.pl.copresence(a, show=False)
    assert sum(len(c.get_offsets()) for c in left.collections[1:]) == n_loc  # every probe, hollow or coloured
    assert len(lava.pl.locality(a, 0, show=False)) == 3
    assert len(lava.pl.module_image(a, image_shape=(4, 4), show=False)) == 2
    assert lava.pl.module_network(a, 1, top=5, show=False).texts
    assert len(lava.pl.module_genes(a, 0, n_genes=5, show=False).patches) == 5
    dots = scatter_arrays(lava.pl.enrichment(a, show=False))[0]
    assert len(dots.get_offsets()) == len(a.uns["lava"]["enrichment"])
    heat = lava.pl.association(a, show=False).images[0].get_array()
    assert heat.shape == (2, a.obs["condition"].nunique())


# ---------------------------------------------------------------------------------------------------------------------
# scanpy's arguments: save, title, vmin/vmax


@pytest.fixture
def figdir(tmp_path):
    import scanpy as sc

    old = sc.settings.figdir
    sc.settings.figdir = tmp_path  # a property of scanpy's settings class: set and restore it by hand
    yield tmp_path
    sc.settings.figdir = old


@pytest.mark.parametrize("name", list(PLOTS))
def test_save_writes_the_file_scanpy_would(adata, name, figdir, monkeypatch):
    import scanpy as sc

    tmp_path = figdir
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    PLOTS[name](adata, save="_test.png")
    path = tmp_path / f"lava_{name}_test.png"
    assert path.is_file()
    assert path.stat().st_size > 1000
    assert not plt.get_fignums()  # shown and saved: closed, as scanpy does
    PLOTS[name](adata, save=True, show=False)
    assert (tmp_path / f"lava_{name}.{sc.settings.file_format_figs}").is_file()
    with pytest.raises(TypeError, match="save"):
        PLOTS[name](adata, save=1, show=False)


SINGLE_TITLE = ["module_network", "module_genes", "enrichment", "association", "neighborhood_retention"]


@pytest.mark.parametrize("name", [*SINGLE_TITLE, "module_image"])
def test_title_replaces_the_default(adata, name):
    ax = PLOTS[name](adata, title="my title", show=False)
    assert ax.get_title() == "my title"


@pytest.mark.parametrize(
    ("name", "n_panels"), [("centrality", 3), ("copresence", 2), ("locality", 3), ("selection", 3)]
)
def test_titles_of_several_panels(adata, name, n_panels):
    titles = [f"panel {i}" for i in range(n_panels)]
    axes = PLOTS[name](adata, title=titles, show=False)
    assert [ax.get_title() for ax in axes] == titles
    axes = PLOTS[name](adata, title="the figure", show=False)
    assert axes[0].figure.get_suptitle() == "the figure"
    with pytest.raises(ValueError, match="title"):
        PLOTS[name](adata, title=["one"], show=False)


def test_percentile_bounds_as_scanpy(adata):
    presence = adata.uns["lava"]["amf"]["presence"].astype(np.float64)
    (colored,) = scatter_arrays(lava.pl.modules(adata, level="probe", vmin="p10", vmax="p99", show=False)[0])
    assert colored.norm.vmax == pytest.approx(np.percentile(presence, 99))
    assert colored.norm.vmin == pytest.approx(np.percentile(presence, 10))

    both = np.concatenate(
        [adata.obs[c].to_numpy() for c in ("lava_neighborhood_centrality", "lava_locality_centrality")]
    )
    axes = lava.pl.centrality(adata, vmax="p99.5", show=False)
    for ax in axes[:2]:
        assert scatter_arrays(ax)[0].norm.vmax == pytest.approx(np.percentile(both, 99.5))

    r = adata.uns["lava"]["association"]["pearson_r"].to_numpy()
    image = lava.pl.association(adata, vmax="p50", show=False).images[0]
    assert image.norm.vmax == pytest.approx(np.percentile(r, 50))
    assert image.norm.vmin == pytest.approx(-np.percentile(r, 50))  # mirrored: the map stays centred at 0

    score = -np.log10(adata.uns["lava"]["enrichment"]["p_adjusted"].to_numpy())
    (dots,) = scatter_arrays(lava.pl.enrichment(adata, n_terms=8, vmin=1.0, vmax="p90", show=False))
    assert (dots.norm.vmin, dots.norm.vmax) == (1.0, pytest.approx(np.percentile(score, 90)))

    images = lava.pl.locality(adata, 3, max_features=D, vmax=0.5, show=False)
    assert images[0].images[0].norm.vmax == images[1].images[0].norm.vmax == 0.5
    with pytest.raises(ValueError, match="above vmin"):
        lava.pl.centrality(adata, vmin=2.0, vmax=1.0, show=False)


# ---------------------------------------------------------------------------------------------------------------------
# layouts: nothing drawn on top of anything else


def bbox(artist):
    return artist.get_window_extent(artist.figure.canvas.get_renderer())


def test_association_keeps_modules_with_nan_statistics(adata):
    df = adata.uns["lava"]["association"].copy()
    few = df.module == 1  # present in 2 localities: associate gives NaN statistics
    df.loc[few, ["pearson_r", "pearson_p", "spearman_r", "spearman_p", "p_adjusted"]] = np.nan
    df.loc[few, "n_localities"] = 2
    adata.uns["lava"]["association"] = df
    ax = lava.pl.association(adata, show=False)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"0 (n={N_LOC})", "1 (n=2)", f"2 (n={N_LOC})"]  # the NaN module keeps its row
    values = ax.images[0].get_array()
    assert values.shape == (M, 3)
    assert np.ma.getmaskarray(values)[1].all()
    assert not np.ma.getmaskarray(values)[[0, 2]].any()
    assert any("not tested" in t.get_text() for t in ax.texts)


@pytest.mark.parametrize("given_ax", [False, True])
def test_enrichment_legend_clear_of_colourbar(adata, given_ax):
    # the tutorial's way: an Axes of a plain figure, where the colourbar takes its room from the Axes' right side
    if given_ax:
        fig, ax = plt.subplots(figsize=(7, 7))
        lava.pl.enrichment(adata, n_terms=4, ax=ax, show=False)
    else:
        fig = lava.pl.enrichment(adata, return_fig=True)
    fig.canvas.draw()
    ax, colorbar = fig.axes
    legend = ax.get_legend()
    assert legend is not None
    assert not bbox(legend).overlaps(bbox(colorbar))
    assert not bbox(legend).overlaps(ax.get_window_extent())


def test_module_genes_cutoff_label_clear_of_bars(adata):
    adata.varm["lava_modules"][:, 2] = np.linspace(1.0, 0.95, N_VARS)  # alike scores: bars span the whole axes
    fig = lava.pl.module_genes(adata, 2, n_genes=10, return_fig=True)
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend()
    assert legend is None or not any(bbox(legend).overlaps(bbox(bar)) for bar in ax.patches)
    assert "cut-off 0.2 × max" in ax.get_xlabel()  # the threshold lava.tl.module_genes used


@pytest.mark.parametrize("layout", ["spring", "circle"])
def test_module_network_labels_do_not_overlap(adata, layout):
    adata.uns["lava"]["correlations"]["features"] = np.array([f"LONGGENE{i:02d}" for i in FEATURES])  # gene-length
    fig = lava.pl.module_network(adata, 0, top=60, layout=layout, fontsize=9, return_fig=True)
    fig.canvas.draw()
    (ax,) = fig.axes
    boxes = [bbox(t) for t in ax.texts]
    assert len(boxes) > 15
    clashes = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not clashes
    assert all(np.abs(np.asarray(t.xy)).max() <= 1.0 + 1e-9 for t in ax.texts)  # labels still name their nodes


# ---------------------------------------------------------------------------------------------------------------------
# neighborhood_retention


def test_neighborhood_retention_curve_marks_the_peak_and_the_n_used(adata):
    table = adata.uns["lava"]["neighborhood_retention"]
    ax = lava.pl.neighborhood_retention(adata, show=False)
    curve = next(ln for ln in ax.get_lines() if ln.get_label() == "mean Jaccard")
    np.testing.assert_array_equal(curve.get_xdata(), table.n_neighbors)
    np.testing.assert_array_equal(curve.get_ydata(), table.jaccard)
    vertical = {ln.get_label(): ln.get_xdata()[0] for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1}
    # the trivial end (n = n_obs, Jaccard 1) is not the peak: 160 is
    assert vertical == {"peak: n = 160 (0.60)": 160, f"localities: n = {N_NEIGH}": N_NEIGH}
    random_sets = next(ln for ln in ax.get_lines() if ln.get_label() == "random sets")
    x = random_sets.get_xdata()
    np.testing.assert_allclose(random_sets.get_ydata(), x / (2 * N_OBS - x))
    assert ax.get_xscale() == "log"
    del adata.uns["lava"]["localities"]
    ax = lava.pl.neighborhood_retention(adata, baseline=False, logx=False, show=False)
    assert [ln.get_label() for ln in ax.get_lines()] == ["mean Jaccard", "peak: n = 160 (0.60)"]
