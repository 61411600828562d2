"""The stability toolkit piece by piece: losses and penalties against their formulas, network options, DiffAugment,
limited-data subsets, instance noise and the generator's weight average."""

import math

import pytest
import torch
from torch import nn

from gan.augment import AugmentError, DiffAugment, cutout, parse_policy, translate
from gan.data import MNISTDataError, MNISTDataModule, ShuffledBatches, balanced_subset
from gan.losses import LOSSES, LossError, build_loss, input_gradients, r1_penalty, wgan_gp_penalty
from gan.module import GANModule, instance_noise_std
from gan.networks import Discriminator, Generator, MinibatchStd, NetworkConfigError

REAL = torch.tensor([2.0, -1.0, 0.5, 0.0])
FAKE = torch.tensor([-3.0, 0.0, 1.5, -0.5])


# --------------------------------------------------------------------------- losses
def test_hinge_loss_matches_its_formula():
    loss = build_loss("hinge")
    d = sum(max(0.0, 1 - r) for r in REAL.tolist()) / 4 + sum(max(0.0, 1 + f) for f in FAKE.tolist()) / 4
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d)  # (0 + 2 + .5 + 1)/4 + (0 + 1 + 2.5 + .5)/4
    assert loss.g_loss(FAKE).item() == pytest.approx(-sum(FAKE.tolist()) / 4)
    assert torch.equal(loss.d_output(REAL), REAL)


def test_wasserstein_loss_matches_its_formula():
    loss = build_loss("wgan-gp")
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(sum(FAKE.tolist()) / 4 - sum(REAL.tolist()) / 4)
    assert loss.g_loss(FAKE).item() == pytest.approx(-sum(FAKE.tolist()) / 4)
    assert loss.gradient_penalty and not build_loss("hinge").gradient_penalty


@pytest.mark.parametrize("name", ["ns", "minimax"])
def test_one_sided_label_smoothing_targets_0_9_for_real_only(name):
    smoothed, plain = build_loss(name, 0.1), build_loss(name)
    real_term = -(0.9 * torch.log(torch.sigmoid(REAL)) + 0.1 * torch.log(1 - torch.sigmoid(REAL))).mean()
    fake_term = -torch.log(1 - torch.sigmoid(FAKE)).mean()
    assert smoothed.d_loss(REAL, FAKE).item() == pytest.approx((real_term + fake_term).item(), rel=1e-5)
    assert torch.equal(smoothed.g_loss(FAKE), plain.g_loss(FAKE))  # one-sided: G's target stays 1


def test_lsgan_label_smoothing_moves_the_real_target():
    loss = build_loss("lsgan", 0.2)
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (((REAL - 0.8) ** 2).mean() + (FAKE**2).mean()).item())


@pytest.mark.parametrize("name", ["hinge", "wgan-gp"])
def test_label_smoothing_is_refused_where_there_are_no_targets(name):
    with pytest.raises(LossError, match=rf"label_smoothing=0.1 does not apply to model.loss='{name}'.*ns, minimax"):
        build_loss(name, 0.1)
    with pytest.raises(LossError, match=r"must be in \[0, 1\), got 1.5"):
        build_loss("ns", 1.5)


def test_unknown_loss_names_all_five():
    with pytest.raises(LossError, match="'wgan'.*ns, minimax, lsgan, hinge, wgan-gp"):
        build_loss("wgan")
    assert set(LOSSES) == {"ns", "minimax", "lsgan", "hinge", "wgan-gp"}


# --------------------------------------------------------------------------- gradient penalties
def linear_critic(norm: float, dim: int = 6) -> nn.Linear:
    critic = nn.Linear(dim, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.randn(1, dim))
        critic.weight.mul_(norm / critic.weight.norm())
    return critic


def test_penalties_of_a_linear_critic_are_known_in_closed_form():
    """D(x) = w.x + b has gradient w everywhere: GP = (|w| - 1)^2 at any interpolate, R1 = |w|^2."""
    critic = linear_critic(3.0)
    real, fake = torch.randn(8, 6), torch.randn(8, 6)
    assert wgan_gp_penalty(critic, real, fake).item() == pytest.approx(4.0, rel=1e-5)
    scores, r1 = r1_penalty(critic, real)
    assert r1.item() == pytest.approx(9.0, rel=1e-5)
    assert torch.allclose(scores, critic(real))


def test_gradient_penalty_uses_each_samples_own_gradient_at_its_interpolate():
    """Against a per-sample loop: x_hat_i = eps_i real_i + (1 - eps_i) fake_i, penalty mean (|dD/dx_i| - 1)^2."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    real, fake = torch.randn(5, 6), torch.randn(5, 6)
    torch.manual_seed(1)
    penalty = wgan_gp_penalty(critic, real, fake)
    torch.manual_seed(1)
    eps = torch.rand(5, 1)
    expected = []
    for i in range(5):
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        expected.append((g.norm() - 1) ** 2)
    assert penalty.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_penalty_gradient_reaches_the_critic_weights():
    """create_graph=True: d/dw of (|w| - 1)^2 is 2 (|w| - 1) w / |w|, so backprop through the input gradient works."""
    critic = linear_critic(3.0)
    wgan_gp_penalty(critic, torch.randn(4, 6), torch.randn(4, 6)).backward()
    w = critic.weight.detach()
    assert torch.allclose(critic.weight.grad, 2 * (3.0 - 1) * w / 3.0, atol=1e-5)
    _, grads = input_gradients(critic, torch.randn(4, 6))
    assert grads.shape == (4, 6) and grads.requires_grad


# --------------------------------------------------------------------------- networks
def test_normalization_sits_between_linear_and_activation():
    G = Generator(8, [16, 32], "relu", "tanh", {}, norm="batch")
    assert [n for n, _ in G.net.named_children()] == ["fc1", "norm1", "act1", "fc2", "norm2", "act2", "out", "out_act"]
    assert isinstance(G.net.norm1, nn.BatchNorm1d) and G.net.norm2.num_features == 32
    D = Discriminator([16], "elu", "identity", {}, norm="layer")
    assert isinstance(D.net.norm1, nn.LayerNorm) and D.net.norm1.normalized_shape == (16,)
    with pytest.raises(NetworkConfigError, match="Unknown normalization 'group' for model.g_norm.*none, batch, layer"):
        Generator(8, [16], "relu", "tanh", {}, norm="group")


def test_spectral_norm_bounds_every_linear_layer_by_one():
    torch.manual_seed(0)
    D = Discriminator([64, 32], "leaky_relu", "identity", {}, spectral_norm=True)
    with torch.no_grad():
        for name in ("fc1", "fc2", "out"):
            getattr(D.net, name).parametrizations.weight.original.mul_(10.0)  # far above 1 before normalization
    for _ in range(30):  # power iteration converges over training-mode forward passes
        D(torch.randn(16, 1024))
    for name in ("fc1", "fc2", "out"):
        layer = getattr(D.net, name)
        assert torch.linalg.matrix_norm(layer.parametrizations.weight.original, ord=2).item() > 3, name
        assert torch.linalg.matrix_norm(layer.weight, ord=2).item() == pytest.approx(1.0, abs=0.02), name


def test_minibatch_std_appends_each_groups_spread():
    layer = MinibatchStd(group_size=2)
    h = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    out = layer(h)
    assert out.shape == (4, 3)
    assert out[:2, 2].tolist() == pytest.approx([1.5, 1.5], abs=1e-3)  # per-unit std (1, 2), averaged
    assert out[2:, 2].tolist() == pytest.approx([0.0, 0.0], abs=1e-3)  # identical samples: no spread
    assert MinibatchStd(4)(torch.randn(6, 5)).shape == (6, 6)  # 6 is not a multiple of 4: one group
    D = Discriminator([32, 16], "relu", "identity", {}, minibatch_std_group=4)
    assert "mbstd" in dict(D.net.named_children()) and D.net.out.in_features == 17
    assert D(torch.randn(8, 1024)).shape == (8,)
    with pytest.raises(NetworkConfigError, match="at least 2"):
        MinibatchStd(1)


# --------------------------------------------------------------------------- DiffAugment
def one_dot(n: int, value: float = 1.0, background: float = -1.0) -> torch.Tensor:
    images = torch.full((n, 1, 32, 32), background)
    images[:, 0, 16, 16] = value
    return images


def test_translation_shifts_by_at_most_four_pixels_filling_with_background():
    torch.manual_seed(0)
    out = translate(one_dot(200), 1 / 8, -1.0)
    positions = [(img[0] == 1.0).nonzero()[0].tolist() for img in out]
    assert all((img == 1.0).sum() == 1 for img in out)  # the dot moved, nothing was smeared
    offsets = {(r - 16, c - 16) for r, c in positions}
    assert max(max(abs(r), abs(c)) for r, c in offsets) == 4 and len(offsets) > 40
    edge = torch.zeros(1, 1, 32, 32)
    edge[..., :, 0] = 5.0  # a bright left column shifted right leaves background behind it
    shifted = [translate(edge, 1 / 8, -1.0) for _ in range(50)]
    assert any((s[..., :, 0] == -1.0).all() for s in shifted)


def test_cutout_blanks_a_16_pixel_square_to_background():
    torch.manual_seed(0)
    x = torch.zeros(300, 1, 32, 32)
    out = cutout(x, 1 / 2, -1.0)
    blanked = (out == -1.0).sum(dim=(1, 2, 3))
    assert blanked.max().item() == 256 and blanked.min().item() >= 64  # a full square, or clipped at a corner
    rows = (out[:, 0] == -1.0).any(dim=2).sum(dim=1)
    assert rows.max().item() == 16


def test_diffaugment_is_differentiable_and_parses_its_policy():
    aug = DiffAugment("translation,cutout", background=-1.0)
    x = torch.randn(4, 1024, requires_grad=True)
    out = aug(x)
    assert out.shape == (4, 1024)
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0  # G gets gradients through the transformation
    assert parse_policy("none") == () and parse_policy(None) == ()
    assert parse_policy(["cutout"]) == ("cutout",)
    assert torch.equal(DiffAugment("none", 0.0)(x), x)
    with pytest.raises(AugmentError, match="Unknown augmentation 'color' in data.augment='color'.*translation, cutout"):
        parse_policy("color")


# --------------------------------------------------------------------------- limited data
def test_balanced_subset_is_fixed_per_seed_and_class_balanced():
    labels = torch.arange(5000) % 10
    a, b, c = balanced_subset(labels, 1005, 0), balanced_subset(labels, 1005, 0), balanced_subset(labels, 1005, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(labels[a], minlength=10)
    assert len(a) == len(set(a.tolist())) == 1005
    assert sorted(counts.tolist()) == [100] * 5 + [101] * 5
    with pytest.raises(MNISTDataError, match="needs 501 images of class 0.*has 500"):
        balanced_subset(labels, 5010, 0)


def test_data_module_subset_keeps_the_full_epoch_length(tiny_mnist):
    full = MNISTDataModule(str(tiny_mnist), batch_size=16)
    small = MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=40)
    full.setup(), small.setup()
    assert len(small.train_images) == 40 and torch.bincount(small.train_labels).tolist() == [4] * 10
    assert len(small.train_dataloader()) == len(full.train_dataloader()) == 256 // 16
    batches = list(small.train_dataloader())
    assert all(b.shape == (16, 1024) for b in batches)
    seen = torch.cat(batches[:2])[:32]  # the first 2.5 passes over the subset: only subset images
    assert all(any(torch.equal(img, s) for s in small.train_images) for img in seen)
    with pytest.raises(ValueError, match="data.train_size=8 is smaller than one iteration's real images"):
        MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=8)
    with pytest.raises(MNISTDataError, match="data.train_size=999 is larger than the training split"):
        MNISTDataModule(str(tiny_mnist), batch_size=16, train_size=999).setup()


def test_shuffled_batches_beyond_one_pass_visit_every_item_each_pass():
    data = torch.arange(10).float().view(10, 1)
    loader = ShuffledBatches(data, 5, torch.Generator().manual_seed(0), num_batches=6)
    batches = [b.view(-1).tolist() for b in loader]
    assert len(batches) == 6
    for p in range(3):
        assert sorted(batches[2 * p] + batches[2 * p + 1]) == list(range(10))


# --------------------------------------------------------------------------- instance noise and EMA
def test_instance_noise_decays_linearly_to_zero():
    assert instance_noise_std(0.1, 0, 100) == pytest.approx(0.1)
    assert instance_noise_std(0.1, 50, 100) == pytest.approx(0.05)
    assert instance_noise_std(0.1, 100, 100) == 0.0 == instance_noise_std(0.1, 500, 100)
    assert instance_noise_std(0.0, 0, 100) == 0.0
    assert instance_noise_std(0.1, 10**6, 0) == pytest.approx(0.1)  # no planned length: constant


@pytest.mark.parametrize("out_act,half_range", [("tanh", 1.0), ("sigmoid", 0.5)])
def test_instance_noise_is_scaled_to_the_data_range(out_act, half_range):
    module = GANModule(g_hidden=[8], d_hidden=[8], g_out_act=out_act, instance_noise=0.2)
    module._instance_noise_iters = 100
    x = torch.zeros(20000, 1024)
    for iteration, share in ((0, 1.0), (75, 0.25)):
        module.update_instance_noise(iteration)
        assert module.d_input(x).std().item() == pytest.approx(0.2 * half_range * share, rel=0.01)


def test_weight_average_follows_the_ema_formula_and_is_what_samples_use():
    torch.manual_seed(0)
    module = GANModule(g_hidden=[8], d_hidden=[8], g_ema=True, g_ema_decay=0.9)
    w0 = module.generator.net.fc1.weight.detach().clone()
    module.generator_ema.update_parameters(module.generator)  # the first update copies
    with torch.no_grad():
        module.generator.net.fc1.weight.add_(1.0)
    module.generator_ema.update_parameters(module.generator)
    averaged = module.generator_ema.module.net.fc1.weight
    assert torch.allclose(averaged, 0.9 * w0 + 0.1 * (w0 + 1.0), atol=1e-6)
    assert not any(p.requires_grad for p in module.generator_ema.parameters())
    z = torch.randn(3, 100)
    assert torch.allclose(module.sample(z), module.generator_ema.module.eval()(z))
    assert torch.allclose(module.sample(z, ema=False), module.generator.eval()(z))
    assert not torch.allclose(module.sample(z), module.sample(z, ema=False))
    with pytest.raises(ValueError, match="no generator weight average"):
        GANModule(g_hidden=[8], d_hidden=[8]).sample(z, ema=True)


def test_module_options_are_checked_before_anything_is_built():
    with pytest.raises(NetworkConfigError, match="d_norm='batch' with model.loss='wgan-gp'.*layer or none"):
        GANModule(loss="wgan-gp", d_norm="batch")
    with pytest.raises(NetworkConfigError, match=r"model.r1_weight must be in \[0, inf\], got -1"):
        GANModule(r1_weight=-1)
    with pytest.raises(NetworkConfigError, match=r"g_ema_decay must be in \[0, 1\], got 1.5"):
        GANModule(g_ema_decay=1.5)
    with pytest.raises(NetworkConfigError, match="instance_noise_iters must be a positive number"):
        GANModule(instance_noise=0.1, instance_noise_iters=0)
    assert math.isfinite(GANModule(loss="wgan-gp", d_norm="layer").hparams.gp_weight)
