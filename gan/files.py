"""Writing files so that a crash never leaves half of one: every file the lab writes (results.json, checkpoints,
sample grids, the evaluator's cache) is written beside its path and renamed over it, so a reader never sees a
partial file, and a full or read-only disk is one ``StorageError`` that says the previous file was kept.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gan.errors import StorageError

# The errors a full or read-only disk raises, as the lab words them.
DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
}
# What torch's own file writer (torch.save to a path) raises when a write comes up short: a RuntimeError that
# hides the OSError (``[enforce fail at inline_container.cc:...] . unexpected pos ...``).
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
LOW_SPACE = 1 << 20  # bytes: a folder with less free space than this counts as a full disk


def human_size(size: int) -> str:
    """``512 bytes``, ``4.2 kB``, ``16.8 MB``, ``63.0 GB``."""
    if size < 1000:
        return f"{size} bytes"
    unit, scale = next(((u, f) for u, f in (("kB", 1e3), ("MB", 1e6)) if size < f * 1000), ("GB", 1e9))
    return f"{size / scale:.1f} {unit}"


def free_space(folder: Path) -> int | None:
    """Bytes free to this user in ``folder`` (or its nearest existing parent); None when it cannot be told."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def storage_error(path: Path, problem: str, kept: str, needed: int | None = None) -> StorageError:
    """The one message for a file that could not be written: which, why, what was kept, how much space it needed
    and how much is free (when known)."""
    space = []
    if needed is not None:
        space.append(f"it needs {human_size(needed)}")
    free = free_space(path.parent)
    if free is not None and problem != DISK_PROBLEMS[errno.EROFS]:
        space.append(f"{human_size(free)} free")
    detail = "; ".join([kept, ", ".join(space)] if space else [kept])
    return StorageError(f"Cannot write {path}: {problem} ({detail}). Free space or choose a writable folder.")


def disk_problem(exc: BaseException, folder: Path | None = None) -> str | None:
    """What a failed write says of the disk: "the disk is full" (also for torch's RuntimeError of a short write when
    ``folder`` is nearly full), "the file system is read-only", another OSError's text; None for an error that is
    not a write failure."""
    if isinstance(exc, OSError):
        return DISK_PROBLEMS.get(exc.errno) or exc.strerror or str(exc)
    if isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in TORCH_WRITE_FAILURES):
        free = free_space(folder) if folder is not None else None
        if free is not None and free < LOW_SPACE:
            return DISK_PROBLEMS[errno.ENOSPC]
        return f"the write came up short ({str(exc).splitlines()[0][:160]})"
    return None


def atomic_write(path: str | Path, write: Callable[[Path], Any], needed: int | None = None) -> Path:
    """``write(tmp)`` a file beside ``path``, then rename it over ``path`` (an atomic step on one file system).

    A write that fails for the disk (an ``OSError``, or torch's ``RuntimeError`` of a short write) removes the
    temporary file and raises one ``StorageError`` naming ``path`` (with ``needed`` bytes, when the caller knows
    them, and the space free); the previous file is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    problem: str | None = None
    code: int | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except StorageError:
        raise
    except (OSError, RuntimeError) as exc:
        problem = disk_problem(exc, path.parent)
        if problem is None:
            raise
        full = problem == DISK_PROBLEMS[errno.ENOSPC]
        code = exc.errno if isinstance(exc, OSError) else (errno.ENOSPC if full else None)
        # the traceback would hold torch's writer (and its open file) alive: the space it took is freed only
        # once both are gone, and results.json still has to be written after this
        exc.__traceback__ = None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    if problem is not None:
        kept = f"the previous {path.name} is kept as it was" if path.exists() else f"no {path.name} was written"
        error = storage_error(path, problem, kept, needed)
        error.errno = code
        raise error
    return path


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> Path:
    """``data`` into ``path`` atomically; a full disk's message says how much space the file needed."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # closed (and its space freed when removed) before anything else is written
            fh.write(data)

    return atomic_write(path, write, needed=len(data))


def save_torch_atomic(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` into ``path`` atomically: serialized in memory first, then written as bytes, so that a
    full disk is an ``OSError`` of this process's own file (torch's writer on a path raises an opaque RuntimeError and
    keeps its file open) and the message knows the size."""
    import torch  # here: gan.report writes files too and never needs torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getbuffer())


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) into ``path`` atomically."""
    return write_bytes_atomic(path, text.encode())


@contextlib.contextmanager
def text_file_atomic(path: str | Path) -> Iterator[io.StringIO]:
    """A text buffer to write (``csv`` takes it as a file opened with ``newline=""``), written into ``path``
    atomically when the block ends without an error."""
    buffer = io.StringIO(newline="")
    yield buffer
    write_text_atomic(path, buffer.getvalue())


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """A matplotlib figure into ``path`` (its format from the suffix) atomically."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=2, default=str).encode())
