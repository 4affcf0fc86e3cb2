"""Long runs can resume: lava.tl.select_n_modules with a checkpoint, lava.tl.amf interrupted by Ctrl-C.

The core-level checkpoint logic (run files, refused arguments) is tested in tests/core/test_selection.py; here the
whole tool is interrupted for real (KeyboardInterrupt inside an AMF epoch, or a crash in a fit) and resumed.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest

import lava
from lava.core import selection as core_selection
from reliability_helpers import AMF, assert_adata_equal, assert_equal_value, interrupt_step, pipeline

# swaps=0: every run is one fit of max_epochs epochs, so an interrupt at a given epoch falls in a known run
SELECT = {"n_modules": [2, 3], "n_runs": 2, "max_epochs": 6, "rng": 5, "progress": False, "swaps": 0}


@pytest.fixture(scope="module")
def correlated() -> ad.AnnData:
    return pipeline(until="correlations")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    return value


def _selection(adata) -> dict:
    return _without_timings(dict(adata.uns["lava"]["selection"]))


@pytest.fixture(scope="module")
def uninterrupted(correlated) -> dict:
    adata = correlated.copy()
    lava.tl.select_n_modules(adata, **SELECT)
    return _selection(adata)


def test_select_n_modules_resumes_after_ctrl_c(correlated, uninterrupted, monkeypatch, tmp_path):
    adata = correlated.copy()
    before = adata.copy()
    checkpoint = tmp_path / "selection"
    interrupt_step(monkeypatch, at=2 * SELECT["max_epochs"] + 3)  # in the third run: two runs finished
    with pytest.raises(KeyboardInterrupt, match="call again with the same arguments to resume"):
        lava.tl.select_n_modules(adata, checkpoint=checkpoint, **SELECT)
    assert_adata_equal(before, adata)  # nothing stored by the interrupted call
    assert sorted(p.name for p in checkpoint.glob("m*_r*.npz")) == ["m2_r0.npz", "m2_r1.npz"]

    monkeypatch.undo()
    fitted = []
    fit_amf = core_selection.fit_amf
    monkeypatch.setattr(core_selection, "fit_amf", lambda C, M, **kw: (fitted.append(M), fit_amf(C, M, **kw))[1])
    lava.tl.select_n_modules(adata, checkpoint=checkpoint, **SELECT)
    assert fitted == [3, 3]  # the finished runs were read back, not refitted
    assert_equal_value(uninterrupted, _selection(adata), "selection")
    assert lava.get.params(adata, "selection")["checkpoint"] == str(checkpoint)


def test_select_n_modules_resumes_after_a_crash(correlated, uninterrupted, monkeypatch, tmp_path):
    """An exception in a fit (out of memory, a killed worker) loses only the run in progress."""
    adata = correlated.copy()
    fit_amf = core_selection.fit_amf
    fitted = []

    def crashing(C, M, **kwargs):
        fitted.append(M)
        if len(fitted) == 4:
            raise MemoryError("simulated")
        return fit_amf(C, M, **kwargs)

    monkeypatch.setattr(core_selection, "fit_amf", crashing)
    with pytest.raises(MemoryError):
        lava.tl.select_n_modules(adata, checkpoint=tmp_path, **SELECT)
    assert "selection" not in adata.uns["lava"]
    fitted.clear()
    lava.tl.select_n_modules(adata, checkpoint=tmp_path, **SELECT)
    assert fitted == [3]
    assert_equal_value(uninterrupted, _selection(adata), "selection")


def test_checkpoint_of_other_arguments_is_refused_before_anything_changes(correlated, tmp_path):
    adata = correlated.copy()
    lava.tl.select_n_modules(adata, checkpoint=tmp_path, **{**SELECT, "n_modules": [2]})
    before = adata.copy()
    with pytest.raises(ValueError, match="pass the same arguments to resume, or another checkpoint directory"):
        lava.tl.select_n_modules(adata, checkpoint=tmp_path, **{**SELECT, "n_modules": [2], "rng": 6})
    assert_adata_equal(before, adata)


def test_interrupted_amf_keeps_the_best_matrices(correlated, monkeypatch, tmp_path):
    """Ctrl-C in epoch 5: the best of the first 4 epochs is stored, marked interrupted, and the pipeline goes on."""
    adata = correlated.copy()
    reference = correlated.copy()
    lava.tl.amf(reference, 3, n_runs=1, **{**AMF, "max_epochs": 4})
    interrupt_step(monkeypatch, at=5)
    with pytest.warns(UserWarning, match="interrupted after 4 epochs"):
        lava.tl.amf(adata, 3, n_runs=1, **AMF)
    stored = adata.uns["lava"]["amf"]
    assert stored["interrupted"] is True
    assert stored["converged"] is False
    assert stored["n_epochs"] == 4
    # the same matrices as a fit asked to stop after 4 epochs: nothing of the finished epochs is lost
    np.testing.assert_array_equal(stored["modules"], reference.uns["lava"]["amf"]["modules"])
    np.testing.assert_array_equal(stored["presence"], reference.uns["lava"]["amf"]["presence"])
    # the same loss up to the order of summation (the capped fit evaluates its last epoch separately; the
    # interrupted one had it from the next step's computation)
    assert stored["loss"] == pytest.approx(reference.uns["lava"]["amf"]["loss"], rel=1e-12)
    assert lava.get.params(adata, "amf")["max_epochs"] == AMF["max_epochs"]  # what was asked, for a rerun
    monkeypatch.undo()
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert back.uns["lava"]["amf"]["interrupted"]  # the mark survives the file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lava.tl.module_genes(back, threshold=0.4)
    assert len(lava.get.module_genes(back)) > 0
