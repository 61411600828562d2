"""gan.runs.diagnostics: activation diagnostics logged in a real (tiny) run."""

import json

import pytest

from tests.helpers import SCALAR_TAGS, run, scalars


@pytest.mark.slow
def test_diagnostics_in_a_run_log_every_layer_and_leave_training_alone(tmp_path, tiny_mnist):
    _, plain = run(tmp_path, "plain", tiny_mnist, "trainer.max_epochs=1")
    _, probed = run(tmp_path, "probed", tiny_mnist, "trainer.max_epochs=1", "diag.enabled=true", "diag.every_n_steps=4")
    series = scalars(probed)
    for net in "GD":
        for k in (1, 2, 3):
            for stat in ("dead", "saturated", "pre_mean", "pre_std", "act_mean", "act_std", "grad_norm"):
                assert [s for s, _ in series[f"train_diag/{net}/layer{k}/{stat}"]] == [4, 8]
    assert all(v > 0 for _, v in series["train_diag/D/layer1/grad_norm"])
    for tag in SCALAR_TAGS:  # probing draws its own noise: the training is exactly the same
        assert series[tag] == scalars(plain)[tag]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(probed), size_guidance={"histograms": 0})
    acc.Reload()
    assert "train_diag/G/layer1/pre" in acc.Tags()["histograms"]


@pytest.mark.slow
def test_the_last_iteration_is_probed_and_its_summary_recorded(tmp_path, tiny_mnist):
    _, run_dir = run(
        tmp_path,
        "probed",
        tiny_mnist,
        "trainer.max_epochs=1",
        "diag.enabled=true",
        "diag.every_n_steps=3",
        "diag.histograms=false",
    )
    series = scalars(run_dir)
    assert [s for s, _ in series["train_diag/G/jacobian_log_cond_mean"]] == [3, 6, 8]  # 8 iterations: the end too
    assert [s for s, _ in series["train_diag/D/layer2/dead"]] == [3, 6, 8]
    summary = json.loads((run_dir / "results.json").read_text())["diagnostics"]
    last = {tag: values[-1][1] for tag, values in series.items()}
    assert summary["iteration"] == 8
    assert summary["G_dead"] == pytest.approx(sum(last[f"train_diag/G/layer{k}/dead"] for k in (1, 2, 3)) / 3)
    assert summary["D_saturated"] == pytest.approx(sum(last[f"train_diag/D/layer{k}/saturated"] for k in (1, 2, 3)) / 3)
    assert summary["G_jacobian_log_cond_mean"] == pytest.approx(last["train_diag/G/jacobian_log_cond_mean"])


EVAL_ON = ["eval.enabled=true", "eval.min_evaluator_accuracy=0", "eval.num_samples=64", "eval.every_n_epochs=1"]


@pytest.mark.slow
def test_d_side_measures_are_logged_at_the_cadence_and_every_evaluation_and_kept_as_a_history(tmp_path, tiny_mnist):
    _, run_dir = run(
        tmp_path,
        "d_side",
        tiny_mnist,
        "trainer.max_epochs=2",
        "diag.enabled=true",
        "diag.every_n_steps=5",
        "diag.histograms=false",
        *EVAL_ON,
    )
    series = scalars(run_dir)
    # 8 iterations per epoch: the cadence (5, 10, 15) and both evaluations (8, 16, the last also the end)
    for tag in ("grad_norm_real", "grad_norm_fake", "grad_diversity", "logit_real", "logit_fake"):
        assert [s for s, _ in series[f"train_diag/D/{tag}"]] == [5, 8, 10, 15, 16]
    for k in (1, 2, 3):
        for stat in ("unit_entropy", "pattern_entropy", "pattern_similarity"):
            for side in ("real", "fake"):
                values = [v for _, v in series[f"train_diag/D/layer{k}/{stat}_{side}"]]
                assert len(values) == 5 and all(0 <= v <= 1 + 1e-6 for v in values)
    assert all(v > 0 for _, v in series["train_diag/D/grad_norm_fake"])
    data = json.loads((run_dir / "results.json").read_text())
    history = data["diagnostics_history"]
    assert [h["iteration"] for h in history] == [5, 8, 10, 15, 16]
    assert [e["iteration"] for e in data["evaluations"]] == [8, 16]
    last = {tag: values[-1][1] for tag, values in series.items()}
    assert history[-1] == data["diagnostics"]
    assert history[-1]["D_grad_diversity"] == pytest.approx(last["train_diag/D/grad_diversity"])
    assert history[-1]["D_unit_entropy_fake"] == pytest.approx(
        sum(last[f"train_diag/D/layer{k}/unit_entropy_fake"] for k in (1, 2, 3)) / 3
    )
