"""The binarized representation entropy (BRE) penalty on D's hidden layers (Cao et al., ICLR 2018, "Improving GAN
Training via Binarized Representation Entropy Regularization"): the lab's intervention on the diversity of D's
activation patterns, and through them of G's learning signal.

Each hidden unit's pre-activation h is softly binarized, s = h / (|h| + eps), and two terms push a batch's patterns
apart: ME, the mean over units of (mean over the batch of s)^2 (each unit on for half the batch), and AC, the mean
over pairs of different samples of |s_i . s_j| / units (patterns uncorrelated). The penalty is ME + AC averaged over
D's hidden layers, on the real and on the fake batch separately and then averaged (our choice: the paper applies it
to D's minibatches), weighted per member by ``model.bre_weight``. It reads the pre-activations of the forward passes
D's update makes anyway: no extra pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

SOFTSIGN_EPS = 1e-3  # the soft binarization's scale: |h| >> eps reads as +-1 (D's pre-activations are O(1))


def bre(pre: torch.Tensor, eps: float = SOFTSIGN_EPS) -> torch.Tensor:
    """ME + AC of one layer's pre-activations [K, B, units], per member [K] (see the module docstring)."""
    s = pre / (pre.abs() + eps)
    batch, units = s.shape[1], s.shape[2]
    marginal = s.mean(1).pow(2).mean(-1)
    gram = (s @ s.transpose(1, 2)).abs() / units
    pairs = max(1, batch * (batch - 1))
    correlation = (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / pairs
    return marginal + correlation


@contextmanager
def hidden_pre_activations(discriminator: nn.Module, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """A block that collects the input of each of D's hidden activations ([K, B, units] each, in order) in every
    forward pass it makes; nothing is hooked when not ``enabled``."""
    captured: list[torch.Tensor] = []
    handles = []
    if enabled:
        for name, module in discriminator.net.named_children():
            if name.startswith("act"):
                handles.append(module.register_forward_hook(lambda m, inp, out: captured.append(inp[0])))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def bre_penalty(real_pre: list[torch.Tensor], fake_pre: list[torch.Tensor]) -> torch.Tensor:
    """The penalty per member [K]: ME + AC averaged over the layers, then over the real and the fake batch."""
    sides = [torch.stack([bre(p) for p in pre]).mean(0) for pre in (real_pre, fake_pre)]
    return (sides[0] + sides[1]) / 2
