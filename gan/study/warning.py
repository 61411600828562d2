"""An early warning of collapse: can a sweep's runs that end collapsed be told from what was measured in their first
10% of training?

Each run's diagnostics probes (``results.json``'s ``diagnostics_history``: G's dead and saturated shares and
Jacobian conditioning, D's activation-pattern entropies, input-gradient norms, learning-signal diversity and
logits) taken at or before 10% of its iterations are averaged, measure by measure. A small model, an L2-regularized
logistic regression on those few measures standardized, predicts the run's final verdict (``collapsed`` or not).
It is cross-validated over held-out seeds: for each seed, the model is fit on the runs of the other seeds (means and
spreads for the standardization too) and predicts the held-out seed's runs, so no prediction has seen its run or
a run of its seed. The pooled out-of-fold predictions give the AUROC (0.5: no warning, 1: every collapsed run
ranked above every healthy one) and a percentile bootstrap interval over runs. Which measures carry it: each
measure's standardized coefficient in the model fit on all runs, and each measure's own AUROC (the rank statistic of
that single early value, oriented as the sign of its coefficient says).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gan.study.runs import Run

EARLY_SHARE = 0.10  # "early": probes at or before this share of the run's iterations
L2 = 1.0  # the logistic regression's penalty on the standardized coefficients (the intercept is free)
BOOTSTRAP = 2000
MIN_RUNS = 8
# The measures the warning reads (results.json diagnostics keys -> the report's names): a few, each with a reason
# to move before a collapse shows in the samples.
WARNING_MEASURES = {
    "D_grad_diversity": "D learning-signal diversity",
    "D_grad_norm_fake": "D input-gradient norm (fake)",
    "D_unit_entropy_fake": "D unit entropy (fake)",
    "D_pattern_similarity_fake": "D pattern similarity (fake)",
    "D_logit_real": "D mean logit (real)",
    "D_logit_fake": "D mean logit (fake)",
    "G_dead": "G dead-unit share",
    "G_saturated": "G saturated share",
    "G_jacobian_log_cond_mean": "G Jacobian log condition number",
}


@dataclass
class EarlyWarning:
    """What the warning found on a sweep (``reason`` says why there is none when ``auroc`` is NaN)."""

    runs: int
    collapsed: int
    folds: int
    measures: list[str]
    auroc: float = math.nan
    interval: tuple[float, float] = (math.nan, math.nan)
    coefficients: dict[str, float] = field(default_factory=dict)
    single: dict[str, float] = field(default_factory=dict)
    predictions: dict[str, float] = field(default_factory=dict)  # run folder name -> out-of-fold P(collapse)
    reason: str | None = None


def early_measures(run: Run, share: float = EARLY_SHARE) -> dict[str, float]:
    """The mean of each warning measure over the run's probes at or before ``share`` of its iterations (only the
    finite values; a measure without any is left out)."""
    data = run.results.data if run.results else {}
    history = data.get("diagnostics_history") or []
    horizon = share * (run.results.iterations if run.results else 0)
    early = [h for h in history if isinstance(h, dict) and 0 < float(h.get("iteration", 0)) <= horizon]
    found = {}
    for key in WARNING_MEASURES:
        values = [float(h[key]) for h in early if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
        if values:
            found[key] = sum(values) / len(values)
    return found


def final_collapse(run: Run) -> bool | None:
    """Whether the run's final evaluation was judged collapsed (None: no verdict, e.g. never evaluated)."""
    verdict = run.final_verdict
    return None if verdict is None else verdict == "collapsed"


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The area under the ROC curve: the chance that a random positive scores above a random negative, ties counted
    half (the Mann-Whitney statistic); NaN without both classes."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, steps: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularized logistic regression by Newton's method: (coefficients, intercept); the penalty leaves the
    intercept free, and keeps the fit finite when the classes are separable (as they often are in a small sweep)."""
    n, d = x.shape
    design = np.hstack([np.ones((n, 1)), x])
    penalty = np.diag([0.0] + [l2] * d)
    beta = np.zeros(d + 1)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ beta))
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta[1:], float(beta[0])


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def _predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """P(collapse) for ``x_test`` from a model fit on the training rows (their base rate when they hold one class)."""
    if y_train.min() == y_train.max():
        return np.full(len(x_test), float(y_train.mean()))
    train, test = _standardize(x_train, x_test)
    w, b = fit_logistic(train, y_train)
    return 1 / (1 + np.exp(-(test @ w + b)))


def bootstrap_auroc(
    scores: Sequence[float], labels: Sequence[bool], level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC over runs (resamples lacking a class are drawn again)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    while len(values) < BOOTSTRAP:
        pick = rng.integers(0, len(s), len(s))
        if y[pick].all() or not y[pick].any():
            continue
        values.append(auroc(s[pick], y[pick]))
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def early_warning(runs: Sequence[Run], share: float = EARLY_SHARE) -> EarlyWarning:
    """Fit and cross-validate the warning on a sweep's runs (see the module docstring)."""
    rows = []
    for run in runs:
        verdict, measures = final_collapse(run), early_measures(run, share)
        if verdict is not None and measures and run.results is not None:
            rows.append((run, verdict, measures))
    common = [k for k in WARNING_MEASURES if rows and all(k in m for _, _, m in rows)]
    x = np.array([[m[k] for k in common] for _, _, m in rows], dtype=float).reshape(len(rows), len(common))
    varied = [j for j in range(len(common)) if len(rows) and np.ptp(x[:, j]) > 0]
    common, x = [common[j] for j in varied], x[:, varied]
    y = np.array([verdict for _, verdict, _ in rows], dtype=float)
    seeds = [run.seed for run, _, _ in rows]
    found = EarlyWarning(
        runs=len(rows), collapsed=int(y.sum()), folds=len(set(seeds)), measures=[WARNING_MEASURES[k] for k in common]
    )
    if len(rows) < MIN_RUNS or not common or found.collapsed in (0, len(rows)) or found.folds < 2:
        found.reason = (
            f"{len(rows)} runs with early probes and a final verdict ({found.collapsed} collapsed) over "
            f"{found.folds} seeds, {len(common)} measures that vary: the warning needs {MIN_RUNS} runs or more, "
            "both outcomes, two seeds or more and probes in the first 10% of training (diag.every_n_steps at most "
            "a tenth of the run)"
        )
        return found
    predicted = np.zeros(len(rows))
    for seed in sorted(set(seeds)):
        test = np.array([s == seed for s in seeds])
        predicted[test] = _predict(x[~test], y[~test], x[test])
    found.auroc = auroc(predicted, y.astype(bool))
    found.interval = bootstrap_auroc(predicted, y.astype(bool))
    standardized, _ = _standardize(x, x)
    w, _ = fit_logistic(standardized, y)
    found.coefficients = {WARNING_MEASURES[k]: float(c) for k, c in zip(common, w, strict=True)}
    found.single = {
        WARNING_MEASURES[k]: auroc(x[:, j] * (1 if w[j] >= 0 else -1), y.astype(bool)) for j, k in enumerate(common)
    }
    found.predictions = {run.path.name: float(p) for (run, _, _), p in zip(rows, predicted, strict=True)}
    return found


LATER_SHARES = (0.2, 0.3, 0.5)  # the same model on later windows: how early the outcome can be read at all


def later_horizons(runs: Sequence[Run], shares: Sequence[float] = LATER_SHARES) -> dict[float, EarlyWarning]:
    """The warning refit on the probes up to each later share of training (the same model and cross-validation)."""
    return {share: early_warning(runs, share) for share in shares}


def markdown_lines(found: EarlyWarning, later: dict[float, EarlyWarning] | None = None) -> list[str]:
    """The report's section on the warning (and, when given, the same model on later windows)."""
    lines = ["", "## Early warning of collapse", ""]
    later_lines = []
    if later:
        cells = [
            f"{share:.0%}: "
            + ("n/a" if math.isnan(w.auroc) else f"{w.auroc:.2f} [{w.interval[0]:.2f}, {w.interval[1]:.2f}]")
            for share, w in later.items()
        ]
        later_lines = [
            "",
            "The same model on the probes up to later shares of training (AUROC [95% interval]): "
            + "; ".join(cells)
            + ". A warning that only comes late is a description of the collapse, not a forecast.",
        ]
    if math.isnan(found.auroc):
        return lines + [f"No early warning: {found.reason}.", *later_lines]
    lo, hi = found.interval
    lines += [
        f"From the diagnostics of each run's first {EARLY_SHARE:.0%} of training, a logistic regression on "
        f"{len(found.measures)} standardized measures predicts its final collapse verdict with **AUROC "
        f"{found.auroc:.2f}** (95% bootstrap interval {lo:.2f} to {hi:.2f}; {found.runs} runs, {found.collapsed} "
        f"collapsed; cross-validated over {found.folds} held-out seeds). Which measures carry it (standardized "
        "coefficient of the model fit on all runs: positive, more of it early means collapse; and the measure's own "
        "AUROC, in-sample):",
        "",
        "| early measure | coefficient | own AUROC |",
        "|---|---|---|",
    ]
    ranked = sorted(found.coefficients, key=lambda name: -abs(found.coefficients[name]))
    lines += [f"| {name} | {found.coefficients[name]:+.2f} | {found.single[name]:.2f} |" for name in ranked]
    return lines + later_lines
