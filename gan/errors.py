"""The lab's errors: one type per meaning, so that every entry point words them and exits alike.

Each message is one paragraph that names the bad value and the valid choices (or what to do). Entry points print
``error: MESSAGE`` and exit 2 for the first three, which are raised before any work starts or is written;
``RunFailed`` (exit 1) is a run that started and then stopped, and its results.json says why.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class LabError(Exception):
    """Any error this lab words for its users (the base of the four below)."""


class ConfigError(LabError, ValueError):
    """A config value or argument that cannot work (a bad key, type, value or combination of values)."""


class DataError(LabError, RuntimeError):
    """The data a run needs is missing, damaged or not good enough: MNIST's files, the evaluator's cache."""


class CheckpointError(LabError, ValueError):
    """A checkpoint that is missing, unreadable, not this lab's, or does not fit what it is asked to do."""


class StorageError(LabError, OSError):
    """A file the lab writes could not be written (a full or read-only disk); the previous file is kept."""


class RunFailed(LabError, RuntimeError):
    """The run stopped after it started: ``status`` ``diverged`` (a non-finite loss) or ``failed``."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def check_count(key: str, value: object, minimum: int, hint: str) -> int:
    """``value`` as an int of at least ``minimum``, else a ConfigError naming ``key``, the value and ``hint``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum} ({hint}), got {value!r}.")
    return value


def check_fraction(key: str, value: object, hint: str) -> float:
    """``value`` as a float in [0, 1], else a ConfigError naming ``key``, the value and ``hint``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be a number in [0, 1] ({hint}), got {value!r}.")
    return float(value)


class Interrupted(RunFailed):
    """The run was stopped by a signal (SIGTERM from a scheduler, SIGINT from Ctrl-C): each member's last.ckpt was
    saved and its results.json says ``interrupted``. Entry points exit 128 + the signal's number (143, 130)."""

    def __init__(self, signum: int, reason: str) -> None:
        super().__init__("interrupted", reason)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


@contextmanager
def exits_on_error() -> Iterator[None]:
    """An entry point's work: a ``LabError`` ends it with ``error: MESSAGE`` on stderr and exit status 2
    (``run diverged: ...`` and 1 for ``RunFailed``), never a traceback."""
    try:
        yield
    except Interrupted as exc:
        print(f"run {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except RunFailed as exc:
        print(f"run {exc}", file=sys.stderr)
        sys.exit(1)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
