"""Sample quality during training: a cheap collapse signal every epoch, full metrics on a schedule.

Every epoch: ``eval/diversity`` of the fixed-noise grid (1 = as varied as real digits, 0 = one image 64 times).
Every ``eval.every_n_epochs`` epochs and at the end of training: ``eval.num_samples`` samples from a fixed
evaluation noise (the same z each time, so curves compare generators, not draws) scored by ``gan.metrics``,
logged under ``eval/`` and as the TensorBoard HPARAMS metrics, appended to ``RUN_DIR/results.json``, and the
generator with the best fid so far kept as ``checkpoints/best-fid.ckpt``.

With ``model.g_ema`` the samples come from G's weight average, and the trained G is scored too, under
``eval_no_ema/`` (and ``no_ema`` in results.json), so the average's effect shows side by side.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from gan.callbacks import save_checkpoint_atomic
from gan.evaluator import MIN_TEST_ACCURACY, Evaluator, load_evaluator
from gan.metrics import METRIC_NAMES, diversity, features_metrics
from gan.results import RunResults
from gan.sample import draw


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"model/g_act": "relu", ...} with values TensorBoard's hparams accept."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def declare_hparams(trainer: L.Trainer, config: dict[str, Any], metrics: dict[str, float]) -> None:
    """The run's hyperparameters and the metric tags the HPARAMS tab compares runs by.

    Lightning's ``log_hyperparams(params, metrics)`` would also write the metrics as scalars at step 0, a false
    first point on every eval curve; this writes only the hparams summaries (the metric values themselves are the
    ``eval/*`` scalars, of which TensorBoard shows the latest).
    """
    from torch.utils.tensorboard.summary import hparams

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in hparams(flatten_config(config), metrics):
                writer.add_summary(summary)
        else:
            logger.log_hyperparams(config)


class SampleQuality(Callback):
    """Scores the generator with the MNIST evaluator while it trains (see the module docstring)."""

    def __init__(
        self,
        data_root: str,
        run_dir: str,
        enabled: bool = True,
        every_n_epochs: int = 5,
        num_samples: int = 10000,
        seed: int = 0,
        min_evaluator_accuracy: float = MIN_TEST_ACCURACY,
    ) -> None:
        self.data_root = data_root
        self.run_dir = Path(run_dir)
        self.enabled = bool(enabled)
        self.every_n_epochs = int(every_n_epochs)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.min_evaluator_accuracy = float(min_evaluator_accuracy)
        self.record: RunResults | None = None  # the run's results.json, handed over by gan.train
        self.evaluator: Evaluator | None = None
        self._hparams_logged = False
        self._last_eval_iteration = -1

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or self.evaluator is not None:
            return
        self.evaluator = load_evaluator(self.data_root, min_accuracy=self.min_evaluator_accuracy)
        if self.record is None:
            self.record = RunResults(self.run_dir, {})
        self.record.data["evaluator"] = {"test_accuracy": self.evaluator.test_accuracy, "cache": str(self.evaluator.path)}
        self.record.write()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.evaluator is None:
            return
        logged = {}
        for suffix, ema in pl_module.sampler_variants():
            grid = pl_module.sample(pl_module.fixed_noise, ema=ema).cpu()
            feats, _ = self.evaluator.embed(grid, pl_module.data_range)
            logged[f"eval{suffix}/diversity"] = diversity(feats, self.evaluator.test_features)
        self._log(trainer, logged, pl_module.iteration)
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.evaluator is not None and self._last_eval_iteration != pl_module.iteration:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ evaluation
    def score(self, pl_module: L.LightningModule, ema: bool | None) -> dict[str, float]:
        """Every metric of ``num_samples`` samples from the evaluation noise (NaN for non-finite samples)."""
        assert self.evaluator is not None
        samples = draw(pl_module, self.num_samples, self.seed, ema=ema)
        if not torch.isfinite(samples).all():
            return {name: math.nan for name in METRIC_NAMES}
        feats, logits = self.evaluator.embed(samples, pl_module.data_range)
        return features_metrics(feats, logits, self.evaluator.test_features, self.evaluator.test_radii)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        assert self.evaluator is not None
        start = time.perf_counter()
        scored = {f"eval{suffix}": self.score(pl_module, ema) for suffix, ema in pl_module.sampler_variants()}
        metrics = scored["eval"]
        eval_seconds = time.perf_counter() - start
        iteration = pl_module.iteration
        self._last_eval_iteration = iteration
        logged = {f"{prefix}/{k}": v for prefix, values in scored.items() for k, v in values.items()}
        self._log(trainer, logged, iteration)
        if not self._hparams_logged:
            declare_hparams(trainer, self.record.data["config"], logged)
            self._hparams_logged = True
        record = {
            "epochs": round(iteration / max(1, trainer.num_training_batches), 3),  # completed, as a float
            "iteration": iteration,
            "wall_s": self.record.wall_s,
            "eval_s": round(eval_seconds, 2),
            **metrics,
        }
        if "eval_no_ema" in scored:
            record["no_ema"] = scored["eval_no_ema"]
        path = self.run_dir / "checkpoints" / "best-fid.ckpt"
        checkpointing = bool(trainer.checkpoint_callbacks)
        if checkpointing and self.record.improves(metrics["fid"]):
            save_checkpoint_atomic(trainer, path)  # before results.json names it
        self.record.add_evaluation(record, str(path) if checkpointing else None)
        return metrics

    @staticmethod
    def _log(trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
