"""Progress bars tell the truth: labelled phases, totals that are never passed, no warning without ipywidgets."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from tqdm.std import tqdm as std_tqdm

import lava
from lava.core import _progress, fit_amf, place_localities


class Recorder(std_tqdm):
    """A text bar into a buffer that records ``(n, total)`` after every update."""

    bars: ClassVar[list[Recorder]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "file": io.StringIO()})
        self.states: list[tuple[int, int | None]] = []
        Recorder.bars.append(self)

    def update(self, n=1):
        out = super().update(n)
        self.states.append((self.n, self.total))
        return out


@pytest.fixture
def bars(monkeypatch) -> list[Recorder]:
    Recorder.bars = []
    monkeypatch.setattr(_progress, "bar_class", lambda: Recorder)
    return Recorder.bars


def _planted(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    modules = (rng.random((3, 300)) < 0.15) * rng.uniform(0.5, 1.0, (3, 300))
    presence = rng.random((60, 3)) * (rng.random((60, 3)) < 0.6)
    C = presence[:, :, None] * modules[None]
    return (C.max(axis=1) + 0.02 * rng.random((60, 300))).astype(np.float32)


def _never_passed(bar: Recorder) -> None:
    assert bar.states, "the bar was never updated"
    for n, total in bar.states:
        assert total is not None
        assert n <= total, (bar.desc, bar.states)


def test_amf_bars_are_labelled_per_phase_and_end_at_their_total(bars):
    fit = fit_amf(_planted(), 3, rng=0, max_epochs=400, patience=20, progress=True, swaps=0)
    assert [b.desc for b in bars] == ["AMF (expectile)", "AMF (refine)"]
    for bar in bars:
        _never_passed(bar)
        assert bar.total <= 400
    assert sum(b.n for b in bars) == fit.n_epochs
    if fit.converged:  # the stopping rule ended the fit exactly where the bar said it could
        assert bars[-1].n == bars[-1].total
    # the total is the first epoch the rule may stop at, not max_epochs
    first = bars[0]
    assert first.states[0][1] < 400
    assert "patience=" in str(first.postfix)
    assert "/20" in str(first.postfix)


def test_a_swap_fit_has_bars_of_its_own(bars):
    # two modules for three programmes: one locality set stays unexplained, so a swap is tried (and not kept)
    from test_amf_swaps import three_programmes

    fit = fit_amf(three_programmes(), 2, rng=0, swaps=1, progress=True)
    assert [b.desc for b in bars] == [
        "AMF (expectile)",
        "AMF (refine)",
        "AMF swap 1 (expectile)",
        "AMF swap 1 (refine)",
    ]
    assert sum(b.n for b in bars) == fit.n_epochs + fit.swap_epochs
    for bar in bars:
        _never_passed(bar)


def test_amf_bar_of_the_paper_loss(bars):
    fit = fit_amf(_planted(), 3, rng=0, max_epochs=300, patience=15, loss="paper", progress=True)
    assert [b.desc for b in bars] == ["AMF (paper)"]
    _never_passed(bars[0])
    assert bars[0].n == fit.n_epochs
    if fit.converged:
        assert bars[0].n == bars[0].total
    else:
        assert bars[0].n == 300 == bars[0].total


def test_amf_bar_stops_at_max_epochs(bars):
    fit_amf(_planted(), 3, rng=0, max_epochs=7, patience=100, loss="paper", progress=True)
    assert bars[0].states[-1] == (7, 7)


def test_placement_bar_grows_when_direct_runs_past_its_budget(bars):
    Z = np.random.default_rng(1).normal(size=(400, 2)).astype(np.float32)
    result = place_localities(Z, n_neighbors=40, overlap=2, maxfun=12, restarts=2, rng=0, progress=True)
    assert result.n_evaluations > 12  # DIRECT finished its iteration past the budget of 10 (+ 2 restarts)
    (bar,) = bars
    _never_passed(bar)
    assert bar.n == bar.total == result.n_evaluations


def test_no_progress_draws_nothing(bars):
    fit_amf(_planted(), 3, rng=0, max_epochs=5, progress=False)
    assert all(b.disable for b in bars)


def test_text_bar_without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed
    assert _progress.bar_class() is std_tqdm


# a Jupyter kernel as tqdm.auto recognises one (ipykernel's shell module loaded), without ipywidgets
FAKE_KERNEL = """
import sys, types, warnings
class ZMQInteractiveShell:
    config = {"IPKernelApp": {}}
ipython = types.ModuleType("IPython")
ipython.get_ipython = ZMQInteractiveShell
sys.modules["IPython"] = ipython
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
sys.modules["ipywidgets"] = None
warnings.simplefilter("always")
import numpy as np
from lava.core import place_localities
Z = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
place_localities(Z, n_neighbors=50, overlap=2, maxfun=10, rng=0, progress=True)
"""


def test_no_tqdm_warning_in_a_kernel_without_ipywidgets(tmp_path):
    """tqdm.auto warns "IProgress not found" there; lava draws the text bar without the warning."""
    script = tmp_path / "kernel.py"
    script.write_text(FAKE_KERNEL)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(lava.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IProgress" not in proc.stderr
    assert "TqdmWarning" not in proc.stderr
    assert "placing probes" in proc.stderr  # the text bar was drawn
