"""Sample quality during training: a cheap collapse signal every epoch, full metrics on a schedule.

Each member of a training pack is scored on its own, into its own run directory; the evaluator embeds the
members' samples together. Every epoch: ``eval/diversity`` of the fixed-noise grid (1 = as varied as real
digits, 0 = one image 64 times).
Every ``eval.every_n_epochs`` epochs and at the end of training: ``eval.num_samples`` samples from a fixed
evaluation noise (the same z each time, so curves compare generators, not draws) scored by ``gan.eval.metrics``,
logged under ``eval/`` and as the TensorBoard HPARAMS metrics, appended to ``RUN_DIR/results.json``, and the
generator with the best fid so far kept as ``checkpoints/best-fid.ckpt``.

With ``model.g_ema`` the samples come from G's weight average, and the trained G is scored too, under
``eval_no_ema/`` (and ``no_ema`` in results.json), so the average's effect shows side by side.

An evaluation of ``PROGRESS_MIN_IMAGES`` images or more (samples x members) prints progress lines on stderr, above
Lightning's progress bar: what it scores, the samples generated and featurized, the metrics, the time it took.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from gan.errors import check_count, check_fraction
from gan.eval.classifier import MIN_TEST_ACCURACY, PROGRESS_MIN_IMAGES, Evaluator, Progress, load_evaluator, say
from gan.eval.metrics import K_NEAREST, VERDICTS, collapse_verdict, diversity
from gan.eval.probes import jacobian_conditioning
from gan.eval.sampling import check_num_samples, eval_noise, score_members
from gan.runs.callbacks import MemberCallback, Population, completed_epochs, epoch_due, save_member_checkpoints

BEST_CHECKPOINT = "checkpoints/best-fid.ckpt"
# The most z at which an evaluation measures G's Jacobian (1024 x latent each: 400 KB at latent 100, taken at once).
MAX_JACOBIAN_SAMPLES = 1000


def progress_writer(trainer: L.Trainer) -> Callable[[str], None]:
    """Where training's progress lines go: stderr, through tqdm's ``write`` when Lightning's bar is shown (it clears
    the bar, writes the line and redraws the bar below it, so neither breaks the other; the bar's own ``print``
    drops lines once the bar is closed, as it is before the last evaluation)."""
    if trainer.progress_bar_callback is None:
        return say
    return lambda line: Tqdm.write(line, file=sys.stderr)


class SampleQuality(MemberCallback):
    """Scores every training member with the MNIST evaluator while it trains (see the module docstring)."""

    def __init__(
        self,
        data_root: str,
        enabled: bool = True,
        every_n_epochs: int = 5,
        num_samples: int = 10000,
        seed: int = 0,
        min_evaluator_accuracy: float = MIN_TEST_ACCURACY,
        jacobian_samples: int = 16,
    ) -> None:
        self.data_root = data_root
        self.enabled = bool(enabled)
        self.every_n_epochs = check_count("eval.every_n_epochs", every_n_epochs, 0, "0 = only at the end of training")
        self.num_samples = check_num_samples(
            "eval.num_samples",
            num_samples,
            K_NEAREST + 1,
            f"the metrics' {K_NEAREST}-nearest neighbours; 10000 is usual",
        )
        self.seed = int(seed)
        self.min_evaluator_accuracy = check_fraction(
            "eval.min_evaluator_accuracy", min_evaluator_accuracy, "the evaluator's MNIST test accuracy; 0.99 is usual"
        )
        self.jacobian_samples = check_count(
            "eval.jacobian_samples",
            jacobian_samples,
            0,
            f"0 = not recorded, 16 is usual; each is a 1024 x latent Jacobian: {MAX_JACOBIAN_SAMPLES} at most",
            MAX_JACOBIAN_SAMPLES,
        )
        self._diversity: dict[int, float] = {}
        self.evaluator: Evaluator | None = None
        self._last_eval_iteration = -1

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: L.Trainer, pl_module: Population, stage: str) -> None:
        if not self.enabled or self.evaluator is not None:
            return
        self.evaluator = load_evaluator(self.data_root, min_accuracy=self.min_evaluator_accuracy)
        for run in self.runs:
            run.record.data["evaluator"] = {
                "test_accuracy": self.evaluator.test_accuracy,
                "cache": str(self.evaluator.path),
            }
            run.record.write()

    def on_fit_start(self, trainer: L.Trainer, pl_module: Population) -> None:
        if self.evaluator is not None:
            self.evaluator = self.evaluator.to(pl_module.device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        if self.evaluator is None:
            return
        live = self.live(pl_module)
        members = [run.index for run in live]
        logged: dict[int, dict[str, float]] = {k: {} for k in members}
        for suffix, ema in pl_module.sampler_variants():
            grids = pl_module.sample(pl_module.fixed_noise, ema=ema)[members]
            feats, _ = self.evaluator.embed_members(grids, [pl_module.data_ranges[k] for k in members])
            for j, k in enumerate(members):
                logged[k][f"eval{suffix}/diversity"] = diversity(feats[j], self.evaluator.test_features)
                if not suffix:
                    self._diversity[k] = logged[k]["eval/diversity"]
        for run in live:
            run.log_metrics(logged[run.index], pl_module.iteration)
        if epoch_due(trainer, self.every_n_epochs):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Population) -> None:
        if self.evaluator is not None and self._last_eval_iteration != pl_module.iteration:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ evaluation
    def conditioning(self, pl_module: Population, members: Sequence[int]) -> dict[str, dict[int, float]]:
        """G's Jacobian conditioning (``gan.runs.diagnostics.jacobian_conditioning``) of the sampler that is scored, at
        the first ``jacobian_samples`` evaluation z: {statistic: {member: value}} (empty when switched off)."""
        if self.jacobian_samples <= 0:
            return {}
        z = eval_noise(self.jacobian_samples, pl_module.shared["latent_dim"], self.seed).to(pl_module.device)
        z = z.unsqueeze(0).expand(pl_module.members, -1, -1)
        found = jacobian_conditioning(pl_module.sampling_generator(None), z)
        return {name: {k: float(values[k]) for k in members} for name, values in found.items()}

    @staticmethod
    def refuse_nonfinite(pl_module: Population) -> None:
        """A member whose fixed-noise samples are NaN or infinite (its losses may still read finite) is marked
        diverged before it is scored: no metric, record or best checkpoint of a broken generator."""
        with torch.no_grad():
            samples = torch.stack(
                [pl_module.sample(pl_module.fixed_noise, ema=ema) for _, ema in pl_module.sampler_variants()]
            )
        finite = torch.isfinite(samples).flatten(2).all(-1).all(0).tolist()  # one read for all members
        for k, ok in enumerate(finite):
            if not ok and pl_module.alive[k]:
                pl_module.mark_diverged(
                    k, pl_module.iteration, f"non-finite samples at iteration {pl_module.iteration}"
                )

    def evaluate(self, trainer: L.Trainer, pl_module: Population) -> dict[int, dict[str, float]]:
        """Score every training member; log, record, and keep each member's best-fid checkpoint."""
        assert self.evaluator is not None
        self.refuse_nonfinite(pl_module)
        live = self.live(pl_module)
        members = [run.index for run in live]
        start = time.perf_counter()
        progress = Progress(
            f"evaluation at iteration {pl_module.iteration}",
            enabled=self.num_samples * len(members) >= PROGRESS_MIN_IMAGES,
            write=progress_writer(trainer),
        )
        each = f" of each of {len(members)} members" if len(members) > 1 else ""
        progress.say(f"scoring {self.num_samples} samples{each}")
        scored: dict[str, dict[int, dict[str, float]]] = {}
        for suffix, ema in pl_module.sampler_variants():
            if suffix:
                progress.say(f"now the trained generator too (eval{suffix}/): {self.num_samples} samples{each}")
            scored[f"eval{suffix}"] = score_members(
                self.evaluator, pl_module, members, self.num_samples, self.seed, ema, progress=progress
            )
        progress.finish()
        eval_seconds = time.perf_counter() - start
        conditioning = self.conditioning(pl_module, members)
        iteration = pl_module.iteration
        self._last_eval_iteration = iteration
        improved, pending = [], {}
        for run in live:
            k = run.index
            logged = {f"{prefix}/{name}": v for prefix, values in scored.items() for name, v in values[k].items()}
            record = {
                "epochs": completed_epochs(iteration, trainer.num_training_batches, 3),
                "iteration": iteration,
                "wall_s": run.record.wall_s,
                "eval_s": round(eval_seconds / max(1, len(live)), 2),
                **scored["eval"][k],
                "diversity": self._diversity.get(k, math.nan),
                **{f"jacobian_{name}": values[k] for name, values in conditioning.items()},
            }
            record["verdict"] = collapse_verdict(record["modes"], record["diversity"])
            logged["eval/collapse"] = float(VERDICTS.index(record["verdict"]))  # 0 healthy, 1 partial, 2 collapsed
            run.log_metrics(logged, iteration)
            if "eval_no_ema" in scored:
                record["no_ema"] = scored["eval_no_ema"][k]
            checkpointing = bool(trainer.checkpoint_callbacks)
            if checkpointing and run.record.improves(record["fid"]):
                improved.append(run)
            pending[k] = record  # recorded after the checkpoints that results.json names are written
        save_member_checkpoints(trainer, improved, BEST_CHECKPOINT)
        for run in live:
            checkpoint = str(run.run_dir / BEST_CHECKPOINT) if trainer.checkpoint_callbacks else None
            run.record.add_evaluation(pending[run.index], checkpoint)
        return {k: scored["eval"][k] for k in members}
