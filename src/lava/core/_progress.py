"""Progress bars: tqdm's notebook widget in Jupyter when ipywidgets is installed, its text bar everywhere else.

In a Jupyter kernel without ipywidgets, ``tqdm.auto`` warns ("IProgress not found", a ``TqdmWarning``) and then
draws the text bar. Without ipywidgets lava asks for the text bar directly: the same bar, no warning.
"""

from __future__ import annotations

import importlib.util


def bar_class() -> type:
    """Return the tqdm class to draw with: ``tqdm.auto``'s choice where ipywidgets is installed, else ``tqdm.std``'s."""
    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm


def tqdm(*args, **kwargs):
    """Return a progress bar of :func:`bar_class` (takes tqdm's arguments)."""
    return bar_class()(*args, **kwargs)
