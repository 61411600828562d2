"""Checks on the real MNIST files (CI has them in ../shared/mnist); skipped with a reason elsewhere."""

import pytest
import torch

from gan.data import MNISTDataModule, load_split
from gan.runs.training import train
from tests.conftest import REAL_MNIST, compose_train, fast_overrides, needs_real_mnist, scalars

pytestmark = [needs_real_mnist, pytest.mark.slow]


def test_real_splits_decode_to_60k_and_10k_padded_images():
    images, labels = load_split(REAL_MNIST, "train")
    assert images.shape == (60000, 28, 28) and labels.bincount().tolist()[0] == 5923
    dm = MNISTDataModule(root=str(REAL_MNIST), value_range=(-1.0, 1.0), download=False)
    dm.prepare_data()
    dm.setup("fit")
    x = dm.train_images
    assert x.shape == (60000, 1024)
    img = x.view(-1, 32, 32)
    assert (img[:, :2] == -1).all() and (img[:, :, -2:] == -1).all()
    assert x.max() == 1.0 and x.min() == -1.0
    test_x, test_y = dm.test_images()
    assert test_x.shape == (10000, 1024) and test_y.shape == (10000,)
    assert len(dm.train_dataloader()) == 60000 // 64


def test_short_real_run_learns_something(tmp_path):
    """60 iterations on real digits: D starts telling real from fake (D(x) > D(G(z)) on average)."""
    run_dir = tmp_path / "run"
    cfg = compose_train(
        fast_overrides(REAL_MNIST, **{"data.batch_size": 64, "trainer.max_steps": 60, "trainer.max_epochs": -1}),
        run_dir,
    )
    summary = train(cfg)
    assert summary["iterations"] == 60
    series = scalars(run_dir)
    d_x = torch.tensor([v for _, v in series["train/D_x"]])
    d_gz = torch.tensor([v for _, v in series["train/D_G_z"]])
    assert torch.isfinite(d_x).all() and (d_x - d_gz).mean() > 0


def test_real_limited_data_subset_is_balanced_and_fixed():
    a = MNISTDataModule(root=str(REAL_MNIST), download=False, train_size=2000, seed=0)
    b = MNISTDataModule(root=str(REAL_MNIST), download=False, train_size=2000, seed=7)  # another training seed
    a.setup(), b.setup()
    assert a.train_labels.bincount().tolist() == [200] * 10
    assert torch.equal(a.train_images, b.train_images)  # the subset follows data.subset_seed, not the seed
    assert len(a.train_dataloader()) == 60000 // 64  # an epoch is still 60,000 images' worth of batches
