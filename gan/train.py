"""Entry point: ``python -m gan.train [overrides]`` trains one GAN; ``-m`` sweeps (Hydra multirun).

Order of work: check the config and the data (fail fast, before anything is written), then build the Lightning
pieces from their config groups, log the composed config, fit, and print where the run directory is.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import Checkpoint, ProgressBar
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict

from gan.activations import ActivationError
from gan.augment import AugmentError, parse_policy
from gan.data import MNISTDataError, MNISTDataModule
from gan.evaluation import SampleQuality
from gan.evaluator import EvaluatorError
from gan.losses import LossError
from gan.metrics import METRIC_NAMES
from gan.module import DivergenceError, GANModule
from gan.networks import NetworkConfigError
from gan.results import RunResults

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
MODEL_OVERRIDE_PREFIXES = ("model.", "model=", "activation=", "activation.", "stability=")
# The data settings that define what a run trains on (resume keeps them, like the model).
DATA_SUBSET_KEYS = ("train_size", "subset_seed", "augment")
DATA_OVERRIDE_PREFIXES = tuple(f"data.{k}" for k in DATA_SUBSET_KEYS) + ("data=", "stability=")


class ConfigError(ValueError):
    """A config value that cannot work; the message names it and the valid choices."""


def lightning_max_steps(max_steps: int | None, d_steps: int) -> int:
    """The lab's ``max_steps`` (generator iterations) -> Lightning's (optimizer steps: d_steps + 1 per iteration)."""
    if max_steps is None or int(max_steps) < 0:
        return -1
    return int(max_steps) * (int(d_steps) + 1)


def _explicit_overrides(prefixes: tuple[str, ...]) -> list[str]:
    """The command-line overrides that start with one of ``prefixes``."""
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith(prefixes)]


def instantiate(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose bad-value failures become one ConfigError naming the config group."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except hydra.errors.InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            own = (ActivationError, LossError, NetworkConfigError, AugmentError)  # messages that name their key
            names_key = isinstance(cause, own) or str(cause).startswith(f"{group}.")
            message = str(cause) if names_key else f"{group}: {cause}"
            raise ConfigError(message) from cause
        raise


def adopt(node: DictConfig, values: dict[str, Any]) -> None:
    """Write what a resumed run really uses back into its config, so that the logged config and results.json say it."""
    with open_dict(node):
        for key, value in values.items():
            node[key] = value


def build_model(cfg: DictConfig) -> GANModule:
    """The GAN from ``cfg.model`` or, when resuming, from the checkpoint's own hyperparameters (then also written
    into ``cfg.model``)."""
    model: GANModule = instantiate(cfg.model, "model", _recursive_=False)
    if not cfg.ckpt_path:
        return model
    saved = resume_checkpoint(cfg)["hyper_parameters"]
    keep_checkpoint_settings(cfg, "model", saved, dict(model.hparams), MODEL_OVERRIDE_PREFIXES, "model")
    return GANModule(**saved)


def keep_checkpoint_settings(
    cfg: DictConfig, group: str, saved: dict[str, Any], asked: dict[str, Any], prefixes: tuple[str, ...], what: str
) -> None:
    """A resumed run keeps the checkpoint's ``what``: command-line overrides asking for other values are refused,
    and ``cfg[group]`` is set to what the run really uses."""
    changed = {k: (saved.get(k), v) for k, v in asked.items() if saved.get(k) != v}
    explicit = _explicit_overrides(prefixes)
    if changed and explicit:
        diffs = "; ".join(f"{group}.{k}: checkpoint {old!r}, asked {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(
            f"Cannot resume {cfg.ckpt_path} with a different {what} ({' '.join(explicit)}): {diffs}. A resumed run "
            f"keeps the checkpoint's {what}; drop those overrides, or start a new run without ckpt_path."
        )
    adopt(cfg[group], saved)


def resume_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint named by ``ckpt_path``, read once however many settings are taken from it (treat as read-only)."""
    path = Path(cfg.ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file (looked at {path.resolve()}).")
    key = (str(path.resolve()), path.stat().st_mtime_ns)  # a rewritten file is read again
    if key not in _LAST_CHECKPOINT:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - unreadable file -> one clear message
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r} is not a readable checkpoint: {exc}") from exc
        if "hyper_parameters" not in ckpt:
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r} was not written by gan.train (no hyper_parameters).")
        _LAST_CHECKPOINT.clear()
        _LAST_CHECKPOINT[key] = ckpt
    return _LAST_CHECKPOINT[key]


# The one checkpoint resume_checkpoint read last (a plain dict, so launchers that pickle this module still can).
_LAST_CHECKPOINT: dict[tuple[str, int], dict[str, Any]] = {}


def resumed_data_settings(cfg: DictConfig) -> dict[str, Any]:
    """When resuming: the checkpoint's training subset and augmentation, which the resumed run keeps (as it keeps
    the model); asking for other values explicitly is an error. Empty for a new run or an older checkpoint."""
    if not cfg.ckpt_path:
        return {}
    saved = resume_checkpoint(cfg).get(MNISTDataModule.__qualname__, {}).get("subset")
    if saved is None:
        return {}
    asked = {k: cfg.data.get(k) for k in DATA_SUBSET_KEYS}
    asked["augment"] = list(parse_policy(asked["augment"]))
    keep_checkpoint_settings(cfg, "data", saved, asked, DATA_OVERRIDE_PREFIXES, "training subset and augmentation")
    return dict(saved)


def build_datamodule(cfg: DictConfig, model: GANModule) -> MNISTDataModule:
    """The data module with the pixel range of the generator's output activation (never configured twice)."""
    datamodule: MNISTDataModule = instantiate(
        cfg.data,
        "data",
        value_range=list(model.data_range),
        batches_per_iteration=model.hparams.d_steps,
        **resumed_data_settings(cfg),
    )
    datamodule.prepare_data()  # missing data fails here, before a logger or checkpoint is written
    datamodule.setup("fit")  # and so does a training subset the data cannot supply
    return datamodule


def build_trainer(cfg: DictConfig, d_steps: int) -> L.Trainer:
    callbacks = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items() if c is not None]
    # The Trainer switches users know win over the callbacks that implement them.
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_checkpointing", True):
        callbacks = [c for c in callbacks if not isinstance(c, Checkpoint)]
    logger = instantiate(cfg.logger, "logger") if cfg.get("logger") else False
    return instantiate(
        cfg.trainer,
        "trainer",
        max_steps=lightning_max_steps(cfg.trainer.get("max_steps"), d_steps),
        callbacks=callbacks,
        logger=logger,
    )


def log_config(trainer: L.Trainer, cfg: DictConfig, record: RunResults) -> None:
    """The composed config as YAML text and as TensorBoard hparams (flattened).

    With sample-quality evaluation on, the hparams are written at its first evaluation instead, together with the
    metrics the HPARAMS tab compares runs by.
    """
    quality = [c for c in trainer.callbacks if isinstance(c, SampleQuality) and c.enabled]
    for callback in quality:
        callback.record = record
    for logger in trainer.loggers:
        if not quality:
            logger.log_hyperparams(record.data["config"])
        if hasattr(logger.experiment, "add_text"):
            logger.experiment.add_text("config", "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```", 0)


class RunFailed(RuntimeError):
    """The run stopped (diverged or failed) after it started; results.json says why."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one GAN as configured; returns a short summary (also printed)."""
    L.seed_everything(int(cfg.seed), workers=True)
    model = build_model(cfg)
    datamodule = build_datamodule(cfg, model)
    trainer = build_trainer(cfg, model.hparams.d_steps)
    record = RunResults(cfg.run_dir, OmegaConf.to_container(cfg, resolve=True))
    record.write()
    log_config(trainer, cfg, record)
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path or None)
    except DivergenceError as exc:
        record.finish("diverged", model.iteration, str(exc))
        raise RunFailed("diverged", str(exc)) from exc
    except Exception as exc:
        record.finish("failed", model.iteration, f"{type(exc).__name__}: {exc}")
        raise RunFailed("failed", f"{type(exc).__name__}: {exc}") from exc
    record.finish("interrupted" if trainer.interrupted else "finished", model.iteration)
    summary = {
        "run_dir": str(Path(cfg.run_dir).resolve()),
        "iterations": model.iteration,
        "epochs": round(model.iteration / max(1, trainer.num_training_batches), 2),
        "wall_s": round(time.perf_counter() - start, 1),
        "last_checkpoint": str(Path(cfg.run_dir).resolve() / "checkpoints" / "last.ckpt"),
    }
    scores = ""
    if record.data["final"]:
        summary["final_metrics"] = {k: record.data["final"][k] for k in METRIC_NAMES}
        scores = " " + ", ".join(f"{k}={v:.3g}" for k, v in summary["final_metrics"].items()) + "."
    print(
        f"Done: {summary['iterations']} iterations ({summary['epochs']} epochs) in {summary['wall_s']} s.{scores} "
        f"Run directory: {summary['run_dir']}  (tensorboard --logdir {summary['run_dir']})"
    )
    return summary


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns the final fid (the objective a Hydra sweeper minimises); NaN when the run has none.

    In a multirun a job that fails reports and returns NaN, so that the sweep goes on with the next job.
    """
    try:
        summary = train(cfg)
    except (ConfigError, MNISTDataError, EvaluatorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if _in_multirun():
            return math.nan
        sys.exit(2)
    except RunFailed as exc:
        print(f"run {exc}; recorded in {Path(cfg.run_dir).resolve() / 'results.json'}", file=sys.stderr)
        if _in_multirun():
            return math.nan
        sys.exit(1)
    return summary.get("final_metrics", {}).get("fid", math.nan)


if __name__ == "__main__":
    main()
