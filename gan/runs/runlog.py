"""Each run's own ``train.log``: what happened to that run, in a pack as in a single run.

Hydra's job logging gives every job a ``train.log``, but a pack trains its members in one process after all the
jobs were set up (so the file handler left behind is the last job's), and Lightning logs to its own handler (so a
single run's file stays empty). While a pack trains, the lab owns the files instead: one handler per member, each
taking the records about its run (``RUN_LOG`` records carry ``run_dir``) and those about the whole pack
(Lightning's lines, warnings, anything else logged), and Hydra's own handler on a member's file is set aside so
that nothing is written twice.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

LOG_NAME = "train.log"
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format
# The lab's records about one run: only in that run's train.log (a pack of 147 would flood the console).
RUN_LOG = logging.getLogger("gan.run")
RUN_LOG.propagate = False
RUN_LOG.setLevel(logging.INFO)
# Lightning's loggers: they do not propagate to the root logger when Lightning gave them their own handler.
LIGHTNING = ("lightning.pytorch", "lightning.fabric")


def log_run(run_dir: str | Path, message: str, level: int = logging.INFO) -> None:
    """One line in ``run_dir``'s train.log (while its run trains under ``run_logs``)."""
    RUN_LOG.log(level, message, extra={"run_dir": str(Path(run_dir).resolve())})


class _RunLogFile(logging.FileHandler):
    """A member's train.log that a full disk cannot turn into tracebacks: logging's own handler prints one per
    line it fails to write; this says once that the file stopped taking lines (the run's failure, if the disk
    stops it, is worded and recorded elsewhere)."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            print(f"warning: {self.baseFilename} takes no more lines: {error}", file=sys.stderr)


class _ThisRun(logging.Filter):
    """A member's file takes the records about its run and those about no run in particular."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = str(run_dir)

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "run_dir", self.run_dir) == self.run_dir


def _targets() -> list[logging.Logger]:
    loggers = [RUN_LOG, logging.getLogger()]
    return loggers + [logging.getLogger(n) for n in LIGHTNING if not logging.getLogger(n).propagate]


@contextlib.contextmanager
def run_logs(run_dirs: Sequence[str | Path]) -> Iterator[None]:
    """While the block runs, each run directory's train.log gets its run's records (appended: a resumed study's
    run keeps its earlier log)."""
    paths = [Path(d).resolve() / LOG_NAME for d in run_dirs]
    root = logging.getLogger()
    set_aside = [
        h for h in root.handlers if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() in paths
    ]
    for handler in set_aside:
        root.removeHandler(handler)
    handlers: list[logging.FileHandler] = []
    try:
        for path in paths:
            handler = _RunLogFile(path, mode="a", delay=True)
            handler.setFormatter(logging.Formatter(FORMAT))
            handler.addFilter(_ThisRun(path.parent))
            handlers.append(handler)
        for logger in _targets():
            for handler in handlers:
                logger.addHandler(handler)
        yield
    finally:
        for logger in _targets():
            for handler in handlers:
                logger.removeHandler(handler)
        for handler in handlers:
            with contextlib.suppress(OSError):  # a full disk: the lines it could not take are said once (above)
                handler.close()
        for handler in set_aside:
            root.addHandler(handler)
