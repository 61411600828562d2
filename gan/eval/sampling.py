"""Samples to score: the evaluation noise (the same z for every member and every evaluation), a population's
samples drawn from it, and every metric of each member's samples, the members embedded together by the evaluator
(each member's metrics computed from its own features, exactly as for its samples alone)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from gan.errors import ConfigError, check_count
from gan.eval.classifier import Evaluator, Progress
from gan.eval.metrics import CARD_NAMES, METRIC_NAMES
from gan.model.module import GANModule

MAX_SAMPLES = 1_000_000  # the most samples one evaluation or one gan.sample draws (10,000 is usual)
# Peak memory per sample of gan.evaluate and gan.sample (the samples, their images, the evaluator's features and
# the PNG grid), measured on the CPU: 43.6 and 38.9 KiB a sample between 20,000 and 60,000 samples.
SAMPLE_BYTES = 45 * 1024


def available_memory() -> int | None:
    """Bytes of memory this machine can still give a process (Linux's MemAvailable); None where it cannot tell."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def format_bytes(nbytes: float) -> str:
    """A number of bytes as people read it (``46.1 GB``)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return f"{nbytes:.3g} PB"


def check_num_samples(key: str, value: object, minimum: int, hint: str) -> int:
    """``value`` as a number of samples to draw and score, refused before any work when it is not an integer of at
    least ``minimum``, when it exceeds ``MAX_SAMPLES``, or when its memory (``SAMPLE_BYTES`` a sample) exceeds what
    this machine has available: such a run fails only at its first evaluation, with the allocator's message."""
    count = check_count(key, value, minimum, hint)
    need, available = count * SAMPLE_BYTES, available_memory()
    if count <= MAX_SAMPLES and (available is None or need <= available):
        return count
    most = MAX_SAMPLES if available is None else max(minimum, min(MAX_SAMPLES, available // SAMPLE_BYTES))
    here = f"this machine has {format_bytes(available)} available, and " if available is not None else ""
    raise ConfigError(
        f"{key}={count:,} would need about {format_bytes(need)} of memory (about {SAMPLE_BYTES // 1024} KiB a "
        f"sample: the samples, their images and the evaluator's features); {here}{key} may be at most "
        f"{MAX_SAMPLES:,}. Use {key}={min(10_000, most):,} (usual) up to {most:,} here."
    )


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
        for j, i in enumerate(finite):
            scores[group[i]] = evaluator.metrics(feats[j], logits[j])
    return scores
