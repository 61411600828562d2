"""The stability switches inside real training runs: every switch with every activation, penalties through manual
optimization, exact resume, the weight average's grids and samples, diagnostics that leave no trace."""

import copy
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from gan.data import MNISTDataModule
from gan.errors import ConfigError
from gan.model.activations import ACTIVATION_NAMES
from gan.model.module import GANModule
from gan.runs.schema import CONF_DIR
from gan.runs.training import prepare, train_pack
from gan.sample import run as sample_run
from tests.conftest import SCALAR_TAGS, compose_train, fast_overrides, image_tags, run, scalars, weights

STABILITY_PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "stability").glob("*.yaml"))
# Every switch of the toolkit, alone (a preset each, plus the ones without a preset of their own).
SWITCHES = {
    **{f"stability={name}": [f"stability={name}"] for name in STABILITY_PRESETS if name != "none"},
    "g_norm=layer": ["model.g_norm=layer"],
    "d_norm=batch": ["model.d_norm=batch"],
    "loss=lsgan+label_smoothing": ["model.loss=lsgan", "model.label_smoothing=0.1"],
    "train_size": ["data.train_size=100"],
    "augment=cutout": ["data.augment=cutout"],
}


def test_every_preset_is_in_the_switch_list():
    assert {"hinge", "wgan_gp", "spectral_norm", "r1", "g_ema", "instance_noise", "minibatch_std"} <= set(
        STABILITY_PRESETS
    )


@pytest.mark.slow
@pytest.mark.parametrize("switch", list(SWITCHES))
def test_every_switch_trains_with_every_activation(tmp_path, tiny_mnist, switch):
    """The switch with each of the 13 activations in G and D: one pack of 13 members (one per activation), each
    finished with finite losses at every step (logging every step checks every step)."""
    overrides = fast_overrides(
        tiny_mnist,
        **{
            "model.g_hidden": "[16,16]",
            "model.d_hidden": "[16,16]",
            "trainer.max_epochs": -1,
            "trainer.max_steps": 2,
            "trainer.enable_checkpointing": False,
        },
    )
    base = compose_train(overrides + ["~logger"] + SWITCHES[switch])  # composed once: members differ in two values
    plans = []
    for act in ACTIVATION_NAMES:
        cfg = copy.deepcopy(base)
        cfg.model.g_act = cfg.model.d_act = act
        cfg.run_dir = str(tmp_path / act)
        plans.append(prepare(cfg))
    summaries = train_pack(plans)
    assert [s["status"] for s in summaries] == ["finished"] * len(ACTIVATION_NAMES)
    assert {s["iterations"] for s in summaries} == {2}
    for act, plan in zip(ACTIVATION_NAMES, plans, strict=True):
        results = json.loads((tmp_path / act / "results.json").read_text())
        assert results["status"] == "finished" and results["config"]["model"]["g_act"] == act
        for override in SWITCHES[switch]:
            key, value = override.split("=")
            if key.startswith(("model.", "data.")):
                assert str(OmegaConf.select(plan.cfg, key)) == value


def _linear_critic_step(tiny_mnist: Path, **options) -> tuple[GANModule, list[torch.Tensor], torch.Tensor, float]:
    """One iteration with a linear D (no hidden layers) trained by plain SGD: the module, every input D saw, and
    D's initial weight vector and bias."""
    torch.manual_seed(0)
    module = GANModule(
        g_hidden=[16],
        d_hidden=[],
        optimizer_d={"_target_": "torch.optim.SGD", "lr": 0.1},
        **options,
    )
    seen: list[torch.Tensor] = []
    module.discriminator.net.out.register_forward_pre_hook(lambda m, inp: seen.append(inp[0][0].detach().clone()))
    w0 = module.discriminator.net.out.weight.detach().clone().view(-1)
    b0 = module.discriminator.net.out.bias.item()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=module.shared["d_steps"] + 1,  # one iteration
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=MNISTDataModule(str(tiny_mnist), batch_size=8))
    return module, seen, w0, b0


@pytest.mark.slow
def test_wgan_gp_update_under_manual_optimization_matches_the_closed_form(tiny_mnist):
    """Linear critic D(x) = w.x + b: the loss's gradient is mean(fake) - mean(real), the penalty's
    2 lambda (|w| - 1) w / |w| (its input gradient is w at every interpolate); one SGD step must apply both."""
    module, seen, w0, _ = _linear_critic_step(tiny_mnist, loss="wgan-gp", gp_weight=10.0)
    real, _interpolates, fake = seen[:3]
    norm = w0.norm()
    grad = fake.mean(0) - real.mean(0) + 2 * 10.0 * (norm - 1) * w0 / norm
    assert torch.allclose(module.discriminator.net.out.weight.view(-1), w0 - 0.1 * grad, atol=1e-5)


@pytest.mark.slow
def test_r1_update_under_manual_optimization_matches_the_closed_form(tiny_mnist):
    """ns loss + R1 (gamma 4) on a linear D: gradient mean((sigma(s_r) - 1) x_r) + mean(sigma(s_f) x_f) + gamma w."""
    module, seen, w0, b0 = _linear_critic_step(tiny_mnist, loss="ns", r1_weight=4.0)
    real, fake = seen[:2]
    s_r, s_f = real @ w0 + b0, fake @ w0 + b0
    grad = ((torch.sigmoid(s_r) - 1).unsqueeze(1) * real).mean(0) + (torch.sigmoid(s_f).unsqueeze(1) * fake).mean(0)
    grad = grad + 4.0 * w0
    assert torch.allclose(module.discriminator.net.out.weight.view(-1), w0 - 0.1 * grad, atol=1e-5)


KITCHEN_SINK = [
    "model.g_ema=true",
    "model.instance_noise=0.1",
    "model.r1_weight=1.0",
    "model.label_smoothing=0.1",
    "model.d_spectral_norm=true",
    "model.g_norm=batch",
    "model.d_minibatch_std=true",
    "data.train_size=100",
    "data.augment=[translation,cutout]",
]


@pytest.mark.slow
def test_resume_with_every_trick_on_continues_exactly(tmp_path, tiny_mnist):
    """Averaged weights, spectral-norm vectors, batch-norm statistics and the random draws of noise, penalties and
    augmentation all survive a resume: 2 epochs straight == 1 epoch + resume."""
    budget = "model.instance_noise_iters=16"  # the decay must not depend on how long each fit is
    _, straight = run(tmp_path, "straight", tiny_mnist, *KITCHEN_SINK, budget, "trainer.max_epochs=2")
    _, first = run(tmp_path, "first", tiny_mnist, *KITCHEN_SINK, budget, "trainer.max_epochs=1")
    ckpt = first / "checkpoints" / "last.ckpt"
    # no model or data overrides: the resumed run takes both from the checkpoint, and its records say so
    _, resumed = run(tmp_path, "resumed", tiny_mnist, f"ckpt_path={ckpt}", "trainer.max_epochs=2")
    config = json.loads((resumed / "results.json").read_text())["config"]
    assert config["data"]["train_size"] == 100 and config["data"]["augment"] == ["translation", "cutout"]
    assert config["model"]["g_ema"] is True and config["model"]["instance_noise_iters"] == 16
    with pytest.raises(ConfigError, match="data.train_size: checkpoint 100, asked 50"):
        run(tmp_path, "other", tiny_mnist, f"ckpt_path={ckpt}", "data.train_size=50", "trainer.max_epochs=2")
    assert not (tmp_path / "other").exists()
    ws, wr = weights(straight), weights(resumed)
    assert any(k.startswith("generator_ema.") for k in ws) and any("_u" in k for k in ws)
    assert set(ws) == set(wr)
    for key in ws:
        assert torch.allclose(ws[key].float(), wr[key].float(), atol=1e-5), key
    expected = dict(scalars(straight)["train/g_loss"])
    for step, value in scalars(resumed)["train/g_loss"]:
        assert value == pytest.approx(expected[step], abs=1e-5)


@pytest.mark.slow
def test_instance_noise_decays_over_the_planned_run(tmp_path, tiny_mnist):
    _, run_dir = run(tmp_path, "noise", tiny_mnist, "model.instance_noise=0.1", "trainer.max_epochs=2")
    series = scalars(run_dir)["train/instance_noise_std"]
    assert [s for s, _ in series] == list(range(16))
    assert [v for _, v in series] == pytest.approx([0.1 * (1 - i / 16) for i in range(16)], abs=1e-6)


@pytest.mark.slow
def test_weight_average_grids_and_samples_sit_beside_the_trained_generators(tmp_path, tiny_mnist):
    _, run_dir = run(tmp_path, "ema", tiny_mnist, "stability=g_ema", "model.g_ema_decay=0.5")
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch0000.png", "epoch0000_no_ema.png"]
    assert sorted(image_tags(run_dir)) == ["samples/fixed_noise", "samples/fixed_noise_no_ema"]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    arrays = {}
    for ema in (None, True, False):
        npy = tmp_path / f"s_{ema}.npy"
        sample_run(
            OmegaConf.create(
                {
                    "ckpt_path": str(ckpt),
                    "num_samples": 5,
                    "nrow": 5,
                    "out": None,
                    "npy": str(npy),
                    "seed": 0,
                    "device": "cpu",
                    "ema": ema,
                }
            )
        )
        arrays[ema] = torch.from_numpy(__import__("numpy").load(npy))
    assert torch.equal(arrays[None], arrays[True]) and not torch.equal(arrays[None], arrays[False])
    _, plain = run(tmp_path, "plain", tiny_mnist)
    with pytest.raises(ConfigError, match="holds no generator weight average"):
        sample_run(
            OmegaConf.create(
                {
                    "ckpt_path": str(plain / "checkpoints" / "last.ckpt"),
                    "num_samples": 5,
                    "nrow": 5,
                    "out": None,
                    "npy": None,
                    "seed": 0,
                    "device": "cpu",
                    "ema": True,
                }
            )
        )


@pytest.mark.slow
def test_diagnostics_leave_batch_norm_and_spectral_norm_state_alone(tmp_path, tiny_mnist):
    tricks = ["model.g_norm=batch", "model.d_norm=batch", "model.d_spectral_norm=true"]
    _, plain = run(tmp_path, "plain", tiny_mnist, *tricks)
    _, probed = run(tmp_path, "probed", tiny_mnist, *tricks, "diag.enabled=true", "diag.every_n_steps=3")
    assert "diag/G/layer1/dead" in scalars(probed)
    for tag in SCALAR_TAGS:
        assert scalars(probed)[tag] == scalars(plain)[tag]
    wp, wq = weights(plain), weights(probed)
    assert any("running_mean" in k for k in wp)
    for key in wp:
        assert torch.equal(wp[key], wq[key]), key
