"""Sample quality while training (tiny data, a weak evaluator allowed) and gan.evaluate."""

import json
import math

import pytest
import torch

from gan.eval.metrics import METRIC_NAMES, VERDICTS, collapse_verdict
from tests.conftest import SCALAR_TAGS, _cli, run, scalars

pytestmark = pytest.mark.slow  # every test trains a run and scores it with a freshly trained evaluator

EVAL_ON = ["eval.enabled=true", "eval.min_evaluator_accuracy=0", "eval.num_samples=64", "eval.every_n_epochs=2"]


def test_evaluations_are_logged_recorded_and_checkpointed(tmp_path, tiny_mnist):
    summary, run_dir = run(tmp_path, "run", tiny_mnist, "trainer.max_epochs=3", *EVAL_ON)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["seed"] == 0
    assert results["config"]["model"]["g_act"] == "relu"
    # every 2 epochs and at the end
    assert [(e["epochs"], e["iteration"]) for e in results["evaluations"]] == [(2.0, 16), (3.0, 24)]
    for record in results["evaluations"]:
        assert set(METRIC_NAMES) <= set(record) and record["wall_s"] >= 0
        assert all(math.isfinite(record[m]) for m in METRIC_NAMES)
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

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")  # the HPARAMS tab: the config and the metrics it compares by
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {f"eval/{m}" for m in METRIC_NAMES}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model/g_act"].string_value == "relu"
    diversity = dict(series["eval/diversity"])
    verdicts = dict(series["eval/collapse"])  # 0 healthy, 1 partial, 2 collapsed
    for record in results["evaluations"]:  # the fixed-noise diversity and G's conditioning at each evaluation
        assert record["diversity"] == pytest.approx(diversity[record["iteration"]])
        assert record["verdict"] == collapse_verdict(record["modes"], record["diversity"])
        assert verdicts[record["iteration"]] == VERDICTS.index(record["verdict"])
        assert math.isfinite(record["jacobian_log_cond_mean"]) and record["jacobian_log_cond_std"] >= 0
    collapsed = [e["iteration"] for e in results["evaluations"] if e["verdict"] == "collapsed"]
    assert results["first_collapse_iteration"] == (collapsed[0] if collapsed else None)


def test_evaluation_does_not_change_training(tmp_path, tiny_mnist):
    _, plain = run(tmp_path, "plain", tiny_mnist, "trainer.max_epochs=2")
    _, scored = run(tmp_path, "scored", tiny_mnist, "trainer.max_epochs=2", *EVAL_ON)
    for tag in SCALAR_TAGS:
        assert scalars(plain)[tag] == scalars(scored)[tag]


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
