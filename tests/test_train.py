"""The ``python -m gan.train`` command: runs, sweeps, error messages, and every experiment's config."""

import json
from pathlib import Path

import pytest
import torch

from gan.model.activations import ACTIVATION_NAMES
from gan.runs.fit import train
from gan.runs.schema import CONF_DIR
from tests.helpers import _cli, build_model, compose_train, fast_overrides


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    # each folder says which job it is: its number and what the run is, the activations first and the seed last
    # (gan/runs/names.py); where and how it runs, and its budget, are left out
    assert [p.name for p in jobs] == [
        f"{i}_g_act:{act}+data.batch_size:32+seed:{seed}"
        for i, (act, seed) in enumerate([("relu", 0), ("relu", 1), ("tanh", 0), ("tanh", 1)])
    ]
    seen = set()
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file() and list(job.glob("events.*"))
        ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        member = ckpt["hyper_parameters"]["members"][0]
        seen.add((member["g_act"], member["fixed_noise_seed"]))
    assert seen == {("relu", 0), ("relu", 1), ("tanh", 0), ("tanh", 1)}


@pytest.mark.slow
def test_a_sweep_goes_on_after_a_diverging_and_a_bad_job(tmp_path, tiny_mnist):
    """D's learning rate of 1e30 makes the losses non-finite at once (diverged); an unknown activation is refused
    (no folder at all); the other jobs run, and the sweep ends with exit 2 naming the refused ones."""
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
    assert proc.returncode == 2, proc.stderr[-3000:]
    statuses = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        results = job / "results.json"
        key = ("lr=0.0002" not in overrides, "d_act=nope" in overrides)  # Hydra writes 1e30 as 1e+30
        statuses[key] = json.loads(results.read_text())["status"] if results.exists() else None
    assert statuses == {(False, False): "finished", (True, False): "diverged"}  # the refused jobs wrote nothing
    assert "error: Unknown activation 'nope' for model.d_act" in proc.stderr and "run diverged" in proc.stderr


EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def needed(name: str, folder: Path) -> list[str]:
    """What an experiment needs beside itself: the confirmation reads a tuning study's best draws (here one entry
    that every configuration matches)."""
    if name != "tuning_confirm":
        return []
    settings = {"lr_g": 1e-4, "lr_d": 3e-4, "beta1": 0.0, "init": "variance_preserving", "loss": "ns"}
    best = folder / "best_draws.json"
    entry = {"configuration": {}, "label": "every configuration", "draw": 1, "settings": settings, "draws_done": 9}
    best.write_text(json.dumps({"draws_per_configuration": 9, "configurations": [entry]}))
    return [f"tuning.best_from={best}"]


def sweep_axes(cfg) -> dict[str, list[str]]:
    """The experiment's sweep as Hydra parses it: axis -> its values (quoted and list values kept whole)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes = {}
    for key, value in cfg.hydra.sweeper.params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        axes[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    return axes


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_composes_into_a_grid_of_valid_values(name, tmp_path):
    """Every value of every axis composes with the experiment and builds its model and data settings; every
    experiment repeats each configuration (over seeds, or a tuning study's draws, each with its own seed)."""
    extra = needed(name, tmp_path)
    axes = sweep_axes(compose_train([f"experiment={name}", *extra], keep_hydra=True))
    repeats = "seed" if "seed" in axes else "tuning.draw"
    assert len(axes[repeats]) >= 2
    assert sum(len(v) > 1 for k, v in axes.items() if k != repeats) >= 1  # it compares something
    for key, values in axes.items():
        for value in values:
            cfg = compose_train([f"experiment={name}", *extra, f"{key}={value}"])
            build_model(cfg)
            if key in ("model.g_act", "model.d_act"):
                assert value in ACTIVATION_NAMES


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_its_first_jobs(tmp_path, tiny_mnist, name):
    axes = sweep_axes(compose_train([f"experiment={name}"], keep_hydra=True))
    # the experiment's first job (the first value of each of its sweep's axes), trained in process on tiny data for
    # 3 iterations (the sweeps themselves: tests/test_train.py and tests/runs/test_launcher.py)
    grid = [f"{k}={v[0]}" for k, v in axes.items()]
    overrides = [
        f"experiment={name}",
        *needed(name, tmp_path),
        *grid,
        *fast_overrides(tiny_mnist),
        "trainer.max_steps=3",
        "data.train_size=null",
    ]
    summary = train(compose_train(overrides, tmp_path / "job"))
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert summary["status"] == results["status"] == "finished" and results["iterations"] == 3
    if "model.g_act" in axes:
        assert results["config"]["model"]["g_act"] == axes["model.g_act"][0]
