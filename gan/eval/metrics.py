"""Sample-quality metrics (pure math on features and logits; ``gan.eval.classifier.Evaluator.score`` applies them
to samples) from the MNIST evaluator, against the 10k MNIST test images.

Feature-space metrics (fid, precision, recall, diversity) use the evaluator's 256 pooled conv features; the
class-based ones (is, modes, kl_uniform) its predicted class probabilities.

- ``fid``: Frechet distance between Gaussians fitted to sample and test features (torchmetrics). Lower is better.
- ``is``: classifier-based inception score exp(E_x KL(p(y|x) || p(y))), from 1 to 10. Higher is better.
- ``modes``: digit classes covered: a class counts when it holds at least ``MODE_SHARE`` (1%, a tenth of its fair
  share) of the confidently classified samples (max p(y|x) >= ``CONFIDENCE``, 0.9). Higher is better, 10 at most.
- ``kl_uniform``: KL divergence of the predicted-class histogram from uniform, 0 to ln 10 = 2.30. Lower is better.
- ``precision`` / ``recall``: k-NN manifold precision and recall (Kynkaanniemi et al. 2019, k=3): the share of
  samples inside the real manifold, and of real images inside the samples' manifold. Higher is better.
- ``diversity``: mean pairwise feature distance of a set of samples over that of as many real test images; about
  1 for real-like variety, near 0 when the samples collapse to one image (the cheap per-epoch signal).

The metric card (``CARD_NAMES``, recorded beside them in every evaluation; docs/metrics.md "The metric card"):
density and coverage, KID with its spread, the Vendi score of all samples and within each predicted class, and the
share of samples that copy a training image (``memorized``, against the evaluator's training reference).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

CONFIDENCE = 0.9
MODE_SHARE = 0.01
K_NEAREST = 3
# Collapse verdicts, from the calibration sets (docs/metrics.md; gan.eval.corruptions.calibration_sets):
# real digits of 2 classes cover 2 modes, of 9 classes 9, of all 10 classes 10; the fixed-noise diversity of real
# digits of one class is 0.56 (all ones) to 0.80 (all zeros), of one image repeated 0.0005; every run of the GPU
# study that failed covered 0 to 2 modes.
VERDICTS = ("healthy", "partial collapse", "collapsed")
COLLAPSED_MAX_MODES = 2  # at most this many classes covered: collapsed
COLLAPSED_MAX_DIVERSITY = 0.5  # the fixed-noise samples less varied than real digits of any one class: collapsed
PARTIAL_MAX_MODES = 9  # a class missing: partial collapse


def collapse_verdict(modes: float, diversity: float = math.nan) -> str:
    """``healthy``, ``partial collapse`` or ``collapsed`` from the classes the samples cover and (when known) the
    fixed-noise diversity; a generator with non-finite samples (NaN modes) is collapsed."""
    if not math.isfinite(modes) or modes <= COLLAPSED_MAX_MODES:
        return "collapsed"
    if math.isfinite(diversity) and diversity < COLLAPSED_MAX_DIVERSITY:
        return "collapsed"
    return "partial collapse" if modes <= PARTIAL_MAX_MODES else "healthy"


METRIC_NAMES = ("fid", "is", "modes", "kl_uniform", "precision", "recall")
# The metric card's additions, recorded beside them in every evaluation (records from before lack them).
CARD_NAMES = ("density", "coverage", "kid", "kid_std", "vendi", "vendi_within", "memorized")
KID_SUBSETS = 50  # subsets of 1,000 per KID: about 1 s for 10,000 samples on 2 CPU cores
# A sample copies a training image when it lies closer to it than this share of that image's distance to its own
# nearest other training image. At 1 (the plain rule) real test images score 0.56: a fresh digit is often the
# nearest neighbour of some training digit. At 0.5 test images score 0.0003 and exact copies 1.
MEMORIZED_RATIO = 0.5


class _PrecomputedFeatures(nn.Module):
    """Lets torchmetrics' FID take features we already computed (one evaluator pass serves every metric)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(sample_features: torch.Tensor, real_features: torch.Tensor) -> float:
    """FID between two feature sets, computed by torchmetrics in float64."""
    fid = FrechetInceptionDistance(feature=_PrecomputedFeatures(real_features.shape[1]), normalize=False)
    fid = fid.to(real_features.device)
    fid.update(real_features.double(), real=True)
    fid.update(sample_features.double(), real=False)
    return max(0.0, float(fid.compute()))


def inception_score(logits: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean prediction over the set (one split)."""
    log_p = logits.double().log_softmax(1)
    p = log_p.exp()
    log_py = p.mean(0).clamp_min(1e-30).log()
    return math.exp((p * (log_p - log_py)).sum(1).mean().item())


def mode_coverage(logits: torch.Tensor, num_classes: int = 10) -> tuple[int, float]:
    """(classes covered by confident predictions, KL of the predicted-class histogram from uniform)."""
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    confident = pred[conf >= CONFIDENCE]
    counts = torch.bincount(confident, minlength=num_classes).double()
    modes = int((counts >= MODE_SHARE * max(1, len(confident))).sum().item()) if len(confident) else 0
    hist = torch.bincount(pred, minlength=num_classes).double()
    hist = hist / hist.sum()
    nz = hist > 0
    kl = (hist[nz] * (hist[nz] * num_classes).log()).sum().item()
    return modes, kl


def kth_neighbour_radius(features: torch.Tensor, k: int = K_NEAREST, chunk: int = 2048) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point in the same set."""
    radii = []
    for part in features.split(chunk):
        d = torch.cdist(part, features)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    inside = []
    for part in points.split(chunk):
        inside.append((torch.cdist(part, centres) <= radii.unsqueeze(0)).any(1))
    return torch.cat(inside).float().mean().item()


def precision_recall(
    sample_features: torch.Tensor,
    real_features: torch.Tensor,
    k: int = K_NEAREST,
    real_radii: torch.Tensor | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls in feature space.

    ``real_radii`` (the real set's k-th neighbour distances) can be passed in: they never change between evaluations.
    """
    fake, real = sample_features.float(), real_features.float()
    if real_radii is None:
        real_radii = kth_neighbour_radius(real, k)
    precision = _inside_any_ball(fake, real, real_radii)
    recall = _inside_any_ball(real, fake, kth_neighbour_radius(fake, k))
    return precision, recall


def density_coverage(
    sample_features: torch.Tensor,
    real_features: torch.Tensor,
    k: int = K_NEAREST,
    real_radii: torch.Tensor | None = None,
    chunk: int = 2048,
) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) with the same k-NN balls around the real features as precision.

    Density: how many real balls a sample lies in, on average, over k (about 1 when samples are distributed like
    the real data; it does not saturate at 1 and is robust to real outliers, which inflate precision). Coverage:
    the share of real balls holding at least one sample (robust to fake outliers, which inflate recall).
    """
    fake, real = sample_features.float(), real_features.float()
    if real_radii is None:
        real_radii = kth_neighbour_radius(real, k)
    inside_count = 0.0
    covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for part in fake.split(chunk):
        inside = torch.cdist(part, real) <= real_radii.unsqueeze(0)  # [samples, real balls]
        inside_count += inside.sum().item()
        covered |= inside.any(0)
    return inside_count / (k * len(fake)), covered.float().mean().item()


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(
    sample_features: torch.Tensor,
    real_features: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged
    over ``subsets`` random subsets of ``subset_size`` from each set (seeded: the same subsets every evaluation);
    returns (mean, standard deviation over subsets). Unbiased, so usable at small sample sizes where FID is not."""
    fake, real = sample_features.double(), real_features.double()
    m = min(subset_size, len(fake), len(real))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(fake)} and {len(real)}")
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = fake[torch.randperm(len(fake), generator=generator)[:m].to(fake.device)]
        y = real[torch.randperm(len(real), generator=generator)[:m].to(real.device)]
        kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append((within - 2.0 * kxy.sum() / (m * m)).item())
    spread = torch.tensor(values, dtype=torch.float64)
    return float(spread.mean()), float(spread.std(unbiased=False))


def vendi_score(features: torch.Tensor) -> float:
    """The Vendi score (Friedman & Dieng 2023): exp of the Shannon entropy of the eigenvalues of K / n, with K the
    cosine-similarity kernel of the n feature rows; the effective number of distinct samples, 1 for n copies of one
    sample, n for n orthogonal ones (at most the feature dimension d: K has rank d at most).

    Through the dual: the nonzero eigenvalues of X X^T / n (n x n) are those of X^T X / n (d x d) for the rows X
    normalized to unit length, so 10,000 samples cost one d x d eigendecomposition. Rows of zeros (no direction)
    add nothing: the eigenvalues are divided by their sum, which is n when every row has a direction."""
    if len(features) == 0:
        raise ValueError("the Vendi score needs at least one sample")
    x = features.double()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    gram = x @ x.T if len(x) <= x.shape[1] else x.T @ x
    eigenvalues = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    total = eigenvalues.sum()
    if total <= 0:
        return 1.0  # every row is zero: one kind of sample
    p = eigenvalues / total
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def within_class_vendi(features: torch.Tensor, logits: torch.Tensor, min_share: float = MODE_SHARE) -> float:
    """The mean Vendi score of the samples of each predicted class holding at least ``min_share`` of them (and 2):
    the variety within a class, which the class histogram (modes, kl_uniform, is) cannot see. 1.0 when no class
    holds 2 samples (each class's score is then 1)."""
    predicted = logits.argmax(1)
    counts = torch.bincount(predicted)
    need = max(2, math.ceil(min_share * len(predicted)))
    scores = [vendi_score(features[predicted == c]) for c in range(len(counts)) if counts[c] >= need]
    return sum(scores) / len(scores) if scores else 1.0


def nearest_other_distance(features: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Each row's distance to its nearest other row (0 for an exact duplicate): the training reference's scale."""
    return kth_neighbour_radius(features, k=1, chunk=chunk)


def memorized_share(
    sample_features: torch.Tensor,
    train_features: torch.Tensor,
    train_nearest: torch.Tensor,
    ratio: float = MEMORIZED_RATIO,
    chunk: int = 2048,
) -> float:
    """The share of samples closer to some training image than ``ratio`` times that image's distance to its nearest
    other training image (``train_nearest``): copies of training images score 1, fresh digits near 0, noise 0."""
    fake, train = sample_features.float(), train_features.float()
    limit = (ratio * train_nearest.float()).unsqueeze(0)
    flagged = [(torch.cdist(part, train) < limit).any(1) for part in fake.split(chunk)]
    return torch.cat(flagged).float().mean().item()


def ranking_agreement(fids_a: Sequence[float], fids_b: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau (tau-b, ties allowed) between two scorings of the same runs, e.g. their fids under the two
    evaluators, with its two-sided p-value: 1 when both rank the runs alike. A run with a non-finite score under
    either (a diverged run) is left out of both."""
    from scipy.stats import kendalltau  # here: the metrics themselves never need scipy

    if len(fids_a) != len(fids_b):
        raise ValueError(f"the two scorings hold {len(fids_a)} and {len(fids_b)} runs: they must score the same runs")
    pairs = [(float(a), float(b)) for a, b in zip(fids_a, fids_b, strict=True)]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 2:
        raise ValueError(f"Kendall's tau needs at least 2 runs scored finitely by both, got {len(pairs)}")
    result = kendalltau([a for a, _ in pairs], [b for _, b in pairs])
    return float(result.statistic), float(result.pvalue)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    n = len(features)
    if n < 2:
        return 0.0
    return (torch.cdist(features.float(), features.float()).sum() / (n * (n - 1))).item()


def diversity(sample_features: torch.Tensor, real_features: torch.Tensor) -> float:
    """Mean pairwise distance of the samples over that of the first as-many real images."""
    real = real_features[: len(sample_features)]
    return mean_pairwise_distance(sample_features) / max(mean_pairwise_distance(real), 1e-12)


def _real_balls(
    fake: torch.Tensor, real: torch.Tensor, radii: torch.Tensor, k: int = K_NEAREST, chunk: int = 2048
) -> tuple[float, float, float]:
    """Precision, density and coverage from one pass over the sample-to-real distances (they share the real k-NN
    balls: computing the distances once saves a second of each 10,000-sample evaluation)."""
    inside_any, inside_count = [], 0.0
    covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for part in fake.split(chunk):
        inside = torch.cdist(part, real) <= radii.unsqueeze(0)
        inside_any.append(inside.any(1))
        inside_count += inside.sum().item()
        covered |= inside.any(0)
    precision = torch.cat(inside_any).float().mean().item()
    return precision, inside_count / (k * len(fake)), covered.float().mean().item()


def features_metrics(
    sample_features: torch.Tensor,
    sample_logits: torch.Tensor,
    real_features: torch.Tensor,
    real_radii: torch.Tensor | None = None,
    train_features: torch.Tensor | None = None,
    train_nearest: torch.Tensor | None = None,
    card: bool = True,
) -> dict[str, float]:
    """Every metric from precomputed evaluator outputs: ``METRIC_NAMES`` and (with ``card``) the card's
    ``CARD_NAMES``: density and coverage on precision's k-NN balls, KID with its spread over subsets, the Vendi
    scores, and the share of samples copying a training image (NaN without the evaluator's training reference
    ``train_features`` with each one's ``train_nearest`` other's distance). ``card=False``: the metrics alone, as
    before the card (what ``gan.bench --metrics`` compares the card's cost with)."""
    fake, real = sample_features.float(), real_features.float()
    modes, kl = mode_coverage(sample_logits)
    if real_radii is None:
        real_radii = kth_neighbour_radius(real)
    scores = {"fid": frechet_distance(sample_features, real_features), "is": inception_score(sample_logits)}
    scores |= {"modes": float(modes), "kl_uniform": kl}
    if not card:
        precision, recall = precision_recall(fake, real, real_radii=real_radii)
        return scores | {"precision": precision, "recall": recall}
    precision, density, coverage = _real_balls(fake, real, real_radii)
    recall = _inside_any_ball(real, fake, kth_neighbour_radius(fake))
    kid, kid_std = kernel_inception_distance(sample_features, real_features, subsets=KID_SUBSETS)
    memorized = math.nan
    if train_features is not None and train_nearest is not None:
        memorized = memorized_share(fake, train_features, train_nearest)
    return scores | {
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        "kid": kid,
        "kid_std": kid_std,
        "vendi": vendi_score(sample_features),
        "vendi_within": within_class_vendi(sample_features, sample_logits),
        "memorized": memorized,
    }


def time_card(
    sample_features: torch.Tensor,
    sample_logits: torch.Tensor,
    real_features: torch.Tensor,
    real_radii: torch.Tensor,
    train_features: torch.Tensor,
    train_nearest: torch.Tensor,
    rounds: int = 3,
) -> dict[str, object]:
    """What the metric card costs: the seconds of one evaluation's metrics without it (``METRIC_NAMES``, as before
    the card) and with it, in ``rounds`` alternating rounds (medians; ``ratio`` is the median of each round's own
    ratio, neighbours in time on a machine whose speed drifts), and each card part's seconds timed alone."""
    fake, real = sample_features.float(), real_features.float()

    def clock(work: Callable[[], object]) -> float:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    def evaluation(card: bool) -> Callable[[], object]:
        args = (sample_features, sample_logits, real_features, real_radii, train_features, train_nearest)
        return lambda: features_metrics(*args, card=card)

    parts: dict[str, Callable[[], object]] = {
        "precision_recall": lambda: precision_recall(fake, real, real_radii=real_radii),
        "density_coverage": lambda: density_coverage(fake, real, real_radii=real_radii),
        "kid": lambda: kernel_inception_distance(fake, real, subsets=KID_SUBSETS),
        "vendi": lambda: vendi_score(fake),
        "vendi_within": lambda: within_class_vendi(fake, sample_logits),
        "memorized": lambda: memorized_share(fake, train_features, train_nearest),
    }
    seconds: dict[str, list[float]] = {"before": [], "after": [], **{name: [] for name in parts}}
    for r in range(rounds):
        for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
            seconds[side].append(clock(evaluation(side == "after")))
        for name, work in parts.items():
            seconds[name].append(clock(work))
    ratios = [a / b for a, b in zip(seconds["after"], seconds["before"], strict=True)]
    return {
        "samples": len(sample_features),
        "before_s": round(statistics.median(seconds["before"]), 3),
        "after_s": round(statistics.median(seconds["after"]), 3),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_rounds": [round(x, 3) for x in ratios],
        "parts_s": {name: round(statistics.median(seconds[name]), 3) for name in parts},
    }
