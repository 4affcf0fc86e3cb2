"""Small shared helpers: random generators, torch devices."""

from __future__ import annotations

from typing import Literal

import numpy as np

RngLike = int | np.random.Generator | None
Device = Literal["auto", "cpu", "cuda"] | str


def as_generator(rng: RngLike) -> np.random.Generator:
    """Return a numpy Generator for ``rng`` (SPEC 7): an int seeds a new one, a Generator is used as is."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, int | np.integer):
        return np.random.default_rng(rng)
    msg = f"rng must be an int, a numpy.random.Generator or None, got {type(rng).__name__}."
    raise TypeError(msg)


def as_seed(rng: RngLike) -> int:
    """Return a concrete integer seed for ``rng``, so that the seed actually used can be recorded in ``params``.

    An int is returned unchanged; a Generator (or None) draws one, which advances the Generator.
    """
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        if rng < 0:
            msg = f"rng must be a non-negative int, got {rng}."
            raise ValueError(msg)
        return int(rng)
    return int(as_generator(rng).integers(0, 2**31 - 1))


def resolve_device(device: Device = "auto"):
    """Return a ``torch.device``: CUDA when ``device="auto"`` finds one, else CPU."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"device={device!r} was asked for but torch finds no CUDA device; pass device='cpu' or device='auto'."
        raise ValueError(msg)
    return dev
