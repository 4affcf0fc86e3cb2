"""Checkpoints of :func:`lava.core.select_n_modules`: one file per finished run, written atomically.

A checkpoint directory holds ``arguments.json`` (the call's arguments and a fingerprint of ``C``; a call with other
arguments is refused) and one ``m{M}_r{r}.npz`` per run, each an :class:`~lava.core.AMFResult` field by field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .amf import AMFConfig, AMFResult

#: Version of the checkpoint layout, stored in ``arguments.json``.
_CHECKPOINT_FORMAT = 1


def _fingerprint(C: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str((C.shape, C.dtype.str)).encode())
    h.update(np.ascontiguousarray(C).view(np.uint8).reshape(-1))
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open_checkpoint(checkpoint: str | os.PathLike, spec: dict) -> Path:
    directory = Path(checkpoint)
    if directory.exists() and not directory.is_dir():
        msg = f"checkpoint={str(checkpoint)!r} exists and is not a directory; pass a directory path."
        raise ValueError(msg)
    directory.mkdir(parents=True, exist_ok=True)
    spec_file = directory / "arguments.json"
    if spec_file.exists():
        stored = json.loads(spec_file.read_text())
        if stored != spec:
            differ = sorted(k for k in set(stored) | set(spec) if stored.get(k) != spec.get(k))
            msg = (
                f"checkpoint {str(directory)!r} was written by a call with other arguments (differing: "
                f"{', '.join(differ)}); pass the same arguments to resume, or another checkpoint directory "
                "(or delete this one) to start afresh."
            )
            raise ValueError(msg)
    else:
        _atomic_write(spec_file, lambda f: f.write(json.dumps(spec, indent=1, sort_keys=True).encode()))
    return directory


def _save_run(path: Path, result: AMFResult) -> None:
    arrays: dict[str, np.ndarray] = {}
    none_fields = []
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if value is None:
            none_fields.append(field.name)
        elif isinstance(value, AMFConfig):  # JSON text: np.load without pickles
            arrays[f"{field.name}.__config__"] = np.asarray(json.dumps(value.to_dict(), sort_keys=True))
        elif isinstance(value, Mapping):
            arrays[f"{field.name}.__dict__"] = np.asarray(list(value), dtype=str)
            for name, item in value.items():
                arrays[f"{field.name}.{name}"] = np.asarray(item)
        else:
            arrays[field.name] = np.asarray(value)
    arrays["__none__"] = np.asarray(none_fields, dtype=str)
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_run(path: Path) -> AMFResult:
    with np.load(path, allow_pickle=False) as data:
        values: dict[str, Any] = {name: None for name in data["__none__"].tolist()}
        for field in dataclasses.fields(AMFResult):
            if f"{field.name}.__config__" in data:
                values[field.name] = AMFConfig(**json.loads(data[f"{field.name}.__config__"].item()))
            elif f"{field.name}.__dict__" in data:
                values[field.name] = {name: data[f"{field.name}.{name}"] for name in data[f"{field.name}.__dict__"]}
            elif field.name in data:
                item = data[field.name]
                values[field.name] = item.item() if item.ndim == 0 else item
    return AMFResult(**values)
