"""A sweep's figures: the fid heatmap over (G activation, D activation), fid and loss curves per configuration, the
latest sample grids side by side, and final fid against the mechanism's measures. Drawn on matplotlib's ``Figure``
objects, not pyplot: files, never windows, and no global backend to set."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan.study.runs import Run, latest_grid
from gan.study.tables import ConfigRow

HEATMAP_AXES = ("model.g_act", "model.d_act")


def plot_heatmap(rows: Sequence[ConfigRow], path: Path) -> bool:
    """Mean final fid per (G activation, D activation) cell; False when the sweep lacks those two axes."""
    if not rows or not all(axis in rows[0].varying for axis in HEATMAP_AXES):
        return False
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row.fid.n:
            cells[(row.varying[HEATMAP_AXES[0]], row.varying[HEATMAP_AXES[1]])].append(row.fid.mean)
    g_acts = sorted({r.varying[HEATMAP_AXES[0]] for r in rows})
    d_acts = sorted({r.varying[HEATMAP_AXES[1]] for r in rows})
    grid = [[statistics.fmean(cells[(g, d)]) if cells.get((g, d)) else math.nan for d in d_acts] for g in g_acts]
    fig = Figure(figsize=(1.2 * len(d_acts) + 2.5, 0.8 * len(g_acts) + 1.8))
    ax = fig.subplots()
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
    return True


def _loss_series(run: Run, tag: str) -> list[tuple[int, float]]:
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
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.results:
            groups[run.label].append(run)
    if not groups:
        return False
    fig = Figure(figsize=(16, 4.5))
    axes = fig.subplots(1, 3)
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
    return True


def plot_samples(runs: Sequence[Run], path: Path) -> bool:
    chosen: dict[str, Path] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        grid = latest_grid(run.path)
        if grid is not None and run.label not in chosen:
            chosen[run.label] = grid
    if not chosen:
        return False
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(3.2 * cols, 4.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, grid) in zip(axes.flat, sorted(chosen.items()), strict=False):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        ax.set_title(label.replace(" ", "\n") + f"\n({grid.stem})", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_mechanism(runs: Sequence[Run], path: Path) -> bool:
    """Final fid against G's dead share, saturated share and Jacobian conditioning: one panel each, a colour per
    configuration."""
    scored = [r for r in runs if r.latest and isinstance(r.latest.get("fid"), (int, float))]
    names = ["G dead-unit share", "G saturated share", "G Jacobian log condition number"]
    if not any(math.isfinite(r.mechanism_measures[n]) for r in scored for n in names):
        return False
    labels = sorted({r.label for r in scored})
    colours = matplotlib.colormaps["tab20"]
    fig = Figure(figsize=(5 * len(names), 4))
    axes = fig.subplots(1, len(names), sharey=True)
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
    return True
