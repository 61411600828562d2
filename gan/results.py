"""``RUN_DIR/results.json``: what a run was, how it ended and what it scored, machine-readable for reports.

Written when training starts (status ``running``), after every evaluation, and when the run ends: ``finished``,
``diverged`` (a non-finite loss) or ``failed`` (any other error, with its reason). Always replaced atomically, so
a report reading a running sweep never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_NAME = "results.json"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write beside and rename: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class RunResults:
    """The results record of one run."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any]) -> None:
        self.path = Path(run_dir) / RESULTS_NAME
        self._start = time.perf_counter()
        self.data: dict[str, Any] = {
            "status": "running",
            "reason": None,
            "seed": config.get("seed"),
            "config": config,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "iterations": 0,
            "wall_s": 0.0,
            "evaluator": None,
            "evaluations": [],
            "best": None,
            "final": None,
        }

    @property
    def wall_s(self) -> float:
        return round(time.perf_counter() - self._start, 1)

    def write(self) -> None:
        write_json_atomic(self.path, self.data)

    def improves(self, fid: float) -> bool:
        """Whether an evaluation with this fid would be the best so far."""
        best = self.data["best"]
        return math.isfinite(fid) and (best is None or fid < best["fid"])

    def add_evaluation(self, record: dict[str, Any], checkpoint: str | None) -> None:
        """Append one evaluation (and make it the best one when it improves the fid)."""
        if self.improves(record["fid"]):
            self.data["best"] = {**record, "checkpoint": checkpoint}
        self.data["evaluations"].append(record)
        self.data["iterations"] = record["iteration"]
        self.data["wall_s"] = record["wall_s"]
        self.write()

    def finish(self, status: str, iterations: int, reason: str | None = None) -> None:
        self.data.update(status=status, reason=reason, iterations=iterations, wall_s=self.wall_s)
        if self.data["evaluations"]:
            self.data["final"] = self.data["evaluations"][-1]
        self.write()

    def continue_from(self, previous: dict[str, Any]) -> None:
        """A study resumed in place keeps the evaluations (and best) its interrupted run recorded."""
        self.data["evaluations"] = list(previous.get("evaluations", []))
        self.data["best"] = previous.get("best")
        self.data["resumed"] = previous.get("resumed", 0) + 1
        self._start -= float(previous.get("wall_s") or 0.0)


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run directory's results.json, or None when there is none (or it cannot be read)."""
    path = Path(run_dir) / RESULTS_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class MemberRun:
    """One member of a training pack as its run directory sees it: where it writes, its results record and the
    loggers (its own TensorBoard event file), so that each member's folder is what a run alone writes."""

    def __init__(self, index: int, run_dir: str | Path, record: RunResults, loggers: list[Any]) -> None:
        self.index = index  # position in the pack
        self.run_dir = Path(run_dir)
        self.record = record
        self.loggers = loggers

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def experiments(self, method: str) -> list[Any]:
        """The logger back ends that can ``method`` (e.g. ``add_image``, ``add_histogram``, ``add_text``)."""
        return [lg.experiment for lg in self.loggers if hasattr(lg.experiment, method)]
