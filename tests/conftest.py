"""Fixtures shared by every test module (helpers are in ``tests/helpers``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from gan.eval.classifier import load_evaluator
from tests.helpers import REAL_MNIST, make_mnist


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (``python -m pytest -n 2``): one torch thread, for this process and the commands
    its tests start, so that two workers share the cores instead of fighting over them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MNIST of random digits in torchvision's layout (256 training and 64 test images)."""
    return make_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture(scope="session")
def evaluator():
    """The evaluator of the real MNIST at REAL_MNIST (trained there on first use, then read from its cache); for
    tests marked ``needs_real_mnist``."""
    return load_evaluator(REAL_MNIST)


@pytest.fixture(autouse=True)
def clear_hydra_state() -> Iterator[None]:
    """Hydra's global state (the job's HydraConfig, an initialized config search path) cleared after each test, so
    that no test reads another's job."""
    yield
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()
