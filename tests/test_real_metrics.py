"""Calibration of the metrics on real MNIST: real data scores near the best values, noise and one digit far worse.

Needs ../shared/mnist; trains the evaluator there on first use (about 1.5 minutes on 2 cores) and caches it.
"""

import pytest
import torch

from gan.data import load_split, to_flat_images
from gan.eval.classifier import load_evaluator
from tests.conftest import REAL_MNIST, needs_real_mnist

pytestmark = [needs_real_mnist, pytest.mark.slow]


@pytest.fixture(scope="module")
def evaluator():
    return load_evaluator(REAL_MNIST)


@pytest.fixture(scope="module")
def train_split():
    return load_split(REAL_MNIST, "train")


def test_evaluator_reaches_99_percent(evaluator):
    assert evaluator.test_accuracy >= 0.99


def test_real_train_images_score_near_the_best(evaluator, train_split):
    images, _ = train_split
    m = evaluator.score(to_flat_images(images[:10000], (-1.0, 1.0)), (-1.0, 1.0))
    assert m["fid"] < 2 and m["is"] > 9.5 and m["modes"] == 10 and m["kl_uniform"] < 0.01
    assert m["precision"] > 0.75 and m["recall"] > 0.75


def test_noise_and_one_digit_score_far_worse(evaluator, train_split):
    images, labels = train_split
    noise = torch.rand(10000, 1024, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = evaluator.score(noise, (-1.0, 1.0))
    assert m["fid"] > 50 and m["is"] < 1.5 and m["modes"] <= 1 and m["precision"] < 0.05 and m["recall"] < 0.05
    threes = to_flat_images(images[labels == 3][:5000], (0.0, 1.0))
    m = evaluator.score(threes, (0.0, 1.0))
    assert m["modes"] == 1 and m["fid"] > 30 and m["is"] < 1.5 and m["kl_uniform"] > 2.0 and m["recall"] < 0.3


def test_fid_rises_with_every_corruption_s_severity(evaluator):
    """The corruption study (``python -m gan.evaluator validate.enabled=true``) on 600 real images: for each of
    the six corruptions the fid grows strictly from clean through severities 1 to 4."""
    from gan.eval.corruptions import CORRUPTIONS, validate_metrics

    rows = validate_metrics(evaluator, str(REAL_MNIST), num_images=600, fid_only=True)
    for name in CORRUPTIONS:
        fids = [r["fid"] for r in rows if r["corruption"] == name]
        assert len(fids) == 5 and all(a < b for a, b in zip(fids, fids[1:], strict=False)), (name, fids)


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
