import math

import pytest
import torch

from gan.losses import LOSSES, LossError, build_loss
from gan.networks import IMAGE_DIM, Discriminator, Generator

PARAMS = {"leaky_relu": {"negative_slope": 0.2}}


def test_generator_and_discriminator_shapes_and_layers():
    G = Generator(100, [128, 256, 512], "relu", "tanh", PARAMS)
    D = Discriminator([512, 256, 128], "leaky_relu", "identity", PARAMS)
    z = torch.randn(5, 100)
    x = G(z)
    assert x.shape == (5, IMAGE_DIM) == (5, 1024)
    assert x.abs().max() <= 1
    assert D(x).shape == (5,)
    widths = [m.out_features for m in G.net if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 256, 512, 1024]
    widths = [m.out_features for m in D.net if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 256, 128, 1]
    names = [n for n, _ in D.net.named_children()]
    assert names == ["fc1", "act1", "fc2", "act2", "fc3", "act3", "out", "out_act"]
    assert D.net.act1.negative_slope == 0.2


def test_custom_widths_and_sigmoid_output():
    G = Generator(8, [16], "elu", "sigmoid", {})
    x = G(torch.randn(3, 8))
    assert x.shape == (3, 1024) and x.min() >= 0 and x.max() <= 1
    D = Discriminator([32, 16], "tanh", "identity", {})
    assert len([m for m in D.net if isinstance(m, torch.nn.Linear)]) == 3


REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def _log_sigmoid(x):  # reference written differently from the code under test
    return -torch.log1p(torch.exp(-x))


def test_ns_loss_matches_its_formula():
    loss = build_loss("ns")
    d = -(_log_sigmoid(REAL).mean() + torch.log1p(-torch.sigmoid(FAKE)).mean())
    g = -_log_sigmoid(FAKE).mean()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d.item(), rel=1e-6)
    assert loss.g_loss(FAKE).item() == pytest.approx(g.item(), rel=1e-6)
    zeros = torch.zeros(4)
    assert loss.d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert torch.allclose(loss.d_output(REAL), torch.sigmoid(REAL))


def test_minimax_generator_loss_is_log_one_minus_d():
    loss = build_loss("minimax")
    g = torch.log1p(-torch.sigmoid(FAKE)).mean()
    assert loss.g_loss(FAKE).item() == pytest.approx(g.item(), rel=1e-6)
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(build_loss("ns").d_loss(REAL, FAKE).item())


def test_lsgan_matches_its_formula():
    loss = build_loss("lsgan")
    d = 0.5 * (((REAL - 1) ** 2).mean() + (FAKE**2).mean())
    g = 0.5 * ((FAKE - 1) ** 2).mean()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d.item())
    assert loss.g_loss(FAKE).item() == pytest.approx(g.item())
    assert torch.equal(loss.d_output(REAL), REAL)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_stay_finite_on_extreme_logits(name):
    loss = build_loss(name)
    big = torch.tensor([-200.0, 200.0], requires_grad=True)
    total = loss.d_loss(big, big) + loss.g_loss(big)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(big.grad).all()


def test_saturation_minimax_vs_ns_gradient():
    """The reason minimax is in the lab: when D rejects fakes confidently, its G gradient vanishes."""
    logits = torch.tensor([-10.0], requires_grad=True)
    build_loss("minimax").g_loss(logits).backward()
    minimax_grad = logits.grad.abs().item()
    logits.grad = None
    build_loss("ns").g_loss(logits).backward()
    assert minimax_grad < 1e-3 < logits.grad.abs().item()


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(LossError, match="'wgan'.*ns, minimax, lsgan"):
        build_loss("wgan")
