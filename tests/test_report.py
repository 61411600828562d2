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
    assert "8 runs: 8 finished" in text
    # random tiny digits: most runs collapse, and the report says so before any ranking
    records = [json.loads(f.read_text()) for f in sweep.glob("*/results.json")]
    collapsed = [
        r.get("first_collapse_iteration") is not None or any(e.get("verdict") == "collapsed" for e in r["evaluations"])
        for r in records
    ]
    if sum(collapsed) > 4:
        assert f"**{sum(collapsed)} of 8 runs collapsed**" in text.split("| rank")[0]
    if all(collapsed):
        assert f"the lowest fid: **{best}**" in text and "Best configuration" not in text
    else:
        assert f"Best configuration: **{best}**" in text
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


def test_a_record_nested_too_deep_or_of_the_wrong_kind_is_listed_and_the_report_goes_on(tmp_path):
    """Issue 23: a results.json nested 100,000 deep stopped the report with a RecursionError, and a record whose
    config is a list or whose iterations are NaN with an AttributeError or ValueError: each is listed as unreadable
    and the others are reported."""
    from gan.report import report
    from tests.study.synthetic import write_run

    sweep = tmp_path / "sweep"
    for seed in range(3):
        write_run(sweep, f"good_{seed}", ["model.g_act=elu", f"seed={seed}"], 40.0 + seed)
    damaged = {
        "deep": ("[" * 100_000 + "]" * 100_000, "RecursionError"),
        "config_list": ('{"status": "finished", "config": [[1]]}', "fields of the wrong kind: config=[[1]]"),
        "nan_iterations": ('{"status": "finished", "iterations": NaN}', "fields of the wrong kind: iterations=nan"),
    }
    for name, (text, _) in damaged.items():
        (sweep / name).mkdir()
        (sweep / name / "results.json").write_text(text)
    (sweep / "deep_overrides" / ".hydra").mkdir(parents=True)
    (sweep / "deep_overrides" / ".hydra" / "overrides.yaml").write_text("[" * 100_000 + "]" * 100_000)
    result = report(sweep, say=lambda line: None)
    assert result["runs"] == 7 and sum(r.fid.n for r in result["configurations"]) == 3
    text = (sweep / "report.md").read_text()
    for name, (_, why) in damaged.items():
        line = next(line for line in text.splitlines() if line.startswith(f"- `{name}`: unreadable: "))
        assert why in line, line
    assert "- `deep_overrides`: unreadable: .hydra/overrides.yaml unreadable (RecursionError)" in text


def test_progress_is_counted_every_tenth_but_not_every_run():
    from gan.report import counter

    for total, expected in ((45, [10, 20, 30, 40, 45]), (300, list(range(30, 301, 30))), (4, [4])):
        said: list[str] = []
        tell = counter(said.append, "{done}/{total}")
        for done in range(1, total + 1):
            tell(done, total)
        assert said == [f"{n}/{total}" for n in expected]


def test_the_report_says_how_far_it_got_on_stderr(tmp_path, capsys):
    from gan.report import main
    from tests.study.synthetic import write_losses, write_run

    sweep = tmp_path / "sweep"
    for seed in range(12):
        act = "elu" if seed < 6 else "relu"
        run_dir = write_run(sweep, f"{act}_{seed}", [f"model.g_act={act}", f"seed={seed}"], 40.0 + seed, dead=0.1)
        write_losses(run_dir, range(10))
    main([str(sweep)])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert "read 10 of 12 run folders" in lines and "read 12 of 12 run folders" in lines
    assert "  losses of 10 of 12 runs read" in lines and "  losses of 12 of 12 runs read" in lines
    drawn = [line for line in lines if line.startswith("drawing ")]
    assert drawn == [
        f"drawing {name} ..." for name in ("fid_heatmap.png", "curves.png", "samples.png", "mechanism.png")
    ]
    # the figures that cannot be drawn here say why, after the line that started them
    heatmap = lines.index("drawing fid_heatmap.png ...")
    assert lines[heatmap + 1].startswith("fid_heatmap.png left out: the sweep does not vary both model.g_act")
    assert "samples.png left out: no run has a sample grid" in lines
    assert (
        lines.index("read 12 of 12 run folders")
        < heatmap
        < lines.index("writing report.md (main effects, rank correlations) ...")
    )
    assert lines[-1].startswith("done in ") and lines[-1].endswith(" s")
    # stdout: the one line naming what was written, as before
    assert out.splitlines() == [
        f"12 runs, 2 configurations -> {sweep / 'report.md'}, results.csv, curves.png, mechanism.png"
    ]
