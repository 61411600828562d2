"""Training, as ``gan.train`` (the command) and the packed launcher run it: jobs -> member plans -> packs.

A run is a population of one. Work happens in two steps that the packed launcher (``hydra/launcher=packed``)
also uses: ``prepare`` turns one job's composed config into a ``MemberPlan`` (every value checked, resume settled,
nothing written), and ``train_pack`` trains a list of plans as one population in one Lightning fit, each member
writing its own run directory. In a multirun, a job whose folder already holds a finished run is skipped and one
whose run was interrupted resumes from its ``last.ckpt`` (resume a study by running its command again with the
same ``hydra.sweep.dir``).
"""

from __future__ import annotations

import copy
import logging
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import Checkpoint, ProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from gan.data import MNISTDataModule
from gan.errors import ConfigError, Interrupted, RunFailed, StorageError, check_count
from gan.eval.metrics import METRIC_NAMES
from gan.model.module import OPTIMIZER_ALIASES, GANModule
from gan.runs.callbacks import MemberCallback, MemberScalars, SignalStop
from gan.runs.checkpoints import read_checkpoint
from gan.runs.packing import DATAMODULE_KEY, activation_order, merge_checkpoints
from gan.runs.rundir import LAST_CHECKPOINT, MemberRun, RunResults, check_run_dir, claim_run_dir, release_run_dir
from gan.runs.schema import TrainConfig, check_schema

# A run stopped by a signal saves mid-epoch; the data module resumes such an epoch at its next batch (its
# state_dict), which Lightning's check for a resumable dataloader does not see.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

# What a resumed run keeps from its checkpoint: what the run is (its model, the data it trains on and how D sees
# it), not where or how long it runs. Compared key by key with the checkpoint's composed config.
RESUME_INVARIANTS = ("model", "act", "data.augment", "data.train_size", "data.subset_seed")


def lightning_max_steps(max_steps: int | None, d_steps: int) -> int:
    """The lab's ``max_steps`` (generator iterations) -> Lightning's (optimizer steps: d_steps + 1 per iteration)."""
    if max_steps is None or int(max_steps) < 0:
        return -1
    return int(max_steps) * (int(d_steps) + 1)


def _command_line() -> tuple[list[str], list[str]]:
    """(the config keys, the config groups) that this job's command-line overrides set, as Hydra's own override
    parser reads them (a group is a key Hydra composed a choice for, e.g. ``activation`` or ``stability``)."""
    if not HydraConfig.initialized():
        return [], []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    choices = HydraConfig.get().runtime.choices
    keys = [o.key_or_group for o in overrides if o.key_or_group not in choices]
    groups = [o.input_line for o in overrides if o.key_or_group in choices and not o.key_or_group.startswith("hydra")]
    return keys, groups


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_name() -> str:
    """How messages name the current job: its number and overrides in a sweep, else "this run"."""
    if not in_multirun():
        return "this run"
    job = HydraConfig.get().job
    return f"job {job.num} ({' '.join(HydraConfig.get().overrides.task) or 'no overrides'})"


def instantiate(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose bad-value failures become one ConfigError naming the config group.

    The node is taken as plain values: the schema typed the config the user wrote (``data.seed`` is an int), while
    gan.train's own arguments may have other types (a pack's data module gets one seed per member).
    """
    if OmegaConf.is_config(node):
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except hydra.errors.InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            names_key = isinstance(cause, ConfigError) or str(cause).startswith(f"{group}.")
            message = str(cause) if names_key else f"{group}: {cause}"
            raise ConfigError(message) from cause
        raise


# ----------------------------------------------------------------------------- one job -> one member plan
@dataclass
class MemberPlan:
    """One job, checked and ready to train as a member of a pack (plain values: it pickles to a cluster job)."""

    job: str  # how messages name it
    run_dir: str
    config: dict[str, Any]  # the composed config (resolved), as the run records it
    member: dict[str, Any]  # its GANModule member hyperparameters
    ckpt_path: str | None = None  # resume from here
    in_place: bool = False  # a study resumed in its own folder (keeps its results so far)
    done: dict[str, Any] | None = None  # the results of a member that already finished: nothing to train
    resume_step: int | None = None

    @property
    def cfg(self) -> DictConfig:
        return OmegaConf.create(self.config)


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """A nested config entry as {dotted key: leaf value}."""
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in _leaves(sub, f"{prefix}.{key}").items()}
    return {prefix: value}


def saved_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The composed config a checkpoint ran with (checkpoints from before it was stored: rebuilt from its member
    hyperparameters and the data module's training subset). Its settings are data: the model's ``_target_`` (the
    code that builds it) is not taken from the file but from this lab's config, and its optimizers' names are
    read as today's (``gan.optim.Adam`` in checkpoints written before the package's floors)."""
    if ckpt.get("run_configs"):
        saved = copy.deepcopy(ckpt["run_configs"][0])
    else:
        member = dict(ckpt["hyper_parameters"]["members"][0])
        data = {"augment": member.pop("augment", None), **(ckpt.get(DATAMODULE_KEY, {}).get("subset") or {})}
        member.pop("seed", None)
        saved = {"model": member, "data": data}
    model = saved.get("model")
    if isinstance(model, dict):
        model.pop("_target_", None)
        for key in ("optimizer_g", "optimizer_d"):
            optimizer = model.get(key)
            if isinstance(optimizer, dict) and optimizer.get("_target_") in OPTIMIZER_ALIASES:
                optimizer["_target_"] = OPTIMIZER_ALIASES[optimizer["_target_"]]
    return saved


def resume_invariants(cfg: DictConfig, ckpt: dict[str, Any]) -> int:
    """Make ``cfg`` keep what its checkpoint ran with (``RESUME_INVARIANTS``), so that its logged config and
    results.json say what it really uses; returns the checkpoint's step. A command-line override asking for another
    value of one of them is refused: a key set on the command line (or one below or above it), or a value away
    from the schema's default while a config group is chosen there (a group sets many keys at once)."""
    saved = saved_config(ckpt)
    asked = OmegaConf.to_container(cfg, resolve=True)
    keys, groups = _command_line()
    defaults = OmegaConf.structured(TrainConfig)
    conflicts: list[str] = []
    asked_by: list[str] = []
    with open_dict(cfg):
        for invariant in RESUME_INVARIANTS:
            head, _, leaf = invariant.partition(".")
            old = saved.get(head, {}).get(leaf, _MISSING) if leaf else saved.get(head, _MISSING)
            if old is _MISSING:
                continue  # a checkpoint from before the key existed: keeps what this run composes
            new = asked.get(head, {}).get(leaf) if leaf else asked.get(head)
            new_leaves = _leaves(new, invariant)
            for key, before in sorted(_leaves(old, invariant).items()):  # what the checkpoint knows
                now = new_leaves.get(key)
                by = [k for k in keys if k == key or key.startswith(k + ".") or k.startswith(key + ".")]
                if now != OmegaConf.select(defaults, key, default=None):  # a group's choice, not the default
                    by += groups
                if before != now and by:
                    conflicts.append(f"{key}: checkpoint {before!r}, asked {now!r}")
                    asked_by.extend(o for o in by if o not in asked_by)
            for key, value in old.items() if isinstance(old, dict) else [("", old)]:
                OmegaConf.update(cfg, f"{invariant}.{key}" if key else invariant, value, merge=False, force_add=True)
    if conflicts:
        raise ConfigError(
            f"Cannot resume {cfg.ckpt_path} with a different model or training data (asked by {', '.join(asked_by)}): "
            f"{'; '.join(conflicts)}. A resumed run keeps its checkpoint's {', '.join(RESUME_INVARIANTS)}; drop "
            f"those overrides, or start a new run without ckpt_path."
        )
    return int(ckpt.get("global_step", 0))


_MISSING = object()


def _study_resume(cfg: DictConfig) -> tuple[str | None, dict[str, Any] | None]:
    """In a sweep: (the checkpoint to resume this job from, or the results of a job already done), read from the
    job's own folder; (None, None) for a job that has not run yet (or left nothing to resume from)."""
    if not in_multirun() or cfg.ckpt_path:
        return None, None
    previous = RunResults.load(cfg.run_dir)
    if previous is None:
        return None, None
    if previous.status in ("finished", "diverged"):
        return None, previous.data
    last = Path(cfg.run_dir) / LAST_CHECKPOINT
    return (str(last) if last.is_file() else None), None


def member_config(cfg: DictConfig) -> dict[str, Any]:
    """The member hyperparameters ``cfg`` asks for (``model.*`` with its seed and ``data.augment``), checked."""
    return instantiate(cfg.model, "model", _recursive_=False, seed=int(cfg.seed), augment=cfg.data.get("augment"))


def build_model(cfg: DictConfig) -> GANModule:
    """A population of one as ``cfg`` configures it (what ``gan.train`` trains for a new run)."""
    return GANModule(members=[member_config(cfg)])


MATMUL_PRECISIONS = ("highest", "high", "medium")


def _budget_value(key: str, value: Any, allowed: str, ok: bool) -> None:
    if not ok:
        raise ConfigError(f"trainer.{key}={value!r} {allowed}.")


def check_trainer(cfg: DictConfig, d_steps: int) -> None:
    """The Trainer's values this lab reads itself (the training budget and the logging cadence), then the Trainer
    as Lightning builds it from them, on one device: every value refused here, before anything is written."""
    trainer = cfg.trainer

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    _budget_value(
        "max_epochs",
        max_epochs,
        "is not a budget: use a positive number of epochs, or -1 / null for no epoch limit (with max_steps)",
        max_epochs is None or (is_int(max_epochs) and (max_epochs > 0 or max_epochs == -1)),
    )
    _budget_value(
        "max_steps",
        max_steps,
        "is not a budget: use a positive number of generator iterations, or -1 / null for no step limit",
        max_steps is None or (is_int(max_steps) and (max_steps > 0 or max_steps == -1)),
    )
    if max_epochs in (None, -1) and max_steps in (None, -1) and trainer.get("max_time") is None:
        raise ConfigError(
            "trainer.max_epochs and trainer.max_steps are both unlimited (-1 / null) and trainer.max_time is not set: "
            "the run would never end. Set one of them (e.g. trainer.max_epochs=20)."
        )
    limit = trainer.get("limit_train_batches")
    _budget_value(
        "limit_train_batches",
        limit,
        "would train no batch: use a positive number of batches per epoch, a fraction in (0, 1], or null for all",
        limit is None or (is_int(limit) and limit > 0) or (isinstance(limit, float) and 0.0 < limit <= 1.0),
    )
    every = trainer.get("log_every_n_steps", 50)
    _budget_value(
        "log_every_n_steps",
        every,
        "must be a positive number of iterations between scalar logs (50 is usual)",
        is_int(every) and every > 0,
    )
    precision = cfg.get("float32_matmul_precision", "highest")
    if precision not in MATMUL_PRECISIONS:
        raise ConfigError(f"float32_matmul_precision={precision!r}: valid choices are {', '.join(MATMUL_PRECISIONS)}.")
    built = build_trainer(cfg, d_steps, quiet=True)
    if built.num_devices != 1 or built.world_size != 1:
        raise ConfigError(
            f"trainer.devices={trainer.get('devices')!r} asks for {built.num_devices} devices: a run (or a pack of "
            f"runs) trains on one device. For more GPUs, sweep: python -m gan.train -m ... hydra/launcher=packed "
            f"(or packed_slurm) puts one pack on each GPU."
        )


def prepare(cfg: DictConfig) -> MemberPlan:
    """Check one job's config (every value, before anything is written) and settle how it resumes."""
    check_schema(cfg)
    for key in ("seed", "data.seed", "data.subset_seed", "eval.seed", "model.fixed_noise_seed"):
        check_count(key, OmegaConf.select(cfg, key), 0, "random seeds are integers from 0 to 2**32 - 1")
    resume_from, done = _study_resume(cfg)
    with open_dict(cfg):
        cfg.run_dir = str(Path(cfg.run_dir).resolve())
        if resume_from:
            cfg.ckpt_path = resume_from
    step = resume_invariants(cfg, read_checkpoint(cfg.ckpt_path)) if cfg.ckpt_path else None
    member = member_config(cfg)  # the seed names the run; its streams continue from the checkpoint
    check_trainer(cfg, member["d_steps"])  # and the callbacks, the evaluation and the diagnostics
    # The data module's own checks (batch size, training subset size, all four MNIST files) run now.
    instantiate(cfg.data, "data", value_range=[0.0, 1.0], batches_per_iteration=member["d_steps"]).prepare_data()
    if done is None:
        check_run_dir(cfg.run_dir, in_place=bool(resume_from), multirun=in_multirun())
    config = OmegaConf.to_container(cfg, resolve=True)
    return MemberPlan(
        job=_job_name(),
        run_dir=str(cfg.run_dir),
        config=config,
        member=member,
        ckpt_path=str(cfg.ckpt_path) if cfg.ckpt_path else None,
        in_place=bool(resume_from),
        done=done,
        resume_step=step,
    )


# ----------------------------------------------------------------------------- a pack of plans -> one fit
class PackCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with one addition: resuming a pack reads its members' own checkpoints and
    merges them (``gan.runs.packing.merge_checkpoints``) in place of one file."""

    def __init__(self, member_paths: Sequence[str]) -> None:
        super().__init__()
        self.member_paths = list(member_paths)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return merge_checkpoints([read_checkpoint(p, "a member's checkpoint") for p in self.member_paths])


def build_datamodule(cfg: DictConfig, module: GANModule, plans: Sequence[MemberPlan]) -> MNISTDataModule:
    """The data module serving every member: each its own shuffle seed and its generator's data range."""
    datamodule: MNISTDataModule = instantiate(
        cfg.data,
        "data",
        seed=[int(p.config["data"]["seed"]) for p in plans],
        value_range=[list(r) for r in module.data_ranges],
        batches_per_iteration=module.shared["d_steps"],
    )
    datamodule.prepare_data()  # missing data fails here, before a logger or checkpoint is written
    datamodule.setup("fit")  # and so does a training subset the data cannot supply
    return datamodule


def build_trainer(cfg: DictConfig, d_steps: int, plugins: Sequence[Any] = (), quiet: bool = False) -> L.Trainer:
    callbacks = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c is not None]
    if cfg.get("eval"):  # sample quality and diagnostics: callbacks too, each configured by its own group
        callbacks.append(instantiate(cfg.eval, "eval", data_root=cfg.data.root))
    if cfg.get("diag"):
        callbacks.append(instantiate(cfg.diag, "diag"))
    # The Trainer switches users know win over the callbacks that implement them.
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_checkpointing", True):
        callbacks = [c for c in callbacks if not isinstance(c, Checkpoint)]
    with _lightning_quiet(quiet):
        return instantiate(
            cfg.trainer,
            "trainer",
            max_steps=lightning_max_steps(cfg.trainer.get("max_steps"), d_steps),
            callbacks=callbacks,
            logger=False,  # each member writes its own logs (MemberRun.loggers)
            plugins=list(plugins) or None,
        )


@contextmanager
def _lightning_quiet(quiet: bool) -> Iterator[None]:
    """Lightning's device banner silenced for a Trainer built only to check the config (it prints when the real
    one is built)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def member_runs(plans: Sequence[MemberPlan]) -> list[MemberRun]:
    """Each member's run directory, results record (written now: status running) and loggers."""
    runs = []
    for index, plan in enumerate(plans):
        cfg = plan.cfg
        claim_run_dir(plan.run_dir)  # held until this process ends: no other run writes here meanwhile
        record = RunResults(plan.run_dir, plan.config)
        previous = RunResults.load(plan.run_dir) if plan.in_place else None
        if previous:
            record.continue_from(previous)
        record.write()
        loggers = [instantiate(cfg.logger, "logger")] if cfg.get("logger") else []
        run = MemberRun(index, plan.run_dir, record, loggers)
        run.log_config(OmegaConf.to_yaml(cfg), metric_tags(cfg, plan.member))
        runs.append(run)
    return runs


def metric_tags(cfg: DictConfig, member: dict[str, Any]) -> list[str]:
    """The scalar tags a run's evaluations log (what TensorBoard's HPARAMS tab compares runs by)."""
    if not (cfg.get("eval") and cfg.eval.get("enabled")):
        return []
    prefixes = ["eval"] + (["eval_no_ema"] if member.get("g_ema") else [])
    return [f"{prefix}/{name}" for prefix in prefixes for name in METRIC_NAMES]


def check_pack(plans: Sequence[MemberPlan]) -> None:
    """The settings a pack shares, checked before any member of it starts: the Trainer's values and the data."""
    cfg = plans[0].cfg
    d_steps = plans[0].member["d_steps"]
    check_trainer(cfg, d_steps)
    instantiate(cfg.data, "data", value_range=[0.0, 1.0], batches_per_iteration=d_steps).prepare_data()


def _summary(plan: MemberPlan, results: dict[str, Any], batches: int, wall_s: float) -> dict[str, Any]:
    summary = {
        "run_dir": plan.run_dir,
        "status": results["status"],
        "iterations": results["iterations"],
        "epochs": round(results["iterations"] / max(1, batches), 2),
        "wall_s": round(wall_s, 1),
        "last_checkpoint": str(Path(plan.run_dir) / LAST_CHECKPOINT),
    }
    if results.get("reason"):
        summary["reason"] = results["reason"]
    if results.get("final"):
        summary["final_metrics"] = {k: results["final"][k] for k in METRIC_NAMES}
    return summary


def train_pack(plans: Sequence[MemberPlan]) -> list[dict[str, Any]]:
    """Train the plans as one population (one process, one Lightning fit); each member writes its own run
    directory. Returns each plan's summary, in the plans' order; a member that finished before is not trained."""
    summaries: dict[int, dict[str, Any]] = {}
    for i, plan in enumerate(plans):
        if plan.done is not None:
            summaries[i] = _summary(plan, plan.done, 0, 0.0) | {"skipped": "finished before"}
            print(f"{plan.job}: already {plan.done['status']} in {plan.run_dir}; skipped")
    todo = [i for i, plan in enumerate(plans) if plan.done is None]
    if todo:
        order = [todo[j] for j in activation_order([plans[i].member for i in todo])]
        trained = _fit([plans[i] for i in order])
        summaries.update(zip(order, trained, strict=True))
    return [summaries[i] for i in range(len(plans))]


def _fit(plans: Sequence[MemberPlan]) -> list[dict[str, Any]]:
    cfg = plans[0].cfg
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = GANModule(members=[p.member for p in plans])
    module.run_configs = [p.config for p in plans]
    datamodule = build_datamodule(cfg, module, plans)
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
    trainer = build_trainer(cfg, module.shared["d_steps"], plugins)
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "highest")))
    runs = member_runs(plans)
    scalars, stop = MemberScalars(), SignalStop()
    trainer.callbacks.extend([scalars, stop])
    for callback in trainer.callbacks:
        if isinstance(callback, MemberCallback):
            callback.bind(runs)
    ckpt_path = resuming[0] if resuming else None
    try:
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
        failure = f"{type(exc).__name__}: {exc}"
        if len(plans) == 1:
            _close(runs, module, trainer, failure)
            raise RunFailed("failed", failure) from exc
    _close(runs, module, trainer, failure, interrupted)
    wall = time.perf_counter() - start
    summaries = [
        _summary(p, r.record.data, trainer.num_training_batches, wall) for p, r in zip(plans, runs, strict=True)
    ]
    for summary, plan in zip(summaries, plans, strict=True):
        _print_summary(summary, plan, len(plans))
    if interrupted is not None:  # the whole pack stops: the scheduler wants the process gone
        raise interrupted
    if len(plans) == 1 and summaries[0]["status"] == "diverged":
        raise RunFailed("diverged", summaries[0]["reason"])
    return summaries


def _close(
    runs: Sequence[MemberRun],
    module: GANModule,
    trainer: L.Trainer,
    failure: str | None,
    interrupted: Interrupted | None = None,
) -> None:
    """Every member's results.json says how it ended; loggers are flushed."""
    module.check_divergence()  # a loss that went non-finite since the last logging step
    scalars = [c for c in trainer.callbacks if isinstance(c, MemberScalars)]
    if scalars:
        scalars[0].on_train_batch_end(trainer, module)  # divergences found in the last step
    for run in runs:
        try:
            if run.record.data["status"] == "running":
                if failure is not None:
                    run.record.finish("failed", module.iteration, failure)
                elif interrupted is not None:
                    run.record.finish("interrupted", module.iteration, interrupted.reason)
                else:
                    run.record.finish("interrupted" if trainer.interrupted else "finished", module.iteration)
            for logger in run.loggers:
                logger.finalize("success" if failure is None else "failed")
        except (StorageError, OSError) as exc:  # a full disk: the run's end goes unrecorded, said here instead
            print(f"warning: {run.run_dir}: how the run ended could not be recorded: {exc}", file=sys.stderr)


def _print_summary(summary: dict[str, Any], plan: MemberPlan, pack_size: int) -> None:
    scores = ""
    if summary.get("final_metrics"):
        scores = " " + ", ".join(f"{k}={v:.3g}" for k, v in summary["final_metrics"].items()) + "."
    where = f" (member of a pack of {pack_size})" if pack_size > 1 else ""
    status = "Done" if summary["status"] == "finished" else summary["status"].capitalize()
    print(
        f"{status}: {summary['iterations']} iterations ({summary['epochs']} epochs) in {summary['wall_s']} s{where}."
        f"{scores} Run directory: {summary['run_dir']}  (tensorboard --logdir {summary['run_dir']})"
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one GAN as configured (a population of one); returns a short summary (also printed)."""
    return train_pack([prepare(cfg)])[0]
