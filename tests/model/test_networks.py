"""gan.model.networks: generator and discriminator layers, and a pack member = that member alone."""

import pytest
import torch

from gan.errors import ConfigError
from gan.images import IMAGE_DIM
from gan.model.networks import Discriminator, Generator
from gan.model.population import StackedBatchNorm, StackedLayerNorm, StackedLinear
from tests.helpers import gens

PARAMS = {"leaky_relu": {"negative_slope": 0.2}}


def widths(net):
    return [m.out_features for m in net.net if isinstance(m, StackedLinear)]


def test_generator_and_discriminator_shapes_and_layers():
    G = Generator(100, [128, 256, 512], ["relu"] * 2, ["tanh"] * 2, [PARAMS] * 2, gens(0, 1))
    D = Discriminator([512, 256, 128], ["leaky_relu"] * 2, ["identity"] * 2, [PARAMS] * 2, gens(0, 1))
    x = G(torch.randn(2, 5, 100))
    assert x.shape == (2, 5, IMAGE_DIM) == (2, 5, 1024)
    assert x.abs().max() <= 1
    assert D(x).shape == (2, 5)
    assert widths(G) == [128, 256, 512, 1024] and widths(D) == [512, 256, 128, 1]
    assert G.net.fc1.weight.shape == (2, 100, 128) and G.net.fc1.bias.shape == (2, 128)
    assert not torch.equal(G.net.fc1.weight[0], G.net.fc1.weight[1])  # each member from its own generator
    names = [n for n, _ in D.net.named_children()]
    assert names == ["fc1", "act1", "fc2", "act2", "fc3", "act3", "out", "out_act"]
    assert D.net.act1.functions[0].negative_slope == 0.2


def test_custom_widths_and_sigmoid_output():
    G = Generator(8, [16], ["elu"], ["sigmoid"], [{}], gens(0))
    x = G(torch.randn(1, 3, 8))
    assert x.shape == (1, 3, 1024) and x.min() >= 0 and x.max() <= 1
    D = Discriminator([32, 16], ["tanh"], ["identity"], [{}], gens(0))
    assert widths(D) == [32, 16, 1]


MIXED = [  # (hidden act, output act, act_params, spectral norm) of four members
    ("relu", "tanh", {}, True),
    ("tanh", "sigmoid", {}, False),
    ("prelu", "identity", {"prelu": {"init": 0.1}}, True),
    ("leaky_relu", "hardtanh", PARAMS, False),
]


def test_each_generator_member_computes_what_it_computes_alone():
    seeds = [3, 4, 5, 6]
    acts, outs, params, _ = zip(*MIXED, strict=True)
    pack = Generator(8, [16, 16], acts, outs, params, gens(*seeds))
    z = torch.randn(4, 6, 8)
    out = pack(z)
    for k, seed in enumerate(seeds):
        alone = Generator(8, [16, 16], acts[k : k + 1], outs[k : k + 1], params[k : k + 1], gens(seed))
        assert torch.equal(out[k], alone(z[k : k + 1])[0]), MIXED[k]
    assert pack.net.act1.prelu_weight.tolist() == pytest.approx([0.25, 0.25, 0.1, 0.25])
    # a loss on one member's output reaches only that member's slice of every parameter
    pack(z)[2].sum().backward()
    for p in pack.parameters():
        if p.grad is not None:
            assert p.grad[[0, 1, 3]].abs().sum() == 0


def test_each_discriminator_member_with_its_own_spectral_norm_computes_what_it_computes_alone():
    seeds = [7, 8, 9, 10]
    acts, _, params, sn = zip(*MIXED, strict=True)
    members = [1, 0, 2, 1]  # the two tanh members are not neighbours: MemberActivation gathers them
    acts, params, sn = [acts[m] for m in members], [params[m] for m in members], [sn[m] for m in members]
    pack = Discriminator([32, 16], acts, ["identity"] * 4, params, gens(*seeds), spectral_norm=sn)
    alone = [
        Discriminator([32, 16], [a], ["identity"], [p], gens(s), spectral_norm=[n])
        for a, p, s, n in zip(acts, params, seeds, sn, strict=True)
    ]
    x = torch.randn(4, 5, 1024)
    for _ in range(3):  # training mode: every pass is one more power iteration
        out = pack(x)
        for k, D in enumerate(alone):
            assert torch.equal(out[k], D(x[k : k + 1])[0]), (k, acts[k], sn[k])
    for k, D in enumerate(alone):
        assert torch.equal(pack.net.fc1.sn_u[k], D.net.fc1.sn_u[0])
    start = Discriminator([32, 16], acts, ["identity"] * 4, params, gens(*seeds), spectral_norm=sn)
    moved = [not torch.equal(a, b) for a, b in zip(pack.net.fc1.sn_u, start.net.fc1.sn_u, strict=True)]
    assert moved == sn  # members without spectral norm leave their vectors alone


def test_normalization_sits_between_linear_and_activation():
    G = Generator(8, [16, 32], ["relu"], ["tanh"], [{}], gens(0), norm="batch")
    assert [n for n, _ in G.net.named_children()] == ["fc1", "norm1", "act1", "fc2", "norm2", "act2", "out", "out_act"]
    assert isinstance(G.net.norm1, StackedBatchNorm) and G.net.norm2.weight.shape == (1, 32)
    D = Discriminator([16], ["elu"], ["identity"], [{}], gens(0), norm="layer")
    assert isinstance(D.net.norm1, StackedLayerNorm) and D.net.norm1.weight.shape == (1, 16)
    with pytest.raises(ConfigError, match="Unknown normalization 'group' for model.g_norm.*none, batch, layer"):
        Generator(8, [16], ["relu"], ["tanh"], [{}], gens(0), norm="group")
