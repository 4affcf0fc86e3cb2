"""Logging in scanpy's manner: ``computing ...``, ``finished (0:00:12)``, ``added ... to uns``.

Every message goes through ``logging.getLogger("lava")``, and shows exactly where and when scanpy's own would:

- where standard logging is configured for it (``logging.getLogger("lava").setLevel(...)`` or a handler that takes
  the record, e.g. ``logging.basicConfig(level=logging.INFO)``; the ``lava`` command adds its own), that decides;
- otherwise, once scanpy is imported, the record goes to scanpy's logger: it shows when ``sc.settings.verbosity``
  allows its level (``"info"`` or 2 for the ``computing ...`` lines; warnings by default), in
  ``sc.settings.logfile`` (the notebook's output in Jupyter, stderr elsewhere), formatted as scanpy's lines;
- without scanpy, standard logging's defaults: warnings on stderr, nothing else.

Nothing is configured at import (no ``basicConfig``, no handler); the ``lava`` logger is only given this routing.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from time import perf_counter


class _LavaLogger(logging.Logger):
    """The ``lava`` logger: standard logging where it is configured for lava's records, else scanpy's logger."""

    def _scanpy_root(self, level: int) -> logging.Logger | None:
        """Return scanpy's root logger when the record at ``level`` should follow scanpy, else None."""
        if self.level != logging.NOTSET:  # lava's own level was set (by the user, the CLI, pytest's caplog)
            return None
        if super().isEnabledFor(level) and self.hasHandlers():  # a configured handler takes it
            return None
        scanpy = sys.modules.get("scanpy")  # follow scanpy only where it is in use; never import it for a log line
        root = getattr(getattr(scanpy, "settings", None), "_root_logger", None)
        return root if isinstance(root, logging.Logger) else None

    def isEnabledFor(self, level: int) -> bool:
        root = self._scanpy_root(level)
        return super().isEnabledFor(level) if root is None else root.isEnabledFor(level)

    def callHandlers(self, record: logging.LogRecord) -> None:
        root = self._scanpy_root(record.levelno)
        if root is None:
            super().callHandlers(record)
            return
        record.time_passed = None  # the fields scanpy's formatter reads (lava's lines carry their own times)
        record.deep = None
        root.handle(record)


logger = logging.getLogger("lava")
if not isinstance(logger, _LavaLogger):  # also when the user created it before importing lava: keeps its settings
    logger.__class__ = _LavaLogger


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
