"""gan.runs.fit: training in process: run directory, determinism, resume, stability switches, divergence, faults."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gan import bench
from gan.data import MNISTDataModule, PackedBatches
from gan.errors import CheckpointError, ConfigError, Interrupted, RunFailed
from gan.model.activations import ACTIVATION_NAMES
from gan.model.module import GANModule
from gan.model.optim import Adam
from gan.model.population import StackedLinear
from gan.model.streams import MemberStreams
from gan.runs.build import build_callbacks, build_datamodule, build_trainer
from gan.runs.fit import train, train_pack
from gan.runs.plan import member_config, prepare
from gan.runs.schema import CONF_DIR
from gan.sample import run as sample_run
from tests.helpers import (
    REAL_MNIST,
    REPO,
    SCALAR_TAGS,
    compose_train,
    fast_overrides,
    image_tags,
    needs_real_mnist,
    run,
    scalars,
    weights,
)


@pytest.mark.slow
def test_fit_writes_a_complete_run_directory(tmp_path, tiny_mnist):
    summary, run_dir = run(tmp_path, "run", tiny_mnist, "trainer.max_epochs=2")
    assert summary["iterations"] == 16 and summary["epochs"] == 2.0  # 256 images / 32 per batch, 2 epochs
    assert summary["run_dir"] == str(run_dir.resolve())
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch0000.png", "epoch0001.png"]
    assert (run_dir / "hparams.yaml").is_file() and list(run_dir.glob("events.out.tfevents.*"))
    series = scalars(run_dir)
    assert SCALAR_TAGS <= set(series)
    assert [step for step, _ in series["train/d_loss"]] == list(range(1, 17))  # x-axis = iterations completed
    assert all(0 <= v <= 1 for _, v in series["train/D_x"] + series["train/D_G_z"])
    assert image_tags(run_dir) == ["samples/fixed_noise"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["members"][0]["g_act"] == "relu" and "gan_rng" in ckpt
    assert ckpt["state_dict"]["fixed_noise"].shape == (1, 64, 100)


@pytest.mark.slow
@pytest.mark.parametrize("d_steps", [1, 2])
def test_max_steps_means_generator_iterations(tmp_path, tiny_mnist, d_steps):
    summary, run_dir = run(
        tmp_path, "run", tiny_mnist, "trainer.max_steps=5", "trainer.max_epochs=-1", f"model.d_steps={d_steps}"
    )
    assert summary["iterations"] == 5
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 5 * (d_steps + 1)  # Lightning's count: every optimizer step
    assert len(scalars(run_dir)["train/g_loss"]) == 5


@pytest.mark.slow
def test_same_seed_same_losses_step_for_step_and_seed_zero_really_seeds(tmp_path, tiny_mnist):
    _, a = run(tmp_path, "a", tiny_mnist, "seed=0")
    _, b = run(tmp_path, "b", tiny_mnist, "seed=0")
    _, c = run(tmp_path, "c", tiny_mnist, "seed=1")
    sa, sb, sc = scalars(a), scalars(b), scalars(c)
    for tag in SCALAR_TAGS:
        assert sa[tag] == sb[tag]
    assert sa["train/g_loss"] != sc["train/g_loss"]
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["fixed_noise"], weights(c)["fixed_noise"])


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(tmp_path, tiny_mnist):
    """2 epochs straight == 1 epoch, then resume for the second: same losses, weights and fixed noise."""
    _, straight = run(tmp_path, "straight", tiny_mnist, "activation=same", "act=elu", "trainer.max_epochs=2")
    _, first = run(tmp_path, "first", tiny_mnist, "activation=same", "act=elu", "trainer.max_epochs=1")
    ckpt = first / "checkpoints" / "last.ckpt"
    # no activation override: the resumed run takes its model from the checkpoint
    summary, resumed = run(tmp_path, "resumed", tiny_mnist, f"ckpt_path={ckpt}", "trainer.max_epochs=2")
    assert summary["iterations"] == 16
    ws, wr = weights(straight), weights(resumed)
    assert set(ws) == set(wr)
    for key in ws:
        assert torch.allclose(ws[key], wr[key], atol=1e-6), key
    assert torch.equal(ws["fixed_noise"], weights(first)["fixed_noise"])
    later = scalars(resumed)["train/g_loss"]
    assert [s for s, _ in later] == list(range(9, 17))  # the step counter continued
    expected = dict(scalars(straight)["train/g_loss"])
    for step, value in later:
        assert value == pytest.approx(expected[step], abs=1e-5)
    assert [p.name for p in (resumed / "samples").iterdir()] == ["epoch0001.png"]
    assert weights(first)["fixed_noise"].shape == (1, 64, 100)  # the first run's files are untouched


@pytest.mark.slow
def test_resume_with_a_different_model_is_refused(tmp_path, tiny_mnist):
    _, first = run(tmp_path, "first", tiny_mnist)
    ckpt = first / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    with pytest.raises(ConfigError, match="g_act: checkpoint 'relu', asked 'tanh'"):
        run(tmp_path, "again", tiny_mnist, f"ckpt_path={ckpt}", "model.g_act=tanh", "trainer.max_epochs=2")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        run(tmp_path, "again", tiny_mnist, f"ckpt_path={tmp_path}/nope.ckpt")
    assert ckpt.read_bytes() == before


@pytest.mark.slow
def test_checkpoint_and_grid_switches(tmp_path, tiny_mnist):
    _, periodic = run(
        tmp_path,
        "periodic",
        tiny_mnist,
        "trainer.max_epochs=2",
        "callbacks.periodic_checkpoint.every_n_epochs=1",
        "callbacks.sample_grid.every_n_epochs=2",
    )
    names = sorted(p.name for p in (periodic / "checkpoints").iterdir())
    assert names == ["epoch0000.ckpt", "epoch0001.ckpt", "last.ckpt"]
    assert [p.name for p in (periodic / "samples").iterdir()] == ["epoch0001.png"]
    _, off = run(tmp_path, "off", tiny_mnist, "trainer.enable_checkpointing=false")
    assert not (off / "checkpoints").exists() and not list(off.rglob("*.ckpt"))
    _, no_periodic = run(tmp_path, "nop", tiny_mnist, "~callbacks.periodic_checkpoint")
    assert [p.relative_to(no_periodic).as_posix() for p in no_periodic.rglob("*.ckpt")] == ["checkpoints/last.ckpt"]


@pytest.mark.slow
def test_divergence_stops_the_run_and_is_recorded(tmp_path, tiny_mnist, monkeypatch):
    from gan.model.losses import NonSaturatingLoss

    real_g_loss = NonSaturatingLoss.g_loss
    monkeypatch.setattr(NonSaturatingLoss, "g_loss", lambda self, logits: real_g_loss(self, logits) * float("nan"))
    with pytest.raises(RunFailed, match="diverged: non-finite loss in iteration 1$"):
        run(tmp_path, "nan", tiny_mnist, "trainer.max_epochs=3")
    import json

    results = json.loads((tmp_path / "nan" / "results.json").read_text())
    assert results["status"] == "diverged" and results["reason"] == "non-finite loss in iteration 1"
    assert not list((tmp_path / "nan").rglob("*.tmp"))


@pytest.mark.slow
def test_resume_compares_the_checkpoints_own_config(tmp_path, tiny_mnist):
    """The checkpoint stores the config it ran with; a resume keeps its invariants, refuses a group choice that
    changes them, and reads a checkpoint written before configs were stored as well."""
    _, first = run(tmp_path, "first", tiny_mnist, "activation=same", "act=tanh", "data.augment=translation")
    ckpt_path = first / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    saved = ckpt["run_configs"][0]
    assert (saved["model"]["g_act"], saved["act"], saved["data"]["augment"]) == ("tanh", "tanh", "translation")
    with pytest.raises(ConfigError, match=r"asked by stability=r1\): model.r1_weight: checkpoint 0.0, asked 10.0\. A"):
        run(tmp_path, "r1", tiny_mnist, f"ckpt_path={ckpt_path}", "stability=r1", "trainer.max_epochs=2")
    del ckpt["run_configs"]  # as written before this version
    legacy = tmp_path / "legacy.ckpt"
    torch.save(ckpt, legacy)
    # the legacy checkpoint's augmentation comes back from its member hyperparameters, in their list form
    for name, path, augment in (("resumed", ckpt_path, "translation"), ("legacy", legacy, ["translation"])):
        _, resumed = run(tmp_path, name, tiny_mnist, f"ckpt_path={path}", "trainer.max_epochs=2")
        config = json.loads((resumed / "results.json").read_text())["config"]
        assert (config["model"]["g_act"], config["model"]["d_act"], config["data"]["augment"]) == (
            "tanh",
            "tanh",
            augment,
        )
    assert torch.equal(
        weights(tmp_path / "resumed")["generator.net.fc1.weight"],
        weights(tmp_path / "legacy")["generator.net.fc1.weight"],
    )


@pytest.mark.slow
def test_a_checkpoint_of_the_package_before_its_floors_resumes_and_its_saved_code_names_are_not_used(
    tmp_path, tiny_mnist
):
    """Checkpoints written before gan/model, gan/runs, ... name their code as it was (gan.module.member_hparams,
    gan.optim.Adam): they resume and sample as before. A saved config is data: the model's _target_ in the file is
    not what builds the resumed run, and one naming other code is refused (tests/runs/test_checkpoint_config.py)."""
    _, first = run(tmp_path, "first", tiny_mnist, "model.g_act=elu")
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for member in ckpt["hyper_parameters"]["members"]:
        member["optimizer_g"]["_target_"] = member["optimizer_d"]["_target_"] = "gan.optim.Adam"
    for config in ckpt["run_configs"]:
        config["model"]["_target_"] = "gan.module.member_hparams"
        config["model"]["optimizer_g"]["_target_"] = config["model"]["optimizer_d"]["_target_"] = "gan.optim.Adam"
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    config["model"]["_target_"] = "builtins.print"  # code a crafted file names: refused, never called
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    with pytest.raises(CheckpointError, match=r"model\._target_='builtins.print' is Hydra's instantiation syntax"):
        run(tmp_path, "resumed_crafted", tiny_mnist, f"ckpt_path={crafted}", "trainer.max_epochs=2")
    assert not (tmp_path / "resumed_crafted").exists()
    _, resumed = run(tmp_path, "resumed_old", tiny_mnist, f"ckpt_path={old}", "trainer.max_epochs=2")
    record = json.loads((resumed / "results.json").read_text())
    assert record["status"] == "finished" and record["config"]["model"]["g_act"] == "elu"
    assert record["config"]["model"]["_target_"] == "gan.model.spec.member_hparams"
    assert record["config"]["model"]["optimizer_g"]["_target_"] == "gan.model.optim.Adam"
    settings = {"num_samples": 4, "nrow": 2, "seed": 0, "npy": None, "device": "cpu", "ema": None}
    written = sample_run(OmegaConf.create({**settings, "ckpt_path": str(old), "out": str(tmp_path / "old.png")}))
    assert Path(written["png"]).is_file()


STABILITY_PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "stability").glob("*.yaml"))
# Every switch of the toolkit, alone (a preset each, plus the ones without a preset of their own).
SWITCHES = {
    **{f"stability={name}": [f"stability={name}"] for name in STABILITY_PRESETS if name != "none"},
    "g_norm=layer": ["model.g_norm=layer"],
    "d_norm=batch": ["model.d_norm=batch"],
    "loss=lsgan+label_smoothing": ["model.loss=lsgan", "model.label_smoothing=0.1"],
    "train_size": ["data.train_size=100"],
    "augment=cutout": ["data.augment=cutout"],
    "init=variance_preserving": ["model.init=variance_preserving"],
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
                assert str(OmegaConf.select(OmegaConf.create(plan.config), key)) == value


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


@pytest.mark.slow
def test_rpgan_with_r2_update_under_manual_optimization_matches_the_closed_form(tiny_mnist):
    """rpgan + R2 (gamma 4) on a linear D: D's gradient is mean(sigma(s_f - s_r) (x_f - x_r)) + gamma w (R2's
    gradient of gamma / 2 |w|^2); G's step then reads D's scores of the same real batch (D's fourth input, after
    its update: the same images as its first), without changing D."""
    module, seen, w0, b0 = _linear_critic_step(tiny_mnist, loss="rpgan", r2_weight=4.0)
    real, fake, rescored = seen[:3]
    s_r, s_f = real @ w0 + b0, fake @ w0 + b0
    grad = (torch.sigmoid(s_f - s_r).unsqueeze(1) * (fake - real)).mean(0) + 4.0 * w0
    w1 = module.discriminator.net.out.weight.view(-1)
    assert torch.allclose(w1, w0 - 0.1 * grad, atol=1e-5)
    assert torch.equal(rescored, real) and len(seen) == 4  # real, fake (R2's pass), real again for G, G's fake


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


def assert_resumed_as_straight(straight: Path, resumed: Path) -> dict[str, torch.Tensor]:
    """The resumed run ends with the straight run's weights and logged the same G losses; the weights."""
    ws, wr = weights(straight), weights(resumed)
    assert set(ws) == set(wr)
    for key in ws:
        assert torch.allclose(ws[key].float(), wr[key].float(), atol=1e-5), key
    expected = dict(scalars(straight)["train/g_loss"])
    for step, value in scalars(resumed)["train/g_loss"]:
        assert value == pytest.approx(expected[step], abs=1e-5)
    return ws


R3GAN_SINK = [
    "stability=r3gan",
    "model.init=variance_preserving",
    "model.d_spectral_norm=true",
    "model.g_norm=batch",
    "model.instance_noise=0.1",
    "model.instance_noise_iters=16",
    "data.augment=[translation,cutout]",
]


@pytest.mark.slow
def test_resume_of_rpgan_with_r1_r2_and_variance_preserving_init_continues_exactly(tmp_path, tiny_mnist):
    """G's re-scoring of the real batch (rpgan) leaves D's buffers as they were, so 2 epochs straight == 1 epoch +
    resume, with spectral norm's vectors, batch-norm statistics and the augmentation's draws in play."""
    _, straight = run(tmp_path, "straight", tiny_mnist, *R3GAN_SINK, "trainer.max_epochs=2")
    _, first = run(tmp_path, "first", tiny_mnist, *R3GAN_SINK, "trainer.max_epochs=1")
    ckpt = first / "checkpoints" / "last.ckpt"
    _, resumed = run(tmp_path, "resumed", tiny_mnist, f"ckpt_path={ckpt}", "trainer.max_epochs=2")
    config = json.loads((resumed / "results.json").read_text())["config"]["model"]
    assert config["loss"] == "rpgan" and config["r2_weight"] == 1.0 and config["init"] == "variance_preserving"
    assert_resumed_as_straight(straight, resumed)


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
    ws = assert_resumed_as_straight(straight, resumed)
    assert any(k.startswith("generator_ema.") for k in ws) and any("_u" in k for k in ws)


@pytest.mark.slow
def test_instance_noise_decays_over_the_planned_run(tmp_path, tiny_mnist):
    _, run_dir = run(tmp_path, "noise", tiny_mnist, "model.instance_noise=0.1", "trainer.max_epochs=2")
    series = scalars(run_dir)["train/instance_noise_std"]
    assert [s for s, _ in series] == list(range(1, 17))  # the std iteration i (from 0) used, at i + 1 completed
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
    assert "train_diag/G/layer1/dead" in scalars(probed)
    for tag in SCALAR_TAGS:
        assert scalars(probed)[tag] == scalars(plain)[tag]
    wp, wq = weights(plain), weights(probed)
    assert any("running_mean" in k for k in wp)
    for key in wp:
        assert torch.equal(wp[key], wq[key]), key


@needs_real_mnist
@pytest.mark.slow
def test_short_real_run_learns_something(tmp_path):
    """60 iterations on real digits: D starts telling real from fake (D(x) > D(G(z)) on average)."""
    run_dir = tmp_path / "run"
    cfg = compose_train(
        fast_overrides(REAL_MNIST, **{"data.batch_size": 64, "trainer.max_steps": 60, "trainer.max_epochs": -1}),
        run_dir,
    )
    summary = train(cfg)
    assert summary["iterations"] == 60
    series = scalars(run_dir)
    d_x = torch.tensor([v for _, v in series["train/D_x"]])
    d_gz = torch.tensor([v for _, v in series["train/D_G_z"]])
    assert torch.isfinite(d_x).all() and (d_x - d_gz).mean() > 0


class SignalAt(L.Callback):
    """Sends this process ``signum`` at the end of iteration ``at`` (as a scheduler would, mid-epoch)."""

    def __init__(self, at: int, signum: int = signal.SIGTERM) -> None:
        self.at, self.signum = at, signum

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.iteration == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT])  # SIGTERM takes the same path: its own test is end to end
def test_a_signal_mid_epoch_saves_a_checkpoint_that_resumes_exactly(tmp_path, tiny_mnist, signum, monkeypatch):
    """Stopped by a signal after iteration 5 of an 8-iteration epoch: last.ckpt of 5 whole iterations, results.json
    ``interrupted`` naming the signal; resumed to 12 iterations it equals a run never stopped."""
    import gan.runs.fit

    _, straight = run(tmp_path, "straight", tiny_mnist, "trainer.max_steps=12", "trainer.max_epochs=-1")
    build = gan.runs.fit.build_trainer

    def with_signal(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.callbacks.append(SignalAt(5, signum))
        return trainer

    monkeypatch.setattr(gan.runs.fit, "build_trainer", with_signal)
    with pytest.raises(Interrupted) as stopped:
        run(tmp_path, "stopped", tiny_mnist, "trainer.max_steps=12", "trainer.max_epochs=-1")
    monkeypatch.undo()
    assert stopped.value.exit_code == 128 + signum
    results = json.loads((tmp_path / "stopped" / "results.json").read_text())
    name = signal.Signals(signum).name
    assert results["status"] == "interrupted" and results["iterations"] == 5
    assert results["reason"] == f"{name} after iteration 5; resume from checkpoints/last.ckpt"
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 5 * 2

    summary, resumed = run(
        tmp_path, "resumed", tiny_mnist, f"ckpt_path={ckpt}", "trainer.max_steps=12", "trainer.max_epochs=-1"
    )
    assert summary["status"] == "finished" and summary["iterations"] == 12
    ws, wr = weights(straight), weights(resumed)
    for key in ws:
        assert torch.allclose(ws[key], wr[key], atol=1e-6), key
    expected = dict(scalars(straight)["train/g_loss"])
    later = scalars(resumed)["train/g_loss"]
    assert [s for s, _ in later] == list(range(6, 13))
    for step, value in later:
        assert value == pytest.approx(expected[step], abs=1e-5)


@pytest.mark.slow
def test_sigterm_to_a_training_process_exits_143_with_an_honest_record(tmp_path, tiny_mnist):
    """What a scheduler does: SIGTERM to ``python -m gan.train``; exit 143, ``interrupted``, a fresh last.ckpt."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    overrides = fast_overrides(tiny_mnist, **{"trainer.max_epochs": 10000, "trainer.log_every_n_steps": 50})
    proc = subprocess.Popen(
        [sys.executable, "-m", "gan.train", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / "last.ckpt").exists():
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "run interrupted: SIGTERM after iteration" in err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["reason"].startswith("SIGTERM after iteration")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * results["iterations"]  # saved when it stopped, not at the last epoch end


@pytest.mark.slow
def test_a_loss_that_goes_nan_between_logging_steps_ends_diverged(tmp_path, tiny_mnist):
    """lr=1e30 makes the losses non-finite within a few iterations; logging every 50 never reads them, yet the
    run ends ``diverged`` (the device flag is read before each epoch's grids and checkpoints, and at the end), with
    the first bad iteration named, and nothing of it saved after that."""
    lr = ["model.optimizer_g.lr=1e30", "model.optimizer_d.lr=1e30"]
    with pytest.raises(RunFailed, match="diverged: non-finite loss in iteration") as failed:
        run(
            tmp_path,
            "nan",
            tiny_mnist,
            *lr,
            "trainer.max_steps=30",
            "trainer.max_epochs=-1",
            "trainer.log_every_n_steps=50",
        )
    results = json.loads((tmp_path / "nan" / "results.json").read_text())
    first, found = (int(part.split(" ")[0].rstrip(")")) for part in failed.value.reason.split("iteration ")[1:])
    assert results["status"] == "diverged" and results["reason"] == failed.value.reason
    assert 1 <= first < found <= 30 and results["iterations"] == first


# A full disk at each kind of write (checkpoints, results.json, event files, grids): tests/runs/test_full_disk.py


# The oracle of the fit: a population of one trained through Lightning against gan.bench's bare PyTorch loop
# (torch's nn.Linear and torch.optim.Adam) from the same weights on the same batches and noise. Measured: the GAN's
# forward and backward passes, losses, batches and noise are bit-exact with the bare loop (with its optimizers
# swapped for gan.model.optim.Adam the weights are equal to the last bit); with torch.optim.Adam they agree within
# 2e-5 (a tenth of one Adam step at lr 2e-4): tests/model/test_optim.py measures that rounding.

# --------------------------------------------------------------------------------------------------------------
# 2. A population of one (GANModule through Lightning) against gan.bench's bare PyTorch loop

BENCH_SMALL = [
    "data.batch_size=32",
    "model.g_hidden=[32,32]",
    "model.d_hidden=[32]",
    "trainer.enable_progress_bar=false",
]
# GANModule + gan.model.optim.Adam against nn.Linear + torch.optim.Adam: torch's Adam rounds differently (see part
# 1), and GAN training carries those last bits along; measured worst 6e-6 after 4 to 8 iterations.
REFERENCE_ATOL = 2e-5


def linear_pairs(module: GANModule, reference: bench.ReferenceLoop) -> list[tuple[str, StackedLinear, nn.Linear]]:
    """(name, the module's stacked layer, the reference's nn.Linear) for every linear layer of G and D, in order."""
    pairs = []
    for net, stacked, plain in (("G", module.generator, reference.G), ("D", module.discriminator, reference.D)):
        ours = [m for m in stacked.modules() if isinstance(m, StackedLinear)]
        theirs = [m for m in plain.modules() if isinstance(m, nn.Linear)]
        assert len(ours) == len(theirs) > 1
        pairs += [(f"{net}{i}", a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True))]
    return pairs


def reference_like(
    module: GANModule, member: dict[str, Any], images: torch.Tensor, batch: int, order: torch.Tensor
) -> bench.ReferenceLoop:
    """gan.bench's reference loop, made to start where ``module`` starts and to see the batches it will see.

    The bench builds the reference with torch's own initialisation and draws its shuffle order from the global RNG
    (after its nn.Linear layers drew their weights from it, so no seed gives it the member's order). Least
    invasive: copy the module's initial weights into its layers (a StackedLinear weight is [K, in, out], the
    transpose of nn.Linear's [out, in]) and set its order (``_order``: the one thing that is not public) to the
    member's epoch plan. Noise: see ``train_reference``.
    """
    reference = bench.ReferenceLoop(member, images, batch, torch.device("cpu"))
    with torch.no_grad():
        for _, stacked, plain in linear_pairs(module, reference):
            plain.weight.copy_(stacked.weight[0].t())
            plain.bias.copy_(stacked.bias[0])
    reference._order, reference._at = order.clone(), 0
    return reference


def train_reference(reference: bench.ReferenceLoop, stream: torch.Generator, iterations: int) -> None:
    """``iterations`` reference steps with the global CPU RNG in the member's training-stream state.

    The reference draws its noise with ``torch.randn`` from the global generator: per iteration one [B, latent]
    draw per D update, then one for G. The module draws the same iteration's noise from its member stream as one
    [d_steps + 1, B, latent] draw, and torch's CPU normal sampler fills a tensor in blocks of 16 values, so one big
    draw equals the consecutive small ones when B x latent is a multiple of 16 (checked by the caller)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.set_state(stream.get_state())
        for _ in range(iterations):
            reference.step()


@pytest.mark.slow  # trains through Lightning
@pytest.mark.parametrize(
    "overrides",
    [
        [],  # the lab's defaults: ns loss, relu G, leaky relu D, Adam 2e-4 (0.5, 0.999)
        ["model.d_steps=2", "model.loss=hinge", "model.g_act=elu", "model.d_act=silu", "model.optimizer_g.lr=1e-3"],
    ],
    ids=["defaults", "hinge_two_d_steps"],
)
def test_a_population_of_one_trains_as_the_bare_pytorch_loop(tmp_path, tiny_mnist, overrides):
    """One epoch of the tiny data (8 D batches) through gan.train's Trainer against gan.bench's reference loop from
    the same initial weights, batches and noise: equal to the last bit with the reference's optimizers replaced by
    gan.model.optim.Adam (the training step's math: forward, losses, backward, batch order, noise), and within
    REFERENCE_ATOL with torch.optim.Adam (the pure oracle)."""
    cfg = bench.bench_config(str(tiny_mnist), str(tmp_path / "run"), "cpu", BENCH_SMALL + overrides)
    member = member_config(OmegaConf.merge(cfg, {"seed": 0}))
    bench.check_reference_can_match(member)
    module = GANModule(members=[member], checked=True)
    datamodule = build_datamodule(cfg, [member["seed"]], module.data_ranges, member["d_steps"])
    batch, d_steps = int(cfg.data.batch_size), member["d_steps"]
    assert batch * member["latent_dim"] % 16 == 0  # see train_reference
    iterations = datamodule.batches_per_epoch  # one epoch: at its end the reference would redraw its order
    assert iterations * d_steps == 8

    # What the member will see: its first epoch's batch order (from a copy of its shuffle generator) and its
    # training stream (as the module creates it when the fit starts).
    shuffle = torch.Generator()
    shuffle.set_state(datamodule.shuffle_generators[0].get_state())
    plan = PackedBatches(len(datamodule.train_bytes), batch * d_steps, [shuffle], iterations).epoch_plan()
    order = plan[:, 0].reshape(-1)
    stream = MemberStreams([member["seed"]], torch.device("cpu")).generators[0]

    oracle = reference_like(module, member, datamodule.train_bytes, batch, order)
    same_optimizer = reference_like(module, member, datamodule.train_bytes, batch, order)
    same_optimizer.opt_g = Adam(same_optimizer.G.parameters(), **{k: member["optimizer_g"][k] for k in ("lr", "betas")})
    same_optimizer.opt_d = Adam(same_optimizer.D.parameters(), **{k: member["optimizer_d"][k] for k in ("lr", "betas")})
    initial = {name: plain.weight.detach().clone() for name, _, plain in linear_pairs(module, oracle)}
    train_reference(oracle, stream, iterations)
    train_reference(same_optimizer, stream, iterations)

    with_steps = OmegaConf.merge(cfg, {"trainer": {"max_steps": iterations}})  # as gan.bench.time_lightning
    trainer = build_trainer(with_steps, d_steps, build_callbacks(with_steps))
    trainer.fit(module, datamodule=datamodule)
    assert module.iteration == iterations

    for (name, stacked, plain), (_, _, same) in zip(
        linear_pairs(module, oracle), linear_pairs(module, same_optimizer), strict=True
    ):
        weight, bias = stacked.weight.detach()[0].t(), stacked.bias.detach()[0]
        assert (weight - initial[name]).abs().max() > 20 * REFERENCE_ATOL, f"{name} did not train"
        assert torch.equal(weight, same.weight.detach()), f"{name}.weight differs from the same-optimizer reference"
        assert torch.equal(bias, same.bias.detach()), f"{name}.bias differs from the same-optimizer reference"
        for what, ours, theirs in (("weight", weight, plain.weight), ("bias", bias, plain.bias)):
            torch.testing.assert_close(
                ours, theirs.detach(), rtol=0, atol=REFERENCE_ATOL, msg=lambda m, n=f"{name}.{what}": f"{n}: {m}"
            )
