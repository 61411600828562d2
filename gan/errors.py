"""The lab's errors: one type per meaning, so that every entry point words them and exits alike.

Each message is one paragraph that names the bad value and the valid choices (or what to do). Entry points print
``error: MESSAGE`` and exit 2 for the first three, which are raised before any work starts or is written;
``RunFailed`` (exit 1) is a run that started and then stopped, and its results.json says why.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
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

    recorded = True  # whether results.json says so (False: it could not be written, a full disk)

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def check_count(key: str, value: object, minimum: int, hint: str, maximum: int | None = None) -> int:
    """``value`` as an int of at least ``minimum`` (and at most ``maximum``, when given), else a ConfigError naming
    ``key``, the value and ``hint``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{key} must be an integer {bound} ({hint}), got {value!r}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be an integer from {minimum} to {maximum} ({hint}), got {value!r}.")
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
def stops_on_signals(what: str, after: str) -> Iterator[Callable[[], None]]:
    """While long work runs that keeps nothing half-done (the evaluator's training), SIGTERM and SIGINT are noted
    and the ``check()`` this yields, called by the work between two steps, raises ``Interrupted`` naming ``what``
    and ``after`` (what becomes of the work); a second signal stops at once. The handlers in place before (during a
    fit, Lightning's and the lab's) are put back after. Outside the main thread (no handlers there) it only checks.
    """
    noted: list[int] = []

    def reason(signum: int) -> str:
        return f"{signal.Signals(signum).name} while {what}; {after}"

    def note(signum: int, frame: object) -> None:
        if noted:
            raise Interrupted(signum, reason(signum))  # asked twice
        noted.append(signum)
        print(f"\n{signal.Signals(signum).name} received: stopping {what}", file=sys.stderr, flush=True)

    def check() -> None:
        if noted:
            raise Interrupted(noted[0], reason(noted[0]))

    if threading.current_thread() is not threading.main_thread():
        yield check
        return
    previous = {signum: signal.signal(signum, note) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield check
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
