"""One job's composed config -> a ``MemberPlan``: every value checked once, resume settled, nothing written.

What Hydra knows of the job (sweep or single run, the command line's keys and groups) is read once at the entry
(``JobState.from_hydra``) and passed down. The checks run before anything is written: the schema, the member's
settings (``gan.model.spec``), the Trainer's arguments (bound to its signature and checked by value, without
building a Trainer), the callbacks' values, the data module's settings and the MNIST files. A sweep's job whose
folder already holds a finished run is done; one whose run was interrupted resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from gan.data import check_settings, prepare_files
from gan.errors import ConfigError, check_count
from gan.model.augment import parse_policy
from gan.model.spec import OPTIMIZER_ALIASES, member_hparams
from gan.runs.build import build_callbacks, build_loggers
from gan.runs.checkpoints import read_checkpoint
from gan.runs.devices import check_accelerator, trains_elsewhere
from gan.runs.names import named_overrides, swept_keys
from gan.runs.packing import DATAMODULE_KEY
from gan.runs.rundir import LAST_CHECKPOINT, RunResults, check_run_dir
from gan.runs.schema import TrainConfig, check_schema
from gan.runs.tuning import check_job as check_tuning_job

# What a resumed run keeps from its checkpoint: what the run is (its model, the data it trains on and how D sees
# it), not where or how long it runs. Compared key by key with the checkpoint's composed config.
RESUME_INVARIANTS = ("model", "act", "data.augment", "data.train_size", "data.subset_seed")
SEED_KEYS = ("seed", "data.seed", "data.subset_seed", "eval.seed", "model.fixed_noise_seed")
MATMUL_PRECISIONS = ("highest", "high", "medium")
PRECISIONS = ("64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "64", "32", "16", "bf16")


@dataclass(frozen=True)
class JobState:
    """What Hydra knows of the running job, read once where a job starts and passed down."""

    multirun: bool = False
    name: str = "this run"  # how messages name the job: its number and overrides in a sweep
    keys: tuple[str, ...] = ()  # the config keys the command line sets
    groups: tuple[str, ...] = ()  # the config group choices the command line makes (``activation=same``)
    named: tuple[tuple[str, str], ...] = ()  # (key, value) of what the run is (gan.runs.names.named_overrides)
    remote: bool = False  # the sweep's launcher trains its jobs on other machines (SLURM): their devices count

    @classmethod
    def from_hydra(cls) -> JobState:
        """The job Hydra is running now (a plain single run outside Hydra)."""
        if not HydraConfig.initialized():
            return cls()
        hydra_cfg = HydraConfig.get()
        task = list(hydra_cfg.overrides.task)
        overrides = OverridesParser.create().parse_overrides(task)
        choices = hydra_cfg.runtime.choices
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        swept = swept_keys(str(Path(str(hydra_cfg.sweep.dir)).resolve())) if multirun else frozenset()
        return cls(
            multirun=multirun,
            name=f"job {hydra_cfg.job.num} ({' '.join(task) or 'no overrides'})" if multirun else "this run",
            keys=tuple(o.key_or_group for o in overrides if o.key_or_group not in choices),
            groups=tuple(
                o.input_line for o in overrides if o.key_or_group in choices and not o.key_or_group.startswith("hydra")
            ),
            named=tuple(named_overrides(task, swept)),
            remote=multirun and trains_elsewhere(OmegaConf.select(hydra_cfg, "launcher._target_")),
        )


PLAIN_RUN = JobState()  # a single run whose command line set nothing


@dataclass
class MemberPlan:
    """One job, checked and ready to train as a member of a pack (plain values: it pickles to a cluster job)."""

    job: str  # how messages name it
    run_dir: str
    config: dict[str, Any]  # the composed config (resolved), as the run records it
    member: dict[str, Any]  # its member settings, checked (gan.model.spec.member_hparams)
    ckpt_path: str | None = None  # resume from here
    in_place: bool = False  # a study resumed in its own folder (keeps its results so far)
    done: dict[str, Any] | None = None  # the results of a member that already finished: nothing to train
    resume_step: int | None = None
    named: list[tuple[str, str]] = field(default_factory=list)  # what the run is: TensorBoard's HPARAMS columns


# ----------------------------------------------------------------------------- resuming
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


_MISSING = object()


def resume_invariants(cfg: DictConfig, ckpt: dict[str, Any], job: JobState) -> int:
    """Make ``cfg`` keep what its checkpoint ran with (``RESUME_INVARIANTS``), so that its logged config and
    results.json say what it really uses; returns the checkpoint's step. A command-line override asking for another
    value of one of them is refused: a key set on the command line (or one below or above it), or a value away
    from the schema's default while a config group is chosen there (a group sets many keys at once)."""
    saved = saved_config(ckpt)
    asked = OmegaConf.to_container(cfg, resolve=True)
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
                by = [k for k in job.keys if k == key or key.startswith(k + ".") or k.startswith(key + ".")]
                if now != OmegaConf.select(defaults, key, default=None):  # a group's choice, not the default
                    by += job.groups
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


# How long and how closely a run is watched: not in a sweep folder's name (gan/runs/names.py), so a finished run
# found there must have had the budget the command asks for.
BUDGET_KEYS = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.limit_train_batches",
    "trainer.fast_dev_run",
    "eval.enabled",
    "eval.num_samples",
    "eval.every_n_epochs",
)


def _same_budget(cfg: DictConfig, previous: RunResults, job: JobState) -> None:
    """A ConfigError when the finished run in the job's folder ran under another budget than the command asks:
    it is kept, never retrained or counted as this budget's run."""
    before = OmegaConf.create(previous.config or {})
    changed = [
        f"{key}={OmegaConf.select(before, key, default=None)!r} (asked {OmegaConf.select(cfg, key, default=None)!r})"
        for key in BUDGET_KEYS
        if OmegaConf.select(before, key, default=None) != OmegaConf.select(cfg, key, default=None)
    ]
    if changed:
        raise ConfigError(
            f"{job.name}: its folder {cfg.run_dir} holds a run that {previous.status} under another budget: "
            f"{', '.join(changed)}. A finished run is kept as it is, never retrained or counted as another budget's; "
            f"give this sweep a new hydra.sweep.dir, or ask for the budget the study ran with."
        )


def _study_resume(cfg: DictConfig, job: JobState) -> tuple[str | None, dict[str, Any] | None]:
    """In a sweep: (the checkpoint to resume this job from, or the results of a job already done), read from the
    job's own folder; (None, None) for a job that has not run yet (or left nothing to resume from)."""
    if not job.multirun or cfg.ckpt_path:
        return None, None
    previous = RunResults.load(cfg.run_dir)
    if previous is None:
        return None, None
    if previous.status in ("finished", "diverged"):
        _same_budget(cfg, previous, job)
        return None, previous.data
    last = Path(cfg.run_dir) / LAST_CHECKPOINT
    return (str(last) if last.is_file() else None), None


# ----------------------------------------------------------------------------- the checks
def member_config(cfg: DictConfig) -> dict[str, Any]:
    """The member settings ``cfg`` asks for (``model.*`` with its seed and augmentation), checked once.
    ``data.augment``, the augmentation's old place, is read when ``model.augment`` is not set."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    target = model.pop("_target_", None)
    if target not in (None, "gan.model.spec.member_hparams"):
        raise ConfigError(
            f"model._target_={target!r}: this lab builds one kind of model, checked by gan.model.spec.member_hparams "
            f"(a model config names no other code)."
        )
    old_place = cfg.data.get("augment")
    parse_policy(old_place, "data.augment")
    if old_place not in (None, "none") and model.get("augment") in (None, "none", []):
        model["augment"] = old_place
    elif old_place not in (None, "none") and model.get("augment") != old_place:
        raise ConfigError(
            f"data.augment={old_place!r} and model.augment={model.get('augment')!r} disagree: the augmentation is a "
            f"model setting now (model.augment); set it there only."
        )
    return member_hparams(**model, seed=int(cfg.seed))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _budget_value(key: str, value: Any, allowed: str, ok: bool) -> None:
    if not ok:
        raise ConfigError(f"trainer.{key}={value!r} {allowed}.")


def check_budget(trainer: DictConfig) -> None:
    """The Trainer's values this lab reads itself: the training budget and the logging cadence."""
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    _budget_value(
        "max_epochs",
        max_epochs,
        "is not a budget: use a positive number of epochs, or -1 / null for no epoch limit (with max_steps)",
        max_epochs is None or (_is_int(max_epochs) and (max_epochs > 0 or max_epochs == -1)),
    )
    _budget_value(
        "max_steps",
        max_steps,
        "is not a budget: use a positive number of generator iterations, or -1 / null for no step limit",
        max_steps is None or (_is_int(max_steps) and (max_steps > 0 or max_steps == -1)),
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
        limit is None or (_is_int(limit) and limit > 0) or (isinstance(limit, float) and 0.0 < limit <= 1.0),
    )
    every = trainer.get("log_every_n_steps", 50)
    _budget_value(
        "log_every_n_steps",
        every,
        "must be a positive number of iterations between scalar logs (50 is usual)",
        _is_int(every) and every > 0,
    )


def _device_count(accelerator: str, devices: Any) -> int:
    """How many devices ``trainer.devices`` asks for (``auto`` and -1: all of the accelerator's)."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, str) and devices != "auto":
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if devices == "auto" or devices == -1:
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return max(1, torch.cuda.device_count()) if gpu else 1
    return int(devices)


def check_trainer(cfg: DictConfig, here: bool = True) -> None:
    """The Trainer's arguments, checked without building a Trainer (as torchtune's recipes validate a config):
    the budget, the names bound to ``lightning.Trainer``'s signature, the accelerator, the precision and one
    device (its availability only ``here``: a job sent to another machine is checked there, by Lightning); then the
    callbacks' values (``build_callbacks``)."""
    trainer = cfg.trainer
    check_budget(trainer)
    precision = cfg.get("float32_matmul_precision", "highest")
    if precision not in MATMUL_PRECISIONS:
        raise ConfigError(f"float32_matmul_precision={precision!r}: valid choices are {', '.join(MATMUL_PRECISIONS)}.")
    arguments = {k: v for k, v in OmegaConf.to_container(trainer, resolve=True).items() if not k.startswith("_")}
    try:
        inspect.signature(L.Trainer).bind(**arguments)
    except TypeError as exc:
        raise ConfigError(
            f"trainer: {exc}. See lightning.Trainer's arguments (+trainer.NAME=VALUE adds one)."
        ) from None
    accelerator = str(arguments.get("accelerator", "auto"))
    check_accelerator(accelerator, here)
    if str(arguments.get("precision", "32-true")) not in PRECISIONS:
        raise ConfigError(
            f"trainer: Precision {arguments.get('precision')} is invalid. Allowed precision values: "
            f"{', '.join(PRECISIONS)}."
        )
    devices = arguments.get("devices", "auto")
    count = _device_count(accelerator, devices)
    if count != 1 or arguments.get("num_nodes", 1) != 1:
        raise ConfigError(
            f"trainer.devices={devices!r} asks for {count} devices: a run (or a pack of runs) trains on one device. "
            f"For more GPUs, sweep: python -m gan.train -m ... hydra/launcher=packed (or packed_slurm) puts one pack "
            f"on each GPU."
        )
    build_callbacks(cfg)


def prepare(cfg: DictConfig, job: JobState = PLAIN_RUN) -> MemberPlan:
    """Check one job's config (every value, once, before anything is written) and settle how it resumes. ``job``
    is what the entry point read of Hydra's job (``JobState.from_hydra``); a plain single run without it."""
    check_schema(cfg)
    check_tuning_job(cfg)
    for key in SEED_KEYS:
        check_count(key, OmegaConf.select(cfg, key), 0, "random seeds are integers from 0 to 2**32 - 1")
    resume_from, done = _study_resume(cfg, job)
    with open_dict(cfg):
        cfg.run_dir = str(Path(cfg.run_dir).resolve())
        if resume_from:
            cfg.ckpt_path = resume_from
    step = resume_invariants(cfg, read_checkpoint(cfg.ckpt_path), job) if cfg.ckpt_path else None
    member = member_config(cfg)  # the seed names the run; its streams continue from the checkpoint
    check_trainer(cfg, here=not job.remote)
    build_loggers(OmegaConf.to_container(cfg, resolve=True))  # its arguments, checked: a logger writes nothing yet
    check_settings(cfg.data.batch_size, cfg.data.train_size, member["d_steps"])  # the data module's own rules
    prepare_files(cfg.data.root, bool(cfg.data.download))  # all four MNIST files, from their headers
    if done is None:
        check_run_dir(cfg.run_dir, in_place=bool(resume_from), multirun=job.multirun)
    return MemberPlan(
        job=job.name,
        run_dir=str(cfg.run_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
        member=member,
        ckpt_path=str(cfg.ckpt_path) if cfg.ckpt_path else None,
        in_place=bool(resume_from),
        done=done,
        resume_step=step,
        named=list(job.named),
    )
