"""Callbacks that make each run directory self-explaining: sample grids and an always-fresh last checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint
from torchvision.utils import make_grid, save_image


def save_checkpoint_atomic(trainer: L.Trainer, path: Path) -> None:
    """Write the checkpoint beside ``path`` and rename it: a crash never leaves a broken file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        os.replace(tmp, path)


class SampleGrid(Callback):
    """Each ``every_n_epochs`` epochs: G(fixed noise) as an image in TensorBoard and a PNG in ``dirpath``.

    The noise is the module's ``fixed_noise`` buffer, the same z all run long, so the grids show how one set of
    latent points evolves (and collapse shows as rows of identical digits).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, nrow: int = 8) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = int(every_n_epochs)
        self.nrow = int(nrow)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs < 1 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        # With a weight average (model.g_ema) the main grid is the average's; the trained G's goes beside it.
        for suffix, ema in pl_module.sampler_variants():
            images = pl_module.to_unit_images(pl_module.sample(pl_module.fixed_noise, ema=ema)).cpu()
            grid = make_grid(images, nrow=self.nrow, padding=2, pad_value=0.5)
            for logger in trainer.loggers:
                if hasattr(logger.experiment, "add_image"):
                    logger.experiment.add_image(f"samples/fixed_noise{suffix}", grid, global_step=pl_module.iteration)
            # Lightning's epoch numbering, from 0
            save_image(grid, self.dirpath / f"epoch{trainer.current_epoch:04d}{suffix}.png")


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` rewritten at every epoch end (and when training stops mid-epoch), atomically.

    Lightning's ModelCheckpoint only refreshes ``last`` when it also saves a periodic checkpoint; this one does
    not depend on the period. The file is written beside and renamed, so a crash never leaves a broken ``last``.
    Being a ``Checkpoint``, it also stops Lightning from adding its default ModelCheckpoint.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self._saved_at_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self._saved_at_step or trainer.sanity_checking:
            return
        save_checkpoint_atomic(trainer, self.path)
        self._saved_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

