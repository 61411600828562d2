"""What a user reads: each run's last line and train.log, a sweep's summary, the accelerator check before anything
is written, the trainer/debug presets, fast_dev_run, the HPARAMS columns and a logger that fails or is swapped."""

import json
import logging
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from gan.errors import ConfigError, RunFailed
from gan.runs.build import member_runs, metric_tags
from gan.runs.console import quiet_lightning, run_line, sweep_summary
from gan.runs.devices import check_accelerator
from gan.runs.fit import train_pack
from gan.runs.names import run_hparams, stabilizers
from gan.runs.plan import prepare
from tests.helpers import _cli, compose_train, fast_overrides, run

SMALL = ["model.g_hidden=[32,32]", "model.d_hidden=[32,32]", "data.batch_size=16"]


def _summary(**extra):
    return {"status": "finished", "iterations": 50, "epochs": 0.05, "wall_s": 3.0, "run_dir": "/r", **extra}


def test_a_runs_last_line_gives_the_verdict_beside_the_fid():
    metrics = {"fid": 134.7, "is": 1.0, "modes": 0.0, "kl_uniform": 2.3, "precision": 1.0, "recall": 0.0}
    line = run_line(_summary(final_metrics=metrics, verdict="collapsed"))
    assert line.startswith("Done: 50 iterations") and "Verdict: collapsed, fid 135 (is=1, modes=0," in line
    assert "precision=1" in line and line.endswith("(tensorboard --logdir /r)")
    assert "Verdict: partial collapse" in run_line(_summary(final_metrics=metrics, verdict="partial collapse"), 4)
    assert "(member of a pack of 4)" in run_line(_summary(), 4) and "Not evaluated" in run_line(_summary())
    diverged = run_line(_summary(status="diverged", reason="non-finite loss in iteration 3"))
    assert diverged.startswith("Diverged:") and "Reason: non-finite loss in iteration 3." in diverged


def test_a_sweep_summary_counts_how_runs_ended_and_names_what_to_run_next():
    records = [
        {"status": "finished", "final": {"verdict": "collapsed"}},
        {"status": "finished", "final": {"verdict": "collapsed"}},
        {"status": "finished", "final": {"verdict": "healthy"}},
        {"status": "diverged"},
        {"status": "failed"},
        {"status": "unreadable"},
    ]
    text = sweep_summary("outputs/multirun/x", records)
    assert text.startswith("Sweep: 6 runs: 3 finished (1 healthy, 2 collapsed), 1 diverged, 1 failed, 0 interrupted")
    assert "1 unreadable" in text
    assert "python -m gan.report outputs/multirun/x" in text and "tensorboard --logdir outputs/multirun/x" in text


def test_lightnings_noise_is_filtered_but_not_its_warnings():
    quiet_lightning()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        logger.info("GPU available: False, used: False")
        logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        logger.info("`Trainer.fit` stopped: `max_steps=100` reached.")
        logger.warning("The dataloader does not have many workers")
    finally:
        logger.removeHandler(handler)
    assert seen == ["The dataloader does not have many workers"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a CUDA device")
def test_asking_for_a_gpu_without_one_names_the_fix():
    with pytest.raises(ConfigError) as info:
        check_accelerator("gpu")
    message = str(info.value)
    assert message.startswith("trainer.accelerator=gpu asks for a CUDA device (GPU), but no CUDA device (GPU) is")
    assert "trainer.accelerator=auto" in message and "trainer.accelerator=cpu" in message
    with pytest.raises(ConfigError, match="trainer.accelerator='abacus' is not known. Available names are: .*cpu"):
        check_accelerator("abacus")
    check_accelerator("cpu")
    check_accelerator("auto")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a CUDA device")
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_the_gpu_message_comes_before_any_folder_exists(tmp_path, mode):
    target = tmp_path / "out"
    where = (
        ["-m", "model.g_act=relu,elu", f"hydra.sweep.dir={target}"] if mode == "sweep" else [f"hydra.run.dir={target}"]
    )
    proc = _cli("gan.train", *where, "trainer.accelerator=gpu", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: trainer.accelerator=gpu asks for a CUDA device (GPU)" in proc.stderr
    assert "Traceback" not in proc.stderr and not target.exists()


def test_trainer_and_debug_presets_compose():
    assert compose_train(["trainer=cpu"]).trainer.accelerator == "cpu"
    gpu = compose_train(["trainer=gpu"]).trainer
    assert gpu.accelerator == "gpu" and gpu.devices == 1 and gpu.max_epochs == 20  # the default's other values
    smoke = compose_train(["debug=smoke"])
    assert smoke.trainer.max_steps == 50 and smoke.eval.num_samples == 1000 and not smoke.diag.histograms
    assert smoke.trainer.enable_checkpointing is False


def test_hparams_are_the_defining_settings_with_what_the_sweep_varies():
    cfg = OmegaConf.to_container(
        compose_train(["stability=r1", "model.d_act=tanh", "data.train_size=1000"]), resolve=True
    )
    chosen = run_hparams(cfg, [("stability", "r1"), ("model.d_act", "tanh"), ("data.train_size", "1000")])
    assert list(chosen)[:6] == ["model/g_act", "model/d_act", "model/g_out_act", "model/d_out_act", "model/loss"] + [
        "model/stabilizers"
    ]
    assert chosen["model/stabilizers"] == "r1_weight=10.0" and chosen["stability"] == "r1"
    assert chosen["model/d_act"] == "tanh" and chosen["seed"] == 0 and chosen["data/train_size"] == 1000
    assert len(chosen) < 16  # the few that define a run, not the 98 of the flattened config
    assert (
        stabilizers({"d_spectral_norm": True, "g_norm": "batch", "r1_weight": 0.0}) == "d_spectral_norm, g_norm=batch"
    )
    assert stabilizers({}) == "none"
    tags = metric_tags(OmegaConf.create({"eval": {"enabled": True}}), {"g_ema": False})
    assert tags[:3] == ["eval/fid", "eval/collapse", "eval/diversity"] and "eval/recall" in tags


@pytest.mark.slow
def test_fast_dev_run_means_what_lightning_means(tmp_path, tiny_mnist, capsys):
    """N iterations (the lab's), no evaluation, diagnostics, checkpoints or logger files; results.json says so."""
    summary, run_dir = run(
        tmp_path, "fdr", tiny_mnist, "trainer.fast_dev_run=3", "eval.enabled=true", "diag.enabled=true"
    )
    assert summary["status"] == "finished" and summary["iterations"] == 3
    record = json.loads((run_dir / "results.json").read_text())
    assert record["iterations"] == 3 and record["evaluations"] == [] and record.get("diagnostics") is None
    assert not (run_dir / "checkpoints").exists() and not list(run_dir.glob("events.*"))


@pytest.mark.slow
def test_each_members_train_log_holds_its_own_run(tmp_path, tiny_mnist):
    plans = [
        prepare(compose_train(fast_overrides(tiny_mnist) + SMALL + [f"seed={s}"], tmp_path / f"m{s}")) for s in (0, 1)
    ]
    train_pack(plans)
    for plan, other in ((plans[0], plans[1]), (plans[1], plans[0])):
        log = (tmp_path / plan.run_dir / "train.log").read_text()
        assert "training" in log and "finished at iteration 16" in log and f"Run directory: {plan.run_dir}" in log
        assert other.run_dir not in log
    summary, run_dir = run(tmp_path, "single", tiny_mnist, *SMALL)
    log = (run_dir / "train.log").read_text()
    assert log.count("finished at iteration 16") == 1 and "Done: 16 iterations" in log


@pytest.mark.slow
def test_logger_csv_records_metrics_and_the_defining_settings(tmp_path, tiny_mnist):
    _, run_dir = run(tmp_path, "csv", tiny_mnist, *SMALL, "logger=csv")
    (metrics,) = (run_dir / "csv").glob("*/metrics.csv")  # one folder per start: a resume keeps the earlier one
    header = metrics.read_text().splitlines()[0].split(",")
    assert {"train/d_loss", "train/g_loss", "step"} <= set(header)
    hparams = (metrics.parent / "hparams.yaml").read_text()
    assert "model/g_act: relu" in hparams and not list(run_dir.glob("events.*"))
    assert list((run_dir / "samples").glob("epoch*.png"))  # images go where the logger cannot take them


def test_a_logger_with_wrong_arguments_is_refused_before_anything_is_written(tmp_path, tiny_mnist):
    cfg = compose_train(
        fast_overrides(tiny_mnist) + ["logger._target_=lightning.pytorch.loggers.CSVLogger"], tmp_path / "bad"
    )
    with pytest.raises(ConfigError, match="^logger: .*default_hp_metric"):
        prepare(cfg)
    assert not (tmp_path / "bad").exists()


def test_a_logger_that_fails_when_built_leaves_results_json_failed(tmp_path, tiny_mnist, monkeypatch):
    plan = prepare(compose_train(fast_overrides(tiny_mnist) + SMALL, tmp_path / "fails"))

    def broken(*args, **kwargs):
        raise OSError("the tracking server is unreachable")

    monkeypatch.setattr("gan.runs.build.build_loggers", broken)
    with pytest.raises(RunFailed, match="the logger failed: OSError: the tracking server is unreachable"):
        member_runs([plan])
    record = json.loads((tmp_path / "fails" / "results.json").read_text())
    assert record["status"] == "failed" and "tracking server is unreachable" in record["reason"]
    shutil.rmtree(tmp_path / "fails")


@pytest.mark.slow
def test_hparams_mark_what_the_command_line_names_as_varying(tmp_path, tiny_mnist):
    """TensorBoard sorts varying columns first and ticks only five at first: the named ones must open on screen."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, run_dir = run(tmp_path, "named", tiny_mnist, *SMALL, "seed=3", "stability=r1")
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/experiment"]
    infos = plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos
    differs = {info.name for info in infos if info.differs}
    assert {"seed", "stability"} <= differs and "model/loss" not in differs and "model/g_act" not in differs
    assert [line for line in (run_dir / "train.log").read_text().splitlines() if "training" in line]


def test_a_sweep_sent_to_slurm_checks_only_the_accelerators_name_here():
    from gan.runs.devices import trains_elsewhere

    assert trains_elsewhere("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")
    assert trains_elsewhere("hydra_plugins.gan_packed_launcher.PackedSlurmLauncher")
    assert not trains_elsewhere("hydra_plugins.gan_packed_launcher.PackedLauncher") and not trains_elsewhere(None)
    check_accelerator("gpu", here=False)  # the GPU node's CUDA is checked there
    with pytest.raises(ConfigError, match="is not known"):
        check_accelerator("gpus", here=False)


@pytest.mark.slow
def test_a_study_rerun_under_another_budget_keeps_its_finished_runs_and_says_why(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    base = ["-m", "model.g_act=relu", *fast_overrides(tiny_mnist), *SMALL, f"hydra.sweep.dir={sweep}"]
    assert _cli("gan.train", *base, "trainer.max_steps=2", cwd=tmp_path).returncode == 0
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    before = (job / "results.json").read_text()
    proc = _cli("gan.train", *base, "trainer.max_steps=4", cwd=tmp_path)
    assert "holds a run that finished under another budget: trainer.max_steps=2 (asked 4)" in proc.stderr
    assert (job / "results.json").read_text() == before
