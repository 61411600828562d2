"""A run directory and what is written into it: one module for the record, the files and the logs.

- ``results.json`` (``RunResults``): what a run was, how it ended and what it scored. The writer (``gan.train``),
  the callbacks (each evaluation appends to it) and ``gan.report`` (``RunResults.load``) use this one class.
  Written when training starts (status ``running``), after every evaluation, and when the run ends:
  ``finished``, ``diverged`` (a non-finite loss), ``interrupted`` or ``failed`` (any other error, with its
  reason).
- The folder's lock (``claim_run_dir``) and its rule (``check_run_dir``): a run folder belongs to one run; Hydra's
  run callback (``RunDirGuard``) applies the rule before Hydra writes into the folder.
- What a job writes before its run starts: Hydra writes no ``.hydra/`` (``hydra.output_subdir: null``) and opens
  ``train.log`` at its first line; the job's ``.hydra/`` is written once it is checked and will train
  (``hydra_record``, ``write_hydra_record``), so a finished job a study rerun skips is not touched, and a refused
  run takes back its lock and the folder it made (``withdraw_run_dir``). A sweep with a refused job exits 2.
- ``MemberRun``: one member of a training pack as its run directory sees it, with the loggers that can take text,
  images or histograms (``experiments``), and the run's config logged once (``log_config``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams

from gan.errors import ConfigError, StorageError, exits_on_error
from gan.eval.metrics import METRIC_NAMES
from gan.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from gan.runs.devices import check_accelerator, trains_elsewhere
from gan.runs.names import run_hparams
from gan.runs.runlog import LOG_NAME, log_run

RESULTS_NAME = "results.json"
STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
LOCK_NAME = ".lock"
SWEEP_CONFIG = "multirun.yaml"  # the sweep's composed config, which Hydra's sweeper writes into its folder
HEARTBEAT_S = 60.0  # a running run rewrites its results.json at least this often (its heartbeat)
STALE_S = 900.0  # a "running" record from another machine whose heartbeat is older than this was killed
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


# The run folders this process writes, each with its open lock file (an flock held until the process ends: a
# killed process releases it, so a stale lock never blocks a resume).
HELD_LOCKS: dict[Path, Any] = {}
# What this process made to claim each run folder: the folders it created (the run folder and the parents it
# needed, deepest first) and whether it created the lock file, so that a run refused after its claim takes them back
# (``withdraw_run_dir``): a refused run leaves nothing behind.
MADE: dict[Path, tuple[list[Path], bool]] = {}
# The sweep jobs refused (their messages printed as they came): the sweep ends with exit status 2. Jobs run in
# other local processes (joblib's workers) name theirs in the file REFUSED_ENV names, which the sweep made.
REFUSED_JOBS: list[str] = []
REFUSED_ENV = "GAN_LAB_REFUSED_JOBS"
HYDRA_SUBDIR = ".hydra"  # a job's copy of its composed config, Hydra's config and its overrides
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
PRE_RUN_FILES = (LOCK_NAME, LOG_NAME, HYDRA_SUBDIR)  # what a job folder can hold before its run starts


def _missing_dirs(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first (what a mkdir would make)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: a folder holding anything stays, and so do its
    parents."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def lock_holder(run_dir: str | Path) -> str | None:
    """Who holds ``run_dir``'s lock (``pid N on HOST since TIME``), or None when no live process does. Reads only:
    a folder or lock file that does not exist is not created."""
    try:
        handle = open(Path(run_dir) / LOCK_NAME)  # noqa: SIM115 - closed below, which gives a lock taken back
    except OSError:
        return None  # no lock file (or none readable): nobody claimed the folder
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        return None


def _busy(folder: Path, holder: str) -> ConfigError:
    return ConfigError(
        f"{folder} is being written by a live run ({holder}): a run folder belongs to one run. Wait for it to "
        f"end, or write elsewhere (another hydra.run.dir or hydra.sweep.dir)."
    )


def claim_run_dir(run_dir: str | Path, keep: bool = True) -> None:
    """Take ``run_dir``'s lock for this process (again: a no-op); a ConfigError names the process holding it.
    ``keep=False`` only checks that no live process holds it, writing nothing."""
    folder = Path(run_dir).resolve()
    if folder in HELD_LOCKS:
        return
    if not keep:
        holder = lock_holder(folder)
        if holder is not None:
            raise _busy(folder, holder)
        return
    made, new_lock = _missing_dirs(folder), not (folder / LOCK_NAME).exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the life of the process
    except OSError as exc:
        _remove_empty(made)
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
        raise _busy(folder, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
    handle.flush()
    HELD_LOCKS[folder] = handle
    MADE[folder] = (made, new_lock)


def release_run_dir(run_dir: str | Path) -> None:
    folder = Path(run_dir).resolve()
    MADE.pop(folder, None)
    handle = HELD_LOCKS.pop(folder, None)
    if handle is not None:
        handle.close()


def withdraw_run_dir(run_dir: str | Path) -> None:
    """A run refused before it started takes back what it wrote: its lock (the lock file too, when it made it),
    the files a job folder holds before its run starts (``.hydra/``, ``train.log``) and the folder with the parents
    it needed, when nothing else is in them. A folder whose run started (it holds a results.json) keeps everything."""
    folder = Path(run_dir).resolve()
    made, new_lock = MADE.pop(folder, ([], False))
    handle = HELD_LOCKS.pop(folder, None)
    try:
        _withdraw(folder, made, new_lock, handle)
    except OSError as exc:  # said, never raised: the refusal's own message is the one that matters
        print(f"warning: {folder}: what the refused run wrote could not all be taken back: {exc}", file=sys.stderr)


def _withdraw(folder: Path, made: list[Path], new_lock: bool, handle: Any) -> None:
    if handle is None and lock_holder(folder) is not None:
        return  # another live run's folder (the reason this one was refused): not a file of it is touched
    started = (folder / RESULTS_NAME).exists()
    if handle is not None:
        if new_lock and not started:
            (folder / LOCK_NAME).unlink(missing_ok=True)
        handle.close()  # gives the lock back
    if started or not folder.is_dir() or any(p.name not in PRE_RUN_FILES for p in folder.iterdir()):
        return  # the folder holds more than a job's set-up: nothing else is taken away
    (folder / LOCK_NAME).unlink(missing_ok=True)  # nobody holds it, and no run started here
    hydra_dir = folder / HYDRA_SUBDIR
    if hydra_dir.is_dir() and all(p.name in HYDRA_FILES for p in hydra_dir.iterdir()):
        for name in HYDRA_FILES:
            (hydra_dir / name).unlink(missing_ok=True)
        _remove_empty([hydra_dir])
    (folder / LOG_NAME).unlink(missing_ok=True)  # the lines of a job set up and refused
    _remove_empty(made or [folder])


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


# The fields of a record its readers use beside the evaluations, each None or of this kind ("count": a finite
# number): a damaged or hand-edited record of another kind is listed as unreadable, not a report's crash.
RECORD_FIELDS = {"config": dict, "diagnostics": dict, "evaluator": dict, "iterations": "count", "wall_s": "count"}


def _of_kind(value: Any, kind: Any) -> bool:
    if value is None:
        return True
    if kind == "count":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


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
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep to decode
            return f"unreadable {RESULTS_NAME} ({type(exc).__name__}: {str(exc)[:80]})"
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            return f"{RESULTS_NAME} is not a run record of this lab (no valid status)"
        records = [data.get("best"), data.get("final"), *(data.get("evaluations") or [])]
        if not isinstance(data.get("evaluations", []), list) or not all(
            r is None or (isinstance(r, dict) and all(isinstance(r.get(m), (int, float)) for m in METRIC_NAMES))
            for r in records
        ):
            return f"{RESULTS_NAME} has evaluations without the metrics ({', '.join(METRIC_NAMES)})"
        wrong = [key for key, kind in RECORD_FIELDS.items() if not _of_kind(data.get(key), kind)]
        if wrong:
            return f"{RESULTS_NAME} has fields of the wrong kind: {', '.join(f'{k}={data[k]!r:.40}' for k in wrong)}"
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
    """Hydra's run callback (``hydra.callbacks`` in conf/train.yaml): before Hydra writes anything, the place asked
    for is checked (a file there, or a folder that cannot be written, is refused), the accelerator asked for is
    checked (a sweep's once, for all its jobs), and a single run's folder is checked and locked, so a run refused for
    a missing GPU or an occupied folder writes nothing. A sweep ends with exit status 2 when any of its jobs was
    refused, and its folder keeps the ``multirun.yaml`` of the command that started it (``_leave_sweep_dir``)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.run.dir)).resolve()
        with exits_on_error():
            check_writable_place(folder, "hydra.run.dir")
            _check_accelerator(config)
            check_run_dir(folder, in_place=False, multirun=False)
            claim_run_dir(folder)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)).resolve()
        with exits_on_error():
            check_writable_place(folder, "hydra.sweep.dir")
            _check_accelerator(config, here=not trains_elsewhere(OmegaConf.select(config, "hydra.launcher._target_")))
        saved = None
        with contextlib.suppress(OSError):
            saved = (folder / SWEEP_CONFIG).read_bytes()
        atexit.register(_leave_sweep_dir, folder, _missing_dirs(folder), saved)
        handle, listing = tempfile.mkstemp(prefix="gan-refused-jobs-", suffix=".txt")  # outside the sweep's folder
        os.close(handle)
        os.environ[REFUSED_ENV] = listing  # the worker processes started from now on inherit it
        atexit.register(Path(listing).unlink, missing_ok=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        refused = refused_jobs()
        if refused:
            more = len(refused) - 5
            named = "; ".join(refused[:5]) + (f"; and {more} more" if more > 0 else "")
            print(
                f"error: {len(refused)} job(s) of this sweep were refused, each with its reason above, and "
                f"their folders left as they were: {named}.",
                file=sys.stderr,
            )
            sys.exit(2)


def check_writable_place(folder: Path, key: str) -> None:
    """A StorageError, before anything is written, when ``folder`` cannot become a run or sweep folder: a file
    stands at it or above it, or the nearest folder that exists cannot be written (read-only, or another user's)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(
            f"{key}={folder} cannot be a folder: {existing} is a file, and a run's files need a folder there. "
            f"Choose a path where no file stands (or move the file away)."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(
            f"{key}={folder} cannot be written: {existing} is read-only for this user (its permissions, or a "
            f"read-only disk), so no run folder can be made there. Choose a writable place, or leave {key} out "
            f"(runs go to outputs/ here)."
        )


def _leave_sweep_dir(folder: Path, made: list[Path], saved: bytes | None) -> None:
    """When a sweep command ends (however it ends: registered with atexit): the sweep folder keeps the
    ``multirun.yaml`` of the command that started the study (Hydra's sweeper rewrites it before the first job, so
    a rerun would otherwise change a finished study), and a sweep none of whose jobs was set up to train (every job
    refused) takes its ``multirun.yaml`` back, with the folders it made when they are empty."""
    path = folder / SWEEP_CONFIG
    try:
        if saved is not None:
            if path.read_bytes() != saved:
                write_bytes_atomic(path, saved)
        elif path.is_file() and not any(folder.rglob(RESULTS_NAME)) and not any(folder.rglob(HYDRA_SUBDIR)):
            path.unlink()  # no job of the sweep was set up to train: the sweep wrote nothing else
            _remove_empty(made)
    except OSError as exc:  # the end of the process: said, never raised
        print(f"warning: {path}: could not be put back as it was: {exc}", file=sys.stderr)


def hydra_record(cfg: Any) -> dict[str, str]:
    """A job's ``.hydra/`` files as Hydra writes them (its composed config, Hydra's own config, its overrides), read
    where the job starts, before its checks resolve ``cfg``. conf/train.yaml sets ``hydra.output_subdir: null``, so
    Hydra writes none before the job is checked; ``write_hydra_record`` writes them once the job is accepted to train,
    so that a refused or finished job's folder is not touched. Empty outside Hydra, or when the command sets
    ``hydra.output_subdir`` (Hydra wrote them itself)."""
    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.instance().cfg
    if hydra_cfg.hydra.output_subdir is not None:
        return {}
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
        "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
    }


def write_hydra_record(run_dir: str | Path, record: dict[str, str]) -> None:
    """The job's ``.hydra/`` files (``hydra_record``), written when it is accepted to train."""
    for name, text in record.items():
        write_text_atomic(Path(run_dir) / HYDRA_SUBDIR / name, text)


def note_refused(job: str) -> None:
    """A sweep job refused (its message already printed): the sweep goes on, then ends with exit status 2."""
    REFUSED_JOBS.append(job)
    path = os.environ.get(REFUSED_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "a") as fh:
            fh.write(" ".join(job.split()) + "\n")


def refused_jobs() -> list[str]:
    """The jobs of this sweep refused so far, in this process and in the worker processes it started."""
    path = os.environ.get(REFUSED_ENV)
    with contextlib.suppress(OSError):
        if path:
            return Path(path).read_text().splitlines()
    return list(REFUSED_JOBS)


def _check_accelerator(config: Any, here: bool = True) -> None:
    """The command's ``trainer.accelerator`` (a swept value is checked by each job's own plan instead); ``here``:
    whether the runs train on this machine (a SLURM launcher's jobs do not: only the name is checked)."""
    try:
        accelerator = config.trainer.accelerator
    except Exception:  # noqa: BLE001 - an interpolation or key the job's own checks word better
        return
    if accelerator is not None:
        check_accelerator(accelerator, here)
