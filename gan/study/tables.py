"""A sweep's numbers: one typed row per configuration (final metrics over seeds, fid interval, tests against the
best, collapse counts), main effects per factor, the mechanism's rank correlations, and the files they are written
to (``results.csv``, ``report.md``)."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan.eval.metrics import CARD_NAMES, METRIC_NAMES
from gan.files import text_file_atomic, write_text_atomic
from gan.study.runs import MECHANISMS, UNREADABLE, Run, tuned_settings
from gan.study.stats import (
    MIN_SEEDS,
    bootstrap_interval,
    group_test,
    holm_adjusted,
    overlaps,
    rank_correlation,
    rank_test,
)


@dataclass(frozen=True)
class Stat:
    """Mean, standard deviation and count of the finite values of a metric over runs (nan, nan, 0 for none)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return cls(math.nan, math.nan, 0)
        return cls(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite))

    def __str__(self) -> str:
        return "n/a" if self.n == 0 else f"{self.mean:.3g} ± {self.std:.2g} ({self.n})"


@dataclass
class Tested:
    """A row tested against the best row: its fids, the U test's p against the best's and its Holm adjustment."""

    fids: list[float]
    p_vs_best: float = math.nan
    p_holm: float = math.nan


@dataclass
class ConfigRow(Tested):
    """One configuration of a sweep (the overrides that vary, seed aside) over its runs."""

    config: str = ""
    varying: dict[str, str] = field(default_factory=dict)
    runs: int = 0
    diverged: int = 0
    failed: int = 0
    running: int = 0
    killed: int = 0
    metrics: dict[str, Stat] = field(default_factory=dict)  # each final metric over the scored runs
    collapse_iterations: list[int] = field(default_factory=list)  # each collapsed run's first collapse
    partial: int = 0  # runs whose latest evaluation is a partial collapse
    fid_ci: tuple[float, float] = (math.nan, math.nan)  # bootstrap 95% interval of the mean fid
    tied_with_best: bool = False

    @property
    def fid(self) -> Stat:
        return self.metrics["fid"]


@dataclass
class LevelRow(Tested):
    """One level of a factor, pooled over the other factors and the seeds."""

    level: str = ""
    fid: Stat = Stat(math.nan, math.nan, 0)
    median: float = math.nan
    runs: int = 0
    collapsed: int = 0


@dataclass
class FactorEffect:
    """A factor's levels (the best first), the Kruskal-Wallis p across them, whether its levels met the same
    partners."""

    levels: list[LevelRow]
    p: float
    balanced: bool


def summarize(runs: Sequence[Run]) -> list[ConfigRow]:
    """One row per configuration: final-metric mean/std over its scored runs, status counts; ranked by fid."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    rows = []
    for label, members in groups.items():
        scored = [r.latest for r in members if r.latest is not None]
        fids = [s["fid"] for s in scored]
        rows.append(
            ConfigRow(
                fids=fids,
                config=label,
                varying=members[0].varying,
                runs=len(members),
                diverged=sum(r.status == "diverged" for r in members),
                failed=sum(r.status == "failed" for r in members),
                running=sum(r.status == "running" for r in members),
                killed=sum(r.status == "killed" for r in members),
                metrics={metric: Stat.of([s[metric] for s in scored]) for metric in METRIC_NAMES},
                collapse_iterations=[r.first_collapse for r in members if r.first_collapse is not None],
                partial=sum(r.final_verdict == "partial collapse" for r in members),
                fid_ci=bootstrap_interval(fids),
            )
        )
    rows.sort(key=lambda r: (math.isnan(r.fid.mean), r.fid.mean))
    best = next((r for r in rows if r.fid.n > 0), None)
    for row in rows:
        row.tied_with_best = row is best or bool(best and row.fid.n > 0 and overlaps(row.fid_ci, best.fid_ci))
    _test_against_best(rows, best)
    return rows


def _test_against_best(rows: Sequence[Tested], best: Tested | None) -> None:
    """Each row's U-test p against the best row's fids and its Holm adjustment over all of them; nan for the best
    itself and for every row when there is no best."""
    for row in rows:
        row.p_vs_best = rank_test(best.fids, row.fids) if best and row is not best else math.nan
    for row, adjusted in zip(rows, holm_adjusted([r.p_vs_best for r in rows]), strict=True):
        row.p_holm = adjusted


def _finite_fid(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def factor_effects(runs: Sequence[Run]) -> dict[str, FactorEffect]:
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
                LevelRow(
                    fids=fids,
                    level=level,
                    fid=Stat.of(fids),
                    median=statistics.median(fids) if fids else math.nan,
                    runs=len(members),
                    collapsed=sum(r.first_collapse is not None for r in members),
                )
            )
        rows.sort(key=lambda r: (len(r.fids) < 2, math.isnan(r.fid.mean), r.fid.mean))
        _test_against_best(rows, rows[0] if len(rows[0].fids) >= 2 else None)
        balanced = all(p == partners[0] for p in partners)
        effects[factor] = FactorEffect(rows, group_test([r.fids for r in rows]), balanced)
    return effects


def mechanism(runs: Sequence[Run]) -> dict[str, tuple[float, float, int]]:
    """Spearman's rho (p, runs) of the final fid against each mechanism, over the runs that have both."""
    scored = [r for r in runs if r.latest and isinstance(r.latest.get("fid"), (int, float))]
    fids = [r.latest["fid"] for r in scored]
    values = [r.mechanism_measures for r in scored]
    return {name: rank_correlation(fids, [v[name] for v in values]) for name in MECHANISMS}


# what each run trained with of the settings an equal-budget study tunes (results.csv records them for every sweep)
TUNED_COLUMNS = ("lr_g", "lr_d", "beta1", "init", "loss")


def write_csv(runs: Sequence[Run], path: Path) -> None:
    varying = list(runs[0].varying) if runs else []
    columns = ["run", "config", *varying, "seed", "draw", *TUNED_COLUMNS, "status", "reason", "iterations", "wall_s"]
    columns += [f"final_{m}" for m in METRIC_NAMES + CARD_NAMES] + ["final_verdict", "first_collapse_iteration"]
    columns += ["best_iteration"] + [f"best_{m}" for m in METRIC_NAMES]
    with text_file_atomic(path) as fh:  # a full disk keeps the previous results.csv whole
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for run in runs:
            res = run.results
            latest, best = run.latest or {}, (res.best if res else None) or {}
            config = res.config if res else {}
            row = {
                "run": run.path.name,
                "config": run.label,
                **run.varying,
                "seed": run.seed,
                "draw": (config.get("tuning") or {}).get("draw", ""),
                **{k: "" if v is None else v for k, v in tuned_settings(config).items()},
                "status": run.status,
                "reason": (res.reason if res else run.problem) or "",
                "iterations": res.iterations if res else "",
                "wall_s": res.data.get("wall_s", "") if res else "",
                "final_verdict": run.final_verdict or "",
                "first_collapse_iteration": "" if run.first_collapse is None else run.first_collapse,
                "best_iteration": best.get("iteration", ""),
            }
            row.update({f"final_{m}": latest.get(m, "") for m in METRIC_NAMES + CARD_NAMES})
            row.update({f"best_{m}": best.get(m, "") for m in METRIC_NAMES})
            writer.writerow(row)


def _fmt_interval(row: ConfigRow) -> str:
    """The fid cell: mean [bootstrap 95% interval] (seeds scored), flagged when fewer than MIN_SEEDS."""
    if row.fid.n == 0:
        return "n/a"
    lo, hi = row.fid_ci
    interval = f" [{lo:.3g}, {hi:.3g}]" if not math.isnan(lo) else ""
    return f"{row.fid.mean:.3g}{interval} ({row.fid.n}){' †' if row.fid.n < MIN_SEEDS else ''}"


def _fmt_collapse(row: ConfigRow) -> str:
    """ "2 of 3 (median iteration 4690)": runs with an evaluation judged collapsed, and when the first came;
    "+ 1 partial" for runs whose latest evaluation is a partial collapse."""
    found = row.collapse_iterations
    cell = f"{len(found)} of {row.runs}"
    if found:
        cell += f" (median iteration {statistics.median(found):.0f})"
    return cell + (f" + {row.partial} partial" if row.partial else "")


def _fmt_p(value: float) -> str:
    """A p-value to 2 significant digits; empty for nan (no test)."""
    return "" if math.isnan(value) else f"{value:.2g}"


def _fmt_versus_best(row: ConfigRow, rank: int) -> list[str]:
    if row.fid.n == 0:
        return ["", "", ""]
    if math.isnan(row.p_vs_best) and row.tied_with_best and rank == 1:
        return ["best", "", ""]
    return ["tied" if row.tied_with_best else "worse", _fmt_p(row.p_vs_best), _fmt_p(row.p_holm)]


def _status_lines(sweep: Path, runs: Sequence[Run]) -> list[str]:
    stopped = [r for r in runs if r.status in ("killed", "interrupted", "failed") or r.problem]
    if not stopped:
        return []
    lines = [
        "",
        "Runs that did not finish (a killed run stopped without a word: its process is gone and its "
        "heartbeat stopped; resume a study by running its command again):",
        "",
    ]
    for run in stopped:
        said = run.problem or (f"{run.results.reason}" if run.results and run.results.reason else "")
        at = f" at iteration {run.results.iterations}" if run.results else ""
        lines.append(f"- `{run.path.relative_to(sweep)}`: {run.status}{at}" + (f": {said}" if said else ""))
    return lines


def _effect_lines(effects: dict[str, FactorEffect]) -> list[str]:
    lines = [
        "",
        "Main effects (each factor's levels pooled over the other factors and the seeds; Kruskal-Wallis p across "
        "the levels; each level's fids against the best level's: U test, raw and Holm-adjusted):",
        "",
        "| factor | level | runs | fid | fid median | collapsed | p | p (Holm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for factor, effect in effects.items():
        for i, row in enumerate(effect.levels):
            median = "n/a" if math.isnan(row.median) else f"{row.median:.3g}"
            name = f"{factor} (Kruskal-Wallis p {_fmt_p(effect.p) or 'n/a'})" if i == 0 else ""
            if i == 0 and not effect.balanced:
                name += " unbalanced: its levels met different partners"
            lines.append(
                f"| {name} | {row.level} | {row.runs} | {row.fid} | {median} | "
                f"{row.collapsed} of {row.runs} | {_fmt_p(row.p_vs_best)} | {_fmt_p(row.p_holm)} |"
            )
    return lines + [
        "",
        "The best level is picked from these same runs, so its p-values are optimistic; a level's mean mixes its "
        "partners, so read an unbalanced factor's row with care.",
    ]


def _mechanism_lines(mechanism: dict[str, tuple[float, float, int]]) -> list[str]:
    lines = [
        "",
        "What goes with quality (Spearman rank correlation of each run's final fid with its last diagnostics "
        "probe; positive: more of it, worse fid):",
        "",
        "| mechanism | Spearman rho | p | runs |",
        "|---|---|---|---|",
    ]
    for name, (rho, p, n) in mechanism.items():
        known = n >= 3 and math.isfinite(rho)
        lines.append(f"| {name} | {rho:.2f} | {p:.3g} | {n} |" if known else f"| {name} | n/a | | {n} |")
    return lines


def collapse_count(runs: Sequence[Run]) -> tuple[int, int, bool]:
    """(runs collapsed, runs, whether every scored run collapsed): a run collapsed when an evaluation of it was
    judged collapsed, as the collapsed column counts it; "every scored run" is False when none was scored."""
    collapsed = sum(r.first_collapse is not None for r in runs)
    scored = [r for r in runs if r.latest and _finite_fid(r.latest.get("fid"))]
    return collapsed, len(runs), bool(scored) and all(r.first_collapse is not None for r in scored)


def _collapse_lead(runs: Sequence[Run]) -> list[str]:
    """The line that leads the report when most runs collapsed: a reader who stops at the ranking must not take
    the lowest fid of collapsed generators for a working configuration."""
    collapsed, total, _ = collapse_count(runs)
    if 2 * collapsed <= total:
        return []
    return [
        "",
        f"**{collapsed} of {total} runs collapsed** (an evaluation judged `collapsed`: the collapsed column below); "
        "the fids rank mostly collapsed generators.",
        "",
    ]


def _verdict_lines(rows: Sequence[ConfigRow], runs: Sequence[Run]) -> list[str]:
    """The best and worst configurations named; when every scored run collapsed, the lowest and highest fid
    instead, and no configuration called best (the least collapsed is not a configuration that works)."""
    scored = [r for r in rows if r.fid.n > 0]
    if not scored:
        return []
    if collapse_count(runs)[2]:
        return [
            "",
            f"No configuration escaped collapse (every scored run had an evaluation judged collapsed); the lowest "
            f"fid: **{scored[0].config}** (fid {scored[0].fid}); the highest: **{scored[-1].config}** "
            f"(fid {scored[-1].fid}).",
        ]
    return [
        "",
        f"Best configuration: **{scored[0].config}** (fid {scored[0].fid}).",
        f"Worst configuration: **{scored[-1].config}** (fid {scored[-1].fid}).",
    ]


def write_markdown(
    sweep: Path,
    runs: Sequence[Run],
    rows: Sequence[ConfigRow],
    plots: Sequence[str],
    mechanism: dict[str, tuple[float, float, int]] | None = None,
    effects: dict[str, FactorEffect] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """report.md: the run count (and the collapse count, when most runs collapsed), the configurations' table,
    the best and worst named (unless none escaped collapse), then the factors' main effects, the mechanism,
    ``extra`` sections (a tuning study's), the runs that did not finish, and the figures."""
    statuses: dict[str, int] = defaultdict(int)
    for run in runs:
        statuses[run.status] += 1
    others = [m for m in METRIC_NAMES if m != "fid"]
    lines = [
        f"# Sweep report: {sweep}",
        "",
        f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ".",
        *_collapse_lead(runs),
        "Final metrics (the last evaluation of each run; a running run counts with its latest) over seeds, ranked "
        "by fid (lower is better; higher is better for is, modes, precision, recall). fid: mean [bootstrap 95% "
        "interval of the mean] (runs scored); the others: mean ± std (runs scored). vs best: tied when the "
        "intervals overlap; p: two-sided Mann-Whitney U test of the fids against the best's; p (Holm): p adjusted "
        "for testing the best against every other configuration (Holm-Bonferroni), the one to read before calling "
        "a configuration worse (the best was picked from the same runs, so even this is optimistic).",
        "",
        "| rank | configuration | runs | diverged | failed | collapsed | fid | vs best | p | p (Holm) | "
        + " | ".join(others)
        + " |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(others),
    ]
    for i, row in enumerate(rows, 1):
        cells = [str(i), row.config, str(row.runs), str(row.diverged), str(row.failed), _fmt_collapse(row)]
        cells += [_fmt_interval(row), *_fmt_versus_best(row, i)]
        lines.append("| " + " | ".join(cells + [str(row.metrics[m]) for m in others]) + " |")
    if any(0 < r.fid.n < MIN_SEEDS for r in rows):
        lines += ["", f"† fewer than {MIN_SEEDS} seeds scored: its interval and test say little; run more seeds."]
    tied = [r.config for r in rows[1:] if r.tied_with_best and r.fid.n > 0]
    if tied:
        lines += ["", f"Not distinguishable from the best at these seeds (intervals overlap): {', '.join(tied)}."]
    lines += _verdict_lines(rows, runs)
    lines += [
        "",
        "Collapsed: runs with an evaluation judged `collapsed` (at most 2 digit classes covered, or fixed-noise "
        "samples less varied than real digits of one class; thresholds from calibration sets: docs/metrics.md), with "
        "the median iteration of the first such evaluation; partial: runs whose latest evaluation covers 3 to 9 "
        "classes.",
    ]
    if effects:
        lines += _effect_lines(effects)
    if mechanism:
        lines += _mechanism_lines(mechanism)
    lines += list(extra)
    lines += _status_lines(sweep, runs)
    lines += [""] + [f"![{p}]({p})" for p in plots]
    text = "\n".join(lines) + "\n"
    write_text_atomic(sweep / "report.md", text)
    return text
