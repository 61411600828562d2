"""The ``gan.report`` command on a small real sweep and on damaged results files."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics

import pytest

from gan.report import report
from gan.study.runs import find_runs
from tests.helpers import _cli, fast_overrides, run

EVAL_ON = ["eval.enabled=true", "eval.min_evaluator_accuracy=0", "eval.num_samples=64", "eval.every_n_epochs=1"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_mnist):
    folder = tmp_path_factory.mktemp("sweep")
    proc = _cli(
        "gan.train",
        "-m",
        "model.g_act=relu,tanh",
        "model.d_act=leaky_relu,elu",
        "seed=0,1",
        *fast_overrides(tiny_mnist),
        *EVAL_ON,
        "trainer.max_epochs=2",
        "hydra/launcher=packed",  # one pack: the run folders the basic launcher writes (tests/runs/test_launcher.py)
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
        f"hydra.sweep.dir={folder}",
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.mark.slow  # the sweep fixture trains 8 runs with python -m gan.train
def test_report_numbers_match_the_results_files(sweep):
    result = report(sweep)
    assert result["runs"] == 8 and len(result["configurations"]) == 4
    assert set(result["plots"]) == {"fid_heatmap.png", "curves.png", "samples.png", "mechanism.png"}
    for name in ("report.md", "results.csv", "fid_heatmap.png", "curves.png", "samples.png", "mechanism.png"):
        assert (sweep / name).stat().st_size > 0
    # direct computation from the results.json files
    by_config: dict[tuple[str, str], list[float]] = {}
    for results_file in sweep.glob("*/results.json"):
        res = json.loads(results_file.read_text())
        key = (res["config"]["model"]["g_act"], res["config"]["model"]["d_act"])
        by_config.setdefault(key, []).append(res["final"]["fid"])
    for row in result["configurations"]:
        key = (row.varying["model.g_act"], row.varying["model.d_act"])
        mean, std, n = row.fid.mean, row.fid.std, row.fid.n
        assert n == 2
        assert mean == pytest.approx(statistics.fmean(by_config[key]))
        assert std == pytest.approx(statistics.stdev(by_config[key]))
    fids = [row.fid.mean for row in result["configurations"]]
    assert fids == sorted(fids)  # ranked by fid
    text = (sweep / "report.md").read_text()
    best = result["configurations"][0].config
    assert f"Best configuration: **{best}**" in text and "8 runs: 8 finished" in text
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert len(rows) == 8 and {r["seed"] for r in rows} == {"0", "1"}
    assert all(r["status"] == "finished" and math.isfinite(float(r["final_fid"])) for r in rows)
    assert {"model.g_act", "model.d_act"} <= set(rows[0])


@pytest.mark.slow  # the sweep fixture trains 8 runs with python -m gan.train
def test_report_counts_failed_and_unfinished_runs(sweep, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(sweep, partial)
    runs = sorted(partial.glob("[0-9]*"))
    res = json.loads((runs[0] / "results.json").read_text())
    res.update(status="diverged", reason="non-finite loss", final=None, evaluations=[])
    (runs[0] / "results.json").write_text(json.dumps(res))
    res = json.loads((runs[1] / "results.json").read_text())
    res.update(status="running", final=None, pid=os.getpid())  # still running (a live writer): latest counts
    (runs[1] / "results.json").write_text(json.dumps(res))
    (runs[2] / "results.json").unlink()  # started, nothing recorded yet
    result = report(partial)
    assert result["runs"] == 8
    assert sum(r.diverged for r in result["configurations"]) == 1
    assert sum(r.running for r in result["configurations"]) == 1
    assert sum(r.fid.n for r in result["configurations"]) == 6
    text = (partial / "report.md").read_text()
    assert "1 diverged" in text and "1 running" in text and "no results" in text
    assert [r.status for r in find_runs(partial)].count("finished") == 5


def test_sample_sheet_shows_the_main_grid_of_a_weight_averaged_run(tmp_path):
    from gan.study.runs import latest_grid

    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("epoch0000.png", "epoch0001.png", "epoch0000_no_ema.png", "epoch0001_no_ema.png"):
        (samples / name).write_bytes(b"")
    assert latest_grid(tmp_path) == samples / "epoch0001.png"
    assert latest_grid(tmp_path / "elsewhere") is None


@pytest.mark.slow
def test_report_writes_what_it_can_and_lists_what_it_cannot(tmp_path, tiny_mnist):
    from gan.report import report

    sweep = tmp_path / "sweep"
    _, good = run(sweep, "0_good", tiny_mnist)
    for name, text in (
        ("1_garbage", "\x00\xffnot json"),
        ("2_empty", ""),
        ("3_list", "[1, 2]"),
        ("4_partial", '{"status": "finished", "final": {"fid": 3}}'),
    ):
        (sweep / name).mkdir()
        (sweep / name / "results.json").write_text(text)
    result = report(sweep)
    assert result["runs"] == 5
    text = (sweep / "report.md").read_text()
    for name in ("1_garbage", "2_empty", "3_list", "4_partial"):
        assert f"- `{name}`: unreadable: " in text
    assert (
        "results.json has evaluations without the metrics" in text and "0_good" not in text.split("did not finish")[1]
    )
