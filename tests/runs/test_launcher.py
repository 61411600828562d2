"""gan.runs.launcher: the packed launcher and the Hydra plugins (joblib, submitit, Optuna)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from gan.report import main as report_main
from tests.helpers import _cli, compose_train, fast_overrides, scalars

pytestmark = pytest.mark.slow  # every test runs a sweep with python -m gan.train

EVAL_ON = ["eval.enabled=true", "eval.min_evaluator_accuracy=0", "eval.num_samples=64", "eval.every_n_epochs=1"]
SMALL = ["model.g_hidden=[32]", "model.d_hidden=[32]"]
GRID = ["model.g_act=relu,tanh", "model.d_act=leaky_relu,elu"]


def sweep_with(tmp_path: Path, data: Path, name: str, *args: str, check: bool = True):
    folder = tmp_path / name
    proc = _cli("gan.train", "-m", *fast_overrides(data), *SMALL, *args, f"hydra.sweep.dir={folder}", cwd=tmp_path)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc


def jobs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if (p / ".hydra").is_dir()}


def results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def test_a_packed_sweep_gives_the_same_runs_as_the_unpacked_one(tmp_path, tiny_mnist, capsys):
    """4 jobs as one pack against the basic launcher's runs: same folders, files, weights, logged losses and
    metrics."""
    plain, _ = sweep_with(tmp_path, tiny_mnist, "plain", *GRID, *EVAL_ON, "trainer.max_epochs=2")
    packed, proc = sweep_with(
        tmp_path, tiny_mnist, "packed", "hydra/launcher=packed", *GRID, *EVAL_ON, "trainer.max_epochs=2"
    )
    assert "Training 4 of 4 jobs in 1 pack(s): 4 members" in proc.stdout + proc.stderr
    assert jobs(plain).keys() == jobs(packed).keys() and len(jobs(plain)) == 4
    for name, job in jobs(packed).items():
        other = jobs(plain)[name]
        files = sorted(str(p.relative_to(job)) for p in job.rglob("*") if "events." not in p.name)
        assert files == sorted(str(p.relative_to(other)) for p in other.rglob("*") if "events." not in p.name)
        assert len(list(job.glob("events.*"))) == 1  # each member its own event file
        a, b = results(job), results(other)
        assert a["status"] == b["status"] == "finished"
        for key in ("fid", "is", "modes", "precision", "recall"):
            assert a["final"][key] == pytest.approx(b["final"][key], rel=1e-5, abs=1e-6), (name, key)
        wa = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        wb = torch.load(other / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wb)
        sa, sb = scalars(job), scalars(other)
        assert [v for _, v in sa["train/g_loss"]] == pytest.approx([v for _, v in sb["train/g_loss"]], abs=1e-5)
    report_main([str(packed)])  # gan.report's command line
    assert "4 runs, 4 configurations" in capsys.readouterr().out
    assert "4 runs: 4 finished" in (packed / "report.md").read_text()
    sample = _cli(
        "gan.sample",
        f"ckpt_path={next(iter(jobs(packed).values()))}/checkpoints/best-fid.ckpt",
        "num_samples=4",
        "out=grid.png",
        cwd=tmp_path,
    )
    assert sample.returncode == 0, sample.stderr[-2000:]


def test_max_members_cuts_packs_and_incompatible_jobs_pack_apart(tmp_path, tiny_mnist):
    _, proc = sweep_with(
        tmp_path,
        tiny_mnist,
        "cut",
        "hydra/launcher=packed",
        "hydra.launcher.max_members=3",
        "model.g_act=relu,tanh,elu",
        "seed=0,1",
        "data.batch_size=16,32",
        "trainer.max_steps=2",
    )
    packs = "Training 12 of 12 jobs in 4 pack(s): 3 members; 3 members; 3 members; 3 members"
    assert packs in proc.stderr + proc.stdout


def test_a_bad_value_in_any_job_stops_the_sweep_before_any_training(tmp_path, tiny_mnist):
    sweep, proc = sweep_with(
        tmp_path, tiny_mnist, "bad", "hydra/launcher=packed", "model.d_act=leaky_relu,nope", "seed=0,1", check=False
    )
    assert proc.returncode == 2
    assert "error: job 2 (" in proc.stderr and "model.d_act=nope" in proc.stderr
    assert "Unknown activation 'nope' for model.d_act" in proc.stderr and "no pack was started" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(sweep.rglob("results.json")) and not list(sweep.rglob("*.ckpt"))


STUDY = ["model.g_act=relu,tanh", "hydra.sweep.subdir=${hydra.job.num}"]


@pytest.fixture(scope="module")
def study_sweeps(tmp_path_factory, tiny_mnist) -> tuple[Path, Path]:
    """A 2-job study trained straight for 2 epochs (basic launcher), and the same study stopped after 1 as one pack
    of 2 (its job 1's checkpoint split from the pack's)."""
    tmp = tmp_path_factory.mktemp("study")
    straight, _ = sweep_with(tmp, tiny_mnist, "straight", *STUDY, "trainer.max_epochs=2")
    one_epoch, _ = sweep_with(tmp, tiny_mnist, "one", "hydra/launcher=packed", *STUDY, "trainer.max_epochs=1")
    return straight, one_epoch


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=packed"]], ids=["basic", "packed"])
def test_rerunning_a_study_skips_finished_jobs_and_resumes_interrupted_ones(
    tmp_path, tiny_mnist, study_sweeps, launcher
):
    """One job finished, one killed after its first epoch: the same command again finishes the second exactly as an
    uninterrupted run and leaves the first untouched."""
    args = [*launcher, *STUDY, "trainer.max_epochs=2"]
    straight, one_epoch = study_sweeps
    study = tmp_path / "study"
    shutil.copytree(straight, study)
    # job 1 as a kill after its first epoch leaves it: results.json "running", last.ckpt of epoch 1
    shutil.rmtree(study / "1")
    shutil.copytree(one_epoch / "1", study / "1")
    record = results(study / "1")
    (study / "1" / "results.json").write_text(json.dumps({**record, "status": "running"}))
    done_before = (study / "0" / "checkpoints" / "last.ckpt").read_bytes()

    proc = _cli("gan.train", "-m", *fast_overrides(tiny_mnist), *SMALL, *args, f"hydra.sweep.dir={study}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already finished" in proc.stdout + proc.stderr
    assert (study / "0" / "checkpoints" / "last.ckpt").read_bytes() == done_before
    resumed, expected = results(study / "1"), results(straight / "1")
    assert resumed["status"] == "finished" and resumed["iterations"] == expected["iterations"] == 16
    assert resumed["resumed"] == 1
    wa = torch.load(study / "1" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(straight / "1" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wb)


def test_optuna_batches_of_trials_train_as_packs(tmp_path, tiny_mnist):
    sweep, proc = sweep_with(
        tmp_path,
        tiny_mnist,
        "optuna",
        "hparams_search=optuna_lr",
        "hydra/launcher=packed",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        *EVAL_ON,
        "trainer.max_epochs=1",
    )
    assert (proc.stdout + proc.stderr).count("Training 2 of 2 jobs in 1 pack(s): 2 members") == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    fids = [results(job)["final"]["fid"] for job in jobs(sweep).values()]
    assert len(fids) == 4 and best["best_value"] == min(fids)


def test_each_pack_is_one_submitit_job(tmp_path, tiny_mnist):
    cfg = compose_train(["hydra/launcher=packed_slurm"], keep_hydra=True)
    assert cfg.hydra.launcher._target_.endswith("PackedSlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1
    sweep, _ = sweep_with(
        tmp_path,
        tiny_mnist,
        "submitit",
        "hydra/launcher=packed_submitit_local",
        "hydra.launcher.timeout_min=5",
        "model.g_act=relu,tanh",
        "seed=0,1",
        "trainer.max_steps=3",
    )
    assert sorted(results(job)["status"] for job in jobs(sweep).values()) == ["finished"] * 4
    submitted = [p for p in (sweep / ".submitit").iterdir() if p.is_dir() and p.name != "%j"]
    assert len(submitted) == 1  # one pack, one job
    assert "member of a pack of 4" in next(submitted[0].glob("*_log.out")).read_text()


def _statuses(sweep):
    return sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/results.json"))


def test_joblib_runs_jobs_in_parallel_processes(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    proc = _cli(
        "gan.train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.g_act=relu,tanh",
        *fast_overrides(tiny_mnist),
        "trainer.max_steps=3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    assert _statuses(sweep) == ["finished", "finished"]


def test_slurm_config_composes_and_submitit_runs_a_job_locally(tmp_path, tiny_mnist):
    cfg = compose_train(["hydra/launcher=slurm"], keep_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1
    sweep = tmp_path / "sweep"
    proc = _cli(
        "gan.train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.submitit_folder=${hydra.sweep.dir}/.submitit/%j",
        *fast_overrides(tiny_mnist),
        "trainer.max_steps=3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _statuses(sweep) == ["finished"]


def test_optuna_search_minimises_the_returned_fid(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    proc = _cli(
        "gan.train",
        "-m",
        "hparams_search=optuna_lr",
        "hydra.sweeper.n_trials=2",
        *fast_overrides(tiny_mnist),
        "eval.enabled=true",
        "eval.min_evaluator_accuracy=0",
        "eval.num_samples=64",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    fids = {}
    for results in sweep.glob("*/results.json"):
        data = json.loads(results.read_text())
        fids[data["config"]["model"]["optimizer_g"]["lr"]] = data["final"]["fid"]
        assert isinstance(data["config"]["model"]["optimizer_d"]["betas"], list)
    assert len(fids) == 2
    assert best["best_value"] == min(fids.values())
    assert fids[best["best_params"]["model.optimizer_g.lr"]] == best["best_value"]
