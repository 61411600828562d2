"""Samples to score: the evaluation noise (the same z for every member and every evaluation), a population's
samples drawn from it, and every metric of each member's samples, the members embedded together by the evaluator
(each member's metrics computed from its own features, exactly as for its samples alone)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gan.eval.classifier import Evaluator, Progress
from gan.eval.metrics import CARD_NAMES, METRIC_NAMES, features_metrics
from gan.model.module import GANModule


def eval_noise(num_samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The evaluation z: the same for every member and every evaluation, from its own seeded generator (drawing
    it never disturbs a training stream)."""
    return torch.randn(num_samples, latent_dim, generator=torch.Generator().manual_seed(int(seed)))


def draw(
    module: GANModule,
    num_samples: int,
    seed: int,
    chunk: int = 2000,
    ema: bool | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """``num_samples`` outputs of a population of one (N x 1024, on the CPU) from seeded noise: the same z as
    training's evaluations with the same seed (``eval_noise``).

    The noise comes from its own generator: drawing never disturbs a training stream. ``ema`` as in
    ``GANModule.sample`` (None: the weight average when the model keeps one). ``progress`` (when given) counts the
    samples generated.
    """
    z = eval_noise(num_samples, module.shared["latent_dim"], seed)
    if progress is not None:
        progress.phase("samples generated", num_samples)
    parts = []
    for part in z.split(chunk):
        parts.append(module.sample(part, ema=ema)[0].float().cpu())
        if progress is not None:
            progress.advance(len(part))
    return torch.cat(parts)


def member_samples(
    module: GANModule, members: Sequence[int], z: torch.Tensor, ema: bool | None, chunk: int = 2000
) -> torch.Tensor:
    """Samples of ``members`` from the same ``z``: [len(members), N, 1024] on the module's device."""
    parts = [module.sample(part, ema=ema)[list(members)] for part in z.split(chunk)]
    return torch.cat(parts, dim=1)


def score_members(
    evaluator: Evaluator,
    module: GANModule,
    members: Sequence[int],
    num_samples: int,
    seed: int,
    ema: bool | None,
    images_per_pass: int = 200_000,
    progress: Progress | None = None,
) -> dict[int, dict[str, float]]:
    """Every metric of each member's ``num_samples`` samples from the evaluation noise (NaN for a member with
    non-finite samples). The evaluator embeds the members' samples together, in its large batches, a group of
    members at a time (about ``images_per_pass`` images); each member's metrics are computed from its own
    features, exactly as for that member's samples scored alone. ``progress`` (when given) counts the samples
    generated and featurized, and says when the last group's metrics are computed."""
    z = eval_noise(num_samples, module.shared["latent_dim"], seed)
    per_pass = max(1, images_per_pass // max(1, num_samples))
    scores: dict[int, dict[str, float]] = {}
    if progress is not None:
        progress.phase("samples generated and featurized", len(members) * num_samples)
    for start in range(0, len(members), per_pass):
        group = list(members)[start : start + per_pass]
        samples = member_samples(module, group, z, ema)
        finite = [i for i, k in enumerate(group) if bool(torch.isfinite(samples[i]).all())]
        for i, k in enumerate(group):
            if i not in finite:
                scores[k] = {name: math.nan for name in METRIC_NAMES + CARD_NAMES}
        if progress is not None:
            progress.advance((len(group) - len(finite)) * num_samples)  # nothing to featurize
        if not finite:
            continue
        ranges = [module.data_ranges[group[i]] for i in finite]
        feats, logits = evaluator.embed_members(samples[finite], ranges, progress=progress)
        if progress is not None and start + per_pass >= len(members):  # earlier groups' metrics: in the time left
            progress.say(f"computing the metrics ({', '.join(METRIC_NAMES)})")
        real, radii = evaluator.test_features.to(feats.device), evaluator.test_radii.to(feats.device)
        for j, i in enumerate(finite):
            scores[group[i]] = features_metrics(feats[j], logits[j], real, radii)
    return scores
