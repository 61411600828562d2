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
import re
from dataclasses import dataclass, field
from datetime import timedelta
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
from gan.eval.sampling import available_memory, format_bytes
from gan.images import IMAGE_DIM
from gan.model.augment import parse_policy
from gan.model.graphed import CUDA_GRAPH_CHOICES, MIXED_PRECISIONS, cuda_graph_setting
from gan.model.spec import OPTIMIZER_ALIASES, member_hparams
from gan.runs.build import build_callbacks, build_loggers
from gan.runs.checkpoints import RESUME_INVARIANTS, check_weights, model_weights, read_checkpoint
from gan.runs.devices import check_accelerator, trains_elsewhere
from gan.runs.names import named_overrides, swept_keys
from gan.runs.packing import DATAMODULE_KEY
from gan.runs.quality import MAX_JACOBIAN_SAMPLES
from gan.runs.rundir import LAST_CHECKPOINT, RESULTS_NAME, RunResults, check_run_dir
from gan.runs.schema import TrainConfig, check_schema
from gan.runs.tuning import check_job as check_tuning_job

# What a resumed run keeps from its checkpoint (RESUME_INVARIANTS, gan.runs.checkpoints): what the run is (its
# model, the data it trains on and how D sees it), not where or how long it runs. Compared key by key with the
# checkpoint's composed config, whose values read_checkpoint checked against the schema (plain values, no code).
SEED_KEYS = ("seed", "data.seed", "data.subset_seed", "eval.seed", "model.fixed_noise_seed")
MAX_SEED = 2**32 - 1  # Lightning's seed_everything and numpy take no larger seed
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
    differs: list[str] = field(default_factory=list)  # a finished member: the settings this command asks otherwise

    def skipped_line(self) -> str:
        """What a study rerun says of a member that finished before: skipped, its folder untouched, and the
        settings this command asks otherwise than the run recorded (its record keeps what it ran with)."""
        status = (self.done or {}).get("status")
        line = f"{self.job}: already {status} in {self.run_dir}; skipped, its folder left as it is"
        if self.differs:
            more = f"; and {len(self.differs) - 8} more" if len(self.differs) > 8 else ""
            line += (
                f". This command asks other settings than the run recorded, which its record keeps (it ran with "
                f"these): {'; '.join(self.differs[:8])}{more}"
            )
        return line


# ----------------------------------------------------------------------------- resuming
def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """A nested config entry as {dotted key: leaf value}."""
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in _leaves(sub, f"{prefix}.{key}").items()}
    return {prefix: value}


def saved_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a resume reads of the composed config a checkpoint ran with (``RESUME_INVARIANTS`` only; checkpoints
    from before it was stored: rebuilt from its member hyperparameters and the data module's training subset), from
    a checkpoint ``read_checkpoint`` checked. Its settings are data: the model's ``_target_`` (the code that builds
    it) is not taken from the file but from this lab's config, and its optimizers' names are read as today's
    (``gan.optim.Adam`` in checkpoints written before the package's floors)."""
    if ckpt.get("run_configs"):
        whole = ckpt["run_configs"][0]
        saved: dict[str, Any] = {}
        for invariant in RESUME_INVARIANTS:  # nothing else of the file's config is read
            head, _, leaf = invariant.partition(".")
            if head in whole and (not leaf or leaf in whole[head]):
                value = copy.deepcopy(whole[head][leaf] if leaf else whole[head])
                saved[head] = saved.get(head, {}) | {leaf: value} if leaf else value
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


def _recorded(config: Any, key: str) -> Any:
    """The value at dotted ``key`` of a config read from disk (plain dicts), None where it has none."""
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _same_budget(cfg: DictConfig, previous: RunResults, job: JobState) -> None:
    """A ConfigError when the finished run in the job's folder ran under another budget than the command asks:
    it is kept, never retrained or counted as this budget's run. The recorded config is read as plain values, never
    resolved (an interpolation in the file is not evaluated: it differs from what the command asks)."""
    changed = [
        f"{key}={_recorded(previous.config, key)!r} (asked {OmegaConf.select(cfg, key, default=None)!r})"
        for key in BUDGET_KEYS
        if _recorded(previous.config, key) != OmegaConf.select(cfg, key, default=None)
    ]
    if changed:
        raise ConfigError(
            f"{job.name}: its folder {cfg.run_dir} holds a run that {previous.status} under another budget: "
            f"{', '.join(changed)}. A finished run is kept as it is, never retrained or counted as another budget's; "
            f"give this sweep a new hydra.sweep.dir, or ask for the budget the study ran with."
        )


def _check_damage(folder: Path, job: JobState) -> None:
    """A ConfigError when the job's folder holds a run whose record cannot be read (a damaged results.json, or
    a run's checkpoints or event files without one): it is reported and left as it is, never trained over."""
    problem = RunResults.problem(folder)
    if problem == "no results.json":
        files = [p.name for p in (folder / "checkpoints", *folder.glob("events.out.tfevents*")) if p.exists()]
        if not files:
            return  # a job that never started (or left nothing of its run)
        problem = f"no results.json beside the run's {', '.join(files)}"
    raise ConfigError(
        f"{job.name}: its folder {folder} holds a run whose record cannot be read ({problem}). It is left as it is, "
        f"not trained over. Look at {folder / RESULTS_NAME}; to train this job again, move its folder aside (e.g. "
        f"mv '{folder}' '{folder}.damaged') and run the command again."
    )


def recorded_differences(asked: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """The settings (dotted keys) a command asks otherwise than a finished run's record, as ``key (ran X, asked
    Y)``; where the run was and how it was resumed (``run_dir``, ``ckpt_path``) are not settings."""
    now = {k: v for key, value in asked.items() for k, v in _leaves(value, key).items()}
    ran = {k: v for key, value in recorded.items() for k, v in _leaves(value, key).items()}
    keys = sorted(k for k in now.keys() | ran.keys() if k.split(".")[0] not in ("run_dir", "ckpt_path"))
    return [
        f"{k} (ran {ran.get(k, 'unset')!r}, asked {now.get(k, 'unset')!r})"
        for k in keys
        if now.get(k, _MISSING) != ran.get(k, _MISSING)
    ]


def _study_resume(cfg: DictConfig, job: JobState) -> tuple[str | None, dict[str, Any] | None]:
    """In a sweep: (the checkpoint to resume this job from, or the results of a job already done), read from the
    job's own folder; (None, None) for a job that has not run yet (or left nothing to resume from)."""
    if not job.multirun or cfg.ckpt_path:
        return None, None
    previous = RunResults.load(cfg.run_dir)
    if previous is None:
        _check_damage(Path(cfg.run_dir), job)
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


def max_time_seconds(value: Any) -> float | None:
    """``trainer.max_time`` in seconds, read as Lightning's Timer reads it (``DD:HH:MM:SS``, or a dict of
    ``timedelta``'s arguments such as ``{hours: 2}``); None for no time limit. Anything else is a ConfigError here,
    before a run folder exists (Lightning would fail on it later, an int with a traceback)."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            found = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", value.strip())
            if found:
                days, hours, minutes, seconds = map(int, found.groups())
                return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
        elif isinstance(value, (dict, DictConfig)):
            return timedelta(**dict(value)).total_seconds()
    except (TypeError, ValueError, OverflowError):
        pass
    raise ConfigError(
        f"trainer.max_time={value!r} is not a duration: use DD:HH:MM:SS (e.g. trainer.max_time=00:02:00:00 for two "
        f"hours), a dict of days, hours, minutes and seconds (trainer.max_time={{hours:2}}), or null for no time limit."
    )


def check_budget(trainer: DictConfig) -> None:
    """The Trainer's values this lab reads itself: the training budget and the logging cadence."""
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    max_time = max_time_seconds(trainer.get("max_time"))
    _budget_value(
        "max_time",
        trainer.get("max_time"),
        "is not a budget: training would stop before its first iteration; use a positive duration "
        "(e.g. 00:00:30:00 for 30 minutes), or null for no time limit",
        max_time is None or max_time > 0,
    )
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


def check_batch_statistics(member: dict[str, Any], batch_size: int) -> None:
    """Batch norm normalizes each unit over the batch, and the minibatch standard deviation measures the spread of
    a group of the batch: a batch of one sample has no spread (every normalized unit 0, whatever the input; the
    feature a constant). Refused before any work: training would run silently, without what was asked."""
    norms = [f"model.{key}=batch" for key in ("g_norm", "d_norm") if member.get(key) == "batch"]
    if norms and batch_size < 2:
        raise ConfigError(
            f"{' and '.join(norms)} with data.batch_size={batch_size}: batch norm normalizes each unit over the "
            f"batch, and one sample has no spread (every normalized unit would be 0, whatever the input). Use "
            f"data.batch_size=2 or more (64 is usual), or layer norm (model.g_norm=layer / model.d_norm=layer)."
        )
    if member.get("d_minibatch_std") and batch_size < 2:
        raise ConfigError(
            f"model.d_minibatch_std=true with data.batch_size={batch_size}: the feature is the standard deviation "
            f"across a group of a batch's samples, and one sample has none. Use data.batch_size=2 or more (64 is "
            f"usual; a group of model.d_minibatch_std_group={member.get('d_minibatch_std_group')} when it divides "
            f"the batch, else the whole batch), or model.d_minibatch_std=false."
        )


# Lightning's validation-loop arguments: the lab has no validation loop (its evaluations are the eval callback's)
VALIDATION_LOOP_KEYS = ("val_check_interval", "check_val_every_n_epoch", "limit_val_batches", "num_sanity_val_steps")


def check_manual_optimization(arguments: dict[str, Any]) -> None:
    """The Trainer's arguments that Lightning refuses for a module that steps its own optimizers (this lab's GAN:
    G and D each in turn), refused here before a run folder exists rather than by Lightning once the run started."""
    clip, accumulate = arguments.get("gradient_clip_val"), arguments.get("accumulate_grad_batches", 1)
    if clip is not None and not (isinstance(clip, (int, float)) and clip <= 0):
        raise ConfigError(
            f"trainer.gradient_clip_val={clip!r}: this lab's GAN steps G's and D's optimizers itself (Lightning's "
            f"manual optimization), which Lightning's gradient clipping does not support. Leave it out (null); "
            f"model.r1_weight, model.d_spectral_norm or model.loss=wgan-gp keep D's gradients in check instead."
        )
    validation = {k: arguments[k] for k in VALIDATION_LOOP_KEYS if arguments.get(k) is not None}
    if validation:
        given = ", ".join(f"trainer.{k}={v!r}" for k, v in validation.items())
        raise ConfigError(
            f"{given}: this lab has no validation loop (the evaluations are eval.*: eval.every_n_epochs, "
            f"eval.num_samples), so Lightning would ignore it. Leave it out."
        )
    if accumulate != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate!r}: this lab's GAN steps G's and D's optimizers itself "
            f"(Lightning's manual optimization), which Lightning's gradient accumulation does not support. Leave "
            f"it at 1; a larger data.batch_size gives each step more images."
        )


# Host memory of one member's model (its weights built on the CPU first): each weight held about this many times
# (the weight, its gradient, Adam's two moments, the initialization's transposed copy, the checkpoint's copy).
WEIGHT_COPIES = 6
FLOAT_BYTES = 4


def model_bytes(member: dict[str, Any], batch_size: int) -> dict[str, int]:
    """About how much memory one member needs, by the settings that decide it: its weights (``model.latent_dim``,
    ``model.g_hidden``, ``model.d_hidden``), its fixed noise and the grid drawn from it (``model.num_fixed_samples``)
    and one iteration's activations (``data.batch_size``)."""
    g = [member["latent_dim"], *member["g_hidden"], IMAGE_DIM]
    d = [IMAGE_DIM, *member["d_hidden"], 1]
    weights = sum(a * b + b for dims in (g, d) for a, b in zip(dims[:-1], dims[1:], strict=True))
    units = sum(g) + sum(d)
    return {
        "model.latent_dim, model.g_hidden, model.d_hidden": weights * WEIGHT_COPIES * FLOAT_BYTES,
        "model.num_fixed_samples": member["num_fixed_samples"] * (member["latent_dim"] + 3 * IMAGE_DIM) * FLOAT_BYTES,
        "data.batch_size, model.d_steps": batch_size * member["d_steps"] * units * 4 * FLOAT_BYTES,
    }


def check_model_memory(member: dict[str, Any], batch_size: int, members: int = 1, what: str = "one run") -> None:
    """A ConfigError, before any work, when ``members`` such members (``what``: how the message names them) would
    need more memory than this machine has available: the allocator's error would come only when the model is
    built, after the run folder was written, as a traceback."""
    available = available_memory()
    parts = {key: size * members for key, size in model_bytes(member, batch_size).items()}
    need = sum(parts.values())
    if available is None or need <= available:
        return
    keys, most = max(parts.items(), key=lambda item: item[1])
    values = ", ".join(
        f"{key}={member[key.split('.')[1]] if key.startswith('model.') else batch_size}" for key in keys.split(", ")
    )  # the settings of the largest part
    raise ConfigError(
        f"{values}: {what} would need about {format_bytes(need)} of memory ({format_bytes(most)} of it for {keys}), "
        f"and this machine has {format_bytes(available)} available. Use smaller values (the defaults: "
        f"model.latent_dim=100, model.g_hidden=[128,256,512], model.d_hidden=[512,256,128], "
        f"model.num_fixed_samples=64, data.batch_size=64)."
    )


def check_diag_jacobian(diag: DictConfig) -> None:
    """``diag.jacobian_samples`` within the evaluation's bound (``MAX_JACOBIAN_SAMPLES``). The probe measures G's
    Jacobian at the noise of the batch it probes: at most ``data.batch_size`` z, whatever is asked (docs/knobs.md)."""
    check_count(
        "diag.jacobian_samples",
        diag.get("jacobian_samples"),
        0,
        "0 = off, 16 is usual; measured at the probed batch's z, at most data.batch_size of them",
        MAX_JACOBIAN_SAMPLES,
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


def check_cuda_graphs(setting: Any, accelerator: str, precision: Any = "32-true") -> None:
    """``cuda_graphs``: auto (capture the training iteration on a GPU), on (the same, asked for explicitly: so not
    with the CPU, nor with a mixed precision, whose loss scaling a capture leaves out), off (eager everywhere)."""
    setting = cuda_graph_setting(setting)
    if setting not in CUDA_GRAPH_CHOICES:
        raise ConfigError(
            f"cuda_graphs={setting!r}: valid choices are {', '.join(CUDA_GRAPH_CHOICES)} (auto: the training "
            f"iteration replays as one CUDA graph on a GPU; off: eager)."
        )
    if setting == "on" and (accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())):
        raise ConfigError(
            "cuda_graphs=on with trainer.accelerator=cpu: CUDA graphs need a GPU (trainer.accelerator=gpu). On the "
            "CPU the iteration always runs eagerly; use cuda_graphs=auto or off."
        )
    if setting == "on" and str(precision) in MIXED_PRECISIONS:
        raise ConfigError(
            f"cuda_graphs=on with trainer.precision={precision}: a captured iteration leaves out Lightning's mixed "
            f"precision (autocast, loss scaling). Use a true precision (32-true, the default) or cuda_graphs=off; "
            f"cuda_graphs=auto runs such a run eagerly."
        )


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
    check_cuda_graphs(
        cfg.get("cuda_graphs", "off"), str(arguments.get("accelerator", "auto")), arguments.get("precision", "32-true")
    )
    try:
        inspect.signature(L.Trainer).bind(**arguments)
    except TypeError as exc:
        raise ConfigError(
            f"trainer: {exc}. See lightning.Trainer's arguments (+trainer.NAME=VALUE adds one)."
        ) from None
    check_manual_optimization(arguments)
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
        check_count(key, OmegaConf.select(cfg, key), 0, "numpy's and Lightning's seed range, 2**32 - 1", MAX_SEED)
    resume_from, done = _study_resume(cfg, job)
    with open_dict(cfg):
        cfg.run_dir = str(Path(cfg.run_dir).resolve())
        if resume_from:
            cfg.ckpt_path = resume_from
    ckpt = read_checkpoint(cfg.ckpt_path) if cfg.ckpt_path else None  # its saved settings checked: data only
    step = resume_invariants(cfg, ckpt, job) if ckpt is not None else None
    member = member_config(cfg)  # the seed names the run; its streams continue from the checkpoint
    if ckpt is not None:  # its tensors fit the model they will be loaded into, before anything is written
        check_weights(ckpt, model_weights(member, cfg.ckpt_path), cfg.ckpt_path)
    check_trainer(cfg, here=not job.remote)
    build_loggers(OmegaConf.to_container(cfg, resolve=True))  # its arguments, checked: a logger writes nothing yet
    check_settings(cfg.data.batch_size, cfg.data.train_size, member["d_steps"])  # the data module's own rules
    check_batch_statistics(member, cfg.data.batch_size)
    check_diag_jacobian(cfg.diag)
    check_model_memory(member, cfg.data.batch_size)
    prepare_files(cfg.data.root, bool(cfg.data.download))  # all four MNIST files, from their headers
    config = OmegaConf.to_container(cfg, resolve=True)
    if done is None:
        check_run_dir(cfg.run_dir, in_place=bool(resume_from), multirun=job.multirun)
    return MemberPlan(
        job=job.name,
        run_dir=str(cfg.run_dir),
        config=config,
        member=member,
        ckpt_path=str(cfg.ckpt_path) if cfg.ckpt_path else None,
        in_place=bool(resume_from),
        done=done,
        resume_step=step,
        named=list(job.named),
        differs=recorded_differences(config, done["config"]) if done and isinstance(done.get("config"), dict) else [],
    )
