"""gan.study.plots: what the figures show, read from the matplotlib figures themselves (scales, tick labels, cell
captions, markers, styles), and where the losses sit on the iteration axis of a real run."""

from __future__ import annotations

import json
import re

import matplotlib
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from gan.study.plots import config_styles, curves_figure, heatmap_figure, loss_series, mechanism_figure
from gan.study.runs import find_runs
from gan.study.tables import summarize
from tests.helpers import run as train_run
from tests.study.synthetic import write_losses, write_run


def _tick_labels(ax):
    """The y tick labels as drawn (inside the axis' limits)."""
    FigureCanvasAgg(ax.figure).draw()
    low, high = ax.get_ylim()
    return [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True) if low <= v <= high]


def _mechanism_sweep(sweep, fids):
    """One configuration per fid list (model.g_act=a0, a1, ...), one run per fid, each with a dead share."""
    for i, values in enumerate(fids):
        for seed, fid in enumerate(values):
            write_run(sweep, f"a{i}_{seed}", [f"model.g_act=a{i:02d}", f"seed={seed}"], fid, dead=0.01 * (i + seed))
    return find_runs(sweep)


def test_the_mechanism_fid_axis_is_linear_over_a_narrow_range(tmp_path):
    fig = mechanism_figure(_mechanism_sweep(tmp_path / "narrow", [[38.0, 45.0], [52.0, 75.0]]))
    assert {ax.get_yscale() for ax in fig.axes} == {"linear"}
    assert all("10^" not in label and "times" not in label for label in _tick_labels(fig.axes[0]))


def test_a_wide_fid_range_gets_a_log_axis_with_plain_number_ticks(tmp_path):
    fig = mechanism_figure(_mechanism_sweep(tmp_path / "wide", [[20.0, 35.0], [150.0, 400.0]]))
    assert {ax.get_yscale() for ax in fig.axes} == {"log"}
    labels = _tick_labels(fig.axes[0])
    assert labels and all(re.fullmatch(r"\d+", label) for label in labels), labels  # 20, 50, 100: no 2 x 10^1
    assert {"50", "100"} <= set(labels)


def test_configurations_keep_apart_in_colour_and_marker(tmp_path):
    styles = config_styles([f"c{i:02d}" for i in range(25)])
    pairs = {(style.colour, style.marker) for style in styles.values()}
    assert len(pairs) == 25  # no two configurations drawn alike
    tab10 = {matplotlib.colormaps["tab10"](i) for i in range(10)}
    assert {style.colour for style in styles.values()} <= tab10  # never tab20's pale second shades
    assert len({styles[f"c{i:02d}"].colour for i in range(10)}) == 10  # ten configurations: ten colours
    assert len({styles[f"c{i:02d}"].marker for i in range(10, 25)} - {styles["c00"].marker}) == 2  # then shapes
    # the figure's legend says it: one entry per configuration, each with its own colour and marker
    fig = mechanism_figure(_mechanism_sweep(tmp_path / "many", [[30.0 + i, 31.0 + i] for i in range(12)]))
    (legend,) = fig.legends
    entries = {
        (text.get_text(), tuple(h.get_color()), h.get_marker())
        for text, h in zip(legend.texts, legend.legend_handles, strict=True)
    }
    assert len(entries) == 12 and len({e[1:] for e in entries}) == 12
    assert not any(ax.get_legend() for ax in fig.axes)  # under the panels, over no data


def _grid(sweep):
    """G {elu, relu} x D {leaky_relu, tanh}: elu x leaky_relu 3 seeds (2 collapsed), elu x tanh 2 seeds,
    relu x tanh 1 seed, relu x leaky_relu never run."""
    cells = {("elu", "leaky_relu"): [20.0, 24.0, 28.0], ("elu", "tanh"): [60.0, 70.0], ("relu", "tanh"): [150.0]}
    for (g, d), fids in cells.items():
        for seed, fid in enumerate(fids):
            at = 300 if (g, d) == ("elu", "leaky_relu") and seed < 2 else None
            write_run(sweep, f"{g}_{d}_{seed}", [f"model.g_act={g}", f"model.d_act={d}", f"seed={seed}"], fid, at)
    return cells


def _relative_luminance(rgba):
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(c) for c in rgba[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_the_heatmap_captions_each_cell_with_its_mean_seeds_and_collapses(tmp_path):
    cells = _grid(tmp_path / "grid")
    fig = heatmap_figure(summarize(find_runs(tmp_path / "grid")))
    ax = fig.axes[0]
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): [] for t in ax.texts}
    for t in ax.texts:
        texts[(round(t.get_position()[0]), round(t.get_position()[1]))].append(t)
    d_acts = [t.get_text() for t in ax.get_xticklabels()]
    g_acts = [t.get_text() for t in ax.get_yticklabels()]
    said = {(g_acts[i], d_acts[j]): [t.get_text() for t in found] for (j, i), found in texts.items()}
    mean = sum(cells[("elu", "leaky_relu")]) / 3
    assert said[("elu", "leaky_relu")] == [f"{mean:.1f}", "3 seeds, 2 coll."]
    assert said[("elu", "tanh")] == ["65.0", "2 seeds, 0 coll."]
    assert said[("relu", "tanh")] == ["150.0", "1 seed, 0 coll."]
    assert said[("relu", "leaky_relu")][0] == "no runs"
    assert any(p.get_hatch() for p in ax.patches)  # the empty cell is marked, not left blank
    (colourbar,) = [a for a in fig.axes if a is not ax]
    assert colourbar.get_ylabel() == "mean final fid (lower is better)"
    # every caption over a coloured cell stands out from it (WCAG's 3:1 for large text, at least)
    image = ax.images[0]
    for (j, i), found in texts.items():
        value = image.get_array()[i][j]
        if image.get_array().mask[i][j]:
            continue
        cell = _relative_luminance(image.cmap(image.norm(value)))
        for text in found:
            ink = _relative_luminance(matplotlib.colors.to_rgba(text.get_color()))
            assert (max(cell, ink) + 0.05) / (min(cell, ink) + 0.05) >= 3, (text.get_text(), value)


def test_a_configuration_with_one_evaluation_is_drawn_as_a_marker(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, "once_0", ["model.g_act=once", "seed=0"], 50.0, iterations=(100,))
    write_run(sweep, "often_0", ["model.g_act=often", "seed=0"], 40.0, iterations=(100, 200, 300))
    fig = curves_figure(find_runs(sweep))
    lines = {len(line.get_xdata()): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {1, 3}
    assert lines[1].get_marker() not in (None, "", " ", "None") and lines[1].get_markersize() > 0


def test_losses_sit_on_the_evaluations_iteration_axis(tmp_path):
    """The lab logs a loss at its iteration's index (from 0), an evaluation at the iterations completed: read for
    the figure, the loss of the last iteration before an evaluation sits at the evaluation's iteration."""
    sweep = tmp_path / "sweep"
    run = write_run(sweep, "a_0", ["model.g_act=a", "seed=0"], 50.0, iterations=(8, 16))
    write_losses(run, range(1, 17))  # the steps MemberScalars writes for 16 iterations logged every iteration
    runs = find_runs(sweep)
    assert [x for x, _ in loss_series(runs[0])["train/d_loss"]] == list(range(1, 17))
    fig = curves_figure(runs)
    fid_x = list(fig.axes[0].get_lines()[0].get_xdata())
    loss_x = list(fig.axes[1].get_lines()[0].get_xdata())
    assert fid_x == [8, 16] and set(fid_x) <= set(loss_x) and max(loss_x) == max(fid_x)
    assert fig.axes[0].get_shared_x_axes().joined(fig.axes[0], fig.axes[1])  # one iteration axis for all panels


def test_a_real_runs_last_loss_lines_up_with_its_last_evaluation(tmp_path, tiny_mnist):
    """A 16-iteration run of the lab, logging every iteration and evaluating every epoch: the report puts its
    losses at 1..16, the count its evaluations use."""
    _, run_dir = train_run(
        tmp_path,
        "run",
        tiny_mnist,
        "trainer.max_epochs=2",
        "eval.enabled=true",
        "eval.min_evaluator_accuracy=0",
        "eval.num_samples=64",
        "eval.every_n_epochs=1",
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
    )
    (run,) = find_runs(tmp_path)
    evaluations = [e["iteration"] for e in json.loads((run_dir / "results.json").read_text())["evaluations"]]
    losses = [x for x, _ in loss_series(run)["train/g_loss"]]
    assert evaluations == [8, 16] and losses == list(range(1, 17))


@pytest.mark.parametrize("figure", [heatmap_figure, mechanism_figure])
def test_figures_without_their_data_are_not_drawn(tmp_path, figure):
    write_run(tmp_path / "one", "a_0", ["model.g_act=a", "seed=0"], 50.0)  # one factor, no diagnostics
    runs = find_runs(tmp_path / "one")
    assert figure(summarize(runs) if figure is heatmap_figure else runs) is None
