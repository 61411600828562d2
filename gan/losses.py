"""GAN objectives, all computed on the discriminator's logits (never log(sigmoid) by hand).

Each loss gives the discriminator's loss on a real and a fake batch, the generator's loss on a fake batch, and
``d_output``: what the lab logs as D(x) and D(G(z)) (a probability for the BCE losses, the raw score for LSGAN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class NonSaturatingLoss:
    """Goodfellow et al. 2014 with the non-saturating generator loss -log D(G(z)).

    D: -[log D(x) + log(1 - D(G(z)))]  (2 ln 2 = 1.386 when D outputs 1/2 everywhere);  G: -log D(G(z)).
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return _bce(fake_logits, 1.0)

    def d_output(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class MinimaxLoss(NonSaturatingLoss):
    """The original saturating game: G minimises log(1 - D(G(z))) = -BCE(logit, 0).

    Its gradient vanishes when D confidently rejects the fakes, which is what makes it useful for showing
    sigmoid/tanh saturation.
    """

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -_bce(fake_logits, 0.0)


class LeastSquaresLoss:
    """LSGAN (Mao et al. 2017) with targets a=0, b=1, c=1 on the raw discriminator score."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real_logits - 1.0).pow(2).mean() + fake_logits.pow(2).mean())

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake_logits - 1.0).pow(2).mean()

    def d_output(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


LOSSES: dict[str, type] = {"ns": NonSaturatingLoss, "minimax": MinimaxLoss, "lsgan": LeastSquaresLoss}


class LossError(ValueError):
    """The configured loss name is not valid."""


def build_loss(name: str) -> NonSaturatingLoss | LeastSquaresLoss:
    if name not in LOSSES:
        raise LossError(f"Unknown loss {name!r} for model.loss. Valid losses: {', '.join(LOSSES)}.")
    return LOSSES[name]()
