"""gan.model.d_input: instance noise, its decay and its scale per member."""

import pytest
import torch

from gan.model.d_input import instance_noise_std
from gan.model.module import GANModule
from gan.model.streams import MemberStreams
from tests.helpers import CPU


def test_instance_noise_decays_linearly_to_zero():
    assert instance_noise_std(0.1, 0, 100) == pytest.approx(0.1)
    assert instance_noise_std(0.1, 50, 100) == pytest.approx(0.05)
    assert instance_noise_std(0.1, 100, 100) == 0.0 == instance_noise_std(0.1, 500, 100)
    assert instance_noise_std(0.0, 0, 100) == 0.0
    assert instance_noise_std(0.1, 10**6, 0) == pytest.approx(0.1)  # no planned length: constant


def test_instance_noise_is_scaled_to_each_members_data_range():
    """tanh's range [-1, 1] has half-range 1, sigmoid's [0, 1] half-range 0.5; a member without noise sees x."""
    members = [
        dict(g_hidden=[8], d_hidden=[8], g_out_act=act, instance_noise=noise, seed=k)
        for k, (act, noise) in enumerate([("tanh", 0.2), ("sigmoid", 0.2), ("tanh", 0.0)])
    ]
    module = GANModule(members=members)
    module.d_view.decay_iters = [100] * 3
    module.streams = MemberStreams([0, 1, 2], CPU)
    x = torch.zeros(3, 2000, 1024)
    for iteration, share in ((0, 1.0), (75, 0.25)):
        assert module.d_view.update(iteration) == pytest.approx([0.2 * share, 0.2 * share, 0.0])
        noisy = module.d_input(x)
        assert noisy[0].std().item() == pytest.approx(0.2 * share, rel=0.01)
        assert noisy[1].std().item() == pytest.approx(0.1 * share, rel=0.01)
        assert torch.equal(noisy[2], x[2])
