import math

import pytest
import torch

from gan.errors import ConfigError
from gan.images import IMAGE_DIM
from gan.model.losses import LOSSES, MemberLosses, check_loss
from gan.model.networks import Discriminator, Generator
from gan.model.population import StackedLinear

PARAMS = {"leaky_relu": {"negative_slope": 0.2}}


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


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


# --------------------------------------------------------------------------- a member of a pack = that member alone
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


# --------------------------------------------------------------------------- losses
REAL = torch.tensor([[2.0, -1.0, 0.5]])
FAKE = torch.tensor([[-3.0, 0.0, 1.5]])
ONE = torch.ones(1, 1)


def _log_sigmoid(x):  # reference written differently from the code under test
    return -torch.log1p(torch.exp(-x))


def test_ns_loss_matches_its_formula():
    loss = LOSSES["ns"]()
    d = -(_log_sigmoid(REAL).mean() + torch.log1p(-torch.sigmoid(FAKE)).mean())
    g = -_log_sigmoid(FAKE).mean()
    assert loss.d_loss(REAL, FAKE, ONE).shape == (1,)
    assert loss.d_loss(REAL, FAKE, ONE).item() == pytest.approx(d.item(), rel=1e-6)
    assert loss.g_loss(FAKE).item() == pytest.approx(g.item(), rel=1e-6)
    zeros = torch.zeros(1, 4)
    assert loss.d_loss(zeros, zeros, ONE).item() == pytest.approx(2 * math.log(2))
    assert torch.allclose(loss.d_output(REAL), torch.sigmoid(REAL))


def test_losses_are_one_value_per_member():
    loss = LOSSES["ns"]()
    real, fake = torch.cat([REAL, FAKE]), torch.cat([FAKE, REAL])
    both = loss.d_loss(real, fake, torch.tensor([[1.0], [0.9]]))
    assert both.shape == (2,)
    assert both[0] == loss.d_loss(REAL, FAKE, ONE)[0]
    assert both[1] == loss.d_loss(FAKE, REAL, 0.9 * ONE)[0]
    assert loss.g_loss(fake).tolist() == [loss.g_loss(FAKE).item(), loss.g_loss(REAL).item()]


def test_minimax_generator_loss_is_log_one_minus_d():
    loss = LOSSES["minimax"]()
    g = torch.log1p(-torch.sigmoid(FAKE)).mean()
    assert loss.g_loss(FAKE).item() == pytest.approx(g.item(), rel=1e-6)
    assert loss.d_loss(REAL, FAKE, ONE).item() == pytest.approx(LOSSES["ns"]().d_loss(REAL, FAKE, ONE).item())


def test_lsgan_matches_its_formula():
    loss = LOSSES["lsgan"]()
    d = 0.5 * (((REAL - 1) ** 2).mean() + (FAKE**2).mean())
    g = 0.5 * ((FAKE - 1) ** 2).mean()
    assert loss.d_loss(REAL, FAKE, ONE).item() == pytest.approx(d.item())
    assert loss.g_loss(FAKE).item() == pytest.approx(g.item())
    assert torch.equal(loss.d_output(REAL), REAL)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_stay_finite_on_extreme_logits(name):
    loss = LOSSES[name]()
    big = torch.tensor([[-200.0, 200.0]], requires_grad=True)
    total = loss.d_loss(big, big, ONE) + loss.g_loss(big)
    total.sum().backward()
    assert torch.isfinite(total).all() and torch.isfinite(big.grad).all()


def test_saturation_minimax_vs_ns_gradient():
    """The reason minimax is in the lab: when D rejects fakes confidently, its G gradient vanishes."""
    logits = torch.tensor([[-10.0]], requires_grad=True)
    LOSSES["minimax"]().g_loss(logits).sum().backward()
    minimax_grad = logits.grad.abs().item()
    logits.grad = None
    LOSSES["ns"]().g_loss(logits).sum().backward()
    assert minimax_grad < 1e-3 < logits.grad.abs().item()


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="'wgan'.*ns, minimax, lsgan"):
        check_loss("wgan")
    assert check_loss("hinge") is LOSSES["hinge"]


def test_member_losses_give_each_member_exactly_its_own_loss():
    names = ["ns", "hinge", "lsgan", "ns", "wgan-gp", "minimax"]
    smoothing = [0.1, 0.0, 0.2, 0.0, 0.0, 0.0]
    losses = MemberLosses(names, smoothing)
    real, fake = torch.randn(6, 7), torch.randn(6, 7)
    d, g, out = losses.d_loss(real, fake), losses.g_loss(fake), losses.d_output(real)
    assert d.shape == g.shape == (6,) and out.shape == (6, 7)
    for k, (name, s) in enumerate(zip(names, smoothing, strict=True)):
        alone = LOSSES[name]()
        label = torch.tensor([[1.0 - s]])
        assert d[k] == alone.d_loss(real[k : k + 1], fake[k : k + 1], label)[0], name
        assert g[k] == alone.g_loss(fake[k : k + 1])[0], name
        assert torch.equal(out[k], alone.d_output(real[k : k + 1])[0]), name
    assert losses.gradient_penalty == [False, False, False, False, True, False]
    with pytest.raises(ConfigError, match="does not apply to model.loss='hinge'"):
        MemberLosses(["ns", "hinge"], [0.1, 0.1])
