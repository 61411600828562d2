"""``python -m gan.report SWEEP_DIR``: turn a sweep's run directories into tables and plots.

Reads every job folder under SWEEP_DIR (``.hydra/overrides.yaml`` and ``results.json``; works on partial and
still-running sweeps) and writes into SWEEP_DIR:

- ``results.csv``: one row per run: its overrides, seed, status, final and best metrics, iterations, wall time;
- ``report.md``: per configuration (the overrides that vary, seed aside) the mean +- std (n) of each final metric
  over seeds, ranked by fid, with the fid's bootstrap 95% interval, whether it is tied with the best (intervals
  overlap) and the p-value of a Mann-Whitney U test against the best (raw and Holm-adjusted); diverged, failed
  and collapsed runs counted (with the median iteration of collapse), the best and worst configurations named,
  configurations with fewer than 3 scored seeds flagged; when two or more overrides vary, each one's main effect
  (its levels pooled over the others and the seeds: Kruskal-Wallis p, each level against the best level with
  raw and Holm-adjusted U-test p-values); the rank correlations of the final fid with each run's
  dead-unit and saturated shares and G's Jacobian conditioning; the runs that did not finish or cannot be read,
  and why;
- ``fid_heatmap.png``: mean final fid per (model.g_act, model.d_act) cell, when the sweep varies both;
- ``curves.png``: fid and losses over training per configuration, mean over seeds with a min-max band;
- ``samples.png``: the latest sample grid of one run per configuration, side by side;
- ``mechanism.png``: final fid against G's dead share, saturated share and Jacobian conditioning, one point per
  run, coloured by configuration.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gan.eval.metrics import METRIC_NAMES, collapse_verdict
from gan.runs.rundir import RESULTS_NAME, RunResults
from gan.study.stats import (
    MIN_SEEDS,
    bootstrap_interval,
    group_test,
    holm_adjusted,
    overlaps,
    rank_correlation,
    rank_test,
)

HEATMAP_AXES = ("model.g_act", "model.d_act")
UNREADABLE = "(overrides unreadable)"  # the level of every factor for a run whose overrides.yaml is damaged


@dataclass
class Run:
    """One job folder of a sweep."""

    path: Path
    overrides: dict[str, str]
    results: RunResults | None  # its results.json, the one record type the writer uses too
    label: str = ""
    varying: dict[str, str] = field(default_factory=dict)

    problem: str | None = None  # why its results.json cannot be read (listed in report.md)

    @property
    def status(self) -> str:
        """The record's status (``killed`` for a ``running`` record whose writer is gone: see ``RunResults.state``);
        ``unreadable`` for a results.json that is not a record; else no results."""
        if self.results is not None:
            return self.results.state()
        return "unreadable" if self.problem else "no results (refused or not started)"

    @property
    def seed(self) -> str:
        if "seed" in self.overrides:
            return self.overrides["seed"]
        return str(self.results.seed) if self.results else ""

    @property
    def latest(self) -> dict[str, Any] | None:
        """The final evaluation, or for a running job its latest one."""
        return self.results.latest if self.results else None

    @cached_property
    def final_verdict(self) -> str | None:
        """The collapse verdict of its latest evaluation (read once: summary and csv both use it)."""
        return verdict_of(self.latest)

    @cached_property
    def first_collapse(self) -> int | None:
        """The iteration of its first evaluation judged collapsed: see ``first_collapse``."""
        return first_collapse(self)

    @cached_property
    def mechanism_measures(self) -> dict[str, float]:
        """Its mechanism measurements: see ``mechanism_values``."""
        return mechanism_values(self)


def verdict_of(record: dict[str, Any] | None) -> str | None:
    """An evaluation's collapse verdict. One recorded before verdicts were (a sweep of an older version of the lab)
    is judged now by the same thresholds from its classes covered (and its diversity, when it was recorded)."""
    if not record:
        return None
    if record.get("verdict"):
        return str(record["verdict"])
    modes = record.get("modes")
    if not isinstance(modes, (int, float)):
        return None
    diversity = record.get("diversity")
    return collapse_verdict(float(modes), float(diversity) if isinstance(diversity, (int, float)) else math.nan)


def first_collapse(run: Run) -> int | None:
    """The iteration of the run's first evaluation judged collapsed (recorded, or judged now for older records)."""
    if run.results is None:
        return None
    # the earliest of the recorded one and any found now (an older run resumed by a newer lab records only the
    # collapses after the resume)
    found = [e.get("iteration") for e in run.results.evaluations if verdict_of(e) == "collapsed"]
    found.append(run.results.data.get("first_collapse_iteration"))
    numbers = [int(i) for i in found if isinstance(i, (int, float)) and math.isfinite(i)]
    return min(numbers, default=None)


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    items = list(OmegaConf.load(path)) if path.is_file() else []
    parsed = {}
    for item in items or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        parsed[key] = value
    return parsed


def find_runs(sweep: Path) -> list[Run]:
    """Every job folder under ``sweep`` (one holding .hydra/ or results.json), labelled by what varies."""
    jobs = sorted({p.parent for p in sweep.rglob(RESULTS_NAME)} | {p.parent for p in sweep.rglob(".hydra")})
    runs, damaged = [], set()
    for job in jobs:
        problem = RunResults.problem(job)
        try:
            overrides = _overrides(job)
        except Exception as exc:  # noqa: BLE001 - a damaged overrides.yaml: the run is listed, not the report lost
            overrides, problem = {}, f".hydra/overrides.yaml unreadable ({type(exc).__name__})"
            damaged.add(job)
        results = RunResults.load(job) if problem in (None, "no results.json") else None
        runs.append(Run(job, overrides, results, problem=None if problem == "no results.json" else problem))
    # what varies, over the runs whose overrides could be read (a damaged one would make every key look varied)
    readable = [r for r in runs if r.path not in damaged]
    keys = sorted({k for r in readable for k in r.overrides if k != "seed"})
    varying = [k for k in keys if len({r.overrides.get(k) for r in readable}) > 1]
    for run in runs:
        fallback = UNREADABLE if run.path in damaged else "(default)"
        run.varying = {k: run.overrides.get(k, fallback) for k in varying}
        run.label = " ".join(f"{k}={v}" for k, v in run.varying.items()) or "(one configuration)"
    return runs


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0), len(finite)


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per configuration: final-metric mean/std over its scored runs, status counts; ranked by fid."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    rows = []
    for label, members in groups.items():
        scored = [r.latest for r in members if r.latest is not None]
        row: dict[str, Any] = {
            "config": label,
            "varying": members[0].varying,
            "runs": len(members),
            "diverged": sum(r.status == "diverged" for r in members),
            "failed": sum(r.status == "failed" for r in members),
            "running": sum(r.status == "running" for r in members),
            "killed": sum(r.status == "killed" for r in members),
        }
        for metric in METRIC_NAMES:
            row[metric] = _mean_std([s[metric] for s in scored])
        row["collapse_iterations"] = [r.first_collapse for r in members if r.first_collapse is not None]
        row["partial"] = sum(r.final_verdict == "partial collapse" for r in members)
        row["fid_values"] = [s["fid"] for s in scored]
        row["fid_ci"] = bootstrap_interval(row["fid_values"])
        rows.append(row)
    rows.sort(key=lambda r: (math.isnan(r["fid"][0]), r["fid"][0]))
    best = next((r for r in rows if r["fid"][2] > 0), None)
    for row in rows:
        is_best, scored_row = row is best, row["fid"][2] > 0
        row["tied_with_best"] = is_best or bool(best and scored_row and overlaps(row["fid_ci"], best["fid_ci"]))
    _test_against_best(rows, best, "fid_values")
    return rows


def _test_against_best(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None, values: str) -> None:
    """Each row's U-test p against the best row's values (``p_vs_best``) and its Holm adjustment over all of them
    (``p_holm``); nan for the best itself and for every row when there is no best."""
    for row in rows:
        row["p_vs_best"] = rank_test(best[values], row[values]) if best and row is not best else math.nan
    for row, adjusted in zip(rows, holm_adjusted([r["p_vs_best"] for r in rows]), strict=True):
        row["p_holm"] = adjusted


def factor_effects(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Main effects: per factor (an override that varies, when two or more do) its levels' final fids pooled over
    the other factors and the seeds, the Kruskal-Wallis p across the levels, and each level against the best
    level (lowest mean fid among the levels with two or more scored runs; U test, raw and Holm-adjusted). In a full
    grid every level meets the same partners, so a level that wins here wins on average over them; 5 seeds x 3
    partners give 15 runs a level, which can show what one cell of 5 cannot. A factor whose levels met different
    partners (a cell missing, diverged or unscored) is flagged unbalanced: its pooled means mix other partners."""
    usable = [r for r in runs if UNREADABLE not in r.varying.values()]
    factors = sorted({k for r in usable for k in r.varying})
    if len(factors) < 2:
        return {}
    effects = {}
    for factor in factors:
        levels: dict[str, list[Run]] = defaultdict(list)
        for run in usable:
            levels[run.varying[factor]].append(run)
        rows, partners = [], []
        for level, members in levels.items():
            scored = [r for r in members if r.latest and _finite_fid(r.latest.get("fid"))]
            fids = [float(r.latest["fid"]) for r in scored]
            partners.append(sorted(tuple(v for k, v in sorted(r.varying.items()) if k != factor) for r in scored))
            rows.append(
                {
                    "level": level,
                    "fids": fids,
                    "fid": _mean_std(fids),
                    "median": statistics.median(fids) if fids else math.nan,
                    "runs": len(members),
                    "collapsed": sum(r.first_collapse is not None for r in members),
                }
            )
        rows.sort(key=lambda r: (len(r["fids"]) < 2, math.isnan(r["fid"][0]), r["fid"][0]))
        _test_against_best(rows, rows[0] if len(rows[0]["fids"]) >= 2 else None, "fids")
        effects[factor] = {
            "levels": rows,
            "p": group_test([r["fids"] for r in rows]),
            "balanced": all(p == partners[0] for p in partners),
        }
    return effects


def _finite_fid(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def write_csv(runs: Sequence[Run], path: Path) -> None:
    varying = list(runs[0].varying) if runs else []
    columns = ["run", "config", *varying, "seed", "status", "reason", "iterations", "wall_s"]
    columns += [f"final_{m}" for m in METRIC_NAMES] + ["final_verdict", "first_collapse_iteration"]
    columns += ["best_iteration"] + [f"best_{m}" for m in METRIC_NAMES]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for run in runs:
            res = run.results
            latest, best = run.latest or {}, (res.best if res else None) or {}
            row = {
                "run": run.path.name,
                "config": run.label,
                **run.varying,
                "seed": run.seed,
                "status": run.status,
                "reason": (res.reason if res else run.problem) or "",
                "iterations": res.iterations if res else "",
                "wall_s": res.data.get("wall_s", "") if res else "",
                "final_verdict": run.final_verdict or "",
                "first_collapse_iteration": "" if run.first_collapse is None else run.first_collapse,
                "best_iteration": best.get("iteration", ""),
            }
            row.update({f"final_{m}": latest.get(m, "") for m in METRIC_NAMES})
            row.update({f"best_{m}": best.get(m, "") for m in METRIC_NAMES})
            writer.writerow(row)


def _fmt(stat: tuple[float, float, int]) -> str:
    mean, std, n = stat
    return "n/a" if n == 0 else f"{mean:.3g} ± {std:.2g} ({n})"


def _fmt_interval(row: dict[str, Any]) -> str:
    """The fid cell: mean [bootstrap 95% interval] (seeds scored), flagged when fewer than MIN_SEEDS."""
    mean, _, n = row["fid"]
    if n == 0:
        return "n/a"
    lo, hi = row["fid_ci"]
    interval = f" [{lo:.3g}, {hi:.3g}]" if not math.isnan(lo) else ""
    return f"{mean:.3g}{interval} ({n}){' †' if n < MIN_SEEDS else ''}"


def _fmt_collapse(row: dict[str, Any]) -> str:
    """ "2 of 3 (median iteration 4690)": runs with an evaluation judged collapsed, and when the first came;
    "+ 1 partial" for runs whose latest evaluation is a partial collapse."""
    found = row["collapse_iterations"]
    cell = f"{len(found)} of {row['runs']}"
    if found:
        cell += f" (median iteration {statistics.median(found):.0f})"
    return cell + (f" + {row['partial']} partial" if row["partial"] else "")


def _fmt_p(value: float) -> str:
    """A p-value to 2 significant digits; empty for nan (no test)."""
    return "" if math.isnan(value) else f"{value:.2g}"


def _fmt_versus_best(row: dict[str, Any], rank: int) -> list[str]:
    if row["fid"][2] == 0:
        return ["", "", ""]
    if math.isnan(row["p_vs_best"]) and row["tied_with_best"] and rank == 1:
        return ["best", "", ""]
    p, holm = _fmt_p(row["p_vs_best"]), _fmt_p(row["p_holm"])
    return ["tied" if row["tied_with_best"] else "worse", p, holm]


def write_markdown(
    sweep: Path,
    runs: Sequence[Run],
    rows: Sequence[dict[str, Any]],
    plots: Sequence[str],
    mechanism: dict[str, tuple[float, float, int]] | None = None,
    effects: dict[str, dict[str, Any]] | None = None,
) -> str:
    statuses: dict[str, int] = defaultdict(int)
    for run in runs:
        statuses[run.status] += 1
    lines = [
        f"# Sweep report: {sweep}",
        "",
        f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ".",
        "Final metrics (the last evaluation of each run; a running run counts with its latest) over seeds, ranked "
        "by fid (lower is better; higher is better for is, modes, precision, recall). fid: mean [bootstrap 95% "
        "interval of the mean] (runs scored); the others: mean ± std (runs scored). vs best: tied when the "
        "intervals overlap; p: two-sided Mann-Whitney U test of the fids against the best's; p (Holm): p adjusted "
        "for testing the best against every other configuration (Holm-Bonferroni), the one to read before calling "
        "a configuration worse (the best was picked from the same runs, so even this is optimistic).",
        "",
        "| rank | configuration | runs | diverged | failed | collapsed | fid | vs best | p | p (Holm) | "
        + " | ".join(m for m in METRIC_NAMES if m != "fid")
        + " |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * (len(METRIC_NAMES) - 1),
    ]
    for i, row in enumerate(rows, 1):
        cells = [str(i), row["config"], str(row["runs"]), str(row["diverged"]), str(row["failed"]), _fmt_collapse(row)]
        cells += [_fmt_interval(row), *_fmt_versus_best(row, i)]
        lines.append("| " + " | ".join(cells + [_fmt(row[m]) for m in METRIC_NAMES if m != "fid"]) + " |")
    if any(0 < r["fid"][2] < MIN_SEEDS for r in rows):
        lines += ["", f"† fewer than {MIN_SEEDS} seeds scored: its interval and test say little; run more seeds."]
    tied = [r["config"] for r in rows[1:] if r["tied_with_best"] and r["fid"][2] > 0]
    if tied:
        lines += ["", f"Not distinguishable from the best at these seeds (intervals overlap): {', '.join(tied)}."]
    scored = [r for r in rows if r["fid"][2] > 0]
    if scored:
        lines += [
            "",
            f"Best configuration: **{scored[0]['config']}** (fid {_fmt(scored[0]['fid'])}).",
            f"Worst configuration: **{scored[-1]['config']}** (fid {_fmt(scored[-1]['fid'])}).",
        ]
    lines += [
        "",
        "Collapsed: runs with an evaluation judged `collapsed` (at most 2 digit classes covered, or fixed-noise "
        "samples less varied than real digits of one class; thresholds from calibration sets, in the README), with "
        "the median iteration of the first such evaluation; partial: runs whose latest evaluation covers 3 to 9 "
        "classes.",
    ]
    if effects:
        lines += [
            "",
            "Main effects (each factor's levels pooled over the other factors and the seeds; Kruskal-Wallis p across "
            "the levels; each level's fids against the best level's: U test, raw and Holm-adjusted):",
            "",
            "| factor | level | runs | fid | fid median | collapsed | p | p (Holm) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for factor, effect in effects.items():
            for i, row in enumerate(effect["levels"]):
                p, holm = _fmt_p(row["p_vs_best"]), _fmt_p(row["p_holm"])
                median = "n/a" if math.isnan(row["median"]) else f"{row['median']:.3g}"
                name = f"{factor} (Kruskal-Wallis p {_fmt_p(effect['p']) or 'n/a'})" if i == 0 else ""
                if i == 0 and not effect["balanced"]:
                    name += " unbalanced: its levels met different partners"
                lines.append(
                    f"| {name} | {row['level']} | {row['runs']} | {_fmt(row['fid'])} | {median} | "
                    f"{row['collapsed']} of {row['runs']} | {p} | {holm} |"
                )
        lines += [
            "",
            "The best level is picked from these same runs, so its p-values are optimistic; a level's mean mixes its "
            "partners, so read an unbalanced factor's row with care.",
        ]
    if mechanism:
        lines += [
            "",
            "What goes with quality (Spearman rank correlation of each run's final fid with its last diagnostics "
            "probe; positive: more of it, worse fid):",
            "",
            "| mechanism | Spearman rho | p | runs |",
            "|---|---|---|---|",
        ]
        for name, (rho, p, n) in mechanism.items():
            lines.append(
                f"| {name} | {rho:.2f} | {p:.3g} | {n} |"
                if n >= 3 and math.isfinite(rho)
                else f"| {name} | n/a | | {n} |"
            )
    stopped = [r for r in runs if r.status in ("killed", "interrupted", "failed") or r.problem]
    if stopped:
        lines += [
            "",
            "Runs that did not finish (a killed run stopped without a word: its process is gone and its "
            "heartbeat stopped; resume a study by running its command again):",
            "",
        ]
        for run in stopped:
            said = run.problem or (f"{run.results.reason}" if run.results and run.results.reason else "")
            at = f" at iteration {run.results.iterations}" if run.results else ""
            lines.append(f"- `{run.path.relative_to(sweep)}`: {run.status}{at}" + (f": {said}" if said else ""))
    lines += [""] + [f"![{p}]({p})" for p in plots]
    text = "\n".join(lines) + "\n"
    (sweep / "report.md").write_text(text)
    return text


def plot_heatmap(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Mean final fid per (G activation, D activation) cell; False when the sweep lacks those two axes."""
    if not rows or not all(axis in rows[0]["varying"] for axis in HEATMAP_AXES):
        return False
    import matplotlib.pyplot as plt

    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row["fid"][2]:
            cells[(row["varying"][HEATMAP_AXES[0]], row["varying"][HEATMAP_AXES[1]])].append(row["fid"][0])
    g_acts = sorted({r["varying"][HEATMAP_AXES[0]] for r in rows})
    d_acts = sorted({r["varying"][HEATMAP_AXES[1]] for r in rows})
    grid = [[statistics.fmean(cells[(g, d)]) if cells.get((g, d)) else math.nan for d in d_acts] for g in g_acts]
    fig, ax = plt.subplots(figsize=(1.2 * len(d_acts) + 2.5, 0.8 * len(g_acts) + 1.8))
    image = ax.imshow(grid, cmap="viridis_r")
    ax.set_xticks(range(len(d_acts)), d_acts, rotation=45, ha="right")
    ax.set_yticks(range(len(g_acts)), g_acts)
    ax.set_xlabel("D hidden activation")
    ax.set_ylabel("G hidden activation")
    for i, row_values in enumerate(grid):
        for j, value in enumerate(row_values):
            ax.text(j, i, "n/a" if math.isnan(value) else f"{value:.1f}", ha="center", va="center", color="w")
    fig.colorbar(image, ax=ax, label="mean final fid (lower is better)")
    ax.set_title("FID by activation pair")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _loss_series(run: Run, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run.path / "tensorboard").is_dir():  # a run without TensorBoard logs (~logger) has no loss curves
        return []
    acc = EventAccumulator(str(run.path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def _band(series: Sequence[Sequence[tuple[int, float]]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max over runs at the steps all runs share."""
    common = sorted(set.intersection(*[{s for s, _ in one} for one in series])) if series else []
    values = [[dict(one)[s] for one in series] for s in common]
    return common, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def plot_curves(runs: Sequence[Run], path: Path) -> bool:
    import matplotlib.pyplot as plt

    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.results:
            groups[run.label].append(run)
    if not groups:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for label, members in sorted(groups.items()):
        fid = [[(e["iteration"], e["fid"]) for e in r.results.evaluations] for r in members]
        panels = [
            ("fid", [f for f in fid if f]),
            ("train/d_loss", [_loss_series(r, "train/d_loss") for r in members]),
            ("train/g_loss", [_loss_series(r, "train/g_loss") for r in members]),
        ]
        for ax, (_name, series) in zip(axes, panels, strict=False):
            series = [s for s in series if s]
            steps, mean, lo, hi = _band(series)
            if steps:
                (line,) = ax.plot(steps, mean, label=label)
                ax.fill_between(steps, lo, hi, alpha=0.2, color=line.get_color())
    for ax, title in zip(axes, ("fid (lower is better)", "discriminator loss", "generator loss"), strict=False):
        ax.set_title(title)
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def latest_grid(run_dir: Path) -> Path | None:
    """The run's last main sample grid (``samples/epochNNNN.png``; with a weight average, not ``*_no_ema``)."""
    grids = sorted(p for p in (run_dir / "samples").glob("epoch*.png") if not p.stem.endswith("_no_ema"))
    return grids[-1] if grids else None


def plot_samples(runs: Sequence[Run], path: Path) -> bool:
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    chosen: dict[str, Path] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        grid = latest_grid(run.path)
        if grid is not None and run.label not in chosen:
            chosen[run.label] = grid
    if not chosen:
        return False
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, grid) in zip(axes.flat, sorted(chosen.items()), strict=False):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        ax.set_title(label.replace(" ", "\n") + f"\n({grid.stem})", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


MECHANISMS = {  # name in the report -> how to read it from a run's results.json
    "G dead-unit share": ("diagnostics", "G_dead"),
    "G saturated share": ("diagnostics", "G_saturated"),
    "D dead-unit share": ("diagnostics", "D_dead"),
    "D saturated share": ("diagnostics", "D_saturated"),
    "G Jacobian log condition number": ("latest", "jacobian_log_cond_mean"),
}


def mechanism_values(run: Run) -> dict[str, float]:
    """A run's mechanism measurements (NaN when it has none): its last diagnostics probe, and G's Jacobian
    conditioning at its latest evaluation (or at the last probe)."""
    data = run.results.data if run.results else {}
    sources = {"diagnostics": data.get("diagnostics") or {}, "latest": run.latest or {}}
    values = {}
    for name, (source, key) in MECHANISMS.items():
        value = sources[source].get(key)
        if value is None and key.startswith("jacobian"):
            value = sources["diagnostics"].get(f"G_{key}")
        values[name] = float(value) if isinstance(value, (int, float)) else math.nan
    return values


def mechanism(runs: Sequence[Run]) -> dict[str, tuple[float, float, int]]:
    """Spearman's rho (p, runs) of the final fid against each mechanism, over the runs that have both."""
    scored = [r for r in runs if r.latest and isinstance(r.latest.get("fid"), (int, float))]
    fids = [r.latest["fid"] for r in scored]
    values = [r.mechanism_measures for r in scored]
    return {name: rank_correlation(fids, [v[name] for v in values]) for name in MECHANISMS}


def plot_mechanism(runs: Sequence[Run], path: Path) -> bool:
    """Final fid against G's dead share, saturated share and Jacobian conditioning: one panel each, a colour per
    configuration."""
    import matplotlib.pyplot as plt

    scored = [r for r in runs if r.latest and isinstance(r.latest.get("fid"), (int, float))]
    names = ["G dead-unit share", "G saturated share", "G Jacobian log condition number"]
    if not any(math.isfinite(r.mechanism_measures[n]) for r in scored for n in names):
        return False
    labels = sorted({r.label for r in scored})
    colours = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), sharey=True)
    for ax, name in zip(axes, names, strict=True):
        for i, label in enumerate(labels):
            points = [(r.mechanism_measures[name], r.latest["fid"]) for r in scored if r.label == label]
            ax.scatter(*zip(*points, strict=True), s=18, color=colours(i % 20), label=label)
        ax.set_xlabel(name)
        ax.set_yscale("log")
    axes[0].set_ylabel("final fid")
    if len(labels) <= 20:
        axes[-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plotted(name: str, plot: Any, path: Path) -> bool:
    """One figure; a figure that cannot be drawn (a damaged event file or image) is left out, said, and the rest of
    the report is still written."""
    try:
        return bool(plot(path))
    except OSError:
        raise  # the folder cannot be written: the report as a whole cannot
    except Exception as exc:  # noqa: BLE001 - one figure lost, not the report
        print(f"warning: {name} left out: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False


def report(sweep: str | Path) -> dict[str, Any]:
    """Write every report file into ``sweep``; returns the per-configuration rows."""
    import matplotlib

    matplotlib.use("Agg")
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: no such sweep folder.")
    runs = find_runs(sweep)
    if not runs:
        raise FileNotFoundError(f"{sweep} holds no run directories (no .hydra/ or {RESULTS_NAME} below it).")
    rows = summarize(runs)
    write_csv(runs, sweep / "results.csv")
    plots = [
        name
        for name, plot in (
            ("fid_heatmap.png", lambda path: plot_heatmap(rows, path)),
            ("curves.png", lambda path: plot_curves(runs, path)),
            ("samples.png", lambda path: plot_samples(runs, path)),
            ("mechanism.png", lambda path: plot_mechanism(runs, path)),
        )
        if _plotted(name, plot, sweep / name)
    ]
    write_markdown(sweep, runs, rows, plots, mechanism(runs), factor_effects(runs))
    return {"runs": len(runs), "configurations": rows, "plots": plots}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep folder, e.g. outputs/multirun/2026-11-27/18-00-00")
    args = parser.parse_args(argv)
    try:
        result = report(args.sweep)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from exc
    except OSError as exc:  # a read-only or full disk
        raise SystemExit(f"error: cannot write the report into {args.sweep}: {exc}") from exc
    print(
        f"{result['runs']} runs, {len(result['configurations'])} configurations -> "
        f"{Path(args.sweep) / 'report.md'}, results.csv, " + ", ".join(result["plots"])
    )


if __name__ == "__main__":
    main()
