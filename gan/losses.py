"""GAN objectives, all computed on the discriminator's logits (never log(sigmoid) by hand), and the gradient
penalties that regularise the discriminator.

Each loss gives the discriminator's loss on a real and a fake batch, the generator's loss on a fake batch, and
``d_output``: what the lab logs as D(x) and D(G(z)) (a probability for the BCE losses, the raw score for LSGAN,
hinge and WGAN). ``real_label`` is the target for real images: 1, or less with one-sided label smoothing
(Salimans et al. 2016), which only the losses with targets (ns, minimax, lsgan) have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GANLoss:
    """What every loss provides (see the module docstring)."""

    has_targets = True  # whether real_label (label smoothing) means anything for this loss
    gradient_penalty = False  # whether the loss includes WGAN-GP's penalty on interpolates

    def __init__(self, real_label: float = 1.0) -> None:
        self.real_label = float(real_label)

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_output(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


class NonSaturatingLoss(GANLoss):
    """Goodfellow et al. 2014 with the non-saturating generator loss -log D(G(z)).

    D: -[log D(x) + log(1 - D(G(z)))]  (2 ln 2 = 1.386 when D outputs 1/2 everywhere);  G: -log D(G(z)).
    With label smoothing the real term is BCE(D(x), real_label).
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return _bce(real_logits, self.real_label) + _bce(fake_logits, 0.0)

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


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017) with targets a=0, b=real_label (1), c=1 on the raw discriminator score."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real_logits - self.real_label).pow(2).mean() + fake_logits.pow(2).mean())

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake_logits - 1.0).pow(2).mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))];
    G: -E[D(G(z))]. D stops pushing a sample once it is beyond the margin."""

    has_targets = False

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


class WassersteinGPLoss(GANLoss):
    """WGAN-GP (Gulrajani et al. 2017): the critic maximises E[D(x)] - E[D(G(z))], so its loss is
    E[D(G(z))] - E[D(x)]; G: -E[D(G(z))]. The gradient penalty on interpolates (``wgan_gp_penalty``, weight
    ``model.gp_weight``) is added by the training step, which owns the discriminator."""

    has_targets = False
    gradient_penalty = True

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


LOSSES: dict[str, type[GANLoss]] = {
    "ns": NonSaturatingLoss,
    "minimax": MinimaxLoss,
    "lsgan": LeastSquaresLoss,
    "hinge": HingeLoss,
    "wgan-gp": WassersteinGPLoss,
}


class LossError(ValueError):
    """The configured loss name or one of its options is not valid."""


def build_loss(name: str, label_smoothing: float = 0.0) -> GANLoss:
    """The loss called ``name``; ``label_smoothing`` s makes the real target 1 - s (one-sided)."""
    if name not in LOSSES:
        raise LossError(f"Unknown loss {name!r} for model.loss. Valid losses: {', '.join(LOSSES)}.")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise LossError(f"model.label_smoothing must be in [0, 1), got {label_smoothing!r} (0 = off, 0.1 is usual).")
    cls = LOSSES[name]
    if label_smoothing and not cls.has_targets:
        with_targets = ", ".join(n for n, c in LOSSES.items() if c.has_targets)
        raise LossError(
            f"model.label_smoothing={label_smoothing} does not apply to model.loss={name!r}: that loss has no "
            f"real/fake targets to smooth. Use label smoothing with {with_targets}, or set model.label_smoothing=0."
        )
    return cls(real_label=1.0 - float(label_smoothing))


# --------------------------------------------------------------------------- gradient penalties
def input_gradients(discriminator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x), dD/dx per sample) with the graph kept, so a penalty on the gradient can itself be backpropagated
    into D's parameters (``create_graph=True``; the double backward runs inside ``manual_backward``)."""
    x = x.detach().requires_grad_(True)
    scores = discriminator(x)
    (grads,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return scores, grads.flatten(1)


def wgan_gp_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad D(x_hat)|| - 1)^2] at x_hat = eps * real + (1 - eps) * fake, eps ~ U(0, 1) per sample.

    Summing D over the batch before differentiating gives each sample's own gradient because D treats samples
    independently (which is why WGAN-GP refuses batch norm in D).
    """
    eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    _, grads = input_gradients(discriminator, x_hat)
    return (grads.norm(2, dim=1) - 1.0).pow(2).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(real), E[||grad D(x)||^2] on real data) (Mescheder et al. 2018; the loss adds gamma / 2 times it).

    D's scores come back too, so the training step scores the real batch once for both the loss and the penalty.
    """
    scores, grads = input_gradients(discriminator, real)
    return scores, grads.pow(2).sum(dim=1).mean()
