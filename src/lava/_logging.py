"""Logging in scanpy's manner: ``computing ...``, ``finished (0:00:12)``, ``added ... to uns``.

No handlers or ``basicConfig`` at import; users configure ``logging.getLogger("lava")`` as they like.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from time import perf_counter

logger = logging.getLogger("lava")


def info(msg: str) -> float:
    """Log ``msg`` at INFO level and return a start time for :func:`finished`."""
    logger.info(msg)
    return perf_counter()


def finished(start: float, msg: str = "") -> None:
    """Log ``finished (h:mm:ss)`` since ``start``, followed by ``msg``."""
    elapsed = timedelta(seconds=round(perf_counter() - start))
    logger.info("    finished (%s)%s", elapsed, f": {msg}" if msg else "")


def warning(msg: str) -> None:
    """Log a warning that does not warrant a Python warning."""
    logger.warning(msg)
