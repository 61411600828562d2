"""End-to-end runs of gan.train on tiny real IDX files: run directory, step meaning, determinism, resume, CLI."""

import json

import pytest
import torch

from gan.errors import CheckpointError, ConfigError, RunFailed
from tests.conftest import SCALAR_TAGS, _cli, fast_overrides, image_tags, run, scalars, weights

pytestmark = pytest.mark.slow  # every test trains through Lightning or runs python -m gan.*


def test_fit_writes_a_complete_run_directory(tmp_path, tiny_mnist):
    summary, run_dir = run(tmp_path, "run", tiny_mnist, "trainer.max_epochs=2")
    assert summary["iterations"] == 16 and summary["epochs"] == 2.0  # 256 images / 32 per batch, 2 epochs
    assert summary["run_dir"] == str(run_dir.resolve())
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch0000.png", "epoch0001.png"]
    assert (run_dir / "tensorboard" / "hparams.yaml").is_file()
    series = scalars(run_dir)
    assert SCALAR_TAGS <= set(series)
    assert [step for step, _ in series["train/d_loss"]] == list(range(16))  # x-axis = generator iterations
    assert all(0 <= v <= 1 for _, v in series["train/D_x"] + series["train/D_G_z"])
    assert image_tags(run_dir) == ["samples/fixed_noise"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["members"][0]["g_act"] == "relu" and "gan_rng" in ckpt
    assert ckpt["state_dict"]["fixed_noise"].shape == (1, 64, 100)


@pytest.mark.parametrize("d_steps", [1, 2])
def test_max_steps_means_generator_iterations(tmp_path, tiny_mnist, d_steps):
    summary, run_dir = run(
        tmp_path, "run", tiny_mnist, "trainer.max_steps=5", "trainer.max_epochs=-1", f"model.d_steps={d_steps}"
    )
    assert summary["iterations"] == 5
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 5 * (d_steps + 1)  # Lightning's count: every optimizer step
    assert len(scalars(run_dir)["train/g_loss"]) == 5


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
    assert [s for s, _ in later] == list(range(8, 16))  # the step counter continued
    expected = dict(scalars(straight)["train/g_loss"])
    for step, value in later:
        assert value == pytest.approx(expected[step], abs=1e-5)
    assert [p.name for p in (resumed / "samples").iterdir()] == ["epoch0001.png"]
    assert weights(first)["fixed_noise"].shape == (1, 64, 100)  # the first run's files are untouched


def test_resume_with_a_different_model_is_refused(tmp_path, tiny_mnist):
    _, first = run(tmp_path, "first", tiny_mnist)
    ckpt = first / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    with pytest.raises(ConfigError, match="g_act: checkpoint 'relu', asked 'tanh'"):
        run(tmp_path, "again", tiny_mnist, f"ckpt_path={ckpt}", "model.g_act=tanh", "trainer.max_epochs=2")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        run(tmp_path, "again", tiny_mnist, f"ckpt_path={tmp_path}/nope.ckpt")
    assert ckpt.read_bytes() == before


def test_command_line_run_and_sample(tmp_path, tiny_mnist):
    run_dir = tmp_path / "cli_run"
    proc = _cli("gan.train", *fast_overrides(tiny_mnist), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Run directory: {run_dir}" in proc.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    proc = _cli(
        "gan.sample",
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        "num_samples=10",
        "out=grid.png",
        "npy=samples.npy",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "grid.png").is_file()
    import numpy as np

    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (10, 1024) and samples.dtype == np.float32
    assert samples.min() >= -1 and samples.max() <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli_run", "grid.png", "samples.npy"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.g_act=swish", "error: Unknown activation 'swish' for model.g_act"),
        ("data.download=false", "error: MNIST files missing in"),
    ],
)
def test_command_line_errors_are_one_clear_message(tmp_path, tiny_mnist, override, message):
    data = tiny_mnist if "g_act" in override else tmp_path / "empty"
    proc = _cli("gan.train", *fast_overrides(data), override, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


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


def test_multirun_sweep_gives_each_job_its_own_run_directory(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    proc = _cli(
        "gan.train",
        "-m",
        "model.g_act=relu,tanh",
        "seed=0,1",
        *fast_overrides(tiny_mnist),
        "trainer.max_steps=3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    # each folder says which job it is: its number and its overrides, as Hydra's override_dirname writes them
    assert [p.name.split("+")[0] for p in jobs] == [f"{i}_data.batch_size:32" for i in range(4)]
    assert "model.g_act:tanh+seed:1" in jobs[3].name and "data.root" not in jobs[3].name
    seen = set()
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file() and list((job / "tensorboard").glob("events.*"))
        ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        member = ckpt["hyper_parameters"]["members"][0]
        seen.add((member["g_act"], member["fixed_noise_seed"]))
    assert seen == {("relu", 0), ("relu", 1), ("tanh", 0), ("tanh", 1)}


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


def test_a_sweep_goes_on_after_a_diverging_and_a_bad_job(tmp_path, tiny_mnist):
    """D's learning rate of 1e30 makes the losses non-finite at once (diverged); an unknown activation is refused
    (no files)."""
    import json

    sweep = tmp_path / "sweep"
    proc = _cli(
        "gan.train",
        "-m",
        "model.optimizer_d.lr=0.0002,1e30",
        "model.d_act=leaky_relu,nope",
        *fast_overrides(tiny_mnist),
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        results = job / "results.json"
        key = ("lr=0.0002" not in overrides, "d_act=nope" in overrides)  # Hydra writes 1e30 as 1e+30
        statuses[key] = json.loads(results.read_text())["status"] if results.exists() else None
    assert statuses == {(False, False): "finished", (True, False): "diverged", (False, True): None, (True, True): None}
    assert "error: Unknown activation 'nope' for model.d_act" in proc.stderr and "run diverged" in proc.stderr


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


def test_sampling_refuses_a_diverged_or_foreign_checkpoint(tmp_path, tiny_mnist):
    """gan.sample (and gan.evaluate, through the same checks) never writes NaN samples or shows a traceback."""
    from omegaconf import OmegaConf

    from gan import sample

    _, first = run(tmp_path, "first", tiny_mnist)
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["state_dict"]["generator.net.out.weight"][0, 0, 0] = float("nan")
    diverged = tmp_path / "diverged.ckpt"
    torch.save(ckpt, diverged)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    args = {"num_samples": 4, "nrow": 2, "npy": None, "seed": 0, "device": "cpu", "ema": None}
    for path, message in ((diverged, "produces non-finite samples"), (garbage, "not a readable checkpoint")):
        out = tmp_path / f"{path.stem}.png"
        with pytest.raises(CheckpointError, match=message):
            sample.run(OmegaConf.create({**args, "ckpt_path": str(path), "out": str(out)}))
        assert not out.exists()
    good = tmp_path / "good.png"
    sample.run(OmegaConf.create({**args, "ckpt_path": str(first / "checkpoints" / "last.ckpt"), "out": str(good)}))
    assert good.is_file()
