"""gan.model.population: stacked normalization, spectral norm and minibatch std per member."""

import pytest
import torch
from torch import nn

from gan.errors import ConfigError
from gan.model.networks import Discriminator
from gan.model.population import MinibatchStd, StackedBatchNorm, StackedLayerNorm
from tests.helpers import gens


def test_stacked_norms_normalize_each_members_batch_as_torch_does():
    x = torch.randn(2, 8, 16) * torch.tensor([1.0, 5.0]).view(2, 1, 1)
    bn = StackedBatchNorm(2, 16)
    out = bn(x)
    for k in range(2):
        ref = nn.BatchNorm1d(16)
        assert torch.allclose(out[k], ref(x[k]), atol=1e-5)
        assert torch.allclose(bn.running_var[k], ref.running_var, atol=1e-5)
        assert torch.allclose(bn.eval()(x)[k], ref.eval()(x[k]), atol=1e-5)
        bn.train()
    assert torch.allclose(StackedLayerNorm(2, 16)(x), nn.LayerNorm(16)(x), atol=1e-5)


def test_spectral_norm_bounds_every_linear_layer_by_one():
    D = Discriminator([64, 32], ["leaky_relu"] * 2, ["identity"] * 2, [{}] * 2, gens(0, 1), spectral_norm=[True, False])
    with torch.no_grad():
        for name in ("fc1", "fc2", "out"):
            getattr(D.net, name).weight.mul_(10.0)  # far above 1 before normalization
    for _ in range(30):  # power iteration converges over training-mode forward passes
        D(torch.randn(2, 16, 1024))
    D.eval()
    for name in ("fc1", "fc2", "out"):
        layer = getattr(D.net, name)
        assert torch.linalg.matrix_norm(layer.weight[0], ord=2).item() > 3, name
        assert torch.linalg.matrix_norm(layer.effective_weight()[0], ord=2).item() == pytest.approx(1.0, abs=0.02), name
        assert torch.equal(layer.effective_weight()[1], layer.weight[1]), name  # member 1 has no spectral norm


def test_minibatch_std_appends_each_groups_spread():
    layer = MinibatchStd(group_size=2)
    h = torch.tensor(
        [[[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [2.0, 4.0]]]
    )
    out = layer(h)
    assert out.shape == (2, 4, 3)
    assert out[0, :2, 2].tolist() == pytest.approx([1.5, 1.5], abs=1e-3)  # per-unit std (1, 2), averaged
    assert out[0, 2:, 2].tolist() == pytest.approx([0.0, 0.0], abs=1e-3)  # identical samples: no spread
    assert out[1, :, 2].tolist() == pytest.approx([0.0, 0.0, 1.5, 1.5], abs=1e-3)  # each member its own groups
    assert MinibatchStd(4)(torch.randn(1, 6, 5)).shape == (1, 6, 6)  # 6 is not a multiple of 4: one group
    D = Discriminator([32, 16], ["relu"], ["identity"], [{}], gens(0), minibatch_std_group=4)
    assert "mbstd" in dict(D.net.named_children()) and D.net.out.in_features == 17
    assert D(torch.randn(1, 8, 1024)).shape == (1, 8)
    with pytest.raises(ConfigError, match="at least 2"):
        Discriminator([32], ["relu"], ["identity"], [{}], gens(0), minibatch_std_group=1)
