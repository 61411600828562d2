"""GAN objectives, all computed on the discriminator's logits (never log(sigmoid) by hand), and the gradient
penalties that regularise the discriminator.

Each loss gives the discriminator's loss on a real and a fake batch, the generator's loss on a fake batch, and
``d_output``: what the lab logs as D(x) and D(G(z)) (a probability for the BCE losses, the raw score for LSGAN,
hinge and WGAN). ``real_label`` is the target for real images: 1, or less with one-sided label smoothing
(Salimans et al. 2016), which only the losses with targets (ns, minimax, lsgan) have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import ConfigError


def _bce(logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Per-member mean BCE on logits [n, B] against a target (a number, or one per member as [n, 1])."""
    # full_like, not as_tensor: a number made into a GPU tensor is a host-to-device copy (a CUDA graph cannot hold it)
    target = (
        torch.full_like(logits, float(target))
        if not torch.is_tensor(target)
        else target.to(logits.dtype).expand_as(logits)
    )
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)


class GANLoss:
    """What every loss provides (see the module docstring). Logits are [members, batch]; losses are one value per
    member, [members]; ``real_label`` is [members, 1]."""

    has_targets = True  # whether real_label (label smoothing) means anything for this loss
    gradient_penalty = False  # whether the loss includes WGAN-GP's penalty on interpolates
    real_in_g = False  # whether G's loss reads D's scores of the real batch too (relativistic losses)

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        """G's loss on D's scores of its samples (and, for a relativistic loss, of the real batch, without a
        gradient: D is not being trained)."""
        raise NotImplementedError

    def d_output(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


class NonSaturatingLoss(GANLoss):
    """Goodfellow et al. 2014 with the non-saturating generator loss -log D(G(z)).

    D: -[log D(x) + log(1 - D(G(z)))]  (2 ln 2 = 1.386 when D outputs 1/2 everywhere);  G: -log D(G(z)).
    With label smoothing the real term is BCE(D(x), real_label).
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: torch.Tensor) -> torch.Tensor:
        return _bce(real_logits, real_label) + _bce(fake_logits, 0.0)

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        return _bce(fake_logits, 1.0)

    def d_output(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class MinimaxLoss(NonSaturatingLoss):
    """The original saturating game: G minimises log(1 - D(G(z))) = -BCE(logit, 0).

    Its gradient vanishes when D confidently rejects the fakes, which is what makes it useful for showing
    sigmoid/tanh saturation.
    """

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        return -_bce(fake_logits, 0.0)


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017) with targets a=0, b=real_label (1), c=1 on the raw discriminator score."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real_logits - real_label).pow(2).mean(1) + fake_logits.pow(2).mean(1))

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * (fake_logits - 1.0).pow(2).mean(1)


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))];
    G: -E[D(G(z))]. D stops pushing a sample once it is beyond the margin."""

    has_targets = False

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real_logits).mean(1) + F.relu(1.0 + fake_logits).mean(1)

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        return -fake_logits.mean(1)


class WassersteinGPLoss(GANLoss):
    """WGAN-GP (Gulrajani et al. 2017): the critic maximises E[D(x)] - E[D(G(z))], so its loss is
    E[D(G(z))] - E[D(x)]; G: -E[D(G(z))]. The gradient penalty on interpolates (``wgan_gp_penalty``, weight
    ``model.gp_weight``) is added by the training step, which owns the discriminator."""

    has_targets = False
    gradient_penalty = True

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean(1) - real_logits.mean(1)

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        return -fake_logits.mean(1)


class RelativisticPairingLoss(GANLoss):
    """RpGAN (Jolicoeur-Martineau 2019; the loss of R3GAN, Huang et al. 2024): each real image is paired with one
    fake of the same batch position, and D is asked to score the real one higher: D minimises
    E[softplus(-(D(x_i) - D(G(z_i))))], G minimises E[softplus(-(D(G(z_i)) - D(x_i)))] (ln 2 = 0.693 each when
    D scores both alike). Unlike ns, D's output means nothing alone (logged raw); only the pairs' differences do."""

    has_targets = False
    real_in_g = True

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: torch.Tensor) -> torch.Tensor:
        return F.softplus(fake_logits - real_logits).mean(1)

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        if real_logits is None:
            raise ValueError("rpgan's generator loss pairs each fake with a real score: pass real_logits")
        return F.softplus(real_logits - fake_logits).mean(1)


LOSSES: dict[str, type[GANLoss]] = {
    "ns": NonSaturatingLoss,
    "minimax": MinimaxLoss,
    "lsgan": LeastSquaresLoss,
    "hinge": HingeLoss,
    "wgan-gp": WassersteinGPLoss,
    "rpgan": RelativisticPairingLoss,
}


def check_loss(name: str, label_smoothing: float = 0.0) -> type[GANLoss]:
    """The loss class called ``name``, with its label smoothing checked (``s`` makes the real target 1 - s)."""
    if name not in LOSSES:
        raise ConfigError(f"Unknown loss {name!r} for model.loss. Valid losses: {', '.join(LOSSES)}.")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ConfigError(f"model.label_smoothing must be in [0, 1), got {label_smoothing!r} (0 = off, 0.1 is usual).")
    cls = LOSSES[name]
    if label_smoothing and not cls.has_targets:
        with_targets = ", ".join(n for n, c in LOSSES.items() if c.has_targets)
        raise ConfigError(
            f"model.label_smoothing={label_smoothing} does not apply to model.loss={name!r}: that loss has no "
            f"real/fake targets to smooth. Use label smoothing with {with_targets}, or set model.label_smoothing=0."
        )
    return cls


class MemberLosses:
    """Each member's own loss on its slice of [K, B] logits, one value per member ([K]).

    Members with the same loss are computed together (one call per loss in the pack). ``real_label`` holds each
    member's real target (1 - its label smoothing); ``gradient_penalty`` which members add WGAN-GP's penalty.
    """

    def __init__(self, names: Sequence[str], label_smoothing: Sequence[float]) -> None:
        classes = [check_loss(n, s) for n, s in zip(names, label_smoothing, strict=True)]
        self.names = list(names)
        self.real_label = [1.0 - float(s) for s in label_smoothing]
        groups: dict[str, list[int]] = {}
        for k, name in enumerate(names):
            groups.setdefault(name, []).append(k)
        self.groups = [(LOSSES[name](), idx) for name, idx in groups.items()]
        self.loss_of = [loss for k in range(len(names)) for loss, idx in self.groups if k in idx]
        self.gradient_penalty = [c.gradient_penalty for c in classes]
        self.real_in_g = [c.real_in_g for c in classes]
        self.any_real_in_g = any(self.real_in_g)  # read every iteration: decided once
        self._tensors: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def _cached(
        self, key: str, values: Sequence[float] | Sequence[int], like: torch.Tensor, dtype=None
    ) -> torch.Tensor:
        dtype = dtype or like.dtype
        cache_key = (key, like.device, dtype)
        if cache_key not in self._tensors:
            self._tensors[cache_key] = torch.tensor(list(values), device=like.device, dtype=dtype)
        return self._tensors[cache_key]

    def _per_group(self, fn, *tensors: torch.Tensor) -> torch.Tensor:
        """``fn(loss, index, *member slices)`` for each group, assembled into one [K] (or [K, B]) tensor.

        On the CPU each member is computed on its own (as for ``gan.model.population.batched_matmul``): the backward
        of a per-row reduction over [K, B] differed in the last bits from the same member's [1, B] (measured), and GAN
        training amplifies last bits; per member, a pack computes exactly what a population of one does.
        """
        if tensors[0].device.type == "cpu" and tensors[0].shape[0] > 1:
            rows = zip(*(t.split(1) for t in tensors), strict=True)  # split, not t[k:k+1]: one backward for all members
            return torch.cat([fn(self.loss_of[k], slice(k, k + 1), *row) for k, row in enumerate(rows)])
        if len(self.groups) == 1:
            return fn(self.groups[0][0], slice(None), *tensors)
        out = None
        for g, (loss, idx) in enumerate(self.groups):
            index = self._cached(f"group{g}", idx, tensors[0], torch.long)
            part = fn(loss, index, *(t[index] for t in tensors))
            if out is None:
                out = part.new_empty((tensors[0].shape[0], *part.shape[1:]))
            out = out.index_put((index,), part)
        return out

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        labels = self._cached("real_label", self.real_label, real_logits).unsqueeze(1)
        return self._per_group(lambda loss, i, r, f: loss.d_loss(r, f, labels[i]), real_logits, fake_logits)

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Each member's G loss; ``real_logits`` (D's scores of the real batch, detached) when any member's loss
        reads them (``real_in_g``)."""
        if real_logits is None:
            return self._per_group(lambda loss, i, f: loss.g_loss(f), fake_logits)
        return self._per_group(lambda loss, i, f, r: loss.g_loss(f, r), fake_logits, real_logits)

    def d_output(self, logits: torch.Tensor) -> torch.Tensor:
        """What the lab logs as D(x) / D(G(z)), per member and sample (a probability for the BCE losses)."""
        return self._per_group(lambda loss, i, x: loss.d_output(x), logits)


# --------------------------------------------------------------------------- gradient penalties
def input_gradients(discriminator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x) [K, B], dD/dx per sample [K, B, F]) with the graph kept, so a penalty on the gradient can itself be
    backpropagated into D's parameters (``create_graph=True``; the double backward runs inside
    ``manual_backward``). Summing D over members and samples gives each its own gradient: D treats them
    independently."""
    x = x.detach().requires_grad_(True)
    scores = discriminator(x)
    (grads,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return scores, grads


def wgan_gp_penalty(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Per member E[(||grad D(x_hat)|| - 1)^2] at x_hat = eps * real + (1 - eps) * fake, eps [K, B, 1] ~ U(0, 1)
    per sample (drawn by the caller from each member's own stream).

    Each sample's own gradient needs D to treat samples independently (which is why WGAN-GP refuses batch norm
    in D).
    """
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    _, grads = input_gradients(discriminator, x_hat)
    return (grads.norm(2, dim=2) - 1.0).pow(2).mean(1)


def squared_gradient_penalty(discriminator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x) [K, B], E[||grad_x D(x)||^2] per member [K]): R1 on real data (Mescheder et al. 2018), R2 on fake
    samples (R3GAN: Huang et al. 2024); the loss adds gamma / 2 times it. ``x`` is detached first, so the penalty's
    gradient reaches D's parameters only, never G. D's scores come back too, so the training step scores the
    batch once for both."""
    scores, grads = input_gradients(discriminator, x)
    return scores, grads.pow(2).sum(dim=2).mean(1)
