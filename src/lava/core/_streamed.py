"""Locality correlations ``C`` read from an on-disk store (zarr, h5py, memmap) a block of rows at a time.

:func:`lava.core.fit_amf` trains on minibatches of localities and evaluates the loss a block of localities at a
time, so it never needs all of ``C`` at once. :class:`StreamedC` stands in for the ``(l, P')`` tensor of the
in-memory path: it supports the few operations the training code uses (``shape``, ``device``, ``C[r0:r1]``,
``C[r0:r1, j0:j1]``, ``C.index_select(0, rows)``) and reads only the rows asked for, keeping the kept (non-zero
somewhere) pairs. The last block read is cached, so the column sweeps over one minibatch read it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def is_store(C) -> bool:
    """Whether ``C`` is an on-disk array to stream from (zarr array, h5py dataset or numpy memmap)."""
    if isinstance(C, np.memmap):
        return True
    if isinstance(C, np.ndarray):
        return False
    root = type(C).__module__.split(".")[0]
    return root in ("zarr", "h5py") and hasattr(C, "shape") and hasattr(C, "__getitem__")


class StreamedC:
    """Rows of an on-disk ``(l, P)`` array as float32 tensors on ``device``, restricted to the columns ``kept``."""

    def __init__(self, store, kept: np.ndarray, device):
        import torch

        self.store = store
        self.columns = None if kept.all() else np.flatnonzero(kept)
        self.device = torch.device(device)
        self.shape = (int(store.shape[0]), int(store.shape[1] if self.columns is None else self.columns.size))
        self._key = None
        self._block = None

    def _load(self, rows: np.ndarray | slice) -> np.ndarray:
        if isinstance(rows, slice):
            block = np.asarray(self.store[rows], dtype=np.float32)
        else:
            block = np.empty((rows.size, self.store.shape[1]), dtype=np.float32)
            for i, r in enumerate(rows.tolist()):  # one row (one chunk of a row-chunked store) at a time
                block[i] = self.store[r]
        if self.columns is not None:
            block = block[:, self.columns]
        block = np.ascontiguousarray(block)
        # a slice of a read-only memmap is a read-only view: copy it (torch warns on non-writable arrays)
        return block if block.flags.writeable else block.copy()

    def _cached(self, key, rows) -> torch.Tensor:
        import torch

        if key != self._key:
            self._block = self._key = None  # free the previous block first
            self._block = torch.from_numpy(self._load(rows)).to(self.device)
            self._key = key
        return self._block

    def index_select(self, dim: int, rows: torch.Tensor) -> torch.Tensor:
        if dim != 0:
            msg = "StreamedC selects rows only."
            raise ValueError(msg)
        r = rows.detach().cpu().numpy().astype(np.int64)
        return self._cached(("rows", *r.tolist()), r)

    def __getitem__(self, key) -> torch.Tensor:
        cols = slice(None)
        if isinstance(key, tuple):
            key, cols = key
        if not isinstance(key, slice) or key.step not in (None, 1):
            msg = "StreamedC supports contiguous row slices, C[r0:r1] or C[r0:r1, j0:j1]."
            raise TypeError(msg)
        r0, r1, _ = key.indices(self.shape[0])
        block = self._cached(("slice", r0, r1), slice(r0, r1))
        return block if cols == slice(None) else block[:, cols]

    def row_sq_norms(self, chunk: int = 64) -> torch.Tensor:
        """``||C_i||^2`` per locality (float64, on the device), one pass over the store."""
        import torch

        out = [
            (torch.from_numpy(self._load(slice(r0, r0 + chunk))).double() ** 2).sum(1)
            for r0 in range(0, self.shape[0], chunk)
        ]
        return torch.cat(out).to(self.device)

    def numpy_rows(self) -> KeptRows:
        """Return a numpy view of the kept columns by row slices (what ``locality_weights`` reads)."""
        return KeptRows(self)


class KeptRows:
    """``C[r0:r1]`` as float32 numpy arrays of the kept columns, read from the store."""

    def __init__(self, streamed: StreamedC):
        self.streamed = streamed
        self.shape = streamed.shape

    def __getitem__(self, key) -> np.ndarray:
        r0, r1, _ = key.indices(self.shape[0])
        return self.streamed._load(slice(r0, r1))
