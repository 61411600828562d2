"""Sweep members' folder names (gan/runs/names.py): what the run is, short, and still a valid ckpt_path=."""

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gan.runs.names import run_name, run_subdir, swept_keys


def test_a_name_leads_with_the_activations_drops_model_and_where_keys_and_ends_with_the_seed():
    overrides = [
        "eval.num_samples=1000",
        "trainer.max_steps=50",
        "data.root=../shared/mnist",
        "seed=1",
        "model.optimizer_g.lr=0.001",
        "model.d_act=tanh",
        "model.g_act=elu",
        "trainer.accelerator=cpu",
        "stability=r1",
    ]
    assert run_name(overrides) == "g_act:elu+d_act:tanh+stability:r1+optimizer_g.lr:0.001+seed:1"


def test_a_budget_key_is_named_only_when_the_sweep_varies_it():
    overrides = ["trainer.max_epochs=5", "eval.num_samples=500", "model.g_act=relu"]
    assert run_name(overrides) == "g_act:relu"
    assert run_name(overrides, frozenset({"trainer.max_epochs"})) == "g_act:relu+trainer.max_epochs:5"
    assert run_name(["data.root=x"]) == "defaults"


def test_the_swept_keys_are_read_from_the_sweeps_multirun_yaml(tmp_path):
    saved = {
        "hydra": {
            "overrides": {"task": ["model.g_act=relu,elu", "trainer.max_epochs=5,10", "eval.num_samples=100"]},
            "sweeper": {"params": {"tuning.draw": "range(0,9)", "++eval.num_samples": "100,200"}},
        }
    }
    OmegaConf.save(OmegaConf.create(saved), tmp_path / "multirun.yaml")
    assert swept_keys(str(tmp_path)) == {"model.g_act", "trainer.max_epochs", "tuning.draw", "eval.num_samples"}
    assert swept_keys(str(tmp_path / "none")) == frozenset()


def test_a_sweep_folder_from_before_keeps_its_old_folder_names(tmp_path):
    """The study resume: an old sweep's job folder (NUM_ + Hydra's override_dirname) is still the job's folder."""
    task = ["model.g_act=relu", "trainer.max_steps=5"]
    old_dirname = "model.g_act:relu+trainer.max_steps:5"
    assert run_subdir(tmp_path, 3, old_dirname, task) == "3_g_act:relu"
    (tmp_path / f"3_{old_dirname}").mkdir()
    assert run_subdir(tmp_path, 3, old_dirname, task) == f"3_{old_dirname}"


def test_a_path_into_a_named_folder_is_a_valid_unquoted_ckpt_path_override():
    name = run_subdir("/nowhere", 7, "", ["model.g_act=elu", "model.g_hidden=[32,32]", "seed=2"])
    assert name == "7_g_act:elu+g_hidden:32-32+seed:2"
    override = OverridesParser.create().parse_overrides([f"ckpt_path=outputs/x/{name}/checkpoints/last.ckpt"])[0]
    assert override.value() == f"outputs/x/{name}/checkpoints/last.ckpt" and not override.is_sweep_override()


def test_where_and_how_keys_stay_out_even_when_swept():
    assert run_name(["trainer.accelerator=cpu", "model.g_act=elu"], frozenset({"trainer.accelerator"})) == "g_act:elu"


def test_a_long_name_is_cut_with_a_stable_hash():
    overrides = [f"+model.extra_{i}=abcdefghij" for i in range(30)]
    first, second = run_name(overrides), run_name(overrides)
    assert first == second and len(first) <= 200 and "@" in first
    assert Path(first).name == first
