"""The public API follows scanpy's conventions (DESIGN.md, STYLE.md), checked over every public function."""

from __future__ import annotations

import inspect
import re

import pytest
from anndata import AnnData

import lava

P = inspect.Parameter

TOOLS = [getattr(lava.tl, name) for name in lava.tl.__all__]
PLOTS = [getattr(lava.pl, name) for name in getattr(lava.pl, "__all__", [])]
GETTERS = [getattr(lava.get, name) for name in lava.get.__all__]
#: The names a return annotation may use, per module (as scanpy's package-structure test checks return types).
RETURN_NAMES = {
    "tl": {"AnnData", "None"},
    "pl": {"Axes", "Figure", "list", "None"},
    "get": {"pd", "DataFrame", "np", "ndarray", "dict", "str", "Any"},
}
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


def _annotation_names(annotation) -> set[str]:
    """The names an annotation uses: ``"pd.DataFrame | None"`` gives {"pd", "DataFrame", "None"}.

    With ``from __future__ import annotations`` an annotation is its source text; a class stands for its name.
    """
    if annotation is P.empty or annotation is inspect.Signature.empty:
        return set()
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    return set(re.findall(r"[A-Za-z_]\w*", text))


@pytest.mark.parametrize("func", TOOLS + PLOTS + GETTERS, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_first_parameter_is_annotated_anndata(func):
    first = next(iter(inspect.signature(func).parameters.values()))
    assert first.name == "adata", f"{func.__name__}: the first parameter is {first.name!r}"
    assert first.annotation is AnnData or first.annotation == "AnnData", (
        f"{func.__name__}: annotate the first parameter as adata: AnnData, not {first.annotation!r}"
    )


@pytest.mark.parametrize(
    ("module", "func"),
    [("tl", f) for f in TOOLS] + [("pl", f) for f in PLOTS] + [("get", f) for f in GETTERS],
    ids=lambda x: x if isinstance(x, str) else x.__name__,
)
def test_return_type_is_annotated(module, func):
    signature = inspect.signature(func)
    names = _annotation_names(signature.return_annotation)
    assert names, f"lava.{module}.{func.__name__} has no return annotation"
    allowed = RETURN_NAMES[module]
    assert names <= allowed, f"lava.{module}.{func.__name__} returns {signature.return_annotation!r}: not {allowed}"
    if module == "tl":
        # a tool returns None, or the modified copy with copy=True (documented in its Returns section)
        expected = {"AnnData", "None"} if "copy" in signature.parameters else {"None"}
        assert names == expected, f"lava.tl.{func.__name__} -> {signature.return_annotation!r}"
    if module == "pl":
        assert {"Figure", "None"} <= names, f"lava.pl.{func.__name__} returns a Figure (return_fig) or None (show)"
    if module == "get":
        assert "None" not in names


def test_annotation_checks_can_fail():
    """The checks above reject what they should (guards against a check that passes on everything)."""

    def untyped(adata, *, key="lava"):
        return None

    def wrong(adata: int, *, key: str = "lava") -> pd.DataFrame:  # noqa: F821 (a string annotation)
        return None

    assert _annotation_names(inspect.signature(untyped).return_annotation) == set()
    assert inspect.signature(untyped).parameters["adata"].annotation is P.empty
    assert inspect.signature(wrong).parameters["adata"].annotation == "int"
    assert not _annotation_names(inspect.signature(wrong).return_annotation) <= RETURN_NAMES["pl"]
