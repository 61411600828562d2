"""The stability toolkit piece by piece: losses and penalties against their formulas, network options, DiffAugment,
limited-data subsets, instance noise and the generator's weight average."""

import math

import pytest
import torch
from torch import nn

from gan.data import MNISTDataModule, PackedBatches, balanced_subset
from gan.errors import ConfigError, DataError
from gan.model.augment import cutout, diff_augment, draw_cutout, draw_translation, parse_policy, translate
from gan.model.losses import LOSSES, MemberLosses, check_loss, input_gradients, r1_penalty, wgan_gp_penalty
from gan.model.module import GANModule, MemberStreams, instance_noise_std
from gan.model.networks import Discriminator, Generator
from gan.model.population import MinibatchStd, StackedBatchNorm, StackedLayerNorm, StackedLinear

REAL = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
FAKE = torch.tensor([[-3.0, 0.0, 1.5, -0.5]])
ONE = torch.ones(1, 1)
CPU = torch.device("cpu")


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


# --------------------------------------------------------------------------- losses
def test_hinge_loss_matches_its_formula():
    loss = LOSSES["hinge"]()
    d = sum(max(0.0, 1 - r) for r in REAL[0].tolist()) / 4 + sum(max(0.0, 1 + f) for f in FAKE[0].tolist()) / 4
    assert loss.d_loss(REAL, FAKE, ONE).item() == pytest.approx(d)  # (0 + 2 + .5 + 1)/4 + (0 + 1 + 2.5 + .5)/4
    assert loss.g_loss(FAKE).item() == pytest.approx(-sum(FAKE[0].tolist()) / 4)
    assert torch.equal(loss.d_output(REAL), REAL)


def test_wasserstein_loss_matches_its_formula():
    loss = LOSSES["wgan-gp"]()
    assert loss.d_loss(REAL, FAKE, ONE).item() == pytest.approx(sum(FAKE[0].tolist()) / 4 - sum(REAL[0].tolist()) / 4)
    assert loss.g_loss(FAKE).item() == pytest.approx(-sum(FAKE[0].tolist()) / 4)
    assert loss.gradient_penalty and not LOSSES["hinge"].gradient_penalty


@pytest.mark.parametrize("name", ["ns", "minimax"])
def test_one_sided_label_smoothing_targets_0_9_for_real_only(name):
    smoothed, plain = MemberLosses([name], [0.1]), MemberLosses([name], [0.0])
    real_term = -(0.9 * torch.log(torch.sigmoid(REAL)) + 0.1 * torch.log(1 - torch.sigmoid(REAL))).mean()
    fake_term = -torch.log(1 - torch.sigmoid(FAKE)).mean()
    assert smoothed.d_loss(REAL, FAKE).item() == pytest.approx((real_term + fake_term).item(), rel=1e-5)
    assert torch.equal(smoothed.g_loss(FAKE), plain.g_loss(FAKE))  # one-sided: G's target stays 1


def test_lsgan_label_smoothing_moves_the_real_target():
    loss = MemberLosses(["lsgan"], [0.2])
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (((REAL - 0.8) ** 2).mean() + (FAKE**2).mean()).item())


@pytest.mark.parametrize("name", ["hinge", "wgan-gp"])
def test_label_smoothing_is_refused_where_there_are_no_targets(name):
    with pytest.raises(ConfigError, match=rf"label_smoothing=0.1 does not apply to model.loss='{name}'.*ns, minimax"):
        check_loss(name, 0.1)
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\), got 1.5"):
        check_loss("ns", 1.5)


def test_unknown_loss_names_all_five():
    with pytest.raises(ConfigError, match="'wgan'.*ns, minimax, lsgan, hinge, wgan-gp"):
        check_loss("wgan")
    assert set(LOSSES) == {"ns", "minimax", "lsgan", "hinge", "wgan-gp"}


# --------------------------------------------------------------------------- gradient penalties
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
    scores, r1 = r1_penalty(critic, real)
    assert r1.tolist() == pytest.approx([9.0, 0.25], rel=1e-5)
    assert scores.shape == (2, 8) and torch.allclose(scores, critic(real))


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


# --------------------------------------------------------------------------- networks
def test_normalization_sits_between_linear_and_activation():
    G = Generator(8, [16, 32], ["relu"], ["tanh"], [{}], gens(0), norm="batch")
    assert [n for n, _ in G.net.named_children()] == ["fc1", "norm1", "act1", "fc2", "norm2", "act2", "out", "out_act"]
    assert isinstance(G.net.norm1, StackedBatchNorm) and G.net.norm2.weight.shape == (1, 32)
    D = Discriminator([16], ["elu"], ["identity"], [{}], gens(0), norm="layer")
    assert isinstance(D.net.norm1, StackedLayerNorm) and D.net.norm1.weight.shape == (1, 16)
    with pytest.raises(ConfigError, match="Unknown normalization 'group' for model.g_norm.*none, batch, layer"):
        Generator(8, [16], ["relu"], ["tanh"], [{}], gens(0), norm="group")


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


# --------------------------------------------------------------------------- DiffAugment
def one_dot(n: int, value: float = 1.0, background: float = -1.0) -> torch.Tensor:
    images = torch.full((n, 1, 32, 32), background)
    images[:, 0, 16, 16] = value
    return images


def test_translation_shifts_by_at_most_four_pixels_filling_with_background():
    shift = draw_translation(200, 32, torch.Generator().manual_seed(0), CPU)
    out = translate(one_dot(200), shift, torch.full((200, 1, 1, 1), -1.0))
    assert all((img == 1.0).sum() == 1 for img in out)  # the dot moved, nothing was smeared
    positions = [tuple((img[0] == 1.0).nonzero()[0].tolist()) for img in out]
    assert positions == [
        (16 - r, 16 - c) for r, c in zip(shift[0].flatten().tolist(), shift[1].flatten().tolist(), strict=True)
    ]
    offsets = set(positions)
    assert max(max(abs(r - 16), abs(c - 16)) for r, c in offsets) == 4 and len(offsets) > 40
    edge = torch.zeros(2, 1, 32, 32)
    edge[..., :, 0] = 5.0  # a bright left column shifted right leaves each image's own background behind it
    shift, fill = torch.tensor([[0, 0], [-1, -1]]).view(2, 2, 1, 1), torch.tensor([-1.0, 0.5]).view(2, 1, 1, 1)
    shifted = translate(edge, shift, fill)
    assert (shifted[0, :, :, 0] == -1.0).all() and (shifted[1, :, :, 0] == 0.5).all()
    assert (shifted[:, :, :, 1] == 5.0).all()


def test_cutout_blanks_a_16_pixel_square_to_background():
    centre = draw_cutout(300, 32, torch.Generator().manual_seed(0), CPU)
    out = cutout(torch.zeros(300, 1, 32, 32), centre, torch.full((300, 1, 1, 1), -1.0))
    blanked = (out == -1.0).sum(dim=(1, 2, 3))
    assert blanked.max().item() == 256 and blanked.min().item() >= 64  # a full square, or clipped at a corner
    rows = (out[:, 0] == -1.0).any(dim=2).sum(dim=1)
    assert rows.max().item() == 16
    middle = cutout(torch.zeros(1, 1, 32, 32), torch.full((2, 1, 1, 1), 16), torch.full((1, 1, 1, 1), -1.0))
    assert (middle[0, 0, 8:24, 8:24] == -1).all() and (middle == -1).sum() == 256


def test_diff_augment_is_differentiable_per_member_and_parses_its_policy():
    policy = ("translation", "cutout")
    x = torch.randn(2, 4, 1024, requires_grad=True)
    out = diff_augment(x, policy, torch.tensor([-1.0, 0.0]), gens(0, 1))
    assert out.shape == (2, 4, 1024)
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0  # G gets gradients through the transformation
    alone = diff_augment(x[1:], policy, torch.tensor([0.0]), gens(1))
    assert torch.equal(out[1], alone[0])  # member 1 is augmented as it is alone
    flat = torch.full((2, 4, 1024), 5.0)
    blank = diff_augment(flat, ("cutout",), torch.tensor([-1.0, 0.0]), gens(0, 1))
    assert set(blank[0].unique().tolist()) == {5.0, -1.0} and set(blank[1].unique().tolist()) == {5.0, 0.0}
    assert torch.equal(diff_augment(x, parse_policy("none"), torch.zeros(2), gens(0, 1)), x)
    assert parse_policy("none") == () and parse_policy(None) == ()
    assert parse_policy(["cutout"]) == ("cutout",) and parse_policy("translation, cutout") == policy
    with pytest.raises(ConfigError, match="Unknown augmentation 'color' in data.augment='color'.*translation, cutout"):
        parse_policy("color")


# --------------------------------------------------------------------------- limited data
def test_balanced_subset_is_fixed_per_seed_and_class_balanced():
    labels = torch.arange(5000) % 10
    a, b, c = balanced_subset(labels, 1005, 0), balanced_subset(labels, 1005, 0), balanced_subset(labels, 1005, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(labels[a], minlength=10)
    assert len(a) == len(set(a.tolist())) == 1005
    assert sorted(counts.tolist()) == [100] * 5 + [101] * 5
    with pytest.raises(DataError, match="needs 501 images of class 0.*has 500"):
        balanced_subset(labels, 5010, 0)


def test_data_module_subset_keeps_the_full_epoch_length(tiny_mnist):
    full = MNISTDataModule(str(tiny_mnist), batch_size=16)
    small = MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=40)
    full.setup(), small.setup()
    assert len(small.train_images) == 40 and torch.bincount(small.train_labels).tolist() == [4] * 10
    assert len(small.train_dataloader()) == len(full.train_dataloader()) == 256 // 16
    batches = [small.transfer_batch_to_device(b, CPU, 0) for b in small.train_dataloader()]
    assert len(batches) == 16 and all(b.shape == (1, 16, 1024) for b in batches)
    seen = torch.cat(batches[:2], dim=1)[0]  # 32 images: only subset images
    assert all(any(torch.equal(img, s) for s in small.train_images) for img in seen)
    with pytest.raises(ValueError, match="data.train_size=8 is smaller than one iteration's real images"):
        MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=8)
    with pytest.raises(DataError, match="data.train_size=999 is larger than the training split"):
        MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=999).setup()


def test_packed_batches_beyond_one_pass_visit_every_item_each_pass():
    loader = PackedBatches(10, 5, gens(0, 1), num_batches=6)
    steps = list(loader)
    assert len(steps) == 6 and [s for _, s in steps] == list(range(6))
    plan = steps[0][0]
    assert plan.shape == (6, 2, 5)
    for k in range(2):
        for p in range(3):
            assert sorted(plan[2 * p, k].tolist() + plan[2 * p + 1, k].tolist()) == list(range(10))
    assert not torch.equal(plan[:, 0], plan[:, 1])  # each member its own order


# --------------------------------------------------------------------------- instance noise and EMA
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
    module._instance_noise_iters = [100] * 3
    module.streams = MemberStreams([0, 1, 2], CPU)
    x = torch.zeros(3, 2000, 1024)
    for iteration, share in ((0, 1.0), (75, 0.25)):
        assert module.update_instance_noise(iteration) == pytest.approx([0.2 * share, 0.2 * share, 0.0])
        noisy = module.d_input(x)
        assert noisy[0].std().item() == pytest.approx(0.2 * share, rel=0.01)
        assert noisy[1].std().item() == pytest.approx(0.1 * share, rel=0.01)
        assert torch.equal(noisy[2], x[2])


def test_weight_average_follows_the_ema_formula_and_is_what_samples_use():
    members = [dict(g_hidden=[8], d_hidden=[8], g_ema=True, g_ema_decay=d, seed=k) for k, d in enumerate([0.9, 0.5])]
    module = GANModule(members=members)
    w0 = module.generator.net.fc1.weight.detach().clone()
    module.update_generator_ema()  # the first update copies
    assert torch.equal(module.generator_ema.net.fc1.weight, w0)
    with torch.no_grad():
        module.generator.net.fc1.weight.add_(1.0)
    module.update_generator_ema()
    averaged = module.generator_ema.net.fc1.weight
    assert torch.allclose(averaged[0], 0.9 * w0[0] + 0.1 * (w0[0] + 1.0), atol=1e-6)
    assert torch.allclose(averaged[1], 0.5 * w0[1] + 0.5 * (w0[1] + 1.0), atol=1e-6)
    assert module.generator_ema_updates.tolist() == [2, 2]
    assert not any(p.requires_grad for p in module.generator_ema.parameters())
    z = torch.randn(3, 100)
    zz = z.expand(2, 3, 100)
    assert module.sample(z).shape == (2, 3, 1024)
    assert torch.allclose(module.sample(z), module.generator_ema.eval()(zz))
    assert torch.allclose(module.sample(z, ema=False), module.generator.eval()(zz))
    assert not torch.allclose(module.sample(z), module.sample(z, ema=False))
    with pytest.raises(ValueError, match="no generator weight average"):
        GANModule(g_hidden=[8], d_hidden=[8]).sample(z, ema=True)


def test_module_options_are_checked_before_anything_is_built():
    with pytest.raises(ConfigError, match="d_norm='batch' with model.loss='wgan-gp'.*layer or none"):
        GANModule(loss="wgan-gp", d_norm="batch")
    with pytest.raises(ConfigError, match=r"model.r1_weight must be in \[0, inf\], got -1"):
        GANModule(r1_weight=-1)
    with pytest.raises(ConfigError, match=r"g_ema_decay must be in \[0, 1\], got 1.5"):
        GANModule(g_ema_decay=1.5)
    with pytest.raises(ConfigError, match="instance_noise_iters must be a positive number"):
        GANModule(instance_noise=0.1, instance_noise_iters=0)
    with pytest.raises(ConfigError, match="members 0 and 1 of one pack differ.*g_hidden"):
        GANModule(members=[dict(g_hidden=[8]), dict(g_hidden=[16])])
    assert math.isfinite(GANModule(loss="wgan-gp", d_norm="layer").hparams.members[0]["gp_weight"])
