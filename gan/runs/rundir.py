"""A run directory and what is written into it: one module for the record, the files and the logs.

- ``results.json`` (``RunResults``): what a run was, how it ended and what it scored. The writer (``gan.train``),
  the callbacks (each evaluation appends to it) and ``gan.report`` (``RunResults.load``) use this one class.
  Written when training starts (status ``running``), after every evaluation, and when the run ends:
  ``finished``, ``diverged`` (a non-finite loss), ``interrupted`` or ``failed`` (any other error, with its
  reason).
- The folder's lock (``claim_run_dir``) and its rule (``check_run_dir``): a run folder belongs to one run; Hydra's
  run callback (``RunDirGuard``) applies the rule before Hydra writes into the folder.
- ``MemberRun``: one member of a training pack as its run directory sees it, with the loggers that can take text,
  images or histograms (``experiments``), and the run's config logged once (``log_config``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams

from gan.errors import ConfigError, StorageError, exits_on_error
from gan.eval.metrics import METRIC_NAMES
from gan.files import write_json_atomic
from gan.runs.devices import check_accelerator, trains_elsewhere
from gan.runs.names import run_hparams
from gan.runs.runlog import log_run

RESULTS_NAME = "results.json"
STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
LOCK_NAME = ".lock"
HEARTBEAT_S = 60.0  # a running run rewrites its results.json at least this often (its heartbeat)
STALE_S = 900.0  # a "running" record from another machine whose heartbeat is older than this was killed
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


# The run folders this process writes, each with its open lock file (an flock held until the process ends: a
# killed process releases it, so a stale lock never blocks a resume).
HELD_LOCKS: dict[Path, Any] = {}


def claim_run_dir(run_dir: str | Path, keep: bool = True) -> None:
    """Take ``run_dir``'s lock for this process (again: a no-op); a ConfigError names the process holding it.
    ``keep=False`` only checks that no live process holds it: the lock is given back and its file left as it was."""
    folder = Path(run_dir).resolve()
    if folder in HELD_LOCKS:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the life of the process
    except OSError as exc:
        raise StorageError(
            f"Cannot create the run folder {folder}: {exc.strerror or exc}. Choose a writable place (hydra.run.dir "
            f"or hydra.sweep.dir)."
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"{folder} is being written by a live run ({holder}): a run folder belongs to one run. Wait for it to "
            f"end, or write elsewhere (another hydra.run.dir or hydra.sweep.dir)."
        ) from None
    if not keep:
        handle.close()  # closing the file gives the lock back
        return
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
    handle.flush()
    HELD_LOCKS[folder] = handle


def release_run_dir(run_dir: str | Path) -> None:
    handle = HELD_LOCKS.pop(Path(run_dir).resolve(), None)
    if handle is not None:
        handle.close()


def check_run_dir(run_dir: str | Path, in_place: bool, multirun: bool) -> None:
    """A run folder belongs to one run: refused when another live process writes it (its lock), or when it holds a
    run already and this is neither a study resuming it in place nor a sweep's job (whose folder the study resume
    reads first)."""
    folder = Path(run_dir).resolve()
    if not folder.is_dir():
        return  # nobody writes there yet
    if folder not in HELD_LOCKS:  # a lock this process holds is its own run
        claim_run_dir(folder, keep=False)  # the process that trains takes it for good
    previous = RunResults.problem(folder) != "no results.json"
    if previous and not in_place and not multirun:
        record = RunResults.load(folder)
        what = f"status {record.state()}, {record.iterations} iterations" if record else "an unreadable results.json"
        raise ConfigError(
            f"{folder} already holds a run ({what}); a run folder belongs to one run and is never overwritten. "
            f"Leave hydra.run.dir out (each run gets its own folder) or choose a new one; to continue that run, "
            f"resume it: ckpt_path={folder / LAST_CHECKPOINT} (the resumed run writes a new folder)."
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunResults:
    """The results record of one run (``RUN_DIR/results.json``): written by a run, read by reports."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any]) -> None:
        self.path = Path(run_dir) / RESULTS_NAME
        self._start = time.perf_counter()
        self._beat = time.monotonic()
        self.data: dict[str, Any] = {
            "status": "running",
            "reason": None,
            "seed": config.get("seed"),
            "config": config,
            "started": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat": _now(),  # rewritten with every write: a "running" record that stops beating was killed
            "iterations": 0,
            "wall_s": 0.0,
            "evaluator": None,
            "evaluations": [],
            "best": None,
            "final": None,
            "first_collapse_iteration": None,  # the first evaluation whose verdict was "collapsed"
        }

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, run_dir: str | Path) -> RunResults | None:
        """The record in ``run_dir``, or None when there is none (or it cannot be read: ``problem`` says why)."""
        return None if cls.problem(run_dir) else cls._read(run_dir)

    @classmethod
    def _read(cls, run_dir: str | Path) -> RunResults:
        data = json.loads((Path(run_dir) / RESULTS_NAME).read_text())
        record = cls(run_dir, data.get("config") or {})
        record.data.update(data)
        return record

    @classmethod
    def problem(cls, run_dir: str | Path) -> str | None:
        """Why ``run_dir``'s results.json cannot be read as a record of this lab (None: it can, or there is none)."""
        path = Path(run_dir) / RESULTS_NAME
        if not path.is_file():
            return "no results.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable {RESULTS_NAME} ({type(exc).__name__}: {str(exc)[:80]})"
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            return f"{RESULTS_NAME} is not a run record of this lab (no valid status)"
        records = [data.get("best"), data.get("final"), *(data.get("evaluations") or [])]
        if not isinstance(data.get("evaluations", []), list) or not all(
            r is None or (isinstance(r, dict) and all(isinstance(r.get(m), (int, float)) for m in METRIC_NAMES))
            for r in records
        ):
            return f"{RESULTS_NAME} has evaluations without the metrics ({', '.join(METRIC_NAMES)})"
        return None

    def state(self) -> str:
        """The status, with ``killed`` for a record still ``running`` whose writer is gone: its process no longer
        exists on this machine, or its heartbeat stopped (older than ``STALE_S``)."""
        if self.status != "running":
            return self.status
        try:
            age = (datetime.now(timezone.utc) - datetime.fromisoformat(str(self.data["heartbeat"]))).total_seconds()
        except (KeyError, TypeError, ValueError):
            age = math.inf  # a record from before heartbeats: its file's age tells
            with contextlib.suppress(OSError):
                age = time.time() - self.path.stat().st_mtime
        if self.data.get("host") == socket.gethostname() and isinstance(self.data.get("pid"), int):
            try:
                os.kill(self.data["pid"], 0)
            except ProcessLookupError:
                return "killed"
            except PermissionError:
                pass  # alive, another user's
        return "killed" if age > STALE_S else "running"

    @property
    def status(self) -> str:
        return str(self.data.get("status"))

    @property
    def reason(self) -> str | None:
        return self.data.get("reason")

    @property
    def seed(self) -> Any:
        return self.data.get("seed")

    @property
    def config(self) -> dict[str, Any]:
        return self.data.get("config") or {}

    @property
    def iterations(self) -> int:
        return int(self.data.get("iterations") or 0)

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """Every evaluation so far, in order: each a dict of metrics with ``iteration``, ``epochs``, ``wall_s``."""
        return list(self.data.get("evaluations") or [])

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation with the lowest fid (and the checkpoint kept of it)."""
        return self.data.get("best")

    @property
    def latest(self) -> dict[str, Any] | None:
        """The final evaluation, or for a run still going its latest one."""
        evaluations = self.evaluations
        return self.data.get("final") or (evaluations[-1] if evaluations else None)

    @property
    def wall_s(self) -> float:
        """Seconds since the run (or its first part, when resumed in place) started."""
        return round(time.perf_counter() - self._start, 1)

    # ------------------------------------------------------------------ writing
    def write(self) -> None:
        self.data["heartbeat"] = _now()
        self._beat = time.monotonic()
        write_json_atomic(self.path, self.data)

    def beat(self, iterations: int) -> None:
        """Rewrite the record when the last write is older than ``HEARTBEAT_S`` (a live run's sign of life)."""
        if time.monotonic() - self._beat >= HEARTBEAT_S:
            self.data["iterations"] = iterations
            self.write()

    def improves(self, fid: float) -> bool:
        """Whether an evaluation with this fid would be the best so far."""
        best = self.data["best"]
        return math.isfinite(fid) and (best is None or fid < best["fid"])

    def add_evaluation(self, record: dict[str, Any], checkpoint: str | None) -> None:
        """Append one evaluation (and make it the best one when it improves the fid)."""
        if self.improves(record["fid"]):
            self.data["best"] = {**record, "checkpoint": checkpoint}
        if record.get("verdict") == "collapsed" and self.data.get("first_collapse_iteration") is None:
            self.data["first_collapse_iteration"] = record["iteration"]
        self.data["evaluations"].append(record)
        self.data["iterations"] = record["iteration"]
        self.data["wall_s"] = record["wall_s"]
        self.write()
        scores = ", ".join(f"{m}={record[m]:.4g}" for m in METRIC_NAMES if isinstance(record.get(m), (int, float)))
        log_run(
            self.path.parent,
            f"evaluation at iteration {record['iteration']} (epoch {record.get('epochs')}): "
            f"{record.get('verdict', 'no verdict')}; {scores}",
        )

    def finish(self, status: str, iterations: int, reason: str | None = None) -> None:
        self.data.update(status=status, reason=reason, iterations=iterations, wall_s=self.wall_s)
        if self.data["evaluations"]:
            self.data["final"] = self.data["evaluations"][-1]
        self.write()
        log_run(self.path.parent, f"{status} at iteration {iterations}" + (f": {reason}" if reason else ""))

    def continue_from(self, previous: RunResults) -> None:
        """A study resumed in place keeps the evaluations (and best) and the diagnostics its interrupted run
        recorded."""
        self.data["evaluations"] = previous.evaluations
        self.data["best"] = previous.best
        self.data["first_collapse_iteration"] = previous.data.get("first_collapse_iteration")
        self.data["diagnostics_history"] = list(previous.data.get("diagnostics_history") or [])
        self.data["resumed"] = previous.data.get("resumed", 0) + 1
        self._start -= float(previous.data.get("wall_s") or 0.0)


def mark_differs(experiment: Any, columns: set[str]) -> Any:
    """The HPARAMS experiment summary with ``columns`` marked as varying: TensorBoard sorts the varying columns
    first and shows only the first five at first, so what the sweep varies (the seed too) opens on screen."""
    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.differs or info.name in columns
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment


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

    def log_config(self, config_yaml: str, metric_tags: list[str], named: Sequence[Sequence[str]] = ()) -> None:
        """The run's config, logged once: whole as text (and ``hparams.yaml``), and the few settings that define the
        run (``gan.runs.names.run_hparams``: activations, loss, stabilizers, learning rates, init, seed and what the
        sweep varies, ``named``) as hyperparameters, with the metric tags that TensorBoard's HPARAMS tab compares
        runs by (their values are the scalars logged under those tags as training goes).

        Lightning's ``log_hyperparams(params, metrics)`` would also log each metric at step 0, a false first point
        on every curve, so a TensorBoard logger gets the hparams summaries (torch's ``summary.hparams``) written by
        its SummaryWriter's ``file_writer`` (into the run's one event file) and ``hparams.yaml`` through
        Lightning's ``save_hparams_to_yaml``; any other logger gets ``log_hyperparams(config)``.
        """
        config = self.record.config
        for experiment in self.experiments("add_text"):
            experiment.add_text("config", "```yaml\n" + config_yaml + "```", 0)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer = logger.experiment.file_writer  # made by the add_text above
                experiment, start, end = hparams(run_hparams(config, named), dict.fromkeys(metric_tags, 0.0))
                named_columns = {str(key).replace(".", "/") for key, _ in named}
                for summary in (mark_differs(experiment, named_columns), start, end):
                    writer.add_summary(summary)
                save_hparams_to_yaml(Path(logger.log_dir) / "hparams.yaml", config)
            else:
                logger.log_hyperparams(run_hparams(config, named))


class RunDirGuard(HydraCallback):
    """Hydra's run callback (``hydra.callbacks`` in conf/train.yaml): before Hydra writes anything, the accelerator
    asked for is checked (a sweep's once, for all its jobs), and a single run's folder is checked and locked, so a
    run refused for a missing GPU or an occupied folder writes nothing."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.run.dir)).resolve()
        with exits_on_error():
            _check_accelerator(config)
            check_run_dir(folder, in_place=False, multirun=False)
            claim_run_dir(folder)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        with exits_on_error():
            _check_accelerator(config, here=not trains_elsewhere(OmegaConf.select(config, "hydra.launcher._target_")))


def _check_accelerator(config: Any, here: bool = True) -> None:
    """The command's ``trainer.accelerator`` (a swept value is checked by each job's own plan instead); ``here``:
    whether the runs train on this machine (a SLURM launcher's jobs do not: only the name is checked)."""
    try:
        accelerator = config.trainer.accelerator
    except Exception:  # noqa: BLE001 - an interpolation or key the job's own checks word better
        return
    if accelerator is not None:
        check_accelerator(accelerator, here)
