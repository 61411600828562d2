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
