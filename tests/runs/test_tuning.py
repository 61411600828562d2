"""gan.runs.tuning: the paired, seeded draws of an equal-budget study, how a job's config reads them, the refusals
of a tuning node that cannot draw, and the study and its confirmation on the command line."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gan.errors import ConfigError
from gan.model.spec import ADAM, default
from gan.report import report
from gan.runs.plan import member_config, prepare
from gan.runs.tuning import BEST_DRAWS, baseline, check_tuning, draw_settings
from tests.helpers import REPO, _cli, compose_train, fast_overrides

SPACE = {
    "seed": 0,
    "lr_g": [2e-5, 2e-3],
    "lr_d": [2e-5, 2e-3],
    "beta1": [0.0, 0.5],
    "init": ["default", "variance_preserving"],
    "loss": None,
}


def test_draw_zero_is_the_labs_defaults():
    assert draw_settings(SPACE, 0) == baseline()
    assert baseline() == {"lr_g": ADAM["lr"], "lr_d": ADAM["lr"], "beta1": 0.5, "init": "default", "loss": "ns"}
    assert default("loss") == "ns" and default("init") == "default"


def test_draws_are_a_function_of_seed_and_index_alone():
    """Paired: draw j is the same for every configuration (nothing of the configuration enters), never depends on
    k; the learning rates have their own streams (tuning the loss too leaves them as they were; the choices are
    balanced jointly, so a new choice reassigns them), and another sampler seed draws anew."""
    draws = [draw_settings(SPACE, j) for j in range(1, 9)]
    assert draws == [draw_settings(dict(SPACE), j) for j in range(1, 9)]
    with_loss = [draw_settings({**SPACE, "loss": ["ns", "rpgan"]}, j) for j in range(1, 9)]
    assert [(d["lr_g"], d["lr_d"]) for d in with_loss] == [(d["lr_g"], d["lr_d"]) for d in draws]
    combos = [(d["beta1"], d["init"], d["loss"]) for d in with_loss]
    assert len(set(combos)) == 8  # 2 x 2 x 2 combinations, each once in the first 8 draws
    assert draws != [draw_settings({**SPACE, "seed": 1}, j) for j in range(1, 9)]


def test_learning_rates_are_log_uniform_in_their_range_and_choices_balanced():
    draws = [draw_settings(SPACE, j) for j in range(1, 401)]
    for key in ("lr_g", "lr_d"):
        values = [d[key] for d in draws]
        assert all(2e-5 <= v <= 2e-3 for v in values)
        below_middle = sum(v < 2e-4 for v in values) / len(values)  # 2e-4: the range's geometric middle
        assert 0.42 < below_middle < 0.58
    for block in range(0, 400, 4):  # every block of 4 draws holds each (beta1, init) combination once: balanced
        combos = {(d["beta1"], d["init"]) for d in draws[block : block + 4]}  # and never confounded
        assert combos == {(b, i) for b in SPACE["beta1"] for i in SPACE["init"]}


@pytest.mark.parametrize(
    "override,message",
    [
        ("tuning.draws=0", r"tuning.draws must be a positive integer .*got 0"),
        ("tuning.lr_g=[1e-3,1e-4]", r"tuning.lr_g=\[0.001, 0.0001\] is not a range .*0 < low <= high"),
        ("tuning.lr_d=[0,1e-3]", r"tuning.lr_d=\[0.0, 0.001\] is not a range"),
        ("tuning.lr_d=[]", r"tuning.lr_d=\[\] is not a range"),
        ("tuning.init=[default,he]", r"tuning.init holds 'he'. Valid choices: default, variance_preserving"),
        ("tuning.loss=[ns,wgan]", r"tuning.loss holds 'wgan'. Valid choices: ns, minimax, lsgan, hinge, wgan-gp, rp"),
        ("tuning.beta1=[0.5,1.5]", r"tuning.beta1 holds 1.5. Valid choices: numbers in \[0, 1\)"),
        ("tuning.draw=9", r"tuning.draw=9 is not a draw of this study: 0 .* or 1..8"),
        ("tuning.seed=-1", r"tuning.seed must be an integer from 0 to 2\*\*32 - 1 \(the sampler's seed\), got -1"),
        ("model.init=he", r"Unknown initialization 'he' for model.init. Valid choices: default, variance_preserving"),
        ("model.loss=rp", r"Unknown loss 'rp' for model.loss. Valid losses: .*rpgan"),
        ("model.r2_weight=-1", r"model.r2_weight must be in \[0, inf\], got -1"),
    ],
)
def test_bad_tuning_values_are_refused_before_anything_is_written(tmp_path, tiny_mnist, override, message):
    run_dir = tmp_path / "run"
    cfg = compose_train(["experiment=tuning_budget", *fast_overrides(tiny_mnist), override], run_dir)
    with pytest.raises(ConfigError, match=message):
        prepare(cfg)
    assert not run_dir.exists()


def test_a_jobs_config_holds_its_draws_values(tiny_mnist):
    """The study's config reads draw j through ${tuning:...}: the composed job trains with its values and seed j;
    draw 0 composes exactly the lab's default config (the baseline reproduces earlier results)."""
    cfg = compose_train(["experiment=tuning_budget", "tuning.draw=3", *fast_overrides(tiny_mnist)])
    member, drawn = member_config(cfg), draw_settings(SPACE, 3)
    assert member["optimizer_g"]["lr"] == drawn["lr_g"] and member["optimizer_d"]["lr"] == drawn["lr_d"]
    assert member["optimizer_g"]["betas"] == [drawn["beta1"], 0.999] == member["optimizer_d"]["betas"]
    assert member["init"] == drawn["init"] and member["seed"] == 3
    zero = member_config(compose_train(["experiment=tuning_budget", *fast_overrides(tiny_mnist)]))
    assert zero == member_config(compose_train(fast_overrides(tiny_mnist)))


def write_study(folder: Path, entries: list[dict], fixed: dict | None = None, expected: int = 3) -> Path:
    """A best_draws.json as gan.report writes it (tests/runs/test_tuning.py's command-line test makes a real one)."""
    for entry in entries:
        entry.setdefault("draws_done", expected)
        entry.setdefault("label", " ".join(f"{k}={v}" for k, v in entry["configuration"].items()))
    data = {"tuning": {}, "draws_per_configuration": expected, "fixed": fixed or {}, "configurations": entries}
    (folder / BEST_DRAWS).write_text(json.dumps(data))
    return folder


def test_best_from_gives_each_configuration_its_best_draw(tmp_path, tiny_mnist):
    settings = {"lr_g": 1e-3, "lr_d": 3e-5, "beta1": 0.0, "init": "variance_preserving", "loss": "rpgan"}
    entries = [
        {"configuration": {"model.g_act": "tanh", "model.r1_weight": 1.0}, "draw": 2, "settings": settings},
        {"configuration": {"model.g_act": "relu", "model.r1_weight": 1.0}, "draw": 1, "settings": baseline()},
        {"configuration": {"model.g_act": "elu", "model.r1_weight": 1.0}, "draw": None, "settings": None},
    ]
    study = write_study(tmp_path, entries, fixed={"model.d_act": "leaky_relu", "model.g_hidden": [128, 256, 512]})
    base = ["experiment=tuning_confirm", *fast_overrides(tiny_mnist), f"tuning.best_from={study}", "model.r1_weight=1"]
    member = member_config(compose_train([*base, "model.g_act=tanh"]))  # 1 matches 1.0: values, not strings
    assert member["optimizer_g"]["lr"] == 1e-3 and member["optimizer_d"]["betas"] == [0.0, 0.999]
    assert member["init"] == "variance_preserving" and member["loss"] == "rpgan"
    refusals = [
        (["model.g_act=sigmoid"], "no best draw for this job's configuration. The study has: model.g_act=tanh"),
        (["model.g_act=elu"], "model.g_act=elu model.r1_weight=1.0 has no scored draw in the study"),
        (["model.g_act=tanh", "model.d_act=tanh"], "not a configuration of that study: model.d_act: study 'leaky_re"),
    ]
    for extra, message in refusals:
        with pytest.raises(ConfigError, match=re.escape(message)):
            prepare(compose_train([*base, *extra], tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_confirmation_needs_a_finished_study(tmp_path, tiny_mnist):
    base = ["experiment=tuning_confirm", *fast_overrides(tiny_mnist)]
    with pytest.raises(ConfigError, match=r"tuning.best_from is not set: .*experiment=tuning_confirm"):
        prepare(compose_train(base, tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"cannot read .*nowhere/best_draws.json .*python -m gan.report STUDY_DIR"):
        prepare(compose_train([*base, f"tuning.best_from={tmp_path / 'nowhere'}"], tmp_path / "b"))
    entries = [{"configuration": {"model.g_act": "relu"}, "draw": 1, "settings": baseline(), "draws_done": 2}]
    study = write_study(tmp_path, entries)
    with pytest.raises(ConfigError, match=r"the study is not finished: model.g_act=relu \(2 of 3\) draws done"):
        prepare(compose_train([*base, f"tuning.best_from={study}"], tmp_path / "c"))
    (study / BEST_DRAWS).write_text(json.dumps({"configurations": [{"label": "x"}]}))  # hand-edited
    with pytest.raises(ConfigError, match="cannot read .*KeyError"):
        prepare(compose_train([*base, f"tuning.best_from={study}"], tmp_path / "d"))


def test_check_tuning_takes_the_schema_defaults():
    check_tuning({**SPACE, "draws": 8, "draw": None})
    schema = OmegaConf.to_container(compose_train([]).tuning)
    check_tuning(schema)
    assert schema["draw"] is None and schema["draws"] == 8 and schema["lr_g"] == [2e-5, 2e-3]


EVAL_ON = ["eval.enabled=true", "eval.min_evaluator_accuracy=0", "eval.num_samples=64", "eval.every_n_epochs=1"]
TINY = ["model.g_hidden=[32]", "model.d_hidden=[32]", "trainer.max_epochs=1", "hydra/launcher=packed"]


@pytest.mark.slow
def test_a_tuning_study_its_report_and_its_confirmation_on_the_command_line(tmp_path, tiny_mnist):
    """experiment=tuning_budget with k = 2 over two G activations (6 runs, one pack); gan.report's budget curves,
    success rates, best draws and tau; then experiment=tuning_confirm re-runs each configuration's best draw."""
    study = tmp_path / "study"
    grid = ["model.g_act=relu,tanh", "model.d_act=leaky_relu"]
    common = [*fast_overrides(tiny_mnist), *EVAL_ON, *TINY]
    proc = _cli("gan.train", "-m", "experiment=tuning_budget", "tuning.draws=2", *grid, *common,
                f"hydra.sweep.dir={study}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    configs = [json.loads(p.read_text())["config"] for p in study.glob("*/results.json")]
    assert sorted((c["model"]["g_act"], c["tuning"]["draw"], c["seed"]) for c in configs) == [
        (g, j, j) for g in ("relu", "tanh") for j in (0, 1, 2)
    ]
    for c in configs:  # paired: the same draw, the same settings, whatever the configuration
        drawn = draw_settings({**SPACE}, c["tuning"]["draw"])
        assert c["model"]["optimizer_g"]["lr"] == drawn["lr_g"] and c["model"]["init"] == drawn["init"]

    result = report(study)
    assert "budget_curves.png" in result["plots"] and (study / "budget_curves.png").stat().st_size > 0
    rows = {row.config: row for row in result["tuning"]}
    assert set(rows) == {"model.g_act=relu", "model.g_act=tanh"}
    for row in rows.values():
        fids = [d.fid for d in row.sampled]
        assert [d.index for d in row.sampled] == [1, 2] and row.baseline.index == 0
        assert row.curve() == pytest.approx([sum(fids) / 2, min(fids)])  # n = 1: the mean; n = k: the best
        assert row.best.fid == min(d.fid for d in row.draws)
    text = (study / "report.md").read_text()
    assert "## Equal-budget tuning" in text and "Kendall's tau" in text and "By init" in text
    for line in csv.DictReader((study / "results.csv").open()):  # every run's tuned settings, recorded
        c = next(
            c for c in configs if c["model"]["g_act"] in line["config"] and str(c["tuning"]["draw"]) == line["draw"]
        )
        assert line["init"] == c["model"]["init"] and float(line["lr_d"]) == c["model"]["optimizer_d"]["lr"]
    best = json.loads((study / BEST_DRAWS).read_text())
    assert {e["label"] for e in best["configurations"]} == set(rows)

    confirm = tmp_path / "confirm"
    proc = _cli("gan.train", "-m", "experiment=tuning_confirm", f"tuning.best_from={study}", "seed=0,1", *grid,
                *common, f"hydra.sweep.dir={confirm}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    confirmed = [json.loads(p.read_text())["config"] for p in confirm.glob("*/results.json")]
    assert len(confirmed) == 4 and {c["seed"] for c in confirmed} == {0, 1}
    for c in confirmed:
        entry = next(e for e in best["configurations"] if e["configuration"]["model.g_act"] == c["model"]["g_act"])
        assert c["model"]["optimizer_g"]["lr"] == entry["settings"]["lr_g"]
        assert c["model"]["optimizer_d"]["lr"] == entry["settings"]["lr_d"]
        assert c["model"]["init"] == entry["settings"]["init"]
    assert all("tuning.best_from" not in p.name for p in confirm.iterdir())  # folder names stay short
    assert report(confirm)["tuning"] == []  # a confirmation is seeds of one setting each, not draws
    assert math.isfinite(min(r.fid.mean for r in report(confirm)["configurations"]))


@pytest.mark.slow
def test_a_sweep_with_no_draws_is_refused_before_any_job(tmp_path, tiny_mnist):
    proc = _cli("gan.train", "-m", "experiment=tuning_budget", "tuning.draws=0", *fast_overrides(tiny_mnist),
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: tuning.draws must be a positive integer (k, the draws per configuration)")
    assert not (tmp_path / "sweep").exists()


def test_the_committed_cpu_study_confirms_its_best_draws(tiny_mnist):
    """results/tuning_budget_cpu/best_draws.json (the README's study) is a finished study the confirmation reads:
    relu G with relu D at its draw 5, elu G with tanh D at the baseline."""
    study = REPO / "results" / "tuning_budget_cpu"
    base = ["experiment=tuning_confirm", f"tuning.best_from={study}", *fast_overrides(tiny_mnist)]
    relu = member_config(compose_train([*base, "model.g_act=relu", "model.d_act=relu"]))
    assert relu["optimizer_g"]["lr"] == draw_settings(SPACE, 5)["lr_g"] and relu["init"] == "variance_preserving"
    elu = member_config(compose_train([*base, "model.g_act=elu", "model.d_act=tanh"]))
    assert elu["optimizer_g"] == {"_target_": "gan.model.optim.Adam", "lr": 2e-4, "betas": [0.5, 0.999]}
