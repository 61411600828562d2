"""What a run and a sweep print: Lightning's lines a user cannot act on filtered out, each run's last line with its
verdict beside the fid, and a sweep's closing summary with the commands to run next.

Lightning's errors and its warnings about the user's own settings still show; what goes is the hardware census
(GPU/TPU/HPU available), advertising tips, its own count of optimizer steps (``Trainer.fit stopped: max_steps=...``
and its fast_dev_run notice, which are not the lab's iteration count; the lab says its own) and a deprecation inside
Lightning itself.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback

from gan.runs.rundir import RESULTS_NAME, RunResults

# Lightning's info lines that say nothing a user of this lab can act on.
NOISE = re.compile(
    r"^(GPU available: |TPU available: |HPU available: |IPU available: |💡 Tip: |`Trainer\.fit` stopped: "
    r"|Trainer already configured with model summary|Running in `fast_dev_run` mode)"
)
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE.match(record.getMessage())


_FILTER = _DropNoise()


def quiet_lightning() -> None:
    """Filter Lightning's noise from the console (idempotent; errors and warnings about settings still show)."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _number(value: Any) -> str:
    return "nan" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.3g}"


def run_line(summary: Mapping[str, Any], pack_size: int = 1) -> str:
    """A run's last line: how it ended, its verdict beside the fid, its other metrics, its folder."""
    status = "Done" if summary["status"] == "finished" else str(summary["status"]).capitalize()
    where = f" (member of a pack of {pack_size})" if pack_size > 1 else ""
    head = f"{status}: {summary['iterations']} iterations ({summary['epochs']} epochs) in {summary['wall_s']} s{where}."
    final = summary.get("final_metrics") or {}
    verdict = summary.get("verdict")
    scores = ""
    if final:
        rest = ", ".join(f"{k}={_number(v)}" for k, v in final.items() if k != "fid")
        scores = f" Verdict: {verdict or 'unknown'}, fid {_number(final.get('fid'))} ({rest})."
    elif summary["status"] == "finished":
        scores = " Not evaluated (no evaluation was configured or due)."
    if summary.get("reason"):
        scores += f" Reason: {summary['reason']}."
    return f"{head}{scores} Run directory: {summary['run_dir']}  (tensorboard --logdir {summary['run_dir']})"


def sweep_summary(sweep_dir: str | Path, records: Iterable[Mapping[str, Any]]) -> str:
    """A sweep's closing lines: how its runs ended (and how many collapsed), its folder, and what to run next."""
    records = list(records)
    counts = Counter(data.get("status", "unknown") for data in records)
    verdicts = Counter((data.get("final") or {}).get("verdict") for data in records if data.get("status") == "finished")
    finished = counts.pop("finished", 0)
    judged = ", ".join(f"{verdicts[v]} {v}" for v in ("healthy", "partial collapse", "collapsed") if v in verdicts)
    parts = [f"{finished} finished" + (f" ({judged})" if judged else "")]
    parts += [f"{counts.pop(s, 0)} {s}" for s in ("diverged", "failed", "interrupted")]
    parts += [f"{n} {s}" for s, n in sorted(counts.items())]
    folder = str(sweep_dir)
    return (
        f"Sweep: {len(records)} runs: {', '.join(parts)}. Folder: {folder}\n"
        f"Next: python -m gan.report {folder}    # tables, tests and figures over seeds\n"
        f"      tensorboard --logdir {folder}"
    )


class SweepSummary(HydraCallback):
    """Hydra's callback (``hydra.callbacks`` in conf/train.yaml): when a sweep ends, its summary (every launcher)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = []
        for path in sorted(sweep_dir.rglob(RESULTS_NAME)):
            record = RunResults.load(path.parent)
            records.append(record.data if record is not None else {"status": "unreadable"})
        if records:
            print(sweep_summary(sweep_dir, records))
