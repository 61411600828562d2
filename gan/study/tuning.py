"""An equal-budget tuning study as the report reads it (``experiment=tuning_budget``; ``gan.runs.tuning``): per
configuration its draws, the expected best fid after n of its k sampled draws with a bootstrap band, its success
rate, its best draw, and across configurations Kendall's tau between the ranking at the baseline (draw 0, the lab's
defaults) and at each configuration's best draw. ``best_draws.json`` is what the confirmation step re-runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from gan.files import save_figure, write_json_atomic
from gan.runs.tuning import BEST_DRAWS, flat_settings, same_value
from gan.study.runs import Run, tuned_settings
from gan.study.stats import budget_band, expected_best_curve, proportion_interval, rank_agreement

DONE = ("finished", "diverged", "failed")  # a draw still running (or killed, or interrupted) is not counted yet


@dataclass
class Draw:
    """One run of a tuning study: its draw, the settings it trained with, its final fid and whether it worked."""

    index: int
    settings: dict[str, Any]
    fid: float  # inf: no final score (diverged, failed, never scored)
    collapsed: bool
    status: str

    @property
    def succeeded(self) -> bool:
        """Finished with a score and not collapsed (a diverged or failed draw is a failure too)."""
        return math.isfinite(self.fid) and not self.collapsed


@dataclass
class TuningRow:
    """One configuration of a tuning study."""

    config: str
    varying: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)  # the varying settings' values as the runs' configs hold them
    draws: list[Draw] = field(default_factory=list)

    @property
    def sampled(self) -> list[Draw]:
        """Draws 1..k (the baseline, draw 0, is not a random draw: it stays out of the budget curve and rate)."""
        return sorted((d for d in self.draws if d.index > 0), key=lambda d: d.index)

    @property
    def baseline(self) -> Draw | None:
        return next((d for d in self.draws if d.index == 0), None)

    @property
    def best(self) -> Draw | None:
        """The lowest final fid over every draw, the baseline included (every configuration has the same draws):
        what the confirmation re-runs."""
        return _lowest(self.draws)

    @property
    def best_sampled(self) -> Draw | None:
        """The lowest final fid over the sampled draws (what the budget curve ends at, and tau compares)."""
        return _lowest(self.sampled)

    def curve(self) -> list[float]:
        return expected_best_curve([d.fid for d in self.sampled]) if self.sampled else []

    @cached_property
    def band(self) -> list[tuple[float, float]]:
        """The curve's bootstrap band (2,000 resamples: computed once, for the table and the plot alike)."""
        return budget_band([d.fid for d in self.sampled]) if self.sampled else []

    def success(self) -> tuple[int, int, tuple[float, float]]:
        """(draws that worked, draws, Wilson 95% interval of the share)."""
        wins, trials = sum(d.succeeded for d in self.sampled), len(self.sampled)
        return wins, trials, proportion_interval(wins, trials)


def _lowest(draws: Sequence[Draw]) -> Draw | None:
    scored = [d for d in draws if math.isfinite(d.fid)]
    return min(scored, key=lambda d: (d.fid, d.index)) if scored else None


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def tuning_rows(runs: Sequence[Run]) -> list[TuningRow]:
    """The study's configurations with their draws, in the order of their labels; empty for a sweep that is not a
    tuning study (no run has a draw)."""
    rows: dict[str, TuningRow] = {}
    for run in runs:
        config = run.results.config if run.results else {}
        tuning = config.get("tuning") or {}
        draw = tuning.get("draw")
        if draw is None or tuning.get("best_from") or run.status not in DONE:
            continue  # not a draw (a confirmation run is its best draw again), or not done yet
        latest = run.latest or {}
        fid = latest.get("fid") if run.status == "finished" else None
        fid = float(fid) if isinstance(fid, (int, float)) and math.isfinite(fid) else math.inf
        values = {key: _select(config, key) for key in run.varying}
        row = rows.setdefault(run.label, TuningRow(run.label, dict(run.varying), values))
        row.draws.append(Draw(int(draw), tuned_settings(config), fid, run.final_verdict == "collapsed", run.status))
    return [rows[label] for label in sorted(rows)]


def ranking_agreement(rows: Sequence[TuningRow]) -> tuple[float, float, int]:
    """Kendall's tau (p, configurations) between the configurations' fids at the baseline and at their best sampled
    draw (not the best over all draws, which could be the baseline itself and would make the rankings agree by
    construction). A draw without a score ranks last (tied with the others without one), not left out: a
    configuration whose baseline diverged is exactly one where tuning may matter."""
    worst = WORST_RANK
    at_default = [
        (row.baseline.fid if math.isfinite(row.baseline.fid) else worst) if row.baseline else None for row in rows
    ]
    at_best = [(row.best_sampled.fid if row.best_sampled else worst) if row.sampled else None for row in rows]
    return rank_agreement(at_default, at_best)


WORST_RANK = 1e300  # a finite stand-in for "no score", below which every fid ranks


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _fmt_settings(settings: dict[str, Any]) -> str:
    return (
        f"lr_g {settings['lr_g']:.3g}, lr_d {settings['lr_d']:.3g}, beta1 {settings['beta1']:g}, "
        f"{settings['init']}, {settings['loss']}"
    )


def markdown_lines(rows: Sequence[TuningRow]) -> list[str]:
    """The report's section on a tuning study."""
    k = max((len(r.sampled) for r in rows), default=0)
    shown = list(range(1, k + 1)) if k <= 8 else sorted({1, 2, 4, k // 2, k} | set(range(8, k, 8)))
    lines = [
        "",
        "## Equal-budget tuning",
        "",
        f"Each configuration got the same draws (paired): draw 0, the baseline (the lab's defaults), and k = {k} "
        "sampled settings (learning rates, Adam beta1, init, and the loss when tuned; gan/runs/tuning.py). "
        "Expected best fid after n sampled draws: the mean over every n-subset of the k draws of its lowest final "
        "fid (exact, without replacement; Dodge et al. 2019's curve), with a bootstrap 95% band; inf while n draws "
        "can all have diverged. The band's low end cannot go below the observed best (a resample never holds a "
        "lower value), so near n = k read it as the resampling spread, a lower bound on the uncertainty. Success: "
        "sampled draws that finished with a score and did not collapse, with a Wilson 95% interval. Best draw: over "
        "all draws, the baseline included (the confirmation re-runs it). The tables above pool each "
        "configuration's draws as if they were seeds: they describe it under random tuning, not at one setting.",
        "",
        "| configuration | baseline fid | "
        + " | ".join(f"E[best] n={n}" for n in shown)
        + " | success | best draw | best fid | its settings |",
        "|---|---|" + "---|" * len(shown) + "---|---|---|---|",
    ]
    order = sorted(rows, key=lambda r: (r.curve()[-1] if r.sampled else math.inf, r.config))
    for row in order:
        curve, band = row.curve(), row.band
        wins, trials, (low, high) = row.success()
        best = row.best
        cells = [row.config, _fmt(row.baseline.fid) if row.baseline else "n/a"]
        for n in shown:
            if n <= len(curve):
                cells.append(f"{_fmt(curve[n - 1])} [{_fmt(band[n - 1][0])}, {_fmt(band[n - 1][1])}]")
            else:
                cells.append("n/a")
        cells.append(f"{wins}/{trials} [{low:.2f}, {high:.2f}]" if trials else "n/a")
        cells += [str(best.index), _fmt(best.fid), _fmt_settings(best.settings)] if best else ["n/a", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    expected = max((len(r.draws) for r in rows), default=0)
    pending = [f"{r.config} ({len(r.draws)} of {expected})" for r in rows if len(r.draws) < expected]
    if pending:
        lines += ["", "Not all draws are done (scored here: finished, diverged or failed): " + ", ".join(pending) + "."]
    lines += _split_lines(rows)
    tau, p, pairs = ranking_agreement(rows)
    lines += [
        "",
        "Ranking at the baseline against the ranking at each configuration's best sampled draw (no score ranks "
        "last): Kendall's tau = "
        + (f"{tau:.2f} (p = {p:.3g}, {pairs} configurations)" if math.isfinite(tau) else f"n/a ({pairs} scored)")
        + "; 1: tuning changes no comparison, 0: the baseline's ranking says nothing about the tuned one.",
        "",
        f"Each configuration's best draw is in `{BEST_DRAWS}`; the confirmation step re-runs them over more seeds: "
        "`python -m gan.train -m experiment=tuning_confirm tuning.best_from=THIS_FOLDER ...`.",
    ]
    return lines


def _split_lines(rows: Sequence[TuningRow]) -> list[str]:
    """Per configuration and per value of each drawn choice (init, beta1, loss) that the study varied: its sampled
    draws' successes and best and median fid (does variance-preserving init change which activations work?)."""
    lines = []
    for key in ("init", "beta1", "loss"):
        values = sorted({str(d.settings[key]) for r in rows for d in r.sampled})
        if len(values) < 2:
            continue
        lines += [
            "",
            f"By {key} (sampled draws only; success / draws, best fid, median fid):",
            "",
            "| configuration | " + " | ".join(f"{key}={v}" for v in values) + " |",
            "|---|" + "---|" * len(values),
        ]
        for row in rows:
            cells = [row.config]
            for value in values:
                draws = [d for d in row.sampled if str(d.settings[key]) == value]
                fids = [d.fid for d in draws]
                wins = sum(d.succeeded for d in draws)
                cells.append(
                    f"{wins}/{len(draws)}, {_fmt(min(fids))}, {_fmt(statistics.median(fids))}" if draws else "n/a"
                )
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fixed_settings(rows: Sequence[TuningRow], runs: Sequence[Run]) -> dict[str, Any]:
    """The settings every draw of the study shares (model.*, the training subset; not the tuned ones, not the ones
    the study varies): a confirmation must have them too."""
    configs = [
        r.results.config for r in runs if r.results and (r.results.config.get("tuning") or {}).get("draw") is not None
    ]
    if not configs:
        return {}
    varying = {key for row in rows for key in row.varying}
    flat = [flat_settings(c) for c in configs]
    return {
        key: value
        for key, value in flat[0].items()
        if all(key in f and same_value(f[key], value) for f in flat[1:])
        and not any(key == v or key.startswith(f"{v}.") for v in varying)
    }


def write_best_draws(rows: Sequence[TuningRow], runs: Sequence[Run], path: Path) -> None:
    """Each configuration's best draw (what ``tuning.best_from`` reads; ``draw`` null when none scored), how many
    of its draws are done, the settings the whole study shares, and the study's tuning node."""
    tuning = next((r.results.config.get("tuning") for r in runs if r.results and r.results.config.get("tuning")), {})
    entries = [
        {
            "configuration": row.values,
            "label": row.config,
            "draw": row.best.index if row.best else None,
            "settings": row.best.settings if row.best else None,
            "fid": row.best.fid if row.best else None,
            "draws_done": len(row.draws),
        }
        for row in rows
    ]
    write_json_atomic(
        path,
        {
            "tuning": {k: v for k, v in tuning.items() if k != "draw"},
            "draws_per_configuration": int(tuning.get("draws", 0)) + 1,
            "fixed": _fixed_settings(rows, runs),
            "configurations": entries,
        },
    )


def plot_budget_curves(rows: Sequence[TuningRow], path: Path) -> bool:
    """Expected best fid against the number of sampled draws, one curve (with its band) per configuration."""
    drawn = [row for row in rows if row.sampled]
    if not drawn:
        return False
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for row in drawn:
        curve, band = row.curve(), row.band
        n = list(range(1, len(curve) + 1))
        finite = [(i, c, lo, hi) for i, c, (lo, hi) in zip(n, curve, band, strict=True) if math.isfinite(c)]
        if not finite:
            continue
        line = ax.plot([f[0] for f in finite], [f[1] for f in finite], marker="o", label=row.config)[0]
        upper = [f[3] if math.isfinite(f[3]) else max(c for _, c, _, _ in finite) for f in finite]
        ax.fill_between([f[0] for f in finite], [f[2] for f in finite], upper, color=line.get_color(), alpha=0.12)
    ax.set_xlabel("sampled draws tried (n)")
    ax.set_ylabel("expected best final fid (lower is better)")
    ax.set_title("Budget curves: expected best fid after n draws (band: bootstrap 95%)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, 120)
    return True
