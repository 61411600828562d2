"""The commands' console scripts (pyproject's [project.scripts], beside ``python -m gan.X``), the shell completion
they make possible, and ``gan.train --help`` (conf/hydra/help/lab.yaml)."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gan.runs.schema import CONF_DIR
from tests.helpers import REPO, _cli
from tests.test_layers import COMMANDS

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")


def scripts() -> dict[str, str]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]["scripts"]


def test_every_command_has_a_console_script_whose_target_runs_without_arguments():
    declared = scripts()
    assert set(declared) == {"gan-" + command.split(".")[1] for command in COMMANDS}
    for name, target in declared.items():
        module, _, function = target.partition(":")
        assert module == "gan." + name.removeprefix("gan-"), f"{name} runs {target}, another command's code"
        entry = getattr(importlib.import_module(module), function)
        assert callable(entry)
        inspect.signature(entry, follow_wrapped=False).bind()  # a console script calls it with no arguments


def test_the_bench_script_exits_zero_after_a_measurement(monkeypatch):
    """A console script passes its function's return value to sys.exit, where bench.main's summary dict would
    print itself and exit 1: the script runs ``cli``, which returns nothing."""
    from gan import bench

    monkeypatch.setattr(bench, "main", lambda argv=None: {"single_img_s": 1.0})  # a measurement's summary
    module, _, function = scripts()["gan-bench"].partition(":")
    assert getattr(importlib.import_module(module), function)() is None


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def section(text: str, title: str) -> str:
    """The lines under ``== TITLE...`` up to the next ``==`` heading."""
    match = re.search(rf"^== {re.escape(title)}.*?\n(.*?)(?=^== )", text, re.M | re.S)
    assert match, f"no '== {title}' section in:\n{text[:2000]}"
    return match.group(1)


@pytest.mark.slow  # composes gan.train's config in a fresh interpreter (about 8 s here)
def test_train_help_says_what_it_does_and_names_every_launcher_and_preset(tmp_path):
    proc = _cli("gan.train", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert text.startswith("== gan-train (python -m gan.train): train MLP GANs on MNIST")
    assert "gan-train -m " in text and "ckpt_path=" in text  # a sweep and a resume, shown
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        launchers = set(GlobalHydra.instance().config_loader().get_group_options("hydra/launcher"))
    assert {"basic", "packed", "packed_slurm", "joblib", "slurm"} <= launchers  # the lab's, and the plugins'
    described = section(text, "Launchers")
    missing = [name for name in sorted(launchers) if not re.search(rf"^  {name} ", described, re.M)]
    assert not missing, f"hydra/launcher options missing from conf/hydra/help/lab.yaml: {missing}"
    presets = section(text, "Presets")
    for group in ("activation", "stability", "experiment", "hparams_search", "trainer", "logger"):
        assert f"\n  {group}=" in "\n" + presets
    experiments = re.search(r"^experiment: (.*)$", section(text, "Configuration groups"), re.M)
    assert experiments and set(experiments.group(1).split(", ")) == {
        p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")
    }
    assert "model:\n  _target_: gan.model.spec.member_hparams" in text  # Hydra's composed config follows
    assert 'eval "$(gan-train -sc install=bash)"' in text


def installed(name: str) -> Path:
    """The console script ``name`` beside this interpreter (skipped, with the command that writes it, if absent)."""
    script = Path(sys.executable).parent / name
    if not script.is_file():
        pytest.skip(f"{script} is not installed: pip install -e . --no-deps writes the console scripts")
    return script


@pytest.mark.slow  # a fresh interpreter per command
@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        pytest.param("gan-train", ["--cfg", "job"], "model:\n  _target_: gan.model.spec.member_hparams", id="train"),
        pytest.param("gan-sample", ["--cfg", "job"], "num_samples: 64", id="sample"),
        pytest.param("gan-evaluate", ["--cfg", "job"], "num_samples: 10000", id="evaluate"),
        pytest.param("gan-evaluator", ["--cfg", "job"], "download: false", id="evaluator"),
        pytest.param("gan-report", ["--help"], "SWEEP", id="report"),
        pytest.param("gan-bench", ["--help"], "data.root=PATH", id="bench"),
    ],
)
def test_each_console_script_finds_its_config_from_any_folder(tmp_path, name, args, expected):
    """A console script imports its module by name, not as __main__: Hydra then reads a relative config_path as a
    package, so each command must name conf/ by its absolute path."""
    proc = subprocess.run(
        [str(installed(name)), *args], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert expected in proc.stdout


@pytest.mark.slow  # two fresh interpreters composing gan.train's config
def test_the_console_script_gets_hydras_shell_completion(tmp_path):
    script = installed("gan-train")
    install = subprocess.run(
        [str(script), "-sc", "install=bash"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300
    )
    assert install.returncode == 0, install.stderr[-3000:]
    assert install.stdout.rstrip().endswith("complete -o nospace -o default -F hydra_bash_completion gan-train")
    line = "gan-train hydra/launcher=pack"
    query = subprocess.run(
        [str(script), "-sc", "query=bash"],
        cwd=tmp_path,
        env={**env(), "COMP_LINE": line, "COMP_POINT": str(len(line))},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert query.returncode == 0, query.stderr[-3000:]
    assert "hydra/launcher=packed" in query.stdout.split() and "hydra/launcher=basic" not in query.stdout.split()
