"""The LightningModule's own surface: ``forward`` samples, and it is the ``Population`` the callbacks declare."""

from __future__ import annotations

import typing

import torch

from gan.model.module import GANModule
from gan.model.spec import member_hparams
from gan.runs.callbacks import Population


def test_forward_samples_from_the_default_sampler_in_eval_mode():
    module = GANModule(members=[member_hparams(seed=3, g_ema=True)])
    z = torch.randn(5, module.shared["latent_dim"])
    out = module(z)
    assert out.shape == (1, 5, 1024) and module.generator.training  # G's mode is put back
    assert torch.equal(out, module.sample(z)) and torch.equal(out, module.generator_ema.eval()(z.unsqueeze(0)))


def test_the_module_has_everything_the_callbacks_declare_they_use():
    module = GANModule(members=[member_hparams(seed=0), member_hparams(seed=1, g_act="tanh")])
    assert isinstance(module, Population)
    declared = set(typing.get_type_hints(Population)) | {
        name for name in vars(Population) if not name.startswith("_") and callable(getattr(Population, name, None))
    }
    declared |= {name for name, value in vars(Population).items() if isinstance(value, property)}
    missing = [name for name in sorted(declared) if not hasattr(module, name)]
    assert not missing and {"iteration", "alive", "sample", "fixed_noise"} <= declared


def test_the_same_initial_weights_as_alone():
    alone = [GANModule(members=[member_hparams(seed=s, g_act=a)]) for s, a in ((0, "relu"), (5, "tanh"))]
    pack = GANModule(members=[member_hparams(seed=0, g_act="relu"), member_hparams(seed=5, g_act="tanh")])
    for k, single in enumerate(alone):
        for name, value in single.state_dict().items():
            assert torch.equal(pack.state_dict()[name][k : k + 1], value), name
    assert not torch.equal(alone[0].generator.net.fc1.weight, alone[1].generator.net.fc1.weight)
