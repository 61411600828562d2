"""A full disk at each kind of write the lab makes: checkpoints, results.json, the TensorBoard event file, the sample
grid PNG, the evaluator's cache and gan.report's files. Each must end with ``Cannot write PATH: the disk is full``
naming the file, keep the previous file whole, leave no temporary file, record ``failed`` where results.json can
still be written (and never claim it when it cannot), and exit non-zero.

The disk is ``FullDisk``: Python's ``open`` (which pathlib, PIL, matplotlib, csv and TensorBoard's writer all use)
gives, for the file names it is told, a file whose write stores half its bytes and then fails with ENOSPC, as a
real full disk does. torch's own writer is C++ and bypasses ``open``: its failure is simulated by the RuntimeError
it raises on a short write.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import io
import json
import os
import re
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch

import gan.files
from gan.errors import RunFailed, StorageError
from gan.files import atomic_write, save_torch_atomic, write_json_atomic
from tests.helpers import REPO, fast_overrides, make_mnist, run

REAL_OPEN = io.open
DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


class _ShortFile:
    """A file on a full disk: its first write stores half of what it is given, then fails with ENOSPC."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: Any) -> int:
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _ShortFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def __iter__(self) -> Any:
        return iter(self._fh)


class FullDisk:
    """The disk fills up for files whose names match ``patterns`` (fnmatch), each after ``after[pattern]`` files of
    that name were opened for writing (and written whole); ``failed`` lists the paths whose writes failed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.after: dict[str, int] = {}
        self.opened: dict[str, int] = {}
        self.failed: list[Path] = []
        monkeypatch.setattr(builtins, "open", self.open)
        monkeypatch.setattr(io, "open", self.open)

    def full(self, *patterns: str, after: int = 0) -> FullDisk:
        self.after.update(dict.fromkeys(patterns, after))
        return self

    def freed(self) -> None:
        """Space again: every write succeeds from now on."""
        self.after.clear()

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = REAL_OPEN(file, mode, *args, **kwargs)
        if not isinstance(file, (str, bytes, os.PathLike)) or not any(m in mode for m in "wax+"):
            return fh
        path = Path(os.fsdecode(file))  # TensorBoard's writer opens its event file by a bytes name
        for pattern, after in self.after.items():
            if fnmatch.fnmatch(path.name, pattern):
                self.opened[pattern] = self.opened.get(pattern, 0) + 1
                if self.opened[pattern] > after:
                    self.failed.append(path)
                    return _ShortFile(fh)
        return fh


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    return FullDisk(monkeypatch)


def free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """The disk's free bytes as ``shutil.disk_usage`` tells the lab."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(gan.files.shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - free, free))


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------------------------
# the writer itself


def test_a_full_disk_names_the_file_keeps_the_previous_one_and_leaves_no_temporary_file(tmp_path, disk):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "running"})
    disk.full(".results.json.tmp")
    with pytest.raises(StorageError) as err:
        write_json_atomic(path, {"status": "failed", "padding": "x" * 1000})
    message = str(err.value)
    assert message.startswith(f"Cannot write {path}: the disk is full (the previous results.json is kept as it was")
    assert re.search(r"; it needs 1\.0 kB, [\d.]+ [kMG]B free\)\. Free space or choose a writable folder\.$", message)
    assert err.value.errno == errno.ENOSPC and disk.failed == [tmp_path / ".results.json.tmp"]
    assert json.loads(path.read_text()) == {"status": "running"} and no_temporary_files(tmp_path)


def test_a_new_file_on_a_full_disk_says_none_was_written(tmp_path, disk):
    disk.full(".grid.png.tmp")
    with pytest.raises(StorageError, match=r"grid.png: the disk is full \(no grid.png was written"):
        atomic_write(tmp_path / "grid.png", lambda tmp: tmp.write_bytes(b"\x89PNG" * 100))
    assert not (tmp_path / "grid.png").exists() and no_temporary_files(tmp_path)


def test_a_checkpoint_says_how_much_space_it_needed(tmp_path, disk, monkeypatch):
    free_space(monkeypatch, 1_500_000)
    path = tmp_path / "last.ckpt"
    save_torch_atomic(path, {"w": torch.zeros(10)})
    disk.full(".last.ckpt.tmp")
    with pytest.raises(StorageError, match=r"the previous last.ckpt is kept as it was; it needs 4.0 MB, 1.5 MB free\)"):
        save_torch_atomic(path, {"w": torch.zeros(1_000_000)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(10)) and no_temporary_files(tmp_path)


TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 7060160 vs 7060052"


@pytest.mark.parametrize("free,problem", [(0, "the disk is full"), (10**9, "the write came up short")])
def test_torchs_runtime_error_of_a_short_write_is_worded_as_the_disk(tmp_path, monkeypatch, free, problem):
    """torch.save to a path (its C++ writer) hides the OSError in a RuntimeError; with the folder (nearly) full it is
    the full disk, otherwise a short write with torch's words; any other RuntimeError is not the disk's."""
    path = tmp_path / "evaluator.pt"
    path.write_bytes(b"previous")

    def short_write(obj: Any, file: Any) -> None:
        Path(file).write_bytes(b"half")
        raise RuntimeError(TORCH_SHORT_WRITE)

    free_space(monkeypatch, free)
    with pytest.raises(StorageError, match=f"Cannot write {path}: {problem}"):
        atomic_write(path, lambda tmp: short_write({}, tmp))
    assert path.read_bytes() == b"previous" and no_temporary_files(tmp_path)
    with pytest.raises(RuntimeError, match="something else"):
        atomic_write(path, lambda tmp: (_ for _ in ()).throw(RuntimeError("something else")))


def test_a_read_only_folder_is_named_as_such(tmp_path, monkeypatch):
    def read_only(tmp: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))

    with pytest.raises(StorageError, match=r"Cannot write .*x.json: the file system is read-only \(no x.json"):
        atomic_write(tmp_path / "x.json", read_only)


# --------------------------------------------------------------------------------------------------------------
# training: each kind of file a run writes


def failed_run(tmp_path: Path, data: Path, *extra: str) -> tuple[RunFailed, Path, dict[str, Any]]:
    """A short run in TMP_PATH/full that must fail: its error, folder and results.json."""
    with pytest.raises(RunFailed) as err:
        run(tmp_path, "full", data, *extra)
    folder = tmp_path / "full"
    return err.value, folder, json.loads((folder / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "pattern,after,written,kept",
    [
        (".last.ckpt.tmp", 1, "checkpoints/last.ckpt", "the previous last.ckpt is kept as it was; it needs "),
        (".epoch0001.png.tmp", 0, "samples/epoch0001.png", "no epoch0001.png was written; "),
        ("events.out.tfevents.*", 3, "events.out.tfevents.", "the event file keeps what was written before; "),
    ],
    ids=["checkpoint", "sample_grid", "event_file"],
)
def test_a_full_disk_in_training_fails_the_run_naming_the_file(
    tmp_path, tiny_mnist, disk, pattern, after, written, kept
):
    disk.full(pattern, after=after)
    error, folder, results = failed_run(tmp_path, tiny_mnist, "trainer.max_epochs=2")
    assert disk.failed and error.status == "failed" and error.recorded
    assert error.reason.startswith(f"Cannot write {folder / written}")
    assert f": the disk is full ({kept}" in error.reason and error.reason.endswith("choose a writable folder.")
    assert results["status"] == "failed" and results["reason"] == error.reason
    assert no_temporary_files(folder)
    if written.endswith("last.ckpt"):  # the first epoch's checkpoint, whole: it loads and resumes
        assert torch.load(folder / written, weights_only=True)["global_step"] == 8 * 2
        disk.freed()
        summary, _ = run(tmp_path, "resumed", tiny_mnist, f"ckpt_path={folder / written}", "trainer.max_epochs=2")
        assert summary["status"] == "finished" and summary["iterations"] == 16
    if written.endswith(".png"):
        assert (folder / "samples" / "epoch0000.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_checkpoints_never_go_through_torchs_own_file_writer(tmp_path, tiny_mnist, monkeypatch):
    """torch.save given a path writes it in C++, and a full disk there is an opaque RuntimeError that keeps the file
    open (so even results.json cannot be written after it): the lab's checkpoints are serialized in memory and
    written by Python, whose OSError names the disk (torch's error, should it come, is covered above)."""
    real_save, files = torch.save, []

    def spy(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        files.append(file)
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    summary, folder = run(tmp_path, "spied", tiny_mnist, "callbacks.periodic_checkpoint.every_n_epochs=1")
    assert summary["status"] == "finished" and (folder / "checkpoints" / "epoch0000.ckpt").is_file()
    assert len(files) == 2 and all(isinstance(f, io.BytesIO) for f in files)


@pytest.mark.slow
def test_results_json_on_a_full_disk_at_the_start_is_one_clear_error(tmp_path, tiny_mnist, disk):
    disk.full(".results.json.tmp")
    with pytest.raises(StorageError, match=r"results.json: the disk is full \(no results.json was written"):
        run(tmp_path, "full", tiny_mnist)
    assert not (tmp_path / "full" / "results.json").exists() and no_temporary_files(tmp_path)


FULL_DISK_MAIN = """
import runpy, sys
import pytest
from tests.runs.test_full_disk import FullDisk
FullDisk(pytest.MonkeyPatch()).full(".last.ckpt.tmp").full(".results.json.tmp", after=1)
sys.argv = ["gan.train", *sys.argv[1:]]
runpy.run_module("gan.train", run_name="__main__")
"""


@pytest.mark.slow
def test_a_run_whose_end_cannot_be_recorded_says_so_and_never_claims_it(tmp_path, tiny_mnist):
    """The checkpoint fails, then results.json cannot be written either: the command exits 1 naming the checkpoint,
    says the end went unrecorded, and results.json is the whole ``running`` record it was."""
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK_MAIN, *fast_overrides(tiny_mnist), f"hydra.run.dir={folder}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "recorded in" not in proc.stderr
    assert f"run failed: Cannot write {folder / 'checkpoints' / 'last.ckpt'}: the disk is full" in proc.stderr
    assert "how the run ended could not be recorded (its results.json still says running)" in proc.stderr
    assert f"NOT recorded: {folder / 'results.json'} could not be written and still says running" in proc.stderr
    assert json.loads((folder / "results.json").read_text())["status"] == "running"
    assert no_temporary_files(folder)


def test_train_log_on_a_full_disk_says_so_once_without_tracebacks(tmp_path, disk, capsys):
    from gan.runs.runlog import log_run, run_logs

    disk.full("train.log")
    with run_logs([tmp_path]):
        for i in range(3):
            log_run(tmp_path, f"line {i}")
    err = capsys.readouterr().err
    assert err.count(f"warning: {tmp_path / 'train.log'} takes no more lines: [Errno 28]") == 1
    assert "Traceback" not in err and "Logging error" not in err


# --------------------------------------------------------------------------------------------------------------
# the evaluator's cache and gan.report's files


@pytest.mark.slow  # trains the evaluator (1 epoch on tiny data)
def test_the_evaluators_cache_on_a_full_disk(tmp_path, disk, monkeypatch):
    from gan.eval import classifier

    root = make_mnist(tmp_path / "data", n_train=256, n_test=64)
    real = classifier.train_classifier
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: real(*a, **{**k, "epochs": 1}))
    disk.full(".mnist_evaluator.pt.tmp")
    with pytest.raises(StorageError, match=r"mnist_evaluator.pt: the disk is full \(no mnist_evaluator.pt was writ"):
        classifier.load_evaluator(root, min_accuracy=0.0)
    assert not classifier.cache_path(root).exists() and no_temporary_files(root)


def quick_curves(runs: Any, path: Path, tell: Any = None) -> bool:
    """curves.png drawn small (the real one takes seconds): written the way every figure of the report is."""
    from matplotlib.figure import Figure

    from gan.files import save_figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    save_figure(fig, path, 20)
    return True


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small reported sweep (6 synthetic runs of two configurations: results.csv, curves.png, report.md)."""
    import gan.report
    from tests.study.synthetic import write_run

    monkeypatch.setattr(gan.report, "plot_curves", quick_curves)
    sweep = tmp_path / "sweep"
    for seed in range(6):
        act = "elu" if seed < 3 else "relu"
        write_run(sweep, f"{act}_{seed}", [f"model.g_act={act}", f"seed={seed}"], 40.0 + seed)
    gan.report.main([str(sweep)])
    return sweep


@pytest.mark.parametrize("name", ["report.md", "results.csv", "curves.png"])
def test_the_report_on_a_full_disk_names_the_file_and_keeps_the_previous_one(sweep, disk, name, capsys):
    from gan.report import main

    before = (sweep / name).read_bytes()
    (sweep / "elu_0" / "results.json").write_text((sweep / "elu_1" / "results.json").read_text())  # news
    disk.full(f".{name}.tmp")
    with pytest.raises(SystemExit) as stop:
        main([str(sweep)])
    message = str(stop.value.code)
    assert message.startswith(f"error: Cannot write {sweep / name}: the disk is full (the previous {name} is kept as")
    assert (sweep / name).read_bytes() == before and no_temporary_files(sweep)
    assert "Traceback" not in capsys.readouterr().err
