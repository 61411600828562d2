"""gan.runs.rundir: a run folder belongs to one run, and its record stays honest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, _cli, compose_train, fast_overrides, run


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
