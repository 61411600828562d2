"""gan.runs.checkpoints: a crafted pickle is refused by every entry point and runs nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import run


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
