"""The ``gan.evaluate`` command: it scores a checkpoint and prints the metrics."""

import json

import pytest

from gan.eval.metrics import METRIC_NAMES
from tests.helpers import _cli, run

pytestmark = pytest.mark.slow  # every test trains a run and scores it with a freshly trained evaluator


def test_evaluate_command_prints_the_metrics(tmp_path, tiny_mnist):
    _, run_dir = run(tmp_path, "run", tiny_mnist)
    proc = _cli(
        "gan.evaluate",
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        f"data.root={tiny_mnist}",
        "num_samples=50",
        "min_evaluator_accuracy=0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(METRIC_NAMES) <= set(result) and result["num_samples"] == 50
    proc = _cli("gan.evaluate", f"ckpt_path={tmp_path}/none.ckpt", f"data.root={tiny_mnist}", cwd=tmp_path)
    assert proc.returncode == 2 and "error: ckpt_path=" in proc.stderr
