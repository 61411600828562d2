"""gan.study.tables: the report's ranking, intervals, verdicts and main effects over seeds."""

import csv
import itertools
import json

import numpy as np
import pytest

from gan.report import report
from gan.study.stats import bootstrap_interval, holm_adjusted
from tests.helpers import exact_u_p_value
from tests.study.synthetic import write_run as _write_run


def test_the_report_ranks_with_intervals_ties_and_p_values(tmp_path):
    sweep = tmp_path / "sweep"
    fids = {"elu": [10.0, 11.0, 12.0], "tanh": [11.5, 13.0, 14.0], "relu": [90.0, 95.0, 99.0], "gelu": [20.0, 21.0]}
    collapsed = {("relu", 0): 400, ("relu", 2): 900}  # (act, seed) -> iteration of the first collapsed verdict
    dead = {}
    for act, values in fids.items():
        for seed, fid in enumerate(values):
            dead[(act, seed)] = 0.01 * fid + 0.1 * seed  # a dead share that mostly goes with the fid
            overrides = [f"model.g_act={act}", f"seed={seed}"]
            _write_run(sweep, f"{act}_{seed}", overrides, fid, collapsed.get((act, seed)), dead[(act, seed)])
    report(sweep)
    text = (sweep / "report.md").read_text()
    rows = {
        line.split(" | ")[1]: line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "=" in line
    }
    best = rows["model.g_act=elu"]
    lo, hi = bootstrap_interval(fids["elu"])
    assert best[6] == f"11 [{lo:.3g}, {hi:.3g}] (3)" and best[7] == "best"
    assert rows["model.g_act=tanh"][7] == "tied"  # its interval reaches into elu's
    assert rows["model.g_act=relu"][7] == "worse"
    assert rows["model.g_act=relu"][8] == f"{exact_u_p_value(fids['elu'], fids['relu']):.2g}"
    others = ["tanh", "relu", "gelu"]
    adjusted = holm_adjusted([exact_u_p_value(fids["elu"], fids[a]) for a in others])
    for act, holm in zip(others, adjusted, strict=True):
        assert rows[f"model.g_act={act}"][9] == f"{holm:.2g}"
    assert best[8] == best[9] == ""
    assert rows["model.g_act=gelu"][6].endswith("(2) †") and "fewer than 3 seeds" in text
    assert rows["model.g_act=relu"][5] == "2 of 3 (median iteration 650)" and best[5] == "0 of 3"
    # the rank correlation against a direct computation (Spearman = Pearson of the ranks; no ties here)
    keys = list(dead)
    fid_ranks = np.argsort(np.argsort([fids[a][s] for a, s in keys]))
    dead_ranks = np.argsort(np.argsort([dead[k] for k in keys]))
    rho = np.corrcoef(fid_ranks, dead_ranks)[0, 1]
    assert f"| G dead-unit share | {rho:.2f} | " in text and f" | {len(keys)} |" in text
    assert (sweep / "mechanism.png").stat().st_size > 0
    assert "Not distinguishable from the best at these seeds (intervals overlap): model.g_act=tanh" in text


METRICS = {"is": 1.0, "kl_uniform": 0.1, "precision": 0.5, "recall": 0.5}


def test_records_from_before_the_verdicts_are_judged_by_the_same_thresholds(tmp_path):
    """A sweep of an older version of the lab recorded modes but no verdicts: the report judges each evaluation
    now (collapsed at <= 2 classes covered, partial at 3 to 9), counts the collapses and finds the first one."""
    sweep = tmp_path / "sweep"
    modes_per_seed = {"relu": [(9, 1), (0, 0), (10, 10)], "tanh": [(10, 6), (10, 10), (2, 10)]}
    # elu: recorded verdicts win over the classes covered (seed 0 collapsed on diversity at 10 classes); seed 1 was
    # resumed by a newer lab that recorded a collapse at 200, after an older evaluation that collapsed at 100
    modes_per_seed["elu"] = [(10, 10), (1, 10)]
    recorded = {("elu", 0): ([None, "collapsed"], None), ("elu", 1): ([None, "collapsed"], 200)}
    for act, seeds in modes_per_seed.items():
        for seed, modes in enumerate(seeds):
            evaluations = [
                {**METRICS, "fid": 50.0 + seed, "modes": float(m), "iteration": 100 * (i + 1), "epochs": i + 1.0}
                for i, m in enumerate(modes)
            ]
            verdicts, first = recorded.get((act, seed), ([None] * len(modes), None))
            for evaluation, verdict in zip(evaluations, verdicts, strict=True):
                if verdict:
                    evaluation["verdict"] = verdict
            run = sweep / f"{act}_{seed}"
            (run / ".hydra").mkdir(parents=True)
            (run / ".hydra" / "overrides.yaml").write_text(f"- model.g_act={act}\n- seed={seed}\n")
            record = {"status": "finished", "seed": seed, "config": {}, "iterations": 200, "wall_s": 1.0}
            record.update(evaluations=evaluations, best=evaluations[0], final=evaluations[-1])
            record["first_collapse_iteration"] = first
            (run / "results.json").write_text(json.dumps(record))
    rows = {row.config: row for row in report(sweep)["configurations"]}
    # relu: seed 0 collapses at 200, seed 1 at 100; tanh: seed 2 at 100, seed 0 ends in partial collapse
    assert sorted(rows["model.g_act=relu"].collapse_iterations) == [100, 200]
    assert rows["model.g_act=tanh"].collapse_iterations == [100] and rows["model.g_act=tanh"].partial == 1
    assert sorted(rows["model.g_act=elu"].collapse_iterations) == [100, 200]
    text = (sweep / "report.md").read_text()
    assert "2 of 3 (median iteration 150)" in text and "1 of 3 (median iteration 100) + 1 partial" in text
    verdicts = {r["run"]: r["final_verdict"] for r in csv.DictReader((sweep / "results.csv").open())}
    assert verdicts == {
        "relu_0": "collapsed",
        "relu_1": "collapsed",
        "relu_2": "healthy",
        "tanh_0": "partial collapse",
        "tanh_1": "healthy",
        "tanh_2": "healthy",
        "elu_0": "collapsed",
        "elu_1": "collapsed",
    }


def kruskal_wallis_p(groups):
    """H = 12 / (N (N + 1)) sum R_i^2 / n_i - 3 (N + 1) on the pooled ranks (no ties), against chi-square with
    k - 1 degrees of freedom."""
    from scipy.stats import chi2

    pooled = sorted(v for g in groups for v in g)
    rank = {v: i + 1 for i, v in enumerate(pooled)}
    n = len(pooled)
    h = 12 / (n * (n + 1)) * sum(sum(rank[v] for v in g) ** 2 / len(g) for g in groups) - 3 * (n + 1)
    return chi2.sf(h, len(groups) - 1)


BASE = {"elu": 10.0, "tanh": 25.0, "relu": 80.0}  # G activation -> its fid
SHIFT = {"leaky_relu": 0.0, "tanh": 3.0}  # D activation -> what it adds


def _write_grid(sweep, skip=()):
    """A 3 x 2 grid of G and D activations over 3 seeds (distinct fids: no ties); ``skip``: (g, d, seed) left out."""
    fids: dict[tuple[str, str], list[float]] = {}
    for g, d in itertools.product(BASE, SHIFT):
        for seed in range(3):
            if (g, d, seed) in skip:
                continue
            fid = BASE[g] + SHIFT[d] + 1.7 * seed + 0.13 * len(g + d)
            fids.setdefault((g, d), []).append(fid)
            overrides = [f"model.g_act={g}", f"model.d_act={d}", f"seed={seed}"]
            _write_run(sweep, f"{g}_{d}_{seed}", overrides, fid, 100 if g == "relu" else None)
    return fids


def _main_effects(text):
    table = text.split("Main effects")[1].split("What goes with quality")[0]
    return [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_the_report_gives_each_factors_main_effect_pooled_over_the_other_factor(tmp_path):
    sweep = tmp_path / "grid"
    fids = _write_grid(sweep)
    report(sweep)
    rows = _main_effects((sweep / "report.md").read_text())
    d_rows, g_rows = rows[:2], rows[2:]  # factors in name order
    pooled = {g: [f for (gg, _), v in fids.items() if gg == g for f in v] for g in BASE}
    assert [r[1] for r in g_rows] == ["elu", "tanh", "relu"]  # ranked by the pooled mean
    assert g_rows[0][0] == f"| model.g_act (Kruskal-Wallis p {kruskal_wallis_p(list(pooled.values())):.2g})"
    assert all(r[2] == "6" for r in g_rows) and g_rows[2][5] == "6 of 6" and g_rows[0][5] == "0 of 6"
    raw = [exact_u_p_value(pooled["elu"], pooled[g]) for g in ("tanh", "relu")]
    holm = holm_adjusted(raw)
    for row, p, adjusted in zip(g_rows[1:], raw, holm, strict=True):
        assert row[6] == f"{p:.2g}" and row[7].rstrip(" |") == f"{adjusted:.2g}"
    # pooled over G, D's small shift is lost among G's large ones: not a main effect at these seeds
    assert [r[1] for r in d_rows] == ["leaky_relu", "tanh"]
    pooled_d = [[f for (_, dd), v in fids.items() if dd == d for f in v] for d in SHIFT]
    assert d_rows[0][0] == f"| model.d_act (Kruskal-Wallis p {kruskal_wallis_p(pooled_d):.2g})"
    # 9 runs against 9: SciPy's normal approximation of U (exact up to 8), close to the exact p; one test: Holm = p
    assert float(d_rows[1][6]) == pytest.approx(exact_u_p_value(*pooled_d), abs=0.02) and float(d_rows[1][6]) > 0.05
    assert d_rows[1][7].rstrip(" |") == d_rows[1][6]
    assert "unbalanced" not in "".join(r[0] for r in rows)


def test_main_effects_of_an_incomplete_grid_are_flagged_and_a_damaged_run_adds_no_factor(tmp_path):
    sweep = tmp_path / "grid"
    skip = {("elu", "leaky_relu", s) for s in (1, 2)} | {("elu", "tanh", 0)}  # elu G keeps one scored run
    _write_grid(sweep, skip)
    damaged = sweep / "damaged"
    (damaged / ".hydra").mkdir(parents=True)
    (damaged / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    report(sweep)
    text = (sweep / "report.md").read_text()
    rows = _main_effects(text)
    assert [r[0].split(" (")[0] for r in rows if r[0].strip("| ")] == ["| model.d_act", "| model.g_act"]
    assert "(overrides unreadable)" not in "".join(r[1] for r in rows)
    assert all("unbalanced" in r[0] for r in rows if r[0].strip("| "))  # the levels met different partners
    g_rows = rows[2:]
    # elu G (3 of 6 runs: 1 with leaky_relu D, 2 with tanh D) still has the lowest mean, and is the best level
    assert g_rows[0][1] == "elu" and g_rows[0][2] == "3" and g_rows[1][6] != ""
    assert "damaged" in text  # the damaged run is listed, not dropped silently


def test_a_level_with_one_scored_run_is_not_the_best_level(tmp_path):
    sweep = tmp_path / "grid"
    skip = {("elu", d, s) for d in SHIFT for s in range(3)} - {("elu", "leaky_relu", 0)}
    _write_grid(sweep, skip)
    report(sweep)
    rows = _main_effects((sweep / "report.md").read_text())
    g_rows = rows[2:]
    assert [r[1] for r in g_rows] == ["tanh", "relu", "elu"]  # elu's single fid is lowest, but it cannot be tested
    assert g_rows[1][6] != "" and g_rows[2][6] == ""


def _collapse_sweep(sweep, collapsed):
    """Two G activations x 3 seeds; ``collapsed``: the (act, seed) runs with an evaluation judged collapsed."""
    fids = {"elu": [30.0, 31.0, 33.0], "relu": [60.0, 64.0, 65.0]}
    for act, values in fids.items():
        for seed, fid in enumerate(values):
            at = 500 if (act, seed) in collapsed else None
            _write_run(sweep, f"{act}_{seed}", [f"model.g_act={act}", f"seed={seed}"], fid, at)
    report(sweep)
    return (sweep / "report.md").read_text().splitlines()


def test_the_report_leads_with_the_collapse_count_when_most_runs_collapsed(tmp_path):
    every_relu_and_one_elu = {("relu", 0), ("relu", 1), ("relu", 2), ("elu", 1)}
    lines = _collapse_sweep(tmp_path / "most", every_relu_and_one_elu)
    counted = lines.index("6 runs: 6 finished.")
    lead = next(i for i, line in enumerate(lines) if "runs collapsed**" in line)
    assert lines[lead].startswith("**4 of 6 runs collapsed**")
    assert lead == counted + 2 and lines[counted + 1] == ""  # the first thing after the run count
    assert lead < next(i for i, line in enumerate(lines) if line.startswith("| rank"))
    # two elu runs escaped collapse: elu is still named best
    assert "Best configuration: **model.g_act=elu** (fid " in "\n".join(lines)


def test_half_the_runs_collapsed_is_not_led_with(tmp_path):
    lines = _collapse_sweep(tmp_path / "half", {("relu", 0), ("relu", 1), ("relu", 2)})
    assert not any("runs collapsed**" in line for line in lines)
    assert lines[lines.index("6 runs: 6 finished.") + 1].startswith("Final metrics")  # the report as it was


def test_no_configuration_is_called_best_when_every_scored_run_collapsed(tmp_path):
    everything = {(act, seed) for act in ("elu", "relu") for seed in range(3)}
    lines = _collapse_sweep(tmp_path / "all", everything)
    text = "\n".join(lines)
    assert "**6 of 6 runs collapsed**" in text
    assert "Best configuration" not in text and "Worst configuration" not in text
    elu = f"{(30.0 + 31.0 + 33.0) / 3:.3g}"
    assert (
        f"No configuration escaped collapse (every scored run had an evaluation judged collapsed); the lowest fid: "
        f"**model.g_act=elu** (fid {elu} ± " in text
    )
    assert "the highest: **model.g_act=relu**" in text
    assert any(line.startswith("| 1 | model.g_act=elu |") for line in lines)  # the table is kept as it was


def test_where_and_how_a_run_ran_is_not_a_configuration(tmp_path):
    """Two parts of one study launched with different console or data settings are still the same configurations."""
    from gan.study.runs import find_runs

    sweep = tmp_path / "study"
    _write_run(sweep / "a", "0", ["model.g_act=relu", "trainer.enable_progress_bar=false", "seed=0"], 50.0)
    _write_run(sweep / "b", "0", ["model.g_act=elu", "data.root=/elsewhere", "seed=0"], 20.0)
    runs = find_runs(sweep)
    assert sorted(r.label for r in runs) == ["model.g_act=elu", "model.g_act=relu"]


def test_overrides_with_interpolations_are_read_as_written_never_resolved(tmp_path, monkeypatch):
    from gan.study.runs import find_runs
    from tests.study.synthetic import write_run

    monkeypatch.setenv("LAB_SECRET", "resolved")
    write_run(tmp_path, "0_a", ["model.fixed_noise_seed=${seed}", "+note=${oc.env:LAB_SECRET}", "seed=0"], fid=10.0)
    write_run(tmp_path, "1_b", ["model.fixed_noise_seed=3", "+note=plain", "seed=0"], fid=12.0)
    runs = {r.path.name: r for r in find_runs(tmp_path)}
    assert runs["0_a"].problem is None
    assert runs["0_a"].overrides["model.fixed_noise_seed"] == "${seed}"
    assert runs["0_a"].overrides["note"] == "${oc.env:LAB_SECRET}"
