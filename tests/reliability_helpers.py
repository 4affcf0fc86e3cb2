"""Shared by the reliability tests: a tiny full pipeline and a field-by-field AnnData comparison."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

import lava

#: Small enough for the whole reliability suite to run in about a minute on 2 cores.
N_OBS, N_VARS, N_MODULES = 600, 20, 3
LOCALITIES = {"n_neighbors": 50, "overlap": 3.0, "maxfun": 10, "progress": False}
AMF = {"max_epochs": 30, "lr": 1e-2, "progress": False}


def interrupt_step(monkeypatch, at: int) -> dict:
    """Ctrl-C during the ``at``-th AMF training step, counted over all fits (one step per epoch when every locality
    is in one batch); returns the counter."""
    from lava.core import _amf_torch as amft

    calls = {"epochs": 0}
    step = amft._step

    def interrupted(*args, **kwargs):
        calls["epochs"] += 1
        if calls["epochs"] == at:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(amft, "_step", interrupted)
    return calls


def synthetic(**kwargs) -> ad.AnnData:
    """The synthetic data set with planted modules (600 x 20, 3 modules, a 2-D UMAP in obsm)."""
    return lava.datasets.synthetic(n_obs=N_OBS, n_vars=N_VARS, n_modules=N_MODULES, rng=0, **kwargs)


def gene_sets(adata: ad.AnnData) -> dict[str, list[str]]:
    """One set per planted module (plus a gene that is not measured) and one set of every gene."""
    sets = {f"planted{m}": [*adata.var_names[adata.var["module"] == m], "NOT_MEASURED"] for m in range(N_MODULES)}
    sets["everything"] = list(adata.var_names)
    return sets


def pipeline(adata: ad.AnnData | None = None, *, until: str = "association", key: str = "lava") -> ad.AnnData:
    """Run lava's steps in order up to and including ``until``; every step that stores something is run."""
    adata = synthetic() if adata is None else adata
    steps = ["localities", "correlations", "selection", "amf", "module_genes", "enrichment", "association"]
    for step in steps[: steps.index(until) + 1]:
        if step == "localities":
            lava.tl.localities(adata, key_added=key, **LOCALITIES)
        elif step == "correlations":
            lava.tl.correlations(adata, key=key, progress=False)
        elif step == "selection":
            lava.tl.select_n_modules(adata, [2, 3], n_runs=2, max_epochs=10, key=key, progress=False)
        elif step == "amf":
            lava.tl.amf(adata, N_MODULES, key=key, **AMF)
        elif step == "module_genes":
            lava.tl.module_genes(adata, threshold=0.4, key=key)
        elif step == "enrichment":
            lava.tl.enrich(adata, gene_sets(adata), min_size=2, key=key)
        elif step == "association":
            lava.tl.associate(adata, "condition", permutations=10, groups="donor", key=key)
    return adata


def assert_equal_value(a, b, where: str = "value") -> None:
    """Exact equality of two stored values: same type family, same dtype (strings: same text), same numbers."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping), f"{where}: {type(b).__name__} instead of a dict"
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_equal_value(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), f"{where}: {type(b).__name__} instead of a DataFrame"
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif sparse.issparse(a):
        assert sparse.issparse(b), f"{where}: not sparse any more"
        assert a.format == b.format, f"{where}: sparse format changed"
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        assert (a != b).nnz == 0, f"{where}: values differ"
    elif isinstance(a, np.ndarray) and a.dtype.kind in "USOT":
        assert isinstance(b, np.ndarray), f"{where}: {type(b).__name__} instead of an array of text"
        assert b.dtype.kind in "USOT", f"{where}: dtype {b.dtype} instead of text"
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        assert _text(a) == _text(b), f"{where}: text differs"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{where}: {type(b).__name__} instead of an ndarray"
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)
    else:
        assert type(a) is type(b) or (np.ndim(a) == 0 and np.ndim(b) == 0 and _scalar_kind(a) == _scalar_kind(b)), (
            f"{where}: type {type(a).__name__} != {type(b).__name__}"
        )
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN == NaN here


def _text(x: np.ndarray) -> list:
    """Text of an array of str, object or numpy's StringDType (what zarr gives back)."""
    return np.asarray(x, dtype=object).astype(str).tolist()


def _scalar_kind(x) -> str:
    if isinstance(x, bool | np.bool_):
        return "bool"
    if isinstance(x, str | np.str_):
        return "str"
    return np.asarray(x).dtype.kind


def assert_adata_equal(a: ad.AnnData, b: ad.AnnData) -> None:
    """Field by field: X, layers, obs, var, names, obsm, varm, obsp, varp, uns; and whether each is a view."""
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    assert a.is_view == b.is_view, "is_view changed"
    pd.testing.assert_index_equal(a.obs_names, b.obs_names)
    pd.testing.assert_index_equal(a.var_names, b.var_names)
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True, obj="obs")
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=True, obj="var")
    if a.X is None or b.X is None:
        assert a.X is None, "X changed"
        assert b.X is None, "X changed"
    else:
        assert_equal_value(_plain(a.X), _plain(b.X), "X")
    for field in ("layers", "obsm", "varm", "obsp", "varp"):
        x, y = getattr(a, field), getattr(b, field)
        assert set(x.keys()) == set(y.keys()), f"{field}: keys {sorted(x.keys())} != {sorted(y.keys())}"
        for k in x.keys():
            assert_equal_value(_plain(x[k]), _plain(y[k]), f"{field}[{k!r}]")
    assert_equal_value(dict(a.uns), dict(b.uns), "uns")


def _plain(x):
    """Views of arrays compare as the arrays they show."""
    if sparse.issparse(x):
        return x.copy() if not isinstance(x, sparse.spmatrix | sparse.sparray) else x
    return np.asarray(x) if not isinstance(x, pd.DataFrame) else x
