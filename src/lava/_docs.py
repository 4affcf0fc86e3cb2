"""Shared parameter text for docstrings (one place, so every tool describes a parameter the same way)."""

from __future__ import annotations

import re
from inspect import cleandoc

FRAGMENTS = {
    "adata": """\
adata
    Annotated data matrix (samples x features), an :class:`~anndata.AnnData`.""",
    "key": """\
key
    Where lava's results live: ``adata.uns[key]``, ``adata.obsm[f"{key}_presence"]``,
    ``adata.varm[f"{key}_modules"]``. Use another key to keep several analyses side by side.""",
    "key_added": """\
key_added
    Where to store the results: ``adata.uns[key_added]`` and ``adata.obs[f"{key_added}_..."]``.
    A new key leaves earlier results under other keys intact.""",
    "copy": """\
copy
    Return a modified copy instead of writing to ``adata``.""",
    "rng": """\
rng
    Seed (int) or :class:`numpy.random.Generator`. The seed actually used is recorded in ``params``.""",
    "device": """\
device
    ``"auto"`` uses CUDA when torch finds it and the CPU otherwise; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``.""",
    "progress": """\
progress
    Show a progress bar (tqdm).""",
    "show_panels": """\
show
    Show the figure. Default: show unless ``return_fig`` is set.
return_fig
    Return the Figure instead of the Axes.""",
    "show": """\
ax
    A matplotlib Axes to draw into (single-panel plots only).
show
    Show the figure (``plt.show()``). Default: show unless ``ax`` is given or ``return_fig`` is set, as in scanpy.
return_fig
    Return the :class:`~matplotlib.figure.Figure` instead of the Axes.""",
}


def doc_params(**extra: str):
    """Fill ``{name}`` placeholders (each alone on its line, at column 0) with the shared fragments."""
    fragments = {**FRAGMENTS, **extra}

    def decorator(obj):
        if obj.__doc__:
            doc = cleandoc(obj.__doc__)
            for name, text in fragments.items():
                # only a placeholder alone on its line: ``f"{key}_modules"`` in prose stays as written
                doc = re.sub(rf"^\{{{name}\}}[ \t]*$", lambda _m, text=text: text, doc, flags=re.M)
            obj.__doc__ = doc
        return obj

    return decorator
