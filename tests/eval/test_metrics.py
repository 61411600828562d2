"""gan.eval.metrics: each formula against a direct computation, and calibrated on real MNIST."""

import math

import pytest
import torch

from gan.data import load_split, to_flat_images
from gan.eval.metrics import (
    diversity,
    frechet_distance,
    inception_score,
    kth_neighbour_radius,
    mode_coverage,
    precision_recall,
)
from tests.helpers import REAL_MNIST, needs_real_mnist


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


@pytest.fixture(scope="module")
def train_split():
    return load_split(REAL_MNIST, "train")


@needs_real_mnist
@pytest.mark.slow
def test_real_train_images_score_near_the_best(evaluator, train_split):
    images, _ = train_split
    m = evaluator.score(to_flat_images(images[:10000], (-1.0, 1.0)), (-1.0, 1.0))
    assert m["fid"] < 2 and m["is"] > 9.5 and m["modes"] == 10 and m["kl_uniform"] < 0.01
    assert m["precision"] > 0.75 and m["recall"] > 0.75


@needs_real_mnist
@pytest.mark.slow
def test_noise_and_one_digit_score_far_worse(evaluator, train_split):
    images, labels = train_split
    noise = torch.rand(10000, 1024, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = evaluator.score(noise, (-1.0, 1.0))
    assert m["fid"] > 50 and m["is"] < 1.5 and m["modes"] <= 1 and m["precision"] < 0.05 and m["recall"] < 0.05
    threes = to_flat_images(images[labels == 3][:5000], (0.0, 1.0))
    m = evaluator.score(threes, (0.0, 1.0))
    assert m["modes"] == 1 and m["fid"] > 30 and m["is"] < 1.5 and m["kl_uniform"] > 2.0 and m["recall"] < 0.3


@needs_real_mnist
@pytest.mark.slow
def test_collapse_verdicts_on_the_calibration_sets(evaluator, train_split):
    """Real digits of all classes are healthy, of 9 classes a partial collapse, of 2 classes or one image repeated
    collapsed; one digit class alone is collapsed by its modes, not its diversity (which stays above 0.5)."""
    from gan.eval.metrics import COLLAPSED_MAX_DIVERSITY, collapse_verdict, diversity

    images, labels = train_split

    def verdict(x: torch.Tensor) -> tuple[str, float]:
        flat = to_flat_images(x, (0.0, 1.0))
        m = evaluator.score(flat[:1000], (0.0, 1.0))
        div = diversity(evaluator.embed(flat[:64], (0.0, 1.0))[0], evaluator.test_features)
        return collapse_verdict(m["modes"], div), div

    assert verdict(images[:1000])[0] == "healthy"
    assert verdict(images[labels < 9][:1000])[0] == "partial collapse"
    assert verdict(images[labels < 2][:1000])[0] == "collapsed"
    ones, div = verdict(images[labels == 1])
    assert ones == "collapsed" and div > COLLAPSED_MAX_DIVERSITY
    assert verdict(images[:1].repeat(1000, 1, 1))[0] == "collapsed"


def _line(values) -> torch.Tensor:
    """Points on a line in a 2-D feature space: distances are exact small integers."""
    return torch.tensor([[float(v), 0.0] for v in values])


def test_density_and_coverage_on_sets_with_known_answers():
    from gan.eval.metrics import density_coverage

    real = _line(range(10))  # k = 1: every real ball has radius 1
    # the samples are the real points: each lies in its own ball and its neighbours' (the ends in 2): 28 / 10
    assert density_coverage(real, real, k=1) == pytest.approx((2.8, 1.0))
    assert density_coverage(_line([100, 200]), real, k=1) == (0.0, 0.0)  # far away: in no ball, covers none
    # the first five real points as samples: balls 0..5 hold one (ball 5 holds the sample at 4)
    density, coverage = density_coverage(_line(range(5)), real, k=1)
    assert coverage == pytest.approx(0.6) and density == pytest.approx((2 + 3 * 4) / 5)


def test_density_and_coverage_match_a_brute_force_count():
    from gan.eval.metrics import density_coverage, kth_neighbour_radius

    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 5, generator=gen), torch.randn(40, 5, generator=gen) * 1.5
    radii = kth_neighbour_radius(real, 3)
    inside = [[float(torch.dist(y, x)) <= float(r) for x, r in zip(real, radii, strict=True)] for y in fake]
    density = sum(map(sum, inside)) / (3 * len(fake))
    coverage = sum(any(row[i] for row in inside) for i in range(len(real))) / len(real)
    assert density_coverage(fake, real, k=3, chunk=7) == pytest.approx((density, coverage))


def test_kid_is_the_unbiased_mmd_of_a_direct_computation():
    from gan.eval.metrics import kernel_inception_distance

    gen = torch.Generator().manual_seed(1)
    fake, real = torch.randn(6, 4, generator=gen).double(), torch.randn(7, 4, generator=gen).double() + 0.5

    def k(a, b):
        return (float(a @ b) / 4 + 1.0) ** 3

    def mmd(x, y):
        m = len(x)
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        return xx + yy - 2 * sum(k(a, b) for a in x for b in y) / (m * m)

    # one subset as large as the smaller set: its fake rows are all six, in some order (the MMD does not care)
    mean, std = kernel_inception_distance(fake, real, subsets=1, subset_size=6, seed=3)
    g = torch.Generator().manual_seed(3)
    torch.randperm(6, generator=g)
    chosen = real[torch.randperm(7, generator=g)[:6]]
    assert mean == pytest.approx(mmd(fake, chosen), rel=1e-9) and std == 0.0
    # the same distribution scores near 0, a shifted one clearly above, and the spread over subsets is reported
    same, shifted = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    near, spread = kernel_inception_distance(same, shifted, subsets=20, subset_size=100)
    far, _ = kernel_inception_distance(same + 1.0, shifted, subsets=20, subset_size=100)
    assert abs(near) < 3 * spread + 1e-3 and far > 10 * max(abs(near), spread) and spread > 0
    with pytest.raises(ValueError, match="at least 2 samples"):
        kernel_inception_distance(fake[:1], real)


def test_every_evaluation_carries_the_card_beside_the_metrics():
    from gan.eval.metrics import (
        CARD_NAMES,
        METRIC_NAMES,
        density_coverage,
        features_metrics,
        kernel_inception_distance,
        nearest_other_distance,
        vendi_score,
        within_class_vendi,
    )

    gen = torch.Generator().manual_seed(2)
    real, fake, logits = torch.randn(300, 16, generator=gen), torch.randn(200, 16, generator=gen), torch.randn(200, 10)
    train = torch.cat([fake[:50], torch.randn(100, 16, generator=gen)])  # a quarter of the samples copy it
    scores = features_metrics(fake, logits, real, None, train, nearest_other_distance(train))
    assert set(scores) == set(METRIC_NAMES + CARD_NAMES)
    assert (scores["density"], scores["coverage"]) == pytest.approx(density_coverage(fake, real))
    assert (scores["precision"], scores["recall"]) == pytest.approx(precision_recall(fake, real))  # one pass
    assert (scores["kid"], scores["kid_std"]) == pytest.approx(kernel_inception_distance(fake, real, subsets=50))
    assert scores["vendi"] == pytest.approx(vendi_score(fake))
    assert scores["vendi_within"] == pytest.approx(within_class_vendi(fake, logits))
    assert scores["memorized"] == pytest.approx(0.25)
    assert math.isnan(features_metrics(fake, logits, real)["memorized"])  # no training reference: not known
    # without the card: the metrics alone, the same values
    plain = features_metrics(fake, logits, real, card=False)
    assert set(plain) == set(METRIC_NAMES) and plain == pytest.approx({k: scores[k] for k in METRIC_NAMES})


def _direct_vendi(x: torch.Tensor) -> float:
    """The Vendi score by its definition: the n x n cosine kernel's eigenvalues over n."""
    unit = x.double() / x.double().norm(dim=1, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(unit @ unit.T / len(x)).clamp_min(0)
    p = eigenvalues[eigenvalues > 1e-15]
    return math.exp(-(p * p.log()).sum().item())


def test_vendi_score_through_the_dual_matches_the_n_by_n_kernel():
    from gan.eval.metrics import vendi_score

    gen = torch.Generator().manual_seed(5)
    for n, d in ((40, 6), (5, 12), (200, 16)):  # more samples than dimensions (the dual) and fewer (the kernel)
        x = torch.randn(n, d, generator=gen).abs() + 0.1 * torch.randn(n, d, generator=gen)
        assert vendi_score(x) == pytest.approx(_direct_vendi(x), rel=1e-7)
    assert vendi_score(x * 7.5) == pytest.approx(vendi_score(x), rel=1e-7)  # cosine: the scale does not count


def test_vendi_score_closed_forms():
    """n copies of one sample: 1; n orthogonal unit vectors: n; two orthogonal kinds in equal shares: 2."""
    from gan.eval.metrics import vendi_score

    row = torch.tensor([[0.3, 1.0, 2.0, 0.0]])
    assert vendi_score(row.repeat(500, 1)) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(torch.eye(7)) == pytest.approx(7.0, rel=1e-9)
    assert vendi_score(torch.eye(64)[:20]) == pytest.approx(20.0, rel=1e-9)  # n < d: the kernel's side
    assert vendi_score(torch.eye(3)[:2].repeat(300, 1)) == pytest.approx(2.0, rel=1e-9)  # n > d: the dual's side
    assert vendi_score(torch.zeros(10, 4)) == 1.0
    with pytest.raises(ValueError, match="at least one sample"):
        vendi_score(torch.zeros(0, 4))


def test_within_class_vendi_sees_variety_inside_each_predicted_class():
    """Both sets cover two classes evenly (the same class histogram, modes, kl_uniform and is); within-class Vendi
    is 1 where each class is one image repeated, and the classes' own scores where they vary."""
    from gan.eval.metrics import vendi_score, within_class_vendi

    logits = _one_hot_logits([0] * 30 + [1] * 30)
    copies = torch.cat([torch.eye(40)[:1].repeat(30, 1), torch.eye(40)[1:2].repeat(30, 1)])
    varied = torch.cat([torch.eye(40)[:30], torch.eye(40)[10:40]])
    assert within_class_vendi(copies, logits) == pytest.approx(1.0, abs=1e-9)
    assert within_class_vendi(varied, logits) == pytest.approx(30.0, rel=1e-9)
    assert vendi_score(copies) == pytest.approx(2.0, rel=1e-9)  # the whole set's score sees only the two kinds
    # a class below the share (and 2 samples) is left out of the mean; when none holds 2 samples, each scores 1
    few = _one_hot_logits([0] * 30 + [1] * 30 + [2])
    with_stray = torch.cat([varied, torch.eye(40)[:1]])
    assert within_class_vendi(with_stray, few, min_share=0.02) == pytest.approx(30.0, rel=1e-9)
    assert within_class_vendi(torch.eye(10)[:3], _one_hot_logits([0, 1, 2])) == 1.0


def test_memorized_share_flags_copies_not_fresh_points_or_noise():
    from gan.eval.metrics import MEMORIZED_RATIO, memorized_share, nearest_other_distance

    train = _line(range(0, 100, 10))  # every training point's nearest other is 10 away
    nearest = nearest_other_distance(train)
    assert torch.equal(nearest, torch.full((10,), 10.0))
    assert memorized_share(train, train, nearest) == 1.0  # exact copies
    assert memorized_share(_line([1000, -500]), train, nearest) == 0.0  # far away: noise
    # beside the line, as far from the nearest training point as its offset: flagged just inside the ratio's limit
    inside, outside = 10 * MEMORIZED_RATIO - 0.5, 10 * MEMORIZED_RATIO + 0.5
    beside = torch.tensor([[20.0, inside], [50.0, inside], [30.0, outside], [70.0, outside]])
    assert memorized_share(beside, train, nearest) == 0.5
    assert memorized_share(beside, train, nearest, ratio=1.0) == 1.0  # the plain rule flags all four
    # a set of 30% copies and 70% points midway between two training images: 0.3, in chunks of any size
    mixed = torch.cat([_line([10 * i for i in range(3)]), _line([10 * i + 5 for i in range(7)]) + torch.tensor([0, 1])])
    assert memorized_share(mixed, train, nearest, chunk=3) == pytest.approx(0.3)


def test_ranking_agreement_is_kendalls_tau_over_the_runs_both_scored():
    from scipy.stats import kendalltau

    from gan.eval.metrics import ranking_agreement

    fids = [12.0, 30.5, 8.1, 95.0, 40.2]
    assert ranking_agreement(fids, [f * 2 + 1 for f in fids])[0] == pytest.approx(1.0)
    assert ranking_agreement(fids, [-f for f in fids])[0] == pytest.approx(-1.0)
    other = [11.0, 45.0, 9.5, 60.0, 33.0]  # runs 2 and 5 swap places
    tau, p = ranking_agreement(fids, other)
    expected = kendalltau(fids, other)
    assert (tau, p) == pytest.approx((expected.statistic, expected.pvalue)) and tau == pytest.approx(0.8)
    # a diverged run (NaN under either) is left out of both rankings
    assert ranking_agreement([*fids, math.nan], [*other, 3.0]) == pytest.approx((tau, p))
    with pytest.raises(ValueError, match="the same runs"):
        ranking_agreement(fids, other[:4])
    with pytest.raises(ValueError, match="at least 2 runs"):
        ranking_agreement([1.0, math.nan], [2.0, 3.0])


@needs_real_mnist
@pytest.mark.slow
def test_the_card_on_the_calibration_sets(evaluator):
    """memorized: training copies 1, held-out digits, the test split and noise near 0; the Vendi scores: one image
    repeated 1, each class one image repeated 1 within classes, real digits about 6 (all) and 3 (within a class);
    kid: real digits near 0, noise far."""
    from gan.eval.corruptions import duplicates, flat, real_images, training_copy_images

    root = str(REAL_MNIST)
    images, labels = real_images(root, 2000)
    feats, logits = evaluator.embed(flat(images), (0.0, 1.0))
    fresh = evaluator.metrics(feats, logits)
    copies = evaluator.score(flat(training_copy_images(root, 2000)), (0.0, 1.0))
    noise = evaluator.score(torch.rand(2000, 1024, generator=torch.Generator().manual_seed(0)), (0.0, 1.0))
    test = evaluator.metrics(evaluator.test_features, evaluator.test_logits)
    assert copies["memorized"] == 1.0 and noise["memorized"] == 0.0
    assert fresh["memorized"] < 0.01 and test["memorized"] < 0.01
    assert fresh["kid"] < 0.01 and noise["kid"] > 0.5 and noise["density"] == 0.0 == noise["coverage"]
    assert 5.0 < fresh["vendi"] < 8.0 and 2.5 < fresh["vendi_within"] < 3.5
    same = evaluator.metrics(*duplicates((feats, logits), labels))  # each image its class's first one
    assert same["vendi_within"] == pytest.approx(1.0, abs=1e-6) and same["modes"] == fresh["modes"] == 10
    assert evaluator.metrics(feats[:1].repeat(500, 1), logits[:1].repeat(500, 1))["vendi"] == pytest.approx(1.0)


def test_time_card_times_the_evaluation_without_and_with_the_card():
    from gan.eval.metrics import kth_neighbour_radius, nearest_other_distance, time_card

    gen = torch.Generator().manual_seed(3)
    real, fake, train = (torch.randn(n, 16, generator=gen) for n in (300, 200, 100))
    found = time_card(
        fake, torch.randn(200, 10), real, kth_neighbour_radius(real), train, nearest_other_distance(train), 3
    )
    assert found["samples"] == 200 and len(found["ratio_rounds"]) == 3
    assert found["ratio"] == pytest.approx(sorted(found["ratio_rounds"])[1], abs=1e-3)  # the rounds' median
    assert found["after_s"] > 0 and found["before_s"] > 0
    assert set(found["parts_s"]) == {
        "precision_recall",
        "density_coverage",
        "kid",
        "vendi",
        "vendi_within",
        "memorized",
    }
