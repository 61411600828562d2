"""gan.runs.quality: sample quality scored while training (tiny data, a weak evaluator allowed)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gan.eval.metrics import CARD_NAMES, METRIC_NAMES, VERDICTS, collapse_verdict
from tests.helpers import SCALAR_TAGS, run, scalars

EVAL_ON = ["eval.enabled=true", "eval.min_evaluator_accuracy=0", "eval.num_samples=64", "eval.every_n_epochs=2"]


@pytest.mark.slow
def test_evaluations_are_logged_recorded_and_checkpointed(tmp_path, tiny_mnist):
    summary, run_dir = run(tmp_path, "run", tiny_mnist, "trainer.max_epochs=3", *EVAL_ON)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["seed"] == 0
    assert results["config"]["model"]["g_act"] == "relu"
    # every 2 epochs and at the end
    assert [(e["epochs"], e["iteration"]) for e in results["evaluations"]] == [(2.0, 16), (3.0, 24)]
    for record in results["evaluations"]:
        assert set(METRIC_NAMES) <= set(record) and record["wall_s"] >= 0
        assert all(math.isfinite(record[m]) for m in METRIC_NAMES + CARD_NAMES)  # the card too, every evaluation
    assert results["final"] == results["evaluations"][-1]
    best = min(results["evaluations"], key=lambda e: e["fid"])
    assert results["best"]["fid"] == best["fid"] and results["best"]["iteration"] == best["iteration"]
    ckpt = torch.load(run_dir / "checkpoints" / "best-fid.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == best["iteration"] * 2
    series = scalars(run_dir)
    assert [s for s, _ in series["eval/fid"]] == [16, 24]  # no false point at step 0
    assert [s for s, _ in series["eval/diversity"]] == [8, 16, 24]  # every epoch
    assert summary["final_metrics"]["fid"] == results["final"]["fid"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")  # the HPARAMS tab: the config and the metrics it compares by
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics[:3] == ["eval/fid", "eval/collapse", "eval/diversity"]
    assert set(metrics) == {f"eval/{m}" for m in METRIC_NAMES} | {"eval/collapse", "eval/diversity"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model/g_act"].string_value == "relu"
    assert len(start.hparams) <= 15 and "model/stabilizers" in start.hparams  # the few that define a run
    diversity = dict(series["eval/diversity"])
    verdicts = dict(series["eval/collapse"])  # 0 healthy, 1 partial, 2 collapsed
    for record in results["evaluations"]:  # the fixed-noise diversity and G's conditioning at each evaluation
        assert record["diversity"] == pytest.approx(diversity[record["iteration"]])
        assert record["verdict"] == collapse_verdict(record["modes"], record["diversity"])
        assert verdicts[record["iteration"]] == VERDICTS.index(record["verdict"])
        assert math.isfinite(record["jacobian_log_cond_mean"]) and record["jacobian_log_cond_std"] >= 0
    collapsed = [e["iteration"] for e in results["evaluations"] if e["verdict"] == "collapsed"]
    assert results["first_collapse_iteration"] == (collapsed[0] if collapsed else None)


@pytest.mark.slow
def test_evaluation_does_not_change_training(tmp_path, tiny_mnist):
    _, plain = run(tmp_path, "plain", tiny_mnist, "trainer.max_epochs=2")
    _, scored = run(tmp_path, "scored", tiny_mnist, "trainer.max_epochs=2", *EVAL_ON)
    for tag in SCALAR_TAGS:
        assert scalars(plain)[tag] == scalars(scored)[tag]


@pytest.mark.slow
def test_weight_average_and_trained_generator_are_both_scored(tmp_path, tiny_mnist):
    from omegaconf import OmegaConf

    from gan.evaluate import run as evaluate_run

    _, run_dir = run(
        tmp_path, "ema", tiny_mnist, "trainer.max_epochs=2", "model.g_ema=true", "model.g_ema_decay=0.9", *EVAL_ON
    )
    final = json.loads((run_dir / "results.json").read_text())["final"]
    assert set(METRIC_NAMES) <= set(final["no_ema"])
    assert final["fid"] != final["no_ema"]["fid"]  # two generators, two scores
    series = scalars(run_dir)
    assert [s for s, _ in series["eval_no_ema/fid"]] == [s for s, _ in series["eval/fid"]] == [16]
    assert series["eval/fid"][0][1] == pytest.approx(final["fid"], rel=1e-6)  # TensorBoard keeps float32
    assert series["eval_no_ema/fid"][0][1] == pytest.approx(final["no_ema"]["fid"], rel=1e-6)
    assert len(series["eval_no_ema/diversity"]) == 2
    base = {
        "ckpt_path": str(run_dir / "checkpoints" / "last.ckpt"),
        "num_samples": 64,
        "seed": 0,
        "device": "cpu",
        "data": {"root": str(tiny_mnist)},
        "min_evaluator_accuracy": 0,
    }
    averaged = evaluate_run(OmegaConf.create({**base, "ema": None}))
    trained = evaluate_run(OmegaConf.create({**base, "ema": False}))
    assert averaged["generator"] == "weight average" and trained["generator"] == "trained"
    assert averaged["fid"] == round(final["fid"], 5) and trained["fid"] == round(final["no_ema"]["fid"], 5)


def test_a_member_with_non_finite_samples_is_diverged_before_it_is_scored():
    """Losses can read finite while G's output is not (e.g. an inf the loss saturates): the evaluation checks the
    samples first and freezes such a member, so no metric or best checkpoint of it is ever written."""
    from gan.model.module import GANModule
    from gan.model.spec import member_hparams
    from gan.runs.quality import SampleQuality

    module = GANModule(members=[member_hparams(seed=0), member_hparams(seed=1)])
    with torch.no_grad():
        next(module.generator.parameters())[1].fill_(float("inf"))
    SampleQuality.refuse_nonfinite(module)
    assert module.alive == [True, False]
    assert module.divergence[1][1] == "non-finite samples at iteration 0"


@pytest.mark.slow
def test_a_run_whose_every_member_diverged_before_an_epoch_end_ends_diverged_not_failed(tmp_path, tiny_mnist):
    """Issue 23: D's leaky_relu slope 1e38 makes the loss infinite in iteration 1; with no logging step in the epoch
    the divergence is found at the epoch's end, where the evaluation's diversity of an empty population crashed
    (``run failed: RuntimeError: cannot reshape tensor of 0 elements``). The console ends with the divergence and
    exit 1, as docs/faults.md says."""
    from tests.helpers import _cli, fast_overrides

    run_dir = tmp_path / "run"
    proc = _cli(
        "gan.train",
        *fast_overrides(tiny_mnist),
        *EVAL_ON,
        "model.act_params.leaky_relu.negative_slope=1e38",
        "trainer.log_every_n_steps=50",  # more than the 8 iterations of an epoch: found at the epoch's end
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "run failed" not in proc.stderr and "Traceback" not in proc.stderr
    assert lines[-1].startswith("run diverged: non-finite loss in iteration 1 (found at iteration 8)"), lines[-1]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and results["evaluations"] == []
