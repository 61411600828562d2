"""Writing files so that a crash never leaves half of one: every file the lab writes (results.json, checkpoints,
sample grids, the evaluator's cache) is written beside its path and renamed over it, so a reader never sees a
partial file, and a full or read-only disk is one ``StorageError`` that says the previous file was kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gan.errors import StorageError


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` a file beside ``path``, then rename it over ``path`` (an atomic step on one file system)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        problem = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only"}.get(
            exc.errno, exc.strerror or str(exc)
        )
        kept = f"the previous {path.name} is kept as it was" if path.exists() else f"no {path.name} was written"
        error = StorageError(f"Cannot write {path}: {problem} ({kept}). Free space or choose a writable folder.")
        error.errno = exc.errno
        raise error from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))
