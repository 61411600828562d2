"""Faults: signals, divergence, damaged or foreign files, full disks, folders already in use. Each ends with an
honest record and a clear message, never a traceback, silent success, lost data or code run from a file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from gan.errors import Interrupted, RunFailed
from tests.conftest import REPO, _cli, compose_train, fast_overrides, make_mnist, run, scalars, weights


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
    import gan.runs.training

    _, straight = run(tmp_path, "straight", tiny_mnist, "trainer.max_steps=12", "trainer.max_epochs=-1")
    build = gan.runs.training.build_trainer

    def with_signal(*args, **kwargs):
        trainer = build(*args, **kwargs)
        if not kwargs.get("quiet"):
            trainer.callbacks.append(SignalAt(5, signum))
        return trainer

    monkeypatch.setattr(gan.runs.training, "build_trainer", with_signal)
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
    assert [s for s, _ in later] == list(range(5, 12))
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


# ----------------------------------------------------------------------------- files that are not what they claim
class RunsCode:
    """A pickle that runs a shell command when unpickled by a permissive loader (what a crafted .ckpt does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_is_refused_by_every_entry_point_and_runs_nothing(tmp_path, tiny_mnist):
    """gan.train (resume), gan.sample, gan.evaluate and the evaluator's cache read with weights_only=True."""
    from omegaconf import OmegaConf

    from gan import evaluate, sample
    from gan.errors import CheckpointError
    from gan.eval.classifier import _load_cache

    marker = tmp_path / "code_ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"hyper_parameters": {"members": [RunsCode(marker)]}, "state_dict": {}}, crafted)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint of this lab"):
        run(tmp_path, "resumed", tiny_mnist, f"ckpt_path={crafted}")
    assert not (tmp_path / "resumed").exists()
    args = {"ckpt_path": str(crafted), "num_samples": 8, "seed": 0, "device": "cpu", "ema": None}
    with pytest.raises(CheckpointError, match="is not a readable checkpoint of this lab"):
        sample.run(OmegaConf.create({**args, "nrow": 4, "out": str(tmp_path / "s.png"), "npy": None}))
    with pytest.raises(CheckpointError, match="is not a readable checkpoint of this lab"):
        evaluate.run(OmegaConf.create({**args, "data": {"root": str(tiny_mnist)}, "min_evaluator_accuracy": 0.0}))
    assert _load_cache(crafted, {}) is None  # an evaluator cache that is a crafted pickle is rebuilt, not run
    assert not marker.exists() and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_test_file_is_named_before_any_work(tmp_path, gz):
    """All four MNIST files are checked from their headers and lengths up front (a .gz by its stored length):
    a truncated test-label file stops the run before the evaluator would retrain for minutes."""
    from gan.errors import DataError

    data = make_mnist(tmp_path / "data", gz=gz)
    labels = next((data / "MNIST" / "raw").glob("t10k-labels-idx1-ubyte*"))
    labels.write_bytes(labels.read_bytes()[:-7])
    run_dir = tmp_path / "run"
    cfg = compose_train(fast_overrides(data, **{"eval.enabled": True}), run_dir)
    from gan.runs.training import train

    with pytest.raises(DataError, match=f"{labels.name} is truncated or corrupted"):
        train(cfg)
    assert not run_dir.exists()


# ----------------------------------------------------------------------------- a run folder belongs to one run
@pytest.mark.slow
def test_a_folder_that_holds_a_run_is_never_reused(tmp_path, tiny_mnist):
    """A second run into a finished run's folder is refused (in process and on the command line, where Hydra would
    otherwise rewrite .hydra/ first); the first run's files are byte for byte as they were."""
    from gan.errors import ConfigError

    _, first = run(tmp_path, "first", tiny_mnist)
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}  # the lock file's text included
    with pytest.raises(ConfigError, match="already holds a run .status finished, 8 iterations.*ckpt_path="):
        run(tmp_path, "first", tiny_mnist, "seed=3")
    proc = _cli("gan.train", *fast_overrides(tiny_mnist), "seed=4", f"hydra.run.dir={first}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "already holds a run" in proc.stderr
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before


def test_a_folder_being_written_by_a_live_process_is_refused(tmp_path):
    """The folder's lock (an flock held by the writing process, freed when it dies) names the writer."""
    from gan.errors import ConfigError
    from gan.runs.rundir import claim_run_dir

    folder = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from gan.runs.rundir import claim_run_dir; claim_run_dir({str(folder)!r}); input()"],
        stdin=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (folder / ".lock").exists():
            time.sleep(0.1)
        time.sleep(0.5)
        with pytest.raises(ConfigError, match=f"is being written by a live run .pid {holder.pid} on "):
            claim_run_dir(folder)
    finally:
        holder.kill()
        holder.wait()
    claim_run_dir(folder)  # a killed writer leaves no stale lock behind


def test_default_run_folders_cannot_collide():
    """Two runs started in the same second get two folders (named to the microsecond)."""
    import re

    first, second = (compose_train(keep_hydra=True).hydra for _ in range(2))
    for hydra in (first, second):
        assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", hydra.run.dir)
        assert re.fullmatch(r"outputs/multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", hydra.sweep.dir)
    assert first.run.dir != second.run.dir


# ----------------------------------------------------------------------------- honest records
def test_a_running_record_whose_writer_is_gone_reads_as_killed(tmp_path):
    from datetime import datetime, timedelta, timezone

    from gan.runs.rundir import STALE_S, RunResults

    record = RunResults(tmp_path, {"seed": 0})
    record.write()
    assert RunResults.load(tmp_path).state() == "running"  # this very process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record.data["pid"] = int(dead.stdout)
    record.write()
    assert RunResults.load(tmp_path).state() == "killed"
    old = datetime.now(timezone.utc) - timedelta(seconds=STALE_S + 60)
    data = {**record.data, "host": "another-machine", "heartbeat": old.isoformat(timespec="seconds")}
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert RunResults.load(tmp_path).state() == "killed"
    data["heartbeat"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert RunResults.load(tmp_path).state() == "running"


@pytest.mark.slow
def test_a_full_disk_fails_the_run_clearly_and_keeps_the_last_good_checkpoint(tmp_path, tiny_mnist, monkeypatch):
    """The second epoch's last.ckpt cannot be written (ENOSPC): the run ends ``failed`` with the disk named, no
    temporary file is left, and the first epoch's last.ckpt still loads and resumes."""
    import errno

    import gan.runs.callbacks

    real_save, calls = torch.save, []

    def full_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            real_save(obj, path, *args, **kwargs)  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(gan.runs.callbacks.torch, "save", full_disk)
    with pytest.raises(RunFailed, match="failed: StorageError: Cannot write .*last.ckpt: the disk is full"):
        run(tmp_path, "full", tiny_mnist, "trainer.max_epochs=2", "callbacks.periodic_checkpoint=null")
    monkeypatch.undo()
    folder = tmp_path / "full"
    assert not list(folder.rglob("*.tmp"))
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "failed" and "the previous last.ckpt is kept as it was" in results["reason"]
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8 * 2
    summary, _ = run(
        tmp_path, "resumed", tiny_mnist, f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2"
    )
    assert summary["status"] == "finished" and summary["iterations"] == 16


# ----------------------------------------------------------------------------- entry points speak in messages
@pytest.mark.slow
def test_sample_and_evaluate_arguments_are_refused_before_reading_the_checkpoint(tmp_path, tiny_mnist):
    _, first = run(tmp_path, "first", tiny_mnist)
    ckpt = first / "checkpoints" / "last.ckpt"
    from omegaconf import OmegaConf

    from gan import evaluate, sample
    from gan.errors import ConfigError

    args = {"ckpt_path": str(ckpt), "num_samples": 8, "seed": 0, "device": "cpu", "ema": None, "nrow": 4}
    args |= {"out": str(tmp_path / "s.png"), "npy": None, "data": {"root": str(tiny_mnist)}}
    for bad, message in (
        ({"num_samples": "abc"}, "num_samples must be an integer >= 1 (samples to draw), got 'abc'"),
        ({"nrow": 0}, "nrow must be an integer >= 1"),
        ({"device": "tpu"}, "device='tpu' is not valid; valid choices: cpu, cuda"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            sample.run(OmegaConf.create({**args, **bad}))
    with pytest.raises(ConfigError, match="num_samples must be an integer >= 4"):
        evaluate.run(OmegaConf.create({**args, "num_samples": 2, "min_evaluator_accuracy": 0.0}))
    with pytest.raises(ConfigError, match=r"min_evaluator_accuracy must be a number in \[0, 1\]"):
        evaluate.run(OmegaConf.create({**args, "min_evaluator_accuracy": 1.5}))
    assert not (tmp_path / "s.png").exists()
    out = tmp_path / "new" / "folder" / "grid.png"  # missing folders are made; nothing but the two files is left
    sample.run(OmegaConf.create({**args, "out": str(out), "npy": str(out.with_suffix(".npy"))}))
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.npy", "grid.png"]
    assert np.load(out.with_suffix(".npy")).shape == (8, 1024)


@pytest.mark.slow
def test_report_writes_what_it_can_and_lists_what_it_cannot(tmp_path, tiny_mnist):
    from gan.report import report

    sweep = tmp_path / "sweep"
    _, good = run(sweep, "0_good", tiny_mnist)
    for name, text in (
        ("1_garbage", "\x00\xffnot json"),
        ("2_empty", ""),
        ("3_list", "[1, 2]"),
        ("4_partial", '{"status": "finished", "final": {"fid": 3}}'),
    ):
        (sweep / name).mkdir()
        (sweep / name / "results.json").write_text(text)
    result = report(sweep)
    assert result["runs"] == 5
    text = (sweep / "report.md").read_text()
    for name in ("1_garbage", "2_empty", "3_list", "4_partial"):
        assert f"- `{name}`: unreadable: " in text
    assert (
        "results.json has evaluations without the metrics" in text and "0_good" not in text.split("did not finish")[1]
    )


def test_a_member_with_non_finite_samples_is_diverged_before_it_is_scored():
    """Losses can read finite while G's output is not (e.g. an inf the loss saturates): the evaluation checks the
    samples first and freezes such a member, so no metric or best checkpoint of it is ever written."""
    from gan.model.module import GANModule, member_hparams
    from gan.runs.quality import SampleQuality

    module = GANModule(members=[member_hparams(seed=0), member_hparams(seed=1)])
    with torch.no_grad():
        next(module.generator.parameters())[1].fill_(float("inf"))
    SampleQuality.refuse_nonfinite(module)
    assert module.alive == [True, False]
    assert module.divergence[1][1] == "non-finite samples at iteration 0"
