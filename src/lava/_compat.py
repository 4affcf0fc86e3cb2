"""Small shared helpers: random generators, torch devices, the memory a step may use."""

from __future__ import annotations

import os
import re
from pathlib import Path
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


#: Environment variable that overrides the memory a step may allocate: bytes, with an optional suffix K, M, G or T
#: (powers of 1024; "64G"), or "none" to turn the check off.
MEMORY_LIMIT_ENV = "LAVA_MEMORY_LIMIT"


class MemoryLimitError(MemoryError, ValueError):
    """A step would need more memory than is available; raised before anything is allocated or stored.

    Both a :class:`MemoryError` (what numpy would raise later, less helpfully) and a :class:`ValueError` (the input
    asks for too much: a user error with a fix in the message, reported without a traceback by the command line).
    """


def available_memory() -> int | None:
    """Bytes this process can still allocate: the system's available memory, capped by a cgroup limit; None if unknown.

    The system figure comes from psutil when it is installed, else from ``MemAvailable`` in ``/proc/meminfo``; a
    container's cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) minus its usage caps it.
    """
    found = []
    try:
        import psutil

        found.append(int(psutil.virtual_memory().available))
    except (ImportError, OSError, AttributeError):
        meminfo = _read_text("/proc/meminfo")
        match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", meminfo or "", flags=re.M)
        if match:
            found.append(int(match.group(1)) * 1024)
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_text(limit_file), _read_text(usage_file)
        if limit and usage and limit.strip().isdigit() and usage.strip().isdigit():
            if int(limit) < 2**60:  # cgroup v1 writes a huge number for "no limit"
                found.append(max(0, int(limit) - int(usage)))
            break
    return min(found) if found else None


def memory_limit() -> tuple[int | None, str]:
    """Return ``(bytes, source)``: the memory a step may allocate and where that figure comes from.

    ``LAVA_MEMORY_LIMIT`` (see :data:`MEMORY_LIMIT_ENV`) overrides :func:`available_memory`; ``bytes`` is None when
    the check is off or the available memory is unknown.
    """
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not text:
        return available_memory(), "available memory"
    if text.lower() == "none":
        return None, f"{MEMORY_LIMIT_ENV}=none"
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, flags=re.I)
    if match is None:
        msg = (
            f"{MEMORY_LIMIT_ENV}={text!r} is not a memory size; set it to bytes with an optional K, M, G or T suffix "
            "(e.g. 64G), or to 'none' to turn the memory check off."
        )
        raise ValueError(msg)
    unit = match.group(2).upper()
    scale = 1024 ** ("KMGT".index(unit) + 1) if unit else 1
    return int(float(match.group(1)) * scale), f"{MEMORY_LIMIT_ENV}={text}"


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None
