"""Nothing in a checkpoint decides what code runs: its saved settings are checked against the schema and its tensors
against the model, before any work, by every reader (a resumed run, a study's resume, gan.sample, gan.evaluate)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from gan import evaluate, sample
from gan.errors import CheckpointError
from gan.runs.fit import train
from gan.runs.plan import JobState
from tests.helpers import _cli, compose_train, fast_overrides, run

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> Path:
    """A real run's folder (2 iterations of gan.train): its checkpoints/last.ckpt is the file the tests edit."""
    _, run_dir = run(tmp_path_factory.mktemp("genuine"), "run", tiny_mnist, "trainer.max_steps=2")
    return run_dir


def crafted(genuine: Path, out: Path, edit: Edit) -> Path:
    """The genuine checkpoint with ``edit`` applied, saved at ``out`` (only tensors and plain containers)."""
    ckpt = torch.load(genuine / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, out)
    return out


def model(ckpt: dict[str, Any]) -> dict[str, Any]:
    return ckpt["run_configs"][0]["model"]


def member(ckpt: dict[str, Any]) -> dict[str, Any]:
    return ckpt["hyper_parameters"]["members"][0]


SAMPLE_ARGS = {"num_samples": 8, "seed": 0, "device": "cpu", "ema": None, "nrow": 4, "npy": None}


def refused_everywhere(tmp_path: Path, data: Path, path: Path, message: str) -> None:
    """``path`` is refused with ``message`` by a resumed gan.train, gan.sample and gan.evaluate, before any of
    them writes anything."""
    with pytest.raises(CheckpointError, match=message):
        run(tmp_path, "resumed", data, f"ckpt_path={path}")
    assert not (tmp_path / "resumed").exists()  # no run folder, no results.json
    png = tmp_path / "samples.png"
    with pytest.raises(CheckpointError, match=message):
        sample.run(OmegaConf.create({**SAMPLE_ARGS, "ckpt_path": str(path), "out": str(png)}))
    assert not png.exists()
    with pytest.raises(CheckpointError, match=message):
        args = {**SAMPLE_ARGS, "ckpt_path": str(path), "data": {"root": str(data)}, "min_evaluator_accuracy": 0.0}
        evaluate.run(OmegaConf.create(args))


SETTINGS: dict[str, tuple[Edit, str]] = {
    "model_target": (
        lambda c: model(c).update(_target_="pathlib.Path.touch"),
        r"its saved model\._target_='pathlib.Path.touch' is Hydra's instantiation syntax",
    ),
    "optimizer_target": (
        lambda c: model(c)["optimizer_g"].update(_target_="builtins.print"),
        r"model\.optimizer_g\._target_='builtins.print' is Hydra's instantiation syntax .*; "
        r"this lab's name\(s\) there: gan\.model\.optim\.Adam",
    ),
    "nested_target": (
        lambda c: model(c)["act_params"]["elu"].update(_target_="os.system"),
        r"model\.act_params\.elu\._target_='os.system' is Hydra's instantiation syntax",
    ),
    "args": (lambda c: model(c).update(_args_=["x"]), r"model\._args_=\['x'\] is Hydra's instantiation syntax"),
    "partial": (lambda c: model(c).update(_partial_=True), r"model\._partial_=True is Hydra's instantiation syntax"),
    "unknown_key": (lambda c: model(c).update(lr=0.1), r"model\.lr=0\.1 is not a model setting of this lab"),
    "interpolation": (
        lambda c: model(c).update(g_act="${oc.env:HOME}"),
        r"model\.g_act='\$\{oc\.env:HOME\}' is an interpolation",
    ),
    "interpolation_in_act": (
        lambda c: c["run_configs"][0].update(act="${oc.env:HOME}"),
        r"saved act='\$\{oc\.env:HOME\}' is an interpolation",
    ),
    "string_for_int": (
        lambda c: model(c).update(latent_dim="abc"),
        r"model\.latent_dim='abc' is a str; the schema's type is int",
    ),
    "list_for_int": (
        lambda c: model(c).update(latent_dim=[1, 2]),
        r"model\.latent_dim=\[1, 2\] is a list; the schema's type is int",
    ),
    "string_in_widths": (
        lambda c: model(c).update(g_hidden=[128, "256"]),
        r"model\.g_hidden=\[128, '256'\] is a list; the schema's type is List\[int\]",
    ),
    "data_type": (
        lambda c: c["run_configs"][0]["data"].update(train_size="all"),
        r"data\.train_size='all' is a str; the schema's type is Optional\[int\]",
    ),
    "hyperparameter_target": (
        lambda c: member(c).update(_target_="pathlib.Path.touch"),
        r"hyper_parameters\.members\[0\]\._target_='pathlib.Path.touch' is Hydra's instantiation syntax",
    ),
    "hyperparameter_unknown": (
        lambda c: c["hyper_parameters"].update(_instantiator="builtins.print"),
        r"hyper_parameters\._instantiator='builtins.print' is not a hyperparameter this lab stores",
    ),
    "bad_value": (
        lambda c: member(c).update(g_act="swish2"),
        r"hyper_parameters\.members\[0\] does not pass this lab's checks: Unknown activation 'swish2'",
    ),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_a_saved_setting_that_is_not_a_plain_value_of_the_schema_is_refused_by_every_reader(
    tmp_path, tiny_mnist, genuine, case
):
    edit, message = SETTINGS[case]
    refused_everywhere(tmp_path, tiny_mnist, crafted(genuine, tmp_path / f"{case}.ckpt", edit), message)


TENSORS: dict[str, tuple[Edit, str]] = {
    "string": (
        lambda c: c["state_dict"].update({"generator.net.fc1.bias": "abc"}),
        r"tensor generator\.net\.fc1\.bias is a str, not a dense tensor",
    ),
    "shape": (
        lambda c: c["state_dict"].update({"generator.net.fc1.bias": torch.zeros(1, 7)}),
        r"tensor generator\.net\.fc1\.bias has shape \(1, 7\); the model's is \(1, 128\)",
    ),
    "integer": (
        lambda c: c["state_dict"].update({"generator.net.fc1.bias": torch.zeros(1, 128, dtype=torch.long)}),
        r"tensor generator\.net\.fc1\.bias is torch\.int64; the model's is torch\.float32",
    ),
    "inf": (
        lambda c: c["state_dict"]["discriminator.net.fc2.weight"].view(-1)[:3].fill_(float("inf")),
        r"tensor discriminator\.net\.fc2\.weight holds 3 non-finite value\(s\) \(NaN or inf\)",
    ),
    "missing": (
        lambda c: c["state_dict"].pop("generator.net.out.bias"),
        r"missing tensor\(s\) generator\.net\.out\.bias",
    ),
    "extra": (
        lambda c: c["state_dict"].update({"generator.net.extra": torch.zeros(1)}),
        r"tensor\(s\) not in that model generator\.net\.extra",
    ),
}


@pytest.mark.parametrize("case", list(TENSORS))
def test_a_tensor_that_does_not_fit_the_model_is_refused_before_any_work(tmp_path, tiny_mnist, genuine, case):
    edit, message = TENSORS[case]
    path = crafted(genuine, tmp_path / f"{case}.ckpt", edit)
    refused_everywhere(tmp_path, tiny_mnist, path, rf"ckpt_path='{re.escape(str(path))}'.*{message}")


def test_the_genuine_checkpoint_passes_every_check(tmp_path, tiny_mnist, genuine):
    """The control of the tests above: the unedited file, saved the same way, samples and resumes."""
    path = crafted(genuine, tmp_path / "same.ckpt", lambda c: None)
    out = tmp_path / "s.png"
    assert sample.run(OmegaConf.create({**SAMPLE_ARGS, "ckpt_path": str(path), "out": str(out)}))["png"]
    _, resumed = run(tmp_path, "resumed", tiny_mnist, f"ckpt_path={path}", "trainer.max_steps=3")
    assert json.loads((resumed / "results.json").read_text())["status"] == "finished"


# ----------------------------------------------------------------------------- code a file names never runs
def touching(marker: Path) -> Edit:
    """Every settings entry names code that would create ``marker``: Path.touch and logging.basicConfig."""

    def edit(ckpt: dict[str, Any]) -> None:
        model(ckpt).update(_target_="pathlib.Path.touch", _args_=[str(marker)])
        model(ckpt)["optimizer_d"] = {"_target_": "logging.basicConfig", "filename": str(marker)}
        member(ckpt).update(_target_="pathlib.Path.touch", _args_=[str(marker)])
        ckpt["hyper_parameters"]["_instantiator"] = "pathlib.Path.touch"

    return edit


def test_code_a_checkpoint_names_never_runs_through_resume_sample_or_evaluate(tmp_path, tiny_mnist, genuine):
    marker = tmp_path / "code_ran"
    path = crafted(genuine, tmp_path / "touching.ckpt", touching(marker))
    refused_everywhere(tmp_path, tiny_mnist, path, r"model\._target_='pathlib.Path.touch'")
    assert not marker.exists()


def interrupted_job(genuine: Path, study: Path, edit: Edit) -> Path:
    """A sweep job folder as an interrupted study leaves it (results.json ``interrupted``), its last.ckpt edited."""
    job = study / "0"
    shutil.copytree(genuine, job)
    record = json.loads((job / "results.json").read_text())
    (job / "results.json").write_text(json.dumps({**record, "status": "interrupted"}))
    crafted(genuine, job / "checkpoints" / "last.ckpt", edit)
    return job


def test_the_study_resume_refuses_a_members_crafted_checkpoint_and_keeps_its_folder(tmp_path, tiny_mnist, genuine):
    """A job of a sweep whose folder holds an interrupted run resumes from its last.ckpt: that file's settings are
    checked as ckpt_path's, and the folder is left as it was."""
    marker = tmp_path / "code_ran"
    job = interrupted_job(genuine, tmp_path / "study", touching(marker))
    before = {p: p.read_bytes() for p in job.rglob("*") if p.is_file()}
    cfg = compose_train(fast_overrides(tiny_mnist), run_dir=job)
    with pytest.raises(CheckpointError, match=r"last\.ckpt'.*model\._target_='pathlib.Path.touch'"):
        train(cfg, JobState(multirun=True, name="job 0"))
    assert not marker.exists()
    assert {p: p.read_bytes() for p in job.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_on_the_command_line_a_crafted_checkpoint_runs_no_code(tmp_path, tiny_mnist, genuine):
    """python -m gan.train ckpt_path=FILE exits with the error (no traceback) and never creates the marker."""
    marker = tmp_path / "code_ran"
    path = crafted(genuine, tmp_path / "touching.ckpt", touching(marker))
    overrides = fast_overrides(tiny_mnist)
    proc = _cli("gan.train", *overrides, f"ckpt_path={path}", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert proc.returncode == 2 and "error: ckpt_path=" in proc.stderr and "Traceback" not in proc.stderr
    assert "model._target_='pathlib.Path.touch'" in proc.stderr
    assert not (tmp_path / "r" / "results.json").exists() and not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=packed"]], ids=["basic", "packed"])
def test_rerunning_a_study_with_a_crafted_member_checkpoint_runs_no_code(tmp_path, tiny_mnist, genuine, launcher):
    """The study resume (the sweep's command again) refuses the interrupted job's crafted last.ckpt, with either
    launcher, and leaves its record as it was."""
    marker = tmp_path / "code_ran"
    overrides = fast_overrides(tiny_mnist)
    study = tmp_path / "study"
    job = interrupted_job(genuine, study, touching(marker))
    before = (job / "results.json").read_bytes()
    sweep = ["-m", *launcher, *overrides, "model.g_act=relu", "hydra.sweep.subdir=${hydra.job.num}"]
    proc = _cli("gan.train", *sweep, f"hydra.sweep.dir={study}", cwd=tmp_path)
    assert "model._target_='pathlib.Path.touch'" in proc.stderr, proc.stderr[-3000:]
    assert (job / "results.json").read_bytes() == before
    assert not marker.exists()


# ----------------------------------------------------------------------------- other files read from disk
def test_an_evaluator_cache_with_non_finite_values_is_rebuilt_not_used(tmp_path):
    from gan.eval.classifier import EVALUATOR_VERSION, MNISTClassifier, _load_cache

    blob = {
        "version": EVALUATOR_VERSION,
        "state_dict": MNISTClassifier().state_dict(),
        "test_accuracy": 0.99,
        "data_sha256": {},
        "test_features": torch.randn(20, 256),
        "test_logits": torch.randn(20, 10),
        "test_radii": torch.rand(20),
    }
    path = tmp_path / "cache.pt"
    torch.save(blob, path)
    assert _load_cache(path, {}) is not None  # intact: used
    for key, bad in (("test_features", float("inf")), ("test_radii", float("nan"))):
        broken = copy.deepcopy(blob)
        broken[key][0] = bad
        torch.save(broken, path)
        assert _load_cache(path, {}) is None
    broken = copy.deepcopy(blob)
    next(iter(broken["state_dict"].values())).view(-1)[0] = float("inf")
    torch.save(broken, path)
    assert _load_cache(path, {}) is None


def test_a_sweeps_multirun_yaml_is_read_without_resolving_its_interpolations(tmp_path):
    """The sweep's keys come from the override text; an interpolation in the file is never evaluated (one that
    cannot resolve used to cost every key)."""
    from gan.runs.names import swept_keys

    task = ["model.g_act=relu,elu", "data.root=${oc.env:GAN_LAB_TEST_UNSET_VARIABLE}"]
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": task}}}), tmp_path / "multirun.yaml")
    assert swept_keys(str(tmp_path)) == {"model.g_act"}
