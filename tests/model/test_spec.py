"""The member spec: each model setting declared once, and everything that lists settings derived from it."""

from __future__ import annotations

import math
import re

import pytest
from omegaconf import OmegaConf

from gan.errors import ConfigError
from gan.model.module import GANModule
from gan.model.spec import SHARED_KEYS, SPEC_FIELDS, default, knob_rows, member_hparams
from gan.runs.packing import MEMBER_CONFIG_KEYS
from gan.runs.schema import ModelConfig, TrainConfig
from tests.helpers import REPO, compose_train


def test_every_default_is_the_specs_in_the_schema_and_the_composed_config():
    schema = OmegaConf.structured(ModelConfig)
    cfg = compose_train()
    for name, f in SPEC_FIELDS.items():
        if f.metadata["key"]:
            continue
        expected = f.metadata["config_default"] or default(name)
        assert OmegaConf.to_container(schema)[name] == expected, name
        if not f.metadata["config_default"]:
            assert OmegaConf.to_container(cfg.model, resolve=True)[name] == default(name), name
    assert set(OmegaConf.structured(TrainConfig).model) == {"_target_"} | {
        n for n, f in SPEC_FIELDS.items() if not f.metadata["key"]
    }


def test_member_hparams_fills_the_specs_defaults_and_checks_each_value():
    member = member_hparams()
    assert list(member) == list(SPEC_FIELDS)
    assert member["act_params"]["leaky_relu"] == {"negative_slope": 0.2}  # the config's default, not torch's
    assert member["augment"] == [] and member["optimizer_g"]["_target_"] == "gan.model.optim.Adam"
    assert member_hparams(**member) == member  # checked settings pass unchanged
    with pytest.raises(ConfigError, match="Unknown model setting.*g_activation.*Valid settings: latent_dim"):
        member_hparams(g_activation="relu")
    with pytest.raises(ConfigError, match="model.latent_dim must be a positive integer"):
        member_hparams(latent_dim=0)


def test_shared_and_per_member_keys_come_from_the_spec():
    shared = {n for n, f in SPEC_FIELDS.items() if f.metadata["shared"]}
    assert set(SHARED_KEYS) == shared and {"latent_dim", "g_hidden", "d_steps", "g_ema"} <= shared
    per_member = {f"model.{n}" for n in SPEC_FIELDS if n not in shared and not SPEC_FIELDS[n].metadata["key"]}
    per_member -= {"model.optimizer_g", "model.optimizer_d"}  # a pack shares their kind: pack_key keeps them
    assert per_member <= set(MEMBER_CONFIG_KEYS) and "seed" in MEMBER_CONFIG_KEYS
    assert not {f"model.{n}" for n in shared} & set(MEMBER_CONFIG_KEYS)


def test_the_knob_table_lists_every_model_setting_as_the_spec_says():
    knobs = (REPO / "docs" / "knobs.md").read_text()
    rows = knob_rows()
    assert len(rows) == sum(1 for f in SPEC_FIELDS.values() if not f.metadata["key"])
    missing = [row for row in rows if row not in knobs]
    assert not missing, "docs/knobs.md's knob table out of date; python -m gan.model.spec prints the rows:\n" + (
        "\n".join(missing)
    )
    documented = set(re.findall(r"^\| `model\.([a-z_0-9]+)`", knobs, flags=re.M))
    assert documented == {n for n, f in SPEC_FIELDS.items() if not f.metadata["key"]}


def test_module_options_are_checked_before_anything_is_built():
    with pytest.raises(ConfigError, match="d_norm='batch' with model.loss='wgan-gp'.*layer or none"):
        GANModule(loss="wgan-gp", d_norm="batch")
    with pytest.raises(ConfigError, match=r"model.r1_weight must be in \[0, inf\], got -1"):
        GANModule(r1_weight=-1)
    with pytest.raises(ConfigError, match=r"g_ema_decay must be in \[0, 1\], got 1.5"):
        GANModule(g_ema_decay=1.5)
    with pytest.raises(ConfigError, match="instance_noise_iters must be a positive number"):
        GANModule(instance_noise=0.1, instance_noise_iters=0)
    with pytest.raises(ConfigError, match="members 0 and 1 of one pack differ.*g_hidden"):
        GANModule(members=[dict(g_hidden=[8]), dict(g_hidden=[16])])
    assert math.isfinite(GANModule(loss="wgan-gp", d_norm="layer").hparams.members[0]["gp_weight"])
