"""The public API follows scanpy's conventions (DESIGN.md, STYLE.md), checked over every public function."""

from __future__ import annotations

import inspect

import pytest

import lava

P = inspect.Parameter

TOOLS = [getattr(lava.tl, name) for name in lava.tl.__all__]
PLOTS = [getattr(lava.pl, name) for name in getattr(lava.pl, "__all__", [])]
# Tools that take one or two positional arguments after adata (scanpy style: the essential input).
POSITIONAL = {
    "amf": {"n_modules"},
    "enrich": {"gene_sets"},
    "associate": {"groupby"},
    "select_n_modules": {"n_modules"},
}
RANDOM = {"localities", "amf", "select_n_modules", "associate", "neighborhood_retention"}


def _params(func):
    return list(inspect.signature(func).parameters.values())


@pytest.mark.parametrize("func", TOOLS, ids=lambda f: f.__name__)
def test_tool_signature(func):
    params = _params(func)
    assert params[0].name == "adata"
    assert params[0].kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
    positional = {p.name for p in params[1:] if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)}
    assert positional <= POSITIONAL.get(func.__name__, set()), f"{func.__name__}: {positional} should be keyword-only"
    names = {p.name for p in params}
    assert {"key", "key_added"} & names, f"{func.__name__} needs key= or key_added="
    for p in params:
        if p.name in ("key", "key_added"):
            assert p.kind is P.KEYWORD_ONLY
            assert p.default == "lava"
    assert "copy" in names, f"{func.__name__} needs copy="
    copy = inspect.signature(func).parameters["copy"]
    assert copy.kind is P.KEYWORD_ONLY
    assert copy.default is False
    assert not names & {"seed", "random_state", "random_seed"}, "randomness goes through rng="
    if func.__name__ in RANDOM:
        assert "rng" in names, f"{func.__name__} is random and needs rng="
    for p in params[1:]:
        if isinstance(p.default, bool):
            assert p.kind is P.KEYWORD_ONLY, f"{func.__name__}: boolean {p.name} must be keyword-only"


@pytest.mark.parametrize("func", TOOLS + PLOTS, ids=lambda f: f.__name__)
def test_numpydoc(func):
    doc = inspect.getdoc(func) or ""
    assert "Parameters\n----------" in doc, f"{func.__name__} lacks a numpydoc Parameters section"
    documented = set()
    for line in doc.splitlines():
        head = line.split(":")[0].strip()
        for part in head.split(","):
            documented.add(part.strip().lstrip("*"))
    missing = [p.name for p in _params(func) if p.kind is not P.VAR_KEYWORD and p.name not in documented]
    assert not missing, f"{func.__name__}: undocumented parameters {missing}"
    if func in TOOLS:
        assert "Returns\n-------" in doc, f"{func.__name__} must document what it writes (Returns section)"


@pytest.mark.parametrize("func", PLOTS, ids=lambda f: f.__name__)
def test_plot_signature(func):
    params = inspect.signature(func).parameters
    assert next(iter(params)) == "adata"
    for name in ("show", "return_fig", "key"):
        assert name in params, f"lava.pl.{func.__name__} needs {name}="
        assert params[name].kind is P.KEYWORD_ONLY
    assert params["show"].default is None
    assert params["return_fig"].default is False


def test_public_core_names():
    for name in ("place_localities", "locality_correlations", "fit_amf"):
        assert callable(getattr(lava.core, name))
