"""gan.eval.probes: activation statistics, gradient norms and Jacobians on networks with known weights."""

import pytest
import torch

from gan.eval.probes import (
    grad_norms,
    hidden_layers,
    jacobian_conditioning,
    jacobian_singular_values,
    layer_stats,
    probe,
)
from gan.model.networks import Discriminator, Generator

PARAMS = {"leaky_relu": {"negative_slope": 0.2}}


def _forced(acts: list[str], biases: list[float]) -> Discriminator:
    """A D whose member k has pre-activations ``biases[k]`` everywhere in layer 1 (zero weights)."""
    gens = [torch.Generator().manual_seed(k) for k in range(len(acts))]
    D = Discriminator([16, 8], acts, ["identity"] * len(acts), [PARAMS] * len(acts), gens)
    with torch.no_grad():
        D.net.fc1.weight.zero_()
        D.net.fc1.bias.copy_(torch.tensor(biases).view(-1, 1).expand(-1, 16))
    return D


FORCED = [  # (activation, pre-activation, dead share, saturated share)
    ("relu", -1.0, 1.0, 1.0),  # all pre-activations negative: every unit outputs 0
    ("leaky_relu", -1.0, 0.0, 0.0),  # the same layer keeps a slope: nothing dead
    ("tanh", 10.0, 0.0, 1.0),  # pinned at +1
    ("sigmoid", -20.0, 1.0, 1.0),  # pinned at 0
    ("identity", -1.0, 0.0, 0.0),
]


@pytest.mark.parametrize("act,bias,dead,saturated", FORCED)
def test_layer_forced_to_known_pre_activations(act, bias, dead, saturated):
    D = _forced([act], [bias])
    layers = probe(D.net, torch.randn(1, 32, 1024), [act], [PARAMS.get(act)])
    stats = layers[1]["stats"]
    assert stats["dead"].tolist() == [dead] and stats["saturated"].tolist() == [saturated]
    assert stats["pre_mean"].item() == pytest.approx(bias) and stats["pre_std"].item() == pytest.approx(0.0)
    assert layers[1]["pre"].shape == (1, 32, 16) and set(layers) == {1, 2}
    assert all(len(m._forward_hooks) == 0 for m in D.modules())  # hooks removed after the probe


def test_each_member_is_probed_with_its_own_activation():
    acts, biases, dead, saturated = (list(column) for column in zip(*FORCED, strict=True))
    D = _forced(acts, biases)
    stats = probe(D.net, torch.randn(5, 32, 1024), acts, [PARAMS.get(a) for a in acts])[1]["stats"]
    assert stats["dead"].tolist() == dead and stats["saturated"].tolist() == saturated
    assert stats["pre_mean"].tolist() == pytest.approx(biases)


def test_layer_stats_moments_and_partial_saturation():
    pre = torch.tensor([[[-3.0, 0.0], [3.0, 0.5]], [[-3.0, 0.0], [-1.0, 0.5]]])
    act = torch.stack([torch.tanh(pre[0]), torch.relu(pre[1])])  # member 0 tanh, member 1 relu
    s = layer_stats(pre, act, [(-1.0, 1.0), (0.0, float("inf"))], saturation_margin=0.01)
    # tanh(+-3) = +-0.995, within 0.02 of the bounds; 0 and tanh(.5) are not. relu: three outputs at its floor
    assert s["saturated"].tolist() == [0.5, 0.75]
    assert s["dead"].tolist() == [0.0, 0.5]  # relu's first unit is 0 for the whole batch
    assert s["act_mean"].tolist() == pytest.approx([act[0].mean().item(), act[1].mean().item()])
    assert s["pre_std"].tolist() == pytest.approx([pre[0].std().item(), pre[1].std().item()])


def test_grad_norms_are_per_layer_l2():
    G = Generator(
        4, [8, 8], ["relu", "tanh"], ["tanh"] * 2, [{}] * 2, [torch.Generator().manual_seed(k) for k in (0, 1)]
    )
    assert grad_norms(G.net)[1].tolist() == [0.0, 0.0]  # no gradients yet
    (G(torch.randn(2, 5, 4)).pow(2).sum((1, 2)) * torch.tensor([1.0, 3.0])).sum().backward()
    norms = grad_norms(G.net)
    fc2 = G.net.fc2
    expected = [torch.cat([fc2.weight.grad[k].flatten(), fc2.bias.grad[k]]).norm().item() for k in (0, 1)]
    assert norms[2].shape == (2,) and norms[2].tolist() == pytest.approx(expected, rel=1e-5)
    assert [k for k, _, _ in hidden_layers(G.net)] == [1, 2]


def _generator(acts: list[str], out_act: str = "identity", norm: str = "none") -> Generator:
    return Generator(
        6,
        [8, 7],
        acts,
        [out_act] * len(acts),
        [PARAMS] * len(acts),
        [torch.Generator().manual_seed(k) for k in range(len(acts))],
        norm=norm,
    )


def test_jacobian_of_a_linear_generator_is_its_weight_product():
    G = _generator(["identity", "identity"])
    z = torch.randn(2, 3, 6)
    values = jacobian_singular_values(G, z)
    weights = [layer.weight for layer in (G.net.fc1, G.net.fc2, G.net.out)]  # y = x @ W + b per member
    for k in range(2):
        product = weights[0][k] @ weights[1][k] @ weights[2][k]  # [latent, out] = J^T, the same at every z
        expected = torch.linalg.svdvals(product.detach())
        for i in range(3):
            assert values[k, i].tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    found = jacobian_conditioning(G, z)
    closed = [
        (s[0] / s[-1]).log().item()
        for s in (torch.linalg.svdvals((weights[0][k] @ weights[1][k] @ weights[2][k]).detach()) for k in range(2))
    ]
    assert found["log_cond_mean"].tolist() == pytest.approx(closed, rel=1e-4)
    assert found["log_cond_std"].tolist() == pytest.approx([0.0, 0.0], abs=1e-4)


def test_jacobian_of_a_nonlinear_generator_matches_autograd_and_leaves_it_as_it_was():
    G = _generator(["tanh", "leaky_relu"], out_act="tanh", norm="batch")
    G(torch.randn(2, 16, 6))  # running statistics away from their initial values
    saved = {name: b.clone() for name, b in G.named_buffers()}
    z = torch.randn(2, 4, 6)
    values = jacobian_singular_values(G, z)
    G.eval()
    for k in range(2):
        for i in range(4):

            def member_output(x, k=k, i=i):
                batch = z.clone()
                batch[k, i] = x
                return G(batch)[k, i]

            jac = torch.autograd.functional.jacobian(member_output, z[k, i])  # [out, latent]
            assert values[k, i].tolist() == pytest.approx(torch.linalg.svdvals(jac).tolist(), rel=1e-4, abs=1e-6)
    G.train()
    assert all(torch.equal(b, saved[name]) for name, b in G.named_buffers())
    assert G.training  # the call's eval mode is undone


def test_a_member_with_non_finite_weights_gets_nan_conditioning_and_the_others_do_not():
    G = _generator(["tanh", "tanh"])
    with torch.no_grad():
        G.net.fc1.weight[1, 0, 0] = float("nan")
    found = jacobian_conditioning(G, torch.randn(2, 3, 6))["log_cond_mean"]
    assert torch.isfinite(found[0]) and torch.isnan(found[1])
