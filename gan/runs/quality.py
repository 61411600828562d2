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
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import lightning as L
import torch

from gan.errors import check_count, check_fraction
from gan.eval.classifier import MIN_TEST_ACCURACY, Evaluator, load_evaluator
from gan.eval.metrics import K_NEAREST, METRIC_NAMES, VERDICTS, collapse_verdict, diversity, features_metrics
from gan.runs.callbacks import MemberCallback, save_member_checkpoints
from gan.runs.diagnostics import jacobian_conditioning

BEST_CHECKPOINT = "checkpoints/best-fid.ckpt"


def eval_noise(num_samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The evaluation z: the same for every member and every evaluation, from its own seeded generator (drawing
    it never disturbs a training stream)."""
    return torch.randn(num_samples, latent_dim, generator=torch.Generator().manual_seed(int(seed)))


def draw(
    module: L.LightningModule, num_samples: int, seed: int, chunk: int = 2000, ema: bool | None = None
) -> torch.Tensor:
    """``num_samples`` outputs of a population of one (N x 1024, on the CPU) from seeded noise: the same z as
    training's evaluations with the same seed (``gan.runs.quality.eval_noise``).

    The noise comes from its own generator: drawing never disturbs a training stream. ``ema`` as in
    ``GANModule.sample`` (None: the weight average when the model keeps one).
    """
    z = eval_noise(num_samples, module.shared["latent_dim"], seed)
    return torch.cat([module.sample(part, ema=ema)[0].float().cpu() for part in z.split(chunk)])


def member_samples(
    module: L.LightningModule, members: Sequence[int], z: torch.Tensor, ema: bool | None, chunk: int = 2000
) -> torch.Tensor:
    """Samples of ``members`` from the same ``z``: [len(members), N, 1024] on the module's device."""
    parts = [module.sample(part, ema=ema)[list(members)] for part in z.split(chunk)]
    return torch.cat(parts, dim=1)


def score_members(
    evaluator: Evaluator,
    module: L.LightningModule,
    members: Sequence[int],
    num_samples: int,
    seed: int,
    ema: bool | None,
    images_per_pass: int = 200_000,
) -> dict[int, dict[str, float]]:
    """Every metric of each member's ``num_samples`` samples from the evaluation noise (NaN for a member with
    non-finite samples). The evaluator embeds the members' samples together, in its large batches, a group of
    members at a time (about ``images_per_pass`` images); each member's metrics are computed from its own
    features, exactly as for that member's samples scored alone."""
    z = eval_noise(num_samples, module.shared["latent_dim"], seed)
    per_pass = max(1, images_per_pass // max(1, num_samples))
    scores: dict[int, dict[str, float]] = {}
    for start in range(0, len(members), per_pass):
        group = list(members)[start : start + per_pass]
        samples = member_samples(module, group, z, ema)
        finite = [i for i, k in enumerate(group) if bool(torch.isfinite(samples[i]).all())]
        for i, k in enumerate(group):
            if i not in finite:
                scores[k] = {name: math.nan for name in METRIC_NAMES}
        if not finite:
            continue
        ranges = [module.data_ranges[group[i]] for i in finite]
        feats, logits = evaluator.embed_members(samples[finite], ranges)
        real, radii = evaluator.test_features.to(feats.device), evaluator.test_radii.to(feats.device)
        for j, i in enumerate(finite):
            scores[group[i]] = features_metrics(feats[j], logits[j], real, radii)
    return scores


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
        self.num_samples = check_count(
            "eval.num_samples",
            num_samples,
            K_NEAREST + 1,
            f"the metrics' {K_NEAREST}-nearest neighbours; 10000 is usual",
        )
        self.seed = int(seed)
        self.min_evaluator_accuracy = check_fraction(
            "eval.min_evaluator_accuracy", min_evaluator_accuracy, "the evaluator's MNIST test accuracy; 0.99 is usual"
        )
        self.jacobian_samples = check_count("eval.jacobian_samples", jacobian_samples, 0, "0 = not recorded")
        self._diversity: dict[int, float] = {}
        self.evaluator: Evaluator | None = None
        self._last_eval_iteration = -1

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or self.evaluator is not None:
            return
        self.evaluator = load_evaluator(self.data_root, min_accuracy=self.min_evaluator_accuracy)
        for run in self.runs:
            run.record.data["evaluator"] = {
                "test_accuracy": self.evaluator.test_accuracy,
                "cache": str(self.evaluator.path),
            }
            run.record.write()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.evaluator is not None:
            self.evaluator = self.evaluator.to(pl_module.device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
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
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.evaluator is not None and self._last_eval_iteration != pl_module.iteration:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ evaluation
    def conditioning(self, pl_module: L.LightningModule, members: Sequence[int]) -> dict[str, dict[int, float]]:
        """G's Jacobian conditioning (``gan.runs.diagnostics.jacobian_conditioning``) of the sampler that is scored, at
        the first ``jacobian_samples`` evaluation z: {statistic: {member: value}} (empty when switched off)."""
        if self.jacobian_samples <= 0:
            return {}
        z = eval_noise(self.jacobian_samples, pl_module.shared["latent_dim"], self.seed).to(pl_module.device)
        z = z.unsqueeze(0).expand(pl_module.members, -1, -1)
        found = jacobian_conditioning(pl_module.sampling_generator(None), z)
        return {name: {k: float(values[k]) for k in members} for name, values in found.items()}

    @staticmethod
    def refuse_nonfinite(pl_module: L.LightningModule) -> None:
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

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[int, dict[str, float]]:
        """Score every training member; log, record, and keep each member's best-fid checkpoint."""
        assert self.evaluator is not None
        self.refuse_nonfinite(pl_module)
        live = self.live(pl_module)
        members = [run.index for run in live]
        start = time.perf_counter()
        scored = {
            f"eval{suffix}": score_members(self.evaluator, pl_module, members, self.num_samples, self.seed, ema)
            for suffix, ema in pl_module.sampler_variants()
        }
        eval_seconds = time.perf_counter() - start
        conditioning = self.conditioning(pl_module, members)
        iteration = pl_module.iteration
        self._last_eval_iteration = iteration
        improved, pending = [], {}
        for run in live:
            k = run.index
            logged = {f"{prefix}/{name}": v for prefix, values in scored.items() for name, v in values[k].items()}
            record = {
                "epochs": round(iteration / max(1, trainer.num_training_batches), 3),  # completed, as a float
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
