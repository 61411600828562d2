"""Building what a fit needs from a checked config, each once per pack: the data module, the callbacks, the
Trainer, and each member's run folder record and loggers. ``instantiate`` turns a bad value found while building
into one ConfigError naming the config group."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint, ProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from gan.data import MNISTDataModule
from gan.errors import ConfigError, LabError, RunFailed
from gan.eval.metrics import METRIC_NAMES
from gan.files import DISK_PROBLEMS, storage_error
from gan.runs.checkpoints import read_checkpoint
from gan.runs.packing import merge_checkpoints
from gan.runs.rundir import MemberRun, RunResults, claim_run_dir
from gan.runs.runlog import log_run


def instantiate(node: Any, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose bad-value failures become one ConfigError naming the config group.

    The node is taken as plain values: the schema typed the config the user wrote (``data.seed`` is an int), while
    our own arguments may have other types (a pack's data module gets one seed per member).
    """
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    try:
        return hydra.utils.instantiate(OmegaConf.create(node), **kwargs)
    except hydra.errors.InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            names_key = isinstance(cause, ConfigError) or str(cause).startswith(f"{group}.")
            message = str(cause) if names_key else f"{group}: {cause}"
            raise ConfigError(message) from cause
        raise


def lightning_max_steps(max_steps: int | None, d_steps: int) -> int:
    """The lab's ``max_steps`` (generator iterations) -> Lightning's (optimizer steps: d_steps + 1 per iteration)."""
    if max_steps is None or int(max_steps) < 0:
        return -1
    return int(max_steps) * (int(d_steps) + 1)


def fast_dev_iterations(trainer: Any) -> int:
    """``trainer.fast_dev_run`` as generator iterations (0: off; ``true``: 1). Lightning's meaning: a few
    iterations to find bugs, with no loggers, checkpoints or (here) evaluations and diagnostics."""
    value = trainer.get("fast_dev_run", False) if trainer is not None else False
    if isinstance(value, bool):
        return int(value)
    return int(value) if isinstance(value, int) and value > 0 else 0


def data_settings(cfg: DictConfig) -> dict[str, Any]:
    """``data.*`` as the data module takes it: ``data.augment`` (the old place of ``model.augment``) is the model's."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("augment", None)
    return data


def build_datamodule(
    cfg: DictConfig, seeds: Sequence[int], value_ranges: Sequence[Sequence[float]], d_steps: int
) -> MNISTDataModule:
    """The data module serving every member: each its own shuffle seed and its generator's data range, loaded."""
    datamodule: MNISTDataModule = instantiate(
        data_settings(cfg),
        "data",
        seed=[int(s) for s in seeds],
        value_range=[list(r) for r in value_ranges],
        batches_per_iteration=d_steps,
    )
    datamodule.prepare_data()  # missing data fails here, before a logger or checkpoint is written
    datamodule.setup("fit")  # and so does a training subset the data cannot supply
    return datamodule


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """The configured callbacks (``callbacks.*``), sample quality (``eval``) and diagnostics (``diag``); the
    Trainer switches users know (``enable_progress_bar``, ``enable_checkpointing``) win over the callbacks that
    implement them."""
    callbacks = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c is not None]
    # sample quality and diagnostics: their values are checked even when they are switched off; only then left out
    # (a callback that does nothing still costs Lightning a call per hook and batch); a fast_dev_run has neither
    fast_dev_run = fast_dev_iterations(cfg.trainer) > 0
    if cfg.get("eval"):
        quality = instantiate(cfg.eval, "eval", data_root=cfg.data.root)
        callbacks += [quality] if quality.enabled and not fast_dev_run else []
    if cfg.get("diag"):
        diagnostics = instantiate(cfg.diag, "diag")
        callbacks += [diagnostics] if diagnostics.enabled and not fast_dev_run else []
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_checkpointing", True) or fast_dev_run:
        callbacks = [c for c in callbacks if not isinstance(c, Checkpoint)]
    return callbacks


class PackCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with one addition: resuming a pack reads its members' own checkpoints and
    merges them (``gan.runs.packing.merge_checkpoints``) in place of one file."""

    def __init__(self, member_paths: Sequence[str]) -> None:
        super().__init__()
        self.member_paths = list(member_paths)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return merge_checkpoints([read_checkpoint(p, "a member's checkpoint") for p in self.member_paths])


def build_trainer(
    cfg: DictConfig, d_steps: int, callbacks: Sequence[Callback] = (), plugins: Sequence[Any] = ()
) -> L.Trainer:
    """The Trainer ``cfg.trainer`` configures (its ``max_steps`` and ``fast_dev_run`` in optimizer steps, as
    Lightning counts); each member logs to its own loggers (``MemberRun``), so the Trainer has none."""
    fast = fast_dev_iterations(cfg.trainer)
    return instantiate(
        cfg.trainer,
        "trainer",
        fast_dev_run=lightning_max_steps(fast, d_steps) if fast else False,
        max_steps=lightning_max_steps(cfg.trainer.get("max_steps"), d_steps),
        callbacks=list(callbacks),
        logger=False,
        plugins=list(plugins) or None,
    )


# The metrics TensorBoard's HPARAMS tab compares runs by, in this order (eval/collapse: 0 healthy, 1 partial
# collapse, 2 collapsed; eval/diversity: the fixed-noise grid's, 1 = as varied as real digits of one class).
HPARAMS_METRICS = ("fid", "collapse", "diversity", "modes", "recall", "precision", "is", "kl_uniform")


def metric_tags(cfg: DictConfig, member: Mapping[str, Any]) -> list[str]:
    """The scalar tags a run's evaluations log that TensorBoard's HPARAMS tab compares runs by."""
    if not (cfg.get("eval") and cfg.eval.get("enabled")):
        return []
    tags = [f"eval/{name}" for name in HPARAMS_METRICS]
    return tags + ([f"eval_no_ema/{name}" for name in METRIC_NAMES] if member.get("g_ema") else [])


def build_loggers(config: Mapping[str, Any]) -> list[Any]:
    """A run's loggers (``logger``: one Lightning logger, or none); none in a fast_dev_run (Lightning's meaning)."""
    logger = config.get("logger")
    if not logger or fast_dev_iterations(config.get("trainer")) > 0:
        return []
    quiet_writer_threads()
    return [instantiate(logger, "logger")]


def quiet_writer_threads() -> None:
    """TensorBoard's event file writer thread keeps a failed write's error (a full disk) and raises it again at the
    next write in the training thread, where the lab words it (``failure_reason``): the thread's own traceback on
    the console would only repeat it. Other threads' errors are reported as before."""
    previous = threading.excepthook
    if getattr(previous, "quiets_writer_threads", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    hook.quiets_writer_threads = True
    threading.excepthook = hook


def failure_reason(exc: BaseException, runs: Sequence[MemberRun] = (), folder: str | Path | None = None) -> str:
    """How a run that stopped on ``exc`` records it: a lab error's own message; a full or read-only disk as
    ``Cannot write PATH: the disk is full (...)``, naming the file (for a TensorBoard event file, whose writes fail
    in its writer's thread and surface later without a file name, the member's event file, else ``folder``); else
    the error."""
    if isinstance(exc, LabError):
        return str(exc)
    cause = disk_cause(exc)
    if cause is None:
        return f"{type(exc).__name__}: {exc}"
    problem = DISK_PROBLEMS[cause.errno]
    found = [path for run in runs if (path := event_file_failed(run, cause)) is not None]
    if found:
        return str(storage_error(found[0], problem, "the event file keeps what was written before"))
    fallback = folder if folder is not None else runs[0].run_dir if runs else Path.cwd()
    path = Path(os.fsdecode(cause.filename)) if cause.filename else Path(fallback)
    return str(storage_error(path, problem, "the files written before are kept"))


def disk_cause(exc: BaseException) -> OSError | None:
    """The full or read-only disk behind ``exc``, if any: Lightning's TensorBoard logger raises a ValueError
    ("you tried to log ...") from the OSError its event file's writer gave."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in DISK_PROBLEMS:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def event_file_failed(run: MemberRun, exc: BaseException) -> Path | None:
    """The member's TensorBoard event file whose writer thread raised ``exc`` (tensorboard keeps the error in its
    ``_AsyncWriterThread`` and raises it at the next write or flush), or None."""
    for logger in run.loggers:
        writer = getattr(getattr(getattr(logger, "_experiment", None), "file_writer", None), "event_writer", None)
        worker = getattr(getattr(writer, "_async_writer", None), "_worker", None)
        if worker is not None and getattr(worker, "exception", None) is exc:
            return Path(writer._file_name)
    return None


def job_order(plans: Sequence[Any]) -> list[int]:
    """The plans' positions in the sweep's job order (a pack trains them in activation order): by the job number
    that starts a sweep folder's name (``3_g_act:elu``), else as given."""

    def number(i: int) -> tuple[int, int]:
        head = Path(plans[i].run_dir).name.split("_", 1)[0]
        return (int(head), i) if head.isdigit() else (i, i)

    return sorted(range(len(plans)), key=number)


def member_runs(plans: Sequence[Any]) -> list[MemberRun]:
    """Each member's run directory, results record (written now: status running) and loggers, made in the sweep's
    job order (TensorBoard lists runs by their first event). A logger that cannot be built leaves every member's
    record ``failed`` with the reason (and raises RunFailed)."""
    made: dict[int, MemberRun] = {}
    for index in job_order(plans):
        plan = plans[index]
        claim_run_dir(plan.run_dir)  # held until this process ends: no other run writes here meanwhile
        record = RunResults(plan.run_dir, plan.config)
        previous = RunResults.load(plan.run_dir) if plan.in_place else None
        if previous:
            record.continue_from(previous)
        record.write()
        resumed = f", resuming {plan.ckpt_path}" if plan.ckpt_path else ""
        named = " ".join(f"{k}={v}" for k, v in plan.named) or "the defaults"
        log_run(plan.run_dir, f"{plan.job}: training {named}{resumed} (member {index + 1} of {len(plans)})")
        try:
            loggers = build_loggers(plan.config)
            run = MemberRun(index, plan.run_dir, record, loggers)
            cfg = OmegaConf.create(plan.config)
            run.log_config(OmegaConf.to_yaml(cfg), metric_tags(cfg, plan.member), plan.named)
        except Exception as exc:  # noqa: BLE001 - any logger's failure: every member recorded, then reported
            reason = f"the logger failed: {failure_reason(exc, folder=plan.run_dir)}"
            for earlier in made.values():
                earlier.record.finish("failed", 0, reason)
                for built in earlier.loggers:
                    built.finalize("failed")
            record.finish("failed", 0, reason)  # the members after it were not started: their folders as they were
            raise RunFailed("failed", reason) from exc
        made[index] = run
    return [made[i] for i in range(len(plans))]
