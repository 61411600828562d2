"""Training a pack of plans as one population in one Lightning fit; each member writes its own run directory.

``train(cfg)`` is one run (a pack of one); the packed launcher calls ``train_pack`` with many plans. Model, data
module and Trainer are built once per pack, from plans already checked (``gan.runs.plan``). Every member's
results.json says how it ended (finished, diverged, interrupted, failed); a signal stops the pack after each
member's ``last.ckpt`` is written.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from gan.data import MNISTDataModule
from gan.errors import ConfigError, Interrupted, RunFailed
from gan.eval.metrics import METRIC_NAMES
from gan.model.module import GANModule
from gan.runs.build import (
    PackCheckpointIO,
    build_callbacks,
    build_datamodule,
    build_trainer,
    event_file_failed,
    failure_reason,
    fast_dev_iterations,
    job_order,
    member_runs,
)
from gan.runs.callbacks import MemberCallback, MemberScalars, SignalStop, completed_epochs
from gan.runs.console import quiet_lightning, run_line
from gan.runs.packing import activation_order
from gan.runs.plan import PLAIN_RUN, JobState, MemberPlan, prepare
from gan.runs.rundir import LAST_CHECKPOINT, MemberRun, release_run_dir
from gan.runs.runlog import log_run, run_logs

# A run stopped by a signal saves mid-epoch; the data module resumes such an epoch at its next batch (its
# state_dict), which Lightning's check for a resumable dataloader does not see.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def train(cfg: DictConfig, job: JobState = PLAIN_RUN) -> dict[str, Any]:
    """Train one GAN as configured (a population of one); returns a short summary (also printed). ``job``: what
    the entry point read of Hydra's job (``gan.train`` passes ``JobState.from_hydra()``)."""
    return train_pack([prepare(cfg, job)])[0]


def train_pack(plans: Sequence[MemberPlan]) -> list[dict[str, Any]]:
    """Train the plans as one population (one process, one Lightning fit); each member writes its own run
    directory. Returns each plan's summary, in the plans' order; a member that finished before is not trained."""
    summaries: dict[int, dict[str, Any]] = {}
    for i, plan in enumerate(plans):
        if plan.done is not None:
            summaries[i] = _summary(plan, plan.done, 0, 0.0) | {"skipped": "finished before"}
            print(plan.skipped_line())
    todo = [i for i, plan in enumerate(plans) if plan.done is None]
    if todo:
        order = [todo[j] for j in activation_order([plans[i].member for i in todo])]
        trained = _fit([plans[i] for i in order])
        summaries.update(zip(order, trained, strict=True))
    return [summaries[i] for i in range(len(plans))]


def _fit(plans: Sequence[MemberPlan]) -> list[dict[str, Any]]:
    cfg = OmegaConf.create(plans[0].config)
    quiet_lightning()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = GANModule(members=[p.member for p in plans], checked=True)
    module.run_configs = [p.config for p in plans]
    seeds = [int(p.config["data"]["seed"]) for p in plans]
    datamodule = build_datamodule(cfg, seeds, module.data_ranges, module.shared["d_steps"])
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, float) and int(limit * datamodule.batches_per_epoch) < 1:
        raise ConfigError(
            f"trainer.limit_train_batches={limit} of {datamodule.batches_per_epoch} batches per epoch is less than "
            f"one batch. Use a larger fraction, or a number of batches (an int)."
        )
    resuming = [p.ckpt_path for p in plans if p.ckpt_path]
    if resuming and len(resuming) != len(plans):
        raise ConfigError("a pack either resumes every member or none (gan.train groups them so)")
    plugins = [PackCheckpointIO(resuming)] if resuming else []
    trainer = build_trainer(cfg, module.shared["d_steps"], build_callbacks(cfg), plugins)
    fast_dev_run = fast_dev_iterations(cfg.trainer)
    if fast_dev_run:
        print(
            f"fast_dev_run: {fast_dev_run} iteration(s) to find bugs, with no evaluation, "
            f"diagnostics, logger files or checkpoints (Lightning's meaning); results.json records the run."
        )
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "highest")))
    module.use_cuda_graphs(str(cfg.get("cuda_graphs", "off")))
    ckpt_path = resuming[0] if resuming else None
    try:
        with run_logs([p.run_dir for p in plans]):  # each member's train.log: its own lines and the pack's
            runs = member_runs(plans)
            scalars, stop = MemberScalars(), SignalStop()
            trainer.callbacks.extend([scalars, stop])  # after Lightning's ordering: they run last in every hook
            for callback in trainer.callbacks:
                if isinstance(callback, MemberCallback):
                    callback.bind(runs)
            return _train(plans, module, datamodule, trainer, runs, stop, ckpt_path)
    finally:
        for plan in plans:  # the folders are free again (a process that ends frees them anyway)
            release_run_dir(plan.run_dir)


def _train(
    plans: Sequence[MemberPlan],
    module: GANModule,
    datamodule: MNISTDataModule,
    trainer: L.Trainer,
    runs: Sequence[MemberRun],
    stop: SignalStop,
    ckpt_path: str | None,
) -> list[dict[str, Any]]:
    start = time.perf_counter()
    failure: str | None = None
    interrupted: Interrupted | None = None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except Interrupted as exc:
        interrupted = exc
    except (SIGTERMException, KeyboardInterrupt, SystemExit):  # a signal before the first iteration, or Ctrl-C twice
        signum = stop.signum or (signal.SIGTERM if trainer.received_sigterm else signal.SIGINT)
        stop.signum = signum
        interrupted = Interrupted(signum, stop.reason(module.iteration))
    except RunFailed:
        pass  # every member diverged; each is recorded
    except Exception as exc:  # noqa: BLE001 - recorded for every member still training, then reported
        failure = failure_reason(exc, runs)
        if len(plans) == 1:
            error = RunFailed("failed", failure)
            error.recorded = _close(runs, module, trainer, failure)
            raise error from exc
    recorded = _close(runs, module, trainer, failure, interrupted)
    wall = time.perf_counter() - start
    summaries = [
        _summary(p, r.record.data, trainer.num_training_batches, wall) for p, r in zip(plans, runs, strict=True)
    ]
    for i in job_order(plans):  # the sweep's order, not the pack's
        _print_summary(summaries[i], plans[i], len(plans))
    if interrupted is not None:  # the whole pack stops: the scheduler wants the process gone
        interrupted.recorded = recorded
        raise interrupted
    if len(plans) == 1 and summaries[0]["status"] in ("diverged", "failed"):  # failed: found while closing
        error = RunFailed(summaries[0]["status"], summaries[0]["reason"])
        error.recorded = recorded
        raise error
    return summaries


def _close(
    runs: Sequence[MemberRun],
    module: GANModule,
    trainer: L.Trainer,
    failure: str | None,
    interrupted: Interrupted | None = None,
) -> bool:
    """Every member's results.json says how it ended; loggers are flushed. Returns whether every record was
    written (a full disk can keep one from it: said on stderr, never claimed)."""
    recorded = True
    try:
        module.check_divergence()  # a loss that went non-finite since the last logging step
        scalars = [c for c in trainer.callbacks if isinstance(c, MemberScalars)]
        if scalars:
            scalars[0].on_train_batch_end(trainer, module)  # divergences found in the last step
    except Exception as exc:  # noqa: BLE001 - the last step's scalars not logged (a full disk): the run failed
        failure = failure or failure_reason(exc, runs)
    for run in runs:
        try:
            if run.record.data["status"] == "running":
                if failure is not None:
                    run.record.finish("failed", module.iteration, failure)
                elif interrupted is not None:
                    run.record.finish("interrupted", module.iteration, interrupted.reason)
                else:
                    run.record.finish("interrupted" if trainer.interrupted else "finished", module.iteration)
        except OSError as exc:  # a full disk: the run's end goes unrecorded, said here instead
            recorded = False
            print(
                f"warning: {run.run_dir}: how the run ended could not be recorded (its results.json still says "
                f"running): {exc}",
                file=sys.stderr,
            )
        _finalize_loggers(run, failure)
    return recorded


def _finalize_loggers(run: MemberRun, failure: str | None) -> None:
    """The member's loggers flushed and closed; a logger that cannot write any more (a full disk) is said once,
    unless that is the failure the run already records."""
    for logger in run.loggers:
        try:
            logger.finalize("success" if failure is None else "failed")
        except OSError as exc:
            if failure is None or str(event_file_failed(run, exc)) not in failure:
                why = failure_reason(exc, [run])
                print(f"warning: {run.run_dir}: its logger could not be closed: {why}", file=sys.stderr)


def _summary(plan: MemberPlan, results: dict[str, Any], batches: int, wall_s: float) -> dict[str, Any]:
    summary = {
        "run_dir": plan.run_dir,
        "status": results["status"],
        "iterations": results["iterations"],
        "epochs": completed_epochs(results["iterations"], batches),
        "wall_s": round(wall_s, 1),
        "last_checkpoint": str(Path(plan.run_dir) / LAST_CHECKPOINT),
    }
    if results.get("reason"):
        summary["reason"] = results["reason"]
    if results.get("final"):
        summary["final_metrics"] = {k: results["final"][k] for k in METRIC_NAMES}
        summary["verdict"] = results["final"].get("verdict")
    return summary


def _print_summary(summary: dict[str, Any], plan: MemberPlan, pack_size: int) -> None:
    line = run_line(summary, pack_size)
    print(line)
    log_run(plan.run_dir, line)
