"""gan.model.ema: the generator's weight average."""

import pytest
import torch

from gan.model.module import GANModule


def test_weight_average_follows_the_ema_formula_and_is_what_samples_use():
    members = [dict(g_hidden=[8], d_hidden=[8], g_ema=True, g_ema_decay=d, seed=k) for k, d in enumerate([0.9, 0.5])]
    module = GANModule(members=members)
    w0 = module.generator.net.fc1.weight.detach().clone()
    module.update_generator_ema()  # the first update copies
    assert torch.equal(module.generator_ema.net.fc1.weight, w0)
    with torch.no_grad():
        module.generator.net.fc1.weight.add_(1.0)
    module.update_generator_ema()
    averaged = module.generator_ema.net.fc1.weight
    assert torch.allclose(averaged[0], 0.9 * w0[0] + 0.1 * (w0[0] + 1.0), atol=1e-6)
    assert torch.allclose(averaged[1], 0.5 * w0[1] + 0.5 * (w0[1] + 1.0), atol=1e-6)
    assert module.generator_ema_updates.tolist() == [2, 2]
    assert not any(p.requires_grad for p in module.generator_ema.parameters())
    z = torch.randn(3, 100)
    zz = z.expand(2, 3, 100)
    assert module.sample(z).shape == (2, 3, 1024)
    assert torch.allclose(module.sample(z), module.generator_ema.eval()(zz))
    assert torch.allclose(module.sample(z, ema=False), module.generator.eval()(zz))
    assert not torch.allclose(module.sample(z), module.sample(z, ema=False))
    with pytest.raises(ValueError, match="no generator weight average"):
        GANModule(g_hidden=[8], d_hidden=[8]).sample(z, ema=True)
