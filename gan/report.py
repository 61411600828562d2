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
  run, coloured by configuration;
- for an equal-budget tuning study (``experiment=tuning_budget``): a section of ``report.md`` with each
  configuration's expected best fid after n of its k draws (exact, with a bootstrap band), success rate with a 95%
  interval, best draw and its settings, and Kendall's tau between the rankings at the baseline and at the best
  draws; ``budget_curves.png`` (one curve per configuration); ``best_draws.json`` (what the confirmation re-runs).

The reading, the numbers and the figures are ``gan.study`` (``runs``, ``tables``, ``stats``, ``plots``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gan.runs.rundir import RESULTS_NAME
from gan.runs.tuning import BEST_DRAWS
from gan.study.plots import plot_curves, plot_heatmap, plot_mechanism, plot_samples
from gan.study.runs import find_runs
from gan.study.tables import factor_effects, mechanism, summarize, write_csv, write_markdown
from gan.study.tuning import markdown_lines, plot_budget_curves, tuning_rows, write_best_draws


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
    """Write every report file into ``sweep``; returns the run count, the per-configuration rows (``ConfigRow``)
    and the plots written."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: no such sweep folder.")
    runs = find_runs(sweep)
    if not runs:
        raise FileNotFoundError(f"{sweep} holds no run directories (no .hydra/ or {RESULTS_NAME} below it).")
    rows = summarize(runs)
    tuning = tuning_rows(runs)
    write_csv(runs, sweep / "results.csv")
    plots = [
        name
        for name, plot in (
            ("fid_heatmap.png", lambda path: plot_heatmap(rows, path)),
            ("curves.png", lambda path: plot_curves(runs, path)),
            ("samples.png", lambda path: plot_samples(runs, path)),
            ("mechanism.png", lambda path: plot_mechanism(runs, path)),
            ("budget_curves.png", lambda path: plot_budget_curves(tuning, path)),
        )
        if _plotted(name, plot, sweep / name)
    ]
    extra = markdown_lines(tuning) if tuning else []
    if tuning:
        write_best_draws(tuning, runs, sweep / BEST_DRAWS)
    write_markdown(sweep, runs, rows, plots, mechanism(runs), factor_effects(runs), extra)
    return {"runs": len(runs), "configurations": rows, "plots": plots, "tuning": tuning}


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
