"""gan.model.losses: each loss and gradient penalty against its formula."""

import math

import pytest
import torch
from torch import nn

from gan.errors import ConfigError
from gan.model.losses import (
    LOSSES,
    MemberLosses,
    check_loss,
    input_gradients,
    squared_gradient_penalty,
    wgan_gp_penalty,
)
from gan.model.networks import Discriminator
from gan.model.penalties import DiscriminatorPenalties
from gan.model.population import MemberConstants, StackedLinear
from tests.helpers import gens

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
    total = loss.d_loss(big, big.flip(1), ONE) + loss.g_loss(big, big.flip(1))
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
    names = ["ns", "hinge", "lsgan", "ns", "wgan-gp", "minimax", "rpgan"]
    smoothing = [0.1, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0]
    losses = MemberLosses(names, smoothing)
    real, fake = torch.randn(7, 7), torch.randn(7, 7)
    d, g, out = losses.d_loss(real, fake), losses.g_loss(fake, real), losses.d_output(real)
    assert d.shape == g.shape == (7,) and out.shape == (7, 7)
    for k, (name, s) in enumerate(zip(names, smoothing, strict=True)):
        alone = LOSSES[name]()
        label = torch.tensor([[1.0 - s]])
        assert d[k] == alone.d_loss(real[k : k + 1], fake[k : k + 1], label)[0], name
        assert g[k] == alone.g_loss(fake[k : k + 1], real[k : k + 1])[0], name
        assert torch.equal(out[k], alone.d_output(real[k : k + 1])[0]), name
    assert losses.gradient_penalty == [False, False, False, False, True, False, False]
    assert losses.real_in_g == [False] * 6 + [True]
    with pytest.raises(ConfigError, match="does not apply to model.loss='hinge'"):
        MemberLosses(["ns", "hinge"], [0.1, 0.1])


# four logits each (the hinge, Wasserstein and label-smoothing tests'), beside the three of REAL and FAKE
REAL4 = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
FAKE4 = torch.tensor([[-3.0, 0.0, 1.5, -0.5]])


def test_hinge_loss_matches_its_formula():
    loss = LOSSES["hinge"]()
    d = sum(max(0.0, 1 - r) for r in REAL4[0].tolist()) / 4 + sum(max(0.0, 1 + f) for f in FAKE4[0].tolist()) / 4
    assert loss.d_loss(REAL4, FAKE4, ONE).item() == pytest.approx(d)  # (0 + 2 + .5 + 1)/4 + (0 + 1 + 2.5 + .5)/4
    assert loss.g_loss(FAKE4).item() == pytest.approx(-sum(FAKE4[0].tolist()) / 4)
    assert torch.equal(loss.d_output(REAL4), REAL4)


def test_wasserstein_loss_matches_its_formula():
    loss = LOSSES["wgan-gp"]()
    assert loss.d_loss(REAL4, FAKE4, ONE).item() == pytest.approx(
        sum(FAKE4[0].tolist()) / 4 - sum(REAL4[0].tolist()) / 4
    )
    assert loss.g_loss(FAKE4).item() == pytest.approx(-sum(FAKE4[0].tolist()) / 4)
    assert loss.gradient_penalty and not LOSSES["hinge"].gradient_penalty


@pytest.mark.parametrize("name", ["ns", "minimax"])
def test_one_sided_label_smoothing_targets_0_9_for_real_only(name):
    smoothed, plain = MemberLosses([name], [0.1]), MemberLosses([name], [0.0])
    real_term = -(0.9 * torch.log(torch.sigmoid(REAL4)) + 0.1 * torch.log(1 - torch.sigmoid(REAL4))).mean()
    fake_term = -torch.log(1 - torch.sigmoid(FAKE4)).mean()
    assert smoothed.d_loss(REAL4, FAKE4).item() == pytest.approx((real_term + fake_term).item(), rel=1e-5)
    assert torch.equal(smoothed.g_loss(FAKE4), plain.g_loss(FAKE4))  # one-sided: G's target stays 1


def test_lsgan_label_smoothing_moves_the_real_target():
    loss = MemberLosses(["lsgan"], [0.2])
    assert loss.d_loss(REAL4, FAKE4).item() == pytest.approx(
        0.5 * (((REAL4 - 0.8) ** 2).mean() + (FAKE4**2).mean()).item()
    )


@pytest.mark.parametrize("name", ["hinge", "wgan-gp", "rpgan"])
def test_label_smoothing_is_refused_where_there_are_no_targets(name):
    with pytest.raises(ConfigError, match=rf"label_smoothing=0.1 does not apply to model.loss='{name}'.*ns, minimax"):
        check_loss(name, 0.1)
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\), got 1.5"):
        check_loss("ns", 1.5)


def test_unknown_loss_names_all_six():
    with pytest.raises(ConfigError, match="'wgan'.*ns, minimax, lsgan, hinge, wgan-gp, rpgan"):
        check_loss("wgan")
    assert set(LOSSES) == {"ns", "minimax", "lsgan", "hinge", "wgan-gp", "rpgan"}


def test_rpgan_matches_its_closed_form_pair_by_pair():
    """D: mean_i log(1 + exp(-(r_i - f_i))); G: mean_i log(1 + exp(-(f_i - r_i))): real i paired with fake i."""
    loss = LOSSES["rpgan"]()
    real, fake = torch.tensor([[2.0, -1.0, 0.5, 0.0]]), torch.tensor([[-3.0, 0.0, 1.5, 0.0]])
    pairs = list(zip(real[0].tolist(), fake[0].tolist(), strict=True))
    d = sum(math.log1p(math.exp(-(r - f))) for r, f in pairs) / 4
    g = sum(math.log1p(math.exp(-(f - r))) for r, f in pairs) / 4
    assert loss.d_loss(real, fake, ONE).item() == pytest.approx(d, rel=1e-6)
    assert loss.g_loss(fake, real).item() == pytest.approx(g, rel=1e-6)
    # D scoring both alike: ln 2 each; the pairing matters (shuffling the fakes changes the loss)
    assert loss.d_loss(real, real, ONE).item() == pytest.approx(math.log(2))
    assert loss.d_loss(real, fake.flip(1), ONE).item() != pytest.approx(d, rel=1e-3)
    with pytest.raises(ValueError, match="real_logits"):
        loss.g_loss(fake)


def test_rpgan_gradients_match_autograd_of_the_written_out_loss():
    """d/df of G's loss is -sigmoid(r - f) / B per pair, and the real scores take no part in G's gradient."""
    real, fake = torch.randn(2, 5), torch.randn(2, 5, requires_grad=True)
    LOSSES["rpgan"]().g_loss(fake, real).sum().backward()
    assert torch.allclose(fake.grad, -torch.sigmoid(real - fake.detach()) / 5, atol=1e-7)
    real = real.requires_grad_(True)
    fake.grad = None
    LOSSES["rpgan"]().d_loss(real, fake, ONE).sum().backward()
    assert torch.allclose(real.grad, -torch.sigmoid(fake.detach() - real.detach()) / 5, atol=1e-7)
    assert torch.allclose(fake.grad, -real.grad)


class LinearCritic(nn.Module):
    """D_k(x) = w_k.x + b_k with |w_k| = norms[k]: its input gradient is w_k everywhere."""

    def __init__(self, norms, dim: int = 6) -> None:
        super().__init__()
        self.fc = StackedLinear(dim, 1, gens(*range(len(norms))))
        with torch.no_grad():
            w = self.fc.weight
            w.mul_(torch.tensor(norms).view(-1, 1, 1) / w.norm(dim=(1, 2), keepdim=True))

    def forward(self, x):
        return self.fc(x).squeeze(2)


def test_penalties_of_a_linear_critic_are_known_in_closed_form():
    """GP = (|w| - 1)^2 at any interpolate, R1 = |w|^2, one value per member."""
    critic = LinearCritic([3.0, 0.5])
    real, fake = torch.randn(2, 8, 6), torch.randn(2, 8, 6)
    gp = wgan_gp_penalty(critic, real, fake, torch.rand(2, 8, 1))
    assert gp.tolist() == pytest.approx([4.0, 0.25], rel=1e-5)
    scores, r1 = squared_gradient_penalty(critic, real)
    assert r1.tolist() == pytest.approx([9.0, 0.25], rel=1e-5)
    assert scores.shape == (2, 8) and torch.allclose(scores, critic(real))


def test_r1_and_r2_of_a_linear_critic_in_closed_form_per_member():
    """DiscriminatorPenalties: R1 gamma1/2 |w|^2 on reals plus R2 gamma2/2 |w|^2 on fakes, each member its own
    gammas (0: off), and the scores it returns are the critic's."""
    critic = LinearCritic([3.0, 0.5, 2.0])
    members = [
        {"r1_weight": 10.0, "r2_weight": 0.0, "gp_weight": 10.0},
        {"r1_weight": 1.0, "r2_weight": 4.0, "gp_weight": 10.0},
        {"r1_weight": 0.0, "r2_weight": 2.0, "gp_weight": 10.0},
    ]
    penalties = DiscriminatorPenalties(members, MemberLosses(["ns", "rpgan", "hinge"], [0.0] * 3), MemberConstants())
    real, fake = torch.randn(3, 8, 6), torch.randn(3, 8, 6)
    real_scores, fake_scores, penalty = penalties(critic, real, fake, streams=None)
    expected = [10 / 2 * 9.0, 1 / 2 * 0.25 + 4 / 2 * 0.25, 2 / 2 * 4.0]
    assert penalty.tolist() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(real_scores, critic(real)) and torch.allclose(fake_scores, critic(fake))
    assert [penalties.penalised(k) for k in range(3)] == [True, True, True]


def test_r2_reaches_d_only_and_matches_a_per_sample_loop():
    """R2 on fakes: the mean over samples of |dD/dx_i|^2 (a per-sample loop), its gradient flows into D's weights,
    and none into G's samples (they are detached: the penalty regularises D alone)."""
    critic = nn.Sequential(StackedLinear(6, 16, gens(0)), nn.Tanh(), StackedLinear(16, 1, gens(2)))
    fake = torch.randn(1, 5, 6, requires_grad=True)  # as if G made it
    penalties = DiscriminatorPenalties(
        [{"r1_weight": 0.0, "r2_weight": 2.0, "gp_weight": 10.0}], MemberLosses(["ns"], [0.0]), MemberConstants()
    )
    _, _, penalty = penalties(lambda x: critic(x).squeeze(2), torch.randn(1, 5, 6), fake, streams=None)
    expected = []
    for i in range(5):
        x = fake[0, i].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x.view(1, 1, 6)).sum(), x)
        expected.append(g.pow(2).sum())
    assert penalty.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    penalty.sum().backward()
    assert fake.grad is None
    assert critic[0].weight.grad is not None and critic[0].weight.grad.abs().sum() > 0


def test_gradient_penalty_uses_each_samples_own_gradient_at_its_interpolate():
    """Against a per-sample loop: x_hat_i = eps_i real_i + (1 - eps_i) fake_i, penalty mean (|dD/dx_i| - 1)^2."""
    critic = nn.Sequential(StackedLinear(6, 16, gens(0, 1)), nn.Tanh(), StackedLinear(16, 1, gens(2, 3)))
    real, fake, eps = torch.randn(2, 5, 6), torch.randn(2, 5, 6), torch.rand(2, 5, 1)
    penalty = wgan_gp_penalty(lambda x: critic(x).squeeze(2), real, fake, eps)
    for k in range(2):
        expected = []
        for i in range(5):
            x = (eps[k, i] * real[k, i] + (1 - eps[k, i]) * fake[k, i]).requires_grad_(True)
            (g,) = torch.autograd.grad(critic(x.expand(2, 1, 6))[k].sum(), x)  # member k's score of x alone
            expected.append((g.norm() - 1) ** 2)
        assert penalty[k].item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_penalty_gradient_reaches_the_critic_weights():
    """create_graph=True: d/dw of (|w| - 1)^2 is 2 (|w| - 1) w / |w|, so backprop through the input gradient works."""
    critic = LinearCritic([3.0, 0.5])
    wgan_gp_penalty(critic, torch.randn(2, 4, 6), torch.randn(2, 4, 6), torch.rand(2, 4, 1)).sum().backward()
    w = critic.fc.weight.detach()
    assert torch.allclose(critic.fc.weight.grad[0], 2 * (3.0 - 1) * w[0] / 3.0, atol=1e-5)
    assert torch.allclose(critic.fc.weight.grad[1], 2 * (0.5 - 1) * w[1] / 0.5, atol=1e-5)
    _, grads = input_gradients(critic, torch.randn(2, 4, 6))
    assert grads.shape == (2, 4, 6) and grads.requires_grad


def test_bre_of_known_patterns_and_against_a_direct_sum():
    from gan.model.bre import bre

    same = torch.full((1, 4, 3), 5.0)  # one pattern for the whole batch: each unit always on (ME 1), pairs equal (AC 1)
    assert bre(same).item() == pytest.approx(2.0, abs=1e-3)
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])[:, 1:] * 100
    # the three columns are balanced over the 4 rows (ME 0); rows: |s_i . s_j| = 1 of 3 units for every pair
    assert bre(hadamard.unsqueeze(0)).item() == pytest.approx(1 / 3, abs=1e-3)
    pre = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0))
    s = pre / (pre.abs() + 1e-3)
    for k in range(2):
        me = sum(float(s[k, :, u].mean()) ** 2 for u in range(5)) / 5
        ac = sum(abs(float(s[k, i] @ s[k, j])) / 5 for i in range(6) for j in range(6) if i != j) / 30
        assert bre(pre)[k].item() == pytest.approx(me + ac, rel=1e-5)


def test_bre_penalty_reaches_only_the_members_that_weight_it():
    acts = ["elu", "elu"]
    D = Discriminator([16, 8], acts, ["identity"] * 2, [{}] * 2, [torch.Generator().manual_seed(k) for k in (0, 0)])
    members = [{"r1_weight": 0.0, "r2_weight": 0.0, "gp_weight": 10.0, "bre_weight": w} for w in (1.0, 0.0)]
    penalties = DiscriminatorPenalties(members, MemberLosses(["ns", "ns"], [0.0, 0.0]), MemberConstants())
    real, fake = torch.randn(2, 8, 1024), torch.randn(2, 8, 1024)
    real_logits, fake_logits, penalty = penalties(D, real, fake, None)
    assert penalty[1].item() == 0.0 and penalty[0].item() > 0 and penalties.penalised(0) and not penalties.penalised(1)
    assert torch.equal(real_logits, D(real)) and torch.equal(fake_logits, D(fake))
    penalty.sum().backward()
    grad = D.net.fc1.weight.grad
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() == 0  # member 1's weights get nothing from it
