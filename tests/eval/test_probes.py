"""gan.eval.probes: activation statistics, gradient norms and Jacobians on networks with known weights."""

import math

import pytest
import torch

from gan.eval.probes import (
    grad_norms,
    gradient_diversity,
    hidden_layers,
    input_gradients,
    jacobian_conditioning,
    jacobian_singular_values,
    layer_stats,
    learning_signal,
    pattern_entropies,
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


def test_pattern_entropies_of_known_patterns():
    every = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # all 4 patterns of 2 units, once
    same = torch.tensor([[2.0, -3.0]] * 4)  # one pattern, 4 times
    quarter = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]])  # unit 1 on for 1 of 4; unit 2 always
    found = pattern_entropies(torch.stack([every, same, quarter]))
    h_quarter = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert found["unit_entropy"].tolist() == pytest.approx([1.0, 0.0, h_quarter / 2])
    # patterns {2 distinct: 1/4, 3/4} -> H = h_quarter bits over log2(4) = 2
    assert found["pattern_entropy"].tolist() == pytest.approx([1.0, 0.0, h_quarter / 2])
    # pairs of `every`: (++,--) and (+-,-+) are opposite (|s.s|/2 = 1), the 4 others orthogonal: 2 of 6
    assert found["pattern_similarity"].tolist() == pytest.approx([1 / 3, 1.0, 0.5])


def test_pattern_entropy_equals_a_direct_count_on_random_patterns():
    pre = torch.randn(2, 64, 5, generator=torch.Generator().manual_seed(0))
    found = pattern_entropies(pre)
    for k in range(2):
        patterns = [tuple(row) for row in (pre[k] > 0).tolist()]
        counts = [patterns.count(p) / 64 for p in set(patterns)]
        assert found["pattern_entropy"][k].item() == pytest.approx(-sum(c * math.log2(c) for c in counts) / 6)
        s = (pre[k] > 0).double() * 2 - 1
        pairs = [abs(float(s[i] @ s[j])) / 5 for i in range(64) for j in range(64) if i != j]
        assert found["pattern_similarity"][k].item() == pytest.approx(sum(pairs) / len(pairs), rel=1e-6)


def test_gradient_diversity_closed_forms():
    w = torch.randn(7)
    same = w.expand(1, 5, 7)  # a linear D: every fake gets the same gradient
    orthogonal = torch.eye(4).unsqueeze(0)
    opposite = torch.tensor([[[1.0, 2.0], [-1.0, -2.0]]])
    assert gradient_diversity(same).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_diversity(orthogonal).item() == pytest.approx(1.0)
    assert gradient_diversity(opposite).item() == pytest.approx(2.0)


def test_a_linear_discriminator_gives_every_sample_its_weight_and_no_diversity():
    acts = ["identity", "identity"]
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    D = Discriminator([16, 8], acts, ["identity"] * 2, [PARAMS] * 2, gens)  # identity everywhere: D(x) = w.x + b
    x = torch.randn(2, 6, 1024)
    logits, grads = input_gradients(D, x)
    w = D(torch.eye(1024).expand(2, -1, -1)) - D(torch.zeros(2, 1, 1024))  # D(e_i) - D(0) = w_i
    assert torch.allclose(grads, w.unsqueeze(1).expand(-1, 6, -1), atol=1e-5)
    assert torch.allclose(logits, D(x))
    signal = learning_signal(D, x, x.flip(1))
    assert signal["grad_diversity"].tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    assert signal["grad_norm_real"].tolist() == pytest.approx(w.norm(dim=-1).tolist(), rel=1e-5)


def test_learning_signal_of_a_nonlinear_d_matches_per_sample_autograd():
    acts = ["elu", "leaky_relu"]
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    D = Discriminator([32, 16], acts, ["identity"] * 2, [PARAMS] * 2, gens)
    real, fake = torch.randn(2, 5, 1024), torch.randn(2, 5, 1024)
    signal = learning_signal(D, real, fake)
    for k in range(2):
        grads = []
        for i in range(5):
            x = fake.clone().requires_grad_(True)
            D(x)[k, i].backward()
            grads.append(x.grad[k, i])
        g = torch.stack(grads)
        cos = torch.nn.functional.cosine_similarity(g.unsqueeze(0), g.unsqueeze(1), dim=-1)
        mean_cos = (cos.sum() - cos.diagonal().sum()) / 20
        assert signal["grad_diversity"][k].item() == pytest.approx(1 - mean_cos.item(), abs=1e-5)
        assert signal["grad_norm_fake"][k].item() == pytest.approx(g.norm(dim=-1).mean().item(), rel=1e-5)
        assert signal["logit_fake"][k].item() == pytest.approx(D(fake)[k].mean().item(), rel=1e-5)
