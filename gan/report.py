"""``python -m gan.report SWEEP_DIR``: turn a sweep's run directories into tables and plots.

Reads every job folder under SWEEP_DIR (``.hydra/overrides.yaml`` and ``results.json``; works on partial and
still-running sweeps) and writes into SWEEP_DIR:

- ``results.csv``: one row per run: its overrides, seed, status, final and best metrics, iterations, wall time;
- ``report.md``: per configuration (the overrides that vary, seed aside) the mean +- std (n) of each final metric
  over seeds, ranked by fid, with the fid's bootstrap 95% interval, whether it is tied with the best (intervals
  overlap) and the p-value of a Mann-Whitney U test against the best (raw and Holm-adjusted); diverged, failed
  and collapsed runs counted (with the median iteration of collapse), led by "N of M runs collapsed" when more
  than half did, the best and worst configurations named (when every scored run collapsed, only the lowest and
  highest fid: none is called best), configurations with fewer than 3 scored seeds flagged; when two or more
  overrides vary, each one's main effect (its levels pooled over the others and the seeds: Kruskal-Wallis p, each
  level against the best level with raw and Holm-adjusted U-test p-values); the rank correlations of the final
  fid with each run's dead-unit and saturated shares, G's Jacobian conditioning and D's side (unit entropy,
  pattern similarity, input-gradient norms, learning-signal diversity); the early warning of collapse
  (``gan.study.warning``: a model of each run's final verdict from its first 10% of diagnostics, its AUROC
  cross-validated over held-out seeds with a bootstrap interval, and which measures carry it); the runs that did
  not finish or cannot be read, and why;
- ``fid_heatmap.png``: mean final fid per (model.g_act, model.d_act) cell, when the sweep varies both, each cell
  captioned with its mean, the seeds scored and the runs collapsed;
- ``curves.png``: fid and losses against generator iterations per configuration, mean over seeds with a min-max
  band (the losses at the iterations completed, as the evaluations count them);
- ``samples.png``: the latest sample grid of one run per configuration, side by side;
- ``mechanism.png``: final fid against G's dead share, saturated share and Jacobian conditioning, and D's unit
  entropy, input-gradient norm and learning-signal diversity on fakes, one point per run, one colour and marker
  per configuration (the fid axis linear unless the fids span more than 10 times);
- for an equal-budget tuning study (``experiment=tuning_budget``): a section of ``report.md`` with each
  configuration's expected best fid after n of its k draws (exact, with a bootstrap band), success rate with a 95%
  interval, best draw and its settings, and Kendall's tau between the rankings at the baseline and at the best
  draws; ``budget_curves.png`` (one curve per configuration); ``best_draws.json`` (what the confirmation re-runs).

Progress goes to stderr (run folders read, each figure as it is drawn, a figure left out and why); stdout gets
one line naming what was written. The reading, the numbers and the figures are ``gan.study`` (``runs``,
``tables``, ``stats``, ``plots``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gan.errors import StorageError
from gan.runs.rundir import RESULTS_NAME
from gan.runs.tuning import BEST_DRAWS
from gan.study.plots import plot_curves, plot_heatmap, plot_mechanism, plot_samples
from gan.study.runs import find_runs
from gan.study.tables import factor_effects, mechanism, summarize, write_csv, write_markdown
from gan.study.tuning import markdown_lines, plot_budget_curves, tuning_rows, write_best_draws
from gan.study.warning import early_warning, later_horizons
from gan.study.warning import markdown_lines as warning_lines

Say = Callable[[str], None]  # where the progress lines go


def to_stderr(message: str) -> None:
    """A progress line on stderr, at once (stdout keeps the one-line summary that scripts read)."""
    print(message, file=sys.stderr, flush=True)


PROGRESS_EVERY = 10  # runs at least between two progress lines (a line per run of a small sweep is noise)


def counter(say: Say, template: str) -> Callable[[int, int], None]:
    """A progress callback that says ``template`` (with ``{done}`` and ``{total}``) every tenth of the way, but
    at most every ``PROGRESS_EVERY`` runs, and at the end: a sweep of hundreds of runs takes minutes to read, and
    a silent command looks hung."""

    def tell(done: int, total: int) -> None:
        if done % max(PROGRESS_EVERY, math.ceil(total / 10)) == 0 or done == total:
            say(template.format(done=done, total=total))

    return tell


# why a figure is left out when its plot function draws nothing
NOT_DRAWN = {
    "fid_heatmap.png": "the sweep does not vary both model.g_act and model.d_act",
    "curves.png": "no run has a results record",
    "samples.png": "no run has a sample grid",
    "mechanism.png": "no scored run has diagnostics or a Jacobian measure",
    "budget_curves.png": "no configuration has a sampled draw",
}


def _plotted(name: str, plot: Any, path: Path, say: Say = to_stderr) -> bool:
    """One figure; a figure that cannot be drawn (a damaged event file or image) is left out, said, and the rest of
    the report is still written."""
    say(f"drawing {name} ...")
    try:
        drawn = bool(plot(path))
    except StorageError:
        raise  # the folder cannot be written (a full or read-only disk): the report as a whole cannot
    except Exception as exc:  # noqa: BLE001 - one figure lost, not the report
        print(f"warning: {name} left out: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    if not drawn:
        say(f"{name} left out: {NOT_DRAWN.get(name, 'nothing to draw')}")
    return drawn


def report(sweep: str | Path, say: Say = to_stderr) -> dict[str, Any]:
    """Write every report file into ``sweep``, saying how far it got on ``say`` (stderr by default); returns the
    run count, the per-configuration rows (``ConfigRow``), the plots written and the seconds it took."""
    started = time.perf_counter()
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: no such sweep folder.")
    say(f"looking for run folders in {sweep} ...")
    runs = find_runs(sweep, counter(say, "read {done} of {total} run folders"))
    if not runs:
        raise FileNotFoundError(f"{sweep} holds no run directories (no .hydra/ or {RESULTS_NAME} below it).")
    say(f"summarizing {len(runs)} runs (bootstrap intervals, tests) ...")
    rows = summarize(runs)
    tuning = tuning_rows(runs)
    say("writing results.csv ...")
    write_csv(runs, sweep / "results.csv")
    figures = [
        ("fid_heatmap.png", lambda path: plot_heatmap(rows, path)),
        ("curves.png", lambda path: plot_curves(runs, path, counter(say, "  losses of {done} of {total} runs read"))),
        ("samples.png", lambda path: plot_samples(runs, path)),
        ("mechanism.png", lambda path: plot_mechanism(runs, path)),
    ]
    if tuning:
        figures.append(("budget_curves.png", lambda path: plot_budget_curves(tuning, path)))
    plots = [name for name, plot in figures if _plotted(name, plot, sweep / name, say)]
    extra = markdown_lines(tuning) if tuning else []
    say("fitting the early warning of collapse (cross-validated over seeds) ...")
    warning = early_warning(runs)
    extra += warning_lines(warning, later_horizons(runs))
    if tuning:
        say(f"writing {BEST_DRAWS} ...")
        write_best_draws(tuning, runs, sweep / BEST_DRAWS)
    say("writing report.md (main effects, rank correlations) ...")
    write_markdown(sweep, runs, rows, plots, mechanism(runs), factor_effects(runs), extra)
    seconds = time.perf_counter() - started
    say(f"done in {seconds:.1f} s")
    return {
        "runs": len(runs),
        "configurations": rows,
        "plots": plots,
        "tuning": tuning,
        "warning": warning,
        "seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep folder, e.g. outputs/multirun/2026-11-27/18-00-00")
    args = parser.parse_args(argv)
    try:
        result = report(args.sweep)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from exc
    except StorageError as exc:  # a full or read-only disk: the file named, the previous one kept
        raise SystemExit(f"error: {exc}") from exc
    except OSError as exc:
        raise SystemExit(f"error: cannot write the report into {args.sweep}: {exc}") from exc
    written = ["results.csv", *result["plots"], *([BEST_DRAWS] if result["tuning"] else [])]
    print(
        f"{result['runs']} runs, {len(result['configurations'])} configurations -> "
        f"{Path(args.sweep) / 'report.md'}, " + ", ".join(written)
    )


if __name__ == "__main__":
    main()
