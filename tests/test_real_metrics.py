"""Calibration of the metrics on real MNIST: real data scores near the best values, noise and one digit far worse.

Needs ../shared/mnist; trains the evaluator there on first use (about 1.5 minutes on 2 cores) and caches it.
"""

import pytest
import torch

from gan.data import load_split, to_flat_images
from gan.evaluator import load_evaluator
from gan.metrics import score_samples
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
    m = score_samples(evaluator, to_flat_images(images[:10000], (-1.0, 1.0)), (-1.0, 1.0))
    assert m["fid"] < 2 and m["is"] > 9.5 and m["modes"] == 10 and m["kl_uniform"] < 0.01
    assert m["precision"] > 0.75 and m["recall"] > 0.75


def test_noise_and_one_digit_score_far_worse(evaluator, train_split):
    images, labels = train_split
    noise = torch.rand(10000, 1024, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = score_samples(evaluator, noise, (-1.0, 1.0))
    assert m["fid"] > 50 and m["is"] < 1.5 and m["modes"] <= 1 and m["precision"] < 0.05 and m["recall"] < 0.05
    threes = to_flat_images(images[labels == 3][:5000], (0.0, 1.0))
    m = score_samples(evaluator, threes, (0.0, 1.0))
    assert m["modes"] == 1 and m["fid"] > 30 and m["is"] < 1.5 and m["kl_uniform"] > 2.0 and m["recall"] < 0.3
