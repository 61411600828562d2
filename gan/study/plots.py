"""A sweep's figures: the fid heatmap over (G activation, D activation), fid and loss curves per configuration, the
latest sample grids side by side, and final fid against the mechanism's measures. Drawn on matplotlib's ``Figure``
objects, not pyplot: files, never windows, and no global backend to set. Each figure is built by a ``*_figure``
function (what the tests read) and written by its ``plot_*`` function.

Made to read at a glance: every configuration keeps one colour and marker in every figure (tab10's ten colours,
which stay apart side by side, then a new marker and line style for each further ten: tab20's pairs are two shades
of one hue, too close to tell apart in a scatter); a fid axis is linear unless the fids span more than
``LOG_SPAN`` times, and then logarithmic with plain-number ticks; single points are drawn as markers."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image as mpimg
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan.files import save_figure
from gan.study.runs import Run, latest_grid
from gan.study.tables import ConfigRow

HEATMAP_AXES = ("model.g_act", "model.d_act")
LOSS_TAGS = ("train/d_loss", "train/g_loss")
LOG_SPAN = 10.0  # a fid axis goes logarithmic only when its largest value is more than this many times its smallest
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")
FEW_POINTS = 30  # a curve with at most this many points shows each as a marker (a single point is otherwise invisible)

Progress = Callable[[int, int], None]  # (done, total): told as a slow figure reads its runs


@dataclass(frozen=True)
class Style:
    """How one configuration is drawn in every figure."""

    colour: tuple[float, float, float, float]
    marker: str
    line: str


def config_styles(labels: Sequence[str]) -> dict[str, Style]:
    """A distinct (colour, marker, line style) per label, in sorted order: tab10's colours for the first ten, then
    the same colours with the next marker and line style for each further ten, so that no two configurations are
    drawn alike and none gets a pale shade that a white background swallows."""
    palette = matplotlib.colormaps["tab10"]
    styles = {}
    for i, label in enumerate(sorted(set(labels))):
        decade = i // 10
        styles[label] = Style(palette(i % 10), MARKERS[decade % len(MARKERS)], LINE_STYLES[decade % len(LINE_STYLES)])
    return styles


def _plain_number(value: float, _position: Any = None) -> str:
    """A tick label as people write it: 20, 50, 100, 0.5 (not 2 x 10^1)."""
    return f"{value:g}"


def set_fid_scale(ax: Axes, values: Sequence[float]) -> str:
    """Linear when the finite fids span at most ``LOG_SPAN`` times (a log axis over a narrow range only prints
    ticks like 1.38 x 10^2), else logarithmic with ticks at 1, 2, 3 and 5 times the powers of ten, written as plain
    numbers. Returns the scale set."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0 or max(finite) <= LOG_SPAN * min(finite):
        ax.set_yscale("linear")
        return "linear"
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.yaxis.set_minor_formatter(NullFormatter())
    return "log"


def _legend_below(fig: Figure, styles: dict[str, Style], shown: Sequence[str], with_lines: bool = False) -> None:
    """One legend for the whole figure (the ``shown`` configurations), under its panels, in up to 4 columns: it
    covers no data, and its font stays readable however many configurations there are."""
    styles = {label: style for label, style in styles.items() if label in set(shown)}
    handles = [
        Line2D(
            [],
            [],
            color=style.colour,
            marker=style.marker,
            linestyle=style.line if with_lines else "none",
            markersize=6,
        )
        for style in styles.values()
    ]
    fig.legend(handles, list(styles), loc="outside lower center", ncol=min(4, len(styles)), fontsize=9, frameon=False)


def _legend_rows(count: int) -> float:
    """Inches of figure height the legend below needs."""
    return 0.25 * math.ceil(count / 4) + 0.3


# ----------------------------------------------------------------------------------------------- the fid heatmap


@dataclass
class Cell:
    """One (G activation, D activation) cell over its configurations (one, unless a third override varies)."""

    means: list[float]
    scored: int = 0
    collapsed: int = 0
    runs: int = 0
    diverged: int = 0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.means) if self.means else math.nan

    def caption(self) -> tuple[str, str]:
        """What the cell says over its colour: a headline (the mean fid, or why there is none) and under it the
        seeds scored and runs collapsed (or the runs that did not score)."""
        if self.runs == 0:
            return "no runs", ""
        if not self.means:
            diverged = f", {self.diverged} diverged" if self.diverged else ""
            return "not scored", f"{_count(self.runs, 'run')}{diverged}"
        return f"{self.mean:.1f}", f"{_count(self.scored, 'seed')}, {self.collapsed} coll."


def _count(n: int, noun: str) -> str:
    """ "1 seed", "3 seeds"."""
    return f"{n} {noun}{'s' * (n != 1)}"


def heatmap_cells(rows: Sequence[ConfigRow]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    """G levels, D levels and each (G, D) cell: its configurations' mean fids, seeds scored, runs collapsed (an
    evaluation judged collapsed, as report.md's collapsed column counts them) and runs."""
    g_acts = sorted({r.varying[HEATMAP_AXES[0]] for r in rows})
    d_acts = sorted({r.varying[HEATMAP_AXES[1]] for r in rows})
    cells = {(g, d): Cell([]) for g in g_acts for d in d_acts}
    for row in rows:
        cell = cells[(row.varying[HEATMAP_AXES[0]], row.varying[HEATMAP_AXES[1]])]
        cell.runs += row.runs
        cell.diverged += row.diverged
        cell.collapsed += len(row.collapse_iterations)
        if row.fid.n:
            cell.means.append(row.fid.mean)
            cell.scored += row.fid.n
    return g_acts, d_acts, cells


def _text_colour(rgba: Sequence[float]) -> str:
    """Black over a light cell, white over a dark one (relative luminance of the cell's colour)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5 else "white"


def heatmap_figure(rows: Sequence[ConfigRow]) -> Figure | None:
    """Mean final fid per (G activation, D activation) cell, each cell captioned with its mean, the seeds scored
    and the runs collapsed; a cell without runs or scores hatched grey. None when the sweep lacks those two axes."""
    if not rows or not all(axis in rows[0].varying for axis in HEATMAP_AXES):
        return None
    g_acts, d_acts, cells = heatmap_cells(rows)
    grid = [[cells[(g, d)].mean for d in d_acts] for g in g_acts]
    fig = Figure(figsize=(1.45 * len(d_acts) + 3.0, 0.85 * len(g_acts) + 2.0), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="white")
    image = ax.imshow(grid, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(d_acts)), d_acts, rotation=30, ha="right")
    ax.set_yticks(range(len(g_acts)), g_acts)
    ax.set_xlabel("D hidden activation")
    ax.set_ylabel("G hidden activation")
    for i, g in enumerate(g_acts):
        for j, d in enumerate(d_acts):
            cell = cells[(g, d)]
            if math.isnan(cell.mean):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.9", hatch="//", edgecolor="0.7"))
                colour = "0.3"
            else:
                colour = _text_colour(image.cmap(image.norm(cell.mean)))
            headline, detail = cell.caption()
            ax.text(j, i - 0.1, headline, ha="center", va="center", color=colour, fontsize=11, fontweight="bold")
            ax.text(j, i + 0.22, detail, ha="center", va="center", color=colour, fontsize=7.5)
    fig.colorbar(image, ax=ax, label="mean final fid (lower is better)")
    ax.set_title("FID by activation pair (mean over seeds)")
    return fig


def plot_heatmap(rows: Sequence[ConfigRow], path: Path) -> bool:
    """``heatmap_figure`` into ``path``; False when there is none."""
    return _save(heatmap_figure(rows), path, dpi=120)


def _save(fig: Figure | None, path: Path, dpi: int = 110) -> bool:
    if fig is None:
        return False
    save_figure(fig, path, dpi)
    return True


# ---------------------------------------------------------------------------------------------------- the curves


def loss_series(run: Run, tags: Sequence[str] = LOSS_TAGS) -> dict[str, list[tuple[int, float]]]:
    """Each of ``tags`` over training as (generator iterations completed, value), read from the run's TensorBoard
    events once for all tags; empty without TensorBoard logs (``~logger``). A training scalar is logged at the
    count of iterations completed, as an evaluation's ``iteration`` is (``gan.runs.callbacks.MemberScalars``), so
    the last loss before an evaluation at iteration N sits at N. (Runs written before that logged it at the
    iteration's index from 0, one less, and kept their events in ``RUN_DIR/tensorboard``.)"""
    folder = run.path if list(run.path.glob("events.out.tfevents.*")) else run.path / "tensorboard"
    if not folder.is_dir():
        return {tag: [] for tag in tags}
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    present = set(acc.Tags()["scalars"])
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] if tag in present else [] for tag in tags}


def _band(series: Sequence[Sequence[tuple[int, float]]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max over runs at the steps all runs share."""
    common = sorted(set.intersection(*[{s for s, _ in one} for one in series])) if series else []
    values = [[dict(one)[s] for one in series] for s in common]
    return common, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def _draw_band(ax: Axes, series: Sequence[Sequence[tuple[int, float]]], style: Style, markers: bool) -> list[float]:
    """One configuration's mean line over its runs with a min-max band; each point marked when ``markers`` or when
    there are few (a lone evaluation is a marker with a min-max bar, not an invisible line). Returns the values
    drawn."""
    steps, mean, lo, hi = _band([s for s in series if s])
    if not steps:
        return []
    marker = style.marker if markers or len(steps) <= FEW_POINTS else None
    ax.plot(steps, mean, color=style.colour, linestyle=style.line, marker=marker, markersize=4)
    if len(steps) == 1:
        ax.vlines(steps, lo, hi, color=style.colour, alpha=0.4, linewidth=3)
    else:
        ax.fill_between(steps, lo, hi, alpha=0.15, color=style.colour, linewidth=0)
    return [*lo, *hi]


def _robust_limits(ax: Axes, values: Sequence[float]) -> bool:
    """Y limits over the 1st to 99th percentile of the values drawn, when a few spikes (one seed's, one logging
    step's) reach more than twice beyond that range and would flatten every curve; True when it clipped."""
    finite = sorted(v for v in values if math.isfinite(v))
    if len(finite) < 20:
        return False
    low, high = finite[int(0.01 * (len(finite) - 1))], finite[int(0.99 * (len(finite) - 1))]
    span = max(high - low, 1e-12)
    if finite[-1] - high <= 2 * span and low - finite[0] <= 2 * span:
        return False
    ax.set_ylim(low - 0.1 * span, high + 0.1 * span)
    return True


def curves_figure(runs: Sequence[Run], progress: Progress | None = None) -> Figure | None:
    """Fid and the two losses against generator iterations, per configuration the mean over its runs with a
    min-max band; None when no run has a results record. ``progress`` is told as each run's losses are read
    (TensorBoard event files: the slow part of a report)."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.results:
            groups[run.label].append(run)
    if not groups:
        return None
    styles = config_styles([r.label for r in runs])  # over every run: the same styles as in mechanism.png
    total, done = sum(len(m) for m in groups.values()), 0
    fig = Figure(figsize=(16, 4.5 + _legend_rows(len(groups))), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True)  # one iteration axis: an evaluation and the losses around it line up
    drawn: list[list[float]] = [[], [], []]
    for label, members in sorted(groups.items()):
        losses = []
        for run in members:
            losses.append(loss_series(run))
            done += 1
            if progress:
                progress(done, total)
        fid = [[(e["iteration"], e["fid"]) for e in r.results.evaluations if _finite(e.get("fid"))] for r in members]
        drawn[0] += _draw_band(axes[0], fid, styles[label], markers=True)
        for k, tag in enumerate(LOSS_TAGS, 1):
            drawn[k] += _draw_band(axes[k], [one[tag] for one in losses], styles[label], markers=False)
    set_fid_scale(axes[0], drawn[0])
    titles = ("fid (lower is better)", "discriminator loss", "generator loss")
    for k, (ax, title) in enumerate(zip(axes, titles, strict=True)):
        clipped = k > 0 and _robust_limits(ax, drawn[k])
        ax.set_title(title + (" (y: 1st-99th percentile; spikes cut)" if clipped else ""))
        ax.set_xlabel("generator iterations")
    _legend_below(fig, styles, list(groups), with_lines=True)
    return fig


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_curves(runs: Sequence[Run], path: Path, progress: Progress | None = None) -> bool:
    """``curves_figure`` into ``path``; False when there is none."""
    return _save(curves_figure(runs, progress), path)


# ---------------------------------------------------------------------------------------------------- the samples


def plot_samples(runs: Sequence[Run], path: Path) -> bool:
    """The latest sample grid of one run per configuration (its lowest seed), four to a row."""
    chosen: dict[str, tuple[str, Path]] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        grid = latest_grid(run.path)
        if grid is not None and run.label not in chosen:
            chosen[run.label] = (run.seed, grid)
    if not chosen:
        return False
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(3.2 * cols, 4.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, (seed, grid)) in zip(axes.flat, sorted(chosen.items()), strict=False):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        ax.set_title(label.replace(" ", "\n") + f"\n(seed {seed}, {grid.stem})", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, 110)
    return True


# -------------------------------------------------------------------------------------------------- the mechanism

MECHANISM_PANELS = (
    "G dead-unit share",
    "G saturated share",
    "G Jacobian log condition number",
    "D unit entropy (fake)",
    "D input-gradient norm (fake)",
    "D learning-signal diversity",
)


def mechanism_figure(runs: Sequence[Run]) -> Figure | None:
    """Final fid against G's dead share, saturated share and Jacobian conditioning (above) and D's unit entropy and
    input-gradient norm on fakes and its learning-signal diversity (below): one panel each, one point per run in its
    configuration's colour and marker (a panel without the measure stays empty); None when no run has any."""
    scored = [r for r in runs if r.latest and _finite(r.latest.get("fid"))]
    if not any(math.isfinite(r.mechanism_measures[n]) for r in scored for n in MECHANISM_PANELS):
        return None
    styles = config_styles([r.label for r in runs])  # over every run: the same styles as in curves.png
    shown = sorted({r.label for r in scored})
    fig = Figure(figsize=(15, 8 + _legend_rows(len(shown))), layout="constrained")
    axes = fig.subplots(2, 3, sharey=True).flatten()  # G's side above, D's below
    for ax, name in zip(axes, MECHANISM_PANELS, strict=True):
        for label in shown:
            style = styles[label]
            points = [(r.mechanism_measures[name], r.latest["fid"]) for r in scored if r.label == label]
            ax.scatter(*zip(*points, strict=True), s=30, color=style.colour, marker=style.marker, alpha=0.85)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    for ax in axes:
        set_fid_scale(ax, [float(r.latest["fid"]) for r in scored])
    for ax in axes[::3]:
        ax.set_ylabel("final fid (lower is better)")
    _legend_below(fig, styles, shown)
    return fig


def plot_mechanism(runs: Sequence[Run], path: Path) -> bool:
    """``mechanism_figure`` into ``path``; False when there is none."""
    return _save(mechanism_figure(runs), path)
