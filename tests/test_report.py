"""gan.report on a small real sweep (tiny data, real runs, real results.json files)."""

import csv
import json
import math
import os
import statistics
from pathlib import Path

import pytest

from gan.model.activations import ACTIVATION_NAMES
from gan.report import find_runs, report
from gan.runs.schema import CONF_DIR
from gan.runs.training import build_model, train
from tests.conftest import _cli, compose_train, fast_overrides

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
        "hydra/launcher=packed",  # one pack: the run folders the basic launcher writes (test_packed_launcher.py)
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
        key = (row["varying"]["model.g_act"], row["varying"]["model.d_act"])
        mean, std, n = row["fid"]
        assert n == 2
        assert mean == pytest.approx(statistics.fmean(by_config[key]))
        assert std == pytest.approx(statistics.stdev(by_config[key]))
    fids = [row["fid"][0] for row in result["configurations"]]
    assert fids == sorted(fids)  # ranked by fid
    text = (sweep / "report.md").read_text()
    best = result["configurations"][0]["config"]
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
    assert sum(r["diverged"] for r in result["configurations"]) == 1
    assert sum(r["running"] for r in result["configurations"]) == 1
    assert sum(r["fid"][2] for r in result["configurations"]) == 6
    text = (partial / "report.md").read_text()
    assert "1 diverged" in text and "1 running" in text and "no results" in text
    assert [r.status for r in find_runs(partial)].count("finished") == 5


EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def sweep_axes(cfg) -> dict[str, list[str]]:
    """The experiment's sweep as Hydra parses it: axis -> its values (quoted and list values kept whole)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes = {}
    for key, value in cfg.hydra.sweeper.params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        axes[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    return axes


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_composes_into_a_grid_of_valid_values(name):
    """Every value of every axis composes with the experiment and builds its model and data settings."""
    axes = sweep_axes(compose_train([f"experiment={name}"], keep_hydra=True))
    assert "seed" in axes and len(axes["seed"]) >= 2
    assert sum(len(v) > 1 for k, v in axes.items() if k != "seed") >= 1  # it compares something
    for key, values in axes.items():
        for value in values:
            cfg = compose_train([f"experiment={name}", f"{key}={value}"])
            build_model(cfg)
            if key in ("model.g_act", "model.d_act"):
                assert value in ACTIVATION_NAMES


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_its_first_jobs(tmp_path, tiny_mnist, name):
    axes = sweep_axes(compose_train([f"experiment={name}"], keep_hydra=True))
    # the experiment's first job (the first value of each of its sweep's axes), trained in process on tiny data for
    # 3 iterations (the sweeps themselves: test_train.py and test_packed_launcher.py)
    grid = [f"{k}={v[0]}" for k, v in axes.items()]
    overrides = [
        f"experiment={name}",
        *grid,
        *fast_overrides(tiny_mnist),
        "trainer.max_steps=3",
        "data.train_size=null",
    ]
    summary = train(compose_train(overrides, tmp_path / "job"))
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert summary["status"] == results["status"] == "finished" and results["iterations"] == 3
    if "model.g_act" in axes:
        assert results["config"]["model"]["g_act"] == axes["model.g_act"][0]


def test_sample_sheet_shows_the_main_grid_of_a_weight_averaged_run(tmp_path):
    from gan.report import latest_grid

    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("epoch0000.png", "epoch0001.png", "epoch0000_no_ema.png", "epoch0001_no_ema.png"):
        (samples / name).write_bytes(b"")
    assert latest_grid(tmp_path) == samples / "epoch0001.png"
    assert latest_grid(tmp_path / "elsewhere") is None
