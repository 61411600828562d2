"""Callbacks that make each member's run directory self-explaining: sample grids, scalars, member checkpoints.

A training pack holds K members, each with its own run directory (``gan.runs.rundir.MemberRun``); these callbacks
write into every member's folder what a run alone writes there. ``gan.train`` binds them to the pack's members
(``bind``) when it builds the Trainer.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torchvision.utils import make_grid, save_image

from gan.errors import Interrupted, check_count
from gan.files import atomic_write, save_torch_atomic
from gan.runs.packing import member_checkpoint
from gan.runs.rundir import MemberRun


@runtime_checkable
class Population(Protocol):
    """What the lab's callbacks use of the LightningModule they watch: a population of GANs (``GANModule`` is
    one; ``tests/model/test_module.py`` checks that it has all of this)."""

    members: int  # K
    member_hparams: list[dict[str, Any]]  # each member's settings (gan.model.spec)
    shared: dict[str, Any]  # the settings the members share
    alive: list[bool]  # False for a member frozen after its loss went non-finite
    divergence: dict[int, tuple[int, str]]  # member -> (iteration, reason)
    step_metrics: dict[str, list[float | None]]  # each member's scalars of the latest logging step
    data_ranges: list[tuple[float, float]]  # each member's data range (its G's output activation)
    fixed_noise: torch.Tensor  # [K, num_fixed_samples, latent]
    generator: nn.Module
    discriminator: nn.Module

    @property
    def device(self) -> torch.device: ...

    @property
    def iteration(self) -> int: ...

    def check_divergence(self, first: Sequence[float] | None = None) -> list[int]: ...

    def mark_diverged(self, member: int, iteration: int, reason: str) -> None: ...

    def stop_if_all_diverged(self) -> None: ...

    def sample(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor: ...

    def sampler_variants(self) -> list[tuple[str, bool | None]]: ...

    def sampling_generator(self, ema: bool | None = None) -> nn.Module: ...

    def to_unit_images(self, x: torch.Tensor, member: int = 0) -> torch.Tensor: ...


def epoch_due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Whether the epoch ending now is one of every ``every_n_epochs`` (counted from 1; 0 = never)."""
    return every_n_epochs > 0 and (trainer.current_epoch + 1) % every_n_epochs == 0


def completed_epochs(iterations: int, batches_per_epoch: float, digits: int = 2) -> float:
    """Iterations as epochs completed (a float: a run stopped mid-epoch has done part of one)."""
    return round(iterations / max(1, batches_per_epoch), digits)


class MemberCallback(Callback):
    """A callback that writes per member: ``runs`` are the pack's members, set by ``bind``; the module it watches
    is a ``Population``."""

    runs: Sequence[MemberRun] = ()

    def bind(self, runs: Sequence[MemberRun]) -> None:
        self.runs = list(runs)

    def live(self, pl_module: Population) -> list[MemberRun]:
        """The members still training, with the non-finite flags read first (a diverged member's folder keeps what
        it had when it diverged: nothing of it is saved or scored after its loss went NaN). When none is left the
        fit ends as diverged (``RunFailed``) instead of sampling, scoring or saving an empty population."""
        pl_module.check_divergence()
        pl_module.stop_if_all_diverged()
        return [run for run in self.runs if pl_module.alive[run.index]]


def save_member_checkpoints(trainer: L.Trainer, runs: Sequence[MemberRun], relative_path: str) -> None:
    """Each member's own checkpoint (``gan.runs.packing.member_checkpoint`` of the pack's), written beside its path and
    renamed: a crash never leaves a broken file behind."""
    if not runs:
        return
    pack = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    for run in runs:
        checkpoint = member_checkpoint(pack, run.index)
        save_torch_atomic(run.run_dir / relative_path, checkpoint)


class MemberScalars(MemberCallback):
    """Each member's training scalars (losses, D(x), D(G(z)), penalties) into its own loggers on logging steps,
    and each divergence into its results.json the moment it is found."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Population, *args: Any) -> None:
        table = pl_module.step_metrics
        if table:
            step = pl_module.iteration  # iterations completed, as the evaluations count them
            for run in self.runs:
                values = {tag: v[run.index] for tag, v in table.items() if v[run.index] is not None}
                if run.index not in pl_module.divergence or pl_module.divergence[run.index][0] == pl_module.iteration:
                    run.log_metrics(values, step)
            pl_module.step_metrics = {}
        for run in self.runs:
            found = pl_module.divergence.get(run.index)
            if found is not None and run.record.data["status"] == "running":
                run.record.finish("diverged", found[0], found[1])
            elif run.record.data["status"] == "running":
                run.record.beat(pl_module.iteration)  # results.json's heartbeat, once a minute


class SignalStop(MemberCallback):
    """SIGTERM (what SLURM and most schedulers send) and SIGINT (Ctrl-C) stop training between two iterations, never
    inside one: the handler only notes the signal, and the next iteration raises ``Interrupted`` before it starts,
    so that the checkpoint ``LastCheckpoint`` saves then is of whole iterations and resumes exactly. A second
    Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: stopping after this iteration", file=sys.stderr, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: Population) -> None:
        # after Lightning's own SIGTERM handler (its fit registers one, and restores the original at teardown)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._note)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Population, *args: Any) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum, self.reason(pl_module.iteration))

    def reason(self, iteration: int) -> str:
        name = signal.Signals(self.signum or signal.SIGTERM).name
        return f"{name} after iteration {iteration}; resume from checkpoints/last.ckpt"

    def teardown(self, trainer: L.Trainer, pl_module: Population, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class SampleGrid(MemberCallback):
    """Each ``every_n_epochs`` epochs: G(fixed noise) of every member as an image in its TensorBoard and a PNG in
    its ``dirname`` folder.

    The noise is the module's ``fixed_noise`` buffer, the same z all run long, so the grids show how one set of
    latent points evolves (and collapse shows as rows of identical digits).
    """

    def __init__(self, dirname: str = "samples", every_n_epochs: int = 1, nrow: int = 8) -> None:
        self.dirname = dirname
        self.every_n_epochs = check_count("callbacks.sample_grid.every_n_epochs", every_n_epochs, 0, "0 = off")
        self.nrow = check_count("callbacks.sample_grid.nrow", nrow, 1, "images per row of the grid")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        if not epoch_due(trainer, self.every_n_epochs):
            return
        live = self.live(pl_module)
        # With a weight average (model.g_ema) the main grid is the average's; the trained G's goes beside it.
        for suffix, ema in pl_module.sampler_variants():
            samples = pl_module.sample(pl_module.fixed_noise, ema=ema).cpu()
            for run in live:
                images = pl_module.to_unit_images(samples[run.index], run.index)
                grid = make_grid(images, nrow=self.nrow, padding=2, pad_value=0.5)
                for experiment in run.experiments("add_image"):
                    experiment.add_image(f"samples/fixed_noise{suffix}", grid, global_step=pl_module.iteration)
                # Lightning's epoch numbering, from 0; written beside its path and renamed, as every file
                path = run.run_dir / self.dirname / f"epoch{trainer.current_epoch:04d}{suffix}.png"
                atomic_write(path, lambda tmp, grid=grid: save_image(grid, tmp, format="png"))


class LastCheckpoint(MemberCallback, Checkpoint):
    """``checkpoints/last.ckpt`` of every training member, rewritten every ``every_n_epochs`` epochs (and when
    training stops), atomically.

    Each member's file is its own checkpoint, the one a run alone would write. Being a ``Checkpoint``, this also
    stops Lightning from adding its default ModelCheckpoint. A diverged member keeps its last good checkpoint.
    """

    def __init__(self, dirname: str = "checkpoints", filename: str = "last.ckpt", every_n_epochs: int = 1) -> None:
        self.relative_path = str(Path(dirname) / filename)
        self.every_n_epochs = check_count(
            "callbacks.last_checkpoint.every_n_epochs", every_n_epochs, 0, "0 = at the end"
        )
        self._saved_at_step = -1
        self._training = False  # False until the fit loop starts (its state restored from a resumed checkpoint)

    def on_train_start(self, trainer: L.Trainer, pl_module: Population) -> None:
        self._training = True

    def _save(self, trainer: L.Trainer, pl_module: Population) -> None:
        if trainer.global_step == self._saved_at_step or trainer.sanity_checking:
            return
        save_member_checkpoints(trainer, self.live(pl_module), self.relative_path)
        self._saved_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        if epoch_due(trainer, self.every_n_epochs):
            self._save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        self._save(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: Population, exception: BaseException) -> None:
        """Stopped by a signal between two iterations: the checkpoint to resume from (of whole iterations). A signal
        before training started (while the evaluator trains in setup) saves nothing: the model is not restored yet,
        and a resumed run's last.ckpt must stay the one it resumes from."""
        if self._training and isinstance(exception, (Interrupted, SIGTERMException)):
            self._save(trainer, pl_module)


class PeriodicCheckpoint(MemberCallback, Checkpoint):
    """``checkpoints/epochNNNN.ckpt`` of every training member every ``every_n_epochs`` epochs, all kept."""

    def __init__(self, dirname: str = "checkpoints", every_n_epochs: int = 5) -> None:
        self.dirname = dirname
        self.every_n_epochs = check_count("callbacks.periodic_checkpoint.every_n_epochs", every_n_epochs, 0, "0 = off")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        if epoch_due(trainer, self.every_n_epochs):
            name = f"epoch{trainer.current_epoch:04d}.ckpt"
            save_member_checkpoints(trainer, self.live(pl_module), str(Path(self.dirname) / name))


class MemberProgressBar(TQDMProgressBar):
    """Lightning's progress bar, showing the latest logging step's losses (a single run) or how many members still
    train (a pack), taken from the module's ``step_metrics`` when a logging step sets them: the module logs nothing
    through ``self.log`` (each member logs to its own loggers), which spares Lightning a metrics pass every batch."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.latest: dict[str, str] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Population, *args: Any) -> None:
        if pl_module.members == 1:
            for tag, values in pl_module.step_metrics.items():  # set by this batch when it was a logging step
                if values[0] is not None:
                    self.latest[tag.rpartition("/")[2]] = f"{values[0]:.3g}"
        else:
            self.latest["members_alive"] = str(sum(pl_module.alive))
        super().on_train_batch_end(trainer, pl_module, *args)

    def get_metrics(self, trainer: L.Trainer, pl_module: Population) -> dict[str, int | str | float | dict[str, float]]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {**items, **self.latest}
