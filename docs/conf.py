"""Sphinx configuration: myst-nb for Markdown and executed notebooks, autodoc + autosummary + napoleon for the API."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Document the source tree even when lava is not installed (an installed lava takes precedence otherwise).
sys.path.insert(0, str(HERE.parent / "src"))

import lava  # noqa: E402

project = "lava"
author = "lava developers"
copyright = f"{date.today().year}, {author}"
release = lava.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# Markdown (MyST) and notebooks; the tutorials are committed executed, so nothing runs at build time.
# ".rst" first: autosummary writes its stubs (reST) with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]

# API: numpydoc docstrings through napoleon; one page per object under generated/ (git-ignored).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_ivar = True
napoleon_use_param = True

# Links into the scverse and numpy/pandas docs. Each project's full inventory is fetched first; a build machine
# without internet falls back to the small committed inventory of the objects lava refers to
# (docs/_inventories/make_inventories.py), which Sphinx reports at info level, not as a warning.
INVENTORIES = HERE / "_inventories"
intersphinx_mapping = {
    name: (url, (None, str(INVENTORIES / f"{name}.inv")))
    for name, url in {
        "anndata": "https://anndata.readthedocs.io/en/stable/",
        "scanpy": "https://scanpy.readthedocs.io/en/stable/",
        "numpy": "https://numpy.org/doc/stable/",
        "pandas": "https://pandas.pydata.org/docs/",
    }.items()
}
intersphinx_timeout = 10

html_theme = "furo"
html_title = f"lava {release}"
html_static_path: list[str] = []  # the plotting page's figures (_static/plots) are images Sphinx copies itself
