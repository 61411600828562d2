"""A study run again touches only its unfinished jobs; a refused run or sweep writes nothing; a place that cannot
hold a run folder is refused before Hydra writes (gan.runs.rundir, gan.train, the packed launcher)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, _cli, fast_overrides

SMALL = ["model.g_hidden=[32]", "model.d_hidden=[32]", "trainer.max_steps=3"]
LAUNCHERS = {"basic": [], "packed": ["hydra/launcher=packed"]}  # joblib's jobs run gan.train's main as basic's do


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def sweep(folder: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    """The 2-job study (relu and tanh G) into ``folder``: ``python -m gan.train -m ...`` with ARGS last."""
    overrides = [*fast_overrides(data), *SMALL, "model.g_act=relu,tanh", f"hydra.sweep.dir={folder}", *args]
    return _cli("gan.train", "-m", *overrides, cwd=folder.parent)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_mnist) -> Path:
    """The 2-job study, both jobs finished (basic launcher)."""
    folder = tmp_path_factory.mktemp("study") / "sweep"
    proc = sweep(folder, tiny_mnist)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(folder.glob("*/results.json"))) == 2
    return folder


@pytest.fixture
def study(tmp_path, finished_study) -> Path:
    """A copy of the finished study to run again."""
    return Path(shutil.copytree(finished_study, tmp_path / "sweep"))


@pytest.fixture
def lock_holder(tmp_path):
    """Start a process that holds a run folder's lock (as a live run does) until the test ends."""
    holders: list[subprocess.Popen] = []

    def hold(folder: Path) -> subprocess.Popen:
        claim = f"from gan.runs.rundir import claim_run_dir; claim_run_dir({str(folder)!r})"
        code = f"{claim}; print('held', flush=True); input()"
        holder = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- a study run again
@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_study_rerun_leaves_every_finished_job_byte_for_byte(study, tmp_path, tiny_mnist, launcher):
    """Run again with another data.root and diag.histograms: every file of the finished jobs (.hydra/, train.log,
    checkpoints, events, results.json) and the sweep's multirun.yaml stay as they were, and the jobs say which
    settings the command asks otherwise than they ran with."""
    other_data = Path(shutil.copytree(tiny_mnist, tmp_path / "other_mnist"))
    before = tree(study)
    proc = sweep(study, other_data, "diag.histograms=false", *LAUNCHERS[launcher])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("already finished in") == 2 and "skipped, its folder left as it is" in out
    assert f"data.root (ran '{tiny_mnist}', asked '{other_data}')" in out
    assert "diag.histograms (ran True, asked False)" in out
    assert tree(study) == before


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "packed"])
def test_a_finished_job_with_a_damaged_record_is_reported_and_left_alone(study, tiny_mnist, launcher):
    """Never trained over: the job is refused by name with the way out, and its folder stays as it is."""
    (job,) = study.glob("1_*")
    (job / "results.json").write_text('{"status": "fini')
    before = tree(study)
    proc = sweep(study, tiny_mnist, *LAUNCHERS[launcher])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"its folder {job} holds a run whose record cannot be read (unreadable results.json" in proc.stderr
    assert "not trained over" in proc.stderr and f"mv '{job}' '{job}.damaged'" in proc.stderr
    assert tree(study) == before
    if launcher == "packed":
        return
    (job / "results.json").unlink()  # a run's checkpoints and event file without its record: damaged too
    proc = sweep(study, tiny_mnist)
    assert proc.returncode == 2 and "no results.json beside the run's checkpoints, events.out.tfevents" in proc.stderr
    assert len(list(job.glob("events.out.tfevents*"))) == 1


# ----------------------------------------------------------------------------- refused runs write nothing
@pytest.mark.slow
@pytest.mark.parametrize("how", ["single", "basic", "packed"])
def test_a_refused_run_or_sweep_writes_nothing(tmp_path, tiny_mnist, how):
    """A bad value: no run folder, lock, train.log or .hydra/ (a sweep: no sweep folder either)."""
    place = tmp_path / "place" / "deeper"
    bad = [*fast_overrides(tiny_mnist), "model.g_act=nope", "seed=0,1,2"]
    if how == "single":
        proc = _cli("gan.train", *bad[:-1], f"hydra.run.dir={place}", cwd=tmp_path)
    else:
        proc = _cli("gan.train", "-m", *bad, f"hydra.sweep.dir={place}", *LAUNCHERS[how], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Unknown activation 'nope' for model.g_act" in proc.stderr
    if how == "basic":
        assert "error: 3 job(s) of this sweep were refused" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even tmp_path/place


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "packed"])
def test_the_second_of_two_sweeps_into_one_folder_exits_non_zero(
    tmp_path, tiny_mnist, finished_study, lock_holder, launcher
):
    """Another live run holds job 1's folder: that job is refused with the holder named, its folder is not
    touched, and the sweep ends with exit status 2 (the packed launcher starts no pack at all)."""
    folder = tmp_path / "sweep"
    busy = folder / next(finished_study.glob("1_*")).name  # the folder the study's job 1 writes
    holder = lock_holder(busy)
    before = tree(busy)
    proc = sweep(folder, tiny_mnist, *LAUNCHERS[launcher])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{busy} is being written by a live run (pid {holder.pid} on " in proc.stderr
    assert tree(busy) == before
    if launcher == "basic":  # the other job trained; the sweep says which job was refused
        assert "error: 1 job(s) of this sweep were refused" in proc.stderr
        assert len(list(folder.glob("0_*/results.json"))) == 1
    else:
        assert "no pack was started" in proc.stderr
        assert sorted(p.name for p in folder.iterdir()) == [busy.name]


# ----------------------------------------------------------------------------- places that cannot hold a run
@pytest.mark.slow
def test_a_run_folder_where_a_file_stands_is_refused_before_hydra_writes(tmp_path, tiny_mnist):
    stone = tmp_path / "a_file"
    stone.write_text("keep me")
    for args, key, place in ([], "hydra.run.dir", stone), (["-m"], "hydra.sweep.dir", stone / "below"):
        proc = _cli("gan.train", *args, *fast_overrides(tiny_mnist), f"{key}={place}", cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"error: {key}={place} cannot be a folder: {stone} is a file" in proc.stderr
    assert stone.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_places_that_cannot_hold_a_run_folder_are_named(tmp_path):
    from gan.errors import StorageError
    from gan.runs.rundir import check_writable_place

    stone = tmp_path / "a_file"
    stone.write_text("")
    for place in (stone, stone / "a" / "b"):
        with pytest.raises(StorageError, match=f"{stone} is a file"):
            check_writable_place(place, "hydra.run.dir")
    check_writable_place(tmp_path / "new" / "folder", "hydra.run.dir")  # made later, by the run
    if os.geteuid() == 0:
        pytest.skip("running as root: a folder's permissions do not stop root's writes (the file cases ran)")
    locked = tmp_path / "read_only"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(
            StorageError, match=f"hydra.sweep.dir={locked / 'x'} cannot be written: {locked} is read-only"
        ):
            check_writable_place(locked / "x", "hydra.sweep.dir")
    finally:
        locked.chmod(0o700)


# ----------------------------------------------------------------------------- the pieces
def test_checking_a_folders_lock_writes_nothing(tmp_path):
    from gan.runs.rundir import check_run_dir, lock_holder

    folder = tmp_path / "job"
    folder.mkdir()
    assert lock_holder(folder) is None and lock_holder(tmp_path / "absent") is None
    check_run_dir(folder, in_place=False, multirun=True)
    assert list(folder.iterdir()) == [] and not (tmp_path / "absent").exists()


def test_a_refused_run_takes_back_only_what_it_wrote(tmp_path):
    from gan.runs.rundir import HELD_LOCKS, claim_run_dir, withdraw_run_dir, write_hydra_record

    new = tmp_path / "a" / "b" / "run"
    claim_run_dir(new)
    write_hydra_record(new, {"config.yaml": "seed: 0\n", "overrides.yaml": "[]\n"})
    withdraw_run_dir(new)
    assert not (tmp_path / "a").exists() and new.resolve() not in HELD_LOCKS

    started = tmp_path / "started"  # a run started here (its results.json): everything stays
    started.mkdir()
    (started / "results.json").write_text("{}")
    claim_run_dir(started)
    withdraw_run_dir(started)
    assert sorted(p.name for p in started.iterdir()) == [".lock", "results.json"]

    mine = tmp_path / "mine"  # a folder that held the user's own file before: only the lab's files go
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    claim_run_dir(mine)
    withdraw_run_dir(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_the_settings_a_rerun_asks_otherwise_are_named():
    from gan.runs.plan import recorded_differences

    ran = {"data": {"root": "a", "seed": 0}, "diag": {"histograms": True}, "run_dir": "/x", "old": 1}
    asked = {"data": {"root": "b", "seed": 0}, "diag": {"histograms": True}, "run_dir": "/y", "ckpt_path": "/x/l"}
    assert recorded_differences(asked, ran) == ["data.root (ran 'a', asked 'b')", "old (ran 1, asked 'unset')"]
    assert recorded_differences(ran, ran) == []


def test_a_sweep_folder_keeps_its_first_multirun_yaml_and_a_refused_sweep_takes_its_own_back(tmp_path):
    from gan.runs.rundir import _leave_sweep_dir

    study = tmp_path / "study"
    (study / "0_seed:0").mkdir(parents=True)
    (study / "0_seed:0" / "results.json").write_text("{}")
    (study / "multirun.yaml").write_text("the rerun's")
    _leave_sweep_dir(study, [], b"the first command's")
    assert (study / "multirun.yaml").read_bytes() == b"the first command's"

    refused = tmp_path / "multirun" / "day" / "time"  # made by the sweep, whose every job was refused
    refused.mkdir(parents=True)
    (refused / "multirun.yaml").write_text("x")
    _leave_sweep_dir(refused, [refused, refused.parent, refused.parent.parent], None)
    assert not (tmp_path / "multirun").exists()
