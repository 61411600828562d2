"""The Hydra plugins the README documents: joblib (parallel local jobs), submitit (SLURM; its local executor runs
here), and the Optuna sweeper with the ready lr/betas search."""

import json

import pytest
import yaml

from tests.conftest import _cli, compose_train, fast_overrides

pytestmark = pytest.mark.slow  # every test runs a sweep with python -m gan.train


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
