"""Each metric formula against a direct computation on synthetic features."""

import math

import pytest
import torch

from gan.eval.metrics import (
    diversity,
    frechet_distance,
    inception_score,
    kth_neighbour_radius,
    mode_coverage,
    precision_recall,
)


def _direct_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(ca cb) through the symmetric form sqrt(ca)^T cb sqrt(ca)
    w, v = torch.linalg.eigh(ca)
    sqrt_ca = v @ torch.diag(w.clamp_min(0).sqrt()) @ v.T
    tr_sqrt = torch.linalg.eigvalsh(sqrt_ca @ cb @ sqrt_ca).clamp_min(0).sqrt().sum()
    return ((mu_a - mu_b).pow(2).sum() + ca.trace() + cb.trace() - 2 * tr_sqrt).item()


def test_frechet_distance_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3000, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(3000, 6, generator=g) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(_direct_fid(a, b), rel=1e-4)


def test_frechet_distance_of_two_known_gaussians():
    """N(0, I) vs N(m, s^2 I) in d dims: |m|^2 + d (1 - s)^2."""
    g = torch.Generator().manual_seed(1)
    d, m, s = 4, 1.5, 2.0
    a = torch.randn(200_000, d, generator=g)
    b = torch.randn(200_000, d, generator=g) * s + m
    assert frechet_distance(a, b) == pytest.approx(d * m**2 + d * (1 - s) ** 2, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def _one_hot_logits(classes: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), 10).float() * 50


def test_inception_score_bounds_and_formula():
    assert inception_score(_one_hot_logits(list(range(10)) * 20)) == pytest.approx(10, rel=1e-6)
    assert inception_score(_one_hot_logits([3] * 50)) == pytest.approx(1, rel=1e-6)
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(2))
    p = logits.softmax(1).double()
    py = p.mean(0)
    direct = math.exp((p * (p.log() - py.log())).sum(1).mean().item())
    assert inception_score(logits) == pytest.approx(direct, rel=1e-6)


def test_mode_coverage_counts_confident_classes_above_the_share():
    classes = [0] * 300 + [1] * 300 + [2] * 300 + [7] * 2  # class 7 holds 0.2% < 1%: not a mode
    modes, kl = mode_coverage(_one_hot_logits(classes))
    assert modes == 3
    hist = torch.tensor([300, 300, 300, 2], dtype=torch.float64) / 902
    assert kl == pytest.approx((hist * (hist * 10).log()).sum().item(), rel=1e-6)
    assert mode_coverage(_one_hot_logits(list(range(10)) * 10)) == (10, pytest.approx(0.0, abs=1e-9))
    assert mode_coverage(_one_hot_logits([4] * 10))[1] == pytest.approx(math.log(10))
    unsure = torch.zeros(100, 10)  # p = 0.1 everywhere: nothing is confident
    assert mode_coverage(unsure)[0] == 0


def test_precision_recall_match_brute_force():
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(200, 5, generator=g), torch.randn(150, 5, generator=g) * 1.5 + 0.5

    def radius(x):
        d = torch.cdist(x, x)
        return d.sort(1).values[:, 3]  # 3rd neighbour after the point itself

    def inside(points, centres):
        return (torch.cdist(points, centres) <= radius(centres)).any(1).float().mean().item()

    p, r = precision_recall(fake, real)
    assert p == pytest.approx(inside(fake, real)) and r == pytest.approx(inside(real, fake))
    assert torch.allclose(kth_neighbour_radius(real), radius(real))
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real + 100, real) == (0.0, 0.0)


def test_diversity_is_zero_for_copies_and_one_for_the_reference_itself():
    real = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    assert diversity(real, real) == pytest.approx(1.0)
    assert diversity(real[:1].repeat(64, 1), real) == pytest.approx(0.0, abs=1e-6)


def test_collapse_verdict_thresholds():
    from gan.eval.metrics import collapse_verdict

    assert collapse_verdict(10, 0.9) == "healthy" and collapse_verdict(10) == "healthy"
    assert collapse_verdict(9, 0.9) == "partial collapse" and collapse_verdict(3, 0.9) == "partial collapse"
    assert collapse_verdict(2, 0.9) == "collapsed" and collapse_verdict(0) == "collapsed"
    assert collapse_verdict(10, 0.3) == "collapsed"  # ten classes, but the same few images
    assert collapse_verdict(float("nan"), float("nan")) == "collapsed"
