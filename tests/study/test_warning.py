"""gan.study.warning: the early warning of collapse on synthetic sweeps whose answer is known."""

import json
import math

import numpy as np
import pytest

from gan.report import report
from gan.study.runs import find_runs
from gan.study.warning import auroc, bootstrap_auroc, early_measures, early_warning, fit_logistic
from tests.study.synthetic import write_run


def _with_history(run, history):
    path = run / "results.json"
    data = json.loads(path.read_text())
    data["diagnostics_history"] = history
    path.write_text(json.dumps(data))


def _sweep(tmp_path, early, late=None, seeds=4, per_seed=6):
    """Runs over ``seeds`` x ``per_seed`` whose final verdict is collapsed for every other run; ``early(i, collapsed)``
    and ``late(i, collapsed)`` give each run's probe values at iterations 5 and 10 (early: 10% of 100) and 50, 100."""
    i = 0
    for seed in range(seeds):
        for j in range(per_seed):
            collapsed = j % 2 == 0
            run = write_run(
                tmp_path,
                f"{i}_run",
                [f"model.d_act=a{j}", f"seed={seed}"],
                fid=50.0,
                collapsed_at=100 if collapsed else None,
                iterations=(50, 100),
            )
            late_values = (late or early)(i, collapsed)
            _with_history(
                run,
                [{"iteration": it, **early(i, collapsed)} for it in (5, 10)]
                + [{"iteration": it, **late_values} for it in (50, 100)],
            )
            i += 1
    return find_runs(tmp_path)


def test_auroc_closed_forms():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5], [False, True]) == 0.5  # a tie counts half
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_logistic_fit_is_the_penalized_likelihood_minimum():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=30) > 0).astype(float)
    w, b = fit_logistic(x, y, l2=1.0)

    def loss(beta):
        z = beta[0] + x @ beta[1:]
        return np.sum(np.logaddexp(0, z) - y * z) + 0.5 * np.sum(beta[1:] ** 2)

    best = minimize(loss, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    assert np.allclose(np.r_[b, w], best, atol=1e-4)


def test_a_measure_that_tells_early_gives_a_full_warning_and_is_named(tmp_path):
    rng = np.random.default_rng(1)
    runs = _sweep(
        tmp_path,
        lambda i, c: {"D_grad_diversity": (0.2 if c else 0.6) + 0.05 * rng.random(), "G_dead": float(rng.random())},
    )
    found = early_warning(runs)
    assert (found.runs, found.collapsed, found.folds) == (24, 12, 4)
    assert found.auroc == 1.0 and found.interval[0] == 1.0
    ranked = sorted(found.coefficients, key=lambda n: -abs(found.coefficients[n]))
    assert ranked[0] == "D learning-signal diversity" and found.coefficients[ranked[0]] < 0  # less diversity: collapse
    assert found.single["D learning-signal diversity"] == 1.0
    assert set(found.predictions) == {r.path.name for r in runs}


def test_only_the_first_tenth_of_training_is_read(tmp_path):
    # late probes tell perfectly, early ones are the same for every run: no warning can be made
    runs = _sweep(tmp_path, lambda i, c: {"D_grad_diversity": 0.5}, late=lambda i, c: {"D_grad_diversity": float(c)})
    assert early_measures(runs[0]) == {"D_grad_diversity": 0.5}
    found = early_warning(runs)
    assert math.isnan(found.auroc) and "0 measures that vary" in found.reason


def test_predictions_are_out_of_fold_over_seeds(tmp_path):
    rng = np.random.default_rng(2)
    values = {i: float(rng.random()) for i in range(24)}
    runs = _sweep(tmp_path, lambda i, c: {"D_grad_diversity": values[i] + (0.3 if c else 0.0)})
    before = early_warning(runs).predictions
    # flip seed 0's outcomes: its own predictions must not move (they come from models of the other seeds)
    for run in runs:
        if run.seed == "0":
            data = json.loads((run.path / "results.json").read_text())
            final = data["final"]
            final["verdict"] = None if final.get("verdict") == "collapsed" else "collapsed"
            data["final"] = data["best"] = final
            (run.path / "results.json").write_text(json.dumps(data))
    after = early_warning(find_runs(tmp_path)).predictions
    seed0 = [r.path.name for r in runs if r.seed == "0"]
    others = [r.path.name for r in runs if r.seed != "0"]
    assert all(before[n] == pytest.approx(after[n]) for n in seed0)
    assert any(before[n] != pytest.approx(after[n]) for n in others)


def test_no_warning_without_both_outcomes_or_enough_runs(tmp_path):
    runs = _sweep(tmp_path, lambda i, c: {"D_grad_diversity": float(c)}, seeds=1, per_seed=4)
    found = early_warning(runs)
    assert math.isnan(found.auroc) and "needs 8 runs" in found.reason


def test_bootstrap_interval_brackets_the_auroc_and_is_seeded():
    rng = np.random.default_rng(3)
    labels = rng.random(40) < 0.5
    scores = labels + rng.normal(scale=0.8, size=40)
    lo, hi = bootstrap_auroc(scores, labels)
    assert lo < auroc(scores, labels) < hi and (lo, hi) == bootstrap_auroc(scores, labels)


def test_the_report_has_the_warning_section(tmp_path):
    rng = np.random.default_rng(4)
    _sweep(tmp_path, lambda i, c: {"D_grad_diversity": (0.2 if c else 0.6) + 0.1 * rng.random()})
    result = report(tmp_path, say=lambda line: None)
    text = (tmp_path / "report.md").read_text()
    assert "## Early warning of collapse" in text and "**AUROC 1.00**" in text
    assert "| D learning-signal diversity |" in text and result["warning"].auroc == 1.0
    assert "The same model on the probes up to later shares of training (AUROC [95% interval]): 20%: 1.00" in text
