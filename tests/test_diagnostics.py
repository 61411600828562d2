"""Activation diagnostics on networks with known weights, and in a real (tiny) run."""

import pytest
import torch

from gan.diagnostics import grad_norms, hidden_layers, layer_stats, probe
from gan.networks import Discriminator, Generator
from tests.test_train import SCALAR_TAGS, run
from tests.conftest import scalars


def _forced(act: str, bias: float) -> Discriminator:
    D = Discriminator([16, 8], act, "identity", {"leaky_relu": {"negative_slope": 0.2}})
    with torch.no_grad():
        D.net.fc1.weight.zero_()
        D.net.fc1.bias.fill_(bias)
    return D


@pytest.mark.parametrize(
    "act,bias,dead,saturated",
    [
        ("relu", -1.0, 1.0, 1.0),  # all pre-activations negative: every unit outputs 0
        ("leaky_relu", -1.0, 0.0, 0.0),  # the same layer keeps a slope: nothing dead
        ("tanh", 10.0, 0.0, 1.0),  # pinned at +1
        ("sigmoid", -20.0, 1.0, 1.0),  # pinned at 0
        ("identity", -1.0, 0.0, 0.0),
    ],
)
def test_layer_forced_to_known_pre_activations(act, bias, dead, saturated):
    D = _forced(act, bias)
    layers = probe(D.net, torch.randn(32, 1024), act, {"negative_slope": 0.2} if act == "leaky_relu" else None)
    stats = layers[1]["stats"]
    assert stats["dead"] == dead and stats["saturated"] == saturated
    assert stats["pre_mean"] == pytest.approx(bias) and stats["pre_std"] == pytest.approx(0.0)
    assert layers[1]["pre"].shape == (32, 16) and set(layers) == {1, 2}
    assert all(len(m._forward_hooks) == 0 for m in D.modules())  # hooks removed after the probe


def test_layer_stats_moments_and_partial_saturation():
    pre = torch.tensor([[-3.0, 0.0], [3.0, 0.5]])
    act = torch.tanh(pre)
    s = layer_stats(pre, act, (-1.0, 1.0), saturation_margin=0.01)
    assert s["saturated"] == 0.5  # tanh(+-3) = +-0.995, within 0.02 of the bounds; 0 and tanh(.5) are not
    assert s["dead"] == 0.0 and s["act_mean"] == pytest.approx(act.mean().item())
    assert s["pre_std"] == pytest.approx(pre.std().item())


def test_grad_norms_are_per_layer_l2():
    G = Generator(4, [8, 8], "relu", "tanh", {})
    G(torch.randn(5, 4)).pow(2).sum().backward()
    norms = grad_norms(G.net)
    fc2 = G.net.fc2
    assert norms[2] == pytest.approx(torch.cat([fc2.weight.grad.flatten(), fc2.bias.grad]).norm().item(), rel=1e-5)
    assert [k for k, _, _ in hidden_layers(G.net)] == [1, 2]


def test_diagnostics_in_a_run_log_every_layer_and_leave_training_alone(tmp_path, tiny_mnist):
    _, plain = run(tmp_path, "plain", tiny_mnist, "trainer.max_epochs=1")
    _, probed = run(tmp_path, "probed", tiny_mnist, "trainer.max_epochs=1", "diag.enabled=true",
                    "diag.every_n_steps=4")
    series = scalars(probed)
    for net in "GD":
        for k in (1, 2, 3):
            for stat in ("dead", "saturated", "pre_mean", "pre_std", "act_mean", "act_std", "grad_norm"):
                assert [s for s, _ in series[f"diag/{net}/layer{k}/{stat}"]] == [4, 8]
    assert all(v > 0 for _, v in series["diag/D/layer1/grad_norm"])
    for tag in SCALAR_TAGS:  # probing draws its own noise: the training is exactly the same
        assert series[tag] == scalars(plain)[tag]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(probed / "tensorboard"), size_guidance={"histograms": 0})
    acc.Reload()
    assert "diag/G/layer1/pre" in acc.Tags()["histograms"]
