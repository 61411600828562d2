"""gan.runs.plan: composing the config, its presets and schema, and refusing bad values before any work."""

from __future__ import annotations

import re
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from gan.errors import ConfigError, DataError
from gan.model.activations import ACTIVATION_NAMES
from gan.model.module import GANModule
from gan.runs.build import lightning_max_steps
from gan.runs.fit import train
from gan.runs.schema import CONF_DIR
from tests.helpers import build_model, compose_train, fast_overrides, make_mnist

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "activation").glob("*.yaml"))


def test_the_readme_command_composes_on_cpu():
    cfg = compose_train(["model.g_act=relu", "trainer.accelerator=cpu"])
    assert cfg.model.g_act == "relu" and cfg.trainer.accelerator == "cpu"
    assert cfg.seed == 0 and cfg.ckpt_path is None
    trainer = hydra.utils.instantiate(cfg.trainer, default_root_dir="/tmp/x")
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"


def test_defaults_are_the_seed_design():
    cfg = compose_train()
    m = cfg.model
    assert (m.g_act, m.g_out_act, m.d_act, m.d_out_act) == ("relu", "tanh", "leaky_relu", "identity")
    assert m.act_params.leaky_relu.negative_slope == 0.2
    assert (m.latent_dim, list(m.g_hidden), list(m.d_hidden)) == (100, [128, 256, 512], [512, 256, 128])
    assert m.loss == "ns" and m.d_steps == 1


def test_presets_set_all_four_and_single_overrides_still_win():
    cfg = compose_train(["activation=same", "act=tanh"])
    assert (cfg.model.g_act, cfg.model.d_act) == ("tanh", "tanh")
    cfg = compose_train(["activation=same", "act=tanh", "model.d_act=elu"])
    assert (cfg.model.g_act, cfg.model.d_act) == ("tanh", "elu")
    cfg = compose_train(["activation=sigmoid_out"])
    assert build_model(cfg).data_range == (0.0, 1.0)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds(preset):
    cfg = compose_train([f"activation={preset}"])
    model = build_model(cfg)
    assert isinstance(model, GANModule)
    assert model.member_hparams[0]["g_act"] == cfg.model.g_act


def test_required_presets_exist():
    assert {"seed", "dcgan", "same", "sigmoid_out"} <= set(PRESETS)


@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_one_preset_sets_any_activation_everywhere(act):
    cfg = compose_train(["activation=same", f"act={act}"])
    hp = build_model(cfg).member_hparams[0]
    assert (hp["g_act"], hp["d_act"], hp["g_out_act"], hp["d_out_act"]) == (act, act, "tanh", "identity")


def test_the_dcgan_preset_is_the_seed_design_with_batch_norm_in_g():
    seed, dcgan = compose_train(["activation=seed"]).model, compose_train(["activation=dcgan"]).model
    assert dcgan.g_norm == "batch" and seed.g_norm == "none"
    assert {k: v for k, v in dcgan.items() if k != "g_norm"} == {k: v for k, v in seed.items() if k != "g_norm"}


def test_activation_parameters_from_the_command_line():
    cfg = compose_train(["model.act_params.leaky_relu.negative_slope=0.05"])
    model = build_model(cfg)
    assert model.discriminator.net.act1.functions[0].negative_slope == 0.05


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (["model.g_act=relu6x"], r"Unknown activation 'relu6x' for model.g_act.*Valid names: relu, leaky_relu"),
        (["model.d_out_act=sigmoid"], "apply the sigmoid twice"),
        (["model.loss=wgan"], "Unknown loss 'wgan'.*ns, minimax, lsgan"),
        (["model.d_steps=0"], "d_steps must be a positive integer"),
        (["model.g_act=elu", "+model.act_params.elu.slope=1"], "Unknown parameter 'slope' for activation 'elu'"),
        (["data.batch_size=0"], "^data.batch_size must be a positive integer, got 0"),
        (["trainer.accelerator=tpux"], "trainer.accelerator='tpux' is not known. Available names are: .*cpu"),
        (["trainer.precision=17"], "trainer: Precision 17 is invalid. Allowed precision values"),
        (["model.loss=wgan-gp", "model.d_norm=batch"], "d_norm='batch' with model.loss='wgan-gp'"),
        (["model.g_norm=group"], "Unknown normalization 'group' for model.g_norm. Valid choices: none, batch, layer"),
        (["stability=hinge", "model.label_smoothing=0.1"], "label_smoothing=0.1 does not apply to model.loss='hinge'"),
        (["model.r1_weight=-2"], r"model.r1_weight must be in \[0, inf\], got -2"),
        (["model.augment=color"], "Unknown augmentation 'color' in model.augment='color'. Valid policies"),
        (["data.augment=color"], "Unknown augmentation 'color' in data.augment='color'. Valid policies"),  # old place
        (["data.augment=cutout", "model.augment=translation"], "data.augment='cutout' and model.augment='translation'"),
        (["data.train_size=4"], "data.train_size=4 is smaller than one iteration's real images"),
        # issue 11's list: each refused before anything is written
        (["model.optimizer_g.lr=-1"], "^model.optimizer_g: lr must be a finite number > 0, got -1 "),
        (["model.optimizer_g.lr=nan"], "^model.optimizer_g: lr must be a finite number > 0, got nan "),
        (["model.optimizer_d.lr=inf"], "^model.optimizer_d: lr must be a finite number > 0, got inf "),
        (["model.optimizer_g.betas=[2,3]"], r"^model.optimizer_g: betas must both be in \[0, 1\), got betas=\[2, 3\]"),
        (["+model.optimizer_d.momentum=0.9"], "unexpected keyword argument 'momentum'.*Adam takes lr, betas, eps"),
        (
            ["model.g_act=elu", "model.act_params.elu.alpha=abc"],
            r"^model.act_params.elu=\{'alpha': 'abc'\} is not valid",
        ),
        (["model.act_params.elu.alpha=abc"], r"^model.act_params.elu=\{'alpha': 'abc'\} is not valid"),  # unused too
        (["model.act_params.softplus.beta=0", "model.g_act=softplus"], "outputs NaN or infinite values"),
        (["eval.num_samples=0"], "^eval.num_samples must be an integer >= 4"),
        (["eval.every_n_epochs=-1"], "^eval.every_n_epochs must be an integer >= 0"),
        (["eval.min_evaluator_accuracy=1.5"], r"^eval.min_evaluator_accuracy must be a number in \[0, 1\]"),
        (["diag.every_n_steps=-5"], "^diag.every_n_steps must be an integer >= 0"),
        (["model.num_fixed_samples=0"], "^model.num_fixed_samples must be a positive integer"),
        (["model.latent_dim=0"], "^model.latent_dim must be a positive integer"),
        (["model.g_hidden=[0]"], "^model.g_hidden must list at least one hidden layer widths.*got \\[0\\]"),
        (["model.g_hidden=[]"], "^model.g_hidden must list at least one hidden layer widths.*got \\[\\]"),
        (
            ["model.d_hidden=[-3]"],
            "^model.d_hidden must list zero or more hidden layer widths, each a positive integer",
        ),
        (["callbacks.sample_grid.nrow=0"], "callbacks.sample_grid.nrow must be an integer >= 1"),
        (["trainer.devices=2"], "^trainer.devices=2 asks for 2 devices: a run .* trains on one device"),
        (["trainer.limit_train_batches=0"], "^trainer.limit_train_batches=0 would train no batch"),
        (["trainer.log_every_n_steps=0"], "^trainer.log_every_n_steps=0 must be a positive number"),
        (["trainer.max_steps=abc"], "^trainer.max_steps='abc' is not a budget"),
        (["trainer.max_epochs=0"], "^trainer.max_epochs=0 is not a budget"),
        (["trainer.max_epochs=-1", "trainer.max_steps=0"], "^trainer.max_steps=0 is not a budget"),
        (["trainer.max_epochs=-1"], "would never end"),
        (["data.batch_size=100000"], "^data.batch_size=100000 .* is larger than the 256 training images"),
        (["float32_matmul_precision=low"], "^float32_matmul_precision='low': valid choices are highest, high, medium"),
        # issue 23's: values that crashed, ran silently or failed only at the first evaluation
        (["seed=4294967296"], "^seed must be an integer from 0 to 4294967295 .*got 4294967296"),
        (["model.fixed_noise_seed=4294967296"], "^model.fixed_noise_seed must be an integer from 0 to 4294967295"),
        (["trainer.max_time=00:00:00:00"], "^trainer.max_time='00:00:00:00' is not a budget: .*positive duration"),
        (["trainer.max_time={minutes:-5}"], r"^trainer.max_time=\{'minutes': -5\} is not a budget"),
        (["trainer.max_time=-1"], "^trainer.max_time=-1 is not a duration: use DD:HH:MM:SS"),
        (["trainer.max_time=99999999999:00:00:00"], "^trainer.max_time='99999999999:00:00:00' is not a duration"),
        (["model.g_norm=batch", "data.batch_size=1"], "^model.g_norm=batch with data.batch_size=1: batch norm"),
        (["model.d_norm=batch", "data.batch_size=1"], "^model.d_norm=batch with data.batch_size=1: batch norm"),
        (["model.d_minibatch_std=true", "data.batch_size=1"], "^model.d_minibatch_std=true with data.batch_size=1"),
        (["eval.num_samples=1000001"], "^eval.num_samples=1,000,001 would need about .* may be at most 1,000,000"),
        (["trainer.accelerator=tpu"], "^trainer.accelerator=tpu is Lightning's, but .* valid choices: auto, cpu, gpu"),
        (["+trainer.gradient_clip_val=1.0"], "^trainer.gradient_clip_val=1.0: this lab's GAN steps .* itself"),
        (["+trainer.accumulate_grad_batches=2"], "^trainer.accumulate_grad_batches=2: this lab's GAN steps"),
        (["+trainer.val_check_interval=0"], "^trainer.val_check_interval=0: this lab has no validation loop"),
        (["+trainer.num_sanity_val_steps=2"], "^trainer.num_sanity_val_steps=2: this lab has no validation loop"),
        (["model.latent_dim=1000000000"], "^model.latent_dim=1000000000, model.g_hidden=.* would need about .* TB"),
        (["model.g_hidden=[1000000000]"], r"^model.latent_dim=100, model.g_hidden=\[1000000000\], .* available"),
        (["model.num_fixed_samples=1000000000"], "^model.num_fixed_samples=1000000000: one run would need about"),
        (["model.r1_weight=inf"], "^model.r1_weight must be a finite number, got inf: the losses would be NaN"),
        (["model.instance_noise=inf"], "^model.instance_noise must be a finite number, got inf"),
        (["model.d_steps=1000000000"], "^data.batch_size=32, model.d_steps=1000000000: one run would need about"),
        (["eval.jacobian_samples=10000000"], "^eval.jacobian_samples must be an integer from 0 to 1000"),
        (["diag.jacobian_samples=10000000"], "^diag.jacobian_samples must be an integer from 0 to 1000"),
    ],
)
def test_bad_values_fail_before_any_work_with_one_clear_message(tmp_path, tiny_mnist, overrides, pattern):
    run_dir = tmp_path / "run"
    cfg = compose_train(fast_overrides(tiny_mnist) + overrides, run_dir)
    with pytest.raises(ConfigError, match=pattern):
        train(cfg)
    assert not run_dir.exists()  # nothing was written


def test_max_steps_counts_generator_iterations():
    assert lightning_max_steps(100, 1) == 200
    assert lightning_max_steps(100, 5) == 600
    assert lightning_max_steps(-1, 3) == -1
    assert lightning_max_steps(None, 1) == -1


def test_config_is_plain_yaml_the_code_can_read():
    cfg = compose_train()
    assert OmegaConf.select(cfg, "model._target_") == "gan.model.spec.member_hparams"
    assert cfg.data._target_ == "gan.data.MNISTDataModule"
    assert cfg.trainer._target_ == "lightning.Trainer"


def test_a_training_subset_larger_than_the_data_fails_before_any_work(tmp_path, tiny_mnist):

    run_dir = tmp_path / "run"
    cfg = compose_train(fast_overrides(tiny_mnist) + ["data.train_size=1000"], run_dir)
    with pytest.raises(DataError, match="data.train_size=1000 is larger than the training split"):
        train(cfg)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "override",
    ["data.batch_size=abc", "model.d_steps=1.5", "seed=abc", "seed=1e30", "eval.num_samples=x", "model.g_ema=maybe"],
)
def test_the_schema_refuses_wrong_types_while_composing(override):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=f"Error merging override {re.escape(override)}") as err:
        compose_train([override])
    assert re.search("could not be converted|is not a valid bool", str(err.value.__cause__))


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("+model.lr=1", r"model.lr: Key 'lr' not in 'ModelConfig'. Valid keys there: latent_dim, .*optimizer_g"),
        ("+data.foo=1", "data.foo: Key 'foo' not in 'DataConfig'"),
        ("+eval.every=2", "eval.every: Key 'every' not in 'EvalConfig'"),
        ("act=tanh", "act='tanh' is read only by the activation=same preset"),
    ],
)
def test_keys_the_schema_does_not_have_are_refused_before_any_work(tmp_path, override, pattern):
    from gan.runs.plan import prepare

    cfg = compose_train(fast_overrides(tmp_path / "absent") + [override], tmp_path / "run")
    with pytest.raises(ConfigError, match=pattern):
        prepare(cfg)
    assert not (tmp_path / "run").exists()  # nothing written


def test_the_schema_mirrors_the_yaml_groups():
    """Every key of the YAML groups has its typed field (and no field lacks its YAML default)."""
    from gan.runs.schema import TrainConfig

    cfg = compose_train([])
    schema = OmegaConf.structured(TrainConfig)
    for group in ("model", "data", "eval", "diag"):
        assert set(cfg[group]) == set(schema[group]), group


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_test_file_is_named_before_any_work(tmp_path, gz):
    """All four MNIST files are checked from their headers and lengths up front (a .gz by its stored length):
    a truncated test-label file stops the run before the evaluator would retrain for minutes."""
    from gan.errors import DataError

    data = make_mnist(tmp_path / "data", gz=gz)
    labels = next((data / "MNIST" / "raw").glob("t10k-labels-idx1-ubyte*"))
    labels.write_bytes(labels.read_bytes()[:-7])
    run_dir = tmp_path / "run"
    cfg = compose_train(fast_overrides(data, **{"eval.enabled": True}), run_dir)
    from gan.runs.fit import train

    with pytest.raises(DataError, match=f"{labels.name} is truncated or corrupted"):
        train(cfg)
    assert not run_dir.exists()
