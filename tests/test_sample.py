"""The ``gan.sample`` command: it refuses bad checkpoints and arguments with a clear message."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from gan.errors import CheckpointError
from tests.helpers import run


@pytest.mark.slow
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
    for path, message in ((diverged, "generator.net.out.weight holds 1 non-finite"), (garbage, "not a readable")):
        out = tmp_path / f"{path.stem}.png"
        with pytest.raises(CheckpointError, match=message):
            sample.run(OmegaConf.create({**args, "ckpt_path": str(path), "out": str(out)}))
        assert not out.exists()
    good = tmp_path / "good.png"
    sample.run(OmegaConf.create({**args, "ckpt_path": str(first / "checkpoints" / "last.ckpt"), "out": str(good)}))
    assert good.is_file()


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


def test_sampling_values_that_crashed_or_ran_late_are_refused_before_the_checkpoint_is_read(tmp_path, monkeypatch):
    """Issue 23: a seed beyond 2**32 - 1, a count of samples no memory holds, a NumPy file named like the PNG grid
    or like the checkpoint: each refused with its key and range before the checkpoint (absent here) is read."""
    from omegaconf import OmegaConf

    from gan import evaluate, sample
    from gan.errors import ConfigError
    from gan.eval import sampling

    ckpt = tmp_path / "absent.ckpt"  # a check after reading it would raise CheckpointError instead
    args = {"ckpt_path": str(ckpt), "num_samples": 8, "seed": 0, "device": "cpu", "ema": None, "nrow": 4}
    args |= {"out": str(tmp_path / "s.png"), "npy": None, "data": {"root": str(tmp_path)}}
    args |= {"min_evaluator_accuracy": 0.0}
    monkeypatch.setattr(sampling, "available_memory", lambda: None)  # the documented maximum alone
    folder = tmp_path / "grid.png"
    folder.mkdir()
    (folder / "blocker").write_bytes(b"a file, not a folder")
    for bad, message in (
        ({"seed": 2**32}, "seed must be an integer from 0 to 4294967295 (the noise seed), got 4294967296"),
        ({"num_samples": 10**12}, "num_samples=1,000,000,000,000 would need about 46.1 PB of memory"),
        ({"num_samples": 1_000_001}, "num_samples may be at most 1,000,000"),
        ({"npy": str(tmp_path / "s.png")}, "and npy="),
        ({"npy": str(tmp_path / "." / "s.png")}, "are the same file"),  # the same file however it is written
        ({"out": None, "npy": str(ckpt)}, "is the checkpoint being read"),
        ({"out": str(folder)}, "is a folder"),
        ({"npy": str(folder / "blocker" / "x.npy")}, "cannot be written: "),  # a file where a folder must be
        ({"npy": str(folder.parent)}, f"npy='{folder.parent}' is a folder ({folder.parent}); name a file in it"),
    ):
        for command in (sample, evaluate):
            if command is evaluate and "npy" in bad:
                continue  # gan.evaluate writes no file
            with pytest.raises(ConfigError, match=re.escape(message)):
                command.run(OmegaConf.create({**args, **bad}))
    assert list(tmp_path.iterdir()) == [folder]  # nothing written
    monkeypatch.setattr(sampling, "available_memory", lambda: 10**9)  # 1 GB left: 45 KiB a sample fits 21,701
    with pytest.raises(ConfigError, match=r"this machine has 1 GB available.* up to 21,701 here"):
        sample.run(OmegaConf.create({**args, "num_samples": 30_000}))
    assert sampling.check_num_samples("num_samples", 20_000, 1, "samples") == 20_000
