"""The ``gan.evaluate`` command: it scores a checkpoint and prints the metrics (progress lines on stderr for a large
evaluation)."""

import json

import pytest
from hydra import compose, initialize_config_dir

from gan import evaluate
from gan.eval.classifier import PROGRESS_MIN_IMAGES
from gan.eval.metrics import METRIC_NAMES
from gan.runs.schema import CONF_DIR
from tests.helpers import _cli, run

pytestmark = pytest.mark.slow  # every test trains a run and scores it with a freshly trained evaluator


def test_evaluate_command_prints_the_metrics_and_the_verdict_training_gave(tmp_path, tiny_mnist):
    scoring = ["eval.enabled=true", "eval.num_samples=50", "eval.min_evaluator_accuracy=0", "eval.jacobian_samples=0"]
    _, run_dir = run(tmp_path, "run", tiny_mnist, *scoring)
    final = json.loads((run_dir / "results.json").read_text())["final"]
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
    # the same checkpoint, evaluation noise and fixed noise as training's last evaluation: the same verdict
    assert result["verdict"] == final["verdict"] and result["diversity"] == pytest.approx(final["diversity"], abs=1e-4)
    assert result["modes"] == final["modes"] and f"Verdict: {final['verdict']}, fid " in proc.stderr
    assert "evaluate: " not in proc.stderr  # a small evaluation is quiet
    proc = _cli("gan.evaluate", f"ckpt_path={tmp_path}/none.ckpt", f"data.root={tiny_mnist}", cwd=tmp_path)
    assert proc.returncode == 2 and "error: ckpt_path=" in proc.stderr


def test_a_large_evaluation_shows_its_progress_on_stderr_and_keeps_stdout_for_the_json(tmp_path, tiny_mnist, capsys):
    _, run_dir = run(tmp_path, "run", tiny_mnist)
    overrides = [f"ckpt_path={run_dir}/checkpoints/last.ckpt", f"data.root={tiny_mnist}", "min_evaluator_accuracy=0"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, f"num_samples={PROGRESS_MIN_IMAGES}"])
    capsys.readouterr()
    result = evaluate.run(cfg)
    out, err = capsys.readouterr()
    assert out.splitlines() == [json.dumps(result)]  # stdout: the JSON alone, for a pipe
    lines = [line for line in err.splitlines() if line.startswith("evaluate: ")]  # not the evaluator's training
    n = PROGRESS_MIN_IMAGES
    assert lines[0] == f"evaluate: scoring {n} samples of the trained generator of {run_dir}/checkpoints/last.ckpt"
    counted = [line.split(" (")[0] for line in lines[1:-2]]  # lines for a fifth of the work, ends always
    assert counted[-1] == f"evaluate: {n}/{n} samples featurized"
    assert f"evaluate: {n}/{n} samples generated" in counted
    assert counted.index(f"evaluate: {n}/{n} samples generated") < counted.index(counted[-1])
    assert lines[-2].startswith("evaluate: computing the metrics (fid, is, modes")
    assert lines[-1].startswith("evaluate: done in ")


def test_a_run_is_scored_under_the_second_feature_space_too(tmp_path, tiny_mnist, capsys):
    """``evaluator=strided`` (the command) and ``score_checkpoint`` (Python) score the same checkpoint in the second
    feature space: every metric of the card, other features than the lab's evaluator, the same class-based ones'
    kind of answer; an unknown evaluator or setting is refused before the checkpoint is read."""
    from gan.errors import ConfigError
    from gan.eval.metrics import CARD_NAMES

    _, run_dir = run(tmp_path, "run", tiny_mnist)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    settings = {"num_samples": 60, "min_evaluator_accuracy": 0}
    strided = evaluate.score_checkpoint(ckpt, tiny_mnist, evaluator="strided", **settings)
    lab = evaluate.score_checkpoint(ckpt, tiny_mnist, **settings)
    assert strided["evaluator"] == "strided" and lab["evaluator"] == "cnn"
    assert set(METRIC_NAMES + CARD_NAMES) <= set(strided) and strided["fid"] != lab["fid"]
    proc = _cli(
        "gan.evaluate",
        f"ckpt_path={ckpt}",
        f"data.root={tiny_mnist}",
        "num_samples=60",
        "min_evaluator_accuracy=0",
        "evaluator=strided",
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout.strip().splitlines()[-1])["fid"] == strided["fid"]
    with pytest.raises(ConfigError, match="evaluator='mlp' is not an evaluator architecture"):
        evaluate.score_checkpoint(tmp_path / "absent.ckpt", tiny_mnist, evaluator="mlp")
    with pytest.raises(ConfigError, match="unknown setting"):
        evaluate.score_checkpoint(ckpt, tiny_mnist, num_sample=60)
